//! The placement compiler: a model onto a cluster of SRAM-only chips.
//!
//! # What is placed
//!
//! * **Weights**, as *tiles*. A matrix `[rows, cols]` (PyTorch orientation:
//!   one row per output feature) is cut into tiles of `tile_rows` whole rows ×
//!   `tile_cols` columns, each at most one slice (`ChipSpec::slice_bytes`): the
//!   workgroup that multiplies a tile holds it in its shared memory. A tensor
//!   whose rows fit a slice keeps whole rows (`tile_cols = cols`); otherwise its
//!   columns are cut into blocks (for block-quantized formats on multiples of
//!   the 32-value block) and the partial sums of the blocks are added up. The
//!   cut that wastes the least of each slice wins. Norm vectors are `[1, n]`
//!   and are cut the same way (they are applied element-wise).
//! * **KV cache**, per layer: `context_len × kv_dim × 2 × kv_dtype_bytes ×
//!   batch` bytes, cut into *cells* of (kv heads × positions): the K tile and
//!   the V tile of a cell together fit one slice — what one attention
//!   workgroup reads — and always share a chip, so attention over a cell needs
//!   nothing from elsewhere. One position of a head holds all `batch`
//!   sequences.
//! * **Activation scratch**, per chip: the largest set of live activation
//!   vectors at any point of the chip's part of the forward pass, × 4 bytes ×
//!   `microbatch_tokens`, plus a score buffer where the chip runs attention.
//!
//! # How
//!
//! The forward pass is one sequence of operations (embed → per layer:
//! attn_norm, wq, wk, wv, attention (KV), wo, ffn_norm, w_gate, w_up, w_down →
//! final_norm → lm_head), each with its tiles in order (row groups, then column
//! blocks). The compiler walks that sequence once and fills chip 0, then chip
//! 1, ... in order, so pipeline stages are consecutive chips and layers land
//! on consecutive chips. Within a chip, tiles go to slices by a bump
//! allocator that never lets a tile straddle a slice boundary; an op that is a
//! single tile (a norm vector, a small matrix) may instead fill a gap an
//! earlier tile left in a slice. The scratch buffer follows the last tile.
//! When a tile does not fit what is left of a chip, it is cut there: a
//! matrix's row group by rows (across all its column blocks, so every chip
//! holds whole rows of a matrix — the only exception is a single row larger
//! than a chip), a norm vector by column blocks, a KV cell by positions. The
//! part that fits stays, the rest opens the next chip, each part a
//! [`Placement`] of its own. Chips are therefore filled to within a slice.
//!
//! A layer, or a single tensor, may therefore span several chips. The executor
//! this plan describes runs the chips one after another for each token and
//! passes the *live set* of activations across each boundary (the residual
//! stream `x`, and inside a layer whatever is still needed: normed input,
//! q/k/v, partial outputs, online-softmax state, partial logits). Those
//! vectors — listed per boundary in [`ChipPlan::carry_out`] — are the link
//! traffic, at 4 bytes a value; a tensor split across chips costs exactly the
//! partial result it carries (its reduction / gather happens on the chip that
//! receives it).
//!
//! # Tied embeddings
//!
//! A tied embedding is needed twice: as a row gather for the input token and
//! as the lm_head matrix. sramlm places it **once, at the tail**, as the
//! lm_head (after final_norm). The gather for the next token happens there
//! too: the sampled token goes to the chip holding its row, and the row (the
//! next token's `x`, `hidden_size` f32) travels over the loopback link to chip
//! 0. So a tied model pays no extra SRAM, and `4 + 4·hidden_size` loopback
//! bytes per token instead of the 4 bytes of a token id. Untied models place
//! `embed` on the first chips and `lm_head` on the last ones.

use super::program::{Program, StagePlan};
use super::{ChipSpec, PlacementError};
use crate::graph::{self, Act};
use crate::model::{DType, LayerTensor, LlamaConfig, ModelWeights, WeightName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Encodings the placement compiler counts bytes for: sramlm's loadable
/// [`DType`]s plus `Int8`, plain 1 byte per value (per-row scales, ~2 bytes
/// per row, are not counted) for studying hardware that stores int8 weights.
#[allow(non_camel_case_types)] // ggml's names (Q4_K, …)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Int8,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl From<DType> for WeightFormat {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => WeightFormat::F32,
            DType::F16 => WeightFormat::F16,
            DType::BF16 => WeightFormat::BF16,
            DType::Q8_0 => WeightFormat::Q8_0,
            DType::Q4_0 => WeightFormat::Q4_0,
            DType::Q4_1 => WeightFormat::Q4_1,
            DType::Q5_0 => WeightFormat::Q5_0,
            DType::Q5_1 => WeightFormat::Q5_1,
            DType::Q2_K => WeightFormat::Q2_K,
            DType::Q3_K => WeightFormat::Q3_K,
            DType::Q4_K => WeightFormat::Q4_K,
            DType::Q5_K => WeightFormat::Q5_K,
            DType::Q6_K => WeightFormat::Q6_K,
        }
    }
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 14] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Int8,
        WeightFormat::Q5_0,
        WeightFormat::Q5_1,
        WeightFormat::Q2_K,
        WeightFormat::Q3_K,
        WeightFormat::Q4_K,
        WeightFormat::Q5_K,
        WeightFormat::Q6_K,
    ];
    /// Values per block (a tile's columns are a multiple of this): the
    /// loadable types' own block length (256 for the K-quant super-blocks).
    pub fn block_len(self) -> usize {
        self.dtype().map_or(1, DType::block_len)
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.dtype().map_or(1, DType::block_bytes)
    }
    /// Bytes of `n` consecutive values of one row (`None` unless `n` is a
    /// multiple of the block length).
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "F32",
            WeightFormat::F16 => "F16",
            WeightFormat::BF16 => "BF16",
            WeightFormat::Q8_0 => "Q8_0",
            WeightFormat::Q4_0 => "Q4_0",
            WeightFormat::Q4_1 => "Q4_1",
            WeightFormat::Int8 => "INT8",
            WeightFormat::Q5_0 => "Q5_0",
            WeightFormat::Q5_1 => "Q5_1",
            WeightFormat::Q2_K => "Q2_K",
            WeightFormat::Q3_K => "Q3_K",
            WeightFormat::Q4_K => "Q4_K",
            WeightFormat::Q5_K => "Q5_K",
            WeightFormat::Q6_K => "Q6_K",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }
    /// The loadable dtype, if this is one.
    pub fn dtype(self) -> Option<DType> {
        Some(match self {
            WeightFormat::F32 => DType::F32,
            WeightFormat::F16 => DType::F16,
            WeightFormat::BF16 => DType::BF16,
            WeightFormat::Q8_0 => DType::Q8_0,
            WeightFormat::Q4_0 => DType::Q4_0,
            WeightFormat::Q4_1 => DType::Q4_1,
            WeightFormat::Q5_0 => DType::Q5_0,
            WeightFormat::Q5_1 => DType::Q5_1,
            WeightFormat::Q2_K => DType::Q2_K,
            WeightFormat::Q3_K => DType::Q3_K,
            WeightFormat::Q4_K => DType::Q4_K,
            WeightFormat::Q5_K => DType::Q5_K,
            WeightFormat::Q6_K => DType::Q6_K,
            WeightFormat::Int8 => return None,
        })
    }
}

/// One weight tensor as the compiler sees it: name, encoding, shape, bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: WeightName,
    pub dtype: WeightFormat,
    /// `[rows, cols]`, or `[n]` for a norm vector.
    pub shape: Vec<usize>,
    pub bytes: usize,
}

impl TensorInfo {
    /// Computes `bytes` from the shape; errors if the row length does not fill
    /// whole blocks.
    pub fn new(
        name: WeightName,
        dtype: impl Into<WeightFormat>,
        shape: Vec<usize>,
    ) -> Result<Self, PlacementError> {
        let dtype = dtype.into();
        let cols = *shape.last().unwrap_or(&0);
        let rows: usize = shape[..shape.len().saturating_sub(1)].iter().product();
        let bytes = dtype
            .bytes_for(cols)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| {
                PlacementError::BadTensors(format!(
                    "{name}: row length {cols} is not a multiple of the {} block length {}",
                    dtype.name(),
                    dtype.block_len()
                ))
            })?;
        Ok(TensorInfo {
            name,
            dtype,
            shape,
            bytes,
        })
    }

    /// The tensors of loaded weights, with their stored encodings and sizes.
    pub fn from_weights(w: &ModelWeights) -> Vec<TensorInfo> {
        let mut names = vec![WeightName::Embed];
        for i in 0..w.layers.len() {
            names.extend(LayerTensor::ALL.iter().map(|&t| WeightName::Layer(i, t)));
            // Biases, q/k norms and post-norms where the weights have them.
            names.extend(LayerTensor::PROJECTIONS.map(|t| WeightName::Bias(i, t)));
            names.extend(LayerTensor::HEAD_NORMED.map(|t| WeightName::HeadNorm(i, t)));
            names.extend(LayerTensor::POST_NORMED.map(|t| WeightName::PostNorm(i, t)));
        }
        names.push(WeightName::FinalNorm);
        if w.lm_head.is_some() {
            names.push(WeightName::LmHead);
        }
        names
            .into_iter()
            .filter_map(|n| {
                w.get(n).map(|t| TensorInfo {
                    name: n,
                    dtype: t.dtype.into(),
                    shape: t.shape.clone(),
                    bytes: t.byte_len(),
                })
            })
            .collect()
    }

    /// The tensors a config implies, without weights: every matrix (embedding
    /// and lm_head included) in `matrices`, the norm vectors in `norms`.
    pub fn from_config(
        cfg: &LlamaConfig,
        matrices: impl Into<WeightFormat>,
        norms: impl Into<WeightFormat>,
    ) -> Result<Vec<TensorInfo>, PlacementError> {
        let (m, n) = (matrices.into(), norms.into());
        Self::from_config_with(cfg, |w| if w.shape_is_vector() { n } else { m })
    }

    /// The tensors a config implies, each in the encoding `format_of` gives
    /// (e.g. Q4_1 matrices with a Q8_0 embedding, as llama.cpp writes them).
    pub fn from_config_with(
        cfg: &LlamaConfig,
        format_of: impl Fn(WeightName) -> WeightFormat,
    ) -> Result<Vec<TensorInfo>, PlacementError> {
        WeightName::all(cfg)
            .into_iter()
            .map(|w| TensorInfo::new(w, format_of(w), w.shape(cfg)))
            .collect()
    }

    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len().saturating_sub(1)]
            .iter()
            .product()
    }
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&0)
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

