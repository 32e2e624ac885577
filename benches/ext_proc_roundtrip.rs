//! Criterion bench of one ext_proc round trip through the real tonic service over an in-memory
//! transport (tokio duplex pipe, no sockets, no Envoy): request headers + a body message in, header
//! reply + streamed body out, for 2 KB and 200 KB bodies.
//!
//! Run: `cargo bench --bench ext_proc_roundtrip`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use hyper_util::rt::TokioIo;
use switchyard::router::Router;
use switchyard::service::PickerService;
use switchyard::telemetry::Telemetry;
use switchyard_datastore::{Criticality, Datastore, EndpointMetrics, ModelRoute};
use switchyard_extproc::proto::external_processor_client::ExternalProcessorClient;
use switchyard_extproc::proto::external_processor_server::ExternalProcessorServer;
use switchyard_extproc::proto::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse, body_mutation::Mutation,
    processing_request, processing_response::Response,
};
use switchyard_scheduler::{Scheduler, SchedulerConfig};
use tonic::transport::{Channel, Endpoint, Server, Uri};

fn router() -> Arc<Router> {
    let ds = Arc::new(Datastore::new("bench"));
    ds.set_endpoints((1..=3).map(|i| std::net::SocketAddr::from(([10, 0, 0, i], 8000))));
    for e in ds.snapshot().endpoints.iter() {
        e.publish_metrics(
            EndpointMetrics {
                waiting: 0,
                running: 10,
                kv_usage: 0.3,
                lora: None,
                cache: None,
                // Nothing scrapes in the bench: date the metrics ahead so they never go stale.
                scraped_at: Instant::now() + Duration::from_secs(3600),
            },
            0,
        );
    }
    ds.set_models([ModelRoute::new(
        "tweet-summary",
        Criticality::Critical,
        vec![("tweet-summary-1".into(), None)],
    )
    .expect("valid route")]);
    Arc::new(Router::new(
        ds,
        Scheduler::new(SchedulerConfig::default()),
        false,
        Arc::new(Telemetry::default()),
    ))
}

/// A tonic client connected to the service through an in-memory pipe (tokio duplex).
async fn in_memory_client() -> ExternalProcessorClient<Channel> {
    let (client_io, server_io) = tokio::io::duplex(4 * 1024 * 1024);
    let service = ExternalProcessorServer::new(PickerService::new(router(), 16 * 1024 * 1024));
    tokio::spawn(async move {
        // The server stops when its incoming stream ends: keep it open after the one connection.
        let incoming = tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok::<_, std::io::Error>(server_io)),
            tokio_stream::pending(),
        );
        if let Err(e) = Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("bench server stopped: {e}");
        }
    });
    let mut client_io = Some(client_io);
    let channel = Endpoint::from_static("http://in-memory")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the in-memory pipe is single-use"))
            }
        }))
        .await
        .expect("in-memory channel");
    ExternalProcessorClient::new(channel)
}

fn messages(body: &[u8]) -> Vec<ProcessingRequest> {
    let h = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        raw_value: v.as_bytes().to_vec(),
        ..Default::default()
    };
    vec![
        ProcessingRequest {
            request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![h(":method", "POST"), h(":path", "/v1/completions")],
                }),
                ..Default::default()
            })),
            ..Default::default()
        },
        ProcessingRequest {
            request: Some(processing_request::Request::RequestBody(HttpBody {
                body: body.to_vec(),
                end_of_stream: true,
                ..Default::default()
            })),
            ..Default::default()
        },
    ]
}

fn is_last_body_chunk(r: &ProcessingResponse) -> bool {
    matches!(&r.response, Some(Response::RequestBody(b))
        if b.response.as_ref()
            .and_then(|c| c.body_mutation.as_ref())
            .and_then(|m| m.mutation.as_ref())
            .is_some_and(|m| matches!(m, Mutation::StreamedResponse(s) if s.end_of_stream)))
}

async fn round_trip(client: &mut ExternalProcessorClient<Channel>, body: &[u8]) -> usize {
    let mut replies = client
        .process(tokio_stream::iter(messages(body)))
        .await
        .expect("stream opens")
        .into_inner();
    // Read to the end of the stream: dropping it early would reset the stream, and h2 closes a
    // connection that resets too many.
    let mut n = 0;
    let mut complete = false;
    while let Ok(Some(r)) = replies.message().await {
        n += 1;
        complete |= is_last_body_chunk(&r);
    }
    assert!(complete, "the streamed body ended");
    n
}

fn roundtrip(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = runtime.block_on(in_memory_client());
    let mut group = c.benchmark_group("ext_proc_roundtrip");
    for size in [2 * 1024, 200 * 1024] {
        let prompt = "x".repeat(size);
        let body = format!(r#"{{"model":"tweet-summary","prompt":"{prompt}"}}"#).into_bytes();
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}KB", size / 1024)),
            &body,
            |b, body| b.iter(|| black_box(runtime.block_on(round_trip(&mut client, body)))),
        );
    }
    group.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
