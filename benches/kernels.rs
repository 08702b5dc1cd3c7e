//! Kernel micro-benchmarks at SmolLM2-135M shapes (`cargo bench --bench kernels`).
//!
//! Every timed region submits recorded work and waits for the device
//! (`queue.submit` + `poll(Wait)`); recording happens outside it. One
//! criterion iteration is one kernel; [`DISPATCHES_PER_SUBMIT`] of them share a
//! submission, so the submit + wait round trip is spread over them (the
//! calibration printed first gives its size).
//!
//! Matmuls report `Throughput::Bytes(weight bytes)`: criterion's GB/s is the
//! weight-streaming rate, comparable with the copy kernel's READ bandwidth
//! (`copy`, `Throughput::Bytes(bytes read)`). Weights rotate over enough
//! copies (≥ [`ROTATE_BYTES`] in all) that a weight is not still in cache
//! from the previous iteration, as in real decoding, where each weight is
//! read once per token.
//!
//! Filter with criterion's usual argument, e.g.
//! `cargo bench --bench kernels -- matmul_decode/Q4_1`; add `--quick` for a
//! short run.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use sramlm::bench::calibrate::{calibrate, CalibrateOptions};
use sramlm::gpu::{Gpu, GpuOptions};
use sramlm::kernels::{attention, copy, matmul, rmsnorm, sram_matmul, GpuWeight, KernelOp, Step};
use sramlm::model::DType;
use sramlm::testing::seeded;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SmolLM2-135M matmul shapes, `(name, rows N = out features, cols K = in features)`.
const MATMUL_SHAPES: &[(&str, usize, usize)] = &[
    ("576x576", 576, 576),   // q_proj, o_proj
    ("1536x576", 1536, 576), // gate_proj, up_proj
    ("576x1536", 576, 1536), // down_proj
];
/// lm_head (tied embedding), benchmarked for [`LM_HEAD_DTYPES`] only.
const LM_HEAD_SHAPE: (&str, usize, usize) = ("49152x576", 49152, 576);
const LM_HEAD_DTYPES: &[DType] = &[DType::Q8_0];
const WEIGHT_DTYPES: &[DType] = &[DType::F32, DType::F16, DType::Q8_0, DType::Q4_1];
/// Tokens per step: decoding, and a prefill chunk.
const DECODE_TOKENS: usize = 1;
const PREFILL_TOKENS: usize = 64;
/// SRAM-mode matmul: slice (workgroup memory) budget.
const SRAM_SLICE_BYTES: usize = 16 * 1024;
/// Attention: heads, kv heads, head dim; KV positions already in the cache.
const ATTN_HEADS: (usize, usize, usize) = (9, 3, 64);
const ATTN_POSITIONS: &[usize] = &[64, 512];
const NORM_DIM: usize = 576;
/// Kernels per submission.
const DISPATCHES_PER_SUBMIT: u64 = 16;
/// Weights rotate over copies totalling at least this many bytes...
const ROTATE_BYTES: usize = 64 << 20;
/// ...but at most this many copies.
const ROTATE_MAX_COPIES: usize = 256;

/// One benchmark's GPU state, built only when criterion runs it (so a filter
/// skips the uploads): its step, and per rotation the ops one iteration records.
struct Case {
    step_buf: wgpu::Buffer,
    step: Step,
    ops: Vec<Vec<KernelOp>>,
    /// Buffers the ops bind (weights, activations), kept alive with them.
    _keep: Vec<Box<dyn std::any::Any>>,
}

impl Case {
    fn new(gpu: &Gpu, step: Step) -> Self {
        Case {
            step_buf: gpu.uniform("step", &step),
            step,
            ops: Vec::new(),
            _keep: Vec::new(),
        }
    }
    fn keep<T: 'static>(&mut self, v: T) {
        self._keep.push(Box::new(v));
    }
}

/// Registers one benchmark; `setup` runs on its first sample only.
fn bench_case(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    gpu: &Gpu,
    setup: impl FnOnce() -> Case,
) {
    let mut setup = Some(setup);
    let mut case: Option<Case> = None;
    g.bench_function(id, |b| {
        let c = case.get_or_insert_with(|| setup.take().expect("set up once")());
        set_step(gpu, &c.step_buf, &c.step);
        let lists: Vec<Vec<&KernelOp>> = c.ops.iter().map(|l| l.iter().collect()).collect();
        b.iter_custom(|iters| time_iters(gpu, &c.step, &lists, iters))
    });
}

