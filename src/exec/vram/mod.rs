//! VRAM mode: the conventional engine. Every weight lives in a GPU storage
//! buffer in its file encoding; each step streams them through the kernels.
//! Activations and the KV cache are allocated once; a step is one command
//! buffer and one submission; the next token is picked on the GPU. The
//! dispatches are the forward pass of `graph::forward`, lowered node by
//! node in `lower.rs`.

use super::{ExecCounters, ExecError, Executor, Readback, StepOutput};
use crate::gpu::Gpu;
use crate::kernels::{argmax, attention, rope, topk, GpuWeight, KernelOp, Step};
use crate::model::{LlamaConfig, ModelWeights};
use std::sync::Arc;

mod lower;
#[cfg(test)]
mod tests;

/// Default prompt-chunk size: tokens per batched prefill pass.
pub const DEFAULT_CHUNK: usize = 256;

#[derive(Clone, Debug)]
pub struct VramOptions {
    /// KV-cache length; `None` = the model's context window.
    pub context: Option<usize>,
    /// Most tokens per step (larger prompts run in several batched passes).
    pub chunk: usize,
}

impl Default for VramOptions {
    fn default() -> Self {
        VramOptions {
            context: None,
            chunk: DEFAULT_CHUNK,
        }
    }
}

/// Activation buffers, allocated once for `chunk` tokens.
struct Activations {
    ids: wgpu::Buffer,    // [chunk] u32
    x: wgpu::Buffer,      // [chunk, D]   residual stream
    xn: wgpu::Buffer,     // [chunk, D]   normed
    q: wgpu::Buffer,      // [chunk, H*hd]
    k: wgpu::Buffer,      // [chunk, Hkv*hd]
    v: wgpu::Buffer,      // [chunk, Hkv*hd]
    att: wgpu::Buffer,    // [chunk, H*hd]
    h: wgpu::Buffer,      // [chunk, I]
    logits: wgpu::Buffer, // [chunk, V]
    result: wgpu::Buffer, // [max(MAX_K, rows)][id, bits]
    /// Batched decode: each row's (position, KV base) for the attention.
    rows: wgpu::Buffer, // uniform [attention::MAX_ROWS] vec4<u32>
}

pub struct VramExecutor {
    gpu: Arc<Gpu>,
    cfg: LlamaConfig,
    ctx: usize,
    chunk: usize,
    /// Tokens in the KV cache of each resident sequence.
    pos: Vec<usize>,
    /// The sequence `step` and `decode_greedy` work on.
    seq: usize,
    step_buf: wgpu::Buffer,
    act: Activations,
    /// Embedding → layers → final norm, in forward order.
    body: Vec<KernelOp>,
    /// lm_head over the requested logit rows.
    head: Vec<KernelOp>,
    argmax: KernelOp,
    topk: Option<(usize, KernelOp)>,
    /// Sampling penalties before argmax / top-k (built on first use).
    penalty: Option<crate::kernels::penalty::PenaltyOp>,
    readback: wgpu::Buffer,
    readback_size: u64,
    /// Greedy pipelining: two 8-byte readback slots, one per step in flight.
    greedy_slots: [wgpu::Buffer; 2],
    weight_bytes: u64,
    kv_bytes: u64,
    counters: ExecCounters,
    profiler: Option<crate::gpu::profiler::Profiler>,
    _keep: Vec<wgpu::Buffer>,
    _mats: Vec<GpuWeight>,
}

impl VramExecutor {
    pub fn new(
        gpu: Arc<Gpu>,
        cfg: &LlamaConfig,
        w: &ModelWeights,
        opts: &VramOptions,
    ) -> Result<Self, ExecError> {
        Self::new_batched(gpu, cfg, w, opts, 1)
    }

    /// With KV caches for `batch` sequences (each `context` positions), which
    /// [`Executor::decode_rows`] decodes together: one row per sequence in
    /// each matvec, each row's own position and cache in the attention.
    /// At most [`VramExecutor::max_rows`] rows per batched step.
    pub fn new_batched(
        gpu: Arc<Gpu>,
        cfg: &LlamaConfig,
        w: &ModelWeights,
        opts: &VramOptions,
        batch: usize,
    ) -> Result<Self, ExecError> {
        Self::with_graph(gpu, cfg, w, opts, batch, &crate::graph::forward(cfg))
    }

