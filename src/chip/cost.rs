//! The analytic cost model: *modeled* time per token of a [`Plan`] on its
//! chips, and of a GPU for comparison.
//!
//! Nothing here is measured. Every number is labelled `modeled` so it cannot
//! be mistaken for a measurement of the emulator (which runs on a GPU and has
//! its own, real, timings).
//!
//! # Per chip, per pass of `microbatch_tokens` tokens
//!
//! * compute: `2 × params_on_chip × tokens / rate` (rate: FP16 FLOP/s or INT8
//!   op/s by [`Precision`]; an untied embedding is a gather — one row read per
//!   token, no product) plus attention, `2 × (query heads per KV head) ×
//!   KV values read` at the FP16 rate;
//! * SRAM: `(weight bytes + KV bytes read per token × tokens) / sram_bandwidth`;
//!   KV read per token is the chip's share of one sequence's cache filled to
//!   `kv_positions` (default: the whole context, the worst case);
//! * the chip's time is `max(compute, SRAM)`: a streaming machine (the TSP)
//!   overlaps the two;
//! * the link out: `carried bytes × tokens / (link_bandwidth × links_per_hop)`
//!   plus `link_latency_s` per transfer (the loopback from the last chip to
//!   chip 0 counts its transfers: 1 for a token id, 2 for a tied model's
//!   gather).
//!
//! # Schedule
//!
//! One token at batch 1 visits the chips in order (a chip is a pipeline
//! stage), so the **latency** is the sum of every chip's time and every link.
//! With `inflight` independent sequences in the pipeline, each stage works on
//! one at a time: the cycle for every sequence is `max(latency, inflight ×
//! bottleneck stage)`. Throughput is `inflight × microbatch_tokens / cycle`;
//! beyond `latency / bottleneck` sequences in flight the pipeline is full and
//! adding more only makes each user slower. The bubble fraction is the share
//! of chip-time that is idle.
//!
//! # Latency model (dependent stages)
//!
//! The roofline above has no latency for dependent operations, so a small
//! model comes out as fast as its bytes allow (stories260K on groq-v1: a
//! fraction of a µs per token), far faster than any published figure. The
//! one latency model of sramlm (used by `sramlm study`, `plan --study` and the
//! modelled columns of `bench` and `plan`) splits each token's critical path
//! into **dependent stages**, the work between two synchronisation points:
//!
//! * per layer, the attention side (norm, q|k|v, RoPE, attention over the KV
//!   cache, o projection; then its all-reduce), and the MLP (norm, gate|up,
//!   down; then its all-reduce) — [`DENSE_STAGES_PER_LAYER`];
//! * a MoE layer adds the router (router product and top-k: the experts to
//!   read depend on it) — [`MOE_STAGES_PER_LAYER`]; expert dispatch and the
//!   weighted combine ride on the MLP's all-reduce (every chip holds a slice
//!   of every expert);
//! * lm_head (final norm, product, top-1), once per token.
//!
//! A stage costs `max(its streaming work, ChipSpec::stage_latency_s)` on the
//! critical path ([`dependent_stage_s`]): a streaming machine overlaps the
//! pipeline latency of a dependent chain of operations with the weights it
//! streams (as it overlaps compute and SRAM), so a stage is either
//! bandwidth-bound or latency-bound. Links and collectives keep their own
//! per-hop latency on top. groq-v1's floor is FITTED to one published point
//! (see [`super::spec::GROQ_V1_STAGE_LATENCY_S`]); spec files without
//! `stage_latency_s` have none.
//!
//! In the chain-of-chips model of this file a stage may span several chips
//! (a layer straddling two); its work is the sum of its pieces'
//! `max(compute, SRAM)`, and the floor's shortfall (`floor − work`, when
//! positive) is charged to the chip holding the stage's last piece
//! ([`ModeledChipCost::modeled_floor_s`]).

use super::{ChipSpec, Plan};
use serde::{Deserialize, Serialize};

/// Dependent stages per dense layer: the attention side and the MLP.
pub const DENSE_STAGES_PER_LAYER: usize = 2;
/// Dependent stages per MoE layer: attention, router, experts.
pub const MOE_STAGES_PER_LAYER: usize = 3;

/// Dependent stages of one token: `layers × (2 dense | 3 MoE) + 1` (lm_head).
pub fn dependent_stages_per_token(layers: usize, moe: bool) -> usize {
    let per = if moe {
        MOE_STAGES_PER_LAYER
    } else {
        DENSE_STAGES_PER_LAYER
    };
    layers * per + 1
}

/// One dependent stage's time on the critical path: its streaming work or
/// the chip's latency floor, whichever is longer.
pub fn dependent_stage_s(work_s: f64, spec: &ChipSpec) -> f64 {
    work_s.max(spec.stage_latency_s)
}

/// What the floor adds on top of a stage's streaming work (0 when the stage
/// is bandwidth- or compute-bound).
pub fn stage_floor_extra_s(work_s: f64, spec: &ChipSpec) -> f64 {
    floor_shortfall_s(work_s, spec.stage_latency_s)
}

