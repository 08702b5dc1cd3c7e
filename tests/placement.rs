//! The placement compiler on real model shapes: stories260K (weights on disk),
//! SmolLM2-135M (shapes; weights when present), Llama-2-70B (shapes only).
//!
//! Run with `--nocapture` to see the numbers.

use sramlm::chip::{
    self, place, plan_table, ChipSpec, PlaceOptions, PlacementError, Plan, TensorInfo, WeightFormat,
};
use sramlm::model::{DType, LayerTensor, LlamaConfig, RopeLayout, WeightName};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stories() -> (LlamaConfig, Vec<TensorInfo>, usize) {
    let dir = root().join("models/stories260K");
    let cfg = LlamaConfig::from_hf_json(&dir.join("config.json")).unwrap();
    let model = sramlm::model::load(&dir).unwrap();
    assert_eq!(model.config, cfg);
    let total = model.weights.total_bytes();
    (cfg, TensorInfo::from_weights(&model.weights), total)
}

fn smollm2_config() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        vocab_size: 49152,
        max_position_embeddings: 8192,
        rms_norm_eps: 1e-5,
        rope_theta: 100000.0,
        rope_scaling: Default::default(),
        tie_word_embeddings: true,
        rope_layout: RopeLayout::Adjacent,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
        arch: Default::default(),
    }
}

/// As the GGUF stores it: Q4_1 matrices, Q8_0 token embedding, F32 norms.
fn smollm2_tensors(cfg: &LlamaConfig) -> Vec<TensorInfo> {
    TensorInfo::from_config_with(cfg, |w| match w {
        WeightName::Embed => WeightFormat::Q8_0,
        WeightName::FinalNorm
        | WeightName::Layer(_, LayerTensor::AttnNorm)
        | WeightName::Layer(_, LayerTensor::FfnNorm) => WeightFormat::F32,
        _ => WeightFormat::Q4_1,
    })
    .unwrap()
}

/// Independent checks of a plan (not using `Plan::check`): slices, SRAM,
/// byte accounting, exact tiling of every tensor and KV cache, layer order.
fn verify(plan: &Plan, tensors: &[TensorInfo], total_weight_bytes: usize) {
    plan.check()
        .unwrap_or_else(|e| panic!("{}: {e}", plan.spec.name));
    let s = plan.spec.slice_bytes;
    let nsl = plan.spec.slices_per_chip();
    let mut placed = 0usize;
    type Rect = (usize, usize, usize, usize, usize);
    let mut rects: HashMap<String, Vec<Rect>> = HashMap::new();
    let mut kv_cells: HashMap<usize, usize> = HashMap::new();
    for c in &plan.chips {
        assert!(c.sram_used <= c.sram_capacity, "chip {} over SRAM", c.index);
        assert!(
            c.sram_high_water <= plan.spec.sram_bytes,
            "chip {} over SRAM",
            c.index
        );
        let mut per_slice = vec![0usize; nsl];
        for p in &c.tensors {
            placed += p.bytes;
            for t in p.tiles(s) {
                assert!(t.bytes <= s, "tile over a slice");
                per_slice[t.slice] += t.bytes;
            }
            rects.entry(p.weight.clone()).or_default().push((
                p.row_start,
                p.row_end,
                p.col_start,
                p.col_end,
                p.bytes,
            ));
        }
        for k in &c.kv {
            for t in k.tiles(s) {
                assert!(t.bytes <= s);
                per_slice[t.slice] += t.bytes;
            }
            *kv_cells.entry(k.layer).or_default() +=
                (k.head_end - k.head_start) * (k.pos_end - k.pos_start);
        }
        for (i, u) in per_slice.iter().enumerate() {
            assert!(*u <= s, "chip {} slice {i}: {u} bytes > {s}", c.index);
        }
        assert!(c.scratch_offset + c.scratch_bytes <= c.sram_capacity);
    }
    assert_eq!(
        placed, total_weight_bytes,
        "every weight byte placed exactly once"
    );
    for t in tensors {
        let rs = rects.remove(&t.name.to_string()).unwrap_or_default();
        let (rows, cols) = (t.rows(), t.cols());
        let bytes: usize = rs.iter().map(|r| r.4).sum();
        assert_eq!(bytes, t.bytes, "{}", t.name);
        if rows * cols <= 1 << 22 {
            let mut grid = vec![0u8; rows * cols];
            for &(r0, r1, c0, c1, _) in &rs {
                for r in r0..r1 {
                    for c in c0..c1 {
                        grid[r * cols + c] += 1;
                    }
                }
            }
            assert!(
                grid.iter().all(|&g| g == 1),
                "{}: not tiled exactly once",
                t.name
            );
        } else {
            let area: usize = rs.iter().map(|r| (r.1 - r.0) * (r.3 - r.2)).sum();
            assert_eq!(area, rows * cols, "{}", t.name);
        }
    }
    assert!(
        rects.is_empty(),
        "placements of unknown tensors: {:?}",
        rects.keys()
    );
    for l in 0..plan.model.num_layers {
        assert_eq!(
            kv_cells.get(&l).copied(),
            Some(plan.model.num_kv_heads * plan.model.context_len)
        );
    }
    // Pipeline order: layers on consecutive chips, never going back.
    let mut last: Option<usize> = None;
    for c in &plan.chips {
        let ls = &c.stage_layers;
        for w in ls.windows(2) {
            assert_eq!(w[1], w[0] + 1, "chip {}: layers not contiguous", c.index);
        }
        if let (Some(prev), Some(&first)) = (last, ls.first()) {
            assert!(
                first == prev || first == prev + 1,
                "chip {}: layer {first} after {prev}",
                c.index
            );
        }
        if let Some(&l) = ls.last() {
            last = Some(l);
        }
    }
    // Matrices are cut into whole-row blocks at chip boundaries (the SRAM
    // executor runs row blocks); only vectors are cut by columns.
    for c in &plan.chips {
        for p in &c.tensors {
            let t = plan
                .model
                .tensors
                .iter()
                .find(|t| t.weight == p.weight)
                .unwrap();
            if t.rows > 1 {
                assert_eq!(
                    (p.col_start, p.col_end),
                    (0, t.cols),
                    "chip {}: {}",
                    c.index,
                    p.weight
                );
            }
        }
    }
    let n = plan.chips.len();
    assert_eq!(plan.totals.chips_used, n);
    assert_eq!(plan.totals.hops, n - 1);
    for w in plan.chips.windows(2) {
        assert_eq!(w[0].link_bytes_out_per_token, w[1].link_bytes_in_per_token);
        assert_eq!(w[0].carry_out, w[1].carry_in);
    }
}

