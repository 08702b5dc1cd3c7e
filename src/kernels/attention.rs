//! Causal GQA attention over the KV cache (`shaders/attention.wgsl`).

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub scale: f32,
    /// ROPE variant: [`crate::model::RopeLayout::as_u32`].
    pub pair_layout: u32,
    /// Sliding window (Mistral): the token at `pos` attends to keys
    /// `pos - window + 1 ..= pos`; 0 for plain causal attention.
    pub window: u32,
    pub _pad: [u32; 2],
}

pub fn variant(head_dim: usize) -> ShaderVariant {
    variant_wg(head_dim, 64)
}

/// `wg` threads per workgroup (a power of two, 64 to 256). A head_dim that
/// is not a multiple of 4 reads Q/K/V as floats (`HDTAIL`).
pub fn variant_wg(head_dim: usize, wg: u32) -> ShaderVariant {
    let v = ShaderVariant::new("main")
        .define(format!("HD={head_dim}"))
        .define(format!("HD4={}", head_dim.div_ceil(4)))
        .define(format!("WG={wg}"));
    if head_dim.is_multiple_of(4) {
        v
    } else {
        v.define("HDTAIL")
    }
}

/// The largest head the attention kernel takes: each of a 64-thread
/// workgroup's threads owns at most 4 output dims.
pub const MAX_HEAD_DIM: usize = 256;

/// Threads per workgroup for VRAM mode on this adapter: 256 on GPUs for
/// heads of 32 or more (more positions scored and summed at once: decode
/// attention is a chain of dependent loads), else 64 (CPU adapters: fewer
/// invocations per barrier; small heads: 256 threads would mostly idle).
pub fn workgroup_size(gpu: &Gpu, head_dim: usize) -> u32 {
    if gpu.info.device_type == wgpu::DeviceType::Cpu || head_dim < 32 {
        64
    } else {
        256
    }
}

fn check_head_dim(head_dim: usize) -> Result<(), GpuError> {
    if !head_dim.is_multiple_of(2) || head_dim > MAX_HEAD_DIM || head_dim == 0 {
        return Err(GpuError::Device(format!(
            "attention needs head_dim even and at most {MAX_HEAD_DIM}, got {head_dim}"
        )));
    }
    Ok(())
}

/// Rows of a batched decode step (sequences decoded together): entries of
/// the ROPE variant's row table, a uniform `[MAX_ROWS] vec4<u32>`
/// (position, KV-cache base row, 0, 0).
pub const MAX_ROWS: usize = 256;

/// A zeroed row table for [`build_decode_rope`] (written per batched step
/// with [`row_entries`]).
pub fn row_table(gpu: &Gpu) -> wgpu::Buffer {
    gpu.uniform("attention.rows", &[[0u32; 4]; MAX_ROWS])
}

/// Row-table bytes for rows at `(position, kv_base)`.
pub fn row_entries(rows: &[(usize, usize)]) -> Vec<u32> {
    rows.iter()
        .flat_map(|&(pos, base)| [pos as u32, base as u32, 0, 0])
        .collect()
}

/// VRAM decode: RoPE and the KV-cache write inside the attention kernel.
pub fn rope_variant(head_dim: usize, wg: u32) -> ShaderVariant {
    variant_wg(head_dim, wg)
        .define("ROPE")
        .define(format!("MAX_ROWS={MAX_ROWS}"))
}

/// Decode-step attention (one token) that also rotates q and the new k
/// (`k`, `v`: the step's K/V projections) and stores k, v into the caches:
/// replaces the rope dispatch when decoding. Dispatched for one-token steps
/// and batched decode steps ([`Step::decode_rows`]: one token of each of T
/// sequences, positions and KV bases from `row_table`, [`MAX_ROWS`] × 16 bytes).
#[allow(clippy::too_many_arguments)]
pub fn build_decode_rope(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    rope: &super::rope::Shape,
    cos_sin: &wgpu::Buffer,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    row_table: &wgpu::Buffer,
    window: usize,
) -> Result<KernelOp, GpuError> {
    build_decode_rope_scaled(
        gpu,
        step,
        name,
        rope,
        cos_sin,
        [q, k, v, k_cache, v_cache, out, row_table],
        window,
        default_scale(rope.head_dim),
    )
}

/// `head_dim^-0.5`, the scores' scale unless the architecture sets one.
pub fn default_scale(head_dim: usize) -> f32 {
    (head_dim as f64).powf(-0.5) as f32
}

