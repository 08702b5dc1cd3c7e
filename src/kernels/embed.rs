//! Token embedding gather (`shaders/embed.wgsl`).

use super::{weight_define, GpuWeight, KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub dim: u32,
    pub row_bytes: u32,
    pub vocab: u32,
    /// Multiplies every value (Gemma: sqrt(hidden)); 1 otherwise.
    pub scale: f32,
}

/// The embed variant for a table of `dtype` with rows of `dim` values
/// (`KTAIL` when `dim` is not a multiple of 4: float tables only).
pub fn variant(dtype: crate::model::DType, dim: usize) -> ShaderVariant {
    let v = ShaderVariant::new("main").define(weight_define(dtype));
    if dim.is_multiple_of(4) {
        v
    } else {
        assert!(
            dtype.block_len() == 1,
            "{dtype} rows of {dim} values are not whole blocks"
        );
        v.define("KTAIL")
    }
}

/// `X[t, :] = E[ids[t], :]` for the step's tokens.
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    table: &GpuWeight,
    ids: &wgpu::Buffer,
    x: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    build_scaled(gpu, step, table, ids, x, 1.0)
}

/// `X[t, :] = E[ids[t], :] * scale` (an f32 product, as transformers'
/// `Gemma3TextScaledWordEmbedding` and llama.cpp's `ggml_scale`).
pub fn build_scaled(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    table: &GpuWeight,
    ids: &wgpu::Buffer,
    x: &wgpu::Buffer,
    scale: f32,
) -> Result<KernelOp, GpuError> {
    let p = Params {
        dim: table.cols as u32,
        row_bytes: table.row_bytes(),
        vocab: table.rows as u32,
        scale,
    };
    let pipe = gpu.pipeline(Shader::Embed, &variant(table.dtype, table.cols))?;
    let params = gpu.uniform("embed.params", &p);
    let x_groups = (table.cols as u32).div_ceil(4).div_ceil(64);
    Ok(KernelOp::new(
        gpu,
        "embed",
        KernelClass::Embed,
        pipe,
        &[&params, step, &table.buf, ids, x],
        move |s: &Step| [x_groups, s.n_tokens, 1],
    ))
}

/// CPU reference.
pub fn cpu(table: &[f32], dim: usize, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| {
            table[id as usize * dim..(id as usize + 1) * dim]
                .iter()
                .copied()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{weights::Bytes, DType, Tensor};
    use crate::testing::*;
    use std::sync::Arc;

    #[test]
    fn embed_matches_cpu() {
        for dim in [20, 65, 66, 67, 3] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                check(dtype, dim);
            }
        }
    }

    fn check(dtype: DType, dim: usize) {
        let Some(gpu) = gpu() else { return };
        let vocab = 37;
        let vals = seeded(vocab * dim, 7);
        let bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(&vals).to_vec(),
            DType::F16 => vals
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            _ => vals
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        };
        let table = crate::model::weights::dequantize(dtype, &bytes, vocab * dim);
        let t = Tensor {
            dtype,
            shape: vec![vocab, dim],
            bytes: Bytes::Owned(Arc::new(bytes)),
        };
        let w = GpuWeight::upload(&gpu, "t", &t).unwrap();
        let ids = [3u32, 0, 36, 3, 11];
        let ids_buf = gpu.upload("ids", bytemuck::cast_slice(&ids)).unwrap();
        let x = gpu
            .storage_buffer("x", (ids.len() * dim * 4) as u64)
            .unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let step = Step::tokens(ids.len() as u32, 0);
        for scale in [1.0f32, 8.0, 50.596443] {
            let op = build_scaled(&gpu, &step_buf, &w, &ids_buf, &x, scale).unwrap();
            run(&gpu, &step_buf, step, &[&op]);
            let want: Vec<f32> = cpu(&table, dim, &ids).iter().map(|v| v * scale).collect();
            assert_close(
                &read_f32(&gpu, &x, ids.len() * dim),
                &want,
                0.0,
                &format!("embed {dtype} dim {dim} scale {scale}"),
            );
        }
    }
}
