//! VRAM lowering: the forward pass (`graph::forward`, the one description of
//! the model the placement compiler and the SRAM executor also walk) into
//! the dispatches of a VRAM step.
//!
//! [`lower`] is one loop over the graph's nodes. A norm and the products
//! that read its output lower together, because VRAM mode fuses them; every
//! other node is one rule:
//!
//! * `Norm` + the `MatMul`s reading `xn` (with the `Bias` / `HeadNorm` nodes
//!   of their outputs between them) → the rmsnorm on prefill steps only
//!   (when decoding, the products normalise `x` themselves, `matmul::Norm`);
//!   q, k, v of one encoding as ONE stacked product (`Fuse::Split3`); gate,
//!   up of one encoding without biases, with the `SiluMul` after them, as
//!   ONE product (`Fuse::Glu`); else one product each (the lm_head: over the
//!   logit rows); then the biases, then the head norms.
//! * `Attention(l)` → rope + KV write and attention (prefill), rope +
//!   attention in one kernel (decode), with the layer's window, RoPE table
//!   and KV cache.
//! * `MatMul` reading `att` / `h` (o, down) → the product (`+=` into `x`, or
//!   into `xn` ahead of a post-norm).
//! * `Embed`, `Bias`, `HeadNorm`, `PostNorm`, `SiluMul` → row gather (Gemma:
//!   scaled), bias add, per-head rmsnorm, rmsnorm accumulated into `x`,
//!   activation · mul.
//!
//! A node no rule knows is an error naming it.

use super::ExecError;
use crate::gpu::Gpu;
use crate::graph::{Act, Node, NodeKind};
use crate::kernels::{
    attention, bias_add, embed, head_norm, matmul, rmsnorm, rope, silu_mul, GpuWeight, KernelOp,
    Step,
};
use crate::model::{Activation, LlamaConfig, ModelWeights, Tensor, WeightName};
use std::cell::OnceCell;

/// What the lowering reads: the model, the step's uniform and the
/// activation buffers (`ids`, then one per [`Act`]; gate and up scratch is
/// allocated here when a layer needs it).
pub(super) struct Context<'a> {
    pub gpu: &'a Gpu,
    pub cfg: &'a LlamaConfig,
    pub weights: &'a ModelWeights,
    pub step: &'a wgpu::Buffer,
    pub act: &'a super::Activations,
    /// Rows the activations hold.
    pub chunk: usize,
    /// KV-cache positions per sequence, and sequences.
    pub ctx: usize,
    pub batch: usize,
    /// One cos/sin table per distinct RoPE, and each layer's table.
    pub cos_sin: &'a [wgpu::Buffer],
    pub layer_table: &'a [usize],
}

/// What the lowering produces.
pub(super) struct Lowered {
    /// Embedding → final norm, in forward order.
    pub body: Vec<KernelOp>,
    /// The lm_head over the requested logit rows.
    pub head: Vec<KernelOp>,
    /// Weight matrices (stacked where fused).
    pub mats: Vec<GpuWeight>,
    /// Vectors (norms, biases), KV caches and gate/up scratch.
    pub keep: Vec<wgpu::Buffer>,
    pub kv_bytes: u64,
}

