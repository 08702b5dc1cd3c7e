//! `sramlm study`: for a model and N users, an SRAM-only chip cluster against
//! a GPU fleet — chips, speed per user, aggregate throughput, dollars and
//! watts. Config-only: no weights are read.
//!
//! **Everything here is modelled**, not measured: every figure comes from the
//! closed-form model below and the inputs (chip spec, GPU preset, prices,
//! powers), and every output field that is a model result starts with
//! `modeled_` (or sits in a structure named so). See docs/study.md for the
//! sources of the inputs and the validation against public deployments.
//!
//! # SRAM side: tensor × pipeline layouts
//!
//! A layout is `tp` chips per pipeline stage × `pp` stages. Inside a stage
//! every layer is split `tp` ways (Megatron style): attention by heads (KV
//! heads are replicated when `tp` exceeds them), the MLP (every expert of a
//! MoE model) by features, the embedding and lm_head by vocabulary. Each
//! layer then needs two all-reduces of the residual (after the attention
//! output and after the MLP down projection), the embedding one more, and
//! lm_head an all-gather of each chip's top-1 (value, index). Consecutive
//! stages pass the residual over a point-to-point transfer striped over
//! links; the last stage sends the token id back to the first. Collective
//! costs come from [`ChipSpec::all_reduce`] / [`ChipSpec::all_gather`] /
//! [`ChipSpec::p2p`] (topology, links per peer, striping, hop latency).
//!
//! Capacity: weights (with replication) + every user's KV cache at `context`
//! positions + activation scratch, packed in forward order into stages of
//! `tp` chips (a layer may straddle two stages), so `pp = ⌈bytes / (tp ·
//! usable SRAM)⌉`.
//!
//! Time: users are split into `pp` micro-batches of `m = ⌈users/pp⌉`; a
//! micro-batch reads each weight once and its own users' KV. One token of
//! every user takes `max(SRAM read, compute) / tp + collectives + stage
//! transfers` for a micro-batch of `m` (stages are assumed balanced, so the
//! pipeline is full when `users ≥ pp`). The search over `tp` ∈ {1, 2, 4, …,
//! heads} picks the lowest latency or the fewest chips (`--objective`).
//!
//! # GPU side
//!
//! A replica is `tp` GPUs of one NVLink node × `pp` nodes, holding the
//! weights once; each replica serves as many users as its memory holds KV
//! for (after the weights and a reserved share); replicas are added until
//! every user fits. Batch-dependent roofline per token: `max((weights read +
//! batch · KV) / (tp · HBM bandwidth), batch · FLOPs / (tp · rate))` +
//! NVLink all-reduces + inter-node transfers.
//!
//! # Economics
//!
//! Capital = units × price; power = units × watts (drawn all the time);
//! J/token = power / (aggregate tok/s × utilization); $/Mtoken = (capital
//! amortized over `amortization_years` + electricity) per served token at the
//! stated utilization.

pub mod cli;
pub mod render;
pub mod validation;

use crate::chip::spec::CollectiveCost;
use crate::chip::{ChipSpec, GpuFleetSpec};
use crate::model::config::MoeConfig;
use crate::model::LlamaConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A one-line, user-facing error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct StudyError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, StudyError> {
    Err(StudyError(msg.into()))
}

/// The shapes the study needs (no weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub name: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// MLP features (per expert for a MoE model).
    pub ffn: usize,
    pub vocab: usize,
    pub tied_embeddings: bool,
    /// The model's context window.
    pub context_window: usize,
    /// 1 for a dense model.
    pub experts: usize,
    pub experts_per_token: usize,
}

impl ModelShape {
    pub fn new(name: &str, cfg: &LlamaConfig, moe: Option<MoeConfig>) -> Self {
        let (experts, per_tok) =
            moe.map_or((1, 1), |m| (m.num_local_experts, m.num_experts_per_tok));
        ModelShape {
            name: name.into(),
            hidden: cfg.hidden_size,
            layers: cfg.num_layers,
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            ffn: cfg.intermediate_size,
            vocab: cfg.vocab_size,
            tied_embeddings: cfg.tie_word_embeddings,
            context_window: cfg.max_position_embeddings,
            experts,
            experts_per_token: per_tok,
        }
    }
    fn d(&self) -> f64 {
        self.hidden as f64
    }
    /// q, k, v, o of one layer.
    pub fn attn_params(&self) -> f64 {
        let (d, hd) = (self.d(), self.head_dim as f64);
        2.0 * d * hd * self.heads as f64 + 2.0 * d * hd * self.kv_heads as f64
    }
    /// gate, up, down of one expert (of the MLP for a dense model).
    pub fn expert_params(&self) -> f64 {
        3.0 * self.d() * self.ffn as f64
    }
    pub fn router_params(&self) -> f64 {
        if self.experts > 1 {
            self.d() * self.experts as f64
        } else {
            0.0
        }
    }
    /// Every parameter (the embedding once when tied).
    pub fn total_params(&self) -> f64 {
        let d = self.d();
        let layer = self.attn_params()
            + self.experts as f64 * self.expert_params()
            + self.router_params()
            + 2.0 * d;
        let head = if self.tied_embeddings { 1.0 } else { 2.0 };
        self.layers as f64 * layer + head * self.vocab as f64 * d + d
    }
    /// Parameters in products per token (routed experts only; the embedding
    /// is a gather, lm_head a product).
    pub fn active_params(&self) -> f64 {
        self.layers as f64
            * (self.attn_params()
                + self.experts_per_token as f64 * self.expert_params()
                + self.router_params())
            + self.vocab as f64 * self.d()
    }
    /// Expected distinct experts per layer touched by `m` tokens routed
    /// uniformly at random: `E · (1 − (1 − k/E)^m)`.
    pub fn experts_touched(&self, m: usize) -> f64 {
        if self.experts <= 1 {
            return 1.0;
        }
        let e = self.experts as f64;
        let p = self.experts_per_token as f64 / e;
        e * (1.0 - (1.0 - p).powi(m.min(1 << 20) as i32))
    }
}

