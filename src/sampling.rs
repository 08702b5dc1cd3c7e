//! Token choice: greedy on the GPU, or temperature / top-k / top-p / min-p
//! sampling over candidates reduced on the GPU, with a seeded generator.
//! Repetition, presence and frequency penalties change the logits of the
//! recently seen ids before the choice: on the GPU (`kernels::penalty`, before
//! argmax / top-k) where the executor can, else on the CPU on a full row.

use crate::exec::{Readback, StepOutput};
use crate::kernels::penalty::Entry;
use crate::kernels::topk::MAX_K;

/// splitmix64: small, seedable, reproducible on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SamplingOptions {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = no limit (the whole row is read back).
    pub top_k: usize,
    /// Nucleus: keep the smallest set whose probability reaches p (1 = off).
    pub top_p: f32,
    pub seed: u64,
    /// llama.cpp's repetition penalty: the logit of an id seen in the last
    /// `repeat_last_n` tokens is divided by it when positive, multiplied when
    /// negative (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens (prompt included) the penalties look at; 0 = off.
    pub repeat_last_n: usize,
    /// OpenAI's presence penalty: subtracted once from the logit of every id
    /// seen in the window (0 = off).
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty: subtracted per occurrence in the window.
    pub frequency_penalty: f32,
    /// Min-p: drop candidates whose probability (at temperature 1) is below
    /// `min_p` × the best one's (0 = off).
    pub min_p: f32,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            seed: 0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            min_p: 0.0,
        }
    }
}

