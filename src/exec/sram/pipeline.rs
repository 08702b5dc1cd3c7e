//! Running micro-batches through the stages: pipeline step s runs stage k on
//! micro-batch s − k ([`Program::pipeline`](crate::chip::Program::pipeline)).
//! Per step: every active stage receives its link input, computes, sends;
//! link copies are counted as they are recorded for submission.

use super::{Mb, SramExecutor};
use crate::exec::{decode_readback, ExecError, Readback, StepOutput};
use crate::kernels::{topk, KernelOp, Step};

impl SramExecutor {
    /// The Step uniform of micro-batch `j` of `m` (`full`: also positions).
    fn step_of(mbs: &[Mb], j: usize, rb: Readback, per_mb_argmax: bool) -> Step {
        let m = mbs.len();
        let len = mbs[j].len;
        let (out_row0, n_out_rows) = if rb == Readback::AllLogits {
            (0, len)
        } else if j == m - 1 || per_mb_argmax {
            (len - 1, 1)
        } else {
            (0, 0)
        };
        Step {
            n_tokens: len as u32,
            pos0: mbs[j].pos0 as u32,
            out_row0: out_row0 as u32,
            n_out_rows: n_out_rows as u32,
            kv_base: mbs[j].kv_base as u32,
            _pad: [0; 3],
        }
    }

    /// Writes stage `k`'s Step uniform (and token ids, on an embedding
    /// stage) for micro-batch `j`.
    fn write_inputs(&self, k: usize, ids: &[u32], mb: &Mb, st: &Step) {
        let stage = &self.stages[k];
        self.gpu
            .queue
            .write_buffer(&stage.step_buf, 0, bytemuck::bytes_of(st));
        if let Some(b) = &stage.ids {
            self.gpu.queue.write_buffer(
                b,
                0,
                bytemuck::cast_slice(&ids[mb.start..mb.start + mb.len]),
            );
        }
    }

    /// Runs micro-batches `mbs` (slices of `ids`, each with its own position
    /// and KV-cache sequence) through the stage pipeline. With
    /// `per_mb_argmax` every micro-batch gets its own arg-max (batched
    /// decoding: one token per sequence, returned as `Candidates`).
    pub(super) fn run(
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
        let last = self.stages.len() - 1;
        if let Readback::TopK(k) = rb {
            let k = k.clamp(1, topk::MAX_K.min(vocab));
            if self.topk.as_ref().map(|t| t.0) != Some(k) {
                self.topk = Some((k, super::build::build_topk(self, k)?));
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
        let schedule = self.program.pipeline(m);
        self.stats.pipeline_steps_last = schedule.len();
        self.stats.stages_active_mean_last =
            schedule.iter().map(Vec::len).sum::<usize>() as f64 / schedule.len().max(1) as f64;
        let mut dispatched = 0u64;
        // One micro-batch (decode): every stage gets the same inputs, so the
        // whole token is one command buffer and one submission.
        let single = m == 1;
        if single {
            let st = Self::step_of(mbs, 0, rb, per_mb_argmax);
            for k in 0..self.stages.len() {
                self.write_inputs(k, ids, &mbs[0], &st);
            }
        }
        let mut enc = None;
        for active in &schedule {
            if !single {
                for &(k, j) in active {
                    let st = Self::step_of(mbs, j, rb, per_mb_argmax);
                    self.write_inputs(k, ids, &mbs[j], &st);
                }
            }
            let e = enc.get_or_insert_with(|| {
                self.gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("pipeline step"),
                    })
            });
            // Receive, compute, send: all active stages' dispatches together.
            let mut list: Vec<(&KernelOp, Step)> = Vec::new();
            let mut link_bytes = 0u64;
            let mut link_copies = 0u64;
            for phase in 0..3 {
                for &(k, j) in active {
                    let stp = Self::step_of(mbs, j, rb, per_mb_argmax);
                    let st = &self.stages[k];
                    match phase {
                        0 => list.extend(st.recv.iter().map(|op| (op, stp))),
                        1 => {
                            list.extend(st.compute.iter().map(|op| (op, stp)));
                            if k == last && (j == m - 1 || per_mb_argmax) {
                                let pick = match rb {
                                    Readback::Argmax => Some(&self.argmax),
                                    Readback::TopK(_) => self.topk.as_ref().map(|t| &t.1),
                                    _ => None,
                                };
                                list.extend(pick.map(|op| (op, stp)));
                            }
                        }
                        _ => {
                            for l in &st.send {
                                let rows = if l.out_rows {
                                    stp.n_out_rows
                                } else {
                                    stp.n_tokens
                                };
                                if rows > 0 && l.values > 0 {
                                    link_bytes += (4 * l.values * rows as usize) as u64;
                                    link_copies += 1;
                                }
                                list.push((&l.op, stp));
                            }
                        }
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
            self.stats.link_bytes_counted += link_bytes;
            self.stats.link_copies_counted += link_copies;
            // Collect logits rows of the micro-batch the last stage just finished.
            if let Some(&(_, j)) = active.iter().find(|(k, _)| *k == last) {
                let len = mbs[j].len;
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
        Ok(decode_readback(rb, &bytes, n, per_mb_argmax))
    }
}
