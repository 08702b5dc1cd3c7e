//! `sramlm generate`: one prompt streamed, or several decoded together.

use super::chat::{self, ChatArgs};
use super::session::{NeedFn, BATCH_LIMIT, MAX_BATCH};
use super::{emit, Format, RunArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use sramlm::chat::Message;
use sramlm::generate::generate;
use sramlm::model::Model;
use std::io::Read;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct GenerateArgs {
    /// Prompt text; `-` reads it from standard input. Empty: start from BOS.
    /// Several prompts are decoded together, greedily, as a batch of
    /// sequences (VRAM: one step for all; SRAM: pipelined through the chips).
    pub(super) prompt: Vec<String>,
    /// The prompt (same as the positional PROMPT)
    #[arg(
        short = 'p',
        long = "prompt",
        value_name = "PROMPT",
        conflicts_with = "file"
    )]
    pub(super) prompt_flag: Option<String>,
    /// Read the prompt from FILE
    #[arg(short = 'f', long, value_name = "FILE")]
    pub(super) file: Option<PathBuf>,
    /// Interactive: the same as `sramlm chat` (with --system)
    #[arg(short = 'i', long, conflicts_with_all = ["chat", "format"])]
    pub(super) interactive: bool,
    /// Format the prompt as one user turn with the model's chat template
    #[arg(long)]
    pub(super) chat: bool,
    /// With --chat or -i: a system message
    #[arg(long)]
    pub(super) system: Option<String>,
    /// Output: streamed text, or one JSON object at the end
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(super) format: Format,
    #[command(flatten)]
    pub(super) run: RunArgs,
}

fn read_prompt(p: Option<&str>) -> Result<String> {
    match p {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            Ok(s.strip_suffix('\n').unwrap_or(&s).to_string())
        }
        Some(s) => Ok(s.to_string()),
        None => Ok(String::new()),
    }
}

pub(super) fn run(mut a: GenerateArgs) -> Result<()> {
    a.run.check()?;
    if a.interactive {
        if !a.prompt.is_empty() || a.prompt_flag.is_some() || a.file.is_some() {
            bail!("-i (interactive chat) takes no prompt: type the turns");
        }
        return chat::run(ChatArgs {
            system: a.system,
            run: a.run,
        });
    }
    if a.system.is_some() && !a.chat {
        bail!("--system needs --chat (or -i)");
    }
    if let Some(p) = a.prompt_flag.take() {
        if !a.prompt.is_empty() {
            bail!("give the prompt once: as -p/--prompt or as PROMPT, not both");
        }
        a.prompt.push(p);
    }
    if let Some(f) = &a.file {
        if !a.prompt.is_empty() {
            bail!("give the prompt once: as -f FILE or as PROMPT, not both");
        }
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the prompt file {}", f.display()))?;
        a.prompt
            .push(text.strip_suffix('\n').unwrap_or(&text).to_string());
    }
    if a.prompt.len() > 1 {
        return run_batch(a);
    }
    let prompt = if a.file.is_some() {
        a.prompt[0].clone()
    } else {
        read_prompt(a.prompt.first().map(|s| s.as_str()))?
    };
    // Without --chat the prompt's length is known once the tokenizer is: size
    // the KV cache to prompt + -n (a chat's template adds an unknown amount).
    let need = |m: &Model| -> Result<usize> {
        if prompt.len() > (1 << 20) {
            return Ok(usize::MAX);
        }
        Ok(m.tokenizer
            .encode(&prompt)?
            .len()
            .saturating_add(a.run.max_tokens))
    };
    let mut s = a
        .run
        .session_for(1, (!a.chat).then_some(&need as &NeedFn))?;
    let text = if a.chat {
        let mut msgs = Vec::new();
        if let Some(sys) = &a.system {
            msgs.push(Message::new("system", sys));
        }
        msgs.push(Message::new("user", &prompt));
        s.opts.stop_ids = s.turn_stops();
        s.chat_text(&msgs)?
    } else {
        prompt
    };
    let prompt_ids = s.encode(&text)?;
    s.check_prompt(&prompt_ids)?;
    let text_for_json = text.clone();
    let stream = a.format == Format::Text;
    let mut out = std::io::stdout().lock();
    let g = generate(
        s.exec.as_mut(),
        &s.m.tokenizer,
        &s.m.config,
        &prompt_ids,
        &s.opts,
        |piece| {
            if stream {
                emit(&mut out, piece);
            }
        },
    )?;
    drop(out);
    if !g.stats.stopped_at_eos
        && g.ids.len() < s.opts.max_tokens
        && g.prompt_ids.len() + g.ids.len() >= s.ctx
    {
        eprintln!(
            "\nnote: stopped after {} tokens: the context window of {} tokens is full (prompt {} + generated {}); raise --ctx for more",
            g.ids.len(),
            s.ctx,
            g.prompt_ids.len(),
            g.ids.len()
        );
    }
    match a.format {
        Format::Text => {
            println!();
            s.print_stats(&g.stats);
        }
        Format::Json => {
            let obj = serde_json::json!({
                "prompt": text_for_json,
                "prompt_ids": g.prompt_ids,
                "ids": g.ids,
                "text": g.text,
                "stats": s.stats_json(&g.stats)?,
            });
            println!("{}", serde_json::to_string(&obj)?);
        }
    }
    Ok(())
}

