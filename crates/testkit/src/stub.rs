//! A stub OpenAI/vLLM model server for tests and the demo.
//!
//! It answers completions, chat, embeddings and responses (JSON or SSE streaming), `/v1/models`,
//! `/health` and a vLLM-format `/metrics` page. The page reports either fixed values set by a
//! test, or values derived from the requests in flight (running up to `max_running`, the rest
//! waiting; KV usage proportional to the running batch; LoRA adapters in flight). Every request
//! is recorded with its exact body, and every response names the pod in `x-served-by`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Fixed metrics reported instead of the live ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StubMetrics {
    pub waiting: u32,
    pub running: u32,
    pub kv_usage: f64,
    pub max_lora: u32,
    pub running_adapters: Vec<String>,
}

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Inner {
    name: String,
    base_model: String,
    adapters: Vec<String>,
    token_delay: Duration,
    max_running: u32,
    fixed: Mutex<Option<StubMetrics>>,
    metrics_broken: std::sync::atomic::AtomicBool,
    received: Mutex<Vec<Received>>,
    in_flight: AtomicU32,
    adapters_in_flight: Mutex<Vec<String>>,
    next_id: AtomicU32,
}

/// A running stub server; stops when dropped.
#[derive(Debug)]
pub struct StubServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Options for a stub pod.
#[derive(Debug, Clone)]
pub struct StubOptions {
    pub name: String,
    pub base_model: String,
    pub adapters: Vec<String>,
    /// Time per generated token (0 in most tests).
    pub token_delay: Duration,
    /// Requests served concurrently before the rest count as waiting.
    pub max_running: u32,
}

impl StubOptions {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            base_model: "meta-llama/Llama-2-7b-hf".into(),
            adapters: Vec::new(),
            token_delay: Duration::ZERO,
            max_running: 8,
        }
    }
}

