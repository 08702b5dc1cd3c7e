//! VRAM mode against the Hugging Face reference (tests/fixtures/stories260K):
//! prompt ids, top-10 at every position, every logit within 1e-4, and the
//! 32-token greedy continuation. Runs on the adapter `SRAMLM_BACKEND` picks;
//! in CI a missing adapter fails the test.

use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::model;
use sramlm::testing::{check_reference_parity, fixture_dir, gpu, Reference};

/// Logit tolerance from the fixture README (float32 engine vs transformers).
const TOL: f32 = 1e-4;

#[test]
fn stories260k_vram_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let mut exec = VramExecutor::new(gpu, &m.config, &m.weights, &VramOptions::default()).unwrap();
    let e = check_reference_parity(&mut exec, &m, &r, TOL, "vram");
    eprintln!("vram: max |logit error| {e:.2e}");
}

#[test]
fn stories260k_vram_small_prefill_chunks_match() {
    // Prompts longer than the chunk run in several batched passes.
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let opts = VramOptions {
        context: Some(128),
        chunk: 7,
    };
    let mut exec = VramExecutor::new(gpu, &m.config, &m.weights, &opts).unwrap();
    check_reference_parity(&mut exec, &m, &r, TOL, "vram chunk 7");
}