/// Loads the shapes from a config.json, a model folder with one, or a GGUF
/// header; `None`: the embedded default model.
pub fn load_shape(path: Option<&Path>) -> Result<ModelShape, StudyError> {
    let Some(path) = path else {
        let m = crate::model::load_embedded()
            .map_err(|e| StudyError(format!("cannot load the embedded model: {e}")))?;
        return Ok(ModelShape::new("stories260K (embedded)", &m.config, None));
    };
    let shown = path.display();
    if !path.exists() {
        return err(format!("{shown}: no such file or folder"));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.to_string());
    let json_path = if path.is_dir() {
        let p = path.join("config.json");
        if !p.is_file() {
            return err(format!(
                "{shown}: a model folder needs a config.json (or give a .gguf file)"
            ));
        }
        p
    } else {
        path.to_path_buf()
    };
    let is_gguf = json_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf {
        return gguf_shape(&json_path, &name);
    }
    if std::fs::metadata(&json_path).is_ok_and(|m| !m.is_file()) {
        return err(format!("{shown}: not a regular file"));
    }
    let len = std::fs::metadata(&json_path).map(|m| m.len()).unwrap_or(0);
    if len > 16 << 20 {
        return err(format!(
            "{}: {len} bytes is too large for a config.json (give a config.json, a model folder or a .gguf)",
            json_path.display()
        ));
    }
    let text = std::fs::read_to_string(&json_path)
        .map_err(|e| StudyError(format!("{}: {e}", json_path.display())))?;
    let (cfg, moe) = LlamaConfig::shapes_from_hf_str(&text, &json_path)
        .map_err(|e| StudyError(format!("cannot read config {}: {e}", json_path.display())))?;
    let name = if path.is_dir() {
        name
    } else {
        name.trim_end_matches(".json").to_string()
    };
    Ok(ModelShape::new(&name, &cfg, moe))
}

fn gguf_shape(path: &Path, name: &str) -> Result<ModelShape, StudyError> {
    use crate::model::gguf::{config_from_gguf, GgufFile};
    let shown = path.display();
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return err(format!("{shown}: not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(|e| StudyError(format!("{shown}: {e}")))?;
    // SAFETY: read-only mapping of a file sramlm never writes (as model::gguf::load).
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| StudyError(format!("{shown}: {e}")))?;
    let g = GgufFile::parse(&map).map_err(|e| StudyError(format!("{shown}: {e}")))?;
    let cfg = config_from_gguf(&g).map_err(|e| StudyError(format!("{shown}: {e}")))?;
    let arch = g
        .architecture()
        .map_err(|e| StudyError(format!("{shown}: {e}")))?
        .to_string();
    let count = |k: &str| g.get_usize(&format!("{arch}.{k}")).ok().flatten();
    let moe = match (count("expert_count"), count("expert_used_count")) {
        (Some(e), Some(k)) if e > 1 => {
            Some(MoeConfig::checked(e, k).map_err(|m| StudyError(format!("{shown}: {m}")))?)
        }
        _ => None,
    };
    Ok(ModelShape::new(name.trim_end_matches(".gguf"), &cfg, moe))
}

/// A number format of the study (bytes per value; no block divisibility is
/// required: a modelled precision is a byte count, not a tensor layout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumberFormat {
    pub name: String,
    pub bytes: f64,
    /// Runs at the 8-bit (INT8/FP8) rate rather than the FP16 one.
    pub eight_bit: bool,
}

impl NumberFormat {
    pub const NAMES: &'static str = "f32, f16, bf16, fp8, int8, q8_0, int4, q4_0, q4_k, q6_k";
    pub fn parse(name: &str) -> Result<Self, StudyError> {
        let (bytes, eight_bit) = match name.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => (4.0, false),
            "f16" | "fp16" | "bf16" => (2.0, false),
            "fp8" | "int8" | "i8" => (1.0, true),
            "q8_0" => (34.0 / 32.0, true),
            "int4" | "i4" => (0.5, true),
            "q4_0" => (18.0 / 32.0, true),
            "q4_k" => (144.0 / 256.0, true),
            "q6_k" => (210.0 / 256.0, true),
            _ => {
                return err(format!(
                    "unknown number format `{name}` (known: {})",
                    Self::NAMES
                ))
            }
        };
        Ok(NumberFormat {
            name: name.to_ascii_lowercase(),
            bytes,
            eight_bit,
        })
    }
}

/// What the layout search minimizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Lowest time per token per user (ties: fewer chips).
    Latency,
    /// Fewest chips / GPUs (ties: lower latency).
    Chips,
}

/// Inputs of a study besides the model and hardware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyOptions {
    pub users: usize,
    /// KV positions per user (worst case: every user at this length).
    pub context: usize,
    pub weights: NumberFormat,
    pub kv: NumberFormat,
    pub activations: NumberFormat,
    pub objective: Objective,
    /// Share of the time the hardware serves tokens (for J/token, $/Mtoken).
    pub utilization: f64,
    pub electricity_usd_per_kwh: f64,
    pub amortization_years: f64,
    /// Force the SRAM side's tensor-parallel degree.
    pub tp: Option<usize>,
    /// Force the GPU side's tensor-parallel degree.
    pub gpu_tp: Option<usize>,
    /// A fixed latency per layer per token on the SRAM side (dependent
    /// on-chip steps, synchronization) — not in the roofline; 0 by default,
    /// and *not sourced*: docs/study.md fits it to one published point and
    /// checks the others with it.
    #[serde(default)]
    pub layer_overhead_s: f64,
    /// SRAM side: read (and compute) every expert of a MoE layer for every
    /// token, as a statically scheduled machine without data-dependent
    /// routing would (a hypothesis, off by default).
    #[serde(default)]
    pub moe_all_experts: bool,
}

