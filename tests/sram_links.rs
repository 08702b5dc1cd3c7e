//! The plan is the program: for every chip preset (built-in and the specs in
//! models/chips) and both bundled models, the link bytes the SRAM executor
//! counts while it runs equal the bytes the plan lists, and the tokens equal
//! VRAM mode's.

use sramlm::chip::{place_tp, ChipSpec, PlaceOptions, Plan, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::{Executor, Readback, StepOutput};
use sramlm::model::{self, Model};
use sramlm::testing::gpu;
use std::path::Path;
use std::sync::Arc;

fn specs() -> Vec<ChipSpec> {
    let mut v = ChipSpec::presets();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chips");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    v.extend(files.iter().map(|p| ChipSpec::load(p).unwrap()));
    v
}

fn greedy(e: &mut dyn Executor, prompt: &[u32], n: usize) -> Vec<u32> {
    let id = |o: StepOutput| match o {
        StepOutput::Token { id, .. } => id,
        o => panic!("{o:?}"),
    };
    let mut out = vec![id(e.step(prompt, Readback::Argmax).unwrap())];
    while out.len() < n {
        out.push(id(e
            .step(&[*out.last().unwrap()], Readback::Argmax)
            .unwrap()));
    }
    out
}

const CTX: usize = 64;
const MB: usize = 4;
const NEW: usize = 5;

fn check(
    g: &Arc<sramlm::gpu::Gpu>,
    m: &Model,
    spec: &ChipSpec,
    prompt: &[u32],
) -> (Plan, Vec<u32>) {
    check_tp(g, m, spec, prompt, 1)
}

/// Runs `m` on `spec` in SRAM mode at tensor-parallel degree `tp`; checks
/// counted == planned link bytes for the decoded tokens and returns the
/// tokens.
fn check_tp(
    g: &Arc<sramlm::gpu::Gpu>,
    m: &Model,
    spec: &ChipSpec,
    prompt: &[u32],
    tp: usize,
) -> (Plan, Vec<u32>) {
    let mut o = PlaceOptions::for_config(&m.config);
    o.context_len = CTX;
    o.microbatch_tokens = MB;
    let plan = place_tp(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        spec,
        &o,
        tp,
    )
    .unwrap();
    assert_eq!(plan.program_error, None, "{}", spec.name);
    let planned: usize = plan
        .stages
        .iter()
        .flat_map(|s| &s.carry)
        .map(|c| 4 * c.values)
        .sum();
    assert_eq!(planned, plan.totals.link_bytes_per_token, "{}", spec.name);
    let mut e = SramExecutor::new(
        g.clone(),
        &m.config,
        &m.weights,
        &plan,
        &SramOptions::default(),
    )
    .unwrap();
    // The prompt first (micro-batches: the logits cross links only on the
    // last micro-batch's last row), then one token at a time.
    let first = e.step(prompt, Readback::Argmax).unwrap();
    let after_prefill = e.sram_stats().link_bytes_counted;
    let StepOutput::Token { id, .. } = first else {
        panic!()
    };
    let mut toks = vec![id];
    while toks.len() < NEW {
        let StepOutput::Token { id, .. } =
            e.step(&[*toks.last().unwrap()], Readback::Argmax).unwrap()
        else {
            panic!()
        };
        toks.push(id);
    }
    let decoded = e.sram_stats().link_bytes_counted - after_prefill;
    assert_eq!(
        decoded as usize,
        (NEW - 1) * plan.totals.link_bytes_per_token,
        "{}: counted link bytes of {} decoded tokens vs the plan's {} per token",
        spec.name,
        NEW - 1,
        plan.totals.link_bytes_per_token
    );
    // Prefill: every link carries every prompt token, except the partial
    // logits, which cross only for the output row.
    let logits: usize = plan
        .stages
        .iter()
        .flat_map(|s| &s.carry)
        .filter(|c| c.name == "logits")
        .map(|c| 4 * c.values)
        .sum();
    assert_eq!(
        after_prefill as usize,
        prompt.len() * (plan.totals.link_bytes_per_token - logits) + logits,
        "{}: prefill link bytes",
        spec.name
    );
    if plan.totals.chips_used > 1 {
        assert!(planned > 0, "{}", spec.name);
    }
    (plan, toks)
}

#[test]
fn stories260k_counted_link_bytes_equal_the_plan_on_every_spec() {
    let Some(g) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let prompt = m.tokenizer.encode("Once upon a time, there was a").unwrap();
    let mut v = VramExecutor::new(
        g.clone(),
        &m.config,
        &m.weights,
        &VramOptions {
            context: Some(CTX),
            chunk: 256,
        },
    )
    .unwrap();
    let want = greedy(&mut v, &prompt, NEW);
    let mut multi = 0;
    for spec in specs() {
        let (plan, got) = check(&g, &m, &spec, &prompt);
        assert_eq!(got, want, "{} x{}", spec.name, plan.totals.chips_used);
        // A tied embedding sits at the tail: its row reaches chip 0 over an
        // executed loopback link.
        if plan.totals.chips_used > 1 {
            multi += 1;
            assert_eq!(
                plan.totals.loopback_bytes_per_token,
                4 * m.config.hidden_size,
                "{}",
                spec.name
            );
        }
        eprintln!(
            "{}: {} chips, {} stages, {} link B/token",
            spec.name,
            plan.totals.chips_used,
            plan.stages.len(),
            plan.totals.link_bytes_per_token
        );
    }
    assert!(multi >= 2, "at least two specs must span several chips");
}

/// Tensor parallelism: the collectives (all-gathers inside a group, the
/// hand-over between groups, the embedding row to the first group, the
/// logits onto the read-out chip) are counted as they run.
#[test]
fn stories260k_tensor_parallel_link_bytes_equal_the_plan() {
    let Some(g) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let prompt = m.tokenizer.encode("Once upon a time, there was a").unwrap();
    let mut v = VramExecutor::new(
        g.clone(),
        &m.config,
        &m.weights,
        &VramOptions {
            context: Some(CTX),
            chunk: 256,
        },
    )
    .unwrap();
    let want = greedy(&mut v, &prompt, NEW);
    let small = ChipSpec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chips/mini-256k-32k-slices.json"),
    )
    .unwrap();
    for (spec, tp) in [(small.clone(), 2), (small, 4), (ChipSpec::groq_v1(), 2)] {
        let (plan, got) = check_tp(&g, &m, &spec, &prompt, tp);
        assert_eq!(got, want, "{} tp {tp}", spec.name);
        assert_eq!(plan.totals.chips_used % tp, 0);
        // The embedding row reaches every chip of the first group (one of
        // them is its own when the whole model is one group).
        let to = if plan.totals.chips_used > tp {
            tp
        } else {
            tp - 1
        };
        assert_eq!(
            plan.totals.loopback_bytes_per_token,
            to * 4 * m.config.hidden_size,
            "{} tp {tp}",
            spec.name
        );
    }
}

#[test]
fn smollm2_counted_link_bytes_equal_the_plan_on_mini_4m() {
    let Some(g) = gpu() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!(
            "skipping: {} missing (models/get-smollm2.sh)",
            path.display()
        );
        assert!(std::env::var_os("CI").is_none(), "CI must have SmolLM2");
        return;
    }
    let m = model::load(&path).unwrap();
    let prompt = m.tokenizer.encode("The capital of France is").unwrap();
    let mut v = VramExecutor::new(
        g.clone(),
        &m.config,
        &m.weights,
        &VramOptions {
            context: Some(CTX),
            chunk: 256,
        },
    )
    .unwrap();
    let want = greedy(&mut v, &prompt, NEW);
    drop(v);
    let (plan, got) = check(&g, &m, &ChipSpec::preset("mini-4m").unwrap(), &prompt);
    assert!(plan.totals.chips_used > 10);
    assert_eq!(got, want);
}
