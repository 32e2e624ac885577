//! One model-server endpoint: its address, its latest metrics and the counters the picker keeps
//! about it between scrapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use arc_swap::ArcSwapOption;

use crate::load::{AdapterKey, CellRead, LoadCell, LoadView};

/// Metrics read from one scrape of a model server's `/metrics` page.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointMetrics {
    /// Requests queued in the engine (`vllm:num_requests_waiting`).
    pub waiting: u32,
    /// Requests in the running batch (`vllm:num_requests_running`).
    pub running: u32,
    /// KV-cache usage in [0, 1] (`vllm:kv_cache_usage_perc` or its older name).
    pub kv_usage: f64,
    /// LoRA adapter state, when the server reports it.
    pub lora: Option<LoraState>,
    /// KV-cache geometry, when the server reports it.
    pub cache: Option<CacheInfo>,
    /// When the page was read; staleness is measured from here.
    pub scraped_at: Instant,
}

/// The current series of `vllm:lora_requests_info`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoraState {
    pub max_lora: u32,
    pub running: Vec<String>,
    pub waiting: Vec<String>,
}

impl LoraState {
    pub fn is_running(&self, adapter: &str) -> bool {
        self.running.iter().any(|a| a == adapter)
    }

    pub fn is_waiting(&self, adapter: &str) -> bool {
        self.waiting.iter().any(|a| a == adapter)
    }

    /// Distinct adapters with requests on the server (running or waiting).
    pub fn active_count(&self) -> usize {
        let extra = self.waiting.iter().filter(|w| !self.is_running(w)).count();
        self.running.len() + extra
    }
}

/// `vllm:cache_config_info` labels the picker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheInfo {
    pub block_size: u32,
    pub num_gpu_blocks: u64,
}

/// One endpoint of the pool. Shared (`Arc`) between snapshots so metrics survive pool updates.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    /// `ip:port` text, precomputed because it is sent on every decision.
    addr_text: Arc<str>,
    metrics: ArcSwapOption<EndpointMetrics>,
    /// The scoring inputs of `metrics`, flat, for the per-decision read.
    load: LoadCell,
    healthy: AtomicBool,
    /// Requests the picker sent here since the last published scrape (in-flight correction).
    dispatched: AtomicU32,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            addr_text: Arc::from(addr.to_string()),
            metrics: ArcSwapOption::empty(),
            load: LoadCell::default(),
            healthy: AtomicBool::new(true),
            dispatched: AtomicU32::new(0),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn addr_text(&self) -> &Arc<str> {
        &self.addr_text
    }

    /// The latest metrics, or `None` before the first successful scrape.
    pub fn metrics(&self) -> Option<Arc<EndpointMetrics>> {
        self.metrics.load_full()
    }

    /// The latest scoring inputs for a request for `model` (whose key is `key`), or `None` before
    /// the first scrape. The per-decision read: no lock, no allocation, no reference count.
    #[inline]
    pub fn load_view(&self, model: &str, key: AdapterKey) -> Option<LoadView> {
        match self.load.read(key)? {
            CellRead::Complete(view) => Some(view),
            CellRead::NeedsNames(mut view) => {
                // More adapters listed than the cell tracks: settle membership by name.
                let metrics = self.metrics.load();
                if let (Some(lora), Some(state)) = (
                    view.lora.as_mut(),
                    metrics.as_deref().and_then(|m| m.lora.as_ref()),
                ) {
                    lora.running = state.is_running(model);
                    lora.waiting = state.is_waiting(model);
                }
                Some(view)
            }
        }
    }

    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Requests dispatched here that the latest metrics cannot yet reflect.
    #[inline]
    pub fn dispatched_since_scrape(&self) -> u32 {
        self.dispatched.load(Ordering::Relaxed)
    }

    /// Records that the picker just sent a request here.
    #[inline]
    pub fn record_dispatch(&self) {
        self.dispatched.fetch_add(1, Ordering::Relaxed);
    }

    /// Counter value to pass to [`Endpoint::publish_metrics`] once the scrape started now completes.
    pub fn dispatch_mark(&self) -> u32 {
        self.dispatched.load(Ordering::Relaxed)
    }

    /// Publishes a scrape. `mark` is [`Endpoint::dispatch_mark`] taken when the scrape started:
    /// only dispatches before that point are reflected in the page, later ones still count.
    pub fn publish_metrics(&self, metrics: EndpointMetrics, mark: u32) {
        self.load.publish(&metrics);
        self.metrics.store(Some(Arc::new(metrics)));
        // Saturating subtract: never underflow if counters were reset concurrently.
        let _ = self
            .dispatched
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_sub(mark))
            });
        self.set_healthy(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> EndpointMetrics {
        EndpointMetrics {
            waiting: 0,
            running: 0,
            kv_usage: 0.0,
            lora: None,
            cache: None,
            scraped_at: Instant::now(),
        }
    }

    #[test]
    fn dispatches_after_scrape_start_still_count() {
        let ep = Endpoint::new("127.0.0.1:8000".parse().unwrap());
        ep.record_dispatch();
        ep.record_dispatch();
        let mark = ep.dispatch_mark();
        ep.record_dispatch(); // sent while the scrape was in flight
        ep.publish_metrics(metrics(), mark);
        assert_eq!(ep.dispatched_since_scrape(), 1);
    }

    #[test]
    fn lora_active_count_merges_lists() {
        let s = LoraState {
            max_lora: 2,
            running: vec!["a".into(), "b".into()],
            waiting: vec!["a".into(), "c".into()],
        };
        assert_eq!(s.active_count(), 3);
        assert!(s.is_running("a") && !s.is_running("c") && s.is_waiting("c"));
    }
}
