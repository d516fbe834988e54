//! Events in ClickHouse (docs/api.md §13), over its HTTP interface with the `clickhouse` crate.
//!
//! The schema is the common ground of ClickHouse 18.16 (Debian's package, used by the tests) and
//! current releases: timestamps as Int64 microseconds, properties as JSON text, no experimental
//! features. ClickHouse has no unique index, so a resent event is dropped twice over:
//! - before an insert, the batch's ids already stored for its users are looked up and left out
//!   (they count as duplicates);
//! - two batches racing with one id both store it, and `ReplacingMergeTree` keyed by (user, event
//!   id) folds the copies into one, which every read sees through `FINAL`. `keep` makes the first
//!   received copy the one kept, as the main database keeps the first stored row.
//!
//! On a cluster (`--events-cluster`), each table is a `*_local` table on every shard, made with
//! `ON CLUSTER` DDL, behind a `Distributed` table of the plain name sharded by
//! `cityHash64(user_id)`: a user's events and assignments live on one shard, so the dedup above
//! and the results' join stay shard-local. Inserts wait for every shard (`insert_distributed_sync`).

use std::{collections::HashSet, sync::Arc};

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{
    db::{
        ingest::EventRow,
        results::{Aggregates, Analysis, CohortSums},
    },
    domain::{
        events::Event,
        metrics::{Metric, MetricKind},
    },
};

/// The events table's columns; `recent_events` has the same.
const EVENT_COLUMNS: &str = "(
    id Int64,
    event_id String,
    user_id String,
    session_id Nullable(String),
    event_name String,
    timestamp_us Int64,
    received_at_us Int64,
    properties String,
    experiment_id Nullable(String),
    cohort Nullable(String),
    keep UInt64
)";

/// The events table. Partitioned by the month of the event's own time (old months can be dropped
/// or moved whole) and sorted by user first, so one user's history is one contiguous range.
const EVENTS_ENGINE: &str = "ENGINE = ReplacingMergeTree(keep)
PARTITION BY toYYYYMM(toDateTime(intDiv(timestamp_us, 1000000), 'UTC'))
ORDER BY (user_id, event_id)";

/// The last days' events in the order they were received, for `liveEvents`: a materialized view
/// copies every insert into `events` here, and whole days older than [`RECENT_DAYS`] are dropped.
/// Sorted by arrival, so the newest events are one short range however large `events` grows.
const RECENT_EVENTS_ENGINE: &str = "ENGINE = MergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(received_at_us, 1000000), 'UTC'))
ORDER BY (received_at_us, user_id, event_id)";

/// Days of `recent_events` kept before the current UTC day.
const RECENT_DAYS: i64 = 2;
/// How often days older than [`RECENT_DAYS`] are dropped.
const RECENT_EVENTS_PRUNED_EVERY: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Copies of the main database's assignments, for results computed next to the events. A
/// reassignment (its cohort was removed) stores a later `assigned_at`, and the latest copy wins.
const ASSIGNMENTS_TABLE: &str = "(
    experiment_id String,
    user_id String,
    cohort String,
    assigned_at_us Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (experiment_id, user_id)";

/// One assignment as the main database stores it.
#[derive(Debug, Clone)]
pub struct AssignmentCopy<'a> {
    pub user_id: &'a str,
    pub experiment_id: &'a str,
    pub cohort: &'a str,
    pub assigned_at: DateTime<Utc>,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct AssignmentRow<'a> {
    experiment_id: &'a str,
    user_id: &'a str,
    cohort: &'a str,
    assigned_at_us: i64,
    version: u64,
}

#[derive(Debug, Row, Deserialize)]
struct CohortUsersRow {
    cohort: String,
    users: u64,
    assigned_before: Vec<u64>,
}

#[derive(Debug, Row, Deserialize)]
struct CohortSumsRow {
    analysed_cohort: String,
    sums: Vec<f64>,
    squares: Vec<f64>,
}

/// A value bound to a `?` of a statement built piece by piece.
#[derive(Clone)]
enum Arg {
    Text(String),
    Texts(Vec<String>),
    Int(i64),
}