trait VectorShape {
    fn shape_is_vector(self) -> bool;
}
impl VectorShape for WeightName {
    fn shape_is_vector(self) -> bool {
        matches!(
            self,
            WeightName::FinalNorm
                | WeightName::Layer(_, LayerTensor::AttnNorm)
                | WeightName::Layer(_, LayerTensor::FfnNorm)
        )
    }
}

/// Prompt tokens per pipeline micro-batch unless told otherwise: the one
/// default of `plan`, `generate --mode sram` and `bench` (it sizes each
/// chip's activation scratch, so it changes the chip count).
pub const DEFAULT_MICROBATCH: usize = 16;

/// KV-cache positions when neither `--ctx` nor a run length says: the
/// model's window, at most this (`plan` and `generate` alike).
pub const DEFAULT_CONTEXT: usize = 4096;

/// What to place besides the weights, and how many chips are allowed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaceOptions {
    /// Fail with [`PlacementError::TooFewChips`] beyond this many chips.
    pub max_chips: Option<usize>,
    /// KV cache positions per sequence.
    pub context_len: usize,
    /// Bytes per KV value (4 for f32, 2 for f16).
    pub kv_dtype_bytes: usize,
    /// Sequences whose KV cache is resident.
    pub batch: usize,
    /// Tokens that pass through a chip together (sizes the scratch).
    pub microbatch_tokens: usize,
}

impl PlaceOptions {
    /// The full context of `cfg`, f32 KV, one sequence, one token at a time.
    pub fn for_config(cfg: &LlamaConfig) -> Self {
        PlaceOptions {
            max_chips: None,
            context_len: cfg.max_position_embeddings,
            kv_dtype_bytes: 4,
            batch: 1,
            microbatch_tokens: 1,
        }
    }
}

/// Slices `[first, first + count)` of a chip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRange {
    pub first: usize,
    pub count: usize,
}

/// A rectangle of one weight tensor on one chip. Its tiles (row groups of
/// `tile_rows`, each cut into column blocks of `tile_cols`, row-major) are
/// laid out from `sram_offset` on; [`Placement::tiles`] lists them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Canonical name, e.g. `layers.3.wq` (see `WeightName`'s `Display`).
    pub weight: String,
    /// Encoding name ([`WeightFormat::name`]).
    pub dtype: String,
    pub row_start: usize,
    pub row_end: usize,
    pub col_start: usize,
    pub col_end: usize,
    pub bytes: usize,
    /// Weight values in the rectangle.
    pub params: usize,
    pub tile_rows: usize,
    pub tile_cols: usize,
    /// Byte offset of the first tile in the chip's SRAM.
    pub sram_offset: usize,
    pub slices: SliceRange,
}

/// A block of one layer's KV cache on one chip: heads × positions, K and V.
/// Cells (`tile_heads` × `tile_positions`) are laid out head-block-major, the
/// K tile of a cell directly followed by its V tile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KvPlacement {
    pub layer: usize,
    pub head_start: usize,
    pub head_end: usize,
    pub pos_start: usize,
    pub pos_end: usize,
    /// K and V together.
    pub bytes: usize,
    pub tile_heads: usize,
    pub tile_positions: usize,
    /// Bytes of one position of one head for K (or V): `head_dim ×
    /// kv_dtype_bytes × batch`.
    pub bytes_per_position: usize,
    pub sram_offset: usize,
    pub slices: SliceRange,
}

/// Which part of a cell a tile is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TilePart {
    Weight,
    K,
    V,
}

/// One tile: a rectangle (rows × cols of a weight, heads × positions of a KV
/// cache) in one slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tile {
    pub part: TilePart,
    pub row_start: usize,
    pub row_end: usize,
    pub col_start: usize,
    pub col_end: usize,
    pub bytes: usize,
    pub slice: usize,
    pub offset_in_slice: usize,
}

/// A vector live across a chip boundary; every value is 4 bytes (f32, or the
/// u32 token id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    pub name: String,
    pub values: usize,
}

/// One chip of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChipPlan {
    pub index: usize,
    /// Layers with any tensor or KV block here (ascending, contiguous).
    pub stage_layers: Vec<usize>,
    /// The operations this chip runs (whole or in part), in forward order,
    /// e.g. `layers.3.wq`, `layers.3.attention`, `lm_head`.
    pub ops: Vec<String>,
    pub tensors: Vec<Placement>,
    pub kv: Vec<KvPlacement>,
    /// Weight values here (a multiply-add each per token).
    pub params: usize,
    pub weight_bytes: usize,
    pub kv_bytes: usize,
    pub scratch_bytes: usize,
    /// The scratch buffer's offset in SRAM (after the last tile).
    pub scratch_offset: usize,
    /// Weights + KV + scratch.
    pub sram_used: usize,
    /// End of the scratch buffer: `sram_used` plus slice-boundary padding.
    pub sram_high_water: usize,
    pub sram_capacity: usize,
    /// Slices touched by tiles or scratch.
    pub slices_used: usize,
    pub slices_total: usize,
    pub link_bytes_in_per_token: usize,
    pub link_bytes_out_per_token: usize,
    /// What arrives from the previous chip (chip 0: the loopback).
    pub carry_in: Vec<Carried>,
    /// What leaves for the next chip (last chip: the loopback to chip 0).
    pub carry_out: Vec<Carried>,
}

/// One tensor of the model, as placed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSummary {
    pub weight: String,
    pub dtype: String,
    pub rows: usize,
    pub cols: usize,
    pub bytes: usize,
}

impl TensorSummary {
    pub fn of(t: &TensorInfo) -> TensorSummary {
        TensorSummary {
            weight: t.name.to_string(),
            dtype: t.dtype.name().into(),
            rows: t.rows(),
            cols: t.cols(),
            bytes: t.bytes,
        }
    }
}

/// The model side of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// How a tied embedding was placed (see the module docs).
    pub embedding_placement: String,
    pub params: usize,
    pub weight_bytes: usize,
    pub kv_bytes: usize,
    pub context_len: usize,
    pub kv_dtype_bytes: usize,
    pub batch: usize,
    pub microbatch_tokens: usize,
    pub tensors: Vec<TensorSummary>,
}

/// Plan-wide sums.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub chips_used: usize,
    pub max_chips: Option<usize>,
    pub weight_bytes: usize,
    pub kv_bytes: usize,
    pub scratch_bytes: usize,
    pub sram_used_total: usize,
    pub sram_used_max: usize,
    pub sram_used_mean: f64,
    /// `sram_used_total / (chips_used × sram_bytes)`.
    pub sram_utilization: f64,
    /// Forward boundaries plus the loopback.
    pub link_bytes_per_token: usize,
    pub loopback_bytes_per_token: usize,
    pub link_transfers_per_token: usize,
    /// Chip-to-chip hops on the forward path (`chips_used - 1`).
    pub hops: usize,
    /// Pipeline stages of the program (`Plan::stages`); 0 when not runnable.
    #[serde(default)]
    pub pipeline_stages: usize,
}

/// A whole placement: which chip and slice holds every byte.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub spec: ChipSpec,
    pub model: ModelSummary,
    pub chips: Vec<ChipPlan>,
    pub totals: Totals,
    /// The program: each pipeline stage's work on its chip and what the link
    /// after it carries (`chip::program`); what SRAM mode runs.
    #[serde(default)]
    pub stages: Vec<StagePlan>,
    /// Why SRAM mode cannot run this plan (e.g. a row cut by columns), if so.
    #[serde(default)]
    pub program_error: Option<String>,
    /// Tensor-parallel degree (`--tp`): each pipeline stage is a group of
    /// this many chips (`chip::tp`); 1 = every chip on the serial path.
    #[serde(default = "one")]
    pub tp: usize,
}

fn one() -> usize {
    1
}

// ---------------------------------------------------------------------------
// Tiling

/// How a `[rows, cols]` array is cut into tiles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Tiling {
    rows: usize,
    cols: usize,
    pub(super) tile_rows: usize,
    pub(super) tile_cols: usize,
    /// Columns per quantum (block) and bytes per quantum.
    q_len: usize,
    q_bytes: usize,
}

