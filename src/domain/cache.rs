//! The caches on the new-player path (assignments, fetches, whole replies): concurrent maps bounded
//! by an estimate of the bytes they hold.
//!
//! quick_cache rather than moka, which the other (small) caches use: a launch inserts an entry per
//! new player into each of these, and under new players moka's inserts, read/write logs and
//! housekeeping were a fifth of the server's samples (perf, `FetchRemoteConfig` RPC with two
//! experiments, PostgreSQL, 32 connections). quick_cache does its bookkeeping under a shard lock
//! at the insert, with no logs to replay. It has no expiry: entries that must not outlive a
//! deadline carry it and are checked on every read.

use std::hash::Hash;

use quick_cache::{Equivalent, Weighter};

/// A concurrent map of at most `bytes` as its `weigh` function counts them.
pub struct BoundedCache<K, V> {
    entries: quick_cache::sync::Cache<K, Weighed<V>, StoredWeight, ahash::RandomState>,
    weigh: fn(&K, &V) -> usize,
}

/// A value and its weight, computed once at the insert: eviction weighs every entry it passes, and
/// weighing a fetch walks its config.
#[derive(Clone)]
struct Weighed<V> {
    value: V,
    bytes: u64,
}

#[derive(Clone, Copy)]
struct StoredWeight;

impl<K, V> Weighter<K, Weighed<V>> for StoredWeight {
    fn weight(&self, _key: &K, weighed: &Weighed<V>) -> u64 {
        weighed.bytes
    }
}

impl<K: Eq + Hash, V: Clone> BoundedCache<K, V> {
    /// `typical_entry_bytes` sizes its tables.
    pub fn new(bytes: u64, typical_entry_bytes: usize, weigh: fn(&K, &V) -> usize) -> Self {
        let estimated_entries = (bytes / typical_entry_bytes.max(1) as u64).max(1);
        BoundedCache {
            entries: quick_cache::sync::Cache::with(
                usize::try_from(estimated_entries).unwrap_or(usize::MAX),
                bytes.max(1),
                StoredWeight,
                ahash::RandomState::new(),
                Default::default(),
            ),
            weigh,
        }
    }

    pub fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
        self.entries.get(key).map(|weighed| weighed.value)
    }

    pub fn insert(&self, key: K, value: V) {
        // Zero-weight entries are never evicted; nothing here is that small anyway.
        let bytes = (self.weigh)(&key, &value).max(1) as u64;
        self.entries.insert(key, Weighed { value, bytes });
    }

    /// Entries held, including expired ones not yet pushed out.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn clear(&self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cache_stays_within_its_bytes_and_keeps_what_fits() {
        let cache = BoundedCache::new(10_000, 100, |_: &u32, value: &String| value.len());
        for key in 0..1_000u32 {
            cache.insert(key, "x".repeat(100));
        }
        // 1,000 entries of 100 bytes were offered to 10,000 bytes: at most 100 are held.
        let held = (0..1_000u32).filter(|key| cache.get(key).is_some()).count();
        assert!(
            held <= 100,
            "{held} entries of 100 bytes held in 10,000 bytes"
        );
        assert!(
            held >= 50,
            "only {held} entries held; the budget allows 100"
        );
        assert_eq!(cache.entry_count(), held);
        cache.clear();
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn an_entry_larger_than_a_shard_is_not_kept() {
        let cache = BoundedCache::new(1_000, 100, |_: &u32, value: &String| value.len());
        cache.insert(1, "x".repeat(5_000));
        assert_eq!(cache.get(&1), None);
    }
}
