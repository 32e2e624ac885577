//! One simulated pod behind vLLM's OpenAI HTTP API: a driver task runs the engine in real time
//! (virtual seconds / speed factor) and hands each request its tokens as the steps complete.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::engine::{Engine, EngineConfig, Event, RequestId, RequestSpec, prompt_block_hashes};
use crate::metrics::{LoraHistory, MetricsFlavor, render};

/// Everything that describes one simulated pod.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// Reported in the `x-served-by` header.
    pub name: String,
    /// The base model's name in the API (`--served-model-name`, else `--model`).
    pub served_model_name: String,
    pub engine: EngineConfig,
    /// Virtual seconds per real second (1 = real GPU speed).
    pub speed: f64,
    pub flavor: MetricsFlavor,
    pub gpu_memory_utilization: f64,
    /// `--num-gpu-blocks-override`, reported in `cache_config_info`.
    pub num_gpu_blocks_override: Option<u32>,
    pub enable_lora: bool,
    /// Adapters loaded at start (`--lora-modules name=path`).
    pub lora_modules: Vec<(String, String)>,
    pub seed: u64,
}

struct PodState {
    engine: Engine,
    waiters: HashMap<RequestId, mpsc::UnboundedSender<Event>>,
    adapters: Vec<(String, String)>,
    lora_history: LoraHistory,
}

struct PodInner {
    config: PodConfig,
    state: Mutex<PodState>,
    work: Notify,
    started: Instant,
    started_unix: f64,
}

impl PodInner {
    fn lock(&self) -> MutexGuard<'_, PodState> {
        // The state stays consistent between statements; a panicked holder cannot leave it
        // half-written in a way later steps would trip on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn virtual_now(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.config.speed
    }

    fn record_lora(&self, st: &mut PodState) {
        if self.config.enable_lora {
            let (running, active) = st.engine.lora_state();
            let unix = self.started_unix + st.engine.now() / self.config.speed;
            st.lora_history.record(&running, &active, unix);
        }
    }
}

/// A running pod: HTTP server plus engine driver. Stops when dropped.
pub struct Pod {
    addr: SocketAddr,
    inner: Arc<PodInner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Pod {
    /// Binds `addr` (port 0 allowed) and starts serving.
    /// An empty `config.name` becomes the bound address.
    pub async fn start(mut config: PodConfig, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        if config.name.is_empty() {
            config.name = addr.to_string();
        }
        let engine = Engine::new(config.engine.clone());
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let inner = Arc::new(PodInner {
            state: Mutex::new(PodState {
                engine,
                waiters: HashMap::new(),
                adapters: config.lora_modules.clone(),
                lora_history: LoraHistory::default(),
            }),
            config,
            work: Notify::new(),
            started: Instant::now(),
            started_unix,
        });
        {
            let mut st = inner.lock();
            inner.record_lora(&mut st);
        }
        let app = Router::new()
            .route("/v1/completions", axum::routing::post(completions))
            .route(
                "/v1/chat/completions",
                axum::routing::post(chat_completions),
            )
            .route("/v1/models", axum::routing::get(models))
            .route("/v1/load_lora_adapter", axum::routing::post(load_lora))
            .route("/v1/unload_lora_adapter", axum::routing::post(unload_lora))
            .route("/health", axum::routing::get(|| async { StatusCode::OK }))
            .route("/metrics", axum::routing::get(metrics))
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(Arc::clone(&inner));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let driver = tokio::spawn(drive(Arc::clone(&inner)));
        Ok(Self {
            addr,
            inner,
            tasks: vec![server, driver],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }
}

/// The engine loop: run a step, wait out its (scaled) duration, deliver its tokens.
async fn drive(inner: Arc<PodInner>) {
    loop {
        loop {
            let notified = inner.work.notified();
            if !inner.lock().engine.is_idle() {
                break;
            }
            notified.await;
        }
        let step_started = Instant::now();
        let outcome = {
            let mut st = inner.lock();
            let now = inner.virtual_now();
            st.engine.advance_to(now);
            let outcome = st.engine.step();
            inner.record_lora(&mut st);
            outcome
        };
        let Some(outcome) = outcome else { continue };
        tokio::time::sleep_until(
            step_started + Duration::from_secs_f64(outcome.duration / inner.config.speed),
        )
        .await;
        let mut st = inner.lock();
        for event in outcome.events {
            let (id, last) = match &event {
                Event::Token { id, .. } => (*id, false),
                Event::Finished { id, .. } | Event::Aborted { id, .. } => (*id, true),
            };
            let delivered = st.waiters.get(&id).is_some_and(|tx| tx.send(event).is_ok());
            if last || !delivered {
                st.waiters.remove(&id);
                if !delivered {
                    st.engine.abort(id); // the client went away
                }
            }
        }
        inner.record_lora(&mut st);
    }
}

/// A vLLM-style error body, built into a response at the edge.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn bad(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "BadRequestError",
            message,
        }
    }

