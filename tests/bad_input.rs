//! Bad input to the `sramlm` binary: broken model folders, contradictory
//! configs, out-of-range flags. Every case must end with a non-zero exit code
//! and a message on stderr that names the problem, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const PROMPT: &str = "Once upon a time";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stories_dir() -> PathBuf {
    crate_dir().join("models/stories260K")
}

fn sramlm_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sramlm"));
    c.args(args)
        .current_dir(crate_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run(args: &[&str]) -> Output {
    sramlm_cmd(args).output().expect("the sramlm binary runs")
}

fn show(args: &[&str], o: &Output) -> String {
    format!(
        "sramlm {:?}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        args,
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `sramlm ARGS`, asserts a clean failure (non-zero exit, no panic) whose
/// stderr contains every word of `words` (case-insensitive); returns stderr.
fn expect_error(args: &[&str], words: &[&str]) -> String {
    let o = run(args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let ctx = show(args, &o);
    assert!(!o.status.success(), "expected a failure\n{ctx}");
    assert!(o.status.code().is_some(), "killed by a signal\n{ctx}");
    assert!(!stderr.contains("panicked"), "panicked\n{ctx}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "panicked\n{ctx}");
    assert!(!stderr.trim().is_empty(), "no message on stderr\n{ctx}");
    let lower = stderr.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "stderr does not mention `{w}`\n{ctx}"
        );
    }
    eprintln!("{ctx}");
    stderr
}

/// `expect_error` plus clap's usage-error exit code (2).
fn expect_usage_error(args: &[&str], words: &[&str]) -> String {
    let s = expect_error(args, words);
    let o = run(args);
    assert_eq!(o.status.code(), Some(2), "{}", show(args, &o));
    s
}

/// A scratch folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "sramlm-bad-input-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn arg(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of the stories260K folder (config, weights, tokenizer).
fn stories_copy(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(stories_dir().join(f), d.file(f)).unwrap();
    }
    d
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Edits the copy's config.json.
fn edit_config(d: &TempDir, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = d.file("config.json");
    let mut v = read_json(&p);
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Rewrites the JSON header of the copy's model.safetensors, keeping the data.
fn edit_safetensors_header(
    d: &TempDir,
    f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) {
    let p = d.file("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    f(h.as_object_mut().unwrap());
    let mut header = serde_json::to_vec(&h).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&p, out).unwrap();
}

fn gen_args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["generate", "-m", model, "-n", "4", "--temperature", "0"];
    a.extend_from_slice(extra);
    a.push(PROMPT);
    a
}

/// `generate` on the folder `d` must fail naming every word.
fn expect_model_error(d: &TempDir, words: &[&str]) -> String {
    expect_error(&gen_args(d.arg(), &[]), words)
}

/// Whether the adapter the environment selects exists (CI demands one).
fn have_gpu() -> bool {
    let ok = sramlm::gpu::GpuOptions::from_env()
        .ok()
        .is_some_and(|o| sramlm::gpu::pick_adapter(&o).is_ok());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but no GPU adapter is usable");
        }
        eprintln!("[sramlm test] no GPU adapter: skipping the GPU part of this test");
    }
    ok
}

// ---------------------------------------------------------------- model files

#[test]
fn missing_model_folder() {
    expect_error(
        &["generate", "-m", "/nonexistent/x", PROMPT],
        &["/nonexistent/x", "does not exist"],
    );
    expect_error(
        &["info", "-m", "/nonexistent/x"],
        &["/nonexistent/x", "does not exist"],
    );
}

#[test]
fn folder_without_config_json() {
    let d = stories_copy("no-config");
    std::fs::remove_file(d.file("config.json")).unwrap();
    expect_model_error(&d, &["config.json", "missing"]);
}

#[test]
fn folder_without_model_safetensors() {
    let d = stories_copy("no-weights");
    std::fs::remove_file(d.file("model.safetensors")).unwrap();
    expect_model_error(&d, &["model.safetensors", "missing"]);
}

#[test]
fn folder_without_tokenizer_json() {
    let d = stories_copy("no-tokenizer");
    std::fs::remove_file(d.file("tokenizer.json")).unwrap();
    expect_model_error(&d, &["tokenizer.json", "missing"]);
}

#[test]
fn empty_folder() {
    let d = TempDir::new("empty");
    expect_model_error(&d, &["config.json", "missing"]);
}

#[test]
fn path_is_neither_folder_nor_gguf() {
    let d = TempDir::new("not-a-model");
    let f = d.file("weights.bin");
    std::fs::write(&f, b"this is not a model").unwrap();
    let e = expect_error(
        &gen_args(f.to_str().unwrap(), &[]),
        &["weights.bin", "neither a model folder", "gguf"],
    );
    // A file that is simply not a model is not a "corrupt or truncated
    // weights file": that prefix sends the user after the wrong problem.
    assert!(!e.contains("truncated"), "misleading message: {e}");
}

#[test]
fn truncated_model_safetensors() {
    let len = std::fs::metadata(stories_dir().join("model.safetensors"))
        .unwrap()
        .len();
    let bytes = std::fs::read(stories_dir().join("model.safetensors")).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    for (what, cut) in [
        ("empty file", 0),
        ("inside the 8-byte length", 4),
        ("right after the length", 8),
        ("inside the JSON header", 8 + header / 2),
        ("right after the header", 8 + header),
        ("inside tensor data", 8 + header + 1000),
        ("one byte short", len - 1),
    ] {
        eprintln!("cut: {what} ({cut} of {len} bytes)");
        let d = stories_copy("truncated");
        std::fs::write(d.file("model.safetensors"), &bytes[..cut as usize]).unwrap();
        expect_model_error(&d, &["model.safetensors", "truncated"]);
    }
}

#[test]
fn corrupt_safetensors_header() {
    let bytes = std::fs::read(stories_dir().join("model.safetensors")).unwrap();
    // Garbage where the JSON header is (the length field stays right).
    let d = stories_copy("garbage-header");
    let mut b = bytes.clone();
    for (i, x) in b[8..200].iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(37).wrapping_add(0x80);
    }
    std::fs::write(d.file("model.safetensors"), &b).unwrap();
    expect_model_error(&d, &["model.safetensors", "corrupt"]);
    // A whole file of garbage: the length field claims an absurd header.
    let d = stories_copy("garbage-file");
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(d.file("model.safetensors"), &junk).unwrap();
    expect_model_error(&d, &["model.safetensors", "corrupt"]);
    // Valid JSON, but not a safetensors header.
    let d = stories_copy("json-array-header");
    let h = b"[1, 2, 3]       ";
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h);
    std::fs::write(d.file("model.safetensors"), &b).unwrap();
    expect_model_error(&d, &["model.safetensors", "corrupt"]);
}

