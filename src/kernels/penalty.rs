//! Sampling penalties applied to the last logit row on the GPU, in place,
//! before argmax / top-k (`shaders/penalty.wgsl`). The CPU decides which ids
//! are penalised and by how much ([`crate::sampling::Penalties`]) and uploads
//! a short list per step; only ids in the list are touched.

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

/// One penalised id: `l = (l > 0 ? l * mul_pos : l * mul_neg) - offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Entry {
    pub id: u32,
    pub mul_pos: f32,
    pub mul_neg: f32,
    pub offset: f32,
}

impl Entry {
    /// The penalised logit (the kernel's arithmetic, for CPU references).
    pub fn apply(&self, l: f32) -> f32 {
        let l = if l > 0.0 {
            l * self.mul_pos
        } else {
            l * self.mul_neg
        };
        l - self.offset
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    vocab: u32,
    count: u32,
    _pad: [u32; 2],
}

/// The penalty dispatch of one executor: a list buffer that grows as needed.
pub struct PenaltyOp {
    vocab: usize,
    count: usize,
    capacity: usize,
    params: wgpu::Buffer,
    entries: wgpu::Buffer,
    op: KernelOp,
}

impl PenaltyOp {
    pub fn new(
        gpu: &Gpu,
        step: &wgpu::Buffer,
        vocab: usize,
        logits: &wgpu::Buffer,
        capacity: usize,
    ) -> Result<Self, GpuError> {
        let capacity = capacity.max(64);
        let params = gpu.uniform(
            "penalty.params",
            &Params {
                vocab: vocab as u32,
                count: 0,
                _pad: [0; 2],
            },
        );
        let entries = gpu.storage_buffer(
            "penalty.entries",
            (capacity * std::mem::size_of::<Entry>()) as u64,
        )?;
        let pipe = gpu.pipeline(Shader::Penalty, &ShaderVariant::new("main"))?;
        let op = KernelOp::new(
            gpu,
            "penalty",
            KernelClass::Sample,
            pipe,
            &[&params, step, logits, &entries],
            |_: &Step| [1, 1, 1],
        );
        Ok(PenaltyOp {
            vocab,
            count: 0,
            capacity,
            params,
            entries,
            op,
        })
    }

    /// Sets the list the next steps apply (ids must be distinct). Returns
    /// false when it does not fit: build a larger op.
    pub fn set(&mut self, gpu: &Gpu, list: &[Entry]) -> bool {
        if list.len() > self.capacity {
            return false;
        }
        if !list.is_empty() {
            gpu.queue
                .write_buffer(&self.entries, 0, bytemuck::cast_slice(list));
        }
        if list.len() != self.count {
            let p = Params {
                vocab: self.vocab as u32,
                count: list.len() as u32,
                _pad: [0; 2],
            };
            gpu.queue
                .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
        }
        self.count = list.len();
        true
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The dispatch, when the list is not empty.
    pub fn op(&self) -> Option<&KernelOp> {
        (self.count > 0).then_some(&self.op)
    }
}

/// CPU reference: applies `list` to `row`.
pub fn cpu(row: &mut [f32], list: &[Entry]) {
    for e in list {
        if let Some(l) = row.get_mut(e.id as usize) {
            *l = e.apply(*l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn penalty_matches_cpu_on_the_last_row() {
        let Some(gpu) = gpu() else { return };
        let vocab = 1003;
        let rows = seeded(2 * vocab, 5);
        let step_buf = gpu.uniform("step", &Step::default());
        let logits = gpu.upload("logits", bytemuck::cast_slice(&rows)).unwrap();
        let mut p = PenaltyOp::new(&gpu, &step_buf, vocab, &logits, 4).unwrap();
        // Positive and negative logits, repeat penalty and offsets, the last id.
        let list: Vec<Entry> = [3u32, 17, 500, 1002, 77, 901]
            .iter()
            .enumerate()
            .map(|(i, &id)| Entry {
                id,
                mul_pos: 1.0 / 1.3,
                mul_neg: 1.3,
                offset: 0.25 * i as f32,
            })
            .collect();
        assert!(p.capacity() >= list.len());
        assert!(p.set(&gpu, &list));
        let step = Step {
            n_out_rows: 2,
            ..Step::tokens(2, 0)
        };
        run(&gpu, &step_buf, step, &[p.op().unwrap()]);
        let got = read_f32(&gpu, &logits, 2 * vocab);
        let mut want = rows.clone();
        cpu(&mut want[vocab..], &list);
        assert_eq!(got, want, "bit-identical, first row untouched");
        assert!(p.set(&gpu, &[]));
        assert!(p.op().is_none());
    }
}
