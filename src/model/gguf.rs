//! GGUF files (llama.cpp's single-file format, versions 2 and 3).
//!
//! Layout (little-endian throughout):
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count × (key: string, type: u32, value)
//! tensor_count × (name: string, n_dims: u32, ne: n_dims × u64, type: u32, offset: u64)
//! padding to `general.alignment` (default 32)
//! data section: each tensor at data_offset + offset
//! ```
//!
//! where a string is `len: u64` followed by `len` UTF-8 bytes, and an array is
//! `elem_type: u32, len: u64, len × value` (arrays may nest).
//!
//! [`GgufFile::parse`] reads the header, metadata and tensor infos from a byte
//! slice and checks every count, length, offset and size against the slice
//! length before reading or allocating anything, so a corrupt or crafted file
//! yields a [`LoadError`], never a panic, an out-of-bounds read or a huge
//! allocation. [`load`] memory-maps a file, parses it and builds the canonical
//! [`Model`]: the tensor bytes stay in the mapping in their GGML encoding.
//!
//! GGUF lists a tensor's dimensions innermost first (`ne[0]` = columns);
//! [`GgufTensorInfo::shape`] reverses them into PyTorch's `[rows, cols]`.
//! llama.cpp's converter permutes the Q/K rows of llama models so that RoPE
//! rotates adjacent channel pairs: the loader keeps the rows as stored and sets
//! [`RopeLayout::Adjacent`].

#[path = "gguf_tokenizer.rs"]
pub mod gguf_tokenizer;

use super::config::{ArchFeatures, RopeScaling, RopeType};
use super::weights::{Bytes, DType, ModelWeights, Tensor, WeightName};
use super::{LlamaConfig, LoadError, Model, RopeLayout};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays nested deeper than this are rejected (no real file nests at all).
pub const MAX_ARRAY_NESTING: usize = 8;
/// GGML supports at most four dimensions.
pub const MAX_DIMS: u32 = 4;
/// Counts read from the file (already bounded by the bytes left) size at most
/// this many slots up front; larger collections grow as real entries parse.
const PREALLOC_CAP: usize = 1 << 16;

// ---------------------------------------------------------------------------
// GGML tensor types
// ---------------------------------------------------------------------------

/// A GGML tensor type id that sramlm knows the block layout of (whether or not
/// it can run it: see [`GgmlType::dtype`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

/// `(id, name, values per block, bytes per block)` for every GGML type that
/// can appear in a GGUF file.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q2_K: GgmlType = GgmlType(10);
    pub const Q3_K: GgmlType = GgmlType(11);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const BF16: GgmlType = GgmlType(30);

    /// The type with this id, if it is a known GGML type.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().any(|t| t.0 == id).then_some(GgmlType(id))
    }

    /// The GGML type of a [`DType`] (every `DType` has one).
    pub fn from_dtype(d: DType) -> GgmlType {
        match d {
            DType::F32 => GgmlType::F32,
            DType::F16 => GgmlType::F16,
            DType::BF16 => GgmlType::BF16,
            DType::Q8_0 => GgmlType::Q8_0,
            DType::Q4_0 => GgmlType::Q4_0,
            DType::Q4_1 => GgmlType::Q4_1,
            DType::Q5_0 => GgmlType::Q5_0,
            DType::Q5_1 => GgmlType::Q5_1,
            DType::Q2_K => GgmlType::Q2_K,
            DType::Q3_K => GgmlType::Q3_K,
            DType::Q4_K => GgmlType::Q4_K,
            DType::Q5_K => GgmlType::Q5_K,
            DType::Q6_K => GgmlType::Q6_K,
        }
    }

    fn entry(self) -> (u32, &'static str, u64, u64) {
        GGML_TYPES
            .iter()
            .copied()
            .find(|t| t.0 == self.0)
            .unwrap_or((self.0, "?", 1, 1))
    }

    pub fn id(self) -> u32 {
        self.0
    }
    pub fn name(self) -> &'static str {
        self.entry().1
    }
    /// Values per block along a row (`ne[0]` must be a multiple of it).
    pub fn block_len(self) -> u64 {
        self.entry().2
    }
    pub fn block_bytes(self) -> u64 {
        self.entry().3
    }

    /// The engine's encoding for this type, when sramlm can run it.
    pub fn dtype(self) -> Option<DType> {
        match self.0 {
            0 => Some(DType::F32),
            1 => Some(DType::F16),
            2 => Some(DType::Q4_0),
            3 => Some(DType::Q4_1),
            6 => Some(DType::Q5_0),
            7 => Some(DType::Q5_1),
            8 => Some(DType::Q8_0),
            10 => Some(DType::Q2_K),
            11 => Some(DType::Q3_K),
            12 => Some(DType::Q4_K),
            13 => Some(DType::Q5_K),
            14 => Some(DType::Q6_K),
            30 => Some(DType::BF16),
            _ => None,
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (type {})", self.name(), self.0)
    }
}

