//! The `/metrics` page in vLLM 0.32's exposition format (names, label keys, bucket bounds as in
//! the real page), or with the older KV gauge name, or with SGLang's names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use crate::engine::Engine;
use crate::stats::Histogram;

/// Which engine's metric names the page uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsFlavor {
    /// vLLM >= 0.9 (`vllm:kv_cache_usage_perc`).
    #[default]
    Vllm,
    /// vLLM < 0.9 (`vllm:gpu_cache_usage_perc`).
    VllmLegacy,
    /// SGLang (`sglang:num_queue_reqs`, ...).
    Sglang,
}

impl FromStr for MetricsFlavor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vllm" => Ok(Self::Vllm),
            "vllm-legacy" => Ok(Self::VllmLegacy),
            "sglang" => Ok(Self::Sglang),
            _ => Err(format!(
                "unknown metrics flavor {s:?} (vllm, vllm-legacy, sglang)"
            )),
        }
    }
}

/// Every `lora_requests_info` label set ever reported, with its last timestamp (vLLM keeps them).
#[derive(Debug, Default, Clone)]
pub struct LoraHistory {
    series: BTreeMap<(String, String), f64>,
}

impl LoraHistory {
    pub fn record(&mut self, running: &[String], active: &[String], unix_time: f64) {
        let key = (running.join(","), active.join(","));
        let entry = self.series.entry(key).or_insert(unix_time);
        *entry = entry.max(unix_time);
    }
}

/// Python's float formatting for integral values (`8.0`), as in the real page.
fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family with one sample: its HELP/TYPE header and `name{labels} value`.
fn sample(out: &mut String, name: &str, kind: &str, help: &str, labels: &str, value: &str) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram, model: &str) {
    header(out, name, "histogram", help);
    let mut cumulative = 0;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{engine=\"0\",le=\"{}\",model_name=\"{model}\"}} {}",
            num(*bound),
            num(cumulative as f64)
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"{model}\"}} {}",
        num(h.count as f64)
    );
    let _ = writeln!(
        out,
        "{name}_count{{engine=\"0\",model_name=\"{model}\"}} {}",
        num(h.count as f64)
    );
    let _ = writeln!(
        out,
        "{name}_sum{{engine=\"0\",model_name=\"{model}\"}} {}",
        h.sum
    );
}

