//! The forward pass of a Llama-family model, described once.
//!
//! [`forward`] lists the operations of one token's pass in order — each a
//! [`Node`] naming the activations ([`Act`]) it reads and writes and the
//! weight it uses. Everything downstream consumes this one list:
//!
//! * the placement compiler (`chip::place`) walks it to put each weight (at
//!   its last use) and each layer's KV cache onto chips, and sizes every
//!   chip's scratch from [`live_during`];
//! * the program (`chip::program`) expands each node into the work items the
//!   chips that hold its weights run ([`Work`]), and finds what crosses each
//!   chip boundary with the same liveness rule ([`live_out`]); the plan
//!   stores that program and the SRAM executor runs it;
//! * VRAM mode (`exec::vram`) lowers it node by node into its kernels,
//!   fusing a norm with the products that read its output.
//!
//! Liveness is computed here and nowhere else.

use crate::model::{LayerTensor, LlamaConfig, WeightName};
use std::collections::BTreeSet;

/// An activation vector (one row per token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Act {
    /// The residual stream.
    X,
    /// The normalised residual (input of the projections).
    Xn,
    Q,
    K,
    V,
    /// Attention output (input of `wo`).
    Att,
    /// Running online-softmax state between KV blocks: `[heads, 2 + head_dim]`.
    AttState,
    G,
    U,
    /// `silu(g) · u` (input of `w_down`).
    H,
    Logits,
}

impl Act {
    pub const ALL: [Act; 11] = [
        Act::X,
        Act::Xn,
        Act::Q,
        Act::K,
        Act::V,
        Act::Att,
        Act::AttState,
        Act::G,
        Act::U,
        Act::H,
        Act::Logits,
    ];
    /// Values per token.
    pub fn width(self, c: &LlamaConfig) -> usize {
        match self {
            Act::X | Act::Xn => c.hidden_size,
            Act::Q | Act::Att => c.q_dim(),
            Act::K | Act::V => c.kv_dim(),
            Act::G | Act::U | Act::H => c.intermediate_size,
            Act::Logits => c.vocab_size,
            Act::AttState => c.num_heads * (2 + c.head_dim),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Act::X => "x",
            Act::Xn => "xn",
            Act::Q => "q",
            Act::K => "k",
            Act::V => "v",
            Act::Att => "att",
            Act::AttState => "att_state",
            Act::G => "g",
            Act::U => "u",
            Act::H => "h",
            Act::Logits => "logits",
        }
    }
}

/// What a node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// `x = E[token]`: a row gather from the embedding.
    Embed,
    /// `xn = rmsnorm(x) · w`.
    Norm(WeightName),
    /// `out (+)= W · inp`; `head`: the logits (only the step's output rows).
    MatMul {
        w: WeightName,
        inp: Act,
        out: Act,
        acc: bool,
        head: bool,
    },
    /// RoPE on q and k, k/v into the layer's KV cache, causal GQA attention.
    Attention(usize),
    /// `h = silu(g) · u`.
    SiluMul(usize),
    /// `out += b`: the bias `w` (`WeightName::Bias`) of the product that
    /// wrote `out` just before (Qwen2 q/k/v, Llama `attention_bias` /
    /// `mlp_bias`).
    Bias { w: WeightName, out: Act },
    /// RMSNorm of each head of `act` (q or k) by `w`
    /// (`WeightName::HeadNorm`, `[head_dim]`), before RoPE (Qwen3, Gemma 3).
    HeadNorm { w: WeightName, act: Act },
    /// `x += rmsnorm(xn) · w`: the post-norm `w` (`WeightName::PostNorm`)
    /// of the attention or MLP output, which the product wrote into `xn`
    /// (Gemma 3).
    PostNorm(WeightName),
}

/// One operation of the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    /// `embed`, `layers.3.wq`, `layers.3.attention`, `final_norm`, `lm_head`, …
    pub label: String,
    pub layer: Option<usize>,
}

