//! Command-line interface: one defaults block (the clap structs) and one
//! function per subcommand.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sramlm::chip::{place, plan_json, plan_table, ChipSpec, PlaceOptions, Plan, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::Executor;
use sramlm::generate::{generate, GenerateOptions};
use sramlm::gpu::{self, BackendChoice, Gpu, GpuOptions};
use sramlm::model::{self, Model};
use sramlm::sampling::SamplingOptions;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "sramlm",
    version,
    about = "Run Llama-family language models on any GPU through wgpu, in VRAM mode or as an emulated SRAM-only (LPU-style) chip cluster",
    after_help = "Examples:\n  sramlm generate \"Once upon a time\"            # embedded stories260K model\n  sramlm generate -n 32 --temperature 0 --format json \"Once upon a time\"\n  sramlm info                                    # adapters, limits, features"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a continuation of PROMPT (or of standard input with `-`).
    Generate(GenerateArgs),
    /// Show every GPU adapter, the limits and features sramlm uses, which one
    /// would be picked, and (with -m) a model summary.
    Info(InfoArgs),
    /// Place a model onto emulated SRAM-only chips: which chip holds which
    /// layers and weight blocks, SRAM used, link traffic per token.
    Plan(PlanArgs),
}

#[derive(Args, Debug, Clone)]
struct ChipArgs {
    /// Chip to emulate: a preset (groq-v1, mini-64k, mini-4m) or a JSON spec file
    #[arg(long, default_value = "groq-v1")]
    chip: String,
    /// Most chips the placement may use (error if the model needs more)
    #[arg(long)]
    chips: Option<usize>,
    /// SRAM slice = one workgroup's shared-memory budget, in bytes [default: the spec's, 16384]
    #[arg(long)]
    slice: Option<usize>,
}

impl ChipArgs {
    fn spec(&self) -> Result<ChipSpec> {
        let mut spec = ChipSpec::resolve(&self.chip)?;
        if let Some(s) = self.slice {
            spec = spec.with_slice_bytes(s)?;
        }
        if self.chips == Some(0) {
            bail!("--chips must be at least 1");
        }
        Ok(spec)
    }
}

#[derive(Args, Debug)]
struct PlanArgs {
    /// Model folder (Hugging Face) or .gguf file [default: the embedded models/stories260K]
    #[arg(short, long, conflicts_with = "config")]
    model: Option<PathBuf>,
    /// Plan from a Hugging Face config.json alone (no weights), e.g. models/configs/llama-2-70b.json
    #[arg(long)]
    config: Option<PathBuf>,
    /// With --config: weight encoding to assume for the matrices (f32, f16, bf16, q8_0, q4_0, q4_1, int8)
    #[arg(long, default_value = "f16")]
    weights: String,
    /// KV-cache positions per sequence [default: the model's context window]
    #[arg(long)]
    ctx: Option<usize>,
    /// Sequences whose KV cache is resident
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Output: a table, or the plan as JSON
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    chip: ChipArgs,
}

#[derive(Args, Debug, Clone)]
struct GpuArgs {
    /// GPU backend [env: SRAMLM_BACKEND]
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
    /// Pick the adapter whose name contains this text (case-insensitive) [env: SRAMLM_ADAPTER]
    #[arg(long)]
    adapter: Option<String>,
}

