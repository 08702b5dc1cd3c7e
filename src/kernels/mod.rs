//! Kernels: each op pairs `shaders/<op>.wgsl` with `src/kernels/<op>.rs`
//! (params struct in WGSL binding order, variant choice, dispatch sizing, CPU
//! reference, tests). An op is built once into a [`KernelOp`] (pipeline + bind
//! group); executors record the list per step.

pub mod argmax;
pub mod attention;
pub mod bias_add;
pub mod copy;
pub mod embed;
pub mod head_norm;
pub mod matmul;
pub mod penalty;
pub mod rmsnorm;
pub mod rope;
pub mod silu_mul;
pub mod sram_matmul;
pub mod sram_step;
pub mod topk;

use crate::gpu::{Gpu, GpuError};
use crate::model::DType;
use std::sync::Arc;

/// Per-step values every kernel can read (one uniform buffer, written before
/// each submission). Matches `struct Step` in the WGSL files.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Step {
    /// Tokens processed in this step (prompt chunk length, or 1 when decoding).
    pub n_tokens: u32,
    /// Position of the first of them.
    pub pos0: u32,
    /// First row whose logits are computed.
    pub out_row0: u32,
    /// Number of logit rows computed (1 when generating).
    pub n_out_rows: u32,
    /// First KV-cache row of this step's sequence (`sequence × context`;
    /// 0 with one sequence).
    pub kv_base: u32,
    pub _pad: [u32; 3],
}

impl Step {
    /// `n_tokens` tokens from position `pos0` of sequence 0, with the logits
    /// of row 0 only (a decode step when `n_tokens` is 1).
    pub const fn tokens(n_tokens: u32, pos0: u32) -> Step {
        Step {
            n_tokens,
            pos0,
            out_row0: 0,
            n_out_rows: 1,
            kv_base: 0,
            _pad: [0; 3],
        }
    }

    /// Batched decode of `n` sequences, one token each: row t is its own
    /// sequence, whose position and KV-cache base the attention reads from
    /// its row table (`attention::MAX_ROWS` entries); every row's logits.
    /// Flagged in `_pad[0]` (WGSL `Step.per_row`).
    pub const fn decode_rows(n: u32) -> Step {
        Step {
            n_tokens: n,
            pos0: 0,
            out_row0: 0,
            n_out_rows: n,
            kv_base: 0,
            _pad: [1, 0, 0],
        }
    }

    /// A batched-decode step ([`Step::decode_rows`]).
    pub const fn per_row(&self) -> bool {
        self._pad[0] != 0
    }
}

/// What a kernel is, for per-class timing and dispatch counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelClass {
    Embed,
    Norm,
    Matmul,
    Rope,
    Attention,
    Elementwise,
    Logits,
    Sample,
    Link,
    /// SRAM mode's interpreter: every stage of a run in one dispatch.
    SramStep,
}

impl KernelClass {
    /// The snake_case name used in stats and JSON.
    pub fn name(self) -> &'static str {
        match self {
            KernelClass::Embed => "embed",
            KernelClass::Norm => "norm",
            KernelClass::Matmul => "matmul",
            KernelClass::Rope => "rope",
            KernelClass::Attention => "attention",
            KernelClass::Elementwise => "elementwise",
            KernelClass::Logits => "logits",
            KernelClass::Sample => "sample",
            KernelClass::Link => "link",
            KernelClass::SramStep => "sram_step",
        }
    }
}

type GridFn = Box<dyn Fn(&Step) -> [u32; 3] + Send + Sync>;

/// A built dispatch: pipeline, bind group and how many workgroups a step needs.
pub struct KernelOp {
    pub name: String,
    pub class: KernelClass,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    grid: GridFn,
}

