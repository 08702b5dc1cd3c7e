//! `sramlm bench`: VRAM and SRAM mode side by side on one model, measured on
//! this adapter, next to what the cost model predicts. A row's speed counts
//! only if its tokens match the other mode's and the reference's.

pub mod calibrate;
pub mod output;
pub mod svg;

use crate::chip::{self, ChipSpec, GpuSpec, Plan, Precision};
use crate::exec::{argmax_of, Executor, Readback};
use crate::model::Model;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// A reference continuation for the benchmarked prompt, when one exists.
#[derive(Clone, Debug, Serialize)]
pub struct RefContinuation {
    pub source: String,
    pub ids: Vec<u32>,
}

/// One model × mode result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModeResult {
    pub mode: String,
    pub model: String,
    pub chip: Option<String>,
    pub chips_used: Option<usize>,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub repeats: usize,
    /// Sequences decoded together (decode tok/s then counts all of them, and
    /// the ms/token columns are per decode round).
    pub batch: usize,
    /// Measured, median over repeats.
    pub prefill_tok_s: f64,
    pub ttft_ms: f64,
    pub decode_tok_s: f64,
    pub ms_per_token_p50: f64,
    pub ms_per_token_p99: f64,
    /// Every decode latency of every repeat (ms), for the chart.
    pub ms_per_token_all: Vec<f64>,
    pub dispatches_per_token: u64,
    /// GPU time per kernel class per decoded token (ms), from timestamp
    /// queries in a separate profiled run; empty without timestamps.
    pub gpu_ms_per_token_by_class: BTreeMap<String, f64>,
    /// Counted from the kernels' inputs (not a hardware counter): weight bytes
    /// streamed per token plus KV-cache bytes read at the mean decode position.
    pub gpu_memory_bytes_read_per_token_counted: u64,
    /// SRAM mode: activation bytes crossing chip links per token (counted by the executor).
    pub link_bytes_per_token: Option<u64>,
    pub link_transfers_per_token: Option<u64>,
    /// SRAM mode emulation overhead (not a chip cost): bytes staged per step.
    pub emulation_staged_bytes_per_step: Option<u64>,
    /// SRAM mode: pipeline stages of the plan's program.
    pub pipeline_stages: Option<u64>,
    /// SRAM mode: stages (chips) active per pipeline step, mean over the last step.
    pub stages_active_per_step: Option<f64>,
    /// SRAM mode: the modeled token latency of the same model on groq-v1
    /// chips, next to the emulated (scale-model) chip's.
    pub modeled_groq_v1_ms_per_token: Option<f64>,
    pub ids: Vec<u32>,
    pub matches_reference: Option<bool>,
    pub matches_other_modes: bool,
    /// False when the output differs: the speed is then not a valid figure.
    pub valid: bool,
    /// Modeled (cost model, not measured): this mode's latency per token.
    pub modeled_ms_per_token: Option<f64>,
    pub modeled_what: Option<String>,
    /// (modeled − measured p50) / measured p50, in %.
    pub modeled_error_pct: Option<f64>,
    /// Modeled: the same model on an H100 SXM (VRAM mode) or the real chip
    /// cluster (SRAM mode), for scale.
    pub modeled_reference_ms_per_token: Option<f64>,
    pub modeled_reference_what: Option<String>,
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Progress callback: (done, total) decode steps.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// Greedy-generates `gen` tokens after `prompt`; returns (ids, prefill s,
/// per-token decode s).
fn run_once(
    exec: &mut dyn Executor,
    prompt: &[u32],
    gen: usize,
    progress: Progress,
) -> Result<(Vec<u32>, f64, Vec<f64>), crate::exec::ExecError> {
    exec.reset();
    let t = Instant::now();
    let out = exec.step(prompt, Readback::Argmax)?;
    let prefill = t.elapsed().as_secs_f64();
    let mut ids = vec![argmax_of(&out)];
    let mut lat = Vec::with_capacity(gen);
    // Per-token latency: the time between successive ids arriving.
    let mut t = Instant::now();
    let more = exec.decode_greedy(ids[0], gen.saturating_sub(1), &mut |_| {
        lat.push(t.elapsed().as_secs_f64());
        t = Instant::now();
        progress(1);
        true
    })?;
    ids.extend(more);
    Ok((ids, prefill, lat))
}

