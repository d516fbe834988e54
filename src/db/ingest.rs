//! Storing a batch of analytics events in one statement, skipping `event_id`s already stored.
//! PostgreSQL gets the whole batch as nine arrays through `UNNEST` (one small statement, prepared
//! once, whatever the batch size); SQLite gets one multi-row INSERT.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    DatabaseConnection, DbErr, EntityTrait, RuntimeErr,
};
use serde_json::Value;

use crate::db::{Backend, entities::analytics_event};

/// One validated event, ready to store.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub event_id: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub event_name: String,
    pub timestamp: DateTime<Utc>,
    pub properties: Value,
    pub experiment_id: Option<String>,
    pub cohort: Option<String>,
}

macro_rules! insert_from_unnest {
    () => {
        "INSERT INTO analytics_events \
        (event_id, user_id, session_id, event_name, event_timestamp, received_at, properties, experiment_id, cohort) \
        SELECT event_id, user_id, session_id, event_name, event_timestamp, $9, properties::jsonb, experiment_id, cohort \
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[]) \
        AS batch (event_id, user_id, session_id, event_name, event_timestamp, properties, experiment_id, cohort)"
    };
}

/// Expects every id to be new: ON CONFLICT's speculative insertion cost PostgreSQL about a tenth
/// of its ingest throughput, paid on every row for the rare batch that repeats an id.
const POSTGRES_INSERT: &str = insert_from_unnest!();

/// The same, skipping ids already stored: for a retried batch, or one racing another with the
/// same ids, after the plain insert refused it as a whole.
const POSTGRES_INSERT_SKIPPING_STORED: &str =
    concat!(insert_from_unnest!(), " ON CONFLICT (event_id) DO NOTHING");

/// Attempts at a batch that PostgreSQL aborted to break a deadlock or a serialization conflict;
/// sorted batches should never deadlock, so this is a bounded safety net, not a loop.
const CONFLICT_ATTEMPTS: u32 = 5;

/// Inserts the rows (whose `event_id`s must be distinct) and returns how many were new.
pub async fn insert_events(
    db: &DatabaseConnection,
    mut rows: Vec<EventRow>,
    received_at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    if rows.is_empty() {
        return Ok(0);
    }
    // Every batch takes its unique-index locks in one global order (by event id), so batches
    // that share ids wait for each other instead of deadlocking (retries from many devices).
    rows.sort_unstable_by(|a, b| a.event_id.cmp(&b.event_id));
    match Backend::of(db) {
        Backend::Postgres => insert_postgres(db, rows, received_at).await,
        // 100 rows × 10 columns stays far below SQLite's 32,766 bind parameters.
        Backend::Sqlite => insert_sqlite(db, rows, received_at).await,
    }
}

async fn insert_postgres(
    db: &DatabaseConnection,
    rows: Vec<EventRow>,
    received_at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let count = rows.len();
    let mut event_ids = Vec::with_capacity(count);
    let mut user_ids = Vec::with_capacity(count);
    let mut session_ids = Vec::with_capacity(count);
    let mut event_names = Vec::with_capacity(count);
    let mut timestamps = Vec::with_capacity(count);
    let mut properties = Vec::with_capacity(count);
    let mut experiment_ids = Vec::with_capacity(count);
    let mut cohorts = Vec::with_capacity(count);
    for row in rows {
        event_ids.push(row.event_id);
        user_ids.push(row.user_id);
        session_ids.push(row.session_id);
        event_names.push(row.event_name);
        timestamps.push(row.timestamp);
        properties.push(row.properties.to_string());
        experiment_ids.push(row.experiment_id);
        cohorts.push(row.cohort);
    }
    let columns = Columns {
        event_ids: Arc::new(event_ids),
        user_ids: Arc::new(user_ids),
        session_ids: Arc::new(session_ids),
        event_names: Arc::new(event_names),
        timestamps: Arc::new(timestamps),
        properties: Arc::new(properties),
        experiment_ids: Arc::new(experiment_ids),
        cohorts: Arc::new(cohorts),
        received_at,
    };
    let pool = db.get_postgres_connection_pool();
    let mut attempt = 1;
    loop {
        // One statement either way, so a refused batch leaves nothing behind.
        let result = match columns.bind_to(POSTGRES_INSERT).execute(pool).await {
            Err(sea_orm::sqlx::Error::Database(error)) if error.is_unique_violation() => {
                columns
                    .bind_to(POSTGRES_INSERT_SKIPPING_STORED)
                    .execute(pool)
                    .await
            }
            other => other,
        };
        match result {
            Ok(result) => return Ok(result.rows_affected()),
            Err(error) if attempt < CONFLICT_ATTEMPTS && is_transient_conflict(&error) => {
                tracing::warn!(attempt, %error, "event batch aborted by a concurrency conflict; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5)).await;
                attempt += 1;
            }
            Err(error) => return Err(DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error)))),
        }
    }
}

/// SQLSTATE 40P01 (deadlock detected) or 40001 (serialization failure): the statement was rolled
/// back whole and may simply run again.
fn is_transient_conflict(error: &sea_orm::sqlx::Error) -> bool {
    match error {
        sea_orm::sqlx::Error::Database(error) => {
            matches!(error.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// A batch as the nine array parameters of the UNNEST statements.
struct Columns {
    event_ids: Arc<Vec<String>>,
    user_ids: Arc<Vec<String>>,
    session_ids: Arc<Vec<Option<String>>>,
    event_names: Arc<Vec<String>>,
    timestamps: Arc<Vec<DateTime<Utc>>>,
    properties: Arc<Vec<String>>,
    experiment_ids: Arc<Vec<Option<String>>>,
    cohorts: Arc<Vec<Option<String>>>,
    received_at: DateTime<Utc>,
}

impl Columns {
    /// The statement with the arrays bound (shared, so a second statement costs no copy).
    fn bind_to(
        &self,
        statement: &'static str,
    ) -> sea_orm::sqlx::query::Query<
        'static,
        sea_orm::sqlx::Postgres,
        sea_orm::sqlx::postgres::PgArguments,
    > {
        sea_orm::sqlx::query(statement)
            .bind(self.event_ids.clone())
            .bind(self.user_ids.clone())
            .bind(self.session_ids.clone())
            .bind(self.event_names.clone())
            .bind(self.timestamps.clone())
            .bind(self.properties.clone())
            .bind(self.experiment_ids.clone())
            .bind(self.cohorts.clone())
            .bind(self.received_at)
    }
}

async fn insert_sqlite(
    db: &DatabaseConnection,
    rows: Vec<EventRow>,
    received_at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let models = rows.into_iter().map(|row| analytics_event::ActiveModel {
        id: NotSet,
        event_id: Set(row.event_id),
        user_id: Set(row.user_id),
        session_id: Set(row.session_id),
        event_name: Set(row.event_name),
        event_timestamp: Set(row.timestamp),
        received_at: Set(received_at),
        properties: Set(row.properties),
        experiment_id: Set(row.experiment_id),
        cohort: Set(row.cohort),
    });
    let inserted = analytics_event::Entity::insert_many(models)
        .on_conflict_do_nothing_on([analytics_event::Column::EventId])
        .exec_without_returning(db)
        .await?;
    Ok(match inserted {
        sea_orm::TryInsertResult::Inserted(count) => count,
        sea_orm::TryInsertResult::Empty | sea_orm::TryInsertResult::Conflicted => 0,
    })
}
