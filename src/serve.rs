//! `sramlm serve`: an OpenAI-compatible HTTP server (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`, `/health`) over one executor.
//!
//! The GPU work is not async: one engine thread owns the executor and runs
//! continuous batching over its resident sequences (`Executor::decode_rows`:
//! in VRAM mode all active sequences share each decode step). The axum/tokio
//! handlers only parse and validate requests and talk to the engine over
//! channels: a bounded queue of jobs (full: 429 with a JSON error) and one
//! event channel per request (text pieces, then the finish). A client that
//! goes away drops its receiver; the engine sees that at the next step and
//! frees the sequence.

use crate::chat::{self, Message};
use crate::exec::{Executor, Readback, StepOutput};
use crate::model::Model;
use crate::sampling::{Sampler, SamplingOptions};
use crate::tokenizer::StreamDecoder;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Server settings (the executor comes from the caller).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: String,
    /// 0: the system picks a free port (printed on stdout).
    pub port: u16,
    /// Requests waiting for a free sequence before new ones get 429.
    pub queue: usize,
    /// Tokens generated when a request sets no `max_tokens`.
    pub default_max_tokens: usize,
}

/// What the engine tells the handlers once the model is up.
#[derive(Clone, Debug)]
struct Info {
    model: String,
    mode: &'static str,
    ctx: usize,
    slots: usize,
}

/// Counters for `/health`.
#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    active: AtomicUsize,
    completed: AtomicU64,
    cancelled: AtomicU64,
    batched_steps: AtomicU64,
    max_rows: AtomicUsize,
}

/// The prompt of a request, before the engine tokenizes it.
enum Prompt {
    Text(String),
    Chat(Vec<Message>),
}

/// One request for the engine.
struct Job {
    prompt: Prompt,
    max_tokens: Option<usize>,
    sampling: SamplingOptions,
    stop: Vec<String>,
    ignore_eos: bool,
    events: UnboundedSender<Event>,
}

/// Engine → handler.
#[derive(Debug)]
enum Event {
    /// The prompt is in the cache: `prompt_tokens` tokens.
    Started {
        prompt_tokens: usize,
    },
    Text(String),
    Done {
        finish: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error {
        status: u16,
        message: String,
    },
}

struct Shared {
    info: Info,
    jobs: SyncSender<Job>,
    counters: Arc<Counters>,
    default_max_tokens: usize,
    /// Most requests waiting for a sequence.
    queue: usize,
    next_id: AtomicU64,
}

/// Starts the engine thread (`start` loads the model and builds the
/// executor there: executors stay on the thread that made them), binds,
/// prints `sramlm serve: listening on http://HOST:PORT` on stdout, and serves
/// until Ctrl-C.
pub fn serve<F>(opts: ServeOptions, start: F) -> anyhow::Result<()>
where
    F: FnOnce() -> anyhow::Result<(Model, Box<dyn Executor>)> + Send + 'static,
{
    if opts.queue == 0 {
        anyhow::bail!("--queue must be at least 1");
    }
    let (jobs_tx, jobs_rx) = sync_channel::<Job>(opts.queue);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<Info>>();
    let counters = Arc::new(Counters::default());
    let c2 = counters.clone();
    let engine = std::thread::Builder::new()
        .name("sramlm-engine".into())
        .spawn(move || match start() {
            Ok((m, exec)) => {
                let info = Info {
                    model: m.name.clone(),
                    mode: exec.mode(),
                    ctx: exec.context_len(),
                    slots: exec.sequences(),
                };
                let _ = ready_tx.send(Ok(info));
                Engine::new(m, exec, c2).run(jobs_rx);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })?;
    let info = match ready_rx.recv() {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("the engine thread stopped before the model was ready"),
    };
    let shared = Arc::new(Shared {
        info,
        jobs: jobs_tx,
        counters,
        default_max_tokens: opts.default_max_tokens,
        queue: opts.queue,
        next_id: AtomicU64::new(1),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", opts.host, opts.port))?;
        let addr = listener.local_addr()?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "sramlm serve: listening on http://{addr} (model {}, {} mode, {} sequences of {} tokens)",
                shared.info.model, shared.info.mode, shared.info.slots, shared.info.ctx
            )?;
            out.flush()?;
        }
        let app = router(shared);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        anyhow::Ok(())
    })?;
    // The handlers (and their job senders) are gone: the engine's queue
    // closes and it returns once its sequences finish or are cancelled.
    let _ = engine.join();
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint", "not_found") })
        .with_state(shared)
}

