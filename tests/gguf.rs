//! GGUF reader, loader and tokenizer.
//!
//! * The real SmolLM2-135M-Instruct Q4_1 file (`models/get-smollm2.sh` fetches
//!   it): config, tensor types, token ids against the reference fixture, a CPU
//!   dequantization spot check. Skipped with a message when the file is absent,
//!   unless `CI` is set, where its absence is a failure.
//! * Crafted files (built with `GgufWriter`): a complete tiny llama model, and
//!   every kind of corrupt input, each with its error message asserted.
//! * A bounded fuzz of `GgufFile::parse` (byte mutations and truncations).

use proptest::prelude::*;
use sramlm::model::gguf::{self, GgmlType, GgufArray, GgufFile, GgufValue, GgufWriter};
use sramlm::model::{DType, LayerTensor, LoadError, Model, RopeLayout, WeightName};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn smollm2_path() -> PathBuf {
    manifest().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The real model, or `None` (with a message) when it is absent outside CI.
fn smollm2() -> Option<Model> {
    let path = smollm2_path();
    if !path.exists() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{} is missing and CI is set: run models/get-smollm2.sh first",
                path.display()
            );
        }
        eprintln!(
            "SKIPPED: {} is absent (run models/get-smollm2.sh to fetch it)",
            path.display()
        );
        return None;
    }
    match gguf::load(&path) {
        Ok(m) => Some(m),
        Err(e) => panic!("loading {}: {e}", path.display()),
    }
}

