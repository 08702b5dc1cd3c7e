//! sramlm: real Llama-family inference on any GPU through wgpu, in two modes:
//! VRAM mode (weights in GPU storage buffers) and SRAM mode (an emulated cluster
//! of SRAM-only chips). See ARCHITECTURE.md for the data flow.

pub mod chip;
pub mod model;
pub mod tokenizer;
pub mod gpu;
pub mod kernels;
pub mod exec;
pub mod generate;
pub mod sampling;
pub mod testing;
