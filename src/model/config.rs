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

/// RoPE variants, named as transformers names them (`rope_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeType {
    /// `inv_freq[i] = theta^(-2i/d)`.
    #[default]
    Default,
    /// Every frequency divided by `factor`.
    Linear,
    /// Dynamic NTK: past `max_position_embeddings` the base grows with the
    /// sequence length (so each position's frequencies depend on it).
    Dynamic,
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a
    /// smooth ramp in between.
    Llama3,
    /// YaRN: a ramp between interpolated and extrapolated frequencies, and
    /// cos/sin scaled by the attention factor.
    Yarn,
}

impl RopeType {
    /// What the one-line error for other types lists.
    pub const SUPPORTED: &'static str = "default, linear, dynamic, llama3, yarn";

    pub fn name(self) -> &'static str {
        match self {
            RopeType::Default => "default",
            RopeType::Linear => "linear",
            RopeType::Dynamic => "dynamic",
            RopeType::Llama3 => "llama3",
            RopeType::Yarn => "yarn",
        }
    }

    /// The type a config names, or the one-line error naming it.
    pub fn parse(s: &str) -> Result<RopeType, RopeError> {
        Ok(match s {
            "default" => RopeType::Default,
            "linear" => RopeType::Linear,
            "dynamic" => RopeType::Dynamic,
            "llama3" => RopeType::Llama3,
            "yarn" => RopeType::Yarn,
            other => return Err(RopeError::UnsupportedType(other.to_string())),
        })
    }
}

/// A RoPE setting sramlm refuses, from a `config.json` or GGUF metadata (one
/// line naming the field and the value).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RopeError {
    #[error("RoPE type `{0}` is not supported (supported: {sup})", sup = RopeType::SUPPORTED)]
    UnsupportedType(String),
    #[error("RoPE `{name}` must be a positive number, got {value}")]
    NotPositive { name: &'static str, value: f32 },
    #[error("llama3 RoPE needs high_freq_factor > low_freq_factor, got {high} and {low}")]
    Llama3FreqOrder { high: f32, low: f32 },
    #[error("dynamic RoPE needs head_dim > 2 (its exponent is d/(d-2)), got {0}")]
    DynamicHeadDim(usize),
    #[error("{} RoPE needs original_max_position_embeddings > 0", .0.name())]
    NoOriginalContext(RopeType),
    #[error("rope_freqs.weight has {found} entries, expected head_dim / 2 = {expected}")]
    FreqFactorCount { found: usize, expected: usize },
    #[error("rope_freqs.weight holds {0}; per-frequency factors must be positive")]
    FreqFactorNotPositive(f32),
    /// A JSON field of the wrong type: `expected` is e.g. "a number".
    #[error("`{key}` must be {expected}, got {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("`{dict}` is nested per layer type (`{layer_type}`); sramlm supports one RoPE for all layers")]
    PerLayerType { dict: String, layer_type: String },
    #[error("partial rotary embeddings are not supported (`partial_rotary_factor` = {0})")]
    PartialRotary(f64),
    #[error("`{dict}` of type `{rope_type}` is missing the field `{field}`")]
    MissingField {
        dict: String,
        rope_type: String,
        field: String,
    },
    #[error("`original_max_position_embeddings` must be a positive integer, got {0}")]
    BadOriginalContext(f64),
}

/// RoPE scaling as transformers applies it (`modeling_rope_utils.py`), with
/// every default resolved; `kernels::rope::inv_freq` turns it into frequencies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    pub rope_type: RopeType,
    /// linear, dynamic, llama3, yarn (1 for default).
    pub factor: f32,
    /// llama3 and yarn: the pre-training context. dynamic: the length past
    /// which the base grows (transformers uses `max_position_embeddings`).
    pub original_max_position_embeddings: usize,
    /// llama3.
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    /// yarn (transformers' defaults 32 and 1).
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// yarn: floor/ceil the correction range (default true).
    pub truncate: bool,
    /// Multiplies cos and sin (yarn's attention factor / mscale); 1 otherwise.
    pub attention_factor: f32,
    /// Per-frequency divisors of the frequencies (GGUF `rope_freqs.weight`,
    /// Llama 3.1+ as llama.cpp writes it): `head_dim / 2` of them.
    #[serde(default)]
    pub freq_factors: Option<Vec<f32>>,
}

impl Default for RopeScaling {
    fn default() -> Self {
        RopeScaling {
            rope_type: RopeType::Default,
            factor: 1.0,
            original_max_position_embeddings: 0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            truncate: true,
            attention_factor: 1.0,
            freq_factors: None,
        }
    }
}