fn reference() -> serde_json::Value {
    let p = manifest().join("tests/fixtures/smollm2/SmolLM2-135M-Instruct-Q4_1.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "sramlm-gguf-test-{}-{}-{tag}.gguf",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load_bytes(bytes: &[u8]) -> Result<Model, LoadError> {
    let f = TempFile::new("model", bytes);
    gguf::load(&f.0)
}

fn load_err(bytes: &[u8]) -> String {
    match load_bytes(bytes) {
        Ok(_) => panic!("expected the load to fail"),
        Err(e) => e.to_string(),
    }
}

fn parse_err(bytes: &[u8]) -> String {
    match GgufFile::parse(bytes) {
        Ok(_) => panic!("expected the parse to fail"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(
            msg.contains(p),
            "error message {msg:?} should contain {p:?}"
        );
    }
}

/// Deterministic pseudo-random f32 values in [-0.5, 0.5).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// GPT-2's byte → printable character table.
fn byte_char(b: u8) -> char {
    let printable = |x: u8| (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
    if printable(b) {
        char::from(b)
    } else {
        let n = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + n).unwrap()
    }
}

// ---------------------------------------------------------------------------
// a complete tiny llama model
// ---------------------------------------------------------------------------

const HIDDEN: usize = 32;
const FFN: usize = 256;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = 16;

type Kv = Vec<(String, GgufValue)>;
type Tensors = Vec<(String, Vec<usize>, u32, Vec<u8>)>;

/// Metadata and tensors of a one-layer llama with a byte-level vocabulary.
fn tiny_parts() -> (Kv, Tensors) {
    let mut tokens = vec![
        "<|endoftext|>".to_string(),
        "<|im_start|>".to_string(),
        "<|im_end|>".to_string(),
    ];
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    tokens.push("Ġh".into());
    let vocab = tokens.len();
    let mut types = vec![3i32; 3];
    types.extend(std::iter::repeat_n(1, vocab - 3));
    let s = |x: &str| GgufValue::String(x.into());
    let kv: Kv = vec![
        ("general.architecture".into(), s("llama")),
        ("general.name".into(), s("tiny")),
        ("llama.block_count".into(), GgufValue::U32(1)),
        ("llama.context_length".into(), GgufValue::U32(128)),
        (
            "llama.embedding_length".into(),
            GgufValue::U32(HIDDEN as u32),
        ),
        (
            "llama.feed_forward_length".into(),
            GgufValue::U32(FFN as u32),
        ),
        (
            "llama.attention.head_count".into(),
            GgufValue::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            GgufValue::U32(KV_HEADS as u32),
        ),
        ("llama.rope.freq_base".into(), GgufValue::F32(100000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            GgufValue::F32(1e-5),
        ),
        (
            "llama.rope.dimension_count".into(),
            GgufValue::U32(HEAD_DIM as u32),
        ),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("smollm")),
        (
            "tokenizer.ggml.tokens".into(),
            GgufValue::Array(GgufArray::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(GgufArray::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".into(),
            GgufValue::Array(GgufArray::String(vec!["Ġ h".into()])),
        ),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            GgufValue::Bool(false),
        ),
        ("tokenizer.chat_template".into(), s("{{ messages }}")),
    ];
    let f32t = |name: &str, shape: Vec<usize>, seed: u32| {
        let n = shape.iter().product();
        (name.to_string(), shape, 0u32, f32_bytes(&values(n, seed)))
    };
    let q = HEADS * HEAD_DIM;
    let kvd = KV_HEADS * HEAD_DIM;
    let tensors: Tensors = vec![
        f32t("token_embd.weight", vec![vocab, HIDDEN], 1),
        f32t("blk.0.attn_norm.weight", vec![HIDDEN], 2),
        f32t("blk.0.attn_q.weight", vec![q, HIDDEN], 3),
        f32t("blk.0.attn_k.weight", vec![kvd, HIDDEN], 4),
        f32t("blk.0.attn_v.weight", vec![kvd, HIDDEN], 5),
        f32t("blk.0.attn_output.weight", vec![HIDDEN, q], 6),
        f32t("blk.0.ffn_norm.weight", vec![HIDDEN], 7),
        f32t("blk.0.ffn_gate.weight", vec![FFN, HIDDEN], 8),
        f32t("blk.0.ffn_up.weight", vec![FFN, HIDDEN], 9),
        f32t("blk.0.ffn_down.weight", vec![HIDDEN, FFN], 10),
        f32t("output_norm.weight", vec![HIDDEN], 11),
    ];
    (kv, tensors)
}

fn write(kv: &Kv, tensors: &Tensors) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in kv {
        w = w.kv(k, v.clone());
    }
    for (name, shape, ty, data) in tensors {
        w = w.tensor(name, shape, *ty, data.clone());
    }
    w.to_bytes()
}

fn tiny_bytes() -> Vec<u8> {
    let (kv, t) = tiny_parts();
    write(&kv, &t)
}

fn set_kv(kv: &mut Kv, key: &str, v: GgufValue) {
    match kv.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = v,
        None => kv.push((key.to_string(), v)),
    }
}

fn set_tensor(t: &mut Tensors, name: &str, ty: u32, data: Vec<u8>) {
    let e = t.iter_mut().find(|e| e.0 == name).unwrap();
    e.2 = ty;
    e.3 = data;
}

// ---------------------------------------------------------------------------
// the real SmolLM2 file
// ---------------------------------------------------------------------------

#[test]
fn smollm2_config_and_weights() {
    let Some(m) = smollm2() else { return };
    let c = &m.config;
    assert_eq!(m.format, "gguf");
    assert_eq!(c.hidden_size, 576);
    assert_eq!(c.num_layers, 30);
    assert_eq!(c.num_heads, 9);
    assert_eq!(c.num_kv_heads, 3);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.intermediate_size, 1536);
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.max_position_embeddings, 8192);
    assert_eq!(c.rope_theta, 100000.0);
    assert!((c.rms_norm_eps - 1e-5).abs() < 1e-9, "{}", c.rms_norm_eps);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_layout, RopeLayout::Adjacent);
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2]);
    assert!(m.weights.lm_head.is_none());
    assert_eq!(m.tokenizer.vocab_size(), 49152);
    let tmpl = m.chat_template.as_deref().unwrap();
    assert!(tmpl.contains("<|im_start|>"), "{tmpl}");

    // 210 Q4_1 matrices, a Q8_0 embedding, F32 norms.
    let w = &m.weights;
    assert_eq!(w.embed.dtype, DType::Q8_0);
    assert_eq!(w.embed.shape, vec![49152, 576]);
    assert_eq!(w.final_norm.dtype, DType::F32);
    let mut q4_1 = 0;
    for (i, l) in w.layers.iter().enumerate() {
        for t in LayerTensor::ALL {
            let tensor = l.get(t);
            assert_eq!(tensor.shape, WeightName::Layer(i, t).shape(c));
            match t {
                LayerTensor::AttnNorm | LayerTensor::FfnNorm => {
                    assert_eq!(tensor.dtype, DType::F32)
                }
                _ => {
                    assert_eq!(tensor.dtype, DType::Q4_1, "{}", WeightName::Layer(i, t));
                    q4_1 += 1;
                }
            }
        }
    }
    assert_eq!(q4_1, 210);

    // Every byte of tensor data in the file is accounted for.
    let bytes = std::fs::read(smollm2_path()).unwrap();
    let g = GgufFile::parse(&bytes).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
    assert_eq!(w.total_bytes() as u64, g.tensor_bytes());
    let q = g.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ggml_type, GgmlType::Q4_1);
    assert_eq!(q.dims, vec![576, 576]);
    assert_eq!(&bytes[g.tensor_range(q)], w.layers[0].wq.bytes.as_slice());
    let k = g.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!(k.dims, vec![576, 192]);
    assert_eq!(w.layers[0].wk.shape, vec![192, 576]);

    // The generic loader dispatches .gguf here too.
    let m2 = match sramlm::model::load(&smollm2_path()) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(m2.config, m.config);
}

