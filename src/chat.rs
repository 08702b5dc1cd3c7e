//! Chat formatting with the model's own Jinja chat template (GGUF
//! `tokenizer.chat_template` or `tokenizer_config.json`), rendered by minijinja
//! the way transformers' `apply_chat_template` does.

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
