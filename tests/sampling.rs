//! Sampling controls against a CPU reference: penalties applied on the GPU
//! before argmax / top-k give the pick (and the logits) the CPU gets from the
//! model's logits read back and penalised on the CPU; generation with
//! penalties, min-p and stop strings end to end.

use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::{Executor, Readback, StepOutput};
use sramlm::generate::{generate, GenerateOptions};
use sramlm::kernels::{argmax, penalty, topk};
use sramlm::model::{self, Model};
use sramlm::sampling::{Sampler, SamplingOptions};
use std::process::{Command, Stdio};

fn setup() -> Option<(Model, VramExecutor)> {
    let gpu = sramlm::testing::gpu()?;
    let m = model::load_embedded().unwrap();
    let e = VramExecutor::new(
        gpu,
        &m.config,
        &m.weights,
        &VramOptions {
            context: Some(256),
            chunk: sramlm::exec::vram::DEFAULT_CHUNK,
        },
    )
    .unwrap();
    Some((m, e))
}

fn logits(out: StepOutput) -> Vec<f32> {
    match out {
        StepOutput::Logits { data, .. } => data,
        other => panic!("expected logits, got {other:?}"),
    }
}

fn penalised() -> SamplingOptions {
    SamplingOptions {
        repeat_penalty: 1.5,
        repeat_last_n: 16,
        presence_penalty: 0.5,
        frequency_penalty: 0.75,
        ..Default::default()
    }
}

#[test]
fn gpu_penalties_equal_the_cpu_reference() {
    let Some((m, mut e)) = setup() else { return };
    let prompt = m.tokenizer.encode("Once upon a time, there was a").unwrap();
    // Plain logits, read back.
    let plain = logits(e.step(&prompt, Readback::LastLogits).unwrap());
    let best = argmax::cpu(&plain) as u32;
    // History that holds the best id (twice) so the pick must move.
    let mut history = prompt.clone();
    history.extend([best, best]);
    let list = penalised().penalties(&history);
    assert!(list.iter().any(|x| x.id == best));
    let mut want = plain.clone();
    penalty::cpu(&mut want, &list);
    let want_best = argmax::cpu(&want) as u32;
    assert_ne!(want_best, best, "the penalty changes the greedy pick");

    assert!(
        e.set_penalties(&list).unwrap(),
        "VRAM mode applies them on the GPU"
    );
    for rb in [Readback::Argmax, Readback::TopK(8), Readback::LastLogits] {
        e.reset();
        let out = e.step(&prompt, rb).unwrap();
        match out {
            StepOutput::Token { id, logit } => {
                assert_eq!(id, want_best);
                assert_eq!(logit, want[id as usize]);
            }
            StepOutput::Candidates(c) => {
                let ids: Vec<u32> = c.iter().map(|p| p.0).collect();
                assert_eq!(ids, topk::cpu(&want, 8));
                for (id, v) in c {
                    assert_eq!(v, want[id as usize], "id {id}");
                }
            }
            StepOutput::Logits { data, .. } => assert_eq!(data, want),
        }
    }
    // Off again: the plain logits.
    e.set_penalties(&[]).unwrap();
    e.reset();
    assert_eq!(
        logits(e.step(&prompt, Readback::LastLogits).unwrap()),
        plain
    );
}

/// The CPU reference loop: full logits each step, penalties and the pick on
/// the CPU.
fn cpu_reference(
    m: &Model,
    e: &mut VramExecutor,
    prompt: &[u32],
    o: &SamplingOptions,
    n: usize,
) -> Vec<u32> {
    e.set_penalties(&[]).unwrap();
    e.reset();
    let mut s = Sampler::new(o.clone());
    let mut history = prompt.to_vec();
    let mut out = Vec::new();
    let mut feed = prompt.to_vec();
    while out.len() < n {
        let row = e.step(&feed, Readback::LastLogits).unwrap();
        let id = s.pick_with(&row, &o.penalties(&history)).unwrap();
        out.push(id);
        history.push(id);
        if m.config.eos_token_ids.contains(&id) {
            break;
        }
        feed = vec![id];
    }
    out
}