#[test]
fn smollm2_token_ids_match_reference() {
    let Some(m) = smollm2() else { return };
    let reference = reference();
    let prompts = reference["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 5);
    let specials: Vec<String> = (0..17)
        .map(|i| m.tokenizer.inner().id_to_token(i).unwrap())
        .collect();
    assert_eq!(specials[0], "<|endoftext|>");
    assert_eq!(specials[1], "<|im_start|>");
    assert_eq!(specials[2], "<|im_end|>");
    for p in prompts {
        let key = p["key"].as_str().unwrap();
        let text = p["text"].as_str().unwrap();
        let want = ids_of(&p["input_ids"]);
        let got = m.tokenizer.encode(text).unwrap();
        assert_eq!(got, want, "{key}: token ids of {text:?}");
        let want_plain = ids_of(&p["input_ids_with_add_special_tokens_false"]);
        assert_eq!(
            m.tokenizer.encode_with(text, false).unwrap(),
            want_plain,
            "{key}: add_special_tokens=false"
        );
        let want_tokens: Vec<&str> = p["input_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let got_tokens: Vec<String> = got
            .iter()
            .map(|&id| m.tokenizer.inner().id_to_token(id).unwrap())
            .collect();
        assert_eq!(got_tokens, want_tokens, "{key}: token strings");

        // decode skips special tokens; everything else round-trips.
        let mut plain = text.to_string();
        for s in &specials {
            plain = plain.replace(s.as_str(), "");
        }
        assert_eq!(m.tokenizer.decode(&got).unwrap(), plain, "{key}: decode");

        // The reference's greedy continuation decodes to the recorded text.
        let g = &p["greedy"];
        let new_ids = ids_of(&g["new_ids"]);
        let keep = m.tokenizer.inner().decode(&new_ids, false).unwrap();
        assert_eq!(keep, g["new_text"].as_str().unwrap(), "{key}: new_text");
        let mut all = want.clone();
        all.extend(&new_ids);
        assert_eq!(
            m.tokenizer.decode(&all).unwrap(),
            g["full_text_skip_special"].as_str().unwrap(),
            "{key}: full_text_skip_special"
        );
    }
}

#[test]
fn smollm2_digits_are_split_like_llama_cpp() {
    let Some(m) = smollm2() else { return };
    // ASCII digits: one token each (the vocabulary has no multi-digit token).
    let ids = m.tokenizer.encode("In 2024, 12345 people").unwrap();
    let toks: Vec<String> = ids
        .iter()
        .map(|&i| m.tokenizer.inner().id_to_token(i).unwrap())
        .collect();
    for d in ["2", "0", "4", "1", "3", "5"] {
        assert!(toks.iter().any(|t| t == d), "{toks:?}");
    }
    assert!(toks
        .iter()
        .all(|t| t.chars().filter(|c| c.is_ascii_digit()).count() <= 1));
    assert_eq!(m.tokenizer.decode(&ids).unwrap(), "In 2024, 12345 people");
}

#[test]
fn smollm2_cpu_dequantization_spot_check() {
    let Some(m) = smollm2() else { return };
    let wq = &m.weights.layers[0].wq;
    assert_eq!(wq.dtype, DType::Q4_1);
    assert_eq!(wq.shape, vec![576, 576]);
    let v = wq.to_f32();
    assert_eq!(v.len(), 576 * 576);
    assert!(v.iter().all(|x| x.is_finite()));
    let max = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
    assert!(max > 0.01 && max < 50.0, "max |w| = {max}");
    assert!(mean.abs() < 0.05, "mean {mean}");
    assert!(var.sqrt() > 1e-3 && var.sqrt() < 5.0, "std {}", var.sqrt());
    // Row 0, block 0 by hand: w = d*q + m.
    let b = &wq.bytes.as_slice()[..20];
    let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mn = half::f16::from_le_bytes([b[2], b[3]]).to_f32();
    for j in 0..16 {
        assert_eq!(v[j], d.mul_add((b[4 + j] & 15) as f32, mn));
        assert_eq!(v[j + 16], d.mul_add((b[4 + j] >> 4) as f32, mn));
    }
    // Each row has its own statistics: rows differ.
    assert_ne!(v[..576], v[576..1152]);

    // Embedding rows (Q8_0) of a few tokens.
    let e = &m.weights.embed;
    let row_bytes = 576 / 32 * 34;
    for tok in [0usize, 19556, 49151] {
        let row = sramlm::model::weights::dequantize(
            DType::Q8_0,
            &e.bytes.as_slice()[tok * row_bytes..(tok + 1) * row_bytes],
            576,
        );
        assert!(row.iter().all(|x| x.is_finite()));
        assert!(row.iter().any(|&x| x != 0.0), "token {tok}");
    }
    let norm = m.weights.final_norm.to_f32();
    assert!(norm.iter().all(|x| x.is_finite() && x.abs() < 100.0));
}

// ---------------------------------------------------------------------------
// crafted models
// ---------------------------------------------------------------------------

#[test]
fn tiny_model_loads_with_every_supported_type() {
    let (kv, mut t) = tiny_parts();
    // wk: Q8_0 with d = 1 and q = column index - 16 (exact values).
    let kvd = KV_HEADS * HEAD_DIM;
    let mut q8 = Vec::new();
    for _row in 0..kvd {
        q8.extend(half::f16::from_f32(1.0).to_le_bytes());
        q8.extend((0..32i8).map(|j| (j - 16) as u8));
    }
    set_tensor(&mut t, "blk.0.attn_k.weight", GgmlType::Q8_0.id(), q8);
    // wv: Q4_0, d = 0.5.
    let mut q4 = Vec::new();
    for _ in 0..kvd {
        q4.extend(half::f16::from_f32(0.5).to_le_bytes());
        q4.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    }
    set_tensor(&mut t, "blk.0.attn_v.weight", GgmlType::Q4_0.id(), q4);
    // wq: Q4_1, d = 1, m = -8.
    let mut q41 = Vec::new();
    for _ in 0..HEADS * HEAD_DIM {
        q41.extend(half::f16::from_f32(1.0).to_le_bytes());
        q41.extend(half::f16::from_f32(-8.0).to_le_bytes());
        q41.extend((0..16u8).map(|j| j | (j << 4)));
    }
    set_tensor(&mut t, "blk.0.attn_q.weight", GgmlType::Q4_1.id(), q41);
    // wo: F16, gate: BF16.
    let n = HIDDEN * HEADS * HEAD_DIM;
    let wo: Vec<u8> = values(n, 6)
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    set_tensor(&mut t, "blk.0.attn_output.weight", GgmlType::F16.id(), wo);
    let gate: Vec<u8> = values(FFN * HIDDEN, 8)
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    set_tensor(&mut t, "blk.0.ffn_gate.weight", GgmlType::BF16.id(), gate);

    let m = match load_bytes(&write(&kv, &t)) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let c = &m.config;
    assert_eq!(
        (
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim
        ),
        (HIDDEN, 1, HEADS, KV_HEADS, HEAD_DIM)
    );
    assert_eq!(c.vocab_size, 260);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_layout, RopeLayout::Adjacent);
    assert_eq!(m.chat_template.as_deref(), Some("{{ messages }}"));
    let l = &m.weights.layers[0];
    assert_eq!(l.wk.dtype, DType::Q8_0);
    assert_eq!(l.wk.shape, vec![kvd, HIDDEN]);
    let k = l.wk.to_f32();
    assert_eq!(k[0], -16.0);
    assert_eq!(k[31], 15.0);
    assert_eq!(k[32], -16.0);
    assert_eq!(l.wv.dtype, DType::Q4_0);
    assert_eq!(l.wv.to_f32()[0], -4.0);
    assert_eq!(l.wv.to_f32()[16], 3.5);
    assert_eq!(l.wq.dtype, DType::Q4_1);
    assert_eq!(l.wq.to_f32()[..3], [-8.0, -7.0, -6.0]);
    assert_eq!(l.wo.dtype, DType::F16);
    assert!((l.wo.to_f32()[5] - values(n, 6)[5]).abs() < 1e-3);
    assert_eq!(l.w_gate.dtype, DType::BF16);
    assert_eq!(l.w_up.dtype, DType::F32);
    assert_eq!(l.w_up.to_f32(), values(FFN * HIDDEN, 9));
    assert_eq!(m.weights.embed.shape, vec![260, HIDDEN]);

    // Tokenizer from the metadata: merges, specials, no BOS.
    let ids = m.tokenizer.encode("<|im_start|>h h<|im_end|>").unwrap();
    assert_eq!(ids, vec![1, 3 + b'h' as u32, 259, 2]);
    assert_eq!(m.tokenizer.decode(&ids).unwrap(), "h h");
}

#[test]
fn tiny_model_with_output_weight_is_untied() {
    let (kv, mut t) = tiny_parts();
    t.push((
        "output.weight".into(),
        vec![260, HIDDEN],
        0,
        f32_bytes(&values(260 * HIDDEN, 12)),
    ));
    let m = load_bytes(&write(&kv, &t)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!m.config.tie_word_embeddings);
    assert_eq!(m.weights.output().to_f32(), values(260 * HIDDEN, 12));
}

#[test]
fn other_architecture_is_named() {
    let (mut kv, t) = tiny_parts();
    set_kv(
        &mut kv,
        "general.architecture",
        GgufValue::String("phi3".into()),
    );
    let e = load_bytes(&write(&kv, &t)).err().unwrap();
    assert!(matches!(e, LoadError::UnsupportedArchitecture(_)), "{e}");
    assert_contains(&e.to_string(), &["phi3"]);
}

#[test]
fn unsupported_tensor_type_is_named() {
    let (kv, mut t) = tiny_parts();
    // IQ4_XS: 256 values per 136-byte block; ffn_down rows are 256 long.
    set_tensor(&mut t, "blk.0.ffn_down.weight", 23, vec![0u8; HIDDEN * 136]);
    let e = load_bytes(&write(&kv, &t)).err().unwrap();
    match &e {
        LoadError::UnsupportedDType { tensor, dtype } => {
            assert_eq!(tensor, "blk.0.ffn_down.weight");
            assert_eq!(dtype, "IQ4_XS (type 23)");
        }
        other => panic!("expected UnsupportedDType, got {other}"),
    }
    assert_contains(
        &e.to_string(),
        &["IQ4_XS (type 23)", "blk.0.ffn_down.weight"],
    );

    // A type id GGML does not know at all fails at parse time, still named.
    let bytes = GgufWriter::new()
        .tensor("mystery", &[4], 99, vec![0u8; 16])
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["mystery", "unknown GGML type 99"]);
}

