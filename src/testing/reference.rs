//! A plain CPU forward pass of a Llama model, for tests: the spec the GPU
//! kernels are checked against. llama2.c style, one token at a time with a
//! KV cache, f64 sums, no fusion and no tiling; nothing here shares code with
//! the kernels or the executors (only the loaded weights, dequantized to f32
//! with [`crate::model::Tensor::to_f32`]).
//!
//! Per token at position `pos`:
//! ```text
//! x = embed[id] (* embed_scale: Gemma)
//! for each layer:                   (norm weights w: (offset + w), Gemma's 1 + w)
//!     h = rmsnorm(x) * attn_norm
//!     q, k, v = h @ Wq.T (+ bq), h @ Wk.T (+ bk), h @ Wv.T (+ bv)   (biases: ArchFeatures)
//!     q, k = per head: rmsnorm(q_h) * q_norm, rmsnorm(k_h) * k_norm      (Qwen3 qk_norm)
//!     rotate q and k (RoPE, the config's pair layout), append k, v to the cache
//!     (the layer's RoPE base: Gemma's sliding layers have their own)
//!     o = per head: softmax(q · K[s..=pos] * scale) · V[s..=pos]
//!         (scale 1/sqrt(head_dim) unless the config sets one; q head h
//!         reads KV head h / (heads / kv_heads); s = 0, or pos - window + 1
//!         with the layer's sliding window)
//!     x += o @ Wo.T (+ bo)              (post-norms: x += rmsnorm(..) * post_attn)
//!     h = rmsnorm(x) * ffn_norm
//!     x += (act(h @ Wgate.T + bg) * (h @ Wup.T + bu)) @ Wdown.T (+ bd)
//!         (act: SiLU, or GELU-tanh; post-norms: x += rmsnorm(..) * post_ffn)
//! logits = (rmsnorm(x) * final_norm) @ Wout.T    (Wout = embed when tied)
//! ```

use crate::model::{LayerTensor, LlamaConfig, ModelWeights, RopeLayout};

/// One layer's weights as f32, row-major `[out, in]` like the file.
struct Layer {
    attn_norm: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    ffn_norm: Vec<f32>,
    w_gate: Vec<f32>,
    w_up: Vec<f32>,
    w_down: Vec<f32>,
    /// Projection biases (zeros where the architecture has none).
    bq: Vec<f32>,
    bk: Vec<f32>,
    bv: Vec<f32>,
    bo: Vec<f32>,
    b_gate: Vec<f32>,
    b_up: Vec<f32>,
    b_down: Vec<f32>,
    /// Per-head q/k norm weights (empty where the architecture has none).
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    /// Post-norm weights (empty where the architecture has none).
    post_attn: Vec<f32>,
    post_ffn: Vec<f32>,
}

/// `y += b` (a missing bias is all zeros).
fn add(mut y: Vec<f32>, b: &[f32]) -> Vec<f32> {
    for (v, &bi) in y.iter_mut().zip(b) {
        *v += bi;
    }
    y
}

/// The model, dequantized, plus one sequence's KV cache.
pub struct RefModel {
    pub config: LlamaConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    /// `None`: tied to `embed`.
    lm_head: Option<Vec<f32>>,
    /// Per layer, per position: rotated k `[kv_heads * head_dim]`.
    k_cache: Vec<Vec<Vec<f32>>>,
    /// Per layer, per position: v `[kv_heads * head_dim]`.
    v_cache: Vec<Vec<Vec<f32>>>,
}

/// `y[n] = sum_k w[n, k] x[k]` for `w` of shape `[y.len(), x.len()]`.
fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    assert_eq!(w.len() % x.len(), 0);
    w.chunks_exact(x.len())
        .map(|row| {
            row.iter()
                .zip(x)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

/// `x / sqrt(mean(x²) + eps) * w` (LlamaRMSNorm).
fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps as f64).sqrt();
    x.iter()
        .zip(w)
        .map(|(&v, &g)| (v as f64 * inv) as f32 * g)
        .collect()
}

fn silu(x: f32) -> f32 {
    (x as f64 / (1.0 + (-x as f64).exp())) as f32
}

/// PyTorch's `gelu(x, approximate="tanh")`.
fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    (0.5 * x * (1.0 + inner.tanh())) as f32
}

/// RoPE's inverse frequencies as Hugging Face computes them (default type):
/// `1 / theta^(2i / head_dim)` in f32.
pub fn inv_freq(cfg: &LlamaConfig) -> Vec<f32> {
    inv_freq_theta(cfg.head_dim, cfg.rope_theta)
}

