//! Command-line interface: one defaults block (the clap structs) and one
//! function per subcommand.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sramlm::chat::{self, ChatError, Message};
use sramlm::chip::{place, plan_json, plan_table, ChipSpec, PlaceOptions, Plan, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::Executor;
use sramlm::generate::{generate, GenStats, GenerateOptions};
use sramlm::gpu::{self, BackendChoice, Gpu, GpuOptions};
use sramlm::model::{self, Model};
use sramlm::sampling::SamplingOptions;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "sramlm",
    version,
    about = "Run Llama-family language models on any GPU through wgpu, in VRAM mode or as an emulated SRAM-only (LPU-style) chip cluster",
    after_help = "Examples:\n  sramlm generate \"Once upon a time\"            # embedded stories260K model\n  sramlm generate -n 32 --temperature 0 --format json \"Once upon a time\"\n  sramlm info                                    # adapters, limits, features\n  sramlm generate --mode sram --chip mini-64k \"Once upon a time\"   # emulated SRAM-only chips\n  sramlm plan --chip mini-64k                    # which chip holds what\n  sramlm bench --modes vram,sram --chip mini-64k --svg out.svg\n  sramlm chat -m models/SmolLM2-135M-Instruct.Q4_1.gguf      # after models/get-smollm2.sh"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a continuation of PROMPT (or of standard input with `-`).
    #[command(after_help = "Examples:
  sramlm generate \"Once upon a time\"                  # embedded stories260K, streamed
  sramlm generate -n 32 --temp 0 --format json \"Once upon a time\"   # greedy, one JSON object
  sramlm generate -f prompt.txt --repeat-penalty 1.1 --min-p 0.05
  echo \"Lily and Ben\" | sramlm generate -
  sramlm generate --stop \".\" \"Tom had a dog\"            # stop at the first full stop
  sramlm generate -m models/SmolLM2-135M-Instruct.Q4_1.gguf --chat -p \"Capital of France?\"
  sramlm generate --chip mini-64k --temp 0 \"Once upon a time\" \"Tom had a dog\"   # SRAM mode, 2 sequences")]
    Generate(GenerateArgs),
    /// Multi-turn chat with the model's chat template: one user turn per line
    /// of standard input (interactive on a terminal).
    #[command(
        after_help = "On a terminal: arrow keys and history edit the line, Ctrl-C stops a reply
(and at the prompt quits), Ctrl-D quits. Commands: /reset, /system TEXT, /help.
The KV cache is kept across turns: only the new turn is read.

Examples:
  sramlm chat -m models/SmolLM2-135M-Instruct.Q4_1.gguf
  sramlm chat -m models/SmolLM2-135M-Instruct.Q4_1.gguf --system \"You are concise.\" --repeat-penalty 1.1
  printf 'Hi\\nAnd Germany?\\n' | sramlm chat -m models/SmolLM2-135M-Instruct.Q4_1.gguf --temp 0"
    )]
    Chat(ChatArgs),
    /// Show every GPU adapter, the limits and features sramlm uses, which one
    /// would be picked, and (with -m) a model summary.
    #[command(after_help = "Examples:
  sramlm info                          # adapters; * marks the one sramlm picks
  sramlm info --backend gl             # what the GL backend offers
  sramlm info -m models/SmolLM2-135M-Instruct.Q4_1.gguf --format json")]
    Info(InfoArgs),
    /// Place a model onto emulated SRAM-only chips: which chip holds which
    /// layers and weight blocks, SRAM used, link traffic per token.
    #[command(after_help = "Examples:
  sramlm plan --chip mini-64k                  # the embedded model on 64 KiB chips
  sramlm plan --chip mini-64k --wide           # every weight block of every chip
  sramlm plan -m models/SmolLM2-135M-Instruct.Q4_1.gguf --chip mini-4m --ctx 256 --format json
  sramlm plan --config models/configs/llama-2-70b.json --chip groq-v1 --study
  sramlm chips                                 # the chip presets and spec files")]
    Plan(PlanArgs),
    /// Benchmark VRAM and SRAM mode side by side (measured and modeled), with
    /// every mode's output checked against the other's and the reference.
    #[command(after_help = "Examples:
  sramlm bench                                         # embedded model, both modes, groq-v1
  sramlm bench --modes vram,sram --chip mini-64k --json out.json --svg out.svg
  sramlm bench --modes sram --chip mini-64k --batch 4  # 4 sequences pipelined
  sramlm bench --wide                                  # every column")]
    Bench(BenchArgs),
    /// List the chip presets and the spec files in models/chips/ (SRAM per
    /// chip, slice = one workgroup's budget, bandwidths, clock).
    #[command(after_help = "Examples:
  sramlm chips
  sramlm chips --format json
  sramlm generate --chip models/chips/sram-1g.json \"Once upon a time\"")]
    Chips(ChipsArgs),
    /// OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions,
    /// /v1/models, /health): concurrent requests decoded together.
    #[command(
        after_help = "Examples:\n  sramlm serve -m models/SmolLM2-135M-Instruct.Q4_1.gguf           # http://127.0.0.1:8080\n  sramlm serve --port 0 --parallel 8 --ctx 1024                     # port 0: a free one, printed\n  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\\n    -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":32}'"
    )]
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (loopback by default: not reachable from other machines)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port; 0 picks a free one (printed on stdout)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded together (each has its own KV cache of --ctx tokens)
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait for a free sequence; more get HTTP 429
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// (--ctx defaults to the model's context window, at most 2048 here;
    /// -n is the default max_tokens of a request)
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct ChipsArgs {
    /// Also list the JSON spec files in this folder [default: models/chips
    /// here and in the source tree sramlm was built from]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Model folder (Hugging Face) or .gguf file [default: the embedded models/stories260K]
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Modes to run, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "vram,sram")]
    modes: Vec<String>,
    /// Prompt tokens [default: the model's longest reference prompt, so the output can be checked]
    #[arg(long)]
    prompt_len: Option<usize>,
    /// Tokens to generate per run (greedy)
    #[arg(long, default_value_t = 32)]
    gen: usize,
    /// Timed runs per mode (after one warm-up run)
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Sequences decoded together; several sizes (e.g. 1,4,16) give one row
    /// each (VRAM: one matvec over all rows; SRAM: each a pipeline micro-batch)
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    /// KV-cache length [default: prompt + generation, rounded up to 64]
    #[arg(long)]
    ctx: Option<usize>,
    /// Prompt tokens per pipeline micro-batch (SRAM mode)
    #[arg(long, default_value_t = 16)]
    microbatch: usize,
    /// Write one JSON record per model × mode to FILE
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a latency chart (measured next to modeled) to FILE
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Every column of the table (wider than 100 columns)
    #[arg(long)]
    wide: bool,
    #[command(flatten)]
    chip: ChipArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args, Debug, Clone)]