impl StudyOptions {
    /// Defaults: int8 weights, fp16 KV and activations, latency objective,
    /// 50 % utilization, US$0.10/kWh, 3-year amortization.
    pub fn new(users: usize, context: usize) -> Self {
        StudyOptions {
            users,
            context,
            weights: NumberFormat::parse("int8").unwrap(),
            kv: NumberFormat::parse("f16").unwrap(),
            activations: NumberFormat::parse("f16").unwrap(),
            objective: Objective::Latency,
            utilization: 0.5,
            electricity_usd_per_kwh: 0.10,
            amortization_years: 3.0,
            tp: None,
            gpu_tp: None,
            layer_overhead_s: 0.0,
            moe_all_experts: false,
        }
    }
    pub fn validate(&self, m: &ModelShape) -> Result<(), StudyError> {
        if self.users == 0 || self.users > 10_000_000 {
            return err(format!(
                "--users must be from 1 to 10000000, got {}",
                self.users
            ));
        }
        if self.context == 0 {
            return err("--ctx must be at least 1");
        }
        if self.context > m.context_window {
            return err(format!(
                "--ctx {} is larger than the model's context window ({})",
                self.context, m.context_window
            ));
        }
        if !(self.utilization > 0.0 && self.utilization <= 1.0) {
            return err(format!(
                "--utilization must be in (0, 1], got {}",
                self.utilization
            ));
        }
        if !(self.electricity_usd_per_kwh.is_finite() && self.electricity_usd_per_kwh >= 0.0) {
            return err("--electricity must be a non-negative price per kWh");
        }
        if !(self.layer_overhead_s.is_finite() && (0.0..=1.0).contains(&self.layer_overhead_s)) {
            return err("--layer-overhead-us must be from 0 to 1000000");
        }
        if !(self.amortization_years.is_finite() && self.amortization_years > 0.0) {
            return err("--years must be positive");
        }
        for (flag, tp) in [("--tp", self.tp), ("--gpu-tp", self.gpu_tp)] {
            if let Some(t) = tp {
                if t == 0 || t > m.heads {
                    return err(format!(
                        "{flag} {t}: must be from 1 to the number of attention heads ({})",
                        m.heads
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Modelled dollars and watts of one side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeledEconomics {
    pub price_per_unit_usd: Option<f64>,
    pub power_per_unit_w: Option<f64>,
    pub modeled_capital_usd: Option<f64>,
    pub modeled_power_w: Option<f64>,
    pub modeled_energy_per_year_kwh: Option<f64>,
    pub modeled_electricity_usd_per_year: Option<f64>,
    pub modeled_joules_per_token: Option<f64>,
    /// Capital amortized + electricity, per million served tokens.
    pub modeled_usd_per_mtoken: Option<f64>,
}

fn economics(
    units: usize,
    price: Option<f64>,
    power: Option<f64>,
    aggregate: f64,
    o: &StudyOptions,
) -> ModeledEconomics {
    let n = units as f64;
    let served = aggregate * o.utilization;
    let capital = price.map(|p| p * n);
    let watts = power.map(|w| w * n);
    let kwh_year = watts.map(|w| w / 1000.0 * 8760.0);
    let elec_year = kwh_year.map(|k| k * o.electricity_usd_per_kwh);
    let usd_per_s = match (capital, watts) {
        (Some(c), Some(w)) => Some(
            c / (o.amortization_years * 365.0 * 86400.0)
                + w / 1000.0 / 3600.0 * o.electricity_usd_per_kwh,
        ),
        _ => None,
    };
    ModeledEconomics {
        price_per_unit_usd: price,
        power_per_unit_w: power,
        modeled_capital_usd: capital,
        modeled_power_w: watts,
        modeled_energy_per_year_kwh: kwh_year,
        modeled_electricity_usd_per_year: elec_year,
        modeled_joules_per_token: watts.map(|w| w / served),
        modeled_usd_per_mtoken: usd_per_s.map(|u| u / served * 1e6),
    }
}

/// One stage's share of a token, for the timeline chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: usize,
    pub first_chip: usize,
    pub modeled_sram_s: f64,
    pub modeled_compute_s: f64,
    /// This stage's share of the latency floor's addition.
    pub modeled_floor_s: f64,
    pub modeled_collective_s: f64,
    /// The transfer to the next stage (the last stage: the loopback).
    pub modeled_link_out_s: f64,
}

/// One SRAM-side layout, costed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SramLayout {
    pub tp: usize,
    pub pp: usize,
    pub chips: usize,
    /// Rounded up to whole nodes.
    pub chips_deployed: usize,
    /// Users per micro-batch (`⌈users / pp⌉`).
    pub microbatch_users: usize,
    pub weight_bytes: f64,
    pub kv_bytes: f64,
    pub activation_bytes_per_chip: f64,
    pub sram_utilization: f64,
    pub modeled_sram_s: f64,
    pub modeled_compute_s: f64,
    pub modeled_collective_s: f64,
    pub modeled_stage_link_s: f64,
    /// `layers × layer_overhead_s` (0 unless asked for).
    pub modeled_layer_overhead_s: f64,
    /// Dependent stages of one token (`crate::chip::cost`, "Latency model").
    pub dependent_stages_per_token: usize,
    /// The chip's latency floor per stage (groq-v1: FITTED, see
    /// `ChipSpec::stage_latency_s`).
    pub stage_latency_s: f64,
    /// What the floor adds over the stages' streaming work.
    pub modeled_latency_floor_s: f64,
    /// One token of every user (one pass of every micro-batch).
    pub modeled_token_period_s: f64,
    /// One all-reduce of the residual (per layer: two).
    pub all_reduce: CollectiveCost,
    pub all_reduces_per_token: usize,
    pub lm_head_gather: CollectiveCost,
    pub stage_transfers_per_token: usize,
    pub link_bytes_per_token: f64,
}

/// One GPU-side layout, costed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuLayout {
    pub tp: usize,
    pub pp: usize,
    pub replicas: usize,
    pub gpus: usize,
    /// Users per replica (its decode batch).
    pub batch: usize,
    /// Users one replica's memory holds.
    pub users_per_replica_max: usize,
    pub weight_bytes: f64,
    pub kv_bytes_per_user: f64,
    pub memory_per_gpu_used: f64,
    pub modeled_memory_s: f64,
    pub modeled_compute_s: f64,
    pub modeled_collective_s: f64,
    pub modeled_stage_link_s: f64,
    /// What the GPU's latency floor per dependent stage adds (0 unless its
    /// spec sets `stage_latency_s`).
    pub modeled_latency_floor_s: f64,
    pub modeled_token_period_s: f64,
    /// `"memory"` or `"compute"`: what sets the roofline.
    pub modeled_bound: String,
}

/// The headline numbers of one side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SideSummary {
    pub side: String,
    pub hardware: String,
    pub units: usize,
    pub units_deployed: usize,
    pub layout: String,
    pub modeled_tokens_per_s_per_user: f64,
    pub modeled_aggregate_tokens_per_s: f64,
    pub modeled_tokens_per_s_per_unit: f64,
    pub economics: ModeledEconomics,
}

/// One point of the users sweep (speed per user against cost per token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub users: usize,
    pub side: String,
    pub units: usize,
    pub modeled_tokens_per_s_per_user: f64,
    pub modeled_aggregate_tokens_per_s: f64,
    pub modeled_usd_per_mtoken: Option<f64>,
}

/// The whole study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyReport {
    pub note: String,
    /// The SRAM side's latency floor and where it comes from (fitted or not).
    pub latency_floor: String,
    pub model: ModelShape,
    pub total_params: f64,
    pub active_params: f64,
    pub options: StudyOptions,
    pub chip: ChipSpec,
    pub gpu: GpuFleetSpec,
    pub sram: SideSummary,
    pub sram_layout: SramLayout,
    pub sram_stages: Vec<StageTime>,
    pub gpu_side: SideSummary,
    pub gpu_layout: GpuLayout,
    /// Every layout the search costed (both sides), best first per side.
    pub sram_layouts_considered: Vec<SramLayout>,
    pub gpu_layouts_considered: Vec<GpuLayout>,
    pub sweep: Vec<SweepPoint>,
}

const MAX_CHIPS: f64 = 2e6;

/// ", FITTED" when `spec`'s latency floor is groq-v1's fitted value (the
/// preset or a scale model of it), ", from the spec" otherwise, "" with none.
pub fn floor_label(spec: &ChipSpec) -> &'static str {
    if spec.stage_latency_s == 0.0 {
        ", none in the spec"
    } else if spec.stage_latency_s == crate::chip::spec::GROQ_V1_STAGE_LATENCY_S {
        " FITTED"
    } else {
        ", from the spec"
    }
}

