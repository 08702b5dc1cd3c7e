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

/// Element encodings sramlm can read. Quantized types are GGML blocks along a
/// row (the input dimension): 32 values, or 256 for the K-quant super-blocks.
/// Layouts exactly as ggml's `ggml-common.h` (see [`dequantize`]).
#[allow(non_camel_case_types)] // ggml's names (Q4_K, …)
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
    /// 32 values (22 bytes): f16 `d`, u32 `qh` (5th bits), 16 bytes of nibbles. w = d·(q − 16).
    Q5_0,
    /// 32 values (24 bytes): f16 `d`, f16 `m`, u32 `qh`, 16 bytes of nibbles. w = d·q + m.
    Q5_1,
    /// 256 values (84 bytes): 16 × (4-bit scale, 4-bit min), 64 bytes of 2-bit q, f16 `d`, `dmin`.
    Q2_K,
    /// 256 values (110 bytes): 32 bytes hmask, 64 bytes of 2-bit q, 12 bytes of 6-bit scales, f16 `d`.
    Q3_K,
    /// 256 values (144 bytes): f16 `d`, `dmin`, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
    Q4_K,
    /// 256 values (176 bytes): Q4_K's header, 32 bytes of 5th bits, 128 bytes of nibbles.
    Q5_K,
    /// 256 values (210 bytes): 128 bytes low nibbles, 64 bytes high 2 bits, 16 × i8 scales, f16 `d`.
    Q6_K,
}

impl DType {
    /// Values per block (1 for plain floats).
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => 32,
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => 256,
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
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q2_K => 84,
            DType::Q3_K => 110,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
        }
    }
    /// Every encoding, plain floats first.
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];
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
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q2_K => "Q2_K",
            DType::Q3_K => "Q3_K",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
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
        _ => {
            let bb = dtype.block_bytes();
            let nb = n / dtype.block_len();
            for blk in bytes.chunks_exact(bb).take(nb) {
                dequantize_block(dtype, blk, &mut out);
            }
        }
    }
    out
}

