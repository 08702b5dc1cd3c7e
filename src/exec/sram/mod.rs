//! SRAM mode: runs a placement [`Plan`]'s program on an emulated cluster of
//! SRAM-only chips.
//!
//! What each chip does for one decoded token, top to bottom (the program in
//! [`crate::chip::program`]; `sramlm plan --format json` lists it per stage):
//!
//! 1. **Embedding** — the chips holding the embedding (a tied one sits at
//!    the tail, as the lm_head) gather the token's row, each from the rows it
//!    holds, and pass `x` on; the last of them sends it to chip 0 over the
//!    loopback link.
//! 2. **Layers** — each chip runs, in order, its share of every node of the
//!    graph: RMSNorm where the norm vector is, the row blocks of the matrices
//!    it holds (tile by tile: rows staged into `var<workgroup>`, computed
//!    from there), RoPE + KV write + one attention block over the KV cells it
//!    holds (a running online-softmax state between blocks), SiLU.
//! 3. **Links** — between consecutive stages the activations live after the
//!    boundary move from one chip's activations to the next's, only the
//!    columns computed so far; every transfer is counted ([`SramStats`]).
//! 4. **Sampling** — the chip holding the last lm_head rows runs arg-max /
//!    top-k over the logits; the id goes to the host (the sampler), which
//!    hands the next token to the embedding chips.
//!
//! How it runs on the GPU: one interpreter kernel (`shaders/sram_step.wgsl`,
//! [`crate::kernels::sram_step`]). [`build`] lays out each chip's SRAM image
//! (the weight rows it holds, contiguously), each stage's activation region
//! and each chip's KV-cache blocks in three arenas, and turns every work
//! item into an interpreter code. [`schedule`] turns a run (its
//! micro-batches, through the pipeline) into a task table: each task is one
//! workgroup (a matmul row tile, a norm, one head of an attention block, a
//! link transfer, the read-out), ordered so that everything a task waits for
//! has a lower index, with completion counters instead of dispatch
//! barriers. So a run — a decoded token, a decode round of several
//! sequences, a prefill — is ONE dispatch, and the chips active in a
//! pipeline step (stage k on micro-batch s − k, [`pipeline`]) are not
//! ordered by the API: their tasks are interleaved and wait only on their
//! own inputs. A wait that sees no task finish for a long time raises a flag
//! and the run returns an error instead of hanging.
//!
//! Emulation overheads (never costs of the emulated chip; reported apart):
//! the weight bytes staged from GPU memory into workgroup memory each step
//! (on a real chip they stay resident), and activations/KV cache kept in GPU
//! storage buffers standing in for each chip's SRAM.

mod build;
mod pipeline;
pub mod resident;
mod schedule;

use super::{ExecCounters, ExecError, Executor, Readback, StepOutput};
use crate::chip::{Plan, Program};
use crate::gpu::Gpu;
use crate::kernels::rope;
use crate::model::{LlamaConfig, ModelWeights};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use crate::chip::program::KvBlock;

#[derive(Clone, Debug, Default)]
pub struct SramOptions {
    /// KV-cache length; `None` = the plan's.
    pub context: Option<usize>,
    /// Prompt tokens per pipeline micro-batch; 0 = the plan's.
    pub microbatch: usize,
    /// Sequences with a resident KV cache (decoded together by
    /// `decode_batch`); 0 = the plan's.
    pub batch: usize,
    /// Test hook: bytes of the chips' SRAM images the first storage binding
    /// holds (default: as many as the adapter binds); smaller values make
    /// small models exercise the second binding.
    pub image_split_bytes: Option<usize>,
    /// How workgroups pick their task; `None` = [`TaskOrder::default_for`].
    pub task_order: Option<TaskOrder>,
}

/// How the interpreter's workgroups pick their task (see `main` in
/// shaders/sram_step.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskOrder {
    /// Task = workgroup id: relies on workgroups starting in index order.
    Index,
    /// Task = the next ticket of an atomic counter: tasks are claimed in
    /// table order by running workgroups, whatever order they start in.
    Ticket,
}

impl TaskOrder {
    /// `SRAMLM_TASK_ORDER` (`index` or `ticket`) if set, else tickets on
    /// GPUs (forward progress without relying on start order) and indices
    /// on CPU adapters (lavapipe starts workgroups in order; tickets hand
    /// each dependency between its threads, which is slow whenever the
    /// machine has more busy threads than cores; BENCHMARKS.md).
    pub fn default_for(gpu: &crate::gpu::Gpu) -> Result<TaskOrder, crate::exec::SramBuildError> {
        match std::env::var("SRAMLM_TASK_ORDER") {
            Ok(v) => TaskOrder::parse(&v).ok_or(crate::exec::SramBuildError::TaskOrder(v)),
            Err(_) if gpu.info.device_type == wgpu::DeviceType::Cpu => Ok(TaskOrder::Index),
            Err(_) => Ok(TaskOrder::Ticket),
        }
    }

