//! The SRAM-step interpreter (`shaders/sram_step.wgsl`): one dispatch runs a
//! whole set of pipeline steps; each workgroup is one task (a slice-sized
//! piece of one work item of one stage) read from a task table. This module
//! holds the table format (mirrored by the WGSL constants), the variant (the
//! slice minus the interpreter's scratch becomes the weight tile) and the
//! pipeline; `exec::sram::schedule` builds the tables.

use crate::gpu::{Gpu, GpuError, Shader, ShaderVariant};
use crate::model::DType;
use std::sync::Arc;

/// Header words of a task table.
pub const HDR: usize = 16;
/// Words of one task record: op, micro-batch, counter, dep offset, dep
/// count, sub-index, then [`PARAMS`] op parameters.
pub const REC: usize = 20;
pub const PARAMS: usize = REC - 6;
/// Words of one micro-batch record in the run buffer: n_tokens, pos0,
/// out_row0, n_out_rows, kv_base, sequence, first token id index, and 0 or
/// (several sequences, one row each) where the rows' (sequence, position)
/// pairs start.
pub const MB_WORDS: usize = 8;
/// Words per completion counter in the counter buffer (64 bytes: one cache
/// line each, so a poll of one counter does not contend with the writes to
/// another; `CW` in the WGSL).
pub const COUNTER_WORDS: usize = 16;
/// Activations one link task carries (6 parameter words each).
pub const LINK_COPIES: usize = 2;
/// Threads per task.
pub const WG: usize = 64;
/// Polls a waiting task may spend while no task of the dispatch finishes
/// before the step is declared stalled (a scheduling bug; never a hang).
pub const SPIN_LIMIT: u32 = 1 << 30;
/// Counter of the first node (0: the stall flag, 1: tasks finished, 2: the
/// ticket each workgroup takes its task index from).
pub const FIRST_NODE: usize = 3;

/// Header word indices.
pub mod hdr {
    pub const N_TASKS: usize = 0;
    pub const SPIN_LIMIT: usize = 1;
    pub const IDS_BASE: usize = 2;
    pub const ROPE_OFF: usize = 3;
    pub const N_HEADS: usize = 4;
    pub const N_KV_HEADS: usize = 5;
    pub const EPS: usize = 6;
    pub const SCALE: usize = 7;
    pub const PAIR_LAYOUT: usize = 8;
    /// Words of the images in the first image binding (the rest in the second).
    pub const IMG_SPLIT: usize = 9;
    /// Word offset in the run buffer of the per-row (sequence, position)
    /// pairs of a decode round whose micro-batches hold several sequences
    /// (a micro-batch record's last word points here, 0: one sequence).
    pub const ROWS_BASE: usize = 10;
    /// Resident mode (`RES_*` in the WGSL): offset of the per-workgroup
    /// task lists, tokens to decode, the arg-max's counter (one task).
    pub const RES_LISTS: usize = 12;
    pub const RES_TOKENS: usize = 13;
    pub const RES_TAIL: usize = 14;
    /// 1: workgroups take tasks by ticket (`C[2]`); 0: by workgroup id.
    pub const TASK_ORDER: usize = 15;
}

/// Task kinds (`OP_*` in the WGSL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Op {
    Nop = 0,
    Embed = 1,
    Norm = 2,
    Mat = 3,
    RopeQ = 4,
    KvWrite = 5,
    Attn = 6,
    Silu = 7,
    Link = 8,
    Argmax = 9,
    Topk = 10,
    CopyOut = 11,
    /// `out += b` for one slice-sized chunk of a bias vector.
    Bias = 20,
    /// RMSNorm of one head of q or k (all the step's tokens).
    HeadNorm = 21,
}

/// What sizes the interpreter's workgroup memory besides the weight tile:
/// the head size (attention's scratch) and the widest matmul input row a
/// decode step stages into workgroup memory (`x_stage` values, a multiple of
/// 32; 0: none, every product reads x from the activations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub head_dim: usize,
    pub x_stage: usize,
}

impl Dims {
    /// No x staging (the interpreter's smallest footprint).
    pub fn head(head_dim: usize) -> Dims {
        Dims {
            head_dim,
            x_stage: 0,
        }
    }

    /// For the products of `cfg` (inputs of `hidden`, `q_dim` and
    /// `intermediate` values), as [`Dims::fit`].
    pub fn of(cfg: &crate::model::LlamaConfig, slice_bytes: usize) -> Dims {
        let ks = [cfg.hidden_size, cfg.q_dim(), cfg.intermediate_size];
        Dims::fit(slice_bytes, cfg.head_dim, &ks)
    }