/// `max(work, floor) − work`: the same rule for any hardware (the GPU
/// fleet's `GpuFleetSpec::stage_latency_s` too).
pub fn floor_shortfall_s(work_s: f64, floor_s: f64) -> f64 {
    work_s.max(floor_s) - work_s
}

/// The dependent stage a placed tensor belongs to: `(layer, 0)` attention
/// side, `(layer, 1)` MLP, `(usize::MAX, 0)` lm_head (and final norm; a tied
/// embedding, whose product is lm_head's); an untied embedding (a gather)
/// belongs to layer 0's attention side.
fn stage_of(weight: &str, tied: bool) -> (usize, usize) {
    const HEAD: (usize, usize) = (usize::MAX, 0);
    match weight {
        "embed" if tied => HEAD,
        "embed" => (0, 0),
        "lm_head" | "final_norm" => HEAD,
        w => {
            let mut parts = w.split('.');
            let layer = match (parts.next(), parts.next().and_then(|i| i.parse().ok())) {
                (Some("layers"), Some(i)) => i,
                _ => return HEAD,
            };
            let mlp = matches!(
                parts.next(),
                Some("ffn_norm" | "w_gate" | "w_up" | "w_down")
            );
            (layer, usize::from(mlp))
        }
    }
}

/// Which compute rate of the chip the matrix-vector products run at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Fp16,
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

/// What crosses a chip boundary, for the link cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CarryModel {
    /// The plan's live set at each boundary (what sramlm's executor moves).
    AsPlanned,
    /// Only the residual stream (`hidden_size` values) at every boundary: a
    /// lower bound for any partition of the layers into chips.
    ResidualOnly,
}

/// Knobs of the cost model beyond the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostOptions {
    pub precision: Precision,
    /// Links used in parallel between consecutive chips (default 1).
    pub links_per_hop: usize,
    /// KV positions read per token; `None`: the whole context (worst case).
    pub kv_positions: Option<usize>,
    /// Independent sequences in the pipeline (default 1).
    pub inflight: usize,
    /// Bytes per activation value on the links (default 4: f32, as planned).
    pub activation_bytes: usize,
    pub carry: CarryModel,
}

impl CostOptions {
    pub fn new(precision: Precision) -> Self {
        CostOptions {
            precision,
            links_per_hop: 1,
            kv_positions: None,
            inflight: 1,
            activation_bytes: 4,
            carry: CarryModel::AsPlanned,
        }
    }
}

/// Modeled time of one chip for one pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeledChipCost {
    pub index: usize,
    pub modeled_compute_s: f64,
    pub modeled_sram_s: f64,
    /// `max(compute, sram)`.
    pub modeled_chip_s: f64,
    /// The latency floor's shortfall for the dependent stages that end on
    /// this chip (see the module docs, "Latency model").
    pub modeled_floor_s: f64,
    /// The link to the next chip (last chip: the loopback).
    pub modeled_link_out_s: f64,
    /// `chip + floor + link out`: this stage's share of the pipeline cycle.
    pub modeled_stage_s: f64,
    /// `"compute"` or `"sram"`: which one sets `modeled_chip_s`.
    pub modeled_bound: String,
}

/// Modeled latency and throughput of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostBreakdown {
    pub spec: String,
    pub precision: Precision,
    pub links_per_hop: usize,
    pub activation_bytes: usize,
    pub carry: CarryModel,
    pub kv_positions: usize,
    pub microbatch_tokens: usize,
    pub chips: Vec<ModeledChipCost>,
    /// Sums over chips.
    pub modeled_compute_s: f64,
    pub modeled_sram_s: f64,
    pub modeled_chip_s: f64,
    /// Dependent stages on the token's path, and the floor per stage
    /// (`ChipSpec::stage_latency_s`; groq-v1's is fitted).
    pub dependent_stages: usize,
    pub stage_latency_s: f64,
    /// What the latency floor adds over the streaming work (sum over chips).
    pub modeled_floor_s: f64,
    /// Every link on the path, loopback included.
    pub modeled_link_s: f64,
    /// One token (one pass), batch 1, empty pipeline.
    pub modeled_token_latency_s: f64,
    /// `1 / modeled_token_latency_s`.
    pub modeled_tokens_per_s_per_user: f64,
    pub modeled_bottleneck_stage_s: f64,
    /// Sequences in flight that fill the pipeline: `latency / bottleneck`.
    pub modeled_pipeline_depth: f64,
    pub inflight: usize,
    pub modeled_cycle_s: f64,
    pub modeled_throughput_tokens_per_s: f64,
    pub modeled_tokens_per_s_per_user_at_inflight: f64,
    pub modeled_bubble_fraction: f64,
}

/// Modeled latency of `plan` on chips of `spec` with default options.
pub fn modeled_token_latency(plan: &Plan, spec: &ChipSpec, precision: Precision) -> CostBreakdown {
    modeled_token_latency_with(plan, spec, &CostOptions::new(precision))
}