#[test]
fn stories260k_on_every_preset() {
    let (cfg, tensors, total) = stories();
    assert_eq!(total, 1_040_128);
    for spec in ChipSpec::presets() {
        let plan = place(&cfg, &tensors, &spec, &PlaceOptions::for_config(&cfg)).unwrap();
        verify(&plan, &tensors, total);
        println!(
            "stories260K (f32, ctx {}, f32 KV) on {}: {} chips, links {} B/token",
            cfg.max_position_embeddings,
            spec.name,
            plan.totals.chips_used,
            plan.totals.link_bytes_per_token
        );
        // Residual stream between layers: hidden_size f32.
        for c in &plan.chips[..plan.chips.len() - 1] {
            assert!(c.link_bytes_out_per_token >= 4 * cfg.hidden_size);
        }
    }
}

#[test]
fn stories260k_spans_many_mini_64k_chips() {
    let (cfg, tensors, total) = stories();
    let spec = ChipSpec::preset("mini-64k").unwrap();
    let plan = place(&cfg, &tensors, &spec, &PlaceOptions::for_config(&cfg)).unwrap();
    verify(&plan, &tensors, total);
    assert!(plan.totals.chips_used > 10, "{}", plan.totals.chips_used);
    println!("{}", plan_table(&plan));
    let c = chip::modeled_token_latency(&plan, &spec, chip::Precision::Fp16);
    assert!(c.modeled_token_latency_s > 0.0 && c.modeled_link_s > 0.0);
    println!(
        "stories260K on mini-64k, modeled: {:.1} µs/token ({:.0} tok/s per user; SRAM {:.1} µs, links {:.1} µs)",
        c.modeled_token_latency_s * 1e6,
        c.modeled_tokens_per_s_per_user,
        c.modeled_sram_s * 1e6,
        c.modeled_link_s * 1e6
    );
    // A shorter context needs fewer chips; weights alone need ≥ 16.
    let mut o = PlaceOptions::for_config(&cfg);
    o.context_len = 64;
    let short = place(&cfg, &tensors, &spec, &o).unwrap();
    verify(&short, &tensors, total);
    assert!(short.totals.chips_used < plan.totals.chips_used);
    assert!(short.totals.chips_used >= total.div_ceil(64 * 1024));
    println!(
        "stories260K on mini-64k: {} chips at ctx 512, {} at ctx 64",
        plan.totals.chips_used, short.totals.chips_used
    );
    // Different slice sizes and batches keep the invariants (at 256 bytes a
    // w_down row, 688 bytes, is cut into column blocks).
    for slice in [256, 1024, 4096, 32 * 1024, 64 * 1024] {
        let sp = spec.clone().with_slice_bytes(slice).unwrap();
        let mut o = PlaceOptions::for_config(&cfg);
        o.batch = 2;
        o.microbatch_tokens = 2;
        let p = place(&cfg, &tensors, &sp, &o).unwrap();
        verify(&p, &tensors, total);
    }
}

