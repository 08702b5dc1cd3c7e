//! `Y (+)= X · Wᵀ` with the weight decoded in-kernel (`shaders/matmul.wgsl`).
//!
//! Two token widths of one shader: TT=1 (decode, a matvec) and TT=8 (prefill,
//! each decoded weight reused across 8 tokens). Both are built; each step
//! dispatches exactly one of them (the other's grid is empty). A subgroup path
//! (one subgroup per row) is used where the adapter has subgroups, a
//! thread-per-row path elsewhere.

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
    pub split1: u32,
    pub split2: u32,
    /// RMSNorm epsilon (NORM variants).
    pub eps: f32,
    pub _pad: u32,
}

/// Fused forms of the product (VRAM mode, fewer dispatches per layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fuse {
    None,
    /// Q, K, V stacked in one weight; outputs to three buffers.
    Split3 {
        q_rows: usize,
        k_rows: usize,
    },
    /// Gate and up stacked; output silu(gate) * up.
    Glu,
}

/// Output rows per workgroup on the subgroup path for a subgroup size of 8
/// (lavapipe); [`rows_per_workgroup`] gives the adapter's.
pub const RPW: u32 = 8;

/// Subgroup path: one row per subgroup of the 64-thread workgroup.
pub fn rows_per_workgroup(gpu: &Gpu) -> u32 {
    (64 / gpu.info.subgroup_max_size.max(1)).clamp(1, 64)
}

/// RMSNorm applied inside the decode (TT=1) product: the product reads the
/// raw residual `x` and normalises it itself (`NORM`), so the separate norm
/// dispatch runs only for prefill steps.
#[derive(Clone, Copy)]
pub struct Norm<'a> {
    /// The residual stream (un-normalised rows).
    pub x: &'a wgpu::Buffer,
    /// The norm's weight vector (K floats).
    pub weight: &'a wgpu::Buffer,
    pub eps: f32,
}
/// Output rows per workgroup on the plain (thread-per-row) path.
pub const ROWS_PLAIN: u32 = 64;
/// Tokens per workgroup in the prefill variant.
pub const TT_PREFILL: u32 = 8;

/// Which rows of X the product runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// All of the step's tokens (`Step::n_tokens`).
    Tokens,
    /// Only the logit rows (`Step::out_row0 .. + n_out_rows`), written from row 0.
    OutRows,
}

pub fn variant(dtype: DType, tt: u32, accumulate: bool, subgroups: bool) -> ShaderVariant {
    variant_fused(dtype, tt, accumulate, subgroups, Fuse::None)
}

pub fn variant_fused(
    dtype: DType,
    tt: u32,
    accumulate: bool,
    subgroups: bool,
    fuse: Fuse,
) -> ShaderVariant {
    variant_full(dtype, tt, accumulate, subgroups, fuse, false, 576, RPW)
}

/// Every option. `k`: input features (the decode variant stages the row of
/// x in workgroup memory, K floats); `norm` (TT=1 only) fuses RMSNorm; `rpw`
/// is the subgroup path's rows per workgroup.
#[allow(clippy::too_many_arguments)]
pub fn variant_full(
    dtype: DType,
    tt: u32,
    accumulate: bool,
    subgroups: bool,
    fuse: Fuse,
    norm: bool,
    k: usize,
    rpw: u32,
) -> ShaderVariant {
    let mut v = ShaderVariant::new("main")
        .define(weight_define(dtype))
        .define(format!("TT={tt}"))
        .define(format!("TT{tt}"))
        .define(format!("RPW={rpw}"));
    assert!(!norm || tt == 1, "NORM is a decode (TT=1) variant");
    // Decode on the thread-per-row path (and every NORM variant): x staged in
    // workgroup memory once per workgroup; Q4_1 then takes the offset term
    // from staged block sums (docs/optimizations.md).
    if tt == 1 && (norm || !subgroups) {
        v = v.define("XSTAGE").define(format!("K4={}", k.div_ceil(4)));
        if dtype == DType::Q4_1 {
            v = v.define("Q41X");
        }
    }
    // Rows of any width: GGML blocks are whole (32 weights), so only float
    // weights can end inside a 4-wide chunk.
    if !k.is_multiple_of(4) {
        assert!(
            dtype.block_len() == 1,
            "{dtype} rows of {k} weights are not whole blocks"
        );
        v = v.define("KTAIL");
    }
    if norm {
        v = v.define("NORM");
    }
    if accumulate {
        v = v.define("ACCUMULATE");
    }
    // Block-wise decoding measured faster for Q4_1 matvecs (docs/optimizations.md),
    // slower for the 8-token prefill tile.
    if matches!(dtype, DType::Q4_1 | DType::Q8_0) && tt == 1 {
        v = v.define("BLOCKS");
    }
    if subgroups {
        v = v.define("SG");
    }
    match fuse {
        Fuse::None => {}
        Fuse::Split3 { .. } => v = v.define("SPLIT3"),
        Fuse::Glu => v = v.define("GLU"),
    }
    v
}

