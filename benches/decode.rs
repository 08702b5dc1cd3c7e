//! End-to-end decoding, one criterion iteration = one decode step
//! (`Executor::step(&[id], Readback::Argmax)`: one token through the whole
//! model, arg-max on the GPU, 8 bytes read back, so the device is
//! synchronised inside every timed step). `cargo bench --bench decode`.
//!
//! Models × modes (see [`CASES`]): stories260K (`models/stories260K`) in VRAM
//! mode and in SRAM mode on `mini-64k` chips; SmolLM2-135M-Instruct Q4_1
//! (`models/SmolLM2-135M-Instruct.Q4_1.gguf`, skipped with a message when
//! absent: `models/get-smollm2.sh`) in VRAM mode and on `mini-4m` chips.
//! The prompt is prefilled outside the timed region; when the context is full
//! the sequence is reset and prefilled again, also untimed. Throughput is one
//! element per step, so criterion's elem/s is tokens/s.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::{Executor, Readback, StepOutput};
use sramlm::gpu::{Gpu, GpuOptions};
use sramlm::model::{self, Model};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `(label, model path relative to the crate, context length, SRAM chip preset)`;
/// a context of `None` is the model's own window.
const CASES: &[(&str, &str, Option<usize>, &str)] = &[
    ("stories260K", "models/stories260K", None, "mini-64k"),
    (
        "SmolLM2-135M-Q4_1",
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        Some(256),
        "mini-4m",
    ),
];
const PROMPT: &str = "Once upon a time";
/// Prompt tokens per SRAM pipeline micro-batch (prefill only).
const MICROBATCH: usize = 16;

struct Decoder {
    exec: Box<dyn Executor>,
    prompt: Vec<u32>,
    next: u32,
    restarts: u64,
}

fn token(out: StepOutput) -> u32 {
    match out {
        StepOutput::Token { id, .. } => id,
        other => panic!("argmax step returned {other:?}"),
    }
}

impl Decoder {
    fn new(exec: Box<dyn Executor>, prompt: Vec<u32>) -> Self {
        let mut d = Decoder {
            exec,
            prompt,
            next: 0,
            restarts: 0,
        };
        d.restart();
        d
    }

    /// Forgets the sequence and prefills the prompt again (untimed).
    fn restart(&mut self) {
        self.exec.reset();
        let out = self
            .exec
            .step(&self.prompt, Readback::Argmax)
            .expect("prefill");
        self.next = token(out);
        self.restarts += 1;
    }

    /// One decode step; returns its time.
    fn step(&mut self) -> Duration {
        if self.exec.position() + 1 > self.exec.context_len() {
            self.restart();
        }
        let t0 = Instant::now();
        let out = self
            .exec
            .step(&[self.next], Readback::Argmax)
            .expect("decode step");
        let dt = t0.elapsed();
        self.next = token(out);
        dt
    }
}

fn open_gpu() -> Option<Arc<Gpu>> {
    let r = GpuOptions::from_env().and_then(|o| Gpu::new(&o));
    match r {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("decode bench: skipped, no GPU adapter: {e}");
            None
        }
    }
}

fn vram(gpu: &Arc<Gpu>, m: &Model, ctx: usize) -> Box<dyn Executor> {
    Box::new(
        VramExecutor::new(
            gpu.clone(),
            &m.config,
            &m.weights,
            &VramOptions {
                context: Some(ctx),
                ..Default::default()
            },
        )
        .expect("VRAM executor"),
    )
}

/// The SRAM executor and the number of chips its plan uses.
fn sram(
    gpu: &Arc<Gpu>,
    m: &Model,
    ctx: usize,
    preset: &str,
) -> Result<(Box<dyn Executor>, usize), String> {
    let spec = ChipSpec::preset(preset).map_err(|e| e.to_string())?;
    spec.check_slice_against_limit(gpu.limits.max_compute_workgroup_storage_size)
        .map_err(|e| e.to_string())?;
    let mut opts = PlaceOptions::for_config(&m.config);
    opts.context_len = ctx;
    opts.microbatch_tokens = MICROBATCH;
    let plan = place(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        &spec,
        &opts,
    )
    .map_err(|e| e.to_string())?;
    let exec = SramExecutor::new(
        gpu.clone(),
        &m.config,
        &m.weights,
        &plan,
        &SramOptions {
            image_split_bytes: None,
            task_order: None,
            batch: 1,
            context: Some(ctx),
            microbatch: MICROBATCH,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok((Box::new(exec), plan.totals.chips_used))
}

fn bench_one(c: &mut Criterion, label: &str, mode: &str, mut d: Decoder) {
    let mut g = c.benchmark_group("decode");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("{label}/{mode}"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| d.step()).sum())
    });
    g.finish();
    let cnt = d.exec.counters();
    eprintln!(
        "{label}/{mode}: {} dispatches per decode step; {} submissions in {} steps ({} of them prefills)",
        cnt.dispatches_last_decode,
        cnt.submissions,
        cnt.steps,
        d.restarts
    );
}

fn decode(c: &mut Criterion) {
    let Some(gpu) = open_gpu() else { return };
    eprintln!("adapter: {}", gpu.describe());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for &(label, rel, ctx, preset) in CASES {
        let path = root.join(rel);
        if !path.exists() {
            eprintln!(
                "decode bench: {label} skipped: {} not found (models/get-smollm2.sh fetches SmolLM2)",
                path.display()
            );
            continue;
        }
        let m = match model::load(&path) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("decode bench: {label} skipped: {e}");
                continue;
            }
        };
        let ctx = ctx
            .unwrap_or(m.config.max_position_embeddings)
            .min(m.config.max_position_embeddings);
        let prompt = m.tokenizer.encode(PROMPT).expect("tokenize");
        bench_one(
            c,
            label,
            "vram",
            Decoder::new(vram(&gpu, &m, ctx), prompt.clone()),
        );
        match sram(&gpu, &m, ctx, preset) {
            Ok((exec, chips)) => {
                let mode = format!("sram-{preset}");
                eprintln!("{label}/{mode}: {chips} chips, context {ctx}");
                bench_one(c, label, &mode, Decoder::new(exec, prompt));
            }
            Err(e) => eprintln!("decode bench: {label} SRAM mode ({preset}) skipped: {e}"),
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode
}
criterion_main!(benches);
