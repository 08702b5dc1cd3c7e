//! SRAM mode against VRAM mode and the Hugging Face reference, on every chip
//! preset the model fits: same greedy tokens, logits within the VRAM tolerance.

use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo, PRESET_NAMES};
use sramlm::exec::sram::{SramExecutor, SramOptions, TaskOrder};
use sramlm::model;
use sramlm::testing::{check_reference_parity, fixture_dir, gpu, Reference};

const TOL: f32 = 1e-4;

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
                    image_split_bytes: None,
                    task_order: None,
                    batch: 1,
                    context: Some(ctx),
                    microbatch: mb,
                },
            )
            .unwrap();
            let what = format!("{preset} x{} mb={mb}", plan.totals.chips_used);
            let e = check_reference_parity(&mut exec, &m, &r, TOL, &what);
            eprintln!("{what}: max logit error {e:.2e}");
        }
    }
}

/// The chips' SRAM images over two storage bindings (as a model larger than
/// one binding has them): the first binding cut at several points, some
/// inside a chip's image, the RoPE table straddling or wholly in the second.
#[test]
fn stories260k_sram_images_split_over_two_bindings() {
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let ctx = m.config.max_position_embeddings;
    let spec = ChipSpec::preset("mini-64k").unwrap();
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
    let weights = m.weights.total_bytes();
    for split in [4 * 1024, 333 * 1024 + 6, weights - 1000, weights + 64] {
        let mut exec = SramExecutor::new(
            gpu.clone(),
            &m.config,
            &m.weights,
            &plan,
            &SramOptions {
                image_split_bytes: Some(split),
                task_order: None,
                batch: 1,
                context: Some(ctx),
                microbatch: 8,
            },
        )
        .unwrap();
        let what = format!("mini-64k, first binding {split} bytes");
        let e = check_reference_parity(&mut exec, &m, &r, TOL, &what);
        eprintln!("{what}: max logit error {e:.2e}");
    }
}

/// Both ways the interpreter's workgroups pick their task (by workgroup id,
/// by atomic ticket) give the reference's tokens, prefill in one and in
/// several micro-batches.
#[test]
fn stories260k_sram_both_task_orders() {
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let ctx = m.config.max_position_embeddings;
    let spec = ChipSpec::preset("mini-64k").unwrap();
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
    for order in [TaskOrder::Index, TaskOrder::Ticket] {
        for mb in [8, 3] {
            let mut exec = SramExecutor::new(
                gpu.clone(),
                &m.config,
                &m.weights,
                &plan,
                &SramOptions {
                    image_split_bytes: None,
                    task_order: Some(order),
                    batch: 1,
                    context: Some(ctx),
                    microbatch: mb,
                },
            )
            .unwrap();
            let what = format!("mini-64k {order:?} mb={mb}");
            let e = check_reference_parity(&mut exec, &m, &r, TOL, &what);
            eprintln!("{what}: max logit error {e:.2e}");
        }
    }
}