/// One block of the Q5 and K-quant types, transcribed from ggml-quants.c's
/// `dequantize_row_*` (same loops, same order of arithmetic in f32).
fn dequantize_block(dtype: DType, b: &[u8], y: &mut Vec<f32>) {
    let f16 = |o: usize| half::f16::from_le_bytes([b[o], b[o + 1]]).to_f32();
    let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let start = y.len();
    match dtype {
        DType::Q5_0 | DType::Q5_1 => {
            let (d, m, qh, qs) = if dtype == DType::Q5_0 {
                (f16(0), None, u32at(2), &b[6..22])
            } else {
                (f16(0), Some(f16(2)), u32at(4), &b[8..24])
            };
            y.resize(start + 32, 0.0);
            for j in 0..16 {
                let xh0 = ((qh >> j) << 4) & 0x10;
                let xh1 = (qh >> (j + 12)) & 0x10;
                let x0 = (qs[j] as u32 & 0x0f) | xh0;
                let x1 = (qs[j] as u32 >> 4) | xh1;
                let (v0, v1) = match m {
                    None => ((x0 as i32 - 16) as f32 * d, (x1 as i32 - 16) as f32 * d),
                    Some(m) => (x0 as f32 * d + m, x1 as f32 * d + m),
                };
                y[start + j] = v0;
                y[start + j + 16] = v1;
            }
        }
        DType::Q2_K => {
            let scales = &b[0..16];
            let qs = &b[16..80];
            let (d, dmin) = (f16(80), f16(82));
            let mut is = 0;
            for n in 0..2 {
                let q = &qs[32 * n..32 * n + 32];
                for shift in [0, 2, 4, 6] {
                    for half in 0..2 {
                        let sc = scales[is];
                        is += 1;
                        let dl = d * (sc & 0x0f) as f32;
                        let ml = dmin * (sc >> 4) as f32;
                        for l in 0..16 {
                            let qv = (q[16 * half + l] >> shift) & 3;
                            y.push(dl * qv as f32 - ml);
                        }
                    }
                }
            }
        }
        DType::Q3_K => {
            let hm = &b[0..32];
            let qs = &b[32..96];
            let d = f16(108);
            // The 16 6-bit scales, unpacked as ggml does (kmask1/kmask2).
            let mut aux = [u32at(96), u32at(100), u32at(104), 0];
            let tmp = aux[2];
            let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
            aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
            aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
            aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
            let scales: Vec<i8> = aux
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .map(|x| x as i8)
                .collect();
            let mut is = 0;
            let mut m = 1u8;
            for n in 0..2 {
                let q = &qs[32 * n..32 * n + 32];
                for shift in [0, 2, 4, 6] {
                    for half in 0..2 {
                        let dl = d * (scales[is] as i32 - 32) as f32;
                        is += 1;
                        for l in 16 * half..16 * half + 16 {
                            let lo = ((q[l] >> shift) & 3) as i32;
                            let hi = if hm[l] & m != 0 { 0 } else { 4 };
                            y.push(dl * (lo - hi) as f32);
                        }
                    }
                    m <<= 1;
                }
            }
        }
        DType::Q4_K | DType::Q5_K => {
            let (d, dmin) = (f16(0), f16(2));
            let scales = &b[4..16];
            let (qh, ql) = if dtype == DType::Q5_K {
                (Some(&b[16..48]), &b[48..176])
            } else {
                (None, &b[16..144])
            };
            for j in 0..4 {
                let q = &ql[32 * j..32 * j + 32];
                for half in 0..2 {
                    let (sc, m) = scale_min_k4(2 * j + half, scales);
                    let d1 = d * sc as f32;
                    let m1 = dmin * m as f32;
                    for l in 0..32 {
                        let mut v = if half == 0 { q[l] & 0x0f } else { q[l] >> 4 } as u32;
                        if let Some(qh) = qh {
                            if qh[l] & (1 << (2 * j + half)) != 0 {
                                v += 16;
                            }
                        }
                        y.push(d1 * v as f32 - m1);
                    }
                }
            }
        }
        DType::Q6_K => {
            let d = f16(208);
            for n in 0..2 {
                let ql = &b[64 * n..64 * n + 64];
                let qh = &b[128 + 32 * n..128 + 32 * n + 32];
                let sc = &b[192 + 8 * n..192 + 8 * n + 8];
                let base = y.len();
                y.resize(base + 128, 0.0);
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    let s = |i: usize| d * (sc[i] as i8) as f32;
                    y[base + l] = s(is) * q1 as f32;
                    y[base + l + 32] = s(is + 2) * q2 as f32;
                    y[base + l + 64] = s(is + 4) * q3 as f32;
                    y[base + l + 96] = s(is + 6) * q4 as f32;
                }
            }
        }
        _ => unreachable!("{dtype} has its own loop in dequantize"),
    }
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and min (Q4_K, Q5_K).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
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
    /// The projections whose heads can be RMS-normed (Qwen3 q/k norm).
    pub const HEAD_NORMED: [LayerTensor; 2] = [LayerTensor::Q, LayerTensor::K];
    /// `q` or `k` (file names of the head norms); other tensors never ask.
    fn qk(self) -> &'static str {
        if self == LayerTensor::K {
            "k"
        } else {
            "q"
        }
    }
    /// The products whose outputs can be RMS-normed before the residual add
    /// (Gemma post-norms): attention's output projection and the MLP's down.
    pub const POST_NORMED: [LayerTensor; 2] = [LayerTensor::O, LayerTensor::Down];
    /// The projections that can carry a bias (attention and MLP matrices).
    pub const PROJECTIONS: [LayerTensor; 7] = [
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::O,
        LayerTensor::Gate,
        LayerTensor::Up,
        LayerTensor::Down,
    ];
    /// Whether the architecture gives this projection a bias.
    pub fn has_bias(self, c: &LlamaConfig) -> bool {
        let a = &c.arch;
        match self {
            LayerTensor::Q | LayerTensor::K | LayerTensor::V => a.qkv_bias,
            LayerTensor::O => a.o_bias,
            LayerTensor::Gate | LayerTensor::Up | LayerTensor::Down => a.mlp_bias,
            LayerTensor::AttnNorm | LayerTensor::FfnNorm => false,
        }
    }
}