/// Where events go when `--events-url` names a ClickHouse server.
#[derive(Clone)]
pub struct ClickHouseEvents {
    client: Client,
    /// `SELECT version()` at startup, for health reports and version-gated features.
    version: String,
    database: String,
    cluster: Option<String>,
    /// The assignments table on the shard a query runs on: the results' join reads it next to
    /// each shard's events. Qualified by the database: shards run a query in their own default.
    local_assignments: String,
    batches: mpsc::Sender<PendingBatch>,
}

/// What went wrong talking to ClickHouse; logged, and reported to clients as the store being
/// unavailable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClickHouseError {
    /// Shared by every batch of a failed group.
    #[error("ClickHouse: {0}")]
    Client(Arc<clickhouse::error::Error>),
    #[error("the ClickHouse event writer has stopped")]
    Stopped,
    /// Tables made for a cluster reached without `--events-cluster`, or the reverse.
    #[error("{0}")]
    Layout(String),
}

impl From<clickhouse::error::Error> for ClickHouseError {
    fn from(error: clickhouse::error::Error) -> Self {
        ClickHouseError::Client(Arc::new(error))
    }
}

/// A `collectEvents` batch waiting for the writer.
struct PendingBatch {
    rows: Vec<EventRow>,
    received_at: DateTime<Utc>,
    reply: oneshot::Sender<Result<u64, ClickHouseError>>,
}

/// Most events in one INSERT. Every INSERT makes a new part ClickHouse has to merge, so batches
/// that arrive together are written together (one round trip to find stored ids, one INSERT).
const MAX_GROUP_EVENTS: usize = 10_000;
/// ClickHouse refuses an INSERT touching more than 100 partitions (months); one batch of at most
/// 100 events never does, a group of batches is kept to as many. (Event times are 2000-01-01 to
/// a day ahead, well inside `toDateTime`'s range.)
const MAX_GROUP_MONTHS: usize = 100;
/// Batches queued at most; beyond it a request waits for room (back-pressure, not loss).
const BATCH_QUEUE: usize = 1_024;

/// One stored event, as its columns.
#[derive(Debug, Row, Serialize, Deserialize)]
struct StoredRow {
    id: i64,
    event_id: String,
    user_id: String,
    session_id: Option<String>,
    event_name: String,
    timestamp_us: i64,
    received_at_us: i64,
    properties: String,
    experiment_id: Option<String>,
    cohort: Option<String>,
    keep: u64,
}

/// Where a row of `recent_events` sorts: when it was received, then its user and event id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecentKey {
    pub received_at_us: i64,
    pub user_id: String,
    pub event_id: String,
}

/// A `userEvents` page request, already validated.
pub struct HistoryFilter<'a> {
    pub user_id: &'a str,
    pub event_name: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Resume strictly after this (timestamp µs, id), in newest-first order.
    pub after: Option<(i64, i64)>,
    pub limit: u64,
}

/// The parts of a `clickhouse://[user[:password]@]host:port/database` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct EventsUrl {
    pub http_url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
}

impl EventsUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some(("clickhouse", rest)) => rest,
            Some(("clickhouses", _)) => {
                return Err(
                    "clickhouses:// (TLS) is not supported by this build yet; reach ClickHouse over plain HTTP on a private network, or through a TLS-terminating proxy".to_owned(),
                );
            }
            _ => {
                return Err(format!(
                    "must look like clickhouse://[user[:password]@]host:port/database (got scheme {:?})",
                    url.split_once(':').map_or("", |(scheme, _)| scheme)
                ));
            }
        };
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let database = database.split('?').next().unwrap_or_default();
        let (credentials, host) = match authority.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err("names no host: use clickhouse://host:8123/database".to_owned());
        }
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| "has credentials that are not UTF-8 once decoded".to_owned())
        };
        let (user, password) = match credentials {
            None => (None, None),
            Some(credentials) => match credentials.split_once(':') {
                Some((user, password)) => (Some(decode(user)?), Some(decode(password)?)),
                None => (Some(decode(credentials)?), None),
            },
        };
        let database = decode(database)?;
        if !is_identifier(&database) {
            return Err(format!(
                "must name a database of letters, digits and '_' after the host (got {database:?})"
            ));
        }
        Ok(EventsUrl {
            http_url: format!("http://{host}"),
            user,
            password,
            database,
        })
    }
}