    /// The executor of `nodes`, the forward pass of `cfg` as
    /// `graph::forward` lists it (tests hand it altered lists).
    fn with_graph(
        gpu: Arc<Gpu>,
        cfg: &LlamaConfig,
        w: &ModelWeights,
        opts: &VramOptions,
        batch: usize,
        nodes: &[crate::graph::Node],
    ) -> Result<Self, ExecError> {
        let ctx = opts.context.unwrap_or(cfg.max_position_embeddings).max(1);
        let chunk = opts.chunk.clamp(1, ctx);
        if batch == 0 {
            return Err(ExecError::EmptyBatch);
        }
        // Rows of a batched step live in the chunk-sized activations.
        let chunk = chunk.max(batch.min(attention::MAX_ROWS));
        let (d, qd, kvd, inter, vocab) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
            cfg.vocab_size,
        );
        let f = |n: usize| (n * 4) as u64;
        let buf = |label: &str, size: u64| gpu.storage_buffer(label, size);
        let act = Activations {
            ids: buf("ids", f(chunk))?,
            x: buf("x", f(chunk * d))?,
            xn: buf("xn", f(chunk * d))?,
            q: buf("q", f(chunk * qd))?,
            k: buf("k", f(chunk * kvd))?,
            v: buf("v", f(chunk * kvd))?,
            att: buf("att", f(chunk * qd))?,
            h: buf("h", f(chunk * inter))?,
            logits: buf("logits", f(chunk * vocab))?,
            result: buf("result", f(2 * topk::MAX_K.max(chunk)))?,
            rows: attention::row_table(&gpu),
        };
        let step_buf = gpu.uniform("step", &Step::default());
        // One cos/sin table per distinct RoPE the layers use (Gemma 3: the
        // full-attention layers' and the sliding layers').
        let (tables, layer_table) = cfg.rope_tables();
        let cos_sin = tables
            .iter()
            .enumerate()
            .map(|(t, (theta, scaling))| {
                let table = rope::rope_table(ctx, cfg.head_dim, *theta, scaling);
                gpu.upload(&format!("rope.cos_sin.{t}"), bytemuck::cast_slice(&table))
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Weights: matrices as stored (stacked where products fuse), norm
        // vectors widened to f32 (tiny); the dispatches from the one graph.
        let low = lower::lower(
            lower::Context {
                gpu: &gpu,
                cfg,
                weights: w,
                step: &step_buf,
                act: &act,
                chunk,
                ctx,
                batch,
                cos_sin: &cos_sin,
                layer_table: &layer_table,
            },
            nodes,
        )?;
        let weight_bytes = w.total_bytes() as u64;
        let argmax = argmax::build(&gpu, &step_buf, vocab, &act.logits, &act.result)?;
        let mut keep = cos_sin;
        keep.extend(low.keep);
        let readback_size = f(2 * topk::MAX_K);
        let readback = gpu.readback_buffer("readback", readback_size);
        let greedy_slots = [
            gpu.readback_buffer("greedy.0", 8),
            gpu.readback_buffer("greedy.1", 8),
        ];
        Ok(VramExecutor {
            gpu,
            cfg: cfg.clone(),
            ctx,
            chunk,
            pos: vec![0; batch],
            seq: 0,
            step_buf,
            act,
            body: low.body,
            head: low.head,
            argmax,
            topk: None,
            penalty: None,
            readback,
            readback_size,
            greedy_slots,
            weight_bytes,
            kv_bytes: low.kv_bytes,
            counters: ExecCounters::default(),
            profiler: None,
            _keep: keep,
            _mats: low.mats,
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Name and class of every dispatch a step can record, in order: the
    /// body (embedding → final norm), then the lm_head (argmax, top-k and
    /// penalties left out).
    pub fn ops(&self) -> Vec<(&str, crate::kernels::KernelClass)> {
        self.body
            .iter()
            .chain(&self.head)
            .map(|op| (op.name.as_str(), op.class))
            .collect()
    }

    /// Most rows (sequences) one batched decode step takes.
    pub fn max_rows(&self) -> usize {
        self.chunk.min(attention::MAX_ROWS)
    }

    /// Times every dispatch with timestamp queries (one pass per dispatch).
    /// Returns false when the adapter has no timestamps.
    pub fn enable_profiling(&mut self, on: bool) -> bool {
        self.profiler = if on {
            crate::gpu::profiler::Profiler::new(&self.gpu)
        } else {
            None
        };
        self.profiler.is_some()
    }

    fn ensure_readback(&mut self, size: u64) {
        if size > self.readback_size {
            self.readback = self.gpu.readback_buffer("readback", size);
            self.readback_size = size;
        }
    }

    /// Records the step's dispatches (body, head if logit rows are asked
    /// for, argmax / top-k) into `enc`; returns how many were recorded.
    fn record_ops(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        step: &Step,
        rb: Option<Readback>,
    ) -> u64 {
        let step = *step;
        let n_out_rows = step.n_out_rows;
        let mut dispatched = 0u64;
        {
            let mut ops: Vec<&KernelOp> = self.body.iter().collect();
            if n_out_rows > 0 {
                ops.extend(self.head.iter());
            }
            if matches!(
                rb,
                Some(Readback::Argmax | Readback::TopK(_) | Readback::LastLogits)
            ) {
                ops.extend(self.penalty.as_ref().and_then(|p| p.op()));
            }
            match rb {
                Some(Readback::Argmax) => ops.push(&self.argmax),
                Some(Readback::TopK(_)) => ops.extend(self.topk.as_ref().map(|t| &t.1)),
                _ => {}
            }
            if let Some(prof) = self.profiler.as_mut() {
                // Profiling: one pass per dispatch, each with timestamps.
                for op in ops {
                    if op.groups(&step).contains(&0) {
                        continue;
                    }
                    let tw = prof.next(op.class);
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&op.name),
                        timestamp_writes: tw,
                    });
                    op.record(&mut pass, &step);
                    self.counters.count(op.class);
                    dispatched += 1;
                }
                prof.resolve(enc);
            } else {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("forward"),
                    timestamp_writes: None,
                });
                for op in ops {
                    if op.record(&mut pass, &step) {
                        self.counters.count(op.class);
                        dispatched += 1;
                    }
                }
            }
        }
        dispatched
    }

    /// Submits one greedy decode step at the current position whose input id
    /// is already in `act.ids`; its pick goes to `greedy_slots[slot]` and into
    /// `act.ids` for the step after it (fed back on the GPU).
    fn submit_greedy(&mut self, slot: usize) -> wgpu::SubmissionIndex {
        let step = Step {
            kv_base: (self.seq * self.ctx) as u32,
            ..Step::tokens(1, self.pos[self.seq] as u32)
        };
        self.gpu
            .queue
            .write_buffer(&self.step_buf, 0, bytemuck::bytes_of(&step));
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("greedy step"),
            });
        let dispatched = self.record_ops(&mut enc, &step, Some(Readback::Argmax));
        enc.copy_buffer_to_buffer(&self.act.result, 0, &self.greedy_slots[slot], 0, 8);
        enc.copy_buffer_to_buffer(&self.act.result, 0, &self.act.ids, 0, 4);
        let idx = self.gpu.queue.submit([enc.finish()]);
        self.counters.steps += 1;
        self.counters.submissions += 1;
        self.counters.dispatches_last_decode = dispatched;
        self.pos[self.seq] += 1;
        idx
    }

    /// Runs one chunk (≤ `self.chunk` tokens) and reads back `rb`.
    fn run_chunk(
        &mut self,
        ids: &[u32],
        rb: Option<Readback>,
    ) -> Result<Option<StepOutput>, ExecError> {
        let n = ids.len();
        let vocab = self.cfg.vocab_size;
        let (out_row0, n_out_rows) = match rb {
            None => (0, 0),
            Some(Readback::AllLogits) => (0, n),
            Some(_) => (n - 1, 1),
        };
        let step = Step {
            n_tokens: n as u32,
            pos0: self.pos[self.seq] as u32,
            out_row0: out_row0 as u32,
            n_out_rows: n_out_rows as u32,
            kv_base: (self.seq * self.ctx) as u32,
            _pad: [0; 3],
        };
        let q = &self.gpu.queue;
        q.write_buffer(&self.step_buf, 0, bytemuck::bytes_of(&step));
        q.write_buffer(&self.act.ids, 0, bytemuck::cast_slice(ids));
        if let Some(Readback::TopK(k)) = rb {
            let k = k.clamp(1, topk::MAX_K.min(vocab));
            if self.topk.as_ref().map(|t| t.0) != Some(k) {
                let op = topk::build(
                    &self.gpu,
                    &self.step_buf,
                    vocab,
                    k,
                    &self.act.logits,
                    &self.act.result,
                )?;
                self.topk = Some((k, op));
            }
        }
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        let dispatched = self.record_ops(&mut enc, &step, rb);
        let read_len: u64 = match rb {
            None => 0,
            Some(Readback::Argmax) => 8,
            Some(Readback::TopK(_)) => 8 * self.topk.as_ref().map_or(1, |t| t.0) as u64,
            Some(Readback::LastLogits) => (vocab * 4) as u64,
            Some(Readback::AllLogits) => (n * vocab * 4) as u64,
        };
        if read_len > 0 {
            self.ensure_readback(read_len);
            let src = match rb {
                Some(Readback::Argmax) | Some(Readback::TopK(_)) => &self.act.result,
                _ => &self.act.logits,
            };
            enc.copy_buffer_to_buffer(src, 0, &self.readback, 0, read_len);
        }
        self.gpu.queue.submit([enc.finish()]);
        self.counters.submissions += 1;
        if n == 1 {
            self.counters.dispatches_last_decode = dispatched;
        }
        self.pos[self.seq] += n;
        if let Some(prof) = self.profiler.as_mut() {
            prof.collect(&self.gpu)?;
        }
        if read_len == 0 {
            return Ok(None);
        }
        let bytes = self.gpu.read(&self.readback, read_len)?;
        self.counters.readback_bytes += read_len;
        Ok(rb.map(|rb| super::decode_readback(rb, &bytes, n, false)))
    }
}

