//! Resident mode (one dispatch decodes a run of greedy tokens, some weight
//! slices kept in workgroup memory, the token's loopback inside the kernel):
//! where the litmus admits it on the test adapter, its tokens equal stepped
//! SRAM mode's on several chip presets (partially resident: the capacity the
//! litmus measured), and its counted link bytes equal the plan's; a capacity
//! under 2 is refused with a reason, never run.

use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo};
use sramlm::exec::sram::{SramExecutor, SramOptions};
use sramlm::exec::{Executor, Readback, StepOutput};
use sramlm::gpu::litmus;
use sramlm::model;
use sramlm::testing::gpu;

const CTX: usize = 64;
const NEW: usize = 12;

fn token(o: StepOutput) -> u32 {
    match o {
        StepOutput::Token { id, .. } => id,
        o => panic!("{o:?}"),
    }
}

#[test]
fn stories260k_resident_tokens_equal_stepped_sram_mode() {
    let Some(g) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let prompt: Vec<u32> = vec![1, 403, 407, 261, 316, 395];
    let dir = std::env::temp_dir().join(format!("sramlm-resident-{}", std::process::id()));
    let (l, _) =
        litmus::cached_or_measure_at(&g, 16384, Some(&dir.join(litmus::CACHE_FILE))).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{} ({})", l.summary(), l.reason);
    for preset in ["mini-64k", "groq-v1"] {
        let spec = ChipSpec::preset(preset).unwrap();
        let mut o = PlaceOptions::for_config(&m.config);
        o.context_len = CTX;
        o.microbatch_tokens = 4;
        let plan = place(&m.config, &TensorInfo::from_weights(&m.weights), &spec, &o).unwrap();
        let mut e = SramExecutor::new(
            g.clone(),
            &m.config,
            &m.weights,
            &plan,
            &SramOptions::default(),
        )
        .unwrap();
        // Stepped: prefill, then one dispatch per token.
        let first = token(e.step(&prompt, Readback::Argmax).unwrap());
        let mut stepped = vec![first];
        while stepped.len() < NEW + 1 {
            stepped.push(token(
                e.step(&[*stepped.last().unwrap()], Readback::Argmax)
                    .unwrap(),
            ));
        }
        // A capacity under 2 is refused, and leaves the sequence as it was.
        e.reset();
        token(e.step(&prompt, Readback::Argmax).unwrap());
        let err = e.decode_resident(first, NEW, 1).unwrap_err().to_string();
        assert!(err.contains("needs 2"), "{err}");
        assert_eq!(e.position(), prompt.len());
        if !l.admitted {
            eprintln!("{preset}: resident mode not admitted here: {}", l.reason);
            continue;
        }
        let before = e.sram_stats().link_bytes_counted;
        let (resident, s) = e
            .decode_resident(first, NEW, l.co_resident as usize)
            .unwrap();
        eprintln!("{preset}: {s:?}");
        assert_eq!(resident, stepped[1..], "{preset}: resident vs stepped");
        assert_eq!(e.position(), prompt.len() + NEW);
        assert_eq!(s.tokens, NEW);
        assert!(s.resident_slices >= 1 && s.resident_slices <= s.weight_slices);
        assert!(s.workgroups <= l.co_resident as usize);
        assert_eq!(
            (e.sram_stats().link_bytes_counted - before) as usize,
            NEW * plan.totals.link_bytes_per_token,
            "{preset}: counted link bytes"
        );
        // The sequence goes on in stepped mode from where resident mode left it.
        let next = token(
            e.step(&[*resident.last().unwrap()], Readback::Argmax)
                .unwrap(),
        );
        let mut check = stepped.clone();
        check.push(token({
            e.reset();
            e.step(&prompt, Readback::Argmax).unwrap();
            for t in &stepped[..NEW] {
                e.step(&[*t], Readback::Argmax).unwrap();
            }
            e.step(&[stepped[NEW]], Readback::Argmax).unwrap()
        }));
        assert_eq!(next, *check.last().unwrap(), "{preset}: after resident");
    }
}

fn cli(args: &[&str], envs: &[(&str, &std::path::Path)]) -> (String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sramlm"));
    c.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(o.status.success(), "{args:?}\n{out}\n{err}");
    (out, err)
}

/// `generate --resident`: the same text as stepped SRAM mode, the resident
/// layout in the stats where the litmus admits it (measured into a fresh
/// cache), a one-line refusal and stepped mode where the capacity is under 2.
#[test]
fn generate_resident_prints_the_same_text_or_refuses_with_the_reason() {
    if gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sramlm-resident-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = [
        "generate",
        "--mode",
        "sram",
        "--chip",
        "mini-64k",
        "-n",
        "40",
        "--temperature",
        "0",
        "Once upon a time",
    ];
    let (stepped, err) = cli(&base, &[("SRAMLM_CACHE_DIR", &dir)]);
    assert!(!err.contains("resident"), "{err}");
    let mut args = base.to_vec();
    args.push("--resident");
    let (out, err) = cli(&args, &[("SRAMLM_CACHE_DIR", &dir)]);
    assert_eq!(out, stepped, "{err}");
    let l = litmus::read_cache(&dir.join(litmus::CACHE_FILE)).unwrap();
    assert_eq!(l.len(), 1, "the litmus ran once and was cached");
    if l[0].admitted {
        assert!(err.contains("[sram] resident: 1/"), "{err}");
    } else {
        assert!(err.contains("resident mode refused"), "{err}");
    }
    // Forced under 2: refused, named, stepped mode runs.
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sramlm"));
    let o = c
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SRAMLM_CACHE_DIR", &dir)
        .env("SRAMLM_RESIDENT_CAPACITY", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("resident mode refused (SRAMLM_RESIDENT_CAPACITY=1)"),
        "{err}"
    );
    assert!(!err.contains("[sram] resident:"), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), stepped);
    let _ = std::fs::remove_dir_all(&dir);
}