    fn into_response(self) -> Response {
        error(self.status, self.kind, self.message)
    }
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = json!({"object": "error", "message": message, "type": kind, "param": Value::Null, "code": status.as_u16()});
    (status, axum::Json(body)).into_response()
}

fn served_by(inner: &PodInner, mut r: Response) -> Response {
    if let Ok(v) = inner.config.name.parse() {
        r.headers_mut().insert("x-served-by", v);
    }
    r
}

/// Text of a completion `prompt` (string, list of strings, token ids or lists of them).
fn prompt_text(prompt: &Value) -> Option<Vec<u8>> {
    match prompt {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(items) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<String>()
                .into_bytes(),
        ),
        // Token ids: 4 bytes each keeps the shared token rule.
        Value::Array(items) if items.iter().all(Value::is_u64) => Some(
            items
                .iter()
                .filter_map(Value::as_u64)
                .flat_map(|t| (t as u32).to_le_bytes())
                .collect(),
        ),
        Value::Array(items) if items.iter().all(Value::is_array) => {
            Some(items.iter().filter_map(prompt_text).flatten().collect())
        }
        _ => None,
    }
}

/// Text of chat `messages` as a chat template would lay it out.
fn chat_text(messages: &Value) -> Option<Vec<u8>> {
    let mut text = String::new();
    for m in messages.as_array()? {
        let role = m.get("role")?.as_str()?;
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            Some(Value::Null) | None => String::new(),
            _ => return None,
        };
        text.push_str("<|");
        text.push_str(role);
        text.push_str("|>\n");
        text.push_str(&content);
        text.push('\n');
    }
    text.push_str("<|assistant|>\n");
    Some(text.into_bytes())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Completions,
    Chat,
}

async fn completions(State(inner): State<Arc<PodInner>>, body: Bytes) -> Response {
    generate(inner, body, Api::Completions).await
}

async fn chat_completions(State(inner): State<Arc<PodInner>>, body: Bytes) -> Response {
    generate(inner, body, Api::Chat).await
}

async fn generate(inner: Arc<PodInner>, body: Bytes, api: Api) -> Response {
    let response = match admit(&inner, &body, api) {
        Ok(admitted) => respond(&inner, admitted, api).await,
        Err(e) => e.into_response(),
    };
    served_by(&inner, response)
}

struct Admitted {
    id: RequestId,
    rx: mpsc::UnboundedReceiver<Event>,
    model: String,
    stream: bool,
    include_usage: bool,
}

