//! VRAM mode against the Hugging Face reference (tests/fixtures/stories260K):
//! prompt ids, top-10 at every position, every logit within 1e-4, and the
//! 32-token greedy continuation. Runs on the adapter `SRAMLM_BACKEND` picks;
//! in CI a missing adapter fails the test.

use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::{Executor, Readback, StepOutput};
use sramlm::generate::{generate, GenerateOptions};
use sramlm::model;
use sramlm::sampling::SamplingOptions;
use sramlm::testing::{check_top10, fixture_dir, gpu, Reference};

/// Logit tolerance from the fixture README (float32 engine vs transformers).
const TOL: f32 = 1e-4;

fn stories() -> model::Model {
    model::load(&model::default_model_path()).expect("embedded model loads")
}

fn check_prompt_logits(exec: &mut dyn Executor, r: &Reference, m: &model::Model) {
    for p in &r.prompts {
        let ids = m.tokenizer.encode(&p.text).unwrap();
        assert_eq!(ids, p.input_ids, "{}: prompt ids", p.key);
        exec.reset();
        let StepOutput::Logits { rows, data } = exec.step(&ids, Readback::AllLogits).unwrap()
        else {
            panic!("expected logits")
        };
        let vocab = m.config.vocab_size;
        assert_eq!(rows, ids.len());
        let want = r
            .tensor(
                p.all_logits_tensor
                    .as_deref()
                    .expect("stories260K stores all logits"),
            )
            .unwrap();
        let mut max_err = 0f32;
        for (i, (g, w)) in data.iter().zip(want).enumerate() {
            let e = (g - w).abs();
            assert!(e.is_finite(), "{}: non-finite logit at {i}", p.key);
            max_err = max_err.max(e);
        }
        assert!(
            max_err <= TOL,
            "{}: max |logit error| {max_err} > {TOL}",
            p.key
        );
        for pos in 0..rows {
            let row = &data[pos * vocab..(pos + 1) * vocab];
            check_top10(
                row,
                &p.topk_per_position[pos],
                p.logit_11th_largest_per_position[pos],
                max_err.max(1e-6),
            )
            .unwrap_or_else(|e| panic!("{} position {pos}: {e}", p.key));
        }
        eprintln!(
            "{}: {} positions, max |logit error| {max_err:.2e}",
            p.key, rows
        );
    }
}

fn check_greedy(exec: &mut dyn Executor, r: &Reference, m: &model::Model) {
    let opts = GenerateOptions {
        max_tokens: 32,
        sampling: SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        },
        ignore_eos: true,
        stop_ids: vec![],
    };
    for p in &r.prompts {
        let g = generate(exec, &m.tokenizer, &m.config, &p.input_ids, &opts, |_| {}).unwrap();
        assert_eq!(g.ids, p.greedy.new_ids, "{}: greedy continuation", p.key);
    }
}

#[test]
fn stories260k_vram_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let m = stories();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let mut exec = VramExecutor::new(gpu, &m.config, &m.weights, &VramOptions::default()).unwrap();
    check_prompt_logits(&mut exec, &r, &m);
    check_greedy(&mut exec, &r, &m);
}

#[test]
fn stories260k_vram_small_prefill_chunks_match() {
    // Prompts longer than the chunk run in several batched passes.
    let Some(gpu) = gpu() else { return };
    let m = stories();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let opts = VramOptions {
        context: Some(128),
        chunk: 7,
    };
    let mut exec = VramExecutor::new(gpu, &m.config, &m.weights, &opts).unwrap();
    check_prompt_logits(&mut exec, &r, &m);
}