impl SamplingOptions {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "--temperature must be ≥ 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("--top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(format!(
                "--repeat-penalty must be > 0 (1 = off), got {}",
                self.repeat_penalty
            ));
        }
        for (name, v) in [
            ("--presence-penalty", self.presence_penalty),
            ("--frequency-penalty", self.frequency_penalty),
        ] {
            if !(v.is_finite() && (-2.0..=2.0).contains(&v)) {
                return Err(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        if !(self.min_p.is_finite() && (0.0..=1.0).contains(&self.min_p)) {
            return Err(format!("--min-p must be in [0, 1], got {}", self.min_p));
        }
        Ok(())
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
    /// Whether any penalty is switched on.
    pub fn has_penalties(&self) -> bool {
        self.repeat_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
    /// The penalised ids and their adjustment for the next choice, given
    /// every token so far (prompt and generated): the last `repeat_last_n`
    /// count, as in llama.cpp. Sorted by id; empty when penalties are off.
    pub fn penalties(&self, history: &[u32]) -> Vec<Entry> {
        if !self.has_penalties() {
            return Vec::new();
        }
        let window = &history[history.len().saturating_sub(self.repeat_last_n)..];
        let mut counts = std::collections::BTreeMap::<u32, u32>::new();
        for &id in window {
            *counts.entry(id).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(id, n)| Entry {
                id,
                mul_pos: 1.0 / self.repeat_penalty,
                mul_neg: self.repeat_penalty,
                offset: self.frequency_penalty * n as f32 + self.presence_penalty,
            })
            .collect()
    }
}

pub struct Sampler {
    pub opts: SamplingOptions,
    rng: Rng,
}

impl Sampler {
    pub fn new(opts: SamplingOptions) -> Self {
        let rng = Rng::new(opts.seed);
        Sampler { opts, rng }
    }

    /// What the executor must send back for the next choice.
    pub fn readback(&self) -> Readback {
        self.readback_with(true)
    }

    /// As `readback`; `gpu_penalties` false: penalties are on but the
    /// executor cannot apply them, so the whole row comes back for the CPU.
    pub fn readback_with(&self, gpu_penalties: bool) -> Readback {
        if !gpu_penalties && self.opts.has_penalties() {
            Readback::LastLogits
        } else if self.opts.is_greedy() {
            Readback::Argmax
        } else if self.opts.top_k > 0 && self.opts.top_k <= MAX_K {
            Readback::TopK(self.opts.top_k)
        } else {
            Readback::LastLogits
        }
    }

    /// Picks the next token from what the step returned.
    pub fn pick(&mut self, out: &StepOutput) -> Option<u32> {
        self.pick_with(out, &[])
    }

    /// As `pick`, first applying `cpu_penalties` to a logit row (penalties
    /// the executor did not apply on the GPU).
    pub fn pick_with(&mut self, out: &StepOutput, cpu_penalties: &[Entry]) -> Option<u32> {
        match out {
            StepOutput::Token { id, .. } => Some(*id),
            StepOutput::Candidates(c) => Some(self.sample(c.clone())),
            StepOutput::Logits { rows, data } => {
                let vocab = data.len() / (*rows).max(1);
                let mut last = data[data.len() - vocab..].to_vec();
                crate::kernels::penalty::cpu(&mut last, cpu_penalties);
                let last = &last[..];
                if self.opts.is_greedy() {
                    return Some(crate::kernels::argmax::cpu(last) as u32);
                }
                let mut c: Vec<(u32, f32)> = last
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (i as u32, v))
                    .collect();
                c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                if self.opts.top_k > 0 {
                    c.truncate(self.opts.top_k);
                }
                Some(self.sample(c))
            }
        }
    }

    /// Samples from candidates sorted best first.
    fn sample(&mut self, mut c: Vec<(u32, f32)>) -> u32 {
        c.retain(|p| !p.1.is_nan());
        if c.is_empty() {
            return 0;
        }
        // Min-p (llama.cpp: at temperature 1, before temperature):
        // p ≥ min_p · p_max  ⇔  logit ≥ best + ln(min_p).
        if self.opts.min_p > 0.0 {
            let cut = c[0].1 as f64 + (self.opts.min_p as f64).ln();
            c.retain(|p| p.1 as f64 >= cut);
        }
        let t = self.opts.temperature.max(1e-6) as f64;
        let m = c[0].1 as f64;
        let mut probs: Vec<f64> = c.iter().map(|p| ((p.1 as f64 - m) / t).exp()).collect();
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= z);
        // Nucleus cut.
        if self.opts.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.opts.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let z: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= z);
        }
        let r = self.rng.next_f64();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return c[i].0;
            }
        }
        c[probs.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let cands: Vec<(u32, f32)> = (0..10).map(|i| (i, 5.0 - i as f32 * 0.3)).collect();
        let opts = SamplingOptions {
            temperature: 1.0,
            top_k: 3,
            top_p: 1.0,
            seed: 42,
            ..Default::default()
        };
        let draw = |o: &SamplingOptions| {
            let mut s = Sampler::new(o.clone());
            (0..200)
                .map(|_| {
                    s.pick(&StepOutput::Candidates(cands[..3].to_vec()))
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let a = draw(&opts);
        assert_eq!(a, draw(&opts));
        assert!(a.iter().all(|&id| id < 3));
        assert!(a.contains(&0) && a.contains(&2));
        let other = draw(&SamplingOptions {
            seed: 43,
            ..opts.clone()
        });
        assert_ne!(a, other);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let cands = vec![(7, 10.0), (8, 0.0), (9, 0.0)];
        let mut s = Sampler::new(SamplingOptions {
            temperature: 1.0,
            top_k: 3,
            top_p: 0.5,
            seed: 1,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.pick(&StepOutput::Candidates(cands.clone())), Some(7));
        }
    }

    #[test]
    fn greedy_asks_for_argmax() {
        let s = Sampler::new(SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.readback(), Readback::Argmax);
        let s = Sampler::new(SamplingOptions {
            top_k: 0,
            ..Default::default()
        });
        assert_eq!(s.readback(), Readback::LastLogits);
    }

    #[test]
    fn penalties_follow_llama_cpp_and_openai() {
        let o = SamplingOptions {
            repeat_penalty: 2.0,
            repeat_last_n: 4,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..Default::default()
        };
        // Id 9 falls out of the 4-token window; 5 is seen twice.
        let list = o.penalties(&[9, 5, 7, 5, 3]);
        let ids: Vec<u32> = list.iter().map(|e| e.id).collect();
        assert_eq!(ids, [3, 5, 7]);
        let five = list[1];
        assert_eq!(five.apply(4.0), 4.0 / 2.0 - (0.5 + 2.0 * 0.25));
        assert_eq!(five.apply(-4.0), -4.0 * 2.0 - (0.5 + 2.0 * 0.25));
        assert_eq!(list[0].apply(1.0), 0.5 - 0.75);
        assert!(SamplingOptions::default().penalties(&[1, 2, 3]).is_empty());
        assert!(SamplingOptions {
            repeat_last_n: 0,
            ..o.clone()
        }
        .penalties(&[1])
        .is_empty());
        // Penalties applied on the CPU change the greedy pick.
        let mut s = Sampler::new(SamplingOptions {
            temperature: 0.0,
            ..o
        });
        let row = StepOutput::Logits {
            rows: 1,
            data: vec![0.0, 3.0, 2.0],
        };
        assert_eq!(s.pick(&row), Some(1));
        let pen = s.opts.penalties(&[1]);
        assert_eq!(s.pick_with(&row, &pen), Some(2));
        assert_eq!(s.readback_with(false), Readback::LastLogits);
        assert_eq!(s.readback_with(true), Readback::Argmax);
    }

    #[test]
    fn min_p_drops_unlikely_candidates() {
        // p(1)/p(0) = e^-3 ≈ 0.05 < 0.1: only id 0 survives.
        let cands = vec![(0, 5.0), (1, 2.0), (2, 1.0)];
        let mut s = Sampler::new(SamplingOptions {
            temperature: 5.0,
            top_p: 1.0,
            min_p: 0.1,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.pick(&StepOutput::Candidates(cands.clone())), Some(0));
        }
        s.opts.min_p = 0.0;
        let picks: Vec<u32> = (0..200)
            .map(|_| s.pick(&StepOutput::Candidates(cands.clone())).unwrap())
            .collect();
        assert!(picks.contains(&1) && picks.contains(&2));
    }

    #[test]
    fn penalty_options_are_validated() {
        for o in [
            SamplingOptions {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            SamplingOptions {
                presence_penalty: 3.0,
                ..Default::default()
            },
            SamplingOptions {
                frequency_penalty: f32::NAN,
                ..Default::default()
            },
            SamplingOptions {
                min_p: 1.5,
                ..Default::default()
            },
        ] {
            assert!(o.validate().is_err(), "{o:?}");
        }
    }
}
