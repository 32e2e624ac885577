//! Criterion benches of the per-request hot paths: parse-and-decide for a whole request (body
//! parse, traffic split, scheduling, model splice), the body parser and rewrite alone, the
//! scheduler at fleet sizes, and the /metrics page parser on the real vLLM fixture.
//!
//! Run: `cargo bench --bench hot_paths` (add `-- <filter>` for one group).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard::router::Router;
use switchyard::telemetry::Telemetry;
use switchyard_datastore::{Criticality, Datastore, EndpointMetrics, LoraState, ModelRoute};
use switchyard_extproc::{RequestHead, RouteRequest};
use switchyard_openai::{ApiKind, parse_request, rewrite_model};
use switchyard_scheduler::{PickRequest, Scheduler, SchedulerConfig};
use switchyard_scraper::{Engine, parse_page};

const FIXTURE: &str = include_str!("../crates/scraper/tests/fixtures/vllm-0.32-metrics-loaded.txt");

/// A completion body of about `size` bytes for model `model`.
fn body(model: &str, size: usize) -> Vec<u8> {
    let mut prompt = String::with_capacity(size);
    let mut i = 0u64;
    while prompt.len() + 64 < size {
        prompt.push_str(&format!("token{} ", i.wrapping_mul(2654435761) % 50_000));
        i += 1;
    }
    format!(r#"{{"model":"{model}","prompt":"{prompt}","max_tokens":128,"stream":true}}"#)
        .into_bytes()
}

/// A datastore with `n` endpoints carrying varied, fresh metrics, and the seed's split.
fn datastore(n: usize) -> Arc<Datastore> {
    let ds = Arc::new(Datastore::new("bench-pool"));
    ds.set_endpoints((0..n).map(|i| {
        std::net::SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8000))
    }));
    let now = Instant::now();
    for (i, e) in ds.snapshot().endpoints.iter().enumerate() {
        e.publish_metrics(
            EndpointMetrics {
                waiting: (i * 7 % 5) as u32,
                running: 20 + (i % 11) as u32,
                kv_usage: (i * 13 % 100) as f64 / 100.0,
                lora: Some(LoraState {
                    max_lora: 4,
                    running: vec![format!("tweet-summary-{}", i % 4), "sql-lora".into()],
                    waiting: vec![],
                }),
                cache: None,
                scraped_at: now,
            },
            0,
        );
    }
    ds.set_models([ModelRoute::new(
        "tweet-summary",
        Criticality::Critical,
        vec![
            ("tweet-summary-1".into(), Some(50)),
            ("tweet-summary-2".into(), Some(50)),
        ],
    )
    .expect("valid route")]);
    ds
}

fn parse_and_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_and_decide");
    let router = Router::new(
        datastore(3),
        Scheduler::new(SchedulerConfig::default()),
        false,
        Arc::new(Telemetry::default()),
    );
    let head = RequestHead {
        method: "POST".into(),
        path: "/v1/completions".into(),
        request_id: Some("bench".into()),
        ..Default::default()
    };
    for size in [2 * 1024, 200 * 1024] {
        let bytes = body("tweet-summary", size);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut rng = fastrand::Rng::with_seed(1);
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}KB", size / 1024)),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let request = RouteRequest {
                        head: &head,
                        body: Some(bytes),
                        subset: None,
                    };
                    black_box(router.route(request, Instant::now(), &mut rng))
                })
            },
        );
    }
    group.finish();
}

fn body_parse_rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("body_parse_rewrite");
    for size in [2 * 1024, 200 * 1024, 2 * 1024 * 1024] {
        let bytes = body("tweet-summary", size);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}KB", size / 1024)),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let parsed = parse_request(ApiKind::Completions, bytes).expect("valid body");
                    let span = parsed.model_span.expect("model present");
                    black_box(rewrite_model(bytes, span, "tweet-summary-1"))
                })
            },
        );
    }
    group.finish();
}

fn scheduler(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler_pick");
    let scheduler = Scheduler::new(SchedulerConfig::default());
    for n in [10, 100, 1_000, 10_000] {
        let ds = datastore(n);
        let snapshot = ds.snapshot();
        let mut rng = fastrand::Rng::with_seed(2);
        let request = PickRequest {
            target_model: "tweet-summary-1",
            criticality: Criticality::Standard,
            subset: None,
            prefix_matches: None,
        };
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(scheduler.pick(&snapshot, &request, Instant::now(), &mut rng)))
        });
    }
    group.finish();
}

fn metrics_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_page");
    group.throughput(Throughput::Bytes(FIXTURE.len() as u64));
    group.bench_function("vllm_0.32_fixture", |b| {
        b.iter(|| black_box(parse_page(FIXTURE, Engine::Vllm, Instant::now())))
    });
    group.finish();
}

criterion_group!(
    benches,
    parse_and_decide,
    body_parse_rewrite,
    scheduler,
    metrics_page
);
criterion_main!(benches);
