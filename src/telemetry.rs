//! Switchyard's own Prometheus metrics, under the names the community dashboards use
//! (`inference_objective_*`, `inference_pool_*`, `inference_extension_*`).
//!
//! Counters are atomics found through a read-locked map (write-locked only the first time a label
//! set appears); pool gauges are computed from the datastore when `/metrics` is read.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_datastore::PoolSnapshot;
use switchyard_openai::Usage;

/// Upper bounds (seconds) of the scheduler latency histogram.
const DECISION_BUCKETS: &[f64] = &[
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5,
    0.001, 0.002, 0.005, 0.01,
];

/// Upper bounds of the token-count histograms (the reference picker's buckets).
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
    32768.0, 65536.0, 131072.0, 262144.0, 524288.0, 1048576.0,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in integer units (nanoseconds, tokens), to stay an integer atomic.
    sum_units: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    fn observe(&self, bounds: &[f64], d: Duration) {
        self.observe_value(bounds, d.as_secs_f64(), d.as_nanos() as u64);
    }

    /// Counts `value` in its bucket and adds `units` (the value in integer units) to the sum.
    fn observe_value(&self, bounds: &[f64], value: f64, units: u64) {
        if let Some(i) = bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_units.fetch_add(units, Ordering::Relaxed);
    }

    /// Renders the series; `labels` (already escaped, may be empty) go before `le`, and the sum
    /// is divided by `units_per_value`.
    fn render(
        &self,
        out: &mut String,
        name: &str,
        labels: &str,
        bounds: &[f64],
        units_per_value: f64,
    ) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_units.load(Ordering::Relaxed) as f64 / units_per_value;
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        let _ = writeln!(out, "{name}_count{braced} {count}");
    }
}

/// Separates label values inside one map key (never valid in a model name).
const KEY_SEPARATOR: &str = "\u{1f}";

/// The series of one metric family, keyed by label values: a series is created (write lock) the
/// first time its label set appears and found under a read lock after that.
#[derive(Debug)]
struct Family<T> {
    series: RwLock<HashMap<String, T>>,
    new_series: fn() -> T,
}

impl<T> Family<T> {
    fn new(new_series: fn() -> T) -> Self {
        Self {
            series: RwLock::default(),
            new_series,
        }
    }

    /// Runs `update` on the series of `labels`, creating it when new.
    fn update(&self, labels: &[&str], update: impl Fn(&T)) {
        let key = labels.join(KEY_SEPARATOR);
        let found = self
            .series
            .read()
            .ok()
            .and_then(|map| map.get(&key).map(&update));
        if found.is_none()
            && let Ok(mut map) = self.series.write()
        {
            update(map.entry(key).or_insert_with(self.new_series));
        }
    }

    /// Calls `render` per series, sorted, with its labels as `name="value",...` text.
    fn each(&self, names: &[&str], mut render: impl FnMut(&str, &T)) {
        let Ok(map) = self.series.read() else { return };
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for (key, series) in rows {
            let labels: Vec<String> = names
                .iter()
                .zip(key.split(KEY_SEPARATOR))
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            render(&labels.join(","), series);
        }
    }
}

fn counter_family() -> Family<AtomicU64> {
    Family::new(AtomicU64::default)
}

/// Input and output token histograms of one (model, target model).
fn token_family() -> Family<[Histogram; 2]> {
    Family::new(|| [Histogram::new(TOKEN_BUCKETS), Histogram::new(TOKEN_BUCKETS)])
}

const MODEL_LABELS: &[&str] = &["model_name", "target_model_name"];

/// Escapes a Prometheus label value.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn increment(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// All of Switchyard's own metrics.
#[derive(Debug)]
pub struct Telemetry {
    requests: Family<AtomicU64>,
    errors: Family<AtomicU64>,
    decisions: Histogram,
    tokens: Family<[Histogram; 2]>,
    fail_open: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            requests: counter_family(),
            errors: counter_family(),
            decisions: Histogram::new(DECISION_BUCKETS),
            tokens: token_family(),
            fail_open: AtomicU64::new(0),
        }
    }
}

impl Telemetry {
    pub fn request(&self, model: &str, target: &str) {
        self.requests.update(&[model, target], increment);
    }

    pub fn error(&self, model: &str, target: &str, code: &str) {
        self.errors.update(&[model, target, code], increment);
    }

    pub fn decision_time(&self, started: Instant) {
        self.decisions.observe(DECISION_BUCKETS, started.elapsed());
    }

