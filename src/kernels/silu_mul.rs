//! SwiGLU gate `silu(g) * u` (`shaders/silu_mul.wgsl`).

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};
use crate::model::Activation;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub dim: u32,
    pub _pad: [u32; 3],
}

pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    dim: usize,
    g: &wgpu::Buffer,
    u: &wgpu::Buffer,
    h: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    build_act(gpu, step, name, dim, g, u, h, Activation::Silu)
}

/// `act(g) * u` for the architecture's gate activation.
#[allow(clippy::too_many_arguments)]
pub fn build_act(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    dim: usize,
    g: &wgpu::Buffer,
    u: &wgpu::Buffer,
    h: &wgpu::Buffer,
    act: Activation,
) -> Result<KernelOp, GpuError> {
    let params = gpu.uniform(
        "silu_mul.params",
        &Params {
            dim: dim as u32,
            _pad: [0; 3],
        },
    );
    let v = ShaderVariant::new("main");
    let v = match act {
        Activation::Silu => v,
        Activation::GeluTanh => v.define("GELU_TANH"),
    };
    let pipe = gpu.pipeline(Shader::SiluMul, &v)?;
    let gx = (dim as u32).div_ceil(64);
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Elementwise,
        pipe,
        &[&params, step, g, u, h],
        move |s: &Step| [gx, s.n_tokens, 1],
    ))
}

/// CPU reference of the GELU-tanh gate (f64).
pub fn cpu_gelu_tanh(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(u)
        .map(|(&g, &u)| {
            let x = g as f64;
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            (0.5 * x * (1.0 + inner.tanh()) * u as f64) as f32
        })
        .collect()
}

pub fn cpu(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(u)
        .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn silu_mul_matches_cpu() {
        let Some(gpu) = gpu() else { return };
        let (t, dim) = (3, 173);
        let g: Vec<f32> = seeded(t * dim, 1).iter().map(|v| v * 12.0).collect();
        let u = seeded(t * dim, 2);
        let gb = gpu.upload("g", bytemuck::cast_slice(&g)).unwrap();
        let ub = gpu.upload("u", bytemuck::cast_slice(&u)).unwrap();
        let hb = gpu.storage_buffer("h", (t * dim * 4) as u64).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(&gpu, &step_buf, "silu", dim, &gb, &ub, &hb).unwrap();
        run(&gpu, &step_buf, Step::tokens(t as u32, 0), &[&op]);
        assert_close(
            &read_f32(&gpu, &hb, t * dim),
            &cpu(&g, &u),
            1e-6,
            "silu_mul",
        );
        // GELU-tanh, on arguments out to +-12 (tanh saturated at both ends).
        let op = build_act(
            &gpu,
            &step_buf,
            "gelu",
            dim,
            &gb,
            &ub,
            &hb,
            Activation::GeluTanh,
        )
        .unwrap();
        run(&gpu, &step_buf, Step::tokens(t as u32, 0), &[&op]);
        let got = read_f32(&gpu, &hb, t * dim);
        assert!(got.iter().all(|v| v.is_finite()));
        assert_close(&got, &cpu_gelu_tanh(&g, &u), 1e-6, "gelu_tanh_mul");
    }
}
