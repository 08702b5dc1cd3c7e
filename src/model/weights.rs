//! The canonical weight set of a Llama model, independent of the file format.
//!
//! Both loaders (`safetensors.rs`, `gguf.rs`) map their tensor names onto
//! [`WeightName`] and hand over [`Tensor`]s whose bytes are still in the file's
//! encoding (F32/F16/BF16 or a GGML block-quantized type): the GPU executors
//! upload those bytes as they are and decode them inside the kernels.

use super::{LlamaConfig, LoadError};
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// Element encodings sramlm can read. Quantized types are GGML blocks of 32
/// values along a row (the input dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// 32 values: f16 scale `d`, 32 × i8. w = d·q.
    Q8_0,
    /// 32 values: f16 scale `d`, 16 bytes of 4-bit q. w = d·(q − 8).
    Q4_0,
    /// 32 values: f16 scale `d`, f16 min `m`, 16 bytes of 4-bit q. w = d·q + m.
    Q4_1,
}

impl DType {
    /// Values per block (1 for plain floats).
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => 32,
        }
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
        }
    }
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }
    /// Bytes taken by `n` consecutive values (`n` a multiple of the block length).
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a tensor's bytes live: a memory-mapped file (read once, by the GPU
/// upload) or, rarely, an owned buffer.
#[derive(Clone)]
pub enum Bytes {
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
    /// Bytes compiled into the binary (the embedded default model).
    Static(&'static [u8]),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned(v) => v,
            Bytes::Static(b) => b,
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.as_slice().len())
    }
}

/// One weight tensor in PyTorch orientation: `shape = [rows, cols]` with the
/// row (output feature) outermost; a 1-D tensor has `shape = [n]`.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Bytes,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn rows(&self) -> usize {
        if self.shape.len() == 2 {
            self.shape[0]
        } else {
            1
        }
    }
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&0)
    }
    pub fn byte_len(&self) -> usize {
        self.bytes.as_slice().len()
    }

    /// Decodes to f32 on the CPU (tests, CPU references and small vectors only).
    pub fn to_f32(&self) -> Vec<f32> {
        dequantize(self.dtype, self.bytes.as_slice(), self.numel())
    }
}

/// Decodes `n` values of `dtype` from `bytes` (little-endian, GGML block layout).
pub fn dequantize(dtype: DType, bytes: &[u8], n: usize) -> Vec<f32> {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = Vec::with_capacity(n);
    match dtype {
        DType::F32 => out.extend(
            bytes[..n * 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        DType::F16 => out.extend(bytes[..n * 2].chunks_exact(2).map(f16)),
        DType::BF16 => out.extend(
            bytes[..n * 2]
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        DType::Q8_0 => {
            for blk in bytes.chunks_exact(34).take(n / 32) {
                let d = f16(&blk[0..2]);
                out.extend(blk[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        DType::Q4_0 => {
            for blk in bytes.chunks_exact(18).take(n / 32) {
                let d = f16(&blk[0..2]);
                let qs = &blk[2..18];
                out.extend(qs.iter().map(|&q| d * ((q & 0x0f) as f32 - 8.0)));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as f32 - 8.0)));
            }
        }
        DType::Q4_1 => {
            for blk in bytes.chunks_exact(20).take(n / 32) {
                let d = f16(&blk[0..2]);
                let m = f16(&blk[2..4]);
                let qs = &blk[4..20];
                out.extend(qs.iter().map(|&q| d.mul_add((q & 0x0f) as f32, m)));
                out.extend(qs.iter().map(|&q| d.mul_add((q >> 4) as f32, m)));
            }
        }
    }
    out
}

/// The per-layer tensors of a Llama decoder block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum LayerTensor {
    AttnNorm,
    Q,
    K,
    V,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl LayerTensor {
    pub const ALL: [LayerTensor; 9] = [
        LayerTensor::AttnNorm,
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::O,
        LayerTensor::FfnNorm,
        LayerTensor::Gate,
        LayerTensor::Up,
        LayerTensor::Down,
    ];
    /// Hugging Face name suffix after `model.layers.N.`.
    pub fn hf_suffix(self) -> &'static str {
        match self {
            LayerTensor::AttnNorm => "input_layernorm.weight",
            LayerTensor::Q => "self_attn.q_proj.weight",
            LayerTensor::K => "self_attn.k_proj.weight",
            LayerTensor::V => "self_attn.v_proj.weight",
            LayerTensor::O => "self_attn.o_proj.weight",
            LayerTensor::FfnNorm => "post_attention_layernorm.weight",
            LayerTensor::Gate => "mlp.gate_proj.weight",
            LayerTensor::Up => "mlp.up_proj.weight",
            LayerTensor::Down => "mlp.down_proj.weight",
        }
    }
    /// GGUF name suffix after `blk.N.`.
    pub fn gguf_suffix(self) -> &'static str {
        match self {
            LayerTensor::AttnNorm => "attn_norm.weight",
            LayerTensor::Q => "attn_q.weight",
            LayerTensor::K => "attn_k.weight",
            LayerTensor::V => "attn_v.weight",
            LayerTensor::O => "attn_output.weight",
            LayerTensor::FfnNorm => "ffn_norm.weight",
            LayerTensor::Gate => "ffn_gate.weight",
            LayerTensor::Up => "ffn_up.weight",
            LayerTensor::Down => "ffn_down.weight",
        }
    }
    /// Expected shape, PyTorch orientation.
    pub fn shape(self, c: &LlamaConfig) -> Vec<usize> {
        let d = c.hidden_size;
        match self {
            LayerTensor::AttnNorm | LayerTensor::FfnNorm => vec![d],
            LayerTensor::Q => vec![c.q_dim(), d],
            LayerTensor::K | LayerTensor::V => vec![c.kv_dim(), d],
            LayerTensor::O => vec![d, c.q_dim()],
            LayerTensor::Gate | LayerTensor::Up => vec![c.intermediate_size, d],
            LayerTensor::Down => vec![d, c.intermediate_size],
        }
    }
    pub fn short(self) -> &'static str {
        match self {
            LayerTensor::AttnNorm => "attn_norm",
            LayerTensor::Q => "wq",
            LayerTensor::K => "wk",
            LayerTensor::V => "wv",
            LayerTensor::O => "wo",
            LayerTensor::FfnNorm => "ffn_norm",
            LayerTensor::Gate => "w_gate",
            LayerTensor::Up => "w_up",
            LayerTensor::Down => "w_down",
        }
    }
}

/// Canonical names: one scheme, mapped from both file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum WeightName {
    Embed,
    Layer(usize, LayerTensor),
    FinalNorm,
    /// Absent when the embedding is tied.
    LmHead,
}

