//! The SRAM-mode kernel (the `sram_step` interpreter, which runs the matmul
//! tiles, norms, attention blocks, RoPE / KV writes, SiLU, embedding gather,
//! link transfers, arg-max and top-k) fits the slice of every chip spec for
//! both bundled models and the other architectures' fixtures (naga
//! measures the WGSL), and a chip whose slice is
//! too small for it is refused with both numbers.

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
    // The other architectures (biases, q/k norms, windows, Gemma 3: the
    // same interpreter, head_dim 16 and 24).
    let archs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/archs");
    for name in ["llama-bias", "qwen2", "qwen3", "mistral", "gemma3"] {
        v.push((name.into(), model::load(&archs.join(name)).unwrap().config));
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
        // SRAM mode runs one kernel, the interpreter, with every weight decoder.
        assert_eq!(kernels.len(), 1, "{name}");
        assert_eq!(kernels[0].0, Shader::SramStep, "{name}");
        let src = kernels[0].0.source(&kernels[0].1);
        sramlm::gpu::shader::validate(&src).unwrap();
        // The whole slice: weight tile plus scratch.
        let bytes = workgroup_bytes(&src, &kernels[0].1).unwrap() as usize;
        assert!(bytes <= 16384 && bytes + 16 > 16384, "{name}: {bytes}");
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
    // The interpreter's scratch (attention scores and partial V, reductions,
    // arg-max candidates, a head's q, the ticket) does not fit 2 KiB or 2.5 KiB.
    for slice in [2048, 2560] {
        let e = check_sram_kernels(slice, &cfg).unwrap_err();
        assert!(
            e.contains(&format!("{slice}-byte slice")) && e.contains("`sram_step` needs "),
            "{e}"
        );
        let need: usize = e
            .split("needs ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        // head_dim 8: scratch 2896 bytes (the task ticket and a one-chunk
        // x row included: no x staged on such a slice) plus the smallest tile.
        assert_eq!(need, 2912, "{e}");
    }
    check_sram_kernels(4096, &cfg).unwrap();
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
