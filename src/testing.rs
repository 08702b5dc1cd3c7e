//! Helpers for the test suite (unit and integration tests): the test GPU,
//! seeded data, tolerant comparison. Not used by the engine itself.

use crate::gpu::{Gpu, GpuOptions};
use std::io::Write;
use std::sync::{Arc, OnceLock};

/// The plain CPU forward pass tests compare the GPU kernels against.
pub mod reference;

/// Writes past libtest's output capture, so every GPU test shows its adapter.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "[sramlm test] {msg}");
}

/// Ends the test process if it runs longer than `SRAMLM_TEST_TIMEOUT` seconds
/// (default 1200): a hung GPU driver must fail CI, not stall it.
fn start_watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let secs: u64 = std::env::var("SRAMLM_TEST_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1200);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            say(&format!(
                "TIMEOUT: GPU tests still running after {secs} s; aborting"
            ));
            std::process::exit(101);
        });
    });
}

/// The adapter chosen by `SRAMLM_BACKEND` / `SRAMLM_ADAPTER` /
/// `SRAMLM_DOWNLEVEL`, shared by the tests of one binary. Without one: a
/// visible skip locally, a panic (test failure) when `CI` is set.
pub fn gpu() -> Option<Arc<Gpu>> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    start_watchdog();
    let g = GPU.get_or_init(|| {
        GpuOptions::from_env()
            .map_err(|e| e.to_string())
            .and_then(|o| Gpu::new(&o).map_err(|e| e.to_string()))
    });
    let name = std::thread::current().name().unwrap_or("?").to_string();
    match g {
        Ok(g) => {
            say(&format!("{name}: adapter {} {:?}", g.describe(), g.level));
            Some(g.clone())
        }
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but no GPU adapter is usable: {e}");
            }
            say(&format!("{name}: SKIPPED (no GPU adapter): {e}"));
            None
        }
    }
}

/// The test adapter once per matmul path it has: [`gpu`] and, where the
/// adapter has subgroups, a second device on the other path (thread per row
/// or subgroup per row), so that CI's lavapipe covers both. Empty if no GPU.
pub fn gpu_paths() -> Vec<Arc<Gpu>> {
    static OTHER: OnceLock<Option<Arc<Gpu>>> = OnceLock::new();
    let Some(g) = gpu() else { return Vec::new() };
    let other = OTHER.get_or_init(|| {
        if !g.level.subgroups {
            return None;
        }
        let mut o = GpuOptions::from_env().ok()?;
        o.subgroup_matmul = Some(!g.level.subgroup_matmul);
        let g2 = Gpu::new(&o).expect("a second device on the test adapter");
        assert_ne!(g2.level.subgroup_matmul, g.level.subgroup_matmul);
        Some(g2)
    });
    std::iter::once(g).chain(other.clone()).collect()
}

/// Deterministic pseudo-random values in [-1, 1) (splitmix64).
pub fn seeded(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}: index {i}: got {g}, want {w} (err {err})"
        );
    }
}

pub fn read_f32(gpu: &Gpu, buf: &wgpu::Buffer, n: usize) -> Vec<f32> {
    let bytes = gpu.read_storage(buf, (n * 4) as u64).expect("readback");
    bytemuck::cast_slice(&bytes).to_vec()
}

/// Runs the given ops in one pass with `step` and waits for them.
pub fn run(
    gpu: &Gpu,
    step_buf: &wgpu::Buffer,
    step: crate::kernels::Step,
    ops: &[&crate::kernels::KernelOp],
) {
    gpu.queue
        .write_buffer(step_buf, 0, bytemuck::bytes_of(&step));
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for op in ops {
            op.record(&mut pass, &step);
        }
    }
    gpu.queue.submit([enc.finish()]);
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
}