    /// For a model with matmul input widths `ks` on slices of `slice_bytes`:
    /// stages the widest input whose row (and block sums) still leaves a
    /// quarter of the slice for weights; a wider product reads x from the
    /// activations. (More, smaller weight tiles cost less than unstaged x on
    /// lavapipe: SmolLM2 on 16 KiB slices, 1536 staged values, 306 ms/token
    /// against 335 with only 576 staged, one thread.)
    pub fn fit(slice_bytes: usize, head_dim: usize, ks: &[usize]) -> Dims {
        let mut best = Dims::head(head_dim);
        for &k in ks {
            let d = Dims {
                head_dim,
                x_stage: k.div_ceil(32) * 32,
            };
            if d.x_stage > best.x_stage && 4 * tile_bytes(slice_bytes, d) >= slice_bytes {
                best = d;
            }
        }
        best
    }
}

/// Bytes of `var<workgroup>` the interpreter uses besides the weight tile
/// (scores, reductions, a head's q, the staged x row and its block sums, the
/// task ticket; naga counts each variable from a 16-byte boundary).
pub fn scratch_bytes(d: Dims) -> usize {
    let x4 = (d.x_stage / 4).max(1);
    let sums = (d.x_stage / 32).max(1);
    256 * 4
        + 64 * 4
        + 128 * 4
        + 64 * 16
        + d.head_dim.div_ceil(4) * 16
        + x4 * 16
        + sums.div_ceil(4) * 16
        + 16
}

/// Bytes of weight tile the slice leaves after the scratch (0 if none).
pub fn tile_bytes(slice_bytes: usize, d: Dims) -> usize {
    (slice_bytes / 4).saturating_sub(scratch_bytes(d) / 4) * 4
}

/// The run-time code of a weight encoding (its index in [`DType::ALL`]).
pub fn encoding(dt: DType) -> u32 {
    DType::ALL.iter().position(|&d| d == dt).unwrap_or(0) as u32
}

/// The smallest weight tile the interpreter is built with (bytes).
const MIN_TILE: usize = 16;

/// The interpreter for a slice of `slice_bytes`, scratch for `d` and
/// weights in `encodings`. Errors (naming both sizes) when the scratch
/// leaves no tile.
pub fn variant(slice_bytes: usize, d: Dims, encodings: &[DType]) -> Result<ShaderVariant, String> {
    let head_dim = d.head_dim;
    let v = variant_sized(slice_bytes, d, encodings);
    let bytes = crate::gpu::shader::workgroup_bytes(&Shader::SramStep.source(&v), &v)?;
    if bytes as usize > slice_bytes || head_dim > 256 {
        return Err(format!(
            "SRAM kernel `sram_step` needs {bytes} bytes of workgroup memory, more than the chip's {slice_bytes}-byte slice"
        ));
    }
    Ok(v)
}

/// [`variant`] without the check: the tile is what the slice leaves after
/// the scratch, at least 16 bytes (so naga can measure what a too-small
/// slice would need).
pub fn variant_sized(slice_bytes: usize, d: Dims, encodings: &[DType]) -> ShaderVariant {
    let head_dim = d.head_dim;
    let tile = tile_bytes(slice_bytes, d).max(MIN_TILE);
    let mut v = ShaderVariant::new("main")
        .define(format!("W_WORDS={}", tile / 4))
        .define(format!("XK4={}", d.x_stage / 4))
        .define(format!("XK4N={}", (d.x_stage / 4).max(1)))
        .define(format!("XSN={}", (d.x_stage / 32).max(1)))
        .define(format!("HD={head_dim}"))
        .define(format!("HD4={}", head_dim.div_ceil(4)));
    let mut seen: Vec<DType> = Vec::new();
    for &d in encodings {
        if !seen.contains(&d) {
            seen.push(d);
            v = v.define(format!("E_{d}"));
        }
    }
    v
}

/// Whole rows of `row_bytes` that fit a tile of `tile_bytes` (a tile that
/// starts inside a word, as Q8_0/Q4_0 rows can, needs one spare word).
pub fn rows_per_tile(row_bytes: usize, tile_bytes: usize) -> usize {
    crate::kernels::sram_matmul::rows_per_tile(row_bytes, tile_bytes)
}

/// The interpreter's pipeline.
pub fn pipeline(gpu: &Gpu, v: &ShaderVariant) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
    gpu.pipeline(Shader::SramStep, v)
}