/// Lowers `nodes` (`graph::forward(cfg)`) into VRAM dispatches.
pub(super) fn lower(cx: Context<'_>, nodes: &[Node]) -> Result<Lowered, ExecError> {
    let mut lo = Lower {
        cx,
        out: Lowered {
            body: Vec::new(),
            head: Vec::new(),
            mats: Vec::new(),
            keep: Vec::new(),
            kv_bytes: 0,
        },
        mat_names: Vec::new(),
        glu: OnceCell::new(),
    };
    let mut at = 0;
    while at < nodes.len() {
        let n = &nodes[at];
        // Each rule returns how many nodes it lowered.
        at += match n.kind {
            NodeKind::Embed => lo.embed()?,
            NodeKind::Norm(w) => lo.normed_products(w, &nodes[at..])?,
            NodeKind::Attention(l) => lo.attention(l)?,
            NodeKind::MatMul { inp, .. } if inp != Act::Xn => lo.product(n)?,
            NodeKind::Bias { w, out } => lo.bias(w, out)?,
            NodeKind::HeadNorm { w, act } => lo.head_norm(w, act)?,
            NodeKind::PostNorm(w) => lo.post_norm(w)?,
            NodeKind::SiluMul(_) => lo.silu_mul(n)?,
            NodeKind::MatMul { .. } => {
                return Err(unknown(n, "a product of xn must follow its norm"));
            }
        };
    }
    let Lower { mut out, glu, .. } = lo;
    out.keep.extend(glu.into_inner().into_iter().flatten());
    Ok(out)
}

fn unknown(n: &Node, why: &str) -> ExecError {
    ExecError::ModeCannot {
        mode: "vram",
        what: format!(
            "cannot lower graph node `{}` ({:?}): {why}",
            n.label, n.kind
        ),
    }
}

/// Steps of several tokens (not a batched decode): the only ones that run
/// the separate norm, rope and attention dispatches; decode steps do that
/// work inside the products and the decode attention.
fn prefill(s: &Step) -> bool {
    s.n_tokens > 1 && !s.per_row()
}

struct Lower<'a> {
    cx: Context<'a>,
    out: Lowered,
    /// Name of each entry of `out.mats` (the tied embedding is used twice).
    mat_names: Vec<String>,
    /// Gate and up outputs, for layers whose gate|up product is not fused.
    glu: OnceCell<[wgpu::Buffer; 2]>,
}

