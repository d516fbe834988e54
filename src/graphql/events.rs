//! `collectEvents` and `userEvents`.

use std::sync::Arc;

use async_graphql::{
    Context, ID, InputObject, Json, Object, Result, SimpleObject,
    connection::{Connection, Edge},
    dataloader::DataLoader,
};

use crate::{
    domain::{
        events::{self, DEFAULT_PAGE, EventInput as DomainEventInput, UserEventsQuery},
        experiments::Experiment as DomainExperiment,
    },
    graphql::{
        HEAVY_JSON, LOOKUP, QUERY, ROW, budget::json_output, error::Extend,
        experiments::Experiment, loaders::ExperimentLoader, page_size, scalars::DateTime, services,
    },
};

#[derive(Default)]
pub struct EventsQuery;

#[Object]
impl EventsQuery {
    /// A user's events, newest first (by timestamp, then id), paged with Relay cursors that stay
    /// correct while new events arrive. `since` is inclusive, `until` exclusive; `first` is capped
    /// at 500.
    #[allow(clippy::too_many_arguments)] // one per GraphQL argument
    #[graphql(complexity = "QUERY + page_size(first) * (ROW + child_complexity)")]
    async fn user_events(
        &self,
        ctx: &Context<'_>,
        user_id: String,
        event_name: Option<String>,
        since: Option<DateTime>,
        until: Option<DateTime>,
        #[graphql(default_with = "Some(DEFAULT_PAGE as i32)")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Event>> {
        let page = services(ctx)
            .events
            .user_events(UserEventsQuery {
                user_id,
                event_name,
                since: since.map(DateTime::into_input),
                until: until.map(DateTime::into_input),
                first: first.map(i64::from),
                after: after.clone(),
            })
            .await
            .extended()?;
        let mut connection = Connection::new(after.is_some(), page.has_next_page);
        connection.edges.extend(
            page.events
                .into_iter()
                .map(|event| Edge::new(event.cursor(), Event(event))),
        );
        Ok(connection)
    }
}

#[derive(Default)]
pub struct EventsMutation;

#[Object]
impl EventsMutation {
    /// Stores 1 to 100 events atomically: if any event breaks a rule nothing is stored and the
    /// error lists each problem under `extensions.errors` as `{index, field, reason}`. Events whose
    /// `eventId` is already stored (or repeated in the batch) count as duplicates.
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn collect_events(
        &self,
        ctx: &Context<'_>,
        events: Vec<EventInput>,
    ) -> Result<CollectEventsPayload> {
        let inputs = events.into_iter().map(EventInput::into_domain).collect();
        let outcome = services(ctx).events.collect(inputs).await.extended()?;
        Ok(CollectEventsPayload {
            accepted: saturating(outcome.accepted),
            duplicates: saturating(outcome.duplicates),
            event_ids: outcome.event_ids,
        })
    }
}

fn saturating(count: u64) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// One analytics event. `eventId` is the client's idempotency key (a UUID is generated when absent).
#[derive(InputObject)]
pub struct EventInput {
    event_id: Option<String>,
    user_id: String,
    session_id: Option<String>,
    event_name: String,
    /// When the event happened; absent means the time the server received it.
    timestamp: Option<DateTime>,
    /// A JSON object of at most 16 KiB.
    properties: Option<Json<serde_json::Value>>,
    experiment_id: Option<String>,
    cohort: Option<String>,
}

impl EventInput {
    fn into_domain(self) -> DomainEventInput {
        DomainEventInput {
            event_id: self.event_id,
            user_id: self.user_id,
            session_id: self.session_id,
            event_name: self.event_name,
            timestamp: self.timestamp.map(DateTime::into_input),
            properties: self.properties.map(|json| json.0),
            experiment_id: self.experiment_id,
            cohort: self.cohort,
            decode_errors: Vec::new(),
        }
    }
}

#[derive(SimpleObject)]
pub struct CollectEventsPayload {
    /// Events stored by this call.
    accepted: i32,
    /// Events not stored because their `eventId` was already stored or repeated in the batch.
    duplicates: i32,
    /// One id per input event, in input order.
    event_ids: Vec<String>,
}

pub struct Event(pub(super) events::Event);

#[Object]
impl Event {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn event_id(&self) -> &str {
        &self.0.event_id
    }
    async fn user_id(&self) -> &str {
        &self.0.user_id
    }
    async fn session_id(&self) -> Option<&str> {
        self.0.session_id.as_deref()
    }
    async fn event_name(&self) -> &str {
        &self.0.event_name
    }
    async fn timestamp(&self) -> DateTime {
        self.0.timestamp.into()
    }
    async fn received_at(&self) -> DateTime {
        self.0.received_at.into()
    }
    #[graphql(complexity = "HEAVY_JSON")]
    async fn properties(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
        json_output(ctx, &self.0.properties)
    }
    async fn experiment_id(&self) -> Option<&str> {
        self.0.experiment_id.as_deref()
    }
    async fn cohort(&self) -> Option<&str> {
        self.0.cohort.as_deref()
    }
    /// The experiment named by `experimentId`, if it exists.
    #[graphql(complexity = "LOOKUP + child_complexity")]
    async fn experiment(&self, ctx: &Context<'_>) -> Result<Option<Experiment>> {
        let Some(id) = &self.0.experiment_id else {
            return Ok(None);
        };
        let loaded: Option<Arc<DomainExperiment>> = ctx
            .data_unchecked::<DataLoader<ExperimentLoader>>()
            .load_one(id.clone())
            .await?;
        Ok(loaded.map(Experiment))
    }
}
