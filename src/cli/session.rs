//! The one place that builds an executor: a loaded model, the GPU and the
//! executor of the chosen mode (with its placement in SRAM mode), as every
//! subcommand that runs the model uses them.

use super::{human_bytes, load_model, spinner, Mode, RunArgs};
use anyhow::{bail, Result};
use sramlm::chat::{self, ChatError, Message};
use sramlm::chip::{place_tp, ChipSpec, PlaceOptions, Plan, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::Executor;
use sramlm::generate::{GenStats, GenerateOptions};
use sramlm::gpu::Gpu;
use sramlm::model::{self, Model};
use sramlm::sampling::SamplingOptions;
use std::sync::Arc;

/// How many KV-cache positions a run needs, once the model is loaded.
pub(super) type NeedFn<'a> = dyn Fn(&Model) -> Result<usize> + 'a;

/// Most sequences decoded together in SRAM mode. Each sequence's KV cache
/// takes SRAM, so the emulated cluster grows with the batch, and the emulator
/// runs every chip for every sequence one after another: a decode round costs
/// about batch × chips dispatches, quadratic in the batch.
pub(super) const MAX_BATCH: usize = 32;
pub(super) const BATCH_LIMIT: &str = "at most 32 sequences are decoded together (the emulated cluster grows with the batch and the emulator runs its chips one after another, so time grows with the square of the batch); split them over several runs";

/// KV-cache length when --ctx is not given and the model's window is longer:
/// the cache is allocated up front, so a model declaring 131,072 positions
/// would otherwise take gigabytes to generate a few tokens.
const DEFAULT_CTX: usize = sramlm::chip::DEFAULT_CONTEXT;

/// Both modes keep each layer's K and V cache (and the RoPE table) in one
/// buffer of `ctx` rows: refuse a --ctx the adapter cannot hold, naming the
/// flag and the largest value that fits, before anything is allocated.
fn check_ctx_fits(cfg: &model::LlamaConfig, ctx: usize, gpu: &Gpu) -> Result<()> {
    // Per position: a layer's K (or V) cache row, or the RoPE table's cos/sin
    // row (head_dim floats; the table has a few words more at its end).
    let row = 4u64 * (cfg.num_kv_heads * cfg.head_dim).max(cfg.head_dim).max(1) as u64;
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let max_ctx = limit.saturating_sub(64) / row;
    if ctx as u64 > max_ctx {
        bail!(
            "--ctx {ctx} is more than this adapter can hold: each layer's KV cache needs {} bytes per position in one buffer of at most {limit} bytes, so --ctx can be at most {max_ctx}",
            row
        );
    }
    Ok(())
}

/// A loaded model with its executor, ready to generate.
pub(super) struct Session {
    pub(super) m: Model,
    pub(super) gpu: Arc<Gpu>,
    pub(super) exec: Box<dyn Executor>,
    pub(super) plan: Option<Plan>,
    pub(super) ctx: usize,
    pub(super) opts: GenerateOptions,
}

impl RunArgs {
    pub(super) fn check(&self) -> Result<SamplingOptions> {
        if self.max_tokens == 0 {
            bail!("-n/--max-tokens must be at least 1");
        }
        if self.chunk == 0 {
            bail!("--chunk must be at least 1");
        }
        if self.ctx == Some(0) {
            bail!("--ctx must be at least 1");
        }
        if self.microbatch == 0 {
            bail!("--microbatch must be at least 1");
        }
        let sampling = SamplingOptions {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            min_p: self.min_p,
        };
        if self.stop.iter().any(|s| s.is_empty()) {
            bail!("--stop needs a non-empty text");
        }
        if self.mode == Some(Mode::Vram) && self.chip.given() {
            bail!("--chip, --chips, --slice and --tp describe SRAM mode: drop them or use --mode sram");
        }
        sampling.validate().map_err(anyhow::Error::msg)?;
        Ok(sampling)
    }

    /// The mode: as given, else SRAM when a chip option is given.
    pub(super) fn mode(&self) -> Mode {
        match self.mode {
            Some(m) => m,
            None if self.chip.given() => Mode::Sram,
            None => Mode::Vram,
        }
    }

    /// Loads the model, opens the GPU and builds the executor of the mode.
    pub(super) fn session(&self) -> Result<Session> {
        self.session_for(1, None)
    }

    /// As `session`, with KV caches for `batch` sequences (SRAM mode). Without
    /// --ctx, `need` (when given) says how many positions the run needs: the
    /// KV cache is sized to that, rounded up to 64, instead of the window.
    pub(super) fn session_for(&self, batch: usize, need: Option<&NeedFn>) -> Result<Session> {
        let sampling = self.check()?;
        if self.mode.is_none() && self.chip.given() {
            eprintln!("note: --chip implies --mode sram (emulated SRAM-only chips)");
        }
        let spec = if self.mode() == Mode::Sram {
            Some(self.chip.spec()?)
        } else {
            None
        };
        let m = load_model(self.model.as_ref())?;
        let window = m.config.max_position_embeddings;
        let wanted = match need {
            Some(f) if self.ctx.is_none() => Some(f(&m)?.div_ceil(64).saturating_mul(64)),
            _ => None,
        };
        let ctx = self
            .ctx
            .or(wanted.map(|w| w.min(window)))
            .unwrap_or(window.min(DEFAULT_CTX));
        if self.ctx.is_none() && wanted.is_none() && window > DEFAULT_CTX {
            eprintln!(
                "note: KV cache sized for {DEFAULT_CTX} tokens (the model's window is {window}); use --ctx to ask for more"
            );
        }
        if ctx > window {
            bail!("--ctx {ctx} is larger than the model's context window ({window})");
        }
        let gpu = Gpu::new(&self.gpu.options()?)?;
        eprintln!("adapter: {}", gpu.describe());
        // Both modes keep each layer's KV cache and the RoPE table in one
        // buffer of `ctx` rows.
        check_ctx_fits(&m.config, ctx, &gpu)?;
        let pb = spinner(match spec {
            None => "building GPU pipelines and uploading weights",
            Some(_) => "placing the model on chips, building pipelines",
        });
        let (exec, plan) = build_executor(
            &gpu,
            &m,
            &ExecSettings {
                chip: spec.as_ref(),
                max_chips: self.chip.chips,
                ctx,
                batch,
                chunk: self.chunk,
                microbatch: self.microbatch,
                tp: self.chip.tp,
                resident: self.chip.resident,
            },
        )?;
        pb.finish_and_clear();
        let opts = GenerateOptions {
            max_tokens: self.max_tokens,
            sampling,
            ignore_eos: self.ignore_eos,
            stop_ids: vec![],
            stop_strings: self.stop.clone(),
            cancel: None,
        };
        Ok(Session {
            m,
            gpu,
            exec,
            plan,
            ctx,
            opts,
        })
    }
}

impl Session {
    /// Tokenizes prompt text, refusing text far longer than the context can
    /// hold before the (slow) tokenizer runs over it.
    pub(super) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let max = self.ctx.saturating_mul(1024).max(1 << 20);
        if text.len() > max {
            bail!(
                "the prompt is {} bytes, far more than a context of {} tokens holds (at most {max} bytes are tokenized); raise --ctx or shorten it",
                text.len(),
                self.ctx
            );
        }
        Ok(self.m.tokenizer.encode(text)?)
    }

    pub(super) fn check_prompt(&self, ids: &[u32]) -> Result<()> {
        if ids.len() > self.ctx {
            bail!(
                "the prompt has {} tokens but the context window is {} tokens",
                ids.len(),
                self.ctx
            );
        }
        Ok(())
    }

    /// Chat prompt text for `messages` (with the assistant turn opened).
    pub(super) fn chat_text(&self, messages: &[Message]) -> Result<String> {
        Ok(render_chat(&self.m, messages)?)
    }

    /// End-of-turn tokens a chat stops at, besides EOS.
    pub(super) fn turn_stops(&self) -> Vec<u32> {
        ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"]
            .iter()
            .filter_map(|t| self.m.tokenizer.token_to_id(t))
            .collect()
    }

    pub(super) fn print_stats(&self, s: &GenStats) {
        eprintln!(
            "[{}] prefill: {} tokens, {:.1} tok/s | decode: {} tokens, {:.1} tok/s | {} dispatches/token | weights on GPU: {}",
            self.exec.mode(),
            s.prompt_tokens,
            s.prefill_tok_s,
            s.generated_tokens,
            s.decode_tok_s,
            s.dispatches_per_token,
            human_bytes(s.weight_bytes_gpu)
        );
        if let Some(plan) = &self.plan {
            let x = self.exec.sram_report().map(|r| r.stats).unwrap_or_default();
            eprintln!(
                "[sram] chip {} x {} (slice {}) | SRAM used per chip: max {} / mean {} of {} | link traffic: {}/token over {} transfers | emulation overhead (not a chip cost): {} staged from GPU memory into workgroup SRAM per step",
                plan.spec.name,
                plan.totals.chips_used,
                human_bytes(plan.spec.slice_bytes as u64),
                human_bytes(plan.totals.sram_used_max as u64),
                human_bytes(plan.totals.sram_used_mean as u64),
                human_bytes(plan.spec.sram_bytes as u64),
                human_bytes(x.link_bytes_per_token as u64),
                x.link_transfers_per_token,
                human_bytes(x.emulation_staged_bytes_per_step),
            );
            if let Some(r) = &x.resident {
                eprintln!(
                    "[sram] resident: {}/{} weight slices resident ({:.1}%), {} workgroups ({} workers) of {} co-resident, up to {} tokens per dispatch",
                    r.resident_slices,
                    r.weight_slices,
                    100.0 * r.resident_fraction,
                    r.workgroups,
                    r.worker_workgroups,
                    r.capacity,
                    sramlm::exec::sram::resident::CHUNK_TOKENS
                );
            }
        }
    }

    pub(super) fn stats_json(&self, s: &GenStats) -> Result<serde_json::Value> {
        let mut stats = serde_json::to_value(s)?;
        stats["adapter"] = serde_json::json!(self.gpu.info.name);
        stats["backend"] = serde_json::json!(format!("{:?}", self.gpu.info.backend));
        stats["model"] = serde_json::json!(self.m.name);
        if let Some(plan) = &self.plan {
            /// SRAM mode's part of the JSON: the executor's report and the plan's figures.
            #[derive(serde::Serialize)]
            struct SramJson {
                #[serde(flatten)]
                report: Option<sramlm::exec::sram::SramReport>,
                sram_capacity_bytes: usize,
                placement_link_bytes_per_token: usize,
            }
            stats["sram"] = serde_json::to_value(SramJson {
                report: self.exec.sram_report(),
                sram_capacity_bytes: plan.spec.sram_bytes,
                placement_link_bytes_per_token: plan.totals.link_bytes_per_token,
            })?;
        }
        Ok(stats)
    }
}

