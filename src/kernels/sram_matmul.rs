//! SRAM-mode matmul (`shaders/sram_matmul.wgsl`): one workgroup per SRAM slice;
//! the slice's weight rows are staged into `var<workgroup>` once per step and
//! the compute loop reads weights only from there.

use super::{weight_define, GpuWeight, KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};
use crate::model::DType;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub k: u32,
    pub row_bytes: u32,
    pub out_rows_only: u32,
    pub row_begin: u32,
    pub row_end: u32,
    pub rows_per_tile: u32,
    pub _pad: u32,
}

/// The one place the slice budget becomes a WGSL array size.
pub fn variant(dtype: DType, slice_bytes: usize, accumulate: bool) -> ShaderVariant {
    variant_k(dtype, slice_bytes, accumulate, 32)
}

/// [`variant`] for rows of `k` weights (`KTAIL` when `k` is not a multiple
/// of 4: float weights only, GGML blocks are whole).
pub fn variant_k(dtype: DType, slice_bytes: usize, accumulate: bool, k: usize) -> ShaderVariant {
    let mut v = ShaderVariant::new("main")
        .define(weight_define(dtype))
        .define(format!("SLICE_WORDS={}", slice_bytes / 4));
    if accumulate {
        v = v.define("ACCUMULATE");
    }
    if !k.is_multiple_of(4) {
        assert!(
            dtype.block_len() == 1,
            "{dtype} rows of {k} weights are not whole blocks"
        );
        v = v.define("KTAIL");
    }
    v
}

/// Whole rows of `row_bytes` that fit one slice (a tile that starts inside a
/// word, as Q8_0/Q4_0 rows can, needs one spare word).
pub fn rows_per_tile(row_bytes: usize, slice_bytes: usize) -> usize {
    let spare = if !row_bytes.is_multiple_of(4) { 4 } else { 0 };
    slice_bytes.saturating_sub(spare) / row_bytes.max(1)
}

pub struct Spec<'a> {
    pub name: &'a str,
    pub w: &'a GpuWeight,
    pub row_begin: usize,
    pub row_end: usize,
    pub slice_bytes: usize,
    pub accumulate: bool,
    pub out_rows_only: bool,
}

/// One dispatch covering the rows `[row_begin, row_end)` a chip holds: one
/// workgroup (slice) per tile.
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    s: &Spec,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let row_bytes = s.w.row_bytes() as usize;
    let rpt = rows_per_tile(row_bytes, s.slice_bytes);
    if rpt == 0 {
        return Err(GpuError::WorkgroupMemory {
            kernel: format!("{} (one row of {row_bytes} bytes)", s.name),
            needed: row_bytes as u64 + 4,
            limit: s.slice_bytes as u32,
        });
    }
    let p = Params {
        n: s.w.rows as u32,
        k: s.w.cols as u32,
        row_bytes: row_bytes as u32,
        out_rows_only: s.out_rows_only as u32,
        row_begin: s.row_begin as u32,
        row_end: s.row_end as u32,
        rows_per_tile: rpt as u32,
        _pad: 0,
    };
    let params = gpu.uniform("sram_matmul.params", &p);
    let pipe = gpu.pipeline(
        Shader::SramMatmul,
        &variant_k(s.w.dtype, s.slice_bytes, s.accumulate, s.w.cols),
    )?;
    let tiles = (s.row_end - s.row_begin).div_ceil(rpt) as u32;
    let out_rows_only = s.out_rows_only;
    Ok(KernelOp::new(
        gpu,
        s.name,
        if out_rows_only {
            KernelClass::Logits
        } else {
            KernelClass::Matmul
        },
        pipe,
        &[&params, step, &s.w.buf, x, y],
        move |st: &Step| {
            let n = if out_rows_only {
                st.n_out_rows
            } else {
                st.n_tokens
            };
            if n == 0 {
                [0, 0, 0]
            } else {
                [tiles, 1, 1]
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul;
    use crate::model::weights::{dequantize, Bytes};
    use crate::model::Tensor;
    use crate::testing::*;
    use std::sync::Arc;

    fn check(
        dtype: DType,
        n: usize,
        k: usize,
        t: usize,
        rows: (usize, usize),
        slice: usize,
        acc: bool,
    ) {
        let Some(gpu) = gpu() else { return };
        let vals = seeded(n * k, 21);
        let bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(&vals).to_vec(),
            DType::F16 => vals
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            DType::BF16 => vals
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            DType::Q8_0 => (0..n * k / 32)
                .flat_map(|b| {
                    let mut blk = half::f16::from_f32(0.02 + b as f32 * 1e-3)
                        .to_le_bytes()
                        .to_vec();
                    blk.extend((0..32).map(|j| ((vals[b * 32 + j] * 120.0) as i8) as u8));
                    blk
                })
                .collect(),
            _ => unreachable!(),
        };
        let wf = dequantize(dtype, &bytes, n * k);
        let tensor = Tensor {
            dtype,
            shape: vec![n, k],
            bytes: Bytes::Owned(Arc::new(bytes)),
        };
        let w = GpuWeight::upload(&gpu, "w", &tensor).unwrap();
        let x: Vec<f32> = seeded(t * k, 3)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1 + i / k) as f32)
            .collect();
        let y0 = seeded(t * n, 4);
        let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
        let yb = gpu.upload("y", bytemuck::cast_slice(&y0)).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let spec = Spec {
            name: "t",
            w: &w,
            row_begin: rows.0,
            row_end: rows.1,
            slice_bytes: slice,
            accumulate: acc,
            out_rows_only: false,
        };
        let op = build(&gpu, &step_buf, &spec, &xb, &yb).unwrap();
        run(&gpu, &step_buf, Step::tokens(t as u32, 0), &[&op]);
        let full = matmul::cpu(&x, &wf, n, k);
        let mut want = y0.clone();
        for tt in 0..t {
            for r in rows.0..rows.1 {
                let o = tt * n + r;
                want[o] = if acc { y0[o] + full[o] } else { full[o] };
            }
        }
        assert_close(
            &read_f32(&gpu, &yb, t * n),
            &want,
            2e-5,
            &format!("sram_matmul {dtype}"),
        );
    }

    #[test]
    fn sram_matmul_row_block_f32() {
        // 37 rows of 172 floats (688 B) in 4 KiB slices: 5 rows per slice.
        check(DType::F32, 37, 172, 3, (4, 31), 4096, false);
        check(DType::F32, 37, 172, 1, (0, 37), 4096, true);
    }

    /// Widths that are not a multiple of 4; F16/BF16 rows of odd width
    /// start mid-word, and so do tiles.
    #[test]
    fn sram_matmul_odd_widths() {
        check(DType::F32, 37, 171, 3, (4, 31), 4096, false);
        check(DType::F16, 29, 173, 2, (0, 29), 1024, true);
        check(DType::BF16, 23, 65, 1, (5, 23), 1024, false);
        check(DType::F16, 9, 3, 4, (0, 9), 1024, false);
    }

    #[test]
    fn sram_matmul_unaligned_q8_0_rows() {
        // Q8_0 rows of 96 values = 102 bytes: tiles start inside a word.
        check(DType::Q8_0, 29, 96, 2, (3, 29), 1024, false);
    }

    #[test]
    fn rows_per_tile_reserves_a_word_for_unaligned_rows() {
        assert_eq!(rows_per_tile(256, 16384), 64);
        assert_eq!(rows_per_tile(102, 1024), 10);
        assert_eq!(rows_per_tile(20000, 16384), 0);
    }
}
