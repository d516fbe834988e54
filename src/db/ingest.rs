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

const POSTGRES_INSERT: &str = "INSERT INTO analytics_events \
    (event_id, user_id, session_id, event_name, event_timestamp, received_at, properties, experiment_id, cohort) \
    SELECT event_id, user_id, session_id, event_name, event_timestamp, $9, properties::jsonb, experiment_id, cohort \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[]) \
    AS batch (event_id, user_id, session_id, event_name, event_timestamp, properties, experiment_id, cohort) \
    ON CONFLICT (event_id) DO NOTHING";

/// Inserts the rows (whose `event_id`s must be distinct) and returns how many were new.
pub async fn insert_events(
    db: &DatabaseConnection,
    rows: Vec<EventRow>,
    received_at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    if rows.is_empty() {
        return Ok(0);
    }
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
    let result = sea_orm::sqlx::query(POSTGRES_INSERT)
        .bind(event_ids)
        .bind(user_ids)
        .bind(session_ids)
        .bind(event_names)
        .bind(timestamps)
        .bind(properties)
        .bind(experiment_ids)
        .bind(cohorts)
        .bind(received_at)
        .execute(db.get_postgres_connection_pool())
        .await
        .map_err(|error| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error))))?;
    Ok(result.rows_affected())
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
