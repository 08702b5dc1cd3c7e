//! Running micro-batches through the stages: pipeline step s runs stage k on
//! micro-batch s − k ([`Program::pipeline`](crate::chip::Program::pipeline)).
//! The steps of a run are one task table ([`schedule`](super::schedule)) and
//! one interpreter dispatch; link transfers are counted as the table's link
//! tasks are submitted.

use super::schedule::{self, Code};
use super::{CachedTable, Mb, ReadoutKind, SramExecutor, TableKey};
use crate::exec::{decode_readback, ExecError, Readback, StepOutput};
use crate::kernels::sram_step::{self, Op, MB_WORDS};
use crate::kernels::{topk, KernelClass};

impl SramExecutor {
    /// Micro-batch `j`'s record (`sram_step::MB_WORDS` words): tokens,
    /// position, logit rows, KV-cache base and sequence, first token id, and
    /// (`per_row`: one row per sequence) where the rows' pairs are.
    pub(super) fn mb_record(
        &self,
        mbs: &[Mb],
        j: usize,
        rb: Readback,
        per_mb: bool,
        per_row: bool,
    ) -> [u32; MB_WORDS] {
        let m = mbs.len();
        let len = mbs[j].len;
        let (out_row0, n_out_rows) = if rb == Readback::AllLogits || per_row {
            (0, len)
        } else if j == m - 1 || per_mb {
            (len - 1, 1)
        } else {
            (0, 0)
        };
        let rows = if per_row {
            self.header[sram_step::hdr::ROWS_BASE]
        } else {
            0
        };
        [
            len as u32,
            mbs[j].pos0 as u32,
            out_row0 as u32,
            n_out_rows as u32,
            mbs[j].kv_base as u32,
            (mbs[j].kv_base / self.ctx) as u32,
            mbs[j].start as u32,
            rows,
        ]
    }

    /// The read-out at the end of the last stage for micro-batch `j`.
    pub(super) fn tail(&self, key: &TableKey, j: usize) -> Option<Code> {
        let vocab = self.cfg.vocab_size as u32;
        let l = self.logits_off as u32;
        let final_mb = j + 1 == key.m;
        match key.rb {
            // One arg-max per row, row r of micro-batch j into pair j·rows + r.
            ReadoutKind::Argmax if key.rows > 0 => Some(Code::shared(
                Op::Argmax,
                &[l, vocab, (2 * j * key.rows) as u32, 1],
                key.rows as u32,
            )),
            ReadoutKind::Argmax if key.per_mb => {
                Some(Code::one(Op::Argmax, &[l, vocab, 2 * j as u32]))
            }
            ReadoutKind::Argmax if final_mb => Some(Code::one(Op::Argmax, &[l, vocab, 0])),
            ReadoutKind::TopK(k) if final_mb => Some(Code::one(Op::Topk, &[l, vocab, k as u32])),
            ReadoutKind::AllLogits => Some(Code::one(Op::CopyOut, &[l, vocab])),
            _ => None,
        }
    }

    /// The task table for `key`, built once and kept.
    fn table(&mut self, key: TableKey) -> Result<(), ExecError> {
        if self.tables.contains_key(&key) {
            return Ok(());
        }
        if self.tables.len() >= 16 {
            self.tables.clear();
        }
        let tails: Vec<Option<Code>> = (0..key.m).map(|j| self.tail(&key, j)).collect();
        let t = schedule::build_groups(
            &self.codes,
            &self.program.groups,
            &self.link_codes,
            &tails,
            &self.program.pipeline(key.m),
            &self.header,
        );
        if t.n_counters > self.counters_len {
            let n = t.n_counters.next_power_of_two();
            self.counters_buf = self
                .gpu
                .storage_buffer("sram.counters", (n * 4 * sram_step::COUNTER_WORDS) as u64)?;
            self.counters_len = n;
            self.tables.clear();
        }
        let buf = self
            .gpu
            .upload("sram.tasks", bytemuck::cast_slice(&t.words))?;
        let bind_group = self.bind_table(&buf, &self.pipeline, "sram_step");
        self.tables.insert(
            key,
            CachedTable {
                bind_group,
                _buf: buf,
                n_tasks: t.n_tasks,
                n_counters: t.n_counters,
            },
        );
        Ok(())
    }