/// An OpenAI-style error body.
fn error(status: StatusCode, message: &str, code: &str) -> Response {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": code, "param": null}})),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, &message.into(), "invalid_request")
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let c = &s.counters;
    Json(json!({
        "status": "ok",
        "model": s.info.model,
        "mode": s.info.mode,
        "slots": s.info.slots,
        "ctx": s.info.ctx,
        "active": c.active.load(Ordering::SeqCst),
        "queued": c.queued.load(Ordering::SeqCst),
        "completed": c.completed.load(Ordering::SeqCst),
        "cancelled": c.cancelled.load(Ordering::SeqCst),
        "batched_steps": c.batched_steps.load(Ordering::SeqCst),
        "max_rows_per_step": c.max_rows.load(Ordering::SeqCst),
    }))
    .into_response()
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{"id": s.info.model, "object": "model", "created": 0, "owned_by": "sramlm"}],
    }))
    .into_response()
}

/// Parameters both endpoints take.
struct Common {
    max_tokens: Option<usize>,
    sampling: SamplingOptions,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    /// Extension (as llama.cpp's server): go on past end-of-sequence tokens.
    ignore_eos: bool,
}

fn parse_common(v: &Value) -> Result<Common, String> {
    let num = |k: &str| -> Result<Option<f64>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("`{k}` must be a number")),
        }
    };
    let uint = |k: &str| -> Result<Option<u64>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("`{k}` must be a non-negative integer")),
        }
    };
    let max_tokens = match uint("max_tokens")?.or(uint("max_completion_tokens")?) {
        Some(0) => return Err("`max_tokens` must be at least 1".to_string()),
        m => m.map(|m| m as usize),
    };
    let temperature = num("temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(format!(
            "`temperature` must be between 0 and 2, got {temperature}"
        ));
    }
    let top_p = num("top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(format!("`top_p` must be in (0, 1], got {top_p}"));
    }
    let top_k = uint("top_k")?.unwrap_or(0) as usize;
    let seed = match v.get("seed") {
        None | Some(Value::Null) => 0,
        Some(x) => x
            .as_i64()
            .map(|s| s as u64)
            .ok_or_else(|| "`seed` must be an integer".to_string())?,
    };
    if let Some(n) = uint("n")? {
        if n != 1 {
            return Err("only `n` = 1 is supported".to_string());
        }
    }
    let mut penalty = [0.0f32; 2];
    for (i, k) in ["presence_penalty", "frequency_penalty"].iter().enumerate() {
        if let Some(p) = num(k)? {
            if !(-2.0..=2.0).contains(&p) {
                return Err(format!("`{k}` must be between -2 and 2, got {p}"));
            }
            penalty[i] = p as f32;
        }
    }
    let stop = match v.get("stop") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "`stop` must be a string or an array of strings".to_string())?,
        Some(_) => return Err("`stop` must be a string or an array of strings".to_string()),
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
        return Err("`stop` takes at most 4 non-empty strings".to_string());
    }
    let stream = match v.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`stream` must be true or false".to_string()),
    };
    let include_usage = v
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ignore_eos = match v.get("ignore_eos") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`ignore_eos` must be true or false".to_string()),
    };
    Ok(Common {
        ignore_eos,
        max_tokens,
        sampling: SamplingOptions {
            temperature: temperature as f32,
            top_k,
            top_p: top_p as f32,
            seed,
            presence_penalty: penalty[0],
            frequency_penalty: penalty[1],
            ..Default::default()
        },
        stop,
        stream,
        include_usage,
    })
}

fn parse_body(body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    if !v.is_object() {
        return Err("the request body must be a JSON object".to_string());
    }
    Ok(v)
}