/// The grid for `n` tasks: x-major rows of at most 65535 workgroups
/// (task index = y · x_size + x).
pub fn grid(n: usize) -> [u32; 3] {
    let x = n.clamp(1, 65535);
    [x as u32, n.div_ceil(x).max(1) as u32, 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn every_encoding_compiles_into_one_interpreter() {
        let d = Dims::fit(16384, 64, &[576, 1536]);
        assert_eq!(d.x_stage, 1536);
        assert_eq!(
            Dims::fit(8192, 64, &[576, 1536]).x_stage,
            576,
            "1536 would leave under a quarter"
        );
        let v = variant(16384, d, &DType::ALL).unwrap();
        let src = Shader::SramStep.source(&v);
        crate::gpu::shader::validate(&src).unwrap();
        let bytes = crate::gpu::shader::workgroup_bytes(&src, &v).unwrap();
        assert!(bytes <= 16384, "{bytes}");
        // With `@coherent` activations and KV (GPUs with the feature).
        let c = v.clone().define("COHERENT");
        let csrc = Shader::SramStep.source(&c);
        assert!(csrc.contains("@coherent"));
        crate::gpu::shader::validate(&csrc).unwrap();
        // With subgroup reductions (adapters with subgroups).
        let g = c.clone().define("SG");
        let gsrc = Shader::SramStep.source(&g);
        assert!(gsrc.contains("subgroupAdd"));
        crate::gpu::shader::validate(&gsrc).unwrap();
        // Odd head sizes too.
        for hd in [6, 8, 18, 256] {
            let v = variant(16384, Dims::head(hd), &[DType::F32]).unwrap();
            crate::gpu::shader::validate(&Shader::SramStep.source(&v)).unwrap();
        }
        let e = variant(2048, Dims::head(64), &[DType::F32]).unwrap_err();
        assert!(e.contains("2048-byte slice"), "{e}");
    }

    /// Runs a table of `n` NOP tasks, task i counting node i, with `deps[i]`
    /// = (node, target) pairs, tasks taken by ticket or by workgroup id;
    /// returns the counters (C[0] = stall flag, C[1] = tasks finished,
    /// C[2] = tickets taken, then the nodes).
    fn run_nops(deps: &[Vec<(u32, u32)>], limit: u32, ticket: bool) -> Option<Vec<u32>> {
        let gpu = gpu()?;
        let n = deps.len();
        let mut t = vec![0u32; HDR + n * REC];
        t[hdr::N_TASKS] = n as u32;
        t[hdr::SPIN_LIMIT] = limit;
        t[hdr::N_HEADS] = 1;
        t[hdr::N_KV_HEADS] = 1;
        t[hdr::TASK_ORDER] = u32::from(ticket);
        for (i, d) in deps.iter().enumerate() {
            let r = HDR + i * REC;
            t[r] = Op::Nop as u32;
            t[r + 2] = (FIRST_NODE + i) as u32;
            t[r + 3] = t.len() as u32;
            t[r + 4] = d.len() as u32;
            for &(c, v) in d {
                t.push(FIRST_NODE as u32 + c);
                t.push(v);
            }
        }
        let v = variant(16384, Dims::head(8), &[DType::F32]).unwrap();
        let pipe = pipeline(&gpu, &v).unwrap();
        let tb = gpu.upload("t", bytemuck::cast_slice(&t)).unwrap();
        let runb = gpu.upload("run", &[0u8; 64]).unwrap();
        let img = gpu.upload("img", &[0u8; 64]).unwrap();
        let a = gpu.storage_buffer("a", 64).unwrap();
        let kv = gpu.storage_buffer("kv", 64).unwrap();
        let c = gpu
            .storage_buffer("c", (4 * COUNTER_WORDS * (n + FIRST_NODE)) as u64)
            .unwrap();
        let r = gpu.storage_buffer("r", 64).unwrap();
        let op = crate::kernels::KernelOp::new(
            &gpu,
            "nops",
            crate::kernels::KernelClass::Link,
            pipe,
            &[&tb, &runb, &img, &a, &kv, &c, &r, &img],
            move |_| grid(n),
        );
        let step = gpu.uniform("step", &crate::kernels::Step::default());
        run(&gpu, &step, crate::kernels::Step::default(), &[&op]);
        let bytes = gpu
            .read_storage(&c, (4 * COUNTER_WORDS * (n + FIRST_NODE)) as u64)
            .expect("readback");
        let words: &[u32] = bytemuck::cast_slice(&bytes);
        Some(words.iter().step_by(COUNTER_WORDS).copied().collect())
    }

    #[test]
    fn tasks_wait_for_lower_ones_and_a_stall_raises_the_flag() {
        // A chain: each task waits for the one before it.
        let chain: Vec<Vec<(u32, u32)>> = (0..40)
            .map(|i| {
                if i == 0 {
                    vec![]
                } else {
                    vec![(i as u32 - 1, 1)]
                }
            })
            .collect();
        for ticket in [false, true] {
            let Some(c) = run_nops(&chain, SPIN_LIMIT, ticket) else {
                return;
            };
            assert_eq!(c[0], 0, "no stall");
            assert_eq!(c[1], 40);
            assert_eq!(c[2], if ticket { 40 } else { 0 }, "tickets taken");
            assert!(c[FIRST_NODE..].iter().all(|&x| x == 1), "{c:?}");
            // A task waiting for a count its node never reaches: flagged,
            // and the dispatch still ends (small spin limit).
            let bad = vec![vec![], vec![(0, 2)], vec![(1, 1)]];
            let c = run_nops(&bad, 1 << 12, ticket).unwrap();
            assert_ne!(c[0], 0, "stall flagged: {c:?}");
            assert_eq!(c[1], 3);
            assert_eq!(&c[FIRST_NODE..], &[1, 1, 1]);
        }
    }
}
