//! SRAM mode EXECUTES tensor-parallel plans (`--tp N`, `chip::tp`): each
//! pipeline stage is a group of N chips that run their row blocks side by
//! side in one dispatch and all-gather through counted links. Tokens must
//! equal the reference at tp 2 and 4 (stories260K against the Hugging Face
//! fixture; SmolLM2 against VRAM mode, whose parity with the reference
//! tests/smollm2_parity.rs checks), prefill and decode, and several
//! sequences decoded together.

use sramlm::chip::{place_tp, ChipSpec, PlaceOptions, Plan, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::{Executor, Readback, StepOutput};
use sramlm::model::{self, Model};
use sramlm::testing::{check_reference_parity, fixture_dir, gpu, Reference};
use std::path::Path;

const TOL: f32 = 1e-4;

/// 256 KiB chips with 32 KiB slices: stories260K's layers take a group each
/// at tp 2 and 4, so groups pipeline into each other.
fn small_spec() -> ChipSpec {
    ChipSpec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chips/mini-256k-32k-slices.json"),
    )
    .unwrap()
}

fn tp_plan(m: &Model, spec: &ChipSpec, tp: usize, ctx: usize, batch: usize, mb: usize) -> Plan {
    let mut o = PlaceOptions::for_config(&m.config);
    o.context_len = ctx;
    o.batch = batch;
    o.microbatch_tokens = mb;
    let plan = place_tp(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        spec,
        &o,
        tp,
    )
    .unwrap();
    plan.check().unwrap();
    assert_eq!(plan.tp, tp);
    assert_eq!(plan.totals.chips_used % tp, 0);
    plan
}

#[test]
fn stories260k_tp2_and_tp4_match_the_reference() {
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let ctx = m.config.max_position_embeddings;
    for (spec, tp) in [
        (small_spec(), 2),
        (small_spec(), 4),
        (ChipSpec::preset("groq-v1").unwrap(), 4),
    ] {
        let plan = tp_plan(&m, &spec, tp, ctx, 1, 8);
        let groups = plan.stages.iter().map(|s| s.group).max().unwrap() + 1;
        // 4 sub-steps a layer, the tail and the read-out.
        assert!(groups >= 4 * m.config.num_layers + 2, "{groups}");
        for mb in [8, 3] {
            let mut exec = SramExecutor::new(
                gpu.clone(),
                &m.config,
                &m.weights,
                &plan,
                &SramOptions {
                    image_split_bytes: None,
                    task_order: None,
                    batch: 1,
                    context: Some(ctx),
                    microbatch: mb,
                },
            )
            .unwrap();
            let what = format!("{} tp {tp} x{} mb={mb}", spec.name, plan.totals.chips_used);
            let e = check_reference_parity(&mut exec, &m, &r, TOL, &what);
            eprintln!("{what}: max logit error {e:.2e}");
        }
    }
}

#[test]
fn stories260k_tp2_decodes_two_sequences_together() {
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let prompts: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|k| r.prompts.iter().find(|p| p.key == *k).unwrap())
        .collect();
    let (ctx, batch) = (128, 2);
    let plan = tp_plan(&m, &small_spec(), 2, ctx, batch, 8);
    let mut exec = SramExecutor::new(
        gpu,
        &m.config,
        &m.weights,
        &plan,
        &SramOptions {
            image_split_bytes: None,
            task_order: None,
            context: Some(ctx),
            microbatch: 8,
            batch,
        },
    )
    .unwrap();
    let mut last = Vec::new();
    for (s, p) in prompts.iter().enumerate() {
        exec.select_sequence(s).unwrap();
        let StepOutput::Token { id, .. } = exec.step(&p.input_ids, Readback::Argmax).unwrap()
        else {
            panic!()
        };
        last.push(id);
    }
    let mut got: Vec<Vec<u32>> = last.iter().map(|&t| vec![t]).collect();
    for _ in 1..16 {
        last = exec.decode_all(&last).unwrap();
        for (s, &t) in last.iter().enumerate() {
            got[s].push(t);
        }
    }
    for (s, p) in prompts.iter().enumerate() {
        assert_eq!(got[s], p.greedy.new_ids[..16], "sequence {s} ({})", p.key);
    }
    let stats = exec.sram_stats();
    let groups = plan.stages.iter().map(|s| s.group).max().unwrap() + 1;
    assert_eq!(stats.pipeline_stages, groups);
    // The two sequences are one micro-batch of two rows (micro-batch 8).
    assert_eq!(stats.pipeline_steps_last, batch.div_ceil(8) + groups - 1);
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

#[test]
fn smollm2_tp2_and_tp4_match_vram_mode() {
    let Some(g) = gpu() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} missing (models/get-smollm2.sh)",
            path.display()
        );
        assert!(std::env::var_os("CI").is_none(), "CI must have SmolLM2");
        return;
    }
    let m = model::load(&path).unwrap();
    let prompt = m.tokenizer.encode("The capital of France is").unwrap();
    const CTX: usize = 32;
    const NEW: usize = 4;
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
    // 9 query heads over 3 KV heads: tp 2 splits KV heads unevenly, tp 4
    // splits query heads and replicates the KV heads two chips share.
    for tp in [2, 4] {
        let plan = tp_plan(&m, &ChipSpec::preset("groq-v1").unwrap(), tp, CTX, 1, 4);
        let mut e = SramExecutor::new(
            g.clone(),
            &m.config,
            &m.weights,
            &plan,
            &SramOptions::default(),
        )
        .unwrap();
        let got = greedy(&mut e, &prompt, NEW);
        assert_eq!(got, want, "tp {tp}");
        // Counted link bytes == planned: the prompt's rows cross every link
        // but the logits' (the output row only), then one row per token.
        let per_token = plan.totals.link_bytes_per_token;
        let logits: usize = plan
            .stages
            .iter()
            .flat_map(|s| &s.carry)
            .filter(|c| c.name == "logits")
            .map(|c| 4 * c.values)
            .sum();
        assert!(logits > 0 && per_token > logits);
        assert_eq!(
            e.sram_stats().link_bytes_counted as usize,
            prompt.len() * (per_token - logits) + logits + (NEW - 1) * per_token,
            "tp {tp}"
        );
    }
}

/// An untied embedding (stories260K with lm_head a copy of its embedding:
/// the same logits): the gather runs on the first group's chips, the
/// lm_head by vocabulary on the last group's.
#[test]
fn stories260k_untied_tp2_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    let mut m = model::load(&model::default_model_path()).unwrap();
    m.config.tie_word_embeddings = false;
    m.weights.lm_head = Some(m.weights.embed.clone());
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let ctx = m.config.max_position_embeddings;
    let plan = tp_plan(&m, &small_spec(), 2, ctx, 1, 8);
    assert_eq!(plan.totals.loopback_bytes_per_token, 0);
    let embed: Vec<usize> = plan
        .chips
        .iter()
        .filter(|c| c.tensors.iter().any(|t| t.weight == "embed"))
        .map(|c| c.index)
        .collect();
    assert_eq!(embed, vec![0, 1]);
    let mut exec = SramExecutor::new(
        gpu,
        &m.config,
        &m.weights,
        &plan,
        &SramOptions {
            image_split_bytes: None,
            task_order: None,
            batch: 1,
            context: Some(ctx),
            microbatch: 8,
        },
    )
    .unwrap();
    let e = check_reference_parity(&mut exec, &m, &r, TOL, "untied tp 2");
    eprintln!("untied tp 2: max logit error {e:.2e}");
}
