//! `sramlm chat` and `sramlm generate --chat` on SmolLM2-135M-Instruct (its own
//! ChatML template from the GGUF). Needs models/get-smollm2.sh; with `CI` set a
//! missing model fails the test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn model() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing: run models/get-smollm2.sh", p.display());
    }
    eprintln!("SKIPPED: {} missing", p.display());
    None
}

fn sramlm(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn generate_chat_matches_the_reference_prompt_and_answer() {
    let Some(m) = model() else { return };
    let m = m.to_str().unwrap();
    let o = sramlm(
        &[
            "generate",
            "-m",
            m,
            "--chat",
            "--temperature",
            "0",
            "--ctx",
            "512",
            "-n",
            "32",
            "--format",
            "json",
            "What is the capital of France?",
        ],
        "",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/smollm2/SmolLM2-135M-Instruct-Q4_1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let p3 = &reference["prompts"][3];
    assert_eq!(
        v["prompt_ids"], p3["input_ids"],
        "chat template + tokenizer reproduce the reference prompt"
    );
    // Stops at the end of the turn (<|im_end|>), as the reference's first EOS.
    assert_eq!(v["ids"], p3["greedy"]["new_ids_stop_at_eos"]);
    assert!(
        v["text"].as_str().unwrap().contains("Paris"),
        "{}",
        v["text"]
    );
}

#[test]
fn chat_reads_one_turn_per_line_and_keeps_the_conversation() {
    let Some(m) = model() else { return };
    let o = sramlm(
        &[
            "chat",
            "-m",
            m.to_str().unwrap(),
            "--temperature",
            "0",
            "--ctx",
            "1024",
            "-n",
            "40",
        ],
        "What is the capital of France?\nAnd of Germany?\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "one reply per turn: {out:?}");
    assert!(lines[0].contains("Paris"), "{out}");
    assert!(lines[1].contains("Berlin"), "{out}");
}

#[test]
fn chat_with_a_system_message() {
    let Some(m) = model() else { return };
    let o = sramlm(
        &[
            "generate",
            "-m",
            m.to_str().unwrap(),
            "--chat",
            "--system",
            "You answer in one word.",
            "--temperature",
            "0",
            "--ctx",
            "512",
            "-n",
            "8",
            "--format",
            "json",
            "Capital of Italy?",
        ],
        "",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let prompt = v["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("<|im_start|>system\nYou answer in one word.<|im_end|>\n<|im_start|>user\nCapital of Italy?"), "{prompt}");
    assert!(
        !prompt.contains("named SmolLM"),
        "the template's default system prompt is replaced"
    );
    assert!(!v["ids"].as_array().unwrap().is_empty());
}

#[test]
fn chat_without_a_template_is_a_clear_error() {
    let o = sramlm(&["chat"], "hello\n");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no chat template"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

/// The second turn reads only what is new (the cache keeps the first), and
/// its reply equals the one from reading the whole conversation afresh.
#[test]
fn chat_keeps_the_cache_and_replies_as_a_fresh_read_would() {
    use sramlm::chat::{render, Conversation, Message};
    use sramlm::exec::vram::{VramExecutor, VramOptions};
    use sramlm::generate::{generate, GenerateOptions};
    let Some(path) = model() else { return };
    let Some(gpu) = sramlm::testing::gpu() else {
        return;
    };
    let m = sramlm::model::load(&path).unwrap();
    let mut e = VramExecutor::new(
        gpu,
        &m.config,
        &m.weights,
        &VramOptions {
            context: Some(512),
            chunk: sramlm::exec::vram::DEFAULT_CHUNK,
        },
    )
    .unwrap();
    let tmpl = m.chat_template.clone().unwrap();
    let rend = |msgs: &[Message]| render(&tmpl, msgs, true, "", "");
    let opts = GenerateOptions {
        max_tokens: 24,
        sampling: sramlm::sampling::SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        },
        stop_ids: vec![m.tokenizer.token_to_id("<|im_end|>").unwrap()],
        ..Default::default()
    };
    let mut c = Conversation::new(Some("You are concise.".into()));
    let t1 = c
        .turn(
            &mut e,
            &m.tokenizer,
            &m.config,
            &rend,
            "What is the capital of France?",
            &opts,
            |_| {},
        )
        .unwrap();
    assert_eq!(t1.reused_tokens, 0);
    assert!(
        t1.generation.text.contains("Paris"),
        "{}",
        t1.generation.text
    );
    let t2 = c
        .turn(
            &mut e,
            &m.tokenizer,
            &m.config,
            &rend,
            "And of Germany?",
            &opts,
            |_| {},
        )
        .unwrap();
    assert!(
        t2.reused_tokens > t1.prompt_tokens,
        "the first turn and its reply stay in the cache: {} reused of {}",
        t2.reused_tokens,
        t2.prompt_tokens
    );
    assert_eq!(
        t2.generation.stats.prompt_tokens,
        t2.prompt_tokens - t2.reused_tokens,
        "only the new part is prefilled"
    );
    // The whole conversation read afresh gives the same reply.
    let msgs: Vec<Message> = c.messages()[..c.messages().len() - 1].to_vec();
    let ids = m.tokenizer.encode(&rend(&msgs).unwrap()).unwrap();
    assert_eq!(ids.len(), t2.prompt_tokens);
    let fresh = generate(&mut e, &m.tokenizer, &m.config, &ids, &opts, |_| {}).unwrap();
    assert_eq!(fresh.ids, t2.generation.ids);
    assert!(
        t2.generation.text.contains("Berlin"),
        "{}",
        t2.generation.text
    );
}

#[test]
fn chat_trims_the_oldest_turns_when_the_context_is_full() {
    let Some(m) = model() else { return };
    let o = sramlm(
        &[
            "chat",
            "-m",
            m.to_str().unwrap(),
            "--temp",
            "0",
            "-c",
            "64",
            "-n",
            "24",
        ],
        "/help\nWhat is the capital of France?\nAnd of Germany?\nAnd of Italy?\n/reset\nHi\n",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("outgrew the 64-token context"), "{err}");
    assert!(err.contains("/reset"), "/help lists the commands: {err}");
    assert!(err.contains("conversation cleared"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    let replies: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(replies.len(), 4, "one reply per message: {out:?}");
}

/// Interactive chat on a pseudo-terminal: Ctrl-C (SIGINT) while a reply
/// streams stops that reply and returns to the prompt; the next message
/// still gets a reply; Up recalls the previous line (rustyline history);
/// Ctrl-D at the prompt ends the chat with status 0.
#[cfg(unix)]
#[test]
fn chat_ctrl_c_stops_the_reply_and_keeps_the_session() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let Some(m) = model() else { return };
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fresh descriptors into the out-pointers;
    // the other arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: both descriptors were just opened by openpty and are owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args([
            "chat",
            "-m",
            m.to_str().unwrap(),
            "--temp",
            "0",
            "-c",
            "512",
        ])
        .args(["-n", "300", "--ignore-eos"])
        .env("TERM", "xterm")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let pid = child.id();
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = reader.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let mut writer = std::fs::File::from(master);
    let text = |from: usize| String::from_utf8_lossy(&buf.lock().unwrap()[from..]).into_owned();
    let len = || buf.lock().unwrap().len();
    let wait_for = |from: usize, what: &str, secs: u64| -> usize {
        let t = Instant::now();
        loop {
            let s = text(from);
            if let Some(i) = s.find(what) {
                return from + i + what.len();
            }
            if t.elapsed() > Duration::from_secs(secs) {
                // SAFETY: kill with a pid and signal number has no memory effects.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("no {what:?} within {secs} s; the terminal shows {s:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let sigint = || {
        // SAFETY: kill with a valid pid and signal number has no memory effects.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    };

    let mut at = wait_for(0, "> ", 180);
    writer
        .write_all(b"Tell me a long story about a dog.\r")
        .unwrap();
    at = wait_for(at, "Tell me a long story about a dog.", 30);
    // Let the reply stream for a while, then interrupt it.
    let t = Instant::now();
    while len() < at + 40 && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    sigint();
    at = wait_for(at, "(reply stopped)", 60);
    at = wait_for(at, "> ", 30);
    // The session goes on: a second message is answered (and stopped).
    writer.write_all(b"Name a colour.\r").unwrap();
    at = wait_for(at, "Name a colour.", 30);
    let t = Instant::now();
    while len() < at + 20 && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    sigint();
    at = wait_for(at, "(reply stopped)", 60);
    at = wait_for(at, "> ", 30);
    // Up recalls the previous line from the editor's history.
    writer.write_all(b"\x1b[A").unwrap();
    at = wait_for(at, "Name a colour.", 30);
    writer.write_all(b"\x15\x04").unwrap(); // Ctrl-U clears it, Ctrl-D quits.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chat did not end at Ctrl-D: {:?}", text(at));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {:?}", text(0));
    assert!(!text(0).contains("panicked"), "{:?}", text(0));
}
