//! Greedy token choice on the GPU (`shaders/argmax.wgsl`): 8 bytes come back.

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub vocab: u32,
    pub _pad: [u32; 3],
}

/// The id the arg-max and top-k kernels return (with a NaN value) when any
/// logit of the row is NaN or infinite: the model's numbers broke down, and
/// no token may be chosen from them.
pub const NON_FINITE: u32 = u32::MAX;

/// Whether a step's read-back shows non-finite logits (the kernels' flag, or
/// a NaN/Inf in the last row of full logits).
pub fn is_non_finite(out: &crate::exec::StepOutput) -> bool {
    use crate::exec::StepOutput;
    match out {
        StepOutput::Token { id, .. } => *id == NON_FINITE,
        StepOutput::Candidates(c) => c.first().is_some_and(|p| p.0 == NON_FINITE),
        StepOutput::Logits { rows, data } => {
            let vocab = data.len() / (*rows).max(1);
            data[data.len() - vocab..].iter().any(|v| !v.is_finite())
        }
    }
}

/// Arg-max of the last logit row (`Step::n_out_rows - 1`); writes `[id, bits]` to `out`
/// (batched decode steps, [`Step::decode_rows`]: every row's pair, in row order).
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    vocab: usize,
    logits: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let params = gpu.uniform(
        "argmax.params",
        &Params {
            vocab: vocab as u32,
            _pad: [0; 3],
        },
    );
    let pipe = gpu.pipeline(Shader::Argmax, &ShaderVariant::new("main"))?;
    Ok(KernelOp::new(
        gpu,
        "argmax",
        KernelClass::Sample,
        pipe,
        &[&params, step, logits, out],
        |s: &Step| [if s.per_row() { s.n_out_rows } else { 1 }, 1, 1],
    ))
}

/// CPU reference: first index of the maximum (NaN ranks lowest).
pub fn cpu(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() && !x.is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn argmax_first_on_ties() {
        let Some(gpu) = gpu() else { return };
        let vocab = 1003;
        let mut rows = seeded(2 * vocab, 9);
        rows[vocab + 700] = 5.0;
        rows[vocab + 901] = 5.0; // tie: the lower index wins
        rows[5] = f32::NAN; // in a row that is not looked at
        let lb = gpu.upload("l", bytemuck::cast_slice(&rows)).unwrap();
        let ob = gpu.storage_buffer("o", 8).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(&gpu, &step_buf, vocab, &lb, &ob).unwrap();
        run(
            &gpu,
            &step_buf,
            Step {
                n_tokens: 2,
                pos0: 0,
                out_row0: 0,
                n_out_rows: 2,
                kv_base: 0,
                _pad: [0; 3],
            },
            &[&op],
        );
        let out: Vec<u32> = bytemuck::cast_slice(&gpu.read_storage(&ob, 8).unwrap()).to_vec();
        assert_eq!(out[0] as usize, 700);
        assert_eq!(cpu(&rows[vocab..]), 700);
        assert_eq!(f32::from_bits(out[1]), 5.0);
    }

    #[test]
    fn argmax_flags_non_finite_logits() {
        let Some(gpu) = gpu() else { return };
        let vocab = 1003;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut row = seeded(vocab, 3);
            row[777] = bad;
            let lb = gpu.upload("l", bytemuck::cast_slice(&row)).unwrap();
            let ob = gpu.storage_buffer("o", 8).unwrap();
            let step_buf = gpu.uniform("step", &Step::default());
            let op = build(&gpu, &step_buf, vocab, &lb, &ob).unwrap();
            run(&gpu, &step_buf, Step::tokens(1, 0), &[&op]);
            let out: Vec<u32> = bytemuck::cast_slice(&gpu.read_storage(&ob, 8).unwrap()).to_vec();
            assert_eq!(out[0], NON_FINITE, "{bad}");
            assert!(f32::from_bits(out[1]).is_nan());
        }
    }
}
