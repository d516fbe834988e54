//! The eight legacy RPCs: decode the payload, call one service method, encode the reply (camelCase
//! JSON, the same shapes as the GraphQL types).

use serde::Serialize;
use serde_json::Value;

use super::payload::{Payload, Problems};
use crate::{
    domain::{
        config::{ConfigSource, ConfigUpdate, ConfigVariant, RemoteConfig},
        events::{self, EventInput, UserEventsQuery},
        experiments::{Assignment, Experiment},
        health::DatabaseHealth,
        validate,
    },
    error::{Error, FieldError, Result},
    graphql::Role,
    response_cache::Freshness,
    state::Services,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    CollectEvents,
    GetUserEvents,
    FetchRemoteConfig,
    UpdateRemoteConfig,
    GetExperimentAssignment,
    ListActiveExperiments,
    HealthCheck,
    DetailedHealthCheck,
}

impl Call {
    /// Looks up a lower-cased id, as Nakama registers and matches them.
    pub fn from_id(id: &str) -> Option<Self> {
        Some(match id {
            "analyticscollectevents" => Call::CollectEvents,
            "analyticsgetuserevents" => Call::GetUserEvents,
            "fetchremoteconfig" => Call::FetchRemoteConfig,
            "updateremoteconfig" => Call::UpdateRemoteConfig,
            "getexperimentassignment" => Call::GetExperimentAssignment,
            "listactiveexperiments" => Call::ListActiveExperiments,
            "healthcheck" => Call::HealthCheck,
            "detailedhealthcheck" => Call::DetailedHealthCheck,
            _ => return None,
        })
    }
}

/// Runs one RPC and returns its reply as JSON text.
/// A config fetch records when it was read into `freshness`, for the reply cache.
pub async fn dispatch(
    call: Call,
    services: &Services,
    role: Role,
    text: &str,
    freshness: &Freshness,
) -> Result<String> {
    let payload = Payload::parse(text)?;
    let reply = match call {
        Call::CollectEvents => collect_events(services, &payload).await?,
        Call::GetUserEvents => user_events(services, &payload).await?,
        Call::FetchRemoteConfig => {
            let mut problems = Problems::default();
            let user_id = problems.take(payload.string("userId"));
            let experiment_id = problems.take(payload.optional_string("experimentId"));
            problems.into_result()?;
            let config = services
                .config
                .remote_config(&user_id, experiment_id.as_deref())
                .await?;
            freshness.observe(config.fetched_at);
            to_json(&RemoteConfigReply::from(config.as_ref()))?
        }
        Call::UpdateRemoteConfig => {
            if role != Role::Admin {
                return Err(Error::Forbidden(
                    "UpdateRemoteConfig needs the admin key".to_owned(),
                ));
            }
            let mut problems = Problems::default();
            let experiment_id = problems.take(payload.optional_string("experimentId"));
            let cohort = problems.take(payload.optional_string("cohort"));
            let merge = problems.take(payload.optional_bool("merge"));
            let config = payload.value("config");
            if config.is_none() {
                problems.take::<()>(Err(FieldError::new("config", "is required")));
            }
            problems.into_result()?;
            let variant = services
                .config
                .update(ConfigUpdate {
                    experiment_id,
                    cohort,
                    config: config.unwrap_or_default(),
                    merge: merge.unwrap_or(false),
                })
                .await?;
            to_json(&VariantReply::from(&variant))?
        }
        Call::GetExperimentAssignment => {
            let mut problems = Problems::default();
            let user_id = problems.take(payload.string("userId"));
            let experiment_id = problems.take(payload.string("experimentId"));
            problems.into_result()?;
            let assignment = services
                .experiments
                .assignment(&user_id, &experiment_id)
                .await?;
            to_json(&AssignmentReply::from(assignment.as_ref()))?
        }
        Call::ListActiveExperiments => {
            let experiments = services.experiments.active().await?;
            let experiments: Vec<ExperimentReply> = experiments
                .iter()
                .map(|e| ExperimentReply::from(e.as_ref()))
                .collect();
            to_json(&serde_json::json!({ "experiments": experiments }))?
        }
        Call::HealthCheck => to_json(&HealthReply::basic(services))?,
        Call::DetailedHealthCheck => {
            let health = &services.health;
            let cache = health.cache().await;
            to_json(&DetailedHealthReply {
                basic: HealthReply::basic(services),
                database: DatabaseReply::from(health.database().await),
                cache: CacheReply {
                    entries: cache.entries,
                    hits: cache.hits,
                    misses: cache.misses,
                    ttl_seconds: cache.ttl_seconds,
                },
            })?
        }
    };
    Ok(reply)
}