impl Tiling {
    fn n_rg(&self) -> usize {
        self.rows.div_ceil(self.tile_rows)
    }
    fn n_cb(&self) -> usize {
        self.cols.div_ceil(self.tile_cols)
    }
    fn rg_range(&self, rg: usize) -> (usize, usize) {
        let a = rg * self.tile_rows;
        (a, (a + self.tile_rows).min(self.rows))
    }
    fn cb_range(&self, cb: usize) -> (usize, usize) {
        let a = cb * self.tile_cols;
        (a, (a + self.tile_cols).min(self.cols))
    }
    fn rect_bytes(&self, rows: usize, cols: usize) -> usize {
        rows * (cols / self.q_len) * self.q_bytes
    }
    fn tile_bytes(&self, rg: usize, cb: usize) -> usize {
        let (r0, r1) = self.rg_range(rg);
        let (c0, c1) = self.cb_range(cb);
        self.rect_bytes(r1 - r0, c1 - c0)
    }
}

/// Picks the tiling of a `[rows, cols]` array whose columns come in quanta of
/// `q_len` values / `q_bytes` bytes, so that every tile fits `slice` bytes and
/// the fewest slice bytes are wasted (fewer column blocks win near-ties).
/// `Err(q_bytes)` when not even one quantum fits a slice.
pub(super) fn choose_tiling(
    rows: usize,
    cols: usize,
    q_len: usize,
    q_bytes: usize,
    slice: usize,
) -> Result<Tiling, usize> {
    if q_bytes > slice {
        return Err(q_bytes);
    }
    let quanta = cols / q_len;
    let total = rows * quanta * q_bytes;
    let nb_min = (quanta * q_bytes).div_ceil(slice).max(1);
    let nb_max = quanta.min(nb_min.saturating_mul(64)).max(nb_min);
    let mut best: Option<(f64, Tiling)> = None;
    let mut last_k = usize::MAX;
    for nb in nb_min..=nb_max {
        let k = quanta.div_ceil(nb);
        if k == last_k || k * q_bytes > slice {
            continue;
        }
        last_k = k;
        let t = (slice / (k * q_bytes)).min(rows).max(1);
        let n_rg = rows.div_ceil(t);
        let t = rows.div_ceil(n_rg);
        let tiles = n_rg * quanta.div_ceil(k);
        let eff = total as f64 / (tiles * slice) as f64;
        let tiling = Tiling {
            rows,
            cols,
            tile_rows: t,
            tile_cols: k * q_len,
            q_len,
            q_bytes,
        };
        if best.as_ref().is_none_or(|(e, _)| eff > *e + 0.01) {
            best = Some((eff, tiling));
        }
    }
    Ok(best.expect("nb_min always yields a tiling").1)
}

/// Lists the tiles of the rectangle `[r0, r1) × [c0, c1)` of `tiling`, laid
/// out from `sram_offset` by the compiler's bump rule.
#[allow(clippy::too_many_arguments)]
fn replay_tiles(
    tiling: &Tiling,
    r: (usize, usize),
    c: (usize, usize),
    parts: &[TilePart],
    sram_offset: usize,
    slice: usize,
) -> Vec<Tile> {
    let mut out = Vec::new();
    let (mut s, mut off) = (sram_offset / slice, sram_offset % slice);
    let mut first = true;
    let mut r0 = r.0;
    while r0 < r.1 {
        let r1 = (r0 + tiling.tile_rows).min(r.1);
        let mut c0 = c.0;
        while c0 < c.1 {
            let c1 = (c0 + tiling.tile_cols).min(c.1);
            let b = tiling.rect_bytes(r1 - r0, c1 - c0);
            for &part in parts {
                if !first && off + b > slice {
                    s += 1;
                    off = 0;
                }
                first = false;
                out.push(Tile {
                    part,
                    row_start: r0,
                    row_end: r1,
                    col_start: c0,
                    col_end: c1,
                    bytes: b,
                    slice: s,
                    offset_in_slice: off,
                });
                off += b;
            }
            c0 = c1;
        }
        r0 = r1;
    }
    out
}

impl Placement {
    /// Every tile of this rectangle with its slice and offset.
    pub fn tiles(&self, slice_bytes: usize) -> Vec<Tile> {
        let f = WeightFormat::from_name(&self.dtype).unwrap_or(WeightFormat::F32);
        let tiling = Tiling {
            rows: self.row_end,
            cols: self.col_end,
            tile_rows: self.tile_rows,
            tile_cols: self.tile_cols,
            q_len: f.block_len(),
            q_bytes: f.block_bytes(),
        };
        replay_tiles(
            &tiling,
            (self.row_start, self.row_end),
            (self.col_start, self.col_end),
            &[TilePart::Weight],
            self.sram_offset,
            slice_bytes,
        )
    }
}

impl KvPlacement {
    /// Every K and V tile of this block with its slice and offset (rows are
    /// heads, columns positions).
    pub fn tiles(&self, slice_bytes: usize) -> Vec<Tile> {
        let tiling = Tiling {
            rows: self.head_end,
            cols: self.pos_end,
            tile_rows: self.tile_heads,
            tile_cols: self.tile_positions,
            q_len: 1,
            q_bytes: self.bytes_per_position,
        };
        replay_tiles(
            &tiling,
            (self.head_start, self.head_end),
            (self.pos_start, self.pos_end),
            &[TilePart::K, TilePart::V],
            self.sram_offset,
            slice_bytes,
        )
    }
}

// ---------------------------------------------------------------------------
// The forward pass as a sequence of operations, and its live sets.

#[derive(Clone, Copy, Debug)]
struct Dims {
    heads: usize,
    kv_heads: usize,
}

/// A live set of the graph as carried vectors (4 bytes a value).
pub(super) fn materialize(
    live: &std::collections::BTreeSet<Act>,
    cfg: &LlamaConfig,
) -> Vec<Carried> {
    live.iter()
        .map(|a| Carried {
            name: a.name().to_string(),
            values: a.width(cfg),
        })
        .collect()
}

pub(super) fn values(c: &[Carried]) -> usize {
    c.iter().map(|c| c.values).sum()
}

#[derive(Clone, Copy, Debug)]
enum Source {
    /// Index into the ordered tensor list.
    Weight(usize),
    /// KV cache of this layer.
    Kv(usize),
}

/// A node of the graph the compiler places (a weight at its last use, or a
/// layer's KV cache).
#[derive(Clone, Debug)]
struct Op {
    /// Index into `graph::forward`.
    node: usize,
    layer: Option<usize>,
    source: Source,
    tiling: Tiling,
    label: String,
}

// ---------------------------------------------------------------------------
// Rectangle tracking: the cells of one source on one chip, as rectangles.

#[derive(Clone, Copy, Debug)]
struct Rect {
    rg0: usize,
    rg1: usize,
    cb0: usize,
    cb1: usize,
    bytes: usize,
    offset: usize,
    last_slice: usize,
}

#[derive(Default, Debug)]
struct RectState {
    /// Finished or growing full-width rectangle (or a partial head row group).
    r: Option<Rect>,
    /// The current row group, while incomplete.
    p: Option<Rect>,
    done: Vec<Rect>,
}

impl RectState {
    fn add(&mut self, rg: usize, cb: usize, n_cb: usize, bytes: usize, offset: usize, last: usize) {
        match &mut self.p {
            Some(p) if p.rg1 == rg && p.cb1 + 1 == cb => {
                p.cb1 = cb;
                p.bytes += bytes;
                p.last_slice = last;
            }
            _ => {
                if let Some(p) = self.p.take() {
                    self.done.push(p);
                }
                self.p = Some(Rect {
                    rg0: rg,
                    rg1: rg,
                    cb0: cb,
                    cb1: cb,
                    bytes,
                    offset,
                    last_slice: last,
                });
            }
        }
        let p = self.p.unwrap();
        if p.cb1 + 1 == n_cb {
            self.p = None;
            match &mut self.r {
                Some(r) if r.cb0 == 0 && r.cb1 + 1 == n_cb && p.cb0 == 0 && r.rg1 + 1 == p.rg0 => {
                    r.rg1 = p.rg1;
                    r.bytes += p.bytes;
                    r.last_slice = p.last_slice;
                }
                _ => {
                    if let Some(r) = self.r.replace(p) {
                        self.done.push(r);
                    }
                }
            }
        }
    }
    fn finish(mut self) -> Vec<Rect> {
        self.done.extend(self.r.take());
        self.done.extend(self.p.take());
        self.done.sort_by_key(|r| r.offset);
        self.done
    }
}

// ---------------------------------------------------------------------------
// The compiler.

struct ChipState {
    slice: usize,
    off: usize,
    /// Bytes used in each slice before `slice` (gaps there can be backfilled).
    fill: Vec<usize>,
    any: bool,
    live_max: usize,
    score_values: usize,
    carry_in: Vec<Carried>,
    layers: BTreeSet<usize>,
    ops: Vec<String>,
    placements: Vec<Placement>,
    kv: Vec<KvPlacement>,
    params: usize,
    weight_bytes: usize,
    kv_bytes: usize,
    /// Op index whose rectangles are being tracked.
    rect_op: Option<usize>,
    rects: RectState,
}

