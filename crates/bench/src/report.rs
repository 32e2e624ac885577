//! Turning outcomes and pod samples into an arm's figures, a table and JSON.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Outcome;
use crate::fleet::PodSamples;

/// The figures of one arm.
#[derive(Debug, Clone, Default)]
pub struct ArmReport {
    pub ok: usize,
    pub failed: usize,
    pub ttft_ms: [f64; 3],
    pub tpot_ms: [f64; 2],
    pub e2e_ms: [f64; 2],
    pub output_tokens_per_s: f64,
    pub kv_mean: Vec<f64>,
    pub kv_max: Vec<f64>,
    pub queue_mean: Vec<f64>,
    pub prefix_hit_rate: f64,
    pub lora_wait_samples: u64,
    /// Failed requests by HTTP status (0 = no response).
    pub failed_by_status: std::collections::BTreeMap<u16, usize>,
}

/// The q-quantile (nearest rank) of `values`, in milliseconds.
pub fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1].as_secs_f64() * 1000.0
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl ArmReport {
    pub fn new(outcomes: &[Outcome], elapsed: Duration, samples: &[PodSamples]) -> Self {
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
        let mut ttft: Vec<Duration> = ok.iter().filter_map(|o| o.ttft).collect();
        let mut tpot: Vec<Duration> = ok.iter().filter_map(|o| o.tpot()).collect();
        let mut e2e: Vec<Duration> = ok.iter().map(|o| o.e2e).collect();
        let tokens: u64 = ok.iter().map(|o| o.output_tokens).sum();
        let hits: f64 = samples.iter().map(|s| s.prefix_hits).sum();
        let queries: f64 = samples.iter().map(|s| s.prefix_queries).sum();
        ArmReport {
            ok: ok.len(),
            failed: outcomes.len() - ok.len(),
            ttft_ms: [
                quantile_ms(&mut ttft, 0.5),
                quantile_ms(&mut ttft, 0.9),
                quantile_ms(&mut ttft, 0.99),
            ],
            tpot_ms: [quantile_ms(&mut tpot, 0.5), quantile_ms(&mut tpot, 0.9)],
            e2e_ms: [quantile_ms(&mut e2e, 0.5), quantile_ms(&mut e2e, 0.9)],
            output_tokens_per_s: tokens as f64 / elapsed.as_secs_f64().max(1e-9),
            kv_mean: samples.iter().map(|s| mean(&s.kv)).collect(),
            kv_max: samples
                .iter()
                .map(|s| s.kv.iter().copied().fold(0.0, f64::max))
                .collect(),
            queue_mean: samples.iter().map(|s| mean(&s.queue)).collect(),
            prefix_hit_rate: if queries > 0.0 { hits / queries } else { 0.0 },
            lora_wait_samples: samples.iter().map(|s| s.lora_waits).sum(),
            failed_by_status: outcomes.iter().filter(|o| !o.ok).fold(
                Default::default(),
                |mut m, o| {
                    *m.entry(o.status).or_insert(0) += 1;
                    m
                },
            ),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "ttft_p50_ms": self.ttft_ms[0], "ttft_p90_ms": self.ttft_ms[1], "ttft_p99_ms": self.ttft_ms[2],
            "tpot_p50_ms": self.tpot_ms[0], "tpot_p90_ms": self.tpot_ms[1],
            "e2e_p50_ms": self.e2e_ms[0], "e2e_p90_ms": self.e2e_ms[1],
            "output_tokens_per_s": self.output_tokens_per_s, "ok": self.ok, "failed": self.failed,
            "kv_cache_mean_per_pod": self.kv_mean, "kv_cache_max_per_pod": self.kv_max,
            "queue_mean_per_pod": self.queue_mean, "prefix_hit_rate": self.prefix_hit_rate,
            "lora_wait_samples": self.lora_wait_samples,
            "failed_by_status": self.failed_by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

fn list(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// A text table of every arm (skipped arms with their reason).
pub fn table(rows: &[(String, Result<ArmReport, String>)]) -> String {
    let mut out = format!(
        "{:<27} {:>5} {:>4} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>15} {:>15} {:>14} {:>6} {:>5}\n",
        "arm",
        "ok",
        "fail",
        "ttft50",
        "ttft90",
        "ttft99",
        "tpot50",
        "tpot90",
        "e2e50",
        "e2e90",
        "out tok/s",
        "kv mean/pod",
        "kv max/pod",
        "queue/pod",
        "prefix",
        "lora"
    );
    for (name, r) in rows {
        match r {
            Ok(r) => out.push_str(&format!(
                "{:<27} {:>5} {:>4} {:>8.0} {:>8.0} {:>8.0} {:>7.1} {:>7.1} {:>8.0} {:>8.0} {:>8.1} {:>15} {:>15} {:>14} {:>6.2} {:>5}\n",
                name, r.ok, r.failed, r.ttft_ms[0], r.ttft_ms[1], r.ttft_ms[2], r.tpot_ms[0], r.tpot_ms[1],
                r.e2e_ms[0], r.e2e_ms[1], r.output_tokens_per_s, list(&r.kv_mean, 2), list(&r.kv_max, 2),
                list(&r.queue_mean, 1), r.prefix_hit_rate, r.lora_wait_samples
            )),
            Err(reason) => out.push_str(&format!("{name:<27} skipped: {reason}\n")),
        }
    }
    out
}
