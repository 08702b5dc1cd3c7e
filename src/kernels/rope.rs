//! RoPE + KV-cache write (`shaders/rope.wgsl`).

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};
use crate::model::RopeLayout;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub layout: u32,
    pub kv_head_begin: u32,
    pub kv_head_end: u32,
    pub pos_begin: u32,
    pub pos_end: u32,
    pub do_q: u32,
    pub do_kv: u32,
    pub _pad: [u32; 2],
}

/// Which part of the work one dispatch does (SRAM mode splits it over chips).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub q: bool,
    /// KV block: kv heads and positions stored by this dispatch (`None`: none).
    pub kv: Option<((usize, usize), (usize, usize))>,
}

impl Part {
    /// Everything (VRAM mode).
    pub const ALL: Part = Part {
        q: true,
        kv: Some(((0, usize::MAX), (0, usize::MAX))),
    };
}

/// cos/sin table `[ctx, head_dim/2]` as (cos, sin) pairs, computed like
/// Hugging Face: `inv_freq = 1 / theta^(2i/d)` in f32, `angle = f32(pos) * inv_freq`
/// in f32, then cos/sin of that f32 angle (here in f64, rounded once).
pub fn cos_sin_table(ctx: usize, head_dim: usize, theta: f32) -> Vec<f32> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| {
            let e = (2 * i) as f32 / head_dim as f32;
            1.0f32 / theta.powf(e)
        })
        .collect();
    let mut out = Vec::with_capacity(ctx * half * 2);
    for pos in 0..ctx {
        for &f in &inv {
            let a = (pos as f32 * f) as f64;
            out.push(a.cos() as f32);
            out.push(a.sin() as f32);
        }
    }
    out
}

pub struct Shape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub layout: RopeLayout,
}

#[allow(clippy::too_many_arguments)]
pub fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    s: &Shape,
    cos_sin: &wgpu::Buffer,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    build_part(
        gpu,
        step,
        name,
        s,
        Part::ALL,
        cos_sin,
        q,
        k,
        v,
        k_cache,
        v_cache,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn build_part(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    name: &str,
    s: &Shape,
    part: Part,
    cos_sin: &wgpu::Buffer,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
) -> Result<KernelOp, GpuError> {
    let p = Params {
        n_heads: s.n_heads as u32,
        n_kv_heads: s.n_kv_heads as u32,
        head_dim: s.head_dim as u32,
        layout: s.layout.as_u32(),
        kv_head_begin: part.kv.map_or(0, |b| b.0 .0.min(s.n_kv_heads)) as u32,
        kv_head_end: part.kv.map_or(0, |b| b.0 .1.min(s.n_kv_heads)) as u32,
        pos_begin: part.kv.map_or(0, |b| b.1 .0.min(u32::MAX as usize)) as u32,
        pos_end: part.kv.map_or(0, |b| b.1 .1.min(u32::MAX as usize)) as u32,
        do_q: part.q as u32,
        do_kv: part.kv.is_some() as u32,
        _pad: [0; 2],
    };
    let params = gpu.uniform("rope.params", &p);
    let pipe = gpu.pipeline(Shader::Rope, &ShaderVariant::new("main"))?;
    let half = s.head_dim / 2;
    let work = ((s.n_heads + s.n_kv_heads) * half).max(s.n_kv_heads * s.head_dim) as u32;
    let gx = work.div_ceil(64);
    Ok(KernelOp::new(
        gpu,
        name,
        KernelClass::Rope,
        pipe,
        &[&params, step, cos_sin, q, k, v, k_cache, v_cache],
        move |st: &Step| [gx, st.n_tokens, 1],
    ))
}

/// CPU reference: rotates one head vector in place at position `pos`.
pub fn cpu_rotate(x: &mut [f32], pos: usize, theta: f32, layout: RopeLayout) {
    let hd = x.len();
    let half = hd / 2;
    let table = cos_sin_table(pos + 1, hd, theta);
    for i in 0..half {
        let (c, s) = (table[(pos * half + i) * 2], table[(pos * half + i) * 2 + 1]);
        let (i0, i1) = match layout {
            RopeLayout::Halves => (i, i + half),
            RopeLayout::Adjacent => (2 * i, 2 * i + 1),
        };
        let (x0, x1) = (x[i0], x[i1]);
        x[i0] = x0 * c - x1 * s;
        x[i1] = x1 * c + x0 * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn check(layout: RopeLayout) {
        let Some(gpu) = gpu() else { return };
        let (h, hkv, hd, t, pos0, ctx) = (6usize, 2usize, 10usize, 3usize, 5usize, 11usize);
        let theta = 10000.0;
        let q = seeded(t * h * hd, 1);
        let k = seeded(t * hkv * hd, 2);
        let v = seeded(t * hkv * hd, 3);
        let table = cos_sin_table(ctx, hd, theta);
        let up = |n: &str, d: &[f32]| gpu.upload(n, bytemuck::cast_slice(d)).unwrap();
        let (qb, kb, vb, tb) = (up("q", &q), up("k", &k), up("v", &v), up("cs", &table));
        let kc = gpu
            .storage_buffer("kc", (ctx * hkv * hd * 4) as u64)
            .unwrap();
        let vc = gpu
            .storage_buffer("vc", (ctx * hkv * hd * 4) as u64)
            .unwrap();
        let step_buf = gpu.uniform("step", &Step::default());
        let shape = Shape {
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: hd,
            layout,
        };
        let op = build(
            &gpu, &step_buf, "rope", &shape, &tb, &qb, &kb, &vb, &kc, &vc,
        )
        .unwrap();
        run(&gpu, &step_buf, Step::tokens(t as u32, pos0 as u32), &[&op]);
        let mut want_q = q.clone();
        for (i, head) in want_q.chunks_mut(hd).enumerate() {
            cpu_rotate(head, pos0 + i / h, theta, layout);
        }
        let mut want_k = k.clone();
        for (i, head) in want_k.chunks_mut(hd).enumerate() {
            cpu_rotate(head, pos0 + i / hkv, theta, layout);
        }
        assert_close(&read_f32(&gpu, &qb, q.len()), &want_q, 1e-6, "rope q");
        let kcache = read_f32(&gpu, &kc, ctx * hkv * hd);
        let vcache = read_f32(&gpu, &vc, ctx * hkv * hd);
        let off = pos0 * hkv * hd;
        assert_close(&kcache[off..off + k.len()], &want_k, 1e-6, "rope k cache");
        assert_close(&vcache[off..off + v.len()], &v, 0.0, "v cache");
    }

    #[test]
    fn rope_halves() {
        check(RopeLayout::Halves);
    }

    #[test]
    fn rope_adjacent() {
        check(RopeLayout::Adjacent);
    }
}