impl KernelOp {
    pub fn new(
        gpu: &Gpu,
        name: impl Into<String>,
        class: KernelClass,
        pipeline: Arc<wgpu::ComputePipeline>,
        buffers: &[&wgpu::Buffer],
        grid: impl Fn(&Step) -> [u32; 3] + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&name),
            layout: &layout,
            entries: &entries,
        });
        KernelOp {
            name,
            class,
            pipeline,
            bind_group,
            grid: Box::new(grid),
        }
    }

    pub fn groups(&self, step: &Step) -> [u32; 3] {
        (self.grid)(step)
    }

    /// This op, dispatched only for steps where `pred` holds (else an empty grid).
    pub fn only_when(mut self, pred: impl Fn(&Step) -> bool + Send + Sync + 'static) -> Self {
        let grid = self.grid;
        self.grid = Box::new(move |s: &Step| if pred(s) { grid(s) } else { [0, 0, 0] });
        self
    }

    /// Records this op into a compute pass; returns false if the step needs no work.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, step: &Step) -> bool {
        let [x, y, z] = self.groups(step);
        if x == 0 || y == 0 || z == 0 {
            return false;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
        true
    }
}

/// A weight matrix on the GPU, bytes exactly as in the model file.
pub struct GpuWeight {
    pub buf: wgpu::Buffer,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of the file encoding (what `info` and the stats report).
    pub bytes: usize,
}

impl GpuWeight {
    pub fn upload(gpu: &Gpu, label: &str, t: &crate::model::Tensor) -> Result<Self, GpuError> {
        Ok(GpuWeight {
            buf: gpu.upload(label, t.bytes.as_slice())?,
            dtype: t.dtype,
            rows: t.rows(),
            cols: t.cols(),
            bytes: t.byte_len(),
        })
    }
    pub fn row_bytes(&self) -> u32 {
        (self.cols / self.dtype.block_len() * self.dtype.block_bytes()) as u32
    }
}

/// The WGSL define selecting the weight decoder for `dtype`.
pub fn weight_define(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "W_F32",
        DType::F16 => "W_F16",
        DType::BF16 => "W_BF16",
        DType::Q8_0 => "W_Q8_0",
        DType::Q4_0 => "W_Q4_0",
        DType::Q4_1 => "W_Q4_1",
        DType::Q5_0 => "W_Q5_0",
        DType::Q5_1 => "W_Q5_1",
        DType::Q2_K => "W_Q2_K",
        DType::Q3_K => "W_Q3_K",
        DType::Q4_K => "W_Q4_K",
        DType::Q5_K => "W_Q5_K",
        DType::Q6_K => "W_Q6_K",
    }
}

pub fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub fn ceil_div(a: u32, b: u32) -> u32 {
    a.div_ceil(b)
}