/// [`build_decode_rope`] with the scores scaled by `scale` (Gemma 3:
/// `query_pre_attn_scalar^-0.5`); `bufs` as in [`build_decode_rope_wg`].
#[allow(clippy::too_many_arguments)]
pub fn build_decode_rope_scaled(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    rope: &super::rope::Shape,
    cos_sin: &wgpu::Buffer,
    bufs: [&wgpu::Buffer; 7],
    window: usize,
    scale: f32,
) -> Result<KernelOp, GpuError> {
    decode_rope_op(
        gpu,
        step,
        name,
        rope,
        cos_sin,
        bufs,
        workgroup_size(gpu, rope.head_dim),
        window,
        scale,
    )
}

/// [`build_decode_rope`] with `wg` threads per workgroup; `bufs` is
/// `[q, k, v, k_cache, v_cache, out, row_table]`; `window` as [`Params::window`].
#[allow(clippy::too_many_arguments)]
pub fn build_decode_rope_wg(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    rope: &super::rope::Shape,
    cos_sin: &wgpu::Buffer,
    bufs: [&wgpu::Buffer; 7],
    wg: u32,
    window: usize,
) -> Result<KernelOp, GpuError> {
    let scale = default_scale(rope.head_dim);
    decode_rope_op(gpu, step, name, rope, cos_sin, bufs, wg, window, scale)
}

#[allow(clippy::too_many_arguments)]
fn decode_rope_op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    rope: &super::rope::Shape,
    cos_sin: &wgpu::Buffer,
    bufs: [&wgpu::Buffer; 7],
    wg: u32,
    window: usize,
    scale: f32,
) -> Result<KernelOp, GpuError> {
    let [q, k, v, k_cache, v_cache, out, row_table] = bufs;
    check_head_dim(rope.head_dim)?;
    let window = check_window(window);
    let p = Params {
        n_heads: rope.n_heads as u32,
        n_kv_heads: rope.n_kv_heads as u32,
        head_dim: rope.head_dim as u32,
        scale,
        pair_layout: rope.layout.as_u32(),
        window,
        _pad: [0; 2],
    };
    let params = gpu.uniform("attention.params", &p);
    let pipe = gpu.pipeline(Shader::Attention, &rope_variant(rope.head_dim, wg))?;
    let h = rope.n_heads as u32;
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Attention,
        pipe,
        &[
            &params, step, q, k_cache, v_cache, out, cos_sin, k, v, row_table,
        ],
        move |s: &Step| {
            if s.n_tokens == 1 || s.per_row() {
                [h, s.n_tokens, 1]
            } else {
                [0, 0, 0]
            }
        },
    ))
}

#[allow(clippy::too_many_arguments)]
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    window: usize,
) -> Result<KernelOp, GpuError> {
    build_scaled(
        gpu,
        step,
        name,
        (n_heads, n_kv_heads, head_dim),
        [q, k_cache, v_cache, out],
        window,
        default_scale(head_dim),
    )
}

/// [`build`] with the scores scaled by `scale`; `bufs` is
/// `[q, k_cache, v_cache, out]`.
pub fn build_scaled(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    shape: (usize, usize, usize),
    bufs: [&wgpu::Buffer; 4],
    window: usize,
    scale: f32,
) -> Result<KernelOp, GpuError> {
    let wg = workgroup_size(gpu, shape.2);
    prefill_op(gpu, step, name, shape, bufs, wg, window, scale)
}

/// `window` as the kernel's u32 (0: none); one past any u32 position means none.
fn check_window(window: usize) -> u32 {
    u32::try_from(window).unwrap_or(0)
}

/// [`build`] with `wg` threads per workgroup; `bufs` is
/// `[q, k_cache, v_cache, out]`; `window` as [`Params::window`].
pub fn build_wg(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    (n_heads, n_kv_heads, head_dim): (usize, usize, usize),
    bufs: [&wgpu::Buffer; 4],
    wg: u32,
    window: usize,
) -> Result<KernelOp, GpuError> {
    let scale = default_scale(head_dim);
    prefill_op(
        gpu,
        step,
        name,
        (n_heads, n_kv_heads, head_dim),
        bufs,
        wg,
        window,
        scale,
    )
}

