//! GGUF files (llama.cpp's single-file format, versions 2 and 3), split along
//! their concerns:
//!
//! * `file.rs`: the container: GGML tensor types, metadata values and the
//!   bounds-checked parser ([`GgufFile::parse`]);
//! * `writer.rs`: [`GgufWriter`], which builds GGUF bytes (tests and tools);
//! * `llama.rs`: GGUF metadata and tensors mapped onto the canonical model
//!   ([`config_from_gguf`], [`rope_from_gguf`], [`load`]);
//! * `tokenizer.rs`: the tokenizer described by `tokenizer.ggml.*` metadata.

mod file;
mod llama;
pub mod tokenizer;
mod writer;

pub use file::{
    value_type, GgmlType, GgufArray, GgufFile, GgufTensorInfo, GgufValue, DEFAULT_ALIGNMENT,
    GGUF_MAGIC, MAX_ARRAY_NESTING, MAX_DIMS,
};
pub use llama::{config_from_gguf, load, rope_freq_factors, rope_from_gguf};
pub use writer::GgufWriter;
