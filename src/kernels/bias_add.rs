//! Projection bias `y[t, i] += b[i]` (`shaders/bias_add.wgsl`), dispatched
//! after a product whose weight has a bias (attention/MLP biases of Llama,
//! Qwen2's q/k/v biases).

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub dim: u32,
    pub _pad: [u32; 3],
}

/// `y` holds `step.n_tokens` rows of `dim` values; `b` is `dim` f32 values.
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    dim: usize,
    b: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let params = gpu.uniform(
        "bias_add.params",
        &Params {
            dim: dim as u32,
            _pad: [0; 3],
        },
    );
    let pipe = gpu.pipeline(Shader::BiasAdd, &ShaderVariant::new("main"))?;
    let gx = (dim as u32).div_ceil(64);
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Elementwise,
        pipe,
        &[&params, step, b, y],
        move |s: &Step| [gx, s.n_tokens, 1],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn bias_add_matches_cpu() {
        let Some(gpu) = gpu() else { return };
        let (t, dim) = (3, 173);
        let y0 = seeded(t * dim, 1);
        let b = seeded(dim, 2);
        let yb = gpu.upload("y", bytemuck::cast_slice(&y0)).unwrap();
        let bb = gpu.upload("b", bytemuck::cast_slice(&b)).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(&gpu, &step_buf, "bias", dim, &bb, &yb).unwrap();
        // Two tokens of three: the third row must stay as it was.
        run(&gpu, &step_buf, Step::tokens(2, 0), &[&op]);
        let want: Vec<f32> = (0..t * dim)
            .map(|o| {
                if o < 2 * dim {
                    y0[o] + b[o % dim]
                } else {
                    y0[o]
                }
            })
            .collect();
        assert_eq!(read_f32(&gpu, &yb, t * dim), want);
    }
}
