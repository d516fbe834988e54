//! Remote configuration. The service owns the fetch cache; its statistics feed the health report.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::future::Cache;
use sea_orm::DatabaseConnection;

/// Counters of the remote-config cache, as reported by `health { cache }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub ttl_seconds: u64,
}

#[derive(Clone)]
pub struct ConfigService {
    inner: Arc<Inner>,
}

struct Inner {
    #[allow(dead_code)] // read by the config fetches
    db: DatabaseConnection,
    cache: Cache<String, Arc<serde_json::Value>>,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ConfigService {
    pub fn new(db: DatabaseConnection, ttl: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(ttl)
            .build();
        ConfigService {
            inner: Arc::new(Inner {
                db,
                cache,
                ttl,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    pub async fn cache_stats(&self) -> CacheStats {
        let inner = &self.inner;
        // Entry counts are eventually consistent in moka; settle pending work so the figure is exact.
        inner.cache.run_pending_tasks().await;
        CacheStats {
            entries: inner.cache.entry_count(),
            hits: inner.hits.load(Ordering::Relaxed),
            misses: inner.misses.load(Ordering::Relaxed),
            ttl_seconds: inner.ttl.as_secs(),
        }
    }
}