impl<'a> Lower<'a> {
    fn tensor(&self, w: WeightName) -> Result<&'a Tensor, ExecError> {
        self.cx.weights.get(w).ok_or_else(|| ExecError::ModeCannot {
            mode: "vram",
            what: format!("cannot run without weight `{w}`, which the graph uses"),
        })
    }

    /// Index in `out.mats` of the matrix `name`: `parts` stacked row-wise
    /// (one weight for a fused product), uploaded on first use.
    fn matrix(&mut self, name: &str, parts: &[WeightName]) -> Result<usize, ExecError> {
        if let Some(i) = self.mat_names.iter().position(|n| n == name) {
            return Ok(i);
        }
        let ts = parts
            .iter()
            .map(|&w| self.tensor(w))
            .collect::<Result<Vec<_>, _>>()?;
        let stacked;
        let t = match ts[..] {
            [t] => t,
            _ => {
                stacked = stack(&ts);
                &stacked
            }
        };
        let m = GpuWeight::upload(self.cx.gpu, name, t)?;
        self.out.mats.push(m);
        self.mat_names.push(name.to_string());
        Ok(self.out.mats.len() - 1)
    }

    /// Index in `out.keep` of the vector `w` widened to f32; `offset`: a
    /// norm weight (Gemma's 1 + w, added in f32 as transformers does).
    fn vector(&mut self, w: WeightName, offset: bool) -> Result<usize, ExecError> {
        let mut v = self.tensor(w)?.to_f32();
        if offset {
            let add = self.cx.cfg.arch.norm_weight_offset;
            v.iter_mut().for_each(|x| *x += add);
        }
        let b = self
            .cx
            .gpu
            .upload(&w.to_string(), bytemuck::cast_slice(&v))?;
        self.out.keep.push(b);
        Ok(self.out.keep.len() - 1)
    }

    fn act(&self, a: Act) -> Result<&wgpu::Buffer, ExecError> {
        let act = self.cx.act;
        Ok(match a {
            Act::X => &act.x,
            Act::Xn => &act.xn,
            Act::Q => &act.q,
            Act::K => &act.k,
            Act::V => &act.v,
            Act::Att => &act.att,
            Act::H => &act.h,
            Act::Logits => &act.logits,
            Act::G | Act::U => {
                if self.glu.get().is_none() {
                    let size = (self.cx.chunk * self.cx.cfg.intermediate_size * 4) as u64;
                    let g = self.cx.gpu.storage_buffer("glu.gate", size)?;
                    let u = self.cx.gpu.storage_buffer("glu.up", size)?;
                    let _ = self.glu.set([g, u]);
                }
                let [g, u] = self.glu.get().expect("set above");
                if a == Act::G {
                    g
                } else {
                    u
                }
            }
            Act::AttState => {
                return Err(ExecError::ModeCannot {
                    mode: "vram",
                    what: "keeps the attention state inside its kernel, not between nodes".into(),
                })
            }
        })
    }

    /// `x = E[ids]` (Gemma: · sqrt(D)).
    fn embed(&mut self) -> Result<usize, ExecError> {
        let e = self.matrix("embed", &[WeightName::Embed])?;
        let cx = &self.cx;
        let scale = cx.cfg.arch.embed_scale.unwrap_or(1.0);
        let op = embed::build_scaled(
            cx.gpu,
            cx.step,
            &self.out.mats[e],
            &cx.act.ids,
            &cx.act.x,
            scale,
        )?;
        self.out.body.push(op);
        Ok(1)
    }

    /// `Norm` (`nodes[0]`) and the products that read its `xn`, with the
    /// biases and head norms of their outputs between them: the norm on
    /// prefill steps (decode products normalise `x` themselves), the
    /// products (stacked q|k|v; gate|up fused with the `SiluMul` after the
    /// run), then the biases, then the head norms.
    fn normed_products(&mut self, norm: WeightName, nodes: &[Node]) -> Result<usize, ExecError> {
        let run_len = nodes[1..]
            .iter()
            .take_while(|n| {
                matches!(
                    n.kind,
                    NodeKind::MatMul { inp: Act::Xn, .. }
                        | NodeKind::Bias { .. }
                        | NodeKind::HeadNorm { .. }
                )
            })
            .count();
        let run = &nodes[1..1 + run_len];
        let (outs, head) = check_run(&nodes[0], run)?;
        let products: Vec<&Node> = run
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::MatMul { .. }))
            .collect();
        let ws: Vec<WeightName> = products.iter().filter_map(|n| n.weight()).collect();
        let mut lowered = 1 + run_len;

        // The norm as its own dispatch only where the products do not
        // apply it: prefill steps (the lm_head: several logit rows).
        let when: fn(&Step) -> bool = if head {
            |s| s.n_out_rows > 1 && !s.per_row()
        } else {
            prefill
        };
        let nw = self.norm(&nodes[0].label, norm, when)?;

        let stackable = self.stackable(&ws)?;
        let layer = products[0]
            .layer
            .map_or(String::new(), |l| format!("layers.{l}."));
        let silu_next =
            (nodes.get(lowered)).is_some_and(|n| matches!(n.kind, NodeKind::SiluMul(_)));
        // The fused GLU knows only SiLU, and biases go in before it.
        let glu = stackable
            && silu_next
            && run_len == 2
            && self.cx.cfg.arch.activation == Activation::Silu;
        match outs[..] {
            [Act::Q, Act::K, Act::V] if stackable => {
                let fuse = matmul::Fuse::Split3 {
                    q_rows: self.tensor(ws[0])?.rows(),
                    k_rows: self.tensor(ws[1])?.rows(),
                };
                let ys = [Act::Q, Act::K, Act::V];
                self.normed_product(&format!("{layer}wqkv"), &ws, &ys, fuse, nw, false)?;
            }
            [Act::G, Act::U] if glu => {
                let fuse = matmul::Fuse::Glu;
                let name = format!("{layer}w_gate_up");
                self.normed_product(&name, &ws, &[Act::H], fuse, nw, false)?;
                lowered += 1;
            }
            _ => {
                for (n, (&w, &y)) in products.iter().zip(ws.iter().zip(&outs)) {
                    let fuse = matmul::Fuse::None;
                    self.normed_product(&n.label, &[w], &[y], fuse, nw, head)?;
                }
            }
        }
        for n in run {
            if let NodeKind::Bias { w, out } = n.kind {
                self.bias(w, out)?;
            }
        }
        for n in run {
            if let NodeKind::HeadNorm { w, act } = n.kind {
                self.head_norm(w, act)?;
            }
        }
        Ok(lowered)
    }

    /// `xn = rmsnorm(x) · w` on the steps `when` holds; returns the index
    /// of `w` in `out.keep` (the products apply it on the other steps).
    fn norm(
        &mut self,
        label: &str,
        w: WeightName,
        when: fn(&Step) -> bool,
    ) -> Result<usize, ExecError> {
        let nw = self.vector(w, true)?;
        let cx = &self.cx;
        let (d, eps, a) = (cx.cfg.hidden_size, cx.cfg.rms_norm_eps, cx.act);
        let wb = &self.out.keep[nw];
        let op = rmsnorm::build(cx.gpu, cx.step, label, d, eps, wb, &a.x, &a.xn)?;
        self.out.body.push(op.only_when(when));
        Ok(nw)
    }

    /// Whether the weights `ws` stack into one: they share an encoding and a
    /// row length (Q4_K_M files keep attn_v in Q6_K: separate products).
    fn stackable(&self, ws: &[WeightName]) -> Result<bool, ExecError> {
        let ts = ws
            .iter()
            .map(|&w| self.tensor(w))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ts
            .iter()
            .all(|t| t.dtype == ts[0].dtype && t.cols() == ts[0].cols()))
    }

    /// `ys = xn @ W.T` (dispatch `name`) for the weights `ws`, stacked when
    /// several, the norm `keep[nw]` applied inside on decode steps; `head`:
    /// the logit rows, into the head's dispatches.
    fn normed_product(
        &mut self,
        name: &str,
        ws: &[WeightName],
        ys: &[Act],
        fuse: matmul::Fuse,
        nw: usize,
        head: bool,
    ) -> Result<(), ExecError> {
        let m = match ws {
            [w] => self.matrix(&w.to_string(), ws)?,
            _ => self.matrix(name, ws)?,
        };
        let ys = ys
            .iter()
            .map(|&a| self.act(a))
            .collect::<Result<Vec<_>, _>>()?;
        let cx = &self.cx;
        let norm = matmul::Norm {
            x: &cx.act.x,
            weight: &self.out.keep[nw],
            eps: cx.cfg.rms_norm_eps,
        };
        let rows = if head {
            matmul::Rows::OutRows
        } else {
            matmul::Rows::Tokens
        };
        let ops = matmul::build_fused(
            cx.gpu,
            cx.step,
            name,
            &self.out.mats[m],
            &cx.act.xn,
            &ys,
            false,
            rows,
            fuse,
            Some(norm),
        )?;
        if head {
            self.out.head.extend(ops);
        } else {
            self.out.body.extend(ops);
        }
        Ok(())
    }

    /// RoPE on q and k, k and v into the layer's KV cache, attention with
    /// the layer's window and RoPE table: rope and attention as two
    /// dispatches on prefill steps, one (`rope_attention`) when decoding.
    fn attention(&mut self, l: usize) -> Result<usize, ExecError> {
        let cx = &self.cx;
        let c = cx.cfg;
        let size = (cx.batch * cx.ctx * c.kv_dim() * 4) as u64;
        let k_cache = cx
            .gpu
            .storage_buffer(&format!("layers.{l}.k_cache"), size)?;
        let v_cache = cx
            .gpu
            .storage_buffer(&format!("layers.{l}.v_cache"), size)?;
        let a = cx.act;
        let shape = rope::Shape {
            n_heads: c.num_heads,
            n_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            layout: c.rope_layout,
        };
        let cos_sin = &cx.cos_sin[cx.layer_table[l]];
        let (window, scale) = (c.layer_window(l), c.attn_scale());
        let heads = (c.num_heads, c.num_kv_heads, c.head_dim);
        let name = |what: &str| format!("layers.{l}.{what}");
        let ops = [
            rope::build(
                cx.gpu,
                cx.step,
                &name("rope"),
                &shape,
                cos_sin,
                &a.q,
                &a.k,
                &a.v,
                &k_cache,
                &v_cache,
            )?
            .only_when(prefill),
            attention::build_scaled(
                cx.gpu,
                cx.step,
                &name("attention"),
                heads,
                [&a.q, &k_cache, &v_cache, &a.att],
                window,
                scale,
            )?
            .only_when(prefill),
            attention::build_decode_rope_scaled(
                cx.gpu,
                cx.step,
                &name("rope_attention"),
                &shape,
                cos_sin,
                [&a.q, &a.k, &a.v, &k_cache, &v_cache, &a.att, &a.rows],
                window,
                scale,
            )?,
        ];
        self.out.body.extend(ops);
        self.out.keep.extend([k_cache, v_cache]);
        self.out.kv_bytes += 2 * size;
        Ok(1)
    }

    /// `out (+)= W · inp` over the step's tokens (o, down).
    fn product(&mut self, n: &Node) -> Result<usize, ExecError> {
        let NodeKind::MatMul {
            w,
            inp,
            out,
            acc,
            head: false,
        } = n.kind
        else {
            return Err(unknown(n, "the lm_head must follow the final norm"));
        };
        let m = self.matrix(&w.to_string(), &[w])?;
        let (x, y) = (self.act(inp)?, self.act(out)?);
        let cx = &self.cx;
        let mat = &self.out.mats[m];
        let rows = matmul::Rows::Tokens;
        let ops = matmul::build(cx.gpu, cx.step, &n.label, mat, x, y, acc, rows)?;
        self.out.body.extend(ops);
        Ok(1)
    }

    /// `out += b`.
    fn bias(&mut self, w: WeightName, out: Act) -> Result<usize, ExecError> {
        let b = self.vector(w, false)?;
        let y = self.act(out)?;
        let cx = &self.cx;
        let n = self.tensor(w)?.numel();
        let op = bias_add::build(cx.gpu, cx.step, &w.to_string(), n, &self.out.keep[b], y)?;
        self.out.body.push(op);
        Ok(1)
    }

    /// RMSNorm of each head of `act` (q or k) by `w`.
    fn head_norm(&mut self, w: WeightName, act: Act) -> Result<usize, ExecError> {
        let hw = self.vector(w, true)?;
        let y = self.act(act)?;
        let c = self.cx.cfg;
        let heads = act.width(c) / c.head_dim;
        let op = head_norm::build(
            self.cx.gpu,
            self.cx.step,
            &w.to_string(),
            heads,
            c.head_dim,
            c.rms_norm_eps,
            &self.out.keep[hw],
            y,
        )?;
        self.out.body.push(op);
        Ok(1)
    }

    /// `x += rmsnorm(xn) · w` (Gemma's post-norms).
    fn post_norm(&mut self, w: WeightName) -> Result<usize, ExecError> {
        let pw = self.vector(w, true)?;
        let cx = &self.cx;
        let (d, eps) = (cx.cfg.hidden_size, cx.cfg.rms_norm_eps);
        let (xn, x, wb) = (&cx.act.xn, &cx.act.x, &self.out.keep[pw]);
        let op = rmsnorm::build_accumulate(cx.gpu, cx.step, &w.to_string(), d, eps, wb, xn, x)?;
        self.out.body.push(op);
        Ok(1)
    }

    /// `h = act(g) · u` (SiLU, or Gemma's GELU-tanh).
    fn silu_mul(&mut self, n: &Node) -> Result<usize, ExecError> {
        let (g, u) = (self.act(Act::G)?, self.act(Act::U)?);
        let cx = &self.cx;
        let c = cx.cfg;
        let op = silu_mul::build_act(
            cx.gpu,
            cx.step,
            &n.label,
            c.intermediate_size,
            g,
            u,
            &cx.act.h,
            c.arch.activation,
        )?;
        self.out.body.push(op);
        Ok(1)
    }
}