#[test]
fn too_few_chips_reports_the_count() {
    let (cfg, tensors, _) = stories();
    let spec = ChipSpec::preset("mini-64k").unwrap();
    let mut o = PlaceOptions::for_config(&cfg);
    let needed = place(&cfg, &tensors, &spec, &o).unwrap().totals.chips_used;
    o.max_chips = Some(10);
    let e = place(&cfg, &tensors, &spec, &o).unwrap_err();
    assert_eq!(e, PlacementError::TooFewChips { needed, given: 10 });
    assert!(
        e.to_string().contains(&format!("needs {needed} chips")),
        "{e}"
    );
    o.max_chips = Some(needed);
    assert!(place(&cfg, &tensors, &spec, &o).is_ok());
}

#[test]
fn spec_errors() {
    let e = ChipSpec::resolve("tpu-v9").unwrap_err().to_string();
    assert!(
        e.contains("tpu-v9") && e.contains("groq-v1, mini-64k, mini-4m"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("sramlm-spec-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read_to_string(root().join("models/chips/groq-v1.json")).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    // Malformed: a field of the wrong type, JSON that does not parse.
    let p = write(
        "bad-type.json",
        &good.replace("\"links\": 16", "\"links\": \"sixteen\""),
    );
    let e = ChipSpec::resolve(&p).unwrap_err().to_string();
    assert!(e.contains("bad-type.json") && e.contains("`links`"), "{e}");
    let p = write("bad-json.json", "{\"name\": ");
    let e = ChipSpec::resolve(&p).unwrap_err().to_string();
    assert!(e.contains("bad-json.json"), "{e}");
    let p = write(
        "missing.json",
        &good.replace("\"sram_bandwidth\": 80e12,", ""),
    );
    let e = ChipSpec::resolve(&p).unwrap_err().to_string();
    assert!(
        e.contains("missing.json") && e.contains("sram_bandwidth") && e.contains("missing"),
        "{e}"
    );
    // Zero and negative sizes.
    let p = write("zero.json", &good.replace("\"220 MiB\"", "0"));
    let e = ChipSpec::resolve(&p).unwrap_err().to_string();
    assert!(e.contains("sram_bytes") && e.contains("positive"), "{e}");
    let p = write(
        "neg.json",
        &good.replace("\"link_bandwidth\": 14e9", "\"link_bandwidth\": -14e9"),
    );
    let e = ChipSpec::resolve(&p).unwrap_err().to_string();
    assert!(
        e.contains("link_bandwidth") && e.contains("positive"),
        "{e}"
    );
    // Slice larger than the chip.
    let p = write("slice.json", &good.replace("\"16 KiB\"", "\"1 GiB\""));
    let e = ChipSpec::resolve(&p).unwrap_err().to_string();
    assert!(e.contains("1073741824") && e.contains("230686720"), "{e}");
    // A path that does not exist names the path.
    let e = ChipSpec::resolve("no/such/chip.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no/such/chip.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();

    // Slice over the adapter's workgroup storage: both numbers in the message.
    let s = ChipSpec::groq_v1().with_slice_bytes(49152).unwrap();
    let e = s.check_slice_against_limit(32768).unwrap_err().to_string();
    assert!(e.contains("49152") && e.contains("32768"), "{e}");
    ChipSpec::groq_v1()
        .check_slice_against_limit(16384)
        .unwrap();
}

#[test]
fn example_specs_load() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("models/chips")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            let s = ChipSpec::resolve(&p.display().to_string()).unwrap();
            s.validate().unwrap();
            if s.name == "groq-v1" {
                assert_eq!(
                    s,
                    ChipSpec::groq_v1(),
                    "models/chips/groq-v1.json matches the preset"
                );
            }
            n += 1;
        }
    }
    assert!(n >= 2);
}

#[test]
fn unsplittable_pieces_are_named() {
    let (cfg, tensors, _) = stories();
    // A slice smaller than one f32 KV position of a head (8 × 4 bytes × batch 4).
    let spec = ChipSpec::preset("mini-64k")
        .unwrap()
        .with_slice_bytes(64)
        .unwrap();
    let mut o = PlaceOptions::for_config(&cfg);
    o.batch = 4;
    let e = place(&cfg, &tensors, &spec, &o).unwrap_err().to_string();
    assert!(
        e.contains("KV head") && e.contains("256") && e.contains("64"),
        "{e}"
    );
    // A Q8_0 block (34 bytes) does not fit a 32-byte slice.
    let mut cfg2 = cfg.clone();
    cfg2.intermediate_size = 192;
    let t = TensorInfo::from_config(&cfg2, DType::Q8_0, DType::F32).unwrap();
    let spec = ChipSpec::preset("mini-64k")
        .unwrap()
        .with_slice_bytes(32)
        .unwrap();
    let e = place(&cfg2, &t, &spec, &PlaceOptions::for_config(&cfg2))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Q8_0") && e.contains("34") && e.contains("32"),
        "{e}"
    );
    // Llama-2-70B's activations alone overflow a 64 KiB chip.
    let big = LlamaConfig::from_hf_json(&root().join("models/configs/llama-2-70b.json")).unwrap();
    let t = TensorInfo::from_config(&big, WeightFormat::Int8, WeightFormat::F16).unwrap();
    let e = place(
        &big,
        &t,
        &ChipSpec::preset("mini-64k").unwrap(),
        &PlaceOptions::for_config(&big),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("scratch") && e.contains("65536"), "{e}");
}