/// Modeled latency of `plan` on chips of `spec` (normally `plan.spec`; another
/// spec re-costs the same placement on faster or slower chips).
pub fn modeled_token_latency_with(plan: &Plan, spec: &ChipSpec, o: &CostOptions) -> CostBreakdown {
    let m = &plan.model;
    let mb = m.microbatch_tokens.max(1) as f64;
    let positions = o.kv_positions.unwrap_or(m.context_len).min(m.context_len);
    let fill = positions as f64 / m.context_len.max(1) as f64;
    let group = (m.num_heads / m.num_kv_heads.max(1)) as f64;
    let rate = match o.precision {
        Precision::Fp16 => spec.compute_flops_fp16,
        Precision::Int8 => spec.compute_ops_int8,
    };
    let link_bw = spec.link_bandwidth * o.links_per_hop.max(1) as f64;
    let n = plan.chips.len();
    let loop_transfers = plan
        .totals
        .link_transfers_per_token
        .saturating_sub(plan.totals.hops);
    let mut chips = Vec::with_capacity(n);
    // Streaming work of each dependent stage, and the chip its last piece is on.
    let mut stage_work: std::collections::BTreeMap<(usize, usize), (f64, usize)> =
        Default::default();
    // Tensor parallelism: a group's chips share each stage's work side by side.
    let tp = plan.tp.max(1);
    let mut add_work = |key: (usize, usize), work: f64, chip: usize| {
        let e = stage_work.entry(key).or_insert((0.0, chip));
        e.0 += work / tp as f64;
        e.1 = e.1.max(chip);
    };
    let rate_piece =
        |params: f64, bytes: f64| (2.0 * params * mb / rate).max(bytes / spec.sram_bandwidth);
    for c in &plan.chips {
        // One sequence's share of the chip's KV cache, filled to `positions`.
        let kv_read = c.kv_bytes as f64 / m.batch.max(1) as f64 * fill;
        let kv_values = kv_read / m.kv_dtype_bytes.max(1) as f64;
        // An untied embedding is a gather: one row read per token, no product.
        let (mut params, mut weight_bytes) = (c.params as f64, c.weight_bytes as f64);
        for p in &c.tensors {
            let key = stage_of(&p.weight, m.tie_word_embeddings);
            if p.weight == "embed" && !m.tie_word_embeddings {
                let rows = (p.row_end - p.row_start).max(1) as f64;
                params -= p.params as f64;
                let read = p.bytes as f64 / rows * mb.min(rows);
                weight_bytes -= p.bytes as f64 - read;
                add_work(key, rate_piece(0.0, read), c.index);
            } else {
                add_work(key, rate_piece(p.params as f64, p.bytes as f64), c.index);
            }
        }
        for k in &c.kv {
            let read = k.bytes as f64 / m.batch.max(1) as f64 * fill;
            let values = read / m.kv_dtype_bytes.max(1) as f64;
            let work = (2.0 * group * values * mb / spec.compute_flops_fp16)
                .max(read * mb / spec.sram_bandwidth);
            add_work((k.layer, 0), work, c.index);
        }
        let compute =
            2.0 * params * mb / rate + 2.0 * group * kv_values * mb / spec.compute_flops_fp16;
        let sram = (weight_bytes + kv_read * mb) / spec.sram_bandwidth;
        let chip = compute.max(sram);
        let transfers = if tp > 1 {
            // Every copy of the collectives that leaves this chip.
            plan.stages
                .iter()
                .filter(|s| s.chip == c.index)
                .map(|s| s.sends.len())
                .sum()
        } else if n == 1 {
            0
        } else if c.index + 1 == n {
            loop_transfers
        } else {
            1
        };
        let scale = o.activation_bytes as f64 / 4.0;
        let bytes = match o.carry {
            CarryModel::ResidualOnly if c.index + 1 < n => {
                (m.hidden_size * o.activation_bytes) as f64
            }
            _ => c.link_bytes_out_per_token as f64 * scale,
        };
        let link = if transfers == 0 {
            0.0
        } else {
            bytes * mb / link_bw + transfers as f64 * spec.link_latency_s
        };
        chips.push(ModeledChipCost {
            index: c.index,
            modeled_compute_s: compute,
            modeled_sram_s: sram,
            modeled_chip_s: chip,
            modeled_floor_s: 0.0,
            modeled_link_out_s: link,
            modeled_stage_s: chip + link,
            modeled_bound: if compute >= sram { "compute" } else { "sram" }.into(),
        });
    }
    let dependent_stages = stage_work.len();
    for (work, last) in stage_work.into_values() {
        if let Some(c) = chips.iter_mut().find(|c| c.index == last) {
            let extra = stage_floor_extra_s(work, spec);
            c.modeled_floor_s += extra;
            c.modeled_stage_s += extra;
        }
    }
    let sum = |f: fn(&ModeledChipCost) -> f64| chips.iter().map(f).sum::<f64>();
    let mut latency = sum(|c| c.modeled_stage_s);
    let mut bottleneck = chips.iter().map(|c| c.modeled_stage_s).fold(0.0, f64::max);
    if tp > 1 {
        // A group of tp chips runs side by side: the slowest chip, then the
        // collective (each chip sends over its own links).
        let most = |g: &[ModeledChipCost], f: fn(&ModeledChipCost) -> f64| {
            g.iter().map(f).fold(0.0, f64::max)
        };
        let groups: Vec<f64> = chips
            .chunks(tp)
            .map(|g| {
                most(g, |c| c.modeled_chip_s + c.modeled_floor_s)
                    + most(g, |c| c.modeled_link_out_s)
            })
            .collect();
        latency = groups.iter().sum();
        bottleneck = groups.iter().copied().fold(0.0, f64::max);
    }
    let inflight = o.inflight.max(1);
    let cycle = latency.max(inflight as f64 * bottleneck);
    let busy: f64 = inflight as f64 * latency;
    CostBreakdown {
        spec: spec.name.clone(),
        precision: o.precision,
        links_per_hop: o.links_per_hop.max(1),
        activation_bytes: o.activation_bytes,
        carry: o.carry,
        kv_positions: positions,
        microbatch_tokens: m.microbatch_tokens.max(1),
        modeled_compute_s: sum(|c| c.modeled_compute_s),
        modeled_sram_s: sum(|c| c.modeled_sram_s),
        modeled_chip_s: sum(|c| c.modeled_chip_s),
        dependent_stages,
        stage_latency_s: spec.stage_latency_s,
        modeled_floor_s: sum(|c| c.modeled_floor_s),
        modeled_link_s: sum(|c| c.modeled_link_out_s),
        modeled_token_latency_s: latency,
        modeled_tokens_per_s_per_user: 1.0 / latency,
        modeled_bottleneck_stage_s: bottleneck,
        modeled_pipeline_depth: latency / bottleneck,
        inflight,
        modeled_cycle_s: cycle,
        modeled_throughput_tokens_per_s: inflight as f64 * mb / cycle,
        modeled_tokens_per_s_per_user_at_inflight: 1.0 / cycle,
        modeled_bubble_fraction: 1.0 - busy / (n as f64 * cycle),
        chips,
    }
}

