//! Resident mode: ONE dispatch decodes a whole run of greedy tokens
//! (`resident` in `shaders/sram_step.wgsl`). The decode table of one token
//! (the stepped interpreter's, one micro-batch, arg-max read-out) is split
//! over K workgroups, K at most what the litmus measured running at once
//! ([`crate::gpu::litmus`]): up to K − 1 resident workgroups each own one
//! weight slice (a matmul row tile or a norm vector, in table order, so the
//! first chips' slices first) and keep its weights in workgroup memory from
//! the first token on; the workers run every other task, restaging. The
//! arg-max's id is read by the next token's embedding inside the kernel.
//! A model with more weight slices than K − 1 runs partially resident
//! ([`ResidentStats::resident_fraction`]).

use super::{schedule, Mb, ReadoutKind, SramExecutor, TableKey};
use crate::exec::ExecError;
use crate::kernels::sram_step::{self, hdr, Op, HDR, REC};
use crate::kernels::KernelClass;

/// How one resident run was laid out.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ResidentStats {
    /// Workgroups the adapter runs at once (the litmus) and those dispatched.
    pub capacity: usize,
    pub workgroups: usize,
    /// Weight slices (matmul row tiles, norm vectors) of one token and how
    /// many of them stay resident; the fraction of the slices resident.
    pub weight_slices: usize,
    pub resident_slices: usize,
    pub resident_fraction: f64,
    pub worker_workgroups: usize,
    pub tasks_per_token: usize,
    pub tokens: usize,
}

/// The per-workgroup task lists for a decode table of `n_tasks` tasks whose
/// ops are `ops`, with `capacity` co-resident workgroups: (lists, which keep
/// their weights, stats). Each list is in table order.
pub fn assign(ops: &[u32], capacity: usize) -> (Vec<Vec<u32>>, Vec<bool>, ResidentStats) {
    let weight: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i] == Op::Mat as u32 || ops[i] == Op::Norm as u32)
        .collect();
    let resident = capacity.saturating_sub(1).min(weight.len());
    let workers = (capacity - resident).clamp(1, 8);
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); resident + workers];
    let mut next = 0;
    for (i, _) in ops.iter().enumerate() {
        match weight[..resident].iter().position(|&w| w == i) {
            Some(r) => lists[r].push(i as u32),
            None => {
                lists[resident + next % workers].push(i as u32);
                next += 1;
            }
        }
    }
    let keeps = (0..lists.len()).map(|w| w < resident).collect();
    let stats = ResidentStats {
        capacity,
        workgroups: resident + workers,
        weight_slices: weight.len(),
        resident_slices: resident,
        resident_fraction: if weight.is_empty() {
            0.0
        } else {
            resident as f64 / weight.len() as f64
        },
        worker_workgroups: workers,
        tasks_per_token: ops.len(),
        tokens: 0,
    };
    (lists, keeps, stats)
}

/// Tokens one resident dispatch decodes at most (an early end of sequence
/// wastes at most this many).
pub const CHUNK_TOKENS: usize = 32;

impl SramExecutor {
    /// Decode greedily in resident mode with `capacity` co-resident
    /// workgroups (what the litmus admitted); `None` goes back to stepped.
    pub fn set_resident(&mut self, capacity: Option<usize>) {
        self.resident_capacity = capacity;
        if capacity.is_none() {
            self.stats.resident = None;
        }
    }

