//! Scorers: each maps the candidates to scores in [0, 1]; the scheduler weighs and sums them.

use crate::Candidate;

/// A scoring rule. `out[i]` receives the score of `candidates[i]`; values are clamped afterwards.
pub trait Scorer: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn score(&self, candidates: &[Candidate], out: &mut [f64]);
}

/// Shorter queue is better: `(max - q) / (max - min)`, 1 for everyone when all are equal.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueScorer;

impl Scorer for QueueScorer {
    fn name(&self) -> &'static str {
        "queue-scorer"
    }

    fn score(&self, candidates: &[Candidate], out: &mut [f64]) {
        let (min, max) = candidates
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
                (lo.min(c.queue), hi.max(c.queue))
            });
        let span = max - min;
        for (c, o) in candidates.iter().zip(out) {
            *o = if span > 0.0 {
                (max - c.queue) / span
            } else {
                1.0
            };
        }
    }
}

/// Emptier KV cache is better: `1 - usage`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvCacheScorer;

impl Scorer for KvCacheScorer {
    fn name(&self) -> &'static str {
        "kv-cache-utilization-scorer"
    }

    fn score(&self, candidates: &[Candidate], out: &mut [f64]) {
        for (c, o) in candidates.iter().zip(out) {
            *o = 1.0 - c.kv_usage;
        }
    }
}

/// Prefer pods that already run the requested LoRA adapter (see [`crate::candidate::lora_affinity`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct LoraAffinityScorer;

impl Scorer for LoraAffinityScorer {
    fn name(&self) -> &'static str {
        "lora-affinity-scorer"
    }

    fn score(&self, candidates: &[Candidate], out: &mut [f64]) {
        for (c, o) in candidates.iter().zip(out) {
            *o = c.lora_affinity;
        }
    }
}

/// Prefer the endpoint holding the longest leading part of the prompt (see [`crate::PrefixIndex`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct PrefixCacheScorer;

impl Scorer for PrefixCacheScorer {
    fn name(&self) -> &'static str {
        "prefix-cache-scorer"
    }

    fn score(&self, candidates: &[Candidate], out: &mut [f64]) {
        for (c, o) in candidates.iter().zip(out) {
            *o = c.prefix_match;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(values: &[(f64, f64, f64)]) -> Vec<Candidate> {
        values
            .iter()
            .enumerate()
            .map(|(index, &(queue, kv_usage, lora_affinity))| Candidate {
                index,
                queue,
                kv_usage,
                lora_affinity,
                prefix_match: lora_affinity / 2.0,
                fresh: true,
            })
            .collect()
    }

    fn run(s: &dyn Scorer, c: &[Candidate]) -> Vec<f64> {
        let mut out = vec![f64::NAN; c.len()];
        s.score(c, &mut out);
        out
    }

    #[test]
    fn scorer_table() {
        let c = cands(&[(0.0, 0.1, 1.0), (5.0, 0.5, 0.8), (10.0, 1.0, 0.0)]);
        assert_eq!(run(&QueueScorer, &c), vec![1.0, 0.5, 0.0]);
        assert_eq!(run(&KvCacheScorer, &c), vec![0.9, 0.5, 0.0]);
        assert_eq!(run(&LoraAffinityScorer, &c), vec![1.0, 0.8, 0.0]);
        assert_eq!(run(&PrefixCacheScorer, &c), vec![0.5, 0.4, 0.0]);
        let equal = cands(&[(3.0, 0.0, 0.0), (3.0, 0.0, 0.0)]);
        assert_eq!(run(&QueueScorer, &equal), vec![1.0, 1.0]);
    }
}
