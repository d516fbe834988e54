//! `liveEvents`: every event stored from now on, by any instance, in storage order.
//!
//! While anyone on this instance subscribes, one poller reads the rows stored since its last read
//! (by id, on the primary key) every [`POLL_EVERY`] and fans them out through a bounded broadcast
//! channel; with no subscriber nothing runs. Ingest is left alone on purpose: a `NOTIFY` from each
//! batch would make PostgreSQL serialize the commits of every ingesting transaction (it holds one
//! lock per database from a notifying transaction's pre-commit until after its commit, to keep
//! notifications in commit order), and ingest speed lives on concurrent commits.
//!
//! An id is drawn when a row is inserted but the row shows only once its statement commits, so a
//! concurrent batch with lower ids can appear after higher ones were read: ids skipped over are
//! kept as holes for [`HOLE_LIFETIME`] and read again until they show. Ids that never show
//! (duplicates skipped by `ON CONFLICT`, rolled-back batches) simply expire.
//!
//! With events in ClickHouse the poller reads `recent_events` (every insert, sorted by arrival)
//! instead. ClickHouse has no ids drawn at insert, so each read reaches back [`LOOKBACK`] from now
//! and sends the rows it has not sent yet: a batch received earlier but stored later (another
//! instance's, or one waiting in a writer's queue) still shows if it is stored within [`LOOKBACK`].

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::Stream;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Func},
};
use tokio::sync::{Mutex, broadcast};

use super::{Event, query};
use crate::{
    db::{
        clickhouse::{ClickHouseEvents, RecentKey},
        entities::analytics_event,
    },
    domain::ids::{Slug, UserId},
    error::{Error, Result},
};

/// How often the poller looks for new rows while anyone subscribes.
pub const POLL_EVERY: Duration = Duration::from_millis(100);
/// Events held for subscribers at most: a subscriber this far behind is too slow, is told so and
/// is dropped. Events carry at most 16 KiB of properties, so this bounds the memory held to
/// about 64 MiB per instance, whatever the number of subscribers.
pub const BUFFERED_EVENTS: usize = 4_096;
/// Rows read per query; a full page is followed by the next at once.
const PAGE: u64 = 500;
/// How long an id skipped over is looked for again. Each batch is one statement, committed
/// within the request timeout; a row that shows later than this is not sent.
const HOLE_LIFETIME: Duration = Duration::from_secs(30);
/// Most ids looked for again; the oldest are given up first. A batch racing others leaves at
/// most 100 behind it.
const MAX_HOLES: usize = 1_000;
/// ClickHouse: how far back each read reaches for rows stored late (a writer's queue, another
/// instance's clock).
const LOOKBACK: Duration = Duration::from_secs(2);
/// ClickHouse: most pages read per tick. Past it (above ~25,000 events/s) the next tick goes on
/// from where this one stopped, so the feed keeps up, and rows stored late may be missed.
const MAX_PAGES_PER_TICK: usize = 50;
/// ClickHouse: rows read per query.
const CLICKHOUSE_PAGE: u64 = 1_000;

/// What a `liveEvents` subscriber wants to see; absent filters match everything.
#[derive(Debug, Clone, Default)]
pub struct LiveFilter {
    pub user_id: Option<UserId>,
    pub event_name: Option<Slug>,
    pub experiment_id: Option<Slug>,
}

impl LiveFilter {
    fn matches(&self, event: &Event) -> bool {
        self.user_id
            .as_deref()
            .is_none_or(|user_id| user_id == event.user_id)
            && self
                .event_name
                .as_deref()
                .is_none_or(|name| name == event.event_name)
            && self
                .experiment_id
                .as_deref()
                .is_none_or(|id| Some(id) == event.experiment_id.as_deref())
    }
}

#[derive(Clone)]
pub struct LiveEvents {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    /// The running poller's channel, if any subscriber is left.
    feed: Mutex<Option<broadcast::Sender<Arc<Event>>>>,
}

/// Where stored events are read from.
pub enum Source {
    Main(DatabaseConnection),
    ClickHouse(Arc<ClickHouseEvents>),
}

impl LiveEvents {
    pub fn new(source: Source) -> Self {
        LiveEvents {
            inner: Arc::new(Inner {
                source,
                feed: Mutex::new(None),
            }),
        }
    }

