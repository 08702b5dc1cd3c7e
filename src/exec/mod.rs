//! Executors: one per mode, same interface. An executor owns the GPU state of
//! one model (weights, KV cache, activations) and runs steps of tokens.

pub mod vram;

use crate::gpu::GpuError;
use crate::kernels::KernelClass;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("context window exceeded: position {pos} + {n} tokens > context length {ctx}")]
    ContextFull { pos: usize, n: usize, ctx: usize },
    #[error("token id {id} is outside the vocabulary ({vocab})")]
    BadToken { id: u32, vocab: usize },
    #[error("a step needs at least one token")]
    EmptyStep,
    #[error("a batch needs at least one sequence")]
    EmptyBatch,
    #[error("cannot keep {keep} tokens of a sequence that holds {holds}")]
    Truncate { keep: usize, holds: usize },
    #[error("sequence {seq} does not exist ({resident} resident)")]
    NoSuchSequence { seq: usize, resident: usize },
    #[error("sequence {seq} appears twice in a batched step")]
    DuplicateSequence { seq: usize },
    #[error("{tokens} tokens for a batch of {sequences} sequences")]
    BatchMismatch { tokens: usize, sequences: usize },
    #[error("{rows} rows in one batched step; at most {max}")]
    TooManyRows { rows: usize, max: usize },
    #[error("{mode} mode {what}")]
    ModeCannot { mode: &'static str, what: String },
    /// A step the RoPE scaling cannot cover (`kernels::rope::check_step`).
    #[error("{0}")]
    Position(String),
    #[error("SRAM pipeline step stalled: a task waited {polls} polls for work it depends on while no task finished (a scheduling bug); the results were discarded")]
    Stalled { polls: u32 },
    #[error("a batched decode read back no tokens")]
    NoTokens,
    /// The model or plan cannot run in SRAM mode on this adapter.
    #[error(transparent)]
    Sram(#[from] SramBuildError),
}

/// Why an SRAM-mode executor cannot be built from a plan.
#[derive(Debug, thiserror::Error)]
pub enum SramBuildError {
    /// An architecture feature SRAM mode does not run (`sram::unsupported_in_sram`).
    #[error("{0}")]
    Unsupported(String),
    #[error("the chip's SRAM slice is {slice} bytes but this adapter allows {limit} bytes of workgroup storage per workgroup")]
    SliceOverAdapter { slice: usize, limit: usize },
    /// A kernel's workgroup footprint over the slice (`kernels::check_sram_kernels`).
    #[error("{0}")]
    KernelOverSlice(String),
    #[error("SRAM mode cannot run this plan: {0}")]
    Unrunnable(String),
    #[error("SRAMLM_TASK_ORDER is `{0}`; expected `index` or `ticket`")]
    TaskOrder(String),
    #[error(transparent)]
    Program(#[from] crate::chip::ProgramError),
    #[error("a KV cache of {asked} positions was asked for, but the plan places {placed}: place with the same --ctx")]
    Context { asked: usize, placed: usize },
    #[error("micro-batches of {asked} tokens were asked for, but the plan's scratch holds {placed}: place with the same --microbatch")]
    Microbatch { asked: usize, placed: usize },
    #[error("the plan holds KV caches for {placed} sequence(s) but --batch is {asked}: place with the same batch")]
    Batch { asked: usize, placed: usize },
    #[error("missing weight {0}")]
    MissingWeight(crate::model::WeightName),
    #[error("the plan's program is empty")]
    EmptyProgram,
    #[error("the chips' {what} take {bytes} bytes but this adapter binds at most {limit} bytes per storage buffer{hint}")]
    OverBinding {
        what: &'static str,
        bytes: u64,
        limit: u64,
        hint: String,
    },
    #[error("`{what}` needs {need} bytes of the chip's slice but the SRAM-step kernel leaves {tile} of its {slice}-byte slice for weights")]
    SliceTooSmall {
        what: String,
        need: usize,
        tile: usize,
        slice: usize,
    },
    #[error("SRAM mode hands data between workgroups inside one dispatch and needs coherent storage buffers (wgpu feature MEMORY_DECORATION_COHERENT), which this adapter ({adapter}) lacks; use --mode vram")]
    NoCoherentMemory { adapter: String },
}

/// What a step sends back to the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readback {
    /// Arg-max of the last position's logits (8 bytes).
    Argmax,
    /// The K best (id, logit) pairs of the last position (8·K bytes).
    TopK(usize),
    /// The full logits of the last position.
    LastLogits,
    /// The logits of every position of the step (tests, parity checks).
    AllLogits,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StepOutput {
    Token {
        id: u32,
        logit: f32,
    },
    Candidates(Vec<(u32, f32)>),
    /// Row-major `[rows, vocab]`.
    Logits {
        rows: usize,
        data: Vec<f32>,
    },
}

/// Counters an executor keeps; modes add their own fields.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExecCounters {
    pub steps: u64,
    pub submissions: u64,
    pub dispatches: u64,
    /// Dispatches of the most recent single-token step.
    pub dispatches_last_decode: u64,
    pub dispatches_by_class: BTreeMap<String, u64>,
    pub readback_bytes: u64,
}

impl ExecCounters {
    pub fn count(&mut self, class: KernelClass) {
        self.dispatches += 1;
        *self
            .dispatches_by_class
            .entry(class.name().to_string())
            .or_default() += 1;
    }
}

/// Turns the bytes a step read back into its output: `[id, bits]` pairs for
/// `Argmax` / `TopK` (and batched decoding: one pair per sequence), f32
/// logits (`rows` of them) otherwise.
pub(crate) fn decode_readback(rb: Readback, bytes: &[u8], rows: usize, pairs: bool) -> StepOutput {
    let words: &[u32] = bytemuck::cast_slice(bytes);
    let candidates = || {
        words
            .chunks(2)
            .map(|p| (p[0], f32::from_bits(p[1])))
            .collect()
    };
    match rb {
        _ if pairs => StepOutput::Candidates(candidates()),
        Readback::Argmax => StepOutput::Token {
            id: words[0],
            logit: f32::from_bits(words[1]),
        },
        Readback::TopK(_) => StepOutput::Candidates(candidates()),
        Readback::LastLogits => StepOutput::Logits {
            rows: 1,
            data: bytemuck::cast_slice(bytes).to_vec(),
        },
        Readback::AllLogits => StepOutput::Logits {
            rows,
            data: bytemuck::cast_slice(bytes).to_vec(),
        },
    }
}

/// The checks every executor makes before a step.
pub(crate) fn check_step(
    ids: &[u32],
    pos: usize,
    ctx: usize,
    vocab: usize,
) -> Result<(), ExecError> {
    if ids.is_empty() {
        return Err(ExecError::EmptyStep);
    }
    if pos + ids.len() > ctx {
        return Err(ExecError::ContextFull {
            pos,
            n: ids.len(),
            ctx,
        });
    }
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ExecError::BadToken { id, vocab });
    }
    Ok(())
}