/// transformers' `get_mscale` (yarn): `0.1 * mscale * ln(scale) + 1`, 1 for `scale <= 1`.
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl RopeScaling {
    /// One line for `info`: type, factor, original context, attention factor.
    pub fn describe(&self) -> String {
        let mut s = self.rope_type.name().to_string();
        match self.rope_type {
            RopeType::Default => {}
            RopeType::Linear => s += &format!(", factor {}", self.factor),
            RopeType::Dynamic => {
                s += &format!(
                    ", factor {}, rescales past {} positions",
                    self.factor, self.original_max_position_embeddings
                )
            }
            RopeType::Llama3 => {
                s += &format!(
                    ", factor {}, original context {}, low/high freq factors {}/{}",
                    self.factor,
                    self.original_max_position_embeddings,
                    self.low_freq_factor,
                    self.high_freq_factor
                )
            }
            RopeType::Yarn => {
                s += &format!(
                    ", factor {}, original context {}, beta fast/slow {}/{}{}",
                    self.factor,
                    self.original_max_position_embeddings,
                    self.beta_fast,
                    self.beta_slow,
                    if self.truncate { "" } else { ", not truncated" }
                )
            }
        }
        s += &format!(", attention factor {}", self.attention_factor);
        if let Some(f) = &self.freq_factors {
            s += &format!(
                ", {} per-frequency factors (rope_freqs.weight) {:.4}..{:.4}",
                f.len(),
                f.first().copied().unwrap_or(1.0),
                f.last().copied().unwrap_or(1.0)
            );
        }
        s
    }

    /// Range checks shared by both loaders.
    pub fn check(&self, head_dim: usize) -> Result<(), RopeError> {
        let pos = |name: &'static str, value: f32| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(RopeError::NotPositive { name, value })
            }
        };
        pos("factor", self.factor)?;
        pos("attention_factor", self.attention_factor)?;
        match self.rope_type {
            RopeType::Llama3 => {
                pos("low_freq_factor", self.low_freq_factor)?;
                pos("high_freq_factor", self.high_freq_factor)?;
                if self.high_freq_factor <= self.low_freq_factor {
                    return Err(RopeError::Llama3FreqOrder {
                        high: self.high_freq_factor,
                        low: self.low_freq_factor,
                    });
                }
            }
            RopeType::Yarn => {
                pos("beta_fast", self.beta_fast)?;
                pos("beta_slow", self.beta_slow)?;
            }
            RopeType::Dynamic if head_dim <= 2 => {
                return Err(RopeError::DynamicHeadDim(head_dim));
            }
            _ => {}
        }
        if matches!(
            self.rope_type,
            RopeType::Llama3 | RopeType::Yarn | RopeType::Dynamic
        ) && self.original_max_position_embeddings == 0
        {
            return Err(RopeError::NoOriginalContext(self.rope_type));
        }
        if let Some(f) = &self.freq_factors {
            if f.len() != head_dim / 2 {
                return Err(RopeError::FreqFactorCount {
                    found: f.len(),
                    expected: head_dim / 2,
                });
            }
            if let Some(x) = f.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                return Err(RopeError::FreqFactorNotPositive(*x));
            }
        }
        Ok(())
    }

    /// Parses transformers' RoPE settings from a `config.json` object: 4.x
    /// (`rope_theta` + `rope_scaling` with `type` or `rope_type`) and 5.x
    /// (`rope_parameters` holding `rope_theta`, `rope_type` and the scaling
    /// fields), resolving defaults as transformers' `standardize_rope_params`
    /// and the `_compute_*_parameters` functions do. Returns (theta, scaling).
    pub fn from_hf(
        obj: &serde_json::Map<String, serde_json::Value>,
        max_position_embeddings: usize,
    ) -> Result<(f32, RopeScaling), RopeError> {
        use serde_json::Value;
        fn nonnull(v: Option<&serde_json::Value>) -> Option<&serde_json::Value> {
            v.filter(|v| !v.is_null())
        }
        // transformers: `rope_scaling or rope_parameters` (an empty dict counts as absent).
        let wrong = |key: String, expected: &'static str, v: &Value| RopeError::WrongType {
            key,
            expected,
            found: v.to_string(),
        };
        let dict = |key: &str| -> Result<Option<&serde_json::Map<String, Value>>, RopeError> {
            match nonnull(obj.get(key)) {
                None => Ok(None),
                Some(Value::Object(m)) if m.is_empty() => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m)),
                Some(v) => Err(wrong(key.to_string(), "an object", v)),
            }
        };
        let (name, params) = match (dict("rope_scaling")?, dict("rope_parameters")?) {
            (Some(m), _) => ("rope_scaling", Some(m)),
            (None, Some(m)) => ("rope_parameters", Some(m)),
            (None, None) => ("rope_parameters", None),
        };
        let empty = serde_json::Map::new();
        let p = params.unwrap_or(&empty);
        if let Some(k) = p
            .keys()
            .find(|k| ["full_attention", "sliding_attention"].contains(&k.as_str()))
        {
            return Err(RopeError::PerLayerType {
                dict: name.to_string(),
                layer_type: k.clone(),
            });
        }
        let num = |key: &str, v: &Value| -> Result<f64, RopeError> {
            v.as_f64()
                .ok_or_else(|| wrong(format!("{name}.{key}"), "a number", v))
        };
        let get = |key: &str| -> Result<Option<f64>, RopeError> {
            nonnull(p.get(key)).map(|v| num(key, v)).transpose()
        };
        let top = |key: &str| -> Result<Option<f64>, RopeError> {
            nonnull(obj.get(key))
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| wrong(key.to_string(), "a number", v))
                })
                .transpose()
        };
        let theta = match get("rope_theta")? {
            Some(t) => t,
            None => top("rope_theta")?.unwrap_or(10000.0),
        };
        let partial = match get("partial_rotary_factor")? {
            Some(v) => Some(v),
            None => top("partial_rotary_factor")?,
        };
        if let Some(v) = partial.filter(|&v| v != 1.0) {
            return Err(RopeError::PartialRotary(v));
        }
        let type_name = match nonnull(p.get("rope_type")).or(nonnull(p.get("type"))) {
            None => "default".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(wrong(format!("{name}.rope_type"), "a string", v)),
        };
        let rope_type = RopeType::parse(&type_name)?;
        let required = |key: &str| -> Result<f64, RopeError> {
            get(key)?.ok_or_else(|| RopeError::MissingField {
                dict: name.to_string(),
                rope_type: type_name.clone(),
                field: key.to_string(),
            })
        };
        let mut r = RopeScaling {
            rope_type,
            ..RopeScaling::default()
        };
        // transformers gives a top-level `original_max_position_embeddings`
        // priority (the Phi-3 exception), then the dict's, then max_position_embeddings.
        let original = || -> Result<usize, RopeError> {
            let v = match top("original_max_position_embeddings")? {
                Some(v) => Some(v),
                None => get("original_max_position_embeddings")?,
            };
            match v {
                None => Ok(max_position_embeddings),
                Some(v) if v >= 1.0 && v.fract() == 0.0 && v <= (1u64 << 32) as f64 => {
                    Ok(v as usize)
                }
                Some(v) => Err(RopeError::BadOriginalContext(v)),
            }
        };
        match rope_type {
            RopeType::Default => {}
            RopeType::Linear => r.factor = required("factor")? as f32,
            RopeType::Dynamic => {
                r.factor = required("factor")? as f32;
                r.original_max_position_embeddings = max_position_embeddings;
            }
            RopeType::Llama3 => {
                r.factor = required("factor")? as f32;
                r.low_freq_factor = required("low_freq_factor")? as f32;
                r.high_freq_factor = required("high_freq_factor")? as f32;
                r.original_max_position_embeddings = original()?;
            }
            RopeType::Yarn => {
                r.original_max_position_embeddings = original()?;
                let factor = match get("factor")? {
                    Some(f) => f,
                    None => {
                        max_position_embeddings as f64 / r.original_max_position_embeddings as f64
                    }
                };
                r.factor = factor as f32;
                let mscale = get("mscale")?.unwrap_or(0.0);
                let mscale_all_dim = get("mscale_all_dim")?.unwrap_or(0.0);
                r.attention_factor = match get("attention_factor")? {
                    Some(a) => a,
                    None if mscale != 0.0 && mscale_all_dim != 0.0 => {
                        yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
                    }
                    None => yarn_get_mscale(factor, 1.0),
                } as f32;
                // `get(..) or default`: 0 and null both mean the default.
                r.beta_fast = get("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0) as f32;
                r.beta_slow = get("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0) as f32;
                r.truncate = match nonnull(p.get("truncate")) {
                    None => true,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => return Err(wrong(format!("{name}.truncate"), "a boolean", v)),
                };
            }
        }
        Ok((theta as f32, r))
    }
}

