//! The emulated SRAM-only machine: hardware description, placement, cost.
//!
//! * [`spec`]: [`ChipSpec`] — one chip (SRAM, slices, bandwidths, links) and the
//!   presets (`groq-v1` and its scale models `mini-64k`, `mini-4m`).
//! * [`placement`]: the placement compiler, [`place`] — every weight tile, KV
//!   cache block and activation scratch buffer to a chip and a slice; the
//!   output [`Plan`] is what the SRAM executor runs and what `sramlm plan`
//!   prints.
//! * [`cost`]: the analytic cost model — *modeled* latency and throughput of a
//!   plan, and of a GPU for comparison. Kept apart from placement: a plan is
//!   exact bookkeeping, a cost is an estimate.
//! * [`report`]: human-readable tables and JSON, and the Llama-2-70B study.

pub mod cost;
pub mod placement;
pub mod program;
pub mod report;
pub mod spec;
pub mod tp;

pub use cost::{
    dependent_stage_s, dependent_stages_per_token, gpu_inputs_from_plan, modeled_gpu_token_latency,
    modeled_token_latency, modeled_token_latency_with, stage_floor_extra_s, CarryModel,
    CostBreakdown, CostOptions, GpuCostBreakdown, GpuFleetSpec, GpuSpec, ModeledChipCost,
    Precision,
};
pub use placement::{
    place, Carried, ChipPlan, KvPlacement, ModelSummary, PlaceOptions, Placement, Plan,
    PlanCheckError, SliceRange, TensorInfo, TensorSummary, Tile, TilePart, Totals, WeightFormat,
    DEFAULT_CONTEXT, DEFAULT_MICROBATCH,
};
pub use program::{Program, ProgramError, SendPlan, StagePlan};
pub use report::{
    chip_contents, fmt_bytes, fmt_seconds, llama2_70b_scenarios, plan_json, plan_table,
    plan_table_fit, study, study_table, Scenario, StudyRow, StudyVariant,
};
pub use spec::{ChipSpec, Economics, Interconnect, Topology, DEFAULT_SLICE_BYTES, PRESET_NAMES};
pub use tp::place_tp;

/// Everything that can go wrong between a chip description and a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    #[error("unknown chip preset `{name}` (known presets: {known}; or give the path of a JSON spec file)")]
    UnknownPreset { name: String, known: String },
    #[error("chip spec {path}: {msg}")]
    Io { path: String, msg: String },
    #[error("chip spec {path}: field `{field}`: {msg}")]
    MalformedSpec {
        path: String,
        field: String,
        msg: String,
    },
    #[error("chip spec {spec}: `{field}` {msg}")]
    InvalidSpec {
        spec: String,
        field: String,
        msg: String,
    },
    #[error(
        "chip spec {spec}: a slice of {slice} bytes is larger than the chip's {chip} bytes of SRAM"
    )]
    SliceLargerThanChip {
        spec: String,
        slice: usize,
        chip: usize,
    },
    #[error("a slice of {slice} bytes does not fit one workgroup: this GPU adapter allows at most {limit} bytes of workgroup storage (max_compute_workgroup_storage_size); choose a slice of at most {limit} bytes")]
    SliceOverAdapterLimit { slice: usize, limit: usize },
    #[error("the model needs {needed} chips, but at most {given} were allowed")]
    TooFewChips { needed: usize, given: usize },
    #[error("{piece} cannot be split further and needs {bytes} bytes, but {container} holds only {limit} bytes")]
    Unsplittable {
        piece: String,
        bytes: usize,
        container: String,
        limit: usize,
    },
    #[error("invalid placement options: {0}")]
    InvalidOptions(String),
    #[error("tensor list does not match the model config: {0}")]
    BadTensors(String),
    /// A model feature SRAM mode does not run (see `exec::sram::unsupported_in_sram`).
    #[error("{0}")]
    Unsupported(String),
}