impl ChipState {
    fn new(carry_in: Vec<Carried>) -> Self {
        ChipState {
            slice: 0,
            off: 0,
            fill: Vec::new(),
            any: false,
            live_max: values(&carry_in),
            score_values: 0,
            carry_in,
            layers: BTreeSet::new(),
            ops: Vec::new(),
            placements: Vec::new(),
            kv: Vec::new(),
            params: 0,
            weight_bytes: 0,
            kv_bytes: 0,
            rect_op: None,
            rects: RectState::default(),
        }
    }
}

struct Compiler<'a> {
    spec: &'a ChipSpec,
    opts: &'a PlaceOptions,
    dims: Dims,
    ops: Vec<Op>,
    /// Per graph node: live while it runs / after it (`graph::live_during`, `live_out`).
    during: Vec<Vec<Carried>>,
    after: Vec<Vec<Carried>>,
    tensors: Vec<TensorInfo>,
    chips: Vec<ChipPlan>,
    cur: ChipState,
    point: Vec<Carried>,
}

pub(super) fn align16(x: usize) -> usize {
    x.div_ceil(16) * 16
}

impl Compiler<'_> {
    fn scratch_bytes(&self, live: usize, score: usize) -> usize {
        align16((live + score) * 4 * self.opts.microbatch_tokens)
    }

    /// Where `tiles` would go from `(slice, off)`: the end position, or `None`
    /// past the chip's slices.
    fn simulate(
        &self,
        mut slice: usize,
        mut off: usize,
        tiles: &[usize],
    ) -> Option<(usize, usize)> {
        let s = self.spec.slice_bytes;
        for &b in tiles {
            if off + b > s {
                slice += 1;
                off = 0;
            }
            off += b;
        }
        if slice >= self.spec.slices_per_chip() {
            return None;
        }
        Some((slice, off))
    }

    fn fits(&self, st: &ChipState, tiles: &[usize], live: usize, score: usize) -> bool {
        match self.simulate(st.slice, st.off, tiles) {
            None => false,
            Some((s, o)) => {
                let end = align16(s * self.spec.slice_bytes + o);
                end + self.scratch_bytes(live.max(st.live_max), score.max(st.score_values))
                    <= self.spec.sram_bytes
            }
        }
    }

    fn flush_rects(&mut self) {
        let Some(oi) = self.cur.rect_op.take() else {
            return;
        };
        let rects = std::mem::take(&mut self.cur.rects).finish();
        let op = &self.ops[oi];
        let t = op.tiling;
        let s = self.spec.slice_bytes;
        for r in rects {
            let (row_start, _) = t.rg_range(r.rg0);
            let (_, row_end) = t.rg_range(r.rg1);
            let (col_start, _) = t.cb_range(r.cb0);
            let (_, col_end) = t.cb_range(r.cb1);
            let slices = SliceRange {
                first: r.offset / s,
                count: r.last_slice + 1 - r.offset / s,
            };
            match op.source {
                Source::Weight(ti) => {
                    let info = &self.tensors[ti];
                    self.cur.placements.push(Placement {
                        weight: info.name.to_string(),
                        dtype: info.dtype.name().to_string(),
                        row_start,
                        row_end,
                        col_start,
                        col_end,
                        bytes: r.bytes,
                        params: (row_end - row_start) * (col_end - col_start),
                        tile_rows: t.tile_rows,
                        tile_cols: t.tile_cols,
                        sram_offset: r.offset,
                        slices,
                    });
                }
                Source::Kv(layer) => self.cur.kv.push(KvPlacement {
                    layer,
                    head_start: row_start,
                    head_end: row_end,
                    pos_start: col_start,
                    pos_end: col_end,
                    bytes: r.bytes,
                    tile_heads: t.tile_rows,
                    tile_positions: t.tile_cols,
                    bytes_per_position: t.q_bytes,
                    sram_offset: r.offset,
                    slices,
                }),
            }
        }
    }

    fn finish_chip(&mut self, carry_out: Vec<Carried>) {
        self.flush_rects();
        let st = std::mem::replace(&mut self.cur, ChipState::new(carry_out.clone()));
        let s = self.spec.slice_bytes;
        let live = st.live_max.max(values(&carry_out));
        let scratch_bytes = self.scratch_bytes(live, st.score_values);
        let scratch_offset = align16(st.slice * s + st.off);
        let high = scratch_offset + scratch_bytes;
        self.chips.push(ChipPlan {
            index: self.chips.len(),
            stage_layers: st.layers.into_iter().collect(),
            ops: st.ops,
            tensors: st.placements,
            kv: st.kv,
            params: st.params,
            weight_bytes: st.weight_bytes,
            kv_bytes: st.kv_bytes,
            scratch_bytes,
            scratch_offset,
            sram_used: st.weight_bytes + st.kv_bytes + scratch_bytes,
            sram_high_water: high,
            sram_capacity: self.spec.sram_bytes,
            slices_used: high.div_ceil(s).min(self.spec.slices_per_chip()),
            slices_total: self.spec.slices_per_chip(),
            link_bytes_in_per_token: 4 * values(&st.carry_in),
            link_bytes_out_per_token: 4 * values(&carry_out),
            carry_in: st.carry_in,
            carry_out,
        });
    }

    fn new_chip(&mut self) -> Result<(), PlacementError> {
        if self.chips.len() + 1 >= MAX_PLACED_CHIPS {
            return Err(PlacementError::InvalidOptions(format!(
                "the placement needs more than {MAX_PLACED_CHIPS} `{}` chips, the most sramlm places: lower --ctx or --batch, or use a larger chip",
                self.spec.name
            )));
        }
        let carry = self.point.clone();
        self.finish_chip(carry);
        Ok(())
    }

    /// Allocates `tiles` on the current chip; returns the offset of the first.
    fn alloc(&mut self, tiles: &[usize]) -> usize {
        let s = self.spec.slice_bytes;
        let mut first = None;
        for &b in tiles {
            if self.cur.off + b > s {
                self.cur.fill.push(self.cur.off);
                self.cur.slice += 1;
                self.cur.off = 0;
            }
            first.get_or_insert(self.cur.slice * s + self.cur.off);
            self.cur.off += b;
        }
        first.expect("at least one tile")
    }

    /// An earlier slice of the current chip with a gap of `bytes`, if the
    /// chip's scratch still fits with `live` / `score` values.
    fn backfill_slot(&self, bytes: usize, live: usize, score: usize) -> Option<usize> {
        let st = &self.cur;
        let s = self.spec.slice_bytes;
        let end = align16(st.slice * s + st.off);
        let scratch = self.scratch_bytes(live.max(st.live_max), score.max(st.score_values));
        if end + scratch > self.spec.sram_bytes {
            return None;
        }
        st.fill.iter().position(|&f| f + bytes <= s)
    }

    /// Bookkeeping for `rows × cols` of op `oi` (`bytes` in all) now on the
    /// current chip.
    fn account(&mut self, oi: usize, rows: usize, cols: usize, bytes: usize) {
        let op = &self.ops[oi];
        let (node, layer, source) = (op.node, op.layer, op.source);
        if self.cur.ops.last() != Some(&op.label) {
            self.cur.ops.push(op.label.clone());
        }
        let score = (self.dims.heads / self.dims.kv_heads.max(1)) * rows * cols;
        let within = self.during[node].clone();
        let cur = &mut self.cur;
        cur.any = true;
        cur.live_max = cur.live_max.max(values(&within));
        if let Some(l) = layer {
            cur.layers.insert(l);
        }
        match source {
            Source::Weight(_) => {
                cur.params += rows * cols;
                cur.weight_bytes += bytes;
            }
            Source::Kv(_) => {
                cur.kv_bytes += bytes;
                cur.score_values = cur.score_values.max(score);
            }
        }
        self.point = within;
    }

    /// Places one grid cell of op `oi` on the current chip (the caller
    /// checked it fits); consecutive cells merge into rectangles.
    fn put_cell(&mut self, oi: usize, rg: usize, cb: usize, tiles: &[usize], slot: Option<usize>) {
        if self.cur.rect_op != Some(oi) {
            self.flush_rects();
            self.cur.rect_op = Some(oi);
        }
        let tiling = self.ops[oi].tiling;
        let bytes: usize = tiles.iter().sum();
        let (offset, last) = match slot {
            Some(sl) => {
                let off = sl * self.spec.slice_bytes + self.cur.fill[sl];
                self.cur.fill[sl] += bytes;
                (off, sl)
            }
            None => {
                let off = self.alloc(tiles);
                (off, self.cur.slice)
            }
        };
        self.cur
            .rects
            .add(rg, cb, tiling.n_cb(), bytes, offset, last);
        let (r0, r1) = tiling.rg_range(rg);
        let (c0, c1) = tiling.cb_range(cb);
        self.account(oi, r1 - r0, c1 - c0, bytes);
    }

    /// Places part of a cell — rows `r` × columns `c`, one tile per part — as
    /// a placement of its own (the cell was cut at a chip boundary).
    fn put_piece(
        &mut self,
        oi: usize,
        r: (usize, usize),
        c: (usize, usize),
        tile_cols: usize,
        tiles: &[usize],
    ) {
        self.flush_rects();
        let offset = self.alloc(tiles);
        let bytes: usize = tiles.iter().sum();
        let s = self.spec.slice_bytes;
        let slices = SliceRange {
            first: offset / s,
            count: self.cur.slice + 1 - offset / s,
        };
        let op = &self.ops[oi];
        let t = op.tiling;
        match op.source {
            Source::Weight(ti) => {
                let info = &self.tensors[ti];
                self.cur.placements.push(Placement {
                    weight: info.name.to_string(),
                    dtype: info.dtype.name().to_string(),
                    row_start: r.0,
                    row_end: r.1,
                    col_start: c.0,
                    col_end: c.1,
                    bytes,
                    params: (r.1 - r.0) * (c.1 - c.0),
                    tile_rows: r.1 - r.0,
                    tile_cols,
                    sram_offset: offset,
                    slices,
                });
            }
            Source::Kv(layer) => self.cur.kv.push(KvPlacement {
                layer,
                head_start: r.0,
                head_end: r.1,
                pos_start: c.0,
                pos_end: c.1,
                bytes,
                tile_heads: r.1 - r.0,
                tile_positions: c.1 - c.0,
                bytes_per_position: t.q_bytes,
                sram_offset: offset,
                slices,
            }),
        }
        self.account(oi, r.1 - r.0, c.1 - c.0, bytes);
    }

    /// Places grid cell `(rg, cb)` of op `oi`, cutting it at chip boundaries
    /// when it does not fit what is left of a chip: weights by rows (a vector
    /// by column blocks), KV cells by positions.
    fn place_cell(
        &mut self,
        oi: usize,
        rg: usize,
        cb: usize,
        rows: (usize, usize),
    ) -> Result<(), PlacementError> {
        let op = &self.ops[oi];
        let t = op.tiling;
        let (node, source) = (op.node, op.source);
        let parts = match source {
            Source::Weight(_) => 1,
            Source::Kv(_) => 2,
        };
        let within = values(&self.during[node]);
        let group = self.dims.heads / self.dims.kv_heads.max(1);
        let score_of = |rows: usize, cols: usize| match source {
            Source::Kv(_) => group * rows * cols,
            Source::Weight(_) => 0,
        };
        let (r0, r1) = rows;
        let is_grid = rows == t.rg_range(rg);
        let (c0, c1) = t.cb_range(cb);
        let full = vec![t.rect_bytes(r1 - r0, c1 - c0); parts];
        let score = score_of(r1 - r0, c1 - c0);
        // A whole op in one cell (a norm vector, a small matrix) may fill a
        // gap an earlier, larger tile left in a slice.
        if is_grid && t.n_rg() * t.n_cb() == 1 {
            if let Some(sl) = self.backfill_slot(full.iter().sum(), within, score) {
                self.put_cell(oi, rg, cb, &full, Some(sl));
                return Ok(());
            }
        }
        if is_grid && self.fits(&self.cur, &full, within, score) {
            self.put_cell(oi, rg, cb, &full, None);
            return Ok(());
        }
        let along_rows = matches!(source, Source::Weight(_)) && r1 - r0 > 1;
        let unit = if along_rows { 1 } else { t.q_len };
        let rect = |a: usize, b: usize| {
            if along_rows {
                ((a, b), (c0, c1))
            } else {
                ((r0, r1), (a, b))
            }
        };
        let bytes_of = |a: usize, b: usize| {
            let ((ra, rb), (ca, cb)) = rect(a, b);
            (t.rect_bytes(rb - ra, cb - ca), score_of(rb - ra, cb - ca))
        };
        // A one-row cell of a matrix moves to the next chip whole; it is cut by
        // columns only when it does not fit even an empty chip.
        // A norm vector moves whole too, so it runs on one chip.
        let keep_whole = matches!(source, Source::Weight(_)) && !along_rows;
        let (mut lo, hi) = if along_rows { (r0, r1) } else { (c0, c1) };
        let start = lo;
        loop {
            let (b, sc) = bytes_of(lo, hi);
            if self.fits(&self.cur, &vec![b; parts], within, sc) {
                if is_grid && lo == start {
                    self.put_cell(oi, rg, cb, &vec![b; parts], None);
                } else {
                    let (r, c) = rect(lo, hi);
                    self.put_piece(oi, r, c, c.1 - c.0, &vec![b; parts]);
                }
                return Ok(());
            }
            // The most units of this cell that fit the current chip.
            let units = if keep_whole && self.cur.any {
                0
            } else {
                (hi - lo) / unit
            };
            let (mut ok, mut bad) = (0, units);
            while bad - ok > 1 {
                let mid = (ok + bad) / 2;
                let (b, sc) = bytes_of(lo, lo + mid * unit);
                if self.fits(&self.cur, &vec![b; parts], within, sc) {
                    ok = mid;
                } else {
                    bad = mid;
                }
            }
            if ok > 0 {
                let (b, _) = bytes_of(lo, lo + ok * unit);
                let (r, c) = rect(lo, lo + ok * unit);
                self.put_piece(oi, r, c, c.1 - c.0, &vec![b; parts]);
                lo += ok * unit;
            } else if !self.cur.any {
                let (b, sc) = bytes_of(lo, lo + unit);
                let (r, c) = rect(lo, lo + unit);
                let scratch = self.scratch_bytes(within.max(values(&self.point)), sc);
                let piece = match source {
                    Source::Weight(_) => format!(
                        "`{}` rows {}..{}, columns {}..{}",
                        self.ops[oi].label, r.0, r.1, c.0, c.1
                    ),
                    Source::Kv(l) => format!(
                        "the KV cache of layer {l}, heads {}..{}, position {} (K and V)",
                        r.0, r.1, c.0
                    ),
                };
                return Err(PlacementError::Unsplittable {
                    piece: format!(
                        "{piece} ({} bytes) with the chip's activation scratch ({scratch} bytes)",
                        b * parts
                    ),
                    bytes: b * parts + scratch,
                    container: format!("a `{}` chip", self.spec.name),
                    limit: self.spec.sram_bytes,
                });
            }
            self.new_chip()?;
        }
    }

    /// Places row group `rg` of a matrix cut into several column blocks. A
    /// chip boundary cuts it by rows (every column block), so each chip holds
    /// whole rows; only a single row larger than a chip is cut by columns.
    fn place_row_group(&mut self, oi: usize, rg: usize) -> Result<(), PlacementError> {
        let op = &self.ops[oi];
        let t = op.tiling;
        let within = values(&self.during[op.node]);
        let n_cb = t.n_cb();
        let row_tiles = |k: usize| -> Vec<usize> {
            (0..n_cb)
                .map(|cb| {
                    let (c0, c1) = t.cb_range(cb);
                    t.rect_bytes(k, c1 - c0)
                })
                .collect()
        };
        let (r0, r1) = t.rg_range(rg);
        if self.fits(&self.cur, &row_tiles(r1 - r0), within, 0) {
            for cb in 0..n_cb {
                let b = t.tile_bytes(rg, cb);
                self.put_cell(oi, rg, cb, &[b], None);
            }
            return Ok(());
        }
        let mut lo = r0;
        loop {
            if self.fits(&self.cur, &row_tiles(r1 - lo), within, 0) {
                self.put_piece(oi, (lo, r1), (0, t.cols), t.tile_cols, &row_tiles(r1 - lo));
                return Ok(());
            }
            let (mut ok, mut bad) = (0, r1 - lo);
            while bad - ok > 1 {
                let mid = (ok + bad) / 2;
                if self.fits(&self.cur, &row_tiles(mid), within, 0) {
                    ok = mid;
                } else {
                    bad = mid;
                }
            }
            if ok > 0 {
                self.put_piece(oi, (lo, lo + ok), (0, t.cols), t.tile_cols, &row_tiles(ok));
                lo += ok;
            } else if !self.cur.any {
                // Not one row fits a chip: cut the rows by column blocks.
                for cb in 0..n_cb {
                    self.place_cell(oi, rg, cb, (lo, r1))?;
                }
                return Ok(());
            }
            self.new_chip()?;
        }
    }

    fn run(&mut self) -> Result<(), PlacementError> {
        for oi in 0..self.ops.len() {
            let t = self.ops[oi].tiling;
            let matrix = matches!(self.ops[oi].source, Source::Weight(_)) && t.rows > 1;
            for rg in 0..t.n_rg() {
                if matrix && t.n_cb() > 1 {
                    self.place_row_group(oi, rg)?;
                } else {
                    for cb in 0..t.n_cb() {
                        self.place_cell(oi, rg, cb, t.rg_range(rg))?;
                    }
                }
            }
            self.point = self.after[self.ops[oi].node].clone();
        }
        Ok(())
    }
}

