//! SRAM mode: executes a placement [`Plan`] on an emulated cluster of
//! SRAM-only chips.
//!
//! * Every weight matrix runs as `sram_matmul` dispatches, one per (chip,
//!   row block), one workgroup per SRAM slice: the slice's rows are staged
//!   into workgroup memory and the compute loop reads weights only from there.
//! * Each chip has its own activation buffers (its scratch) and its own step
//!   uniform. Activations move between chips only through explicit link
//!   buffers, one per chip boundary (`link_copy` dispatches), and every
//!   transfer is counted.
//! * Layers are pipelined: the prompt is cut into micro-batches; in pipeline
//!   step s chip c works on micro-batch s − c, and all active chips' dispatches
//!   of a step are recorded into one command buffer.
//!
//! Emulation overheads (never costs of the emulated chip; reported apart):
//! the weight bytes staged from GPU memory into workgroup memory each step
//! (on a real chip they stay resident), and activations/KV cache kept in GPU
//! storage buffers standing in for each chip's SRAM.

use super::{ExecCounters, ExecError, Executor, Readback, StepOutput};
use crate::chip::Plan;
use crate::gpu::Gpu;
use crate::kernels::{
    argmax, attention, embed, link_copy, rmsnorm, rope, silu_mul, sram_matmul, topk, GpuWeight,
    KernelOp, Step,
};
use crate::model::{LayerTensor, LlamaConfig, ModelWeights, Tensor, WeightName};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct SramOptions {
    /// KV-cache length; `None` = the model's context window.
    pub context: Option<usize>,
    /// Prompt tokens per pipeline micro-batch.
    pub microbatch: usize,
    /// Sequences with a resident KV cache (decoded together by `decode_batch`).
    pub batch: usize,
}

impl Default for SramOptions {
    fn default() -> Self {
        SramOptions {
            context: None,
            microbatch: 16,
            batch: 1,
        }
    }
}

/// Activation buffers a chip may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Buf {
    X,
    Xn,
    Q,
    K,
    V,
    Att,
    G,
    U,
    H,
    Logits,
    /// Running attention softmax state `[T, H, 2 + hd]` between KV blocks.
    AttState,
}

impl Buf {
    const ALL: [Buf; 11] = [
        Buf::X,
        Buf::Xn,
        Buf::Q,
        Buf::K,
        Buf::V,
        Buf::Att,
        Buf::G,
        Buf::U,
        Buf::H,
        Buf::Logits,
        Buf::AttState,
    ];
    fn width(self, c: &LlamaConfig) -> usize {
        match self {
            Buf::X | Buf::Xn => c.hidden_size,
            Buf::Q | Buf::Att => c.q_dim(),
            Buf::K | Buf::V => c.kv_dim(),
            Buf::G | Buf::U | Buf::H => c.intermediate_size,
            Buf::Logits => c.vocab_size,
            Buf::AttState => c.num_heads * (2 + c.head_dim),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Buf::X => "x",
            Buf::Xn => "xn",
            Buf::Q => "q",
            Buf::K => "k",
            Buf::V => "v",
            Buf::Att => "att",
            Buf::G => "g",
            Buf::U => "u",
            Buf::H => "h",
            Buf::Logits => "logits",
            Buf::AttState => "att_state",
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Embed,
    /// `None` = final norm.
    Norm(Option<(usize, LayerTensor)>),
    Mat {
        w: WeightName,
        rows: (usize, usize),
        inp: Buf,
        out: Buf,
        acc: bool,
        head: bool,
    },
    /// Rotate Q (once per layer, on the first KV chip).
    RopeQ(usize),
    /// Rotate K and store K, V for one KV block.
    KvWrite(usize, KvBlock),
    /// Fold one KV block into the running attention state.
    AttnBlock(usize, KvBlock, bool, bool),
    Silu(usize),
}

/// One pipeline micro-batch: `len` tokens from `start` of the step's ids, at
/// position `pos0` of the sequence whose KV cache starts at row `kv_base`.
#[derive(Clone, Copy, Debug)]
struct Mb {
    start: usize,
    len: usize,
    pos0: usize,
    kv_base: usize,
}

/// A block of a layer's KV cache: kv heads × positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvBlock {
    pub heads: (usize, usize),
    pub positions: (usize, usize),
}

#[derive(Clone, Debug)]
struct Item {
    chip: usize,
    op: Op,
}

impl Item {
    fn reads(&self) -> Vec<Buf> {
        match &self.op {
            Op::Embed => vec![],
            Op::Norm(_) => vec![Buf::X],
            Op::Mat { inp, out, acc, .. } => {
                if *acc {
                    vec![*inp, *out]
                } else {
                    vec![*inp]
                }
            }
            Op::RopeQ(_) => vec![Buf::Q],
            Op::KvWrite(..) => vec![Buf::K, Buf::V],
            Op::AttnBlock(_, _, init, _) => {
                if *init {
                    vec![Buf::Q]
                } else {
                    vec![Buf::Q, Buf::AttState]
                }
            }
            Op::Silu(_) => vec![Buf::G, Buf::U],
        }
    }
    /// Buffers written and how many leading columns are valid afterwards.
    fn writes(&self, c: &LlamaConfig) -> Vec<(Buf, usize)> {
        match &self.op {
            Op::Embed => vec![(Buf::X, c.hidden_size)],
            Op::Norm(_) => vec![(Buf::Xn, c.hidden_size)],
            Op::Mat {
                out,
                rows,
                acc,
                head,
                ..
            } => {
                if *head || !*acc {
                    vec![(*out, rows.1)]
                } else {
                    vec![(*out, out.width(c))]
                }
            }
            Op::RopeQ(_) => vec![(Buf::Q, c.q_dim())],
            Op::KvWrite(..) => vec![],
            Op::AttnBlock(_, _, _, fin) => {
                if *fin {
                    vec![(Buf::Att, c.q_dim())]
                } else {
                    vec![(Buf::AttState, Buf::AttState.width(c))]
                }
            }
            Op::Silu(_) => vec![(Buf::H, c.intermediate_size)],
        }
    }

