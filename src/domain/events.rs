//! Analytics events: validated, atomic, idempotent batches and keyset-paged user history.

use std::collections::HashSet;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Select, Statement,
    sea_query::{Expr, ExprTrait},
};
use serde_json::{Map, Value};

use crate::{
    db::{
        WriteGate,
        entities::analytics_event,
        ingest::{self, EventRow},
    },
    domain::validate::{self, TimestampValue},
    error::{Error, FieldError, Result},
};

/// Most events accepted in one `collectEvents` call.
pub const MAX_BATCH: usize = 100;
/// Largest page of `userEvents`; larger requests are capped.
pub const MAX_PAGE: u64 = 500;
pub const DEFAULT_PAGE: u64 = 50;

/// One event as a client sent it, before any rule is checked.
#[derive(Debug, Clone, Default)]
pub struct EventInput {
    pub event_id: Option<String>,
    pub user_id: String,
    pub session_id: Option<String>,
    pub event_name: String,
    pub timestamp: Option<TimestampValue>,
    pub properties: Option<Value>,
    pub experiment_id: Option<String>,
    pub cohort: Option<String>,
    /// Problems a transport met while decoding this event (e.g. a number where text belongs);
    /// reported with the event's index beside the domain's own findings.
    pub decode_errors: Vec<FieldError>,
}

/// What a stored batch reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectOutcome {
    pub accepted: u64,
    pub duplicates: u64,
    /// One id per input event, in input order.
    pub event_ids: Vec<String>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub event_id: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub event_name: String,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub properties: Value,
    pub experiment_id: Option<String>,
    pub cohort: Option<String>,
}

impl Event {
    /// The opaque cursor that resumes a listing right after this event.
    pub fn cursor(&self) -> String {
        EventCursor {
            timestamp_micros: self.timestamp.timestamp_micros(),
            id: self.id,
        }
        .encode()
    }
}

impl From<analytics_event::Model> for Event {
    fn from(model: analytics_event::Model) -> Self {
        Event {
            id: model.id,
            event_id: model.event_id,
            user_id: model.user_id,
            session_id: model.session_id,
            event_name: model.event_name,
            timestamp: model.event_timestamp,
            received_at: model.received_at,
            properties: model.properties,
            experiment_id: model.experiment_id,
            cohort: model.cohort,
        }
    }
}

/// A `userEvents` request as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct UserEventsQuery {
    pub user_id: String,
    pub event_name: Option<String>,
    pub since: Option<TimestampValue>,
    pub until: Option<TimestampValue>,
    pub first: Option<i64>,
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub has_next_page: bool,
}

impl EventPage {
    pub fn end_cursor(&self) -> Option<String> {
        self.events.last().map(Event::cursor)
    }
}

/// Position in a newest-first listing: events sort by timestamp, then id, both descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventCursor {
    timestamp_micros: i64,
    id: i64,
}

impl EventCursor {
    fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", self.timestamp_micros, self.id))
    }

    fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.strip_prefix("v1:")?.splitn(2, ':');
        let timestamp_micros = parts.next()?.parse().ok()?;
        let id = parts.next()?.parse().ok()?;
        Some(EventCursor {
            timestamp_micros,
            id,
        })
    }
}

/// Checks every rule on every event; on failure the error lists each broken rule by index.
pub fn validate_batch(inputs: Vec<EventInput>, now: DateTime<Utc>) -> Result<Vec<EventRow>> {
    if inputs.is_empty() || inputs.len() > MAX_BATCH {
        return Err(Error::invalid(
            "events",
            format!(
                "a batch holds 1 to {MAX_BATCH} events (got {})",
                inputs.len()
            ),
        ));
    }
    let total = inputs.len();
    let mut valid = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (index, input) in inputs.into_iter().enumerate() {
        match validate_event(input, now) {
            Ok(event) => valid.push(event),
            Err(event_errors) => errors.extend(event_errors.into_iter().map(|e| e.at(index))),
        }
    }
    if errors.is_empty() {
        return Ok(valid);
    }
    let bad_events = errors
        .iter()
        .filter_map(|error| error.index)
        .collect::<HashSet<_>>()
        .len();
    Err(Error::BadUserInput {
        message: format!(
            "{bad_events} of {total} events are invalid; nothing was stored: {}",
            summary(&errors)
        ),
        errors,
    })
}

/// The first few errors in one line, so clients that only read `message` still learn what is wrong.
fn summary(errors: &[FieldError]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = errors
        .iter()
        .take(SHOWN)
        .map(|error| match error.index {
            Some(index) => format!("events[{index}].{} {}", error.field, error.reason),
            None => format!("{} {}", error.field, error.reason),
        })
        .collect();
    if errors.len() > SHOWN {
        parts.push(format!("and {} more", errors.len() - SHOWN));
    }
    parts.join("; ")
}