/// Runs `iters` iterations, iteration `i` recording `ops[i % len]`,
/// [`DISPATCHES_PER_SUBMIT`] iterations per submission; returns the time spent
/// in submit + wait.
fn time_iters(gpu: &Gpu, step: &Step, ops: &[Vec<&KernelOp>], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let n = (iters - done).min(DISPATCHES_PER_SUBMIT);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for i in done..done + n {
                for op in &ops[(i as usize) % ops.len()] {
                    op.record(&mut pass, step);
                }
            }
        }
        let cmd = enc.finish();
        let t0 = Instant::now();
        gpu.queue.submit([cmd]);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        total += t0.elapsed();
        done += n;
    }
    total
}

/// Writes the step and waits, so the first timed submission carries nothing else.
fn set_step(gpu: &Gpu, buf: &wgpu::Buffer, step: &Step) {
    gpu.queue.write_buffer(buf, 0, bytemuck::bytes_of(step));
    gpu.queue.submit([]);
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
}

/// `n × k` values in `dtype`'s encoding, with sane scales (timing only).
fn encode(dtype: DType, n: usize, k: usize) -> Vec<u8> {
    let vals = seeded(n * k, 17);
    let f16 = |x: f32| half::f16::from_f32(x).to_le_bytes();
    let mut out = Vec::with_capacity(dtype.bytes_for(n * k).unwrap());
    match dtype {
        DType::F32 => out.extend(bytemuck::cast_slice::<f32, u8>(&vals)),
        DType::F16 => vals.iter().for_each(|&v| out.extend(f16(v))),
        DType::BF16 => vals
            .iter()
            .for_each(|&v| out.extend(half::bf16::from_f32(v).to_le_bytes())),
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => {
            for b in vals.chunks(32) {
                out.extend(f16(0.01 + b[0].abs() * 0.02));
                if dtype == DType::Q4_1 {
                    out.extend(f16(b[1] * 0.1));
                }
                let qs: Vec<u8> = b.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
                match dtype {
                    DType::Q8_0 => out.extend(qs.iter().map(|q| q.wrapping_sub(128))),
                    _ => out.extend((0..16).map(|j| (qs[j] >> 4) | (qs[j + 16] & 0xf0))),
                }
            }
        }
        _ => out = sramlm::testing::random_blocks(dtype, n * k, 17),
    }
    out
}

fn weight_bytes(dtype: DType, n: usize, k: usize) -> usize {
    dtype.bytes_for(n * k).expect("whole blocks")
}

/// Copies of one `n × k` weight totalling ≥ [`ROTATE_BYTES`] (at most
/// [`ROTATE_MAX_COPIES`]), uploaded once and copied on the GPU.
fn weights(gpu: &Gpu, dtype: DType, n: usize, k: usize) -> Vec<GpuWeight> {
    let bytes = encode(dtype, n, k);
    let copies = ROTATE_BYTES
        .div_ceil(bytes.len())
        .clamp(1, ROTATE_MAX_COPIES);
    let first = gpu.upload("w", &bytes).expect("upload");
    let size = first.size();
    let mut bufs = vec![first];
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    for _ in 1..copies {
        let b = gpu.storage_buffer("w", size).expect("buffer");
        enc.copy_buffer_to_buffer(&bufs[0], 0, &b, 0, size);
        bufs.push(b);
    }
    gpu.queue.submit([enc.finish()]);
    bufs.into_iter()
        .map(|buf| GpuWeight {
            buf,
            dtype,
            rows: n,
            cols: k,
            bytes: bytes.len(),
        })
        .collect()
}

fn f32_buffer(gpu: &Gpu, label: &str, n: usize, seed: u64) -> wgpu::Buffer {
    gpu.upload(label, bytemuck::cast_slice(&seeded(n, seed)))
        .expect("upload")
}