impl ClickHouseEvents {
    /// `--events-url` (and `--events-cluster`) parsed and connected, with errors that name the
    /// options and the server.
    pub async fn open(url: &str, cluster: Option<&str>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let url = EventsUrl::parse(url)
            .map_err(|problem| anyhow::anyhow!("--events-url (OCTP_EVENTS_URL) {problem}"))?;
        if let Some(cluster) = cluster
            && !is_identifier(cluster)
        {
            anyhow::bail!(
                "--events-cluster (OCTP_EVENTS_CLUSTER) must name a cluster of ClickHouse's remote_servers in letters, digits and '_' (got {cluster:?})"
            );
        }
        Self::connect(&url, cluster).await.with_context(|| match cluster {
            None => format!(
                "cannot reach the ClickHouse events store at {} (database {})",
                url.http_url, url.database
            ),
            Some(cluster) => format!(
                "cannot reach the ClickHouse events store at {} (database {}, cluster {cluster})",
                url.http_url, url.database
            ),
        })
    }

    /// Connects, creates the database and the tables when missing, and reads the server's
    /// version.
    async fn connect(url: &EventsUrl, cluster: Option<&str>) -> Result<Self, ClickHouseError> {
        // Validation asks the server for the table's column types in a format 18.16 lacks; the
        // rows are checked here instead, by `StoredRow`'s types matching `EVENT_COLUMNS`.
        let mut client = Client::default()
            .with_url(&url.http_url)
            .with_validation(false);
        if let Some(user) = &url.user {
            client = client.with_user(user);
        }
        if let Some(password) = &url.password {
            client = client.with_password(password);
        }
        if cluster.is_some() {
            // Acknowledged only once every shard holds its rows: a reply never names events that
            // a shard could still lose.
            client = client.with_setting("insert_distributed_sync", "1");
        }
        // Before any DDL: statements for one layout would add tables next to the other's.
        check_layout(&client, &url.database, cluster).await?;
        // The database and cluster names were checked to be letters, digits and '_'; DDL cannot
        // bind them.
        for statement in schema(&url.database, cluster) {
            client.query(&statement).execute().await?;
        }
        let client = client.with_database(&url.database);
        let version = client
            .query("SELECT version()")
            .fetch_one::<String>()
            .await?;
        let (batches, queue) = mpsc::channel(BATCH_QUEUE);
        tokio::spawn(write_batches(client.clone(), queue));
        tokio::spawn(prune_recent_events(
            client.clone(),
            url.database.clone(),
            cluster.map(str::to_owned),
        ));
        Ok(ClickHouseEvents {
            client,
            version,
            database: url.database.clone(),
            cluster: cluster.map(str::to_owned),
            local_assignments: match cluster {
                Some(_) => format!("{}.assignments_local", url.database),
                None => format!("{}.assignments", url.database),
            },
            batches,
        })
    }

    /// The cluster the tables are spread over, if any.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether ClickHouse answers a trivial query now.
    pub async fn reachable(&self) -> bool {
        self.client
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .is_ok()
    }