/// A GPU for the comparison: memory bandwidth, compute, and the fixed costs
/// of driving it one kernel at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuSpec {
    pub name: String,
    /// Device memory bandwidth, B/s.
    pub mem_bandwidth: f64,
    /// Dense FP16 FLOP/s.
    pub flops_fp16: f64,
    /// Cost of one compute dispatch (kernel launch + barrier), seconds.
    pub dispatch_s: f64,
    /// One submit + wait for the results per token, seconds.
    pub submit_wait_s: f64,
}

impl GpuSpec {
    /// NVIDIA H100 SXM: 3.35 TB/s HBM3, ~989 TFLOP/s dense FP16 (tensor
    /// cores); ~2.2 µs per wgpu dispatch and ~57 µs per submit+wait (sramlm's
    /// estimates for the wgpu/Vulkan path).
    pub fn h100_sxm() -> Self {
        GpuSpec {
            name: "h100-sxm".into(),
            mem_bandwidth: 3.35e12,
            flops_fp16: 989e12,
            dispatch_s: 2.2e-6,
            submit_wait_s: 57e-6,
        }
    }
    /// A GPU from measured numbers (e.g. a bandwidth and dispatch benchmark).
    pub fn measured(
        name: &str,
        mem_bandwidth: f64,
        flops_fp16: f64,
        dispatch_s: f64,
        submit_wait_s: f64,
    ) -> Self {
        GpuSpec {
            name: name.into(),
            mem_bandwidth,
            flops_fp16,
            dispatch_s,
            submit_wait_s,
        }
    }
    pub fn preset(name: &str) -> Option<Self> {
        (name == "h100-sxm").then(Self::h100_sxm)
    }
}