/// The latency floor of `spec` in words, for the report's JSON and text.
pub fn floor_note(spec: &ChipSpec) -> String {
    let us = spec.stage_latency_s * 1e6;
    if spec.stage_latency_s == 0.0 {
        format!("{}: no latency floor per dependent stage (stage_latency_s 0): speeds are roofline + links only, optimistic for small models", spec.name)
    } else if spec.stage_latency_s == crate::chip::spec::GROQ_V1_STAGE_LATENCY_S {
        format!("{}: latency floor {us:.1} µs per dependent stage, FITTED to one published point (Llama-2-70B at 270 tok/s per user), not sourced; see docs/study.md", spec.name)
    } else {
        format!(
            "{}: latency floor {us:.2} µs per dependent stage, from the chip spec",
            spec.name
        )
    }
}

fn kv_heads_total(m: &ModelShape, tp: usize) -> f64 {
    (m.kv_heads.div_ceil(tp) * tp) as f64
}
fn q_heads_total(m: &ModelShape, tp: usize) -> f64 {
    (m.heads.div_ceil(tp) * tp) as f64
}

/// Bytes of weights over the whole layout at tensor-parallel degree `tp`
/// (replicated KV heads, routers and norms counted on every chip).
fn weight_bytes(m: &ModelShape, tp: usize, pp: usize, o: &StudyOptions) -> f64 {
    let (d, hd) = (m.d(), m.head_dim as f64);
    let wb = o.weights.bytes;
    let attn = 2.0 * d * hd * q_heads_total(m, tp) + 2.0 * d * hd * kv_heads_total(m, tp);
    let layer = wb * (attn + m.experts as f64 * m.expert_params() + tp as f64 * m.router_params())
        + 2.0 * 2.0 * d * tp as f64; // norms in fp16 on every chip
                                     // A tied embedding is needed at both ends of a pipeline.
    let heads = if m.tied_embeddings && pp == 1 {
        1.0
    } else {
        2.0
    };
    m.layers as f64 * layer + heads * wb * m.vocab as f64 * d + 2.0 * d * tp as f64
}

