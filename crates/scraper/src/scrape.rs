//! The scrape loops: one task per endpoint, supervised against the datastore's endpoint set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_datastore::{Datastore, Endpoint};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::{Engine, HealthTracker, Transition, parse_page};

/// How endpoints are scraped.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    pub interval: Duration,
    /// Per-scrape timeout (the reference uses 1 s).
    pub timeout: Duration,
    /// Consecutive failures before an endpoint is marked unhealthy.
    pub failure_threshold: u32,
    pub engine: Engine,
    pub path: String,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            engine: Engine::Vllm,
            path: "/metrics".into(),
        }
    }
}

/// Owns the scrape tasks. Dropping it stops them.
#[derive(Debug)]
pub struct Scraper {
    ready: Arc<AtomicBool>,
    supervisor: JoinHandle<()>,
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl Scraper {
    /// Starts scraping every endpoint of `datastore`, following changes to the endpoint set.
    pub fn spawn(datastore: Arc<Datastore>, config: ScrapeConfig) -> Self {
        let ready = Arc::new(AtomicBool::new(false));
        let supervisor = tokio::spawn(supervise(datastore, config, Arc::clone(&ready)));
        Self { ready, supervisor }
    }

    /// True once every endpoint has been scraped (successfully or not) at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

struct Task {
    endpoint: Arc<Endpoint>,
    attempted: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn supervise(datastore: Arc<Datastore>, config: ScrapeConfig, ready: Arc<AtomicBool>) {
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .pool_max_idle_per_host(1)
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "cannot build the metrics HTTP client; scraping disabled");
            return;
        }
    };
    let config = Arc::new(config);
    let mut tasks: HashMap<SocketAddr, Task> = HashMap::new();
    // Endpoint-set changes are picked up within this period.
    let mut ticker = tokio::time::interval(config.interval.min(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let snapshot = datastore.snapshot();
        tasks.retain(|addr, task| {
            snapshot
                .endpoints
                .iter()
                .any(|e| e.addr() == *addr && Arc::ptr_eq(e, &task.endpoint))
        });
        for endpoint in &snapshot.endpoints {
            tasks.entry(endpoint.addr()).or_insert_with(|| {
                let attempted = Arc::new(AtomicBool::new(false));
                let handle = tokio::spawn(scrape_loop(
                    client.clone(),
                    Arc::clone(endpoint),
                    Arc::clone(&config),
                    Arc::clone(&attempted),
                ));
                Task {
                    endpoint: Arc::clone(endpoint),
                    attempted,
                    handle,
                }
            });
        }
        if !ready.load(Ordering::Relaxed)
            && tasks.values().all(|t| t.attempted.load(Ordering::Relaxed))
        {
            tracing::info!(endpoints = tasks.len(), "first scrape round complete");
            ready.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error(transparent)]
    Page(#[from] crate::PageError),
}

async fn scrape_loop(
    client: reqwest::Client,
    endpoint: Arc<Endpoint>,
    config: Arc<ScrapeConfig>,
    attempted: Arc<AtomicBool>,
) {
    let url = format!("http://{}{}", endpoint.addr(), config.path);
    let mut health = HealthTracker::new(config.failure_threshold);
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mark = endpoint.dispatch_mark();
        match scrape_once(&client, &url, config.engine).await {
            Ok(metrics) => {
                endpoint.publish_metrics(metrics, mark);
                if health.on_success() == Transition::Recovered {
                    tracing::info!(endpoint = %endpoint.addr(), "metrics scrape recovered");
                }
            }
            Err(error) => match health.on_failure() {
                Transition::FirstFailure => {
                    tracing::warn!(endpoint = %endpoint.addr(), %error, "metrics scrape failed");
                }
                Transition::BecameUnhealthy => {
                    endpoint.set_healthy(false);
                    tracing::warn!(
                        endpoint = %endpoint.addr(),
                        %error,
                        failures = config.failure_threshold,
                        "endpoint marked unhealthy after consecutive scrape failures"
                    );
                }
                _ => tracing::debug!(endpoint = %endpoint.addr(), %error, "metrics scrape failed"),
            },
        }
        attempted.store(true, Ordering::Relaxed);
    }
}

async fn scrape_once(
    client: &reqwest::Client,
    url: &str,
    engine: Engine,
) -> Result<switchyard_datastore::EndpointMetrics, ScrapeError> {
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        return Err(ScrapeError::Status(response.status().as_u16()));
    }
    let page = response.text().await?;
    Ok(parse_page(&page, engine, Instant::now().into_std())?)
}