/// Most chips one placement may span (the compiler keeps a record per chip);
/// a placement that needs more stops there with a message.
pub const MAX_PLACED_CHIPS: usize = 65_536;

/// Most slice-sized pieces (weight tiles, KV cells) one placement may hold:
/// the compiler's time grows with their number (Llama-2-70B at fp16 is about
/// 8.4 million on a 16 KiB slice).
pub const MAX_PLACED_PIECES: usize = 1 << 25;

/// Checks, with checked arithmetic, that the sizes of weights and KV cache
/// do not overflow and make at most [`MAX_PLACED_PIECES`] pieces, before any
/// placement work.
pub(super) fn check_size(
    cfg: &LlamaConfig,
    tensors: &[TensorInfo],
    spec: &ChipSpec,
    opts: &PlaceOptions,
    kv_pos_bytes: usize,
) -> Result<(), PlacementError> {
    let too_big = || {
        PlacementError::InvalidOptions(format!(
            "the KV cache of {} positions × batch {} overflows the size arithmetic: lower --ctx or --batch",
            opts.context_len, opts.batch
        ))
    };
    let kv = cfg
        .num_layers
        .checked_mul(2)
        .and_then(|x| x.checked_mul(opts.context_len))
        .and_then(|x| x.checked_mul(cfg.num_kv_heads))
        .and_then(|x| x.checked_mul(kv_pos_bytes))
        .ok_or_else(too_big)?;
    let weights = tensors
        .iter()
        .try_fold(0usize, |a, t| a.checked_add(t.bytes))
        .ok_or_else(too_big)?;
    kv.checked_add(weights).ok_or_else(too_big)?;
    let slice = spec.slice_bytes.max(1);
    let pieces = (weights / slice).saturating_add(kv / slice.div_ceil(2));
    if pieces > MAX_PLACED_PIECES {
        return Err(PlacementError::InvalidOptions(format!(
            "weights ({weights} bytes) and the KV cache of {} positions × batch {} ({kv} bytes) make about {pieces} slice-sized pieces; sramlm places at most {MAX_PLACED_PIECES}: lower --ctx or --batch",
            opts.context_len, opts.batch
        )));
    }
    Ok(())
}

