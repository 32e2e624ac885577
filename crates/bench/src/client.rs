//! The load generator: plays a plan (open loop, each request at its offset) or keeps a fixed
//! number in flight (closed loop), streaming every response and timing it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_stream::StreamExt;

use crate::workload::Planned;

/// One request's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ok: bool,
    pub status: u16,
    pub ttft: Option<Duration>,
    pub e2e: Duration,
    pub output_tokens: u64,
}

impl Outcome {
    /// Time per output token after the first.
    pub fn tpot(&self) -> Option<Duration> {
        let ttft = self.ttft?;
        (self.output_tokens > 1).then(|| (self.e2e - ttft) / (self.output_tokens as u32 - 1))
    }
}

/// Sends one streaming completion and times it.
pub async fn send(client: &reqwest::Client, url: &str, p: &Planned) -> Outcome {
    let started = Instant::now();
    let body = json!({"model": p.model, "prompt": p.prompt, "max_tokens": p.max_tokens,
        "stream": true, "stream_options": {"include_usage": true}});
    let failed = |status: u16| Outcome {
        ok: false,
        status,
        ttft: None,
        e2e: started.elapsed(),
        output_tokens: 0,
    };
    let response = match client
        .post(format!("{url}/v1/completions"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return failed(0),
    };
    let status = response.status().as_u16();
    if status != 200 {
        return failed(status);
    }
    let mut stream = response.bytes_stream();
    let mut ttft = None;
    let mut tokens = 0u64;
    let mut usage_tokens = None;
    let mut pending = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return failed(status);
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let Some(data) = text.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    usage_tokens = Some(n);
                }
                if v["choices"][0]["text"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
                {
                    tokens += 1;
                    ttft.get_or_insert_with(|| started.elapsed());
                }
            }
        }
    }
    Outcome {
        ok: ttft.is_some(),
        status,
        ttft,
        e2e: started.elapsed(),
        output_tokens: usage_tokens.unwrap_or(tokens),
    }
}

/// Open loop: every request is sent at its planned offset, whatever the earlier ones are doing.
pub async fn open_loop(url: &str, plan: &[Planned]) -> (Vec<Outcome>, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap_or_default();
    let url: Arc<str> = Arc::from(url);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(plan.len());
    for p in plan {
        let client = client.clone();
        let url = Arc::clone(&url);
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + p.offset).await;
            send(&client, &url, &p).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(o) = t.await {
            out.push(o);
        }
    }
    (out, start.elapsed())
}

/// Closed loop: `concurrency` workers send the plan's requests back to back.
pub async fn closed_loop(
    url: &str,
    plan: &[Planned],
    concurrency: usize,
) -> (Vec<Outcome>, Duration) {
    let client = reqwest::Client::new();
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        plan.to_vec(),
    )));
    let url: Arc<str> = Arc::from(url);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, queue, url) = (client.clone(), Arc::clone(&queue), Arc::clone(&url));
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some(p) = next else { break };
                out.push(send(&client, &url, &p).await);
            }
            out
        }));
    }
    let mut out = Vec::new();
    for w in workers {
        out.extend(w.await.unwrap_or_default());
    }
    (out, start.elapsed())
}