impl Executor for VramExecutor {
    fn mode(&self) -> &'static str {
        "vram"
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
    fn sequences(&self) -> usize {
        self.pos.len()
    }
    fn select(&mut self, seq: usize) -> Result<(), ExecError> {
        if seq >= self.pos.len() {
            return Err(ExecError::NoSuchSequence {
                seq,
                resident: self.pos.len(),
            });
        }
        self.seq = seq;
        Ok(())
    }
    fn truncate(&mut self, pos: usize) -> Result<(), ExecError> {
        super::check_truncate(pos, self.pos[self.seq])?;
        self.pos[self.seq] = pos;
        Ok(())
    }
    fn decode_batch(&mut self, tokens: &[u32]) -> Result<Vec<u32>, ExecError> {
        if tokens.len() != self.pos.len() {
            return Err(ExecError::BatchMismatch {
                tokens: tokens.len(),
                sequences: self.pos.len(),
            });
        }
        let rows: Vec<(usize, u32)> = tokens.iter().copied().enumerate().collect();
        Ok(self
            .decode_rows(&rows, Readback::Argmax)?
            .iter()
            .map(super::argmax_of)
            .collect())
    }
    /// One step of one token for each listed sequence, all rows in the same
    /// dispatches: the matvecs run over every row (the weights are read once
    /// per workgroup for all rows) and the attention takes each row's own
    /// position and KV cache from the row table. Each row's arithmetic is the
    /// one of its solo decode step, so results equal solo runs exactly.
    fn decode_rows(
        &mut self,
        rows: &[(usize, u32)],
        rb: Readback,
    ) -> Result<Vec<StepOutput>, ExecError> {
        let b = rows.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        if b > self.max_rows() {
            return Err(ExecError::TooManyRows {
                rows: b,
                max: self.max_rows(),
            });
        }
        let mut seen = vec![false; self.pos.len()];
        let mut table = Vec::with_capacity(b);
        for &(seq, tok) in rows {
            if seq >= self.pos.len() || std::mem::replace(&mut seen[seq], true) {
                return Err(if seq < self.pos.len() {
                    ExecError::DuplicateSequence { seq }
                } else {
                    ExecError::NoSuchSequence {
                        seq,
                        resident: self.pos.len(),
                    }
                });
            }
            super::check_step(&[tok], self.pos[seq], self.ctx, self.cfg.vocab_size)?;
            table.push((self.pos[seq], seq * self.ctx));
        }
        let vocab = self.cfg.vocab_size;
        let ids: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let step = Step::decode_rows(b as u32);
        let q = &self.gpu.queue;
        q.write_buffer(&self.step_buf, 0, bytemuck::bytes_of(&step));
        q.write_buffer(&self.act.ids, 0, bytemuck::cast_slice(&ids));
        q.write_buffer(
            &self.act.rows,
            0,
            bytemuck::cast_slice(&attention::row_entries(&table)),
        );
        let greedy = rb == Readback::Argmax;
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("batched decode step"),
            });
        let dispatched = self.record_ops(&mut enc, &step, greedy.then_some(rb));
        let read_len = if greedy { 8 * b } else { b * vocab * 4 } as u64;
        self.ensure_readback(read_len);
        let src = if greedy {
            &self.act.result
        } else {
            &self.act.logits
        };
        enc.copy_buffer_to_buffer(src, 0, &self.readback, 0, read_len);
        self.gpu.queue.submit([enc.finish()]);
        self.counters.steps += 1;
        self.counters.submissions += 1;
        self.counters.dispatches_last_decode = dispatched;
        for &(seq, _) in rows {
            self.pos[seq] += 1;
        }
        if let Some(prof) = self.profiler.as_mut() {
            prof.collect(&self.gpu)?;
        }
        let bytes = self.gpu.read(&self.readback, read_len)?;
        self.counters.readback_bytes += read_len;
        if greedy {
            let words: &[u32] = bytemuck::cast_slice(&bytes);
            return Ok(words
                .chunks(2)
                .map(|p| StepOutput::Token {
                    id: p[0],
                    logit: f32::from_bits(p[1]),
                })
                .collect());
        }
        let logits: &[f32] = bytemuck::cast_slice(&bytes);
        Ok(logits
            .chunks(vocab)
            .map(|row| match rb {
                // No per-row top-k kernel: the k best of the row, on the CPU.
                Readback::TopK(k) => StepOutput::Candidates(super::top_k_of(row, k)),
                _ => StepOutput::Logits {
                    rows: 1,
                    data: row.to_vec(),
                },
            })
            .collect())
    }
    fn step(&mut self, ids: &[u32], rb: Readback) -> Result<StepOutput, ExecError> {
        super::check_step(ids, self.pos[self.seq], self.ctx, self.cfg.vocab_size)?;
        for (_, scaling) in self.cfg.rope_tables().0 {
            rope::check_step(scaling, self.pos[self.seq], ids.len())
                .map_err(ExecError::Position)?;
        }
        self.counters.steps += 1;
        let chunks: Vec<&[u32]> = ids.chunks(self.chunk).collect();
        let last = chunks.len() - 1;
        let mut all = Vec::new();
        let mut rows = 0;
        for (i, c) in chunks.into_iter().enumerate() {
            // Every chunk's logits when all are asked for; else the last chunk's.
            let want = (rb == Readback::AllLogits || i == last).then_some(rb);
            match self.run_chunk(c, want)? {
                Some(StepOutput::Logits { rows: r, data }) if rb == Readback::AllLogits => {
                    rows += r;
                    all.extend(data);
                }
                Some(out) if i == last => return Ok(out),
                _ => {}
            }
        }
        Ok(StepOutput::Logits { rows, data: all })
    }
    fn set_penalties(
        &mut self,
        list: &[crate::kernels::penalty::Entry],
    ) -> Result<bool, ExecError> {
        if list.is_empty() && self.penalty.is_none() {
            return Ok(true);
        }
        let fits = self
            .penalty
            .as_ref()
            .is_some_and(|p| p.capacity() >= list.len());
        if !fits {
            self.penalty = Some(crate::kernels::penalty::PenaltyOp::new(
                &self.gpu,
                &self.step_buf,
                self.cfg.vocab_size,
                &self.act.logits,
                list.len().next_power_of_two(),
            )?);
        }
        if let Some(p) = self.penalty.as_mut() {
            p.set(&self.gpu, list);
        }
        Ok(true)
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
    fn profile(
        &self,
    ) -> Option<std::collections::BTreeMap<crate::kernels::KernelClass, (f64, u64)>> {
        self.profiler.as_ref().map(|p| p.by_class.clone())
    }
    fn set_profiling(&mut self, on: bool) -> bool {
        self.enable_profiling(on)
    }
    /// Pipelined: step i + 1 is recorded and submitted (its input id copied
    /// from step i's argmax on the GPU) before step i's id is read back, so
    /// the CPU's recording and the readback round trip overlap GPU work.
    fn decode_greedy(
        &mut self,
        first: u32,
        n: usize,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>, ExecError> {
        if self.profiler.is_some() {
            // One pass per dispatch with timestamps: keep steps apart.
            return super::decode_greedy_blocking(self, first, n, on_token);
        }
        let n = n.min(self.ctx.saturating_sub(self.pos[self.seq]));
        if n == 0 {
            return Ok(Vec::new());
        }
        super::check_step(&[first], self.pos[self.seq], self.ctx, self.cfg.vocab_size)?;
        let start = self.pos[self.seq];
        self.gpu
            .queue
            .write_buffer(&self.act.ids, 0, bytemuck::bytes_of(&first));
        let mut in_flight = self.submit_greedy(0);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let next = (i + 1 < n).then(|| self.submit_greedy((i + 1) % 2));
            let bytes =
                self.gpu
                    .read_after(&self.greedy_slots[i % 2], 8, Some(in_flight.clone()))?;
            self.counters.readback_bytes += 8;
            let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            out.push(id);
            if !on_token(id) {
                break;
            }
            if let Some(idx) = next {
                in_flight = idx;
            }
        }
        // A step submitted past a stop only wrote the cache beyond the
        // position kept here: later steps overwrite it.
        self.pos[self.seq] = start + out.len();
        Ok(out)
    }
}