impl StubServer {
    /// Starts a stub on 127.0.0.1 with an OS-chosen port (the listener is kept, never re-bound).
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_with(StubOptions::named(name), "127.0.0.1:0".parse()?).await
    }

    pub async fn start_with(options: StubOptions, bind: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            name: options.name,
            base_model: options.base_model,
            adapters: options.adapters,
            token_delay: options.token_delay,
            max_running: options.max_running.max(1),
            fixed: Mutex::new(None),
            metrics_broken: Default::default(),
            received: Mutex::new(Vec::new()),
            in_flight: AtomicU32::new(0),
            adapters_in_flight: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(0),
        });
        let app = Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .route("/health", axum::routing::get(|| async { "" }))
            .route("/v1/models", axum::routing::get(models))
            .fallback(inference)
            // Model servers take long prompts; axum's 2 MB default would refuse them.
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Report fixed metrics from now on (`None`: live values again).
    pub fn set_metrics(&self, metrics: Option<StubMetrics>) {
        *lock(&self.inner.fixed) = metrics;
    }

    /// Make `/metrics` answer 500 (to simulate a broken or stale metrics source).
    pub fn break_metrics(&self, broken: bool) {
        self.inner.metrics_broken.store(broken, Ordering::Relaxed);
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner.received).clone()
    }

    /// Inference requests received so far (metrics and health polls excluded).
    pub fn inference_count(&self) -> usize {
        lock(&self.inner.received).len()
    }

    pub fn clear_received(&self) {
        lock(&self.inner.received).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not wedge the stub for the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn metrics(State(inner): State<Arc<Inner>>) -> Response {
    if inner.metrics_broken.load(Ordering::Relaxed) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics broken").into_response();
    }
    let m = lock(&inner.fixed).clone().unwrap_or_else(|| {
        let in_flight = inner.in_flight.load(Ordering::Relaxed);
        let running = in_flight.min(inner.max_running);
        let adapters: BTreeSet<String> = lock(&inner.adapters_in_flight).iter().cloned().collect();
        StubMetrics {
            waiting: in_flight - running,
            running,
            kv_usage: f64::from(running) / f64::from(inner.max_running),
            max_lora: 4,
            running_adapters: adapters.into_iter().collect(),
        }
    });
    let model = &inner.base_model;
    let lora = m.running_adapters.join(",");
    let page = format!(
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
         # TYPE vllm:num_requests_running gauge\n\
         vllm:num_requests_running{{engine=\"0\",model_name=\"{model}\"}} {}\n\
         # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
         # TYPE vllm:num_requests_waiting gauge\n\
         vllm:num_requests_waiting{{engine=\"0\",model_name=\"{model}\"}} {}\n\
         # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
         # TYPE vllm:kv_cache_usage_perc gauge\n\
         vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"{model}\"}} {}\n\
         # HELP vllm:lora_requests_info Running stats on lora requests.\n\
         # TYPE vllm:lora_requests_info gauge\n\
         vllm:lora_requests_info{{max_lora=\"{}\",running_lora_adapters=\"{lora}\",waiting_lora_adapters=\"{lora}\"}} {}\n",
        m.running,
        m.waiting,
        m.kv_usage,
        m.max_lora,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], page).into_response()
}

async fn models(State(inner): State<Arc<Inner>>) -> Response {
    let mut data = vec![json!({"id": inner.base_model, "object": "model", "owned_by": "vllm"})];
    for a in &inner.adapters {
        data.push(
            json!({"id": a, "object": "model", "owned_by": "vllm", "parent": inner.base_model}),
        );
    }
    served_by(
        &inner,
        axum::Json(json!({"object": "list", "data": data})).into_response(),
    )
}

fn served_by(inner: &Inner, mut response: Response) -> Response {
    if let Ok(v) = inner.name.parse() {
        response.headers_mut().insert("x-served-by", v);
    }
    response
}

/// Decrements the in-flight gauges when a request (or its stream) ends.
struct InFlight {
    inner: Arc<Inner>,
    adapter: Option<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(a) = &self.adapter {
            let mut list = lock(&self.inner.adapters_in_flight);
            if let Some(i) = list.iter().position(|x| x == a) {
                list.swap_remove(i);
            }
        }
    }
}

async fn inference(
    State(inner): State<Arc<Inner>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&inner.received).push(Received {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let err = json!({"object": "error", "message": format!("invalid JSON: {e}"), "type": "BadRequestError", "code": 400});
            return served_by(
                &inner,
                (StatusCode::BAD_REQUEST, axum::Json(err)).into_response(),
            );
        }
    };
    let model = request["model"].as_str().unwrap_or("").to_string();
    let stream = request["stream"].as_bool().unwrap_or(false);
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let max_tokens = request["max_tokens"].as_u64().unwrap_or(16).min(4096) as u32;
    let prompt_tokens = (body.len() / 4) as u64;
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);

    inner.in_flight.fetch_add(1, Ordering::Relaxed);
    let adapter = (model != inner.base_model && !model.is_empty()).then(|| model.clone());
    if let Some(a) = &adapter {
        lock(&inner.adapters_in_flight).push(a.clone());
    }
    let guard = InFlight {
        inner: Arc::clone(&inner),
        adapter,
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": max_tokens,
        "total_tokens": prompt_tokens + u64::from(max_tokens),
    });
    let path = uri.path().to_string();

    if stream {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(8);
        let delay = inner.token_delay;
        let name = inner.name.clone();
        tokio::spawn(async move {
            let _guard = guard;
            for i in 0..max_tokens {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let chunk = json!({"id": format!("cmpl-{id}"), "object": "text_completion", "model": model,
                    "choices": [{"index": 0, "text": format!("tok{i} "), "finish_reason": Value::Null}],
                    "served_by": name});
                if tx
                    .send(Ok(Bytes::from(format!("data: {chunk}\n\n"))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if include_usage {
                let chunk = json!({"id": format!("cmpl-{id}"), "object": "text_completion", "model": model, "choices": [], "usage": usage});
                let _ = tx.send(Ok(Bytes::from(format!("data: {chunk}\n\n")))).await;
            }
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        });
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(body)
            .unwrap_or_default();
        return served_by(&inner, response);
    }

    if !inner.token_delay.is_zero() {
        tokio::time::sleep(inner.token_delay * max_tokens).await;
    }
    drop(guard);
    let payload = match path.as_str() {
        "/v1/embeddings" => json!({"object": "list", "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}),
        "/v1/responses" => json!({"id": format!("resp_{id}"), "object": "response", "model": model,
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}],
            "usage": {"input_tokens": prompt_tokens, "output_tokens": max_tokens}}),
        "/v1/chat/completions" => {
            json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
            "usage": usage})
        }
        _ => json!({"id": format!("cmpl-{id}"), "object": "text_completion", "model": model,
            "choices": [{"index": 0, "text": "ok", "finish_reason": "length"}], "usage": usage}),
    };
    let mut payload = payload;
    payload["served_by"] = json!(inner.name);
    served_by(&inner, axum::Json(payload).into_response())
}
