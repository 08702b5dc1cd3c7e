//! Chip-to-chip link transfer (`shaders/link_copy.wgsl`): copies `cols`
//! columns of each of the step's rows between an activation buffer and a
//! link buffer. The SRAM executor counts every byte moved.

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub cols: u32,
    pub src_stride: u32,
    pub dst_stride: u32,
    pub src_off: u32,
    pub dst_off: u32,
    pub out_rows: u32,
    pub _pad: [u32; 2],
}

/// Which rows of the step move: its tokens, or its logit rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    Tokens,
    OutRows,
}

#[allow(clippy::too_many_arguments)]
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    cols: usize,
    rows: Rows,
    (src, src_stride, src_off): (&wgpu::Buffer, usize, usize),
    (dst, dst_stride, dst_off): (&wgpu::Buffer, usize, usize),
) -> Result<KernelOp, GpuError> {
    let p = Params {
        cols: cols as u32,
        src_stride: src_stride as u32,
        dst_stride: dst_stride as u32,
        src_off: src_off as u32,
        dst_off: dst_off as u32,
        out_rows: (rows == Rows::OutRows) as u32,
        _pad: [0; 2],
    };
    let params = gpu.uniform("link_copy.params", &p);
    let pipe = gpu.pipeline(Shader::LinkCopy, &ShaderVariant::new("main"))?;
    let gx = (cols as u32).div_ceil(64);
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Link,
        pipe,
        &[&params, step, src, dst],
        move |s: &Step| {
            let n = if rows == Rows::OutRows {
                s.n_out_rows
            } else {
                s.n_tokens
            };
            if n == 0 {
                [0, 0, 0]
            } else {
                [gx, n, 1]
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn link_copy_packs_columns() {
        let Some(gpu) = gpu() else { return };
        let (t, width, cols) = (3, 10, 7);
        let src = seeded(t * width, 1);
        let sb = gpu.upload("s", bytemuck::cast_slice(&src)).unwrap();
        let db = gpu.storage_buffer("d", 4 * 64).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let op = build(
            &gpu,
            &step_buf,
            "l",
            cols,
            Rows::Tokens,
            (&sb, width, 0),
            (&db, 20, 5),
        )
        .unwrap();
        run(
            &gpu,
            &step_buf,
            Step {
                n_tokens: t as u32,
                ..Default::default()
            },
            &[&op],
        );
        let got = read_f32(&gpu, &db, 64);
        for r in 0..t {
            for c in 0..cols {
                assert_eq!(got[5 + r * 20 + c], src[r * width + c]);
            }
        }
    }
}