fn kv_bytes_per_user_position(m: &ModelShape, tp: usize, o: &StudyOptions) -> f64 {
    m.layers as f64 * 2.0 * kv_heads_total(m, tp) * m.head_dim as f64 * o.kv.bytes
}

/// Weight bytes one micro-batch of `mb` users reads (experts touched only).
fn weight_bytes_read(m: &ModelShape, tp: usize, mb: usize, o: &StudyOptions) -> f64 {
    let (d, hd) = (m.d(), m.head_dim as f64);
    let attn = 2.0 * d * hd * q_heads_total(m, tp) + 2.0 * d * hd * kv_heads_total(m, tp);
    let layer = attn + m.experts_touched(mb) * m.expert_params() + tp as f64 * m.router_params();
    o.weights.bytes * (m.layers as f64 * layer + m.vocab as f64 * d + mb as f64 * d)
}

/// (matmul FLOPs, attention FLOPs) for `mb` tokens at `ctx` positions.
fn flops(m: &ModelShape, mb: usize, ctx: usize) -> (f64, f64) {
    let mb = mb as f64;
    let attn = 4.0 * (m.heads * m.head_dim) as f64 * ctx as f64 * m.layers as f64;
    (2.0 * m.active_params() * mb, attn * mb)
}

/// The latency model's addition to one micro-batch pass at tensor-parallel
/// degree `tp` (see `crate::chip::cost`, "Latency model"): per dependent
/// stage — per layer the attention side, a MoE router, the MLP/experts; then
/// lm_head — its streaming work `max(SRAM read, compute)` over its `tp`
/// chips, and the floor's shortfall `max(0, stage_latency_s − work)`.
/// Returns (the sum of the shortfalls, the number of stages).
fn floor_extra_s(
    m: &ModelShape,
    spec: &ChipSpec,
    tp: usize,
    mb: usize,
    o: &StudyOptions,
) -> (f64, usize) {
    let rate = if o.weights.eight_bit {
        spec.compute_ops_int8
    } else {
        spec.compute_flops_fp16
    };
    let hw = StageHardware {
        bandwidth: spec.sram_bandwidth,
        rate,
        fp16: spec.compute_flops_fp16,
        floor_s: spec.stage_latency_s,
    };
    floor_extra_on(m, &hw, tp, mb, o)
}

/// What one device of a tensor-parallel group streams and computes at, and
/// its latency floor per dependent stage.
struct StageHardware {
    bandwidth: f64,
    rate: f64,
    fp16: f64,
    floor_s: f64,
}

fn floor_extra_on(
    m: &ModelShape,
    hw: &StageHardware,
    tp: usize,
    mb: usize,
    o: &StudyOptions,
) -> (f64, usize) {
    let (d, hd, t, b) = (m.d(), m.head_dim as f64, tp as f64, mb as f64);
    let wb = o.weights.bytes;
    let work = |bytes: f64, mm_flops: f64, fp16_flops: f64| {
        (bytes / hw.bandwidth).max(mm_flops / hw.rate + fp16_flops / hw.fp16)
    };
    let short = |w: f64| crate::chip::cost::floor_shortfall_s(w, hw.floor_s);
    // Per chip: its share of the stage.
    let attn_w = 2.0 * d * hd * q_heads_total(m, tp) + 2.0 * d * hd * kv_heads_total(m, tp);
    let kv_layer = kv_bytes_per_user_position(m, tp, o) / m.layers.max(1) as f64 * o.context as f64;
    let attn = work(
        (wb * attn_w + kv_layer * b) / t,
        2.0 * m.attn_params() * b / t,
        4.0 * (m.heads * m.head_dim) as f64 * o.context as f64 * b / t,
    );
    let mlp = work(
        wb * m.experts_touched(mb) * m.expert_params() / t,
        2.0 * m.experts_per_token as f64 * m.expert_params() * b / t,
        0.0,
    );
    let head = work(
        wb * (m.vocab as f64 * d / t + b * d),
        2.0 * m.vocab as f64 * d * b / t,
        0.0,
    );
    let moe = m.experts > 1;
    let mut per_layer = short(attn) + short(mlp);
    if moe {
        // Every chip holds the whole router (replicated) and runs it.
        let router = work(wb * m.router_params(), 2.0 * m.router_params() * b, 0.0);
        per_layer += short(router);
    }
    (
        m.layers as f64 * per_layer + short(head),
        crate::chip::dependent_stages_per_token(m.layers, moe),
    )
}

