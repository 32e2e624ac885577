//! The decision pipeline: filters, weighted scorers and the max-score picker.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use switchyard_datastore::{AdapterKey, Criticality, Endpoint, PoolSnapshot, clock_nanos};

use crate::candidate::ReadContext;
use crate::scorer::{KvCacheScorer, LoraAffinityScorer, PrefixCacheScorer, QueueScorer, Scorer};
use crate::{Candidate, SchedulerConfig};

/// What the scheduler needs to know about one request.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    /// The model the pod will be asked for (after the traffic split).
    pub target_model: &'a str,
    pub criticality: Criticality,
    /// Gateway subset hint: only endpoints with these IPs may be picked. `Some(&[])` matches none.
    pub subset: Option<&'a [IpAddr]>,
    /// Prefix match per snapshot endpoint (same order), from [`crate::PrefixIndex::matches`].
    pub prefix_matches: Option<&'a [f64]>,
}

/// Why no endpoint was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("no ready endpoints in the pool")]
    NoEndpoints,
    #[error("no pool endpoint matches the gateway's subset hint")]
    SubsetMismatch,
    #[error("the pool is saturated and the request is sheddable")]
    Saturated,
}

/// The picked endpoint and why it won.
#[derive(Debug, Clone)]
pub struct Decision {
    pub endpoint: Arc<Endpoint>,
    /// The winner's weighted total score.
    pub score: f64,
    /// The winner's inputs, for logs and the decision header.
    pub winner: Candidate,
    /// How many endpoints were scored.
    pub candidates: usize,
    /// True when no endpoint had fresh metrics and the pick ignored them.
    pub fail_open: bool,
}

/// A configured scheduler; cheap to share, holds no per-request state.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    scorers: Vec<(Box<dyn Scorer>, f64)>,
}

/// Scores closer than this are ties, broken at random.
const TIE_EPSILON: f64 = 1e-9;

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let scorers: Vec<(Box<dyn Scorer>, f64)> = vec![
            (Box::new(QueueScorer), config.queue_weight),
            (Box::new(KvCacheScorer), config.kv_cache_weight),
            (Box::new(LoraAffinityScorer), config.lora_affinity_weight),
            (Box::new(PrefixCacheScorer), config.prefix_cache_weight),
        ];
        Self {
            config,
            scorers: scorers.into_iter().filter(|(_, w)| *w > 0.0).collect(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Picks an endpoint for `request`. Pure: reads the snapshot, `now` and `rng`, writes nothing.
    pub fn pick(
        &self,
        snapshot: &PoolSnapshot,
        request: &PickRequest<'_>,
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> Result<Decision, ScheduleError> {
        let ctx = ReadContext {
            model: request.target_model,
            model_key: AdapterKey::of(request.target_model),
            now_nanos: clock_nanos(now),
            staleness_nanos: i64::try_from(self.config.metrics_staleness.as_nanos())
                .unwrap_or(i64::MAX),
        };
        // Sized up front: the subset filter hides the length from `collect`, which would regrow.
        let mut candidates = Vec::with_capacity(snapshot.endpoints.len());
        candidates.extend(
            snapshot
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| in_subset(request.subset, e))
                .map(|(i, e)| {
                    let prefix_match = request
                        .prefix_matches
                        .and_then(|m| m.get(i).copied())
                        .unwrap_or(0.0);
                    Candidate::read(i, e, &ctx, prefix_match)
                }),
        );
        if candidates.is_empty() {
            return Err(match request.subset {
                Some(_) if !snapshot.endpoints.is_empty() => ScheduleError::SubsetMismatch,
                _ => ScheduleError::NoEndpoints,
            });
        }

        if request.criticality == Criticality::Sheddable && self.saturated(&candidates) {
            return Err(ScheduleError::Saturated);
        }

        let fail_open = !candidates.iter().any(|c| c.fresh);
        if !fail_open {
            candidates.retain(|c| c.fresh);
        }

        let (best, score) = self.best(&candidates, rng);
        let winner = candidates[best];
        Ok(Decision {
            endpoint: Arc::clone(&snapshot.endpoints[winner.index]),
            score,
            winner,
            candidates: candidates.len(),
            fail_open,
        })
    }

    /// Mean per-pod saturation of at least 1 means the pool is saturated.
    fn saturated(&self, candidates: &[Candidate]) -> bool {
        let total: f64 = candidates
            .iter()
            .map(|c| {
                c.saturation(
                    self.config.queue_depth_threshold,
                    self.config.kv_cache_threshold,
                )
            })
            .sum();
        total / candidates.len() as f64 >= 1.0
    }

    /// Weighted sum of clamped scores; the maximum wins, ties broken uniformly at random.
    fn best(&self, candidates: &[Candidate], rng: &mut fastrand::Rng) -> (usize, f64) {
        // One allocation for both rows.
        let mut rows = vec![0.0f64; 2 * candidates.len()];
        let (totals, scratch) = rows.split_at_mut(candidates.len());
        for (scorer, weight) in &self.scorers {
            scorer.score(candidates, scratch);
            for (t, s) in totals.iter_mut().zip(scratch.iter()) {
                let s = if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) };
                *t += weight * s;
            }
        }
        let mut best = 0;
        let mut ties = 0u32;
        for (i, &t) in totals.iter().enumerate() {
            if t > totals[best] + TIE_EPSILON {
                best = i;
                ties = 1;
            } else if (t - totals[best]).abs() <= TIE_EPSILON {
                // Reservoir sampling: each of the k tied candidates is kept with probability 1/k.
                ties += 1;
                if rng.u32(..ties) == 0 {
                    best = i;
                }
            }
        }
        (best, totals[best])
    }
}

