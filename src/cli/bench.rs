//! `sramlm bench`: VRAM and SRAM mode side by side, measured and modeled, each
//! output checked against the other modes' and the reference.

use super::session::{build_executor, ExecSettings, BATCH_LIMIT, MAX_BATCH};
use super::{load_model, ChipArgs, GpuArgs, Mode};
use anyhow::{bail, Context, Result};
use clap::Args;
use sramlm::gpu::Gpu;
use sramlm::model::{self, Model};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct BenchArgs {
    /// Model folder (Hugging Face) or .gguf file [default: the embedded models/stories260K]
    #[arg(short, long)]
    pub(super) model: Option<PathBuf>,
    /// Modes to run, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "vram,sram")]
    pub(super) modes: Vec<String>,
    /// Prompt tokens [default: the model's longest reference prompt, so the output can be checked]
    #[arg(long)]
    pub(super) prompt_len: Option<usize>,
    /// Tokens to generate per run (greedy)
    #[arg(long, default_value_t = 32)]
    pub(super) gen: usize,
    /// Timed runs per mode (after one warm-up run)
    #[arg(long, default_value_t = 3)]
    pub(super) repeat: usize,
    /// Sequences decoded together; several sizes (e.g. 1,4,16) give one row
    /// each (VRAM: one matvec over all rows; SRAM: each a pipeline micro-batch)
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub(super) batch: Vec<usize>,
    /// KV-cache length [default: prompt + generation, rounded up to 64]
    #[arg(long)]
    pub(super) ctx: Option<usize>,
    /// Prompt tokens per pipeline micro-batch (SRAM mode)
    #[arg(long, default_value_t = sramlm::chip::DEFAULT_MICROBATCH)]
    pub(super) microbatch: usize,
    /// Write one JSON record per model × mode to FILE
    #[arg(long)]
    pub(super) json: Option<PathBuf>,
    /// Write a latency chart (measured next to modeled) to FILE
    #[arg(long)]
    pub(super) svg: Option<PathBuf>,
    /// Every column of the table (wider than 100 columns)
    #[arg(long)]
    pub(super) wide: bool,
    #[command(flatten)]
    pub(super) chip: ChipArgs,
    #[command(flatten)]
    pub(super) gpu: GpuArgs,
}

/// The reference fixture for a known model: (prompt ids, greedy continuation).
fn reference_for(m: &Model) -> Option<(Vec<u32>, sramlm::bench::RefContinuation)> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (dir, name) = if m.config.vocab_size == 512 && m.name.contains("stories260K") {
        ("stories260K", "stories260K")
    } else if m.config.vocab_size == 49152 && m.name.contains("SmolLM2-135M-Instruct") {
        ("smollm2", "SmolLM2-135M-Instruct-Q4_1")
    } else {
        return None;
    };
    let text = std::fs::read_to_string(fixtures.join(dir).join(format!("{name}.json"))).ok()?;
    let fixture: RefFixture = serde_json::from_str(&text).ok()?;
    // The longest plain prompt.
    let p = fixture
        .prompts
        .into_iter()
        .filter(|p| p.chat_messages.is_none())
        .max_by_key(|p| p.input_ids.len())?;
    Some((
        p.input_ids,
        sramlm::bench::RefContinuation {
            source: format!(
                "tests/fixtures/{dir} {} (Hugging Face transformers, float32)",
                p.key.as_deref().unwrap_or("?")
            ),
            ids: p.greedy?.new_ids,
        },
    ))
}

/// The part of a reference fixture (tests/fixtures/*/*.json) bench uses.
#[derive(serde::Deserialize)]
struct RefFixture {
    prompts: Vec<RefPrompt>,
}

#[derive(serde::Deserialize)]
struct RefPrompt {
    key: Option<String>,
    input_ids: Vec<u32>,
    /// Present on chat prompts (their ids include a template).
    chat_messages: Option<serde::de::IgnoredAny>,
    greedy: Option<RefGreedy>,
}

#[derive(serde::Deserialize)]
struct RefGreedy {
    new_ids: Vec<u32>,
}

/// The git revision this binary was built from (see build.rs).
fn git_revision() -> String {
    env!("SRAMLM_GIT_REV").to_string()
}

