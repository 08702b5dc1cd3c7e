//! RoPE + KV-cache write (`shaders/rope.wgsl`).

use super::{KernelClass, KernelOp, Step};
use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};
use crate::model::{RopeLayout, RopeScaling, RopeType};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub layout: u32,
}

/// cos/sin table `[ctx, head_dim/2]` as (cos, sin) pairs for plain RoPE
/// (see [`rope_table`]).
pub fn cos_sin_table(ctx: usize, head_dim: usize, theta: f32) -> Vec<f32> {
    rope_table(ctx, head_dim, theta, &RopeScaling::default())
}

/// `theta^(2i/d)` for i < d/2 in f32, as transformers' `base ** (arange(0, d, 2).float() / d)`.
fn pos_freqs(head_dim: usize, theta: f32) -> impl Iterator<Item = f32> {
    (0..head_dim / 2).map(move |i| theta.powf((2 * i) as f32 / head_dim as f32))
}

/// The rotary frequencies (`inv_freq`, `head_dim/2` of them) transformers
/// computes for `r` (`modeling_rope_utils.py`), in f32 like it. `seq_len`
/// matters only for dynamic NTK: the length the frequencies are for (at or
/// below `original_max_position_embeddings` they are the plain ones).
/// GGUF per-frequency factors divide the result (llama.cpp's `rope_freqs`).
pub fn inv_freq(head_dim: usize, theta: f32, r: &RopeScaling, seq_len: usize) -> Vec<f32> {
    let d = head_dim;
    let plain = |base: f32| -> Vec<f32> { pos_freqs(d, base).map(|p| 1.0 / p).collect() };
    let mut inv = match r.rope_type {
        RopeType::Default => plain(theta),
        RopeType::Linear => plain(theta).into_iter().map(|f| f / r.factor).collect(),
        RopeType::Dynamic => {
            // base * ((factor * seq_len / max_pos) - (factor - 1)) ** (d / (d - 2)),
            // evaluated in f32 tensors as transformers does during generation.
            let m = r.original_max_position_embeddings;
            let seq = seq_len.max(m) as f32;
            let (f, m) = (r.factor, m as f32);
            let exp = (d as f64 / (d as f64 - 2.0)) as f32;
            let base = theta * ((f * seq / m) - ((r.factor as f64 - 1.0) as f32)).powf(exp);
            plain(base)
        }
        RopeType::Llama3 => {
            let old = r.original_max_position_embeddings as f64;
            let (lo, hi, factor) = (r.low_freq_factor, r.high_freq_factor, r.factor);
            let low_wavelen = (old / lo as f64) as f32;
            let high_wavelen = (old / hi as f64) as f32;
            plain(theta)
                .into_iter()
                .map(|f| {
                    let wavelen = (2.0 * std::f64::consts::PI) as f32 / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    if wavelen < high_wavelen || wavelen > low_wavelen {
                        scaled
                    } else {
                        let smooth = ((old as f32) / wavelen - lo) / (hi - lo);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    }
                })
                .collect()
        }
        RopeType::Yarn => {
            let base = theta as f64;
            let dim = d as f64;
            let orig = r.original_max_position_embeddings as f64;
            let corr = |rot: f64| {
                (dim * (orig / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln())
            };
            let (mut low, mut high) = (corr(r.beta_fast as f64), corr(r.beta_slow as f64));
            if r.truncate {
                low = low.floor();
                high = high.ceil();
            }
            let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
            if low == high {
                high += 0.001;
            }
            pos_freqs(d, theta)
                .enumerate()
                .map(|(i, p)| {
                    let extra = 1.0 / p;
                    let inter = 1.0 / (r.factor * p);
                    let ramp = ((i as f32 - low as f32) / ((high - low) as f32)).clamp(0.0, 1.0);
                    let e = 1.0 - ramp;
                    inter * (1.0 - e) + extra * e
                })
                .collect()
        }
    };
    if let Some(ff) = &r.freq_factors {
        for (f, div) in inv.iter_mut().zip(ff) {
            *f /= div;
        }
    }
    inv
}

/// cos/sin table `[ctx, head_dim/2]` as (cos, sin) pairs, computed like
/// transformers: `angle = f32(pos) * inv_freq` in f32, then cos/sin of that
/// f32 angle (here in f64, rounded once) times the attention factor (yarn).
///
/// Dynamic NTK: transformers recomputes `inv_freq` for the length
/// `max(position) + 1` of each forward call past `max_position_embeddings`,
/// and cached keys keep the rotation they were written with; row `p` here
/// holds the frequencies for length `p + 1`, which is exactly what a
/// one-token step at `p` uses. A step of several tokens ending past that
/// length would need one set for all of them: [`check_step`] refuses it.
pub fn rope_table(ctx: usize, head_dim: usize, theta: f32, r: &RopeScaling) -> Vec<f32> {
    let half = head_dim / 2;
    let att = r.attention_factor;
    let fixed = (r.rope_type != RopeType::Dynamic).then(|| inv_freq(head_dim, theta, r, 0));
    let base = inv_freq(head_dim, theta, r, 0);
    let mut out = Vec::with_capacity(ctx * half * 2);
    for pos in 0..ctx {
        let dynamic;
        let inv = match &fixed {
            Some(f) => f,
            None if pos < r.original_max_position_embeddings => &base,
            None => {
                dynamic = inv_freq(head_dim, theta, r, pos + 1);
                &dynamic
            }
        };
        for &f in inv {
            let a = (pos as f32 * f) as f64;
            out.push(a.cos() as f32 * att);
            out.push(a.sin() as f32 * att);
        }
    }
    out
}

/// Refuses a step the table cannot reproduce: with dynamic NTK, a step of
/// several tokens at `pos` whose end passes `max_position_embeddings`
/// (transformers rotates all of them with frequencies for the step's end).
pub fn check_step(r: &RopeScaling, pos: usize, n: usize) -> Result<(), String> {
    let m = r.original_max_position_embeddings;
    if r.rope_type == RopeType::Dynamic && n > 1 && pos + n > m {
        return Err(format!(
            "dynamic RoPE: a step of {n} tokens at position {pos} ends past max_position_embeddings ({m}); \
             sramlm reproduces dynamic NTK past that length one token at a time only (keep prompts within {m} tokens)"
        ));
    }
    Ok(())
}

pub struct Shape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub layout: RopeLayout,
}