    pub fn parse(s: &str) -> Option<TaskOrder> {
        match s {
            "index" => Some(TaskOrder::Index),
            "ticket" => Some(TaskOrder::Ticket),
            _ => None,
        }
    }
}

/// What one link moves per carried activation (for counting): values per
/// row, and whether its rows are the step's logit rows.
struct LinkCount {
    values: usize,
    out_rows: bool,
}

/// A task table built for one kind of run (micro-batch count and read-out),
/// with its bind group; reused while the same kind of run repeats (decode).
struct CachedTable {
    bind_group: wgpu::BindGroup,
    _buf: wgpu::Buffer,
    n_tasks: usize,
    n_counters: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TableKey {
    m: usize,
    rb: ReadoutKind,
    per_mb: bool,
    /// Rows of each micro-batch in a decode round whose micro-batches hold
    /// several sequences (one row each); 0 otherwise.
    rows: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ReadoutKind {
    Argmax,
    TopK(usize),
    LastLogits,
    AllLogits,
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
    /// Pipeline stages of the program (a chip may run more than one).
    pub pipeline_stages: usize,
    /// Activation bytes the plan says cross links per decoded token.
    pub link_bytes_per_token: usize,
    pub link_transfers_per_token: usize,
    pub link_hops_per_token: usize,
    /// Link bytes actually copied since the executor was built (counted as
    /// each link copy is recorded into a submitted command buffer).
    pub link_bytes_counted: u64,
    /// Link copies executed since the executor was built.
    pub link_copies_counted: u64,
    /// Emulation overhead, not a cost of the emulated chip: weight bytes the
    /// emulator copies from GPU memory into workgroup memory per step.
    pub emulation_staged_bytes_per_step: u64,
    pub pipeline_steps_last: usize,
    /// Mean stages active per pipeline step in the last run.
    pub stages_active_mean_last: f64,
    /// Mean distinct chips active per pipeline step in the last run.
    pub chips_active_mean_last: f64,
    /// Dispatches of the last run (all its pipeline steps: one interpreter
    /// dispatch, unless the read-out needs more) and the tasks (workgroups)
    /// they ran.
    pub dispatches_last: usize,
    pub tasks_last: usize,
    /// Resident mode: how the last resident run was laid out (`None`:
    /// stepped mode).
    pub resident: Option<resident::ResidentStats>,
}

/// What [`Executor::sram_report`] returns (and the JSON outputs carry):
/// the executor's totals and its per-chip figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SramReport {
    #[serde(flatten)]
    pub stats: SramStats,
    pub chips: Vec<ChipStats>,
}

/// Per-chip figures of a [`SramReport`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChipStats {
    pub chip: usize,
    pub link_bytes_in_per_token: usize,
    pub link_bytes_out_per_token: usize,
    pub dispatches_compute: usize,
}

/// One pipeline micro-batch: `len` tokens from `start` of the step's ids, at
/// position `pos0` of the sequence whose KV cache starts at row `kv_base`.
#[derive(Clone, Copy, Debug)]
struct Mb {
    /// First row (index into the step's ids).
    start: usize,
    len: usize,
    pos0: usize,
    kv_base: usize,
}

pub struct SramExecutor {
    gpu: Arc<Gpu>,
    cfg: LlamaConfig,
    program: Program,
    ctx: usize,
    mb: usize,
    /// Tokens in each sequence's KV cache.
    pos: Vec<usize>,
    /// The sequence `step` works on.
    seq: usize,
    /// Each stage's item codes, the links' codes, what the links count.
    codes: Vec<Vec<schedule::Code>>,
    link_codes: Vec<schedule::Code>,
    link_counts: Vec<Vec<LinkCount>>,
    /// The interpreter and the header every table starts with.
    pipeline: Arc<wgpu::ComputePipeline>,
    /// The stepped interpreter's variant (resident mode adds `RESIDENT`).
    resident_variant: crate::gpu::ShaderVariant,
    /// Resident greedy decoding with this many co-resident workgroups
    /// (`set_resident`; `None`: stepped).
    resident_capacity: Option<usize>,
    header: [u32; crate::kernels::sram_step::HDR],
    /// Word offset of the last stage's logits region in the activations.
    logits_off: usize,
    image: wgpu::Buffer,
    /// The images past what one storage binding holds (4 bytes if none).
    image2: wgpu::Buffer,
    acts: wgpu::Buffer,
    kv: wgpu::Buffer,
    run_buf: wgpu::Buffer,
    counters_buf: wgpu::Buffer,
    counters_len: usize,
    results: wgpu::Buffer,
    results_len: usize,
    tables: HashMap<TableKey, CachedTable>,
    readback: wgpu::Buffer,
    readback_size: u64,
    weight_bytes: u64,
    kv_bytes: u64,
    counters: ExecCounters,
    profiler: Option<crate::gpu::profiler::Profiler>,
    stats: SramStats,
    chip_stats: Vec<ChipStats>,
}

