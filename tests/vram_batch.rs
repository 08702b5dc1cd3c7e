//! VRAM mode with several sequences decoded together (continuous batching):
//! B sequences with prompts of different lengths share each decode step
//! (one matvec over B rows; each row's own position and KV cache), one joins
//! while the others are mid-way, one leaves early and its cache slot is
//! reused by a newcomer. Every sequence must give exactly the ids of its solo
//! greedy run. stories260K (embedded default) and SmolLM2 (GGUF, Q4_1).

use sramlm::exec::vram::{VramExecutor, VramOptions};
use sramlm::exec::{argmax_of, Executor, Readback};
use sramlm::model::{self, Model};
use sramlm::testing::gpu;
use std::path::Path;

const CTX: usize = 96;

fn smollm2() -> Option<Model> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !p.exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{} is missing: run models/get-smollm2.sh", p.display());
        }
        eprintln!(
            "SKIPPED: {} missing (run models/get-smollm2.sh)",
            p.display()
        );
        return None;
    }
    Some(model::load(&p).expect("SmolLM2 loads"))
}

fn opts() -> VramOptions {
    VramOptions {
        context: Some(CTX),
        ..VramOptions::default()
    }
}

/// `n` greedy ids after `prompt`, decoded alone.
fn solo(exec: &mut VramExecutor, prompt: &[u32], n: usize) -> Vec<u32> {
    exec.reset();
    let first = argmax_of(&exec.step(prompt, Readback::Argmax).unwrap());
    let mut ids = vec![first];
    ids.extend(exec.decode_greedy(first, n - 1, &mut |_| true).unwrap());
    ids
}

/// A sequence of the batched run: its cache slot, prompt, ids so far and how
/// many it wants.
struct Seq {
    slot: usize,
    prompt: Vec<u32>,
    ids: Vec<u32>,
    want: usize,
    /// Decode round at which it joins.
    join: usize,
}

fn continuous_batch_matches_solo(m: &Model, prompts: &[&str], n: usize) {
    let Some(gpu) = gpu() else { return };
    let toks: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| m.tokenizer.encode(p).unwrap())
        .collect();
    let lens: Vec<usize> = toks.iter().map(|t| t.len()).collect();
    assert!(
        lens.windows(2).any(|w| w[0] != w[1]),
        "prompts of different lengths: {lens:?}"
    );
    let mut one = VramExecutor::new(gpu.clone(), &m.config, &m.weights, &opts()).unwrap();
    let want: Vec<Vec<u32>> = toks.iter().map(|t| solo(&mut one, t, n)).collect();
    drop(one);

    // Slots: 3 cache slots for 4 sequences. Sequences 0 and 1 start; 2
    // joins at round 3 while they are mid-way; 1 leaves after 5 tokens and
    // sequence 3 joins in its slot at round 7.
    let mut exec = VramExecutor::new_batched(gpu, &m.config, &m.weights, &opts(), 3).unwrap();
    assert_eq!(exec.sequences(), 3);
    let leave = 5;
    let mut seqs = [
        Seq {
            slot: 0,
            prompt: toks[0].clone(),
            ids: vec![],
            want: n,
            join: 0,
        },
        Seq {
            slot: 1,
            prompt: toks[1].clone(),
            ids: vec![],
            want: leave,
            join: 0,
        },
        Seq {
            slot: 2,
            prompt: toks[2].clone(),
            ids: vec![],
            want: n,
            join: 3,
        },
        Seq {
            slot: 1,
            prompt: toks[3].clone(),
            ids: vec![],
            want: n,
            join: 7,
        },
    ];
    let mut round = 0;
    let mut batch_sizes = Vec::new();
    while seqs.iter().any(|s| s.ids.len() < s.want) {
        // Joiners: forget the slot's old sequence, prefill the prompt.
        for s in seqs.iter_mut().filter(|s| s.join == round) {
            exec.select(s.slot).unwrap();
            exec.truncate(0).unwrap();
            assert_eq!(exec.position(), 0);
            s.ids
                .push(argmax_of(&exec.step(&s.prompt, Readback::Argmax).unwrap()));
        }
        let active: Vec<usize> = (0..seqs.len())
            .filter(|&i| {
                let s = &seqs[i];
                s.join < round + 1 && !s.ids.is_empty() && s.ids.len() < s.want
            })
            .collect();
        if !active.is_empty() {
            // Rows in a changing order; every other round reads logits back.
            let mut rows: Vec<(usize, u32)> = active
                .iter()
                .map(|&i| (seqs[i].slot, *seqs[i].ids.last().unwrap()))
                .collect();
            if round % 2 == 1 {
                rows.reverse();
            }
            let rb = if round % 3 == 2 {
                Readback::LastLogits
            } else {
                Readback::Argmax
            };
            let out = exec.decode_rows(&rows, rb).unwrap();
            assert_eq!(out.len(), rows.len());
            for (o, r) in out.iter().zip(&rows) {
                let i = *active.iter().find(|&&i| seqs[i].slot == r.0).unwrap();
                seqs[i].ids.push(argmax_of(o));
            }
            batch_sizes.push(rows.len());
        }
        round += 1;
        assert!(round < 10 * n, "the batched run does not finish");
    }
    assert!(
        batch_sizes.contains(&3),
        "rounds of 3 rows: {batch_sizes:?}"
    );
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(
            s.ids,
            want[i][..s.want],
            "sequence {i} (prompt of {} tokens) differs from its solo run",
            s.prompt.len()
        );
    }
    // Positions: the slot of the sequence that finished last in it.
    exec.select(0).unwrap();
    assert_eq!(exec.position(), toks[0].len() + n - 1);
}

const PROMPTS: [&str; 4] = [
    "Once upon a time",
    "The little dog ran to the park and saw a big red ball",
    "Lily and Tom",
    "One day, a girl named Sue went to the shop with her mom. She",
];

#[test]
fn stories260k_continuous_batch_equals_solo_runs() {
    let m = model::load(&model::default_model_path()).unwrap();
    continuous_batch_matches_solo(&m, &PROMPTS, 20);
}

#[test]
fn smollm2_continuous_batch_equals_solo_runs() {
    let Some(m) = smollm2() else { return };
    continuous_batch_matches_solo(
        &m,
        &[
            "The capital of France is",
            "Write a short poem about the sea and the wind in the morning:",
            "1, 2, 3,",
            "Here is a recipe for pancakes. First,",
        ],
        12,
    );
}

#[test]
fn batched_step_refuses_bad_rows() {
    let Some(gpu) = gpu() else { return };
    let m = model::load(&model::default_model_path()).unwrap();
    let mut exec = VramExecutor::new_batched(gpu, &m.config, &m.weights, &opts(), 2).unwrap();
    let e = exec
        .decode_rows(&[(0, 1), (0, 2)], Readback::Argmax)
        .unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    let e = exec.decode_rows(&[(2, 1)], Readback::Argmax).unwrap_err();
    assert!(e.to_string().contains("sequence 2"), "{e}");
    let e = exec
        .decode_rows(&[(1, m.config.vocab_size as u32)], Readback::Argmax)
        .unwrap_err();
    assert!(e.to_string().contains("vocabulary"), "{e}");
    assert!(exec.select(2).is_err());
    exec.select(1).unwrap();
    assert!(exec.truncate(1).is_err(), "cannot grow a sequence");
    // Nothing moved.
    assert_eq!(exec.position(), 0);
    // decode_batch: one token per resident sequence.
    assert!(exec.decode_batch(&[1]).is_err());
}
