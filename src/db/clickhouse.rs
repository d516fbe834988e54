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

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::{db::ingest::EventRow, domain::events::Event};

/// The events table. Partitioned by the month of the event's own time (old months can be dropped
/// or moved whole) and sorted by user first, so one user's history is one contiguous range.
const CREATE_EVENTS: &str = "CREATE TABLE IF NOT EXISTS events (
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
) ENGINE = ReplacingMergeTree(keep)
PARTITION BY toYYYYMM(toDateTime(intDiv(timestamp_us, 1000000)))
ORDER BY (user_id, event_id)";

/// Where events go when `--events-url` names a ClickHouse server.
#[derive(Clone)]
pub struct ClickHouseEvents {
    client: Client,
    /// `SELECT version()` at startup, for health reports and version-gated features.
    version: String,
}

/// What went wrong talking to ClickHouse; logged, and reported to clients as the store being
/// unavailable.
#[derive(Debug, thiserror::Error)]
#[error("ClickHouse: {0}")]
pub struct ClickHouseError(#[from] clickhouse::error::Error);

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
        if database.is_empty()
            || !database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
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
    /// Connects, creates the database and the events table when missing, and reads the server's
    /// version.
    pub async fn connect(url: &EventsUrl) -> Result<Self, ClickHouseError> {
        // Validation asks the server for the table's column types in a format 18.16 lacks; the
        // rows are checked here instead, by `StoredRow`'s types matching `CREATE_EVENTS`.
        let mut client = Client::default()
            .with_url(&url.http_url)
            .with_validation(false);
        if let Some(user) = &url.user {
            client = client.with_user(user);
        }
        if let Some(password) = &url.password {
            client = client.with_password(password);
        }
        // The database name was checked to be letters, digits and '_'; DDL cannot bind it.
        client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", url.database))
            .execute()
            .await?;
        let client = client.with_database(&url.database);
        client.query(CREATE_EVENTS).execute().await?;
        let version = client
            .query("SELECT version()")
            .fetch_one::<String>()
            .await?;
        Ok(ClickHouseEvents { client, version })
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

    /// Stores the rows whose (user, event id) is not stored yet, in one insert; returns how many
    /// that was. The rows' ids must be distinct.
    pub async fn insert(
        &self,
        rows: Vec<EventRow>,
        received_at: DateTime<Utc>,
    ) -> Result<u64, ClickHouseError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let users: Vec<&str> = rows
            .iter()
            .map(|row| row.user_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let ids: Vec<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
        let stored: HashSet<(String, String)> = self
            .client
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
        let received_at_us = received_at.timestamp_micros();
        // The highest `keep` wins a merge: the earliest received copy.
        let keep = u64::MAX - received_at_us.max(0) as u64;
        let fresh: Vec<StoredRow> = rows
            .into_iter()
            .filter(|row| !stored.contains(&(row.user_id.clone(), row.event_id.clone())))
            .map(|row| StoredRow {
                id: event_key(&row.event_id),
                timestamp_us: row.timestamp.timestamp_micros(),
                received_at_us,
                properties: row.properties.to_string(),
                event_id: row.event_id,
                user_id: row.user_id,
                session_id: row.session_id,
                event_name: row.event_name,
                experiment_id: row.experiment_id,
                cohort: row.cohort,
                keep,
            })
            .collect();
        if fresh.is_empty() {
            return Ok(0);
        }
        // One INSERT: the reply comes once ClickHouse has written it, so nothing acknowledged is
        // lost.
        let mut insert = self.client.insert::<StoredRow>("events").await?;
        for row in &fresh {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(fresh.len() as u64)
    }

    /// One page of a user's events, newest first, plus one row when another page follows.
    pub async fn history(&self, filter: HistoryFilter<'_>) -> Result<Vec<Event>, ClickHouseError> {
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
        Ok(rows.into_iter().filter_map(readable).collect())
    }
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
    let hash = blake3::hash(event_id.as_bytes());
    let bytes: [u8; 8] = hash.as_bytes()[..8]
        .try_into()
        .expect("a blake3 hash has 32 bytes");
    (u64::from_le_bytes(bytes) >> 1) as i64
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
