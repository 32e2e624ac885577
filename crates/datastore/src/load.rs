//! The per-endpoint numbers the scheduler reads on every decision, kept in plain atomics.
//!
//! Profiling the scheduler at 1,000 endpoints showed more than half its time in `ArcSwap` loads of
//! each endpoint's full metrics. A [`LoadCell`] holds a flat copy of what scoring needs (queue,
//! batch, KV usage, scrape time, LoRA adapter membership as 64-bit name hashes), written once per
//! scrape under a sequence lock built from atomics: readers take no lock, touch no shared counter
//! and allocate nothing; a read that overlaps a write simply retries.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use crate::EndpointMetrics;

/// Adapters tracked per list (running, waiting) in the cell; servers reporting more fall back to
/// an exact string comparison on the full metrics.
pub const TRACKED_ADAPTERS: usize = 16;

/// A model or adapter name reduced to a 64-bit hash, computed once per decision.
///
/// Two distinct names hashing alike (odds about 2^-64 per pair) would share affinity; nothing
/// else depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdapterKey(u64);

impl AdapterKey {
    #[inline]
    pub fn of(name: &str) -> Self {
        Self(xxhash_rust::xxh64::xxh64(name.as_bytes(), 0x5eed))
    }
}

/// Nanoseconds relative to one process-wide origin, so that an `Instant` fits in an atomic.
pub fn clock_nanos(t: Instant) -> i64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let to_i64 = |nanos: u128| i64::try_from(nanos).unwrap_or(i64::MAX);
    match t.checked_duration_since(origin) {
        Some(after) => to_i64(after.as_nanos()),
        None => -to_i64(origin.duration_since(t).as_nanos()),
    }
}

/// What one endpoint's latest scrape says, as seen by one request for one adapter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadView {
    pub waiting: u32,
    pub running: u32,
    pub kv_usage: f64,
    /// [`clock_nanos`] of the scrape.
    pub scraped_at_nanos: i64,
    /// LoRA state for the requested adapter, when the server reports LoRA info.
    pub lora: Option<LoraView>,
}

/// The LoRA facts the affinity rule needs for one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoraView {
    pub max_lora: u32,
    /// Distinct adapters with requests on the server (running or waiting).
    pub active: u32,
    /// The requested adapter is in the running batch.
    pub running: bool,
    /// The requested adapter has requests waiting.
    pub waiting: bool,
}

/// A read that could not settle LoRA membership from the hashes (too many adapters listed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CellRead {
    Complete(LoadView),
    /// Everything but `running`/`waiting` of the LoRA view is known; the caller checks names.
    NeedsNames(LoadView),
}

const NO_LORA: u32 = u32::MAX;
const OVERFLOW: u32 = 0xff;

/// A sequence-locked flat copy of the scoring inputs of one endpoint.
#[derive(Debug)]
pub(crate) struct LoadCell {
    /// 0: never written; odd: write in progress; even: stable.
    seq: AtomicU64,
    /// Serialises writers (one scrape loop per endpoint, but nothing should rely on that).
    writer: Mutex<()>,
    waiting: AtomicU32,
    running: AtomicU32,
    kv_bits: AtomicU64,
    scraped_at: AtomicI64,
    /// `NO_LORA` when the server reports no LoRA info.
    max_lora: AtomicU32,
    /// active << 16 | running count << 8 | waiting count; a count of `OVERFLOW` means untracked.
    lora_shape: AtomicU32,
    running_keys: [AtomicU64; TRACKED_ADAPTERS],
    waiting_keys: [AtomicU64; TRACKED_ADAPTERS],
}

