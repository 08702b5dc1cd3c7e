//! Token embedding gather (`shaders/embed.wgsl`).

use super::{weight_define, GpuWeight, KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub dim: u32,
    pub row_bytes: u32,
    pub vocab: u32,
    pub _pad: u32,
}

/// `X[t, :] = E[ids[t], :]` for the step's tokens.
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    table: &GpuWeight,
    ids: &wgpu::Buffer,
    x: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let p = Params {
        dim: table.cols as u32,
        row_bytes: table.row_bytes(),
        vocab: table.rows as u32,
        _pad: 0,
    };
    let pipe = gpu.pipeline(
        Shader::Embed,
        &ShaderVariant::new("main").define(weight_define(table.dtype)),
    )?;
    let params = gpu.uniform("embed.params", &p);
    let x_groups = (table.cols as u32 / 4).div_ceil(64);
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
        let Some(gpu) = gpu() else { return };
        let (vocab, dim) = (37, 20);
        let table = seeded(vocab * dim, 7);
        let t = Tensor {
            dtype: DType::F32,
            shape: vec![vocab, dim],
            bytes: Bytes::Owned(Arc::new(bytemuck::cast_slice(&table).to_vec())),
        };
        let w = GpuWeight::upload(&gpu, "t", &t).unwrap();
        let ids = [3u32, 0, 36, 3, 11];
        let ids_buf = gpu.upload("ids", bytemuck::cast_slice(&ids)).unwrap();
        let x = gpu
            .storage_buffer("x", (ids.len() * dim * 4) as u64)
            .unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(&gpu, &step_buf, &w, &ids_buf, &x).unwrap();
        let step = Step::tokens(ids.len() as u32, 0);
        run(&gpu, &step_buf, step, &[&op]);
        assert_close(
            &read_f32(&gpu, &x, ids.len() * dim),
            &cpu(&table, dim, &ids),
            0.0,
            "embed",
        );
    }
}