async fn completions(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    let prompt = match v.get("prompt") {
        Some(Value::String(p)) => p.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(_)) => {
            return bad("`prompt` must be one string (batches of prompts: one request each)")
        }
        _ => return bad("`prompt` (a string) is required"),
    };
    let c = match parse_common(&v) {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    run_request(s, Prompt::Text(prompt), c, false).await
}

async fn chat_completions(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    let Some(Value::Array(msgs)) = v.get("messages") else {
        return bad("`messages` (an array) is required");
    };
    let mut messages = Vec::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str);
        let content = match m.get("content") {
            Some(Value::String(t)) => Some(t.clone()),
            // Content parts: the text ones, joined.
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("text") => p.get("text").and_then(Value::as_str).map(str::to_string),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat()),
            Some(Value::Null) | None => Some(String::new()),
            _ => None,
        };
        match (role, content) {
            (Some(r), Some(c)) => messages.push(Message::new(r, &c)),
            _ => return bad("each message needs a `role` and a text `content`"),
        }
    }
    if messages.is_empty() {
        return bad("`messages` is empty");
    }
    let c = match parse_common(&v) {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    run_request(s, Prompt::Chat(messages), c, true).await
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Queues the job, waits for the prefill (so prompt errors are HTTP
/// errors), then streams or collects the answer.
async fn run_request(s: Arc<Shared>, prompt: Prompt, c: Common, chat: bool) -> Response {
    let (tx, mut rx) = unbounded_channel();
    let job = Job {
        prompt,
        max_tokens: Some(c.max_tokens.unwrap_or(s.default_max_tokens)),
        sampling: c.sampling.clone(),
        stop: c.stop.clone(),
        ignore_eos: c.ignore_eos,
        events: tx,
    };
    s.counters.queued.fetch_add(1, Ordering::SeqCst);
    match s.jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            s.counters.queued.fetch_sub(1, Ordering::SeqCst);
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "the server is busy: {} sequences decoding and the queue of {} requests is full; retry later",
                    s.info.slots,
                    s.queue
                ),
                "queue_full",
            );
        }
        Err(TrySendError::Disconnected(_)) => {
            s.counters.queued.fetch_sub(1, Ordering::SeqCst);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the engine has stopped",
                "engine_stopped",
            );
        }
    }
    let n = s.next_id.fetch_add(1, Ordering::SeqCst);
    let id = if chat {
        format!("chatcmpl-{n}")
    } else {
        format!("cmpl-{n}")
    };
    let created = now_s();
    let model = s.info.model.clone();
    // The first event: the prompt is in (or it was refused).
    let prompt_tokens = match rx.recv().await {
        Some(Event::Started { prompt_tokens }) => prompt_tokens,
        Some(Event::Error { status, message }) => {
            let st = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(
                st,
                &message,
                if st.is_server_error() {
                    "engine_error"
                } else {
                    "invalid_request"
                },
            );
        }
        _ => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the engine dropped the request",
                "engine_error",
            )
        }
    };
    let fmt = Format {
        id,
        created,
        model,
        chat,
    };
    if c.stream {
        let include_usage = c.include_usage;
        let mut first = chat.then(|| fmt.chunk(Some("assistant"), Some(""), None));
        let events = futures_util::stream::unfold((rx, false), move |(mut rx, done)| {
            let head = first.take();
            let fmt = fmt.clone();
            async move {
                if let Some(h) = head {
                    return Some((vec![h], (rx, false)));
                }
                if done {
                    return None;
                }
                let out: Vec<String> = match rx.recv().await {
                    Some(Event::Text(t)) => vec![fmt.chunk(None, Some(&t), None)],
                    Some(Event::Done {
                        finish,
                        prompt_tokens,
                        completion_tokens,
                    }) => {
                        let mut v = vec![fmt.chunk(None, None, Some(finish))];
                        if include_usage {
                            v.push(fmt.usage_chunk(prompt_tokens, completion_tokens));
                        }
                        v.push("[DONE]".into());
                        return Some((v, (rx, true)));
                    }
                    Some(Event::Error { message, .. }) => {
                        let e = json!({"error": {"message": message, "type": "server_error", "code": "engine_error"}});
                        return Some((vec![e.to_string(), "[DONE]".into()], (rx, true)));
                    }
                    Some(Event::Started { .. }) => vec![],
                    None => return None,
                };
                Some((out, (rx, false)))
            }
        });
        use futures_util::StreamExt;
        let sse = events
            .map(|v| {
                futures_util::stream::iter(
                    v.into_iter()
                        .map(|d| Ok::<_, std::convert::Infallible>(SseEvent::default().data(d))),
                )
            })
            .flatten();
        return Sse::new(sse)
            .keep_alive(KeepAlive::default())
            .into_response();
    }
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done {
                finish,
                completion_tokens,
                ..
            }) => {
                return Json(fmt.whole(&text, finish, prompt_tokens, completion_tokens))
                    .into_response()
            }
            Some(Event::Error { message, .. }) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, &message, "engine_error")
            }
            Some(Event::Started { .. }) => {}
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the engine dropped the request",
                    "engine_error",
                )
            }
        }
    }
}

