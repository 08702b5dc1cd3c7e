//! Command-line interface: the clap top level (the subcommands and the option
//! groups they share), dispatch, and small helpers. Each subcommand lives in
//! its own file; `session.rs` is the one place that builds an executor.

mod bench;
mod chat;
mod chips;
mod generate;
mod info;
mod plan;
mod serve;
mod session;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sramlm::chip::ChipSpec;
use sramlm::gpu::{BackendChoice, GpuOptions};
use sramlm::model::{self, Model};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use bench::BenchArgs;
use chat::ChatArgs;
use chips::ChipsArgs;
use generate::GenerateArgs;
use info::InfoArgs;
use plan::PlanArgs;
use serve::ServeArgs;

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
    /// Model an SRAM-only chip cluster against a GPU fleet for a model and N
    /// users: chips, tok/s per user, aggregate tok/s, dollars, watts (all modelled).
    #[command(
        after_help = "Examples:\n  sramlm study -m models/configs/llama-2-70b.json --users 64 --ctx 4096\n  sramlm study -m models/configs/mixtral-8x7b.json --users 32 --ctx 4096 --gpu h200 --format json\n  sramlm study -m models/configs/llama-2-70b.json --users 8 --svg study.svg   # timeline + speed vs cost\nSee docs/study.md for the model, its sources and its validation."
    )]
    Study(sramlm::study::cli::StudyArgs),
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
    /// Tensor-parallel degree: each pipeline stage is a group of this many
    /// chips, attention split by heads, the MLP by features, lm_head by
    /// vocabulary, partial results all-gathered over counted links
    #[arg(long, default_value_t = 1)]
    tp: usize,
    /// SRAM mode: decode greedy tokens in resident mode (one dispatch per run
    /// of tokens, weight slices kept in workgroup memory) where the adapter's
    /// litmus admits it (`sramlm info --litmus`); otherwise stepped, with a notice
    #[arg(long)]
    resident: bool,
}

impl ChipArgs {
    /// Whether any chip option was given.
    fn given(&self) -> bool {
        self.chip.is_some() || self.chips.is_some() || self.slice.is_some() || self.tp != 1
    }
    fn spec(&self) -> Result<ChipSpec> {
        let mut spec = ChipSpec::resolve(self.chip.as_deref().unwrap_or("groq-v1"))?;
        if let Some(s) = self.slice {
            spec = spec.with_slice_bytes(s)?;
        }
        if self.chips == Some(0) {
            bail!("--chips must be at least 1");
        }
        if self.tp == 0 {
            bail!("--tp must be at least 1");
        }
        Ok(spec)
    }
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
    #[arg(long, default_value_t = sramlm::chip::DEFAULT_MICROBATCH)]
    microbatch: usize,
    #[command(flatten)]
    chip: ChipArgs,
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
        Command::Chips(a) => chips::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Info(a) => info::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Study(a) => Ok(sramlm::study::cli::main(a)?),
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
