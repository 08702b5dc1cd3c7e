//! [`GgufWriter`]: GGUF bytes built in memory, for tests that craft files and
//! for small tools.

use super::{GgufArray, GgufValue, DEFAULT_ALIGNMENT, GGUF_MAGIC};

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

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
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
