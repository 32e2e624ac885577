//! Wiring: builds the datastore, scraper, router and the three servers (ext_proc gRPC, gRPC
//! health, Prometheus metrics) from a validated [`Config`], and runs them until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use switchyard_datastore::Datastore;
use switchyard_extproc::proto::external_processor_server::ExternalProcessorServer;
use switchyard_scheduler::Scheduler;
use switchyard_scraper::{ScrapeConfig, Scraper};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::router::Router;
use crate::service::PickerService;
use crate::telemetry::Telemetry;

/// gRPC health service names answered on the health port; all but liveness follow readiness.
const READINESS_SERVICES: &[&str] = &[
    "",
    "readiness",
    "envoy.service.ext_proc.v3.ExternalProcessor",
];

/// Addresses actually bound (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
}

/// Runs Switchyard until `shutdown` resolves. `on_bound` is called once all ports are bound.
/// HTTP/2 flow-control windows of the ext_proc server (bytes).
const GRPC_CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
const GRPC_STREAM_WINDOW: u32 = 4 * 1024 * 1024;

pub async fn run(
    config: Config,
    on_bound: impl FnOnce(BoundAddrs),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let datastore = Arc::new(Datastore::new(config.pool_name.clone()));
    datastore.set_endpoints(config.endpoints.iter().copied());
    datastore.set_models(config.models.iter().cloned());

    let telemetry = Arc::new(Telemetry::default());
    let router = Arc::new(Router::new(
        Arc::clone(&datastore),
        Scheduler::new(config.scheduler.clone()),
        config.strict_models,
        Arc::clone(&telemetry),
    ));
    let scraper = Scraper::spawn(
        Arc::clone(&datastore),
        ScrapeConfig {
            interval: config.scrape_interval,
            timeout: config.scrape_timeout,
            failure_threshold: config.scrape_failure_threshold,
            engine: config.engine,
            ..ScrapeConfig::default()
        },
    );

    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding the ext_proc port {}", config.grpc_addr))?;
    let health = TcpListener::bind(config.health_addr)
        .await
        .with_context(|| format!("binding the health port {}", config.health_addr))?;
    let metrics = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics port {}", config.metrics_addr))?;
    on_bound(BoundAddrs {
        grpc: grpc.local_addr()?,
        health: health.local_addr()?,
        metrics: metrics.local_addr()?,
    });

    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("liveness", ServingStatus::Serving)
        .await;
    for name in READINESS_SERVICES {
        reporter
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    let readiness = tokio::spawn(async move {
        while !scraper.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for name in READINESS_SERVICES {
            reporter
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        // Keep the scraper alive for the life of the process.
        std::future::pending::<()>().await;
        drop(scraper);
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let picker = PickerService::new(router, config.max_request_body_bytes);
    let grpc_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // Envoy multiplexes every request's ext_proc stream on a few connections: with hyper's
        // 1 MB connection window, 150 concurrent 200 KB bodies wait on WINDOW_UPDATEs.
        .initial_connection_window_size(Some(GRPC_CONNECTION_WINDOW))
        .initial_stream_window_size(Some(GRPC_STREAM_WINDOW))
        .add_service(ExternalProcessorServer::new(picker))
        // Without TCP_NODELAY, Nagle plus delayed ACKs stall small ext_proc replies by ~40 ms.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc).with_nodelay(Some(true)),
            stopped(stop_rx.clone()),
        );
    let health_server = tonic::transport::Server::builder()
        .add_service(health_service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(health), stopped(stop_rx.clone()));
    let staleness = config.scheduler.metrics_staleness;
    let metrics_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let telemetry = Arc::clone(&telemetry);
            let datastore = Arc::clone(&datastore);
            async move {
                let now = tokio::time::Instant::now().into_std();
                telemetry.render(&datastore.snapshot(), now, staleness)
            }
        }),
    );
    let metrics_server = axum::serve(metrics, metrics_app).with_graceful_shutdown(stopped(stop_rx));

    let result = tokio::try_join!(
        async { grpc_server.await.context("ext_proc server") },
        async { health_server.await.context("health server") },
        async { metrics_server.await.context("metrics server") },
    );
    readiness.abort();
    result.map(|_| ())
}