/// Benchmarks one executor: a warm-up run, `repeats` timed runs, one profiled run.
pub fn bench_mode(
    exec: &mut dyn Executor,
    m: &Model,
    prompt: &[u32],
    gen: usize,
    repeats: usize,
    progress: Progress,
) -> Result<ModeResult, crate::exec::ExecError> {
    let (warm_ids, _, _) = run_once(exec, prompt, gen, progress)?;
    let mut timings = Timings::default();
    let mut ids = warm_ids;
    for _ in 0..repeats {
        let (i, p, lat) = run_once(exec, prompt, gen, progress)?;
        if i != ids {
            // Nondeterministic output is a parity failure too.
            ids = Vec::new();
        }
        timings.add(prompt.len(), p, &lat, 1);
    }
    let dispatches = exec.counters().dispatches_last_decode;
    // Profiled run: per-class GPU time per decoded token.
    let mut by_class = BTreeMap::new();
    if exec.set_profiling(true) {
        exec.reset();
        exec.step(prompt, Readback::Argmax)?;
        exec.set_profiling(false);
        exec.set_profiling(true);
        let steps = gen.saturating_sub(1).clamp(1, 8);
        let mut last = ids.last().copied().unwrap_or(0);
        for _ in 0..steps {
            last = argmax_of(&exec.step(&[last], Readback::Argmax)?);
        }
        if let Some(p) = exec.profile() {
            for (class, (ns, _)) in p {
                by_class.insert(class.name().to_string(), ns / 1e6 / steps as f64);
            }
        }
        exec.set_profiling(false);
    }
    let mut r = mode_result(
        exec,
        m,
        prompt.len(),
        gen,
        repeats,
        1,
        timings,
        ids,
        dispatches,
    );
    r.gpu_ms_per_token_by_class = by_class;
    Ok(r)
}

/// Benchmarks `batch` copies of `prompt` decoded together (several resident
/// sequences: VRAM mode's batched step, SRAM mode's pipeline). Each round decodes one token of every
/// sequence; every sequence must produce the same ids.
pub fn bench_batch(
    exec: &mut dyn Executor,
    m: &Model,
    prompt: &[u32],
    gen: usize,
    repeats: usize,
    batch: usize,
    progress: Progress,
) -> Result<ModeResult, crate::exec::ExecError> {
    // (ids per sequence, prefill seconds, per-round decode seconds)
    type Run = (Vec<Vec<u32>>, f64, Vec<f64>);
    let mut once = |progress: &mut dyn FnMut(u64)| -> Result<Run, crate::exec::ExecError> {
        exec.reset();
        let t = Instant::now();
        let mut last = Vec::with_capacity(batch);
        for s in 0..batch {
            exec.select(s)?;
            last.push(argmax_of(&exec.step(prompt, Readback::Argmax)?));
        }
        let prefill = t.elapsed().as_secs_f64();
        let mut ids: Vec<Vec<u32>> = last.iter().map(|&t| vec![t]).collect();
        let mut lat = Vec::new();
        while ids[0].len() < gen {
            let t = Instant::now();
            last = exec.decode_batch(&last)?;
            lat.push(t.elapsed().as_secs_f64());
            for (s, &t) in last.iter().enumerate() {
                ids[s].push(t);
            }
            progress(1);
        }
        Ok((ids, prefill, lat))
    };
    let (warm, _, _) = once(progress)?;
    let mut timings = Timings::default();
    let mut consistent = warm.iter().all(|s| *s == warm[0]);
    for _ in 0..repeats {
        let (ids, p, lat) = once(progress)?;
        consistent &= ids == warm;
        timings.add(prompt.len() * batch, p, &lat, batch);
    }
    // Sequences that disagree with each other make the row invalid.
    let ids = if consistent {
        warm[0].clone()
    } else {
        Vec::new()
    };
    let dispatches = exec.counters().dispatches_last_decode;
    Ok(mode_result(
        exec,
        m,
        prompt.len(),
        gen,
        repeats,
        batch,
        timings,
        ids,
        dispatches,
    ))
}