/// Architecture features SRAM mode does not run yet: the one-line refusal
/// (VRAM mode runs them), so they are never silently skipped. None now:
/// biases, q/k norms and post-norms are graph nodes (`graph::NodeKind::Bias`,
/// `HeadNorm`, `PostNorm`), sliding windows limit each attention block's key
/// range, each layer reads its own RoPE table, and the embedding scale, the
/// norm offset, GELU-tanh and the attention scale are interpreter
/// parameters. Placement and the executor still ask here first, so a
/// feature added to `ArchFeatures` is refused until SRAM mode runs it.
pub fn unsupported_in_sram(cfg: &LlamaConfig) -> Option<String> {
    let _ = &cfg.arch;
    None
}

impl SramExecutor {
    /// Builds the emulated cluster that runs `plan` (see [`build`]).
    pub fn new(
        gpu: Arc<Gpu>,
        cfg: &LlamaConfig,
        w: &ModelWeights,
        plan: &Plan,
        opts: &SramOptions,
    ) -> Result<Self, ExecError> {
        build::build(gpu, cfg, w, plan, opts)
    }

    pub fn sram_stats(&self) -> &SramStats {
        &self.stats
    }

    /// The program this executor runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Sequences whose KV caches are resident.
    pub fn batch(&self) -> usize {
        self.pos.len()
    }

    /// Makes `seq` the sequence that `step` (prefill, single decode) works on.
    pub fn select_sequence(&mut self, seq: usize) -> Result<(), ExecError> {
        if seq >= self.pos.len() {
            return Err(ExecError::NoSuchSequence {
                seq,
                resident: self.pos.len(),
            });
        }
        self.seq = seq;
        Ok(())
    }

    /// One greedy decode step for every sequence at once: `tokens[s]` is
    /// sequence s's last token. The sequences go through the pipeline as
    /// micro-batches of up to the plan's micro-batch rows, one row per
    /// sequence with its own position and KV cache: a chip stages its
    /// weights once for all the rows of a micro-batch, and in each pipeline
    /// step different chips work on different micro-batches.
    pub fn decode_all(&mut self, tokens: &[u32]) -> Result<Vec<u32>, ExecError> {
        if tokens.len() != self.pos.len() {
            return Err(ExecError::BatchMismatch {
                tokens: tokens.len(),
                sequences: self.pos.len(),
            });
        }
        for (s, t) in tokens.iter().enumerate() {
            super::check_step(
                std::slice::from_ref(t),
                self.pos[s],
                self.ctx,
                self.cfg.vocab_size,
            )?;
        }
        let g = self.mb.clamp(1, tokens.len());
        let mbs: Vec<Mb> = (0..tokens.len())
            .step_by(g)
            .map(|start| Mb {
                start,
                len: (tokens.len() - start).min(g),
                pos0: 0,
                kv_base: 0,
            })
            .collect();
        let rows: Vec<(u32, u32)> = (0..tokens.len())
            .map(|s| (s as u32, self.pos[s] as u32))
            .collect();
        let out = self.run_rows(tokens, &mbs, Readback::Argmax, true, &rows)?;
        for p in &mut self.pos {
            *p += 1;
        }
        match out {
            StepOutput::Candidates(c) => Ok(c.into_iter().map(|p| p.0).collect()),
            _ => Err(ExecError::NoTokens),
        }
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
            .map_err(ExecError::Position)?;
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
    /// Resident mode (`set_resident`): runs of up to
    /// [`resident::CHUNK_TOKENS`] tokens, each one dispatch.
    fn decode_greedy(
        &mut self,
        first: u32,
        n: usize,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>, ExecError> {
        match self.resident_capacity {
            Some(cap) => self.decode_greedy_resident(first, n, cap, on_token),
            None => super::decode_greedy_blocking(self, first, n, on_token),
        }
    }
    fn set_profiling(&mut self, on: bool) -> bool {
        self.profiler = if on {
            crate::gpu::profiler::Profiler::new(&self.gpu)
        } else {
            None
        };
        self.profiler.is_some()
    }
    fn sram_report(&self) -> Option<SramReport> {
        Some(SramReport {
            stats: self.stats.clone(),
            chips: self.chip_stats.clone(),
        })
    }
}