/// The MLP's gate activation: `act(x @ Wg.T) * (x @ Wu.T)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// SiLU (SwiGLU: Llama, Qwen, Mistral).
    #[default]
    Silu,
    /// GELU, tanh approximation (GeGLU: Gemma `gelu_pytorch_tanh`,
    /// ggml's `gelu`): `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluTanh,
}

/// RoPE of the sliding-window layers when it differs from the full-attention
/// layers' (Gemma 3: `rope_parameters.sliding_attention`, 4.x
/// `rope_local_base_freq`, GGUF `rope.freq_base_swa`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalRope {
    pub theta: f32,
    pub scaling: RopeScaling,
}

/// How an architecture differs from plain Llama: small flags on the one
/// model description (the forward pass is shared).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchFeatures {
    /// The architecture as the file names it (`LlamaForCausalLM`, `qwen2`, …).
    pub name: String,
    /// q, k and v projections have a bias (Llama `attention_bias`, Qwen2).
    pub qkv_bias: bool,
    /// The output projection has a bias (Llama `attention_bias`; not Qwen2).
    pub o_bias: bool,
    /// gate, up and down projections have biases (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm of q and k (weights `[head_dim]`) after the
    /// projections, before RoPE (Qwen3 `q_norm` / `k_norm`).
    #[serde(default)]
    pub qk_norm: bool,
    /// Sliding-window attention in every layer (Mistral `sliding_window`):
    /// the token at position p attends to keys p - window + 1 ..= p
    /// (transformers' `kv_idx > q_idx - sliding_window`). `None`: full causal.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Which layers use `sliding_window` (Gemma 3 `layer_types`: `true` for
    /// `sliding_attention`). Empty: every layer (Mistral).
    #[serde(default)]
    pub sliding_layers: Vec<bool>,
    /// RoPE of the sliding layers, when not the config's `rope_theta` /
    /// `rope_scaling` (those are then the full-attention layers').
    #[serde(default)]
    pub sliding_rope: Option<LocalRope>,
    /// Embeddings multiplied by this after the lookup (Gemma:
    /// sqrt(hidden_size)); `None`: not scaled. The tied lm_head is unscaled.
    #[serde(default)]
    pub embed_scale: Option<f32>,
    /// Every RMSNorm multiplies by `norm_weight_offset + w` (Gemma's
    /// `x * (1 + w)`: 1; 0 otherwise). Added in f32 when the weights are
    /// widened, as transformers' `1.0 + self.weight.float()`.
    #[serde(default)]
    pub norm_weight_offset: f32,
    /// RMSNorm of the attention output and of the MLP output before each
    /// residual add (Gemma 2/3 `post_attention_layernorm` /
    /// `post_feedforward_layernorm`).
    #[serde(default)]
    pub post_norms: bool,
    /// The MLP's gate activation.
    #[serde(default)]
    pub activation: Activation,
    /// Attention scores scale; `None`: `head_dim^-0.5` (Gemma 3:
    /// `query_pre_attn_scalar^-0.5`).
    #[serde(default)]
    pub attn_scale: Option<f32>,
}