/// Canonical names: one scheme, mapped from both file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum WeightName {
    Embed,
    Layer(usize, LayerTensor),
    /// The bias of a projection (`[rows]`), when the architecture has one.
    Bias(usize, LayerTensor),
    /// Per-head RMSNorm weight (`[head_dim]`) of q (`Q`) or k (`K`), when
    /// the architecture has them (Qwen3 `q_norm` / `k_norm`).
    HeadNorm(usize, LayerTensor),
    /// RMSNorm weight (`[hidden]`) of the attention output (`O`) or the MLP
    /// output (`Down`) before the residual add, when the architecture has
    /// them (Gemma `post_attention_layernorm` / `post_feedforward_layernorm`).
    PostNorm(usize, LayerTensor),
    FinalNorm,
    /// Absent when the embedding is tied.
    LmHead,
}

impl WeightName {
    pub fn hf(self) -> String {
        match self {
            WeightName::Embed => "model.embed_tokens.weight".into(),
            WeightName::Layer(i, t) => format!("model.layers.{i}.{}", t.hf_suffix()),
            WeightName::Bias(i, t) => format!(
                "model.layers.{i}.{}.bias",
                t.hf_suffix().trim_end_matches(".weight")
            ),
            WeightName::HeadNorm(i, t) => {
                format!("model.layers.{i}.self_attn.{}_norm.weight", t.qk())
            }
            WeightName::PostNorm(i, LayerTensor::O) => {
                format!("model.layers.{i}.post_attention_layernorm.weight")
            }
            WeightName::PostNorm(i, _) => {
                format!("model.layers.{i}.post_feedforward_layernorm.weight")
            }
            WeightName::FinalNorm => "model.norm.weight".into(),
            WeightName::LmHead => "lm_head.weight".into(),
        }
    }
    pub fn gguf(self) -> String {
        match self {
            WeightName::Embed => "token_embd.weight".into(),
            WeightName::Layer(i, t) => format!("blk.{i}.{}", t.gguf_suffix()),
            WeightName::Bias(i, t) => format!(
                "blk.{i}.{}.bias",
                t.gguf_suffix().trim_end_matches(".weight")
            ),
            WeightName::HeadNorm(i, t) => format!("blk.{i}.attn_{}_norm.weight", t.qk()),
            WeightName::PostNorm(i, LayerTensor::O) => {
                format!("blk.{i}.post_attention_norm.weight")
            }
            WeightName::PostNorm(i, _) => format!("blk.{i}.post_ffw_norm.weight"),
            WeightName::FinalNorm => "output_norm.weight".into(),
            WeightName::LmHead => "output.weight".into(),
        }
    }
    /// [`WeightName::hf`] as an architecture with post-norms names it:
    /// there `post_attention_layernorm` is the post-norm of attention, and
    /// the MLP's input norm is `pre_feedforward_layernorm` (Gemma 2/3).
    pub fn hf_for(self, c: &LlamaConfig) -> String {
        match self {
            WeightName::Layer(i, LayerTensor::FfnNorm) if c.arch.post_norms => {
                format!("model.layers.{i}.pre_feedforward_layernorm.weight")
            }
            w => w.hf(),
        }
    }
    pub fn shape(self, c: &LlamaConfig) -> Vec<usize> {
        match self {
            WeightName::Embed | WeightName::LmHead => vec![c.vocab_size, c.hidden_size],
            WeightName::PostNorm(..) => vec![c.hidden_size],
            WeightName::Layer(_, t) => t.shape(c),
            WeightName::Bias(_, t) => vec![t.shape(c)[0]],
            WeightName::HeadNorm(..) => vec![c.head_dim],
            WeightName::FinalNorm => vec![c.hidden_size],
        }
    }
    /// Every tensor the config calls for, in forward order.
    pub fn all(c: &LlamaConfig) -> Vec<WeightName> {
        let mut v = vec![WeightName::Embed];
        for i in 0..c.num_layers {
            v.extend(LayerTensor::ALL.iter().map(|&t| WeightName::Layer(i, t)));
            v.extend(
                LayerTensor::PROJECTIONS
                    .iter()
                    .filter(|t| t.has_bias(c))
                    .map(|&t| WeightName::Bias(i, t)),
            );
            if c.arch.qk_norm {
                v.extend(LayerTensor::HEAD_NORMED.map(|t| WeightName::HeadNorm(i, t)));
            }
            if c.arch.post_norms {
                v.extend(LayerTensor::POST_NORMED.map(|t| WeightName::PostNorm(i, t)));
            }
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
        if let Some(t) = t.strip_suffix(".post_norm") {
            let t = LayerTensor::POST_NORMED
                .into_iter()
                .find(|lt| lt.short() == t)?;
            return Some(WeightName::PostNorm(i, t));
        }
        if let Some(t) = t.strip_suffix(".norm") {
            let t = LayerTensor::HEAD_NORMED
                .into_iter()
                .find(|lt| lt.short() == t)?;
            return Some(WeightName::HeadNorm(i, t));
        }
        let (t, bias) = match t.strip_suffix(".bias") {
            Some(t) => (t, true),
            None => (t, false),
        };
        let t = LayerTensor::ALL.into_iter().find(|lt| lt.short() == t)?;
        Some(if bias {
            WeightName::Bias(i, t)
        } else {
            WeightName::Layer(i, t)
        })
    }
}

impl fmt::Display for WeightName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightName::Embed => f.write_str("embed"),
            WeightName::Layer(i, t) => write!(f, "layers.{i}.{}", t.short()),
            WeightName::Bias(i, t) => write!(f, "layers.{i}.{}.bias", t.short()),
            WeightName::HeadNorm(i, t) => write!(f, "layers.{i}.{}.norm", t.short()),
            WeightName::PostNorm(i, t) => write!(f, "layers.{i}.{}.post_norm", t.short()),
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
    /// Projection biases (`[rows]`), for the projections the architecture
    /// gives one (see [`LayerTensor::has_bias`]).
    pub biases: Vec<(LayerTensor, Tensor)>,
    /// Per-head q/k RMSNorm weights (`[head_dim]`, keyed `Q` and `K`), when
    /// the architecture has them (`ArchFeatures::qk_norm`).
    pub head_norms: Vec<(LayerTensor, Tensor)>,
    /// RMSNorm weights (`[hidden]`, keyed `O` and `Down`) of the attention
    /// and MLP outputs before the residual adds (`ArchFeatures::post_norms`).
    pub post_norms: Vec<(LayerTensor, Tensor)>,
}

