//! Approximate prefix-cache affinity: which endpoint most likely still holds a request's prompt
//! prefix in its KV cache, judged from where the picker sent earlier prompts.
//!
//! A prompt is cut into blocks of [`BLOCK_BYTES`] (16 tokens under the shared 4-bytes-per-token
//! rule) and hashed as a chain (block i's hash covers block i and block i-1's hash, seeded with the
//! model name), so one hash stands for a whole prefix. The index maps block hashes to the endpoints
//! they were sent to; a request's match on an endpoint is the number of leading blocks found there,
//! as a fraction of its blocks. The index is sharded, each shard locked only for a lookup or an
//! insert, and bounded: the oldest entries are evicted first.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_openai::tokens::BYTES_PER_TOKEN;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Bytes per block: 16 tokens.
pub const BLOCK_BYTES: usize = 16 * BYTES_PER_TOKEN;
/// Prompts are hashed up to this many blocks (8,192 tokens): longer shared prefixes do not change
/// which endpoint wins, and hashing stays cheap for 200 KB prompts.
pub const MAX_BLOCKS: usize = 512;
const SHARDS: usize = 16;

/// Chained block hashes of a prompt (full blocks only, at most [`MAX_BLOCKS`]). XXH3: about
/// twice XXH64's speed on 64-byte inputs, and this runs for every block of every prompt.
pub fn block_hashes(model: &str, prompt: &[u8]) -> Vec<u64> {
    let mut parent = xxh3_64_with_seed(model.as_bytes(), 0);
    prompt
        .chunks_exact(BLOCK_BYTES)
        .take(MAX_BLOCKS)
        .map(|block| {
            parent = xxh3_64_with_seed(block, parent);
            parent
        })
        .collect()
}

/// The keys are XXH3 block hashes already: hashing them again (std's SipHash) only costs time.
#[derive(Debug, Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Block hash -> (endpoint, last use) pairs.
    entries: HashMap<u64, Vec<(SocketAddr, u64)>, BuildHasherDefault<PassThroughHasher>>,
    len: usize,
}

/// Which endpoints were sent which prefixes.
#[derive(Debug)]
pub struct PrefixIndex {
    shards: Vec<Mutex<Shard>>,
    /// Entries per shard before the oldest are evicted.
    shard_capacity: usize,
    clock: AtomicU64,
}

impl PrefixIndex {
    /// `capacity`: block entries kept in total (e.g. endpoints x their KV blocks).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: (capacity / SHARDS).max(64),
            clock: AtomicU64::new(0),
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // A poisoned shard only ever holds complete entries.
        // Middle bits pick the shard: the map inside uses the low bits for buckets and the top
        // seven as tags, which stay fully varied that way.
        self.shards[((hash >> 32) as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// For each endpoint of `endpoints`, the fraction of `hashes` it holds as a leading prefix.
    pub fn matches(&self, hashes: &[u64], endpoints: &[SocketAddr]) -> Vec<f64> {
        let mut matched = vec![0usize; endpoints.len()];
        if hashes.is_empty() {
            return vec![0.0; endpoints.len()];
        }
        let mut alive: Vec<usize> = (0..endpoints.len()).collect();
        for (i, h) in hashes.iter().enumerate() {
            let shard = self.shard(*h);
            let Some(holders) = shard.entries.get(h) else {
                break;
            };
            alive.retain(|&e| holders.iter().any(|(a, _)| *a == endpoints[e]));
            drop(shard);
            if alive.is_empty() {
                break;
            }
            for &e in &alive {
                matched[e] = i + 1;
            }
        }
        matched
            .into_iter()
            .map(|m| m as f64 / hashes.len() as f64)
            .collect()
    }

    /// Records that `hashes` were sent to `endpoint`.
    pub fn record(&self, hashes: &[u64], endpoint: SocketAddr) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        for h in hashes {
            let mut shard = self.shard(*h);
            let holders = shard.entries.entry(*h).or_default();
            match holders.iter_mut().find(|(a, _)| *a == endpoint) {
                Some(entry) => entry.1 = now,
                None => {
                    holders.push((endpoint, now));
                    shard.len += 1;
                }
            }
            if shard.len > self.shard_capacity {
                evict_oldest(&mut shard, self.shard_capacity / 8);
            }
        }
    }
}

/// Drops the `count` least recently used entries of a shard.
fn evict_oldest(shard: &mut Shard, count: usize) {
    let mut stamps: Vec<u64> = shard
        .entries
        .values()
        .flat_map(|v| v.iter().map(|(_, t)| *t))
        .collect();
    if stamps.len() <= count {
        return;
    }
    let (_, cutoff, _) = stamps.select_nth_unstable(count);
    let cutoff = *cutoff;
    let mut removed = 0;
    shard.entries.retain(|_, holders| {
        let before = holders.len();
        holders.retain(|(_, t)| *t >= cutoff);
        removed += before - holders.len();
        !holders.is_empty()
    });
    shard.len -= removed;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8000))
    }

    #[test]
    fn leading_blocks_only_and_per_model() {
        let system = vec![b's'; BLOCK_BYTES * 10];
        let mut a = system.clone();
        a.extend(vec![b'a'; BLOCK_BYTES * 10]);
        let mut b = system.clone();
        b.extend(vec![b'b'; BLOCK_BYTES * 10]);
        let index = PrefixIndex::new(10_000);
        let ha = block_hashes("m", &a);
        index.record(&ha, addr(1));
        let hb = block_hashes("m", &b);
        let m = index.matches(&hb, &[addr(1), addr(2)]);
        assert_eq!(m, vec![0.5, 0.0], "shares the 10 system blocks of 20");
        assert_eq!(index.matches(&ha, &[addr(1)]), vec![1.0]);
        let other_model = block_hashes("n", &a);
        assert_eq!(index.matches(&other_model, &[addr(1)]), vec![0.0]);
        assert!(block_hashes("m", &[b'x'; BLOCK_BYTES - 1]).is_empty());
    }

    #[test]
    fn bounded_with_oldest_evicted() {
        let index = PrefixIndex::new(16 * 64);
        let first = block_hashes("m", &[b'q'; BLOCK_BYTES * 4]);
        index.record(&first, addr(1));
        for i in 0..200u32 {
            let p: Vec<u8> = i
                .to_le_bytes()
                .iter()
                .cycle()
                .take(BLOCK_BYTES * 8)
                .copied()
                .collect();
            index.record(&block_hashes("m", &p), addr(2));
        }
        let total: usize = index.shards.iter().map(|s| s.lock().unwrap().len).sum();
        assert!(total <= 16 * 64 + 16, "{total}");
        assert_eq!(
            index.matches(&first, &[addr(1)]),
            vec![0.0],
            "oldest entries evicted"
        );
    }
}
