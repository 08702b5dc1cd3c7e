//! GGUF metadata and tensors mapped onto the canonical model: the
//! [`LlamaConfig`] from `{arch}.*` keys, RoPE settings, and the tensors as
//! memory-mapped windows in their GGML encoding.
//!
//! GGUF lists a tensor's dimensions innermost first (`ne[0]` = columns);
//! [`GgufTensorInfo::shape`](super::GgufTensorInfo::shape) reverses them into
//! PyTorch's `[rows, cols]`. llama.cpp's converter permutes the Q/K rows of
//! llama models so that RoPE rotates adjacent channel pairs: the loader keeps
//! the rows as stored and sets [`RopeLayout::Adjacent`].

use super::file::format_err;
use super::{tokenizer, GgmlType, GgufArray, GgufFile, GgufValue};
use crate::model::config::{ArchFeatures, RopeScaling, RopeType};
use crate::model::weights::{Bytes, ModelWeights, Tensor, WeightName};
use crate::model::{LlamaConfig, LoadError, Model, RopeLayout};
use std::path::Path;
use std::sync::Arc;

/// Builds the [`LlamaConfig`] from `llama.*` and `tokenizer.ggml.*` metadata.
/// Errors with [`LoadError::UnsupportedArchitecture`] unless
/// `general.architecture` is `llama`.
pub fn config_from_gguf(g: &GgufFile) -> Result<LlamaConfig, LoadError> {
    let arch = g.architecture()?;
    // Architectures that differ from llama only by [`ArchFeatures`] flags.
    let (mut features, rope_layout) = match arch {
        // convert_hf_to_gguf.py permutes llama's q/k rows (and biases) for
        // adjacent-pair RoPE; Qwen2 keeps Hugging Face's halves (NeoX).
        "llama" => (ArchFeatures::llama(), RopeLayout::Adjacent),
        "qwen2" => (ArchFeatures::qwen2(), RopeLayout::Halves),
        "qwen3" => (ArchFeatures::qwen3(), RopeLayout::Halves),
        // llama.cpp runs gemma3 with NeoX RoPE (Hugging Face's halves); the
        // converter has already added Gemma's 1 to every norm weight, so
        // the file's norms multiply by w itself (offset 0).
        "gemma3" => (
            ArchFeatures {
                norm_weight_offset: 0.0,
                ..ArchFeatures::gemma3(0)
            },
            RopeLayout::Halves,
        ),
        _ => {
            return Err(LoadError::UnsupportedArchitecture(format!(
                "GGUF architecture `{arch}`"
            )))
        }
    };
    let k = |s: &str| format!("{arch}.{s}");
    let req = |key: &str| -> Result<usize, LoadError> {
        g.get_usize(key)?
            .ok_or_else(|| LoadError::Config(format!("metadata `{key}` is missing")))
    };
    if let Some(v) = g.get(&k("attention.head_count_kv")) {
        if v.as_array().is_some() {
            return Err(LoadError::Config(
                "metadata `llama.attention.head_count_kv` is a per-layer array; sramlm needs one value for all layers"
                    .to_string(),
            ));
        }
    }
    if let Some(n) = g.get_usize(&k("expert_count"))? {
        if n > 0 {
            return Err(LoadError::Config(format!(
                "mixture-of-experts models are not supported (`llama.expert_count` = {n})"
            )));
        }
    }
    if let Some(w) = g
        .get_usize(&k("attention.sliding_window"))?
        .filter(|_| arch != "gemma3")
    {
        if w > 0 {
            return Err(LoadError::Config(format!(
                "sliding-window attention is not supported (`{arch}.attention.sliding_window` = {w})"
            )));
        }
    }
    if arch == "llama" || arch == "qwen3" {
        // Llama's `attention_bias` / `mlp_bias` (Qwen3's `attention_bias`):
        // GGUF says it by the tensors.
        let has = |s: &str| g.tensor(&format!("blk.0.{s}.bias")).is_some();
        features.qkv_bias = has("attn_q");
        features.o_bias = has("attn_output");
        features.mlp_bias = has("ffn_up");
    }

    let hidden_size = req(&k("embedding_length"))?;
    let num_heads = req(&k("attention.head_count"))?;
    let num_layers = req(&k("block_count"))?;
    let num_kv_heads = g
        .get_usize(&k("attention.head_count_kv"))?
        .unwrap_or(num_heads);
    let rope_dims = g.get_usize(&k("rope.dimension_count"))?;
    // head_dim: the key length, else the rotary width (llama rotates whole
    // heads), else hidden / heads.
    let head_dim = match g.get_usize(&k("attention.key_length"))?.or(rope_dims) {
        Some(h) => h,
        None => {
            if num_heads == 0 || hidden_size % num_heads != 0 {
                return Err(LoadError::Config(format!(
                    "`llama.embedding_length` ({hidden_size}) is not divisible by `llama.attention.head_count` ({num_heads}) and no `llama.attention.key_length` is given"
                )));
            }
            hidden_size / num_heads
        }
    };
    if let Some(v) = g.get_usize(&k("attention.value_length"))? {
        if v != head_dim {
            return Err(LoadError::Config(format!(
                "`llama.attention.value_length` ({v}) differs from the key length ({head_dim})"
            )));
        }
    }
    if let Some(r) = rope_dims {
        if r != head_dim {
            return Err(LoadError::Config(format!(
                "partial rotary embeddings are not supported: `llama.rope.dimension_count` = {r}, head_dim = {head_dim}"
            )));
        }
    }
    let n_tokens = match g.get("tokenizer.ggml.tokens") {
        None => None,
        Some(GgufValue::Array(a @ GgufArray::String(_))) => Some(a.len()),
        Some(v) => {
            return Err(LoadError::Config(format!(
                "metadata `tokenizer.ggml.tokens` has type {}, expected array of string",
                v.type_name()
            )))
        }
    };
    let vocab_size =
        match (n_tokens, g.get_usize(&k("vocab_size"))?) {
            (Some(n), _) => n,
            (None, Some(n)) => n,
            (None, None) => return Err(LoadError::Config(
                "neither `tokenizer.ggml.tokens` nor `llama.vocab_size` gives the vocabulary size"
                    .to_string(),
            )),
        };
    // llama.cpp sizes the embedding by the token list (`n_vocab =
    // vocab.n_tokens()`) and refuses a `token_embd.weight` of another row
    // count ("has wrong shape"): so does sramlm, saying which two disagree.
    if let (Some(n), Some(t)) = (n_tokens, g.tensor("token_embd.weight")) {
        let rows = t.shape().first().copied().unwrap_or(0);
        if t.dims.len() == 2 && rows != n {
            return Err(LoadError::Config(format!(
                "`tokenizer.ggml.tokens` lists {n} tokens but `token_embd.weight` has {rows} rows: the vocabulary does not match the embedding (llama.cpp refuses this file too)"
            )));
        }
    }
    let rms_norm_eps = g
        .get_f32(&k("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| {
            LoadError::Config("metadata `llama.attention.layer_norm_rms_epsilon` is missing".into())
        })?;
    let mut eos_token_ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = g.get_u32(key)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    let max_position_embeddings = g.get_usize(&k("context_length"))?.unwrap_or(2048);
    let (rope_theta, rope_scaling) = rope_from_gguf(g, arch, max_position_embeddings)?;
    if arch == "gemma3" {
        gemma3_from_gguf(
            g,
            &mut features,
            num_layers,
            hidden_size,
            num_heads,
            head_dim,
        )?;
    }
    let cfg = LlamaConfig {
        hidden_size,
        intermediate_size: req(&k("feed_forward_length"))?,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        max_position_embeddings,
        rms_norm_eps,
        rope_theta,
        rope_scaling,
        tie_word_embeddings: g.tensor(&WeightName::LmHead.gguf()).is_none(),
        rope_layout,
        bos_token_id: g.get_u32("tokenizer.ggml.bos_token_id")?,
        eos_token_ids,
        arch: features,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Gemma 3 as llama.cpp's `llama_model_gemma3` reads it (llama.cpp is the
/// reference implementation of the format): embeddings scaled by
/// sqrt(n_embd); sliding-window attention only when
/// `gemma3.attention.sliding_window` > 0, on the layers
/// `attention.sliding_window_pattern` marks (a bool per layer, or a period
/// n: layer il slides when il % n < n - 1; default 6), those layers using
/// RoPE base `rope.freq_base_swa` (default 10000) unscaled while the others
/// use the file's `rope.*` (scaling included); attention scale
/// 1/sqrt(key_length), or 1/sqrt(n_embd / n_head) for the 62-layer (27B)
/// model — llama.cpp does not read `query_pre_attn_scalar`. Soft-capping
/// (`final_logit_softcapping`, `attn_logit_softcapping`) is refused.
fn gemma3_from_gguf(
    g: &GgufFile,
    f: &mut ArchFeatures,
    num_layers: usize,
    hidden_size: usize,
    num_heads: usize,
    head_dim: usize,
) -> Result<(), LoadError> {
    let bad = |m: String| Err(LoadError::Config(m));
    for key in [
        "gemma3.final_logit_softcapping",
        "gemma3.attn_logit_softcapping",
    ] {
        if let Some(v) = g.get_f32(key)? {
            if v != 0.0 {
                return bad(format!(
                    "metadata `{key}` = {v}: logit soft-capping is not supported"
                ));
            }
        }
    }
    f.embed_scale = Some((hidden_size as f32).sqrt());
    if num_layers == 62 && num_heads > 0 {
        f.attn_scale = Some(1.0 / ((hidden_size / num_heads) as f32).sqrt());
    } else {
        f.attn_scale = Some(1.0 / (head_dim as f32).sqrt());
    }
    let window = g
        .get_usize("gemma3.attention.sliding_window")?
        .filter(|&w| w > 0);
    let Some(window) = window else {
        return Ok(());
    };
    f.sliding_window = Some(window);
    let key = "gemma3.attention.sliding_window_pattern";
    f.sliding_layers = match g.get(key) {
        Some(GgufValue::Array(GgufArray::Bool(b))) => {
            if b.len() != num_layers {
                return bad(format!(
                    "metadata `{key}` has {} entries for {num_layers} layers",
                    b.len()
                ));
            }
            b.clone()
        }
        Some(GgufValue::Array(_)) => {
            return bad(format!(
                "metadata `{key}` must be an array of bool or an integer"
            ))
        }
        _ => {
            let n = g.get_usize(key)?.unwrap_or(6);
            (0..num_layers).map(|il| n == 0 || il % n < n - 1).collect()
        }
    };
    f.sliding_rope = Some(crate::model::config::LocalRope {
        theta: g.get_f32("gemma3.rope.freq_base_swa")?.unwrap_or(10000.0),
        scaling: RopeScaling::default(),
    });
    Ok(())
}

/// RoPE settings from `{arch}.rope.*` metadata, mapped onto transformers'
/// definitions (which `convert_hf_to_gguf.py` wrote them from): `freq_base`,
/// `scaling.type` none/linear/yarn with `scaling.factor`,
/// `scaling.original_context_length` and the `scaling.yarn_*` keys, or the
/// older `rope.scale_linear`. Per-frequency factors (`rope_freqs.weight`)
/// are tensor data: [`rope_freq_factors`] reads them.
pub fn rope_from_gguf(
    g: &GgufFile,
    arch: &str,
    max_position_embeddings: usize,
) -> Result<(f32, RopeScaling), LoadError> {
    let key = |k: &str| format!("{arch}.rope.{k}");
    let bad = |m: String| LoadError::Config(m);
    let theta = g.get_f32(&key("freq_base"))?.unwrap_or(10000.0);
    let factor = g.get_f32(&key("scaling.factor"))?;
    let mut r = RopeScaling::default();
    let kind = g.get_str(&key("scaling.type"))?.unwrap_or("none");
    match kind {
        "none" => {}
        "linear" => {
            r.rope_type = RopeType::Linear;
            r.factor = factor.ok_or_else(|| {
                bad(format!(
                    "metadata `{}` is missing (needed by linear RoPE scaling)",
                    key("scaling.factor")
                ))
            })?;
        }
        "yarn" => {
            r.rope_type = RopeType::Yarn;
            r.original_max_position_embeddings = g
                .get_usize(&key("scaling.original_context_length"))?
                .unwrap_or(max_position_embeddings);
            let f = match factor {
                Some(f) => f as f64,
                None => max_position_embeddings as f64 / r.original_max_position_embeddings as f64,
            };
            r.factor = f as f32;
            r.attention_factor = match g.get_f32(&key("scaling.yarn_attn_factor"))? {
                Some(a) => a,
                None => crate::model::config::yarn_get_mscale(f, 1.0) as f32,
            };
            r.beta_fast = g.get_f32(&key("scaling.yarn_beta_fast"))?.unwrap_or(32.0);
            r.beta_slow = g.get_f32(&key("scaling.yarn_beta_slow"))?.unwrap_or(1.0);
            for (k, neutral) in [
                ("scaling.yarn_ext_factor", None),
                ("scaling.yarn_log_multiplier", Some(0.0)),
                ("scaling.attn_factor", Some(1.0)),
            ] {
                if let Some(v) = g.get_f32(&key(k))? {
                    if Some(v) != neutral {
                        return Err(bad(format!(
                            "metadata `{}` = {v} is not supported (sramlm applies YaRN as transformers defines it)",
                            key(k)
                        )));
                    }
                }
            }
        }
        other => {
            return Err(bad(format!(
                "RoPE scaling type `{other}` (`{}`) is not supported (supported: none, linear, yarn, and per-frequency factors in rope_freqs.weight)",
                key("scaling.type")
            )))
        }
    }
    if let Some(s) = g.get_f32(&key("scale_linear"))? {
        if s != 1.0 {
            if r.rope_type != RopeType::Default {
                return Err(bad(format!(
                    "metadata `{}` = {s} and `{}` = {kind} both scale RoPE",
                    key("scale_linear"),
                    key("scaling.type")
                )));
            }
            r.rope_type = RopeType::Linear;
            r.factor = s;
        }
    }
    Ok((theta, r))
}

/// `rope_freqs.weight` (llama.cpp's per-frequency divisors of RoPE's
/// frequencies, written for Llama 3.1+ `llama3` scaling), or `None`.
pub fn rope_freq_factors(g: &GgufFile, data: &[u8]) -> Result<Option<Vec<f32>>, LoadError> {
    let Some(info) = g.tensor("rope_freqs.weight") else {
        return Ok(None);
    };
    if info.ggml_type != GgmlType::F32 || info.dims.len() != 1 {
        return Err(LoadError::Config(format!(
            "`rope_freqs.weight` must be a 1-D F32 tensor, got {} {:?}",
            info.ggml_type, info.dims
        )));
    }
    let range = g.tensor_range(info);
    let bytes = data.get(range).ok_or_else(|| {
        format_err("tensor `rope_freqs.weight` extends beyond the end of the file")
    })?;
    Ok(Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    ))
}

/// The canonical tensor for `w`, its bytes a window of `map` (`Ok(None)` when absent).
fn fetch_tensor(
    g: &GgufFile,
    map: &Arc<memmap2::Mmap>,
    w: WeightName,
) -> Result<Option<Tensor>, LoadError> {
    let name = w.gguf();
    let Some(info) = g.tensor(&name) else {
        return Ok(None);
    };
    let dtype = info
        .ggml_type
        .dtype()
        .ok_or_else(|| LoadError::UnsupportedDType {
            tensor: name.clone(),
            dtype: info.ggml_type.to_string(),
        })?;
    let range = g.tensor_range(info);
    if range.end > map.len() {
        return Err(format_err(format!(
            "tensor `{name}` extends beyond the end of the file"
        )));
    }
    Ok(Some(Tensor {
        dtype,
        shape: info.shape(),
        bytes: Bytes::Mapped {
            map: map.clone(),
            start: range.start,
            len: range.len(),
        },
    }))
}

/// Loads a llama-architecture GGUF file: config, weights (memory-mapped, in
/// their GGML encoding), tokenizer and chat template.
pub fn load(path: &Path) -> Result<Model, LoadError> {
    if !path.exists() {
        return Err(LoadError::NotFound(path.to_path_buf()));
    }
    crate::model::safetensors::check_regular_file(path)?;
    let file = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    // SAFETY: the mapping is read-only; sramlm never writes model files, and
    // the usual caveat (another process truncating the file) is accepted by
    // every mmap-based loader.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?;
    let map = Arc::new(map);
    let with_path = |e: LoadError| match e {
        LoadError::Format(m) => LoadError::Format(format!("{}: {m}", path.display())),
        other => other,
    };
    let g = GgufFile::parse(&map).map_err(with_path)?;
    let mut config = config_from_gguf(&g).map_err(with_path)?;
    config.rope_scaling.freq_factors = rope_freq_factors(&g, &map).map_err(with_path)?;
    config.validate().map_err(with_path)?;
    let tokenizer = tokenizer::from_gguf(&g)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(LoadError::Config(format!(
            "tokenizer has {} tokens but the model's vocab_size is {}",
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    let weights = ModelWeights::assemble(
        &config,
        |w: WeightName| fetch_tensor(&g, &map, w),
        &|w: WeightName| w.gguf(),
    )
    .map_err(with_path)?;
    let used: std::collections::HashSet<String> = WeightName::all(&config)
        .into_iter()
        .map(|w| w.gguf())
        .collect();
    let unused: Vec<String> = g
        .tensors
        .iter()
        .filter(|t| !used.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    crate::model::safetensors::refuse_unused(&unused, &config)?;
    let chat_template = g
        .get_str("tokenizer.chat_template")
        .map_err(with_path)?
        .map(String::from);
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Ok(Model {
        name,
        path: path.to_path_buf(),
        format: "gguf",
        config,
        weights,
        tokenizer,
        chat_template,
    })
}

#[cfg(test)]
mod rope_tests {
    use super::*;
    use crate::model::gguf::{GgmlType, GgufValue, GgufWriter};

    fn file(kvs: &[(&str, GgufValue)], freqs: Option<&[f32]>) -> (GgufFile, Vec<u8>) {
        let mut w = GgufWriter::new();
        for (k, v) in kvs {
            w = w.kv(k, v.clone());
        }
        if let Some(f) = freqs {
            let bytes = f.iter().flat_map(|x| x.to_le_bytes()).collect();
            w = w.tensor("rope_freqs.weight", &[f.len()], GgmlType::F32.id(), bytes);
        }
        let bytes = w.to_bytes();
        (GgufFile::parse(&bytes).unwrap(), bytes)
    }
    fn s(v: &str) -> GgufValue {
        GgufValue::String(v.into())
    }

    #[test]
    fn rope_keys() {
        let (g, _) = file(&[("llama.rope.freq_base", GgufValue::F32(500000.0))], None);
        let (theta, r) = rope_from_gguf(&g, "llama", 64).unwrap();
        assert_eq!((theta, r), (500000.0, RopeScaling::default()));

        let (g, _) = file(
            &[
                ("llama.rope.scaling.type", s("linear")),
                ("llama.rope.scaling.factor", GgufValue::F32(4.0)),
            ],
            None,
        );
        let (theta, r) = rope_from_gguf(&g, "llama", 64).unwrap();
        assert_eq!(
            (theta, r.rope_type, r.factor),
            (10000.0, RopeType::Linear, 4.0)
        );

        let (g, _) = file(&[("llama.rope.scale_linear", GgufValue::F32(2.0))], None);
        let r = rope_from_gguf(&g, "llama", 64).unwrap().1;
        assert_eq!((r.rope_type, r.factor), (RopeType::Linear, 2.0));

        // yarn: transformers' defaults where the converter wrote nothing.
        let (g, _) = file(
            &[
                ("llama.rope.scaling.type", s("yarn")),
                ("llama.rope.scaling.factor", GgufValue::F32(4.0)),
                (
                    "llama.rope.scaling.original_context_length",
                    GgufValue::U32(16),
                ),
            ],
            None,
        );
        let r = rope_from_gguf(&g, "llama", 64).unwrap().1;
        assert_eq!(
            (
                r.rope_type,
                r.original_max_position_embeddings,
                r.beta_fast,
                r.beta_slow,
                r.truncate
            ),
            (RopeType::Yarn, 16, 32.0, 1.0, true)
        );
        assert!((r.attention_factor - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
        let (g, _) = file(
            &[
                ("llama.rope.scaling.type", s("yarn")),
                ("llama.rope.scaling.factor", GgufValue::F32(4.0)),
                ("llama.rope.scaling.yarn_attn_factor", GgufValue::F32(0.7)),
                ("llama.rope.scaling.yarn_beta_fast", GgufValue::F32(16.0)),
                ("llama.rope.scaling.yarn_beta_slow", GgufValue::F32(2.0)),
            ],
            None,
        );
        let r = rope_from_gguf(&g, "llama", 64).unwrap().1;
        assert_eq!(
            (
                r.attention_factor,
                r.beta_fast,
                r.beta_slow,
                r.original_max_position_embeddings
            ),
            (0.7, 16.0, 2.0, 64)
        );
    }

    #[test]
    fn rope_key_errors() {
        let err = |kvs: &[(&str, GgufValue)]| {
            let (g, _) = file(kvs, None);
            rope_from_gguf(&g, "llama", 64).unwrap_err().to_string()
        };
        let e = err(&[("llama.rope.scaling.type", s("longrope"))]);
        assert!(e.contains("`longrope`") && e.contains("supported"), "{e}");
        let e = err(&[("llama.rope.scaling.type", s("linear"))]);
        assert!(e.contains("llama.rope.scaling.factor"), "{e}");
        let e = err(&[
            ("llama.rope.scaling.type", s("yarn")),
            ("llama.rope.scaling.factor", GgufValue::F32(4.0)),
            (
                "llama.rope.scaling.yarn_log_multiplier",
                GgufValue::F32(0.1),
            ),
        ]);
        assert!(e.contains("yarn_log_multiplier"), "{e}");
    }

    #[test]
    fn rope_freqs_tensor() {
        let (g, bytes) = file(&[], Some(&[1.0, 2.0, 8.0]));
        assert_eq!(
            rope_freq_factors(&g, &bytes).unwrap(),
            Some(vec![1.0, 2.0, 8.0])
        );
        let (g, bytes) = file(&[], None);
        assert_eq!(rope_freq_factors(&g, &bytes).unwrap(), None);
        // Checked against head_dim when the config is validated.
        let r = RopeScaling {
            freq_factors: Some(vec![1.0, 2.0, 8.0]),
            ..Default::default()
        };
        let e = r.check(8).unwrap_err();
        assert_eq!(
            e,
            crate::model::RopeError::FreqFactorCount {
                found: 3,
                expected: 4
            }
        );
        let e = e.to_string();
        assert!(e.contains("rope_freqs.weight") && e.contains('4'), "{e}");
        let r = RopeScaling {
            freq_factors: Some(vec![1.0, 0.0]),
            ..Default::default()
        };
        let e = r.check(4).unwrap_err();
        assert_eq!(e, crate::model::RopeError::FreqFactorNotPositive(0.0));
        assert!(e.to_string().contains("positive"));
    }
}

#[cfg(test)]
mod gemma3_tests {
    use super::*;
    use crate::model::gguf::GgufWriter;
    use GgufValue::{F32, U32};

    /// A gemma3 GGUF's metadata (no tensors): 8 layers, hidden 128, 4 heads
    /// of 16, plus `extra`.
    fn cfg(extra: &[(&str, GgufValue)]) -> Result<LlamaConfig, LoadError> {
        let mut kvs: Vec<(&str, GgufValue)> = vec![
            ("general.architecture", GgufValue::String("gemma3".into())),
            ("gemma3.embedding_length", U32(128)),
            ("gemma3.attention.head_count", U32(4)),
            ("gemma3.attention.head_count_kv", U32(2)),
            ("gemma3.attention.key_length", U32(16)),
            ("gemma3.block_count", U32(8)),
            ("gemma3.feed_forward_length", U32(96)),
            ("gemma3.attention.layer_norm_rms_epsilon", F32(1e-6)),
            ("gemma3.vocab_size", U32(512)),
            ("gemma3.rope.freq_base", F32(1e6)),
        ];
        for (k, v) in extra {
            kvs.retain(|(b, _)| b != k);
            kvs.push((k, v.clone()));
        }
        let w = kvs
            .into_iter()
            .fold(GgufWriter::new(), |w, (k, v)| w.kv(k, v));
        let bytes = w.to_bytes();
        config_from_gguf(&GgufFile::parse(&bytes).unwrap())
    }

    /// As llama.cpp's `llama_model_gemma3::load_arch_hparams`.
    #[test]
    fn gemma3_metadata_as_llama_cpp_reads_it() {
        // No window key: every layer full attention with the file's RoPE.
        let c = cfg(&[]).unwrap();
        let a = &c.arch;
        assert_eq!(a.name, "Gemma3ForCausalLM");
        assert_eq!(
            (a.sliding_window, a.norm_weight_offset, a.embed_scale),
            (None, 0.0, Some(128f32.sqrt()))
        );
        assert!((0..8).all(|l| !c.is_sliding(l) && c.layer_rope(l).0 == 1e6));
        assert_eq!(c.attn_scale(), 0.25);
        assert_eq!(c.rope_layout, RopeLayout::Halves);

        // A window: period 6 (layer il slides when il % 6 < 5), base 1e4 unscaled
        // on the sliding layers, the file's (linear) scaling on the others.
        let c = cfg(&[
            ("gemma3.attention.sliding_window", U32(512)),
            (
                "gemma3.rope.scaling.type",
                GgufValue::String("linear".into()),
            ),
            ("gemma3.rope.scaling.factor", F32(8.0)),
        ])
        .unwrap();
        let s = [true, true, true, true, true, false, true, true];
        assert_eq!(c.arch.sliding_layers, s);
        assert_eq!((c.layer_window(0), c.layer_window(5)), (512, 0));
        let (t, r) = c.layer_rope(1);
        assert_eq!((t, r.rope_type), (10000.0, RopeType::Default));
        let (t, r) = c.layer_rope(5);
        assert_eq!((t, r.rope_type, r.factor), (1e6, RopeType::Linear, 8.0));

        // A period and a base of the file's own; a per-layer list.
        let c = cfg(&[
            ("gemma3.attention.sliding_window", U32(4)),
            ("gemma3.attention.sliding_window_pattern", U32(2)),
            ("gemma3.rope.freq_base_swa", F32(5000.0)),
        ])
        .unwrap();
        assert_eq!(
            c.arch.sliding_layers,
            [true, false, true, false, true, false, true, false]
        );
        assert_eq!(c.layer_rope(0).0, 5000.0);
        let list = vec![false, true, true, false, false, false, true, true];
        let c = cfg(&[
            ("gemma3.attention.sliding_window", U32(4)),
            (
                "gemma3.attention.sliding_window_pattern",
                GgufValue::Array(GgufArray::Bool(list.clone())),
            ),
        ])
        .unwrap();
        assert_eq!(c.arch.sliding_layers, list);
        let e = cfg(&[
            ("gemma3.attention.sliding_window", U32(4)),
            (
                "gemma3.attention.sliding_window_pattern",
                GgufValue::Array(GgufArray::Bool(vec![true; 3])),
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sliding_window_pattern") && e.contains('3'),
            "{e}"
        );

        // The 62-layer (27B) model scales by 1/sqrt(n_embd / n_head).
        let c = cfg(&[("gemma3.block_count", U32(62))]).unwrap();
        assert_eq!(c.attn_scale(), 1.0 / 32f32.sqrt());

        // Soft-capping is refused, naming the key.
        for key in [
            "gemma3.final_logit_softcapping",
            "gemma3.attn_logit_softcapping",
        ] {
            let e = cfg(&[(key, F32(30.0))]).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains('\n'), "{e}");
        }
    }
}