// ---------------------------------------------------------------------------
// Metadata values
// ---------------------------------------------------------------------------

/// GGUF metadata value type ids.
pub mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

fn value_type_name(t: u32) -> &'static str {
    match t {
        value_type::U8 => "u8",
        value_type::I8 => "i8",
        value_type::U16 => "u16",
        value_type::I16 => "i16",
        value_type::U32 => "u32",
        value_type::I32 => "i32",
        value_type::F32 => "f32",
        value_type::BOOL => "bool",
        value_type::STRING => "string",
        value_type::ARRAY => "array",
        value_type::U64 => "u64",
        value_type::I64 => "i64",
        value_type::F64 => "f64",
        _ => "unknown",
    }
}

/// Smallest encoded size of one value of a type (used to bound counts).
fn min_encoded_size(t: u32) -> Option<usize> {
    Some(match t {
        value_type::U8 | value_type::I8 | value_type::BOOL => 1,
        value_type::U16 | value_type::I16 => 2,
        value_type::U32 | value_type::I32 | value_type::F32 => 4,
        value_type::U64 | value_type::I64 | value_type::F64 => 8,
        value_type::STRING => 8,
        value_type::ARRAY => 12,
        _ => return None,
    })
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: all elements share one type; arrays may nest.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<GgufArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl GgufValue {
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => value_type::U8,
            GgufValue::I8(_) => value_type::I8,
            GgufValue::U16(_) => value_type::U16,
            GgufValue::I16(_) => value_type::I16,
            GgufValue::U32(_) => value_type::U32,
            GgufValue::I32(_) => value_type::I32,
            GgufValue::F32(_) => value_type::F32,
            GgufValue::Bool(_) => value_type::BOOL,
            GgufValue::String(_) => value_type::STRING,
            GgufValue::Array(_) => value_type::ARRAY,
            GgufValue::U64(_) => value_type::U64,
            GgufValue::I64(_) => value_type::I64,
            GgufValue::F64(_) => value_type::F64,
        }
    }

    /// Human-readable type, e.g. `u32`, `string`, `array of string`.
    pub fn type_name(&self) -> String {
        match self {
            GgufValue::Array(a) => a.type_name(),
            v => value_type_name(v.type_id()).to_string(),
        }
    }

    /// Any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    fn is_integer(&self) -> bool {
        matches!(
            self,
            GgufValue::U8(_)
                | GgufValue::U16(_)
                | GgufValue::U32(_)
                | GgufValue::U64(_)
                | GgufValue::I8(_)
                | GgufValue::I16(_)
                | GgufValue::I32(_)
                | GgufValue::I64(_)
        )
    }

    /// `f32` or `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl GgufArray {
    pub fn elem_type_id(&self) -> u32 {
        match self {
            GgufArray::U8(_) => value_type::U8,
            GgufArray::I8(_) => value_type::I8,
            GgufArray::U16(_) => value_type::U16,
            GgufArray::I16(_) => value_type::I16,
            GgufArray::U32(_) => value_type::U32,
            GgufArray::I32(_) => value_type::I32,
            GgufArray::F32(_) => value_type::F32,
            GgufArray::Bool(_) => value_type::BOOL,
            GgufArray::String(_) => value_type::STRING,
            GgufArray::Array(_) => value_type::ARRAY,
            GgufArray::U64(_) => value_type::U64,
            GgufArray::I64(_) => value_type::I64,
            GgufArray::F64(_) => value_type::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn type_name(&self) -> String {
        match self {
            GgufArray::Array(inner) => match inner.first() {
                Some(a) => format!("array of {}", a.type_name()),
                None => "array of array".to_string(),
            },
            a => format!("array of {}", value_type_name(a.elem_type_id())),
        }
    }

    /// Every element as `i64`, when the elements are integers that fit.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self {
            GgufArray::U8(v) => v.iter().map(|&x| x.into()).collect(),
            GgufArray::I8(v) => v.iter().map(|&x| x.into()).collect(),
            GgufArray::U16(v) => v.iter().map(|&x| x.into()).collect(),
            GgufArray::I16(v) => v.iter().map(|&x| x.into()).collect(),
            GgufArray::U32(v) => v.iter().map(|&x| x.into()).collect(),
            GgufArray::I32(v) => v.iter().map(|&x| x.into()).collect(),
            GgufArray::I64(v) => v.clone(),
            GgufArray::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect::<Option<Vec<_>>>()?,
            _ => return None,
        })
    }

    /// Every element as `f32`, when the elements are floats.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        match self {
            GgufArray::F32(v) => Some(v.clone()),
            GgufArray::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            _ => None,
        }
    }

    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            GgufArray::String(v) => Some(v),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