#[test]
fn smollm2_q4_1_on_mini_4m() {
    let cfg = smollm2_config();
    let tensors = smollm2_tensors(&cfg);
    let total: usize = tensors.iter().map(|t| t.bytes).sum();
    let spec = ChipSpec::preset("mini-4m").unwrap();
    let mut counts = Vec::new();
    for ctx in [256, 512, 2048, 8192] {
        let mut o = PlaceOptions::for_config(&cfg);
        o.context_len = ctx;
        let plan = place(&cfg, &tensors, &spec, &o).unwrap();
        verify(&plan, &tensors, total);
        counts.push((ctx, plan.totals.chips_used, plan.totals.kv_bytes));
        if ctx == 256 {
            let c = chip::modeled_token_latency(&plan, &spec, chip::Precision::Int8);
            println!(
                "SmolLM2 on mini-4m, ctx 256, modeled: {:.1} µs/token ({:.0} tok/s per user; SRAM {:.1} µs, links {:.1} µs)",
                c.modeled_token_latency_s * 1e6,
                c.modeled_tokens_per_s_per_user,
                c.modeled_sram_s * 1e6,
                c.modeled_link_s * 1e6
            );
        }
    }
    println!("SmolLM2-135M Q4_1 (+Q8_0 embedding): {total} weight bytes");
    for (ctx, n, kv) in &counts {
        println!("  on mini-4m, ctx {ctx} (f32 KV {kv} bytes): {n} chips");
    }
    // Weights alone are ~23 chips' worth; with a short context, about twenty-five.
    let weights_only = total.div_ceil(spec.sram_bytes);
    assert!((20..=26).contains(&weights_only), "{weights_only}");
    let at_256 = counts[0].1;
    assert!((20..=30).contains(&at_256), "{at_256}");

    // The real file, when another step has fetched it.
    let gguf = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if gguf.exists() {
        if let Ok(model) = sramlm::model::load(Path::new(&gguf)) {
            let t = TensorInfo::from_weights(&model.weights);
            let mut o = PlaceOptions::for_config(&model.config);
            o.context_len = 256;
            let plan = place(&model.config, &t, &spec, &o).unwrap();
            verify(&plan, &t, model.weights.total_bytes());
            println!(
                "  from the GGUF file, ctx 256: {} chips",
                plan.totals.chips_used
            );
        }
    }
}

#[test]
fn llama2_70b_on_groq_v1() {
    let cfg = LlamaConfig::from_hf_json(&root().join("models/configs/llama-2-70b.json")).unwrap();
    assert_eq!(cfg.param_count(), 68_976_648_192);
    let spec = ChipSpec::groq_v1();
    let rows = chip::study(&cfg, &spec, &chip::llama2_70b_scenarios()).unwrap();
    println!("Llama-2-70B, context 4096, fp16 KV, batch 1, on groq-v1:");
    print!("{}", chip::study_table(&rows));
    let int8 = &rows[0];
    let fp16 = &rows[2];
    // Weights alone: 69.0e9 bytes at int8 = 299 chips of 220 MiB; 138e9 at fp16 = 598.
    assert!(int8.chips >= 299 && int8.chips < 340, "{}", int8.chips);
    assert!(fp16.chips >= 598 && fp16.chips < 660, "{}", fp16.chips);
    assert!(rows[1].chips > int8.chips);
    for r in &rows {
        assert!(r.modeled_tokens_per_s_per_user > 10.0 && r.modeled_tokens_per_s_per_user < 5000.0);
    }
    // The full plans pass the same checks as the small models.
    for (fmt, row) in [(WeightFormat::Int8, int8), (WeightFormat::F16, fp16)] {
        let t = TensorInfo::from_config(&cfg, fmt, WeightFormat::F16).unwrap();
        let total: usize = t.iter().map(|t| t.bytes).sum();
        let mut o = PlaceOptions::for_config(&cfg);
        o.kv_dtype_bytes = 2;
        let plan = place(&cfg, &t, &spec, &o).unwrap();
        verify(&plan, &t, total);
        assert_eq!(plan.totals.chips_used, row.chips);
    }
}