/// A GPU for `sramlm study`'s fleet side: memory, rates, links, price and
/// power, each an input with a sourced default. Every number printed from it
/// is modelled.
///
/// # Sources
///
/// * H100 SXM: NVIDIA H100 datasheet — 80 GB HBM3, 3.35 TB/s, 989 TFLOP/s
///   dense FP16/BF16 tensor, 1,979 TFLOP/s dense FP8 (3,958 with sparsity),
///   700 W TDP, NVLink 900 GB/s per GPU (both directions); DGX H100: 8 GPUs,
///   10.2 kW max system power.
/// * H200 SXM: NVIDIA H200 datasheet — 141 GB HBM3e, 4.8 TB/s, same tensor
///   rates as H100, up to 700 W, NVLink 900 GB/s.
/// * B200: NVIDIA DGX B200 datasheet — 8 GPUs, 1,440 GB HBM3e (180 GB per
///   GPU), 64 TB/s (8 TB/s per GPU), 72 PFLOP/s FP8 training for 8 GPUs
///   (9 PFLOP/s per GPU with sparsity, 4.5 dense), so 2.25 PFLOP/s dense
///   FP16; NVLink 5 1.8 TB/s per GPU; ~14.3 kW max system power.
/// * Prices are not published by NVIDIA. Inputs: an 8×H100 server at about
///   US$300,000 (the figure the widely quoted Feb 2024 "38x" Groq-vs-H100
///   estimate used) → $37,500 per GPU, host included; H200 $45,000 and B200
///   $64,000 per GPU (DGX B200 list ~US$515,000 / 8, as reported in 2024
///   press) — modelled inputs, override them.
/// * Power per GPU is the 8-GPU system's max power / 8 (host, NICs and fans
///   included): 1,275 W (H100, H200), 1,790 W (B200).
/// * NVLink all-reduce step latency 3 µs and 50 GB/s, 5 µs between nodes
///   (one 400 Gb/s NIC per GPU) are sramlm's assumptions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuFleetSpec {
    pub name: String,
    /// Device memory per GPU, bytes.
    pub hbm_bytes: f64,
    /// Device memory bandwidth, B/s.
    pub hbm_bandwidth: f64,
    /// Dense FP16 FLOP/s.
    pub flops_fp16: f64,
    /// Dense 8-bit (FP8/INT8) op/s.
    pub ops_8bit: f64,
    /// GPUs per NVLink domain (tensor parallelism stays inside it).
    pub gpus_per_node: usize,
    /// NVLink bandwidth per GPU per direction, B/s.
    pub nvlink_bandwidth: f64,
    /// Latency of one collective step over NVLink, s.
    pub nvlink_latency_s: f64,
    /// Between nodes (pipeline stages): B/s per GPU and latency.
    pub node_link_bandwidth: f64,
    pub node_link_latency_s: f64,
    /// Share of device memory kept for the runtime, activations and
    /// fragmentation (not for weights or KV).
    pub reserved_fraction: f64,
    /// US dollars per GPU, its share of the server included (modelled input).
    pub price_usd: f64,
    /// Watts per GPU, its share of the server included (modelled input).
    pub power_w: f64,
    /// Latency floor per dependent stage, seconds (the SRAM side's latency
    /// model, `chip::cost` "Latency model"): 0 in the presets — no sourced
    /// value, so the GPU side stays a roofline — settable in a spec file.
    #[serde(default)]
    pub stage_latency_s: f64,
    /// Where the numbers come from (free text; a spec file's `source`).
    #[serde(default)]
    pub source: String,
}

impl GpuFleetSpec {
    pub const PRESET_NAMES: [&'static str; 3] = ["h100-sxm", "h200", "b200"];

    pub fn h100_sxm() -> Self {
        GpuFleetSpec {
            name: "h100-sxm".into(),
            hbm_bytes: 80e9,
            hbm_bandwidth: 3.35e12,
            flops_fp16: 989e12,
            ops_8bit: 1979e12,
            gpus_per_node: 8,
            nvlink_bandwidth: 450e9,
            nvlink_latency_s: 3e-6,
            node_link_bandwidth: 50e9,
            node_link_latency_s: 5e-6,
            reserved_fraction: 0.1,
            price_usd: 37_500.0,
            power_w: 1275.0,
            stage_latency_s: 0.0,
            source: "NVIDIA H100 SXM datasheet (80 GB, 3.35 TB/s, 989/1,979 TFLOP/s dense fp16/fp8, NVLink 900 GB/s both directions); DGX H100 10.2 kW / 8; price: 8-GPU server ~$300k / 8 (Feb 2024 estimate); link latencies: sramlm's assumptions".into(),
        }
    }
    pub fn h200() -> Self {
        GpuFleetSpec {
            name: "h200".into(),
            hbm_bytes: 141e9,
            hbm_bandwidth: 4.8e12,
            price_usd: 45_000.0,
            source: "NVIDIA H200 datasheet (141 GB, 4.8 TB/s, H100's tensor rates and NVLink); power as DGX H100 / 8; price $45k per GPU (press-reported, modelled input)".into(),
            ..Self::h100_sxm()
        }
    }
    pub fn b200() -> Self {
        GpuFleetSpec {
            name: "b200".into(),
            hbm_bytes: 180e9,
            hbm_bandwidth: 8e12,
            flops_fp16: 2.25e15,
            ops_8bit: 4.5e15,
            nvlink_bandwidth: 900e9,
            price_usd: 64_000.0,
            power_w: 1790.0,
            source: "NVIDIA DGX B200 datasheet / 8 (180 GB, 8 TB/s, 4.5 PFLOP/s dense fp8, NVLink 5 1.8 TB/s, ~14.3 kW); price DGX B200 ~$515k / 8 (press-reported, modelled input)".into(),
            ..Self::h100_sxm()
        }
    }
    /// A preset by name (`h100-sxm`/`h100`, `h200`, `b200`).
    pub fn preset(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "h100-sxm" | "h100" => Some(Self::h100_sxm()),
            "h200" => Some(Self::h200()),
            "b200" => Some(Self::b200()),
            _ => None,
        }
    }
    /// A preset name, or the path of a JSON GPU spec file (see
    /// [`GpuFleetSpec::from_json_str`] and `models/gpus/`). Errors are one
    /// line naming the file and the field.
    pub fn resolve(name_or_path: &str) -> Result<Self, String> {
        if let Some(g) = Self::preset(name_or_path) {
            return Ok(g);
        }
        let path = std::path::Path::new(name_or_path);
        let looks_like_path =
            path.exists() || name_or_path.contains(['/', '\\']) || path.extension().is_some();
        if !looks_like_path {
            return Err(format!(
                "unknown GPU preset `{name_or_path}` (known: {}; or give a JSON GPU spec file)",
                Self::PRESET_NAMES.join(", ")
            ));
        }
        Self::load(path)
    }