pub(super) fn run(a: BenchArgs) -> Result<()> {
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if a.gen == 0 {
        bail!("--gen must be at least 1");
    }
    if a.batch.contains(&0) {
        bail!("--batch must be at least 1");
    }
    if let Some(b) = a.batch.iter().find(|&&b| b > MAX_BATCH) {
        bail!("--batch {b}: {BATCH_LIMIT}");
    }
    if a.prompt_len == Some(0) || a.microbatch == 0 {
        bail!("--prompt-len and --microbatch must be at least 1");
    }
    let mut modes = Vec::new();
    for md in &a.modes {
        match md.trim() {
            "vram" => modes.push(Mode::Vram),
            "sram" => modes.push(Mode::Sram),
            other => bail!("unknown mode `{other}` in --modes (expected vram and/or sram)"),
        }
    }
    {
        let mut outputs: Vec<(&str, &std::path::Path)> = Vec::new();
        if let Some(p) = &a.json {
            outputs.push(("--json", p));
        }
        if let Some(p) = &a.svg {
            outputs.push(("--svg", p));
        }
        let model_path = a.model.clone().unwrap_or_else(model::default_model_path);
        let mut inputs = sramlm::bench::output::model_inputs(&model_path);
        if let Some(chip) = a.chip.chip.as_deref() {
            if std::path::Path::new(chip).is_file() {
                inputs.push(PathBuf::from(chip));
            }
        }
        sramlm::bench::output::check_outputs(&outputs, &inputs)?;
    }
    if a.chip.given() && !modes.contains(&Mode::Sram) {
        bail!("--chip, --chips, --slice and --tp describe SRAM mode: add sram to --modes");
    }
    let spec = if modes.contains(&Mode::Sram) {
        Some(a.chip.spec()?)
    } else {
        None
    };
    let m = load_model(a.model.as_ref())?;
    let reference = reference_for(&m);
    let (prompt, ref_cont) = match (a.prompt_len, &reference) {
        (None, Some((ids, r))) => (ids.clone(), Some(r.clone())),
        (Some(p), Some((ids, r))) if p == ids.len() => (ids.clone(), Some(r.clone())),
        (p, _) => {
            let p = p.unwrap_or(32);
            let base = m.tokenizer.encode("Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.")?;
            (
                base.iter().cycle().take(p).copied().collect::<Vec<u32>>(),
                None,
            )
        }
    };
    let need = prompt.len() + a.gen;
    let ctx = a
        .ctx
        .unwrap_or(need.div_ceil(64) * 64)
        .min(m.config.max_position_embeddings);
    if need > ctx || need > m.config.max_position_embeddings {
        bail!(
            "prompt ({}) + generation ({}) = {need} tokens exceeds the context window ({})",
            prompt.len(),
            a.gen,
            ctx.min(m.config.max_position_embeddings)
        );
    }
    let gpu = Gpu::new(&a.gpu.options()?)?;
    eprintln!("adapter: {}", gpu.describe());
    let total = (modes.len() * a.batch.len() * (a.repeat + 1) * a.gen.saturating_sub(1)) as u64;
    // (with --batch, a step is one decode round of every sequence)
    let pb = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>24} [{bar:40}] {pos}/{len} decode steps ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let measured_gpu = if modes.contains(&Mode::Vram) {
        pb.set_message("calibrating");
        let c = sramlm::bench::calibrate::calibrate(&gpu)?;
        Some(sramlm::chip::GpuSpec::measured(
            &format!("measured {}", gpu.info.name),
            c.copy_bytes_per_s,
            f64::INFINITY,
            c.dispatch_s,
            c.submit_wait_s,
        ))
    } else {
        None
    };
    let mut results = Vec::new();
    let mut plans = Vec::new();
    for (mode, batch) in modes
        .iter()
        .flat_map(|md| a.batch.iter().map(move |&b| (md, b)))
    {
        pb.set_message(format!("{} {:?}", m.name, mode));
        let (mut exec, plan) = build_executor(
            &gpu,
            &m,
            &ExecSettings {
                chip: match mode {
                    Mode::Vram => None,
                    Mode::Sram => Some(
                        spec.as_ref()
                            .ok_or_else(|| anyhow::anyhow!("no chip spec"))?,
                    ),
                },
                max_chips: a.chip.chips,
                ctx,
                batch,
                chunk: sramlm::exec::vram::DEFAULT_CHUNK,
                microbatch: a.microbatch,
                tp: a.chip.tp,
                resident: a.chip.resident,
            },
        )?;
        let mut tick = |n: u64| pb.inc(n);
        let mut r = if batch > 1 {
            sramlm::bench::bench_batch(
                exec.as_mut(),
                &m,
                &prompt,
                a.gen,
                a.repeat,
                batch,
                &mut tick,
            )?
        } else {
            sramlm::bench::bench_mode(exec.as_mut(), &m, &prompt, a.gen, a.repeat, &mut tick)?
        };
        if let Some(p) = &plan {
            r.chip = Some(p.spec.name.clone());
            r.chips_used = Some(p.totals.chips_used);
        }
        results.push(r);
        plans.push(plan);
    }
    pb.finish_and_clear();
    sramlm::bench::check_parity(&mut results, ref_cont.as_ref());
    for (r, plan) in results.iter_mut().zip(&plans) {
        sramlm::bench::add_models(r, plan.as_ref(), spec.as_ref(), measured_gpu.as_ref(), &m);
    }
    if a.wide {
        print!("{}", sramlm::bench::table(&results));
    } else {
        print!("{}", sramlm::bench::table_narrow(&results));
    }
    match &ref_cont {
        Some(r) => println!(
            "reference: {} — first {} tokens compared",
            r.source,
            r.ids.len().min(a.gen)
        ),
        None => println!("reference: none for this prompt (modes compared with each other only)"),
    }
    let rev = git_revision();
    if let Some(path) = &a.json {
        let records: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "model": r.model,
                    "mode": r.mode,
                    "adapter": gpu.info.name,
                    "backend": format!("{:?}", gpu.info.backend),
                    "device_type": format!("{:?}", gpu.info.device_type),
                    "driver": format!("{} {}", gpu.info.driver, gpu.info.driver_info),
                    "git_revision": rev,
                    "settings": {
                        "prompt_tokens": prompt.len(), "gen": a.gen, "repeat": a.repeat, "batch": r.batch,
                        "ctx": ctx, "microbatch": a.microbatch, "chip": spec.as_ref().map(|s| s.name.clone()),
                        "slice_bytes": spec.as_ref().map(|s| s.slice_bytes), "max_chips": a.chip.chips, "tp": a.chip.tp,
                        "feature_level": gpu.level,
                    },
                    "result": r,
                })
            })
            .collect();
        sramlm::bench::output::write_atomic(
            path,
            serde_json::to_string_pretty(&records)?.as_bytes(),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &a.svg {
        let series: Vec<sramlm::bench::svg::Series> = results
            .iter()
            .flat_map(|r| {
                let label = match (&r.chip, r.chips_used) {
                    (Some(c), Some(n)) => {
                        format!("{} · {} ({c} × {n} chips)", r.model, r.mode.to_uppercase())
                    }
                    _ => format!("{} · {}", r.model, r.mode.to_uppercase()),
                };
                let mut v = vec![sramlm::bench::svg::Series {
                    label,
                    measured_ms: r.ms_per_token_all.clone(),
                    modeled_ms: r.modeled_ms_per_token,
                    modeled_label: r.modeled_what.clone(),
                    valid: r.valid,
                }];
                if let (Some(ms), Some(what)) =
                    (r.modeled_reference_ms_per_token, &r.modeled_reference_what)
                {
                    v.push(sramlm::bench::svg::Series {
                        label: format!(
                            "{} · {} on H100 (modeled only)",
                            r.model,
                            r.mode.to_uppercase()
                        ),
                        measured_ms: vec![],
                        modeled_ms: Some(ms),
                        modeled_label: Some(what.clone()),
                        valid: r.valid,
                    });
                }
                v
            })
            .collect();
        let subtitle = format!(
            "{} · {:?} · {} {} · git {rev}",
            gpu.info.name, gpu.info.backend, gpu.info.driver, gpu.info.driver_info
        );
        let svg = sramlm::bench::svg::latency_chart(
            &format!("sramlm bench: per-token decode latency, {}", m.name),
            &subtitle,
            &series,
        );
        sramlm::bench::output::write_atomic(path, svg.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
