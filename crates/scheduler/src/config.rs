//! Scheduler weights and thresholds (defaults are the reference picker's).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Weight of the queue scorer (reference default 2).
    pub queue_weight: f64,
    /// Weight of the KV-cache utilisation scorer (reference default 2).
    pub kv_cache_weight: f64,
    /// Weight of the LoRA-affinity scorer.
    pub lora_affinity_weight: f64,
    /// Weight of the approximate prefix-cache scorer (reference default 3).
    pub prefix_cache_weight: f64,
    /// Metrics older than this leave an endpoint out of scoring (unless nothing else is left).
    pub metrics_staleness: Duration,
    /// A pod with this many queued requests counts as saturated.
    pub queue_depth_threshold: f64,
    /// A pod with this KV-cache usage counts as saturated.
    pub kv_cache_threshold: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            queue_weight: 2.0,
            kv_cache_weight: 2.0,
            lora_affinity_weight: 1.0,
            prefix_cache_weight: 3.0,
            metrics_staleness: Duration::from_secs(2),
            queue_depth_threshold: 5.0,
            kv_cache_threshold: 0.8,
        }
    }
}