    /// True if this item rewrites `b` from scratch (so its old value is dead).
    fn overwrites(&self, b: Buf) -> bool {
        match &self.op {
            Op::Embed => b == Buf::X,
            Op::Norm(_) => b == Buf::Xn,
            // Only the first row block of a product starts it afresh.
            Op::Mat { out, acc, rows, .. } => *out == b && !*acc && rows.0 == 0,
            Op::AttnBlock(_, _, init, fin) => {
                (*init && !*fin && b == Buf::AttState) || (*fin && b == Buf::Att)
            }
            Op::Silu(_) => b == Buf::H,
            Op::RopeQ(_) | Op::KvWrite(..) => false,
        }
    }
}

/// Where each weight block and each op runs, read from a plan.
#[derive(Clone, Debug, Default)]
pub struct Assignment {
    /// Row blocks of each weight: (chip, row_start, row_end), in row order.
    pub splits: HashMap<WeightName, Vec<(usize, usize, usize)>>,
    /// Non-weight ops (`layers.3.attention`, …) → chip, when the plan names them.
    pub op_chip: HashMap<String, usize>,
    /// Each layer's KV-cache blocks: (chip, block), in chip order.
    pub kv: HashMap<usize, Vec<(usize, KvBlock)>>,
    pub slice_bytes: usize,
}

impl Assignment {
    pub fn from_plan(plan: &Plan, cfg: &LlamaConfig) -> Result<Self, ExecError> {
        let mut a = Assignment {
            slice_bytes: plan.spec.slice_bytes,
            ..Default::default()
        };
        for chip in &plan.chips {
            for t in &chip.tensors {
                let w = WeightName::parse(&t.weight).ok_or_else(|| {
                    ExecError::Invalid(format!("plan names an unknown weight `{}`", t.weight))
                })?;
                let cols = w.shape(cfg).last().copied().unwrap_or(0);
                if w.shape(cfg).len() == 1 {
                    continue; // norm vectors: staged by the norm kernel on the chip that runs it
                }
                if t.col_start != 0 || t.col_end != cols {
                    return Err(ExecError::Invalid(format!(
                        "plan splits `{}` by columns [{}, {}); the SRAM executor runs row blocks only",
                        t.weight, t.col_start, t.col_end
                    )));
                }
                a.splits
                    .entry(w)
                    .or_default()
                    .push((chip.index, t.row_start, t.row_end));
            }
            for op in &chip.ops {
                if WeightName::parse(op).is_none() {
                    a.op_chip.entry(op.clone()).or_insert(chip.index);
                }
            }
            for k in &chip.kv {
                a.kv.entry(k.layer).or_default().push((
                    chip.index,
                    KvBlock {
                        heads: (k.head_start, k.head_end),
                        positions: (k.pos_start, k.pos_end),
                    },
                ));
            }
        }
        for v in a.kv.values_mut() {
            v.sort_by_key(|b| (b.0, b.1.heads.0, b.1.positions.0));
        }
        for v in a.splits.values_mut() {
            v.sort_by_key(|s| (s.1, s.0));
        }
        Ok(a)
    }
}

struct ChipState {
    step_buf: wgpu::Buffer,
    bufs: BTreeMap<Buf, wgpu::Buffer>,
    /// Receive (link → local), compute, send (local → link).
    recv: Vec<KernelOp>,
    compute: Vec<KernelOp>,
    send: Vec<KernelOp>,
    link_in_bytes_per_token: usize,
    link_out_bytes_per_token: usize,
    hops_out: usize,
}

/// SRAM-mode accounting, per token unless said otherwise.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SramStats {
    pub chip_preset: String,
    pub chips_used: usize,
    pub slice_bytes: usize,
    pub sram_used_max_bytes: usize,
    pub sram_used_mean_bytes: f64,
    pub microbatch_tokens: usize,
    /// Activation bytes crossing chip boundaries per token (measured by the executor).
    pub link_bytes_per_token: usize,
    pub link_transfers_per_token: usize,
    pub link_hops_per_token: usize,
    /// Emulation overhead, not a cost of the emulated chip: weight bytes the
    /// emulator copies from GPU memory into workgroup memory per step.
    pub emulation_staged_bytes_per_step: u64,
    pub pipeline_steps_last: usize,
}

pub struct SramExecutor {
    gpu: Arc<Gpu>,
    cfg: LlamaConfig,
    ctx: usize,
    mb: usize,
    /// Tokens in each sequence's KV cache.
    pos: Vec<usize>,
    /// The sequence `step` works on.
    seq: usize,
    /// Chips that run something, in pipeline order.
    chips: Vec<usize>,
    state: BTreeMap<usize, ChipState>,
    ids: wgpu::Buffer,
    result: wgpu::Buffer,
    /// Batched decode: one [id, logit] per sequence.
    batch_results: wgpu::Buffer,
    argmax: KernelOp,
    topk: Option<(usize, KernelOp)>,
    last_logits: wgpu::Buffer,
    all_logits: Option<(usize, wgpu::Buffer)>,
    readback: wgpu::Buffer,
    readback_size: u64,
    weight_bytes: u64,
    kv_bytes: u64,
    counters: ExecCounters,
    profiler: Option<crate::gpu::profiler::Profiler>,
    stats: SramStats,
    _keep: Vec<wgpu::Buffer>,
}

