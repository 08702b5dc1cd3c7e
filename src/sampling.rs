//! Token choice: greedy on the GPU, or temperature / top-k / top-p sampling
//! over candidates reduced on the GPU, with a seeded generator.

use crate::exec::{Readback, StepOutput};
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
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            seed: 0,
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
        Ok(())
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
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
        if self.opts.is_greedy() {
            Readback::Argmax
        } else if self.opts.top_k > 0 && self.opts.top_k <= MAX_K {
            Readback::TopK(self.opts.top_k)
        } else {
            Readback::LastLogits
        }
    }

    /// Picks the next token from what the step returned.
    pub fn pick(&mut self, out: &StepOutput) -> Option<u32> {
        match out {
            StepOutput::Token { id, .. } => Some(*id),
            StepOutput::Candidates(c) => Some(self.sample(c.clone())),
            StepOutput::Logits { rows, data } => {
                let vocab = data.len() / (*rows).max(1);
                let last = &data[data.len() - vocab..];
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
}