#[test]
fn metadata_of_wrong_type_names_key_and_type() {
    let cases: Vec<(&str, GgufValue, Vec<&str>)> = vec![
        (
            "llama.block_count",
            GgufValue::String("thirty".into()),
            vec!["llama.block_count", "string"],
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::U32(1),
            vec!["llama.attention.layer_norm_rms_epsilon", "u32"],
        ),
        (
            "llama.embedding_length",
            GgufValue::F32(32.0),
            vec!["llama.embedding_length", "f32"],
        ),
        (
            "llama.context_length",
            GgufValue::I32(-5),
            vec!["llama.context_length", "non-negative"],
        ),
        (
            "general.architecture",
            GgufValue::U8(1),
            vec!["general.architecture", "u8"],
        ),
        (
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufArray::U32(vec![1, 2])),
            vec!["tokenizer.ggml.tokens", "array of u32"],
        ),
        (
            "tokenizer.ggml.add_bos_token",
            GgufValue::String("no".into()),
            vec!["tokenizer.ggml.add_bos_token", "string", "bool"],
        ),
        (
            "tokenizer.ggml.merges",
            GgufValue::Bool(true),
            vec!["tokenizer.ggml.merges", "bool"],
        ),
        (
            "tokenizer.ggml.model",
            GgufValue::Array(GgufArray::String(vec![])),
            vec!["tokenizer.ggml.model", "array of string"],
        ),
        (
            "llama.attention.head_count_kv",
            GgufValue::Array(GgufArray::U32(vec![1])),
            vec!["llama.attention.head_count_kv", "per-layer"],
        ),
    ];
    for (key, value, parts) in cases {
        let (mut kv, t) = tiny_parts();
        set_kv(&mut kv, key, value);
        let msg = load_err(&write(&kv, &t));
        assert_contains(&msg, &parts);
    }
    // general.alignment is checked by the parser itself.
    let bytes = GgufWriter::new()
        .kv("general.alignment", GgufValue::String("32".into()))
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["general.alignment", "string"]);
}