#[test]
fn tensor_data_offsets_past_the_end() {
    let d = stories_copy("bad-offsets");
    edit_safetensors_header(&d, |h| {
        let t = h["model.norm.weight"].as_object_mut().unwrap();
        let end = t["data_offsets"][1].as_u64().unwrap();
        t["data_offsets"] = serde_json::json!([end, end + 256]);
    });
    expect_model_error(&d, &["model.safetensors"]);
}

#[test]
fn corrupt_tokenizer_json() {
    let d = stories_copy("bad-tokenizer");
    std::fs::write(d.file("tokenizer.json"), b"{\"model\": 42").unwrap();
    expect_model_error(&d, &["tokenizer"]);
}

// ---------------------------------------------------------------- config.json

#[test]
fn config_missing_field_is_named() {
    for field in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "vocab_size",
        "num_attention_heads",
    ] {
        let d = stories_copy("missing-field");
        edit_config(&d, |c| {
            c.remove(field);
        });
        expect_model_error(&d, &["config.json", field]);
    }
}

#[test]
fn config_not_json() {
    let d = stories_copy("config-not-json");
    std::fs::write(d.file("config.json"), b"{ hidden_size: 64 ").unwrap();
    expect_model_error(&d, &["config.json", "json"]);
}

#[test]
fn config_field_of_wrong_type() {
    let d = stories_copy("config-wrong-type");
    edit_config(&d, |c| {
        c.insert("hidden_size".into(), serde_json::json!("64"));
    });
    expect_model_error(&d, &["hidden_size", "integer"]);
    let d = stories_copy("config-negative");
    edit_config(&d, |c| {
        c.insert("num_hidden_layers".into(), serde_json::json!(-5));
    });
    expect_model_error(&d, &["num_hidden_layers"]);
}

#[test]
fn config_kv_heads_not_dividing_heads() {
    let d = stories_copy("kv-heads");
    edit_config(&d, |c| {
        c.insert("num_key_value_heads".into(), serde_json::json!(3));
    });
    expect_model_error(
        &d,
        &["num_attention_heads", "num_key_value_heads", "8", "3"],
    );
}