fn format_err(msg: impl Into<String>) -> LoadError {
    LoadError::Format(msg.into())
}

/// A bounds-checked cursor over the file bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], LoadError> {
        if n > self.remaining() {
            return Err(format_err(format!(
                "truncated GGUF: {} needs {n} bytes at offset {}, but the file has only {} bytes",
                what(),
                self.pos,
                self.buf.len()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], LoadError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, LoadError> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, LoadError> {
        self.array::<8>(what).map(u64::from_le_bytes)
    }

    /// A `u64` count of items of at least `min_size` bytes each, checked
    /// against the bytes left so it can size an allocation safely.
    fn count(&mut self, min_size: usize, what: &dyn Fn() -> String) -> Result<usize, LoadError> {
        let at = self.pos;
        let n = self.u64(what)?;
        let max = self.remaining() / min_size.max(1);
        if n > max as u64 {
            return Err(format_err(format!(
                "{} is {n} (at offset {at}), but only {} bytes remain in the file (at most {max} items of {min_size} bytes)",
                what(),
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, LoadError> {
        let at = self.pos;
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() as u64 {
            return Err(format_err(format!(
                "string length {len} of {} (at offset {at}) exceeds the {} bytes left in the file",
                what(),
                self.remaining()
            )));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            format_err(format!(
                "{} (at offset {at}) is not valid UTF-8: {e}",
                what()
            ))
        })
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue, LoadError> {
        let what = || format!("value of metadata `{key}`");
        Ok(match ty {
            value_type::U8 => GgufValue::U8(self.array::<1>(&what)?[0]),
            value_type::I8 => GgufValue::I8(i8::from_le_bytes(self.array::<1>(&what)?)),
            value_type::U16 => GgufValue::U16(u16::from_le_bytes(self.array(&what)?)),
            value_type::I16 => GgufValue::I16(i16::from_le_bytes(self.array(&what)?)),
            value_type::U32 => GgufValue::U32(u32::from_le_bytes(self.array(&what)?)),
            value_type::I32 => GgufValue::I32(i32::from_le_bytes(self.array(&what)?)),
            value_type::F32 => GgufValue::F32(f32::from_le_bytes(self.array(&what)?)),
            value_type::BOOL => GgufValue::Bool(self.array::<1>(&what)?[0] != 0),
            value_type::STRING => GgufValue::String(self.string(&what)?),
            value_type::ARRAY => GgufValue::Array(self.array_value(key, depth)?),
            value_type::U64 => GgufValue::U64(u64::from_le_bytes(self.array(&what)?)),
            value_type::I64 => GgufValue::I64(i64::from_le_bytes(self.array(&what)?)),
            value_type::F64 => GgufValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(format_err(format!(
                    "metadata `{key}` has unknown value type {other} (at offset {})",
                    self.pos.saturating_sub(4)
                )))
            }
        })
    }

    /// Reads `n` fixed-size elements (`n` already checked against the bytes left).
    fn fixed<T, const N: usize>(
        &mut self,
        n: usize,
        key: &str,
        conv: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, LoadError> {
        let bytes = self.take(n.saturating_mul(N), &|| format!("array `{key}`"))?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                conv(a)
            })
            .collect())
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<GgufArray, LoadError> {
        if depth >= MAX_ARRAY_NESTING {
            return Err(format_err(format!(
                "metadata `{key}`: arrays nested deeper than {MAX_ARRAY_NESTING} levels"
            )));
        }
        let at = self.pos;
        let ty = self.u32(&|| format!("element type of array `{key}`"))?;
        let min = min_encoded_size(ty).ok_or_else(|| {
            format_err(format!(
                "metadata `{key}`: array element type {ty} is unknown (at offset {at})"
            ))
        })?;
        let n = self.count(min, &|| {
            format!("length of array `{key}` ({} elements)", value_type_name(ty))
        })?;
        Ok(match ty {
            value_type::U8 => GgufArray::U8(self.fixed(n, key, |[b]: [u8; 1]| b)?),
            value_type::I8 => GgufArray::I8(self.fixed(n, key, i8::from_le_bytes)?),
            value_type::BOOL => GgufArray::Bool(self.fixed(n, key, |[b]: [u8; 1]| b != 0)?),
            value_type::U16 => GgufArray::U16(self.fixed(n, key, u16::from_le_bytes)?),
            value_type::I16 => GgufArray::I16(self.fixed(n, key, i16::from_le_bytes)?),
            value_type::U32 => GgufArray::U32(self.fixed(n, key, u32::from_le_bytes)?),
            value_type::I32 => GgufArray::I32(self.fixed(n, key, i32::from_le_bytes)?),
            value_type::F32 => GgufArray::F32(self.fixed(n, key, f32::from_le_bytes)?),
            value_type::U64 => GgufArray::U64(self.fixed(n, key, u64::from_le_bytes)?),
            value_type::I64 => GgufArray::I64(self.fixed(n, key, i64::from_le_bytes)?),
            value_type::F64 => GgufArray::F64(self.fixed(n, key, f64::from_le_bytes)?),
            value_type::STRING => {
                let mut v = Vec::with_capacity(n.min(PREALLOC_CAP));
                for i in 0..n {
                    v.push(self.string(&|| format!("element {i} of array `{key}`"))?);
                }
                GgufArray::String(v)
            }
            _ => {
                // value_type::ARRAY (min_encoded_size rejected everything else)
                let mut v = Vec::with_capacity(n.min(PREALLOC_CAP));
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                GgufArray::Array(v)
            }
        })
    }
}

/// One tensor as the file describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// GGUF order: `ne[0]` (the contiguous row length) first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Bytes the tensor occupies (computed from `dims` and the type).
    pub size: u64,
}

impl GgufTensorInfo {
    /// PyTorch orientation: outermost dimension first (`[rows, cols]` for a matrix).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Header, metadata and tensor directory of a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
    /// Length of the byte slice that was parsed.
    pub file_len: u64,
}

fn tensor_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, LoadError> {
    let mut numel: u64 = 1;
    for &d in dims {
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| format_err(format!("tensor `{name}`: dimensions {dims:?} overflow")))?;
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    if ne0 % ty.block_len() != 0 {
        return Err(format_err(format!(
            "tensor `{name}`: row length {ne0} is not a multiple of the {} block length {}",
            ty,
            ty.block_len()
        )));
    }
    (numel / ty.block_len())
        .checked_mul(ty.block_bytes())
        .ok_or_else(|| format_err(format!("tensor `{name}`: byte size of {dims:?} overflows")))
}

impl GgufFile {
    /// Parses header, metadata and tensor directory from the whole file's
    /// bytes, and checks that every tensor's data lies inside `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile, LoadError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if bytes.len() < 4 {
            return Err(format_err(format!(
                "file is {} bytes long, too short to be GGUF",
                bytes.len()
            )));
        }
        let magic = r.array::<4>(&|| "magic".to_string())?;
        if &magic != GGUF_MAGIC {
            return Err(format_err(format!(
                "not a GGUF file: magic is {magic:02x?} ({:?}), expected \"GGUF\"",
                String::from_utf8_lossy(&magic)
            )));
        }
        let version = r.u32(&|| "version".to_string())?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(format_err(
                    "GGUF version 1 is not supported (sramlm reads versions 2 and 3; re-convert the model with a current llama.cpp)",
                ))
            }
            v if matches!(v.swap_bytes(), 2 | 3) => {
                return Err(format_err(format!(
                    "big-endian GGUF (version {}) is not supported",
                    v.swap_bytes()
                )))
            }
            v => {
                return Err(format_err(format!(
                    "unknown GGUF version {v} (sramlm reads versions 2 and 3)"
                )))
            }
        }
        // Minimum sizes: a tensor info is name len (8) + n_dims (4) + type (4) +
        // offset (8); a KV pair is key len (8) + type (4) + 1 byte of value.
        let n_tensors_at = r.pos;
        let n_tensors = r.u64(&|| "tensor count".to_string())?;
        let n_kv = r.u64(&|| "metadata count".to_string())?;
        let left = r.remaining() as u64;
        if n_kv > left / 13 {
            return Err(format_err(format!(
                "metadata count {n_kv} is impossible: only {left} bytes follow the header"
            )));
        }
        if n_tensors > left / 24 {
            return Err(format_err(format!(
                "tensor count {n_tensors} (at offset {n_tensors_at}) is impossible: only {left} bytes follow the header"
            )));
        }

        let kv_cap = (n_kv as usize).min(PREALLOC_CAP);
        let mut metadata = Vec::with_capacity(kv_cap);
        let mut index = HashMap::with_capacity(kv_cap);
        for i in 0..n_kv as usize {
            let key = r.string(&|| format!("key of metadata entry {i}"))?;
            let ty = r.u32(&|| format!("type of metadata `{key}`"))?;
            let value = r.value(ty, &key, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(format_err(format!("metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => {
                let a = v.as_u64().ok_or_else(|| {
                    format_err(format!(
                        "metadata `general.alignment` has type {}, expected u32",
                        v.type_name()
                    ))
                })?;
                if a == 0 || !a.is_power_of_two() || a > 1 << 30 {
                    return Err(format_err(format!(
                        "metadata `general.alignment` = {a} must be a power of two (at most 2^30)"
                    )));
                }
                a
            }
        };

        let t_cap = (n_tensors as usize).min(PREALLOC_CAP);
        let mut tensors = Vec::with_capacity(t_cap);
        let mut tensor_index = HashMap::with_capacity(t_cap);
        for i in 0..n_tensors as usize {
            let name = r.string(&|| format!("name of tensor {i}"))?;
            if i == 0
                && ["general.", "tokenizer.", "llama.", "split."]
                    .iter()
                    .any(|p| name.starts_with(p))
            {
                return Err(format_err(format!(
                    "the metadata is truncated or malformed at entry {n_kv}: the header declares {n_kv} metadata entries, but `{name}` (a metadata key) follows them where the tensor directory should start"
                )));
            }
            let n_dims = r.u32(&|| format!("dimension count of tensor `{name}`"))?;
            if n_dims > MAX_DIMS {
                return Err(format_err(format!(
                    "tensor `{name}` has {n_dims} dimensions (GGML allows at most {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for j in 0..n_dims {
                dims.push(r.u64(&|| format!("dimension {j} of tensor `{name}`"))?);
            }
            let type_id = r.u32(&|| format!("type of tensor `{name}`"))?;
            let ggml_type =
                GgmlType::from_id(type_id).ok_or_else(|| LoadError::UnsupportedDType {
                    tensor: name.clone(),
                    dtype: format!("unknown GGML type {type_id}"),
                })?;
            let offset = r.u64(&|| format!("data offset of tensor `{name}`"))?;
            let size = tensor_size(&name, &dims, ggml_type)?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(format_err(format!("tensor `{name}` appears twice")));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                size,
            });
        }

        let header_end = r.pos as u64;
        let data_offset = header_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| format_err("data section offset overflows"))?;
        let file_len = bytes.len() as u64;
        for t in &tensors {
            if t.offset % alignment != 0 {
                return Err(format_err(format!(
                    "tensor `{}` offset {} is not a multiple of the alignment {alignment}",
                    t.name, t.offset
                )));
            }
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(format_err(format!(
                        "tensor `{}` data ({} bytes at data offset {}, file offset {}) extends beyond the end of the file ({file_len} bytes)",
                        t.name,
                        t.size,
                        t.offset,
                        data_offset.saturating_add(t.offset)
                    )))
                }
            }
        }
        // Tensors must not share bytes.
        let mut order: Vec<&GgufTensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
        order.sort_by_key(|t| t.offset);
        for pair in order.windows(2) {
            if pair[0].offset + pair[0].size > pair[1].offset {
                return Err(format_err(format!(
                    "tensors `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap",
                    pair[0].name,
                    pair[0].offset,
                    pair[0].offset + pair[0].size,
                    pair[1].name,
                    pair[1].offset,
                    pair[1].offset + pair[1].size
                )));
            }
        }

        Ok(GgufFile {
            version,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
            file_len,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Absolute byte range of a tensor's data (checked by [`GgufFile::parse`]).
    pub fn tensor_range(&self, t: &GgufTensorInfo) -> std::ops::Range<usize> {
        let start = (self.data_offset + t.offset) as usize;
        start..start + t.size as usize
    }

    /// Sum of all tensors' data sizes.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }

    fn type_error(key: &str, v: &GgufValue, expected: &str) -> LoadError {
        LoadError::Config(format!(
            "metadata `{key}` has type {}, expected {expected}",
            v.type_name()
        ))
    }

    /// A string value; `Ok(None)` when absent, an error naming the key when
    /// the value has another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| Self::type_error(key, v, "string")),
        }
    }

    /// A non-negative integer of any integer type, as `usize`.
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.is_integer() => match v.as_u64().and_then(|x| usize::try_from(x).ok()) {
                Some(x) => Ok(Some(x)),
                None => Err(LoadError::Config(format!(
                    "metadata `{key}` = {} must be a non-negative integer",
                    v.as_i64()
                        .map_or_else(|| format!("{v:?}"), |x| x.to_string())
                ))),
            },
            Some(v) => Err(Self::type_error(key, v, "an unsigned integer")),
        }
    }

    /// A token id (any integer type, fitting in `u32`).
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, LoadError> {
        match self.get_usize(key)? {
            None => Ok(None),
            Some(x) => u32::try_from(x).map(Some).map_err(|_| {
                LoadError::Config(format!("metadata `{key}` = {x} does not fit in 32 bits"))
            }),
        }
    }

    /// A float (`f32` or `f64`).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| Self::type_error(key, v, "a float (f32)")),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Self::type_error(key, v, "bool")),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&GgufArray>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| Self::type_error(key, v, "an array")),
        }
    }

    /// `general.architecture` (required).
    pub fn architecture(&self) -> Result<&str, LoadError> {
        self.get_str("general.architecture")?.ok_or_else(|| {
            LoadError::Config("metadata `general.architecture` is missing".to_string())
        })
    }
}