/// Chat prompt text for `messages` with the model's template (assistant turn opened).
pub(super) fn render_chat(m: &Model, messages: &[Message]) -> Result<String, ChatError> {
    let tmpl = m.chat_template.as_deref().ok_or(ChatError::NoTemplate)?;
    let tok = |id: Option<u32>| {
        id.and_then(|i| m.tokenizer.id_to_token(i))
            .unwrap_or_default()
    };
    chat::render(
        tmpl,
        messages,
        true,
        &tok(m.config.bos_token_id),
        &tok(m.config.eos_token_ids.first().copied()),
    )
}

/// The placement for a loaded model.
pub(super) fn plan_for(
    m: &Model,
    spec: &ChipSpec,
    max_chips: Option<usize>,
    ctx: usize,
    batch: usize,
    microbatch: usize,
    tp: usize,
) -> Result<Plan> {
    let mut opts = PlaceOptions::for_config(&m.config);
    opts.max_chips = max_chips;
    opts.context_len = ctx;
    opts.batch = batch;
    // (the executor runs at most `ctx` tokens per micro-batch)
    opts.microbatch_tokens = microbatch.min(ctx);
    place_tp(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        spec,
        &opts,
        tp,
    )
    .map_err(|e| {
        let msg = e.to_string();
        if msg.contains("activation scratch") {
            anyhow::anyhow!(
                "{msg}: the scratch holds the activations of --microbatch {} tokens; lower --microbatch",
                opts.microbatch_tokens
            )
        } else {
            e.into()
        }
    })
}

