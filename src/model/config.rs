//! The one model description both loaders produce: Llama-family hyper-parameters.

use super::LoadError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How RoPE pairs the channels of one head.
///
/// Hugging Face checkpoints rotate `x[i]` with `x[i + head_dim/2]` (`rotate_half`);
/// llama.cpp's GGUF files permute the Q/K rows so that RoPE rotates adjacent pairs
/// `x[2i]`, `x[2i+1]`. The loader picks the layout; the kernels apply it as told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeLayout {
    /// `rotate_half` (Hugging Face / NeoX): pairs `(i, i + d/2)`.
    Halves,
    /// llama.cpp / GGUF llama: pairs `(2i, 2i + 1)`.
    Adjacent,
}

impl RopeLayout {
    pub fn as_u32(self) -> u32 {
        match self {
            RopeLayout::Halves => 0,
            RopeLayout::Adjacent => 1,
        }
    }
}

/// Hyper-parameters of a Llama-family decoder (`LlamaForCausalLM`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Context window: the KV cache is allocated for this many positions.
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub tie_word_embeddings: bool,
    pub rope_layout: RopeLayout,
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation (Hugging Face allows a list).
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    /// Width of the Q projection output (`num_heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    /// Width of the K and V projection outputs (`num_kv_heads * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Checks the fields against each other; every loader calls this.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |msg: String| Err(LoadError::Config(msg));
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("`{name}` must be positive, got 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(format!(
                "rms_norm_eps must be positive, got {}",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!(
                "rope_theta must be positive, got {}",
                self.rope_theta
            ));
        }
        for &id in self.eos_token_ids.iter().chain(self.bos_token_id.iter()) {
            if id as usize >= self.vocab_size {
                return bad(format!(
                    "special token id {id} is outside the vocabulary ({})",
                    self.vocab_size
                ));
            }
        }
        // Sanity bounds so a corrupt config cannot request absurd allocations.
        let limits = [
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("num_hidden_layers", self.num_layers, 1 << 10),
            ("num_attention_heads", self.num_heads, 1 << 10),
            ("head_dim", self.head_dim, 1 << 10),
            ("vocab_size", self.vocab_size, 1 << 22),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 22,
            ),
        ];
        for (name, v, max) in limits {
            if v > max {
                return bad(format!(
                    "`{name}` = {v} is larger than sramlm supports ({max})"
                ));
            }
        }
        Ok(())
    }

    /// Parses a Hugging Face `config.json` (Llama family only).
    pub fn from_hf_json(path: &Path) -> Result<Self, LoadError> {
        super::safetensors::check_regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
        Self::from_hf_str(&text, path)
    }

    pub fn from_hf_str(text: &str, path: &Path) -> Result<Self, LoadError> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| LoadError::Config(format!("{} is not valid JSON: {e}", path.display())))?;
        let obj = v.as_object().ok_or_else(|| {
            LoadError::Config(format!("{} must hold a JSON object", path.display()))
        })?;
        let archs: Vec<String> = obj
            .get("architectures")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let model_type = obj.get("model_type").and_then(|s| s.as_str()).unwrap_or("");
        if !archs.is_empty() && !archs.iter().any(|a| a == "LlamaForCausalLM") {
            return Err(LoadError::UnsupportedArchitecture(archs.join(", ")));
        }
        if archs.is_empty() && model_type != "llama" {
            return Err(LoadError::UnsupportedArchitecture(
                if model_type.is_empty() {
                    "(config.json names no `architectures` and no `model_type`)".into()
                } else {
                    format!("model_type `{model_type}`")
                },
            ));
        }
        let get_usize = |key: &str| -> Result<usize, LoadError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Err(LoadError::Config(format!(
                    "{}: missing field `{key}`",
                    path.display()
                ))),
                Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                    LoadError::Config(format!(
                        "{}: field `{key}` must be a non-negative integer, got {v}",
                        path.display()
                    ))
                }),
            }
        };
        let opt_usize = |key: &str| -> Result<Option<usize>, LoadError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(_) => get_usize(key).map(Some),
            }
        };
        let get_f32 = |key: &str, default: Option<f32>| -> Result<f32, LoadError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => default.ok_or_else(|| {
                    LoadError::Config(format!("{}: missing field `{key}`", path.display()))
                }),
                Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| {
                    LoadError::Config(format!(
                        "{}: field `{key}` must be a number, got {v}",
                        path.display()
                    ))
                }),
            }
        };
        if let Some(scaling) = obj.get("rope_scaling") {
            if !scaling.is_null() {
                return Err(LoadError::Config(format!(
                    "{}: rope_scaling {scaling} is not supported (only plain RoPE)",
                    path.display()
                )));
            }
        }
        if let Some(act) = obj.get("hidden_act").and_then(|s| s.as_str()) {
            if act != "silu" {
                return Err(LoadError::Config(format!(
                    "{}: hidden_act `{act}` is not supported (Llama uses silu)",
                    path.display()
                )));
            }
        }
        for key in ["attention_bias", "mlp_bias"] {
            if obj.get(key).and_then(|b| b.as_bool()) == Some(true) {
                return Err(LoadError::Config(format!(
                    "{}: `{key}: true` is not supported",
                    path.display()
                )));
            }
        }
        let hidden_size = get_usize("hidden_size")?;
        let num_heads = get_usize("num_attention_heads")?;
        let num_kv_heads = opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads == 0 {
            return Err(LoadError::Config(
                "`num_attention_heads` must be positive, got 0".into(),
            ));
        }
        let head_dim = match opt_usize("head_dim")? {
            Some(h) => h,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(LoadError::Config(format!(
                        "hidden_size ({hidden_size}) is not divisible by num_attention_heads ({num_heads}) and no head_dim is given"
                    )));
                }
                hidden_size / num_heads
            }
        };
        let eos_token_ids = match obj.get("eos_token_id") {
            None | Some(serde_json::Value::Null) => vec![],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(|| {
                            LoadError::Config(format!(
                                "eos_token_id entries must be integers below 2^32, got {x}"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(v) => vec![v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| {
                    LoadError::Config(format!(
                        "eos_token_id must be an integer below 2^32, got {v}"
                    ))
                })?],
        };
        let cfg = LlamaConfig {
            hidden_size,
            intermediate_size: get_usize("intermediate_size")?,
            num_layers: get_usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: get_usize("vocab_size")?,
            max_position_embeddings: opt_usize("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: get_f32("rms_norm_eps", Some(1e-6))?,
            rope_theta: get_f32("rope_theta", Some(10000.0))?,
            tie_word_embeddings: obj
                .get("tie_word_embeddings")
                .and_then(|b| b.as_bool())
                .unwrap_or(false),
            rope_layout: RopeLayout::Halves,
            bos_token_id: opt_usize("bos_token_id")?
                .map(|x| {
                    u32::try_from(x).map_err(|_| {
                        LoadError::Config(format!("bos_token_id must be below 2^32, got {x}"))
                    })
                })
                .transpose()?,
            eos_token_ids,
        };
        cfg.validate().map_err(|e| match e {
            LoadError::Config(m) => LoadError::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(cfg)
    }

    /// Number of parameters implied by the shapes (embedding counted once when tied).
    pub fn param_count(&self) -> usize {
        let d = self.hidden_size;
        let per_layer = d * self.q_dim()
            + 2 * d * self.kv_dim()
            + self.q_dim() * d
            + 3 * d * self.intermediate_size
            + 2 * d;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_layers * per_layer + d + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LlamaConfig, LoadError> {
        LlamaConfig::from_hf_str(s, Path::new("config.json"))
    }

    const BASE: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":172,
        "num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"vocab_size":512,
        "max_position_embeddings":512,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true,
        "bos_token_id":1,"eos_token_id":2}"#;

    #[test]
    fn parses_llama_config() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.head_dim, 8);
        assert_eq!(c.kv_dim(), 32);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn rejects_other_architectures_by_name() {
        let s = BASE.replace("LlamaForCausalLM", "MistralForCausalLM");
        let e = parse(&s).unwrap_err().to_string();
        assert!(e.contains("MistralForCausalLM"), "{e}");
    }

    #[test]
    fn names_missing_field() {
        let s = BASE.replace("\"intermediate_size\":172,", "");
        let e = parse(&s).unwrap_err().to_string();
        assert!(e.contains("intermediate_size"), "{e}");
    }

    #[test]
    fn rejects_contradictory_heads() {
        let s = BASE.replace("\"num_key_value_heads\":4", "\"num_key_value_heads\":3");
        let e = parse(&s).unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
    }
}