/// Response bodies in the OpenAI shapes.
#[derive(Clone)]
struct Format {
    id: String,
    created: u64,
    model: String,
    chat: bool,
}

impl Format {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, true) => "chat.completion.chunk",
            (true, false) => "chat.completion",
            (false, _) => "text_completion",
        }
    }

    fn chunk(&self, role: Option<&str>, text: Option<&str>, finish: Option<&str>) -> String {
        let choice = if self.chat {
            let mut delta = serde_json::Map::new();
            if let Some(r) = role {
                delta.insert("role".into(), json!(r));
            }
            if let Some(t) = text {
                delta.insert("content".into(), json!(t));
            }
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice],
        })
        .to_string()
    }

    fn usage(p: usize, c: usize) -> Value {
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }

    fn usage_chunk(&self, p: usize, c: usize) -> String {
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [], "usage": Self::usage(p, c),
        })
        .to_string()
    }

    fn whole(&self, text: &str, finish: &str, p: usize, c: usize) -> Value {
        let choice = if self.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
        };
        json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "choices": [choice], "usage": Self::usage(p, c),
        })
    }
}

/// A sequence being decoded.
struct Active {
    events: UnboundedSender<Event>,
    sampler: Sampler,
    /// Prompt and generated ids (the penalties look at the last ones).
    history: Vec<u32>,
    stop: Vec<String>,
    ignore_eos: bool,
    max_tokens: usize,
    prompt_tokens: usize,
    /// The token to feed next.
    last: u32,
    generated: usize,
    decoder: StreamDecoder,
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
}

struct Engine {
    m: Model,
    exec: Box<dyn Executor>,
    counters: Arc<Counters>,
    stop_ids: Vec<u32>,
    slots: Vec<Option<Active>>,
}

impl Engine {
    fn new(m: Model, exec: Box<dyn Executor>, counters: Arc<Counters>) -> Self {
        let mut stop_ids = m.config.eos_token_ids.clone();
        // End-of-turn tokens of chat models.
        stop_ids.extend(
            ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"]
                .iter()
                .filter_map(|t| m.tokenizer.token_to_id(t)),
        );
        let n = exec.sequences();
        Engine {
            m,
            exec,
            counters,
            stop_ids,
            slots: (0..n).map(|_| None).collect(),
        }
    }

    fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    fn run(mut self, jobs: Receiver<Job>) {
        let mut open = true;
        loop {
            // Admit queued jobs into free slots (block only when idle).
            while open {
                let Some(free) = self.slots.iter().position(|s| s.is_none()) else {
                    break;
                };
                let job = if self.active() == 0 {
                    match jobs.recv() {
                        Ok(j) => j,
                        Err(_) => {
                            open = false;
                            break;
                        }
                    }
                } else {
                    match jobs.try_recv() {
                        Ok(j) => j,
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                };
                self.counters.queued.fetch_sub(1, Ordering::SeqCst);
                if job.events.is_closed() {
                    self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                self.admit(free, job);
            }
            if !open && self.active() == 0 {
                return;
            }
            self.decode_round();
        }
    }

    fn prompt_ids(&self, p: &Prompt) -> Result<Vec<u32>, String> {
        let text = match p {
            Prompt::Text(t) => t.clone(),
            Prompt::Chat(msgs) => match &self.m.chat_template {
                Some(t) => {
                    let tok = |id: Option<u32>| {
                        id.and_then(|i| self.m.tokenizer.id_to_token(i))
                            .unwrap_or_default()
                    };
                    chat::render(
                        t,
                        msgs,
                        true,
                        &tok(self.m.config.bos_token_id),
                        &tok(self.m.config.eos_token_ids.first().copied()),
                    )
                    .map_err(|e| e.to_string())?
                }
                // No template (e.g. stories260K): the contents, one per line.
                None => msgs
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            },
        };
        self.m.tokenizer.encode(&text).map_err(|e| e.to_string())
    }

    /// Prefills `job`'s prompt into sequence `slot` and picks its first token.
    fn admit(&mut self, slot: usize, job: Job) {
        let fail = |status: u16, message: String| {
            let _ = job.events.send(Event::Error { status, message });
        };
        let ids = match self.prompt_ids(&job.prompt) {
            Ok(ids) => ids,
            Err(e) => return fail(400, format!("cannot tokenize the prompt: {e}")),
        };
        let ctx = self.exec.context_len();
        if ids.is_empty() {
            return fail(
                400,
                "the prompt encodes to no tokens and the model has no BOS".into(),
            );
        }
        if ids.len() >= ctx {
            return fail(
                400,
                format!(
                    "the prompt has {} tokens; this server's context is {ctx} tokens per sequence (one more is needed to answer)",
                    ids.len()
                ),
            );
        }
        let mut sampler = Sampler::new(job.sampling.clone());
        let rb = if sampler.opts.is_greedy() && !sampler.opts.has_penalties() {
            Readback::Argmax
        } else {
            Readback::LastLogits
        };
        let out = self
            .exec
            .select(slot)
            .and_then(|_| self.exec.truncate(0))
            .and_then(|_| self.exec.step(&ids, rb));
        let first = match out {
            Ok(o) if crate::kernels::argmax::is_non_finite(&o) => {
                return fail(500, non_finite(ids.len() - 1));
            }
            Ok(o) => pick(&mut sampler, &o, &ids),
            Err(e) => return fail(500, format!("prefill failed: {e}")),
        };
        let _ = job.events.send(Event::Started {
            prompt_tokens: ids.len(),
        });
        self.counters.active.fetch_add(1, Ordering::SeqCst);
        let mut a = Active {
            events: job.events,
            sampler,
            history: ids.clone(),
            stop: job.stop,
            ignore_eos: job.ignore_eos,
            max_tokens: job.max_tokens.unwrap_or(usize::MAX),
            prompt_tokens: ids.len(),
            last: first,
            generated: 0,
            decoder: StreamDecoder::new(),
            text: String::new(),
            sent: 0,
        };
        let pos = self.exec.position();
        match a.accept(first, &self.m, &self.stop_ids, pos, ctx) {
            Some(finish) => self.finish(a, finish),
            None => self.slots[slot] = Some(a),
        }
    }

    fn finish(&self, a: Active, finish: Option<&'static str>) {
        self.counters.active.fetch_sub(1, Ordering::SeqCst);
        match finish {
            Some(f) => {
                let _ = a.events.send(Event::Done {
                    finish: f,
                    prompt_tokens: a.prompt_tokens,
                    completion_tokens: a.generated,
                });
                self.counters.completed.fetch_add(1, Ordering::SeqCst);
            }
            None => {
                self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// One decode step for every active sequence together.
    fn decode_round(&mut self) {
        // Clients that went away: free their sequences.
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|a| a.events.is_closed()) {
                let a = self.slots[i].take().unwrap();
                self.finish(a, None);
            }
        }
        let rows: Vec<(usize, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|a| (i, a.last)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let greedy = rows.iter().all(|r| {
            self.slots[r.0]
                .as_ref()
                .is_some_and(|a| a.sampler.opts.is_greedy() && !a.sampler.opts.has_penalties())
        });
        let rb = if greedy {
            Readback::Argmax
        } else {
            Readback::LastLogits
        };
        let outs = match self.exec.decode_rows(&rows, rb) {
            Ok(o) => o,
            Err(e) => {
                for (i, _) in &rows {
                    if let Some(a) = self.slots[*i].take() {
                        let _ = a.events.send(Event::Error {
                            status: 500,
                            message: format!("decode failed: {e}"),
                        });
                        self.counters.active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                return;
            }
        };
        self.counters.batched_steps.fetch_add(1, Ordering::SeqCst);
        self.counters
            .max_rows
            .fetch_max(rows.len(), Ordering::SeqCst);
        let ctx = self.exec.context_len();
        for ((slot, _), out) in rows.iter().zip(outs) {
            let Some(mut a) = self.slots[*slot].take() else {
                continue;
            };
            let pos = self
                .exec
                .select(*slot)
                .map_or(ctx, |_| self.exec.position());
            if crate::kernels::argmax::is_non_finite(&out) {
                let _ = a.events.send(Event::Error {
                    status: 500,
                    message: non_finite(pos.saturating_sub(1)),
                });
                self.counters.active.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let id = pick(&mut a.sampler, &out, &a.history);
            match a.accept(id, &self.m, &self.stop_ids, pos, ctx) {
                Some(f) => self.finish(a, f),
                None => self.slots[*slot] = Some(a),
            }
        }
    }
}

/// The next id from a step's read-back, with the request's penalties
/// applied to the logit row on the CPU (batched steps read logits back
/// whenever a request has penalties).
fn pick(s: &mut Sampler, out: &StepOutput, history: &[u32]) -> u32 {
    let penalties = s.opts.penalties(history);
    s.pick_with(out, &penalties).unwrap_or(0)
}

fn non_finite(pos: usize) -> String {
    format!("the model produced NaN or infinite logits at position {pos}; no token can be chosen from them")
}

impl Active {
    /// Takes the picked token `id` (the cache holds `pos` tokens; `id` would
    /// go in at position `pos`). Returns `None` while the sequence goes on,
    /// `Some(Some("stop" | "length"))` when it ends, `Some(None)` when the
    /// client went away.
    fn accept(
        &mut self,
        id: u32,
        m: &Model,
        stop_ids: &[u32],
        pos: usize,
        ctx: usize,
    ) -> Option<Option<&'static str>> {
        if !self.ignore_eos && stop_ids.contains(&id) {
            return Some(self.flush("stop"));
        }
        self.generated += 1;
        self.last = id;
        self.history.push(id);
        let piece = self.decoder.push(&m.tokenizer, id).unwrap_or_default();
        self.text.push_str(&piece);
        // Stop strings: cut at the first one; hold back a tail that could
        // still become one.
        let from = self.sent;
        let hit = self
            .stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(end) = hit {
            self.text.truncate(end);
            return Some(self.flush("stop"));
        }
        if self.generated >= self.max_tokens || pos >= ctx {
            return Some(self.flush("length"));
        }
        let mut hold = 0;
        for s in &self.stop {
            for k in (1..s.len()).rev() {
                if k <= self.text.len() - from
                    && s.is_char_boundary(k)
                    && self.text.ends_with(&s[..k])
                {
                    hold = hold.max(k);
                    break;
                }
            }
        }
        let upto = self.text.len() - hold;
        if upto > self.sent {
            let t = self.text[self.sent..upto].to_string();
            self.sent = upto;
            if self.events.send(Event::Text(t)).is_err() {
                return Some(None);
            }
        }
        None
    }

    /// Sends what is left of the text; the finish reason, or `None` if the
    /// client is gone.
    fn flush(&mut self, finish: &'static str) -> Option<&'static str> {
        if self.text.len() > self.sent {
            let t = self.text[self.sent..].to_string();
            self.sent = self.text.len();
            if self.events.send(Event::Text(t)).is_err() {
                return None;
            }
        }
        Some(finish)
    }
}