    /// Largest GPU spec file read (a spec is a few hundred bytes).
    pub const MAX_FILE_BYTES: u64 = 1 << 20;

    /// Reads a GPU spec from a JSON file, at most [`Self::MAX_FILE_BYTES`].
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        use std::io::Read;
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("--gpu {shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!(
                "--gpu {shown}: not a regular file (a directory, FIFO or device); give a JSON GPU spec file"
            ));
        }
        let file = std::fs::File::open(path).map_err(|e| format!("--gpu {shown}: {e}"))?;
        let mut bytes = Vec::new();
        file.take(Self::MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("--gpu {shown}: {e}"))?;
        if bytes.len() as u64 > Self::MAX_FILE_BYTES {
            return Err(format!(
                "--gpu {shown}: larger than {} bytes, too large for a GPU spec file",
                Self::MAX_FILE_BYTES
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("--gpu {shown}: not valid JSON: not UTF-8 text"))?;
        Self::from_json_str(&text, &format!("--gpu {shown}"))
    }

    /// Parses a JSON GPU spec; `origin` starts every error message.
    ///
    /// Required: `name` (string), `hbm_bytes` (a number or a size such as
    /// `"80 GB"`), `hbm_bandwidth` (B/s), `flops_fp16`, `ops_8bit` (dense,
    /// per second), `price_usd`, `power_w` (per GPU, its server share
    /// included). Optional, defaulting to the h100-sxm preset's:
    /// `gpus_per_node`, `nvlink_bandwidth`, `nvlink_latency_s`,
    /// `node_link_bandwidth`, `node_link_latency_s`, `reserved_fraction`,
    /// `stage_latency_s` (0: no latency floor); `source` (text). Unknown fields are refused (a typo must not fall back
    /// to a default); fields starting with `_` are comments.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, String> {
        const FIELDS: [&str; 15] = [
            "name",
            "hbm_bytes",
            "hbm_bandwidth",
            "flops_fp16",
            "ops_8bit",
            "price_usd",
            "power_w",
            "gpus_per_node",
            "nvlink_bandwidth",
            "nvlink_latency_s",
            "node_link_bandwidth",
            "node_link_latency_s",
            "reserved_fraction",
            "stage_latency_s",
            "source",
        ];
        let bad = |field: &str, msg: String| format!("{origin}: field `{field}`: {msg}");
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            format!("{origin}: not valid JSON: {e}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{origin}: must hold a JSON object"))?;
        for key in obj.keys() {
            if !FIELDS.contains(&key.as_str()) && !key.starts_with('_') {
                return Err(bad(
                    key,
                    format!("unknown field (known: {})", FIELDS.join(", ")),
                ));
            }
        }
        let present = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
        let number = |key: &str| -> Result<f64, String> {
            let v = obj
                .get(key)
                .filter(|v| !v.is_null())
                .ok_or_else(|| bad(key, "missing field".into()))?;
            let x = match v {
                serde_json::Value::String(s) if key == "hbm_bytes" => {
                    super::spec::parse_byte_size(s)
                        .ok_or_else(|| bad(key, format!("cannot read `{s}` as a byte size")))?
                }
                _ => v
                    .as_f64()
                    .ok_or_else(|| bad(key, format!("must be a number, got {v}")))?,
            };
            if !x.is_finite() {
                return Err(bad(key, format!("must be finite, got {v}")));
            }
            Ok(x)
        };
        let positive = |key: &str| -> Result<f64, String> {
            let x = number(key)?;
            if x <= 0.0 {
                return Err(bad(key, format!("must be positive, got {x}")));
            }
            Ok(x)
        };
        let non_negative = |key: &str| -> Result<f64, String> {
            let x = number(key)?;
            if x < 0.0 {
                return Err(bad(key, format!("must not be negative, got {x}")));
            }
            Ok(x)
        };
        let name = match obj.get("name") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            None | Some(serde_json::Value::Null) => {
                return Err(bad("name", "missing field".into()))
            }
            Some(other) => {
                return Err(bad(
                    "name",
                    format!("must be a non-empty string, got {other}"),
                ))
            }
        };
        let mut g = GpuFleetSpec {
            name,
            hbm_bytes: positive("hbm_bytes")?,
            hbm_bandwidth: positive("hbm_bandwidth")?,
            flops_fp16: positive("flops_fp16")?,
            ops_8bit: positive("ops_8bit")?,
            price_usd: positive("price_usd")?,
            power_w: positive("power_w")?,
            source: String::new(),
            ..Self::h100_sxm()
        };
        if present("gpus_per_node") {
            let x = positive("gpus_per_node")?;
            if x.fract() != 0.0 || x > 1024.0 {
                return Err(bad(
                    "gpus_per_node",
                    format!("must be a whole number from 1 to 1024, got {x}"),
                ));
            }
            g.gpus_per_node = x as usize;
        }
        if present("nvlink_bandwidth") {
            g.nvlink_bandwidth = positive("nvlink_bandwidth")?;
        }
        if present("node_link_bandwidth") {
            g.node_link_bandwidth = positive("node_link_bandwidth")?;
        }
        if present("nvlink_latency_s") {
            g.nvlink_latency_s = non_negative("nvlink_latency_s")?;
        }
        if present("node_link_latency_s") {
            g.node_link_latency_s = non_negative("node_link_latency_s")?;
        }
        if present("reserved_fraction") {
            let x = non_negative("reserved_fraction")?;
            if x >= 1.0 {
                return Err(bad(
                    "reserved_fraction",
                    format!("must be from 0 to below 1, got {x}"),
                ));
            }
            g.reserved_fraction = x;
        }
        if present("stage_latency_s") {
            g.stage_latency_s = non_negative("stage_latency_s")?;
        }
        if present("source") {
            g.source = obj["source"]
                .as_str()
                .ok_or_else(|| bad("source", format!("must be a string, got {}", obj["source"])))?
                .to_string();
        }
        for (key, x) in [
            ("nvlink_latency_s", g.nvlink_latency_s),
            ("node_link_latency_s", g.node_link_latency_s),
            ("stage_latency_s", g.stage_latency_s),
        ] {
            if x > 1.0 {
                return Err(bad(key, format!("must be at most 1 second, got {x}")));
            }
        }
        Ok(g)
    }

    /// Ring all-reduce of `bytes` over `n` GPUs of one NVLink domain.
    pub fn all_reduce_s(&self, n: usize, bytes: f64) -> f64 {
        if n <= 1 {
            return 0.0;
        }
        2.0 * (n - 1) as f64 / n as f64 * bytes / self.nvlink_bandwidth
            + 2.0 * self.nvlink_latency_s
    }
}

