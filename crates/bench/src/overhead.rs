//! The cost of the picker itself, in front of an instant backend (an Envoy `direct_response`
//! listener that answers every request at once and serves a vLLM metrics page):
//! (a) latency added by Envoy + Switchyard (reference and request-only wirings) over plain Envoy
//!     at fixed open-loop rates and at a fixed concurrency; (b) maximum requests/s of each front
//!     end, the peer routers included; (c) Switchyard's own decisions/s, driving ext_proc streams
//!     directly over gRPC with Switchyard pinned to one core.
//! (a) and (b) run in rounds with the fronts interleaved, so that this machine's drift hits every
//! front alike; the report keeps every round and the median.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use switchyard_extproc::proto::external_processor_client::ExternalProcessorClient;
use switchyard_extproc::proto::{HttpBody, HttpHeaders, ProcessingRequest, processing_request};
use switchyard_testkit::{EnvoyProcess, SwitchyardProcess};

use crate::arms::{self, Arm};
use crate::envoy_config;
use crate::report::quantile_ms;

const STANDARD_ENVOY: &str = include_str!("../../../deploy/local/envoy.yaml");
const REQUEST_ONLY_ENVOY: &str = include_str!("../../../deploy/local/envoy-request-only.yaml");
/// The gauges a picker reads, idle (Envoy caps direct responses at 4 KiB; the full page is 47 KB).
const METRICS_PAGE: &str = concat!(
    "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 0.0\n",
    "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 0.0\n",
    "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.0\n",
);

/// Switchyard shares the two cores with the load client and two Envoys here: one runtime thread
/// avoids cross-thread wake-ups (measured: 2 KB max req/s +20%, 200 KB @c150 p99 -40%).
const SHARED_CORE_ARGS: &[&str] = &["--worker-threads", "1"];

/// A completion body of about `size` bytes.
fn body(size: usize) -> Arc<Vec<u8>> {
    let prompt: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    Arc::new(
        format!(r#"{{"model":"tweet-summary","prompt":"{prompt}","max_tokens":1}}"#).into_bytes(),
    )
}

async fn one(client: &reqwest::Client, url: &str, body: &Arc<Vec<u8>>) -> Option<Duration> {
    let start = Instant::now();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.as_ref().clone())
        .send()
        .await
        .ok()?;
    let ok = r.status().is_success();
    r.bytes().await.ok()?;
    ok.then(|| start.elapsed())
}

/// Open loop at `rate` for `duration`: latencies of the successful requests and the failures.
async fn at_rate(
    url: &str,
    body: Arc<Vec<u8>>,
    rate: f64,
    duration: Duration,
) -> (Vec<Duration>, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap_or_default();
    let start = tokio::time::Instant::now();
    let n = (rate * duration.as_secs_f64()) as u64;
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (client, url, body) = (client.clone(), url.to_string(), Arc::clone(&body));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            one(&client, &url, &body).await
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(d) => lat.push(d),
            None => failed += 1,
        }
    }
    (lat, failed)
}