/// The checks every placement starts with (architecture, spec, options), and
/// the model's tensors in forward order, checked against the config.
pub(super) fn checked_tensors(
    cfg: &LlamaConfig,
    tensors: &[TensorInfo],
    spec: &ChipSpec,
    opts: &PlaceOptions,
) -> Result<Vec<TensorInfo>, PlacementError> {
    if let Some(m) = crate::exec::sram::unsupported_in_sram(cfg) {
        return Err(PlacementError::Unsupported(m));
    }
    spec.validate()?;
    for (name, v) in [
        ("context_len", opts.context_len),
        ("kv_dtype_bytes", opts.kv_dtype_bytes),
        ("batch", opts.batch),
        ("microbatch_tokens", opts.microbatch_tokens),
    ] {
        if v == 0 {
            return Err(PlacementError::InvalidOptions(format!(
                "`{name}` must be positive, got 0"
            )));
        }
    }
    if opts.max_chips == Some(0) {
        return Err(PlacementError::InvalidOptions(
            "`max_chips` must be positive, got 0".into(),
        ));
    }
    // Order the tensors forward and check them against the config.
    let want = WeightName::all(cfg);
    let mut ordered: Vec<TensorInfo> = Vec::with_capacity(want.len());
    for &w in &want {
        let mut found = tensors.iter().filter(|t| t.name == w);
        let t = found
            .next()
            .ok_or_else(|| PlacementError::BadTensors(format!("tensor `{w}` is missing")))?;
        if found.next().is_some() {
            return Err(PlacementError::BadTensors(format!(
                "tensor `{w}` is given twice"
            )));
        }
        let shape = w.shape(cfg);
        let flat = if shape.len() == 1 {
            vec![shape[0]]
        } else {
            shape.clone()
        };
        if t.shape != flat {
            return Err(PlacementError::BadTensors(format!(
                "tensor `{w}` has shape {:?}, the config implies {:?}",
                t.shape, shape
            )));
        }
        let expect = TensorInfo::new(w, t.dtype, t.shape.clone())?.bytes;
        if t.bytes != expect {
            return Err(PlacementError::BadTensors(format!(
                "tensor `{w}`: {} bytes given, {} {:?} takes {expect}",
                t.bytes,
                t.dtype.name(),
                t.shape
            )));
        }
        ordered.push(t.clone());
    }
    if let Some(extra) = tensors.iter().find(|t| !want.contains(&t.name)) {
        return Err(PlacementError::BadTensors(format!(
            "tensor `{}` is not part of this model (tie_word_embeddings = {})",
            extra.name, cfg.tie_word_embeddings
        )));
    }
    Ok(ordered)
}

/// Places `tensors` (the weights of the model `cfg`), its KV cache and the
/// activation scratch onto chips of `spec`. See the module docs.
pub fn place(
    cfg: &LlamaConfig,
    tensors: &[TensorInfo],
    spec: &ChipSpec,
    opts: &PlaceOptions,
) -> Result<Plan, PlacementError> {
    let ordered = checked_tensors(cfg, tensors, spec, opts)?;
    let slice = spec.slice_bytes;

    let dims = Dims {
        heads: cfg.num_heads,
        kv_heads: cfg.num_kv_heads,
    };
    let nodes = graph::forward(cfg);
    let idx = |w: WeightName| ordered.iter().position(|t| t.name == w).unwrap();
    let weight_op = |node: usize, w: WeightName| {
        let n = &nodes[node];
        let i = idx(w);
        let t = &ordered[i];
        let f = t.dtype;
        choose_tiling(t.rows(), t.cols(), f.block_len(), f.block_bytes(), slice)
            .map(|tiling| Op {
                node,
                layer: n.layer,
                source: Source::Weight(i),
                tiling,
                label: n.label.clone(),
            })
            .map_err(|q| PlacementError::Unsplittable {
                piece: format!("one {} block of `{w}`", f.name()),
                bytes: q,
                container: "a slice".into(),
                limit: slice,
            })
    };

    let kv_pos_bytes = cfg
        .head_dim
        .checked_mul(opts.kv_dtype_bytes)
        .and_then(|x| x.checked_mul(opts.batch))
        .ok_or_else(|| PlacementError::InvalidOptions("KV cache size overflows".into()))?;
    check_size(cfg, &ordered, spec, opts, kv_pos_bytes)?;
    // The graph's nodes in order: each weight at its last use, each layer's
    // KV cache at its attention.
    let mut ops = Vec::new();
    for (ni, n) in nodes.iter().enumerate() {
        match (n.kind, n.weight()) {
            (_, Some(w)) if graph::is_last_use(&nodes, ni) => ops.push(weight_op(ni, w)?),
            (graph::NodeKind::Attention(l), _) => {
                // A cell — K and V of the same heads and positions, what one
                // attention workgroup reads — fits one slice.
                let tiling =
                    choose_tiling(cfg.num_kv_heads, opts.context_len, 1, kv_pos_bytes, slice / 2)
                        .map_err(|b| PlacementError::Unsplittable {
                            piece: format!(
                                "K and V of one position of one KV head of layer {l} (2 × head_dim {} × {} bytes × batch {})",
                                cfg.head_dim, opts.kv_dtype_bytes, opts.batch
                            ),
                            bytes: 2 * b,
                            container: "a slice".into(),
                            limit: slice,
                        })?;
                ops.push(Op {
                    node: ni,
                    layer: Some(l),
                    source: Source::Kv(l),
                    tiling,
                    label: n.label.clone(),
                });
            }
            _ => {}
        }
    }
    let during: Vec<Vec<Carried>> = graph::live_during(&nodes)
        .iter()
        .map(|s| materialize(s, cfg))
        .collect();
    let after: Vec<Vec<Carried>> = graph::live_out(&nodes)
        .iter()
        .map(|s| materialize(s, cfg))
        .collect();
    // What reaches chip 0 for a token: the residual stream.
    let entry = vec![Carried {
        name: graph::Act::X.name().into(),
        values: cfg.hidden_size,
    }];

    let mut c = Compiler {
        spec,
        opts,
        dims,
        ops,
        during,
        after,
        tensors: ordered,
        chips: Vec::new(),
        cur: ChipState::new(entry.clone()),
        point: entry.clone(),
    };
    c.run()?;
    // Estimated carries (what is live at each cut); replaced below by the
    // program's exact ones whenever the plan is runnable.
    let loopback = if cfg.tie_word_embeddings {
        entry
    } else {
        vec![]
    };
    c.finish_chip(loopback.clone());
    let mut chips = c.chips;
    let n = chips.len();
    if let Some(max) = opts.max_chips {
        if n > max {
            return Err(PlacementError::TooFewChips {
                needed: n,
                given: max,
            });
        }
    }
    if !cfg.tie_word_embeddings || n == 1 {
        chips[0].carry_in.clear();
    }
    let (stages, program_error) = match Program::from_chips(cfg, &chips) {
        Ok(p) => {
            let stages = p.stage_plans();
            for chip in &mut chips {
                let idx = chip.index;
                let carried = |to: bool| -> Vec<Carried> {
                    stages
                        .iter()
                        .zip(&p.links)
                        .filter(|(_, l)| {
                            if to {
                                l.to_chip == idx
                            } else {
                                l.from_chip == idx
                            }
                        })
                        .flat_map(|(s, _)| s.carry.clone())
                        .collect()
                };
                chip.carry_in = carried(true);
                chip.carry_out = carried(false);
            }
            (stages, None)
        }
        Err(e) => (vec![], Some(e.to_string())),
    };
    for chip in &mut chips {
        chip.link_bytes_in_per_token = 4 * values(&chip.carry_in);
        chip.link_bytes_out_per_token = 4 * values(&chip.carry_out);
    }
    let single = n == 1;
    if single {
        // Nothing crosses a link on a one-chip machine.
        chips[0].carry_out.clear();
        chips[0].carry_in.clear();
        chips[0].link_bytes_in_per_token = 0;
        chips[0].link_bytes_out_per_token = 0;
    }

    let tensors = c.tensors;
    let weight_bytes: usize = tensors.iter().map(|t| t.bytes).sum();
    let kv_bytes = cfg.num_layers * 2 * opts.context_len * cfg.num_kv_heads * kv_pos_bytes;
    // The loopback: what the last chip sends back to chip 0.
    let loop_bytes = if single {
        0
    } else {
        chips[n - 1].link_bytes_out_per_token
    };
    let used: Vec<usize> = chips.iter().map(|c| c.sram_used).collect();
    let totals = Totals {
        chips_used: n,
        max_chips: opts.max_chips,
        weight_bytes: chips.iter().map(|c| c.weight_bytes).sum(),
        kv_bytes: chips.iter().map(|c| c.kv_bytes).sum(),
        scratch_bytes: chips.iter().map(|c| c.scratch_bytes).sum(),
        sram_used_total: used.iter().sum(),
        sram_used_max: used.iter().copied().max().unwrap_or(0),
        sram_used_mean: used.iter().sum::<usize>() as f64 / n as f64,
        sram_utilization: used.iter().sum::<usize>() as f64 / (n * spec.sram_bytes) as f64,
        link_bytes_per_token: chips.iter().map(|c| c.link_bytes_out_per_token).sum(),
        loopback_bytes_per_token: loop_bytes,
        link_transfers_per_token: chips.iter().map(|c| c.carry_out.len()).sum(),
        hops: n - 1,
        pipeline_stages: stages.len(),
    };
    debug_assert_eq!(totals.weight_bytes, weight_bytes);
    debug_assert_eq!(totals.kv_bytes, kv_bytes);
    let model = ModelSummary {
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_layers: cfg.num_layers,
        num_heads: cfg.num_heads,
        num_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
        vocab_size: cfg.vocab_size,
        tie_word_embeddings: cfg.tie_word_embeddings,
        embedding_placement: if cfg.tie_word_embeddings {
            "tied: placed once, at the tail, as lm_head; the next token's row is gathered there and sent to chip 0 over the loopback".into()
        } else {
            "untied: embed on the first chip(s), lm_head on the last".into()
        },
        params: tensors.iter().map(|t| t.numel()).sum(),
        weight_bytes,
        kv_bytes,
        context_len: opts.context_len,
        kv_dtype_bytes: opts.kv_dtype_bytes,
        batch: opts.batch,
        microbatch_tokens: opts.microbatch_tokens,
        tensors: tensors.iter().map(TensorSummary::of).collect(),
    };
    Ok(Plan {
        spec: spec.clone(),
        model,
        chips,
        totals,
        stages,
        program_error,
        tp: 1,
    })
}