    /// Stores the rows whose (user, event id) is not stored yet; returns how many that was. The
    /// rows' ids must be distinct. Returns once ClickHouse has acknowledged the insert.
    pub async fn insert(
        &self,
        rows: Vec<EventRow>,
        received_at: DateTime<Utc>,
    ) -> Result<u64, ClickHouseError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let stopped = || ClickHouseError::Stopped;
        let (reply, answer) = oneshot::channel();
        self.batches
            .send(PendingBatch {
                rows,
                received_at,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stores copies of assignments (again: copies of one assignment fold into its latest).
    pub async fn copy_assignments(
        &self,
        assignments: &[AssignmentCopy<'_>],
    ) -> Result<(), ClickHouseError> {
        if assignments.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<AssignmentRow<'_>>("assignments")
            .await?;
        for assignment in assignments {
            let assigned_at_us = assignment.assigned_at.timestamp_micros();
            insert
                .write(&AssignmentRow {
                    experiment_id: assignment.experiment_id,
                    user_id: assignment.user_id,
                    cohort: assignment.cohort,
                    assigned_at_us,
                    version: assigned_at_us.max(0) as u64,
                })
                .await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// The aggregation behind experiment results (`db::results::aggregate`), run in ClickHouse
    /// over the events and the assignment copies.
    pub async fn aggregate(
        &self,
        analysis: &Analysis<'_>,
        boundaries: &[DateTime<Utc>],
    ) -> Result<Aggregates, ClickHouseError> {
        let cohorts: Vec<String> = analysis.cohorts.iter().map(|c| (*c).to_owned()).collect();
        // The analysed users: the experiment's, in its cohorts, assigned before `until`.
        let mut users_filter = String::from("experiment_id = ? AND has(?, cohort)");
        let mut users_args = vec![
            Arg::Text(analysis.experiment_id.to_owned()),
            Arg::Texts(cohorts),
        ];
        if let Some(until) = analysis.until {
            users_filter.push_str(" AND assigned_at_us < ?");
            users_args.push(Arg::Int(until.timestamp_micros()));
        }

        let mut args = Vec::new();
        // An empty array literal has no element type; `emptyArrayUInt64()` keeps the column typed.
        let assigned_before = if boundaries.is_empty() {
            "emptyArrayUInt64()".to_owned()
        } else {
            let counts: Vec<&str> = boundaries
                .iter()
                .map(|boundary| {
                    args.push(Arg::Int(boundary.timestamp_micros()));
                    "countIf(assigned_at_us < ?)"
                })
                .collect();
            format!("[{}]", counts.join(", "))
        };
        let sql = format!(
            "SELECT cohort, count() AS users, {assigned_before} AS assigned_before \
             FROM assignments FINAL WHERE {users_filter} GROUP BY cohort"
        );
        args.extend(users_args.iter().cloned());
        let users: Vec<CohortUsersRow> =
            bind_all(self.client.query(&sql), args).fetch_all().await?;

        let metrics = analysis.metrics;
        let mut sql = String::from("SELECT analysed_cohort, [");
        for index in 0..metrics.len() {
            if index > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("toFloat64(sum(y{index}))"));
        }
        sql.push_str("] AS sums, [");
        for index in 0..metrics.len() {
            if index > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("toFloat64(sum(y{index} * y{index}))"));
        }
        sql.push_str("] AS squares FROM (SELECT user_id, any(assigned_cohort) AS analysed_cohort");
        let mut args = Vec::new();
        for (index, metric) in metrics.iter().enumerate() {
            sql.push_str(", ");
            self.user_value(&mut sql, &mut args, metric);
            sql.push_str(&format!(" AS y{index}"));
        }
        // The events table is the FROM of the join itself: on a cluster the join then runs on
        // each shard, against that shard's assignments (a user's rows share a shard). The
        // assignments (one row per analysed user) are the join's right side, held in memory;
        // the events stream past them.
        sql.push_str(&format!(
            " FROM events FINAL ALL INNER JOIN (SELECT user_id, cohort AS assigned_cohort, \
             assigned_at_us FROM {} FINAL WHERE {users_filter}) AS analysed_users USING user_id",
            self.local_assignments
        ));
        args.extend(users_args);
        // PREWHERE reads only the metrics' events. It filters before FINAL folds copies, which
        // is sound here: copies of one event have the same name and time.
        let mut names: Vec<String> = metrics.iter().map(|m| m.event_name.clone()).collect();
        names.sort_unstable();
        names.dedup();
        sql.push_str(" PREWHERE has(?, event_name)");
        args.push(Arg::Texts(names));
        if let Some(since) = analysis.since {
            sql.push_str(" AND timestamp_us >= ?");
            args.push(Arg::Int(since.timestamp_micros()));
        }
        if let Some(until) = analysis.until {
            sql.push_str(" AND timestamp_us < ?");
            args.push(Arg::Int(until.timestamp_micros()));
        }
        sql.push_str(
            " WHERE timestamp_us >= assigned_at_us GROUP BY user_id) GROUP BY analysed_cohort",
        );
        let sums: Vec<CohortSumsRow> = bind_all(self.client.query(&sql), args).fetch_all().await?;

        let mut assigned_before = vec![0; boundaries.len()];
        let cohorts = users
            .into_iter()
            .map(|row| {
                for (total, count) in assigned_before.iter_mut().zip(&row.assigned_before) {
                    *total += count;
                }
                let metrics = sums
                    .iter()
                    .find(|summed| summed.analysed_cohort == row.cohort)
                    .map(|summed| {
                        summed
                            .sums
                            .iter()
                            .copied()
                            .zip(summed.squares.iter().copied())
                            .collect()
                    })
                    .unwrap_or_else(|| vec![(0.0, 0.0); metrics.len()]);
                CohortSums {
                    cohort: row.cohort,
                    users: row.users,
                    metrics,
                }
            })
            .collect();
        Ok(Aggregates {
            cohorts,
            assigned_before,
        })
    }

    /// A user's value of one metric over the user's joined events (as `db::results::user_value`).
    fn user_value(&self, sql: &mut String, args: &mut Vec<Arg>, metric: &Metric) {
        let aggregate = match metric.kind {
            MetricKind::Conversion => "max",
            MetricKind::Count | MetricKind::Sum => "sum",
        };
        sql.push_str(aggregate);
        sql.push_str("(if(event_name = ?");
        args.push(Arg::Text(metric.event_name.clone()));
        if let Some(micros) = metric.window_micros() {
            sql.push_str(" AND timestamp_us < assigned_at_us + ?");
            args.push(Arg::Int(micros));
        }
        match (&metric.kind, &metric.property) {
            (MetricKind::Sum, Some(property)) => {
                // Only JSON numbers count, as on the main database ("12" is text, so 0). No `?` in
                // the literal: the crate would take it for a placeholder.
                // JSONType/JSONExtractFloat read the top-level key; 18.x has only the
                // visitParam functions, which take the first `"key":` anywhere in the text
                // (docs/api.md §13).
                if self.has_json_functions() {
                    sql.push_str(
                        " AND JSONType(properties, ?) IN ('Int64', 'UInt64', 'Double'), \
                         JSONExtractFloat(properties, ?), 0.))",
                    );
                } else {
                    sql.push_str(
                        " AND match(visitParamExtractRaw(properties, ?), '^[-0-9]'), \
                         visitParamExtractFloat(properties, ?), 0.))",
                    );
                }
                args.push(Arg::Text(property.clone()));
                args.push(Arg::Text(property.clone()));
            }
            _ => sql.push_str(", 1, 0))"),
        }
    }

    /// Whether this server has the JSON functions of ClickHouse 19.x and later.
    fn has_json_functions(&self) -> bool {
        self.version
            .split('.')
            .next()
            .and_then(|major| major.parse::<u32>().ok())
            .is_some_and(|major| major >= 20)
    }

    /// Events received at or after `since_us`, after the `after` key, in the order they were
    /// received: (received µs, user, event id, the event). At most `limit` rows are read.
    pub async fn recent(
        &self,
        since_us: i64,
        after: Option<&RecentKey>,
        limit: u64,
    ) -> Result<Vec<(RecentKey, Option<Event>)>, ClickHouseError> {
        let mut sql = String::from("SELECT ?fields FROM recent_events WHERE received_at_us >= ?");
        if after.is_some() {
            sql.push_str(
                " AND (received_at_us > ? OR (received_at_us = ? AND (user_id > ? \
                 OR (user_id = ? AND event_id > ?))))",
            );
        }
        sql.push_str(" ORDER BY received_at_us, user_id, event_id LIMIT ?");
        let mut query = self.client.query(&sql).bind(since_us);
        if let Some(key) = after {
            query = query
                .bind(key.received_at_us)
                .bind(key.received_at_us)
                .bind(&key.user_id)
                .bind(&key.user_id)
                .bind(&key.event_id);
        }
        let rows = query.bind(limit).fetch_all::<StoredRow>().await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let key = RecentKey {
                    received_at_us: row.received_at_us,
                    user_id: row.user_id.clone(),
                    event_id: row.event_id.clone(),
                };
                (key, readable(row))
            })
            .collect())
    }