#[allow(clippy::too_many_arguments)]
fn prefill_op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    (n_heads, n_kv_heads, head_dim): (usize, usize, usize),
    bufs: [&wgpu::Buffer; 4],
    wg: u32,
    window: usize,
    scale: f32,
) -> Result<KernelOp, GpuError> {
    let [q, k_cache, v_cache, out] = bufs;
    check_head_dim(head_dim)?;
    let window = check_window(window);
    let p = Params {
        n_heads: n_heads as u32,
        n_kv_heads: n_kv_heads as u32,
        head_dim: head_dim as u32,
        scale,
        pair_layout: 0,
        window,
        _pad: [0; 2],
    };
    let params = gpu.uniform("attention.params", &p);
    let pipe = gpu.pipeline(Shader::Attention, &variant_wg(head_dim, wg))?;
    let h = n_heads as u32;
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Attention,
        pipe,
        &[&params, step, q, k_cache, v_cache, out],
        move |s: &Step| [h, s.n_tokens, 1],
    ))
}

/// CPU reference for token at `pos` (f64): q `[H*hd]`, caches `[ctx, Hkv*hd]`.
pub fn cpu(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    pos: usize,
    h: usize,
    hkv: usize,
    hd: usize,
) -> Vec<f32> {
    cpu_window(q, kc, vc, pos, (h, hkv, hd), 0)
}