#[test]
fn config_hidden_size_not_dividing_heads() {
    let d = stories_copy("head-dim");
    edit_config(&d, |c| {
        c.remove("head_dim");
        c.insert("num_attention_heads".into(), serde_json::json!(7));
        c.insert("num_key_value_heads".into(), serde_json::json!(7));
    });
    expect_model_error(&d, &["hidden_size", "num_attention_heads"]);
}

#[test]
fn config_zero_sizes() {
    for field in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "max_position_embeddings",
    ] {
        eprintln!("zero: {field}");
        let d = stories_copy("zero");
        edit_config(&d, |c| {
            c.insert(field.into(), serde_json::json!(0));
        });
        expect_model_error(&d, &[field]);
    }
}

#[test]
fn config_absurd_sizes() {
    let d = stories_copy("huge");
    edit_config(&d, |c| {
        c.insert("num_hidden_layers".into(), serde_json::json!(1u64 << 40));
    });
    expect_model_error(&d, &["num_hidden_layers"]);
}

#[test]
fn unsupported_architecture_is_named() {
    let d = stories_copy("phi3");
    edit_config(&d, |c| {
        c.insert(
            "architectures".into(),
            serde_json::json!(["Phi3ForCausalLM"]),
        );
        c.insert("model_type".into(), serde_json::json!("phi3"));
    });
    expect_model_error(&d, &["unsupported architecture", "Phi3ForCausalLM"]);
}

// ---------------------------------------------------------------- tensors

#[test]
fn tensor_shape_disagreeing_with_config() {
    let d = stories_copy("shape");
    edit_config(&d, |c| {
        c.insert("intermediate_size".into(), serde_json::json!(100));
    });
    let e = expect_model_error(&d, &["mlp", "shape", "172", "100"]);
    // Both shapes, as shapes: [.., 172 ..] found, [.., 100 ..] expected.
    assert!(e.contains("172, 64") || e.contains("64, 172"), "{e}");
    assert!(e.contains("100, 64") || e.contains("64, 100"), "{e}");
}

#[test]
fn tensor_missing_for_the_configured_layers() {
    let d = stories_copy("six-layers");
    edit_config(&d, |c| {
        c.insert("num_hidden_layers".into(), serde_json::json!(6));
    });
    expect_model_error(&d, &["model.layers.5.", "missing"]);
}

#[test]
fn tensor_missing_from_file() {
    let d = stories_copy("renamed-tensor");
    edit_safetensors_header(&d, |h| {
        let t = h.remove("model.layers.3.self_attn.k_proj.weight").unwrap();
        h.insert("model.layers.3.self_attn.k_proj.weight_renamed".into(), t);
    });
    expect_model_error(&d, &["model.layers.3.self_attn.k_proj.weight", "missing"]);
}

#[test]
fn tensor_dtype_sramlm_cannot_read() {
    // Same byte size: I32 instead of F32.
    let d = stories_copy("dtype-i32");
    edit_safetensors_header(&d, |h| {
        h["model.layers.0.mlp.gate_proj.weight"]["dtype"] = serde_json::json!("I32");
    });
    expect_model_error(
        &d,
        &["I32", "model.layers.0.mlp.gate_proj.weight", "unsupported"],
    );
    // F64 with half the columns, so the byte range still matches.
    let d = stories_copy("dtype-f64");
    edit_safetensors_header(&d, |h| {
        let t = &mut h["model.layers.2.self_attn.q_proj.weight"];
        t["dtype"] = serde_json::json!("F64");
        t["shape"] = serde_json::json!([64, 32]);
    });
    expect_model_error(
        &d,
        &[
            "F64",
            "model.layers.2.self_attn.q_proj.weight",
            "unsupported",
        ],
    );
}

#[test]
fn hand_written_safetensors_with_i32_tensor() {
    // A tiny file written from scratch: one I32 tensor under a Llama name.
    let d = TempDir::new("handmade");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(stories_dir().join(f), d.file(f)).unwrap();
    }
    let data: Vec<u8> = (0..64i32).flat_map(|i| i.to_le_bytes()).collect();
    let header = serde_json::json!({
        "model.norm.weight": {"dtype": "I32", "shape": [64], "data_offsets": [0, data.len()]}
    });
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&data);
    std::fs::write(d.file("model.safetensors"), file).unwrap();
    expect_model_error(&d, &["I32", "model.norm.weight"]);
}