impl WeightName {
    pub fn hf(self) -> String {
        match self {
            WeightName::Embed => "model.embed_tokens.weight".into(),
            WeightName::Layer(i, t) => format!("model.layers.{i}.{}", t.hf_suffix()),
            WeightName::FinalNorm => "model.norm.weight".into(),
            WeightName::LmHead => "lm_head.weight".into(),
        }
    }
    pub fn gguf(self) -> String {
        match self {
            WeightName::Embed => "token_embd.weight".into(),
            WeightName::Layer(i, t) => format!("blk.{i}.{}", t.gguf_suffix()),
            WeightName::FinalNorm => "output_norm.weight".into(),
            WeightName::LmHead => "output.weight".into(),
        }
    }
    pub fn shape(self, c: &LlamaConfig) -> Vec<usize> {
        match self {
            WeightName::Embed | WeightName::LmHead => vec![c.vocab_size, c.hidden_size],
            WeightName::Layer(_, t) => t.shape(c),
            WeightName::FinalNorm => vec![c.hidden_size],
        }
    }
    /// Every tensor the config calls for, in forward order.
    pub fn all(c: &LlamaConfig) -> Vec<WeightName> {
        let mut v = vec![WeightName::Embed];
        for i in 0..c.num_layers {
            v.extend(LayerTensor::ALL.iter().map(|&t| WeightName::Layer(i, t)));
        }
        v.push(WeightName::FinalNorm);
        if !c.tie_word_embeddings {
            v.push(WeightName::LmHead);
        }
        v
    }
}

impl WeightName {
    /// Inverse of `Display` (`embed`, `layers.3.wq`, `final_norm`, `lm_head`).
    pub fn parse(s: &str) -> Option<WeightName> {
        match s {
            "embed" => return Some(WeightName::Embed),
            "final_norm" => return Some(WeightName::FinalNorm),
            "lm_head" => return Some(WeightName::LmHead),
            _ => {}
        }
        let rest = s.strip_prefix("layers.")?;
        let (i, t) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let t = LayerTensor::ALL.into_iter().find(|lt| lt.short() == t)?;
        Some(WeightName::Layer(i, t))
    }
}

impl fmt::Display for WeightName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightName::Embed => f.write_str("embed"),
            WeightName::Layer(i, t) => write!(f, "layers.{i}.{}", t.short()),
            WeightName::FinalNorm => f.write_str("final_norm"),
            WeightName::LmHead => f.write_str("lm_head"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub ffn_norm: Tensor,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
}

impl LayerWeights {
    pub fn get(&self, t: LayerTensor) -> &Tensor {
        match t {
            LayerTensor::AttnNorm => &self.attn_norm,
            LayerTensor::Q => &self.wq,
            LayerTensor::K => &self.wk,
            LayerTensor::V => &self.wv,
            LayerTensor::O => &self.wo,
            LayerTensor::FfnNorm => &self.ffn_norm,
            LayerTensor::Gate => &self.w_gate,
            LayerTensor::Up => &self.w_up,
            LayerTensor::Down => &self.w_down,
        }
    }
}

/// All weights of one model, in canonical form.
#[derive(Clone, Debug)]
pub struct ModelWeights {
    /// `[vocab, hidden]`
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    /// `[hidden]`
    pub final_norm: Tensor,
    /// `[vocab, hidden]`; `None` when tied to `embed`.
    pub lm_head: Option<Tensor>,
}