fn admit(inner: &PodInner, body: &[u8], api: Api) -> Result<Admitted, ApiError> {
    let bad = ApiError::bad;
    let request: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON body: {e}")))?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Field required: model".into()))?
        .to_string();
    let text = match api {
        Api::Completions => request.get("prompt").and_then(prompt_text).ok_or_else(|| {
            bad("Field required: prompt (a string, list of strings or token ids)".into())
        })?,
        Api::Chat => request
            .get("messages")
            .and_then(chat_text)
            .ok_or_else(|| bad("Field required: messages (a list of {role, content})".into()))?,
    };
    let cfg = &inner.config;
    let mut st = inner.lock();
    let adapter = if model == cfg.served_model_name {
        None
    } else if st.adapters.iter().any(|(n, _)| *n == model) {
        Some(model.clone())
    } else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "NotFoundError",
            message: format!("The model `{model}` does not exist."),
        });
    };
    let prompt_tokens = switchyard_openai::tokens::estimate_tokens(text.len()).max(1) as u32;
    let max_len = cfg.engine.max_model_len;
    let max_tokens = match request
        .get("max_tokens")
        .or(request.get("max_completion_tokens"))
    {
        None | Some(Value::Null) => match api {
            Api::Completions => 16,
            Api::Chat => max_len.saturating_sub(prompt_tokens),
        },
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n.min(u64::from(u32::MAX)) as u32,
            _ => return Err(bad(format!("max_tokens must be at least 1, got {v}."))),
        },
    };
    if u64::from(prompt_tokens) + u64::from(max_tokens) > u64::from(max_len) {
        return Err(bad(format!(
            "This model's maximum context length is {max_len} tokens. However, you requested {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
            u64::from(prompt_tokens) + u64::from(max_tokens)
        )));
    }
    let spec = RequestSpec {
        block_hashes: if cfg.engine.enable_prefix_caching {
            prompt_block_hashes(&text, cfg.engine.block_size, adapter.as_deref())
        } else {
            Vec::new()
        },
        adapter,
        prompt_tokens,
        max_tokens,
    };
    let now = inner.virtual_now();
    if st.engine.is_idle() {
        st.engine.advance_to(now);
    }
    let id = st.engine.add_request(spec);
    let (tx, rx) = mpsc::unbounded_channel();
    st.waiters.insert(id, tx);
    inner.record_lora(&mut st);
    drop(st);
    inner.work.notify_one();
    Ok(Admitted {
        id,
        rx,
        model,
        stream: request
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        include_usage: request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Deterministic filler text for token `index`.
fn token_text(seed: u64, index: u32) -> &'static str {
    const WORDS: [&str; 8] = [
        " the", " model", " serves", " tokens", " with", " care", " and", " speed",
    ];
    WORDS[((seed
        .wrapping_add(u64::from(index))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15))
        >> 61) as usize]
}

fn usage_json(prompt: u32, completion: u32, cached: u32) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