impl Node {
    /// The weight this node multiplies or gathers from (norm vectors included).
    pub fn weight(&self) -> Option<WeightName> {
        match self.kind {
            NodeKind::Embed => Some(WeightName::Embed),
            NodeKind::Norm(w) | NodeKind::MatMul { w, .. } => Some(w),
            NodeKind::Bias { w, .. } | NodeKind::HeadNorm { w, .. } => Some(w),
            NodeKind::PostNorm(w) => Some(w),
            NodeKind::Attention(_) | NodeKind::SiluMul(_) => None,
        }
    }
    /// Activations written (whole width); the attention's softmax state
    /// included.
    pub fn writes(&self) -> Vec<Act> {
        match self.kind {
            NodeKind::Embed => vec![Act::X],
            NodeKind::Norm(_) => vec![Act::Xn],
            NodeKind::MatMul { out, .. } => vec![out],
            NodeKind::Attention(_) => vec![Act::AttState, Act::Att],
            NodeKind::SiluMul(_) => vec![Act::H],
            NodeKind::Bias { out, .. } => vec![out],
            NodeKind::HeadNorm { act, .. } => vec![act],
            NodeKind::PostNorm(_) => vec![Act::X],
        }
    }
}

/// What one piece of work reads and writes, for liveness.
pub trait Access {
    /// Activations read (before anything is written).
    fn reads(&self) -> Vec<Act>;
    /// Activations rewritten from scratch (their old value is dead).
    fn kills(&self) -> Vec<Act>;
}

impl Access for Node {
    fn reads(&self) -> Vec<Act> {
        match self.kind {
            NodeKind::Embed => vec![],
            NodeKind::Norm(_) => vec![Act::X],
            NodeKind::MatMul { inp, out, acc, .. } => {
                if acc {
                    vec![inp, out]
                } else {
                    vec![inp]
                }
            }
            NodeKind::Attention(_) => vec![Act::Q, Act::K, Act::V],
            NodeKind::SiluMul(_) => vec![Act::G, Act::U],
            NodeKind::Bias { out, .. } => vec![out],
            NodeKind::HeadNorm { act, .. } => vec![act],
            NodeKind::PostNorm(_) => vec![Act::Xn, Act::X],
        }
    }
    fn kills(&self) -> Vec<Act> {
        match self.kind {
            NodeKind::MatMul { acc: true, .. } => vec![],
            NodeKind::Bias { .. } | NodeKind::HeadNorm { .. } => vec![],
            NodeKind::PostNorm(_) => vec![],
            _ => self.writes(),
        }
    }
}

/// The forward pass of `cfg`, in order.
pub fn forward(cfg: &LlamaConfig) -> Vec<Node> {
    let mut v = vec![Node {
        kind: NodeKind::Embed,
        label: "embed".into(),
        layer: None,
    }];
    let mat = |w: WeightName, inp, out, acc| NodeKind::MatMul {
        w,
        inp,
        out,
        acc,
        head: false,
    };
    for l in 0..cfg.num_layers {
        let lw = |t| WeightName::Layer(l, t);
        let mut push = |kind: NodeKind, what: &str| {
            v.push(Node {
                kind,
                label: format!("layers.{l}.{what}"),
                layer: Some(l),
            })
        };
        use LayerTensor as T;
        // A projection, then its bias where the architecture has one.
        let proj = |push: &mut dyn FnMut(NodeKind, &str), t: T, inp, out, acc, what: &str| {
            push(mat(lw(t), inp, out, acc), what);
            if t.has_bias(cfg) {
                let w = WeightName::Bias(l, t);
                push(NodeKind::Bias { w, out }, &format!("{what}.bias"));
            }
        };
        push(NodeKind::Norm(lw(T::AttnNorm)), "attn_norm");
        proj(&mut push, T::Q, Act::Xn, Act::Q, false, "wq");
        let head_norm = |push: &mut dyn FnMut(NodeKind, &str), t: T, act, what: &str| {
            if cfg.arch.qk_norm {
                let w = WeightName::HeadNorm(l, t);
                push(NodeKind::HeadNorm { w, act }, what);
            }
        };
        head_norm(&mut push, T::Q, Act::Q, "q_norm");
        proj(&mut push, T::K, Act::Xn, Act::K, false, "wk");
        head_norm(&mut push, T::K, Act::K, "k_norm");
        proj(&mut push, T::V, Act::Xn, Act::V, false, "wv");
        push(NodeKind::Attention(l), "attention");
        // With post-norms (Gemma 3) the products of o and down write xn
        // (dead there), and the post-norm adds its norm into x.
        let post = cfg.arch.post_norms;
        let (res, acc) = if post {
            (Act::Xn, false)
        } else {
            (Act::X, true)
        };
        let post_norm = |push: &mut dyn FnMut(NodeKind, &str), t: T, what: &str| {
            if post {
                push(NodeKind::PostNorm(WeightName::PostNorm(l, t)), what);
            }
        };
        proj(&mut push, T::O, Act::Att, res, acc, "wo");
        post_norm(&mut push, T::O, "post_attention_norm");
        push(NodeKind::Norm(lw(T::FfnNorm)), "ffn_norm");
        proj(&mut push, T::Gate, Act::Xn, Act::G, false, "w_gate");
        proj(&mut push, T::Up, Act::Xn, Act::U, false, "w_up");
        push(NodeKind::SiluMul(l), "silu_mul");
        proj(&mut push, T::Down, Act::H, res, acc, "w_down");
        post_norm(&mut push, T::Down, "post_feedforward_norm");
    }
    v.push(Node {
        kind: NodeKind::Norm(WeightName::FinalNorm),
        label: "final_norm".into(),
        layer: None,
    });
    v.push(Node {
        kind: NodeKind::MatMul {
            w: if cfg.tie_word_embeddings {
                WeightName::Embed
            } else {
                WeightName::LmHead
            },
            inp: Act::Xn,
            out: Act::Logits,
            acc: false,
            head: true,
        },
        label: "lm_head".into(),
        layer: None,
    });
    v
}