    /// One page of a user's events, newest first, and whether another page follows.
    pub async fn history(
        &self,
        filter: HistoryFilter<'_>,
    ) -> Result<(Vec<Event>, bool), ClickHouseError> {
        let mut sql = String::from("SELECT ?fields FROM events FINAL WHERE user_id = ?");
        if filter.event_name.is_some() {
            sql.push_str(" AND event_name = ?");
        }
        if filter.since.is_some() {
            sql.push_str(" AND timestamp_us >= ?");
        }
        if filter.until.is_some() {
            sql.push_str(" AND timestamp_us < ?");
        }
        if filter.after.is_some() {
            sql.push_str(" AND (timestamp_us < ? OR (timestamp_us = ? AND id < ?))");
        }
        sql.push_str(" ORDER BY timestamp_us DESC, id DESC LIMIT ?");
        let mut query = self.client.query(&sql).bind(filter.user_id);
        if let Some(event_name) = filter.event_name {
            query = query.bind(event_name);
        }
        if let Some(since) = filter.since {
            query = query.bind(since.timestamp_micros());
        }
        if let Some(until) = filter.until {
            query = query.bind(until.timestamp_micros());
        }
        if let Some((timestamp, id)) = filter.after {
            query = query.bind(timestamp).bind(timestamp).bind(id);
        }
        let rows = query
            .bind(filter.limit + 1)
            .fetch_all::<StoredRow>()
            .await?;
        // Counted before unreadable rows are dropped, as on the main database.
        let has_next_page = rows.len() as u64 > filter.limit;
        let events = rows
            .into_iter()
            .take(filter.limit as usize)
            .filter_map(readable)
            .collect();
        Ok((events, has_next_page))
    }
}

