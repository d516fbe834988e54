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