impl GpuArgs {
    fn options(&self) -> Result<GpuOptions> {
        let mut o = GpuOptions::from_env()?;
        if let Some(b) = self.backend {
            o.backend = b;
        }
        if let Some(a) = &self.adapter {
            o.adapter = Some(a.clone());
        }
        Ok(o)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// All weights in GPU memory (conventional).
    Vram,
    /// Emulated cluster of SRAM-only chips.
    Sram,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Prompt text; `-` reads it from standard input. Empty: start from BOS.
    prompt: Option<String>,
    /// Model folder (Hugging Face) or .gguf file [default: the embedded models/stories260K]
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Most tokens to generate
    #[arg(short = 'n', long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy (arg-max on the GPU)
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample among the K most likely tokens (reduced on the GPU, K ≤ 64); 0 = whole vocabulary
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches P
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f32,
    /// Random seed (same seed, same output)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep going past the end-of-sequence token
    #[arg(long)]
    ignore_eos: bool,
    /// Execution mode
    #[arg(long, value_enum, default_value_t = Mode::Vram)]
    mode: Mode,
    /// Output: streamed text, or one JSON object at the end
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// KV-cache length in tokens [default: the model's context window]
    #[arg(long)]
    ctx: Option<usize>,
    /// Most prompt tokens per batched prefill pass (VRAM mode)
    #[arg(long, default_value_t = sramlm::exec::vram::DEFAULT_CHUNK)]
    chunk: usize,
    /// Prompt tokens per pipeline micro-batch (SRAM mode)
    #[arg(long, default_value_t = 16)]
    microbatch: usize,
    #[command(flatten)]
    chip: ChipArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// Also summarise this model (folder or .gguf)
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Command::Generate(a) => cmd_generate(a),
        Command::Info(a) => cmd_info(a),
        Command::Plan(a) => cmd_plan(a),
    }
}

/// A spinner on stderr while something slow happens (only on a terminal).
fn spinner(msg: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(100));
    pb
}

fn load_model(path: Option<&PathBuf>) -> Result<Model> {
    let path = path.cloned().unwrap_or_else(model::default_model_path);
    let pb = spinner(&format!("loading {}", path.display()));
    let m = model::load(&path).with_context(|| format!("cannot load model {}", path.display()))?;
    pb.finish_and_clear();
    Ok(m)
}