fn validate_event(input: EventInput, now: DateTime<Utc>) -> Result<EventRow, Vec<FieldError>> {
    let mut errors = input.decode_errors;
    // A field the transport could not decode (or a whole event that was not an object) is already
    // reported; checking its placeholder value again would only add noise.
    let decoded = |field: &str| {
        errors
            .iter()
            .any(|error| error.field == field || error.field == "event")
    };
    let (skip_user, skip_name) = (decoded("userId"), decoded("eventName"));
    let mut check = |field: &str, outcome: Result<(), String>| {
        if let Err(reason) = outcome {
            errors.push(FieldError::new(field, reason));
        }
    };
    if !skip_user {
        check("userId", validate::printable_text(&input.user_id));
    }
    if !skip_name {
        check("eventName", validate::slug(&input.event_name));
    }
    if let Some(event_id) = &input.event_id {
        check("eventId", validate::printable_text(event_id));
    }
    if let Some(session_id) = &input.session_id {
        check("sessionId", validate::printable_text(session_id));
    }
    if let Some(experiment_id) = &input.experiment_id {
        check("experimentId", validate::slug(experiment_id));
    }
    if let Some(cohort) = &input.cohort {
        check("cohort", validate::slug(cohort));
    }
    let properties = input
        .properties
        .unwrap_or_else(|| Value::Object(Map::new()));
    check(
        "properties",
        validate::json_object(&properties, validate::MAX_PROPERTIES_BYTES),
    );
    let timestamp = match &input.timestamp {
        None => Some(now),
        Some(value) => match validate::event_timestamp(value, now) {
            Ok(time) => Some(time),
            Err(reason) => {
                check("timestamp", Err(reason));
                None
            }
        },
    };
    match timestamp {
        Some(timestamp) if errors.is_empty() => Ok(EventRow {
            event_id: input
                .event_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            user_id: input.user_id,
            session_id: input.session_id,
            event_name: input.event_name,
            timestamp,
            properties,
            experiment_id: input.experiment_id,
            cohort: input.cohort,
        }),
        _ => Err(errors),
    }
}

#[derive(Clone)]
pub struct EventService {
    db: DatabaseConnection,
    /// Reads of event history; see `db::connect_history`.
    history: DatabaseConnection,
    writes: WriteGate,
}

impl EventService {
    pub fn new(db: DatabaseConnection, history: DatabaseConnection, writes: WriteGate) -> Self {
        EventService {
            db,
            history,
            writes,
        }
    }

    /// Validates the whole batch, then stores it in one statement; repeats of a stored or earlier
    /// `eventId` count as duplicates and are not stored again.
    #[tracing::instrument(skip_all, fields(events = inputs.len()))]
    pub async fn collect(&self, inputs: Vec<EventInput>) -> Result<CollectOutcome> {
        let received_at = validate::truncate_to_micros(Utc::now());
        let events = validate_batch(inputs, received_at)?;
        let event_ids: Vec<String> = events.iter().map(|event| event.event_id.clone()).collect();
        let mut seen = HashSet::with_capacity(events.len());
        // A repeat inside the batch keeps its first occurrence.
        let rows: Vec<EventRow> = events
            .into_iter()
            .filter(|event| seen.insert(event.event_id.clone()))
            .collect();
        // One statement is one transaction: the batch is stored whole or not at all.
        let accepted = {
            let _turn = self.writes.enter().await;
            ingest::insert_events(&self.db, rows, received_at).await?
        };
        Ok(CollectOutcome {
            accepted,
            duplicates: event_ids.len() as u64 - accepted,
            event_ids,
        })
    }

    /// A user's events, newest first, resuming after `after`.
    #[tracing::instrument(skip_all, fields(user_id = %query.user_id))]
    pub async fn user_events(&self, query: UserEventsQuery) -> Result<EventPage> {
        let (select, limit) = page_select(query)?;
        let mut events: Vec<Event> = select
            .all(&self.history)
            .await?
            .into_iter()
            .map(Event::from)
            .collect();
        let has_next_page = events.len() as u64 > limit;
        events.truncate(limit as usize);
        Ok(EventPage {
            events,
            has_next_page,
        })
    }
}

/// The SQL `user_events` runs for a query; public so tests can check its plans.
pub fn user_events_statement(query: UserEventsQuery, backend: DbBackend) -> Result<Statement> {
    Ok(page_select(query)?.0.build(backend))
}

