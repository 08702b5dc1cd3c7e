//! The same parity checks on every GPU backend and feature level this machine
//! has: Vulkan and GL (Mesa lavapipe / llvmpipe in CI), each at its full
//! feature level and forced down to the lowest one (no f16, no subgroups,
//! 16 KiB of workgroup memory). With `CI` set, Vulkan and GL must both exist.

use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::gpu::BackendChoice;
use sramlm::model;
use sramlm::testing::{check_reference_parity, fixture_dir, gpu_for, Reference};

fn parity_on(backend: BackendChoice, downlevel: bool) {
    let Some(gpu) = gpu_for(backend, downlevel) else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but there is no {backend:?} adapter");
        }
        eprintln!("SKIPPED: no {backend:?} adapter");
        return;
    };
    if downlevel {
        assert!(!gpu.level.shader_f16 && !gpu.level.subgroups);
        assert_eq!(gpu.level.workgroup_storage, 16384);
    }
    let what = format!("{backend:?}{}", if downlevel { " downlevel" } else { "" });
    let m = model::load(&model::default_model_path()).unwrap();
    let r = Reference::load(&fixture_dir("stories260K"), "stories260K").unwrap();
    let ctx = 128;
    let mut vram = VramExecutor::new(
        gpu.clone(),
        &m.config,
        &m.weights,
        &VramOptions {
            context: Some(ctx),
            chunk: 16,
        },
    )
    .unwrap();
    let e = check_reference_parity(&mut vram, &m, &r, 1e-4, &format!("{what} vram"));
    eprintln!("{what} vram: max logit error {e:.2e}");
    let mut opts = PlaceOptions::for_config(&m.config);
    opts.context_len = ctx;
    opts.microbatch_tokens = 8;
    let plan = place(
        &m.config,
        &TensorInfo::from_weights(&m.weights),
        &ChipSpec::preset("mini-64k").unwrap(),
        &opts,
    )
    .unwrap();
    let mut sram = SramExecutor::new(
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
    let e = check_reference_parity(&mut sram, &m, &r, 1e-4, &format!("{what} sram"));
    eprintln!(
        "{what} sram mini-64k x{}: max logit error {e:.2e}",
        plan.totals.chips_used
    );
}

#[test]
fn vulkan_parity() {
    parity_on(BackendChoice::Vulkan, false);
}

#[test]
fn vulkan_downlevel_parity() {
    parity_on(BackendChoice::Vulkan, true);
}

#[test]
fn gl_parity() {
    parity_on(BackendChoice::Gl, false);
}