/// RoPE on q (in place) and k, and k, v into the caches at the step's
/// positions (`cos_sin`: [`rope_table`]).
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
    let p = Params {
        n_heads: s.n_heads as u32,
        n_kv_heads: s.n_kv_heads as u32,
        head_dim: s.head_dim as u32,
        layout: s.layout.as_u32(),
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

    /// `inv_freq` and the attention factor against values transformers 5.24
    /// computed (`ROPE_INIT_FUNCTIONS[type](LlamaConfig(hidden 64, heads 4,
    /// head_dim 16, max_position_embeddings 64, rope_parameters=...))`).
    #[test]
    fn frequencies_match_transformers() {
        let hf = |json: &str| {
            let obj: serde_json::Value = serde_json::from_str(json).unwrap();
            RopeScaling::from_hf(obj.as_object().unwrap(), 64).unwrap()
        };
        let cases: [(&str, usize, f64, [f64; 8]); 5] = [
            (
                r#"{"rope_parameters":{"rope_type":"linear","rope_theta":10000.0,"factor":4.0}}"#,
                0,
                1.0,
                [
                    0.25,
                    0.079056941,
                    0.025,
                    0.0079056947,
                    0.0025,
                    0.00079056947,
                    0.00025000001,
                    7.9056947e-05,
                ],
            ),
            (
                r#"{"rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16}}"#,
                0,
                1.0,
                [
                    0.57605636,
                    0.024240345,
                    0.0047007538,
                    0.00091158313,
                    0.00017677668,
                    3.4281024e-05,
                    6.6478697e-06,
                    1.2891732e-06,
                ],
            ),
            (
                r#"{"rope_parameters":{"rope_type":"yarn","rope_theta":10000.0,"factor":4.0,"original_max_position_embeddings":16}}"#,
                0,
                1.138629436111989,
                [
                    1.0,
                    0.079056941,
                    0.025,
                    0.0079056947,
                    0.0025,
                    0.00079056947,
                    0.00025000001,
                    7.9056947e-05,
                ],
            ),
            (
                r#"{"rope_parameters":{"rope_type":"yarn","rope_theta":10000.0,"factor":8.0,"original_max_position_embeddings":64,"beta_fast":8,"beta_slow":0.5,"truncate":false,"mscale":1.0,"mscale_all_dim":0.5}}"#,
                0,
                1.094179988101349,
                [
                    1.0,
                    0.22543858,
                    0.034956351,
                    0.0039528473,
                    0.00125,
                    0.00039528473,
                    0.000125,
                    3.9528473e-05,
                ],
            ),
            (
                r#"{"rope_parameters":{"rope_type":"dynamic","rope_theta":10000.0,"factor":4.0}}"#,
                100,
                1.0,
                [
                    1.0,
                    0.267223,
                    0.071408123,
                    0.019081892,
                    0.0050991201,
                    0.001362602,
                    0.00036411858,
                    9.730085e-05,
                ],
            ),
        ];
        for (json, seq_len, att, want) in cases {
            let (theta, r) = hf(json);
            assert!(
                (r.attention_factor as f64 - att).abs() <= 1e-6,
                "{json}: attention factor {}",
                r.attention_factor
            );
            let got = inv_freq(16, theta, &r, seq_len);
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 2e-6 * w,
                    "{json}: inv_freq[{i}] = {g}, transformers {w}"
                );
            }
        }
    }

    /// Dynamic NTK: plain frequencies up to max_position_embeddings, then row
    /// p holds the ones for length p + 1; yarn scales cos and sin.
    #[test]
    fn table_rows() {
        let r = RopeScaling {
            rope_type: RopeType::Dynamic,
            factor: 4.0,
            original_max_position_embeddings: 16,
            ..Default::default()
        };
        let t = rope_table(24, 8, 10000.0, &r);
        let plain = cos_sin_table(24, 8, 10000.0);
        assert_eq!(t[..16 * 8], plain[..16 * 8]);
        let inv = inv_freq(8, 10000.0, &r, 21);
        for (i, f) in inv.iter().enumerate() {
            let a = (20.0f32 * f) as f64;
            assert_eq!(t[(20 * 4 + i) * 2], a.cos() as f32);
        }
        assert_ne!(t[20 * 8 + 2], plain[20 * 8 + 2]);
        let y = RopeScaling {
            rope_type: RopeType::Yarn,
            attention_factor: 1.5,
            original_max_position_embeddings: 16,
            ..Default::default()
        };
        let t = rope_table(4, 8, 10000.0, &y);
        assert_eq!(t[0], 1.5);
        assert!(check_step(&r, 0, 16).is_ok() && check_step(&r, 16, 1).is_ok());
        let e = check_step(&r, 10, 7).unwrap_err();
        assert!(e.contains("dynamic RoPE") && e.contains("16"), "{e}");
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
