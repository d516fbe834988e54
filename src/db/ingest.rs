//! Storing batches of analytics events, skipping `event_id`s already stored.
//!
//! PostgreSQL: batches go through a queue to a few writer tasks. Each writer takes every batch
//! waiting (up to a bound) and stores them with one `INSERT … SELECT FROM UNNEST(arrays)` statement:
//! under load many small batches share one statement and one commit, which is where PostgreSQL
//! spends its time; alone, a batch is written at once. A request is answered only after the commit
//! that holds its batch, and a failed statement fails every batch in it, so nothing acknowledged is
//! lost and no batch is stored in part.
//!
//! SQLite: one multi-row INSERT per batch, behind the write gate.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    DatabaseConnection, DbErr, EntityTrait, RuntimeErr,
};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::{Backend, WriteGate, entities::analytics_event};

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

/// Writer tasks on PostgreSQL: one writes while another gathers the next group.
const WRITERS: usize = 3;
/// Most batches one statement carries (100 events each).
const MAX_BATCHES_PER_STATEMENT: usize = 16;

const POSTGRES_INSERT: &str = "INSERT INTO analytics_events \
    (event_id, user_id, session_id, event_name, event_timestamp, received_at, properties, experiment_id, cohort) \
    SELECT event_id, user_id, session_id, event_name, event_timestamp, received_at, properties::jsonb, experiment_id, cohort \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[], $9::text[]) \
    AS batch (event_id, user_id, session_id, event_name, event_timestamp, received_at, properties, experiment_id, cohort) \
    ON CONFLICT (event_id) DO NOTHING \
    RETURNING event_id";

struct Job {
    rows: Vec<EventRow>,
    received_at: DateTime<Utc>,
    reply: oneshot::Sender<Result<u64, DbErr>>,
}

#[derive(Clone)]
pub struct Ingest {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Postgres(mpsc::Sender<Job>),
    Sqlite {
        db: DatabaseConnection,
        writes: WriteGate,
    },
}

impl Ingest {
    /// Starts the writer tasks on PostgreSQL; call inside the runtime that serves requests.
    pub fn new(db: DatabaseConnection, writes: WriteGate) -> Self {
        let target = match Backend::of(&db) {
            Backend::Sqlite => Target::Sqlite { db, writes },
            Backend::Postgres => {
                let (sender, receiver) = mpsc::channel(1024);
                let receiver = Arc::new(Mutex::new(receiver));
                for _ in 0..WRITERS {
                    tokio::spawn(write_groups(db.clone(), receiver.clone()));
                }
                Target::Postgres(sender)
            }
        };
        Ingest { target }
    }

    /// Stores the rows (whose `event_id`s must be distinct) and returns how many were new.
    pub async fn insert(
        &self,
        rows: Vec<EventRow>,
        received_at: DateTime<Utc>,
    ) -> Result<u64, DbErr> {
        if rows.is_empty() {
            return Ok(0);
        }
        match &self.target {
            Target::Sqlite { db, writes } => {
                let _turn = writes.enter().await;
                insert_sqlite(db, rows, received_at).await
            }
            Target::Postgres(queue) => {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    rows,
                    received_at,
                    reply,
                };
                let closed = || DbErr::Custom("the ingest writers have stopped".to_owned());
                queue.send(job).await.map_err(|_| closed())?;
                answer.await.map_err(|_| closed())?
            }
        }
    }
}

async fn write_groups(db: DatabaseConnection, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut receiver = queue.lock().await;
            match receiver.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < MAX_BATCHES_PER_STATEMENT {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        write_group(&db, jobs).await;
    }
}

/// Stores several batches in one statement and tells each how many of its events were new. An id
/// that appears in more than one batch belongs to the first, as if they had come one after another.
async fn write_group(db: &DatabaseConnection, jobs: Vec<Job>) {
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut columns = Columns::default();
    for (index, job) in jobs.iter().enumerate() {
        for row in &job.rows {
            if let Entry::Vacant(slot) = owner.entry(&row.event_id) {
                slot.insert(index);
                columns.push(row, job.received_at);
            }
        }
    }
    let outcome = columns.insert(db).await;
    let results: Vec<Result<u64, DbErr>> = jobs
        .iter()
        .enumerate()
        .map(|(index, job)| match &outcome {
            Ok(inserted) => Ok(job
                .rows
                .iter()
                .filter(|row| {
                    owner.get(row.event_id.as_str()) == Some(&index)
                        && inserted.contains(&row.event_id)
                })
                .count() as u64),
            Err(error) => Err(error.clone()),
        })
        .collect();
    for (job, result) in jobs.into_iter().zip(results) {
        // The client may have gone; its events are stored all the same and a retry dedupes them.
        let _ = job.reply.send(result);
    }
}

/// The group as one array per column, for `UNNEST`.
#[derive(Default)]
struct Columns {
    event_ids: Vec<String>,
    user_ids: Vec<String>,
    session_ids: Vec<Option<String>>,
    event_names: Vec<String>,
    timestamps: Vec<DateTime<Utc>>,
    received: Vec<DateTime<Utc>>,
    properties: Vec<String>,
    experiment_ids: Vec<Option<String>>,
    cohorts: Vec<Option<String>>,
}

impl Columns {
    fn push(&mut self, row: &EventRow, received_at: DateTime<Utc>) {
        self.event_ids.push(row.event_id.clone());
        self.user_ids.push(row.user_id.clone());
        self.session_ids.push(row.session_id.clone());
        self.event_names.push(row.event_name.clone());
        self.timestamps.push(row.timestamp);
        self.received.push(received_at);
        self.properties.push(row.properties.to_string());
        self.experiment_ids.push(row.experiment_id.clone());
        self.cohorts.push(row.cohort.clone());
    }

    /// Runs the statement; returns the ids that were new.
    async fn insert(self, db: &DatabaseConnection) -> Result<HashSet<String>, DbErr> {
        use sea_orm::sqlx::Row;
        let rows = sea_orm::sqlx::query(POSTGRES_INSERT)
            .bind(self.event_ids)
            .bind(self.user_ids)
            .bind(self.session_ids)
            .bind(self.event_names)
            .bind(self.timestamps)
            .bind(self.received)
            .bind(self.properties)
            .bind(self.experiment_ids)
            .bind(self.cohorts)
            .fetch_all(db.get_postgres_connection_pool())
            .await
            .map_err(|error| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error))))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(|error| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error))))
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
    // 100 rows × 10 columns stays far below SQLite's 32,766 bind parameters.
    let inserted = analytics_event::Entity::insert_many(models)
        .on_conflict_do_nothing_on([analytics_event::Column::EventId])
        .exec_without_returning(db)
        .await?;
    Ok(match inserted {
        sea_orm::TryInsertResult::Inserted(count) => count,
        sea_orm::TryInsertResult::Empty | sea_orm::TryInsertResult::Conflicted => 0,
    })
}