/// Closed loop with `concurrency` workers for `duration`: latencies and requests/s.
async fn at_concurrency(
    url: &str,
    body: Arc<Vec<u8>>,
    concurrency: usize,
    duration: Duration,
) -> (Vec<Duration>, f64, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap_or_default();
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.to_string(), Arc::clone(&body));
        workers.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            while start.elapsed() < duration {
                match one(&client, &url, &body).await {
                    Some(d) => lat.push(d),
                    None => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let (mut lat, mut failed) = (Vec::new(), 0);
    for w in workers {
        let (l, f) = w.await.unwrap_or_default();
        lat.extend(l);
        failed += f;
    }
    let rps = lat.len() as f64 / start.elapsed().as_secs_f64();
    (lat, rps, failed)
}

fn summary(mut lat: Vec<Duration>, failed: usize) -> Value {
    json!({"p50_ms": quantile_ms(&mut lat, 0.5), "p99_ms": quantile_ms(&mut lat, 0.99), "ok": lat.len(), "failed": failed})
}

/// ext_proc streams driven directly: one decision per stream (headers, then a 2 KB body).
async fn decisions_per_second(
    grpc: std::net::SocketAddr,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let body = body(2048);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let mut client = ExternalProcessorClient::new(channel.clone());
        let (body, done) = (Arc::clone(&body), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            while start.elapsed() < duration {
                let headers = ProcessingRequest {
                    request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
                        headers: Some(envoy_headers()),
                        end_of_stream: false,
                        ..Default::default()
                    })),
                    ..Default::default()
                };
                let body_msg = ProcessingRequest {
                    request: Some(processing_request::Request::RequestBody(HttpBody {
                        body: body.as_ref().clone(),
                        end_of_stream: true,
                        ..Default::default()
                    })),
                    ..Default::default()
                };
                let outbound = tokio_stream::iter(vec![headers, body_msg]);
                let Ok(response) = client.process(outbound).await else {
                    continue;
                };
                let mut inbound = response.into_inner();
                // Header reply + one body chunk = one decision.
                let mut replies = 0;
                while let Ok(Some(_)) = inbound.message().await {
                    replies += 1;
                    if replies == 2 {
                        break;
                    }
                }
                if replies == 2 {
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    Ok(done.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn envoy_headers() -> envoy_types::pb::envoy::config::core::v3::HeaderMap {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let h = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        raw_value: v.as_bytes().to_vec(),
        ..Default::default()
    };
    HeaderMap {
        headers: vec![
            h(":method", "POST"),
            h(":path", "/v1/completions"),
            h("content-type", "application/json"),
        ],
    }
}

/// Runs (a), (b) and (c) and returns the JSON document.
pub async fn run(switchyard_bin: &Path, seconds: u64, rounds: u32) -> anyhow::Result<Value> {
    let dir = switchyard_testkit::scratch_dir("overhead")?;
    let backend_dir = dir.join("backend");
    let plain_dir = dir.join("plain");
    let sy_dir = dir.join("switchyard");
    for d in [&backend_dir, &plain_dir, &sy_dir] {
        std::fs::create_dir_all(d)?;
    }
    let backend = EnvoyProcess::start(
        &envoy_config::direct_response_backend(METRICS_PAGE),
        0,
        &backend_dir,
    )
    .await
    .context("backend envoy")?;
    let backend_addr = backend.gateway.to_string();
    let plain = EnvoyProcess::start(
        &envoy_config::static_cluster(std::slice::from_ref(&backend_addr), "ROUND_ROBIN"),
        0,
        &plain_dir,
    )
    .await
    .context("plain envoy")?;
    let yaml = format!(
        "pool:\n  name: overhead\n  endpoints: [\"{backend_addr}\"]\nmodels:\n  - modelName: tweet-summary\n    targetModels: [{{name: tweet-summary-1}}]\n"
    );
    // Two wirings of the same picker: the reference's (request and response phases) and the
    // request-only one (deploy/local/envoy-request-only.yaml).
    let (reference, _reference_sy) =
        switchyard_front(switchyard_bin, &yaml, STANDARD_ENVOY, &sy_dir).await?;
    let (request_only, _request_only_sy) = switchyard_front(
        switchyard_bin,
        &yaml,
        REQUEST_ONLY_ENVOY,
        &dir.join("request-only"),
    )
    .await?;
    // The peer routers in front of the same backend; idle ones cost nothing while others run.
    let mut peers = Vec::new();
    let mut skipped = serde_json::Map::new();
    for arm in [
        Arm::VllmRouterPowerOfTwo,
        Arm::VllmRouterCacheAware,
        Arm::SglangRouterCacheAware,
    ] {
        let arm_dir = dir.join(arm.name());
        std::fs::create_dir_all(&arm_dir)?;
        let backends = std::slice::from_ref(&backend_addr);
        match arms::start(arm, backends, switchyard_bin, &yaml, &arm_dir).await {
            Ok(running) => peers.push((arm.name(), running)),
            Err(e) => {
                println!("{}: skipped ({e:#})", arm.name());
                skipped.insert(arm.name().to_string(), json!({"skipped": format!("{e:#}")}));
            }
        }
    }
    let duration = Duration::from_secs(seconds);
    let pickers = [
        ("envoy", plain.url()),
        ("envoy+switchyard", reference.url()),
        ("envoy+switchyard request-only", request_only.url()),
    ];
    let everyone: Vec<(&str, String)> = pickers
        .iter()
        .cloned()
        .chain(peers.iter().map(|(name, r)| (*name, r.url.clone())))
        .collect();

    // Every point is measured once per round, fronts interleaved, so that drift of this shared
    // machine hits all fronts alike; the report keeps each round and the median across rounds.
    let mut latency = Rounds::default();
    let mut max_rps = Rounds::default();
    for round in 1..=rounds {
        println!("-- round {round} of {rounds}");
        for (size_name, size) in [("2KB", 2048), ("200KB", 200 * 1024)] {
            for rate in [200.0, 1000.0] {
                for (front, url) in &pickers {
                    let (lat, failed) =
                        at_rate(&format!("{url}/v1/completions"), body(size), rate, duration).await;
                    let key = format!("{front} {size_name} @{rate} req/s");
                    latency.add(key, summary(lat, failed));
                }
            }
        }
        for (front, url) in &pickers {
            let url = format!("{url}/v1/completions");
            let (lat, rps, failed) = at_concurrency(&url, body(200 * 1024), 150, duration).await;
            let mut v = summary(lat, failed);
            v["requests_per_s"] = json!(rps);
            latency.add(format!("{front} 200KB @concurrency 150"), v);
        }
        for (front, url) in &everyone {
            let url = format!("{url}/v1/completions");
            let (_, rps, failed) = at_concurrency(&url, body(2048), 64, duration).await;
            max_rps.add(
                format!("{front} (2 KB, 64 in flight)"),
                json!({"requests_per_s": rps, "failed": failed}),
            );
        }
    }
    drop((reference, request_only, peers));
    let mut max_rps = max_rps.medians();
    max_rps.extend(skipped);

    // (c) Switchyard alone, pinned to one core with taskset.
    let pinned = pinned_switchyard(switchyard_bin, &yaml, &dir.join("pinned"))?;
    let mut pinned = pinned;
    pinned.wait_ready_pods(1).await?;
    let dps = decisions_per_second(pinned.grpc, duration, 32).await?;
    println!("switchyard decisions/s on one core (2 KB bodies, 32 streams in flight): {dps:.0}");
    Ok(json!({
        "rounds": rounds,
        "seconds_per_point": seconds,
        "latency": latency.medians(),
        "max_requests_per_s": max_rps,
        "switchyard_decisions_per_s_one_core": dps,
    }))
}

/// Per-round results of each measurement, in first-seen order.
#[derive(Default)]
struct Rounds(Vec<(String, Vec<Value>)>);

impl Rounds {
    fn add(&mut self, key: String, value: Value) {
        println!("{key}: {value}");
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value),
            None => self.0.push((key, vec![value])),
        }
    }

    /// Per key: the median of each numeric field across rounds (counts summed), plus the rounds.
    fn medians(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        for (key, values) in &self.0 {
            let mut merged = serde_json::Map::new();
            for field in ["p50_ms", "p99_ms", "requests_per_s"] {
                let mut xs: Vec<f64> = values.iter().filter_map(|v| v[field].as_f64()).collect();
                if !xs.is_empty() {
                    xs.sort_by(f64::total_cmp);
                    merged.insert(field.into(), json!(xs[xs.len() / 2]));
                }
            }
            for field in ["ok", "failed"] {
                let counts: Vec<u64> = values.iter().filter_map(|v| v[field].as_u64()).collect();
                if !counts.is_empty() {
                    merged.insert(field.into(), json!(counts.iter().sum::<u64>()));
                }
            }
            merged.insert("rounds".into(), Value::Array(values.clone()));
            println!("median {key}: {}", summary_line(&merged));
            out.insert(key.clone(), Value::Object(merged));
        }
        out
    }
}

