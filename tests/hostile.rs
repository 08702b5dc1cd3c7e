//! Hostile and broken input to the `sramlm` binary, built on the fly: every
//! case must end with a clear one-line error (or correct output) within a
//! bounded time and memory, never a panic, a hang, a silent wrong answer or a
//! destroyed file. Each process runs under a watchdog (a hang fails the test
//! instead of stalling CI); cases about memory also sample the child's peak
//! resident memory from /proc. See docs/limits.md for the limits themselves.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A hang guard, not a performance bound: far above what any case needs.
const WATCHDOG: Duration = Duration::from_secs(180);

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stories_dir() -> PathBuf {
    crate_dir().join("models/stories260K")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "sramlm-hostile-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

fn edit_json(p: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// What a finished run left behind.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// Peak resident memory seen while it ran (Linux), bytes.
    peak_rss: u64,
    show: String,
}

fn rss_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `sramlm ARGS` with stdin from `stdin`, under the watchdog, sampling
/// its resident memory. A run past the watchdog is killed and fails the test.
fn run_with(args: &[&str], stdin: Stdio, stdout: Stdio) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args(args)
        .current_dir(crate_dir())
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sramlm binary runs");
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let mut peak = 0;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if let Some(r) = rss_of(child.id()) {
            peak = peak.max(r);
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sramlm {args:?} hangs: still running after {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    let show = format!(
        "sramlm {args:?}\nstatus: {status:?}\n--- stdout\n{}\n--- stderr\n{stderr}",
        stdout.chars().take(2000).collect::<String>()
    );
    Run {
        status,
        stdout,
        stderr,
        peak_rss: peak,
        show,
    }
}

fn run(args: &[&str]) -> Run {
    run_with(args, Stdio::null(), Stdio::piped())
}

fn assert_no_panic(r: &Run) {
    assert!(!r.stderr.contains("panicked"), "panicked\n{}", r.show);
    assert!(!r.stderr.contains("RUST_BACKTRACE"), "panicked\n{}", r.show);
}

/// A clean failure: exit status 1, no panic, one `error:` line naming every word.
fn expect_error(args: &[&str], words: &[&str]) -> Run {
    let r = run(args);
    assert_no_panic(&r);
    assert_eq!(r.status.code(), Some(1), "expected exit 1\n{}", r.show);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no `error:` line\n{}", r.show));
    let lower = line.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "the error does not mention `{w}`\n{}",
            r.show
        );
    }
    r
}

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

