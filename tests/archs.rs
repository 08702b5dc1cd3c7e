//! Architectures other than plain Llama (issue 11, point 3) against Hugging
//! Face transformers: Llama with `attention_bias`/`mlp_bias`, Qwen2 (q/k/v
//! biases), Qwen3 (per-head q/k RMSNorm, explicit head_dim), Mistral
//! (sliding-window attention, window 4 < the 48 positions run), Gemma 3
//! (scaled embeddings, (1 + w) norms, post-norms, GELU-tanh, per-layer
//! windows and RoPE bases, query_pre_attn_scalar) in VRAM mode and the CPU
//! reference; SRAM mode refuses each with one line.
//!
//! `tests/fixtures/archs/<case>/` holds a tiny random-weight model that
//! scripts/make-fixtures.py built with transformers 5 (float16 weights,
//! float32 reference), the GGUF llama.cpp's convert_hf_to_gguf.py wrote from
//! it, and `reference.json`: greedy ids for a fixed prompt, every step's
//! top-1/top-2 margin and the first step's logits.
//!
//! Parity rule (as tests/rope_configs.rs): the pick equals transformers'
//! at every step whose margin is at least 1e-3 (steps are fed the
//! reference's ids), first-step logits within `TOL`.

use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo, PRESET_NAMES};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::{argmax_of, Executor, Readback, StepOutput};
use sramlm::model::{
    self, Activation, LayerTensor, LlamaConfig, Model, ModelWeights, RopeLayout, RopeType,
    WeightName,
};
use sramlm::testing::reference::RefModel;
use sramlm::testing::{fixture_dir, gpu};
use std::path::PathBuf;

/// Largest first-step |logit error| (as tests/rope_configs.rs: weights at
/// 3x the usual scale, logits span about [-25, 25]).
const TOL: f32 = 2.5e-4;
/// Steps whose reference top-1/top-2 margin is below this are not compared.
const MARGIN: f32 = 1e-3;

#[derive(Clone, serde::Deserialize)]
struct Reference {
    name: String,
    prompt_ids: Vec<u32>,
    new_ids: Vec<u32>,
    top1_minus_top2_margin: Vec<f32>,
    first_step_logits: Vec<f32>,
    gguf: Option<String>,
    context_needed: usize,
    /// Mistral: transformers' ids and margins with the window removed.
    #[serde(default)]
    new_ids_if_full_attention: Option<Vec<u32>>,
    #[serde(default)]
    margins_if_full_attention: Option<Vec<f32>>,
}

#[derive(Clone)]
struct Case {
    dir: PathBuf,
    r: Reference,
}

fn case(name: &str) -> Case {
    let dir = fixture_dir("archs").join(name);
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let r: Reference = serde_json::from_str(&text).unwrap();
    assert_eq!(r.name, name);
    Case { dir, r }
}

/// Both files of a case: the safetensors folder and the GGUF.
fn sources(c: &Case) -> Vec<(&'static str, Model)> {
    let gguf = c.r.gguf.as_ref().expect("every arch case has a GGUF");
    let mut v = vec![("folder", model::load(&c.dir).unwrap())];
    // The qwen2 fixture's GGUF (converted with llama's vocab reader, see
    // scripts/make-fixtures.py) lists 513 tokens (the last one
    // `<|endoftext|>`, a control token) for a 512-row embedding. llama.cpp
    // sizes the embedding by the token list and refuses the file ("tensor
    // 'token_embd.weight' has wrong shape"); sramlm refuses it at load time
    // with one line naming both, so only the folder is checked here.
    match model::load(&c.dir.join(gguf)) {
        Ok(g) => v.push(("gguf", g)),
        Err(e) if c.r.name == "qwen2" => assert_eq!(
            e.to_string(),
            "invalid config: `tokenizer.ggml.tokens` lists 513 tokens but `token_embd.weight` has 512 rows: the vocabulary does not match the embedding (llama.cpp refuses this file too)"
        ),
        Err(e) => panic!("{}: {e}", c.r.name),
    }
    v
}