/// What `generate` reports for several prompts decoded together (the
/// `stats` object of `--format json`).
#[derive(serde::Serialize)]
struct BatchStats {
    mode: &'static str,
    /// Sequences decoded together.
    batch: usize,
    prefill_s: f64,
    /// Decode steps, each one token of every unfinished sequence.
    decode_rounds: usize,
    decode_s: f64,
    decode_tok_s_all_sequences: f64,
    generated_tokens: usize,
    /// The executor's own figures (SRAM mode), passed through as it reports them.
    sram: Option<sramlm::exec::sram::SramReport>,
    adapter: String,
}

/// Several prompts decoded together: in VRAM mode one matvec over all
/// sequences' rows per step; in SRAM mode each sequence is one micro-batch of
/// the chip pipeline, so chips work on different sequences in the same
/// pipeline step.
fn run_batch(a: GenerateArgs) -> Result<()> {
    if a.chat {
        bail!("--chat takes one prompt");
    }
    if a.prompt.iter().any(|p| p == "-") {
        bail!("`-` (stdin) takes one prompt");
    }
    if a.run.temperature != 0.0 {
        eprintln!("note: several prompts are decoded greedily (as with --temperature 0)");
    }
    if !a.run.stop.is_empty()
        || a.run.repeat_penalty != 1.0
        || a.run.presence_penalty != 0.0
        || a.run.frequency_penalty != 0.0
    {
        bail!("--stop and the penalties apply to one prompt at a time: pass one prompt");
    }
    let n = a.prompt.len();
    if n > MAX_BATCH {
        bail!("{n} prompts: {BATCH_LIMIT}");
    }
    // KV cache for what the run needs (each sequence's cells are visited by
    // every sequence's step, so a window-sized cache makes batches slow).
    let need = |m: &Model| -> Result<usize> {
        let mut longest = 0;
        for p in &a.prompt {
            longest = longest.max(m.tokenizer.encode(p)?.len());
        }
        Ok(longest.saturating_add(a.run.max_tokens))
    };
    let mut s = a.run.session_for(n, Some(&need))?;
    let mut prompt_ids = Vec::new();
    for p in &a.prompt {
        let ids = s.encode(p)?;
        if ids.is_empty() {
            bail!("prompt {p:?} encodes to no tokens and the model has no BOS");
        }
        s.check_prompt(&ids)?;
        prompt_ids.push(ids);
    }
    s.exec.reset();
    let t0 = std::time::Instant::now();
    let mut last = Vec::new();
    for (i, ids) in prompt_ids.iter().enumerate() {
        s.exec.select(i)?;
        match s.exec.step(ids, sramlm::exec::Readback::Argmax)? {
            sramlm::exec::StepOutput::Token { id, .. } => {
                if id == sramlm::kernels::argmax::NON_FINITE {
                    bail!(
                        "the model produced NaN or infinite logits at position {} of prompt {i}",
                        ids.len() - 1
                    );
                }
                last.push(id)
            }
            _ => bail!("prefill returned no token"),
        }
    }
    let prefill_s = t0.elapsed().as_secs_f64();
    let stop = |id: u32| !s.opts.ignore_eos && s.m.config.eos_token_ids.contains(&id);
    let mut out: Vec<Vec<u32>> = last.iter().map(|&t| vec![t]).collect();
    let mut done: Vec<bool> = last.iter().map(|&t| stop(t)).collect();
    let t1 = std::time::Instant::now();
    let mut rounds = 0usize;
    let max_pos = prompt_ids.iter().map(|p| p.len()).max().unwrap_or(0);
    while out[0].len() < s.opts.max_tokens
        && !done.iter().all(|&d| d)
        && max_pos + out[0].len() < s.ctx
    {
        last = s.exec.decode_batch(&last)?;
        if let Some(i) =
            (0..n).find(|&i| !done[i] && last[i] == sramlm::kernels::argmax::NON_FINITE)
        {
            bail!(
                "the model produced NaN or infinite logits at position {} of prompt {i}",
                prompt_ids[i].len() + out[i].len() - 1
            );
        }
        rounds += 1;
        for (i, &t) in last.iter().enumerate() {
            if !done[i] {
                out[i].push(t);
                done[i] = stop(t);
            }
        }
    }
    let decode_s = t1.elapsed().as_secs_f64();
    // (without a character the token budget cut in half)
    let texts: Vec<String> = out
        .iter()
        .map(|ids| {
            s.m.tokenizer
                .decode(ids)
                .map(|t| t.trim_end_matches('\u{FFFD}').to_string())
        })
        .collect::<Result<_, _>>()?;
    let tokens: usize = out.iter().map(|o| o.len()).sum();
    let stats = BatchStats {
        mode: s.exec.mode(),
        batch: n,
        prefill_s,
        decode_rounds: rounds,
        decode_s,
        decode_tok_s_all_sequences: if decode_s > 0.0 {
            rounds as f64 * n as f64 / decode_s
        } else {
            0.0
        },
        generated_tokens: tokens,
        sram: s.exec.sram_report(),
        adapter: s.gpu.info.name.clone(),
    };
    match a.format {
        Format::Text => {
            // The continuation only, as with one prompt.
            for (i, t) in texts.iter().enumerate() {
                println!("[{i}] {t}");
            }
            eprintln!(
                "[{}] batch {n}: {rounds} decode rounds, {:.1} tok/s over all sequences{}",
                s.exec.mode(),
                stats.decode_tok_s_all_sequences,
                s.plan.as_ref().map_or(String::new(), |p| format!(
                    " | chips {}",
                    p.totals.chips_used
                ))
            );
        }
        Format::Json => {
            let seqs: Vec<_> = (0..n)
                .map(|i| serde_json::json!({"prompt_ids": prompt_ids[i], "ids": out[i], "text": texts[i]}))
                .collect();
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({"sequences": seqs, "stats": stats}))?
            );
        }
    }
    Ok(())
}