/// The timed runs of one mode, in the units [`ModeResult`] reports.
#[derive(Default)]
struct Timings {
    prefill_tok_s: Vec<f64>,
    ttft_ms: Vec<f64>,
    decode_tok_s: Vec<f64>,
    ms_per_token_all: Vec<f64>,
}

impl Timings {
    /// One run: `prefill_tokens` in `prefill_s` seconds, then one decode
    /// round per entry of `rounds_s` (seconds), each giving `per_round` tokens.
    fn add(&mut self, prefill_tokens: usize, prefill_s: f64, rounds_s: &[f64], per_round: usize) {
        self.prefill_tok_s.push(prefill_tokens as f64 / prefill_s);
        self.ttft_ms.push(prefill_s * 1e3);
        if !rounds_s.is_empty() {
            self.decode_tok_s
                .push((rounds_s.len() * per_round) as f64 / rounds_s.iter().sum::<f64>());
        }
        self.ms_per_token_all
            .extend(rounds_s.iter().map(|s| s * 1e3));
    }
}

/// A [`ModeResult`] from one mode's timed runs, with the bytes the mode
/// reports (weights shared by `batch` sequences, KV read at the mean
/// position, link and staging figures from [`Executor::sram_report`]).
#[allow(clippy::too_many_arguments)]
fn mode_result(
    exec: &dyn Executor,
    m: &Model,
    prompt_tokens: usize,
    gen: usize,
    repeats: usize,
    batch: usize,
    t: Timings,
    ids: Vec<u32>,
    dispatches: u64,
) -> ModeResult {
    let x = exec.sram_report().map(|r| r.stats);
    let stat = |f: fn(&crate::exec::sram::SramStats) -> u64| x.as_ref().map(f);
    let mean_pos = prompt_tokens + gen / 2;
    let kv_read = (m.config.num_layers * 2 * mean_pos * m.config.kv_dim() * 4) as u64;
    ModeResult {
        mode: exec.mode().into(),
        model: m.name.clone(),
        prompt_tokens,
        gen_tokens: gen,
        repeats,
        batch,
        prefill_tok_s: median(&t.prefill_tok_s),
        ttft_ms: median(&t.ttft_ms),
        decode_tok_s: median(&t.decode_tok_s),
        ms_per_token_p50: percentile(&t.ms_per_token_all, 50.0),
        ms_per_token_p99: percentile(&t.ms_per_token_all, 99.0),
        ms_per_token_all: t.ms_per_token_all,
        dispatches_per_token: dispatches,
        gpu_memory_bytes_read_per_token_counted: exec.weight_bytes() / batch as u64 + kv_read,
        link_bytes_per_token: stat(|s| s.link_bytes_per_token as u64),
        link_transfers_per_token: stat(|s| s.link_transfers_per_token as u64),
        emulation_staged_bytes_per_step: stat(|s| s.emulation_staged_bytes_per_step),
        pipeline_stages: stat(|s| s.pipeline_stages as u64),
        stages_active_per_step: x.as_ref().map(|s| s.stages_active_mean_last),
        ids,
        valid: true,
        matches_other_modes: true,
        ..Default::default()
    }
}

