//! Metric names per model-server engine.

use std::str::FromStr;

/// The model-server flavour of a pool; selects the metric names read from `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    #[default]
    Vllm,
    Sglang,
    TrtLlm,
}

/// The names one engine uses for the signals the picker reads.
#[derive(Debug, Clone, Copy)]
pub struct MetricNames {
    pub waiting: &'static str,
    pub running: &'static str,
    /// KV usage names, in order of preference (vLLM renamed its gauge in 0.9).
    pub kv_usage: &'static [&'static str],
    pub lora_info: Option<&'static str>,
    pub cache_info: Option<&'static str>,
    /// Label names in `cache_info` for block size and block count.
    pub cache_labels: (&'static str, &'static str),
}

impl Engine {
    pub fn names(self) -> MetricNames {
        match self {
            Engine::Vllm => MetricNames {
                waiting: "vllm:num_requests_waiting",
                running: "vllm:num_requests_running",
                kv_usage: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
                lora_info: Some("vllm:lora_requests_info"),
                cache_info: Some("vllm:cache_config_info"),
                cache_labels: ("block_size", "num_gpu_blocks"),
            },
            Engine::Sglang => MetricNames {
                waiting: "sglang:num_queue_reqs",
                running: "sglang:num_running_reqs",
                kv_usage: &["sglang:token_usage"],
                lora_info: None,
                cache_info: Some("sglang:cache_config_info"),
                cache_labels: ("page_size", "num_pages"),
            },
            Engine::TrtLlm => MetricNames {
                waiting: "trtllm_num_requests_waiting",
                running: "trtllm_num_requests_running",
                kv_usage: &["trtllm_kv_cache_utilization"],
                lora_info: None,
                cache_info: None,
                cache_labels: ("", ""),
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::TrtLlm => "trtllm",
        }
    }
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vllm" => Ok(Engine::Vllm),
            "sglang" => Ok(Engine::Sglang),
            "trtllm" | "trt-llm" | "tensorrt-llm" => Ok(Engine::TrtLlm),
            other => Err(format!(
                "unknown engine {other:?} (expected vllm, sglang or trtllm)"
            )),
        }
    }
}
