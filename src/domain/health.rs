//! Service health: liveness, database reachability and migration state, cache statistics.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::{
    db::{self, Backend},
    domain::{
        config::{CacheStats, ConfigService},
        events::EventStore,
    },
};

/// A database probe that takes longer than this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseHealth {
    pub ok: bool,
    pub backend: &'static str,
    pub latency_ms: Option<f64>,
    pub migrations_applied: usize,
    pub migrations_pending: usize,
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct HealthService {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    backend: Backend,
    started: Instant,
    /// Outcome of the latest probe, so `status` can be answered without touching the database.
    database_ok: AtomicBool,
    config: ConfigService,
    events: EventStore,
}

/// The events store when it is not the main database (docs/api.md §13).
#[derive(Debug, Clone, PartialEq)]
pub struct EventsStoreHealth {
    /// E.g. "clickhouse 18.16.1".
    pub kind: String,
    pub ok: bool,
}

impl HealthService {
    pub fn new(db: DatabaseConnection, config: ConfigService, events: EventStore) -> Self {
        HealthService {
            inner: Arc::new(Inner {
                backend: Backend::of(&db),
                db,
                started: Instant::now(),
                database_ok: AtomicBool::new(true),
                config,
                events,
            }),
        }
    }

    /// `None` when events live in the main database; else the store and whether it answers a
    /// probe within the probe timeout.
    pub async fn events_store(&self) -> Option<EventsStoreHealth> {
        let kind = self.inner.events.describe()?;
        let ok = tokio::time::timeout(PROBE_TIMEOUT, self.inner.events.reachable())
            .await
            .unwrap_or(false);
        Some(EventsStoreHealth { kind, ok })
    }

    /// The main pool's connections, idle and in use.
    pub fn pool_connections(&self) -> crate::db::PoolConnections {
        crate::db::pool_connections(&self.inner.db)
    }

    /// "ok", or "degraded" when the latest database probe failed.
    pub fn status(&self) -> &'static str {
        if self.inner.database_ok.load(Ordering::Relaxed) {
            "ok"
        } else {
            "degraded"
        }
    }

    pub fn version(&self) -> &'static str {
        VERSION
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.inner.started.elapsed().as_secs_f64()
    }

    /// Pings the database; true when it answered within the probe timeout.
    pub async fn database_reachable(&self) -> bool {
        self.ping().await.is_ok()
    }

    async fn ping(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(PROBE_TIMEOUT, self.inner.db.execute_unprepared("SELECT 1")).await;
        let result = match outcome {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "database probe failed");
                Err("the database could not be reached".to_owned())
            }
            Err(_) => Err(format!(
                "the database did not answer within {} ms",
                PROBE_TIMEOUT.as_millis()
            )),
        };
        self.inner
            .database_ok
            .store(result.is_ok(), Ordering::Relaxed);
        result
    }

    pub async fn database(&self) -> DatabaseHealth {
        let backend = self.inner.backend.name();
        let latency = match self.ping().await {
            Ok(latency) => latency,
            Err(error) => {
                return DatabaseHealth {
                    ok: false,
                    backend,
                    latency_ms: None,
                    migrations_applied: 0,
                    migrations_pending: 0,
                    error: Some(error),
                };
            }
        };
        let counts =
            tokio::time::timeout(PROBE_TIMEOUT, db::migration_counts(&self.inner.db)).await;
        let (applied, pending, error) = match counts {
            Ok(Ok((applied, pending))) => (applied, pending, None),
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "reading migration state failed");
                (
                    0,
                    0,
                    Some("the migration state could not be read".to_owned()),
                )
            }
            Err(_) => (
                0,
                0,
                Some("reading the migration state timed out".to_owned()),
            ),
        };
        DatabaseHealth {
            ok: error.is_none(),
            backend,
            latency_ms: Some(latency.as_secs_f64() * 1000.0),
            migrations_applied: applied,
            migrations_pending: pending,
            error,
        }
    }

    pub async fn cache(&self) -> CacheStats {
        self.inner.config.cache_stats().await
    }
}