/// Whether node `i` is the last user of its weight: the placement compiler
/// puts each weight where it is used last (a tied embedding therefore sits
/// at the tail, as the lm_head, and the token's row is gathered there).
pub fn is_last_use(nodes: &[Node], i: usize) -> bool {
    let Some(w) = nodes[i].weight() else {
        return false;
    };
    !nodes[i + 1..].iter().any(|n| n.weight() == Some(w))
}

/// Activations live after each item of `items` (read later before being
/// rewritten), by one backward pass. The logits are the pass's output and
/// are live at its end.
pub fn live_out<A: Access>(items: &[A]) -> Vec<BTreeSet<Act>> {
    let mut out = vec![BTreeSet::new(); items.len()];
    let mut live: BTreeSet<Act> = [Act::Logits].into();
    for (i, it) in items.iter().enumerate().rev() {
        out[i] = live.clone();
        for k in it.kills() {
            live.remove(&k);
        }
        live.extend(it.reads());
    }
    out
}

/// Activations held while each node runs: what is live before it, what it
/// writes and what is live after it (the placement compiler sizes a chip's
/// scratch from the largest of these on the chip).
pub fn live_during(nodes: &[Node]) -> Vec<BTreeSet<Act>> {
    let after = live_out(nodes);
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut s = after[i].clone();
            s.extend(n.reads());
            s.extend(n.writes());
            if i > 0 {
                s.extend(after[i - 1].iter().copied());
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tied: bool) -> LlamaConfig {
        LlamaConfig::tiny_for_tests(2, 512, tied)
    }

    #[test]
    fn every_weight_is_used_and_placed_once() {
        for tied in [true, false] {
            let c = cfg(tied);
            let g = forward(&c);
            let mut placed: Vec<WeightName> = (0..g.len())
                .filter(|&i| is_last_use(&g, i))
                .filter_map(|i| g[i].weight())
                .collect();
            placed.sort_by_key(|w| w.to_string());
            let mut want = WeightName::all(&c);
            want.sort_by_key(|w| w.to_string());
            assert_eq!(placed, want, "tied={tied}");
        }
        // Tied: the embedding's last use is the lm_head.
        let g = forward(&cfg(true));
        assert!(!is_last_use(&g, 0));
        assert!(is_last_use(&g, g.len() - 1));
    }

    #[test]
    fn biases_follow_their_products_and_are_placed_once() {
        let mut c = cfg(false);
        c.arch.qkv_bias = true;
        c.arch.o_bias = true;
        c.arch.mlp_bias = true;
        let g = forward(&c);
        let mut placed: Vec<String> = (0..g.len())
            .filter(|&i| is_last_use(&g, i))
            .filter_map(|i| g[i].weight().map(|w| w.to_string()))
            .collect();
        placed.sort();
        let mut want: Vec<String> = WeightName::all(&c).iter().map(|w| w.to_string()).collect();
        want.sort();
        assert_eq!(placed, want);
        for (i, n) in g.iter().enumerate() {
            if let NodeKind::Bias { out, .. } = n.kind {
                // Right after the product that wrote `out`, which it reads.
                assert!(matches!(g[i - 1].kind, NodeKind::MatMul { out: o, .. } if o == out));
                assert_eq!(n.reads(), vec![out]);
                assert!(n.kills().is_empty());
            }
        }
        assert_eq!(g.iter().filter(|n| n.label.ends_with(".bias")).count(), 14);
    }

    #[test]
    fn gemma_post_norms_take_the_products_output_from_xn() {
        let mut c = cfg(false);
        let h = c.hidden_size;
        c.arch = crate::model::ArchFeatures::gemma3(h);
        let g = forward(&c);
        let mut placed: Vec<String> = (0..g.len())
            .filter(|&i| is_last_use(&g, i))
            .filter_map(|i| g[i].weight().map(|w| w.to_string()))
            .collect();
        placed.sort();
        let mut want: Vec<String> = WeightName::all(&c).iter().map(|w| w.to_string()).collect();
        want.sort();
        assert_eq!(placed, want);
        let at = |label: &str| g.iter().position(|n| n.label == label).unwrap();
        // q_norm right after wq, k_norm after wk, both before attention.
        assert_eq!(at("layers.0.q_norm"), at("layers.0.wq") + 1);
        assert_eq!(at("layers.0.k_norm"), at("layers.0.wk") + 1);
        assert!(at("layers.0.k_norm") < at("layers.0.attention"));
        for (mat, post) in [
            ("layers.1.wo", "layers.1.post_attention_norm"),
            ("layers.1.w_down", "layers.1.post_feedforward_norm"),
        ] {
            let i = at(mat);
            // The product writes xn afresh; the post-norm adds into x.
            assert!(matches!(
                g[i].kind,
                NodeKind::MatMul {
                    out: Act::Xn,
                    acc: false,
                    ..
                }
            ));
            assert_eq!(at(post), i + 1);
            assert_eq!(g[i + 1].reads(), vec![Act::Xn, Act::X]);
            assert!(g[i + 1].kills().is_empty());
        }
        // x stays live across the product (the post-norm accumulates into it).
        let live = live_out(&g);
        assert!(live[at("layers.1.wo")].contains(&Act::X));
        assert!(live[at("layers.1.wo")].contains(&Act::Xn));
        assert!(!live[at("layers.1.post_attention_norm")].contains(&Act::Xn));
    }

    #[test]
    fn liveness_follows_the_layer() {
        let g = forward(&cfg(true));
        let live = live_out(&g);
        let at = |label: &str| {
            let i = g.iter().position(|n| n.label == label).unwrap();
            live[i].iter().copied().collect::<Vec<_>>()
        };
        assert_eq!(at("embed"), vec![Act::X]);
        assert_eq!(at("layers.0.attn_norm"), vec![Act::X, Act::Xn]);
        assert_eq!(at("layers.0.wk"), vec![Act::X, Act::Xn, Act::Q, Act::K]);
        assert_eq!(at("layers.0.attention"), vec![Act::X, Act::Att]);
        assert_eq!(at("layers.0.w_up"), vec![Act::X, Act::G, Act::U]);
        assert_eq!(at("layers.1.w_down"), vec![Act::X]);
        assert_eq!(at("final_norm"), vec![Act::Xn]);
        assert_eq!(at("lm_head"), vec![Act::Logits]);
        let during = live_during(&g);
        assert!(during[g.len() - 1].contains(&Act::Xn));
        assert!(during[5].contains(&Act::AttState), "{:?}", g[5]);
    }
}