/// The writer task: whatever batches are queued, up to a group, stored at once; each batch is
/// answered with its own count once the group's INSERT is acknowledged (or its error).
async fn write_batches(client: Client, mut queue: mpsc::Receiver<PendingBatch>) {
    let mut carried: Option<PendingBatch> = None;
    loop {
        let first = match carried.take() {
            Some(batch) => batch,
            None => match queue.recv().await {
                Some(batch) => batch,
                None => return,
            },
        };
        let mut months: HashSet<i64> = months_of(&first.rows);
        let mut events = first.rows.len();
        let mut group = vec![first];
        while events < MAX_GROUP_EVENTS {
            let Ok(batch) = queue.try_recv() else { break };
            let batch_months = months_of(&batch.rows);
            let new_months = batch_months.difference(&months).count();
            if months.len() + new_months > MAX_GROUP_MONTHS
                || events + batch.rows.len() > MAX_GROUP_EVENTS
            {
                carried = Some(batch);
                break;
            }
            months.extend(batch_months);
            events += batch.rows.len();
            group.push(batch);
        }
        match store_group(&client, &group).await {
            Ok(counts) => {
                for (batch, count) in group.into_iter().zip(counts) {
                    let _ = batch.reply.send(Ok(count));
                }
            }
            Err(error) => {
                for batch in group {
                    let _ = batch.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The months (partitions) a batch's events fall in, as whole months since year 0.
fn months_of(rows: &[EventRow]) -> HashSet<i64> {
    use chrono::Datelike;
    rows.iter()
        .map(|row| i64::from(row.timestamp.year()) * 12 + i64::from(row.timestamp.month0()))
        .collect()
}

/// Stores a group of batches; returns each batch's count of new events. An id already stored for
/// its user, or taken by an earlier batch of the group, is a duplicate.
async fn store_group(client: &Client, group: &[PendingBatch]) -> Result<Vec<u64>, ClickHouseError> {
    let distinct = |column: fn(&EventRow) -> &str| -> Vec<&str> {
        group
            .iter()
            .flat_map(|batch| batch.rows.iter().map(column))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect()
    };
    let users = distinct(|row| &row.user_id);
    let ids = distinct(|row| &row.event_id);
    let mut taken: HashSet<(String, String)> = client
        .query(
            "SELECT DISTINCT user_id, event_id FROM events \
             WHERE user_id IN (SELECT arrayJoin(?)) AND event_id IN (SELECT arrayJoin(?))",
        )
        .bind(users)
        .bind(ids)
        .fetch_all::<(String, String)>()
        .await?
        .into_iter()
        .collect();
    let mut counts = Vec::with_capacity(group.len());
    let mut fresh = Vec::new();
    for batch in group {
        let received_at_us = batch.received_at.timestamp_micros();
        // The highest `keep` wins a merge: the earliest received copy.
        let keep = u64::MAX - received_at_us.max(0) as u64;
        let before = fresh.len();
        for row in &batch.rows {
            if !taken.insert((row.user_id.clone(), row.event_id.clone())) {
                continue;
            }
            fresh.push(StoredRow {
                id: event_key(&row.event_id),
                timestamp_us: row.timestamp.timestamp_micros(),
                received_at_us,
                properties: row.properties.to_string(),
                event_id: row.event_id.clone(),
                user_id: row.user_id.clone(),
                session_id: row.session_id.clone(),
                event_name: row.event_name.clone(),
                experiment_id: row.experiment_id.clone(),
                cohort: row.cohort.clone(),
                keep,
            });
        }
        counts.push((fresh.len() - before) as u64);
    }
    if !fresh.is_empty() {
        // One INSERT: the replies wait for its acknowledgement, so nothing acknowledged is lost.
        let mut insert = client.insert::<StoredRow>("events").await?;
        for row in &fresh {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    Ok(counts)
}

/// Refuses tables laid out for the other mode: `CREATE … IF NOT EXISTS` keeps whatever exists, and
/// a single-node table read as a cluster's (or the reverse) would silently split or miss events.
async fn check_layout(
    client: &Client,
    database: &str,
    cluster: Option<&str>,
) -> Result<(), ClickHouseError> {
    let tables: Vec<(String, String)> = client
        .query(
            "SELECT name, engine FROM system.tables \
             WHERE database = ? AND name IN ('events', 'assignments')",
        )
        .bind(database)
        .fetch_all()
        .await?;
    for (table, engine) in tables {
        let distributed = engine == "Distributed";
        match cluster {
            Some(cluster) if !distributed => {
                return Err(ClickHouseError::Layout(format!(
                    "table {database}.{table} is a {engine} table of one server, not a Distributed table over cluster {cluster}: \
                     events stored there would not be spread over the shards; use another database for the cluster, or drop --events-cluster"
                )));
            }
            None if distributed => {
                return Err(ClickHouseError::Layout(format!(
                    "table {database}.{table} is a Distributed table (made with --events-cluster); pass the same --events-cluster (OCTP_EVENTS_CLUSTER)"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `name` may be written into DDL as is (letters, digits and '_').
fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The statements creating the database and its tables when missing; on a cluster, on every
/// shard, with `Distributed` tables in front.
fn schema(database: &str, cluster: Option<&str>) -> Vec<String> {
    let tables = [
        ("events", format!("{EVENT_COLUMNS} {EVENTS_ENGINE}")),
        ("assignments", ASSIGNMENTS_TABLE.to_owned()),
        (
            "recent_events",
            format!("{EVENT_COLUMNS} {RECENT_EVENTS_ENGINE}"),
        ),
    ];
    // The view copies each insert into a shard's `events` to the same shard's `recent_events`.
    let (on, local) = match cluster {
        None => (String::new(), ""),
        Some(cluster) => (format!(" ON CLUSTER {cluster}"), "_local"),
    };
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {database}{on}")];
    for (name, definition) in &tables {
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {database}.{name}{local}{on} {definition}"
        ));
        if let Some(cluster) = cluster {
            statements.push(format!(
                "CREATE TABLE IF NOT EXISTS {database}.{name}{on} AS {database}.{name}_local \
                 ENGINE = Distributed({cluster}, {database}, {name}_local, cityHash64(user_id))"
            ));
        }
    }
    statements.push(format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.recent_events_feed{on} \
         TO {database}.recent_events{local} AS SELECT * FROM {database}.events{local}"
    ));
    statements
}

/// Drops `recent_events` days older than [`RECENT_DAYS`], now and every
/// [`RECENT_EVENTS_PRUNED_EVERY`]. Days already gone are dropped again harmlessly (ClickHouse
/// ignores a missing partition); a week back covers a server stopped for days.
async fn prune_recent_events(client: Client, database: String, cluster: Option<String>) {
    let (on, local) = match &cluster {
        None => (String::new(), ""),
        Some(cluster) => (format!(" ON CLUSTER {cluster}"), "_local"),
    };
    let mut ticks = tokio::time::interval(RECENT_EVENTS_PRUNED_EVERY);
    loop {
        ticks.tick().await;
        let today = Utc::now().date_naive();
        for days_ago in RECENT_DAYS + 1..=RECENT_DAYS + 7 {
            let day = today - chrono::Duration::days(days_ago);
            let statement = format!(
                "ALTER TABLE {database}.recent_events{local}{on} DROP PARTITION {}",
                day.format("%Y%m%d")
            );
            if let Err(error) = client.query(&statement).execute().await {
                tracing::warn!(%error, %day, "could not drop an old day of recent_events (liveEvents' feed); retrying within the hour");
                break;
            }
        }
    }
}

fn bind_all(mut query: clickhouse::query::Query, args: Vec<Arg>) -> clickhouse::query::Query {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Texts(texts) => query.bind(texts),
            Arg::Int(int) => query.bind(int),
        };
    }
    query
}

/// The event, or `None` (logged) when a stored row cannot be read back.
fn readable(row: StoredRow) -> Option<Event> {
    let timestamp = DateTime::from_timestamp_micros(row.timestamp_us);
    let received_at = DateTime::from_timestamp_micros(row.received_at_us);
    let properties = serde_json::from_str(&row.properties);
    match (timestamp, received_at, properties) {
        (Some(timestamp), Some(received_at), Ok(properties)) => Some(Event {
            id: row.id,
            event_id: row.event_id,
            user_id: row.user_id,
            session_id: row.session_id,
            event_name: row.event_name,
            timestamp,
            received_at,
            properties,
            experiment_id: row.experiment_id,
            cohort: row.cohort,
        }),
        _ => {
            tracing::error!(
                event_id = %row.event_id,
                "a stored event cannot be read back from ClickHouse; it is left out of history pages"
            );
            None
        }
    }
}

/// A stable, non-negative number per event id: the tie-breaker of history order and cursors
/// (ClickHouse has no row ids). Every copy of a resent event gets the same one.
fn event_key(event_id: &str) -> i64 {
    let [a, b, c, d, e, f, g, h, ..] = *blake3::hash(event_id.as_bytes()).as_bytes();
    (u64::from_le_bytes([a, b, c, d, e, f, g, h]) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_credentials_and_database() {
        assert_eq!(
            EventsUrl::parse("clickhouse://octp:p%40ss@ch.internal:8123/analytics").unwrap(),
            EventsUrl {
                http_url: "http://ch.internal:8123".to_owned(),
                user: Some("octp".to_owned()),
                password: Some("p@ss".to_owned()),
                database: "analytics".to_owned(),
            }
        );
        assert_eq!(
            EventsUrl::parse("clickhouse://127.0.0.1:8123/octp")
                .unwrap()
                .user,
            None
        );
        for bad in [
            "postgres://host/db",
            "clickhouse://host:8123",
            "clickhouse://host:8123/bad-name",
            "clickhouse:///db",
            "clickhouses://host:8443/db",
        ] {
            assert!(EventsUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn event_keys_are_stable_and_non_negative() {
        assert_eq!(event_key("a"), event_key("a"));
        assert_ne!(event_key("a"), event_key("b"));
        assert!((0..1000).all(|n| event_key(&n.to_string()) >= 0));
    }
}