/// Everything that shapes an executor (and, in SRAM mode, its placement).
pub(super) struct ExecSettings<'a> {
    /// The chip to emulate: SRAM mode; `None`: VRAM mode.
    pub(super) chip: Option<&'a ChipSpec>,
    /// Most chips the placement may use (`--chips`).
    pub(super) max_chips: Option<usize>,
    /// KV-cache positions per sequence.
    pub(super) ctx: usize,
    /// Sequences with a resident KV cache.
    pub(super) batch: usize,
    /// Most prompt tokens per batched prefill pass (VRAM mode).
    pub(super) chunk: usize,
    /// Prompt tokens per pipeline micro-batch (SRAM mode).
    pub(super) microbatch: usize,
    /// Tensor-parallel degree (`--tp`, SRAM mode).
    pub(super) tp: usize,
    /// Resident greedy decoding where the litmus admits it (SRAM mode).
    pub(super) resident: bool,
}

/// Builds the executor of the mode `s` describes for a loaded model: VRAM
/// mode directly, SRAM mode after checking the chip's slice against the
/// adapter and placing the model (the plan is returned with it).
pub(super) fn build_executor(
    gpu: &Arc<Gpu>,
    m: &Model,
    s: &ExecSettings,
) -> Result<(Box<dyn Executor>, Option<Plan>)> {
    match s.chip {
        None => {
            let e = VramExecutor::new_batched(
                gpu.clone(),
                &m.config,
                &m.weights,
                &VramOptions {
                    context: Some(s.ctx),
                    chunk: s.chunk,
                },
                s.batch,
            )?;
            Ok((Box::new(e), None))
        }
        Some(spec) => {
            spec.check_slice_against_limit(gpu.limits.max_compute_workgroup_storage_size)?;
            let plan = plan_for(m, spec, s.max_chips, s.ctx, s.batch, s.microbatch, s.tp)?;
            let e = SramExecutor::new(
                gpu.clone(),
                &m.config,
                &m.weights,
                &plan,
                &SramOptions {
                    image_split_bytes: None,
                    task_order: None,
                    batch: s.batch,
                    context: Some(s.ctx),
                    microbatch: s.microbatch,
                },
            )?;
            let mut e = e;
            if s.resident {
                e.set_resident(resident_capacity(gpu, spec.slice_bytes)?);
            }
            Ok((Box::new(e), Some(plan)))
        }
    }
}

/// The co-resident workgroups resident mode may use on this adapter: the
/// litmus's (cached per adapter and driver), or `SRAMLM_RESIDENT_CAPACITY`
/// (tests: forces the capacity). `None`, with a one-line notice naming the
/// measured reason, where resident mode is refused (stepped mode runs).
fn resident_capacity(gpu: &Gpu, slice_bytes: usize) -> Result<Option<usize>> {
    let forced = match std::env::var("SRAMLM_RESIDENT_CAPACITY") {
        Ok(v) if !v.is_empty() => Some(v.parse::<usize>().map_err(|_| {
            anyhow::anyhow!("SRAMLM_RESIDENT_CAPACITY={v:?}: expected a workgroup count")
        })?),
        _ => None,
    };
    let (cap, why) = match forced {
        Some(c) => (c, format!("SRAMLM_RESIDENT_CAPACITY={c}")),
        None => {
            let (l, _) = sramlm::gpu::litmus::cached_or_measure(gpu, slice_bytes as u32)?;
            (l.capacity() as usize, l.reason.clone())
        }
    };
    if cap < 2 {
        eprintln!("resident mode refused ({why}); running stepped SRAM mode");
        return Ok(None);
    }
    Ok(Some(cap))
}