/// Cross-checks every result's ids against the reference and each other.
pub fn check_parity(results: &mut [ModeResult], reference: Option<&RefContinuation>) {
    let ids: Vec<Vec<u32>> = results.iter().map(|r| r.ids.clone()).collect();
    for (i, r) in results.iter_mut().enumerate() {
        r.matches_other_modes =
            !r.ids.is_empty() && ids.iter().enumerate().all(|(j, o)| j == i || *o == r.ids);
        r.matches_reference = reference.map(|rf| {
            let n = rf.ids.len().min(r.ids.len());
            n > 0 && r.ids[..n] == rf.ids[..n]
        });
        r.valid = r.matches_other_modes && r.matches_reference != Some(false);
    }
}

/// Adds the modeled latencies: VRAM mode from a GPU spec calibrated on this
/// adapter (and an H100 for scale); SRAM mode from the plan and chip spec
/// (the emulated cluster's own latency, not this GPU's).
pub fn add_models(
    r: &mut ModeResult,
    plan: Option<&Plan>,
    spec: Option<&ChipSpec>,
    measured_gpu: Option<&GpuSpec>,
    m: &Model,
) {
    let mean_pos = r.prompt_tokens + r.gen_tokens / 2;
    let cfg = &m.config;
    let kv = cfg.num_layers * 2 * mean_pos * cfg.kv_dim() * 4;
    let flops = 2.0 * cfg.param_count() as f64;
    match (plan, spec) {
        (Some(plan), Some(spec)) => {
            let c = chip::modeled_token_latency(plan, spec, Precision::Fp16);
            r.modeled_ms_per_token = Some(c.modeled_token_latency_s * 1e3);
            r.modeled_what = Some(format!(
                "modeled: the emulated {} cluster ({} chips), if it were real hardware ({} dependent stages; {})",
                spec.name,
                plan.totals.chips_used,
                c.dependent_stages,
                crate::study::floor_note(spec)
            ));
            // The same model and settings on groq-v1, for scale.
            let g = ChipSpec::groq_v1();
            let mut o = chip::PlaceOptions::for_config(cfg);
            o.context_len = plan.model.context_len;
            o.batch = plan.model.batch;
            o.microbatch_tokens = plan.model.microbatch_tokens;
            if let Ok(p) = chip::place(cfg, &chip::TensorInfo::from_weights(&m.weights), &g, &o) {
                let c = chip::modeled_token_latency(&p, &g, Precision::Fp16);
                r.modeled_groq_v1_ms_per_token = Some(c.modeled_token_latency_s * 1e3);
            }
        }
        _ => {
            if let Some(g) = measured_gpu {
                let c = chip::modeled_gpu_token_latency(
                    r.gpu_memory_bytes_read_per_token_counted as usize
                        - kv.min(r.gpu_memory_bytes_read_per_token_counted as usize),
                    kv,
                    flops,
                    r.dispatches_per_token as usize,
                    g,
                );
                let ms = c.modeled_token_latency_s * 1e3;
                r.modeled_ms_per_token = Some(ms);
                r.modeled_what = Some(format!(
                    "modeled: this adapter ({}), calibrated bandwidth + dispatch + submit",
                    g.name
                ));
                if r.ms_per_token_p50.is_finite() && r.ms_per_token_p50 > 0.0 {
                    r.modeled_error_pct =
                        Some((ms - r.ms_per_token_p50) / r.ms_per_token_p50 * 100.0);
                }
            }
            let h = GpuSpec::h100_sxm();
            let c = chip::modeled_gpu_token_latency(
                r.gpu_memory_bytes_read_per_token_counted as usize
                    - kv.min(r.gpu_memory_bytes_read_per_token_counted as usize),
                kv,
                flops,
                r.dispatches_per_token as usize,
                &h,
            );
            r.modeled_reference_ms_per_token = Some(c.modeled_token_latency_s * 1e3);
            r.modeled_reference_what =
                Some("modeled: H100 SXM (3.35 TB/s, 2.2 µs/dispatch, 57 µs submit)".into());
        }
    }
}