// ---------------------------------------------------------------- context window

#[test]
fn prompt_longer_than_context() {
    let long = "Once upon a time there was a little girl named Lily who loved to play outside.";
    let args = [
        "generate",
        "--ctx",
        "8",
        "-n",
        "4",
        "--temperature",
        "0",
        long,
    ];
    let e = expect_error(&args, &["prompt", "context window", "8"]);
    // The message gives the prompt's length too: "the prompt has N tokens".
    let n: usize = e
        .split("prompt has ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no prompt token count in: {e}"));
    assert!(n > 8, "{e}");
}

#[test]
fn ctx_above_model_window() {
    expect_error(
        &["generate", "--ctx", "100000", "-n", "4", PROMPT],
        &["--ctx", "100000", "512", "context window"],
    );
}

#[test]
fn ctx_zero() {
    expect_error(&["generate", "--ctx", "0", PROMPT], &["--ctx"]);
}

// ---------------------------------------------------------------- flags

#[test]
fn max_tokens_zero() {
    expect_error(
        &["generate", "-n", "0", PROMPT],
        &["max-tokens", "at least 1"],
    );
}

#[test]
fn negative_temperature() {
    expect_error(
        &["generate", "--temperature=-1", PROMPT],
        &["--temperature", "-1"],
    );
    // Without `=` too: the value is taken and rejected by sramlm's own check.
    expect_error(
        &["generate", "--temperature", "-1", PROMPT],
        &["--temperature", "-1"],
    );
    expect_error(
        &["generate", "--temperature", "NaN", PROMPT],
        &["--temperature", "NaN"],
    );
    expect_error(
        &["generate", "--temperature", "inf", PROMPT],
        &["--temperature"],
    );
    expect_usage_error(
        &["generate", "--temperature", "warm", PROMPT],
        &["--temperature", "warm"],
    );
}

#[test]
fn top_p_out_of_range() {
    expect_error(&["generate", "--top-p", "0", PROMPT], &["--top-p", "0"]);
    expect_error(&["generate", "--top-p", "1.5", PROMPT], &["--top-p", "1.5"]);
    expect_error(&["generate", "--top-p=-0.5", PROMPT], &["--top-p", "-0.5"]);
    expect_error(&["generate", "--top-p", "NaN", PROMPT], &["--top-p"]);
}

#[test]
fn chunk_zero() {
    expect_error(
        &["generate", "--chunk", "0", PROMPT],
        &["--chunk", "at least 1"],
    );
}

#[test]
fn negative_or_non_numeric_counts() {
    expect_usage_error(&["generate", "-n", "many", PROMPT], &["many", "max-tokens"]);
    expect_usage_error(&["generate", "--top-k=-3", PROMPT], &["-3", "--top-k"]);
    expect_usage_error(&["generate", "--seed", "x", PROMPT], &["x", "--seed"]);
}

#[test]
fn unknown_mode() {
    expect_usage_error(
        &["generate", "--mode", "foo", PROMPT],
        &["foo", "--mode", "vram", "sram"],
    );
}

#[test]
fn unknown_backend() {
    expect_usage_error(
        &["generate", "--backend", "foo", PROMPT],
        &["foo", "--backend", "vulkan"],
    );
    expect_usage_error(&["info", "--backend", "foo"], &["foo", "--backend"]);
}

#[test]
fn unknown_flag() {
    expect_usage_error(&["generate", "--bogus-flag", PROMPT], &["--bogus-flag"]);
    expect_usage_error(&["frobnicate"], &["frobnicate"]);
}

#[test]
fn unknown_format() {
    expect_usage_error(
        &["generate", "--format", "yaml", PROMPT],
        &["yaml", "--format"],
    );
}

// ---------------------------------------------------------------- SRAM mode

#[test]
fn sram_unknown_preset() {
    expect_error(
        &[
            "generate", "--mode", "sram", "--chip", "tpu-v9", "-n", "2", PROMPT,
        ],
        &["tpu-v9", "groq-v1", "mini-64k"],
    );
    expect_error(&["plan", "--chip", "tpu-v9"], &["tpu-v9"]);
}

