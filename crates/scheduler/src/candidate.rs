//! The plain numbers the scorers see for one endpoint, read once per decision.

use switchyard_datastore::{AdapterKey, Endpoint, LoadView, LoraView};

/// One schedulable endpoint as plain values: scorers never touch shared state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index into the snapshot's endpoint list.
    pub index: usize,
    /// Queued requests plus requests the picker sent since the last scrape (in-flight correction).
    pub queue: f64,
    /// KV-cache usage in [0, 1].
    pub kv_usage: f64,
    /// LoRA affinity for the requested model in [0, 1].
    pub lora_affinity: f64,
    /// Fraction of the prompt's leading blocks this endpoint was sent before, in [0, 1].
    pub prefix_match: f64,
    /// Metrics are recent and the endpoint healthy.
    pub fresh: bool,
}

/// LoRA affinity (reference values): 1.0 adapter running, 0.8 room to load one more adapter,
/// 0.6 adapter already waiting, 0 otherwise. Without LoRA info nothing is active: room to load.
pub fn lora_affinity(lora: Option<LoraView>) -> f64 {
    let Some(lora) = lora else {
        return 0.8;
    };
    if lora.running {
        1.0
    } else if lora.active < lora.max_lora {
        0.8
    } else if lora.waiting {
        0.6
    } else {
        0.0
    }
}

/// The requested model and the clock, resolved once per decision for every [`Candidate::read`].
#[derive(Debug, Clone, Copy)]
pub struct ReadContext<'a> {
    pub model: &'a str,
    pub model_key: AdapterKey,
    /// `clock_nanos` of the decision time.
    pub now_nanos: i64,
    /// Metrics older than this many nanoseconds are stale.
    pub staleness_nanos: i64,
}

/// KV share assumed for one request on a pod that reports nothing running.
const DEFAULT_REQUEST_KV: f64 = 0.01;

impl Candidate {
    /// Reads one endpoint. Stale or missing metrics count as an empty pod; only the in-flight
    /// counter is trusted then.
    ///
    /// In-flight correction: requests sent since the last scrape are added the way the engine
    /// will take them. A pod with a queue already (waiting > 0) has no batch room, so they join
    /// the queue; otherwise they join the running batch and each adds the pod's mean KV share per
    /// running request. KV beyond 100% spills into the queue.
    pub fn read(
        index: usize,
        endpoint: &Endpoint,
        ctx: &ReadContext<'_>,
        prefix_match: f64,
    ) -> Self {
        let dispatched = f64::from(endpoint.dispatched_since_scrape());
        let fresh = endpoint.load_view(ctx.model, ctx.model_key).filter(|m| {
            endpoint.is_healthy() && ctx.now_nanos - m.scraped_at_nanos <= ctx.staleness_nanos
        });
        Self {
            prefix_match,
            ..Self::from_load(index, fresh, dispatched)
        }
    }

    fn from_load(index: usize, fresh: Option<LoadView>, dispatched: f64) -> Self {
        match fresh {
            Some(m) => {
                let kv = m.kv_usage.clamp(0.0, 1.0);
                let (queue, kv_usage) = if m.waiting > 0 {
                    (f64::from(m.waiting) + dispatched, kv)
                } else {
                    let per_request = if m.running > 0 {
                        (kv / f64::from(m.running)).max(DEFAULT_REQUEST_KV / 4.0)
                    } else {
                        DEFAULT_REQUEST_KV
                    };
                    let estimated = kv + dispatched * per_request;
                    if estimated > 1.0 {
                        // The epsilon keeps float noise from adding a phantom request.
                        (((estimated - 1.0) / per_request - 1e-9).ceil(), 1.0)
                    } else {
                        (0.0, estimated)
                    }
                };
                Self {
                    index,
                    queue,
                    kv_usage,
                    lora_affinity: lora_affinity(m.lora),
                    prefix_match: 0.0,
                    fresh: true,
                }
            }
            None => Self {
                index,
                queue: dispatched,
                kv_usage: 0.0,
                lora_affinity: lora_affinity(None),
                prefix_match: 0.0,
                fresh: false,
            },
        }
    }