/// [`inv_freq`] for base `theta`.
fn inv_freq_theta(hd: usize, theta: f32) -> Vec<f32> {
    (0..hd / 2)
        .map(|i| {
            let e = (2 * i) as f32 / hd as f32;
            1.0 / (theta as f64).powf(e as f64) as f32
        })
        .collect()
}

/// Rotates one head in place for position `pos`: pair i is (i, i + hd/2)
/// (`Halves`, HF rotate_half) or (2i, 2i + 1) (`Adjacent`, GGUF); the angle
/// is `pos * inv_freq[i]` (an f32 product, as HF does).
fn rope(head: &mut [f32], pos: usize, inv_freq: &[f32], layout: RopeLayout) {
    let half = head.len() / 2;
    for (i, &f) in inv_freq.iter().enumerate().take(half) {
        let angle = (pos as f32 * f) as f64;
        let (c, s) = (angle.cos(), angle.sin());
        let (i0, i1) = match layout {
            RopeLayout::Halves => (i, i + half),
            RopeLayout::Adjacent => (2 * i, 2 * i + 1),
        };
        let (x0, x1) = (head[i0] as f64, head[i1] as f64);
        head[i0] = (x0 * c - x1 * s) as f32;
        head[i1] = (x1 * c + x0 * s) as f32;
    }
}

impl RefModel {
    /// Dequantizes every weight of a loaded model.
    pub fn new(config: &LlamaConfig, w: &ModelWeights) -> Self {
        let layers = w
            .layers
            .iter()
            .map(|l| {
                let b = |t: LayerTensor| l.bias(t).map(|x| x.to_f32()).unwrap_or_default();
                let off = config.arch.norm_weight_offset;
                let nw = |t: &crate::model::Tensor| -> Vec<f32> {
                    t.to_f32().into_iter().map(|v| off + v).collect()
                };
                let hn = |t: LayerTensor| l.head_norm(t).map(nw).unwrap_or_default();
                let pn = |t: LayerTensor| l.post_norm(t).map(nw).unwrap_or_default();
                Layer {
                    attn_norm: nw(&l.attn_norm),
                    wq: l.wq.to_f32(),
                    wk: l.wk.to_f32(),
                    wv: l.wv.to_f32(),
                    wo: l.wo.to_f32(),
                    ffn_norm: nw(&l.ffn_norm),
                    w_gate: l.w_gate.to_f32(),
                    w_up: l.w_up.to_f32(),
                    w_down: l.w_down.to_f32(),
                    bq: b(LayerTensor::Q),
                    bk: b(LayerTensor::K),
                    bv: b(LayerTensor::V),
                    bo: b(LayerTensor::O),
                    b_gate: b(LayerTensor::Gate),
                    b_up: b(LayerTensor::Up),
                    b_down: b(LayerTensor::Down),
                    q_norm: hn(LayerTensor::Q),
                    k_norm: hn(LayerTensor::K),
                    post_attn: pn(LayerTensor::O),
                    post_ffn: pn(LayerTensor::Down),
                }
            })
            .collect();
        RefModel {
            config: config.clone(),
            embed: w.embed.to_f32(),
            layers,
            final_norm: w
                .final_norm
                .to_f32()
                .into_iter()
                .map(|v| config.arch.norm_weight_offset + v)
                .collect(),
            lm_head: w.lm_head.as_ref().map(|t| t.to_f32()),
            k_cache: vec![Vec::new(); config.num_layers],
            v_cache: vec![Vec::new(); config.num_layers],
        }
    }

    /// Tokens in the KV cache.
    pub fn position(&self) -> usize {
        self.k_cache.first().map_or(0, |c| c.len())
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) {
        self.k_cache.iter_mut().for_each(|c| c.clear());
        self.v_cache.iter_mut().for_each(|c| c.clear());
    }