/// Builds both variants; record both every step (one of them is empty).
#[allow(clippy::too_many_arguments)]
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    w: &GpuWeight,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    accumulate: bool,
    rows: Rows,
) -> Result<[KernelOp; 2], GpuError> {
    build_fused(
        gpu,
        step,
        name,
        w,
        x,
        &[y],
        accumulate,
        rows,
        Fuse::None,
        None,
    )
}

/// `build` for the fused forms: `ys` holds one output (plain, GLU) or three
/// (Split3: q, k, v). For GLU, `w` holds gate then up rows. With `norm`, the
/// decode variant reads `norm.x` and applies the RMSNorm itself; the prefill
/// variant reads `x` (the norm's output, from a separate norm dispatch).
#[allow(clippy::too_many_arguments)]
pub fn build_fused(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    w: &GpuWeight,
    x: &wgpu::Buffer,
    ys: &[&wgpu::Buffer],
    accumulate: bool,
    rows: Rows,
    fuse: Fuse,
    norm: Option<Norm<'_>>,
) -> Result<[KernelOp; 2], GpuError> {
    let out_rows = if fuse == Fuse::Glu {
        w.rows / 2
    } else {
        w.rows
    };
    let (split1, split2) = match fuse {
        Fuse::Split3 { q_rows, k_rows } => (q_rows, q_rows + k_rows),
        _ => (0, 0),
    };
    let p = Params {
        n: out_rows as u32,
        k: w.cols as u32,
        row_bytes: w.row_bytes(),
        out_rows_only: (rows == Rows::OutRows) as u32,
        split1: split1 as u32,
        split2: split2 as u32,
        eps: norm.map_or(0.0, |n| n.eps),
        _pad: 0,
    };
    let params = gpu.uniform("matmul.params", &p);
    let mut bufs: Vec<&wgpu::Buffer> = vec![&params, step, &w.buf, x];
    bufs.extend_from_slice(ys);
    // The decode variant's bindings: with NORM, the raw rows and the weight.
    let mut bufs1 = bufs.clone();
    if let Some(nm) = norm {
        bufs1[3] = nm.x;
        bufs1.push(nm.weight);
    }
    let class = if rows == Rows::OutRows {
        KernelClass::Logits
    } else {
        KernelClass::Matmul
    };
    let sg = gpu.level.subgroup_matmul;
    let rpw = rows_per_workgroup(gpu);
    let n_groups = (out_rows as u32).div_ceil(if sg { rpw } else { ROWS_PLAIN });
    let count = move |s: &Step| match rows {
        Rows::Tokens => s.n_tokens,
        Rows::OutRows => s.n_out_rows,
    };
    let one = KernelOp::new(
        gpu,
        name.to_string(),
        class,
        gpu.pipeline(
            Shader::Matmul,
            &variant_full(
                w.dtype,
                1,
                accumulate,
                sg,
                fuse,
                norm.is_some(),
                w.cols,
                rpw,
            ),
        )?,
        &bufs1,
        move |s: &Step| {
            if count(s) == 1 {
                [n_groups, 1, 1]
            } else if s.per_row() {
                // Batched decode: the matvec over every row (each row's own
                // arithmetic, as when it is decoded alone).
                [n_groups, count(s), 1]
            } else {
                [0, 0, 0]
            }
        },
    );
    let many = KernelOp::new(
        gpu,
        name.to_string(),
        class,
        gpu.pipeline(
            Shader::Matmul,
            &variant_full(
                w.dtype, TT_PREFILL, accumulate, sg, fuse, false, w.cols, rpw,
            ),
        )?,
        &bufs,
        move |s: &Step| {
            let c = count(s);
            if c > 1 && !s.per_row() {
                [n_groups, c.div_ceil(TT_PREFILL), 1]
            } else {
                [0, 0, 0]
            }
        },
    );
    Ok([one, many])
}

