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

/// Weighs an entry by the bytes it holds.
pub struct WeighBy<K, V>(fn(&K, &V) -> usize);

impl<K, V> Clone for WeighBy<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for WeighBy<K, V> {}

impl<K, V> quick_cache::Weighter<K, V> for WeighBy<K, V> {
    fn weight(&self, key: &K, value: &V) -> u64 {
        // Zero-weight entries are never evicted; nothing here is that small anyway.
        (self.0)(key, value).max(1) as u64
    }
}

pub type BoundedCache<K, V> = quick_cache::sync::Cache<K, V, WeighBy<K, V>, ahash::RandomState>;

/// A cache of at most `bytes` as `weigh` counts them; `typical_entry_bytes` sizes its tables.
pub fn bounded<K: Eq + Hash, V: Clone>(
    bytes: u64,
    typical_entry_bytes: usize,
    weigh: fn(&K, &V) -> usize,
) -> BoundedCache<K, V> {
    let estimated_entries = (bytes / typical_entry_bytes.max(1) as u64).max(1);
    quick_cache::sync::Cache::with(
        usize::try_from(estimated_entries).unwrap_or(usize::MAX),
        bytes.max(1),
        WeighBy(weigh),
        ahash::RandomState::new(),
        Default::default(),
    )
}