/// The forward pass as a list of items, each on a chip (weight blocks where
/// the plan put them; other ops on the chip where their input completes).
fn schedule(cfg: &LlamaConfig, a: &Assignment) -> Result<Vec<Item>, ExecError> {
    let mut items = Vec::new();
    let mut cur = 0usize;
    let at = |name: &str, cur: &mut usize| -> usize {
        if let Some(&c) = a.op_chip.get(name) {
            if c >= *cur {
                *cur = c;
            }
        }
        *cur
    };
    let mats = |w: WeightName,
                inp: Buf,
                out: Buf,
                acc: bool,
                head: bool,
                items: &mut Vec<Item>,
                cur: &mut usize|
     -> Result<(), ExecError> {
        let src = if head && !a.splits.contains_key(&WeightName::LmHead) {
            WeightName::Embed
        } else {
            w
        };
        let blocks = a
            .splits
            .get(&src)
            .ok_or_else(|| ExecError::Invalid(format!("the plan does not place `{src}`")))?;
        let rows = src.shape(cfg)[0];
        let mut next = 0;
        for &(chip, r0, r1) in blocks {
            if r0 != next {
                return Err(ExecError::Invalid(format!(
                    "plan blocks of `{src}` leave rows {next}..{r0} unplaced"
                )));
            }
            next = r1;
            if chip < *cur {
                return Err(ExecError::Invalid(format!(
                    "plan places `{src}` rows {r0}..{r1} on chip {chip}, before chip {cur} which runs earlier ops: not a forward pipeline"
                )));
            }
            *cur = chip;
            items.push(Item {
                chip,
                op: Op::Mat {
                    w: src,
                    rows: (r0, r1),
                    inp,
                    out,
                    acc,
                    head,
                },
            });
        }
        if next != rows {
            return Err(ExecError::Invalid(format!(
                "plan leaves rows {next}..{rows} of `{src}` unplaced"
            )));
        }
        Ok(())
    };
    let c = at("embed", &mut cur);
    items.push(Item {
        chip: c,
        op: Op::Embed,
    });
    for l in 0..cfg.num_layers {
        let lw = |t| WeightName::Layer(l, t);
        let c = at(&format!("layers.{l}.attn_norm"), &mut cur);
        items.push(Item {
            chip: c,
            op: Op::Norm(Some((l, LayerTensor::AttnNorm))),
        });
        mats(
            lw(LayerTensor::Q),
            Buf::Xn,
            Buf::Q,
            false,
            false,
            &mut items,
            &mut cur,
        )?;
        mats(
            lw(LayerTensor::K),
            Buf::Xn,
            Buf::K,
            false,
            false,
            &mut items,
            &mut cur,
        )?;
        mats(
            lw(LayerTensor::V),
            Buf::Xn,
            Buf::V,
            false,
            false,
            &mut items,
            &mut cur,
        )?;
        // Attention over the layer's KV blocks, chip by chip; a plan without
        // KV placement keeps the whole cache on the current chip.
        let whole = vec![(
            cur,
            KvBlock {
                heads: (0, cfg.num_kv_heads),
                positions: (0, usize::MAX),
            },
        )];
        let blocks = a.kv.get(&l).cloned().unwrap_or(whole);
        let nb = blocks.len();
        for (bi, (chip, blk)) in blocks.into_iter().enumerate() {
            if chip < cur {
                return Err(ExecError::Invalid(format!(
                    "plan places a KV block of layer {l} on chip {chip}, before chip {cur}: not a forward pipeline"
                )));
            }
            cur = chip;
            if bi == 0 {
                items.push(Item {
                    chip,
                    op: Op::RopeQ(l),
                });
            }
            items.push(Item {
                chip,
                op: Op::KvWrite(l, blk),
            });
            items.push(Item {
                chip,
                op: Op::AttnBlock(l, blk, bi == 0, bi == nb - 1),
            });
        }
        mats(
            lw(LayerTensor::O),
            Buf::Att,
            Buf::X,
            true,
            false,
            &mut items,
            &mut cur,
        )?;
        let c = at(&format!("layers.{l}.ffn_norm"), &mut cur);
        items.push(Item {
            chip: c,
            op: Op::Norm(Some((l, LayerTensor::FfnNorm))),
        });
        mats(
            lw(LayerTensor::Gate),
            Buf::Xn,
            Buf::G,
            false,
            false,
            &mut items,
            &mut cur,
        )?;
        mats(
            lw(LayerTensor::Up),
            Buf::Xn,
            Buf::U,
            false,
            false,
            &mut items,
            &mut cur,
        )?;
        let c = at(&format!("layers.{l}.silu_mul"), &mut cur);
        items.push(Item {
            chip: c,
            op: Op::Silu(l),
        });
        mats(
            lw(LayerTensor::Down),
            Buf::H,
            Buf::X,
            true,
            false,
            &mut items,
            &mut cur,
        )?;
    }
    let c = at("final_norm", &mut cur);
    items.push(Item {
        chip: c,
        op: Op::Norm(None),
    });
    mats(
        WeightName::LmHead,
        Buf::Xn,
        Buf::Logits,
        false,
        true,
        &mut items,
        &mut cur,
    )?;
    Ok(items)
}

/// Buffers (and their valid column count) that must cross the boundary after `i`.
fn live_after(items: &[Item], i: usize, valid: &BTreeMap<Buf, usize>) -> Vec<(Buf, usize)> {
    let mut live = Vec::new();
    for (&b, &cols) in valid {
        if cols == 0 {
            continue;
        }
        // The logits are the pipeline's output: always carried to the last chip.
        if b == Buf::Logits {
            live.push((b, cols));
            continue;
        }
        for it in &items[i + 1..] {
            if it.reads().contains(&b) {
                live.push((b, cols));
                break;
            }
            // Overwritten from scratch before any read: dead.
            if it.overwrites(b) {
                break;
            }
        }
    }
    live
}

/// Architecture features SRAM mode does not run yet: the one-line refusal
/// (VRAM mode runs them), so they are never silently skipped.
pub fn unsupported_in_sram(cfg: &LlamaConfig) -> Option<String> {
    let a = &cfg.arch;
    let what = match (a.qkv_bias || a.o_bias, a.mlp_bias) {
        _ if a.qk_norm => "per-head q/k RMSNorm",
        _ if a.sliding_window.is_some() => "sliding-window attention",
        (false, false) => return None,
        (true, false) => "attention biases",
        (false, true) => "MLP biases",
        (true, true) => "attention and MLP biases",
    };
    Some(format!(
        "SRAM mode does not run {what} yet ({}); use --mode vram",
        a.name
    ))
}

