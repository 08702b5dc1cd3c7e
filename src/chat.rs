//! Chat formatting with the model's own Jinja chat template (GGUF
//! `tokenizer.chat_template` or `tokenizer_config.json`), rendered by minijinja
//! the way transformers' `apply_chat_template` does.

use crate::exec::Executor;
use crate::generate::{generate_after, GenerateError, GenerateOptions, Generation};
use crate::model::LlamaConfig;
use crate::tokenizer::Tokenizer;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("this model has no chat template (tokenizer.chat_template); use `sramlm generate` without --chat")]
    NoTemplate,
    #[error("chat template error: {0}")]
    Template(String),
}

/// Renders `messages` with `template`; `add_generation_prompt` opens the
/// assistant's turn.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, ChatError> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(false);
    // Bounded rendering: a template with nested large loops would otherwise
    // run (and grow its output) without end. Real templates use a few
    // thousand steps per message; recursion is limited by minijinja itself.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| ChatError::Template(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| ChatError::Template(e.to_string()))?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .and_then(|text| {
        if text.len() > MAX_RENDERED_BYTES {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "the rendered chat is {} bytes, more than the {MAX_RENDERED_BYTES} allowed",
                    text.len()
                ),
            ))
        } else {
            Ok(text)
        }
    })
    .map_err(|e| {
        if e.kind() == minijinja::ErrorKind::OutOfFuel {
            ChatError::Template(format!(
                "rendering took more than {TEMPLATE_FUEL} steps (the template loops without bound)"
            ))
        } else {
            ChatError::Template(e.to_string())
        }
    })
}

/// Most minijinja instructions one chat-template rendering may run.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// Longest rendered chat, in bytes.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;
/// A conversation and the tokens of it that sit in the executor's KV cache,
/// so a new turn prefills only what changed since the last one.
#[derive(Clone, Debug, Default)]
pub struct Conversation {
    pub system: Option<String>,
    /// User and assistant turns, oldest first.
    pub turns: Vec<Message>,
    /// Ids whose keys and values the executor holds, in order (position i
    /// of the cache holds `cached[i]`).
    pub cached: Vec<u32>,
}

/// What one turn did.
#[derive(Debug)]
pub struct Turn {
    pub generation: Generation,
    /// Oldest turns dropped so the conversation fits the context.
    pub trimmed_turns: usize,
    /// Tokens of the conversation (prompt of this turn) and how many of them
    /// were already in the cache (not read again).
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("this message alone is {tokens} tokens with the system message, and the context window is {ctx} tokens (leaving room for a reply): it was not sent")]
    TooLong { tokens: usize, ctx: usize },
}

impl Conversation {
    pub fn new(system: Option<String>) -> Self {
        Conversation {
            system,
            ..Default::default()
        }
    }

    /// Every message, system first.
    pub fn messages(&self) -> Vec<Message> {
        self.system
            .iter()
            .map(|s| Message::new("system", s))
            .chain(self.turns.iter().cloned())
            .collect()
    }

    /// Forgets the turns (keeps the system message).
    pub fn reset(&mut self) {
        self.turns.clear();
    }

    /// Sends `user`, generates the reply into the conversation and returns
    /// it. `render` turns messages into the prompt text (with the assistant
    /// turn opened). Only the ids after the longest prefix shared with the
    /// cache are prefilled. When the conversation outgrows the context
    /// (with room for `min(max_tokens, ctx / 4)` reply tokens), the oldest
    /// turns are dropped. A cancelled reply is kept as far as it went.
    #[allow(clippy::too_many_arguments)]
    pub fn turn(
        &mut self,
        exec: &mut dyn Executor,
        tok: &Tokenizer,
        cfg: &LlamaConfig,
        render: &dyn Fn(&[Message]) -> Result<String, ChatError>,
        user: &str,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Turn, TurnError> {
        let ctx = exec.context_len();
        let room = opts.max_tokens.min(ctx / 4).max(1);
        self.turns.push(Message::new("user", user));
        let mut trimmed = 0;
        let ids = loop {
            let text = render(&self.messages());
            let ids = match text.map(|t| tok.encode(&t)) {
                Ok(Ok(ids)) => ids,
                Ok(Err(e)) => {
                    self.turns.pop();
                    return Err(TurnError::Generate(e.into()));
                }
                Err(e) => {
                    self.turns.pop();
                    return Err(e.into());
                }
            };
            if ids.len() + room <= ctx {
                break ids;
            }
            if self.turns.len() <= 1 {
                self.turns.pop();
                return Err(TurnError::TooLong {
                    tokens: ids.len(),
                    ctx,
                });
            }
            // The oldest exchange (a user turn and its reply).
            let n = if self.turns.len() >= 3 { 2 } else { 1 };
            self.turns.drain(..n);
            trimmed += n;
        };
        // Keep the cache up to the first id that differs; one id at least is
        // read so the step has logits to pick from.
        let mut keep = self
            .cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1)
            .min(exec.position());
        if exec.truncate(keep).is_err() {
            exec.reset();
            keep = 0;
        }
        self.cached.truncate(keep);
        let g = generate_after(exec, tok, cfg, &self.cached, &ids[keep..], opts, on_text);
        let g = match g {
            Ok(g) => g,
            Err(e) => {
                self.turns.pop();
                exec.reset();
                self.cached.clear();
                return Err(e.into());
            }
        };
        // What the cache now holds: the prompt and the picks fed back (the
        // last pick of a turn is not).
        let fed = exec.position().saturating_sub(ids.len()).min(g.ids.len());
        self.cached = ids.clone();
        self.cached.extend_from_slice(&g.ids[..fed]);
        self.turns.push(Message::new("assistant", g.text.trim()));
        Ok(Turn {
            prompt_tokens: ids.len(),
            reused_tokens: keep,
            trimmed_turns: trimmed,
            generation: g,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_default_system_prompt() {
        let out = render(
            CHATML,
            &[Message::new("user", "What is the capital of France?")],
            true,
            "",
            "",
        )
        .unwrap();
        assert_eq!(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n");
        let out = render(
            CHATML,
            &[
                Message::new("system", "Be brief."),
                Message::new("user", "Hi"),
            ],
            false,
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn template_errors_are_reported() {
        assert!(render("{% for %}", &[], true, "", "").is_err());
        let e = render("{{ raise_exception('no system role') }}", &[], true, "", "").unwrap_err();
        assert!(e.to_string().contains("no system role"));
    }
}