    /// Tokens of one answered request, from the model server's usage report.
    pub fn tokens(&self, model: &str, target: &str, usage: Usage) {
        self.tokens.update(&[model, target], |pair| {
            for (h, tokens) in pair.iter().zip([usage.input_tokens, usage.output_tokens]) {
                h.observe_value(TOKEN_BUCKETS, tokens as f64, tokens);
            }
        });
    }

    pub fn fail_open(&self) {
        self.fail_open.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text page, pool gauges included.
    pub fn render(&self, snapshot: &PoolSnapshot, now: Instant, staleness: Duration) -> String {
        let mut out = String::with_capacity(4096);
        let counters = [
            (
                "inference_objective_request_total",
                "Requests routed, per requested and target model.",
                &self.requests,
                MODEL_LABELS,
            ),
            (
                "inference_objective_request_error_total",
                "Requests refused, per error code.",
                &self.errors,
                &["model_name", "target_model_name", "error_code"][..],
            ),
        ];
        for (name, help, family, labels) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            family.each(labels, |labels, count| {
                let _ = writeln!(out, "{name}{{{labels}}} {}", count.load(Ordering::Relaxed));
            });
        }
        out.push_str("# HELP inference_extension_scheduler_e2e_duration_seconds Time to parse a request and pick its endpoint.\n# TYPE inference_extension_scheduler_e2e_duration_seconds histogram\n");
        self.decisions.render(
            &mut out,
            "inference_extension_scheduler_e2e_duration_seconds",
            "",
            DECISION_BUCKETS,
            1e9,
        );
        let token_histograms = [
            (
                "inference_objective_input_tokens",
                "Input (prompt) tokens per request, as the model server reported them.",
            ),
            (
                "inference_objective_output_tokens",
                "Output (completion) tokens per request, as the model server reported them.",
            ),
        ];
        for (i, (name, help)) in token_histograms.into_iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            self.tokens.each(MODEL_LABELS, |labels, pair| {
                pair[i].render(&mut out, name, labels, TOKEN_BUCKETS, 1.0);
            });
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_fail_open_total Decisions made with no fresh endpoint metrics.\n# TYPE switchyard_fail_open_total counter\nswitchyard_fail_open_total {}",
            self.fail_open.load(Ordering::Relaxed)
        );

        crate::pool_gauges::render(&mut out, snapshot, now, staleness);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_pool_gauges() {
        let t = Telemetry::default();
        t.request("tweet-summary", "tweet-summary-1");
        t.request("tweet-summary", "tweet-summary-1");
        t.error("m", "m", "BadRequest");
        t.decision_time(Instant::now());
        let snap = PoolSnapshot {
            pool_name: "p".into(),
            ..Default::default()
        };
        let page = t.render(&snap, Instant::now(), Duration::from_secs(2));
        assert!(page.contains("inference_objective_request_total{model_name=\"tweet-summary\",target_model_name=\"tweet-summary-1\"} 2"));
        assert!(page.contains("error_code=\"BadRequest\"} 1"));
        assert!(page.contains("inference_extension_scheduler_e2e_duration_seconds_count 1"));
        assert!(page.contains("inference_pool_ready_pods{name=\"p\"} 0"));
        assert!(!page.contains("inference_objective_input_tokens_sum{"));
        t.tokens(
            "m",
            "t",
            Usage {
                input_tokens: 300,
                output_tokens: 4,
            },
        );
        t.tokens(
            "m",
            "t",
            Usage {
                input_tokens: 20,
                output_tokens: 6,
            },
        );
        let page = t.render(&snap, Instant::now(), Duration::from_secs(2));
        let labels = "model_name=\"m\",target_model_name=\"t\"";
        for line in [
            format!("inference_objective_input_tokens_sum{{{labels}}} 320"),
            format!("inference_objective_input_tokens_count{{{labels}}} 2"),
            format!("inference_objective_input_tokens_bucket{{{labels},le=\"32\"}} 1"),
            format!("inference_objective_input_tokens_bucket{{{labels},le=\"512\"}} 2"),
            format!("inference_objective_output_tokens_sum{{{labels}}} 10"),
            format!("inference_objective_output_tokens_bucket{{{labels},le=\"8\"}} 2"),
        ] {
            assert!(
                page.lines().any(|l| l == line),
                "missing {line:?} in:\n{page}"
            );
        }
    }
}