#[test]
fn unsupported_llama_variants_are_rejected() {
    let extra = |name: &str| {
        let (kv, mut t) = tiny_parts();
        t.push((name.to_string(), vec![HIDDEN], 0, vec![0u8; HIDDEN * 4]));
        load_err(&write(&kv, &t))
    };
    // A lone q bias: the set llama biases come in is incomplete, refused.
    assert_contains(&extra("blk.0.attn_q.bias"), &["bias"]);
    assert_contains(&extra("rope_freqs.weight"), &["rope_freqs.weight"]);
    for (key, value, part) in [
        (
            "llama.expert_count",
            GgufValue::U32(8),
            "mixture-of-experts",
        ),
        (
            "llama.rope.scaling.factor",
            GgufValue::F32(4.0),
            "RoPE scaling type `longrope`",
        ),
        (
            "llama.rope.dimension_count",
            GgufValue::U32(8),
            "partial rotary",
        ),
        (
            "llama.attention.value_length",
            GgufValue::U32(8),
            "value_length",
        ),
    ] {
        let (mut kv, t) = tiny_parts();
        set_kv(&mut kv, key, value);
        if key == "llama.rope.scaling.factor" {
            set_kv(
                &mut kv,
                "llama.rope.scaling.type",
                GgufValue::String("longrope".into()),
            );
        }
        if key == "llama.rope.dimension_count" {
            set_kv(
                &mut kv,
                "llama.attention.key_length",
                GgufValue::U32(HEAD_DIM as u32),
            );
        }
        assert_contains(&load_err(&write(&kv, &t)), &[part]);
    }
    // Without key_length, head_dim comes from the rotary width, else hidden / heads.
    let (mut kv, t) = tiny_parts();
    kv.retain(|(k, _)| k != "llama.rope.dimension_count");
    let m = load_bytes(&write(&kv, &t)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.config.head_dim, HIDDEN / HEADS);
}

