//! The eight legacy RPCs: decode the payload, call one service method, encode the reply
//! (`replies`).

use serde::Serialize;
use serde_json::Value;

use super::{
    payload::Payload,
    replies::{
        AssignmentReply, DetailedHealthReply, EventReply, ExperimentReply, HealthReply,
        RemoteConfigReply, VariantReply,
    },
};
use crate::{
    auth::Role,
    domain::{
        Services,
        config::ConfigUpdate,
        events::{EventInput, UserEventsQuery},
        ids::{Slug, UserId},
        validate,
    },
    error::{Error, FieldError, FieldErrors, Result},
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
    /// The id as registered (lower case), e.g. for metrics labels.
    pub fn id(self) -> &'static str {
        match self {
            Call::CollectEvents => "analyticscollectevents",
            Call::GetUserEvents => "analyticsgetuserevents",
            Call::FetchRemoteConfig => "fetchremoteconfig",
            Call::UpdateRemoteConfig => "updateremoteconfig",
            Call::GetExperimentAssignment => "getexperimentassignment",
            Call::ListActiveExperiments => "listactiveexperiments",
            Call::HealthCheck => "healthcheck",
            Call::DetailedHealthCheck => "detailedhealthcheck",
        }
    }

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
pub async fn dispatch(call: Call, services: &Services, role: Role, text: &str) -> Result<String> {
    let payload = Payload::parse(text)?;
    let reply = match call {
        Call::CollectEvents => collect_events(services, &payload).await?,
        Call::GetUserEvents => user_events(services, &payload).await?,
        Call::FetchRemoteConfig => {
            let (user_id, experiment_id) = FieldErrors::both(
                payload
                    .string("userId")
                    .and_then(|id| UserId::parse("userId", id)),
                payload
                    .optional_string("experimentId")
                    .and_then(|id| Slug::parse_optional("experimentId", id)),
            )?;
            let config = services
                .config
                .remote_config(&user_id, experiment_id.as_ref())
                .await?;
            to_json(&RemoteConfigReply::from(config.as_ref()))?
        }
        Call::UpdateRemoteConfig => {
            let mut errors = FieldErrors::default();
            let experiment_id = errors.take(payload.optional_string("experimentId"));
            let cohort = errors.take(payload.optional_string("cohort"));
            let merge = errors.take(payload.optional_bool("merge"));
            let expected_version = errors.take(payload.optional_int("expectedVersion"));
            let note = errors.take(payload.optional_string("note"));
            let config = payload.value("config");
            if config.is_none() {
                errors.push(FieldError::new("config", "is required"));
            }
            let update = ConfigUpdate {
                action: "UpdateRemoteConfig",
                experiment_id: experiment_id.flatten(),
                cohort: cohort.flatten(),
                config: config.unwrap_or_default(),
                merge: merge.flatten(),
                expected_version: expected_version.flatten(),
                note: note.flatten(),
                decode_errors: errors.into_vec(),
            };
            let variant = services.config.update(role, update).await?;
            to_json(&VariantReply::from(&variant))?
        }
        Call::GetExperimentAssignment => {
            let (user_id, experiment_id) = FieldErrors::both(
                payload
                    .string("userId")
                    .and_then(|id| UserId::parse("userId", id)),
                payload
                    .string("experimentId")
                    .and_then(|id| Slug::parse("experimentId", id)),
            )?;
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
        Call::DetailedHealthCheck => to_json(&DetailedHealthReply::probe(services).await)?,
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
    let mut errors = FieldErrors::default();
    let mut text = |field: &str| errors.take(event.optional_string(field)).flatten();
    let event_id = text("eventId");
    let user_id = text("userId");
    let session_id = text("sessionId");
    let event_name = text("eventName");
    let experiment_id = text("experimentId");
    let cohort = text("cohort");
    for (field, value) in [("userId", &user_id), ("eventName", &event_name)] {
        if value.is_none() && !errors.names(field) {
            errors.push(FieldError::new(field, "is required"));
        }
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
        decode_errors: errors.into_vec(),
    }
}

async fn user_events(services: &Services, payload: &Payload) -> Result<String> {
    let mut errors = FieldErrors::default();
    let user_id = errors.take(payload.string("userId"));
    let event_name = errors.take(payload.optional_string("eventName"));
    let limit = errors.take(payload.optional_int("limit"));
    let cursor = errors.take(payload.optional_string("cursor"));
    errors.into_result()?;
    let page = services
        .events
        .user_events(UserEventsQuery {
            user_id: user_id.unwrap_or_default(),
            event_name: event_name.flatten(),
            since: payload.optional_timestamp("since"),
            until: payload.optional_timestamp("until"),
            first: limit.flatten(),
            after: cursor.flatten(),
        })
        .await
        .map_err(|error| error.renaming_fields(&[("first", "limit"), ("after", "cursor")]))?;
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