/// A broken invariant found by [`Plan::check`]: a placement compiler bug,
/// never a user error (the messages name the chip and the piece).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanCheckError {
    #[error("chip {chip}: {piece} tiles add to {tiles} bytes, placement says {placed}")]
    TileBytes {
        chip: usize,
        piece: String,
        tiles: usize,
        placed: usize,
    },
    #[error("chip {chip}: {weight} slice range {first}+{count} disagrees with its tiles")]
    SliceRange {
        chip: usize,
        weight: String,
        first: usize,
        count: usize,
    },
    #[error("chip {chip}: tiles hold {tiles} bytes, chip says {chip_says}")]
    ChipBytes {
        chip: usize,
        tiles: usize,
        chip_says: usize,
    },
    #[error("chip {chip}: tile of {name} at {at} overlaps the previous tile")]
    TileOverlap {
        chip: usize,
        name: String,
        at: usize,
    },
    #[error("chip {chip}: tile of {name} at {at} ({len} bytes) straddles a slice boundary")]
    Straddles {
        chip: usize,
        name: String,
        at: usize,
        len: usize,
    },
    #[error("chip {chip}: tile of {name} lies beyond the chip's {slices} slices")]
    BeyondSlices {
        chip: usize,
        name: String,
        slices: usize,
    },
    #[error("chip {chip}: scratch at {scratch} overlaps tiles ending at {end}")]
    ScratchOverlap {
        chip: usize,
        scratch: usize,
        end: usize,
    },
    #[error("chip {chip}: slice {slice} holds {used} bytes, over its {capacity}")]
    SliceOver {
        chip: usize,
        slice: usize,
        used: usize,
        capacity: usize,
    },
    #[error("chip {chip}: uses {used} bytes (high water {high_water}), over its {capacity}")]
    OverSram {
        chip: usize,
        used: usize,
        high_water: usize,
        capacity: usize,
    },
    #[error("{tensor}: placed area {placed}, tensor has {values}")]
    Area {
        tensor: String,
        placed: usize,
        values: usize,
    },
    #[error("{tensor}: rectangle {rect:?} outside the tensor")]
    RectOutside {
        tensor: String,
        rect: (usize, usize, usize, usize),
    },
    #[error("{tensor}: rectangles {a:?} and {b:?} overlap")]
    RectOverlap {
        tensor: String,
        a: (usize, usize, usize, usize),
        b: (usize, usize, usize, usize),
    },
    #[error("placement of unknown tensor {0}")]
    UnknownTensor(String),
    #[error("layer {layer}: KV cache covered {covered} of {want} head-positions")]
    KvCover {
        layer: usize,
        covered: usize,
        want: usize,
    },
}

