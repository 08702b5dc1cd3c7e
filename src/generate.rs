//! The generation loop shared by both modes: prompt → prefill → decode loop,
//! streaming text, stopping at EOS or the token budget, with timing stats.

use crate::exec::{ExecError, Executor, Readback};
use crate::model::LlamaConfig;
use crate::sampling::{Sampler, SamplingOptions};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingOptions,
    pub ignore_eos: bool,
    /// Extra ids that end generation (e.g. a chat's end-of-turn).
    pub stop_ids: Vec<u32>,
    /// Texts that end generation: the output stops before the first one to
    /// appear (it is not printed, nor part of `Generation::text`).
    pub stop_strings: Vec<String>,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current token.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingOptions::default(),
            ignore_eos: false,
            stop_ids: vec![],
            stop_strings: vec![],
            cancel: None,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GenStats {
    pub mode: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_s: f64,
    pub prefill_tok_s: f64,
    /// Time to first token: prefill plus the first pick.
    pub ttft_s: f64,
    pub decode_s: f64,
    /// Tokens after the first, per second of decode steps.
    pub decode_tok_s: f64,
    /// Per-token decode latencies (ms), in order.
    pub decode_ms: Vec<f64>,
    pub dispatches_per_token: u64,
    pub submissions: u64,
    pub readback_bytes: u64,
    pub weight_bytes_gpu: u64,
    pub kv_cache_bytes_gpu: u64,
    pub stopped_at_eos: bool,
    /// A stop string ended generation.
    pub stopped_at_string: bool,
    /// `GenerateOptions::cancel` ended generation.
    pub cancelled: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub stats: GenStats,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Load(#[from] crate::model::LoadError),
    #[error("the prompt has {prompt} tokens but the context window is {ctx} tokens")]
    PromptTooLong { prompt: usize, ctx: usize },
    #[error("the prompt is empty and the model has no BOS token to start from")]
    EmptyPrompt,
    #[error("{0}")]
    Invalid(String),
    #[error("the model produced NaN or infinite logits at position {pos} (its weights or activations overflowed); no token can be chosen from them")]
    NonFinite { pos: usize },
}

/// Runs one generation. `on_text` receives decoded text as it is produced.
pub fn generate(
    exec: &mut dyn Executor,
    tok: &Tokenizer,
    cfg: &LlamaConfig,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<Generation, GenerateError> {
    exec.reset();
    generate_after(exec, tok, cfg, &[], prompt_ids, opts, on_text)
}

/// Text produced so far, and how much of it went out: holds back an
/// incomplete character and the start of a possible stop string.
struct TextOut<'a> {
    dec: StreamDecoder,
    text: String,
    emitted: usize,
    stops: &'a [String],
    hit: bool,
}

impl TextOut<'_> {
    /// Adds one id; true when a stop string appeared.
    fn push(
        &mut self,
        tok: &Tokenizer,
        id: u32,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<bool, GenerateError> {
        let piece = self.dec.push(tok, id)?;
        self.text.push_str(&piece);
        Ok(self.release(false, on_text))
    }

    /// Sends what is safe to send; `end`: nothing more will come.
    fn release(&mut self, end: bool, on_text: &mut dyn FnMut(&str)) -> bool {
        // A stop string anywhere in the text (it may straddle pieces).
        let from = self
            .emitted
            .saturating_sub(self.stops.iter().map(|s| s.len()).max().unwrap_or(0));
        let from = (0..=from)
            .rev()
            .find(|&i| self.text.is_char_boundary(i))
            .unwrap_or(0);
        let first = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(at) = first {
            self.text.truncate(at.max(self.emitted));
            self.hit = true;
        }
        let mut upto = self.text.len();
        if !self.hit && !end {
            // Hold back a tail that could still become a stop string.
            for s in self.stops {
                for (i, _) in s.char_indices().skip(1) {
                    if self.text.ends_with(&s[..i]) {
                        upto = upto.min(self.text.len() - i);
                    }
                }
            }
        }
        if upto > self.emitted {
            on_text(&self.text[self.emitted..upto]);
            self.emitted = upto;
        }
        self.hit
    }
}

/// Continues a sequence whose first `history.len()` tokens are already in
/// the executor's KV cache (`exec.position()` must equal that): prefills
/// `new_ids` at that position, then generates. A chat keeps its cache across
/// turns this way. `history` also feeds the sampling penalties.
pub fn generate_after(
    exec: &mut dyn Executor,
    tok: &Tokenizer,
    cfg: &LlamaConfig,
    history: &[u32],
    new_ids: &[u32],
    opts: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, GenerateError> {
    let on_text: &mut dyn FnMut(&str) = &mut on_text;
    opts.sampling.validate().map_err(GenerateError::Invalid)?;
    if opts.max_tokens == 0 {
        return Err(GenerateError::Invalid(
            "-n/--max-tokens must be at least 1".into(),
        ));
    }
    let ctx = exec.context_len();
    if history.is_empty() && new_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if new_ids.is_empty() {
        return Err(GenerateError::Invalid(
            "nothing new to continue the sequence with".into(),
        ));
    }
    if exec.position() != history.len() {
        return Err(GenerateError::Invalid(format!(
            "the cache holds {} tokens, not the {} of the history",
            exec.position(),
            history.len()
        )));
    }
    if history.len() + new_ids.len() > ctx {
        return Err(GenerateError::PromptTooLong {
            prompt: history.len() + new_ids.len(),
            ctx,
        });
    }
    let mut sampler = Sampler::new(opts.sampling.clone());
    let penalised = opts.sampling.has_penalties();
    // Penalties go to the GPU where the executor can apply them.
    let gpu_penalties = exec.set_penalties(&[])?;
    let rb = sampler.readback_with(gpu_penalties);
    let mut seen: Vec<u32> = history.iter().chain(new_ids).copied().collect();
    let result = (|| {
        let mut stats = GenStats {
            mode: exec.mode().into(),
            prompt_tokens: new_ids.len(),
            weight_bytes_gpu: exec.weight_bytes(),
            kv_cache_bytes_gpu: exec.kv_bytes(),
            ..Default::default()
        };
        // One step: penalties for the tokens so far, then the pick.
        let step = |exec: &mut dyn Executor,
                    sampler: &mut Sampler,
                    ids: &[u32],
                    seen: &[u32]|
         -> Result<u32, GenerateError> {
            let list = sampler.opts.penalties(seen);
            if penalised && gpu_penalties {
                exec.set_penalties(&list)?;
            }
            let out = exec.step(ids, rb)?;
            if crate::kernels::argmax::is_non_finite(&out) {
                return Err(GenerateError::NonFinite {
                    pos: exec.position().saturating_sub(1),
                });
            }
            let cpu = if gpu_penalties { &[][..] } else { &list[..] };
            Ok(sampler.pick_with(&out, cpu).unwrap_or(0))
        };
        let start = Instant::now();
        let mut next = step(exec, &mut sampler, new_ids, &seen)?;
        stats.prefill_s = start.elapsed().as_secs_f64();
        stats.prefill_tok_s = new_ids.len() as f64 / stats.prefill_s.max(1e-9);
        stats.ttft_s = start.elapsed().as_secs_f64();

        let mut ids = Vec::new();
        let mut out = TextOut {
            dec: StreamDecoder::new(),
            text: String::new(),
            emitted: 0,
            stops: &opts.stop_strings,
            hit: false,
        };
        let is_stop = |id: u32| {
            !opts.ignore_eos && (cfg.eos_token_ids.contains(&id) || opts.stop_ids.contains(&id))
        };
        let cancelled = || {
            opts.cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
        };
        let decode_start = Instant::now();
        // Pipelined greedy decoding feeds each pick back on the GPU: only
        // without penalties, which change with every token.
        let greedy = rb == Readback::Argmax && !penalised;
        loop {
            ids.push(next);
            seen.push(next);
            if is_stop(next) {
                stats.stopped_at_eos = true;
                break;
            }
            if out.push(tok, next, on_text)? {
                stats.stopped_at_string = true;
                break;
            }
            if cancelled() {
                stats.cancelled = true;
                break;
            }
            if ids.len() >= opts.max_tokens || exec.position() >= ctx {
                break;
            }
            if greedy {
                // The rest in one pipelined call (the executor feeds each pick to
                // the next step itself); same stops as the loop.
                let mut t = Instant::now();
                let mut failed = None;
                exec.decode_greedy(next, opts.max_tokens - ids.len(), &mut |id| {
                    stats.decode_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    t = Instant::now();
                    if id == crate::kernels::argmax::NON_FINITE {
                        failed = Some(GenerateError::NonFinite {
                            pos: history.len() + new_ids.len() + ids.len() - 1,
                        });
                        return false;
                    }
                    ids.push(id);
                    if is_stop(id) {
                        stats.stopped_at_eos = true;
                        return false;
                    }
                    match out.push(tok, id, on_text) {
                        Ok(true) => {
                            stats.stopped_at_string = true;
                            false
                        }
                        Ok(false) if cancelled() => {
                            stats.cancelled = true;
                            false
                        }
                        Ok(false) => true,
                        Err(e) => {
                            failed = Some(e);
                            false
                        }
                    }
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
                break;
            }
            let t = Instant::now();
            next = step(exec, &mut sampler, &[next], &seen)?;
            stats.decode_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        stats.decode_s = decode_start.elapsed().as_secs_f64();
        stats.generated_tokens = ids.len();
        let steps = stats.decode_ms.len();
        stats.decode_tok_s = if steps > 0 {
            steps as f64 / (stats.decode_ms.iter().sum::<f64>() / 1e3)
        } else {
            0.0
        };
        let c = exec.counters();
        stats.dispatches_per_token = c.dispatches_last_decode;
        stats.submissions = c.submissions;
        stats.readback_bytes = c.readback_bytes;
        if !out.hit {
            // Final text from all ids (the streamed text plus what was held
            // back), without a character the token budget cut in half: an
            // incomplete UTF-8 sequence decodes to U+FFFD at the very end.
            let mut full = tok.decode(&ids)?;
            while full.ends_with('\u{FFFD}') {
                full.pop();
            }
            if full.len() >= out.text.len() && full.starts_with(&out.text) {
                out.text = full;
            }
            if out.release(true, on_text) {
                stats.stopped_at_string = true;
            }
        }
        Ok(Generation {
            prompt_ids: new_ids.to_vec(),
            ids,
            text: out.text,
            stats,
        })
    })();
    // Penalties belong to this generation only.
    if penalised && gpu_penalties {
        exec.set_penalties(&[])?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ExecCounters, StepOutput};

    /// An executor that "picks" scripted ids (no GPU).
    struct Script {
        ids: Vec<u32>,
        pos: usize,
        picks: usize,
        counters: ExecCounters,
    }

    impl Executor for Script {
        fn mode(&self) -> &'static str {
            "script"
        }
        fn context_len(&self) -> usize {
            1000
        }
        fn position(&self) -> usize {
            self.pos
        }
        fn reset(&mut self) {
            self.pos = 0;
            self.picks = 0;
        }
        fn step(&mut self, ids: &[u32], _rb: Readback) -> Result<StepOutput, ExecError> {
            self.pos += ids.len();
            let id = self.ids[self.picks.min(self.ids.len() - 1)];
            self.picks += 1;
            Ok(StepOutput::Token { id, logit: 0.0 })
        }
        fn counters(&self) -> &ExecCounters {
            &self.counters
        }
        fn weight_bytes(&self) -> u64 {
            0
        }
        fn kv_bytes(&self) -> u64 {
            0
        }
    }

    fn run(script: &[&str], opts: &GenerateOptions) -> (String, Generation) {
        let m = crate::model::load_embedded().unwrap();
        let ids: Vec<u32> = script
            .iter()
            .map(|t| m.tokenizer.token_to_id(t).unwrap())
            .collect();
        let mut e = Script {
            ids,
            pos: 0,
            picks: 0,
            counters: ExecCounters::default(),
        };
        let mut streamed = String::new();
        let g = generate(&mut e, &m.tokenizer, &m.config, &[1], opts, |p| {
            streamed.push_str(p)
        })
        .unwrap();
        (streamed, g)
    }

    fn greedy(n: usize) -> GenerateOptions {
        GenerateOptions {
            max_tokens: n,
            sampling: SamplingOptions {
                temperature: 0.0,
                ..Default::default()
            },
            ignore_eos: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_character_cut_by_the_budget_is_not_printed() {
        // "€" is E2 82 AC: the budget ends after its second byte.
        let script = ["▁a", "<0xE2>", "<0x82>", "<0xAC>"];
        let (streamed, g) = run(&script, &greedy(3));
        assert_eq!(g.text, "a");
        assert_eq!(streamed, "a");
        let (streamed, g) = run(&script, &greedy(4));
        assert_eq!(g.text, "a€");
        assert_eq!(streamed, "a€");
    }

    #[test]
    fn stop_strings_end_generation_and_are_not_printed() {
        let script = ["▁a", "▁the", "▁a", "▁the"];
        let mut o = greedy(4);
        o.stop_strings = vec!["e a".into()];
        let (streamed, g) = run(&script, &o);
        assert_eq!(g.text, "a th");
        assert_eq!(streamed, "a th");
        assert!(g.stats.stopped_at_string);
        assert_eq!(g.ids.len(), 3, "stops at the token that completed it");
        // A prefix held back is released at the end when nothing matched.
        o.stop_strings = vec!["e z".into()];
        let (streamed, g) = run(&script, &o);
        assert_eq!(g.text, "a the a the");
        assert_eq!(streamed, g.text);
        assert!(!g.stats.stopped_at_string);
    }

    #[test]
    fn cancel_stops_after_the_current_token() {
        let mut o = greedy(10);
        let c = Arc::new(AtomicBool::new(true));
        o.cancel = Some(c);
        let (_, g) = run(&["▁a", "▁the"], &o);
        assert_eq!(g.ids.len(), 1);
        assert!(g.stats.cancelled);
    }
}
