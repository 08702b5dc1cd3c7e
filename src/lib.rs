//! sramlm: real Llama-family inference on any GPU through wgpu, in two modes:
//! VRAM mode (weights in GPU storage buffers) and SRAM mode (an emulated cluster
//! of SRAM-only chips). See ARCHITECTURE.md for the data flow.

pub mod bench;
pub mod chat;
pub mod chip;
pub mod exec;
pub mod generate;
pub mod gpu;
pub mod graph;
pub mod kernels;
pub mod model;
pub mod sampling;
pub mod serve;
pub mod study;
pub mod testing;
pub mod tokenizer;
