//! Domain services: the rules of the product, free of HTTP and GraphQL. Both adapters call these,
//! through the [`Services`] bundle, and nothing else.

pub mod assignment;
pub mod audit;
pub mod cache;
pub mod changes;
pub mod config;
pub mod events;
pub mod experiments;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod paging;
pub mod results;
pub mod statistics;
pub mod validate;

use std::time::Duration;

use sea_orm::DatabaseConnection;

use self::{
    audit::AuditService,
    changes::Changes,
    config::ConfigService,
    events::{EventService, EventStore},
    experiments::ExperimentService,
    health::HealthService,
    results::ResultsService,
};
use crate::db::WriteGate;

/// How the cache memory is shared: first assignments are the most numerous entries (one per player
/// and experiment), fetches hold configs, whole replies repeat what fetches hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBudget {
    pub assignments: u64,
    pub fetches: u64,
    pub replies: u64,
}

impl CacheBudget {
    pub fn of_total(bytes: u64) -> Self {
        CacheBudget {
            assignments: bytes / 100 * 45,
            fetches: bytes / 100 * 35,
            replies: bytes / 100 * 20,
        }
    }
}

/// The domain services, handed to both adapters (cheap to clone).
#[derive(Clone)]
pub struct Services {
    pub health: HealthService,
    pub events: EventService,
    pub experiments: ExperimentService,
    pub config: ConfigService,
    pub audit: AuditService,
    pub results: ResultsService,
    changes: Changes,
}

impl Services {
    /// This instance's name in change notifications (see [`Changes::origin`]).
    pub fn origin(&self) -> String {
        self.changes.origin().to_owned()
    }

    /// Forgets everything cached from experiments and configs: another instance wrote to them.
    pub fn forget_cached(&self) {
        self.experiments.invalidate();
        self.config.written();
    }

    /// Wires the services over one connection pool; `history` serves event-history reads, `ttl`
    /// bounds every cache of experiments and configs in time and `caches` in memory.
    pub fn new(
        db: DatabaseConnection,
        history: DatabaseConnection,
        ttl: Duration,
        caches: CacheBudget,
        config_versions_kept: u32,
        events: EventStore,
    ) -> Self {
        let writes = WriteGate::for_connection(&db);
        let changes = Changes::default();
        let experiments = ExperimentService::new(
            db.clone(),
            writes.clone(),
            changes.clone(),
            ttl,
            caches.assignments,
            events.assignment_copies(),
        );
        let config = ConfigService::new(
            db.clone(),
            writes.clone(),
            changes.clone(),
            experiments.clone(),
            ttl,
            caches,
            config_versions_kept,
        );
        Services {
            audit: AuditService::new(db.clone()),
            results: ResultsService::new(history.clone(), experiments.clone(), events.clone()),
            events: EventService::new(db.clone(), history, writes, events.clone()),
            health: HealthService::new(db, config.clone(), events.clone()),
            experiments,
            config,
            changes,
        }
    }
}