fn summary_line(v: &serde_json::Map<String, Value>) -> String {
    let field = |k: &str| v.get(k).and_then(Value::as_f64);
    match (field("p50_ms"), field("p99_ms"), field("requests_per_s")) {
        (Some(p50), Some(p99), rps) => format!(
            "p50 {p50:.2} ms, p99 {p99:.2} ms{}",
            rps.map(|r| format!(", {r:.0} req/s")).unwrap_or_default()
        ),
        (_, _, Some(rps)) => format!("{rps:.0} req/s"),
        _ => String::new(),
    }
}

/// Switchyard plus an Envoy with `envoy_yaml` in front of it; both stop when dropped.
async fn switchyard_front(
    switchyard_bin: &Path,
    yaml: &str,
    envoy_yaml: &str,
    dir: &Path,
) -> anyhow::Result<(EnvoyProcess, SwitchyardProcess)> {
    std::fs::create_dir_all(dir)?;
    let mut sy =
        SwitchyardProcess::start_logging(switchyard_bin, yaml, SHARED_CORE_ARGS, dir, false)?;
    sy.wait_ready_pods(1).await?;
    let envoy = EnvoyProcess::start(envoy_yaml, sy.grpc.port(), dir)
        .await
        .context("envoy + switchyard")?;
    Ok((envoy, sy))
}

/// Switchyard under `taskset -c 0` (falls back to unpinned, reported, when taskset is missing).
fn pinned_switchyard(bin: &Path, yaml: &str, dir: &Path) -> anyhow::Result<SwitchyardProcess> {
    std::fs::create_dir_all(dir)?;
    let wrapper = dir.join("pinned.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec taskset -c 0 {} \"$@\"\n", bin.display()),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    SwitchyardProcess::start_logging(&wrapper, yaml, SHARED_CORE_ARGS, dir, false)
}