/// The outputs of the products in `run` (the nodes after `norm` that read
/// its `xn`), and whether the run is the lm_head. Errors when the biases
/// and head norms cannot move after every product of the run (each must
/// follow the product of its activation, no bias after a head norm of the
/// same activation), or the run is not a product set VRAM mode runs.
fn check_run(norm: &Node, run: &[Node]) -> Result<(Vec<Act>, bool), ExecError> {
    let mut outs = Vec::new();
    let mut normed = Vec::new();
    let mut head = false;
    for n in run {
        match n.kind {
            NodeKind::MatMul {
                out, acc: false, ..
            } if !outs.contains(&out) && !normed.contains(&out) => {
                outs.push(out);
                head |= matches!(n.kind, NodeKind::MatMul { head: true, .. });
            }
            NodeKind::Bias { out: a, .. } if outs.contains(&a) && !normed.contains(&a) => {}
            NodeKind::HeadNorm { act, .. } if outs.contains(&act) => normed.push(act),
            _ => return Err(unknown(n, &format!("not lowerable after `{}`", norm.label))),
        }
    }
    if outs.is_empty() {
        return Err(unknown(norm, "no product reads its output"));
    }
    if head && outs != [Act::Logits] {
        return Err(unknown(norm, "the lm_head shares its norm"));
    }
    Ok((outs, head))
}