struct ChipArgs {
    /// Chip to emulate: a preset (groq-v1, mini-64k, mini-4m) or a JSON spec
    /// file (`sramlm chips` lists them); implies --mode sram [default: groq-v1]
    #[arg(long)]
    chip: Option<String>,
    /// Most chips the placement may use (error if the model needs more)
    #[arg(long)]
    chips: Option<usize>,
    /// SRAM slice = one workgroup's shared-memory budget, in bytes [default: the spec's, 16384]
    #[arg(long)]
    slice: Option<usize>,
}

impl ChipArgs {
    /// Whether any chip option was given.
    fn given(&self) -> bool {
        self.chip.is_some() || self.chips.is_some() || self.slice.is_some()
    }
    fn spec(&self) -> Result<ChipSpec> {
        let mut spec = ChipSpec::resolve(self.chip.as_deref().unwrap_or("groq-v1"))?;
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
    /// With --config: weight encoding to assume for the matrices (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, int8)
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
    /// Instead of one plan: chips needed and modeled tok/s per user at int8,
    /// Q8_0 and fp16 weights (fp16 KV cache, full context), e.g. for Llama-2-70B
    #[arg(long)]
    study: bool,
    /// Every weight block of every chip (lines wider than 100 columns)
    #[arg(long)]
    wide: bool,
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

/// Model, sampling, mode and GPU options shared by `generate`, `chat` and `bench`.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Model folder (Hugging Face) or .gguf file [default: the embedded models/stories260K]
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Most tokens to generate
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy (arg-max on the GPU)
    #[arg(
        long,
        visible_alias = "temp",
        default_value_t = 0.8,
        allow_negative_numbers = true
    )]
    temperature: f32,
    /// Sample among the K most likely tokens (reduced on the GPU, K ≤ 64); 0 = whole vocabulary
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches P
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f32,
    /// Random seed (same seed, same output)
    #[arg(short = 's', long, default_value_t = 0)]
    seed: u64,
    /// Min-p: drop tokens less likely than P × the most likely one (0 = off)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_p: f32,
    /// Repetition penalty (llama.cpp): logits of ids seen in the last
    /// --repeat-last-n tokens divided by it when positive, multiplied when
    /// negative; applied on the GPU before the pick (1 = off)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    repeat_penalty: f32,
    /// Tokens (prompt included) the penalties look back over; 0 = off
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Presence penalty (OpenAI): subtracted once from each seen id's logit
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Frequency penalty (OpenAI): subtracted per occurrence of an id
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// Stop before this text (not printed); repeat for several
    #[arg(long = "stop", value_name = "TEXT")]
    stop: Vec<String>,
    /// Keep going past the end-of-sequence token
    #[arg(long)]
    ignore_eos: bool,
    /// Execution mode [default: vram; sram when --chip is given]
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// KV-cache length in tokens [default: the model's context window]
    #[arg(short = 'c', long, visible_alias = "ctx-size")]
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
struct GenerateArgs {
    /// Prompt text; `-` reads it from standard input. Empty: start from BOS.
    /// Several prompts are decoded together, greedily, as a batch of
    /// sequences (VRAM: one step for all; SRAM: pipelined through the chips).
    prompt: Vec<String>,
    /// The prompt (same as the positional PROMPT)
    #[arg(
        short = 'p',
        long = "prompt",
        value_name = "PROMPT",
        conflicts_with = "file"
    )]
    prompt_flag: Option<String>,
    /// Read the prompt from FILE
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Interactive: the same as `sramlm chat` (with --system)
    #[arg(short = 'i', long, conflicts_with_all = ["chat", "format"])]
    interactive: bool,
    /// Format the prompt as one user turn with the model's chat template
    #[arg(long)]
    chat: bool,
    /// With --chat or -i: a system message
    #[arg(long)]
    system: Option<String>,
    /// Output: streamed text, or one JSON object at the end
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct ChatArgs {
    /// A system message for the conversation
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    run: RunArgs,
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

/// llama.cpp's GPU-offload flags take a value and mean nothing here (every
/// layer is always on the GPU): dropped with a note, instead of `-ngl`
/// parsing as `-n gl`.
fn drop_offload_flags(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let flag = ["-ngl", "--n-gpu-layers", "--gpu-layers"]
            .into_iter()
            .find(|f| a == *f || a.starts_with(&format!("{f}=")));
        match flag {
            Some(f) => {
                if a == f {
                    it.next();
                }
                eprintln!("note: {f} ignored: sramlm always keeps every layer on the GPU");
            }
            None => out.push(a),
        }
    }
    out
}