/// Modeled GPU time per token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuCostBreakdown {
    pub gpu: String,
    pub modeled_memory_s: f64,
    pub modeled_compute_s: f64,
    pub modeled_dispatch_s: f64,
    pub modeled_submit_s: f64,
    /// `max(memory, compute) + dispatches + submit`.
    pub modeled_token_latency_s: f64,
    pub modeled_tokens_per_s: f64,
}

/// Modeled time for one token on a GPU that reads `weight_bytes + kv_bytes`
/// from device memory, does `flops`, and issues `dispatches` kernels in one
/// submission.
pub fn modeled_gpu_token_latency(
    weight_bytes: usize,
    kv_bytes: usize,
    flops: f64,
    dispatches: usize,
    gpu: &GpuSpec,
) -> GpuCostBreakdown {
    let memory = (weight_bytes + kv_bytes) as f64 / gpu.mem_bandwidth;
    let compute = flops / gpu.flops_fp16;
    let dispatch = dispatches as f64 * gpu.dispatch_s;
    let latency = memory.max(compute) + dispatch + gpu.submit_wait_s;
    GpuCostBreakdown {
        gpu: gpu.name.clone(),
        modeled_memory_s: memory,
        modeled_compute_s: compute,
        modeled_dispatch_s: dispatch,
        modeled_submit_s: gpu.submit_wait_s,
        modeled_token_latency_s: latency,
        modeled_tokens_per_s: 1.0 / latency,
    }
}