fn bench_matmul(c: &mut Criterion, gpu: &Gpu, tokens: usize) {
    let group_name = if tokens == 1 {
        "matmul_decode".to_string()
    } else {
        format!("matmul_prefill{tokens}")
    };
    let mut g = c.benchmark_group(group_name);
    let mut cases: Vec<(DType, (&str, usize, usize))> = Vec::new();
    for &dt in WEIGHT_DTYPES {
        cases.extend(MATMUL_SHAPES.iter().map(|&s| (dt, s)));
    }
    cases.extend(LM_HEAD_DTYPES.iter().map(|&dt| (dt, LM_HEAD_SHAPE)));
    for (dt, (name, n, k)) in cases {
        g.throughput(Throughput::BytesDecimal(weight_bytes(dt, n, k) as u64));
        bench_case(&mut g, BenchmarkId::new(dt.to_string(), name), gpu, || {
            let mut case = Case::new(gpu, Step::tokens(tokens as u32, 0));
            let x = f32_buffer(gpu, "x", tokens * k, 3);
            let y = gpu.storage_buffer("y", (tokens * n * 4) as u64).unwrap();
            let ws = weights(gpu, dt, n, k);
            for w in &ws {
                let ops = matmul::build(
                    gpu,
                    &case.step_buf,
                    "mm",
                    w,
                    &x,
                    &y,
                    false,
                    matmul::Rows::Tokens,
                )
                .expect("build matmul");
                case.ops.push(ops.into_iter().collect());
            }
            case.keep((ws, x, y));
            case
        });
    }
    g.finish();
}

fn bench_sram_matmul(c: &mut Criterion, gpu: &Gpu) {
    let mut g = c.benchmark_group(format!("sram_matmul_decode_{}k", SRAM_SLICE_BYTES / 1024));
    if SRAM_SLICE_BYTES > gpu.limits.max_compute_workgroup_storage_size as usize {
        eprintln!(
            "sram_matmul: skipped, the adapter allows {} bytes of workgroup memory",
            gpu.limits.max_compute_workgroup_storage_size
        );
        return;
    }
    let t = DECODE_TOKENS;
    for &dt in WEIGHT_DTYPES {
        for &(name, n, k) in MATMUL_SHAPES {
            g.throughput(Throughput::BytesDecimal(weight_bytes(dt, n, k) as u64));
            bench_case(&mut g, BenchmarkId::new(dt.to_string(), name), gpu, || {
                let mut case = Case::new(gpu, Step::tokens(t as u32, 0));
                let x = f32_buffer(gpu, "x", t * k, 3);
                let y = gpu.storage_buffer("y", (t * n * 4) as u64).unwrap();
                let ws = weights(gpu, dt, n, k);
                for w in &ws {
                    let spec = sram_matmul::Spec {
                        name: "sram_mm",
                        w,
                        row_begin: 0,
                        row_end: n,
                        slice_bytes: SRAM_SLICE_BYTES,
                        accumulate: false,
                        out_rows_only: false,
                    };
                    let op = sram_matmul::build(gpu, &case.step_buf, &spec, &x, &y)
                        .expect("build sram_matmul");
                    case.ops.push(vec![op]);
                }
                case.keep((ws, x, y));
                case
            });
        }
    }
    g.finish();
}

fn bench_attention(c: &mut Criterion, gpu: &Gpu) {
    let (h, hkv, hd) = ATTN_HEADS;
    let mut g = c.benchmark_group(format!("attention_h{h}_kv{hkv}_d{hd}"));
    for &pos in ATTN_POSITIONS {
        let ctx = pos + 1;
        // K and V bytes read for the token at `pos` (positions 0..=pos).
        g.throughput(Throughput::BytesDecimal((2 * ctx * hkv * hd * 4) as u64));
        bench_case(&mut g, BenchmarkId::new("pos", pos), gpu, || {
            let mut case = Case::new(gpu, Step::tokens(1, pos as u32));
            let q = f32_buffer(gpu, "q", h * hd, 1);
            let kc = f32_buffer(gpu, "kc", ctx * hkv * hd, 2);
            let vc = f32_buffer(gpu, "vc", ctx * hkv * hd, 3);
            let out = gpu.storage_buffer("o", (h * hd * 4) as u64).unwrap();
            let op = attention::build(
                gpu,
                &case.step_buf,
                "attn",
                h,
                hkv,
                hd,
                &q,
                &kc,
                &vc,
                &out,
                0,
            )
            .expect("build attention");
            case.ops.push(vec![op]);
            case.keep((q, kc, vc, out));
            case
        });
    }
    g.finish();
}