impl ArchFeatures {
    pub fn llama() -> Self {
        ArchFeatures {
            name: "LlamaForCausalLM".into(),
            ..Default::default()
        }
    }
    /// Qwen2/Qwen2.5: q/k/v biases, no o bias.
    pub fn qwen2() -> Self {
        ArchFeatures {
            name: "Qwen2ForCausalLM".into(),
            qkv_bias: true,
            ..Default::default()
        }
    }
    /// Qwen3: per-head q/k RMSNorm; biases as its `attention_bias` says.
    pub fn qwen3() -> Self {
        ArchFeatures {
            name: "Qwen3ForCausalLM".into(),
            qk_norm: true,
            ..Default::default()
        }
    }
    /// Mistral: Llama with (optionally) sliding-window attention.
    pub fn mistral(sliding_window: Option<usize>) -> Self {
        ArchFeatures {
            name: "MistralForCausalLM".into(),
            sliding_window,
            ..Default::default()
        }
    }
    /// Gemma 3 text (`Gemma3ForCausalLM`): scaled embeddings, (1 + w)
    /// norms, post-norms, q/k norms, GELU-tanh; the window, its layers, the
    /// RoPE of the sliding layers and the attention scale are set by the
    /// loaders.
    pub fn gemma3(hidden_size: usize) -> Self {
        ArchFeatures {
            name: "Gemma3ForCausalLM".into(),
            qk_norm: true,
            embed_scale: Some((hidden_size as f64).sqrt() as f32),
            norm_weight_offset: 1.0,
            post_norms: true,
            activation: Activation::GeluTanh,
            ..Default::default()
        }
    }
    /// The sliding window layer `layer` uses (0: full causal attention).
    pub fn layer_window(&self, layer: usize) -> usize {
        match self.sliding_window {
            Some(w)
                if self.sliding_layers.is_empty()
                    || self.sliding_layers.get(layer) == Some(&true) =>
            {
                w
            }
            _ => 0,
        }
    }
    /// Features beyond Llama's layer shape (SRAM mode's refusal lists them).
    pub fn gemma_like(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.embed_scale.is_some() {
            v.push("scaled embeddings");
        }
        if self.norm_weight_offset != 0.0 {
            v.push("(1 + w) RMSNorm weights");
        }
        if self.post_norms {
            v.push("post-attention/post-MLP norms");
        }
        if self.activation != Activation::Silu {
            v.push("GELU-tanh MLP");
        }
        if self.attn_scale.is_some() {
            v.push("a custom attention scale");
        }
        if !self.sliding_layers.is_empty() || self.sliding_rope.is_some() {
            v.push("per-layer sliding windows and RoPE");
        }
        v
    }
    /// One line for `info`: the name and what differs from plain Llama.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let bias = [
            (self.qkv_bias, "q/k/v"),
            (self.o_bias, "o"),
            (self.mlp_bias, "MLP"),
        ];
        let b: Vec<&str> = bias.iter().filter(|x| x.0).map(|x| x.1).collect();
        if !b.is_empty() {
            parts.push(format!("{} biases", b.join(", ")));
        }
        if self.qk_norm {
            parts.push("per-head q/k RMSNorm".to_string());
        }
        if let Some(w) = self.sliding_window {
            if self.sliding_layers.is_empty() {
                parts.push(format!("sliding-window attention ({w} positions)"));
            } else {
                let n = self.sliding_layers.iter().filter(|&&s| s).count();
                parts.push(format!(
                    "sliding-window attention ({w} positions) on {n} of {} layers",
                    self.sliding_layers.len()
                ));
            }
        }
        if let Some(r) = &self.sliding_rope {
            parts.push(format!("sliding layers' RoPE base {}", r.theta));
        }
        if let Some(s) = self.embed_scale {
            parts.push(format!("embeddings scaled by {s}"));
        }
        if self.norm_weight_offset != 0.0 {
            parts.push(format!("RMSNorm by ({} + w)", self.norm_weight_offset));
        }
        if self.post_norms {
            parts.push("post-attention and post-MLP norms".to_string());
        }
        if self.activation == Activation::GeluTanh {
            parts.push("GELU-tanh MLP".to_string());
        }
        if let Some(s) = self.attn_scale {
            parts.push(format!("attention scale {s}"));
        }
        if parts.is_empty() {
            self.name.clone()
        } else {
            format!("{} ({})", self.name, parts.join("; "))
        }
    }
    pub fn any_bias(&self) -> bool {
        self.qkv_bias || self.o_bias || self.mlp_bias
    }
}