/// [`cpu`] with a sliding window (keys `pos - window + 1 ..= pos`; 0: all).
pub fn cpu_window(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    pos: usize,
    (h, hkv, hd): (usize, usize, usize),
    window: usize,
) -> Vec<f32> {
    let first = if window > 0 {
        (pos + 1).saturating_sub(window)
    } else {
        0
    };
    let kv_dim = hkv * hd;
    let scale = (hd as f64).powf(-0.5);
    let mut out = vec![0f32; h * hd];
    for head in 0..h {
        let kvh = head / (h / hkv);
        let qh = &q[head * hd..(head + 1) * hd];
        let scores: Vec<f64> = (first..=pos)
            .map(|s| {
                let kr = &kc[s * kv_dim + kvh * hd..s * kv_dim + (kvh + 1) * hd];
                qh.iter()
                    .zip(kr)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * scale
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let z: f64 = e.iter().sum();
        for d in 0..hd {
            let v: f64 = (first..=pos)
                .map(|s| e[s - first] * vc[s * kv_dim + kvh * hd + d] as f64)
                .sum();
            out[head * hd + d] = (v / z) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    /// [`cpu`] for each token of `q` (`[T, H*hd]`), at positions pos0, pos0 + 1, …
    fn cpu_tokens(
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
        pos0: usize,
        (h, hkv, hd): (usize, usize, usize),
        window: usize,
    ) -> Vec<f32> {
        q.chunks(h * hd)
            .enumerate()
            .flat_map(|(i, qt)| cpu_window(qt, kc, vc, pos0 + i, (h, hkv, hd), window))
            .collect()
    }

    fn check(h: usize, hkv: usize, hd: usize, t: usize, pos0: usize) {
        let Some(gpu) = gpu() else { return };
        let ctx = pos0 + t + 3;
        let kv_dim = hkv * hd;
        let q: Vec<f32> = seeded(t * h * hd, 1).iter().map(|v| v * 3.0).collect();
        let kc = seeded(ctx * kv_dim, 2);
        let vc: Vec<f32> = seeded(ctx * kv_dim, 3)
            .iter()
            .enumerate()
            .map(|(i, v)| v + (i % 7) as f32)
            .collect();
        let up = |n: &str, d: &[f32]| gpu.upload(n, bytemuck::cast_slice(d)).unwrap();
        let (qb, kb, vb) = (up("q", &q), up("kc", &kc), up("vc", &vc));
        let ob = gpu.storage_buffer("o", (t * h * hd * 4) as u64).unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        // Sliding windows: none, shorter than the first token's keys, one key.
        for (wg, window) in [(64, 0), (256, 0), (64, 3), (256, 2), (64, 1)] {
            let op = build_wg(
                &gpu,
                &step_buf,
                "attn",
                (h, hkv, hd),
                [&qb, &kb, &vb, &ob],
                wg,
                window,
            )
            .unwrap();
            run(&gpu, &step_buf, Step::tokens(t as u32, pos0 as u32), &[&op]);
            let got = read_f32(&gpu, &ob, t * h * hd);
            let want = cpu_tokens(&q, &kc, &vc, pos0, (h, hkv, hd), window);
            assert_close(
                &got,
                &want,
                1e-5,
                &format!("attention h={h} hkv={hkv} hd={hd} wg={wg} window={window}"),
            );
        }
    }

    /// ROPE decode variant: rotates q and the new k, writes k and v into the
    /// caches at the position (first q head of each group), and attends as
    /// rope then attention would, for both pair layouts.
    #[test]
    fn decode_rope_attention_matches_rope_then_attention() {
        use crate::kernels::rope::{cos_sin_table, cpu_rotate, Shape};
        use crate::model::RopeLayout;
        let Some(gpu) = gpu() else { return };
        let (h, hkv, pos, theta) = (6usize, 2usize, 7usize, 10000.0f32);
        let ctx = pos + 3;
        for (layout, wg, hd) in [
            (RopeLayout::Halves, 64, 16),
            (RopeLayout::Adjacent, 64, 16),
            (RopeLayout::Halves, 256, 16),
            (RopeLayout::Adjacent, 256, 16),
            // Heads that are not a multiple of 4, and the largest.
            (RopeLayout::Halves, 64, 6),
            (RopeLayout::Adjacent, 256, 18),
            (RopeLayout::Adjacent, 64, 2),
            (RopeLayout::Halves, 64, 256),
            (RopeLayout::Adjacent, 256, 130),
        ] {
            let kv_dim = hkv * hd;
            // A sliding window (Mistral) of 4 of the 8 positions on the wide workgroups.
            let window = if wg == 256 { 4 } else { 0 };
            let q: Vec<f32> = seeded(h * hd, 21).iter().map(|v| v * 3.0).collect();
            let k = seeded(kv_dim, 22);
            let v = seeded(kv_dim, 23);
            // Earlier positions already in the caches; later ones garbage.
            let kc0 = seeded(ctx * kv_dim, 24);
            let vc0 = seeded(ctx * kv_dim, 25);
            let up = |n: &str, d: &[f32]| gpu.upload(n, bytemuck::cast_slice(d)).unwrap();
            let (qb, kb, vb) = (up("q", &q), up("k", &k), up("v", &v));
            let (kcb, vcb) = (up("kc", &kc0), up("vc", &vc0));
            let cs = up("cos_sin", &cos_sin_table(ctx, hd, theta));
            let ob = gpu.storage_buffer("o", (h * hd * 4) as u64).unwrap();
            let step_buf = gpu.uniform("step", &Step::default());
            let shape = Shape {
                n_heads: h,
                n_kv_heads: hkv,
                head_dim: hd,
                layout,
            };
            let op = build_decode_rope_wg(
                &gpu,
                &step_buf,
                "ra",
                &shape,
                &cs,
                [&qb, &kb, &vb, &kcb, &vcb, &ob, &row_table(&gpu)],
                wg,
                window,
            )
            .unwrap();
            let step = Step::tokens(1, pos as u32);
            run(&gpu, &step_buf, step, &[&op]);
            let mut qr = q.clone();
            for c in qr.chunks_mut(hd) {
                cpu_rotate(c, pos, theta, layout);
            }
            let mut kr = k.clone();
            for c in kr.chunks_mut(hd) {
                cpu_rotate(c, pos, theta, layout);
            }
            let (mut kc, mut vc) = (kc0.clone(), vc0.clone());
            kc[pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(&kr);
            vc[pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(&v);
            let tag = format!("{layout:?} wg={wg} hd={hd} window={window}");
            let want = cpu_window(&qr, &kc, &vc, pos, (h, hkv, hd), window);
            assert_close(
                &read_f32(&gpu, &ob, h * hd),
                &want,
                1e-5,
                &format!("rope attention {tag}"),
            );
            assert_close(
                &read_f32(&gpu, &kcb, ctx * kv_dim),
                &kc,
                1e-6,
                &format!("k cache {tag}"),
            );
            assert_close(
                &read_f32(&gpu, &vcb, ctx * kv_dim),
                &vc,
                0.0,
                &format!("v cache {tag}"),
            );
        }
    }

    #[test]
    fn attention_small_heads() {
        check(8, 4, 8, 5, 0);
        check(8, 4, 8, 1, 37);
    }

    /// Every even head_dim the formats allow, not only multiples of 4, up to
    /// the 256 limit (64 threads then own 4 dims each).
    #[test]
    fn attention_any_even_head_dim() {
        for hd in [2, 6, 10, 18, 24, 34, 130, 256] {
            check(4, 2, hd, 3, 5);
        }
        check(3, 1, 22, 1, 40);
    }

    #[test]
    fn head_dim_limits_are_refused() {
        assert!(check_head_dim(258).is_err());
        assert!(check_head_dim(7).is_err());
        assert!(check_head_dim(0).is_err());
        assert!(check_head_dim(256).is_ok());
        assert!(check_head_dim(2).is_ok());
    }

    #[test]
    fn attention_long_context_gqa() {
        check(9, 3, 64, 3, 150);
        check(6, 2, 32, 1, 0);
    }
}