pub fn run() -> Result<()> {
    let cli = Cli::parse_from(drop_offload_flags(std::env::args().collect()));
    match cli.cmd {
        Command::Chips(a) => cmd_chips(a),
        Command::Generate(a) => cmd_generate(a),
        Command::Chat(a) => cmd_chat(a),
        Command::Info(a) => cmd_info(a),
        Command::Plan(a) => cmd_plan(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Serve(a) => cmd_serve(a),
    }
}

/// Streams a piece of text to stdout. When stdout fails (a full disk, a
/// closed descriptor), generation stops there with one line on stderr; a
/// closed pipe ends the process through SIGPIPE first (see main.rs).
fn emit(out: &mut impl Write, piece: &str) {
    if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("\nerror: cannot write to standard output: {e}");
        std::process::exit(1);
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
    let Some(path) = path else {
        // The default model is compiled in: no file to find.
        return model::load_embedded().context("cannot load the embedded model");
    };
    let pb = spinner(&format!("loading {}", path.display()));
    let m = model::load(path).with_context(|| format!("cannot load model {}", path.display()))?;
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

/// How many KV-cache positions a run needs, once the model is loaded.
type NeedFn<'a> = dyn Fn(&Model) -> Result<usize> + 'a;

/// Most sequences decoded together in SRAM mode. Each sequence's KV cache
/// takes SRAM, so the emulated cluster grows with the batch, and the emulator
/// runs every chip for every sequence one after another: a decode round costs
/// about batch × chips dispatches, quadratic in the batch.
const MAX_BATCH: usize = 32;
const BATCH_LIMIT: &str = "at most 32 sequences are decoded together (the emulated cluster grows with the batch and the emulator runs its chips one after another, so time grows with the square of the batch); split them over several runs";

/// KV-cache length when --ctx is not given and the model's window is longer:
/// the cache is allocated up front, so a model declaring 131,072 positions
/// would otherwise take gigabytes to generate a few tokens.
const DEFAULT_CTX: usize = 4096;

/// VRAM mode keeps each layer's K and V cache (and the RoPE table) in one
/// buffer of `ctx` rows: refuse a --ctx the adapter cannot hold, naming the
/// flag and the largest value that fits, before anything is allocated.
fn check_ctx_fits(cfg: &model::LlamaConfig, ctx: usize, gpu: &Gpu) -> Result<()> {
    let row = 4u64 * (cfg.num_kv_heads * cfg.head_dim).max(cfg.head_dim).max(1) as u64;
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let max_ctx = limit / row;
    if ctx as u64 > max_ctx {
        bail!(
            "--ctx {ctx} is more than this adapter can hold: each layer's KV cache needs {} bytes per position in one buffer of at most {limit} bytes, so --ctx can be at most {max_ctx}",
            row
        );
    }
    Ok(())
}

/// A loaded model with its executor, ready to generate.
struct Session {
    m: Model,
    gpu: Arc<Gpu>,
    exec: Box<dyn Executor>,
    plan: Option<Plan>,
    ctx: usize,
    opts: GenerateOptions,
}

impl RunArgs {
    fn check(&self) -> Result<SamplingOptions> {
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
            bail!("--chip, --chips and --slice describe SRAM mode: drop them or use --mode sram");
        }
        sampling.validate().map_err(anyhow::Error::msg)?;
        Ok(sampling)
    }

    /// The mode: as given, else SRAM when a chip option is given.
    fn mode(&self) -> Mode {
        match self.mode {
            Some(m) => m,
            None if self.chip.given() => Mode::Sram,
            None => Mode::Vram,
        }
    }

    /// Loads the model, opens the GPU and builds the executor of the mode.
    fn session(&self) -> Result<Session> {
        self.session_for(1, None)
    }

    /// As `session`, with KV caches for `batch` sequences (SRAM mode). Without
    /// --ctx, `need` (when given) says how many positions the run needs: the
    /// KV cache is sized to that, rounded up to 64, instead of the window.
    fn session_for(&self, batch: usize, need: Option<&NeedFn>) -> Result<Session> {
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
        if spec.is_none() {
            check_ctx_fits(&m.config, ctx, &gpu)?;
        }
        let mut plan = None;
        let exec: Box<dyn Executor> = match &spec {
            None => {
                let pb = spinner("building GPU pipelines and uploading weights");
                let e = VramExecutor::new_batched(
                    gpu.clone(),
                    &m.config,
                    &m.weights,
                    &VramOptions {
                        context: Some(ctx),
                        chunk: self.chunk,
                    },
                    batch,
                )?;
                pb.finish_and_clear();
                Box::new(e)
            }
            Some(spec) => {
                spec.check_slice_against_limit(gpu.limits.max_compute_workgroup_storage_size)?;
                let pb = spinner("placing the model on chips, building pipelines");
                let p = plan_for(&m, spec, self.chip.chips, ctx, batch, self.microbatch)?;
                let e = SramExecutor::new(
                    gpu.clone(),
                    &m.config,
                    &m.weights,
                    &p,
                    &SramOptions {
                        batch,
                        context: Some(ctx),
                        microbatch: self.microbatch,
                    },
                )?;
                pb.finish_and_clear();
                plan = Some(p);
                Box::new(e)
            }
        };
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
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
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

    fn check_prompt(&self, ids: &[u32]) -> Result<()> {
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
    fn chat_text(&self, messages: &[Message]) -> Result<String> {
        Ok(render_chat(&self.m, messages)?)
    }

    /// End-of-turn tokens a chat stops at, besides EOS.
    fn turn_stops(&self) -> Vec<u32> {
        ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"]
            .iter()
            .filter_map(|t| self.m.tokenizer.token_to_id(t))
            .collect()
    }

    fn print_stats(&self, s: &GenStats) {
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
            let x = self.exec.extra_stats();
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

    fn stats_json(&self, s: &GenStats) -> Result<serde_json::Value> {
        let mut stats = serde_json::to_value(s)?;
        stats["adapter"] = serde_json::json!(self.gpu.info.name);
        stats["backend"] = serde_json::json!(format!("{:?}", self.gpu.info.backend));
        stats["model"] = serde_json::json!(self.m.name);
        if let Some(plan) = &self.plan {
            let mut x = self.exec.extra_stats();
            x["sram_capacity_bytes"] = serde_json::json!(plan.spec.sram_bytes);
            x["placement_link_bytes_per_token"] =
                serde_json::json!(plan.totals.link_bytes_per_token);
            stats["sram"] = x;
        }
        Ok(stats)
    }
}

/// Chat prompt text for `messages` with the model's template (assistant turn opened).
fn render_chat(m: &Model, messages: &[Message]) -> Result<String, ChatError> {
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

fn cmd_generate(mut a: GenerateArgs) -> Result<()> {
    a.run.check()?;
    if a.interactive {
        if !a.prompt.is_empty() || a.prompt_flag.is_some() || a.file.is_some() {
            bail!("-i (interactive chat) takes no prompt: type the turns");
        }
        return cmd_chat(ChatArgs {
            system: a.system,
            run: a.run,
        });
    }
    if a.system.is_some() && !a.chat {
        bail!("--system needs --chat (or -i)");
    }
    if let Some(p) = a.prompt_flag.take() {
        if !a.prompt.is_empty() {
            bail!("give the prompt once: as -p/--prompt or as PROMPT, not both");
        }
        a.prompt.push(p);
    }
    if let Some(f) = &a.file {
        if !a.prompt.is_empty() {
            bail!("give the prompt once: as -f FILE or as PROMPT, not both");
        }
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the prompt file {}", f.display()))?;
        a.prompt
            .push(text.strip_suffix('\n').unwrap_or(&text).to_string());
    }
    if a.prompt.len() > 1 {
        return cmd_generate_batch(a);
    }
    let prompt = if a.file.is_some() {
        a.prompt[0].clone()
    } else {
        read_prompt(a.prompt.first().map(|s| s.as_str()))?
    };
    // Without --chat the prompt's length is known once the tokenizer is: size
    // the KV cache to prompt + -n (a chat's template adds an unknown amount).
    let need = |m: &Model| -> Result<usize> {
        if prompt.len() > (1 << 20) {
            return Ok(usize::MAX);
        }
        Ok(m.tokenizer
            .encode(&prompt)?
            .len()
            .saturating_add(a.run.max_tokens))
    };
    let mut s = a
        .run
        .session_for(1, (!a.chat).then_some(&need as &NeedFn))?;
    let text = if a.chat {
        let mut msgs = Vec::new();
        if let Some(sys) = &a.system {
            msgs.push(Message::new("system", sys));
        }
        msgs.push(Message::new("user", &prompt));
        s.opts.stop_ids = s.turn_stops();
        s.chat_text(&msgs)?
    } else {
        prompt
    };
    let prompt_ids = s.encode(&text)?;
    s.check_prompt(&prompt_ids)?;
    let text_for_json = text.clone();
    let stream = a.format == Format::Text;
    let mut out = std::io::stdout().lock();
    let g = generate(
        s.exec.as_mut(),
        &s.m.tokenizer,
        &s.m.config,
        &prompt_ids,
        &s.opts,
        |piece| {
            if stream {
                emit(&mut out, piece);
            }
        },
    )?;
    drop(out);
    if !g.stats.stopped_at_eos
        && g.ids.len() < s.opts.max_tokens
        && g.prompt_ids.len() + g.ids.len() >= s.ctx
    {
        eprintln!(
            "\nnote: stopped after {} tokens: the context window of {} tokens is full (prompt {} + generated {}); raise --ctx for more",
            g.ids.len(),
            s.ctx,
            g.prompt_ids.len(),
            g.ids.len()
        );
    }
    match a.format {
        Format::Text => {
            println!();
            s.print_stats(&g.stats);
        }
        Format::Json => {
            let obj = serde_json::json!({
                "prompt": text_for_json,
                "prompt_ids": g.prompt_ids,
                "ids": g.ids,
                "text": g.text,
                "stats": s.stats_json(&g.stats)?,
            });
            println!("{}", serde_json::to_string(&obj)?);
        }
    }
    Ok(())
}

/// Several prompts decoded together: in VRAM mode one matvec over all
/// sequences' rows per step; in SRAM mode each sequence is one micro-batch of
/// the chip pipeline, so chips work on different sequences in the same
/// pipeline step.
fn cmd_generate_batch(a: GenerateArgs) -> Result<()> {
    if a.chat {
        bail!("--chat takes one prompt");
    }
    if a.prompt.iter().any(|p| p == "-") {
        bail!("`-` (stdin) takes one prompt");
    }
    if a.run.temperature != 0.0 {
        eprintln!("note: several prompts are decoded greedily (as with --temperature 0)");
    }
    if !a.run.stop.is_empty()
        || a.run.repeat_penalty != 1.0
        || a.run.presence_penalty != 0.0
        || a.run.frequency_penalty != 0.0
    {
        bail!("--stop and the penalties apply to one prompt at a time: pass one prompt");
    }
    let n = a.prompt.len();
    if n > MAX_BATCH {
        bail!("{n} prompts: {BATCH_LIMIT}");
    }
    // KV cache for what the run needs (each sequence's cells are visited by
    // every sequence's step, so a window-sized cache makes batches slow).
    let need = |m: &Model| -> Result<usize> {
        let mut longest = 0;
        for p in &a.prompt {
            longest = longest.max(m.tokenizer.encode(p)?.len());
        }
        Ok(longest.saturating_add(a.run.max_tokens))
    };
    let mut s = a.run.session_for(n, Some(&need))?;
    let mut prompt_ids = Vec::new();
    for p in &a.prompt {
        let ids = s.encode(p)?;
        if ids.is_empty() {
            bail!("prompt {p:?} encodes to no tokens and the model has no BOS");
        }
        s.check_prompt(&ids)?;
        prompt_ids.push(ids);
    }
    s.exec.reset();
    let t0 = std::time::Instant::now();
    let mut last = Vec::new();
    for (i, ids) in prompt_ids.iter().enumerate() {
        s.exec.select(i)?;
        match s.exec.step(ids, sramlm::exec::Readback::Argmax)? {
            sramlm::exec::StepOutput::Token { id, .. } => {
                if id == sramlm::kernels::argmax::NON_FINITE {
                    bail!(
                        "the model produced NaN or infinite logits at position {} of prompt {i}",
                        ids.len() - 1
                    );
                }
                last.push(id)
            }
            _ => bail!("prefill returned no token"),
        }
    }
    let prefill_s = t0.elapsed().as_secs_f64();
    let stop = |id: u32| !s.opts.ignore_eos && s.m.config.eos_token_ids.contains(&id);
    let mut out: Vec<Vec<u32>> = last.iter().map(|&t| vec![t]).collect();
    let mut done: Vec<bool> = last.iter().map(|&t| stop(t)).collect();
    let t1 = std::time::Instant::now();
    let mut rounds = 0usize;
    let max_pos = prompt_ids.iter().map(|p| p.len()).max().unwrap_or(0);
    while out[0].len() < s.opts.max_tokens
        && !done.iter().all(|&d| d)
        && max_pos + out[0].len() < s.ctx
    {
        last = s.exec.decode_batch(&last)?;
        if let Some(i) =
            (0..n).find(|&i| !done[i] && last[i] == sramlm::kernels::argmax::NON_FINITE)
        {
            bail!(
                "the model produced NaN or infinite logits at position {} of prompt {i}",
                prompt_ids[i].len() + out[i].len() - 1
            );
        }
        rounds += 1;
        for (i, &t) in last.iter().enumerate() {
            if !done[i] {
                out[i].push(t);
                done[i] = stop(t);
            }
        }
    }
    let decode_s = t1.elapsed().as_secs_f64();
    // (without a character the token budget cut in half)
    let texts: Vec<String> = out
        .iter()
        .map(|ids| {
            s.m.tokenizer
                .decode(ids)
                .map(|t| t.trim_end_matches('\u{FFFD}').to_string())
        })
        .collect::<Result<_, _>>()?;
    let tokens: usize = out.iter().map(|o| o.len()).sum();
    let stats = serde_json::json!({
        "mode": s.exec.mode(),
        "batch": n,
        "prefill_s": prefill_s,
        "decode_rounds": rounds,
        "decode_s": decode_s,
        "decode_tok_s_all_sequences": if decode_s > 0.0 { rounds as f64 * n as f64 / decode_s } else { 0.0 },
        "generated_tokens": tokens,
        "sram": s.exec.extra_stats(),
        "adapter": s.gpu.info.name,
    });
    match a.format {
        Format::Text => {
            // The continuation only, as with one prompt.
            for (i, t) in texts.iter().enumerate() {
                println!("[{i}] {t}");
            }
            eprintln!(
                "[{}] batch {n}: {rounds} decode rounds, {:.1} tok/s over all sequences{}",
                s.exec.mode(),
                stats["decode_tok_s_all_sequences"].as_f64().unwrap_or(0.0),
                s.plan.as_ref().map_or(String::new(), |p| format!(
                    " | chips {}",
                    p.totals.chips_used
                ))
            );
        }
        Format::Json => {
            let seqs: Vec<_> = (0..n)
                .map(|i| serde_json::json!({"prompt_ids": prompt_ids[i], "ids": out[i], "text": texts[i]}))
                .collect();
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({"sequences": seqs, "stats": stats}))?
            );
        }
    }
    Ok(())
}

/// One line of chat input.
enum Input {
    Line(String),
    /// Ctrl-C at the prompt, Ctrl-D, or the end of piped input.
    Quit,
}

/// Where chat lines come from: a line editor with history on a terminal,
/// plain lines otherwise.
enum ChatInput {
    Editor(Box<rustyline::DefaultEditor>),
    Lines(std::io::StdinLock<'static>),
}

impl ChatInput {
    fn read(&mut self) -> Result<Input> {
        match self {
            ChatInput::Editor(ed) => match ed.readline("> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = ed.add_history_entry(line.as_str());
                    }
                    Ok(Input::Line(line))
                }
                Err(rustyline::error::ReadlineError::Interrupted)
                | Err(rustyline::error::ReadlineError::Eof) => {
                    // Leave the shell prompt on a line of its own.
                    eprintln!();
                    Ok(Input::Quit)
                }
                Err(e) => Err(anyhow::anyhow!("reading the terminal: {e}")),
            },
            ChatInput::Lines(stdin) => {
                let mut line = String::new();
                if stdin
                    .read_line(&mut line)
                    .context("reading standard input")?
                    == 0
                {
                    return Ok(Input::Quit);
                }
                Ok(Input::Line(line.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }
}

const CHAT_HELP: &str = "commands: /reset (forget the conversation), /system TEXT (set the system message), /help; Ctrl-C stops a reply, Ctrl-D (or Ctrl-C at the prompt) quits";

fn cmd_chat(a: ChatArgs) -> Result<()> {
    a.run.check()?;
    let mut s = a.run.session()?;
    if s.m.chat_template.is_none() {
        return Err(ChatError::NoTemplate.into());
    }
    s.opts.stop_ids = s.turn_stops();
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        let ed = rustyline::DefaultEditor::new()
            .map_err(|e| anyhow::anyhow!("cannot open the line editor: {e}"))?;
        ChatInput::Editor(Box::new(ed))
    } else {
        ChatInput::Lines(std::io::stdin().lock())
    };
    // Ctrl-C while a reply streams stops that reply (the terminal is in
    // normal mode then; at the prompt the line editor reads Ctrl-C itself).
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if interactive {
        let c = cancel.clone();
        ctrlc::set_handler(move || c.store(true, std::sync::atomic::Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
        s.opts.cancel = Some(cancel.clone());
        eprintln!(
            "chatting with {} — one message per line; /help for commands, Ctrl-D to quit",
            s.m.name
        );
    }
    let mut conv = chat::Conversation::new(a.system.clone());
    loop {
        let line = match input.read()? {
            Input::Line(l) => l,
            Input::Quit => break,
        };
        let user = line.trim();
        if user.is_empty() {
            continue;
        }
        if let Some(cmd) = user.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
            match name {
                "reset" => {
                    conv.reset();
                    eprintln!("(conversation cleared)");
                }
                "system" if !arg.trim().is_empty() => {
                    conv.system = Some(arg.trim().to_string());
                    eprintln!("(system message set)");
                }
                "system" => {
                    conv.system = None;
                    eprintln!("(system message removed: the template's default applies)");
                }
                "help" | "?" => eprintln!("{CHAT_HELP}"),
                _ => eprintln!("unknown command /{name}; {CHAT_HELP}"),
            }
            continue;
        }
        cancel.store(false, std::sync::atomic::Ordering::SeqCst);
        let m = &s.m;
        let render = |msgs: &[Message]| render_chat(m, msgs);
        let mut out = std::io::stdout().lock();
        let r = conv.turn(
            s.exec.as_mut(),
            &s.m.tokenizer,
            &s.m.config,
            &render,
            user,
            &s.opts,
            |piece| emit(&mut out, piece),
        );
        println!();
        drop(out);
        match r {
            Ok(t) => {
                if t.trimmed_turns > 0 {
                    eprintln!(
                        "(the conversation outgrew the {}-token context: the oldest {} message(s) were dropped)",
                        s.ctx, t.trimmed_turns
                    );
                }
                let st = &t.generation.stats;
                if st.cancelled {
                    eprintln!("(reply stopped)");
                } else if !st.stopped_at_eos
                    && !st.stopped_at_string
                    && t.generation.ids.len() < s.opts.max_tokens
                {
                    eprintln!(
                        "note: the reply was cut after {} tokens: the context window of {} tokens is full (--ctx)",
                        t.generation.ids.len(),
                        s.ctx
                    );
                }
                if interactive {
                    s.print_stats(&t.generation.stats);
                }
            }
            Err(e @ chat::TurnError::TooLong { .. }) if interactive => eprintln!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn cmd_chips(a: ChipsArgs) -> Result<()> {
    let mut rows: Vec<(String, ChipSpec)> = ChipSpec::presets()
        .into_iter()
        .map(|s| ("preset".to_string(), s))
        .collect();
    let dirs = match &a.dir {
        Some(d) => {
            if !d.is_dir() {
                bail!("{} is not a folder", d.display());
            }
            vec![d.clone()]
        }
        None => {
            let mut v = vec![PathBuf::from("models/chips")];
            let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chips");
            if built.canonicalize().ok() != v[0].canonicalize().ok() {
                v.push(built);
            }
            v
        }
    };
    let mut problems = Vec::new();
    for d in dirs {
        let Ok(list) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = list
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            match ChipSpec::load(&f) {
                Ok(spec) => rows.push((f.display().to_string(), spec)),
                Err(e) => problems.push(format!("{}: {e}", f.display())),
            }
        }
    }
    if a.format == Format::Json {
        let list: Vec<_> = rows
            .iter()
            .map(|(src, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["source"] = serde_json::json!(src);
                v["slices_per_chip"] = serde_json::json!(s.slices_per_chip());
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"chips": list, "errors": problems}))?
        );
        return Ok(());
    }
    let rate = |v: f64, unit: &str| {
        let (d, p) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
            .into_iter()
            .find(|(d, _)| v >= *d)
            .unwrap_or((1.0, ""));
        format!("{:.3}", v / d)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + " "
            + p
            + unit
    };
    println!(
        "{:<22} {:>10} {:>9} {:>7} {:>9} {:>11} {:>5} {:>10}",
        "chip", "SRAM", "slice", "slices", "SRAM B/s", "FP16 FLOP/s", "links", "link B/s"
    );
    for (src, c) in &rows {
        let name = if src == "preset" {
            c.name.clone()
        } else {
            format!("{} *", c.name)
        };
        println!(
            "{:<22} {:>10} {:>9} {:>7} {:>9} {:>11} {:>5} {:>10}",
            name,
            human_bytes(c.sram_bytes as u64),
            human_bytes(c.slice_bytes as u64),
            c.slices_per_chip(),
            rate(c.sram_bandwidth, ""),
            rate(c.compute_flops_fp16, ""),
            c.links,
            rate(c.link_bandwidth, ""),
        );
    }
    let files: Vec<&String> = rows
        .iter()
        .map(|r| &r.0)
        .filter(|s| *s != "preset")
        .collect();
    if !files.is_empty() {
        println!("* spec files (use the path with --chip):");
        for f in files {
            println!("    {f}");
        }
    }
    for p in &problems {
        eprintln!("skipped {p}");
    }
    println!(
        "slice = one GPU workgroup's shared-memory budget; rates are per chip (links: per link)"
    );
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
    println!("    rope: {}", c.rope_scaling.describe());
    println!("    architecture: {}", c.arch.describe());
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
    // (the executor runs at most `ctx` tokens per micro-batch)
    opts.microbatch_tokens = microbatch.min(ctx);
    place(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        spec,
        &opts,
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

/// `plan --ctx`: the model's window by default, never more.
fn plan_ctx(ctx: Option<usize>, cfg: &model::LlamaConfig) -> Result<usize> {
    let window = cfg.max_position_embeddings;
    match ctx {
        Some(0) => bail!("--ctx must be at least 1"),
        Some(c) if c > window => {
            bail!("--ctx {c} is larger than the model's context window ({window})")
        }
        Some(c) => Ok(c),
        None => Ok(window),
    }
}

fn cmd_plan(a: PlanArgs) -> Result<()> {
    let spec = a.chip.spec()?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
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
        let mut scenarios = sramlm::chip::llama2_70b_scenarios();
        for s in &mut scenarios {
            s.context_len = a.ctx;
            s.batch = a.batch;
        }
        let rows = sramlm::chip::study(&cfg, &spec, &scenarios)?;
        match a.format {
            Format::Text => {
                println!("All figures below are MODELED (cost model), not measured.");
                print!("{}", sramlm::chip::study_table(&rows));
            }
            Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        }
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
            place(&cfg, &tensors, &spec, &opts)?
        }
        None => {
            let m = load_model(a.model.as_ref())?;
            let ctx = plan_ctx(a.ctx, &m.config)?;
            plan_for(&m, &spec, a.chip.chips, ctx, a.batch, 1)?
        }
    };
    match a.format {
        Format::Text if a.wide => print!("{}", plan_table(&plan)),
        Format::Text => print!("{}", sramlm::chip::plan_table_fit(&plan, 100)),
        Format::Json => println!("{}", plan_json(&plan)),
    }
    Ok(())
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
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    // The longest plain prompt.
    let p = v["prompts"]
        .as_array()?
        .iter()
        .filter(|p| p.get("chat_messages").is_none())
        .max_by_key(|p| p["input_ids"].as_array().map_or(0, |a| a.len()))?;
    let ids = |x: &serde_json::Value| -> Option<Vec<u32>> {
        x.as_array()?
            .iter()
            .map(|i| i.as_u64().map(|i| i as u32))
            .collect()
    };
    Some((
        ids(&p["input_ids"])?,
        sramlm::bench::RefContinuation {
            source: format!(
                "tests/fixtures/{dir} {} (Hugging Face transformers, float32)",
                p["key"].as_str().unwrap_or("?")
            ),
            ids: ids(&p["greedy"]["new_ids"])?,
        },
    ))
}

/// The git revision this binary was built from (see build.rs).
fn git_revision() -> String {
    env!("SRAMLM_GIT_REV").to_string()
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
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
        sramlm::bench::output::check_outputs(&outputs, &inputs).map_err(anyhow::Error::msg)?;
    }
    if a.chip.given() && !modes.contains(&Mode::Sram) {
        bail!("--chip, --chips and --slice describe SRAM mode: add sram to --modes");
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
        let (mut exec, plan): (Box<dyn Executor>, Option<Plan>) = match mode {
            Mode::Vram => (
                Box::new(VramExecutor::new_batched(
                    gpu.clone(),
                    &m.config,
                    &m.weights,
                    &VramOptions {
                        context: Some(ctx),
                        chunk: sramlm::exec::vram::DEFAULT_CHUNK,
                    },
                    batch,
                )?),
                None,
            ),
            Mode::Sram => {
                let spec = spec
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("no chip spec"))?;
                spec.check_slice_against_limit(gpu.limits.max_compute_workgroup_storage_size)?;
                let plan = plan_for(&m, spec, a.chip.chips, ctx, batch, a.microbatch)?;
                let e = SramExecutor::new(
                    gpu.clone(),
                    &m.config,
                    &m.weights,
                    &plan,
                    &SramOptions {
                        batch,
                        context: Some(ctx),
                        microbatch: a.microbatch,
                    },
                )?;
                (Box::new(e), Some(plan))
            }
        };
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
                        "slice_bytes": spec.as_ref().map(|s| s.slice_bytes), "max_chips": a.chip.chips,
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

fn cmd_serve(a: ServeArgs) -> Result<()> {
    if a.parallel == 0 || a.parallel > sramlm::kernels::attention::MAX_ROWS {
        bail!(
            "--parallel must be between 1 and {}",
            sramlm::kernels::attention::MAX_ROWS
        );
    }
    if a.queue == 0 {
        bail!("--queue must be at least 1");
    }
    if a.run.max_tokens == 0 {
        bail!("-n/--max-tokens must be at least 1");
    }
    let mut run = a.run.clone();
    if run.ctx.is_none() {
        // One KV cache per sequence: keep the default modest.
        let m = load_model(run.model.as_ref())?;
        run.ctx = Some(m.config.max_position_embeddings.min(2048));
    }
    let parallel = a.parallel;
    let opts = sramlm::serve::ServeOptions {
        host: a.host,
        port: a.port,
        queue: a.queue,
        default_max_tokens: run.max_tokens,
    };
    sramlm::serve::serve(opts, move || {
        let s = run.session_for(parallel, None)?;
        Ok((s.m, s.exec))
    })
}