impl LayerWeights {
    /// The bias of projection `t`, if it has one.
    pub fn bias(&self, t: LayerTensor) -> Option<&Tensor> {
        self.biases.iter().find(|(b, _)| *b == t).map(|(_, x)| x)
    }
    /// The per-head RMSNorm weight of q (`Q`) or k (`K`), if it has one.
    pub fn head_norm(&self, t: LayerTensor) -> Option<&Tensor> {
        self.head_norms
            .iter()
            .find(|(b, _)| *b == t)
            .map(|(_, x)| x)
    }
    /// The post-norm weight after product `t` (`O` or `Down`), if any.
    pub fn post_norm(&self, t: LayerTensor) -> Option<&Tensor> {
        self.post_norms
            .iter()
            .find(|(b, _)| *b == t)
            .map(|(_, x)| x)
    }
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
                biases: LayerTensor::PROJECTIONS
                    .into_iter()
                    .filter(|t| t.has_bias(c))
                    .map(|t| Ok((t, get(WeightName::Bias(i, t))?)))
                    .collect::<Result<_, LoadError>>()?,
                head_norms: if c.arch.qk_norm {
                    LayerTensor::HEAD_NORMED
                        .into_iter()
                        .map(|t| Ok((t, get(WeightName::HeadNorm(i, t))?)))
                        .collect::<Result<_, LoadError>>()?
                } else {
                    Vec::new()
                },
                post_norms: if c.arch.post_norms {
                    LayerTensor::POST_NORMED
                        .into_iter()
                        .map(|t| Ok((t, get(WeightName::PostNorm(i, t))?)))
                        .collect::<Result<_, LoadError>>()?
                } else {
                    Vec::new()
                },
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
            WeightName::Bias(i, t) => self.layers.get(i).and_then(|l| l.bias(t)),
            WeightName::HeadNorm(i, t) => self.layers.get(i).and_then(|l| l.head_norm(t)),
            WeightName::PostNorm(i, t) => self.layers.get(i).and_then(|l| l.post_norm(t)),
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
                    + l.biases.iter().map(|(_, b)| b.byte_len()).sum::<usize>()
                    + l.head_norms
                        .iter()
                        .chain(&l.post_norms)
                        .map(|(_, b)| b.byte_len())
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
            "tensor `{name}`: a norm weight or bias must be F32/F16/BF16, found {}",
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