/// One page plus one row (to learn whether another page follows), and the page size.
fn page_select(query: UserEventsQuery) -> Result<(Select<analytics_event::Entity>, u64)> {
    let filter = parse_filter(&query)?;
    let mut select =
        analytics_event::Entity::find().filter(analytics_event::Column::UserId.eq(query.user_id));
    if let Some(event_name) = query.event_name {
        select = select.filter(analytics_event::Column::EventName.eq(event_name));
    }
    if let Some(since) = filter.since {
        select = select.filter(analytics_event::Column::EventTimestamp.gte(since));
    }
    if let Some(until) = filter.until {
        select = select.filter(analytics_event::Column::EventTimestamp.lt(until));
    }
    if let Some(cursor) = filter.after {
        let timestamp = DateTime::from_timestamp_micros(cursor.timestamp_micros)
            .ok_or_else(|| Error::invalid("after", "is not a cursor this server issued"))?;
        // Row-value comparison keeps the scan on the (user_id, event_timestamp, id) index.
        select = select.filter(
            Expr::tuple([
                Expr::col(analytics_event::Column::EventTimestamp),
                Expr::col(analytics_event::Column::Id),
            ])
            .lt(Expr::tuple([
                Expr::value(timestamp),
                Expr::value(cursor.id),
            ])),
        );
    }
    let select = select
        .order_by_desc(analytics_event::Column::EventTimestamp)
        .order_by_desc(analytics_event::Column::Id)
        .limit(filter.limit + 1);
    Ok((select, filter.limit))
}

struct Filter {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    after: Option<EventCursor>,
    limit: u64,
}

fn parse_filter(query: &UserEventsQuery) -> Result<Filter> {
    let mut errors = Vec::new();
    let mut check = |field: &str, outcome: Result<(), String>| {
        if let Err(reason) = outcome {
            errors.push(FieldError::new(field, reason));
        }
    };
    check("userId", validate::printable_text(&query.user_id));
    if let Some(event_name) = &query.event_name {
        check("eventName", validate::slug(event_name));
    }
    let mut time = |field: &str, value: &Option<TimestampValue>| match value {
        None => None,
        Some(value) => match validate::parse_timestamp(value) {
            Ok(time) => Some(time),
            Err(reason) => {
                check(field, Err(reason));
                None
            }
        },
    };
    let since = time("since", &query.since);
    let until = time("until", &query.until);
    let after = match &query.after {
        None => None,
        Some(text) => {
            let cursor = EventCursor::decode(text);
            if cursor.is_none() {
                check(
                    "after",
                    Err("is not a cursor this server issued".to_owned()),
                );
            }
            cursor
        }
    };
    let limit = match query.first {
        None => DEFAULT_PAGE,
        Some(first) if first < 0 => {
            check("first", Err(format!("must not be negative (got {first})")));
            0
        }
        Some(first) => Ord::min(first as u64, MAX_PAGE),
    };
    if let Some(error) = errors.first() {
        let message = format!("invalid {}: {}", error.field, error.reason);
        return Err(Error::BadUserInput { message, errors });
    }
    Ok(Filter {
        since,
        until,
        after,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(user: &str, name: &str) -> EventInput {
        EventInput {
            user_id: user.into(),
            event_name: name.into(),
            ..EventInput::default()
        }
    }

    #[test]
    fn a_batch_reports_every_broken_rule_with_its_index() {
        let now = Utc::now();
        let mut bad_properties = event("u1", "ok");
        bad_properties.properties = Some(json!([1, 2]));
        let mut bad_time = event("u1", "ok");
        bad_time.timestamp = Some(TimestampValue::Text("not a time".into()));
        let batch = vec![
            event("u1", "fine"),
            event("", "bad name"),
            bad_properties,
            bad_time,
        ];

        let error = validate_batch(batch, now).unwrap_err();

        let fields: Vec<(Option<usize>, &str)> = error
            .field_errors()
            .iter()
            .map(|e| (e.index, e.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                (Some(1), "userId"),
                (Some(1), "eventName"),
                (Some(2), "properties"),
                (Some(3), "timestamp")
            ]
        );
        assert!(error.to_string().starts_with("3 of 4 events are invalid"));
    }

    #[test]
    fn batches_hold_one_to_one_hundred_events() {
        let now = Utc::now();
        assert!(validate_batch(vec![], now).is_err());
        assert!(validate_batch(vec![event("u", "e"); 100], now).is_ok());
        let error = validate_batch(vec![event("u", "e"); 101], now).unwrap_err();
        assert_eq!(error.field_errors()[0].field, "events");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = EventCursor {
            timestamp_micros: 1_714_557_600_123_456,
            id: 42,
        };
        assert_eq!(EventCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(EventCursor::decode("not-a-cursor"), None);
        assert_eq!(EventCursor::decode(&URL_SAFE_NO_PAD.encode("v1:x:1")), None);
    }
}