fn read_prompt(p: Option<&str>) -> Result<String> {
    match p {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            Ok(s.strip_suffix('\n').unwrap_or(&s).to_string())
        }
        Some(s) => Ok(s.to_string()),
        None => Ok(String::new()),
    }
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    if a.max_tokens == 0 {
        bail!("-n/--max-tokens must be at least 1");
    }
    if a.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    if a.ctx == Some(0) {
        bail!("--ctx must be at least 1");
    }
    let sampling = SamplingOptions {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    sampling.validate().map_err(anyhow::Error::msg)?;
    if a.microbatch == 0 {
        bail!("--microbatch must be at least 1");
    }
    let spec = if a.mode == Mode::Sram {
        Some(a.chip.spec()?)
    } else {
        None
    };
    let prompt = read_prompt(a.prompt.as_deref())?;
    let m = load_model(a.model.as_ref())?;
    let prompt_ids = m.tokenizer.encode(&prompt)?;
    let ctx = a.ctx.unwrap_or(m.config.max_position_embeddings);
    if ctx > m.config.max_position_embeddings {
        bail!(
            "--ctx {ctx} is larger than the model's context window ({})",
            m.config.max_position_embeddings
        );
    }
    if prompt_ids.len() > ctx {
        bail!(
            "the prompt has {} tokens but the context window is {ctx} tokens",
            prompt_ids.len()
        );
    }
    let gpu = Gpu::new(&a.gpu.options()?)?;
    eprintln!("adapter: {}", gpu.describe());
    let mut plan_stats = None;
    let mut exec: Box<dyn Executor> = match &spec {
        None => {
            let pb = spinner("building GPU pipelines and uploading weights");
            let e = VramExecutor::new(
                gpu.clone(),
                &m.config,
                &m.weights,
                &VramOptions {
                    context: Some(ctx),
                    chunk: a.chunk,
                },
            )?;
            pb.finish_and_clear();
            Box::new(e)
        }
        Some(spec) => {
            spec.check_slice_against_limit(gpu.limits.max_compute_workgroup_storage_size)?;
            let pb = spinner("placing the model on chips, building pipelines");
            let plan = plan_for(&m, spec, a.chip.chips, ctx, 1, a.microbatch)?;
            let e = SramExecutor::new(
                gpu.clone(),
                &m.config,
                &m.weights,
                &plan,
                &SramOptions {
                    context: Some(ctx),
                    microbatch: a.microbatch,
                },
            )?;
            pb.finish_and_clear();
            plan_stats = Some(plan);
            Box::new(e)
        }
    };
    let exec = exec.as_mut();
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling,
        ignore_eos: a.ignore_eos,
        stop_ids: vec![],
    };
    let stream = a.format == Format::Text;
    let mut out = std::io::stdout().lock();
    let g = generate(exec, &m.tokenizer, &m.config, &prompt_ids, &opts, |piece| {
        if stream {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
    })?;
    drop(out);
    let s = &g.stats;
    match a.format {
        Format::Text => {
            println!();
            eprintln!(
                "[{}] prefill: {} tokens, {:.1} tok/s | decode: {} tokens, {:.1} tok/s | {} dispatches/token | weights on GPU: {}",
                exec.mode(),
                s.prompt_tokens,
                s.prefill_tok_s,
                s.generated_tokens,
                s.decode_tok_s,
                s.dispatches_per_token,
                human_bytes(s.weight_bytes_gpu)
            );
            if let Some(plan) = &plan_stats {
                let x = exec.extra_stats();
                eprintln!(
                    "[sram] chip {} x {} (slice {}) | SRAM used per chip: max {} / mean {} of {} | link traffic: {}/token over {} transfers | emulation overhead (not a chip cost): {} staged from GPU memory into workgroup SRAM per step",
                    plan.spec.name,
                    plan.totals.chips_used,
                    human_bytes(plan.spec.slice_bytes as u64),
                    human_bytes(plan.totals.sram_used_max as u64),
                    human_bytes(plan.totals.sram_used_mean as u64),
                    human_bytes(plan.spec.sram_bytes as u64),
                    human_bytes(x["link_bytes_per_token"].as_u64().unwrap_or(0)),
                    x["link_transfers_per_token"].as_u64().unwrap_or(0),
                    human_bytes(x["emulation_staged_bytes_per_step"].as_u64().unwrap_or(0)),
                );
            }
        }
        Format::Json => {
            let mut stats = serde_json::to_value(s)?;
            stats["adapter"] = serde_json::json!(gpu.info.name);
            stats["backend"] = serde_json::json!(format!("{:?}", gpu.info.backend));
            stats["model"] = serde_json::json!(m.name);
            if let Some(plan) = &plan_stats {
                let mut x = exec.extra_stats();
                x["sram_capacity_bytes"] = serde_json::json!(plan.spec.sram_bytes);
                x["placement_link_bytes_per_token"] =
                    serde_json::json!(plan.totals.link_bytes_per_token);
                stats["sram"] = x;
            }
            let obj = serde_json::json!({
                "prompt_ids": g.prompt_ids,
                "ids": g.ids,
                "text": g.text,
                "stats": stats,
            });
            println!("{}", serde_json::to_string(&obj)?);
        }
    }
    Ok(())
}

pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn cmd_info(a: InfoArgs) -> Result<()> {
    let opts = a.gpu.options()?;
    let adapters = gpu::list_adapters(&opts);
    let picked = gpu::pick_adapter(&opts).ok().map(|p| p.get_info());
    let summaries: Vec<_> = adapters.iter().map(gpu::AdapterSummary::of).collect();
    let is_picked = |s: &gpu::AdapterSummary| {
        picked
            .as_ref()
            .is_some_and(|p| p.name == s.name && format!("{:?}", p.backend) == s.backend)
    };
    let model = match &a.model {
        Some(p) => Some(load_model(Some(p))?),
        None => None,
    };
    if a.format == Format::Json {
        let list: Vec<_> = summaries
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["picked"] = serde_json::json!(is_picked(s));
                v
            })
            .collect();
        let mut obj = serde_json::json!({ "adapters": list });
        if let Some(m) = &model {
            obj["model"] = model_json(m);
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(());
    }
    if summaries.is_empty() {
        println!(
            "no GPU adapters found (on Linux without a GPU: apt-get install mesa-vulkan-drivers)"
        );
    }
    for s in &summaries {
        println!(
            "{} {} [{} / {}]",
            if is_picked(s) { "*" } else { " " },
            s.name,
            s.backend,
            s.device_type
        );
        println!("    driver: {} {}", s.driver, s.driver_info);
        println!(
            "    workgroup storage: {} | storage binding: {} | buffer: {} | invocations/workgroup: {} | storage buffers/stage: {}",
            human_bytes(s.max_workgroup_storage as u64),
            human_bytes(s.max_storage_buffer_binding),
            human_bytes(s.max_buffer_size),
            s.max_invocations_per_workgroup,
            s.max_storage_buffers_per_stage
        );
        println!(
            "    features: shader-f16 {} | subgroups {} (size {}-{}) | timestamps {}",
            yes(s.shader_f16),
            yes(s.subgroups),
            s.subgroup_min_size,
            s.subgroup_max_size,
            yes(s.timestamps)
        );
    }
    if picked.is_some() {
        println!("(* = the adapter sramlm picks with these options)");
    }
    if let Some(m) = &model {
        println!();
        print_model(m);
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn dtype_bytes(m: &Model) -> std::collections::BTreeMap<String, (usize, u64)> {
    let mut by = std::collections::BTreeMap::new();
    for w in model::WeightName::all(&m.config) {
        if let Some(t) = m.weights.get(w) {
            let e = by
                .entry(t.dtype.name().to_string())
                .or_insert((0usize, 0u64));
            e.0 += 1;
            e.1 += t.byte_len() as u64;
        }
    }
    by
}

fn model_json(m: &Model) -> serde_json::Value {
    serde_json::json!({
        "name": m.name,
        "path": m.path,
        "format": m.format,
        "config": m.config,
        "parameters": m.config.param_count(),
        "weight_bytes_gpu": m.weights.total_bytes(),
        "tensors_by_dtype": dtype_bytes(m).into_iter().map(|(k, (n, b))| (k, serde_json::json!({"tensors": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
    })
}

fn print_model(m: &Model) {
    let c = &m.config;
    println!("model: {} ({}, {})", m.name, m.format, m.path.display());
    println!(
        "    {} layers, hidden {}, ffn {}, heads {}/{} kv, head_dim {}, vocab {}, context {}, rope theta {} ({:?}), tied embeddings: {}",
        c.num_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.vocab_size,
        c.max_position_embeddings,
        c.rope_theta,
        c.rope_layout,
        yes(c.tie_word_embeddings)
    );
    println!(
        "    parameters: {} | weight memory on the GPU (file encoding): {}",
        c.param_count(),
        human_bytes(m.weights.total_bytes() as u64)
    );
    for (dt, (n, b)) in dtype_bytes(m) {
        println!("    {dt}: {n} tensors, {}", human_bytes(b));
    }
}

/// The placement for a loaded model.
fn plan_for(
    m: &Model,
    spec: &ChipSpec,
    max_chips: Option<usize>,
    ctx: usize,
    batch: usize,
    microbatch: usize,
) -> Result<Plan> {
    let mut opts = PlaceOptions::for_config(&m.config);
    opts.max_chips = max_chips;
    opts.context_len = ctx;
    opts.batch = batch;
    opts.microbatch_tokens = microbatch;
    Ok(place(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        spec,
        &opts,
    )?)
}

fn cmd_plan(a: PlanArgs) -> Result<()> {
    let spec = a.chip.spec()?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let plan = match &a.config {
        Some(path) => {
            let cfg = model::LlamaConfig::from_hf_json(path)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            let fmt = sramlm::chip::WeightFormat::from_name(&a.weights).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown --weights `{}` (expected f32, f16, bf16, q8_0, q4_0, q4_1 or int8)",
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
            opts.context_len = a.ctx.unwrap_or(cfg.max_position_embeddings);
            opts.batch = a.batch;
            place(&cfg, &tensors, &spec, &opts)?
        }
        None => {
            let m = load_model(a.model.as_ref())?;
            let ctx = a.ctx.unwrap_or(m.config.max_position_embeddings);
            plan_for(&m, &spec, a.chip.chips, ctx, a.batch, 1)?
        }
    };
    match a.format {
        Format::Text => print!("{}", plan_table(&plan)),
        Format::Json => println!("{}", plan_json(&plan)),
    }
    Ok(())
}
