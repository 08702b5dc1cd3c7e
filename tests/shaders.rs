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
    let v = sramlm::kernels::matmul::variant(sramlm::model::DType::F32, 4, false);
    let bytes = workgroup_bytes(&Shader::Matmul.source(&v), &v).unwrap();
    assert_eq!(bytes, 64 * 4 * 4 * 4);
}