/// Hyper-parameters of a Llama-family decoder (`LlamaForCausalLM`, and the
/// architectures that differ from it only by [`ArchFeatures`]).
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
    /// RoPE scaling (type default: none).
    #[serde(default)]
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    pub rope_layout: RopeLayout,
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation (Hugging Face allows a list).
    pub eos_token_ids: Vec<u32>,
    /// Per-architecture differences from plain Llama (biases, …).
    #[serde(default)]
    pub arch: ArchFeatures,
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

    /// Whether layer `layer` is a sliding-window layer (its window and
    /// `arch.sliding_rope` apply).
    pub fn is_sliding(&self, layer: usize) -> bool {
        let a = &self.arch;
        if a.sliding_layers.is_empty() {
            a.sliding_window.is_some()
        } else {
            a.sliding_layers.get(layer) == Some(&true)
        }
    }
    /// The sliding window layer `layer` attends over (0: full causal).
    pub fn layer_window(&self, layer: usize) -> usize {
        self.arch.layer_window(layer)
    }
    /// The RoPE base and scaling of layer `layer`.
    pub fn layer_rope(&self, layer: usize) -> (f32, &RopeScaling) {
        match &self.arch.sliding_rope {
            Some(r) if self.is_sliding(layer) => (r.theta, &r.scaling),
            _ => (self.rope_theta, &self.rope_scaling),
        }
    }
    /// Every distinct RoPE (base, scaling) the layers use, and each layer's
    /// index into it.
    pub fn rope_tables(&self) -> (Vec<(f32, &RopeScaling)>, Vec<usize>) {
        let mut tables: Vec<(f32, &RopeScaling)> = Vec::new();
        let idx = (0..self.num_layers)
            .map(|l| {
                let r = self.layer_rope(l);
                match tables.iter().position(|t| t.0 == r.0 && t.1 == r.1) {
                    Some(i) => i,
                    None => {
                        tables.push(r);
                        tables.len() - 1
                    }
                }
            })
            .collect();
        if tables.is_empty() {
            tables.push((self.rope_theta, &self.rope_scaling));
        }
        (tables, idx)
    }
    /// The attention scores' scale.
    pub fn attn_scale(&self) -> f32 {
        self.arch
            .attn_scale
            .unwrap_or_else(|| (self.head_dim as f64).powf(-0.5) as f32)
    }

    /// Checks the fields against each other; every loader calls this.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |msg: String| Err(LoadError::Config(msg));
        let a = &self.arch;
        if !a.sliding_layers.is_empty() && a.sliding_layers.len() != self.num_layers {
            return bad(format!(
                "{} per-layer attention types for {} layers",
                a.sliding_layers.len(),
                self.num_layers
            ));
        }
        if let Some(r) = &a.sliding_rope {
            if !(r.theta.is_finite() && r.theta > 0.0) {
                return bad(format!(
                    "the sliding layers' RoPE base must be positive, got {}",
                    r.theta
                ));
            }
            if let Err(e) = r.scaling.check(self.head_dim) {
                return bad(format!("sliding layers' RoPE: {e}"));
            }
        }
        if let Some(s) = a.embed_scale.filter(|s| !(s.is_finite() && *s > 0.0)) {
            return bad(format!("embedding scale must be positive, got {s}"));
        }
        if let Some(s) = a.attn_scale.filter(|s| !(s.is_finite() && *s > 0.0)) {
            return bad(format!("attention scale must be positive, got {s}"));
        }
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
        let max_hd = crate::kernels::attention::MAX_HEAD_DIM;
        if self.head_dim > max_hd {
            return bad(format!(
                "head_dim ({}) is above {max_hd}, the largest head the attention kernel takes",
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
        if let Err(e) = self.rope_scaling.check(self.head_dim) {
            return bad(e.to_string());
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
        let mut arch = if archs.iter().any(|a| a == "LlamaForCausalLM")
            || (archs.is_empty() && model_type == "llama")
        {
            ArchFeatures::llama()
        } else if archs.iter().any(|a| a == "Qwen2ForCausalLM")
            || (archs.is_empty() && model_type == "qwen2")
        {
            ArchFeatures::qwen2()
        } else if archs.iter().any(|a| a == "Qwen3ForCausalLM")
            || (archs.is_empty() && model_type == "qwen3")
        {
            ArchFeatures::qwen3()
        } else if archs.iter().any(|a| a == "MistralForCausalLM")
            || (archs.is_empty() && model_type == "mistral")
        {
            ArchFeatures::mistral(None)
        } else if archs.iter().any(|a| a == "Gemma3ForCausalLM")
            || (archs.is_empty() && model_type == "gemma3_text")
        {
            ArchFeatures::gemma3(0)
        } else if !archs.is_empty() {
            return Err(LoadError::UnsupportedArchitecture(archs.join(", ")));
        } else {
            return Err(LoadError::UnsupportedArchitecture(
                if model_type.is_empty() {
                    "(config.json names no `architectures` and no `model_type`)".into()
                } else {
                    format!("model_type `{model_type}`")
                },
            ));
        };
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
        let gemma = arch.name == "Gemma3ForCausalLM";
        if gemma {
            // transformers' Gemma 3 reads `hidden_activation` (default gelu_pytorch_tanh).
            match obj.get("hidden_activation") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(a)) if a == "gelu_pytorch_tanh" => {}
                Some(v) => {
                    return Err(LoadError::Config(format!(
                    "{}: hidden_activation {v} is not supported (Gemma 3 uses gelu_pytorch_tanh)",
                    path.display()
                )))
                }
            }
        } else if let Some(act) = obj.get("hidden_act").and_then(|s| s.as_str()) {
            if act != "silu" {
                return Err(LoadError::Config(format!(
                    "{}: hidden_act `{act}` is not supported (Llama uses silu)",
                    path.display()
                )));
            }
        }
        let flag = |key: &str| obj.get(key).and_then(|b| b.as_bool()) == Some(true);
        if arch.name == "LlamaForCausalLM" {
            // Llama's `attention_bias` covers q, k, v and o; `mlp_bias` gate, up, down.
            arch.qkv_bias = flag("attention_bias");
            arch.o_bias = flag("attention_bias");
            arch.mlp_bias = flag("mlp_bias");
        }
        if arch.name == "Qwen3ForCausalLM" || gemma {
            // Qwen3's and Gemma 3's `attention_bias` covers q, k, v and o.
            arch.qkv_bias = flag("attention_bias");
            arch.o_bias = flag("attention_bias");
        }
        if (arch.name == "Qwen2ForCausalLM" || arch.name == "Qwen3ForCausalLM")
            && flag("use_sliding_window")
        {
            let short = arch.name.trim_end_matches("ForCausalLM");
            return Err(LoadError::Config(format!(
                "{}: {short} `use_sliding_window: true` (sliding-window attention on some layers) is not supported",
                path.display()
            )));
        }
        if arch.name == "MistralForCausalLM" {
            // `sliding_window: null` (Mistral 7B v0.2+) is full attention.
            arch.sliding_window = opt_usize("sliding_window")?;
            if arch.sliding_window == Some(0) {
                return Err(LoadError::Config(format!(
                    "{}: `sliding_window` must be positive or null, got 0",
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
            // Gemma3TextConfig's default.
            None if gemma => 256,
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
        let max_position_embeddings =
            opt_usize("max_position_embeddings")?.unwrap_or(if gemma { 131_072 } else { 2048 });
        let num_layers = get_usize("num_hidden_layers")?;
        let (rope_theta, rope_scaling) = if gemma {
            let (theta, scaling) =
                gemma3_from_hf(obj, &mut arch, num_layers, max_position_embeddings)
                    .map_err(|m| LoadError::Config(format!("{}: {m}", path.display())))?;
            arch.embed_scale = Some((hidden_size as f64).sqrt() as f32);
            arch.attn_scale = Some(match obj.get("query_pre_attn_scalar") {
                None | Some(serde_json::Value::Null) => 256f64.powf(-0.5) as f32,
                Some(v) => match v.as_f64() {
                    Some(x) if x > 0.0 && x.is_finite() => x.powf(-0.5) as f32,
                    _ => {
                        return Err(LoadError::Config(format!(
                            "{}: `query_pre_attn_scalar` must be a positive number, got {v}",
                            path.display()
                        )))
                    }
                },
            });
            (theta, scaling)
        } else {
            RopeScaling::from_hf(obj, max_position_embeddings)
                .map_err(|m| LoadError::Config(format!("{}: {m}", path.display())))?
        };
        let cfg = LlamaConfig {
            hidden_size,
            intermediate_size: get_usize("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: get_usize("vocab_size")?,
            max_position_embeddings,
            rms_norm_eps: get_f32("rms_norm_eps", Some(1e-6))?,
            rope_theta,
            rope_scaling,
            // Gemma3TextConfig ties by default; the others do not.
            tie_word_embeddings: obj
                .get("tie_word_embeddings")
                .and_then(|b| b.as_bool())
                .unwrap_or(gemma),
            rope_layout: RopeLayout::Halves,
            bos_token_id: opt_usize("bos_token_id")?
                .map(|x| {
                    u32::try_from(x).map_err(|_| {
                        LoadError::Config(format!("bos_token_id must be below 2^32, got {x}"))
                    })
                })
                .transpose()?,
            eos_token_ids,
            arch,
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
            + 2 * d
            + if self.arch.qk_norm {
                2 * self.head_dim
            } else {
                0
            }
            + if self.arch.post_norms { 2 * d } else { 0 };
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_layers * per_layer + d + head
    }
}

/// Gemma 3's attention layout from a `config.json` object, as transformers
/// 5's `Gemma3TextConfig` resolves it: `layer_types` (else
/// `sliding_window_pattern`, default 6: every 6th layer full), the window,
/// and RoPE per layer type (`rope_parameters.{full,sliding}_attention`, or
/// 4.x `rope_theta` + `rope_scaling` for the full layers and
/// `rope_local_base_freq` for the sliding ones; bases 1e6 / 1e4 by default).
/// Refuses what sramlm does not run (soft-capping, bidirectional attention),
/// naming the key. Returns the full-attention layers' RoPE.
fn gemma3_from_hf(
    obj: &serde_json::Map<String, serde_json::Value>,
    arch: &mut ArchFeatures,
    num_layers: usize,
    max_position_embeddings: usize,
) -> Result<(f32, RopeScaling), String> {
    use serde_json::Value;
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if let Some(v) = present(key) {
            return Err(format!(
                "`{key}` = {v}: logit soft-capping is not supported (Gemma 3 sets none)"
            ));
        }
    }
    if let Some(v) = present("use_bidirectional_attention") {
        if v != &Value::Bool(false) {
            return Err(format!(
                "`use_bidirectional_attention` = {v} is not supported (causal decoders only)"
            ));
        }
    }
    // The window (transformers' default 4096; null: none).
    arch.sliding_window = match obj.get("sliding_window") {
        None => Some(4096),
        Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(w) if w > 0 => Some(w as usize),
            _ => {
                return Err(format!(
                    "`sliding_window` must be a positive integer or null, got {v}"
                ))
            }
        },
    };
    arch.sliding_layers = match present("layer_types") {
        Some(Value::Array(a)) => {
            if a.len() != num_layers {
                return Err(format!(
                    "`layer_types` lists {} layers, num_hidden_layers is {num_layers}",
                    a.len()
                ));
            }
            a.iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => Err(format!(
                        "`layer_types` entry {t} is not supported (sliding_attention or full_attention)"
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        Some(v) => return Err(format!("`layer_types` must be an array, got {v}")),
        None => {
            let (key, v) = ["sliding_window_pattern", "_sliding_window_pattern"]
                .iter()
                .find_map(|k| present(k).map(|v| (*k, v)))
                .map_or(("sliding_window_pattern", None), |(k, v)| (k, Some(v)));
            let n = match v {
                None => 6,
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => n as usize,
                    _ => return Err(format!("`{key}` must be a positive integer, got {v}")),
                },
            };
            (0..num_layers).map(|i| (i + 1) % n != 0).collect()
        }
    };
    // RoPE per layer type, each parsed by the one RoPE parser as a plain
    // config holding that type's dict.
    let rope_for = |params: Option<&Value>,
                    scaling: Option<&Value>,
                    theta: f64,
                    what: &str|
     -> Result<(f32, RopeScaling), String> {
        let mut o = obj.clone();
        o.remove("rope_scaling");
        o.remove("rope_parameters");
        o.insert("rope_theta".into(), serde_json::json!(theta));
        if let Some(p) = params {
            o.insert("rope_parameters".into(), p.clone());
        }
        if let Some(p) = scaling {
            o.insert("rope_scaling".into(), p.clone());
        }
        RopeScaling::from_hf(&o, max_position_embeddings).map_err(|e| format!("{what}: {e}"))
    };
    let num = |k: &str, default: f64| -> Result<f64, String> {
        match present(k) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("`{k}` must be a number, got {v}")),
        }
    };
    let global_theta = num("rope_theta", 1_000_000.0)?;
    let local_theta = num("rope_local_base_freq", 10_000.0)?;
    let (full, sliding) = match present("rope_parameters") {
        Some(Value::Object(p))
            if p.contains_key("full_attention") || p.contains_key("sliding_attention") =>
        {
            if let Some(k) = p
                .keys()
                .find(|k| *k != "full_attention" && *k != "sliding_attention")
            {
                return Err(format!(
                    "`rope_parameters.{k}`: a Gemma 3 config nests RoPE per layer type (full_attention, sliding_attention)"
                ));
            }
            (
                rope_for(p.get("full_attention"), None, global_theta, "rope_parameters.full_attention")?,
                rope_for(p.get("sliding_attention"), None, local_theta, "rope_parameters.sliding_attention")?,
            )
        }
        Some(Value::Object(p)) if !p.is_empty() => {
            return Err(
                "`rope_parameters` of a Gemma 3 config must be nested per layer type (full_attention, sliding_attention)"
                    .to_string(),
            )
        }
        _ => (
            // 4.x: `rope_scaling` applies to the full-attention layers only.
            rope_for(None, present("rope_scaling"), global_theta, "rope_scaling")?,
            rope_for(None, None, local_theta, "rope_local_base_freq")?,
        ),
    };
    arch.sliding_rope = Some(LocalRope {
        theta: sliding.0,
        scaling: sliding.1,
    });
    Ok(full)
}

/// Mixture-of-experts shape, as Mixtral's Hugging Face config writes it
/// (`num_local_experts`, `num_experts_per_tok`) or GGUF's `*.expert_count` /
/// `*.expert_used_count`. Config-only: `sramlm study` models MoE models; the
/// executors run dense models only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoeConfig {
    /// Experts per layer (each one a full gate/up/down MLP of
    /// `intermediate_size` features).
    pub num_local_experts: usize,
    /// Experts each token is routed to.
    pub num_experts_per_tok: usize,
}

impl MoeConfig {
    /// The MoE keys of a Hugging Face config object: `None` when absent (a
    /// dense model), an error when inconsistent.
    pub fn from_hf_object(
        obj: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<MoeConfig>, String> {
        let get = |k: &str| -> Result<Option<usize>, String> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|x| Some(x as usize))
                    .ok_or_else(|| format!("field `{k}` must be a non-negative integer, got {v}")),
            }
        };
        match (get("num_local_experts")?, get("num_experts_per_tok")?) {
            (None, None) => Ok(None),
            (Some(e), Some(k)) => Self::checked(e, k).map(Some),
            (Some(_), None) => {
                Err("`num_local_experts` is set but `num_experts_per_tok` is missing".into())
            }
            (None, Some(_)) => {
                Err("`num_experts_per_tok` is set but `num_local_experts` is missing".into())
            }
        }
    }

    /// `experts` per layer, `per_tok` routed; 1 ≤ per_tok ≤ experts ≤ 4096.
    pub fn checked(experts: usize, per_tok: usize) -> Result<MoeConfig, String> {
        if experts == 0 || per_tok == 0 || per_tok > experts || experts > 4096 {
            return Err(format!(
                "experts per token ({per_tok}) must be between 1 and the number of experts ({experts}, at most 4096)"
            ));
        }
        Ok(MoeConfig {
            num_local_experts: experts,
            num_experts_per_tok: per_tok,
        })
    }
}

impl LlamaConfig {
    /// Config-only parsing for studies (no weights): the shapes of a Llama-
    /// family config.json, Mixtral and Mistral included (their attention and
    /// MLP shapes are Llama's; sliding windows are ignored), and the MoE keys.
    /// The executors still load only what [`LlamaConfig::from_hf_str`] accepts.
    pub fn shapes_from_hf_str(
        text: &str,
        path: &Path,
    ) -> Result<(LlamaConfig, Option<MoeConfig>), LoadError> {
        let mut v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| LoadError::Config(format!("{} is not valid JSON: {e}", path.display())))?;
        let obj = v.as_object_mut().ok_or_else(|| {
            LoadError::Config(format!("{} must hold a JSON object", path.display()))
        })?;
        let moe = MoeConfig::from_hf_object(obj)
            .map_err(|m| LoadError::Config(format!("{}: {m}", path.display())))?;
        let shape_alike = ["MixtralForCausalLM", "MistralForCausalLM"];
        let named = obj
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter()
                    .any(|s| s.as_str().is_some_and(|s| shape_alike.contains(&s)))
            });
        let typed = obj
            .get("model_type")
            .and_then(|s| s.as_str())
            .is_some_and(|t| t == "mixtral" || t == "mistral");
        if named || typed {
            obj.insert(
                "architectures".into(),
                serde_json::json!(["LlamaForCausalLM"]),
            );
            obj.insert("model_type".into(), serde_json::json!("llama"));
        }
        let text = serde_json::to_string(&v).expect("a JSON value serializes");
        Ok((LlamaConfig::from_hf_str(&text, path)?, moe))
    }
}