/// The GPU inputs for the same model and context as `plan`: weight bytes, KV
/// bytes read per token (one sequence, `kv_positions` filled), and FLOPs.
pub fn gpu_inputs_from_plan(plan: &Plan, kv_positions: Option<usize>) -> (usize, usize, f64) {
    let m = &plan.model;
    let positions = kv_positions.unwrap_or(m.context_len).min(m.context_len);
    let kv = m.num_layers * 2 * positions * m.num_kv_heads * m.head_dim * m.kv_dtype_bytes;
    let group = (m.num_heads / m.num_kv_heads.max(1)) as f64;
    let kv_values = (m.num_layers * 2 * positions * m.num_kv_heads * m.head_dim) as f64;
    // The embedding is a gather, not a product, unless it doubles as lm_head.
    let embed_params = if m.tie_word_embeddings {
        0
    } else {
        m.vocab_size * m.hidden_size
    };
    let flops = 2.0 * (m.params - embed_params) as f64 + 2.0 * group * kv_values;
    (m.weight_bytes, kv, flops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chip::{place, PlaceOptions, TensorInfo};
    use crate::model::{DType, LlamaConfig};

    fn cfg() -> LlamaConfig {
        LlamaConfig::tiny_for_tests(5, 512, true)
    }

    #[test]
    fn latency_adds_up_and_pipeline_fills() {
        let c = cfg();
        let t = TensorInfo::from_config(&c, DType::F32, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let plan = place(&c, &t, &spec, &PlaceOptions::for_config(&c)).unwrap();
        let one = modeled_token_latency(&plan, &spec, Precision::Fp16);
        let sum: f64 = one.chips.iter().map(|c| c.modeled_stage_s).sum();
        assert!((sum - one.modeled_token_latency_s).abs() < 1e-15);
        assert!(one.modeled_link_s > 0.0 && one.modeled_sram_s > 0.0);
        assert!(
            one.modeled_bubble_fraction > 0.5,
            "one token in a long pipeline idles most chips"
        );
        let mut o = CostOptions::new(Precision::Fp16);
        o.inflight = plan.chips.len() * 4;
        let full = modeled_token_latency_with(&plan, &spec, &o);
        assert!(full.modeled_throughput_tokens_per_s > one.modeled_throughput_tokens_per_s * 5.0);
        assert!(full.modeled_tokens_per_s_per_user_at_inflight < one.modeled_tokens_per_s_per_user);
        assert!(full.modeled_bubble_fraction < one.modeled_bubble_fraction);
        let mut o = CostOptions::new(Precision::Fp16);
        o.activation_bytes = 2;
        let half = modeled_token_latency_with(&plan, &spec, &o);
        assert!(half.modeled_link_s < one.modeled_link_s);
        o.carry = CarryModel::ResidualOnly;
        let res = modeled_token_latency_with(&plan, &spec, &o);
        assert!(res.modeled_link_s < half.modeled_link_s);
        // One-chip plans pay no links.
        let g = ChipSpec::groq_v1();
        let plan1 = place(&c, &t, &g, &PlaceOptions::for_config(&c)).unwrap();
        let c1 = modeled_token_latency(&plan1, &g, Precision::Fp16);
        assert_eq!(c1.modeled_link_s, 0.0);
    }

    #[test]
    fn dependent_stages_and_floor() {
        assert_eq!(stage_of("layers.3.wq", false), (3, 0));
        assert_eq!(stage_of("layers.3.wo.bias", false), (3, 0));
        assert_eq!(stage_of("layers.3.w_down", false), (3, 1));
        assert_eq!(stage_of("layers.12.ffn_norm", true), (12, 1));
        assert_eq!(stage_of("embed", false), (0, 0));
        assert_eq!(stage_of("embed", true), (usize::MAX, 0));
        assert_eq!(stage_of("lm_head", false), (usize::MAX, 0));
        assert_eq!(dependent_stages_per_token(32, false), 65);
        assert_eq!(dependent_stages_per_token(32, true), 97);
        let mut g = ChipSpec::groq_v1();
        g.stage_latency_s = 10e-6;
        assert_eq!(dependent_stage_s(4e-6, &g), 10e-6);
        assert_eq!(dependent_stage_s(12e-6, &g), 12e-6);
        assert!((stage_floor_extra_s(4e-6, &g) - 6e-6).abs() < 1e-18);
        assert_eq!(stage_floor_extra_s(12e-6, &g), 0.0);
        // The chain model: every layer's two stages and lm_head are found,
        // and the floor is charged once per stage.
        let c = cfg();
        let t = TensorInfo::from_config(&c, DType::F32, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let plan = place(&c, &t, &spec, &PlaceOptions::for_config(&c)).unwrap();
        let r = modeled_token_latency(&plan, &spec, Precision::Fp16);
        assert_eq!(r.dependent_stages, 2 * c.num_layers + 1);
        let mut none = spec.clone();
        none.stage_latency_s = 0.0;
        let r0 = modeled_token_latency(&plan, &none, Precision::Fp16);
        assert_eq!(r0.modeled_floor_s, 0.0);
        assert!(r.modeled_floor_s > 0.0);
        assert!(r.modeled_floor_s <= r.dependent_stages as f64 * spec.stage_latency_s);
        assert!(
            (r.modeled_token_latency_s - r0.modeled_token_latency_s - r.modeled_floor_s).abs()
                < 1e-12
        );
    }

    #[test]
    fn a_tensor_parallel_group_costs_its_slowest_chip_and_its_collective() {
        let c = cfg();
        let t = TensorInfo::from_config(&c, DType::F32, DType::F32).unwrap();
        let mut g = ChipSpec::groq_v1();
        g.stage_latency_s = 0.0;
        g.link_latency_s = 0.0;
        g.link_bandwidth = 1e30;
        let o = PlaceOptions::for_config(&c);
        let p1 = place(&c, &t, &g, &o).unwrap();
        let p2 = crate::chip::place_tp(&c, &t, &g, &o, 2).unwrap();
        let r1 = modeled_token_latency(&p1, &g, Precision::Fp16);
        let r2 = modeled_token_latency(&p2, &g, Precision::Fp16);
        // Half the rows per chip, side by side (norms are replicated).
        assert!(r2.modeled_token_latency_s < 0.75 * r1.modeled_token_latency_s);
        assert!(r2.modeled_chip_s > 0.9 * r1.modeled_chip_s);
        // The collectives are charged.
        let r2l = modeled_token_latency(&p2, &ChipSpec::groq_v1(), Precision::Fp16);
        assert!(r2l.modeled_link_s > 0.0);
    }

    #[test]
    fn gpu_model() {
        let g = GpuSpec::h100_sxm();
        let r = modeled_gpu_token_latency(3_350_000_000, 0, 1e9, 100, &g);
        assert!((r.modeled_memory_s - 1e-3).abs() < 1e-12);
        assert!((r.modeled_token_latency_s - (1e-3 + 100.0 * 2.2e-6 + 57e-6)).abs() < 1e-12);
    }
}
