//! Every SRAM-mode kernel (matmul, norm, attention block, RoPE / KV write,
//! SiLU, embedding gather, link copy, arg-max, top-k) fits the slice of every
//! chip spec for both bundled models (naga measures the WGSL), and a chip
//! whose slice is too small for one of them is refused with both numbers.

use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::gpu::shader::workgroup_bytes;
use sramlm::gpu::Shader;
use sramlm::kernels::{check_sram_kernels, sram_kernels};
use sramlm::model::{self, LlamaConfig};
use std::path::Path;

fn configs() -> Vec<(String, LlamaConfig)> {
    let mut v = vec![(
        "stories260K".to_string(),
        model::load(&model::default_model_path()).unwrap().config,
    )];
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        v.push(("SmolLM2".into(), model::load(&p).unwrap().config));
    } else {
        assert!(std::env::var_os("CI").is_none(), "CI must have SmolLM2");
    }
    v
}

fn specs() -> Vec<ChipSpec> {
    let mut v = ChipSpec::presets();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/chips");
    for e in std::fs::read_dir(dir).unwrap() {
        v.push(ChipSpec::load(&e.unwrap().path()).unwrap());
    }
    v
}

#[test]
fn every_sram_kernel_fits_every_spec_for_both_models() {
    for (name, cfg) in configs() {
        let kernels = sram_kernels(16384, &cfg);
        // Every kind of kernel SRAM mode runs is in the list.
        for s in [
            Shader::SramMatmul,
            Shader::Rmsnorm,
            Shader::Attention,
            Shader::Rope,
            Shader::SiluMul,
            Shader::SramEmbed,
            Shader::LinkCopy,
            Shader::Argmax,
            Shader::Topk,
        ] {
            assert!(kernels.iter().any(|(k, _)| *k == s), "{name}: {}", s.name());
        }
        for spec in specs() {
            for (s, v) in sram_kernels(spec.slice_bytes, &cfg) {
                let bytes = workgroup_bytes(&s.source(&v), &v).unwrap();
                assert!(
                    bytes as usize <= spec.slice_bytes,
                    "{name} on {}: {} {:?} needs {bytes} bytes > slice {}",
                    spec.name,
                    s.name(),
                    v.defines,
                    spec.slice_bytes
                );
            }
            check_sram_kernels(spec.slice_bytes, &cfg).unwrap();
        }
    }
}

#[test]
fn a_slice_too_small_for_a_kernel_is_refused_with_both_numbers() {
    let (_, cfg) = configs().remove(0);
    // Attention (a head's q, scores, partial V) and arg-max / top-k (3 KiB
    // of candidates) do not fit 2 KiB.
    let e = check_sram_kernels(2048, &cfg).unwrap_err();
    assert!(e.contains("2048-byte slice") && e.contains("needs "), "{e}");
    let need: usize = e
        .split("needs ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(need > 2048, "{e}");
    // arg-max alone needs 3 KiB.
    let e = check_sram_kernels(2560, &cfg).unwrap_err();
    assert!(e.contains("3072") && e.contains("2560"), "{e}");
    // And the executor refuses such a chip before building anything.
    let Some(gpu) = sramlm::testing::gpu() else {
        return;
    };
    let m = model::load(&model::default_model_path()).unwrap();
    let spec = ChipSpec::preset("mini-64k")
        .unwrap()
        .with_slice_bytes(2048)
        .unwrap();
    let mut o = PlaceOptions::for_config(&m.config);
    o.context_len = 64;
    let plan = place(&m.config, &TensorInfo::from_weights(&m.weights), &spec, &o).unwrap();
    let e = SramExecutor::new(gpu, &m.config, &m.weights, &plan, &SramOptions::default())
        .err()
        .expect("a 2048-byte slice must be refused")
        .to_string();
    assert!(
        e.contains("2048") && e.contains("bytes of workgroup memory"),
        "{e}"
    );
}