/// The table printed on stdout.
/// [`table`] in at most 100 columns: speed, latency and dispatch columns and
/// a short verdict per run; the byte counts and modeled figures follow as
/// wrapped lines (`sramlm bench --wide`: every column).
pub fn table_narrow(results: &[ModeResult]) -> String {
    use crate::chip::report::{cut, wrap};
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<30} {:>9} {:>8} {:>9} {:>8} {:>8} {:>5}  output",
        "model · mode", "prefill", "TTFT", "decode", "p50", "p99", "disp"
    );
    let _ = writeln!(
        o,
        "{:<30} {:>9} {:>8} {:>9} {:>8} {:>8} {:>5}",
        "", "tok/s", "ms", "tok/s", "ms/tok", "ms/tok", "/tok"
    );
    for r in results {
        let name = row_name(r);
        let speed = |v: f64| speed_cell(r, v);
        let verdict = match (r.valid, r.matches_reference) {
            (false, _) => "MISMATCH",
            (true, Some(true)) => "= reference",
            (true, _) => "= other modes",
        };
        let _ = writeln!(
            o,
            "{:<30} {:>9} {:>8.1} {:>9} {:>8.2} {:>8.2} {:>5}  {}",
            cut(&name, 30),
            speed(r.prefill_tok_s),
            r.ttft_ms,
            speed(r.decode_tok_s),
            r.ms_per_token_p50,
            r.ms_per_token_p99,
            r.dispatches_per_token,
            verdict
        );
    }
    for r in results {
        let line = format!(
            "{} · {}: GPU memory read {} B/token (counted), link traffic {}",
            r.model,
            r.mode,
            r.gpu_memory_bytes_read_per_token_counted,
            r.link_bytes_per_token
                .map_or("-".into(), |v| format!("{v} B/token"))
        );
        for l in wrap(&line, 100) {
            let _ = writeln!(o, "{l}");
        }
        if let Some(stages) = r.pipeline_stages {
            let ms = |v: Option<f64>| match v {
                None => "-".into(),
                Some(v) if v < 0.1 => format!("{:.2} µs/token", v * 1e3),
                Some(v) => format!("{v:.3} ms/token"),
            };
            let line = format!(
                "{} · sram: the speeds above are the EMULATOR's speed on this adapter, not a chip's; modeled chip time (with the latency floor per dependent stage, fitted): {} on {}, {} on groq-v1; {} pipeline stages, {:.1} chips active per step, {} dispatches/token",
                r.model,
                ms(r.modeled_ms_per_token),
                r.chip.as_deref().unwrap_or("?"),
                ms(r.modeled_groq_v1_ms_per_token),
                stages,
                r.stages_active_per_step.unwrap_or(0.0),
                r.dispatches_per_token
            );
            for l in wrap(&line, 100) {
                let _ = writeln!(o, "{l}");
            }
        }
    }
    // The per-class and modeled lines of the wide table, wrapped.
    let wide = table(results);
    let skip = 2 + results.len();
    for line in wide.lines().skip(skip) {
        for l in wrap(line, 100) {
            let _ = writeln!(o, "{l}");
        }
    }
    o
}

