//! `sramlm serve` with real clients: the binary on port 0 (loopback only),
//! curl for the HTTP side (non-streaming and streaming, concurrent streams,
//! a client that disconnects mid-stream, a full queue) and the `openai`
//! Python package for streamed chat completions of 4 concurrent users. Every
//! answer must equal the prompt's solo greedy run.

use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::generate::{generate, GenerateOptions};
use sramlm::model::{self, Model};
use sramlm::sampling::SamplingOptions;
use sramlm::testing::gpu;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROMPTS: [&str; 4] = [
    "Once upon a time",
    "The little dog ran to the park and saw",
    "Lily and Tom",
    "One day, a girl named Sue went to the shop with her mom. She",
];

/// A running `sramlm serve`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sramlm"))
            .arg("serve")
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sramlm serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("no `listening on http://127.0.0.1:PORT` line, got {line:?}")
            });
        Server { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// curl: (HTTP status, body).
    fn curl(&self, path: &str, body: Option<&serde_json::Value>) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-N", "--max-time", "300", "-w", "\n%{http_code}"]);
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
        }
        let o = c.arg(self.url(path)).output().expect("curl runs");
        let out = String::from_utf8(o.stdout).unwrap();
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn json(&self, path: &str, body: Option<&serde_json::Value>) -> (u16, serde_json::Value) {
        let (code, b) = self.curl(path, body);
        let v = serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: {e}: {b}"));
        (code, v)
    }

    fn health(&self) -> serde_json::Value {
        self.json("/health", None).1
    }

    /// Waits (up to a minute) until `/health` satisfies `ok`.
    fn wait_health(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
        let t = Instant::now();
        loop {
            let h = self.health();
            if ok(&h) {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{what}: {h}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of a streamed response: the `data:` chunks' content, checking
/// the stream ends with `data: [DONE]`. Also returns the finish reason.
fn sse_text(body: &str, chat: bool) -> (String, String) {
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "stream end: {body}");
    let mut text = String::new();
    let mut finish = String::new();
    for d in &data[..data.len() - 1] {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        let c = &v["choices"][0];
        let piece = if chat {
            &c["delta"]["content"]
        } else {
            &c["text"]
        };
        text.push_str(piece.as_str().unwrap_or(""));
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish)
}

/// Each prompt's solo greedy run (`n` tokens at most), in this process.
fn solo_texts(m: &Model, prompts: &[&str], n: usize) -> Vec<String> {
    solo_texts_with(m, prompts, n, 0.0, 0.0)
}

/// As `solo_texts`, with OpenAI presence and frequency penalties.
fn solo_texts_with(
    m: &Model,
    prompts: &[&str],
    n: usize,
    presence_penalty: f32,
    frequency_penalty: f32,
) -> Vec<String> {
    let gpu = gpu().unwrap();
    let mut exec = VramExecutor::new(
        gpu,
        &m.config,
        &m.weights,
        &VramOptions {
            context: Some(256),
            ..VramOptions::default()
        },
    )
    .unwrap();
    let opts = GenerateOptions {
        max_tokens: n,
        sampling: SamplingOptions {
            temperature: 0.0,
            presence_penalty,
            frequency_penalty,
            ..SamplingOptions::default()
        },
        ignore_eos: false,
        ..Default::default()
    };
    prompts
        .iter()
        .map(|p| {
            let ids = m.tokenizer.encode(p).unwrap();
            generate(&mut exec, &m.tokenizer, &m.config, &ids, &opts, |_| {})
                .unwrap()
                .text
        })
        .collect()
}

fn completion(prompt: &str, n: usize, stream: bool) -> serde_json::Value {
    serde_json::json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": stream})
}

#[test]
fn completions_streamed_or_not_and_concurrent_equal_solo_runs() {
    if gpu().is_none() {
        return;
    }
    let m = model::load(&model::default_model_path()).unwrap();
    let n = 40;
    let want = solo_texts(&m, &PROMPTS, n);
    let s = Server::start(&["--parallel", "4", "--ctx", "256"]);

    let (code, v) = s.json("/v1/models", None);
    assert_eq!(code, 200);
    assert_eq!(v["data"][0]["id"], "stories260K");
    assert_eq!(s.health()["status"], "ok");

    // Non-streaming, with usage.
    let (code, v) = s.json("/v1/completions", Some(&completion(PROMPTS[0], n, false)));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], want[0].as_str());
    let prompt_tokens = m.tokenizer.encode(PROMPTS[0]).unwrap().len();
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    let c = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(c >= 1 && c <= n as u64);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens as u64 + c);

    // Presence and frequency penalties: the solo run with the same
    // penalties, and not the unpenalised text.
    let pen = solo_texts_with(&m, &PROMPTS[..1], n, 1.5, 0.5);
    assert_ne!(pen[0], want[0], "the penalties change this text");
    let mut req = completion(PROMPTS[0], n, false);
    req["presence_penalty"] = 1.5.into();
    req["frequency_penalty"] = 0.5.into();
    let (code, v) = s.json("/v1/completions", Some(&req));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], pen[0].as_str());
    req["presence_penalty"] = 3.into();
    let (code, v) = s.json("/v1/completions", Some(&req));
    assert_eq!(code, 400, "{v}");

    // Streaming.
    let (code, body) = s.curl("/v1/completions", Some(&completion(PROMPTS[1], n, true)));
    assert_eq!(code, 200, "{body}");
    let (text, finish) = sse_text(&body, false);
    assert_eq!(text, want[1]);
    assert!(finish == "length" || finish == "stop", "{finish}");

    // 4 concurrent streams (chat endpoint; stories260K has no template, so
    // the message is the prompt), each equal to its solo run.
    let steps_before = s.health()["batched_steps"].as_u64().unwrap();
    let texts: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = PROMPTS
            .iter()
            .map(|p| {
                let s = &s;
                sc.spawn(move || {
                    let body = serde_json::json!({
                        "messages": [{"role": "user", "content": p}],
                        "max_tokens": n, "temperature": 0, "stream": true,
                    });
                    let (code, b) = s.curl("/v1/chat/completions", Some(&body));
                    assert_eq!(code, 200, "{b}");
                    assert!(b.contains("chat.completion.chunk"), "{b}");
                    sse_text(&b, true).0
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(t, &want[i], "concurrent stream {i}");
    }
    let h = s.health();
    assert!(
        h["max_rows_per_step"].as_u64().unwrap() >= 2,
        "requests were decoded together: {h}"
    );
    assert!(h["batched_steps"].as_u64().unwrap() > steps_before);

    // A stop string cuts the text before it.
    let word = " Lily";
    if let Some(cut) = want[0].find(word) {
        let mut body = completion(PROMPTS[0], n, false);
        body["stop"] = serde_json::json!([word, "zzzz"]);
        let (code, v) = s.json("/v1/completions", Some(&body));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["choices"][0]["text"], &want[0][..cut]);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    // Bad requests: a JSON error each, and the server goes on.
    let long = "a ".repeat(400);
    for (body, code, what) in [
        (
            serde_json::json!({"prompt": long, "max_tokens": 4}),
            400,
            "context",
        ),
        (
            serde_json::json!({"prompt": "x", "temperature": 5}),
            400,
            "temperature",
        ),
        (
            serde_json::json!({"prompt": "x", "max_tokens": 0}),
            400,
            "max_tokens",
        ),
        (serde_json::json!({"max_tokens": 4}), 400, "prompt"),
    ] {
        let (c, v) = s.json("/v1/completions", Some(&body));
        assert_eq!(c, code, "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(what), "{msg}");
    }
    let (c, v) = s.json(
        "/v1/chat/completions",
        Some(&serde_json::json!({"messages": "hi"})),
    );
    assert_eq!(c, 400, "{v}");
    let o = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-d", "{not json"])
        .arg(s.url("/v1/completions"))
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.ends_with("\n400") && out.contains("not valid JSON"),
        "{out}"
    );
    let (c, _) = s.json("/v1/nothing", None);
    assert_eq!(c, 404);
    let (code, v) = s.json("/v1/completions", Some(&completion(PROMPTS[2], n, false)));
    assert_eq!(code, 200);
    assert_eq!(v["choices"][0]["text"], want[2].as_str());
}

#[test]
fn disconnect_frees_its_sequence_and_a_full_queue_is_refused() {
    if gpu().is_none() {
        return;
    }
    let m = model::load(&model::default_model_path()).unwrap();
    let want = solo_texts(&m, &PROMPTS[..1], 20);
    // One sequence, one waiting request.
    let s = Server::start(&["--parallel", "1", "--queue", "1", "--ctx", "512"]);
    // A: a long stream; read its first chunk, so it holds the sequence.
    let body = serde_json::json!({
        "prompt": PROMPTS[1], "max_tokens": 500, "temperature": 0,
        "stream": true, "ignore_eos": true,
    });
    let mut a = Command::new("curl")
        .args(["-sS", "-N", "-H", "Content-Type: application/json", "-d"])
        .arg(body.to_string())
        .arg(s.url("/v1/completions"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 6];
    a.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"data: ");
    s.wait_health("A decoding", |h| h["active"] == 1);
    // B waits in the queue.
    let b = std::thread::scope(|sc| {
        let hb = sc.spawn(|| s.json("/v1/completions", Some(&completion(PROMPTS[0], 20, false))));
        s.wait_health("B queued", |h| h["queued"] == 1);
        // C: the queue is full.
        let (code, v) = s.json("/v1/completions", Some(&completion(PROMPTS[2], 4, false)));
        assert_eq!(code, 429, "{v}");
        assert_eq!(v["error"]["code"], "queue_full");
        assert!(v["error"]["message"].as_str().unwrap().contains("busy"));
        // A goes away mid-stream: its sequence is freed, B gets it.
        a.kill().unwrap();
        a.wait().unwrap();
        hb.join().unwrap()
    });
    assert_eq!(b.0, 200, "{}", b.1);
    assert_eq!(b.1["choices"][0]["text"], want[0].as_str());
    s.wait_health("A cancelled, B completed", |h| {
        h["cancelled"] == 1 && h["active"] == 0 && h["queued"] == 0
    });
    let h = s.health();
    assert!(h["completed"].as_u64().unwrap() >= 1, "{h}");
}

fn python() -> Option<String> {
    let py = std::env::var("SRAMLM_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import openai"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{py} cannot import openai: .ci/install-deps.sh installs it (pip install openai)");
    }
    eprintln!("SKIPPED: {py} has no `openai` package (set SRAMLM_PYTHON)");
    None
}

#[test]
fn openai_client_streams_four_concurrent_chats_each_equal_to_its_solo_run() {
    if gpu().is_none() {
        return;
    }
    let Some(py) = python() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gguf = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let (model_args, messages, n): (Vec<String>, [&str; 4], usize) = if gguf.exists() {
        (
            vec!["-m".into(), gguf.display().to_string()],
            [
                "What is the capital of France?",
                "Write a haiku about the sea.",
                "Name three colours.",
                "How many legs does a spider have?",
            ],
            20,
        )
    } else if std::env::var_os("CI").is_some() {
        panic!("{} is missing: run models/get-smollm2.sh", gguf.display());
    } else {
        eprintln!("note: SmolLM2 GGUF missing; using the embedded stories260K");
        (vec![], PROMPTS, 32)
    };
    // Solo greedy runs: `sramlm generate --chat`, one at a time.
    let want: Vec<String> = messages
        .iter()
        .map(|msg| {
            let o = Command::new(env!("CARGO_BIN_EXE_sramlm"))
                .arg("generate")
                .args(&model_args)
                .args(["--temperature", "0", "--ctx", "512", "--format", "json"])
                .args(["-n", &n.to_string()])
                .args(if gguf.exists() {
                    &["--chat"][..]
                } else {
                    &[][..]
                })
                .arg(msg)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    let mut args: Vec<&str> = model_args.iter().map(|s| s.as_str()).collect();
    args.extend(["--parallel", "4", "--ctx", "512"]);
    let s = Server::start(&args);
    let script: PathBuf = root.join("tests/clients/openai_chat.py");
    let n_s = n.to_string();
    let o = Command::new(&py)
        .arg(&script)
        .arg(s.url("/v1"))
        .arg(&n_s)
        .args(messages)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openai client failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got.len(), 4);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g["text"], want[i].as_str(), "user {i}: {}", messages[i]);
        assert!(g["chunks"].as_u64().unwrap() >= 1);
        assert!(["stop", "length"].contains(&g["finish_reason"].as_str().unwrap()));
    }
    let h = s.health();
    assert!(h["max_rows_per_step"].as_u64().unwrap() >= 2, "{h}");
    assert_eq!(h["completed"], 4);
}

/// A copy of stories260K whose final norm holds a NaN: every logit row is
/// NaN. Returns the folder (removed by the caller).
fn nan_model() -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/stories260K");
    let dir = std::env::temp_dir().join(format!("sramlm-serve-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header["model.norm.weight"];
    assert_eq!(t["dtype"], "F32");
    let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize + 12;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    dir
}

#[test]
fn nan_logits_are_an_error_not_a_token() {
    if gpu().is_none() {
        return;
    }
    let dir = nan_model();
    let s = Server::start(&["-m", dir.to_str().unwrap(), "--parallel", "2"]);
    for (temperature, presence) in [(0.0, 0.0), (0.8, 0.0), (0.0, 1.0)] {
        let req = serde_json::json!({"prompt": PROMPTS[0], "max_tokens": 4,
            "temperature": temperature, "presence_penalty": presence});
        let (code, v) = s.json("/v1/completions", Some(&req));
        assert_eq!(code, 500, "temperature {temperature}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("NaN or infinite logits"), "{v}");
    }
    // The server is still up for the next request.
    assert_eq!(s.health()["status"], "ok");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sram_mode_serves_the_same_text() {
    if gpu().is_none() {
        return;
    }
    let m = model::load(&model::default_model_path()).unwrap();
    let n = 20;
    let want = solo_texts(&m, &PROMPTS[..2], n);
    let s = Server::start(&["--chip", "mini-64k", "--ctx", "128"]);
    assert_eq!(s.health()["status"], "ok");
    for (p, w) in PROMPTS[..2].iter().zip(&want) {
        let (code, v) = s.json("/v1/completions", Some(&completion(p, n, false)));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["choices"][0]["text"], w.as_str(), "{p}");
    }
}