// ---------------------------------------------------------------------------
// Llama hyper-parameters
// ---------------------------------------------------------------------------

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
    if let Some(w) = g.get_usize(&k("attention.sliding_window"))? {
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
    let cfg = LlamaConfig {
        hidden_size,
        intermediate_size: req(&k("feed_forward_length"))?,
        num_layers: req(&k("block_count"))?,
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
    super::safetensors::check_regular_file(path)?;
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
    let tokenizer = gguf_tokenizer::from_gguf(&g)?;
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
    super::safetensors::refuse_unused(&unused, &config)?;
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

// ---------------------------------------------------------------------------
// Writing (tests and tools)
// ---------------------------------------------------------------------------

struct WriterTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
    offset: Option<u64>,
}

/// Builds GGUF bytes: for tests that craft files, and for small tools.
///
/// ```
/// use sramlm::model::gguf::{GgufWriter, GgufValue, GgufFile, GgmlType};
/// let bytes = GgufWriter::new()
///     .kv("general.architecture", GgufValue::String("llama".into()))
///     .tensor("x", &[2, 4], GgmlType::F32.id(), vec![0u8; 32])
///     .to_bytes();
/// let g = GgufFile::parse(&bytes).unwrap();
/// assert_eq!(g.tensors[0].shape(), vec![2, 4]);
/// ```
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    kvs: Vec<(String, GgufValue)>,
    tensors: Vec<WriterTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_array(out: &mut Vec<u8>, a: &GgufArray) {
    out.extend(a.elem_type_id().to_le_bytes());
    out.extend((a.len() as u64).to_le_bytes());
    match a {
        GgufArray::U8(v) => out.extend(v),
        GgufArray::I8(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgufArray::U16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgufArray::I16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgufArray::U32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgufArray::I32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgufArray::F32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgufArray::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        GgufArray::String(v) => v.iter().for_each(|s| put_str(out, s)),
        GgufArray::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        GgufArray::U64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgufArray::I64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgufArray::F64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
    }
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend(x.to_le_bytes()),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(b) => out.push(*b as u8),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(a) => put_array(out, a),
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

impl GgufWriter {
    /// Version 3, alignment 32, no metadata, no tensors.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// The version number written in the header (any value, for tests).
    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Sets the data alignment and writes it as `general.alignment` (u32).
    pub fn alignment(mut self, a: u32) -> Self {
        self.alignment = u64::from(a.max(1));
        self.kvs.retain(|(k, _)| k != "general.alignment");
        self.kvs
            .push(("general.alignment".to_string(), GgufValue::U32(a)));
        self
    }

    /// Adds one metadata entry (duplicates are written as given).
    pub fn kv(mut self, key: &str, value: GgufValue) -> Self {
        self.kvs.push((key.to_string(), value));
        self
    }

    /// Adds a tensor; `shape` in PyTorch order (`[rows, cols]`), `data` in the
    /// GGML encoding of `type_id`, written at the next aligned offset.
    pub fn tensor(self, name: &str, shape: &[usize], type_id: u32, data: Vec<u8>) -> Self {
        self.tensor_impl(name, shape, type_id, data, None)
    }

    /// Like [`GgufWriter::tensor`] but records `offset` (relative to the data
    /// section) in the tensor info, whatever the data's real position.
    pub fn tensor_at(
        self,
        name: &str,
        shape: &[usize],
        type_id: u32,
        data: Vec<u8>,
        offset: u64,
    ) -> Self {
        self.tensor_impl(name, shape, type_id, data, Some(offset))
    }

    fn tensor_impl(
        mut self,
        name: &str,
        shape: &[usize],
        type_id: u32,
        data: Vec<u8>,
        offset: Option<u64>,
    ) -> Self {
        self.tensors.push(WriterTensor {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            type_id,
            data,
            offset,
        });
        self
    }

    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut out = Vec::new();
        out.extend(GGUF_MAGIC);
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            put_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut next = 0u64;
        let mut positions = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.type_id.to_le_bytes());
            out.extend(t.offset.unwrap_or(next).to_le_bytes());
            positions.push(next);
            next = align(next + t.data.len() as u64);
        }
        let data_start = align(out.len() as u64);
        out.resize(data_start as usize, 0);
        for (t, &pos) in self.tensors.iter().zip(&positions) {
            out.resize((data_start + pos) as usize, 0);
            out.extend(&t.data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GgufWriter {
        GgufWriter::new()
            .kv("general.architecture", GgufValue::String("llama".into()))
            .kv("a.u8", GgufValue::U8(7))
            .kv("a.i64", GgufValue::I64(-3))
            .kv("a.f64", GgufValue::F64(0.5))
            .kv("a.bool", GgufValue::Bool(true))
            .kv(
                "a.nested",
                GgufValue::Array(GgufArray::Array(vec![
                    GgufArray::U16(vec![1, 2]),
                    GgufArray::String(vec!["x".into(), "yz".into()]),
                ])),
            )
            .tensor("t.f32", &[2, 3], 0, vec![0u8; 24])
            .tensor("t.q8", &[1, 32], 8, vec![0u8; 34])
    }

    #[test]
    fn round_trips_every_value_type() {
        let bytes = small().to_bytes();
        let g = GgufFile::parse(&bytes).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.get("a.u8"), Some(&GgufValue::U8(7)));
        assert_eq!(g.get("a.i64"), Some(&GgufValue::I64(-3)));
        assert_eq!(g.get_f32("a.f64").unwrap(), Some(0.5));
        assert_eq!(g.get_bool("a.bool").unwrap(), Some(true));
        let nested = g.get_array("a.nested").unwrap().unwrap();
        assert_eq!(nested.type_name(), "array of array of u16");
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[0].dims, vec![3, 2]);
        assert_eq!(g.tensors[0].shape(), vec![2, 3]);
        assert_eq!(g.tensors[1].size, 34);
        assert_eq!(g.tensors[1].offset % 32, 0);
        assert_eq!(g.data_offset % 32, 0);
    }

    #[test]
    fn typed_getters_name_key_and_type() {
        let bytes = small().to_bytes();
        let g = GgufFile::parse(&bytes).unwrap();
        let e = g.get_usize("a.f64").unwrap_err().to_string();
        assert!(e.contains("a.f64") && e.contains("f64"), "{e}");
        let e = g.get_usize("a.i64").unwrap_err().to_string();
        assert!(e.contains("non-negative"), "{e}");
        let e = g.get_str("a.nested").unwrap_err().to_string();
        assert!(e.contains("array of array"), "{e}");
    }

    #[test]
    fn ggml_type_names() {
        assert_eq!(GgmlType::from_id(13).unwrap().to_string(), "Q5_K (type 13)");
        assert!(GgmlType::from_id(4).is_none());
        assert_eq!(GgmlType::from_id(3).unwrap().dtype(), Some(DType::Q4_1));
        for d in DType::ALL {
            let t = GgmlType::from_dtype(d);
            assert_eq!(t.dtype(), Some(d));
            assert_eq!(t.block_len() as usize, d.block_len());
            assert_eq!(t.block_bytes() as usize, d.block_bytes());
        }
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion_blowup() {
        // Hand-encode 10 000 nested single-element arrays.
        let mut b = Vec::new();
        b.extend(GGUF_MAGIC);
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        put_str(&mut b, "deep");
        b.extend(value_type::ARRAY.to_le_bytes());
        for _ in 0..10_000 {
            b.extend(value_type::ARRAY.to_le_bytes());
            b.extend(1u64.to_le_bytes());
        }
        let e = GgufFile::parse(&b).unwrap_err().to_string();
        assert!(e.contains("nested"), "{e}");
    }
}

#[cfg(test)]
mod rope_tests {
    use super::*;

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
        assert!(e.contains("rope_freqs.weight") && e.contains('4'), "{e}");
        let r = RopeScaling {
            freq_factors: Some(vec![1.0, 0.0]),
            ..Default::default()
        };
        assert!(r.check(4).unwrap_err().contains("positive"));
    }
}