#[test]
fn missing_keys_and_tensors_are_named() {
    let (mut kv, t) = tiny_parts();
    kv.retain(|(k, _)| k != "llama.feed_forward_length");
    assert_contains(
        &load_err(&write(&kv, &t)),
        &["llama.feed_forward_length", "missing"],
    );
    let (kv, mut t) = tiny_parts();
    t.retain(|e| e.0 != "blk.0.ffn_up.weight");
    assert_contains(
        &load_err(&write(&kv, &t)),
        &["blk.0.ffn_up.weight", "missing"],
    );
    // A shape that contradicts the config.
    let (mut kv, t) = tiny_parts();
    set_kv(&mut kv, "llama.feed_forward_length", GgufValue::U32(128));
    assert_contains(
        &load_err(&write(&kv, &t)),
        &["blk.0.ffn_gate.weight", "shape"],
    );
}

// ---------------------------------------------------------------------------
// corrupt files
// ---------------------------------------------------------------------------

#[test]
fn truncated_files_fail_cleanly_at_every_cut() {
    let bytes = tiny_bytes();
    let g = GgufFile::parse(&bytes).unwrap();
    let header = g.data_offset as usize;
    let cuts = (0..header + 64).chain((header..bytes.len()).step_by(331));
    for cut in cuts.filter(|&c| c < bytes.len()) {
        let msg = parse_err(&bytes[..cut]);
        assert!(
            [
                "truncated",
                "beyond the end",
                "too short",
                "remain",
                "exceeds",
                "impossible"
            ]
            .iter()
            .any(|p| msg.contains(p)),
            "cut at {cut}: {msg}"
        );
    }
    // The loader says the same through a real (truncated) file.
    let msg = load_err(&bytes[..bytes.len() - 1]);
    assert_contains(&msg, &["output_norm.weight", "beyond the end of the file"]);
}

#[test]
fn wrong_magic_is_rejected() {
    let mut bytes = tiny_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    assert_contains(&parse_err(&bytes), &["not a GGUF file", "GGML"]);
    assert_contains(&parse_err(b"GG"), &["too short"]);
    assert_contains(&parse_err(b""), &["too short"]);
    // The generic loader sniffs a renamed file the same way.
    let f = TempFile::new("magic", &bytes);
    let renamed = f.0.with_extension("bin");
    std::fs::rename(&f.0, &renamed).unwrap();
    let e = sramlm::model::load(&renamed).err().unwrap().to_string();
    let _ = std::fs::remove_file(&renamed);
    assert_contains(&e, &["neither"]);
}