/// Renders the page of one pod.
pub fn render(
    engine: &Engine,
    model: &str,
    flavor: MetricsFlavor,
    lora: &LoraHistory,
    max_loras: u32,
    gpu_memory_utilization: f64,
    num_gpu_blocks_override: Option<u32>,
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let cfg = engine.config();
    if flavor == MetricsFlavor::Sglang {
        let labels = format!("model_name=\"{model}\"");
        let cache = format!(
            "{labels},num_pages=\"{}\",page_size=\"{}\"",
            cfg.num_gpu_blocks, cfg.block_size
        );
        let families = [
            (
                "sglang:num_running_reqs",
                "gauge",
                "The number of running requests.",
                &labels,
                num(engine.num_running() as f64),
            ),
            (
                "sglang:num_queue_reqs",
                "gauge",
                "The number of requests in the waiting queue.",
                &labels,
                num(engine.num_waiting() as f64),
            ),
            (
                "sglang:token_usage",
                "gauge",
                "The token usage.",
                &labels,
                engine.kv_usage().to_string(),
            ),
            (
                "sglang:cache_config_info",
                "gauge",
                "Cache configuration.",
                &cache,
                "1.0".to_string(),
            ),
            (
                "sglang:prompt_tokens_total",
                "counter",
                "Number of prefill tokens processed.",
                &labels,
                num(engine.stats.prompt_tokens as f64),
            ),
            (
                "sglang:generation_tokens_total",
                "counter",
                "Number of generation tokens processed.",
                &labels,
                num(engine.stats.generation_tokens as f64),
            ),
        ];
        for (name, kind, help, labels, value) in families {
            sample(&mut out, name, kind, help, labels, &value);
        }
        return out;
    }

    let l = format!("engine=\"0\",model_name=\"{model}\"");
    let s = &engine.stats;
    let kv_name = match flavor {
        MetricsFlavor::VllmLegacy => "vllm:gpu_cache_usage_perc",
        _ => "vllm:kv_cache_usage_perc",
    };
    let gauges = [
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            engine.num_running() as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            engine.num_waiting() as f64,
        ),
        (
            kv_name,
            "KV-cache usage. 1 means 100 percent usage.",
            engine.kv_usage(),
        ),
    ];
    for (name, help, value) in gauges {
        sample(&mut out, name, "gauge", help, &l, &num(value));
    }
    let counters = [
        (
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            s.prefix_queries,
        ),
        (
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            s.prefix_hits,
        ),
        (
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            s.preemptions,
        ),
        (
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            s.prompt_tokens,
        ),
        (
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            s.generation_tokens,
        ),
    ];
    for (name, help, value) in counters {
        sample(
            &mut out,
            &format!("{name}_total"),
            "counter",
            help,
            &l,
            &num(value as f64),
        );
    }
    header(
        &mut out,
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
    );
    for reason in ["stop", "length", "abort", "error", "repetition"] {
        let v = if reason == "length" {
            s.request_success
        } else {
            0
        };
        let _ = writeln!(
            out,
            "vllm:request_success_total{{engine=\"0\",finished_reason=\"{reason}\",model_name=\"{model}\"}} {}",
            num(v as f64)
        );
    }
    histogram(
        &mut out,
        "vllm:iteration_tokens_total",
        "Histogram of number of tokens per engine_step.",
        &s.iteration_tokens,
        model,
    );
    histogram(
        &mut out,
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &s.ttft,
        model,
    );
    histogram(
        &mut out,
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &s.inter_token,
        model,
    );
    histogram(
        &mut out,
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &s.e2e,
        model,
    );
    histogram(
        &mut out,
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        &s.queue_time,
        model,
    );
    if max_loras > 0 {
        header(
            &mut out,
            "vllm:lora_requests_info",
            "gauge",
            "Running stats on lora requests.",
        );
        for ((running, active), ts) in &lora.series {
            let _ = writeln!(
                out,
                "vllm:lora_requests_info{{max_lora=\"{max_loras}\",running_lora_adapters=\"{running}\",waiting_lora_adapters=\"{active}\"}} {ts:e}"
            );
        }
    }
    header(
        &mut out,
        "vllm:cache_config_info",
        "gauge",
        "Information of the LLMEngine CacheConfig",
    );
    // The label set of vLLM 0.32's page, in its order; values follow the simulated config.
    let tokens = u64::from(cfg.num_gpu_blocks) * u64::from(cfg.block_size);
    let bool_text = |b: bool| if b { "True" } else { "False" };
    let labels: [(&str, String); 37] = [
        ("_block_size_resolved", "True".into()),
        ("block_size", cfg.block_size.to_string()),
        ("cache_dtype", "auto".into()),
        ("cache_hit_alignment_tokens", "None".into()),
        ("effective_attention_block_size", cfg.block_size.to_string()),
        ("enable_mamba_shared_prefix_checkpoint", "False".into()),
        (
            "enable_prefix_caching",
            bool_text(cfg.enable_prefix_caching).into(),
        ),
        ("engine", "0".into()),
        ("gpu_memory_utilization", gpu_memory_utilization.to_string()),
        ("hash_block_size", "None".into()),
        ("is_attention_free", "False".into()),
        ("kv_cache_dtype_skip_layers", "[]".into()),
        ("kv_cache_layout", "None".into()),
        (
            "kv_cache_max_concurrency",
            format!("{:.1}", tokens as f64 / f64::from(cfg.max_model_len)),
        ),
        (
            "kv_cache_memory_bytes",
            format!("{:.0}", tokens as f64 * cfg.cost.model.kv_bytes_per_token()),
        ),
        ("kv_cache_size_tokens", tokens.to_string()),
        ("kv_offloading_backend", "native".into()),
        ("kv_offloading_size", "None".into()),
        ("kv_sharing_fast_prefill", "False".into()),
        ("mamba_block_size", "None".into()),
        ("mamba_cache_dtype", "auto".into()),
        ("mamba_cache_mode", "none".into()),
        ("mamba_page_size_padded", "None".into()),
        ("mamba_ssm_cache_dtype", "auto".into()),
        ("num_cpu_blocks", "None".into()),
        ("num_gpu_blocks", cfg.num_gpu_blocks.to_string()),
        (
            "num_gpu_blocks_override",
            num_gpu_blocks_override.map_or("None".into(), |n| n.to_string()),
        ),
        ("prefix_cache_retention_interval", "0".into()),
        ("prefix_caching_hash_algo", "sha256".into()),
        ("prefix_match_unit", "None".into()),
        ("replayssm_buffer_len", "16".into()),
        ("skip_page_size_padded", "None".into()),
        ("sliding_window", "None".into()),
        ("swa_bounded_replay", "True".into()),
        ("use_kda_recoverssm", "False".into()),
        ("use_replayssm", "False".into()),
        ("user_specified_block_size", "False".into()),
    ];
    let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let _ = writeln!(out, "vllm:cache_config_info{{{}}} 1.0", text.join(","));
    out
}
