//! The `sramlm` binary end to end: `generate` (JSON and text output, stdin
//! prompts, sampling flags, EOS handling, the down-level feature path) and
//! `info`, against the stories260K reference in tests/fixtures.
//!
//! Needs a GPU adapter (lavapipe will do): without one the GPU tests are
//! skipped locally and fail when `CI` is set.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const PROMPT: &str = "Once upon a time";
const PROMPT_IDS: [u32; 5] = [1, 403, 407, 261, 378];
const EOS: u32 = 2;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

fn show(args: &[&str], o: &Output) -> String {
    format!(
        "sramlm {:?}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        args,
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check_ok(args: &[&str], o: &Output) {
    assert!(o.status.success(), "expected success\n{}", show(args, o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{}",
        show(args, o)
    );
}

/// Runs `sramlm ARGS` with extra environment variables; asserts success.
fn run_ok_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = sramlm_cmd(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("the sramlm binary runs");
    check_ok(args, &o);
    o
}

fn run_ok(args: &[&str]) -> Output {
    run_ok_env(args, &[])
}

/// Runs `sramlm ARGS` with `input` on stdin; asserts success.
fn run_ok_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut c = sramlm_cmd(args);
    c.stdin(Stdio::piped());
    let mut child = c.spawn().expect("the sramlm binary runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let o = child.wait_with_output().unwrap();
    check_ok(args, &o);
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout must be exactly one JSON object.
fn json_out(args: &[&str], o: &Output) -> Value {
    let s = stdout(o);
    let v: Value = serde_json::from_str(s.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value: {e}\n{}", show(args, o)));
    assert!(v.is_object(), "{}", show(args, o));
    v
}

fn ids_of(v: &Value, key: &str) -> Vec<u32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("`{key}` is not an array in {v}"))
        .iter()
        .map(|x| x.as_u64().expect("ids are integers") as u32)
        .collect()
}

/// `generate --format json` with `args`; returns the JSON object.
fn gen_json(args: &[&str]) -> Value {
    gen_json_env(args, &[])
}

fn gen_json_env(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut a = vec!["generate", "--format", "json"];
    a.extend_from_slice(args);
    let o = run_ok_env(&a, env);
    json_out(&a, &o)
}

/// The fixture's reference prompt by text.
fn reference_prompt(text: &str) -> Value {
    let p = crate_dir().join("tests/fixtures/stories260K/stories260K.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["text"] == text)
        .unwrap_or_else(|| panic!("no reference prompt {text:?}"))
        .clone()
}

/// Reference greedy ids (32 new tokens, temperature 0) for `text`.
fn reference_greedy(text: &str) -> Vec<u32> {
    ids_of(&reference_prompt(text)["greedy"], "new_ids")
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
        eprintln!("[sramlm test] SKIPPED: no GPU adapter");
    }
    ok
}

fn vocab() -> u32 {
    512
}

// ---------------------------------------------------------------- generate

#[test]
fn generate_json_matches_reference() {
    if !have_gpu() {
        return;
    }
    let v = gen_json(&["-n", "32", "--temperature", "0", PROMPT]);
    let obj = v.as_object().unwrap();
    for k in ["prompt_ids", "ids", "text", "stats"] {
        assert!(obj.contains_key(k), "missing `{k}` in {v}");
    }
    assert_eq!(ids_of(&v, "prompt_ids"), PROMPT_IDS);
    let ids = ids_of(&v, "ids");
    assert_eq!(ids, reference_greedy(PROMPT));
    assert_eq!(ids_of(&reference_prompt(PROMPT), "input_ids"), PROMPT_IDS);

    let text = v["text"].as_str().expect("text is a string");
    assert!(!text.is_empty());
    let m = sramlm::model::load(&crate_dir().join("models/stories260K")).unwrap();
    assert_eq!(
        text,
        m.tokenizer.decode(&ids).unwrap(),
        "text is the decoding of ids"
    );
    assert_eq!(
        text,
        reference_prompt(PROMPT)["greedy"]["new_text"]
            .as_str()
            .unwrap()
    );

    let s = &v["stats"];
    assert!(s.is_object(), "{v}");
    for k in ["prefill_tok_s", "decode_tok_s"] {
        let x = s[k]
            .as_f64()
            .unwrap_or_else(|| panic!("stats.{k} missing in {v}"));
        assert!(x.is_finite() && x > 0.0, "stats.{k} = {x}");
    }
    assert!(s["dispatches_per_token"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["weight_bytes_gpu"].as_u64().unwrap_or(0) > 0, "{s}");
    assert_eq!(s["prompt_tokens"].as_u64(), Some(5), "{s}");
    assert_eq!(s["generated_tokens"].as_u64(), Some(32), "{s}");
}

#[test]
fn generate_text_streams_to_stdout_and_stats_to_stderr() {
    if !have_gpu() {
        return;
    }
    let args = ["generate", "-n", "32", "--temperature", "0", PROMPT];
    let o = run_ok(&args);
    let (out, err) = (stdout(&o), stderr(&o));
    let want = reference_prompt(PROMPT)["greedy"]["new_text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(out.trim_end(), want.trim_end(), "{}", show(&args, &o));
    assert!(err.contains("adapter:"), "{}", show(&args, &o));
    assert!(err.contains("tok/s"), "{}", show(&args, &o));
    assert!(!out.contains("adapter:"), "{}", show(&args, &o));
    assert!(!out.contains("tok/s"), "{}", show(&args, &o));
}

#[test]
fn json_format_keeps_stdout_clean() {
    if !have_gpu() {
        return;
    }
    let args = ["generate", "--format", "json", "-n", "4", PROMPT];
    let o = run_ok(&args);
    let out = stdout(&o);
    assert_eq!(out.trim().lines().count(), 1, "{}", show(&args, &o));
    assert!(!out.contains("adapter:"), "{}", show(&args, &o));
    json_out(&args, &o);
}

#[test]
fn prompt_from_stdin_matches_argument() {
    if !have_gpu() {
        return;
    }
    let args = [
        "generate",
        "--format",
        "json",
        "-n",
        "32",
        "--temperature",
        "0",
        "-",
    ];
    for input in [&b"Once upon a time\n"[..], &b"Once upon a time"[..]] {
        let o = run_ok_stdin(&args, input);
        let v = json_out(&args, &o);
        assert_eq!(ids_of(&v, "prompt_ids"), PROMPT_IDS, "input {input:?}");
        assert_eq!(
            ids_of(&v, "ids"),
            reference_greedy(PROMPT),
            "input {input:?}"
        );
    }
}

#[test]
fn empty_prompt_starts_from_bos() {
    if !have_gpu() {
        return;
    }
    let want = reference_greedy("");
    for args in [
        &["-n", "32", "--temperature", "0", "--ignore-eos", ""][..],
        &["-n", "32", "--temperature", "0", "--ignore-eos"][..],
    ] {
        let v = gen_json(args);
        assert_eq!(ids_of(&v, "prompt_ids"), [1], "{args:?}");
        assert_eq!(ids_of(&v, "ids"), want, "{args:?}");
    }
}

#[test]
fn same_seed_same_ids_different_seed_differs() {
    if !have_gpu() {
        return;
    }
    let sample = |seed: &str| {
        ids_of(
            &gen_json(&[
                "-n",
                "24",
                "--temperature",
                "1.0",
                "--ignore-eos",
                "--seed",
                seed,
                PROMPT,
            ]),
            "ids",
        )
    };
    let a = sample("7");
    assert_eq!(a.len(), 24);
    assert_eq!(a, sample("7"), "same seed, same ids");
    let differs = ["1", "2", "3", "4", "5"].iter().any(|s| sample(s) != a);
    assert!(differs, "five other seeds all gave {a:?}");
}

#[test]
fn full_row_sampling_top_k_0() {
    if !have_gpu() {
        return;
    }
    let args = [
        "-n",
        "16",
        "--ignore-eos",
        "--top-k",
        "0",
        "--temperature",
        "1.0",
        "--seed",
        "3",
        PROMPT,
    ];
    let a = ids_of(&gen_json(&args), "ids");
    assert_eq!(a.len(), 16);
    assert!(a.iter().all(|&i| i < vocab()), "{a:?}");
    assert_eq!(
        a,
        ids_of(&gen_json(&args), "ids"),
        "seeded full-row sampling is reproducible"
    );
    // Full row at a vanishing temperature is greedy.
    let g = gen_json(&[
        "-n",
        "32",
        "--ignore-eos",
        "--top-k",
        "0",
        "--temperature",
        "1e-9",
        PROMPT,
    ]);
    assert_eq!(ids_of(&g, "ids"), reference_greedy(PROMPT));
}

#[test]
fn top_k_top_p_temperature_together() {
    if !have_gpu() {
        return;
    }
    let args = [
        "-n",
        "16",
        "--top-k",
        "5",
        "--top-p",
        "0.9",
        "--temperature",
        "1.2",
        "--seed",
        "11",
        PROMPT,
    ];
    let v = gen_json(&args);
    let a = ids_of(&v, "ids");
    assert!(!a.is_empty() && a.len() <= 16, "{a:?}");
    assert!(a.iter().all(|&i| i < vocab()), "{a:?}");
    assert!(v["text"].is_string());
    assert_eq!(a, ids_of(&gen_json(&args), "ids"));
}

#[test]
fn top_k_1_is_greedy_and_large_top_k_works() {
    if !have_gpu() {
        return;
    }
    let g = gen_json(&[
        "-n",
        "32",
        "--ignore-eos",
        "--top-k",
        "1",
        "--temperature",
        "1.0",
        PROMPT,
    ]);
    assert_eq!(ids_of(&g, "ids"), reference_greedy(PROMPT));
    // Above the GPU top-k limit (64) and above the vocabulary.
    for k in ["64", "65", "1000"] {
        let v = gen_json(&[
            "-n",
            "8",
            "--ignore-eos",
            "--top-k",
            k,
            "--seed",
            "5",
            PROMPT,
        ]);
        let a = ids_of(&v, "ids");
        assert_eq!(a.len(), 8, "top-k {k}");
        assert!(a.iter().all(|&i| i < vocab()), "top-k {k}: {a:?}");
    }
}

#[test]
fn ignore_eos_generates_exactly_n() {
    if !have_gpu() {
        return;
    }
    let v = gen_json(&["-n", "40", "--ignore-eos", "--seed", "1", PROMPT]);
    assert_eq!(ids_of(&v, "ids").len(), 40);
    assert_eq!(v["stats"]["generated_tokens"].as_u64(), Some(40));
    // Without it, generation may stop at EOS (id 2), and then ends with it.
    for seed in ["1", "2", "3"] {
        let v = gen_json(&["-n", "40", "--seed", seed, PROMPT]);
        let a = ids_of(&v, "ids");
        assert!(!a.is_empty() && a.len() <= 40, "{a:?}");
        if a.len() < 40 {
            assert_eq!(*a.last().unwrap(), EOS, "stopped early without EOS: {a:?}");
        }
        assert!(!a[..a.len() - 1].contains(&EOS), "went on past EOS: {a:?}");
    }
}

#[test]
fn generation_stops_at_the_context_window() {
    if !have_gpu() {
        return;
    }
    let want = reference_greedy(PROMPT);
    // 5 prompt tokens; room for ctx - 5 more positions, plus the last pick.
    for ctx in [5usize, 8, 12] {
        let c = ctx.to_string();
        let v = gen_json(&[
            "-n",
            "40",
            "--ignore-eos",
            "--temperature",
            "0",
            "--ctx",
            &c,
            PROMPT,
        ]);
        let a = ids_of(&v, "ids");
        assert!(!a.is_empty() && a.len() <= ctx - 5 + 1, "ctx {ctx}: {a:?}");
        assert!(a.len() >= ctx - 5, "ctx {ctx}: stopped early: {a:?}");
        assert_eq!(a[..], want[..a.len()], "ctx {ctx}");
    }
    // The model's whole window (512): -n larger than what fits.
    let v = gen_json(&["-n", "600", "--ignore-eos", "--temperature", "0", PROMPT]);
    let n = ids_of(&v, "ids").len();
    assert!(
        (507..=508).contains(&n),
        "{n} ids in a 512-token window after 5 prompt tokens"
    );
}

#[test]
fn prefill_chunks_give_the_same_ids() {
    if !have_gpu() {
        return;
    }
    for chunk in ["1", "2", "3", "100000"] {
        let v = gen_json(&["-n", "32", "--temperature", "0", "--chunk", chunk, PROMPT]);
        assert_eq!(
            ids_of(&v, "ids"),
            reference_greedy(PROMPT),
            "--chunk {chunk}"
        );
    }
}

#[test]
fn unicode_prompt_works() {
    if !have_gpu() {
        return;
    }
    let v = gen_json(&[
        "-n",
        "8",
        "--temperature",
        "0",
        "Émilie 🐉 漢字\ttab\nnewline",
    ]);
    let p = ids_of(&v, "prompt_ids");
    assert_eq!(p[0], 1, "BOS first");
    assert!(p.len() > 5, "{p:?}");
    assert!(p.iter().all(|&i| i < vocab()));
}

#[test]
fn downlevel_adapter_gives_reference_ids() {
    // SRAMLM_DOWNLEVEL=1: no f16, no subgroups, 16 KiB of workgroup storage.
    if !have_gpu() {
        return;
    }
    let env = [("SRAMLM_DOWNLEVEL", "1")];
    let v = gen_json_env(&["-n", "32", "--temperature", "0", PROMPT], &env);
    assert_eq!(ids_of(&v, "ids"), reference_greedy(PROMPT));
    let v = gen_json_env(
        &["-n", "8", "--top-k", "0", "--temperature", "1e-9", PROMPT],
        &env,
    );
    assert_eq!(ids_of(&v, "ids"), reference_greedy(PROMPT)[..8]);
    let v = gen_json_env(
        &["-n", "8", "--top-k", "8", "--temperature", "1e-9", PROMPT],
        &env,
    );
    assert_eq!(ids_of(&v, "ids"), reference_greedy(PROMPT)[..8]);
}

// ---------------------------------------------------------------- info

#[test]
fn info_lists_adapters_and_marks_the_pick() {
    if !have_gpu() {
        return;
    }
    let args = ["info"];
    let o = run_ok(&args);
    let out = stdout(&o);
    let marked = out.lines().filter(|l| l.starts_with("* ")).count();
    assert_eq!(
        marked,
        1,
        "exactly one adapter marked with *\n{}",
        show(&args, &o)
    );
    assert!(out.contains("workgroup storage"), "{}", show(&args, &o));
}

#[test]
fn info_json_has_a_picked_adapter() {
    if !have_gpu() {
        return;
    }
    let args = ["info", "--format", "json"];
    let o = run_ok(&args);
    let v = json_out(&args, &o);
    let list = v["adapters"].as_array().expect("adapters array");
    assert!(!list.is_empty(), "{v}");
    let picked: Vec<_> = list
        .iter()
        .filter(|a| a["picked"] == Value::Bool(true))
        .collect();
    assert_eq!(picked.len(), 1, "{v}");
    for a in list {
        assert!(a["name"].is_string(), "{a}");
        assert!(a["max_workgroup_storage"].as_u64().unwrap_or(0) > 0, "{a}");
    }
    assert!(v.get("model").is_none(), "no model without -m: {v}");
}

#[test]
fn info_with_model_shows_summary() {
    let args = ["info", "-m", "models/stories260K"];
    let o = run_ok(&args);
    let out = stdout(&o);
    for w in [
        "stories260K",
        "5 layers",
        "vocab 512",
        "weight memory",
        "context 512",
    ] {
        assert!(out.contains(w), "`{w}` missing\n{}", show(&args, &o));
    }
    let args = ["info", "-m", "models/stories260K", "--format", "json"];
    let o = run_ok(&args);
    let v = json_out(&args, &o);
    let m = &v["model"];
    assert_eq!(m["config"]["num_layers"].as_u64(), Some(5), "{v}");
    assert_eq!(m["config"]["vocab_size"].as_u64(), Some(512), "{v}");
    assert!(m["weight_bytes_gpu"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(m["parameters"].as_u64().unwrap_or(0) > 0, "{v}");
}

// ---------------------------------------------------------------- help

#[test]
fn generate_help_mentions_every_flag() {
    let args = ["generate", "--help"];
    let o = run_ok(&args);
    let out = stdout(&o);
    for flag in [
        "PROMPT",
        "-m,",
        "--model",
        "-n,",
        "--max-tokens",
        "--temperature",
        "--top-k",
        "--top-p",
        "--seed",
        "--ignore-eos",
        "--mode",
        "vram",
        "sram",
        "--format",
        "text",
        "json",
        "--ctx",
        "--chunk",
        "--backend",
        "--adapter",
    ] {
        assert!(
            out.contains(flag),
            "`{flag}` missing from generate --help\n{out}"
        );
    }
}

#[test]
fn top_level_help_and_version() {
    let o = run_ok(&["--help"]);
    let out = stdout(&o);
    for w in ["generate", "info"] {
        assert!(out.contains(w), "`{w}` missing from --help\n{out}");
    }
    let o = run_ok(&["info", "--help"]);
    let out = stdout(&o);
    for w in ["--model", "--format", "--backend", "--adapter"] {
        assert!(out.contains(w), "`{w}` missing from info --help\n{out}");
    }
    let o = run_ok(&["--version"]);
    assert!(stdout(&o).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn several_prompts_decode_together_in_sram_mode() {
    if !have_gpu() {
        return;
    }
    let p2 = "Lily and Ben were best friends. One sunny day, they went to the park to play with a big red ball.";
    let args = [
        "generate",
        "--mode",
        "sram",
        "--chip",
        "mini-64k",
        "-n",
        "32",
        "--temperature",
        "0",
        "--format",
        "json",
        PROMPT,
        p2,
    ];
    let o = run_ok(&args);
    let v = json_out(&args, &o);
    for (i, text) in [PROMPT, p2].iter().enumerate() {
        let r = reference_prompt(text);
        assert_eq!(v["sequences"][i]["prompt_ids"], r["input_ids"]);
        assert_eq!(
            ids_of(&v["sequences"][i], "ids"),
            reference_greedy(text),
            "sequence {i}"
        );
    }
    assert_eq!(v["stats"]["batch"], 2);
    // VRAM mode decodes them together too (one batched step per token).
    let vram: Vec<&str> = args
        .iter()
        .filter(|a| !["--mode", "sram", "--chip", "mini-64k"].contains(a))
        .copied()
        .collect();
    let v = json_out(&vram, &run_ok(&vram));
    for (i, text) in [PROMPT, p2].iter().enumerate() {
        assert_eq!(
            ids_of(&v["sequences"][i], "ids"),
            reference_greedy(text),
            "vram sequence {i}"
        );
    }
    assert_eq!(v["stats"]["mode"], "vram");
}

// ---------------------------------------------------------------- embedded model

/// The default model is compiled in: a copy of the binary run from a
/// directory with no models/ folder (and HOME elsewhere) still generates the
/// reference text.
#[test]
fn embedded_model_works_away_from_the_source_tree() {
    if !have_gpu() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sramlm-embedded-{}", std::process::id()));
    let home = dir.join("home");
    let run = dir.join("run");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let bin = run.join("sramlm");
    std::fs::copy(env!("CARGO_BIN_EXE_sramlm"), &bin).unwrap();
    let args = [
        "generate",
        "--format",
        "json",
        "-n",
        "32",
        "--temperature",
        "0",
        PROMPT,
    ];
    let o = Command::new(&bin)
        .args(args)
        .current_dir(&run)
        .env("HOME", &home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    check_ok(&args, &o);
    let v = json_out(&args, &o);
    assert_eq!(ids_of(&v, "prompt_ids"), PROMPT_IDS);
    assert_eq!(ids_of(&v, "ids"), reference_greedy(PROMPT));
}

#[test]
fn embedded_model_equals_the_folder() {
    let e = sramlm::model::load_embedded().unwrap();
    let f = sramlm::model::load(&crate_dir().join("models/stories260K")).unwrap();
    assert_eq!(e.name, "stories260K");
    assert_eq!(e.config.vocab_size, f.config.vocab_size);
    assert_eq!(e.config.num_layers, f.config.num_layers);
    for w in sramlm::model::WeightName::all(&f.config) {
        let (a, b) = (e.weights.get(w), f.weights.get(w));
        assert_eq!(a.is_some(), b.is_some(), "{w:?}");
        if let (Some(a), Some(b)) = (a, b) {
            assert_eq!(a.shape, b.shape, "{w:?}");
            assert_eq!(a.bytes.as_slice(), b.bytes.as_slice(), "{w:?}");
        }
    }
    assert_eq!(
        e.tokenizer.encode(PROMPT).unwrap(),
        f.tokenizer.encode(PROMPT).unwrap()
    );
}

// ---------------------------------------------------------------- flags people type

fn run_fail(args: &[&str]) -> String {
    let o = sramlm_cmd(args).output().unwrap();
    assert!(!o.status.success(), "expected failure\n{}", show(args, &o));
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// llama.cpp's spellings give the same ids as sramlm's own.
#[test]
fn llama_cpp_style_flags_mean_the_same() {
    if !have_gpu() {
        return;
    }
    let own = gen_json(&["-n", "12", "--temperature", "0", "--ctx", "64", PROMPT]);
    let dir = std::env::temp_dir().join(format!("sramlm-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prompt.txt");
    std::fs::write(&file, format!("{PROMPT}\n")).unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["-n", "12", "--temp", "0", "-c", "64", "-p", PROMPT],
        vec![
            "--n-predict",
            "12",
            "--temp",
            "0",
            "--ctx-size",
            "64",
            "--prompt",
            PROMPT,
        ],
        vec!["-n", "12", "--temp", "0", "-c", "64", "-f", file],
        // -ngl is accepted (with a note) instead of parsing as `-n gl`.
        vec!["-ngl", "99", "-n", "12", "--temp", "0", "-c", "64", PROMPT],
        // Penalties at their neutral values change nothing.
        vec![
            "-n",
            "12",
            "--temp",
            "0",
            "-c",
            "64",
            "--repeat-penalty",
            "1",
            "--min-p",
            "0",
            PROMPT,
        ],
    ] {
        let v = gen_json(&args);
        assert_eq!(v["ids"], own["ids"], "{args:?}");
        assert_eq!(ids_of(&v, "prompt_ids"), PROMPT_IDS, "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let o = run_ok(&["generate", "-ngl", "99", "-n", "2", PROMPT]);
    assert!(stderr(&o).contains("-ngl ignored"), "{}", stderr(&o));
    let e = run_fail(&["generate", "-p", PROMPT, PROMPT]);
    assert!(e.contains("give the prompt once"), "{e}");
    let e = run_fail(&["generate", "-f", "/nonexistent/prompt.txt"]);
    assert!(e.contains("cannot read the prompt file"), "{e}");
    let e = run_fail(&["generate", "--repeat-penalty", "0", PROMPT]);
    assert!(e.contains("--repeat-penalty"), "{e}");
}

#[test]
fn chip_implies_sram_mode_and_vram_with_a_chip_is_refused() {
    if !have_gpu() {
        return;
    }
    let o = run_ok(&[
        "generate", "--chip", "mini-64k", "-n", "4", "--temp", "0", "--format", "json", PROMPT,
    ]);
    assert!(stderr(&o).contains("implies --mode sram"), "{}", stderr(&o));
    let v = json_out(&[], &o);
    assert_eq!(v["stats"]["mode"], "sram");
    assert_eq!(ids_of(&v, "ids"), reference_greedy(PROMPT)[..4]);
    let e = run_fail(&["generate", "--mode", "vram", "--chip", "mini-64k", PROMPT]);
    assert!(e.contains("--mode sram"), "{e}");
}

#[test]
fn chips_lists_presets_and_spec_files() {
    let o = run_ok(&["chips"]);
    let out = stdout(&o);
    for name in [
        "groq-v1",
        "mini-64k",
        "mini-4m",
        "sram-1g",
        "models/chips/sram-1g.json",
    ] {
        assert!(out.contains(name), "{name} missing\n{out}");
    }
    assert!(
        out.contains("64.0 KiB") && out.contains("16.0 KiB"),
        "{out}"
    );
    let o = run_ok(&["chips", "--format", "json"]);
    let v = json_out(&["chips"], &o);
    let chips = v["chips"].as_array().unwrap();
    let mini = chips.iter().find(|c| c["name"] == "mini-64k").unwrap();
    assert_eq!(mini["sram_bytes"], 65536);
    assert_eq!(mini["slices_per_chip"], 4);
    for l in out.lines() {
        assert!(l.chars().count() <= 100, "{l}");
    }
}

#[test]
fn every_subcommand_help_has_examples_and_plan_fits_100_columns() {
    for sub in ["generate", "chat", "info", "plan", "bench", "chips"] {
        let o = run_ok(&[sub, "--help"]);
        let out = stdout(&o);
        assert!(out.contains("Examples:"), "{sub} --help\n{out}");
        assert!(
            out.contains(&format!("sramlm {sub}")),
            "{sub} --help\n{out}"
        );
    }
    let o = run_ok(&["generate", "--help"]);
    for flag in [
        "--temp",
        "--ctx-size",
        "-p, --prompt",
        "-f, --file",
        "--repeat-penalty",
        "--presence-penalty",
        "--frequency-penalty",
        "--min-p",
        "--stop",
        "-i, --interactive",
    ] {
        assert!(stdout(&o).contains(flag), "{flag}\n{}", stdout(&o));
    }
    let o = run_ok(&["plan", "--chip", "mini-64k"]);
    let out = stdout(&o);
    for l in out.lines() {
        assert!(l.chars().count() <= 100, "{l}");
    }
    let wide = stdout(&run_ok(&["plan", "--chip", "mini-64k", "--wide"]));
    assert!(wide.lines().any(|l| l.chars().count() > 100));
}

#[test]
fn one_and_several_prompts_print_the_continuation_only() {
    if !have_gpu() {
        return;
    }
    let one = stdout(&run_ok(&[
        "generate", "--chip", "mini-64k", "-n", "6", "--temp", "0", PROMPT,
    ]));
    let two = stdout(&run_ok(&[
        "generate",
        "--chip",
        "mini-64k",
        "-n",
        "6",
        "--temp",
        "0",
        PROMPT,
        "Tom had a dog",
    ]));
    let first = two.lines().next().unwrap();
    assert_eq!(first, format!("[0] {}", one.trim_end()), "{two}");
    assert!(
        !one.contains(PROMPT) && !first.contains(PROMPT),
        "{one}\n{two}"
    );
}

#[test]
fn no_matching_adapter_names_each_backend() {
    if !have_gpu() {
        return;
    }
    let e = run_fail(&[
        "generate",
        "--adapter",
        "no-such-adapter-xyz",
        "-n",
        "1",
        PROMPT,
    ]);
    assert!(e.contains("available:"), "{e}");
    assert!(
        ["(Vulkan)", "(Gl)", "(Metal)", "(Dx12)"]
            .iter()
            .any(|b| e.contains(b)),
        "{e}"
    );
}
