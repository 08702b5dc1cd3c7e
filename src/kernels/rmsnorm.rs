//! RMSNorm (`shaders/rmsnorm.wgsl`).

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub dim: u32,
    pub eps: f32,
    pub _pad: [u32; 2],
}

/// `Y[t] = X[t] * rsqrt(mean(X[t]^2) + eps) * w` for each of the step's rows.
#[allow(clippy::too_many_arguments)]
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    dim: usize,
    eps: f32,
    w: &wgpu::Buffer,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    build_variant(
        gpu,
        step,
        name,
        dim,
        eps,
        w,
        x,
        y,
        &ShaderVariant::new("main"),
    )
}

/// `Y[t] += X[t] * rsqrt(mean(X[t]^2) + eps) * w`: a post-norm (Gemma's
/// `post_attention_layernorm` / `post_feedforward_layernorm`) added into
/// the residual stream `y`.
#[allow(clippy::too_many_arguments)]
pub fn build_accumulate(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    dim: usize,
    eps: f32,
    w: &wgpu::Buffer,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let v = ShaderVariant::new("main").define("ACCUMULATE");
    build_variant(gpu, step, name, dim, eps, w, x, y, &v)
}

#[allow(clippy::too_many_arguments)]
fn build_variant(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    dim: usize,
    eps: f32,
    w: &wgpu::Buffer,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    variant: &ShaderVariant,
) -> Result<KernelOp, GpuError> {
    let pipe = gpu.pipeline(Shader::Rmsnorm, variant)?;
    let params = gpu.uniform(
        "rmsnorm.params",
        &Params {
            dim: dim as u32,
            eps,
            _pad: [0; 2],
        },
    );
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Norm,
        pipe,
        &[&params, step, w, x, y],
        |s: &Step| [s.n_tokens, 1, 1],
    ))
}

/// CPU reference (f64 accumulation).
pub fn cpu(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let dim = w.len();
    x.chunks(dim)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / dim as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            row.iter()
                .zip(w)
                .map(move |(&v, &g)| (g as f64 * (v as f64 * inv)) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn rmsnorm_matches_cpu() {
        let Some(gpu) = gpu() else { return };
        let (rows, dim) = (5, 141);
        let x: Vec<f32> = seeded(rows * dim, 1)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + i as f32 * 0.01))
            .collect();
        let w = seeded(dim, 2);
        let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
        let wb = gpu.upload("w", bytemuck::cast_slice(&w)).unwrap();
        let yb = gpu.storage_buffer("y", (x.len() * 4) as u64).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(&gpu, &step_buf, "norm", dim, 1e-5, &wb, &xb, &yb).unwrap();
        run(&gpu, &step_buf, Step::tokens(rows as u32, 0), &[&op]);
        assert_close(
            &read_f32(&gpu, &yb, x.len()),
            &cpu(&x, &w, 1e-5),
            1e-6,
            "rmsnorm",
        );
        // Accumulating into y (post-norm): y + norm(x).
        let y0 = seeded(x.len(), 3);
        let yb = gpu.upload("y", bytemuck::cast_slice(&y0)).unwrap();
        let op = build_accumulate(&gpu, &step_buf, "post", dim, 1e-5, &wb, &xb, &yb).unwrap();
        run(&gpu, &step_buf, Step::tokens(rows as u32 - 1, 0), &[&op]);
        let mut want: Vec<f32> = y0
            .iter()
            .zip(cpu(&x, &w, 1e-5))
            .map(|(a, b)| a + b)
            .collect();
        // The row past the step's tokens is left alone.
        want[(rows - 1) * dim..].copy_from_slice(&y0[(rows - 1) * dim..]);
        assert_close(
            &read_f32(&gpu, &yb, x.len()),
            &want,
            1e-6,
            "rmsnorm accumulate",
        );
    }
}