/// Costs one SRAM layout; `None` when it cannot be built.
pub fn sram_layout(
    m: &ModelShape,
    spec: &ChipSpec,
    tp: usize,
    o: &StudyOptions,
) -> Result<(SramLayout, Vec<StageTime>), StudyError> {
    if tp == 0 || tp > m.heads {
        return err(format!(
            "tensor-parallel degree {tp} must be from 1 to {}",
            m.heads
        ));
    }
    let dense;
    let m = if o.moe_all_experts && m.experts > 1 {
        dense = ModelShape {
            experts_per_token: m.experts,
            ..m.clone()
        };
        &dense
    } else {
        m
    };
    let users = o.users;
    let (d, act) = (m.d(), o.activations.bytes);
    let kv_user = kv_bytes_per_user_position(m, tp, o) * o.context as f64;
    let kv = kv_user * users as f64;
    // f32 scratch per user of the micro-batch: residual, q|k|v, gate|up
    // (lm_head keeps a running top-1, not the logits).
    let act_per_chip = |mb: usize| {
        let width = d
            + (q_heads_total(m, tp) + 2.0 * kv_heads_total(m, tp)) * m.head_dim as f64 / tp as f64
            + 2.0 * m.ffn as f64 * m.experts_per_token as f64 / tp as f64;
        4.0 * width * mb as f64
    };
    let sram = spec.sram_bytes as f64;
    // pp depends on the micro-batch and the micro-batch on pp: iterate.
    let mut pp = 1usize;
    for _ in 0..8 {
        let mb = users.div_ceil(pp);
        let cap = sram - act_per_chip(mb);
        if cap <= sram * 0.05 {
            return err(format!(
                "{}: activation scratch of {mb} users per micro-batch leaves no SRAM at tp {tp}",
                spec.name
            ));
        }
        let total = weight_bytes(m, tp, pp, o) + kv;
        let need = (total / (tp as f64 * cap)).ceil().max(1.0);
        if need * tp as f64 > MAX_CHIPS {
            return err(format!(
                "the SRAM side would need more than {MAX_CHIPS} chips of {} (tp {tp}); use fewer users or a shorter --ctx",
                spec.name
            ));
        }
        let next = need as usize;
        if next == pp {
            break;
        }
        pp = next.max(pp);
    }
    let mb = users.div_ceil(pp);
    let chips = tp * pp;
    let wbytes = weight_bytes(m, tp, pp, o);
    let rate = if o.weights.eight_bit {
        spec.compute_ops_int8
    } else {
        spec.compute_flops_fp16
    };
    let w_read = weight_bytes_read(m, tp, mb, o);
    let kv_read = kv_user * mb as f64;
    let sram_s = (w_read + kv_read) / (tp as f64 * spec.sram_bandwidth);
    let (mm, at) = flops(m, mb, o.context);
    let compute_s = mm / (tp as f64 * rate) + at / (tp as f64 * spec.compute_flops_fp16);
    let ar = spec.all_reduce(tp, mb as f64 * d * act);
    let ars = if tp > 1 { 2 * m.layers + 1 } else { 0 };
    let gather = spec.all_gather(tp, mb as f64 * 8.0);
    let collective_s = ars as f64 * ar.modeled_s + gather.modeled_s;
    let (floor_s, dependent_stages) = floor_extra_s(m, spec, tp, mb, o);
    let residual = mb as f64 * d * act;
    let overhead_s = o.layer_overhead_s * m.layers as f64;
    let mut stage_link_s = 0.0;
    let mut link_bytes = ars as f64 * ar.link_bytes_total + gather.link_bytes_total;
    let mut stages = Vec::with_capacity(pp);
    for s in 0..pp {
        let last = s + 1 == pp;
        let from = s * tp;
        let (to, bytes) = if last {
            (0, mb as f64 * 4.0)
        } else {
            ((s + 1) * tp, residual)
        };
        let t = if pp == 1 {
            CollectiveCost {
                algorithm: "none".into(),
                bytes_sent_per_chip: 0.0,
                link_bytes_total: 0.0,
                steps: 0,
                modeled_s: 0.0,
            }
        } else {
            spec.p2p(bytes, spec.hops_between(from + tp - 1, to))
        };
        stage_link_s += t.modeled_s;
        link_bytes += t.link_bytes_total * if last { 1.0 } else { tp as f64 };
        stages.push(StageTime {
            stage: s,
            first_chip: from,
            modeled_sram_s: sram_s / pp as f64,
            modeled_compute_s: compute_s / pp as f64,
            modeled_floor_s: floor_s / pp as f64,
            modeled_collective_s: (collective_s + overhead_s) / pp as f64,
            modeled_link_out_s: t.modeled_s,
        });
    }
    let period = sram_s.max(compute_s) + floor_s + collective_s + stage_link_s + overhead_s;
    let node = spec.interconnect.chips_per_node.max(1);
    let layout = SramLayout {
        tp,
        pp,
        chips,
        chips_deployed: chips.div_ceil(node) * node,
        microbatch_users: mb,
        weight_bytes: wbytes,
        kv_bytes: kv,
        activation_bytes_per_chip: act_per_chip(mb),
        sram_utilization: (wbytes + kv + chips as f64 * act_per_chip(mb)) / (chips as f64 * sram),
        modeled_sram_s: sram_s,
        modeled_compute_s: compute_s,
        modeled_collective_s: collective_s,
        modeled_stage_link_s: stage_link_s,
        modeled_layer_overhead_s: overhead_s,
        dependent_stages_per_token: dependent_stages,
        stage_latency_s: spec.stage_latency_s,
        modeled_latency_floor_s: floor_s,
        modeled_token_period_s: period,
        all_reduce: ar,
        all_reduces_per_token: ars,
        lm_head_gather: gather,
        stage_transfers_per_token: pp.saturating_sub(1) + usize::from(pp > 1),
        link_bytes_per_token: link_bytes / mb as f64,
    };
    Ok((layout, stages))
}