/// One prompt of a reference fixture (computed with Hugging Face transformers).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct RefPrompt {
    pub key: String,
    pub text: String,
    pub input_ids: Vec<u32>,
    /// Per position: the 10 largest `[id, logit]`, best first.
    pub topk_per_position: Vec<Vec<(u32, f32)>>,
    pub logit_11th_largest_per_position: Vec<f32>,
    pub greedy: RefGreedy,
    pub all_logits_tensor: Option<String>,
    pub last_logits_tensor: Option<String>,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub struct RefGreedy {
    pub new_ids: Vec<u32>,
    pub top1_minus_top2_logit_margin: Vec<f32>,
}

/// A reference fixture folder: `<name>.json` plus `<name>.safetensors`.
pub struct Reference {
    pub prompts: Vec<RefPrompt>,
    tensors: std::collections::HashMap<String, Vec<f32>>,
}

impl Reference {
    pub fn load(dir: &std::path::Path, name: &str) -> anyhow::Result<Self> {
        #[derive(serde::Deserialize)]
        struct File {
            prompts: Vec<RefPrompt>,
        }
        let json = std::fs::read_to_string(dir.join(format!("{name}.json")))?;
        let f: File = serde_json::from_str(&json)?;
        let bytes = std::fs::read(dir.join(format!("{name}.safetensors")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)?;
        let mut tensors = std::collections::HashMap::new();
        for (k, v) in st.tensors() {
            let data: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(k, data);
        }
        Ok(Reference {
            prompts: f.prompts,
            tensors,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.tensors.get(name).map(|v| v.as_slice())
    }
}

/// The fixture folder of the crate (`tests/fixtures/<name>`).
pub fn fixture_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Checks one position's logits against the reference top-10 with tolerance
/// `tol`: the sets must agree where the 10th logit clears the 11th by more than
/// `tol`, and ranks may differ only between logits tied within `tol`.
pub fn check_top10(
    logits: &[f32],
    want: &[(u32, f32)],
    eleventh: f32,
    tol: f32,
) -> Result<(), String> {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    let got: Vec<u32> = ids[..want.len()].to_vec();
    for (r, &(wid, wl)) in want.iter().enumerate() {
        let gid = got[r];
        if gid == wid {
            continue;
        }
        // A different id at rank r: fine only if its reference logit ties.
        let gl_ref = want.iter().find(|p| p.0 == gid).map(|p| p.1);
        let tie = match gl_ref {
            Some(l) => (l - wl).abs() <= 2.0 * tol,
            // Outside the reference top-10: allowed only at the boundary tie.
            None => want.last().is_some_and(|l| l.1 - eleventh <= 2.0 * tol),
        };
        if !tie {
            return Err(format!(
                "rank {r}: got id {gid}, reference id {wid} (logit {wl}); top-10 got {got:?}"
            ));
        }
    }
    Ok(())
}

/// Opens a device on the first adapter of `backend` (for the cross-backend
/// tests); `downlevel` forces the lowest feature level. `None` if absent.
pub fn gpu_for(backend: crate::gpu::BackendChoice, downlevel: bool) -> Option<Arc<Gpu>> {
    start_watchdog();
    let opts = GpuOptions {
        backend,
        adapter: std::env::var("SRAMLM_ADAPTER")
            .ok()
            .filter(|s| !s.is_empty()),
        downlevel,
        subgroup_matmul: None,
    };
    match Gpu::new(&opts) {
        Ok(g) => {
            say(&format!(
                "{}: adapter {} {:?}",
                std::thread::current().name().unwrap_or("?"),
                g.describe(),
                g.level
            ));
            Some(g)
        }
        Err(e) => {
            say(&format!("no {backend:?} adapter: {e}"));
            None
        }
    }
}

/// Parity of one executor with a stories260K-style reference (every prompt:
/// ids, every logit within `tol`, top-10 per position, greedy 32 tokens).
/// Returns the largest logit error seen.
pub fn check_reference_parity(
    exec: &mut dyn crate::exec::Executor,
    m: &crate::model::Model,
    r: &Reference,
    tol: f32,
    what: &str,
) -> f32 {
    use crate::exec::{Readback, StepOutput};
    let vocab = m.config.vocab_size;
    let mut worst = 0f32;
    for p in &r.prompts {
        let ids = m.tokenizer.encode(&p.text).expect("encode");
        assert_eq!(ids, p.input_ids, "{what} {}: prompt ids", p.key);
        exec.reset();
        let StepOutput::Logits { rows, data } = exec.step(&ids, Readback::AllLogits).expect("step")
        else {
            panic!("{what}: logits expected")
        };
        assert_eq!(rows, ids.len());
        let want = r
            .tensor(p.all_logits_tensor.as_deref().expect("all logits stored"))
            .expect("tensor");
        let mut max_err = 0f32;
        for (i, (g, w)) in data.iter().zip(want).enumerate() {
            let e = (g - w).abs();
            assert!(e.is_finite(), "{what} {}: non-finite logit at {i}", p.key);
            max_err = max_err.max(e);
        }
        assert!(
            max_err <= tol,
            "{what} {}: max |logit error| {max_err} > {tol}",
            p.key
        );
        for pos in 0..rows {
            check_top10(
                &data[pos * vocab..(pos + 1) * vocab],
                &p.topk_per_position[pos],
                p.logit_11th_largest_per_position[pos],
                max_err.max(1e-6),
            )
            .unwrap_or_else(|e| panic!("{what} {} position {pos}: {e}", p.key));
        }
        let opts = crate::generate::GenerateOptions {
            max_tokens: 32,
            sampling: crate::sampling::SamplingOptions {
                temperature: 0.0,
                ..Default::default()
            },
            ignore_eos: true,
            stop_ids: vec![],
            ..Default::default()
        };
        let g =
            crate::generate::generate(exec, &m.tokenizer, &m.config, &p.input_ids, &opts, |_| {})
                .expect("generate");
        assert_eq!(
            g.ids, p.greedy.new_ids,
            "{what} {}: greedy continuation",
            p.key
        );
        worst = worst.max(max_err);
    }
    worst
}

/// `n` values (a multiple of the block length) of random weights in `dtype`'s
/// file encoding: random quant bits, sane f16 scales (and mins) placed where
/// ggml's block layout has them. Deterministic in `seed`.
pub fn random_blocks(dtype: crate::model::DType, n: usize, seed: u64) -> Vec<u8> {
    use crate::model::DType;
    let vals = seeded(n, seed);
    let f16 = |x: f32| half::f16::from_f32(x).to_le_bytes();
    match dtype {
        DType::F32 => return bytemuck::cast_slice::<f32, u8>(&vals).to_vec(),
        DType::F16 => return vals.iter().flat_map(|&v| f16(v)).collect(),
        DType::BF16 => {
            return vals
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect()
        }
        _ => {}
    }
    let nb = n / dtype.block_len();
    let bb = dtype.block_bytes();
    let mut out: Vec<u8> = seeded(nb * bb, seed ^ 0xb10c)
        .iter()
        .map(|v| ((v + 1.0) * 127.99) as u8)
        .collect();
    let u = seeded(2 * nb, seed ^ 0x5ca1e);
    // (offset of d, offset of the min / dmin if any, scale range)
    let (d_at, m_at, d_max) = match dtype {
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => (0, None, 0.05),
        DType::Q4_1 | DType::Q5_1 => (0, Some(2), 0.05),
        DType::Q2_K => (80, Some(82), 0.02),
        DType::Q3_K => (108, None, 0.005),
        DType::Q4_K | DType::Q5_K => (0, Some(2), 0.005),
        DType::Q6_K => (208, None, 0.002),
        DType::F32 | DType::F16 | DType::BF16 => unreachable!(),
    };
    for (b, blk) in out.chunks_exact_mut(bb).enumerate() {
        let d = d_max * (0.2 + 0.8 * u[2 * b].abs());
        blk[d_at..d_at + 2].copy_from_slice(&f16(d));
        if let Some(m) = m_at {
            // Q4_1/Q5_1: an offset of either sign; K-quants: a positive dmin.
            let v = if dtype.block_len() == 32 {
                0.3 * u[2 * b + 1]
            } else {
                d_max * u[2 * b + 1].abs()
            };
            blk[m..m + 2].copy_from_slice(&f16(v));
        }
    }
    out
}