    /// Runs one token at the next position; returns its logits `[vocab]`.
    pub fn step(&mut self, id: u32) -> Vec<f32> {
        let c = &self.config;
        let (d, hd) = (c.hidden_size, c.head_dim);
        let (heads, kv_heads) = (c.num_heads, c.num_kv_heads);
        let group = heads / kv_heads;
        let pos = self.position();
        let id = id as usize;
        let mut x = self.embed[id * d..(id + 1) * d].to_vec();
        if let Some(s) = c.arch.embed_scale {
            x.iter_mut().for_each(|v| *v *= s);
        }
        for (li, l) in self.layers.iter().enumerate() {
            let (theta, scaling) = c.layer_rope(li);
            let mut freqs = inv_freq_theta(hd, theta);
            // Linear scaling (transformers: `inv_freq /= factor`, f32); the
            // other scaling types are not modelled here.
            if scaling.rope_type == crate::model::RopeType::Linear {
                freqs.iter_mut().for_each(|f| *f /= scaling.factor);
            }
            // Attention block.
            let h = rmsnorm(&x, &l.attn_norm, c.rms_norm_eps);
            let mut q = add(matvec(&l.wq, &h), &l.bq);
            let mut k = add(matvec(&l.wk, &h), &l.bk);
            let v = add(matvec(&l.wv, &h), &l.bv);
            if !l.q_norm.is_empty() {
                q = q
                    .chunks(hd)
                    .flat_map(|x| rmsnorm(x, &l.q_norm, c.rms_norm_eps))
                    .collect();
                k = k
                    .chunks(hd)
                    .flat_map(|x| rmsnorm(x, &l.k_norm, c.rms_norm_eps))
                    .collect();
            }
            for head in q.chunks_mut(hd).chain(k.chunks_mut(hd)) {
                rope(head, pos, &freqs, c.rope_layout);
            }
            self.k_cache[li].push(k);
            self.v_cache[li].push(v);
            // Sliding window: only the last `window` positions (this one included).
            let first = match c.layer_window(li) {
                0 => 0,
                w => (pos + 1).saturating_sub(w),
            };
            let (keys, values) = (&self.k_cache[li][first..], &self.v_cache[li][first..]);
            let scale = match c.arch.attn_scale {
                Some(s) => s as f64,
                None => 1.0 / (hd as f64).sqrt(),
            };
            let mut o = vec![0f32; heads * hd];
            for qh in 0..heads {
                let kvh = qh / group;
                let qv = &q[qh * hd..(qh + 1) * hd];
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|kr| {
                        let kh = &kr[kvh * hd..(kvh + 1) * hd];
                        qv.iter()
                            .zip(kh)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = p.iter().sum();
                for e in 0..hd {
                    let acc: f64 = p
                        .iter()
                        .zip(values)
                        .map(|(&pj, vr)| pj * vr[kvh * hd + e] as f64)
                        .sum();
                    o[qh * hd + e] = (acc / z) as f32;
                }
            }
            let mut o = add(matvec(&l.wo, &o), &l.bo);
            if !l.post_attn.is_empty() {
                o = rmsnorm(&o, &l.post_attn, c.rms_norm_eps);
            }
            for (xi, oi) in x.iter_mut().zip(o) {
                *xi += oi;
            }
            // Feed-forward block (SwiGLU).
            let h = rmsnorm(&x, &l.ffn_norm, c.rms_norm_eps);
            let gate = add(matvec(&l.w_gate, &h), &l.b_gate);
            let up = add(matvec(&l.w_up, &h), &l.b_up);
            let f = match c.arch.activation {
                crate::model::Activation::Silu => silu,
                crate::model::Activation::GeluTanh => gelu_tanh,
            };
            let act: Vec<f32> = gate.iter().zip(&up).map(|(&g, &u)| f(g) * u).collect();
            let mut dn = add(matvec(&l.w_down, &act), &l.b_down);
            if !l.post_ffn.is_empty() {
                dn = rmsnorm(&dn, &l.post_ffn, c.rms_norm_eps);
            }
            for (xi, di) in x.iter_mut().zip(dn) {
                *xi += di;
            }
        }
        let h = rmsnorm(&x, &self.final_norm, c.rms_norm_eps);
        matvec(self.lm_head.as_ref().unwrap_or(&self.embed), &h)
    }

    /// Runs `ids` from the current position; logits of every position,
    /// `[ids.len() * vocab]`.
    pub fn forward(&mut self, ids: &[u32]) -> Vec<f32> {
        ids.iter().flat_map(|&id| self.step(id)).collect()
    }
}

/// The largest logit's index (first on ties) and its margin over the second.
pub fn top1_margin(logits: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    let second = logits
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best.0)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    (best.0 as u32, best.1 - second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference itself against the Hugging Face logits of stories260K
    /// (every position of the first prompt within 1e-4).
    #[test]
    fn reference_matches_transformers_on_stories260k() {
        let m = crate::model::load(&crate::model::default_model_path()).unwrap();
        let r =
            super::super::Reference::load(&super::super::fixture_dir("stories260K"), "stories260K")
                .unwrap();
        let p = &r.prompts[0];
        let want = r
            .tensor(p.all_logits_tensor.as_deref().unwrap())
            .unwrap()
            .to_vec();
        let mut rm = RefModel::new(&m.config, &m.weights);
        let got = rm.forward(&p.input_ids);
        assert_eq!(got.len(), want.len());
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            err < 1e-4,
            "reference vs transformers: max |logit error| {err}"
        );
    }
}
