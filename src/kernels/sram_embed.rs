//! SRAM mode's embedding gather on the chip holding rows `[row0, row1)` of
//! the table (`shaders/sram_embed.wgsl`): tokens whose id is there get their
//! row; the first chip of the gather zeroes the others, later chips keep them.

use super::{GpuWeight, KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub dim: u32,
    pub row_bytes: u32,
    pub row0: u32,
    pub row1: u32,
    pub first: u32,
    pub _pad: [u32; 3],
}

/// `X[t, :] = E[ids[t], :]` for the tokens whose id is in `rows`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    table: &GpuWeight,
    rows: (usize, usize),
    first: bool,
    ids: &wgpu::Buffer,
    x: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let p = Params {
        dim: table.cols as u32,
        row_bytes: table.row_bytes(),
        row0: rows.0 as u32,
        row1: rows.1 as u32,
        first: first as u32,
        _pad: [0; 3],
    };
    let pipe = gpu.pipeline(
        Shader::SramEmbed,
        &super::embed::variant(table.dtype, table.cols),
    )?;
    let params = gpu.uniform("sram_embed.params", &p);
    let x_groups = (table.cols as u32).div_ceil(4).div_ceil(64);
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Embed,
        pipe,
        &[&params, step, &table.buf, ids, x],
        move |s: &Step| [x_groups, s.n_tokens, 1],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{weights::Bytes, DType, Tensor};
    use crate::testing::*;
    use std::sync::Arc;

    #[test]
    fn gather_split_across_two_chips_matches_cpu() {
        let Some(gpu) = gpu() else { return };
        let (vocab, dim) = (37, 66);
        let vals = seeded(vocab * dim, 3);
        let t = Tensor {
            dtype: DType::F32,
            shape: vec![vocab, dim],
            bytes: Bytes::Owned(Arc::new(bytemuck::cast_slice(&vals).to_vec())),
        };
        let w = GpuWeight::upload(&gpu, "t", &t).unwrap();
        let ids = [3u32, 30, 36, 0, 20];
        let ids_buf = gpu.upload("ids", bytemuck::cast_slice(&ids)).unwrap();
        let x = gpu.upload("x", &vec![0xffu8; ids.len() * dim * 4]).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let a = build(&gpu, &step_buf, "a", &w, (0, 20), true, &ids_buf, &x).unwrap();
        let step = Step::tokens(ids.len() as u32, 0);
        // The first chip alone: its rows, zeros elsewhere.
        run(&gpu, &step_buf, step, &[&a]);
        let got = read_f32(&gpu, &x, ids.len() * dim);
        for (i, &id) in ids.iter().enumerate() {
            let want: Vec<f32> = if id < 20 {
                vals[id as usize * dim..(id as usize + 1) * dim].to_vec()
            } else {
                vec![0.0; dim]
            };
            assert_eq!(&got[i * dim..(i + 1) * dim], &want[..], "token {i}");
        }
        // The second chip fills in the rest, keeping the first chip's rows.
        let b = build(&gpu, &step_buf, "b", &w, (20, 37), false, &ids_buf, &x).unwrap();
        run(&gpu, &step_buf, step, &[&b]);
        let got = read_f32(&gpu, &x, ids.len() * dim);
        assert_eq!(got, crate::kernels::embed::cpu(&vals, dim, &ids));
    }
}