async fn respond(inner: &PodInner, mut a: Admitted, api: Api) -> Response {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rid = match api {
        Api::Completions => format!("cmpl-{}-{}", inner.config.name, a.id),
        Api::Chat => format!("chatcmpl-{}-{}", inner.config.name, a.id),
    };
    let seed = inner.config.seed ^ a.id;
    if !a.stream {
        let mut text = String::new();
        while let Some(event) = a.rx.recv().await {
            match event {
                Event::Token { index, .. } => text.push_str(token_text(seed, index)),
                Event::Finished {
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                    ..
                } => {
                    let usage = usage_json(prompt_tokens, completion_tokens, cached_tokens);
                    let body = match api {
                        Api::Completions => {
                            json!({"id": rid, "object": "text_completion", "created": created, "model": a.model,
                            "choices": [{"index": 0, "text": text, "logprobs": Value::Null, "finish_reason": "length", "stop_reason": Value::Null}],
                            "usage": usage})
                        }
                        Api::Chat => {
                            json!({"id": rid, "object": "chat.completion", "created": created, "model": a.model,
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": Value::Null, "finish_reason": "length"}],
                            "usage": usage})
                        }
                    };
                    return axum::Json(body).into_response();
                }
                Event::Aborted { reason, .. } => {
                    return error(StatusCode::BAD_REQUEST, "BadRequestError", reason);
                }
            }
        }
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "engine stopped".into(),
        );
    }

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let model = a.model.clone();
    let include_usage = a.include_usage;
    tokio::spawn(async move {
        let sse = |v: Value| Ok(Bytes::from(format!("data: {v}\n\n")));
        while let Some(event) = a.rx.recv().await {
            let chunk = match event {
                Event::Token { index, .. } => {
                    let text = token_text(seed, index);
                    match api {
                        Api::Completions => {
                            json!({"id": rid, "object": "text_completion", "created": created, "model": model,
                            "choices": [{"index": 0, "text": text, "logprobs": Value::Null, "finish_reason": Value::Null}]})
                        }
                        Api::Chat => {
                            let delta = if index == 0 {
                                json!({"role": "assistant", "content": text})
                            } else {
                                json!({"content": text})
                            };
                            json!({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                                "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": Value::Null}]})
                        }
                    }
                }
                Event::Finished {
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                    ..
                } => {
                    let object = if api == Api::Chat {
                        "chat.completion.chunk"
                    } else {
                        "text_completion"
                    };
                    let finish = match api {
                        Api::Completions => {
                            json!({"index": 0, "text": "", "logprobs": Value::Null, "finish_reason": "length"})
                        }
                        Api::Chat => {
                            json!({"index": 0, "delta": {}, "logprobs": Value::Null, "finish_reason": "length"})
                        }
                    };
                    let _ = tx.send(sse(json!({"id": rid, "object": object, "created": created, "model": model, "choices": [finish]}))).await;
                    if include_usage {
                        let usage = usage_json(prompt_tokens, completion_tokens, cached_tokens);
                        let _ = tx.send(sse(json!({"id": rid, "object": object, "created": created, "model": model, "choices": [], "usage": usage}))).await;
                    }
                    let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
                    return;
                }
                Event::Aborted { reason, .. } => {
                    json!({"object": "error", "message": reason, "type": "BadRequestError", "code": 400})
                }
            };
            if tx.send(sse(chunk)).await.is_err() {
                return; // client went away; the driver aborts the request on the next token
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_default()
}

async fn models(State(inner): State<Arc<PodInner>>) -> Response {
    let cfg = &inner.config;
    let mut data = vec![
        json!({"id": cfg.served_model_name, "object": "model", "owned_by": "vllm",
        "root": cfg.served_model_name, "parent": Value::Null, "max_model_len": cfg.engine.max_model_len}),
    ];
    for (name, path) in &inner.lock().adapters {
        data.push(json!({"id": name, "object": "model", "owned_by": "vllm", "root": path, "parent": cfg.served_model_name}));
    }
    served_by(
        &inner,
        axum::Json(json!({"object": "list", "data": data})).into_response(),
    )
}

async fn load_lora(State(inner): State<Arc<PodInner>>, body: Bytes) -> Response {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "BadRequestError", m);
    if !inner.config.enable_lora {
        return bad("LoRA is not enabled (start with --enable-lora).".into());
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return bad("Invalid JSON body".into());
    };
    let (Some(name), Some(path)) = (v["lora_name"].as_str(), v["lora_path"].as_str()) else {
        return bad("Both 'lora_name' and 'lora_path' must be provided.".into());
    };
    let mut st = inner.lock();
    if st.adapters.iter().any(|(n, _)| n == name) {
        return bad(format!(
            "The lora adapter '{name}' has already been loaded."
        ));
    }
    st.adapters.push((name.to_string(), path.to_string()));
    format!("Success: LoRA adapter '{name}' added successfully.").into_response()
}

async fn unload_lora(State(inner): State<Arc<PodInner>>, body: Bytes) -> Response {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "BadRequestError", m);
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return bad("Invalid JSON body".into());
    };
    let Some(name) = v["lora_name"].as_str() else {
        return bad("'lora_name' must be provided.".into());
    };
    let mut st = inner.lock();
    let before = st.adapters.len();
    st.adapters.retain(|(n, _)| n != name);
    if st.adapters.len() == before {
        return error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            format!("The lora adapter '{name}' cannot be found."),
        );
    }
    format!("Success: LoRA adapter '{name}' removed successfully.").into_response()
}

async fn metrics(State(inner): State<Arc<PodInner>>) -> Response {
    let cfg = &inner.config;
    let st = inner.lock();
    let page = render(
        &st.engine,
        &cfg.served_model_name,
        cfg.flavor,
        &st.lora_history,
        if cfg.enable_lora {
            cfg.engine.max_loras
        } else {
            0
        },
        cfg.gpu_memory_utilization,
        cfg.num_gpu_blocks_override,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
        .into_response()
}