/// A safetensors file from (name, dtype, shape, bytes).
fn write_safetensors(path: &Path, tensors: &[(String, String, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape,
                "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// The stories260K tensors as (name, dtype, shape, bytes), in file order.
fn stories_tensors() -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(stories_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                format!("{:?}", t.dtype()),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

// ------------------------------------------------------------------ stdout

#[test]
fn closed_stdout_ends_generation_quietly() {
    if !have_gpu() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args([
            "generate",
            "-n",
            "400",
            "--ctx",
            "512",
            "--temperature",
            "0",
            "--ignore-eos",
            "Once upon a time",
        ])
        .current_dir(crate_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first bytes, then go away like `head -c 8`.
    let mut first = [0u8; 8];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < WATCHDOG,
            "still generating after stdout closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(13),
        "status {status:?}\n{err}"
    );
}

#[test]
fn full_disk_on_stdout_is_one_line() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    let r = run_with(
        &["plan", "--chip", "mini-64k"],
        Stdio::null(),
        Stdio::from(full),
    );
    assert_no_panic(&r);
    assert_eq!(r.status.code(), Some(1), "{}", r.show);
    assert!(
        r.stderr.contains("cannot write to standard output"),
        "{}",
        r.show
    );
}

// -------------------------------------------------------------- plan --ctx

#[test]
fn plan_ctx_beyond_the_window_is_refused() {
    for ctx in [
        "1099511627776",
        "576460752303423488",
        "1000000000",
        "10000000",
    ] {
        expect_error(&["plan", "--ctx", ctx], &["--ctx", "context window"]);
    }
}

#[test]
fn plan_of_a_huge_window_is_refused_before_placing() {
    let d = TempDir::new("bigwin");
    let cfg = d.file("config.json");
    std::fs::copy(crate_dir().join("models/configs/llama-2-70b.json"), &cfg).unwrap();
    edit_json(&cfg, |v| {
        v["max_position_embeddings"] = serde_json::json!(4194304)
    });
    let r = expect_error(
        &[
            "plan",
            "--config",
            cfg.to_str().unwrap(),
            "--ctx",
            "4194304",
        ],
        &["lower --ctx"],
    );
    assert!(r.peak_rss < 1 << 30, "{} bytes\n{}", r.peak_rss, r.show);
    expect_error(
        &[
            "plan",
            "--config",
            cfg.to_str().unwrap(),
            "--ctx",
            "4096",
            "--batch",
            "100000000",
        ],
        &["lower --ctx or --batch"],
    );
}

#[test]
fn huge_microbatch_names_the_flag() {
    if !have_gpu() {
        return;
    }
    expect_error(
        &[
            "generate",
            "--mode",
            "sram",
            "--chip",
            "mini-64k",
            "--microbatch",
            "18446744073709551615",
            "-n",
            "2",
            "Hi",
        ],
        &["--microbatch"],
    );
}

// ----------------------------------------------------------- chat templates

fn with_template(tag: &str, template: &str) -> TempDir {
    let d = stories_copy(tag);
    std::fs::write(
        d.file("tokenizer_config.json"),
        serde_json::to_vec(&serde_json::json!({ "chat_template": template })).unwrap(),
    )
    .unwrap();
    d
}

#[test]
fn chat_templates_are_bounded() {
    if !have_gpu() {
        return;
    }
    for (tag, t, words) in [
        (
            "loops",
            "{% for a in range(100000) %}{% for b in range(100000) %}{{ a ~ b }}{% endfor %}{% endfor %}",
            &["template", "without bound"][..],
        ),
        (
            "recursion",
            "{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}",
            &["template", "recursion"][..],
        ),
        (
            "bigtext",
            "{% set x = 'a' * 50000000 %}{{ x }}{{ x }}",
            &["template", "bytes"][..],
        ),
    ] {
        let d = with_template(tag, t);
        let r = expect_error(&["generate", "-m", d.arg(), "--chat", "-n", "2", "hi"], words);
        assert!(r.peak_rss < 2 << 30, "{tag}: {} bytes\n{}", r.peak_rss, r.show);
    }
}

// -------------------------------------------------------------- file kinds

#[test]
fn fifos_are_refused_naming_the_path() {
    let d = TempDir::new("fifo");
    for name in ["m.gguf", "chip.json", "config.json", "x"] {
        let st = Command::new("mkfifo").arg(d.file(name)).status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!("no mkfifo: skipping");
            return;
        }
    }
    let m = d.file("m.gguf");
    expect_error(
        &["plan", "-m", m.to_str().unwrap()],
        &["m.gguf", "not a regular file"],
    );
    let x = d.file("x");
    expect_error(
        &["plan", "-m", x.to_str().unwrap()],
        &["not a regular file"],
    );
    let c = d.file("chip.json");
    expect_error(
        &["plan", "--chip", c.to_str().unwrap()],
        &["chip.json", "not a regular file"],
    );
    let cfg = d.file("config.json");
    expect_error(
        &["plan", "--config", cfg.to_str().unwrap()],
        &["config.json", "not a regular file"],
    );
    // A model folder whose config.json is a FIFO.
    let f = stories_copy("fifo-in-folder");
    std::fs::remove_file(f.file("config.json")).unwrap();
    Command::new("mkfifo")
        .arg(f.file("config.json"))
        .status()
        .unwrap();
    expect_error(
        &["plan", "-m", f.arg()],
        &["config.json", "not a regular file"],
    );
}

#[test]
fn weights_file_that_is_a_directory() {
    let d = stories_copy("stdir");
    std::fs::remove_file(d.file("model.safetensors")).unwrap();
    std::fs::create_dir(d.file("model.safetensors")).unwrap();
    expect_error(
        &["plan", "-m", d.arg()],
        &["model.safetensors", "is a directory"],
    );
}

// ------------------------------------------------------- consistency at load

#[test]
fn config_with_fewer_layers_than_the_file_is_refused() {
    let d = stories_copy("fewer");
    edit_json(&d.file("config.json"), |v| {
        let n = v["num_hidden_layers"].as_u64().unwrap();
        v["num_hidden_layers"] = serde_json::json!(n - 1);
    });
    expect_error(
        &["plan", "-m", d.arg()],
        &["model.layers.", "not used by the config"],
    );
}

#[test]
fn tensor_duplicated_across_shards_is_refused() {
    let d = stories_copy("shards");
    std::fs::remove_file(d.file("model.safetensors")).unwrap();
    let all = stories_tensors();
    let (a, b) = all.split_at(all.len() / 2);
    let mut b = b.to_vec();
    // A shard the index does not name for it also holds a tensor of shard 1,
    // with other values.
    let mut dup = a[0].clone();
    dup.3.iter_mut().for_each(|x| *x = 0);
    b.push(dup.clone());
    write_safetensors(&d.file("model-00001-of-00002.safetensors"), a);
    write_safetensors(&d.file("model-00002-of-00002.safetensors"), &b);
    let mut map = serde_json::Map::new();
    for t in a {
        map.insert(t.0.clone(), "model-00001-of-00002.safetensors".into());
    }
    for t in &b[..b.len() - 1] {
        map.insert(t.0.clone(), "model-00002-of-00002.safetensors".into());
    }
    std::fs::write(
        d.file("model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({ "weight_map": map })).unwrap(),
    )
    .unwrap();
    expect_error(&["plan", "-m", d.arg()], &[&dup.0, "appears in both"]);
}

#[test]
fn special_token_ids_out_of_range_are_refused() {
    for (key, v) in [
        ("eos_token_id", serde_json::json!(4294967298u64)),
        ("eos_token_id", serde_json::json!([2, 4294967296u64])),
        ("bos_token_id", serde_json::json!(4294967297u64)),
    ] {
        let d = stories_copy("bigid");
        edit_json(&d.file("config.json"), |c| c[key] = v.clone());
        expect_error(&["plan", "-m", d.arg()], &[key, "2^32"]);
    }
    // An id inside the model's vocabulary but not in tokenizer.json.
    let d = stories_copy("tokid");
    edit_json(&d.file("tokenizer.json"), |t| {
        let vocab = t["model"]["vocab"].as_object_mut().unwrap();
        let last = vocab
            .iter()
            .find(|(_, id)| id.as_u64() == Some(511))
            .map(|(k, _)| k.clone())
            .unwrap();
        vocab.remove(&last);
        t["model"]["merges"] = serde_json::json!([]);
    });
    edit_json(&d.file("config.json"), |c| {
        c["eos_token_id"] = serde_json::json!(511)
    });
    expect_error(
        &["plan", "-m", d.arg()],
        &["eos_token_id 511", "tokenizer.json"],
    );
}

#[test]
fn gguf_metadata_count_one_short_names_the_metadata() {
    use sramlm::model::gguf::{GgufValue, GgufWriter};
    let d = TempDir::new("gguf-short");
    let bytes = GgufWriter::new()
        .kv("general.architecture", GgufValue::String("llama".into()))
        .kv("general.quantization_version", GgufValue::U32(2))
        .tensor("token_embd.weight", &[4, 4], 0, vec![0u8; 64])
        .to_bytes();
    let mut b = bytes.clone();
    let n_kv = u64::from_le_bytes(b[16..24].try_into().unwrap());
    b[16..24].copy_from_slice(&(n_kv - 1).to_le_bytes());
    let p = d.file("short.gguf");
    std::fs::write(&p, b).unwrap();
    expect_error(
        &["plan", "-m", p.to_str().unwrap()],
        &[
            "metadata is truncated or malformed",
            "general.quantization_version",
        ],
    );
}

// ------------------------------------------------------ numerical health

#[test]
fn nan_weights_are_reported_not_sampled() {
    if !have_gpu() {
        return;
    }
    let d = stories_copy("nan");
    let mut all = stories_tensors();
    for t in &mut all {
        if t.0 == "model.norm.weight" {
            t.3[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    }
    write_safetensors(&d.file("model.safetensors"), &all);
    for extra in [
        &["--temperature", "0"][..],
        &["--temperature", "0.8"][..],
        &["--temperature", "0.8", "--top-k", "0"][..],
        &["--temperature", "0", "--mode", "sram", "--chip", "mini-64k"][..],
    ] {
        let mut args = vec!["generate", "-m", d.arg(), "-n", "4"];
        args.extend_from_slice(extra);
        args.push("Once upon a time");
        expect_error(&args, &["NaN", "logits at position"]);
    }
}

// ---------------------------------------------------------- context limits

#[test]
fn generation_cut_by_the_context_says_why() {
    if !have_gpu() {
        return;
    }
    let r = run(&[
        "generate",
        "-n",
        "100",
        "--ctx",
        "16",
        "--temperature",
        "0",
        "--ignore-eos",
        "Once upon a time",
    ]);
    assert_no_panic(&r);
    assert!(r.status.success(), "{}", r.show);
    assert!(
        r.stderr.contains("context window of 16 tokens is full") && r.stderr.contains("--ctx"),
        "{}",
        r.show
    );
}

// ------------------------------------------------------------ output files

#[test]
fn bench_never_overwrites_inputs_and_checks_outputs_first() {
    let d = stories_copy("bench");
    let model = d.file("model.safetensors");
    let before = std::fs::read(&model).unwrap();
    let base = [
        "bench",
        "-m",
        d.arg(),
        "--modes",
        "vram",
        "--gen",
        "2",
        "--repeat",
        "1",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            with(&["--json", model.to_str().unwrap()]),
            vec!["input", "refusing"],
        ),
        (
            with(&["--svg", d.file("config.json").to_str().unwrap()]),
            vec!["input", "refusing"],
        ),
        (
            with(&[
                "--json",
                d.file("o").to_str().unwrap(),
                "--svg",
                d.file("o").to_str().unwrap(),
            ]),
            vec!["--json and --svg"],
        ),
        (with(&["--json", d.arg()]), vec!["is a directory"]),
        (
            with(&["--svg", d.file("no/such/dir/x.svg").to_str().unwrap()]),
            vec!["--svg", "not usable"],
        ),
    ];
    // A symlink to the model is refused as well.
    let link = d.file("link.json");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    let mut cases = cases;
    cases.push((with(&["--json", link.to_str().unwrap()]), vec!["input"]));
    for (args, words) in cases {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let r = expect_error(&a, &words);
        // Refused before any work: no adapter was opened.
        assert!(!r.stderr.contains("adapter:"), "{}", r.show);
    }
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "the model file changed"
    );
}

// ------------------------------------------------------------ tokenizers

#[test]
fn tokenizer_json_with_a_long_token_and_no_merges_loads_in_bounded_time() {
    let d = stories_copy("longtok");
    edit_json(&d.file("tokenizer.json"), |t| {
        t["model"]["merges"] = serde_json::json!([]);
        let vocab = t["model"]["vocab"].as_object_mut().unwrap();
        let last = vocab
            .iter()
            .find(|(_, id)| id.as_u64() == Some(511))
            .map(|(k, _)| k.clone())
            .unwrap();
        vocab.remove(&last);
        vocab.insert("a".repeat(2 << 20), serde_json::json!(511));
    });
    let r = run(&["plan", "-m", d.arg(), "--chip", "mini-64k"]);
    assert_no_panic(&r);
    assert!(r.peak_rss < 2 << 30, "{} bytes\n{}", r.peak_rss, r.show);
}

/// Added tokens are matched in raw text through an automaton the
/// `tokenizers` crate builds over all of them (~50-70x their bytes): one
/// very long added token, or megabytes of them, are refused by size before
/// it is built, with bounded memory; real added tokens still load.
#[test]
fn tokenizer_json_with_huge_added_tokens_is_refused_by_size() {
    let added = |t: &mut serde_json::Value, n: usize, len: usize| {
        let list = t["added_tokens"].as_array_mut().unwrap();
        for i in 0..n {
            list.push(serde_json::json!({"id": 512 + i, "content": format!("{i:08}{}", "x".repeat(len - 8)),
                "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": i % 2 == 0, "special": i % 2 == 1}));
        }
    };
    for (n, len, words) in [
        (
            1,
            1 << 20,
            &["added token", "is 1048576 bytes long", "4096"][..],
        ),
        (1100, 4000, &["added tokens take more than", "in all"][..]),
    ] {
        let d = stories_copy("addedtok");
        edit_json(&d.file("tokenizer.json"), |t| added(t, n, len));
        let r = expect_error(&["info", "-m", d.arg()], words);
        assert!(r.peak_rss < 1 << 30, "{} bytes\n{}", r.peak_rss, r.show);
    }
    // A few real-sized ones pass the size check (and then fail only the
    // vocabulary check: they add ids beyond the model's 512).
    let d = stories_copy("addedok");
    edit_json(&d.file("tokenizer.json"), |t| added(t, 8, 24));
    expect_error(&["info", "-m", d.arg()], &["tokenizer has 520 tokens"]);
}

// ------------------------------------------------------------ mutations

/// xorshift64*: a fixed, dependency-free stream for reproducible mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `bytes`: flip bytes, overwrite with extremes, truncate or
/// duplicate a range, mostly within the first `hot` bytes (headers).
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, hot: usize) {
    let hot = hot.min(bytes.len()).max(1);
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(hot);
                bytes[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let i = rng.below(hot);
            let v = [0x00u8, 0xff, 0x7f, 0x80, b'9', b'"', b'{', b'-'][rng.below(8)];
            let n = (1 + rng.below(8)).min(bytes.len() - i);
            bytes[i..i + n].iter_mut().for_each(|b| *b = v);
        }
        2 => {
            let n = rng.below(bytes.len());
            bytes.truncate(n);
        }
        3 => {
            let i = rng.below(hot);
            let n = rng.below(64).min(bytes.len() - i);
            let piece = bytes[i..i + n].to_vec();
            let at = rng.below(hot);
            bytes.splice(at..at, piece);
        }
        _ => {
            // A number in JSON or a count in a header, made huge.
            let i = rng.below(hot.saturating_sub(8).max(1));
            let big = [u64::MAX, 1 << 40, 1 << 32, 0][rng.below(4)];
            let end = (i + 8).min(bytes.len());
            bytes[i..end].copy_from_slice(&big.to_le_bytes()[..end - i]);
        }
    }
}

/// A run on a mutated file may fail, but only cleanly: no panic, no signal,
/// no hang (the watchdog), bounded memory.
fn check_mutant(args: &[&str], what: &str) {
    let r = run(args);
    assert_no_panic(&r);
    assert!(
        r.status.code().is_some(),
        "{what}: killed by a signal\n{}",
        r.show
    );
    if !r.status.success() {
        assert!(
            r.stderr.contains("error:"),
            "{what}: no message\n{}",
            r.show
        );
    }
    assert!(
        r.peak_rss < 3 << 30,
        "{what}: {} bytes\n{}",
        r.peak_rss,
        r.show
    );
}

#[test]
fn mutated_model_files_fail_cleanly() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let cases: usize = std::env::var("SRAMLM_MUTATION_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let originals: Vec<(&str, Vec<u8>, usize)> =
        ["model.safetensors", "config.json", "tokenizer.json"]
            .iter()
            .map(|f| {
                let b = std::fs::read(stories_dir().join(f)).unwrap();
                let hot = if *f == "model.safetensors" {
                    8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
                } else {
                    b.len()
                };
                (*f, b, hot)
            })
            .collect();
    let d = stories_copy("mutate");
    for case in 0..cases {
        for (f, orig, hot) in &originals {
            let mut b = orig.clone();
            mutate(&mut rng, &mut b, *hot);
            std::fs::write(d.file(f), &b).unwrap();
            check_mutant(
                &["plan", "-m", d.arg(), "--chip", "mini-64k"],
                &format!("case {case}: {f}"),
            );
            std::fs::write(d.file(f), orig).unwrap();
        }
    }
    // The SmolLM2 GGUF (when fetched): mutate its metadata in a copy.
    let gguf = crate_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let Ok(orig) = std::fs::read(&gguf) else {
        eprintln!("no SmolLM2 GGUF: its mutations are skipped");
        return;
    };
    let p = d.file("m.gguf");
    let hot = 2 << 20; // header, metadata (vocabulary, merges), tensor directory
    for case in 0..cases {
        let mut b = orig.clone();
        mutate(&mut rng, &mut b, hot);
        std::fs::write(&p, &b).unwrap();
        check_mutant(
            &["plan", "-m", p.to_str().unwrap(), "--chip", "groq-v1"],
            &format!("gguf case {case}"),
        );
    }
}

// ------------------------------------------------------------ resource sizing

/// A --ctx within the model's window but beyond what the adapter's largest
/// storage buffer holds for one layer's KV cache is refused up front, naming
/// --ctx and the largest that fits (not a failed `rope.cos_sin` allocation).
#[test]
fn ctx_beyond_the_adapter_names_ctx_and_its_limit() {
    if !have_gpu() {
        return;
    }
    let window = 4_194_304u64; // the largest window a config may declare
    let d = stories_copy("bigctx");
    edit_json(&d.file("config.json"), |c| {
        c["max_position_embeddings"] = window.into();
    });
    // stories260K: 4 KV heads x head_dim 8 x 4 bytes per position and layer.
    let row = 4 * 8 * 4u64;
    let gpu = sramlm::testing::gpu().unwrap();
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    // The largest --ctx that fits leaves a few words for the RoPE table's tail.
    let fits = (limit - 64) / row;
    if fits >= window {
        eprintln!("this adapter holds a {window}-position KV cache; nothing to refuse");
        return;
    }
    let ctx = window.to_string();
    let most = format!("at most {fits}");
    for mode in [&[][..], &["--chip", "mini-64k"], &["--chip", "groq-v1"]] {
        let mut args = vec!["generate", "-m", d.arg(), "--ctx", &ctx, "-n", "2"];
        args.extend_from_slice(mode);
        args.push("Hi");
        let r = expect_error(&args, &["--ctx", "more than this adapter can hold", &most]);
        assert!(r.peak_rss < 1 << 30, "{} bytes\n{}", r.peak_rss, r.show);
    }
}

#[test]
fn kv_cache_is_sized_to_the_run_by_default() {
    if !have_gpu() {
        return;
    }
    let kv = |extra: &[&str]| -> u64 {
        let mut args = vec![
            "generate",
            "-n",
            "4",
            "--temperature",
            "0",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        args.push("Once upon a time");
        let r = run_with(&args, Stdio::null(), Stdio::piped());
        assert!(r.status.success(), "{}", r.show);
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        v["stats"]["kv_cache_bytes_gpu"].as_u64().unwrap()
    };
    let small = kv(&[]);
    let full = kv(&["--ctx", "512"]);
    // prompt + 4 tokens round up to 64 positions; the window is 512.
    assert_eq!(
        small * 8,
        full,
        "default {small} bytes, --ctx 512 {full} bytes"
    );
}

#[test]
fn too_many_prompts_for_one_batch_are_refused() {
    let prompts: Vec<String> = (0..33).map(|i| format!("p{i}")).collect();
    let mut args = vec![
        "generate", "--mode", "sram", "--chip", "mini-64k", "-n", "2",
    ];
    args.extend(prompts.iter().map(|s| s.as_str()));
    expect_error(&args, &["at most 32 sequences"]);
    expect_error(
        &[
            "bench", "--modes", "sram", "--chip", "mini-64k", "--batch", "33",
        ],
        &["--batch 33", "at most 32"],
    );
}

#[test]
fn chat_outgrowing_the_context_says_so() {
    if !have_gpu() {
        return;
    }
    let d = with_template(
        "chatctx",
        "{% for m in messages %}{{ m['content'] }} {% endfor %}",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args([
            "chat",
            "-m",
            d.arg(),
            "--ctx",
            "24",
            "-n",
            "100",
            "--temperature",
            "0",
            "--ignore-eos",
        ])
        .current_dir(crate_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"Once upon a time\nThe end\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // Each cut reply says so and names --ctx; once the history outgrows the
    // context the oldest messages are dropped (said on stderr) and the chat
    // goes on, as llama.cpp's context shift does, ending normally at EOF.
    assert!(err.contains("the reply was cut after"), "{err}");
    assert!(err.contains("(--ctx)"), "{err}");
    assert!(
        err.contains("the conversation outgrew the 24-token context"),
        "{err}"
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
}