/// Costs one GPU layout at tensor-parallel degree `tp` (within a node).
pub fn gpu_layout(
    m: &ModelShape,
    g: &GpuFleetSpec,
    tp: usize,
    o: &StudyOptions,
) -> Result<GpuLayout, StudyError> {
    let usable = g.hbm_bytes * (1.0 - g.reserved_fraction);
    let w = weight_bytes(m, tp, 1, o);
    let kv_user = kv_bytes_per_user_position(m, tp, o) * o.context as f64;
    // Fewest nodes (stages) that hold the weights and at least one user.
    let per_stage = tp as f64 * usable;
    let pp = ((w + kv_user) / per_stage).ceil().max(1.0);
    if pp * tp as f64 > MAX_CHIPS {
        return err(format!(
            "the GPU side would need more than {MAX_CHIPS} {}",
            g.name
        ));
    }
    let pp = pp as usize;
    let cap = ((pp as f64 * per_stage - w) / kv_user).floor().max(1.0) as usize;
    let replicas = o.users.div_ceil(cap);
    let batch = o.users.div_ceil(replicas);
    let gpus = replicas * tp * pp;
    if gpus as f64 > MAX_CHIPS {
        return err(format!(
            "the GPU side would need more than {MAX_CHIPS} {}",
            g.name
        ));
    }
    let rate = if o.weights.eight_bit {
        g.ops_8bit
    } else {
        g.flops_fp16
    };
    let mem_s = (weight_bytes_read(m, tp, batch, o) + batch as f64 * kv_user)
        / (tp as f64 * g.hbm_bandwidth);
    let (mm, at) = flops(m, batch, o.context);
    let compute_s = mm / (tp as f64 * rate) + at / (tp as f64 * g.flops_fp16);
    let bytes = batch as f64 * m.d() * o.activations.bytes;
    let coll = if tp > 1 {
        (2 * m.layers + 1) as f64 * g.all_reduce_s(tp, bytes)
    } else {
        0.0
    };
    let stage = (pp - 1) as f64 * (bytes / g.node_link_bandwidth + g.node_link_latency_s);
    let hw = StageHardware {
        bandwidth: g.hbm_bandwidth,
        rate,
        fp16: g.flops_fp16,
        floor_s: g.stage_latency_s,
    };
    let (floor_s, _) = floor_extra_on(m, &hw, tp, batch, o);
    Ok(GpuLayout {
        tp,
        pp,
        replicas,
        gpus,
        batch,
        users_per_replica_max: cap,
        weight_bytes: w,
        kv_bytes_per_user: kv_user,
        memory_per_gpu_used: (w + batch as f64 * kv_user) / (tp * pp) as f64,
        modeled_memory_s: mem_s,
        modeled_compute_s: compute_s,
        modeled_collective_s: coll,
        modeled_stage_link_s: stage,
        modeled_latency_floor_s: floor_s,
        modeled_token_period_s: mem_s.max(compute_s) + floor_s + coll + stage,
        modeled_bound: if mem_s >= compute_s {
            "memory"
        } else {
            "compute"
        }
        .into(),
    })
}

fn tp_candidates(m: &ModelShape, max: usize, forced: Option<usize>) -> Vec<usize> {
    if let Some(t) = forced {
        return vec![t];
    }
    let mut v = vec![];
    let mut t = 1;
    // Powers of two up to the head count (heads that do not divide evenly
    // are padded: the replicated share is counted).
    while t <= m.heads.min(max) {
        v.push(t);
        t *= 2;
    }
    v
}

fn better(o: Objective, a: (usize, f64), b: (usize, f64)) -> bool {
    let rel = |x: f64, y: f64| x < y * (1.0 - 1e-9);
    match o {
        Objective::Latency => rel(a.1, b.1) || (!rel(b.1, a.1) && a.0 < b.0),
        Objective::Chips => a.0 < b.0 || (a.0 == b.0 && rel(a.1, b.1)),
    }
}

/// The SRAM layouts over every tensor-parallel degree, best first.
pub fn search_sram(
    m: &ModelShape,
    spec: &ChipSpec,
    o: &StudyOptions,
) -> Result<Vec<(SramLayout, Vec<StageTime>)>, StudyError> {
    let mut out = vec![];
    let mut last_err = None;
    for tp in tp_candidates(m, 256, o.tp) {
        match sram_layout(m, spec, tp, o) {
            Ok(l) => out.push(l),
            Err(e) => last_err = Some(e),
        }
    }
    if out.is_empty() {
        return Err(last_err.unwrap_or_else(|| StudyError("no tensor-parallel degree fits".into())));
    }
    sort_by(&mut out, o.objective, |l| {
        (l.0.chips, l.0.modeled_token_period_s)
    });
    Ok(out)
}

/// The GPU layouts over tp ∈ {1, 2, 4, 8} (within a node), best first.
pub fn search_gpu(
    m: &ModelShape,
    g: &GpuFleetSpec,
    o: &StudyOptions,
) -> Result<Vec<GpuLayout>, StudyError> {
    let mut out = vec![];
    let mut last_err = None;
    for tp in tp_candidates(m, g.gpus_per_node, o.gpu_tp) {
        match gpu_layout(m, g, tp, o) {
            Ok(l) => out.push(l),
            Err(e) => last_err = Some(e),
        }
    }
    if out.is_empty() {
        return Err(last_err.unwrap_or_else(|| StudyError("no GPU layout fits".into())));
    }
    sort_by(&mut out, o.objective, |l| {
        (l.gpus, l.modeled_token_period_s)
    });
    Ok(out)
}

