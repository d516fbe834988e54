//! Analytics events: validated, atomic, idempotent batches ([`batch`]), keyset-paged user
//! history ([`query`], [`cursor`]) and events as they are stored ([`live`]).

mod batch;
mod cursor;
pub mod live;
mod query;

use std::{collections::HashSet, sync::Arc};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde_json::Value;

pub use self::{batch::validate_batch, query::user_events_statement};
use self::{
    cursor::EventCursor,
    live::{LiveEvents, LiveFilter},
};
use crate::{
    auth::Role,
    db::{
        WriteGate,
        clickhouse::{ClickHouseEvents, HistoryFilter},
        ingest::{self, EventRow},
    },
    domain::validate::{self, TimestampValue},
    error::{Error, FieldError, Result},
    telemetry,
};

/// Most events accepted in one `collectEvents` call.
pub const MAX_BATCH: usize = 100;
/// Largest page of `userEvents`; larger requests are capped.
pub const MAX_PAGE: u64 = 500;
/// Page size of `userEvents` (and the RPC's `limit`) when the request does not say.
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

/// Where events are stored (docs/api.md §13).
#[derive(Clone)]
pub enum EventStore {
    /// The main database's `analytics_events` table.
    Main,
    /// ClickHouse, named by `--events-url`.
    ClickHouse(Arc<ClickHouseEvents>),
}

impl EventStore {
    /// `None` for the main database, else ClickHouse's name and version (for health reports).
    pub fn describe(&self) -> Option<String> {
        match self {
            EventStore::Main => None,
            EventStore::ClickHouse(store) => Some(match store.cluster() {
                None => format!("clickhouse {}", store.version()),
                Some(cluster) => format!("clickhouse {} cluster {cluster}", store.version()),
            }),
        }
    }

    /// Where assignments are copied for results next to the events: ClickHouse, if it is the store.
    pub fn assignment_copies(&self) -> Option<Arc<ClickHouseEvents>> {
        match self {
            EventStore::Main => None,
            EventStore::ClickHouse(store) => Some(store.clone()),
        }
    }

    /// Whether the events store answers now (the main database's check is the health service's).
    pub async fn reachable(&self) -> bool {
        match self {
            EventStore::Main => true,
            EventStore::ClickHouse(store) => store.reachable().await,
        }
    }
}

/// A ClickHouse failure, logged here; clients learn only that the store is unavailable.
pub(crate) fn store_unavailable(error: crate::db::clickhouse::ClickHouseError) -> Error {
    tracing::error!(%error, "the events store failed");
    Error::ServiceUnavailable
}

#[derive(Clone)]
pub struct EventService {
    db: DatabaseConnection,
    /// Reads of event history; see `db::connect_history`.
    history: DatabaseConnection,
    writes: WriteGate,
    live: LiveEvents,
    store: EventStore,
}

impl EventService {
    pub fn new(
        db: DatabaseConnection,
        history: DatabaseConnection,
        writes: WriteGate,
        store: EventStore,
    ) -> Self {
        EventService {
            db,
            live: LiveEvents::new(match &store {
                EventStore::Main => live::Source::Main(history.clone()),
                EventStore::ClickHouse(store) => live::Source::ClickHouse(store.clone()),
            }),
            history,
            writes,
            store,
        }
    }

    /// Validates the whole batch, then stores it in one statement; repeats of a stored or earlier
    /// `eventId` count as duplicates and are not stored again.
    #[tracing::instrument(skip_all, fields(events = inputs.len()))]
    pub async fn collect(&self, inputs: Vec<EventInput>) -> Result<CollectOutcome> {
        let received_at = validate::truncate_to_micros(Utc::now());
        let sent = inputs.len() as u64;
        let events = validate_batch(inputs, received_at).inspect_err(|_| {
            metrics::counter!(telemetry::EVENTS, "result" => "rejected").increment(sent);
        })?;
        let event_ids: Vec<String> = events.iter().map(|event| event.event_id.clone()).collect();
        let mut seen = HashSet::with_capacity(events.len());
        // A repeat inside the batch keeps its first occurrence.
        let rows: Vec<EventRow> = events
            .into_iter()
            .filter(|event| seen.insert(event.event_id.clone()))
            .collect();
        // One statement is one transaction: the batch is stored whole or not at all.
        let accepted = match &self.store {
            EventStore::Main => {
                let _turn = self.writes.enter().await;
                ingest::insert_events(&self.db, rows, received_at).await?
            }
            EventStore::ClickHouse(store) => store
                .insert(rows, received_at)
                .await
                .map_err(store_unavailable)?,
        };
        let duplicates = event_ids.len() as u64 - accepted;
        metrics::counter!(telemetry::EVENTS, "result" => "accepted").increment(accepted);
        metrics::counter!(telemetry::EVENTS, "result" => "duplicate").increment(duplicates);
        Ok(CollectOutcome {
            accepted,
            duplicates,
            event_ids,
        })
    }

    /// Every event stored from now on, by any instance, that matches `filter` (admin key); see
    /// [`live`].
    pub async fn live(
        &self,
        caller: Role,
        filter: LiveFilter,
    ) -> Result<
        impl futures_util::Stream<Item = Result<std::sync::Arc<Event>>> + Send + 'static + use<>,
    > {
        caller.require_admin()?;
        self.live.subscribe(filter).await
    }

    /// A user's events, newest first, resuming after `after`.
    #[tracing::instrument(skip_all, fields(user_id = %query.user_id))]
    pub async fn user_events(&self, query: UserEventsQuery) -> Result<EventPage> {
        if let EventStore::ClickHouse(store) = &self.store {
            let filter = query::parse_filter(&query)?;
            let (events, has_next_page) = store
                .history(HistoryFilter {
                    user_id: &query.user_id,
                    event_name: query.event_name.as_deref(),
                    since: filter.since,
                    until: filter.until,
                    after: filter
                        .after
                        .map(|cursor| (cursor.timestamp_micros, cursor.id)),
                    limit: filter.limit,
                })
                .await
                .map_err(store_unavailable)?;
            return Ok(EventPage {
                events,
                has_next_page,
            });
        }
        let (select, limit) = query::page_select(query)?;
        let mut rows = select
            .into_model::<query::StoredEvent>()
            .all(&self.history)
            .await?;
        let has_next_page = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let events = rows
            .into_iter()
            .filter_map(query::StoredEvent::readable)
            .collect();
        Ok(EventPage {
            events,
            has_next_page,
        })
    }
}