/// Weights with the same encoding and row length stacked row-wise into one
/// tensor (Q/K/V; gate/up), so one dispatch computes all of them. Same
/// bytes as the file, in one buffer.
fn stack(parts: &[&Tensor]) -> Tensor {
    let mut bytes = Vec::with_capacity(parts.iter().map(|t| t.byte_len()).sum());
    for t in parts {
        bytes.extend_from_slice(t.bytes.as_slice());
    }
    Tensor {
        dtype: parts[0].dtype,
        shape: vec![parts.iter().map(|t| t.rows()).sum(), parts[0].cols()],
        bytes: crate::model::weights::Bytes::Owned(std::sync::Arc::new(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::forward;

    /// The nodes after layer 0's attention norm that read its output.
    fn qkv_run(c: &LlamaConfig) -> (Node, Vec<Node>) {
        let g = forward(c);
        let at = |label: &str| g.iter().position(|n| n.label == label).unwrap();
        let (norm, attn) = (at("layers.0.attn_norm"), at("layers.0.attention"));
        (g[norm].clone(), g[norm + 1..attn].to_vec())
    }

    #[test]
    fn biases_and_head_norms_move_after_the_products_only_if_that_changes_nothing() {
        let mut c = LlamaConfig::tiny_for_tests(1, 512, false);
        c.arch.qkv_bias = true;
        c.arch.qk_norm = true;
        let (norm, run) = qkv_run(&c);
        assert_eq!(
            check_run(&norm, &run).unwrap(),
            (vec![Act::Q, Act::K, Act::V], false)
        );
        let err = |run: &[Node]| check_run(&norm, run).unwrap_err().to_string();
        // wq, wq.bias, q_norm, …: a bias after its activation's head norm.
        let mut r = run.clone();
        r.swap(1, 2);
        assert!(err(&r).contains("`layers.0.wq.bias`"), "{}", err(&r));
        // A bias before its product.
        let mut r = run.clone();
        r.swap(0, 1);
        assert!(err(&r).contains("`layers.0.wq.bias`"), "{}", err(&r));
        // An accumulating product of xn.
        let mut r = run.clone();
        if let NodeKind::MatMul { acc, .. } = &mut r[0].kind {
            *acc = true;
        }
        assert!(err(&r).contains("`layers.0.wq`"), "{}", err(&r));
        assert!(err(&[]).contains("`layers.0.attn_norm`"), "{}", err(&[]));
    }
}
