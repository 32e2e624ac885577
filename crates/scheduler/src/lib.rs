//! The pure scheduler: `(snapshot, request, now, rng) -> decision`.
//!
//! No I/O, no clock reads, no async: the caller passes the time and the random source, which makes
//! every rule table-testable and the whole decision benchmarkable in microseconds.
//!
//! Pipeline: subset filter -> saturation gate (Sheddable only) -> freshness filter (fail open when
//! nothing is fresh) -> weighted scorers, each clamped to [0, 1] -> max-score picker with a random
//! tie-break.
#![forbid(unsafe_code)]

mod candidate;
mod config;
mod prefix;
mod scheduler;
mod scorer;

pub use candidate::Candidate;
pub use config::SchedulerConfig;
pub use prefix::{BLOCK_BYTES, MAX_BLOCKS, PrefixIndex, block_hashes};
pub use scheduler::{Decision, PickRequest, ScheduleError, Scheduler};
pub use scorer::{KvCacheScorer, LoraAffinityScorer, PrefixCacheScorer, QueueScorer, Scorer};