pub fn table(results: &[ModeResult]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>10} {:>10} {:>12}  output",
        "model · mode",
        "prefill",
        "TTFT",
        "decode",
        "p50",
        "p99",
        "disp",
        "GPU read",
        "link/tok",
        "modeled"
    );
    let _ = writeln!(
        o,
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>10} {:>10} {:>12}",
        "", "tok/s", "ms", "tok/s", "ms/tok", "ms/tok", "/tok", "B/tok", "B", "ms/tok"
    );
    for r in results {
        let name = row_name(r);
        let speed = |v: f64| speed_cell(r, v);
        let verdict = match (r.valid, r.matches_reference) {
            (false, _) => "MISMATCH: speed not valid".to_string(),
            (true, Some(true)) => "= reference, = other modes".into(),
            (true, _) => "= other modes (no reference)".into(),
        };
        let _ = writeln!(
            o,
            "{:<44} {:>9} {:>9.1} {:>9} {:>9.2} {:>9.2} {:>6} {:>10} {:>10} {:>12}  {}",
            name,
            speed(r.prefill_tok_s),
            r.ttft_ms,
            speed(r.decode_tok_s),
            r.ms_per_token_p50,
            r.ms_per_token_p99,
            r.dispatches_per_token,
            r.gpu_memory_bytes_read_per_token_counted,
            r.link_bytes_per_token.map_or("-".into(), |v| v.to_string()),
            r.modeled_ms_per_token
                .map_or("-".into(), |v| format!("{v:.4}")),
            verdict
        );
    }
    for r in results {
        if !r.gpu_ms_per_token_by_class.is_empty() {
            let parts: Vec<String> = r
                .gpu_ms_per_token_by_class
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            let _ = writeln!(
                o,
                "GPU ms/token by kernel class ({} · {}): {}",
                r.model,
                r.mode,
                parts.join(", ")
            );
        }
    }
    for r in results {
        if let (Some(m), Some(w)) = (r.modeled_ms_per_token, &r.modeled_what) {
            let err = r.modeled_error_pct.map_or(String::new(), |e| {
                format!(" — error vs measured p50: {e:+.0}%")
            });
            let _ = writeln!(o, "{} · {}: {w}: {m:.4} ms/token{err}", r.model, r.mode);
        }
        if let (Some(m), Some(w)) = (r.modeled_reference_ms_per_token, &r.modeled_reference_what) {
            let _ = writeln!(o, "{} · {}: {w}: {m:.4} ms/token", r.model, r.mode);
        }
    }
    o
}

/// A table row's name: model · mode, the chip and its count, the batch.
fn row_name(r: &ModeResult) -> String {
    let mut name = match (&r.chip, r.chips_used) {
        (Some(c), Some(n)) => format!("{} · {} {}×{}", r.model, r.mode, c, n),
        _ => format!("{} · {}", r.model, r.mode),
    };
    if r.batch > 1 {
        name.push_str(&format!(" batch {}", r.batch));
    }
    name
}

/// A speed cell: the figure, or INVALID when the run's output did not check.
fn speed_cell(r: &ModeResult, v: f64) -> String {
    if r.valid {
        format!("{v:.1}")
    } else {
        "INVALID".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_table_fits_100_columns_and_keeps_every_run() {
        let r = ModeResult {
            model: "SmolLM2-135M-Instruct.Q4_1".into(),
            mode: "sram".into(),
            chip: Some("mini-256k-32k-slices".into()),
            chips_used: Some(412),
            batch: 4,
            valid: true,
            matches_reference: Some(true),
            prefill_tok_s: 12345.6,
            decode_tok_s: 789.1,
            gpu_memory_bytes_read_per_token_counted: 123_456_789,
            link_bytes_per_token: Some(987_654),
            modeled_ms_per_token: Some(0.1234),
            modeled_what: Some("modeled SRAM-only cluster, f32 live sets over one link per hop, pipelined over every chip".into()),
            ..Default::default()
        };
        let v = ModeResult {
            mode: "vram".into(),
            chip: None,
            chips_used: None,
            batch: 1,
            ..r.clone()
        };
        let wide = table(&[r.clone(), v.clone()]);
        assert!(wide.lines().any(|l| l.chars().count() > 100), "{wide}");
        let narrow = table_narrow(&[r, v]);
        for l in narrow.lines() {
            assert!(l.chars().count() <= 100, "{l:?}\n{narrow}");
        }
        assert!(
            narrow.contains("12345.6") && narrow.contains("789.1"),
            "{narrow}"
        );
        assert!(narrow.contains("123456789 B/token"), "{narrow}");
        assert!(narrow.contains("0.1234 ms/token"), "{narrow}");
        assert_eq!(narrow.matches("= reference").count(), 2, "{narrow}");
    }
}