    /// Every event stored after this call returns that matches `filter`, in storage order. A
    /// subscriber that falls [`BUFFERED_EVENTS`] behind gets one `LimitExceeded` error and the
    /// stream ends.
    pub async fn subscribe(
        &self,
        filter: LiveFilter,
    ) -> Result<impl Stream<Item = Result<Arc<Event>>> + Send + 'static + use<>> {
        let receiver = self.receiver().await?;
        Ok(futures_util::stream::unfold(
            Some((receiver, filter)),
            |state| async move {
                let (mut receiver, filter) = state?;
                loop {
                    match receiver.recv().await {
                        Ok(event) if filter.matches(&event) => {
                            return Some((Ok(event), Some((receiver, filter))));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let error = Error::LimitExceeded(format!(
                                "this subscriber fell {missed} events behind (at most \
                                 {BUFFERED_EVENTS} are held) and was ended; subscribe again to \
                                 resume from the newest events"
                            ));
                            return Some((Err(error), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }

    /// A receiver on the running poller, starting one (from the newest stored row) if none runs.
    async fn receiver(&self) -> Result<broadcast::Receiver<Arc<Event>>> {
        let mut feed = self.inner.feed.lock().await;
        if let Some(sender) = feed.as_ref() {
            return Ok(sender.subscribe());
        }
        let (sender, receiver) = broadcast::channel(BUFFERED_EVENTS);
        match &self.inner.source {
            Source::Main(db) => {
                let newest = newest_id(db).await?;
                tokio::spawn(poll(self.inner.clone(), db.clone(), sender.clone(), newest));
            }
            Source::ClickHouse(store) => {
                let started_us = chrono::Utc::now().timestamp_micros();
                tokio::spawn(poll_clickhouse(
                    self.inner.clone(),
                    store.clone(),
                    sender.clone(),
                    started_us,
                ));
            }
        }
        *feed = Some(sender);
        Ok(receiver)
    }
}

async fn newest_id(db: &DatabaseConnection) -> Result<i64> {
    let newest: Option<Option<i64>> = analytics_event::Entity::find()
        .select_only()
        .expr_as(Func::max(Expr::col(analytics_event::Column::Id)), "newest")
        .into_tuple()
        .one(db)
        .await?;
    Ok(newest.flatten().unwrap_or(0))
}

/// Whether anyone still subscribes; if not, the poller's feed is taken away (under the lock a new
/// subscriber takes, so none subscribes to a poller that stops).
async fn still_wanted(inner: &Inner, sender: &broadcast::Sender<Arc<Event>>) -> bool {
    let mut feed = inner.feed.lock().await;
    if sender.receiver_count() == 0 {
        *feed = None;
        return false;
    }
    true
}

/// Read failures, logged once per outage rather than on every tick.
#[derive(Default)]
struct Failures {
    failing: bool,
}

impl Failures {
    fn failed(&mut self, error: &dyn std::fmt::Display) {
        if !self.failing {
            tracing::warn!(%error, "reading new events for live subscribers failed; retrying");
        }
        self.failing = true;
    }

    fn succeeded(&mut self) {
        self.failing = false;
    }
}

fn ticks() -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Reads and sends new rows until no subscriber is left.
async fn poll(
    inner: Arc<Inner>,
    db: DatabaseConnection,
    sender: broadcast::Sender<Arc<Event>>,
    mut newest: i64,
) {
    let mut holes = Holes::default();
    let mut ticks = ticks();
    let mut failures = Failures::default();
    loop {
        ticks.tick().await;
        if !still_wanted(&inner, &sender).await {
            return;
        }
        loop {
            let rows = match read_after(&db, newest, &holes).await {
                Ok(rows) => rows,
                Err(error) => {
                    failures.failed(&error);
                    break;
                }
            };
            failures.succeeded();
            let full = rows.len() as u64 == PAGE;
            let now = Instant::now();
            for row in rows {
                if row.id > newest {
                    holes.skipped(newest + 1..row.id, now);
                    newest = row.id;
                } else {
                    holes.filled(row.id);
                }
                if let Some(event) = row.readable() {
                    // No receiver left is not an error here: the next tick stops the poller.
                    let _ = sender.send(Arc::new(event));
                }
            }
            holes.expire(now);
            if !full {
                break;
            }
        }
    }
}

/// ClickHouse: reads the last [`LOOKBACK`] of `recent_events` each tick and sends the rows not
/// sent before, until no subscriber is left. Nothing received before `started_us` is sent.
async fn poll_clickhouse(
    inner: Arc<Inner>,
    store: Arc<ClickHouseEvents>,
    sender: broadcast::Sender<Arc<Event>>,
    started_us: i64,
) {
    let lookback_us = LOOKBACK.as_micros() as i64;
    // Keys sent that are still inside the window.
    let mut sent = std::collections::BTreeSet::<RecentKey>::new();
    // Where a tick that hit its page limit stopped.
    let mut resume: Option<RecentKey> = None;
    let mut ticks = ticks();
    let mut failures = Failures::default();
    loop {
        ticks.tick().await;
        if !still_wanted(&inner, &sender).await {
            return;
        }
        let since_us = started_us.max(chrono::Utc::now().timestamp_micros() - lookback_us);
        sent = sent.split_off(&RecentKey {
            received_at_us: since_us,
            user_id: String::new(),
            event_id: String::new(),
        });
        let mut after = resume.take();
        let mut caught_up = false;
        for _ in 0..MAX_PAGES_PER_TICK {
            let rows = match store
                .recent(since_us, after.as_ref(), CLICKHOUSE_PAGE)
                .await
            {
                Ok(rows) => rows,
                Err(error) => {
                    failures.failed(&error);
                    caught_up = true;
                    break;
                }
            };
            failures.succeeded();
            let full = rows.len() as u64 == CLICKHOUSE_PAGE;
            for (key, event) in rows {
                after = Some(key.clone());
                if sent.insert(key)
                    && let Some(event) = event
                {
                    // No receiver left is not an error here: the next tick stops the poller.
                    let _ = sender.send(Arc::new(event));
                }
            }
            if !full {
                caught_up = true;
                break;
            }
        }
        if !caught_up {
            resume = after;
        }
    }
}

async fn read_after(
    db: &DatabaseConnection,
    newest: i64,
    holes: &Holes,
) -> std::result::Result<Vec<query::StoredEvent>, sea_orm::DbErr> {
    use analytics_event::Column;
    let mut wanted = Condition::any().add(Column::Id.gt(newest));
    if !holes.is_empty() {
        wanted = wanted.add(Column::Id.is_in(holes.ids()));
    }
    query::stored_events()
        .filter(wanted)
        .order_by_asc(Column::Id)
        .limit(PAGE)
        .into_model::<query::StoredEvent>()
        .all(db)
        .await
}

/// Ids skipped over, oldest (and lowest) first.
#[derive(Default)]
struct Holes(VecDeque<(i64, Instant)>);

impl Holes {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn ids(&self) -> Vec<i64> {
        self.0.iter().map(|(id, _)| *id).collect()
    }

    fn skipped(&mut self, ids: std::ops::Range<i64>, now: Instant) {
        // Only the highest ids of a long run can still be in flight.
        let start = ids.start.max(ids.end - MAX_HOLES as i64);
        self.0.extend((start..ids.end).map(|id| (id, now)));
        while self.0.len() > MAX_HOLES {
            self.0.pop_front();
        }
    }

    fn filled(&mut self, id: i64) {
        if let Ok(position) = self.0.binary_search_by_key(&id, |(hole, _)| *hole) {
            self.0.remove(position);
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) > HOLE_LIFETIME)
        {
            self.0.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_fill_expire_and_stay_bounded() {
        let start = Instant::now();
        let mut holes = Holes::default();
        holes.skipped(3..6, start);
        assert_eq!(holes.ids(), vec![3, 4, 5]);
        holes.filled(4);
        holes.filled(9);
        assert_eq!(holes.ids(), vec![3, 5]);
        holes.skipped(10..5_000, start + Duration::from_secs(1));
        assert_eq!(holes.ids().len(), MAX_HOLES);
        assert_eq!(holes.ids().first(), Some(&(5_000 - MAX_HOLES as i64)));
        holes.expire(start + HOLE_LIFETIME + Duration::from_millis(500));
        assert_eq!(holes.ids().len(), MAX_HOLES);
        holes.expire(start + HOLE_LIFETIME + Duration::from_secs(2));
        assert!(holes.is_empty());
    }
}
