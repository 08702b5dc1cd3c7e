//! Top-K candidates on the GPU for sampling (`shaders/topk.wgsl`).

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

/// Most candidates the GPU reduction returns (`--top-k` above this reads the
/// whole logit row back instead).
pub const MAX_K: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub vocab: u32,
    pub k: u32,
    pub _pad: [u32; 2],
}

/// Writes the `k` best `[id, bits]` pairs of the last logit row to `out`.
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    vocab: usize,
    k: usize,
    logits: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let k = k.clamp(1, MAX_K.min(vocab));
    let params = gpu.uniform(
        "topk.params",
        &Params {
            vocab: vocab as u32,
            k: k as u32,
            _pad: [0; 2],
        },
    );
    let pipe = gpu.pipeline(Shader::Topk, &ShaderVariant::new("main"))?;
    Ok(KernelOp::new(
        gpu,
        "topk",
        KernelClass::Sample,
        pipe,
        &[&params, step, logits, out],
        |_: &Step| [1, 1, 1],
    ))
}

/// CPU reference: ids of the k largest values, best first, ties by lower id.
pub fn cpu(v: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    idx.sort_by(|&a, &b| v[b as usize].total_cmp(&v[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn topk_matches_sort() {
        let Some(gpu) = gpu() else { return };
        let vocab = 777;
        let mut v = seeded(vocab, 4);
        v[10] = v[20]; // a tie
        let lb = gpu.upload("l", bytemuck::cast_slice(&v)).unwrap();
        let k = 40;
        let ob = gpu.storage_buffer("o", (k * 8) as u64).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(&gpu, &step_buf, vocab, k, &lb, &ob).unwrap();
        run(&gpu, &step_buf, Step::tokens(1, 0), &[&op]);
        let out: Vec<u32> =
            bytemuck::cast_slice(&gpu.read_storage(&ob, (k * 8) as u64).unwrap()).to_vec();
        let ids: Vec<u32> = out.chunks(2).map(|p| p[0]).collect();
        assert_eq!(ids, cpu(&v, k));
        for p in out.chunks(2) {
            assert_eq!(f32::from_bits(p[1]), v[p[0] as usize]);
        }
    }

    #[test]
    fn topk_flags_non_finite_logits() {
        let Some(gpu) = gpu() else { return };
        let vocab = 777;
        let mut v = seeded(vocab, 5);
        v[300] = f32::NAN;
        let lb = gpu.upload("l", bytemuck::cast_slice(&v)).unwrap();
        let k = 8;
        let ob = gpu.storage_buffer("o", (k * 8) as u64).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(&gpu, &step_buf, vocab, k, &lb, &ob).unwrap();
        run(&gpu, &step_buf, Step::tokens(1, 0), &[&op]);
        let out: Vec<u32> =
            bytemuck::cast_slice(&gpu.read_storage(&ob, (k * 8) as u64).unwrap()).to_vec();
        assert_eq!(out[0], super::super::argmax::NON_FINITE);
        assert!(f32::from_bits(out[1]).is_nan());
    }
}