#[test]
fn generation_with_penalties_matches_the_cpu_reference() {
    let Some((m, mut e)) = setup() else { return };
    let prompt = m.tokenizer.encode("Once upon a time").unwrap();
    let n = 40;
    for (what, sampling) in [
        (
            "greedy",
            SamplingOptions {
                temperature: 0.0,
                ..penalised()
            },
        ),
        (
            "top-k 20, min-p, seeded",
            SamplingOptions {
                temperature: 0.9,
                top_k: 20,
                top_p: 0.9,
                min_p: 0.05,
                seed: 11,
                ..penalised()
            },
        ),
    ] {
        let opts = GenerateOptions {
            max_tokens: n,
            sampling: sampling.clone(),
            ..Default::default()
        };
        let g = generate(&mut e, &m.tokenizer, &m.config, &prompt, &opts, |_| {}).unwrap();
        let want = cpu_reference(&m, &mut e, &prompt, &sampling, n);
        assert_eq!(g.ids, want, "{what}");
        // Without penalties the text differs (the penalties did something).
        let plain = GenerateOptions {
            sampling: SamplingOptions {
                repeat_penalty: 1.0,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
                ..sampling
            },
            ..opts
        };
        let p = generate(&mut e, &m.tokenizer, &m.config, &prompt, &plain, |_| {}).unwrap();
        assert_ne!(p.ids, g.ids, "{what}: penalties change the output");
    }
}

fn sramlm_json(args: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args(["generate", "--format", "json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn min_p_one_is_greedy_and_stop_strings_cut_the_text() {
    if sramlm::testing::gpu().is_none() {
        return;
    }
    let greedy = sramlm_json(&["-n", "48", "--temp", "0", "Once upon a time"]);
    // min-p 1 keeps only the most likely token: greedy at any temperature.
    let minp = sramlm_json(&[
        "-n",
        "48",
        "--temp",
        "1.5",
        "--min-p",
        "1",
        "--seed",
        "3",
        "Once upon a time",
    ]);
    assert_eq!(minp["ids"], greedy["ids"]);

    let text = greedy["text"].as_str().unwrap().to_string();
    // A stop string from the middle of the greedy text.
    let start = text.char_indices().nth(30).unwrap().0;
    let stop: String = text[start..].chars().take(4).collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let v = sramlm_json(&[
        "-n",
        "48",
        "--temp",
        "0",
        "--stop",
        &stop,
        "Once upon a time",
    ]);
    assert_eq!(v["text"].as_str().unwrap(), cut);
    assert_eq!(v["stats"]["stopped_at_string"], true);
    // Streamed text: the same, never the stop string.
    let o = Command::new(env!("CARGO_BIN_EXE_sramlm"))
        .args(["generate", "-n", "48", "--temp", "0", "--stop", &stop])
        .arg("Once upon a time")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8(o.stdout).unwrap(), format!("{cut}\n"));
}

/// SRAM mode applies no penalties on the GPU: it reads the row back and
/// penalises on the CPU. Same ids as VRAM mode's GPU penalties.
#[test]
fn sram_mode_penalties_on_the_cpu_give_the_same_ids() {
    use sramlm::chip::{place, ChipSpec, PlaceOptions, TensorInfo};
    use sramlm::exec::sram::{SramExecutor, SramOptions};
    let Some((m, mut v)) = setup() else { return };
    let gpu = sramlm::testing::gpu().unwrap();
    let spec = ChipSpec::preset("groq-v1").unwrap();
    let mut po = PlaceOptions::for_config(&m.config);
    po.context_len = 256;
    po.microbatch_tokens = 16;
    let plan = place(&m.config, &TensorInfo::from_weights(&m.weights), &spec, &po).unwrap();
    let mut s = SramExecutor::new(
        gpu,
        &m.config,
        &m.weights,
        &plan,
        &SramOptions {
            image_split_bytes: None,
            task_order: None,
            batch: 1,
            context: Some(256),
            microbatch: 16,
        },
    )
    .unwrap();
    assert!(!s.set_penalties(&[]).unwrap());
    let prompt = m.tokenizer.encode("Once upon a time").unwrap();
    let opts = GenerateOptions {
        max_tokens: 24,
        sampling: SamplingOptions {
            temperature: 0.0,
            ..penalised()
        },
        ..Default::default()
    };
    let a = generate(&mut v, &m.tokenizer, &m.config, &prompt, &opts, |_| {}).unwrap();
    let b = generate(&mut s, &m.tokenizer, &m.config, &prompt, &opts, |_| {}).unwrap();
    assert_eq!(a.ids, b.ids);
}