/// The check of [`Executor::truncate`]: a sequence can only be cut shorter.
pub(crate) fn check_truncate(pos: usize, current: usize) -> Result<(), ExecError> {
    if pos > current {
        return Err(ExecError::Truncate {
            keep: pos,
            holds: current,
        });
    }
    Ok(())
}

/// The `k` best (id, logit) pairs of a logit row, best first (ties: lower id
/// first; NaN dropped), as the top-k kernel returns them.
pub fn top_k_of(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut c: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .filter(|p| !p.1.is_nan())
        .map(|(i, &v)| (i as u32, v))
        .collect();
    c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    c.truncate(k.max(1));
    c
}

/// One mode's engine for one model.
pub trait Executor {
    /// `"vram"` or `"sram"`.
    fn mode(&self) -> &'static str;
    fn context_len(&self) -> usize;
    /// Tokens already in the KV cache.
    fn position(&self) -> usize;
    /// Forgets the sequence (the cache is overwritten, not reallocated).
    fn reset(&mut self);
    /// Runs `ids` at the current position (any length up to the context), then
    /// reads back what `rb` asks for about the step's last position (or all).
    fn step(&mut self, ids: &[u32], rb: Readback) -> Result<StepOutput, ExecError>;
    fn counters(&self) -> &ExecCounters;
    /// Bytes of weights resident on the GPU.
    fn weight_bytes(&self) -> u64;
    /// Bytes of KV cache allocated on the GPU.
    fn kv_bytes(&self) -> u64;
    /// GPU nanoseconds and dispatch counts per kernel class since profiling was
    /// switched on (`None`: not profiling).
    fn profile(&self) -> Option<BTreeMap<KernelClass, (f64, u64)>> {
        None
    }
    /// Switches per-dispatch timestamp profiling; false if unavailable.
    fn set_profiling(&mut self, _on: bool) -> bool {
        false
    }
    /// Makes `seq` the sequence `step` works on (modes with several resident
    /// sequences; others have only sequence 0).
    fn select(&mut self, seq: usize) -> Result<(), ExecError> {
        if seq == 0 {
            Ok(())
        } else {
            Err(ExecError::ModeCannot {
                mode: self.mode(),
                what: format!("keeps one sequence; sequence {seq} does not exist"),
            })
        }
    }
    /// Sequences with a KV cache of their own ([`Executor::select`] picks one).
    fn sequences(&self) -> usize {
        1
    }
    /// Keeps the first `pos` tokens of the selected sequence's cache (0:
    /// forgets the sequence; later steps overwrite what was past `pos`).
    fn truncate(&mut self, pos: usize) -> Result<(), ExecError> {
        check_truncate(pos, self.position())?;
        if pos == self.position() {
            return Ok(());
        }
        if pos == 0 && self.sequences() == 1 {
            self.reset();
            return Ok(());
        }
        Err(ExecError::ModeCannot {
            mode: self.mode(),
            what: format!("cannot cut a sequence to {pos} tokens"),
        })
    }
    /// One decode step for several resident sequences (continuous batching:
    /// any subset, in any order): `rows[i] = (sequence, token)` appends the
    /// token to that sequence and returns what `rb` asks for about it, one
    /// output per row. Distinct sequences only. The default runs one step per
    /// row (and leaves the last row's sequence selected); VRAM mode runs all
    /// rows in the same dispatches.
    fn decode_rows(
        &mut self,
        rows: &[(usize, u32)],
        rb: Readback,
    ) -> Result<Vec<StepOutput>, ExecError> {
        let mut out = Vec::with_capacity(rows.len());
        for (i, &(seq, tok)) in rows.iter().enumerate() {
            if rows[..i].iter().any(|r| r.0 == seq) {
                return Err(ExecError::DuplicateSequence { seq });
            }
            self.select(seq)?;
            out.push(self.step(&[tok], rb)?);
        }
        Ok(out)
    }
    /// One greedy step for every resident sequence at once (`tokens[s]` is
    /// sequence s's last token); modes without batching refuse.
    fn decode_batch(&mut self, _tokens: &[u32]) -> Result<Vec<u32>, ExecError> {
        Err(ExecError::ModeCannot {
            mode: self.mode(),
            what: "decodes one sequence at a time (several prompts need --mode sram)".into(),
        })
    }
    /// Greedy decoding after `first` (the id the previous step picked): up
    /// to `n` steps, each fed the previous pick, stopping at the context.
    /// `on_token` sees each new id in order and returns false to stop.
    /// Returns the ids. Modes may pipeline (VRAM mode feeds each pick back on
    /// the GPU and records the next step before the last one is read back);
    /// the default runs one blocking step per token.
    fn decode_greedy(
        &mut self,
        first: u32,
        n: usize,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>, ExecError> {
        decode_greedy_blocking(self, first, n, on_token)
    }
    /// Sets the sampling penalties the following steps apply on the GPU to
    /// the last logit row before argmax / top-k / the logit readback
    /// (`kernels::penalty`; an empty list switches them off). False: the
    /// mode cannot, and the caller applies them on the CPU to a full row.
    fn set_penalties(
        &mut self,
        _list: &[crate::kernels::penalty::Entry],
    ) -> Result<bool, ExecError> {
        Ok(false)
    }
    /// SRAM mode's accounting (links, staging, pipeline); None in VRAM mode.
    fn sram_report(&self) -> Option<sram::SramReport> {
        None
    }
}
pub mod sram;

/// The id a greedy step picked (from whatever the step read back).
pub fn argmax_of(out: &StepOutput) -> u32 {
    match out {
        StepOutput::Token { id, .. } => *id,
        StepOutput::Candidates(c) => c.first().map_or(0, |p| p.0),
        StepOutput::Logits { rows, data } => {
            let v = data.len() / (*rows).max(1);
            crate::kernels::argmax::cpu(&data[data.len() - v..]) as u32
        }
    }
}

/// [`Executor::decode_greedy`] as one blocking step per token.
pub fn decode_greedy_blocking<E: Executor + ?Sized>(
    exec: &mut E,
    first: u32,
    n: usize,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Vec<u32>, ExecError> {
    let mut out = Vec::with_capacity(n);
    let mut last = first;
    while out.len() < n && exec.position() < exec.context_len() {
        last = argmax_of(&exec.step(&[last], Readback::Argmax)?);
        out.push(last);
        if !on_token(last) {
            break;
        }
    }
    Ok(out)
}