impl Default for LoadCell {
    fn default() -> Self {
        Self {
            seq: AtomicU64::new(0),
            writer: Mutex::new(()),
            waiting: AtomicU32::new(0),
            running: AtomicU32::new(0),
            kv_bits: AtomicU64::new(0),
            scraped_at: AtomicI64::new(0),
            max_lora: AtomicU32::new(NO_LORA),
            lora_shape: AtomicU32::new(0),
            running_keys: std::array::from_fn(|_| AtomicU64::new(0)),
            waiting_keys: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Stores up to [`TRACKED_ADAPTERS`] name hashes; returns the count, or `OVERFLOW`.
fn store_keys(slots: &[AtomicU64; TRACKED_ADAPTERS], names: &[String]) -> u32 {
    if names.len() > TRACKED_ADAPTERS {
        return OVERFLOW;
    }
    for (slot, name) in slots.iter().zip(names) {
        slot.store(AdapterKey::of(name).0, Ordering::Relaxed);
    }
    names.len() as u32
}

#[inline]
fn contains(slots: &[AtomicU64; TRACKED_ADAPTERS], count: u32, key: AdapterKey) -> bool {
    slots[..count as usize]
        .iter()
        .any(|slot| slot.load(Ordering::Relaxed) == key.0)
}

impl LoadCell {
    pub(crate) fn publish(&self, metrics: &EndpointMetrics) {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);

        self.waiting.store(metrics.waiting, Ordering::Relaxed);
        self.running.store(metrics.running, Ordering::Relaxed);
        self.kv_bits
            .store(metrics.kv_usage.to_bits(), Ordering::Relaxed);
        self.scraped_at
            .store(clock_nanos(metrics.scraped_at), Ordering::Relaxed);
        match &metrics.lora {
            Some(lora) => {
                let running = store_keys(&self.running_keys, &lora.running);
                let waiting = store_keys(&self.waiting_keys, &lora.waiting);
                let active = lora.active_count().min(0xffff) as u32;
                self.max_lora.store(lora.max_lora, Ordering::Relaxed);
                self.lora_shape
                    .store(active << 16 | running << 8 | waiting, Ordering::Relaxed);
            }
            None => self.max_lora.store(NO_LORA, Ordering::Relaxed),
        }

        self.seq.store(seq + 2, Ordering::Release);
    }

    /// The latest published values for `adapter`, or `None` before the first publish.
    #[inline]
    pub(crate) fn read(&self, adapter: AdapterKey) -> Option<CellRead> {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            if seq == 0 {
                return None;
            }
            if seq & 1 == 1 {
                spin_loop();
                continue;
            }
            let mut view = LoadView {
                waiting: self.waiting.load(Ordering::Relaxed),
                running: self.running.load(Ordering::Relaxed),
                kv_usage: f64::from_bits(self.kv_bits.load(Ordering::Relaxed)),
                scraped_at_nanos: self.scraped_at.load(Ordering::Relaxed),
                lora: None,
            };
            let max_lora = self.max_lora.load(Ordering::Relaxed);
            let mut complete = true;
            if max_lora != NO_LORA {
                let shape = self.lora_shape.load(Ordering::Relaxed);
                let (running, waiting) = ((shape >> 8) & 0xff, shape & 0xff);
                complete = running != OVERFLOW && waiting != OVERFLOW;
                view.lora = Some(LoraView {
                    max_lora,
                    active: shape >> 16,
                    running: complete && contains(&self.running_keys, running, adapter),
                    waiting: complete && contains(&self.waiting_keys, waiting, adapter),
                });
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == seq {
                return Some(if complete {
                    CellRead::Complete(view)
                } else {
                    CellRead::NeedsNames(view)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoraState;
    use std::sync::Arc;
    use std::time::Duration;

    fn metrics(waiting: u32, running: &[&str], queued: &[&str]) -> EndpointMetrics {
        EndpointMetrics {
            waiting,
            running: waiting * 2,
            kv_usage: f64::from(waiting) / 100.0,
            lora: Some(LoraState {
                max_lora: 4,
                running: running.iter().map(|s| s.to_string()).collect(),
                waiting: queued.iter().map(|s| s.to_string()).collect(),
            }),
            cache: None,
            scraped_at: Instant::now(),
        }
    }

    #[test]
    fn reads_what_was_published() {
        let cell = LoadCell::default();
        assert_eq!(cell.read(AdapterKey::of("a")), None);
        let m = metrics(3, &["a", "b"], &["c"]);
        cell.publish(&m);
        let Some(CellRead::Complete(view)) = cell.read(AdapterKey::of("c")) else {
            panic!("complete read expected")
        };
        assert_eq!((view.waiting, view.running, view.kv_usage), (3, 6, 0.03));
        assert_eq!(view.scraped_at_nanos, clock_nanos(m.scraped_at));
        assert_eq!(
            view.lora,
            Some(LoraView {
                max_lora: 4,
                active: 3,
                running: false,
                waiting: true
            })
        );
        cell.publish(&EndpointMetrics { lora: None, ..m });
        let Some(CellRead::Complete(view)) = cell.read(AdapterKey::of("a")) else {
            panic!("complete read expected")
        };
        assert_eq!(view.lora, None, "LoRA info withdrawn by a later scrape");
    }

    #[test]
    fn too_many_adapters_ask_for_a_name_check() {
        let cell = LoadCell::default();
        let many: Vec<String> = (0..=TRACKED_ADAPTERS).map(|i| format!("a{i}")).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        cell.publish(&metrics(0, &names, &[]));
        assert!(matches!(
            cell.read(AdapterKey::of("a0")),
            Some(CellRead::NeedsNames(_))
        ));
    }

    #[test]
    fn clock_round_trips_both_sides_of_the_origin() {
        let now = Instant::now();
        let earlier = now - Duration::from_millis(1500);
        let later = now + Duration::from_millis(250);
        let gap = clock_nanos(later) - clock_nanos(earlier);
        assert_eq!(gap, 1_750_000_000);
    }

    #[test]
    fn concurrent_readers_never_see_a_torn_write() {
        // Every publish keeps waiting, running and kv in a fixed relation; a torn read breaks it.
        let cell = Arc::new(LoadCell::default());
        cell.publish(&metrics(0, &["a"], &[]));
        let writer = {
            let cell = Arc::clone(&cell);
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    cell.publish(&metrics(i % 100, &["a"], &[]));
                }
            })
        };
        let key = AdapterKey::of("a");
        while !writer.is_finished() {
            let Some(CellRead::Complete(v)) = cell.read(key) else {
                panic!("published cell reads complete")
            };
            assert_eq!(v.running, v.waiting * 2);
            assert_eq!(v.kv_usage, f64::from(v.waiting) / 100.0);
            assert!(v.lora.is_some_and(|l| l.running));
        }
        writer.join().unwrap();
    }
}