#[test]
fn sram_malformed_spec_file() {
    let d = TempDir::new("chip-spec");
    let f = d.0.join("chip.json");
    std::fs::write(&f, "{ \"name\": \"x\", \"sram_bytes\": ").unwrap();
    expect_error(&["plan", "--chip", f.to_str().unwrap()], &["chip.json"]);
    let spec = |sram: &str| {
        format!(
            r#"{{"name":"x","sram_bytes":{sram},"sram_bandwidth":80e12,"compute_flops_fp16":188e12,
            "compute_ops_int8":750e12,"links":16,"link_bandwidth":14e9,"link_latency_s":1e-6,"clock_hz":9e8}}"#
        )
    };
    std::fs::write(&f, spec("1048576")).unwrap();
    let ok = run(&["plan", "--chip", f.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", show(&["plan"], &ok));
    std::fs::write(&f, spec("0")).unwrap();
    expect_error(&["plan", "--chip", f.to_str().unwrap()], &["sram_bytes"]);
    std::fs::write(&f, spec("-5")).unwrap();
    expect_error(&["plan", "--chip", f.to_str().unwrap()], &["sram_bytes"]);
}

#[test]
fn sram_zero_sizes() {
    expect_error(&["plan", "--chip", "mini-64k", "--slice", "0"], &["slice"]);
    expect_error(
        &["plan", "--chip", "mini-64k", "--chips", "0"],
        &["--chips"],
    );
}

#[test]
fn sram_slice_above_the_adapter_limit() {
    // 1 MiB per workgroup is far above any adapter's limit; the message gives both numbers.
    let e = expect_error(
        &[
            "generate", "--mode", "sram", "--chip", "groq-v1", "--slice", "1048576", "-n", "2",
            PROMPT,
        ],
        &["1048576", "workgroup"],
    );
    assert!(e.chars().any(|c| c.is_ascii_digit()), "{e}");
}

#[test]
fn sram_slice_larger_than_the_chip() {
    expect_error(
        &["plan", "--chip", "mini-64k", "--slice", "131072"],
        &["131072", "65536"],
    );
}

#[test]
fn sram_too_few_chips_says_how_many_are_needed() {
    let e = expect_error(
        &["plan", "--chip", "mini-64k", "--chips", "3"],
        &["needs", "chips"],
    );
    assert!(e.contains('3'), "{e}");
    expect_error(
        &[
            "generate", "--mode", "sram", "--chip", "mini-64k", "--chips", "3", "-n", "2", PROMPT,
        ],
        &["needs", "chips"],
    );
}

#[test]
fn unknown_adapter_lists_the_available_ones() {
    let e = expect_error(
        &[
            "generate",
            "--adapter",
            "no-such-adapter-xyz",
            "-n",
            "4",
            PROMPT,
        ],
        &["no", "adapter", "no-such-adapter-xyz"],
    );
    if have_gpu() {
        assert!(e.contains("available"), "{e}");
        let info = run(&["info", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        let names: Vec<&str> = v["adapters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert!(!names.is_empty());
        for n in names {
            assert!(e.contains(n), "adapter `{n}` not listed in: {e}");
        }
    }
}

#[test]
fn invalid_utf8_prompt_on_stdin() {
    let args = ["generate", "-n", "4", "--temperature", "0", "-"];
    let mut c = sramlm_cmd(&args);
    c.stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"Once upon \xff\xfe a time\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let ctx = show(&args, &o);
    assert!(!o.status.success(), "{ctx}");
    assert!(!stderr.contains("panicked"), "{ctx}");
    assert!(stderr.to_lowercase().contains("stdin"), "{ctx}");
    assert!(stderr.to_lowercase().contains("utf-8"), "{ctx}");
}

// ---------------------------------------------------------------- bench

#[test]
fn bench_unknown_mode() {
    expect_error(&["bench", "--modes", "vram,tpu"], &["tpu", "--modes"]);
}

#[test]
fn bench_prompt_plus_generation_beyond_the_context() {
    // stories260K has a 512-token window.
    expect_error(
        &["bench", "--prompt-len", "500", "--gen", "32"],
        &["532", "512", "context"],
    );
}

#[test]
fn bench_missing_model() {
    expect_error(
        &["bench", "-m", "/nonexistent/model"],
        &["/nonexistent/model"],
    );
}

#[test]
fn bench_repeat_zero() {
    expect_error(&["bench", "--repeat", "0"], &["--repeat"]);
}

#[test]
fn bench_batch_zero_is_refused_clearly() {
    expect_error(&["bench", "--batch", "0", "--modes", "sram"], &["--batch"]);
    expect_error(
        &["bench", "--batch", "1,0", "--modes", "vram"],
        &["--batch"],
    );
}
