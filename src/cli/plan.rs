//! `sramlm plan`: place a model (or a bare config) onto emulated SRAM-only chips.

use super::session::plan_for;
use super::{load_model, ChipArgs, Format};
use anyhow::{bail, Context, Result};
use clap::Args;
use sramlm::chip::{plan_json, plan_table, PlaceOptions, TensorInfo};
use sramlm::model;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct PlanArgs {
    /// Model folder (Hugging Face) or .gguf file [default: the embedded models/stories260K]
    #[arg(short, long, conflicts_with = "config")]
    pub(super) model: Option<PathBuf>,
    /// Plan from a Hugging Face config.json alone (no weights), e.g. models/configs/llama-2-70b.json
    #[arg(long)]
    pub(super) config: Option<PathBuf>,
    /// With --config: weight encoding to assume for the matrices (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, int8)
    #[arg(long, default_value = "f16")]
    pub(super) weights: String,
    /// KV-cache positions per sequence [default: the model's context window, at most 4096, as `generate`]
    #[arg(long)]
    pub(super) ctx: Option<usize>,
    /// Sequences whose KV cache is resident
    #[arg(long, default_value_t = 1)]
    pub(super) batch: usize,
    /// Prompt tokens per pipeline micro-batch (sizes each chip's scratch; as `generate`/`bench`)
    #[arg(long, default_value_t = sramlm::chip::DEFAULT_MICROBATCH)]
    pub(super) microbatch: usize,
    /// Output: a table, or the plan as JSON
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(super) format: Format,
    /// Instead of one plan: chips needed and modeled tok/s per user at int8,
    /// Q8_0 and fp16 weights (fp16 KV cache, full context), e.g. for Llama-2-70B
    #[arg(long)]
    pub(super) study: bool,
    /// Every weight block of every chip (lines wider than 100 columns)
    #[arg(long)]
    pub(super) wide: bool,
    #[command(flatten)]
    pub(super) chip: ChipArgs,
}

/// `plan --ctx`: the model's window by default, never more.
fn plan_ctx(ctx: Option<usize>, cfg: &model::LlamaConfig) -> Result<usize> {
    let window = cfg.max_position_embeddings;
    match ctx {
        Some(0) => bail!("--ctx must be at least 1"),
        Some(c) if c > window => {
            bail!("--ctx {c} is larger than the model's context window ({window})")
        }
        Some(c) => Ok(c),
        None => Ok(window.min(sramlm::chip::DEFAULT_CONTEXT)),
    }
}

pub(super) fn run(a: PlanArgs) -> Result<()> {
    let spec = a.chip.spec()?;
    if a.batch == 0 || a.microbatch == 0 {
        bail!("--batch and --microbatch must be at least 1");
    }
    if a.study {
        let cfg = match &a.config {
            Some(path) => model::LlamaConfig::from_hf_json(path)
                .with_context(|| format!("cannot read config {}", path.display()))?,
            None => load_model(a.model.as_ref())?.config,
        };
        if a.ctx.is_some() {
            plan_ctx(a.ctx, &cfg)?;
        }
        let json = matches!(a.format, Format::Json);
        let name = a
            .config
            .as_ref()
            .or(a.model.as_ref())
            .map_or("embedded".into(), |p| p.display().to_string());
        print!(
            "{}",
            sramlm::study::plan_study(&cfg, &name, &spec, a.ctx, a.batch, json)?
        );
        return Ok(());
    }
    let plan = match &a.config {
        Some(path) => {
            let cfg = model::LlamaConfig::from_hf_json(path)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            let fmt = sramlm::chip::WeightFormat::from_name(&a.weights).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown --weights `{}` (expected f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k or int8)",
                    a.weights
                )
            })?;
            let norms = if fmt == sramlm::chip::WeightFormat::F32 {
                fmt
            } else {
                sramlm::chip::WeightFormat::F16
            };
            let tensors = TensorInfo::from_config(&cfg, fmt, norms)?;
            let mut opts = PlaceOptions::for_config(&cfg);
            opts.max_chips = a.chip.chips;
            opts.context_len = plan_ctx(a.ctx, &cfg)?;
            opts.batch = a.batch;
            opts.microbatch_tokens = a.microbatch.min(opts.context_len);
            sramlm::chip::place_tp(&cfg, &tensors, &spec, &opts, a.chip.tp)?
        }
        None => {
            let m = load_model(a.model.as_ref())?;
            let ctx = plan_ctx(a.ctx, &m.config)?;
            plan_for(
                &m,
                &spec,
                a.chip.chips,
                ctx,
                a.batch,
                a.microbatch,
                a.chip.tp,
            )?
        }
    };
    match a.format {
        Format::Text if a.wide => print!("{}", plan_table(&plan)),
        Format::Text => print!("{}", sramlm::chip::plan_table_fit(&plan, 100)),
        Format::Json => println!("{}", plan_json(&plan)),
    }
    Ok(())
}