#[test]
fn unknown_versions_are_rejected() {
    for (v, part) in [
        (1u32, "version 1 is not supported"),
        (4, "unknown GGUF version 4"),
        (0, "unknown GGUF version 0"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let bytes = GgufWriter::new().version(v).to_bytes();
        assert_contains(&parse_err(&bytes), &[part]);
    }
    // Versions 2 and 3 share a layout.
    let (kv, t) = tiny_parts();
    let mut w = GgufWriter::new().version(2);
    for (k, v) in &kv {
        w = w.kv(k, v.clone());
    }
    for (n, s, ty, d) in &t {
        w = w.tensor(n, s, *ty, d.clone());
    }
    let m = load_bytes(&w.to_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.config.hidden_size, HIDDEN);
}

#[test]
fn tensor_data_beyond_end_is_rejected() {
    let bytes = GgufWriter::new()
        .tensor("a", &[8], 0, vec![0u8; 32])
        .tensor_at("b", &[8], 0, vec![0u8; 32], 1 << 20)
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`b`", "beyond the end of the file"]);
    // An offset so large the sum overflows.
    let bytes = GgufWriter::new()
        .tensor_at("c", &[8], 0, vec![0u8; 32], u64::MAX - 31)
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`c`", "beyond the end of the file"]);
    // Dimensions whose byte size overflows.
    let bytes = GgufWriter::new()
        .tensor("d", &[usize::MAX, 4], 0, vec![])
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`d`", "overflow"]);
    let bytes = GgufWriter::new()
        .tensor("e", &[1 << 40, 1 << 20], 0, vec![])
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`e`"]);
}

#[test]
fn misaligned_and_overlapping_offsets_are_rejected() {
    let bytes = GgufWriter::new()
        .tensor_at("a", &[8], 0, vec![0u8; 32], 4)
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`a`", "offset 4", "alignment 32"]);
    let bytes = GgufWriter::new()
        .tensor("a", &[16], 0, vec![0u8; 64])
        .tensor_at("b", &[8], 0, vec![0u8; 32], 32)
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`a`", "`b`", "overlap"]);
    // Custom alignment: offsets must follow it, and it must be a power of two.
    let ok = GgufWriter::new()
        .alignment(64)
        .tensor("a", &[8], 0, vec![0u8; 32])
        .tensor("b", &[8], 0, vec![0u8; 32])
        .to_bytes();
    let g = GgufFile::parse(&ok).unwrap();
    assert_eq!(g.alignment, 64);
    assert_eq!(g.tensors[1].offset, 64);
    assert_eq!(g.data_offset % 64, 0);
    for a in [0u32, 3, 48] {
        let bytes = GgufWriter::new().alignment(a).to_bytes();
        assert_contains(&parse_err(&bytes), &["general.alignment", "power of two"]);
    }
}

#[test]
fn duplicates_and_bad_dims_are_rejected() {
    let bytes = GgufWriter::new()
        .kv("k", GgufValue::U8(1))
        .kv("k", GgufValue::U8(2))
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`k`", "twice"]);
    let bytes = GgufWriter::new()
        .tensor("t", &[8], 0, vec![0u8; 32])
        .tensor("t", &[8], 0, vec![0u8; 32])
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`t`", "twice"]);
    let bytes = GgufWriter::new()
        .tensor("five", &[1, 1, 1, 1, 8], 0, vec![0u8; 32])
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`five`", "5 dimensions"]);
    // A Q8_0 row of 33 values is not whole blocks.
    let bytes = GgufWriter::new()
        .tensor("odd", &[2, 33], 8, vec![0u8; 136])
        .to_bytes();
    assert_contains(&parse_err(&bytes), &["`odd`", "row length 33"]);
    // Invalid UTF-8 in a key.
    let mut bytes = GgufWriter::new().kv("ab", GgufValue::U8(1)).to_bytes();
    bytes[32] = 0xff;
    assert_contains(&parse_err(&bytes), &["UTF-8"]);
    // An unknown metadata value type.
    let mut bytes = GgufWriter::new().kv("ab", GgufValue::U8(1)).to_bytes();
    bytes[34..38].copy_from_slice(&77u32.to_le_bytes());
    assert_contains(&parse_err(&bytes), &["`ab`", "unknown value type 77"]);
}

/// Overwrites the u64 at `at`.
fn patch_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn absurd_counts_and_lengths_are_rejected_before_allocating() {
    let base = tiny_bytes();
    for v in [u64::MAX, 1 << 40, base.len() as u64] {
        let mut b = base.clone();
        patch_u64(&mut b, 8, v);
        assert_contains(&parse_err(&b), &["tensor count"]);
        let mut b = base.clone();
        patch_u64(&mut b, 16, v);
        assert_contains(&parse_err(&b), &["metadata count"]);
        // The first key's length.
        let mut b = base.clone();
        patch_u64(&mut b, 24, v);
        assert_contains(
            &parse_err(&b),
            &["string length", "key of metadata entry 0"],
        );
    }

    // One array entry: header (24) + key len (8) + "arr" (3) + type (4) + elem type (4), then len.
    let arr = |elem: GgufArray| {
        GgufWriter::new()
            .kv("arr", GgufValue::Array(elem))
            .to_bytes()
    };
    let len_at = 24 + 8 + 3 + 4 + 4;
    for elem in [
        GgufArray::U8(vec![1, 2]),
        GgufArray::F64(vec![1.0]),
        GgufArray::String(vec!["x".into()]),
        GgufArray::Array(vec![GgufArray::U8(vec![])]),
    ] {
        for v in [u64::MAX, u64::MAX / 8, 1 << 33] {
            let mut b = arr(elem.clone());
            patch_u64(&mut b, len_at, v);
            assert_contains(&parse_err(&b), &["length of array `arr`"]);
        }
    }
    // A string element's length inside an array of strings.
    let mut b = arr(GgufArray::String(vec!["x".into()]));
    patch_u64(&mut b, len_at + 8, u64::MAX);
    assert_contains(
        &parse_err(&b),
        &["string length", "element 0 of array `arr`"],
    );
    // A tensor's name length.
    let mut b = GgufWriter::new()
        .tensor("t", &[8], 0, vec![0u8; 32])
        .to_bytes();
    patch_u64(&mut b, 24, u64::MAX);
    assert_contains(&parse_err(&b), &["string length", "name of tensor 0"]);
}

// ---------------------------------------------------------------------------
// fuzz
// ---------------------------------------------------------------------------

/// A small but complete GGUF: every value type, nested arrays, three tensors.
fn fuzz_seed() -> Vec<u8> {
    GgufWriter::new()
        .kv("general.architecture", GgufValue::String("llama".into()))
        .kv("a", GgufValue::U8(1))
        .kv("b", GgufValue::I16(-2))
        .kv("c", GgufValue::U32(3))
        .kv("d", GgufValue::F32(0.5))
        .kv("e", GgufValue::Bool(true))
        .kv("f", GgufValue::U64(6))
        .kv("g", GgufValue::F64(7.0))
        .kv(
            "h",
            GgufValue::Array(GgufArray::String(vec!["x".into(), "yy".into(), "".into()])),
        )
        .kv("i", GgufValue::Array(GgufArray::I32(vec![-1, 0, 1])))
        .kv(
            "j",
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::U16(vec![1, 2]),
                GgufArray::Bool(vec![true]),
            ])),
        )
        .tensor("t0", &[2, 8], 0, vec![1u8; 64])
        .tensor("t1", &[1, 32], 8, vec![2u8; 34])
        .tensor("t2", &[4], 1, vec![3u8; 8])
        .to_bytes()
}