fn bench_rmsnorm(c: &mut Criterion, gpu: &Gpu) {
    let mut g = c.benchmark_group("rmsnorm");
    bench_case(&mut g, BenchmarkId::new("dim", NORM_DIM), gpu, || {
        let mut case = Case::new(gpu, Step::tokens(1, 0));
        let w = f32_buffer(gpu, "w", NORM_DIM, 1);
        let x = f32_buffer(gpu, "x", NORM_DIM, 2);
        let y = gpu.storage_buffer("y", (NORM_DIM * 4) as u64).unwrap();
        let op = rmsnorm::build(gpu, &case.step_buf, "norm", NORM_DIM, 1e-5, &w, &x, &y)
            .expect("build rmsnorm");
        case.ops.push(vec![op]);
        case.keep((w, x, y));
        case
    });
    g.finish();
}

fn bench_copy_and_dispatch(c: &mut Criterion, gpu: &Gpu) {
    let mut g = c.benchmark_group("copy");
    // The calibration's size: the largest binding (≤ 256 MiB; ≤ 64 MiB on CPUs).
    let bytes = CalibrateOptions::for_gpu(gpu).copy_bytes;
    g.throughput(Throughput::BytesDecimal(bytes));
    let id = BenchmarkId::new("read_bytes", format!("{}MiB", bytes >> 20));
    bench_case(&mut g, id, gpu, || {
        let mut case = Case::new(gpu, Step::tokens(1, 0));
        let src = gpu.storage_buffer("src", bytes).unwrap();
        let dst = gpu.storage_buffer("dst", bytes).unwrap();
        let op = copy::build(gpu, &case.step_buf, "copy", &src, &dst, bytes).expect("copy");
        case.ops.push(vec![op]);
        case.keep((src, dst));
        case
    });
    g.throughput(Throughput::Elements(1));
    bench_case(
        &mut g,
        BenchmarkId::from_parameter("empty_dispatch"),
        gpu,
        || {
            let mut case = Case::new(gpu, Step::tokens(1, 0));
            let src = gpu.storage_buffer("src", 256).unwrap();
            let dst = gpu.storage_buffer("dst", 256).unwrap();
            let op = copy::build_empty(gpu, &case.step_buf, "empty", &src, &dst).expect("empty");
            case.ops.push(vec![op]);
            case.keep((src, dst));
            case
        },
    );
    g.finish();
}

fn open_gpu() -> Option<Arc<Gpu>> {
    let opts = match GpuOptions::from_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kernels bench: skipped: {e}");
            return None;
        }
    };
    match Gpu::new(&opts) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("kernels bench: skipped, no GPU adapter: {e}");
            None
        }
    }
}

fn kernels(c: &mut Criterion) {
    let Some(gpu) = open_gpu() else { return };
    eprintln!("adapter: {}", gpu.describe());
    match calibrate(&gpu) {
        Ok(cal) => eprintln!(
            "calibration: copy {:.2} GB/s read ({:.2} GB/s read+write), {:.2} µs/dispatch, {:.1} µs submit+wait ({} dispatches per submission below)",
            cal.copy_bytes_per_s / 1e9,
            cal.copy_traffic_bytes_per_s() / 1e9,
            cal.dispatch_s * 1e6,
            cal.submit_wait_s * 1e6,
            DISPATCHES_PER_SUBMIT
        ),
        Err(e) => eprintln!("calibration failed: {e}"),
    }
    bench_copy_and_dispatch(c, &gpu);
    bench_matmul(c, &gpu, DECODE_TOKENS);
    bench_matmul(c, &gpu, PREFILL_TOKENS);
    bench_sram_matmul(c, &gpu);
    bench_attention(c, &gpu);
    bench_rmsnorm(c, &gpu);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = kernels
}
criterion_main!(benches);
