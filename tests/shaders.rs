//! GPU-free: every WGSL kernel variant parses and validates with naga, and its
//! workgroup memory fits the WebGPU default of 16 KiB (the lowest level).

use sramlm::gpu::shader::{validate, workgroup_bytes};
use sramlm::gpu::Shader;

const WEBGPU_DEFAULT_WORKGROUP_STORAGE: u64 = 16 * 1024;

#[test]
fn every_vram_kernel_variant_validates_and_fits_16k() {
    let variants = sramlm::kernels::all_variants();
    for s in Shader::ALL {
        assert!(
            variants.iter().any(|(v, _)| v == s),
            "no variant listed for {}",
            s.name()
        );
    }
    for (s, v) in &variants {
        let src = s.source(v);
        validate(&src).unwrap_or_else(|e| panic!("{} {:?}: {e}", s.name(), v.defines));
        let bytes = workgroup_bytes(&src, v).unwrap();
        assert!(
            bytes <= WEBGPU_DEFAULT_WORKGROUP_STORAGE,
            "{} {:?}: {bytes} bytes of workgroup memory",
            s.name(),
            v.defines
        );
    }
    eprintln!("{} shader variants validated", variants.len());
}

#[test]
fn footprint_counts_workgroup_arrays() {
    let v = sramlm::kernels::attention::variant(64);
    let bytes = workgroup_bytes(&Shader::Attention.source(&v), &v).unwrap();
    // q: 64 floats; scores: 256; reduction: 64; V partial sums: 64 vec4.
    assert_eq!(bytes, 64 * 4 + 256 * 4 + 64 * 4 + 64 * 16);
    let v = sramlm::kernels::sram_matmul::variant(sramlm::model::DType::Q4_1, 16384, false);
    assert_eq!(
        workgroup_bytes(&Shader::SramMatmul.source(&v), &v).unwrap(),
        16384
    );
}

/// Every SRAM-mode kernel, for every chip preset's slice budget (and the
/// larger slices real adapters allow), parses, validates and declares no more
/// workgroup memory than one slice: the emulated SRAM budget is checked here,
/// without a GPU, and again when a pipeline is built.
#[test]
fn sram_kernels_fit_every_preset_slice() {
    let mut budgets: Vec<usize> = sramlm::chip::ChipSpec::presets()
        .iter()
        .map(|s| s.slice_bytes)
        .collect();
    budgets.extend([8 * 1024, 32 * 1024, 48 * 1024]);
    for dir in ["models/chips"] {
        for e in
            std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap()
        {
            let spec = sramlm::chip::ChipSpec::load(&e.unwrap().path()).unwrap();
            budgets.push(spec.slice_bytes);
        }
    }
    for slice in budgets {
        for hidden in [64, 576] {
            for (s, v) in sramlm::kernels::sram_variants(slice, hidden) {
                let src = s.source(&v);
                validate(&src).unwrap_or_else(|e| panic!("{} {:?}: {e}", s.name(), v.defines));
                let bytes = workgroup_bytes(&src, &v).unwrap();
                assert!(
                    bytes as usize <= slice,
                    "{} {:?}: {bytes} bytes > slice {slice}",
                    s.name(),
                    v.defines
                );
            }
        }
    }
}