    /// [`Executor::decode_greedy`](crate::exec::Executor::decode_greedy) in
    /// resident dispatches of up to [`CHUNK_TOKENS`]; when `on_token` stops
    /// early, the sequence keeps only the tokens stepped mode would have fed.
    pub(super) fn decode_greedy_resident(
        &mut self,
        first: u32,
        n: usize,
        capacity: usize,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>, ExecError> {
        let mut out = Vec::with_capacity(n);
        let mut last = first;
        loop {
            let pos0 = self.pos[self.seq];
            let k = CHUNK_TOKENS.min(n - out.len()).min(self.ctx - pos0);
            if k == 0 {
                break;
            }
            let (toks, stats) = self.decode_resident(last, k, capacity)?;
            self.stats.resident = Some(stats);
            for (i, &t) in toks.iter().enumerate() {
                out.push(t);
                if !on_token(t) {
                    // Stepped mode would have fed `last` and toks[..i].
                    self.pos[self.seq] = pos0 + i + 1;
                    return Ok(out);
                }
            }
            last = *toks.last().unwrap_or(&last);
        }
        Ok(out)
    }

    /// Decodes `n` greedy tokens after `token` (fed at the current position
    /// of the selected sequence) in one resident dispatch of at most
    /// `capacity` workgroups (what the litmus admitted; at least 2). Returns
    /// the tokens and how the run was laid out.
    pub fn decode_resident(
        &mut self,
        token: u32,
        n: usize,
        capacity: usize,
    ) -> Result<(Vec<u32>, ResidentStats), ExecError> {
        if capacity < 2 {
            return Err(ExecError::ModeCannot {
                mode: "sram",
                what: format!("cannot run resident with {capacity} co-resident workgroup(s); it needs 2 (a resident slice and a worker)"),
            });
        }
        let seq = self.seq;
        let pos = self.pos[seq];
        crate::exec::check_step(&[token], pos, self.ctx, self.cfg.vocab_size)?;
        if n == 0 || pos + n > self.ctx {
            return Err(ExecError::ModeCannot {
                mode: "sram",
                what: format!(
                    "cannot decode {n} resident tokens at position {pos} of a {}-position context",
                    self.ctx
                ),
            });
        }
        for p in pos..pos + n {
            crate::kernels::rope::check_step(&self.cfg.rope_scaling, p, 1)
                .map_err(ExecError::Position)?;
        }
        self.counters.steps += n as u64;
        let key = TableKey {
            m: 1,
            rb: ReadoutKind::Argmax,
            per_mb: false,
            rows: 0,
        };
        let tails = vec![self.tail(&key, 0)];
        let t = schedule::build_groups(
            &self.codes,
            &self.program.groups,
            &self.link_codes,
            &tails,
            &self.program.pipeline(1),
            &self.header,
        );
        let last = HDR + (t.n_tasks - 1) * REC;
        if t.words[last] != Op::Argmax as u32 {
            return Err(ExecError::ModeCannot {
                mode: "sram",
                what: "resident decoding needs the table to end with the arg-max".into(),
            });
        }
        let ops: Vec<u32> = (0..t.n_tasks).map(|i| t.words[HDR + i * REC]).collect();
        let (lists, keeps, mut stats) = assign(&ops, capacity);
        stats.tokens = n;
        let mut words = t.words.clone();
        words[hdr::RES_TOKENS] = n as u32;
        words[hdr::RES_TAIL] = t.words[last + 2];
        let dir = words.len();
        words[hdr::RES_LISTS] = dir as u32;
        words.resize(dir + 3 * lists.len(), 0);
        for (w, l) in lists.iter().enumerate() {
            let off = words.len() as u32;
            words[dir + 3 * w] = off;
            words[dir + 3 * w + 1] = l.len() as u32;
            words[dir + 3 * w + 2] = u32::from(keeps[w]);
            words.extend(l);
        }

        if t.n_counters > self.counters_len {
            let c = t.n_counters.next_power_of_two();
            self.counters_buf = self
                .gpu
                .storage_buffer("sram.counters", (c * 4 * sram_step::COUNTER_WORDS) as u64)?;
            self.counters_len = c;
            self.tables.clear();
        }
        if self.results_len < 2 * n {
            let len = (2 * n).next_power_of_two();
            self.results = self.gpu.storage_buffer("sram.results", (len * 4) as u64)?;
            self.results_len = len;
            self.tables.clear();
        }
        let mut v = self.resident_variant.clone().define("RESIDENT");
        v.entry = "resident";
        let pipe = self.gpu.pipeline(crate::gpu::Shader::SramStep, &v)?;
        let table = self
            .gpu
            .upload("sram.resident", bytemuck::cast_slice(&words))?;
        let bind_group = self.bind_table(&table, &pipe, "sram_step resident");
        let mbs = [Mb {
            start: 0,
            len: 1,
            pos0: pos,
            kv_base: seq * self.ctx,
        }];
        let run = self.mb_record(&mbs, 0, crate::exec::Readback::Argmax, false, false);
        let ids_base = self.header[hdr::IDS_BASE] as u64 * 4;
        self.gpu
            .queue
            .write_buffer(&self.run_buf, 0, bytemuck::cast_slice(&run));
        self.gpu
            .queue
            .write_buffer(&self.run_buf, ids_base, bytemuck::bytes_of(&token));

        // Links: what one token's table carries, n times.
        let last_stage = self.program.stages.len() - 1;
        for active in &self.program.pipeline(1) {
            for &(k, _) in active {
                if k == last_stage {
                    continue;
                }
                for l in &self.link_counts[k] {
                    let rows = if l.out_rows { run[3] } else { run[0] } as usize;
                    if rows > 0 && l.values > 0 {
                        self.stats.link_bytes_counted += (4 * l.values * rows * n) as u64;
                        self.stats.link_copies_counted += n as u64;
                    }
                }
            }
        }

        let read_len = (8 * n) as u64;
        if read_len + 4 > self.readback_size {
            self.readback = self.gpu.readback_buffer("readback", read_len + 4);
            self.readback_size = read_len + 4;
        }
        let mut e = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sram resident"),
            });
        e.clear_buffer(
            &self.counters_buf,
            0,
            Some((t.n_counters * 4 * sram_step::COUNTER_WORDS) as u64),
        );
        {
            let mut pass = e.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sram_step resident"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(lists.len() as u32, 1, 1);
        }
        self.counters.count(KernelClass::SramStep);
        // One dispatch for the whole run of tokens.
        self.counters.dispatches_last_decode = 1;
        self.stats.dispatches_last = 1;
        self.stats.tasks_last = t.n_tasks * n;
        e.copy_buffer_to_buffer(&self.results, 0, &self.readback, 0, read_len);
        e.copy_buffer_to_buffer(&self.counters_buf, 0, &self.readback, read_len, 4);
        self.gpu.queue.submit([e.finish()]);
        self.counters.submissions += 1;
        let bytes = self.gpu.read(&self.readback, read_len + 4)?;
        self.counters.readback_bytes += read_len;
        let w: &[u32] = bytemuck::cast_slice(&bytes);
        if w[2 * n] != 0 {
            return Err(ExecError::Stalled {
                polls: sram_step::SPIN_LIMIT,
            });
        }
        let tokens: Vec<u32> = (0..n).map(|i| w[2 * i]).collect();
        if let Some(i) = tokens.iter().position(|&x| x == u32::MAX) {
            return Err(ExecError::ModeCannot {
                mode: "sram",
                what: format!("resident decoding saw a non-finite logit at token {i}"),
            });
        }
        self.pos[seq] += n;
        Ok((tokens, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_go_resident_in_table_order_and_every_task_is_owned_once() {
        let m = Op::Mat as u32;
        let nrm = Op::Norm as u32;
        let e = Op::Embed as u32;
        let a = Op::Argmax as u32;
        let ops = [e, nrm, m, m, Op::Silu as u32, m, a];
        for cap in 2..10 {
            let (lists, keeps, s) = assign(&ops, cap);
            let mut all: Vec<u32> = lists.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..ops.len() as u32).collect::<Vec<_>>());
            for l in &lists {
                assert!(l.windows(2).all(|w| w[0] < w[1]), "table order");
            }
            let res = (cap - 1).min(4);
            assert_eq!(s.resident_slices, res);
            assert_eq!(s.weight_slices, 4);
            assert_eq!(keeps.iter().filter(|&&k| k).count(), res);
            // Resident workgroups own exactly one weight slice each.
            for (w, l) in lists.iter().enumerate().take(res) {
                assert!(keeps[w] && l.len() == 1);
                assert!(ops[l[0] as usize] == m || ops[l[0] as usize] == nrm);
            }
            assert!(s.workgroups <= cap.max(2));
        }
        let (_, _, s) = assign(&ops, 2);
        assert_eq!((s.workgroups, s.resident_slices), (2, 1));
        assert!((s.resident_fraction - 0.25).abs() < 1e-12);
    }

    /// The resident entry adds no workgroup memory: its footprint is the
    /// stepped interpreter's, which check_sram_kernels holds to the slice.
    #[test]
    fn the_resident_kernel_compiles_and_fits_the_slice() {
        use crate::gpu::shader::{validate, workgroup_bytes};
        use crate::gpu::Shader;
        use crate::model::DType;
        for (slice, hd) in [(16384, 64), (65536, 8), (16384, 18)] {
            let d = sram_step::Dims::fit(slice, hd, &[576, 1536]);
            let v = sram_step::variant(slice, d, &DType::ALL).unwrap();
            let mut r = v.clone().define("RESIDENT");
            r.entry = "resident";
            for c in [false, true] {
                let r = if c {
                    r.clone().define("COHERENT").define("SG")
                } else {
                    r.clone()
                };
                let src = Shader::SramStep.source(&r);
                assert!(src.contains("fn resident("));
                validate(&src).unwrap();
                let bytes = workgroup_bytes(&src, &r).unwrap();
                let stepped = workgroup_bytes(&Shader::SramStep.source(&v), &v).unwrap();
                assert_eq!(bytes, stepped);
                assert!(bytes as usize <= slice, "{bytes} > {slice}");
            }
        }
    }
}
