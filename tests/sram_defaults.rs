//! One set of defaults: `plan`, `generate --mode sram` and `bench` place
//! stories260K on the same number of chips for the same --ctx (their
//! --microbatch defaults are the same constant).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sramlm {args:?}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn plan_generate_and_bench_agree_on_the_chip_count() {
    if sramlm::testing::gpu().is_none() {
        return;
    }
    let plan: serde_json::Value = serde_json::from_slice(
        &run(&[
            "plan", "--chip", "mini-64k", "--ctx", "128", "--format", "json",
        ])
        .stdout,
    )
    .unwrap();
    let planned = plan["totals"]["chips_used"].as_u64().unwrap();
    assert!(planned > 1);
    assert_eq!(
        plan["model"]["microbatch_tokens"].as_u64().unwrap() as usize,
        sramlm::chip::DEFAULT_MICROBATCH
    );
    let g = run(&[
        "generate", "--chip", "mini-64k", "--ctx", "128", "-n", "2", "Once",
    ]);
    let err = String::from_utf8_lossy(&g.stderr);
    let want = format!("chip mini-64k x {planned} ");
    assert!(err.contains(&want), "generate: {err}");
    let dir = std::env::temp_dir().join(format!("sramlm-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json: PathBuf = dir.join("bench.json");
    run(&[
        "bench",
        "--chip",
        "mini-64k",
        "--modes",
        "sram",
        "--ctx",
        "128",
        "--gen",
        "2",
        "--repeat",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let chips: Vec<u64> = records
        .iter()
        .filter_map(|v| v["result"]["chips_used"].as_u64())
        .collect();
    assert!(!chips.is_empty(), "bench json: {text}");
    assert!(
        chips.iter().all(|&c| c == planned),
        "bench {chips:?} vs plan {planned}"
    );
}

/// `--tp` is one of the shared chip flags: the three commands place
/// stories260K on the same tensor-parallel chips, the plan records the
/// groups and their collectives, and a degree the model cannot split is
/// refused in one line.
#[test]
fn tp_is_shared_by_plan_generate_and_bench() {
    if sramlm::testing::gpu().is_none() {
        return;
    }
    let chip = "models/chips/mini-256k-32k-slices.json";
    let plan: serde_json::Value = serde_json::from_slice(
        &run(&[
            "plan", "--chip", chip, "--tp", "2", "--ctx", "64", "--format", "json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(plan["tp"].as_u64(), Some(2));
    let planned = plan["totals"]["chips_used"].as_u64().unwrap();
    assert!(planned > 2 && planned.is_multiple_of(2), "{planned}");
    let stages = plan["stages"].as_array().unwrap();
    // A group of two chips with a collective between them.
    assert!(stages.iter().any(|s| {
        let g = s["group"].as_u64();
        stages.iter().filter(|t| t["group"].as_u64() == g).count() == 2
            && s["sends"].as_array().is_some_and(|v| !v.is_empty())
    }));
    let text =
        String::from_utf8_lossy(&run(&["plan", "--chip", chip, "--tp", "2", "--ctx", "64"]).stdout)
            .to_string();
    assert!(text.contains("tensor parallelism: --tp 2"), "{text}");
    let g = run(&[
        "generate", "--chip", chip, "--tp", "2", "--ctx", "64", "-n", "2", "Once",
    ]);
    let err = String::from_utf8_lossy(&g.stderr);
    assert!(err.contains(&format!(" x {planned} ")), "generate: {err}");
    let dir = std::env::temp_dir().join(format!("sramlm-tp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json: PathBuf = dir.join("bench.json");
    run(&[
        "bench",
        "--chip",
        chip,
        "--tp",
        "2",
        "--modes",
        "sram",
        "--ctx",
        "64",
        "--gen",
        "2",
        "--repeat",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let chips: Vec<u64> = records
        .iter()
        .filter_map(|v| v["result"]["chips_used"].as_u64())
        .collect();
    assert!(
        !chips.is_empty() && chips.iter().all(|&c| c == planned),
        "{chips:?} vs {planned}"
    );
    // stories260K has 8 attention heads.
    let o = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args(["plan", "--chip", chip, "--tp", "9", "--ctx", "64"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("--tp 9") && err.contains("at most 8"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