impl SramExecutor {
    pub fn new(
        gpu: Arc<Gpu>,
        cfg: &LlamaConfig,
        w: &ModelWeights,
        plan: &Plan,
        opts: &SramOptions,
    ) -> Result<Self, ExecError> {
        if let Some(m) = unsupported_in_sram(cfg) {
            return Err(ExecError::Invalid(m));
        }
        let limit = gpu.limits.max_compute_workgroup_storage_size as usize;
        let slice = plan.spec.slice_bytes;
        if slice > limit {
            return Err(ExecError::Invalid(format!(
                "the chip's SRAM slice is {slice} bytes but this adapter allows {limit} bytes of workgroup storage per workgroup"
            )));
        }
        // Every SRAM-mode kernel must fit one slice (naga measures the WGSL).
        for (shader, v) in crate::kernels::sram_variants(slice, cfg.hidden_size) {
            let src = shader.source(&v);
            let bytes = crate::gpu::shader::workgroup_bytes(&src, &v)
                .map_err(|e| ExecError::Invalid(format!("{}: {e}", shader.name())))?;
            if bytes as usize > slice {
                return Err(ExecError::Invalid(format!(
                    "SRAM kernel `{}` needs {bytes} bytes of workgroup memory, more than the {slice}-byte slice",
                    shader.name()
                )));
            }
        }
        let a = Assignment::from_plan(plan, cfg)?;
        let items = schedule(cfg, &a)?;
        let ctx = opts.context.unwrap_or(cfg.max_position_embeddings).max(1);
        let mb = opts.microbatch.clamp(1, ctx);
        let batch = opts.batch.max(1);
        if plan.model.batch < batch {
            return Err(ExecError::Invalid(format!(
                "the plan holds KV caches for {} sequence(s) but --batch is {batch}: place with the same batch",
                plan.model.batch
            )));
        }
        let batch_results = gpu.storage_buffer("batch_results", (batch * 8) as u64)?;
        let f = |n: usize| (n * 4) as u64;

        if std::env::var_os("SRAMLM_DEBUG_SCHEDULE").is_some() {
            for it in &items {
                eprintln!("chip {:3}: {:?}", it.chip, it.op);
            }
        }
        // Chips that run something, in order.
        let mut chips: Vec<usize> = items.iter().map(|i| i.chip).collect();
        chips.dedup();

        // Weights: one GPU buffer per tensor (the staging source: GPU memory
        // standing in for the chips' resident SRAM contents).
        let mut mats: HashMap<WeightName, GpuWeight> = HashMap::new();
        let mut norms: HashMap<WeightName, wgpu::Buffer> = HashMap::new();
        let tensor = |n: WeightName| -> Result<&Tensor, ExecError> {
            w.get(n)
                .ok_or_else(|| ExecError::Invalid(format!("missing weight {n}")))
        };
        let mut staged = 0u64;
        for it in &items {
            if let Op::Mat { w: name, rows, .. } = &it.op {
                if !mats.contains_key(name) {
                    mats.insert(
                        *name,
                        GpuWeight::upload(&gpu, &name.to_string(), tensor(*name)?)?,
                    );
                }
                staged += ((rows.1 - rows.0) * mats[name].row_bytes() as usize) as u64;
            }
        }
        for n in WeightName::all(cfg) {
            if n.shape(cfg).len() == 1 {
                norms.insert(
                    n,
                    gpu.upload(&n.to_string(), bytemuck::cast_slice(&tensor(n)?.to_f32()))?,
                );
            }
        }
        let embed_w = match mats.get(&WeightName::Embed) {
            Some(_) => None,
            None => Some(GpuWeight::upload(&gpu, "embed", &w.embed)?),
        };
        let table = rope::rope_table(ctx, cfg.head_dim, cfg.rope_theta, &cfg.rope_scaling);
        let cos_sin = gpu.upload("rope.cos_sin", bytemuck::cast_slice(&table))?;
        let ids = gpu.storage_buffer("ids", f(mb))?;
        let result = gpu.storage_buffer("result", f(2 * topk::MAX_K))?;

        // Per-chip state and buffers.
        let mut state: BTreeMap<usize, ChipState> = BTreeMap::new();
        for &c in &chips {
            state.insert(
                c,
                ChipState {
                    step_buf: gpu.uniform(&format!("chip{c}.step"), &Step::default()),
                    bufs: BTreeMap::new(),
                    recv: vec![],
                    compute: vec![],
                    send: vec![],
                    link_in_bytes_per_token: 0,
                    link_out_bytes_per_token: 0,
                    hops_out: 0,
                },
            );
        }
        fn local<'a>(
            gpu: &Gpu,
            st: &'a mut ChipState,
            c: usize,
            b: Buf,
            cfg: &LlamaConfig,
            mb: usize,
        ) -> Result<&'a wgpu::Buffer, ExecError> {
            if let std::collections::btree_map::Entry::Vacant(e) = st.bufs.entry(b) {
                let buf = gpu.storage_buffer(
                    &format!("chip{c}.{}", b.name()),
                    (mb * b.width(cfg) * 4) as u64,
                )?;
                e.insert(buf);
            }
            Ok(&st.bufs[&b])
        }
        let mut kv_bytes = 0u64;
        let mut keep = vec![cos_sin.clone()];
        let mut kv: HashMap<usize, (wgpu::Buffer, wgpu::Buffer)> = HashMap::new();
        let shape = rope::Shape {
            n_heads: cfg.num_heads,
            n_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            layout: cfg.rope_layout,
        };
        let mut valid: BTreeMap<Buf, usize> = Buf::ALL.iter().map(|&b| (b, 0)).collect();
        let mut links = 0usize;
        let mut link_bytes_per_token = 0usize;
        let mut link_transfers = 0usize;
        let mut link_hops = 0usize;
        for (i, it) in items.iter().enumerate() {
            let c = it.chip;
            // Build the op on chip c.
            let op = {
                let st = state
                    .get_mut(&c)
                    .ok_or_else(|| ExecError::Invalid(format!("chip {c} has no state")))?;
                let step_buf = st.step_buf.clone();
                match &it.op {
                    Op::Embed => {
                        let x = local(&gpu, st, c, Buf::X, cfg, mb)?.clone();
                        let table_w = embed_w
                            .as_ref()
                            .unwrap_or_else(|| &mats[&WeightName::Embed]);
                        embed::build(&gpu, &step_buf, table_w, &ids, &x)?
                    }
                    Op::Norm(which) => {
                        let (name, wn) = match which {
                            Some((l, t)) => (
                                format!("layers.{l}.{}", t.short()),
                                WeightName::Layer(*l, *t),
                            ),
                            None => ("final_norm".to_string(), WeightName::FinalNorm),
                        };
                        let x = local(&gpu, st, c, Buf::X, cfg, mb)?.clone();
                        let xn = local(&gpu, st, c, Buf::Xn, cfg, mb)?.clone();
                        rmsnorm::build_variant(
                            &gpu,
                            &step_buf,
                            &format!("chip{c}.{name}"),
                            cfg.hidden_size,
                            cfg.rms_norm_eps,
                            &norms[&wn],
                            &x,
                            &xn,
                            &rmsnorm::sram_variant(cfg.hidden_size),
                        )?
                    }
                    Op::Mat {
                        w: wn,
                        rows,
                        inp,
                        out,
                        acc,
                        head,
                    } => {
                        let x = local(&gpu, st, c, *inp, cfg, mb)?.clone();
                        let y = local(&gpu, st, c, *out, cfg, mb)?.clone();
                        let spec = sram_matmul::Spec {
                            name: &format!(
                                "chip{c}.{}[{}..{})",
                                if *head {
                                    "lm_head".to_string()
                                } else {
                                    wn.to_string()
                                },
                                rows.0,
                                rows.1
                            ),
                            w: &mats[wn],
                            row_begin: rows.0,
                            row_end: rows.1,
                            slice_bytes: slice,
                            accumulate: *acc,
                            out_rows_only: *head,
                        };
                        sram_matmul::build(&gpu, &step_buf, &spec, &x, &y)?
                    }
                    Op::RopeQ(l) | Op::KvWrite(l, _) | Op::AttnBlock(l, ..) => {
                        // The layer's KV cache: one GPU buffer pair standing in
                        // for the KV blocks in the chips' SRAM; each chip's
                        // kernels touch only their own block.
                        let kd = (batch * ctx * cfg.kv_dim() * 4) as u64;
                        let (kc, vc) = match kv.get(l) {
                            Some(p) => p.clone(),
                            None => {
                                let p = (
                                    gpu.storage_buffer(&format!("layers.{l}.k_cache"), kd)?,
                                    gpu.storage_buffer(&format!("layers.{l}.v_cache"), kd)?,
                                );
                                kv_bytes += 2 * kd;
                                kv.insert(*l, p.clone());
                                p
                            }
                        };
                        let q = local(&gpu, st, c, Buf::Q, cfg, mb)?.clone();
                        match &it.op {
                            Op::RopeQ(_) => {
                                let k = local(&gpu, st, c, Buf::K, cfg, mb)?.clone();
                                let v = local(&gpu, st, c, Buf::V, cfg, mb)?.clone();
                                let part = rope::Part { q: true, kv: None };
                                rope::build_part(
                                    &gpu,
                                    &step_buf,
                                    &format!("chip{c}.layers.{l}.rope_q"),
                                    &shape,
                                    part,
                                    &cos_sin,
                                    &q,
                                    &k,
                                    &v,
                                    &kc,
                                    &vc,
                                )?
                            }
                            Op::KvWrite(_, b) => {
                                let k = local(&gpu, st, c, Buf::K, cfg, mb)?.clone();
                                let v = local(&gpu, st, c, Buf::V, cfg, mb)?.clone();
                                let part = rope::Part {
                                    q: false,
                                    kv: Some((b.heads, b.positions)),
                                };
                                rope::build_part(
                                    &gpu,
                                    &step_buf,
                                    &format!("chip{c}.layers.{l}.kv_write"),
                                    &shape,
                                    part,
                                    &cos_sin,
                                    &q,
                                    &k,
                                    &v,
                                    &kc,
                                    &vc,
                                )?
                            }
                            Op::AttnBlock(_, b, init, fin) => {
                                let att = local(&gpu, st, c, Buf::Att, cfg, mb)?.clone();
                                let state = local(&gpu, st, c, Buf::AttState, cfg, mb)?.clone();
                                let block = attention::Block {
                                    kv_heads: b.heads,
                                    positions: b.positions,
                                    init: *init,
                                    finalize: *fin,
                                };
                                attention::build_block(
                                    &gpu,
                                    &step_buf,
                                    &format!("chip{c}.layers.{l}.attention"),
                                    cfg.num_heads,
                                    cfg.num_kv_heads,
                                    cfg.head_dim,
                                    block,
                                    &q,
                                    &kc,
                                    &vc,
                                    &att,
                                    &state,
                                )?
                            }
                            _ => unreachable!(),
                        }
                    }
                    Op::Silu(l) => {
                        let g = local(&gpu, st, c, Buf::G, cfg, mb)?.clone();
                        let u = local(&gpu, st, c, Buf::U, cfg, mb)?.clone();
                        let h = local(&gpu, st, c, Buf::H, cfg, mb)?.clone();
                        silu_mul::build(
                            &gpu,
                            &step_buf,
                            &format!("chip{c}.layers.{l}.silu_mul"),
                            cfg.intermediate_size,
                            &g,
                            &u,
                            &h,
                        )?
                    }
                }
            };
            if let Some(st) = state.get_mut(&c) {
                st.compute.push(op)
            }
            for (b, cols) in it.writes(cfg) {
                valid.insert(b, cols);
            }
            // A chip boundary after this item: pack the live activations into
            // the link buffer, unpack them on the next chip.
            if let Some(next) = items.get(i + 1) {
                if next.chip != c {
                    let live = live_after(&items, i, &valid);
                    if std::env::var_os("SRAMLM_DEBUG_SCHEDULE").is_some() {
                        eprintln!("  link {c}->{}: {:?}", next.chip, live);
                    }
                    let width: usize = live.iter().map(|l| l.1).sum();
                    let link = gpu.storage_buffer(
                        &format!("link{c}->{}", next.chip),
                        (mb * width.max(1) * 4) as u64,
                    )?;
                    links += 1;
                    let hops = next.chip - c;
                    let mut off = 0;
                    for &(b, cols) in &live {
                        let src = {
                            let st = state
                                .get_mut(&c)
                                .ok_or_else(|| ExecError::Invalid("chip".into()))?;
                            local(&gpu, st, c, b, cfg, mb)?.clone()
                        };
                        let dst = {
                            let st = state
                                .get_mut(&next.chip)
                                .ok_or_else(|| ExecError::Invalid("chip".into()))?;
                            local(&gpu, st, next.chip, b, cfg, mb)?.clone()
                        };
                        let bw = b.width(cfg);
                        let st_c = state[&c].step_buf.clone();
                        let st_n = state[&next.chip].step_buf.clone();
                        let rows = if b == Buf::Logits {
                            link_copy::Rows::OutRows
                        } else {
                            link_copy::Rows::Tokens
                        };
                        let send = link_copy::build(
                            &gpu,
                            &st_c,
                            &format!("link{c}->{}.{}", next.chip, b.name()),
                            cols,
                            rows,
                            (&src, bw, 0),
                            (&link, width, off),
                        )?;
                        let recv = link_copy::build(
                            &gpu,
                            &st_n,
                            &format!("link{c}->{}.{}", next.chip, b.name()),
                            cols,
                            rows,
                            (&link, width, off),
                            (&dst, bw, 0),
                        )?;
                        if let Some(s) = state.get_mut(&c) {
                            s.send.push(send)
                        }
                        if let Some(s) = state.get_mut(&next.chip) {
                            s.recv.push(recv)
                        }
                        off += cols;
                    }
                    let bytes = width * 4;
                    if let Some(s) = state.get_mut(&c) {
                        s.link_out_bytes_per_token += bytes;
                        s.hops_out = hops;
                    }
                    if let Some(s) = state.get_mut(&next.chip) {
                        s.link_in_bytes_per_token += bytes;
                    }
                    link_bytes_per_token += bytes * hops;
                    link_transfers += live.len();
                    link_hops += hops;
                    keep.push(link);
                }
            }
        }
        let _ = links;
        // Sampling on the last chip.
        let last = *chips
            .last()
            .ok_or_else(|| ExecError::Invalid("empty plan".into()))?;
        let last_logits = {
            let st = state
                .get_mut(&last)
                .ok_or_else(|| ExecError::Invalid("chip".into()))?;
            local(&gpu, st, last, Buf::Logits, cfg, mb)?.clone()
        };
        let argmax = argmax::build(
            &gpu,
            &state[&last].step_buf,
            cfg.vocab_size,
            &last_logits,
            &result,
        )?;
        keep.extend(norms.into_values());
        keep.extend(kv.into_values().flat_map(|(k, v)| [k, v]));
        let readback_size = f(2 * topk::MAX_K);
        let readback = gpu.readback_buffer("readback", readback_size);
        let stats = SramStats {
            chip_preset: plan.spec.name.clone(),
            chips_used: plan.totals.chips_used,
            slice_bytes: slice,
            sram_used_max_bytes: plan.totals.sram_used_max,
            sram_used_mean_bytes: plan.totals.sram_used_mean,
            microbatch_tokens: mb,
            link_bytes_per_token,
            link_transfers_per_token: link_transfers,
            link_hops_per_token: link_hops,
            emulation_staged_bytes_per_step: staged,
            pipeline_steps_last: 0,
        };
        Ok(SramExecutor {
            gpu,
            cfg: cfg.clone(),
            ctx,
            mb,
            pos: vec![0; batch],
            seq: 0,
            chips,
            state,
            ids,
            result,
            batch_results,
            argmax,
            topk: None,
            last_logits,
            all_logits: None,
            readback,
            readback_size,
            weight_bytes: w.total_bytes() as u64,
            kv_bytes,
            counters: ExecCounters::default(),
            profiler: None,
            stats,
            _keep: keep,
        })
    }

    pub fn sram_stats(&self) -> &SramStats {
        &self.stats
    }

    fn ensure_readback(&mut self, size: u64) {
        if size > self.readback_size {
            self.readback = self.gpu.readback_buffer("readback", size);
            self.readback_size = size;
        }
    }

    /// Sequences whose KV caches are resident.
    pub fn batch(&self) -> usize {
        self.pos.len()
    }

    /// Makes `seq` the sequence that `step` (prefill, single decode) works on.
    pub fn select_sequence(&mut self, seq: usize) -> Result<(), ExecError> {
        if seq >= self.pos.len() {
            return Err(ExecError::Invalid(format!(
                "sequence {seq} does not exist (batch of {})",
                self.pos.len()
            )));
        }
        self.seq = seq;
        Ok(())
    }

    /// One greedy decode step for every sequence at once: `tokens[s]` is
    /// sequence s's last token. The sequences are the pipeline's micro-batches,
    /// so in each pipeline step different chips work on different sequences.
    pub fn decode_all(&mut self, tokens: &[u32]) -> Result<Vec<u32>, ExecError> {
        if tokens.len() != self.pos.len() {
            return Err(ExecError::Invalid(format!(
                "{} tokens for a batch of {} sequences",
                tokens.len(),
                self.pos.len()
            )));
        }
        for (s, t) in tokens.iter().enumerate() {
            super::check_step(
                std::slice::from_ref(t),
                self.pos[s],
                self.ctx,
                self.cfg.vocab_size,
            )?;
        }
        let mbs: Vec<Mb> = (0..tokens.len())
            .map(|s| Mb {
                start: s,
                len: 1,
                pos0: self.pos[s],
                kv_base: s * self.ctx,
            })
            .collect();
        let out = self.run(tokens, &mbs, Readback::Argmax, true)?;
        for p in &mut self.pos {
            *p += 1;
        }
        match out {
            StepOutput::Candidates(c) => Ok(c.into_iter().map(|p| p.0).collect()),
            _ => Err(ExecError::Invalid(
                "batched decode returned no tokens".into(),
            )),
        }
    }

    /// Runs micro-batches `mbs` (slices of `ids`, each with its own position
    /// and KV-cache sequence) through the chip pipeline. With `per_mb_argmax`
    /// every micro-batch gets its own arg-max (batched decoding: one token per
    /// sequence, returned as `Candidates`, one pair per micro-batch).
    fn run(
        &mut self,
        ids: &[u32],
        mbs: &[Mb],
        rb: Readback,
        per_mb_argmax: bool,
    ) -> Result<StepOutput, ExecError> {
        let vocab = self.cfg.vocab_size;
        self.counters.steps += 1;
        let n = ids.len();
        let m = mbs.len();
        let nchips = self.chips.len();
        let last = *self.chips.last().unwrap_or(&0);
        if let Readback::TopK(k) = rb {
            let k = k.clamp(1, topk::MAX_K.min(vocab));
            if self.topk.as_ref().map(|t| t.0) != Some(k) {
                let op = topk::build(
                    &self.gpu,
                    &self.state[&last].step_buf,
                    vocab,
                    k,
                    &self.last_logits,
                    &self.result,
                )?;
                self.topk = Some((k, op));
            }
        }
        if rb == Readback::AllLogits {
            let size = (n * vocab * 4) as u64;
            if self
                .all_logits
                .as_ref()
                .is_none_or(|(s, _)| (*s as u64) < size)
            {
                self.all_logits =
                    Some((size as usize, self.gpu.storage_buffer("all_logits", size)?));
            }
        }
        let steps = m + nchips - 1;
        self.stats.pipeline_steps_last = steps;
        let mut dispatched = 0u64;
        // One micro-batch (decode): every pipeline step shares the same Step
        // values, so the whole token is one command buffer and one submission.
        let single = m == 1;
        let mut enc = None;
        for s in 0..steps {
            let active: Vec<(usize, usize)> = self
                .chips
                .iter()
                .enumerate()
                .filter_map(|(ci, &c)| s.checked_sub(ci).filter(|&j| j < m).map(|j| (c, j)))
                .collect();
            if !single || s == 0 {
                for &(c, j) in &active {
                    let len = mbs[j].len;
                    let (out_row0, n_out_rows) = if rb == Readback::AllLogits {
                        (0, len)
                    } else if j == m - 1 || per_mb_argmax {
                        (len - 1, 1)
                    } else {
                        (0, 0)
                    };
                    let st = Step {
                        n_tokens: len as u32,
                        pos0: mbs[j].pos0 as u32,
                        out_row0: out_row0 as u32,
                        n_out_rows: n_out_rows as u32,
                        kv_base: mbs[j].kv_base as u32,
                        _pad: [0; 3],
                    };
                    if single {
                        for &c2 in &self.chips {
                            self.gpu.queue.write_buffer(
                                &self.state[&c2].step_buf,
                                0,
                                bytemuck::bytes_of(&st),
                            );
                        }
                    } else {
                        self.gpu.queue.write_buffer(
                            &self.state[&c].step_buf,
                            0,
                            bytemuck::bytes_of(&st),
                        );
                    }
                    if c == self.chips[0] {
                        self.gpu.queue.write_buffer(
                            &self.ids,
                            0,
                            bytemuck::cast_slice(&ids[mbs[j].start..mbs[j].start + len]),
                        );
                    }
                }
            }
            let e = enc.get_or_insert_with(|| {
                self.gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("pipeline step"),
                    })
            });
            {
                // Grid sizes only need the token and logit-row counts.
                let steps_of = |j: usize| {
                    let len = mbs[j].len;
                    let n_out_rows = if rb == Readback::AllLogits {
                        len
                    } else if j == m - 1 || per_mb_argmax {
                        1
                    } else {
                        0
                    };
                    Step {
                        n_tokens: len as u32,
                        pos0: 0,
                        out_row0: 0,
                        n_out_rows: n_out_rows as u32,
                        kv_base: 0,
                        _pad: [0; 3],
                    }
                };
                // Receive, compute, send: all active chips' dispatches together.
                let mut list: Vec<(&KernelOp, Step)> = Vec::new();
                for phase in 0..3 {
                    for &(c, j) in &active {
                        let st = &self.state[&c];
                        let ops = match phase {
                            0 => &st.recv,
                            1 => &st.compute,
                            _ => &st.send,
                        };
                        let stp = steps_of(j);
                        list.extend(ops.iter().map(|op| (op, stp)));
                        if phase == 1 && c == last && (j == m - 1 || per_mb_argmax) {
                            let pick = match rb {
                                Readback::Argmax => Some(&self.argmax),
                                Readback::TopK(_) => self.topk.as_ref().map(|t| &t.1),
                                _ => None,
                            };
                            list.extend(pick.map(|op| (op, stp)));
                        }
                    }
                }
                list.retain(|(op, stp)| !op.groups(stp).contains(&0));
                if let Some(prof) = self.profiler.as_mut() {
                    // Profiling: one pass per dispatch, each with timestamps.
                    for (op, stp) in &list {
                        let tw = prof.next(op.class);
                        let mut pass = e.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some(&op.name),
                            timestamp_writes: tw,
                        });
                        op.record(&mut pass, stp);
                    }
                } else {
                    let mut pass = e.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("pipeline step"),
                        timestamp_writes: None,
                    });
                    for (op, stp) in &list {
                        op.record(&mut pass, stp);
                    }
                }
                for (op, _) in &list {
                    self.counters.count(op.class);
                }
                dispatched += list.len() as u64;
            }
            // Collect logits rows of the micro-batch the last chip just finished.
            if let Some(&(_, j)) = active.iter().find(|(c, _)| *c == last) {
                let len = mbs[j].len;
                let e = enc.as_mut().expect("encoder");
                if per_mb_argmax {
                    e.copy_buffer_to_buffer(
                        &self.result,
                        0,
                        &self.batch_results,
                        (j * 8) as u64,
                        8,
                    );
                } else if rb == Readback::AllLogits {
                    if let Some((_, all)) = &self.all_logits {
                        e.copy_buffer_to_buffer(
                            &self.last_logits,
                            0,
                            all,
                            (mbs[j].start * vocab * 4) as u64,
                            (len * vocab * 4) as u64,
                        );
                    }
                } else if rb == Readback::LastLogits && j == m - 1 {
                    let need = (vocab * 4) as u64;
                    if self.readback_size < need {
                        self.readback = self.gpu.readback_buffer("readback", need);
                        self.readback_size = need;
                    }
                    e.copy_buffer_to_buffer(&self.last_logits, 0, &self.readback, 0, need);
                }
            }
            if !single {
                if let Some(mut e) = enc.take() {
                    if let Some(p) = self.profiler.as_ref() {
                        p.resolve(&mut e);
                    }
                    self.gpu.queue.submit([e.finish()]);
                    self.counters.submissions += 1;
                    if let Some(p) = self.profiler.as_mut() {
                        p.collect(&self.gpu)?;
                    }
                }
            }
        }
        let read_len: u64 = match rb {
            _ if per_mb_argmax => (m * 8) as u64,
            Readback::Argmax => 8,
            Readback::TopK(_) => 8 * self.topk.as_ref().map_or(1, |t| t.0) as u64,
            Readback::LastLogits => (vocab * 4) as u64,
            Readback::AllLogits => (n * vocab * 4) as u64,
        };
        self.ensure_readback(read_len);
        let mut e = enc
            .take()
            .unwrap_or_else(|| self.gpu.device.create_command_encoder(&Default::default()));
        match rb {
            _ if per_mb_argmax => {
                e.copy_buffer_to_buffer(&self.batch_results, 0, &self.readback, 0, read_len)
            }
            Readback::Argmax | Readback::TopK(_) => {
                e.copy_buffer_to_buffer(&self.result, 0, &self.readback, 0, read_len)
            }
            Readback::AllLogits => {
                if let Some((_, all)) = &self.all_logits {
                    e.copy_buffer_to_buffer(all, 0, &self.readback, 0, read_len);
                }
            }
            Readback::LastLogits => {}
        }
        if let Some(p) = self.profiler.as_ref() {
            p.resolve(&mut e);
        }
        self.gpu.queue.submit([e.finish()]);
        self.counters.submissions += 1;
        if let Some(p) = self.profiler.as_mut() {
            p.collect(&self.gpu)?;
        }
        if n == 1 {
            self.counters.dispatches_last_decode = dispatched;
        } else if per_mb_argmax {
            // A decode round: one token per sequence.
            self.counters.dispatches_last_decode = dispatched / m.max(1) as u64;
        }
        let bytes = self.gpu.read(&self.readback, read_len)?;
        self.counters.readback_bytes += read_len;
        Ok(super::decode_readback(rb, &bytes, n, per_mb_argmax))
    }
}

