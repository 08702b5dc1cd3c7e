//! The VRAM lowering of `graph::forward` against the dispatches each
//! architecture should get, written out by hand; node lists it does not know
//! are refused by name.

use super::{VramExecutor, VramOptions};
use crate::exec::Executor;
use crate::graph::{self, NodeKind};
use crate::model::{self, Model};
use crate::testing::{fixture_dir, gpu};

fn opts() -> VramOptions {
    VramOptions {
        context: Some(32),
        chunk: 8,
    }
}

/// Dispatch names: the embedding, `layers[l]` for each layer, the final
/// norm and the lm_head (a product is two dispatches: the prefill tile and
/// the decode matvec, one of which a step runs).
fn expect(layers: &[&[&str]]) -> Vec<String> {
    let mut v = vec!["embed".to_string()];
    for (l, layer) in layers.iter().enumerate() {
        v.extend(layer.iter().map(|s| format!("layers.{l}.{s}")));
    }
    v.extend(["final_norm", "lm_head", "lm_head"].map(String::from));
    v
}

fn names(m: &Model) -> Option<Vec<String>> {
    let g = gpu()?;
    let e = VramExecutor::new(g, &m.config, &m.weights, &opts()).unwrap();
    Some(e.ops().iter().map(|(n, _)| n.to_string()).collect())
}

/// The dispatches of one Llama layer whose q|k|v and gate|up stack (names
/// after the layer prefix; each product twice, see `expect`).
const LLAMA_LAYER: [&str; 13] = [
    "attn_norm",
    "wqkv",
    "wqkv",
    "rope",
    "attention",
    "rope_attention",
    "wo",
    "wo",
    "ffn_norm",
    "w_gate_up",
    "w_gate_up",
    "w_down",
    "w_down",
];

#[test]
fn llama_layer_is_five_decode_dispatches() {
    let m = model::load(&model::default_model_path()).unwrap();
    let Some(got) = names(&m) else { return };
    let layer = LLAMA_LAYER;
    assert_eq!(got, expect(&vec![&layer[..]; m.config.num_layers]));
    // Decoding: q|k|v, rope+attention, o, gate|up, down per layer, and the
    // embedding, the lm_head and the argmax (stories260K: 28).
    let mut e = VramExecutor::new(gpu().unwrap(), &m.config, &m.weights, &opts()).unwrap();
    e.step(&[1, 2, 3], crate::exec::Readback::Argmax).unwrap();
    e.step(&[4], crate::exec::Readback::Argmax).unwrap();
    let want = 5 * m.config.num_layers as u64 + 3;
    assert_eq!(e.counters().dispatches_last_decode, want);
}

#[test]
fn architecture_nodes_get_their_dispatches() {
    let arch = |name: &str| model::load(&fixture_dir("archs").join(name)).unwrap();
    // Biases after the products (gate/up with biases: not fused).
    let m = arch("llama-bias");
    let Some(got) = names(&m) else { return };
    let layer = [
        "attn_norm",
        "wqkv",
        "wqkv",
        "wq.bias",
        "wk.bias",
        "wv.bias",
        "rope",
        "attention",
        "rope_attention",
        "wo",
        "wo",
        "wo.bias",
        "ffn_norm",
        "w_gate",
        "w_gate",
        "w_up",
        "w_up",
        "w_gate.bias",
        "w_up.bias",
        "silu_mul",
        "w_down",
        "w_down",
        "w_down.bias",
    ];
    assert_eq!(got, expect(&vec![&layer[..]; m.config.num_layers]));
    // Gemma 3: head norms, post-norms (accumulating into x), GELU gate.
    let m = arch("gemma3");
    let layer = [
        "attn_norm",
        "wqkv",
        "wqkv",
        "wq.norm",
        "wk.norm",
        "rope",
        "attention",
        "rope_attention",
        "wo",
        "wo",
        "wo.post_norm",
        "ffn_norm",
        "w_gate",
        "w_gate",
        "w_up",
        "w_up",
        "silu_mul",
        "w_down",
        "w_down",
        "w_down.post_norm",
    ];
    assert_eq!(
        names(&m).unwrap(),
        expect(&vec![&layer[..]; m.config.num_layers])
    );
}

/// Q4_K_M-style files keep attn_v (and here gate/up) in other encodings:
/// those products run apart (layer 0 of the fixture; layer 1 has one
/// encoding per set).
#[test]
fn mixed_encodings_run_separate_products() {
    let m = model::load(&fixture_dir("quants").join("tiny-kquants.gguf")).unwrap();
    let Some(got) = names(&m) else { return };
    let layer = [
        "attn_norm",
        "wq",
        "wq",
        "wk",
        "wk",
        "wv",
        "wv",
        "rope",
        "attention",
        "rope_attention",
        "wo",
        "wo",
        "ffn_norm",
        "w_gate",
        "w_gate",
        "w_up",
        "w_up",
        "silu_mul",
        "w_down",
        "w_down",
    ];
    let one = LLAMA_LAYER;
    assert_eq!(got, expect(&[&layer, &one]));
}

#[test]
fn unknown_node_patterns_are_refused_by_name() {
    let Some(g) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let build = |drop: &str| {
        let mut nodes = graph::forward(&m.config);
        let before = nodes.len();
        nodes.retain(|n| n.label != drop);
        assert_eq!(nodes.len(), before - 1, "{drop}");
        let e = VramExecutor::with_graph(g.clone(), &m.config, &m.weights, &opts(), 1, &nodes);
        e.err().expect("refused").to_string()
    };
    // Products of xn without their norm (which decode steps apply inside
    // the product) are not lowered as plain products.
    let e = build("layers.1.attn_norm");
    assert!(
        e.starts_with("vram mode cannot lower graph node `layers.1.wq`"),
        "{e}"
    );
    let e = build("final_norm");
    assert!(e.contains("`lm_head`"), "{e}");
    // A norm whose output no product reads.
    let mut nodes = graph::forward(&m.config);
    nodes.retain(|n| !matches!(n.kind, NodeKind::MatMul { head: true, .. }));
    let e = VramExecutor::with_graph(g, &m.config, &m.weights, &opts(), 1, &nodes);
    let e = e.err().expect("refused").to_string();
    assert!(e.contains("`final_norm`"), "{e}");
}