#[cfg(test)]
impl LlamaConfig {
    /// stories260K's shape (hidden 64, FFN 172, 8 query / 4 KV heads of 8,
    /// vocabulary 512) with `num_layers` layers and a `window`-position
    /// context: the config the placement, graph and cost unit tests use.
    pub(crate) fn tiny_for_tests(num_layers: usize, window: usize, tied: bool) -> LlamaConfig {
        LlamaConfig {
            hidden_size: 64,
            intermediate_size: 172,
            num_layers,
            num_heads: 8,
            num_kv_heads: 4,
            head_dim: 8,
            vocab_size: 512,
            max_position_embeddings: window,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: Default::default(),
            tie_word_embeddings: tied,
            rope_layout: RopeLayout::Halves,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            arch: Default::default(),
        }
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
        let s = BASE.replace("LlamaForCausalLM", "Phi3ForCausalLM");
        let e = parse(&s).unwrap_err().to_string();
        assert!(e.contains("Phi3ForCausalLM"), "{e}");
    }

    #[test]
    fn names_missing_field() {
        let s = BASE.replace("\"intermediate_size\":172,", "");
        let e = parse(&s).unwrap_err().to_string();
        assert!(e.contains("intermediate_size"), "{e}");
    }

    fn with(extra: &str) -> String {
        BASE.replacen('{', &format!("{{{extra},"), 1)
    }