    /// The interpreter's bind group: the task table `table` and the
    /// executor's arenas, in binding order.
    pub(super) fn bind_table(
        &self,
        table: &wgpu::Buffer,
        pipe: &wgpu::ComputePipeline,
        label: &str,
    ) -> wgpu::BindGroup {
        let bufs = [
            table,
            &self.run_buf,
            &self.image,
            &self.acts,
            &self.kv,
            &self.counters_buf,
            &self.results,
            &self.image2,
        ];
        let entries: Vec<wgpu::BindGroupEntry> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &pipe.get_bind_group_layout(0),
                entries: &entries,
            })
    }

    /// Runs micro-batches `mbs` (slices of `ids`, each with its own position
    /// and KV-cache sequence) through the stage pipeline. With `per_mb` every
    /// micro-batch gets its own arg-max (batched decoding: one token per
    /// sequence, returned as `Candidates`).
    pub(super) fn run(
        &mut self,
        ids: &[u32],
        mbs: &[Mb],
        rb: Readback,
        per_mb: bool,
    ) -> Result<StepOutput, ExecError> {
        self.run_rows(ids, mbs, rb, per_mb, &[])
    }

    /// As [`run`](Self::run); with `rows` (a decode round: per row, its
    /// sequence and position) each micro-batch holds several sequences, one
    /// row each, and every row gets its own arg-max.
    pub(super) fn run_rows(
        &mut self,
        ids: &[u32],
        mbs: &[Mb],
        rb: Readback,
        per_mb: bool,
        rows: &[(u32, u32)],
    ) -> Result<StepOutput, ExecError> {
        let per_row = !rows.is_empty();
        let vocab = self.cfg.vocab_size;
        self.counters.steps += 1;
        let n = ids.len();
        let m = mbs.len();
        let last = self.program.groups.len() - 1;
        let kind = match rb {
            Readback::Argmax => ReadoutKind::Argmax,
            Readback::TopK(k) => ReadoutKind::TopK(k.clamp(1, topk::MAX_K.min(vocab))),
            Readback::LastLogits => ReadoutKind::LastLogits,
            Readback::AllLogits => ReadoutKind::AllLogits,
        };
        if kind == ReadoutKind::AllLogits && self.results_len < n * vocab {
            let len = (n * vocab).next_power_of_two();
            self.results = self.gpu.storage_buffer("sram.results", (len * 4) as u64)?;
            self.results_len = len;
            self.tables.clear();
        }
        let key = TableKey {
            m,
            rb: kind,
            per_mb,
            rows: if per_row {
                mbs.iter().map(|b| b.len).max().unwrap_or(1)
            } else {
                0
            },
        };
        self.table(key)?;

        // The micro-batch records and token ids.
        let mut run: Vec<u32> = Vec::with_capacity(m * MB_WORDS);
        for j in 0..m {
            run.extend(self.mb_record(mbs, j, rb, per_mb, per_row));
        }
        if per_row {
            let pairs: Vec<u32> = rows.iter().flat_map(|&(s, p)| [s, p]).collect();
            let base = self.header[sram_step::hdr::ROWS_BASE] as u64 * 4;
            self.gpu
                .queue
                .write_buffer(&self.run_buf, base, bytemuck::cast_slice(&pairs));
        }
        let ids_base = self.header[sram_step::hdr::IDS_BASE] as u64 * 4;
        self.gpu
            .queue
            .write_buffer(&self.run_buf, 0, bytemuck::cast_slice(&run));
        self.gpu
            .queue
            .write_buffer(&self.run_buf, ids_base, bytemuck::cast_slice(ids));

        // Stats and link counting over the schedule.
        let schedule = self.program.pipeline(m);
        let steps = schedule.len().max(1) as f64;
        self.stats.pipeline_steps_last = schedule.len();
        self.stats.stages_active_mean_last =
            schedule.iter().map(Vec::len).sum::<usize>() as f64 / steps;
        self.stats.chips_active_mean_last = schedule
            .iter()
            .map(|s| {
                let mut c: Vec<usize> = s
                    .iter()
                    .flat_map(|&(k, _)| self.program.groups[k].clone())
                    .map(|st| self.program.stages[st].chip)
                    .collect();
                c.sort_unstable();
                c.dedup();
                c.len()
            })
            .sum::<usize>() as f64
            / steps;
        for active in &schedule {
            for &(k, j) in active {
                if k == last {
                    continue;
                }
                let r = &run[j * MB_WORDS..];
                for l in &self.link_counts[k] {
                    let rows = if l.out_rows { r[3] } else { r[0] } as usize;
                    if rows > 0 && l.values > 0 {
                        self.stats.link_bytes_counted += (4 * l.values * rows) as u64;
                        self.stats.link_copies_counted += 1;
                    }
                }
            }
        }

        let read_len: u64 = match rb {
            _ if per_row => (n * 8) as u64,
            _ if per_mb => (m * 8) as u64,
            Readback::Argmax => 8,
            Readback::TopK(_) => {
                8 * match kind {
                    ReadoutKind::TopK(k) => k as u64,
                    _ => 1,
                }
            }
            Readback::LastLogits => (vocab * 4) as u64,
            Readback::AllLogits => (n * vocab * 4) as u64,
        };
        if read_len + 4 > self.readback_size {
            self.readback = self.gpu.readback_buffer("readback", read_len + 4);
            self.readback_size = read_len + 4;
        }
        let table = &self.tables[&key];
        let mut e = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sram run"),
            });
        e.clear_buffer(
            &self.counters_buf,
            0,
            Some((table.n_counters * 4 * sram_step::COUNTER_WORDS) as u64),
        );
        {
            let tw = self
                .profiler
                .as_mut()
                .and_then(|p| p.next(KernelClass::SramStep));
            let mut pass = e.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sram_step"),
                timestamp_writes: tw,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &table.bind_group, &[]);
            let [x, y, z] = sram_step::grid(table.n_tasks);
            pass.dispatch_workgroups(x, y, z);
        }
        self.counters.count(KernelClass::SramStep);
        self.stats.dispatches_last = 1;
        self.stats.tasks_last = table.n_tasks;
        match rb {
            Readback::LastLogits if !per_mb => e.copy_buffer_to_buffer(
                &self.acts,
                (self.logits_off * 4) as u64,
                &self.readback,
                0,
                read_len,
            ),
            _ => e.copy_buffer_to_buffer(&self.results, 0, &self.readback, 0, read_len),
        }
        e.copy_buffer_to_buffer(&self.counters_buf, 0, &self.readback, read_len, 4);
        if let Some(p) = self.profiler.as_ref() {
            p.resolve(&mut e);
        }
        self.gpu.queue.submit([e.finish()]);
        self.counters.submissions += 1;
        if let Some(p) = self.profiler.as_mut() {
            p.collect(&self.gpu)?;
        }
        if n == 1 || per_mb {
            // One dispatch for the token (a decode round: for all of them).
            self.counters.dispatches_last_decode = 1;
        }
        let bytes = self.gpu.read(&self.readback, read_len + 4)?;
        self.counters.readback_bytes += read_len;
        let flag = u32::from_le_bytes(
            bytes[read_len as usize..read_len as usize + 4]
                .try_into()
                .unwrap_or([0; 4]),
        );
        if flag != 0 {
            return Err(ExecError::Stalled {
                polls: sram_step::SPIN_LIMIT,
            });
        }
        Ok(decode_readback(rb, &bytes[..read_len as usize], n, per_mb))
    }
}