impl Plan {
    /// Checks the plan's invariants: every tile inside its chip's slices, no
    /// slice over `slice_bytes` (tiles and scratch together), no two tiles
    /// overlapping, no chip over its SRAM, every tensor covered exactly once
    /// by its rectangles and every KV cache exactly once, byte counts adding
    /// up. The SRAM executor can call this before uploading.
    pub fn check(&self) -> Result<(), PlanCheckError> {
        let s = self.spec.slice_bytes;
        let nsl = self.spec.slices_per_chip();
        let mut covered: std::collections::HashMap<&str, Vec<(usize, usize, usize, usize)>> =
            Default::default();
        let mut kv_cover: Vec<usize> = vec![0; self.model.num_layers];
        let mut kv_seen = std::collections::HashSet::new();
        for chip in &self.chips {
            let mut spans: Vec<(usize, usize, String)> = Vec::new();
            let mut per_slice = vec![0usize; nsl];
            let mut tile_bytes = 0;
            for p in &chip.tensors {
                let tiles = p.tiles(s);
                let sum: usize = tiles.iter().map(|t| t.bytes).sum();
                if sum != p.bytes {
                    return Err(PlanCheckError::TileBytes {
                        chip: chip.index,
                        piece: p.weight.clone(),
                        tiles: sum,
                        placed: p.bytes,
                    });
                }
                if tiles.last().map(|t| t.slice) != Some(p.slices.first + p.slices.count - 1)
                    || tiles.first().map(|t| t.slice) != Some(p.slices.first)
                {
                    return Err(PlanCheckError::SliceRange {
                        chip: chip.index,
                        weight: p.weight.clone(),
                        first: p.slices.first,
                        count: p.slices.count,
                    });
                }
                for t in tiles {
                    spans.push((t.slice * s + t.offset_in_slice, t.bytes, p.weight.clone()));
                }
                tile_bytes += p.bytes;
                covered.entry(p.weight.as_str()).or_default().push((
                    p.row_start,
                    p.row_end,
                    p.col_start,
                    p.col_end,
                ));
            }
            for k in &chip.kv {
                let tiles = k.tiles(s);
                let sum: usize = tiles.iter().map(|t| t.bytes).sum();
                if sum != k.bytes {
                    return Err(PlanCheckError::TileBytes {
                        chip: chip.index,
                        piece: format!("KV layer {}", k.layer),
                        tiles: sum,
                        placed: k.bytes,
                    });
                }
                for t in tiles {
                    spans.push((
                        t.slice * s + t.offset_in_slice,
                        t.bytes,
                        format!("kv{}", k.layer),
                    ));
                }
                tile_bytes += k.bytes;
                if self.tp <= 1 {
                    kv_cover[k.layer] += (k.head_end - k.head_start) * (k.pos_end - k.pos_start);
                } else {
                    // Tensor parallelism may hold a KV head on several chips.
                    for h in k.head_start..k.head_end {
                        if kv_seen.insert((k.layer, h, k.pos_start, k.pos_end)) {
                            kv_cover[k.layer] += k.pos_end - k.pos_start;
                        }
                    }
                }
            }
            if tile_bytes != chip.weight_bytes + chip.kv_bytes {
                return Err(PlanCheckError::ChipBytes {
                    chip: chip.index,
                    tiles: tile_bytes,
                    chip_says: chip.weight_bytes + chip.kv_bytes,
                });
            }
            spans.sort();
            let mut end = 0;
            for (start, len, name) in &spans {
                if *start < end {
                    return Err(PlanCheckError::TileOverlap {
                        chip: chip.index,
                        name: name.clone(),
                        at: *start,
                    });
                }
                if start % s + len > s {
                    return Err(PlanCheckError::Straddles {
                        chip: chip.index,
                        name: name.clone(),
                        at: *start,
                        len: *len,
                    });
                }
                if start / s >= nsl {
                    return Err(PlanCheckError::BeyondSlices {
                        chip: chip.index,
                        name: name.clone(),
                        slices: nsl,
                    });
                }
                per_slice[start / s] += len;
                end = start + len;
            }
            if chip.scratch_offset < end {
                return Err(PlanCheckError::ScratchOverlap {
                    chip: chip.index,
                    scratch: chip.scratch_offset,
                    end,
                });
            }
            // Scratch bytes counted against the slices they overlap.
            let (a, b) = (
                chip.scratch_offset,
                chip.scratch_offset + chip.scratch_bytes,
            );
            for (i, used) in per_slice.iter_mut().enumerate() {
                let (lo, hi) = (i * s, (i + 1) * s);
                *used += b.min(hi).saturating_sub(a.max(lo));
            }
            if let Some((i, &u)) = per_slice.iter().enumerate().find(|(_, &u)| u > s) {
                return Err(PlanCheckError::SliceOver {
                    chip: chip.index,
                    slice: i,
                    used: u,
                    capacity: s,
                });
            }
            if chip.sram_high_water > chip.sram_capacity || chip.sram_used > chip.sram_capacity {
                return Err(PlanCheckError::OverSram {
                    chip: chip.index,
                    used: chip.sram_used,
                    high_water: chip.sram_high_water,
                    capacity: chip.sram_capacity,
                });
            }
        }
        for t in &self.model.tensors {
            let mut rects = covered.remove(t.weight.as_str()).unwrap_or_default();
            if self.tp > 1 {
                // Tensor parallelism replicates norm vectors (and k/v rows
                // when the group has more chips than KV heads), always whole
                // rows: count the rows covered once each.
                rects.sort_unstable();
                let mut merged: Vec<(usize, usize, usize, usize)> = Vec::new();
                for r in rects {
                    match merged.last_mut() {
                        Some(m) if (m.2, m.3) == (r.2, r.3) && r.0 <= m.1 => m.1 = m.1.max(r.1),
                        _ => merged.push(r),
                    }
                }
                rects = merged;
            }
            let area: usize = rects.iter().map(|r| (r.1 - r.0) * (r.3 - r.2)).sum();
            if area != t.rows * t.cols {
                return Err(PlanCheckError::Area {
                    tensor: t.weight.clone(),
                    placed: area,
                    values: t.rows * t.cols,
                });
            }
            for (i, a) in rects.iter().enumerate() {
                if a.1 > t.rows || a.3 > t.cols || a.0 >= a.1 || a.2 >= a.3 {
                    return Err(PlanCheckError::RectOutside {
                        tensor: t.weight.clone(),
                        rect: *a,
                    });
                }
                for b in &rects[i + 1..] {
                    if a.0 < b.1 && b.0 < a.1 && a.2 < b.3 && b.2 < a.3 {
                        return Err(PlanCheckError::RectOverlap {
                            tensor: t.weight.clone(),
                            a: *a,
                            b: *b,
                        });
                    }
                }
            }
        }
        if let Some(k) = covered.keys().next() {
            return Err(PlanCheckError::UnknownTensor(k.to_string()));
        }
        let want = self.model.num_kv_heads * self.model.context_len;
        if let Some((l, _)) = kv_cover.iter().enumerate().find(|(_, &c)| c != want) {
            return Err(PlanCheckError::KvCover {
                layer: l,
                covered: kv_cover[l],
                want,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chip::spec::KIB;

    fn tiny(tied: bool) -> LlamaConfig {
        LlamaConfig::tiny_for_tests(5, 512, tied)
    }

    #[test]
    fn tiling_fits_slices_and_prefers_whole_rows() {
        let t = choose_tiling(172, 64, 1, 4, 16384).unwrap();
        assert_eq!((t.tile_cols, t.n_cb()), (64, 1));
        assert!(t.tile_bytes(0, 0) <= 16384);
        // A row of 28672 f16 (56 KiB) must be cut; the cut fills slices.
        let t = choose_tiling(8192, 28672, 1, 2, 16384).unwrap();
        assert!(t.tile_bytes(0, 0) <= 16384);
        assert!(t.tile_bytes(0, 0) >= 16384 * 9 / 10, "{t:?}");
        // Quantized: column blocks are whole 32-value blocks.
        let t = choose_tiling(10, 28672, 32, 34, 1024).unwrap();
        assert_eq!(t.tile_cols % 32, 0);
        assert!(t.tile_bytes(0, 0) <= 1024);
        assert_eq!(choose_tiling(1, 64, 32, 34, 16), Err(34));
    }

    #[test]
    fn rect_state_merges_row_groups() {
        let mut r = RectState::default();
        // 3 row groups of 2 column blocks, starting mid-row-group.
        r.add(0, 1, 2, 10, 0, 0);
        r.add(1, 0, 2, 10, 10, 0);
        r.add(1, 1, 2, 10, 20, 0);
        r.add(2, 0, 2, 10, 30, 0);
        r.add(2, 1, 2, 10, 40, 0);
        r.add(3, 0, 2, 10, 50, 0);
        let v = r.finish();
        assert_eq!(v.len(), 3, "{v:?}");
        assert_eq!((v[0].rg0, v[0].rg1, v[0].cb0, v[0].cb1), (0, 0, 1, 1));
        assert_eq!((v[1].rg0, v[1].rg1, v[1].cb0, v[1].cb1), (1, 2, 0, 1));
        assert_eq!((v[2].rg0, v[2].rg1, v[2].cb0, v[2].cb1), (3, 3, 0, 0));
    }

    #[test]
    fn tiny_model_places_on_every_preset() {
        for tied in [true, false] {
            let cfg = tiny(tied);
            let t = TensorInfo::from_config(&cfg, DType::F32, DType::F32).unwrap();
            for spec in ChipSpec::presets() {
                let plan = place(&cfg, &t, &spec, &PlaceOptions::for_config(&cfg)).unwrap();
                plan.check()
                    .unwrap_or_else(|e| panic!("{} tied={tied}: {e}", spec.name));
            }
        }
    }

    #[test]
    fn check_names_each_broken_invariant() {
        let cfg = tiny(false);
        let t = TensorInfo::from_config(&cfg, DType::F32, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let good = place(&cfg, &t, &spec, &PlaceOptions::for_config(&cfg)).unwrap();
        good.check().unwrap();
        let broken = |f: &dyn Fn(&mut Plan)| {
            let mut p = good.clone();
            f(&mut p);
            p.check().unwrap_err()
        };
        let e = broken(&|p| p.chips[1].sram_used = p.chips[1].sram_capacity + 1);
        assert!(matches!(e, PlanCheckError::OverSram { chip: 1, .. }), "{e}");
        let e = broken(&|p| p.chips[0].weight_bytes += 4);
        assert!(
            matches!(e, PlanCheckError::ChipBytes { chip: 0, .. }),
            "{e}"
        );
        let e = broken(&|p| p.model.num_kv_heads += 1);
        assert!(matches!(e, PlanCheckError::KvCover { layer: 0, .. }), "{e}");
        let e = broken(&|p| {
            let c = p.chips.iter_mut().find(|c| !c.tensors.is_empty()).unwrap();
            let dup = c.tensors[0].clone();
            p.chips.last_mut().unwrap().tensors.push(dup);
        });
        assert!(
            matches!(
                e,
                PlanCheckError::ChipBytes { .. } | PlanCheckError::TileOverlap { .. }
            ),
            "{e}"
        );
        let e = broken(&|p| p.model.tensors[0].rows += 1);
        assert!(matches!(e, PlanCheckError::Area { .. }), "{e}");
        assert!(e.to_string().contains("placed area"), "{e}");
    }

    #[test]
    fn small_slices_and_chips() {
        let mut cfg = tiny(false);
        cfg.intermediate_size = 192;
        let t = TensorInfo::from_config(&cfg, DType::Q8_0, DType::F16).unwrap();
        let spec = ChipSpec::preset("mini-64k")
            .unwrap()
            .with_slice_bytes(KIB)
            .unwrap();
        let mut o = PlaceOptions::for_config(&cfg);
        o.context_len = 100;
        let plan = place(&cfg, &t, &spec, &o).unwrap();
        plan.check().unwrap();
        // One chip of one slice: row groups and KV cells spill cell by cell.
        let spec = ChipSpec::preset("mini-64k")
            .unwrap()
            .with_slice_bytes(64 * KIB)
            .unwrap();
        let plan = place(&cfg, &t, &spec, &o).unwrap();
        plan.check().unwrap();
    }

    #[test]
    fn too_few_chips_says_how_many() {
        let cfg = tiny(true);
        let t = TensorInfo::from_config(&cfg, DType::F32, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let mut o = PlaceOptions::for_config(&cfg);
        let needed = place(&cfg, &t, &spec, &o).unwrap().totals.chips_used;
        o.max_chips = Some(3);
        match place(&cfg, &t, &spec, &o) {
            Err(PlacementError::TooFewChips {
                needed: n,
                given: 3,
            }) => assert_eq!(n, needed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scratch_larger_than_chip_is_named() {
        let mut cfg = tiny(true);
        cfg.hidden_size = 4096;
        cfg.intermediate_size = 11008;
        cfg.num_heads = 32;
        cfg.num_kv_heads = 32;
        cfg.head_dim = 128;
        cfg.num_layers = 1;
        let t = TensorInfo::from_config(&cfg, DType::Q4_0, DType::F32).unwrap();
        let spec = ChipSpec::preset("mini-64k").unwrap();
        let e = place(&cfg, &t, &spec, &PlaceOptions::for_config(&cfg))
            .unwrap_err()
            .to_string();
        assert!(e.contains("scratch") && e.contains("65536"), "{e}");
    }
}