fn sort_by<T>(v: &mut [T], o: Objective, key: impl Fn(&T) -> (usize, f64)) {
    // Insertion sort with the objective's strict order (few elements).
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && better(o, key(&v[j]), key(&v[j - 1])) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn sram_summary(spec: &ChipSpec, l: &SramLayout, o: &StudyOptions) -> SideSummary {
    let agg = o.users as f64 / l.modeled_token_period_s;
    SideSummary {
        side: "sram".into(),
        hardware: spec.name.clone(),
        units: l.chips,
        units_deployed: l.chips_deployed,
        layout: format!(
            "tp {} × pp {} ({} users per micro-batch)",
            l.tp, l.pp, l.microbatch_users
        ),
        modeled_tokens_per_s_per_user: 1.0 / l.modeled_token_period_s,
        modeled_aggregate_tokens_per_s: agg,
        modeled_tokens_per_s_per_unit: agg / l.chips_deployed as f64,
        economics: economics(
            l.chips_deployed,
            spec.economics.price_usd,
            spec.economics.power_w,
            agg,
            o,
        ),
    }
}

fn gpu_summary(g: &GpuFleetSpec, l: &GpuLayout, o: &StudyOptions) -> SideSummary {
    let agg = o.users as f64 / l.modeled_token_period_s;
    SideSummary {
        side: "gpu".into(),
        hardware: g.name.clone(),
        units: l.gpus,
        units_deployed: l.gpus,
        layout: format!(
            "{} replica(s) of tp {} × pp {} (batch {} per replica)",
            l.replicas, l.tp, l.pp, l.batch
        ),
        modeled_tokens_per_s_per_user: 1.0 / l.modeled_token_period_s,
        modeled_aggregate_tokens_per_s: agg,
        modeled_tokens_per_s_per_unit: agg / l.gpus as f64,
        economics: economics(l.gpus, Some(g.price_usd), Some(g.power_w), agg, o),
    }
}

/// `sramlm plan --study`: the placement-based scenarios of
/// [`crate::chip::study`] (int8, Q8_0, fp16 on the executor's own placement;
/// a scenario that cannot be placed is reported, not fatal), then this
/// module's study of both sides for `users` at `ctx`.
pub fn plan_study(
    cfg: &LlamaConfig,
    name: &str,
    spec: &ChipSpec,
    ctx: Option<usize>,
    users: usize,
    json: bool,
) -> Result<String, StudyError> {
    let mut scenarios = crate::chip::llama2_70b_scenarios();
    for s in &mut scenarios {
        s.context_len = ctx;
        s.batch = users;
    }
    let placed = crate::chip::study(cfg, spec, &scenarios);
    let shape = ModelShape::new(name, cfg, None);
    let mut o = StudyOptions::new(users, ctx.unwrap_or(cfg.max_position_embeddings));
    o.objective = Objective::Chips;
    let report = run(&shape, spec, &GpuFleetSpec::h100_sxm(), &o);
    if json {
        let v = serde_json::json!({
            "note": "every figure is MODELLED, not measured",
            "placement_scenarios": match &placed {
                Ok(rows) => serde_json::to_value(rows).expect("rows serialize"),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            },
            "study": match &report {
                Ok(r) => serde_json::to_value(r).expect("a report serializes"),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            },
        });
        return Ok(serde_json::to_string_pretty(&v).expect("a value serializes") + "\n");
    }
    let mut out = String::from("All figures below are MODELED (cost model), not measured.\n");
    out += "Placement-based scenarios (the executor's own placement, chain of chips):\n";
    match &placed {
        Ok(rows) => out += &crate::chip::study_table(rows),
        Err(e) => out += &format!("  cannot be placed on {}: {e}\n", spec.name),
    }
    out += "\nsramlm study (tensor × pipeline layouts, interconnect, GPU fleet; fewest chips):\n";
    match &report {
        Ok(r) => out += &render::table(r),
        Err(e) => out += &format!("  {e}\n"),
    }
    if placed.is_err() && report.is_err() {
        return Err(StudyError(format!(
            "{name} cannot be studied on {}: {}",
            spec.name,
            placed.err().map(|e| e.to_string()).unwrap_or_default()
        )));
    }
    Ok(out)
}

/// Runs the study: both sides at `o.users`, and a sweep of users (powers of
/// two up to `o.users`, and beyond to 4× it) for the speed-vs-cost chart.
pub fn run(
    m: &ModelShape,
    spec: &ChipSpec,
    g: &GpuFleetSpec,
    o: &StudyOptions,
) -> Result<StudyReport, StudyError> {
    o.validate(m)?;
    spec.validate().map_err(|e| StudyError(e.to_string()))?;
    let sram_all = search_sram(m, spec, o)?;
    let gpu_all = search_gpu(m, g, o)?;
    let (sram_best, stages) = sram_all[0].clone();
    let gpu_best = gpu_all[0].clone();
    let mut sweep = vec![];
    let mut u = 1usize;
    let top = o.users.saturating_mul(4).max(8);
    while u <= top {
        let mut so = o.clone();
        so.users = u;
        if let Ok(v) = search_sram(m, spec, &so) {
            let s = sram_summary(spec, &v[0].0, &so);
            sweep.push(SweepPoint {
                users: u,
                side: "sram".into(),
                units: s.units_deployed,
                modeled_tokens_per_s_per_user: s.modeled_tokens_per_s_per_user,
                modeled_aggregate_tokens_per_s: s.modeled_aggregate_tokens_per_s,
                modeled_usd_per_mtoken: s.economics.modeled_usd_per_mtoken,
            });
        }
        if let Ok(v) = search_gpu(m, g, &so) {
            let s = gpu_summary(g, &v[0], &so);
            sweep.push(SweepPoint {
                users: u,
                side: "gpu".into(),
                units: s.units,
                modeled_tokens_per_s_per_user: s.modeled_tokens_per_s_per_user,
                modeled_aggregate_tokens_per_s: s.modeled_aggregate_tokens_per_s,
                modeled_usd_per_mtoken: s.economics.modeled_usd_per_mtoken,
            });
        }
        u *= 2;
    }
    Ok(StudyReport {
        note: "every figure is MODELLED (closed-form cost model and input prices/powers), not measured".into(),
        latency_floor: floor_note(spec),
        total_params: m.total_params(),
        active_params: m.active_params(),
        model: m.clone(),
        options: o.clone(),
        chip: spec.clone(),
        gpu: g.clone(),
        sram: sram_summary(spec, &sram_best, o),
        sram_layout: sram_best,
        sram_stages: stages,
        gpu_side: gpu_summary(g, &gpu_best, o),
        gpu_layout: gpu_best,
        sram_layouts_considered: sram_all.into_iter().map(|l| l.0).collect(),
        gpu_layouts_considered: gpu_all,
        sweep,
    })
}