/// CPU reference: `y[t, n] = sum_k x[t, k] w[n, k]` (f64 accumulation).
pub fn cpu(x: &[f32], w: &[f32], n: usize, k: usize) -> Vec<f32> {
    x.chunks(k)
        .flat_map(|xr| {
            (0..n).map(move |r| {
                w[r * k..(r + 1) * k]
                    .iter()
                    .zip(xr)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::{dequantize, Bytes};
    use crate::model::Tensor;
    use crate::testing::*;
    use std::sync::Arc;

    /// Random bytes in `dtype`'s encoding with sane scales.
    fn encode(dtype: DType, n: usize, k: usize, seed: u64) -> Vec<u8> {
        let vals = seeded(n * k, seed);
        let f16 = |x: f32| half::f16::from_f32(x).to_le_bytes();
        let mut out = Vec::new();
        match dtype {
            DType::F32 => out.extend(bytemuck::cast_slice::<f32, u8>(&vals)),
            DType::F16 => vals.iter().for_each(|&v| out.extend(f16(v))),
            DType::BF16 => vals
                .iter()
                .for_each(|&v| out.extend(half::bf16::from_f32(v).to_le_bytes())),
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => {
                let raw = seeded(n * k * 2, seed ^ 0x55);
                for b in 0..n * k / 32 {
                    let d = 0.01 + raw[2 * b].abs() * 0.05;
                    out.extend(f16(d));
                    if dtype == DType::Q4_1 {
                        out.extend(f16(raw[2 * b + 1] * 0.3));
                    }
                    let qs: Vec<u8> = (0..32)
                        .map(|j| ((vals[b * 32 + j] + 1.0) * 127.9) as u8)
                        .collect();
                    match dtype {
                        DType::Q8_0 => out.extend(qs.iter().map(|&q| q.wrapping_sub(128))),
                        _ => out.extend((0..16).map(|j| (qs[j] >> 4) | (qs[j + 16] & 0xf0))),
                    }
                }
            }
            _ => out = random_blocks(dtype, n * k, seed),
        }
        out
    }

    fn check(dtype: DType, n: usize, k: usize, tokens: usize, accumulate: bool, rows: Rows) {
        for gpu in gpu_paths() {
            check_on(&gpu, dtype, n, k, tokens, accumulate, rows);
        }
    }

    fn check_on(
        gpu: &Gpu,
        dtype: DType,
        n: usize,
        k: usize,
        tokens: usize,
        accumulate: bool,
        rows: Rows,
    ) {
        let bytes = encode(dtype, n, k, 11 + n as u64);
        let wf = dequantize(dtype, &bytes, n * k);
        let t = Tensor {
            dtype,
            shape: vec![n, k],
            bytes: Bytes::Owned(Arc::new(bytes)),
        };
        let w = GpuWeight::upload(gpu, "w", &t).unwrap();
        // Asymmetric input: rows differ in scale so a transpose shows.
        let x: Vec<f32> = seeded(tokens * k, 3)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i / k) as f32))
            .collect();
        let y0 = seeded(tokens * n, 5);
        let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
        let yb = gpu.upload("y", bytemuck::cast_slice(&y0)).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let ops = build(gpu, &step_buf, "mm", &w, &xb, &yb, accumulate, rows).unwrap();
        let (step, xs) = match rows {
            Rows::Tokens => (Step::tokens(tokens as u32, 0), &x[..]),
            Rows::OutRows => (
                Step {
                    n_tokens: tokens as u32,
                    pos0: 0,
                    out_row0: 1,
                    n_out_rows: tokens as u32 - 1,
                    kv_base: 0,
                    _pad: [0; 3],
                },
                &x[k..],
            ),
        };
        run(gpu, &step_buf, step, &[&ops[0], &ops[1]]);
        let mut want = cpu(xs, &wf, n, k);
        if accumulate {
            want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
        }
        let got = read_f32(gpu, &yb, want.len());
        assert_close(
            &got,
            &want,
            2e-5,
            &format!(
                "matmul {dtype} n={n} k={k} T={tokens} subgroup path: {}",
                gpu.level.subgroup_matmul
            ),
        );
    }

    #[test]
    fn f32_decode_and_prefill() {
        check(DType::F32, 37, 172, 1, false, Rows::Tokens);
        check(DType::F32, 37, 172, 7, false, Rows::Tokens);
        check(DType::F32, 19, 64, 9, true, Rows::Tokens);
    }

    #[test]
    fn half_types() {
        check(DType::F16, 23, 68, 1, false, Rows::Tokens);
        check(DType::BF16, 23, 68, 6, true, Rows::Tokens);
    }

    #[test]
    fn quantized_types() {
        for dt in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            check(dt, 29, 96, 1, false, Rows::Tokens);
            check(dt, 13, 160, 5, true, Rows::Tokens);
        }
    }

    /// Q/K/V stacked in one weight with three outputs, and gate/up stacked
    /// with the SwiGLU gate applied, against the separate CPU products.
    #[test]
    fn fused_split3_and_glu() {
        for gpu in gpu_paths() {
            fused_on(&gpu);
        }
    }

    fn fused_on(gpu: &Arc<Gpu>) {
        for (dtype, tokens, k) in [
            (DType::F32, 1, 64),
            (DType::Q4_1, 1, 64),
            (DType::Q4_1, 9, 64),
            (DType::Q8_0, 3, 64),
            // Widths that end inside a 4-wide chunk.
            (DType::F32, 1, 67),
            (DType::F16, 9, 66),
            (DType::BF16, 1, 171),
        ] {
            let (nq, nk) = (24, 8);
            let rows = nq + 2 * nk;
            let bytes = encode(dtype, rows, k, 77);
            let wf = dequantize(dtype, &bytes, rows * k);
            let t = Tensor {
                dtype,
                shape: vec![rows, k],
                bytes: Bytes::Owned(Arc::new(bytes)),
            };
            let w = GpuWeight::upload(gpu, "w", &t).unwrap();
            let x: Vec<f32> = seeded(tokens * k, 3)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1 + i / k) as f32)
                .collect();
            let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
            let yq = gpu.storage_buffer("q", (tokens * nq * 4) as u64).unwrap();
            let yk = gpu.storage_buffer("k", (tokens * nk * 4) as u64).unwrap();
            let yv = gpu.storage_buffer("v", (tokens * nk * 4) as u64).unwrap();
            let step_buf = gpu.uniform("step", &Step::default());
            let step = Step::tokens(tokens as u32, 0);
            let ops = build_fused(
                gpu,
                &step_buf,
                "qkv",
                &w,
                &xb,
                &[&yq, &yk, &yv],
                false,
                Rows::Tokens,
                Fuse::Split3 {
                    q_rows: nq,
                    k_rows: nk,
                },
                None,
            )
            .unwrap();
            run(gpu, &step_buf, step, &[&ops[0], &ops[1]]);
            let full = cpu(&x, &wf, rows, k);
            let part = |r0: usize, n: usize| -> Vec<f32> {
                (0..tokens)
                    .flat_map(|t| full[t * rows + r0..t * rows + r0 + n].to_vec())
                    .collect()
            };
            assert_close(
                &read_f32(gpu, &yq, tokens * nq),
                &part(0, nq),
                2e-5,
                "split3 q",
            );
            assert_close(
                &read_f32(gpu, &yk, tokens * nk),
                &part(nq, nk),
                2e-5,
                "split3 k",
            );
            assert_close(
                &read_f32(gpu, &yv, tokens * nk),
                &part(nq + nk, nk),
                2e-5,
                "split3 v",
            );
            // GLU: rows [0, 20) gate, [20, 40) up.
            let half = rows / 2;
            let h = gpu.storage_buffer("h", (tokens * half * 4) as u64).unwrap();
            let ops = build_fused(
                gpu,
                &step_buf,
                "glu",
                &w,
                &xb,
                &[&h],
                false,
                Rows::Tokens,
                Fuse::Glu,
                None,
            )
            .unwrap();
            run(gpu, &step_buf, step, &[&ops[0], &ops[1]]);
            let g = part(0, half);
            let u = part(half, half);
            let want = crate::kernels::silu_mul::cpu(&g, &u);
            assert_close(
                &read_f32(gpu, &h, tokens * half),
                &want,
                2e-5,
                &format!("glu {dtype}"),
            );
        }
    }

    /// NORM: the decode product normalises the raw row itself; it must equal
    /// rmsnorm then the product, for the plain, Split3 and GLU forms, on every
    /// matmul path, and when only the last row's logits are asked for.
    #[test]
    fn fused_rmsnorm_decode() {
        for gpu in gpu_paths() {
            for (dtype, k) in [
                (DType::F32, 96),
                (DType::Q4_1, 96),
                (DType::Q8_0, 96),
                (DType::F32, 65),
                (DType::F16, 67),
                (DType::BF16, 178),
            ] {
                let (nq, nk) = (24, 8);
                let rows = nq + 2 * nk;
                let bytes = encode(dtype, rows, k, 91);
                let wf = dequantize(dtype, &bytes, rows * k);
                let t = Tensor {
                    dtype,
                    shape: vec![rows, k],
                    bytes: Bytes::Owned(Arc::new(bytes)),
                };
                let w = GpuWeight::upload(&gpu, "w", &t).unwrap();
                let eps = 1e-5;
                // Two token rows; the product reads the one the step names.
                let x: Vec<f32> = seeded(2 * k, 13).iter().map(|v| 3.0 * v).collect();
                let g: Vec<f32> = seeded(k, 17).iter().map(|v| 1.0 + 0.5 * v).collect();
                let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
                let gb = gpu.upload("g", bytemuck::cast_slice(&g)).unwrap();
                let unused = gpu.storage_buffer("xn", (2 * k * 4) as u64).unwrap();
                let norm = Some(Norm {
                    x: &xb,
                    weight: &gb,
                    eps,
                });
                let step_buf = gpu.uniform("step", &Step::default());
                let tag = format!("{dtype}, subgroup path: {}", gpu.level.subgroup_matmul);
                let xn = crate::kernels::rmsnorm::cpu(&x, &g, eps);
                for (row, rows_mode) in [(0, Rows::Tokens), (1, Rows::OutRows)] {
                    let step = match rows_mode {
                        Rows::Tokens => Step::tokens(1, 0),
                        Rows::OutRows => Step {
                            n_tokens: 2,
                            out_row0: 1,
                            n_out_rows: 1,
                            ..Default::default()
                        },
                    };
                    let want = cpu(&xn[row * k..(row + 1) * k], &wf, rows, k);
                    let y = gpu.storage_buffer("y", (rows * 4) as u64).unwrap();
                    let ops = build_fused(
                        &gpu,
                        &step_buf,
                        "mm",
                        &w,
                        &unused,
                        &[&y],
                        false,
                        rows_mode,
                        Fuse::None,
                        norm,
                    )
                    .unwrap();
                    run(&gpu, &step_buf, step, &[&ops[0], &ops[1]]);
                    assert_close(
                        &read_f32(&gpu, &y, rows),
                        &want,
                        2e-5,
                        &format!("norm {tag} row {row}"),
                    );
                    if rows_mode == Rows::OutRows {
                        continue;
                    }
                    let ys: Vec<wgpu::Buffer> = [nq, nk, nk]
                        .iter()
                        .map(|&n| gpu.storage_buffer("part", (n * 4) as u64).unwrap())
                        .collect();
                    let ops = build_fused(
                        &gpu,
                        &step_buf,
                        "qkv",
                        &w,
                        &unused,
                        &[&ys[0], &ys[1], &ys[2]],
                        false,
                        Rows::Tokens,
                        Fuse::Split3 {
                            q_rows: nq,
                            k_rows: nk,
                        },
                        norm,
                    )
                    .unwrap();
                    run(&gpu, &step_buf, step, &[&ops[0], &ops[1]]);
                    assert_close(
                        &read_f32(&gpu, &ys[0], nq),
                        &want[..nq],
                        2e-5,
                        &format!("norm split3 q {tag}"),
                    );
                    assert_close(
                        &read_f32(&gpu, &ys[2], nk),
                        &want[nq + nk..],
                        2e-5,
                        &format!("norm split3 v {tag}"),
                    );
                    let h = gpu.storage_buffer("h", (rows / 2 * 4) as u64).unwrap();
                    let ops = build_fused(
                        &gpu,
                        &step_buf,
                        "glu",
                        &w,
                        &unused,
                        &[&h],
                        false,
                        Rows::Tokens,
                        Fuse::Glu,
                        norm,
                    )
                    .unwrap();
                    run(&gpu, &step_buf, step, &[&ops[0], &ops[1]]);
                    let glu = crate::kernels::silu_mul::cpu(&want[..rows / 2], &want[rows / 2..]);
                    assert_close(
                        &read_f32(&gpu, &h, rows / 2),
                        &glu,
                        2e-5,
                        &format!("norm glu {tag}"),
                    );
                }
            }
        }
    }

    /// Rows whose width is not a multiple of 4 (any F32/F16/BF16 width):
    /// every path, decode and prefill, plain and accumulate, odd row starts
    /// (F16/BF16 rows of odd width begin mid-word).
    #[test]
    fn odd_widths_all_float_types() {
        for k in [1, 2, 3, 5, 66, 171, 173] {
            check(DType::F32, 13, k, 1, false, Rows::Tokens);
            check(DType::F16, 11, k, 9, true, Rows::Tokens);
            check(DType::BF16, 7, k, 3, false, Rows::Tokens);
        }
        check(DType::F16, 19, 67, 4, false, Rows::OutRows);
        check(DType::BF16, 19, 65, 1, true, Rows::Tokens);
    }

    #[test]
    fn logits_rows_only() {
        check(DType::F32, 41, 64, 6, false, Rows::OutRows);
        check(DType::Q8_0, 41, 64, 2, false, Rows::OutRows);
    }
}
