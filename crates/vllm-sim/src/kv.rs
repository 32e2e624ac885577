//! The paged KV cache with prefix caching, as vLLM's block manager keeps it: fixed-size blocks,
//! reference counts, full prompt blocks registered under a chained hash, and freed cached blocks
//! kept for reuse until evicted in LRU order.

use std::collections::{BTreeMap, HashMap};

pub type BlockId = u32;

#[derive(Debug)]
pub struct KvCache {
    total: u32,
    refcount: Vec<u32>,
    hash_of: Vec<Option<u64>>,
    by_hash: HashMap<u64, BlockId>,
    /// Never-used or uncached free blocks.
    free_plain: Vec<BlockId>,
    /// Free blocks that still hold a cached prefix, oldest first (key = release order).
    free_cached: BTreeMap<u64, BlockId>,
    lru_key: Vec<Option<u64>>,
    next_key: u64,
}

impl KvCache {
    pub fn new(total: u32) -> Self {
        Self {
            total,
            refcount: vec![0; total as usize],
            hash_of: vec![None; total as usize],
            by_hash: HashMap::new(),
            free_plain: (0..total).rev().collect(),
            free_cached: BTreeMap::new(),
            lru_key: vec![None; total as usize],
            next_key: 0,
        }
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn free(&self) -> u32 {
        (self.free_plain.len() + self.free_cached.len()) as u32
    }

    /// Fraction of blocks in use (cached-but-free blocks count as free, as in vLLM).
    pub fn usage(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        f64::from(self.total - self.free()) / f64::from(self.total)
    }

    /// How many leading blocks of `hashes` are cached.
    pub fn cached_prefix(&self, hashes: &[u64]) -> usize {
        hashes
            .iter()
            .take_while(|h| self.by_hash.contains_key(h))
            .count()
    }

    /// Takes a reference on the cached block for `hash` (which must be cached).
    pub fn acquire_cached(&mut self, hash: u64) -> Option<BlockId> {
        let block = *self.by_hash.get(&hash)?;
        if self.refcount[block as usize] == 0
            && let Some(key) = self.lru_key[block as usize].take()
        {
            self.free_cached.remove(&key);
        }
        self.refcount[block as usize] += 1;
        Some(block)
    }

    /// A fresh block, evicting the least recently freed cached block if needed.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let block = match self.free_plain.pop() {
            Some(b) => b,
            None => {
                let (&key, &b) = self.free_cached.iter().next()?;
                self.free_cached.remove(&key);
                self.lru_key[b as usize] = None;
                if let Some(h) = self.hash_of[b as usize].take() {
                    self.by_hash.remove(&h);
                }
                b
            }
        };
        self.refcount[block as usize] = 1;
        Some(block)
    }

    /// Marks a full block as holding the prefix `hash` so later requests can reuse it.
    pub fn register(&mut self, block: BlockId, hash: u64) {
        if self.hash_of[block as usize].is_some() || self.by_hash.contains_key(&hash) {
            return;
        }
        self.hash_of[block as usize] = Some(hash);
        self.by_hash.insert(hash, block);
    }

    /// Drops one reference; a block nobody uses becomes free (kept cached if it has a hash).
    pub fn release(&mut self, block: BlockId) {
        let rc = &mut self.refcount[block as usize];
        *rc = rc.saturating_sub(1);
        if *rc > 0 {
            return;
        }
        if self.hash_of[block as usize].is_some() {
            let key = self.next_key;
            self.next_key += 1;
            self.lru_key[block as usize] = Some(key);
            self.free_cached.insert(key, block);
        } else {
            self.free_plain.push(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_blocks_are_reused_then_evicted_lru() {
        let mut kv = KvCache::new(3);
        let a = kv.allocate().unwrap();
        let b = kv.allocate().unwrap();
        kv.register(a, 11);
        kv.register(b, 22);
        kv.release(a);
        kv.release(b);
        assert_eq!(kv.free(), 3);
        assert_eq!(kv.usage(), 0.0);
        assert_eq!(kv.cached_prefix(&[11, 22, 33]), 2);
        // Reuse a cached block.
        assert_eq!(kv.acquire_cached(22), Some(b));
        assert_eq!(kv.free(), 2);
        // Two allocations: the plain block, then the oldest cached (a) is evicted.
        let c = kv.allocate().unwrap();
        assert_ne!(c, a);
        let d = kv.allocate().unwrap();
        assert_eq!(d, a);
        assert_eq!(kv.cached_prefix(&[11]), 0);
        assert!(kv.allocate().is_none());
    }
}