/// Copies the fixture folder of `c` with its config.json changed by `patch`
/// and loads it (the load error as a string).
fn load_patched(
    c: &Case,
    tag: &str,
    patch: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<Model, String> {
    let tmp = std::env::temp_dir().join(format!(
        "sramlm-archs-{}-{tag}-{}",
        c.r.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(c.dir.join(f), tmp.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("config.json")).unwrap()).unwrap();
    patch(cfg.as_object_mut().unwrap());
    std::fs::write(tmp.join("config.json"), cfg.to_string()).unwrap();
    let m = model::load(&tmp).map_err(|e| e.to_string());
    std::fs::remove_dir_all(&tmp).unwrap();
    m
}

/// Prompt, then the reference's ids one by one; compares each pick where the
/// margin is at least `MARGIN`. Returns the largest first-step logit error.
fn run(exec: &mut dyn Executor, c: &Case, what: &str) -> Result<f32, String> {
    run_ids(exec, &c.r, &c.r.new_ids, &c.r.top1_minus_top2_margin, what)
}

/// [`run`] against `ids` / `margins` (e.g. the full-attention ids).
fn run_ids(
    exec: &mut dyn Executor,
    r: &Reference,
    ids: &[u32],
    margins: &[f32],
    what: &str,
) -> Result<f32, String> {
    exec.reset();
    let StepOutput::Logits { data, .. } = exec
        .step(&r.prompt_ids, Readback::LastLogits)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    else {
        panic!("{what}: logits expected")
    };
    assert_eq!(data.len(), r.first_step_logits.len(), "{what}: vocab");
    let err = max_err(&data, &r.first_step_logits, what);
    let mut got = argmax_of(&StepOutput::Logits { rows: 1, data });
    for (i, &want) in ids.iter().enumerate() {
        if i > 0 {
            let out = exec
                .step(&[ids[i - 1]], Readback::Argmax)
                .unwrap_or_else(|e| panic!("{what}: step {i}: {e}"));
            got = argmax_of(&out);
        }
        if margins[i] >= MARGIN && got != want {
            return Err(format!(
                "{what}: step {i} (position {}): sramlm picks {got}, transformers {want} (margin {})",
                r.prompt_ids.len() + i,
                margins[i]
            ));
        }
    }
    Ok(err)
}

fn max_err(got: &[f32], want: &[f32], what: &str) -> f32 {
    let mut err = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert!(g.is_finite(), "{what}: non-finite logit");
        err = err.max((g - w).abs());
    }
    err
}

fn vram(cfg: &LlamaConfig, w: &ModelWeights, ctx: usize) -> VramExecutor {
    vram_chunk(cfg, w, ctx, VramOptions::default().chunk)
}

/// VRAM mode with prompts run in passes of `chunk` tokens.
fn vram_chunk(cfg: &LlamaConfig, w: &ModelWeights, ctx: usize, chunk: usize) -> VramExecutor {
    VramExecutor::new(
        gpu().unwrap(),
        cfg,
        w,
        &VramOptions {
            context: Some(ctx),
            chunk,
        },
    )
    .unwrap()
}

/// The CPU reference, VRAM mode (whole prompt, and prompt in passes of 3
/// tokens) against transformers; SRAM mode's one-line refusal `sram_msg`;
/// and the same model with its feature removed by `strip` failing the check.
fn check_runs(
    c: &Case,
    m: &Model,
    what: &str,
    sram_msg: &str,
    strip: impl Fn(&mut LlamaConfig, &mut ModelWeights),
) {
    if !check_exact(c, m, what) {
        return;
    }
    let e = sram(m, c.r.context_needed)
        .err()
        .expect("SRAM mode must refuse this model");
    assert_eq!(e, sram_msg, "{what} sram");
    check_fails_without(c, m, what, strip);
}

/// The same weights with a feature removed by `strip` must fail the check
/// against transformers (else the check would not test the feature).
fn check_fails_without(
    c: &Case,
    m: &Model,
    what: &str,
    strip: impl Fn(&mut LlamaConfig, &mut ModelWeights),
) {
    let mut cfg = m.config.clone();
    let mut w = m.weights.clone();
    strip(&mut cfg, &mut w);
    let e = match run(&mut vram(&cfg, &w, c.r.context_needed), c, "stripped") {
        Err(e) => e,
        Ok(err) => {
            assert!(err > 100.0 * TOL, "{what}: the feature changes nothing");
            format!("first-step logits off by {err}")
        }
    };
    eprintln!("{what} without the feature fails as it should: {e}");
}

/// The CPU reference and VRAM mode (whole prompt, and prompt in passes of 3
/// tokens) against transformers. False when there is no GPU (only the CPU
/// reference ran).
fn check_exact(c: &Case, m: &Model, what: &str) -> bool {
    let mut rm = RefModel::new(&m.config, &m.weights);
    let all = rm.forward(&c.r.prompt_ids);
    let last = &all[all.len() - m.config.vocab_size..];
    let e = max_err(last, &c.r.first_step_logits, what);
    eprintln!("{what} cpu reference: first-step max logit error {e:.2e}");
    assert!(
        e <= TOL,
        "{what} cpu reference: max |logit error| {e} > {TOL}"
    );
    if gpu().is_none() {
        return false;
    }
    let ctx = c.r.context_needed;
    for chunk in [VramOptions::default().chunk, 3] {
        let what_v = format!("{what} vram (prefill chunk {chunk})");
        let e = run(
            &mut vram_chunk(&m.config, &m.weights, ctx, chunk),
            c,
            &what_v,
        )
        .unwrap();
        eprintln!("{what_v}: first-step max logit error {e:.2e}");
        assert!(e <= TOL, "{what_v}: max |logit error| {e} > {TOL}");
    }
    true
}

/// SRAM mode's answer on the first preset the model fits (placement's
/// error if none does).
fn sram(m: &Model, ctx: usize) -> Result<SramExecutor, String> {
    let mut last = String::new();
    for preset in PRESET_NAMES {
        let spec = ChipSpec::preset(preset).unwrap();
        let mut opts = PlaceOptions::for_config(&m.config);
        opts.context_len = ctx;
        opts.microbatch_tokens = 4;
        let plan = match place(
            &m.config,
            &TensorInfo::from_weights(&m.weights),
            &spec,
            &opts,
        ) {
            Ok(p) => p,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        return SramExecutor::new(
            gpu().unwrap(),
            &m.config,
            &m.weights,
            &plan,
            &SramOptions {
                image_split_bytes: None,
                task_order: None,
                batch: 1,
                context: Some(ctx),
                microbatch: 4,
            },
        )
        .map_err(|e| e.to_string());
    }
    Err(last)
}

/// One bias architecture: config flags and bias tensors from both formats,
/// the CPU reference and VRAM mode against transformers, SRAM mode's
/// refusal, and the same weights without biases failing the check.
fn check_bias_case(name: &str, want: [bool; 3], sram_msg: &str) {
    let c = case(name);
    for (src, m) in sources(&c) {
        let what = format!("{name} {src}");
        let a = &m.config.arch;
        assert_eq!([a.qkv_bias, a.o_bias, a.mlp_bias], want, "{what}: {a:?}");
        for l in 0..m.config.num_layers {
            for t in LayerTensor::PROJECTIONS {
                assert_eq!(
                    m.weights.get(WeightName::Bias(l, t)).is_some(),
                    t.has_bias(&m.config),
                    "{what}: bias of layer {l} {t:?}"
                );
            }
        }
        // Qwen2 GGUFs keep Hugging Face's RoPE halves; llama's are permuted.
        let layout = if src == "gguf" && name.starts_with("llama") {
            RopeLayout::Adjacent
        } else {
            RopeLayout::Halves
        };
        assert_eq!(m.config.rope_layout, layout, "{what}");

        check_runs(&c, &m, &what, sram_msg, |cfg, w| {
            cfg.arch.qkv_bias = false;
            cfg.arch.o_bias = false;
            cfg.arch.mlp_bias = false;
            w.layers.iter_mut().for_each(|l| l.biases.clear());
        });
    }
}

#[test]
fn llama_attention_and_mlp_bias() {
    check_bias_case(
        "llama-bias",
        [true, true, true],
        "SRAM mode does not run attention and MLP biases yet (LlamaForCausalLM); use --mode vram",
    );
}

#[test]
fn qwen2_qkv_bias() {
    check_bias_case(
        "qwen2",
        [true, false, false],
        "SRAM mode does not run attention biases yet (Qwen2ForCausalLM); use --mode vram",
    );
}

/// Qwen3: per-head q/k RMSNorm before RoPE, head_dim 24 given explicitly
/// (q is 96 wide for a hidden size of 64); folder and GGUF (`qwen3`, NeoX
/// RoPE halves, `blk.N.attn_{q,k}_norm.weight`).
#[test]
fn qwen3_qk_norm() {
    let c = case("qwen3");
    for (src, m) in sources(&c) {
        let what = format!("qwen3 {src}");
        let a = &m.config.arch;
        assert!(a.qk_norm && !a.any_bias(), "{what}: {a:?}");
        assert_eq!(a.describe(), "Qwen3ForCausalLM (per-head q/k RMSNorm)");
        assert_eq!(
            (m.config.head_dim, m.config.q_dim(), m.config.hidden_size),
            (24, 96, 64),
            "{what}"
        );
        assert_eq!(m.config.rope_layout, RopeLayout::Halves, "{what}");
        for l in 0..m.config.num_layers {
            for t in [LayerTensor::Q, LayerTensor::K] {
                let n = m.weights.get(WeightName::HeadNorm(l, t));
                assert_eq!(
                    n.map(|n| n.shape.clone()),
                    Some(vec![24]),
                    "{what}: {t:?} norm of layer {l}"
                );
            }
        }
        check_runs(
            &c,
            &m,
            &what,
            "SRAM mode does not run per-head q/k RMSNorm yet (Qwen3ForCausalLM); use --mode vram",
            |cfg, w| {
                cfg.arch.qk_norm = false;
                w.layers.iter_mut().for_each(|l| l.head_norms.clear());
            },
        );
    }
}

/// Mistral with `sliding_window` 4: every position past 3 attends to its
/// last 4 keys only (transformers 5: `kv_idx > q_idx - sliding_window`;
/// scripts/make-fixtures.py checks its cached loop against one full
/// forward). Without the window the ids differ from step 0.
#[test]
fn mistral_sliding_window() {
    let c = case("mistral");
    let folder = model::load(&c.dir).unwrap();
    assert_eq!(folder.config.arch.name, "MistralForCausalLM");
    assert_eq!(folder.config.arch.sliding_window, Some(4));
    assert_eq!(
        folder.config.arch.describe(),
        "MistralForCausalLM (sliding-window attention (4 positions))"
    );
    check_runs(
        &c,
        &folder,
        "mistral folder",
        "SRAM mode does not run sliding-window attention yet (MistralForCausalLM); use --mode vram",
        |cfg, _| cfg.arch.sliding_window = None,
    );

    // convert_hf_to_gguf.py writes Mistral as GGUF `llama` with no
    // sliding-window key (llama.cpp's llama graph has no window either):
    // the file describes a full-attention model, and sramlm runs it as one.
    // It matches transformers on the same weights with the window removed.
    let gguf = model::load(&c.dir.join(c.r.gguf.as_ref().unwrap())).unwrap();
    assert_eq!(gguf.config.arch.name, "LlamaForCausalLM");
    assert_eq!(gguf.config.arch.sliding_window, None);
    let ids = c.r.new_ids_if_full_attention.as_ref().unwrap();
    let margins = c.r.margins_if_full_attention.as_ref().unwrap();
    assert_ne!(ids, &c.r.new_ids);
    let mut rm = RefModel::new(&gguf.config, &gguf.weights);
    let mut pos_ids = c.r.prompt_ids.clone();
    pos_ids.extend(&ids[..ids.len() - 1]);
    let all = rm.forward(&pos_ids);
    let v = gguf.config.vocab_size;
    let n = c.r.prompt_ids.len();
    for (i, (&want, &mg)) in ids.iter().zip(margins).enumerate() {
        let row = &all[(n - 1 + i) * v..(n + i) * v];
        let got = sramlm::testing::reference::top1_margin(row).0;
        assert!(
            mg < MARGIN || got == want,
            "mistral gguf cpu reference: step {i}: {got} vs transformers (no window) {want}"
        );
    }
    if gpu().is_some() {
        let ctx = c.r.context_needed;
        run_ids(
            &mut vram(&gguf.config, &gguf.weights, ctx),
            &c.r,
            ids,
            margins,
            "mistral gguf vram (full attention)",
        )
        .unwrap();
    }
}

/// Per-layer sliding windows (Qwen2/Qwen3 `use_sliding_window`) are refused
/// at load time with one line naming the setting.
#[test]
fn per_layer_sliding_window_is_refused() {
    for name in ["qwen2", "qwen3"] {
        let c = case(name);
        let tmp =
            std::env::temp_dir().join(format!("sramlm-archs-{name}-swa-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        for f in [
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            std::fs::copy(c.dir.join(f), tmp.join(f)).unwrap();
        }
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(c.dir.join("config.json")).unwrap())
                .unwrap();
        cfg["use_sliding_window"] = serde_json::json!(true);
        cfg["sliding_window"] = serde_json::json!(4);
        std::fs::write(tmp.join("config.json"), cfg.to_string()).unwrap();
        let e = model::load(&tmp).err().map(|e| e.to_string());
        std::fs::remove_dir_all(&tmp).unwrap();
        let e = e.expect("use_sliding_window must be refused");
        assert!(
            !e.contains('\n') && e.contains("use_sliding_window"),
            "{name}: {e}"
        );
    }
}

/// `variants.json` of the Gemma 3 fixture (scripts/make-gemma3-variants.py):
/// transformers on the same weights under other configs, and on the weights
/// the GGUF holds.
#[derive(serde::Deserialize)]
struct Variants {
    variants: std::collections::BTreeMap<String, Variant>,
    gguf: Variant,
}

#[derive(serde::Deserialize)]
struct Variant {
    new_ids: Vec<u32>,
    top1_minus_top2_margin: Vec<f32>,
    first_step_logits: Vec<f32>,
    #[serde(default)]
    set: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    layer_types: Vec<String>,
}

impl Variant {
    /// The case `c` with this variant's transformers results.
    fn case(&self, c: &Case) -> Case {
        Case {
            dir: c.dir.clone(),
            r: Reference {
                new_ids: self.new_ids.clone(),
                top1_minus_top2_margin: self.top1_minus_top2_margin.clone(),
                first_step_logits: self.first_step_logits.clone(),
                ..c.r.clone()
            },
        }
    }
}

fn gemma3_variants(c: &Case) -> Variants {
    let text = std::fs::read_to_string(c.dir.join("variants.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Gemma 3 text, folder and GGUF: embeddings scaled by sqrt(64) = 8,
/// RMSNorms by (1 + w) (the GGUF stores 1 + w), post-attention and
/// post-MLP norms, q/k norms, GELU-tanh, 5 sliding layers (window 4, RoPE
/// base 1e4) and 1 full one (base 1e6). The folder against transformers;
/// the GGUF against transformers on the weights the file holds (llama.cpp's
/// converter rounds 1 + w to float16). Each feature, removed, fails.
#[test]
fn gemma3_folder_and_gguf() {
    let c = case("gemma3");
    let v = gemma3_variants(&c);
    for (src, m) in sources(&c) {
        let what = format!("gemma3 {src}");
        let cfg = &m.config;
        let a = &cfg.arch;
        assert_eq!(a.name, "Gemma3ForCausalLM", "{what}");
        assert!(a.qk_norm && a.post_norms && !a.any_bias(), "{what}: {a:?}");
        assert_eq!(a.activation, Activation::GeluTanh, "{what}");
        assert_eq!(a.embed_scale, Some(8.0), "{what}");
        let offset = if src == "folder" { 1.0 } else { 0.0 };
        assert_eq!(a.norm_weight_offset, offset, "{what}");
        assert_eq!(cfg.attn_scale(), 0.25, "{what}");
        assert_eq!(a.sliding_window, Some(4), "{what}");
        assert_eq!(
            a.sliding_layers,
            [true, true, true, true, true, false],
            "{what}"
        );
        assert_eq!((cfg.layer_window(0), cfg.layer_window(5)), (4, 0), "{what}");
        assert_eq!(cfg.layer_rope(4).0, 10000.0, "{what}");
        assert_eq!(cfg.layer_rope(5).0, 1e6, "{what}");
        assert_eq!(cfg.rope_layout, RopeLayout::Halves, "{what}");
        assert!(!cfg.tie_word_embeddings, "{what}");
        for l in 0..cfg.num_layers {
            for t in [LayerTensor::O, LayerTensor::Down] {
                let n = m.weights.get(WeightName::PostNorm(l, t));
                assert_eq!(
                    n.map(|n| n.shape.clone()),
                    Some(vec![64]),
                    "{what}: {t:?} post-norm of layer {l}"
                );
            }
        }
        let c2 = if src == "gguf" {
            v.gguf.case(&c)
        } else {
            c.clone()
        };
        if src == "folder" && gpu().is_some() {
            // Tied (real checkpoints): the lm_head is the unscaled
            // embedding. The same logits as an lm_head holding a copy of it.
            let (mut tied, mut copy) = (m.config.clone(), m.config.clone());
            tied.tie_word_embeddings = true;
            copy.tie_word_embeddings = false;
            let mut wt = m.weights.clone();
            wt.lm_head = None;
            let mut wc = m.weights.clone();
            wc.lm_head = Some(wc.embed.clone());
            let logits = |cfg: &LlamaConfig, w: &ModelWeights| {
                let mut e = vram(cfg, w, c.r.context_needed);
                match e.step(&c.r.prompt_ids, Readback::LastLogits).unwrap() {
                    StepOutput::Logits { data, .. } => data,
                    _ => panic!("logits expected"),
                }
            };
            let (a, b) = (logits(&tied, &wt), logits(&copy, &wc));
            assert_eq!(a, b, "{what}: tied lm_head");
            assert!(max_err(&a, &c.r.first_step_logits, &what) > 100.0 * TOL);
        }
        let features = if src == "folder" {
            "scaled embeddings, (1 + w) RMSNorm weights, post-attention/post-MLP norms, GELU-tanh MLP, a custom attention scale, per-layer sliding windows and RoPE"
        } else {
            "scaled embeddings, post-attention/post-MLP norms, GELU-tanh MLP, a custom attention scale, per-layer sliding windows and RoPE"
        };
        let sram_msg =
            format!("SRAM mode does not run {features} yet (Gemma3ForCausalLM); use --mode vram");
        check_runs(&c2, &m, &what, &sram_msg, |cfg, w| {
            cfg.arch.post_norms = false;
            w.layers.iter_mut().for_each(|l| l.post_norms.clear());
        });
        if gpu().is_none() || src == "gguf" {
            continue;
        }
        type Strip = fn(&mut LlamaConfig);
        let strips: [(&str, Strip); 6] = [
            ("embedding scale", |c| c.arch.embed_scale = None),
            ("(1 + w) norms", |c| c.arch.norm_weight_offset = 0.0),
            ("GELU", |c| c.arch.activation = Activation::Silu),
            ("per-layer windows", |c| c.arch.sliding_layers.clear()),
            ("sliding layers' RoPE", |c| c.arch.sliding_rope = None),
            ("the window", |c| c.arch.sliding_window = None),
        ];
        for (name, f) in strips {
            check_fails_without(&c2, &m, &format!("{what} without {name}"), |cfg, _| f(cfg));
        }
    }
}

/// Other Gemma 3 configs on the same weights, each against transformers:
/// the 4.x keys (`sliding_window_pattern`, `rope_local_base_freq`), a
/// window past every position run, linear RoPE scaling on the full layer
/// only (Gemma 3 4B+), query_pre_attn_scalar != head_dim, and pattern 2
/// with a 4.x `rope_scaling`.
#[test]
fn gemma3_config_classes() {
    let c = case("gemma3");
    let v = gemma3_variants(&c);
    assert_eq!(v.variants.len(), 5);
    for (name, var) in &v.variants {
        let what = format!("gemma3 {name}");
        let m = load_patched(&c, name, |o| {
            for k in &var.remove {
                o.remove(k);
            }
            o.extend(var.set.clone());
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let sliding: Vec<bool> = var
            .layer_types
            .iter()
            .map(|t| t == "sliding_attention")
            .collect();
        assert_eq!(m.config.arch.sliding_layers, sliding, "{what}");
        let full = sliding.iter().position(|s| !s).unwrap();
        let want_type = if name.contains("linear") {
            RopeType::Linear
        } else {
            RopeType::Default
        };
        assert_eq!(m.config.layer_rope(full).1.rope_type, want_type, "{what}");
        assert_eq!(
            m.config.layer_rope(0).1.rope_type,
            RopeType::Default,
            "{what}"
        );
        check_exact(&var.case(&c), &m, &what);
    }
}

/// What sramlm does not run is refused at load time with one line naming
/// the key: logit soft-capping (Gemma 2 style), bidirectional attention,
/// another activation, a `layer_types` list of the wrong length or kind.
#[test]
fn gemma3_refusals_name_the_key() {
    let c = case("gemma3");
    let cases: [(&str, &str, serde_json::Value); 6] = [
        ("soft1", "attn_logit_softcapping", serde_json::json!(50.0)),
        ("soft2", "final_logit_softcapping", serde_json::json!(30.0)),
        (
            "bidir",
            "use_bidirectional_attention",
            serde_json::json!(true),
        ),
        ("act", "hidden_activation", serde_json::json!("gelu")),
        (
            "types",
            "layer_types",
            serde_json::json!(["full_attention"]),
        ),
        (
            "kind",
            "layer_types",
            serde_json::json!(vec!["chunked_attention"; 6]),
        ),
    ];
    for (tag, key, value) in cases {
        let e = load_patched(&c, tag, |o| {
            o.insert(key.into(), value.clone());
        })
        .err()
        .unwrap_or_else(|| panic!("{key} = {value} must be refused"));
        eprintln!("{key}: {e}");
        assert!(!e.contains('\n') && e.contains(key), "{key}: {e}");
    }
    // null soft-capping (what Gemma 3 configs write) loads.
    load_patched(&c, "null", |o| {
        o.insert("final_logit_softcapping".into(), serde_json::Value::Null);
    })
    .unwrap();
}

/// A config that says `tie_word_embeddings: true` over a file whose
/// lm_head.weight differs from the embedding: transformers 5 runs the
/// file's lm_head (it warns and does not tie; scripts/make-gemma3-variants.py
/// checks that it gives the main reference), and so does sramlm. Over an
/// lm_head.weight equal to the embedding the model stays tied.
#[test]
fn tie_flag_with_a_distinct_lm_head_runs_the_lm_head() {
    let c = case("gemma3");
    let m = load_patched(&c, "tie", |o| {
        o.insert("tie_word_embeddings".into(), serde_json::json!(true));
    })
    .unwrap();
    assert!(!m.config.tie_word_embeddings && m.weights.lm_head.is_some());
    check_exact(&c, &m, "gemma3 tie flag, distinct lm_head");

    // The same folder with lm_head.weight := the embedding's bytes.
    let tmp = std::env::temp_dir().join(format!("sramlm-archs-tie-eq-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(c.dir.join(f), tmp.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("config.json")).unwrap()).unwrap();
    cfg["tie_word_embeddings"] = serde_json::json!(true);
    std::fs::write(tmp.join("config.json"), cfg.to_string()).unwrap();
    let bytes = std::fs::read(c.dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let embed = st.tensor("model.embed_tokens.weight").unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            if n == "lm_head.weight" {
                (n, embed.clone())
            } else {
                (n, v)
            }
        })
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.join("model.safetensors")).unwrap();
    let m = model::load(&tmp);
    std::fs::remove_dir_all(&tmp).unwrap();
    let m = m.unwrap();
    assert!(m.config.tie_word_embeddings && m.weights.lm_head.is_none());
}

/// Batched decoding (two resident sequences at different positions, one
/// on each side of the window) gives each row exactly its solo logits with
/// Gemma's extra dispatches (post-norms, GELU gate) in the batch.
#[test]
fn gemma3_batched_decode_equals_solo() {
    let Some(g) = gpu() else { return };
    let c = case("gemma3");
    let m = model::load(&c.dir).unwrap();
    let ctx = c.r.context_needed;
    let p = &c.r.prompt_ids;
    let logits = |out: StepOutput| match out {
        StepOutput::Logits { data, .. } => data,
        _ => panic!("logits expected"),
    };
    // Solo: sequence 0 = prompt + first new id; sequence 1 = 3 prompt ids + the 4th.
    let solo = |pre: &[u32], next: u32| {
        let mut e = vram(&m.config, &m.weights, ctx);
        e.step(pre, Readback::Argmax).unwrap();
        logits(e.step(&[next], Readback::LastLogits).unwrap())
    };
    let want = [solo(p, c.r.new_ids[0]), solo(&p[..3], p[3])];
    let opts = VramOptions {
        context: Some(ctx),
        chunk: VramOptions::default().chunk,
    };
    let mut e = VramExecutor::new_batched(g, &m.config, &m.weights, &opts, 2).unwrap();
    e.select(0).unwrap();
    e.step(p, Readback::Argmax).unwrap();
    e.select(1).unwrap();
    e.step(&p[..3], Readback::Argmax).unwrap();
    let got = e
        .decode_rows(&[(0, c.r.new_ids[0]), (1, p[3])], Readback::LastLogits)
        .unwrap();
    for (row, (got, want)) in got.into_iter().zip(&want).enumerate() {
        assert_eq!(&logits(got), want, "row {row}");
    }
}
