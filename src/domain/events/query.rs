//! A `userEvents` request as SQL: the filters checked and parsed, then one keyset-paged SELECT that
//! walks the (user_id, event_timestamp DESC, id DESC) index. Properties are read as text and parsed
//! row by row, so one row that cannot be read is skipped (and logged), not the whole history.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Select, Statement,
    sea_query::{Expr, ExprTrait},
};

use super::{DEFAULT_PAGE, Event, MAX_PAGE, UserEventsQuery, cursor::EventCursor};
use crate::{
    db::entities::analytics_event,
    domain::validate,
    error::{Error, FieldErrors, Result},
};

/// The SQL `user_events` runs for a query; public so tests can check its plans.
pub fn user_events_statement(query: UserEventsQuery, backend: DbBackend) -> Result<Statement> {
    Ok(page_select(query)?.0.build(backend))
}

/// A stored event with its properties as text.
#[derive(Debug, FromQueryResult)]
pub(super) struct StoredEvent {
    pub(super) id: i64,
    event_id: String,
    user_id: String,
    session_id: Option<String>,
    event_name: String,
    event_timestamp: DateTime<Utc>,
    received_at: DateTime<Utc>,
    properties_text: String,
    experiment_id: Option<String>,
    cohort: Option<String>,
}

impl StoredEvent {
    /// The event, or `None` (logged) when its stored properties cannot be read.
    pub(super) fn readable(self) -> Option<Event> {
        match serde_json::from_str(&self.properties_text) {
            Ok(properties) => Some(Event {
                id: self.id,
                event_id: self.event_id,
                user_id: self.user_id,
                session_id: self.session_id,
                event_name: self.event_name,
                timestamp: self.event_timestamp,
                received_at: self.received_at,
                properties,
                experiment_id: self.experiment_id,
                cohort: self.cohort,
            }),
            Err(error) => {
                tracing::error!(
                    id = self.id,
                    event_id = %self.event_id,
                    %error,
                    "a stored event's properties cannot be read; it is left out of history pages"
                );
                None
            }
        }
    }
}

/// Every stored event, as [`StoredEvent`] rows.
pub(super) fn stored_events() -> Select<analytics_event::Entity> {
    use analytics_event::Column;
    analytics_event::Entity::find()
        .select_only()
        .columns([
            Column::Id,
            Column::EventId,
            Column::UserId,
            Column::SessionId,
            Column::EventName,
            Column::EventTimestamp,
            Column::ReceivedAt,
            Column::ExperimentId,
            Column::Cohort,
        ])
        .column_as(Expr::cust("CAST(properties AS TEXT)"), "properties_text")
}

/// One page plus one row (to learn whether another page follows), and the page size.
pub(super) fn page_select(
    query: UserEventsQuery,
) -> Result<(Select<analytics_event::Entity>, u64)> {
    use analytics_event::Column;
    let filter = parse_filter(&query)?;
    let mut select = stored_events().filter(Column::UserId.eq(query.user_id));
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

pub(super) struct Filter {
    pub(super) since: Option<DateTime<Utc>>,
    pub(super) until: Option<DateTime<Utc>>,
    pub(super) after: Option<EventCursor>,
    pub(super) limit: u64,
}

pub(super) fn parse_filter(query: &UserEventsQuery) -> Result<Filter> {
    let mut errors = FieldErrors::default();
    errors.check("userId", validate::printable_text(&query.user_id));
    if let Some(event_name) = &query.event_name {
        errors.check("eventName", validate::slug(event_name));
    }
    let since = errors
        .check("since", validate::optional_timestamp(query.since.as_ref()))
        .flatten();
    let until = errors
        .check("until", validate::optional_timestamp(query.until.as_ref()))
        .flatten();
    let after = query.after.as_ref().and_then(|text| {
        let cursor = EventCursor::decode(text).filter(|cursor| {
            DateTime::from_timestamp_micros(cursor.timestamp_micros)
                .is_some_and(|time| validate::storable_instant(time).is_ok())
        });
        errors.check(
            "after",
            cursor.ok_or_else(|| "is not a cursor this server issued".to_owned()),
        )
    });
    let limit = match query.first {
        None => DEFAULT_PAGE,
        Some(first) if first < 0 => {
            errors.check::<()>("first", Err(format!("must not be negative (got {first})")));
            0
        }
        Some(first) => Ord::min(first as u64, MAX_PAGE),
    };
    errors.into_result()?;
    Ok(Filter {
        since,
        until,
        after,
        limit,
    })
}