fn check_parse(bytes: &[u8]) {
    // Must return, never panic; a success must describe in-bounds tensors.
    if let Ok(g) = GgufFile::parse(bytes) {
        for t in &g.tensors {
            let r = g.tensor_range(t);
            assert!(r.end <= bytes.len());
            assert_eq!(
                r.start % g.alignment as usize,
                g.data_offset as usize % g.alignment as usize
            );
        }
        assert!(g.metadata.len() <= bytes.len());
    }
}

fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn fuzz_byte_mutations_and_truncations(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        words in prop::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 0..3),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut b = fuzz_seed();
        let n = b.len();
        for (at, v) in edits {
            b[at.index(n)] = v;
        }
        // Whole u64 fields (counts, lengths, offsets) replaced at once.
        for (at, v) in words {
            let at = at.index(n - 8);
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        if truncate {
            b.truncate(cut.index(n + 1));
        }
        check_parse(&b);
    }

    #[test]
    fn fuzz_random_bodies_after_a_valid_header(
        version in prop_oneof![Just(2u32), Just(3u32)],
        n_tensors in prop_oneof![0u64..4, any::<u64>()],
        n_kv in prop_oneof![0u64..4, any::<u64>()],
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut b = Vec::new();
        b.extend(b"GGUF");
        b.extend(version.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend(body);
        check_parse(&b);
    }
}