/// Every (shader, variant) the VRAM-mode kernels can build, for the GPU-free
/// naga test (each must parse, validate and fit 16 KiB of workgroup memory).
pub fn all_variants() -> Vec<(crate::gpu::Shader, crate::gpu::ShaderVariant)> {
    use crate::gpu::{Shader, ShaderVariant};
    let dtypes = DType::ALL;
    let mut v = Vec::new();
    for dt in dtypes {
        v.push((
            Shader::Embed,
            ShaderVariant::new("main").define(weight_define(dt)),
        ));
        for tt in [1, matmul::TT_PREFILL] {
            for acc in [false, true] {
                for sg in [false, true] {
                    v.push((Shader::Matmul, matmul::variant(dt, tt, acc, sg)));
                    if !acc {
                        for fuse in [
                            matmul::Fuse::Split3 {
                                q_rows: 1,
                                k_rows: 1,
                            },
                            matmul::Fuse::Glu,
                        ] {
                            v.push((Shader::Matmul, matmul::variant_fused(dt, tt, acc, sg, fuse)));
                        }
                        if tt == 1 {
                            for fuse in [
                                matmul::Fuse::None,
                                matmul::Fuse::Glu,
                                matmul::Fuse::Split3 {
                                    q_rows: 1,
                                    k_rows: 1,
                                },
                            ] {
                                for rpw in [2, matmul::RPW] {
                                    v.push((
                                        Shader::Matmul,
                                        matmul::variant_full(dt, tt, acc, sg, fuse, true, 576, rpw),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Rows whose width is not a multiple of 4 (float weights only).
    for dt in [DType::F32, DType::F16, DType::BF16] {
        v.push((Shader::Embed, embed::variant(dt, 575)));
        for sg in [false, true] {
            for (tt, acc, fuse, norm) in [
                (1, false, matmul::Fuse::Glu, true),
                (1, true, matmul::Fuse::None, false),
                (matmul::TT_PREFILL, true, matmul::Fuse::None, false),
                (
                    matmul::TT_PREFILL,
                    false,
                    matmul::Fuse::Split3 {
                        q_rows: 1,
                        k_rows: 1,
                    },
                    false,
                ),
            ] {
                let mv = matmul::variant_full(dt, tt, acc, sg, fuse, norm, 575, matmul::RPW);
                v.push((Shader::Matmul, mv));
            }
        }
    }
    for hd in [6, 8, 16, 18, 24, 32, 64, 128, 256] {
        v.push((Shader::Attention, attention::variant(hd)));
        for wg in [64, 256] {
            v.push((Shader::Attention, attention::variant_wg(hd, wg)));
            v.push((Shader::Attention, attention::rope_variant(hd, wg)));
        }
    }
    for s in [
        Shader::Rmsnorm,
        Shader::Rope,
        Shader::SiluMul,
        Shader::BiasAdd,
        Shader::HeadNorm,
        Shader::Argmax,
        Shader::Topk,
        Shader::Penalty,
    ] {
        v.push((s, ShaderVariant::new("main")));
    }
    v.extend(sram_variants(crate::chip::DEFAULT_SLICE_BYTES, 576));
    v.extend(copy::variants());
    v.extend(crate::gpu::litmus::variants());
    v
}

/// The SRAM-mode variants for one slice budget (bytes) and hidden size: each
/// must fit `slice_bytes` of workgroup memory. The interpreter (every
/// encoding, head sizes 8 and 64, or `hidden` when it is a head size) and the
/// per-op matmul it shares its arithmetic with (kept as the reference the
/// quantization tests check every encoding against).
pub fn sram_variants(
    slice_bytes: usize,
    hidden: usize,
) -> Vec<(crate::gpu::Shader, crate::gpu::ShaderVariant)> {
    use crate::gpu::Shader;
    let mut v = Vec::new();
    for dt in DType::ALL {
        for acc in [false, true] {
            v.push((
                Shader::SramMatmul,
                sram_matmul::variant(dt, slice_bytes, acc),
            ));
        }
    }
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let odd = sram_matmul::variant_k(dt, slice_bytes, true, hidden | 1);
        v.push((Shader::SramMatmul, odd));
    }
    let mut hds = vec![8, 64];
    if hidden <= 256 && !hds.contains(&hidden) {
        hds.push(hidden);
    }
    for hd in hds {
        v.push((
            Shader::SramStep,
            sram_step::variant_sized(slice_bytes, sram_step::Dims::head(hd), &DType::ALL),
        ));
    }
    v
}

/// Every kernel variant SRAM mode runs for a model of `cfg` (weights in any
/// encoding) on chips whose slice is `slice_bytes`: the interpreter
/// (`sram_step`), whose workgroup memory is the weight tile plus its scratch
/// for the model's head size.
pub fn sram_kernels(
    slice_bytes: usize,
    cfg: &crate::model::LlamaConfig,
) -> Vec<(crate::gpu::Shader, crate::gpu::ShaderVariant)> {
    vec![(
        crate::gpu::Shader::SramStep,
        sram_step::variant_sized(
            slice_bytes,
            sram_step::Dims::of(cfg, slice_bytes),
            &DType::ALL,
        ),
    )]
}

/// Checks with naga that every SRAM-mode kernel for `cfg` fits a slice of
/// `slice_bytes`; the error names the kernel and both sizes.
pub fn check_sram_kernels(
    slice_bytes: usize,
    cfg: &crate::model::LlamaConfig,
) -> Result<(), String> {
    for (shader, v) in sram_kernels(slice_bytes, cfg) {
        let src = shader.source(&v);
        let bytes = crate::gpu::shader::workgroup_bytes(&src, &v)
            .map_err(|e| format!("{}: {e}", shader.name()))?;
        if bytes as usize > slice_bytes {
            return Err(format!(
                "SRAM kernel `{}` needs {bytes} bytes of workgroup memory, more than the chip's {slice_bytes}-byte slice",
                shader.name()
            ));
        }
    }
    Ok(())
}
