//! Pool and per-pod gauges on Switchyard's `/metrics` page, computed from the datastore when the
//! page is read: what the picker currently believes about each model server.
//!
//! The pool gauges use the reference picker's names (`inference_pool_*`); the per-pod view of
//! running requests, KV usage, LoRA adapters and metrics age is Switchyard's own (`switchyard_pod_*`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use switchyard_datastore::PoolSnapshot;

use crate::telemetry::escape;

/// Appends the pool and per-pod gauges for `snapshot` to `out`.
pub fn render(out: &mut String, snapshot: &PoolSnapshot, now: Instant, staleness: Duration) {
    let pool = escape(&snapshot.pool_name);
    let mut ready = 0usize;
    let (mut kv_sum, mut queue_sum) = (0.0, 0.0);
    let mut queue = String::new();
    let mut pods = PodRows::default();
    for e in &snapshot.endpoints {
        let pod = format!("name=\"{pool}\",model_server_pod=\"{}\"", e.addr_text());
        let _ = writeln!(
            pods.healthy,
            "switchyard_pod_healthy{{{pod}}} {}",
            u8::from(e.is_healthy())
        );
        let _ = writeln!(
            pods.dispatched,
            "switchyard_pod_dispatched_since_scrape{{{pod}}} {}",
            e.dispatched_since_scrape()
        );
        let Some(m) = e.metrics() else { continue };
        let age = now.saturating_duration_since(m.scraped_at);
        let _ = writeln!(
            pods.age,
            "switchyard_pod_metrics_age_seconds{{{pod}}} {}",
            age.as_secs_f64()
        );
        let _ = writeln!(
            pods.waiting,
            "switchyard_pod_waiting_requests{{{pod}}} {}",
            m.waiting
        );
        let _ = writeln!(
            pods.running,
            "switchyard_pod_running_requests{{{pod}}} {}",
            m.running
        );
        let _ = writeln!(
            pods.kv,
            "switchyard_pod_kv_cache_usage{{{pod}}} {}",
            m.kv_usage
        );
        if let Some(lora) = &m.lora {
            let _ = writeln!(
                pods.lora,
                "switchyard_pod_lora_info{{{pod},max_lora=\"{}\",running_lora_adapters=\"{}\",waiting_lora_adapters=\"{}\"}} 1",
                lora.max_lora,
                escape(&lora.running.join(",")),
                escape(&lora.waiting.join(","))
            );
        }
        if !e.is_healthy() || age > staleness {
            continue;
        }
        ready += 1;
        kv_sum += m.kv_usage;
        queue_sum += f64::from(m.waiting);
        let _ = writeln!(
            queue,
            "inference_pool_per_pod_queue_size{{{pod}}} {}",
            m.waiting
        );
    }
    let mean = |sum: f64| if ready == 0 { 0.0 } else { sum / ready as f64 };
    gauge(
        out,
        "inference_pool_ready_pods",
        "Endpoints with fresh metrics.",
        &format!("inference_pool_ready_pods{{name=\"{pool}\"}} {ready}\n"),
    );
    gauge(
        out,
        "inference_pool_average_kv_cache_utilization",
        "Mean KV-cache usage of ready endpoints.",
        &format!(
            "inference_pool_average_kv_cache_utilization{{name=\"{pool}\"}} {}\n",
            mean(kv_sum)
        ),
    );
    gauge(
        out,
        "inference_pool_average_queue_size",
        "Mean queue of ready endpoints.",
        &format!(
            "inference_pool_average_queue_size{{name=\"{pool}\"}} {}\n",
            mean(queue_sum)
        ),
    );
    gauge(
        out,
        "inference_pool_per_pod_queue_size",
        "Queue per ready endpoint.",
        &queue,
    );
    pods.render(out);
}

/// Per-pod rows, one family per field, so that each family is written contiguously.
#[derive(Default)]
struct PodRows {
    healthy: String,
    dispatched: String,
    age: String,
    waiting: String,
    running: String,
    kv: String,
    lora: String,
}

impl PodRows {
    fn render(&self, out: &mut String) {
        let families = [
            (
                "switchyard_pod_healthy",
                "1 while the pod's scrapes succeed.",
                &self.healthy,
            ),
            (
                "switchyard_pod_dispatched_since_scrape",
                "Requests sent to the pod that its last scrape cannot reflect yet.",
                &self.dispatched,
            ),
            (
                "switchyard_pod_metrics_age_seconds",
                "Age of the pod's last scrape.",
                &self.age,
            ),
            (
                "switchyard_pod_waiting_requests",
                "Queued requests at the last scrape.",
                &self.waiting,
            ),
            (
                "switchyard_pod_running_requests",
                "Running requests at the last scrape.",
                &self.running,
            ),
            (
                "switchyard_pod_kv_cache_usage",
                "KV-cache usage (0-1) at the last scrape.",
                &self.kv,
            ),
            (
                "switchyard_pod_lora_info",
                "LoRA adapters at the last scrape, as vLLM lists them.",
                &self.lora,
            ),
        ];
        for (name, help, rows) in families {
            gauge(out, name, help, rows);
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, rows: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    out.push_str(rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use switchyard_datastore::{Endpoint, EndpointMetrics, LoraState};

    #[test]
    fn per_pod_rows_show_what_was_scraped() {
        let now = Instant::now();
        let fresh = Endpoint::new("10.0.0.1:8000".parse().unwrap());
        fresh.publish_metrics(
            EndpointMetrics {
                waiting: 3,
                running: 5,
                kv_usage: 0.25,
                lora: Some(LoraState {
                    max_lora: 2,
                    running: vec!["a".into(), "b".into()],
                    waiting: vec!["c".into()],
                }),
                cache: None,
                scraped_at: now - Duration::from_millis(500),
            },
            0,
        );
        fresh.record_dispatch();
        let never_scraped = Endpoint::new("10.0.0.2:8000".parse().unwrap());
        let snapshot = PoolSnapshot {
            pool_name: "p".into(),
            endpoints: vec![Arc::new(fresh), Arc::new(never_scraped)],
            models: Default::default(),
        };
        let mut page = String::new();
        render(&mut page, &snapshot, now, Duration::from_secs(2));
        let pod1 = "name=\"p\",model_server_pod=\"10.0.0.1:8000\"";
        let pod2 = "name=\"p\",model_server_pod=\"10.0.0.2:8000\"";
        for line in [
            "inference_pool_ready_pods{name=\"p\"} 1".to_string(),
            format!("inference_pool_per_pod_queue_size{{{pod1}}} 3"),
            format!("switchyard_pod_running_requests{{{pod1}}} 5"),
            format!("switchyard_pod_waiting_requests{{{pod1}}} 3"),
            format!("switchyard_pod_kv_cache_usage{{{pod1}}} 0.25"),
            format!("switchyard_pod_metrics_age_seconds{{{pod1}}} 0.5"),
            format!("switchyard_pod_dispatched_since_scrape{{{pod1}}} 1"),
            format!(
                "switchyard_pod_lora_info{{{pod1},max_lora=\"2\",running_lora_adapters=\"a,b\",waiting_lora_adapters=\"c\"}} 1"
            ),
            format!("switchyard_pod_healthy{{{pod2}}} 1"),
        ] {
            assert!(
                page.lines().any(|l| l == line),
                "missing {line:?} in:\n{page}"
            );
        }
        assert!(!page.contains(&format!("switchyard_pod_running_requests{{{pod2}}}")));
    }
}
