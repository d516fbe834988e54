//! The RPC replies: camelCase JSON in the same shapes as the GraphQL types, borrowed from the
//! domain values they describe.

use serde::Serialize;
use serde_json::Value;

use crate::domain::{
    Services,
    config::{ConfigVariant, RemoteConfig},
    events,
    experiments::{Assignment, Experiment},
    health::DatabaseHealth,
    validate,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReply<'a> {
    id: String,
    event_id: &'a str,
    user_id: &'a str,
    session_id: Option<&'a str>,
    event_name: &'a str,
    timestamp: String,
    received_at: String,
    properties: &'a Value,
    experiment_id: Option<&'a str>,
    cohort: Option<&'a str>,
}

impl<'a> From<&'a events::Event> for EventReply<'a> {
    fn from(event: &'a events::Event) -> Self {
        EventReply {
            id: event.id.to_string(),
            event_id: &event.event_id,
            user_id: &event.user_id,
            session_id: event.session_id.as_deref(),
            event_name: &event.event_name,
            timestamp: validate::format_timestamp(event.timestamp),
            received_at: validate::format_timestamp(event.received_at),
            properties: &event.properties,
            experiment_id: event.experiment_id.as_deref(),
            cohort: event.cohort.as_deref(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentReply<'a> {
    user_id: &'a str,
    experiment_id: &'a str,
    cohort: &'a str,
    assigned_at: String,
}

impl<'a> From<&'a Assignment> for AssignmentReply<'a> {
    fn from(assignment: &'a Assignment) -> Self {
        AssignmentReply {
            user_id: &assignment.user_id,
            experiment_id: &assignment.experiment_id,
            cohort: &assignment.cohort,
            assigned_at: validate::format_timestamp(assignment.assigned_at),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteConfigReply<'a> {
    user_id: &'a str,
    experiment_id: Option<&'a str>,
    cohort: Option<&'a str>,
    source: &'static str,
    version: i64,
    config: &'a Value,
    assignments: Vec<AssignmentReply<'a>>,
}

impl<'a> From<&'a RemoteConfig> for RemoteConfigReply<'a> {
    fn from(config: &'a RemoteConfig) -> Self {
        RemoteConfigReply {
            user_id: &config.user_id,
            experiment_id: config.experiment_id.as_deref(),
            cohort: config.cohort.as_deref(),
            source: config.source.wire_name(),
            version: config.version,
            config: &config.config,
            assignments: config
                .assignments
                .iter()
                .map(|assignment| AssignmentReply::from(assignment.as_ref()))
                .collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantReply<'a> {
    experiment_id: Option<&'a str>,
    cohort: &'a str,
    config: &'a Value,
    version: i64,
    updated_at: String,
}

impl<'a> From<&'a ConfigVariant> for VariantReply<'a> {
    fn from(variant: &'a ConfigVariant) -> Self {
        VariantReply {
            experiment_id: variant.experiment_id.as_deref(),
            cohort: &variant.cohort,
            config: &variant.config,
            version: variant.version,
            updated_at: validate::format_timestamp(variant.updated_at),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentReply<'a> {
    id: &'a str,
    name: &'a str,
    description: Option<&'a str>,
    /// A JSON object `{"control": 0.5, …}`, as the original module returned it.
    cohorts: Value,
    active: bool,
    start_at: Option<String>,
    end_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl<'a> From<&'a Experiment> for ExperimentReply<'a> {
    fn from(experiment: &'a Experiment) -> Self {
        ExperimentReply {
            id: &experiment.id,
            name: &experiment.name,
            description: experiment.description.as_deref(),
            cohorts: experiment.cohorts.to_json(),
            active: experiment.active,
            start_at: experiment.start_at.map(validate::format_timestamp),
            end_at: experiment.end_at.map(validate::format_timestamp),
            created_at: validate::format_timestamp(experiment.created_at),
            updated_at: validate::format_timestamp(experiment.updated_at),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReply {
    status: &'static str,
    version: &'static str,
    uptime_seconds: f64,
}

impl HealthReply {
    pub fn basic(services: &Services) -> Self {
        let health = &services.health;
        HealthReply {
            status: health.status(),
            version: health.version(),
            uptime_seconds: health.uptime_seconds(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailedHealthReply {
    #[serde(flatten)]
    basic: HealthReply,
    database: DatabaseReply,
    cache: CacheReply,
}

impl DetailedHealthReply {
    pub async fn probe(services: &Services) -> Self {
        let health = &services.health;
        let cache = health.cache().await;
        DetailedHealthReply {
            basic: HealthReply::basic(services),
            database: DatabaseReply::from(health.database().await),
            cache: CacheReply {
                entries: cache.entries,
                hits: cache.hits,
                misses: cache.misses,
                ttl_seconds: cache.ttl_seconds,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseReply {
    ok: bool,
    backend: &'static str,
    latency_ms: Option<f64>,
    migrations_applied: usize,
    migrations_pending: usize,
    error: Option<String>,
}

impl From<DatabaseHealth> for DatabaseReply {
    fn from(health: DatabaseHealth) -> Self {
        DatabaseReply {
            ok: health.ok,
            backend: health.backend,
            latency_ms: health.latency_ms,
            migrations_applied: health.migrations_applied,
            migrations_pending: health.migrations_pending,
            error: health.error,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheReply {
    entries: u64,
    hits: u64,
    misses: u64,
    ttl_seconds: u64,
}
