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