impl ModelWeights {
    /// Assembles the canonical set from a lookup, checking every shape and
    /// dtype against the config. `fetch` returns `Ok(None)` for a missing name.
    pub fn assemble(
        c: &LlamaConfig,
        mut fetch: impl FnMut(WeightName) -> Result<Option<Tensor>, LoadError>,
        file_name: &dyn Fn(WeightName) -> String,
    ) -> Result<Self, LoadError> {
        let mut get = |w: WeightName| -> Result<Tensor, LoadError> {
            let t = fetch(w)?.ok_or_else(|| LoadError::MissingTensor(file_name(w)))?;
            check_tensor(c, w, &t, &file_name(w))?;
            Ok(t)
        };
        let embed = get(WeightName::Embed)?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let mut g = |t| get(WeightName::Layer(i, t));
            layers.push(LayerWeights {
                attn_norm: g(LayerTensor::AttnNorm)?,
                wq: g(LayerTensor::Q)?,
                wk: g(LayerTensor::K)?,
                wv: g(LayerTensor::V)?,
                wo: g(LayerTensor::O)?,
                ffn_norm: g(LayerTensor::FfnNorm)?,
                w_gate: g(LayerTensor::Gate)?,
                w_up: g(LayerTensor::Up)?,
                w_down: g(LayerTensor::Down)?,
            });
        }
        let final_norm = get(WeightName::FinalNorm)?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(get(WeightName::LmHead)?)
        };
        Ok(ModelWeights {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    pub fn get(&self, w: WeightName) -> Option<&Tensor> {
        match w {
            WeightName::Embed => Some(&self.embed),
            WeightName::Layer(i, t) => self.layers.get(i).map(|l| l.get(t)),
            WeightName::FinalNorm => Some(&self.final_norm),
            WeightName::LmHead => self.lm_head.as_ref(),
        }
    }

    /// The matrix the logits are computed with (`lm_head`, or the tied embedding).
    pub fn output(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes of all tensors in their stored encoding.
    pub fn total_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                LayerTensor::ALL
                    .iter()
                    .map(|&t| l.get(t).byte_len())
                    .sum::<usize>()
            })
            .sum();
        self.embed.byte_len()
            + layers
            + self.final_norm.byte_len()
            + self.lm_head.as_ref().map_or(0, |t| t.byte_len())
    }
}

fn check_tensor(c: &LlamaConfig, w: WeightName, t: &Tensor, name: &str) -> Result<(), LoadError> {
    let want = w.shape(c);
    if t.shape != want {
        return Err(LoadError::Shape {
            tensor: name.to_string(),
            expected: want,
            found: t.shape.clone(),
        });
    }
    // Norm weights are tiny and read by simple kernels: plain floats only.
    if want.len() == 1 && t.dtype.is_quantized() {
        return Err(LoadError::Format(format!(
            "tensor `{name}`: a norm weight must be F32/F16/BF16, found {}",
            t.dtype
        )));
    }
    if t.dtype.is_quantized() && !t.cols().is_multiple_of(t.dtype.block_len()) {
        return Err(LoadError::Format(format!(
            "tensor `{name}`: row length {} is not a multiple of the {} block length {}",
            t.cols(),
            t.dtype,
            t.dtype.block_len()
        )));
    }
    let expected_bytes = t.dtype.bytes_for(t.numel());
    if expected_bytes != Some(t.byte_len()) {
        return Err(LoadError::Format(format!(
            "tensor `{name}`: {} bytes stored, but shape {:?} in {} needs {:?}",
            t.byte_len(),
            t.shape,
            t.dtype,
            expected_bytes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_dequantizes_low_nibbles_first() {
        // d = 0.5, m = -1.0, byte j holds q[j] in the low nibble and q[j+16] in the high one.
        let mut blk = Vec::new();
        blk.extend(half::f16::from_f32(0.5).to_le_bytes());
        blk.extend(half::f16::from_f32(-1.0).to_le_bytes());
        blk.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(DType::Q4_1, &blk, 32);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[3], 0.5);
        assert_eq!(v[16], 6.5);
        assert_eq!(v[31], -1.0);
    }

    #[test]
    fn q8_0_and_q4_0() {
        let mut blk = Vec::new();
        blk.extend(half::f16::from_f32(0.25).to_le_bytes());
        blk.extend((0..32i8).map(|j| (j - 16) as u8));
        let v = dequantize(DType::Q8_0, &blk, 32);
        assert_eq!(v[0], -4.0);
        assert_eq!(v[31], 3.75);
        let mut blk = Vec::new();
        blk.extend(half::f16::from_f32(2.0).to_le_bytes());
        blk.extend((0..16u8).map(|j| j | (j << 4)));
        let v = dequantize(DType::Q4_0, &blk, 32);
        assert_eq!(v[0], -16.0);
        assert_eq!(v[31], 14.0);
    }
}
