//! `health`: the service's own view of itself. The database and cache parts run only when selected.

use async_graphql::{Context, Object, SimpleObject};

use crate::domain::{Services, health::HealthService};

#[derive(Default)]
pub struct HealthQuery;

#[Object]
impl HealthQuery {
    /// Liveness, version and, when selected, the state of the database and the config cache.
    async fn health(&self, ctx: &Context<'_>) -> Health {
        Health(ctx.data_unchecked::<Services>().health.clone())
    }
}

pub struct Health(HealthService);

#[Object]
impl Health {
    /// "ok", or "degraded" when the latest database probe failed.
    async fn status(&self) -> &'static str {
        self.0.status()
    }

    /// The server's version.
    async fn version(&self) -> &'static str {
        self.0.version()
    }

    /// Seconds since the server started.
    async fn uptime_seconds(&self) -> f64 {
        self.0.uptime_seconds()
    }

    /// Where analytics events are stored when that is not the main database (`--events-url`),
    /// probed with a round trip; null when events live in the main database.
    #[graphql(complexity = "crate::graphql::QUERY")]
    async fn events_store(&self) -> Option<EventsStoreHealth> {
        self.0.events_store().await.map(|events| EventsStoreHealth {
            kind: events.kind,
            ok: events.ok,
        })
    }

    /// Probes the database (a round trip) and reads the migration state.
    #[graphql(complexity = "crate::graphql::QUERY")]
    async fn database(&self) -> DatabaseHealth {
        let health = self.0.database().await;
        DatabaseHealth {
            ok: health.ok,
            backend: health.backend.to_owned(),
            latency_ms: health.latency_ms,
            migrations_applied: saturating_i32(health.migrations_applied as u64),
            migrations_pending: saturating_i32(health.migrations_pending as u64),
            error: health.error,
        }
    }

    /// Statistics of the remote-config cache.
    async fn cache(&self) -> CacheHealth {
        let stats = self.0.cache().await;
        CacheHealth {
            entries: saturating_i32(stats.entries),
            hits: saturating_i32(stats.hits),
            misses: saturating_i32(stats.misses),
            ttl_seconds: saturating_i32(stats.ttl_seconds),
        }
    }
}

#[derive(SimpleObject)]
pub struct DatabaseHealth {
    /// True when the database answered and the migration state could be read.
    ok: bool,
    /// "postgres" or "sqlite".
    backend: String,
    /// Round-trip time of the probe, in milliseconds.
    latency_ms: Option<f64>,
    migrations_applied: i32,
    migrations_pending: i32,
    /// Why `ok` is false; never contains SQL or connection details.
    error: Option<String>,
}

#[derive(SimpleObject)]
pub struct CacheHealth {
    entries: i32,
    hits: i32,
    misses: i32,
    ttl_seconds: i32,
}

/// GraphQL's `Int` is 32-bit; counters past that report its maximum rather than wrap.
fn saturating_i32(value: u64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The events store named by `--events-url`.
#[derive(SimpleObject)]
pub struct EventsStoreHealth {
    /// The engine and its version, e.g. "clickhouse 18.16.1", and its cluster if any
    /// ("clickhouse 18.16.1 cluster octp").
    kind: String,
    /// Whether it answered a probe just now.
    ok: bool,
}
