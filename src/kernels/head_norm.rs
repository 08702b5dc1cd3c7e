//! Per-head RMSNorm in place (`shaders/head_norm.wgsl`): Qwen3's `q_norm` /
//! `k_norm`, applied to the q and k projections before RoPE.

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub head_dim: u32,
    pub n_heads: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// `x` holds `step.n_tokens` rows of `n_heads * head_dim` values; each head
/// is normalised in place with the `head_dim` f32 weights `w`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    n_heads: usize,
    head_dim: usize,
    eps: f32,
    w: &wgpu::Buffer,
    x: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let params = gpu.uniform(
        "head_norm.params",
        &Params {
            head_dim: head_dim as u32,
            n_heads: n_heads as u32,
            eps,
            _pad: 0,
        },
    );
    let pipe = gpu.pipeline(Shader::HeadNorm, &ShaderVariant::new("main"))?;
    let h = n_heads as u32;
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Norm,
        pipe,
        &[&params, step, w, x],
        move |s: &Step| [h, s.n_tokens, 1],
    ))
}

/// CPU reference: every `head_dim` chunk of `x` RMS-normed with `w` (f64 sums).
pub fn cpu(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    super::rmsnorm::cpu(x, w, eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn head_norm_matches_cpu() {
        let Some(gpu) = gpu() else { return };
        // head_dim 70 > 64 threads: some threads own two elements.
        let (t, heads, hd) = (3, 5, 70);
        let x: Vec<f32> = seeded(t * heads * hd, 1)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i / hd) as f32 * 0.3))
            .collect();
        let w = seeded(hd, 2);
        let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
        let wb = gpu.upload("w", bytemuck::cast_slice(&w)).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(&gpu, &step_buf, "head_norm", heads, hd, 1e-6, &wb, &xb).unwrap();
        // Two rows of three: the third must stay as it was.
        run(&gpu, &step_buf, Step::tokens(2, 0), &[&op]);
        let n = 2 * heads * hd;
        let mut want = cpu(&x[..n], &w, 1e-6);
        want.extend_from_slice(&x[n..]);
        assert_close(&read_f32(&gpu, &xb, x.len()), &want, 1e-6, "head_norm");
    }
}