fn in_subset(subset: Option<&[IpAddr]>, endpoint: &Endpoint) -> bool {
    subset.is_none_or(|ips| ips.contains(&endpoint.addr().ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchyard_datastore::{EndpointMetrics, LoraState};

    struct Pod {
        waiting: u32,
        running: u32,
        kv: f64,
        running_adapters: &'static [&'static str],
        age_ms: u64,
        dispatched: u32,
    }

    const fn pod(waiting: u32, kv: f64) -> Pod {
        Pod {
            waiting,
            running: 1,
            kv,
            running_adapters: &[],
            age_ms: 0,
            dispatched: 0,
        }
    }

    fn snapshot(pods: &[Pod], now: Instant) -> PoolSnapshot {
        let endpoints = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ep = Endpoint::new(format!("10.0.0.{}:8000", i + 1).parse().unwrap());
                ep.publish_metrics(
                    EndpointMetrics {
                        waiting: p.waiting,
                        running: p.running,
                        kv_usage: p.kv,
                        lora: Some(LoraState {
                            max_lora: 2,
                            running: p.running_adapters.iter().map(|s| s.to_string()).collect(),
                            waiting: vec![],
                        }),
                        cache: None,
                        scraped_at: now - Duration::from_millis(p.age_ms),
                    },
                    0,
                );
                for _ in 0..p.dispatched {
                    ep.record_dispatch();
                }
                Arc::new(ep)
            })
            .collect();
        PoolSnapshot {
            pool_name: "pool".into(),
            endpoints,
            models: Default::default(),
        }
    }

    fn request(crit: Criticality) -> PickRequest<'static> {
        PickRequest {
            target_model: "sql-lora",
            criticality: crit,
            subset: None,
            prefix_matches: None,
        }
    }

    /// Picks 200 times and returns which pod indexes won.
    fn winners(pods: &[Pod], req: PickRequest<'_>) -> Result<Vec<usize>, ScheduleError> {
        let now = Instant::now();
        let snap = snapshot(pods, now);
        let scheduler = Scheduler::new(SchedulerConfig::default());
        let mut rng = fastrand::Rng::with_seed(7);
        let mut seen = Vec::new();
        for _ in 0..200 {
            let d = scheduler.pick(&snap, &req, now, &mut rng)?;
            let idx = snap
                .endpoints
                .iter()
                .position(|e| Arc::ptr_eq(e, &d.endpoint))
                .unwrap();
            if !seen.contains(&idx) {
                seen.push(idx);
            }
        }
        seen.sort();
        Ok(seen)
    }

    #[test]
    fn decision_table() {
        let std = request(Criticality::Standard);
        type Case = (&'static str, Vec<Pod>, Result<Vec<usize>, ScheduleError>);
        let cases: Vec<Case> = vec![
            (
                "shortest queue wins",
                vec![pod(4, 0.2), pod(0, 0.2), pod(9, 0.2)],
                Ok(vec![1]),
            ),
            (
                "emptier KV wins",
                vec![pod(0, 0.7), pod(0, 0.1), pod(0, 0.4)],
                Ok(vec![1]),
            ),
            (
                "equal load: LoRA affinity wins",
                vec![
                    pod(1, 0.3),
                    Pod {
                        running_adapters: &["sql-lora"],
                        ..pod(1, 0.3)
                    },
                ],
                Ok(vec![1]),
            ),
            (
                "identical pods: random tie-break reaches all",
                vec![pod(0, 0.0), pod(0, 0.0), pod(0, 0.0)],
                Ok(vec![0, 1, 2]),
            ),
            (
                "stale pod left out while a fresh one exists",
                vec![
                    Pod {
                        age_ms: 5_000,
                        ..pod(0, 0.0)
                    },
                    pod(3, 0.6),
                ],
                Ok(vec![1]),
            ),
            (
                "all stale: fail open over every pod",
                vec![
                    Pod {
                        age_ms: 5_000,
                        ..pod(9, 0.9)
                    },
                    Pod {
                        age_ms: 5_000,
                        ..pod(0, 0.0)
                    },
                ],
                Ok(vec![0, 1]),
            ),
            (
                "in-flight dispatches join a queued pod's queue",
                vec![
                    Pod {
                        dispatched: 4,
                        ..pod(1, 0.1)
                    },
                    pod(2, 0.1),
                ],
                Ok(vec![1]),
            ),
            (
                "in-flight dispatches add KV to a pod with room",
                vec![
                    Pod {
                        dispatched: 10,
                        running: 10,
                        ..pod(0, 0.2)
                    },
                    Pod {
                        running: 10,
                        ..pod(0, 0.3)
                    },
                ],
                Ok(vec![1]),
            ),
            ("no endpoints", vec![], Err(ScheduleError::NoEndpoints)),
        ];
        for (name, pods, want) in cases {
            assert_eq!(winners(&pods, std), want, "{name}");
        }
    }

    #[test]
    fn sheddable_shed_only_when_saturated() {
        let busy = || vec![pod(10, 0.9), pod(6, 0.85)];
        assert_eq!(
            winners(&busy(), request(Criticality::Sheddable)),
            Err(ScheduleError::Saturated)
        );
        assert_eq!(
            winners(&busy(), request(Criticality::Critical)),
            Ok(vec![1])
        );
        assert_eq!(
            winners(&[pod(5, 0.5), pod(0, 0.1)], request(Criticality::Sheddable)),
            Ok(vec![1])
        );
    }

    #[test]
    fn subset_hint_filters_by_ip() {
        let pods = [pod(0, 0.0), pod(9, 0.9)];
        let only_second: [IpAddr; 1] = ["10.0.0.2".parse().unwrap()];
        let outside: [IpAddr; 1] = ["192.168.1.1".parse().unwrap()];
        let mut req = request(Criticality::Standard);
        req.subset = Some(&only_second);
        assert_eq!(winners(&pods, req), Ok(vec![1]));
        req.subset = Some(&outside);
        assert_eq!(winners(&pods, req), Err(ScheduleError::SubsetMismatch));
        req.subset = Some(&[]);
        assert_eq!(winners(&pods, req), Err(ScheduleError::SubsetMismatch));
    }

    #[test]
    fn prefix_match_wins_when_load_is_equal_but_not_against_a_full_queue() {
        let pods = [pod(0, 0.3), pod(0, 0.3), pod(0, 0.3)];
        let matches = [0.0, 0.9, 0.2];
        let mut req = request(Criticality::Standard);
        req.prefix_matches = Some(&matches);
        assert_eq!(winners(&pods, req), Ok(vec![1]));
        // The matching pod is swamped: load outweighs the cached prefix.
        let busy = [pod(0, 0.3), pod(20, 1.0), pod(0, 0.3)];
        assert_eq!(winners(&busy, req), Ok(vec![2]));
    }

    #[test]
    fn zero_weight_scorers_are_dropped() {
        let cfg = SchedulerConfig {
            kv_cache_weight: 0.0,
            ..SchedulerConfig::default()
        };
        let s = Scheduler::new(cfg);
        assert_eq!(s.scorers.len(), 3);
    }
}