    #[test]
    fn rope_plain_layouts() {
        // 4.x: top-level theta; 5.x: inside rope_parameters (which wins).
        let c = parse(&with(r#""rope_scaling":null"#)).unwrap();
        assert_eq!(
            (c.rope_theta, c.rope_scaling.clone()),
            (10000.0, RopeScaling::default())
        );
        let s = BASE.replace(r#""rope_theta":10000.0,"#, "");
        let c = parse(&s.replacen(
            '{',
            r#"{"rope_parameters":{"rope_type":"default","rope_theta":500000.0},"#,
            1,
        ))
        .unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling.rope_type, RopeType::Default);
        // `{"rope_type": "default"}` under rope_scaling is plain RoPE, not an error.
        let c = parse(&with(r#""rope_scaling":{"rope_type":"default"}"#)).unwrap();
        assert_eq!(c.rope_scaling.rope_type, RopeType::Default);
        assert_eq!(c.rope_theta, 10000.0);
    }

    #[test]
    fn rope_types_in_both_layouts() {
        let both = |params: &str| {
            let v4 = parse(&with(&format!(r#""rope_scaling":{{{params}}}"#))).unwrap();
            let v5 = parse(&BASE.replace(r#""rope_theta":10000.0,"#, "").replacen(
                '{',
                &format!(r#"{{"rope_parameters":{{"rope_theta":10000.0,{params}}},"#),
                1,
            ))
            .unwrap();
            assert_eq!(v4, v5, "{params}");
            v5.rope_scaling
        };
        let r = both(r#""type":"linear","factor":2.0"#);
        assert_eq!(
            (r.rope_type, r.factor, r.attention_factor),
            (RopeType::Linear, 2.0, 1.0)
        );
        let r = both(r#""rope_type":"dynamic","factor":3.0"#);
        // dynamic rescales past max_position_embeddings (512 in BASE).
        assert_eq!(
            (r.rope_type, r.factor, r.original_max_position_embeddings),
            (RopeType::Dynamic, 3.0, 512)
        );
        let r = both(
            r#""rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":128"#,
        );
        assert_eq!(
            (
                r.rope_type,
                r.factor,
                r.low_freq_factor,
                r.high_freq_factor,
                r.original_max_position_embeddings
            ),
            (RopeType::Llama3, 8.0, 1.0, 4.0, 128)
        );
        let r = both(r#""rope_type":"yarn","factor":4.0,"original_max_position_embeddings":128"#);
        assert_eq!(
            (r.rope_type, r.beta_fast, r.beta_slow, r.truncate),
            (RopeType::Yarn, 32.0, 1.0, true)
        );
        assert!((r.attention_factor - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
        // Explicit attention_factor; mscale/mscale_all_dim ratio; factor from the context ratio.
        let r = both(
            r#""rope_type":"yarn","factor":4.0,"original_max_position_embeddings":128,"attention_factor":0.8,"beta_fast":16,"truncate":false"#,
        );
        assert_eq!(
            (r.attention_factor, r.beta_fast, r.truncate),
            (0.8, 16.0, false)
        );
        let r = both(
            r#""rope_type":"yarn","factor":4.0,"original_max_position_embeddings":128,"mscale":1.0,"mscale_all_dim":2.0"#,
        );
        let m = |s: f32| 0.1 * s * 4f32.ln() + 1.0;
        assert!((r.attention_factor - m(1.0) / m(2.0)).abs() < 1e-6);
        let r = both(r#""rope_type":"yarn","original_max_position_embeddings":128"#);
        assert_eq!(r.factor, 4.0);
        // llama3/yarn without original_max_position_embeddings: max_position_embeddings.
        let r = both(r#""rope_type":"yarn","factor":2.0"#);
        assert_eq!(r.original_max_position_embeddings, 512);
        // A top-level original_max_position_embeddings wins (transformers' Phi-3 rule).
        let c = parse(&with(
            r#""original_max_position_embeddings":64,"rope_scaling":{"rope_type":"yarn","factor":2.0,"original_max_position_embeddings":128}"#,
        ))
        .unwrap();
        assert_eq!(c.rope_scaling.original_max_position_embeddings, 64);
    }

    #[test]
    fn rope_errors_are_one_line() {
        let err = |extra: &str| parse(&with(extra)).unwrap_err().to_string();
        let e = err(r#""rope_scaling":{"rope_type":"longrope","factor":2.0}"#);
        assert!(
            e.contains("`longrope`")
                && e.contains("default, linear, dynamic, llama3, yarn")
                && !e.contains('\n'),
            "{e}"
        );
        let e = err(r#""rope_parameters":{"rope_type":"su"}"#);
        assert!(e.contains("`su`") && e.contains("supported"), "{e}");
        let e = err(r#""rope_scaling":{"type":"linear"}"#);
        assert!(e.contains("factor") && e.contains("linear"), "{e}");
        let e = err(r#""rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0}"#);
        assert!(e.contains("high_freq_factor"), "{e}");
        let e = err(r#""rope_scaling":{"rope_type":"linear","factor":-1.0}"#);
        assert!(e.contains("factor") && e.contains("-1"), "{e}");
        let e = err(r#""rope_scaling":{"rope_type":"linear","factor":"2"}"#);
        assert!(e.contains("factor") && e.contains("number"), "{e}");
        let e = err(r#""partial_rotary_factor":0.5"#);
        assert!(e.contains("partial_rotary_factor"), "{e}");
        let e = err(r#""rope_parameters":{"full_attention":{"rope_type":"default"}}"#);
        assert!(e.contains("full_attention"), "{e}");
        let e = err(r#""rope_scaling":[1,2]"#);
        assert!(e.contains("rope_scaling"), "{e}");
    }

    /// Gemma3TextConfig's defaults where a config.json leaves keys out:
    /// tied, head_dim 256, query_pre_attn_scalar 256, window 4096 on every
    /// layer but each 6th, RoPE bases 1e6 / 1e4, context 131072.
    #[test]
    fn gemma3_defaults() {
        let s = r#"{"architectures":["Gemma3ForCausalLM"],"hidden_size":64,"intermediate_size":96,
            "num_hidden_layers":7,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":512}"#;
        let c = parse(s).unwrap();
        let a = &c.arch;
        assert!(c.tie_word_embeddings);
        assert_eq!((c.head_dim, c.max_position_embeddings), (256, 131_072));
        assert_eq!(c.attn_scale(), 1.0 / 16.0);
        assert_eq!(a.sliding_window, Some(4096));
        assert_eq!(
            a.sliding_layers,
            [true, true, true, true, true, false, true]
        );
        assert_eq!((c.layer_rope(0).0, c.layer_rope(5).0), (10000.0, 1e6));
        assert_eq!((a.embed_scale, a.norm_weight_offset), (Some(8.0), 1.0));
        assert_eq!(a.activation, Activation::GeluTanh);
        // `sliding_window: null`: no window, the sliding layers keep their RoPE.
        let c = parse(&s.replacen('{', r#"{"sliding_window":null,"#, 1)).unwrap();
        assert_eq!((c.layer_window(0), c.layer_rope(0).0), (0, 10000.0));
        // A flat rope_parameters is not Gemma 3's layout.
        let e = parse(&s.replacen('{', r#"{"rope_parameters":{"rope_type":"default"},"#, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope_parameters") && !e.contains('\n'), "{e}");
        // A pattern of 0 and a window of 0 are refused naming the key.
        for (k, v) in [("sliding_window_pattern", "0"), ("sliding_window", "0")] {
            let e = parse(&s.replacen('{', &format!(r#"{{"{k}":{v},"#), 1))
                .unwrap_err()
                .to_string();
            assert!(e.contains(k), "{e}");
        }
    }

    #[test]
    fn rejects_contradictory_heads() {
        let s = BASE.replace("\"num_key_value_heads\":4", "\"num_key_value_heads\":3");
        let e = parse(&s).unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
    }
}