    /// Saturation of this pod: >= 1 means it should not take sheddable work. Stale pods count as
    /// saturated, as in the reference.
    pub fn saturation(&self, queue_threshold: f64, kv_threshold: f64) -> f64 {
        if !self.fresh {
            return 1.0;
        }
        (self.queue / queue_threshold).max(self.kv_usage / kv_threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use switchyard_datastore::{EndpointMetrics, LoraState, clock_nanos};

    fn read_at(ep: &Endpoint, model: &str, now: Instant, staleness: Duration) -> Candidate {
        let ctx = ReadContext {
            model,
            model_key: AdapterKey::of(model),
            now_nanos: clock_nanos(now),
            staleness_nanos: staleness.as_nanos() as i64,
        };
        Candidate::read(0, ep, &ctx, 0.0)
    }

    fn affinity_of(metrics: &EndpointMetrics, model: &str) -> f64 {
        let ep = Endpoint::new("10.0.0.1:1".parse().unwrap());
        ep.publish_metrics(metrics.clone(), 0);
        lora_affinity(ep.load_view(model, AdapterKey::of(model)).unwrap().lora)
    }

    fn with_lora(max: u32, running: &[&str], waiting: &[&str]) -> EndpointMetrics {
        EndpointMetrics {
            waiting: 0,
            running: 0,
            kv_usage: 0.0,
            lora: Some(LoraState {
                max_lora: max,
                running: running.iter().map(|s| s.to_string()).collect(),
                waiting: waiting.iter().map(|s| s.to_string()).collect(),
            }),
            cache: None,
            scraped_at: Instant::now(),
        }
    }

    #[test]
    fn in_flight_requests_join_the_batch_when_there_is_room() {
        let ep = Endpoint::new("10.0.0.1:1".parse().unwrap());
        let t0 = Instant::now();
        let mut m = with_lora(2, &[], &[]);
        m.running = 10;
        m.kv_usage = 0.5;
        m.scraped_at = t0;
        ep.publish_metrics(m, 0);
        let staleness = Duration::from_secs(2);
        for _ in 0..5 {
            ep.record_dispatch();
        }
        let c = read_at(&ep, "x", t0, staleness);
        assert_eq!(c.queue, 0.0);
        assert!((c.kv_usage - 0.75).abs() < 1e-9);
        for _ in 0..7 {
            ep.record_dispatch();
        }
        let c = read_at(&ep, "x", t0, staleness);
        assert_eq!(
            (c.queue, c.kv_usage),
            (2.0, 1.0),
            "KV beyond 100% spills into the queue"
        );
    }

    #[test]
    fn lora_affinity_table() {
        let cases: &[(EndpointMetrics, &str, f64)] = &[
            (with_lora(2, &["a"], &["a"]), "a", 1.0),
            (with_lora(2, &["b"], &["b"]), "a", 0.8),
            (with_lora(2, &["b", "c"], &["b", "c", "a"]), "a", 0.6),
            (with_lora(2, &["b", "c"], &["b", "c"]), "a", 0.0),
            (with_lora(1, &[], &["a"]), "a", 0.6),
        ];
        for (m, model, want) in cases {
            assert_eq!(affinity_of(m, model), *want, "{m:?} {model}");
        }
        assert_eq!(lora_affinity(None), 0.8);
        // More adapters than the flat copy tracks: membership is settled by name, same answers.
        let many: Vec<String> = (0..=switchyard_datastore::TRACKED_ADAPTERS)
            .map(|i| format!("x{i}"))
            .collect();
        let crowded = |names: &[String]| EndpointMetrics {
            lora: Some(LoraState {
                max_lora: 64,
                running: names.to_vec(),
                waiting: vec![],
            }),
            ..with_lora(0, &[], &[])
        };
        assert_eq!(affinity_of(&crowded(&many), "x3"), 1.0);
        assert_eq!(affinity_of(&crowded(&many), "y"), 0.8);
    }

    #[test]
    fn stale_metrics_read_as_empty_but_keep_in_flight() {
        let ep = Endpoint::new("10.0.0.1:1".parse().unwrap());
        let t0 = Instant::now();
        let mut m = with_lora(2, &[], &[]);
        m.waiting = 9;
        m.kv_usage = 0.9;
        m.scraped_at = t0;
        ep.publish_metrics(m, 0);
        ep.record_dispatch();
        let staleness = Duration::from_secs(2);
        let fresh = read_at(&ep, "x", t0, staleness);
        assert!(fresh.fresh);
        assert_eq!(fresh.queue, 10.0, "a pod with a queue queues new work");
        let stale = read_at(&ep, "x", t0 + staleness * 2, staleness);
        assert!(!stale.fresh);
        assert_eq!((stale.queue, stale.kv_usage), (1.0, 0.0));
        assert_eq!(stale.saturation(5.0, 0.8), 1.0);
    }
}
