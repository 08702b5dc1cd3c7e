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

#[test]
fn stories260k_vram_pipelined_greedy_stops_and_resumes() {
    // decode_greedy keeps a step in flight; stopped by its callback, it must
    // leave the position right after the last id it returned (the step in
    // flight is discarded), so decoding on from there gives the reference.
    use sramlm::exec::{argmax_of, Executor, Readback};
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let mut exec = VramExecutor::new(gpu, &m.config, &m.weights, &VramOptions::default()).unwrap();
    let p = &r.prompts[0];
    let want = &p.greedy.new_ids;
    let first = argmax_of(&exec.step(&p.input_ids, Readback::Argmax).unwrap());
    assert_eq!(first, want[0]);
    let mut seen = 0;
    let a = exec
        .decode_greedy(first, 20, &mut |_| {
            seen += 1;
            seen < 5
        })
        .unwrap();
    assert_eq!(a, want[1..6]);
    assert_eq!(exec.position(), p.input_ids.len() + 5);
    let b = exec.decode_greedy(a[4], 10, &mut |_| true).unwrap();
    assert_eq!(b, want[6..16]);
    // The blocking path gives the same ids.
    exec.reset();
    exec.step(&p.input_ids, Readback::Argmax).unwrap();
    let c = sramlm::exec::decode_greedy_blocking(&mut exec, first, 15, &mut |_| true).unwrap();
    assert_eq!(c, want[1..16]);
}