impl Executor for SramExecutor {
    fn mode(&self) -> &'static str {
        "sram"
    }
    fn context_len(&self) -> usize {
        self.ctx
    }
    fn position(&self) -> usize {
        self.pos[self.seq]
    }
    /// Forgets every sequence and selects sequence 0.
    fn reset(&mut self) {
        self.pos.iter_mut().for_each(|p| *p = 0);
        self.seq = 0;
    }
    fn step(&mut self, ids: &[u32], rb: Readback) -> Result<StepOutput, ExecError> {
        let seq = self.seq;
        super::check_step(ids, self.pos[seq], self.ctx, self.cfg.vocab_size)?;
        rope::check_step(&self.cfg.rope_scaling, self.pos[seq], ids.len())
            .map_err(ExecError::Invalid)?;
        let mbs: Vec<Mb> = (0..ids.len())
            .step_by(self.mb)
            .map(|start| Mb {
                start,
                len: (ids.len() - start).min(self.mb),
                pos0: self.pos[seq] + start,
                kv_base: seq * self.ctx,
            })
            .collect();
        let out = self.run(ids, &mbs, rb, false)?;
        self.pos[seq] += ids.len();
        Ok(out)
    }
    fn counters(&self) -> &ExecCounters {
        &self.counters
    }
    fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }
    fn kv_bytes(&self) -> u64 {
        self.kv_bytes
    }
    fn profile(&self) -> Option<BTreeMap<crate::kernels::KernelClass, (f64, u64)>> {
        self.profiler.as_ref().map(|p| p.by_class.clone())
    }
    fn select(&mut self, seq: usize) -> Result<(), ExecError> {
        self.select_sequence(seq)
    }
    fn sequences(&self) -> usize {
        self.pos.len()
    }
    fn truncate(&mut self, pos: usize) -> Result<(), ExecError> {
        super::check_truncate(pos, self.pos[self.seq])?;
        self.pos[self.seq] = pos;
        Ok(())
    }
    fn decode_batch(&mut self, tokens: &[u32]) -> Result<Vec<u32>, ExecError> {
        self.decode_all(tokens)
    }
    fn set_profiling(&mut self, on: bool) -> bool {
        self.profiler = if on {
            crate::gpu::profiler::Profiler::new(&self.gpu)
        } else {
            None
        };
        self.profiler.is_some()
    }
    fn extra_stats(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.stats).unwrap_or_default();
        let per_chip: Vec<_> = self
            .state
            .iter()
            .map(|(c, s)| serde_json::json!({"chip": c, "link_bytes_in_per_token": s.link_in_bytes_per_token, "link_bytes_out_per_token": s.link_out_bytes_per_token, "hops_out": s.hops_out, "dispatches_compute": s.compute.len()}))
            .collect();
        v["chips"] = serde_json::json!(per_chip);
        v
    }
}
