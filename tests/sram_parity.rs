//! SRAM mode against VRAM mode and the Hugging Face reference, on every chip
//! preset the model fits: same greedy tokens, logits within the VRAM tolerance.

use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo, PRESET_NAMES};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::{Executor, Readback, StepOutput};
use sramlm::generate::{generate, GenerateOptions};
use sramlm::model;
use sramlm::sampling::SamplingOptions;
use sramlm::testing::{check_top10, fixture_dir, gpu, Reference};

const TOL: f32 = 1e-4;

fn greedy32() -> GenerateOptions {
    GenerateOptions {
        max_tokens: 32,
        sampling: SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        },
        ignore_eos: true,
        stop_ids: vec![],
    }
}

#[test]
fn stories260k_sram_matches_reference_on_every_preset() {
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let ctx = m.config.max_position_embeddings;
    for preset in PRESET_NAMES {
        let spec = ChipSpec::preset(preset).unwrap();
        let mut opts = PlaceOptions::for_config(&m.config);
        opts.context_len = ctx;
        opts.microbatch_tokens = 8;
        let plan = place(
            &m.config,
            &TensorInfo::from_weights(&m.weights),
            &spec,
            &opts,
        )
        .unwrap();
        for mb in [8, 3] {
            let mut exec = SramExecutor::new(
                gpu.clone(),
                &m.config,
                &m.weights,
                &plan,
                &SramOptions {
                    context: Some(ctx),
                    microbatch: mb,
                },
            )
            .unwrap();
            for p in &r.prompts {
                exec.reset();
                let StepOutput::Logits { rows, data } =
                    exec.step(&p.input_ids, Readback::AllLogits).unwrap()
                else {
                    panic!()
                };
                let want = r.tensor(p.all_logits_tensor.as_deref().unwrap()).unwrap();
                let max_err = data
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    max_err <= TOL,
                    "{preset} mb={mb} {}: max |logit error| {max_err}",
                    p.key
                );
                let v = m.config.vocab_size;
                for pos in 0..rows {
                    check_top10(
                        &data[pos * v..(pos + 1) * v],
                        &p.topk_per_position[pos],
                        p.logit_11th_largest_per_position[pos],
                        max_err.max(1e-6),
                    )
                    .unwrap_or_else(|e| panic!("{preset} {} pos {pos}: {e}", p.key));
                }
                let g = generate(
                    &mut exec,
                    &m.tokenizer,
                    &m.config,
                    &p.input_ids,
                    &greedy32(),
                    |_| {},
                )
                .unwrap();
                assert_eq!(
                    g.ids, p.greedy.new_ids,
                    "{preset} mb={mb} {}: greedy",
                    p.key
                );
                eprintln!(
                    "{preset} mb={mb} {}: chips {} max err {max_err:.2e}",
                    p.key, plan.totals.chips_used
                );
            }
        }
    }
}
