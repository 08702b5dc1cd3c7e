//! SRAM mode with several sequences in flight: each sequence is a pipeline
//! micro-batch, so in one pipeline step different chips work on different
//! sequences (as on the real machine). Each sequence must still produce its
//! own reference continuation.

use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions, TaskOrder};
use sramlm::exec::{Executor, Readback, StepOutput};

use sramlm::model;
use sramlm::testing::{fixture_dir, gpu, Reference};

#[test]
fn three_sequences_decoded_together_match_their_references() {
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let prompts: Vec<_> = ["p1", "p2", "p4"]
        .iter()
        .map(|k| r.prompts.iter().find(|p| p.key == *k).unwrap())
        .collect();
    let batch = prompts.len();
    let ctx = 128;
    let mut opts = PlaceOptions::for_config(&m.config);
    opts.context_len = ctx;
    opts.batch = batch;
    opts.microbatch_tokens = 8;
    let plan = place(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        &ChipSpec::preset("mini-64k").unwrap(),
        &opts,
    )
    .unwrap();
    let chips = plan.totals.chips_used;
    assert!(chips > 10);
    // Both ways of picking tasks (by workgroup id, by ticket); the three
    // sequences as one micro-batch of three rows, or as micro-batches of two
    // rows and one.
    for (order, microbatch) in [(TaskOrder::Index, 8), (TaskOrder::Ticket, 2)] {
        let mut exec = SramExecutor::new(
            gpu.clone(),
            &m.config,
            &m.weights,
            &plan,
            &SramOptions {
                image_split_bytes: None,
                task_order: Some(order),
                context: Some(ctx),
                microbatch,
                batch,
            },
        )
        .unwrap();
        assert_eq!(exec.batch(), batch);
        // Prefill each sequence into its own KV cache.
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
        for _ in 1..32 {
            last = exec.decode_all(&last).unwrap();
            for (s, &t) in last.iter().enumerate() {
                got[s].push(t);
            }
        }
        for (s, p) in prompts.iter().enumerate() {
            assert_eq!(
                got[s], p.greedy.new_ids,
                "{order:?}: sequence {s} ({})",
                p.key
            );
        }
        // M = ceil(B / micro-batch) micro-batches through S stages: M + S - 1
        // pipeline steps per round, one arg-max per sequence.
        let stats = exec.sram_stats();
        assert_eq!(stats.pipeline_stages, plan.stages.len());
        assert!(plan.stages.len() >= chips);
        let m = batch.div_ceil(microbatch);
        assert_eq!(stats.pipeline_steps_last, m + plan.stages.len() - 1);
    }
    // A plan for fewer sequences is refused.
    let mut small = PlaceOptions::for_config(&m.config);
    small.context_len = ctx;
    let plan1 = place(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        &ChipSpec::preset("mini-64k").unwrap(),
        &small,
    )
    .unwrap();
    let e = SramExecutor::new(
        sramlm::testing::gpu().unwrap(),
        &m.config,
        &m.weights,
        &plan1,
        &SramOptions {
            image_split_bytes: None,
            task_order: None,
            context: Some(ctx),
            microbatch: 8,
            batch,
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("batch"), "{e}");
}
