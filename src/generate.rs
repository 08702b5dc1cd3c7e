//! The generation loop shared by both modes: prompt → prefill → decode loop,
//! streaming text, stopping at EOS or the token budget, with timing stats.

use crate::exec::{ExecError, Executor, Readback};
use crate::model::LlamaConfig;
use crate::sampling::{Sampler, SamplingOptions};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingOptions,
    pub ignore_eos: bool,
    /// Extra ids that end generation (e.g. a chat's end-of-turn).
    pub stop_ids: Vec<u32>,
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
    mut on_text: impl FnMut(&str),
) -> Result<Generation, GenerateError> {
    opts.sampling.validate().map_err(GenerateError::Invalid)?;
    if opts.max_tokens == 0 {
        return Err(GenerateError::Invalid(
            "-n/--max-tokens must be at least 1".into(),
        ));
    }
    let ctx = exec.context_len();
    if prompt_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if prompt_ids.len() > ctx {
        return Err(GenerateError::PromptTooLong {
            prompt: prompt_ids.len(),
            ctx,
        });
    }
    exec.reset();
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut stats = GenStats {
        mode: exec.mode().into(),
        prompt_tokens: prompt_ids.len(),
        weight_bytes_gpu: exec.weight_bytes(),
        kv_cache_bytes_gpu: exec.kv_bytes(),
        ..Default::default()
    };
    let start = Instant::now();
    let out = exec.step(prompt_ids, sampler.readback())?;
    stats.prefill_s = start.elapsed().as_secs_f64();
    stats.prefill_tok_s = prompt_ids.len() as f64 / stats.prefill_s.max(1e-9);
    if crate::kernels::argmax::is_non_finite(&out) {
        return Err(GenerateError::NonFinite {
            pos: prompt_ids.len() - 1,
        });
    }
    let mut next = sampler.pick(&out).unwrap_or(0);
    stats.ttft_s = start.elapsed().as_secs_f64();

    let mut ids = Vec::new();
    let mut dec = StreamDecoder::new();
    let mut text = String::new();
    let is_stop = |id: u32| {
        !opts.ignore_eos && (cfg.eos_token_ids.contains(&id) || opts.stop_ids.contains(&id))
    };
    let decode_start = Instant::now();
    let greedy = sampler.readback() == Readback::Argmax;
    loop {
        ids.push(next);
        if is_stop(next) {
            stats.stopped_at_eos = true;
            break;
        }
        let piece = dec.push(tok, next)?;
        if !piece.is_empty() {
            on_text(&piece);
            text.push_str(&piece);
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
                        pos: prompt_ids.len() + ids.len() - 1,
                    });
                    return false;
                }
                ids.push(id);
                if is_stop(id) {
                    stats.stopped_at_eos = true;
                    return false;
                }
                match dec.push(tok, id) {
                    Ok(piece) => {
                        if !piece.is_empty() {
                            on_text(&piece);
                            text.push_str(&piece);
                        }
                        true
                    }
                    Err(e) => {
                        failed = Some(e.into());
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
        let out = exec.step(&[next], sampler.readback())?;
        if crate::kernels::argmax::is_non_finite(&out) {
            return Err(GenerateError::NonFinite {
                pos: prompt_ids.len() + ids.len() - 1,
            });
        }
        next = sampler.pick(&out).unwrap_or(0);
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
    // Final text from all ids (equals the streamed text plus any held-back bytes).
    let full = tok.decode(&ids)?;
    if full.len() > text.len() && full.starts_with(&text) {
        let rest = &full[text.len()..];
        on_text(rest);
    }
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids,
        text: full,
        stats,
    })
}
