//! `sramlm chat`: multi-turn chat with the model's template, the KV cache kept
//! across turns.

use super::session::render_chat;
use super::{emit, RunArgs};
use anyhow::{Context, Result};
use clap::Args;
use sramlm::chat::{self, ChatError, Message};
use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

#[derive(Args, Debug)]
pub(super) struct ChatArgs {
    /// A system message for the conversation
    #[arg(long)]
    pub(super) system: Option<String>,
    #[command(flatten)]
    pub(super) run: RunArgs,
}

/// One line of chat input.
enum Input {
    Line(String),
    /// Ctrl-C at the prompt, Ctrl-D, or the end of piped input.
    Quit,
}

/// Where chat lines come from: a line editor with history on a terminal,
/// plain lines otherwise.
enum ChatInput {
    Editor(Box<rustyline::DefaultEditor>),
    Lines(std::io::StdinLock<'static>),
}

impl ChatInput {
    fn read(&mut self) -> Result<Input> {
        match self {
            ChatInput::Editor(ed) => match ed.readline("> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = ed.add_history_entry(line.as_str());
                    }
                    Ok(Input::Line(line))
                }
                Err(rustyline::error::ReadlineError::Interrupted)
                | Err(rustyline::error::ReadlineError::Eof) => {
                    // Leave the shell prompt on a line of its own.
                    eprintln!();
                    Ok(Input::Quit)
                }
                Err(e) => Err(anyhow::anyhow!("reading the terminal: {e}")),
            },
            ChatInput::Lines(stdin) => {
                let mut line = String::new();
                if stdin
                    .read_line(&mut line)
                    .context("reading standard input")?
                    == 0
                {
                    return Ok(Input::Quit);
                }
                Ok(Input::Line(line.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }
}

const CHAT_HELP: &str = "commands: /reset (forget the conversation), /system TEXT (set the system message), /help; Ctrl-C stops a reply, Ctrl-D (or Ctrl-C at the prompt) quits";

pub(super) fn run(a: ChatArgs) -> Result<()> {
    a.run.check()?;
    let mut s = a.run.session()?;
    if s.m.chat_template.is_none() {
        return Err(ChatError::NoTemplate.into());
    }
    s.opts.stop_ids = s.turn_stops();
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        let ed = rustyline::DefaultEditor::new()
            .map_err(|e| anyhow::anyhow!("cannot open the line editor: {e}"))?;
        ChatInput::Editor(Box::new(ed))
    } else {
        ChatInput::Lines(std::io::stdin().lock())
    };
    // Ctrl-C while a reply streams stops that reply (the terminal is in
    // normal mode then; at the prompt the line editor reads Ctrl-C itself).
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if interactive {
        let c = cancel.clone();
        ctrlc::set_handler(move || c.store(true, std::sync::atomic::Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
        s.opts.cancel = Some(cancel.clone());
        eprintln!(
            "chatting with {} — one message per line; /help for commands, Ctrl-D to quit",
            s.m.name
        );
    }
    let mut conv = chat::Conversation::new(a.system.clone());
    loop {
        let line = match input.read()? {
            Input::Line(l) => l,
            Input::Quit => break,
        };
        let user = line.trim();
        if user.is_empty() {
            continue;
        }
        if let Some(cmd) = user.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
            match name {
                "reset" => {
                    conv.reset();
                    eprintln!("(conversation cleared)");
                }
                "system" if !arg.trim().is_empty() => {
                    conv.system = Some(arg.trim().to_string());
                    eprintln!("(system message set)");
                }
                "system" => {
                    conv.system = None;
                    eprintln!("(system message removed: the template's default applies)");
                }
                "help" | "?" => eprintln!("{CHAT_HELP}"),
                _ => eprintln!("unknown command /{name}; {CHAT_HELP}"),
            }
            continue;
        }
        cancel.store(false, std::sync::atomic::Ordering::SeqCst);
        let m = &s.m;
        let render = |msgs: &[Message]| render_chat(m, msgs);
        let mut out = std::io::stdout().lock();
        let r = conv.turn(
            s.exec.as_mut(),
            &s.m.tokenizer,
            &s.m.config,
            &render,
            user,
            &s.opts,
            |piece| emit(&mut out, piece),
        );
        println!();
        drop(out);
        match r {
            Ok(t) => {
                if t.trimmed_turns > 0 {
                    eprintln!(
                        "(the conversation outgrew the {}-token context: the oldest {} message(s) were dropped)",
                        s.ctx, t.trimmed_turns
                    );
                }
                let st = &t.generation.stats;
                if st.cancelled {
                    eprintln!("(reply stopped)");
                } else if !st.stopped_at_eos
                    && !st.stopped_at_string
                    && t.generation.ids.len() < s.opts.max_tokens
                {
                    eprintln!(
                        "note: the reply was cut after {} tokens: the context window of {} tokens is full (--ctx)",
                        t.generation.ids.len(),
                        s.ctx
                    );
                }
                if interactive {
                    s.print_stats(&t.generation.stats);
                }
            }
            Err(e @ chat::TurnError::TooLong { .. }) if interactive => eprintln!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