async fn collect_events(services: &Services, payload: &Payload) -> Result<String> {
    let inputs = decode_events(payload)?;
    let outcome = services.events.collect(inputs).await?;
    to_json(&serde_json::json!({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "eventIds": outcome.event_ids,
    }))
}

/// The events of an `AnalyticsCollectEvents` payload, decoded leniently (see [`decode_event`]).
pub fn decode_events(payload: &Payload) -> Result<Vec<EventInput>> {
    let events = match payload.get("events") {
        Some(Value::Array(events)) => events,
        Some(other) => {
            return Err(Error::invalid(
                "events",
                format!(
                    "must be an array of events (got {})",
                    validate::json_type(other)
                ),
            ));
        }
        None => return Err(Error::invalid("events", "is required")),
    };
    Ok(events.iter().map(decode_event).collect())
}

/// Decodes one event leniently: type problems are carried into the domain's batch check, so the
/// reply names every bad event with its index.
fn decode_event(value: &Value) -> EventInput {
    let Value::Object(object) = value else {
        return EventInput {
            decode_errors: vec![FieldError::new(
                "event",
                format!("must be a JSON object (got {})", validate::json_type(value)),
            )],
            ..EventInput::default()
        };
    };
    let event = Payload::from_object(object.clone());
    let mut errors = Vec::new();
    let mut take = |outcome: std::result::Result<Option<String>, FieldError>| {
        outcome.unwrap_or_else(|error| {
            errors.push(error);
            None
        })
    };
    let event_id = take(event.optional_string("eventId"));
    let user_id = take(event.optional_string("userId"));
    let session_id = take(event.optional_string("sessionId"));
    let event_name = take(event.optional_string("eventName"));
    let experiment_id = take(event.optional_string("experimentId"));
    let cohort = take(event.optional_string("cohort"));
    if user_id.is_none() && !errors.iter().any(|e| e.field == "userId") {
        errors.push(FieldError::new("userId", "is required"));
    }
    if event_name.is_none() && !errors.iter().any(|e| e.field == "eventName") {
        errors.push(FieldError::new("eventName", "is required"));
    }
    EventInput {
        event_id,
        user_id: user_id.unwrap_or_default(),
        session_id,
        event_name: event_name.unwrap_or_default(),
        timestamp: event.optional_timestamp("timestamp"),
        properties: event.value("properties"),
        experiment_id,
        cohort,
        decode_errors: errors,
    }
}

async fn user_events(services: &Services, payload: &Payload) -> Result<String> {
    let mut problems = Problems::default();
    let user_id = problems.take(payload.string("userId"));
    let event_name = problems.take(payload.optional_string("eventName"));
    let limit = problems.take(payload.optional_int("limit"));
    let cursor = problems.take(payload.optional_string("cursor"));
    problems.into_result()?;
    let page = services
        .events
        .user_events(UserEventsQuery {
            user_id,
            event_name,
            since: payload.optional_timestamp("since"),
            until: payload.optional_timestamp("until"),
            first: limit,
            after: cursor,
        })
        .await?;
    let next_cursor = if page.has_next_page {
        page.end_cursor()
    } else {
        None
    };
    let events: Vec<EventReply> = page.events.iter().map(EventReply::from).collect();
    to_json(&serde_json::json!({ "events": events, "nextCursor": next_cursor }))
}

fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|error| {
        tracing::error!(%error, "encoding an RPC reply failed");
        Error::Internal
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventReply<'a> {
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
struct AssignmentReply<'a> {
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
struct RemoteConfigReply<'a> {
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
            // The GraphQL enum's spelling, as API.md §8 requires.
            source: match config.source {
                ConfigSource::Cohort => "COHORT",
                ConfigSource::ExperimentDefault => "EXPERIMENT_DEFAULT",
                ConfigSource::Global => "GLOBAL",
                ConfigSource::None => "NONE",
            },
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
struct VariantReply<'a> {
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
struct ExperimentReply<'a> {
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
struct HealthReply {
    status: &'static str,
    version: &'static str,
    uptime_seconds: f64,
}

impl HealthReply {
    fn basic(services: &Services) -> Self {
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
struct DetailedHealthReply {
    #[serde(flatten)]
    basic: HealthReply,
    database: DatabaseReply,
    cache: CacheReply,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DatabaseReply {
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
struct CacheReply {
    entries: u64,
    hits: u64,
    misses: u64,
    ttl_seconds: u64,
}
