//! `sramlm study` arguments and entry point (src/cli.rs only forwards here).

use super::{load_shape, render, run, NumberFormat, Objective, StudyError, StudyOptions};
use crate::chip::{ChipSpec, GpuFleetSpec};
use std::path::PathBuf;

/// Output format of `sramlm study`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StudyFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectiveArg {
    /// Lowest time per token per user
    Latency,
    /// Fewest chips / GPUs
    Chips,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StudyArgs {
    /// A Hugging Face config.json, a model folder with one, or a .gguf (only
    /// its header is read) [default: the embedded models/stories260K]
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Concurrent users (each with its own KV cache of --ctx positions)
    #[arg(long, default_value_t = 1)]
    pub users: usize,
    /// KV positions per user [default: the model's context window]
    #[arg(long)]
    pub ctx: Option<usize>,
    /// SRAM chip preset (groq-v1, mini-64k, mini-4m) or JSON spec file
    #[arg(long, default_value = "groq-v1")]
    pub chip: String,
    /// GPU preset (h100-sxm, h200, b200) or JSON GPU spec file (see models/gpus/)
    #[arg(long, default_value = "h100-sxm")]
    pub gpu: String,
    /// Weight precision on both sides (f32, f16, bf16, fp8, int8, q8_0, int4, q4_0, q4_k, q6_k)
    #[arg(long, default_value = "int8")]
    pub weights: String,
    /// KV-cache precision
    #[arg(long, default_value = "f16")]
    pub kv: String,
    /// Activation precision on the links
    #[arg(long, default_value = "f16")]
    pub activations: String,
    /// What the layout search minimizes
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Latency)]
    pub objective: ObjectiveArg,
    /// Force the SRAM side's tensor-parallel degree
    #[arg(long)]
    pub tp: Option<usize>,
    /// Force the GPU side's tensor-parallel degree
    #[arg(long)]
    pub gpu_tp: Option<usize>,
    /// Share of the time serving tokens (for J/token and $/Mtoken)
    #[arg(long, default_value_t = 0.5)]
    pub utilization: f64,
    /// Electricity price, US$ per kWh
    #[arg(long, default_value_t = 0.10)]
    pub electricity: f64,
    /// Years over which the hardware is amortized
    #[arg(long, default_value_t = 3.0)]
    pub years: f64,
    /// Override the chip's price (US$ per chip)
    #[arg(long)]
    pub chip_price: Option<f64>,
    /// Override the chip's power (W per chip)
    #[arg(long)]
    pub chip_power: Option<f64>,
    /// Override the GPU's price (US$ per GPU, server share included)
    #[arg(long)]
    pub gpu_price: Option<f64>,
    /// Override the GPU's power (W per GPU, server share included)
    #[arg(long)]
    pub gpu_power: Option<f64>,
    /// SRAM side: a fixed latency per layer per token, µs (not sourced; see docs/study.md)
    #[arg(long, default_value_t = 0.0)]
    pub layer_overhead_us: f64,
    /// SRAM side: every expert of a MoE layer is read for every token
    /// (static scheduling without data-dependent routing; a hypothesis)
    #[arg(long)]
    pub moe_all_experts: bool,
    /// Instead of one study: the validation table against published deployments
    /// (reads models/configs/ under this folder, default: the current one)
    #[arg(long, num_args = 0..=1, default_missing_value = ".")]
    pub validate: Option<PathBuf>,
    /// Output: a table, or the whole study as JSON
    #[arg(long, value_enum, default_value_t = StudyFormat::Text)]
    pub format: StudyFormat,
    /// Also write the charts (timeline; speed vs cost per token) to this SVG file
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

fn positive(flag: &str, v: Option<f64>) -> Result<Option<f64>, StudyError> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => Err(StudyError(format!(
            "{flag} must be a positive number, got {x}"
        ))),
        _ => Ok(v),
    }
}

/// Builds everything from the arguments and prints the study.
pub fn main(a: StudyArgs) -> Result<(), StudyError> {
    if let Some(root) = &a.validate {
        let rows = super::validation::validate(&root.join("models/configs"))?;
        match a.format {
            StudyFormat::Text => print!("{}", super::validation::markdown(&rows)),
            StudyFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&rows).expect("rows serialize")
            ),
        }
        return Ok(());
    }
    let shape = load_shape(a.model.as_deref())?;
    let mut spec = ChipSpec::resolve(&a.chip).map_err(|e| StudyError(e.to_string()))?;
    if let Some(p) = positive("--chip-price", a.chip_price)? {
        spec.economics.price_usd = Some(p);
    }
    if let Some(p) = positive("--chip-power", a.chip_power)? {
        spec.economics.power_w = Some(p);
    }
    let mut gpu = GpuFleetSpec::resolve(&a.gpu).map_err(StudyError)?;
    if let Some(p) = positive("--gpu-price", a.gpu_price)? {
        gpu.price_usd = p;
    }
    if let Some(p) = positive("--gpu-power", a.gpu_power)? {
        gpu.power_w = p;
    }
    let mut o = StudyOptions::new(a.users, a.ctx.unwrap_or(shape.context_window));
    o.weights = NumberFormat::parse(&a.weights)?;
    o.kv = NumberFormat::parse(&a.kv)?;
    o.activations = NumberFormat::parse(&a.activations)?;
    o.objective = match a.objective {
        ObjectiveArg::Latency => Objective::Latency,
        ObjectiveArg::Chips => Objective::Chips,
    };
    o.tp = a.tp;
    o.gpu_tp = a.gpu_tp;
    o.utilization = a.utilization;
    o.electricity_usd_per_kwh = a.electricity;
    o.amortization_years = a.years;
    o.layer_overhead_s = a.layer_overhead_us * 1e-6;
    o.moe_all_experts = a.moe_all_experts;
    let report = run(&shape, &spec, &gpu, &o)?;
    if let Some(path) = &a.svg {
        if path.is_dir() {
            return Err(StudyError(format!("--svg {}: is a folder", path.display())));
        }
        std::fs::write(path, render::svg(&report))
            .map_err(|e| StudyError(format!("--svg {}: {e}", path.display())))?;
    }
    match a.format {
        StudyFormat::Text => print!("{}", render::table(&report)),
        StudyFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serializes")
        ),
    }
    Ok(())
}
