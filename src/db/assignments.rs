//! First assignments, stored in groups. A launch brings many new players at once and each first
//! fetch stores an assignment; committed one by one they are bounded by the commit rate. Here every
//! request queues its (user, experiment, drawn cohort) and the writer task takes whatever is queued
//! and stores it with one multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING`, then reads back in
//! one SELECT the rows of the keys that were stored before (none, for new players). No one waits on a timer: requests that arrive while a group is being
//! written form the next group. Each waiter is answered only after its row is committed, with the
//! row that is stored (its own, or the one a concurrent request stored first).

use std::sync::Arc;

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    RuntimeErr, TryInsertResult,
    sqlx::{Postgres, Row, pool::PoolConnection},
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    db::{
        Backend, WriteGate,
        clickhouse::{AssignmentCopy, ClickHouseEvents},
        entities::user_experiment_assignment::{ActiveModel, Column, Entity, Model},
    },
    domain::validate,
};

/// Most rows in one group: 64 × 4 bind parameters stays far below every backend's limit.
const MAX_GROUP: usize = 64;
/// Requests queued at most; beyond it a request waits for room (back-pressure, not loss).
const QUEUE: usize = 4_096;
/// How long the writer keeps its connection without a group to store.
const KEEP_CONNECTION_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a group could not be stored; shared by every waiter of the group.
pub type WriteError = Arc<DbErr>;

struct Pending {
    user_id: String,
    experiment_id: String,
    cohort: String,
    reply: oneshot::Sender<Result<Model, WriteError>>,
}

/// Queues first assignments for the writer tasks.
#[derive(Clone)]
pub struct AssignmentWriter {
    queue: mpsc::Sender<Pending>,
}

impl AssignmentWriter {
    /// Starts the writer task. One writer gives the largest groups: on PostgreSQL with 32 clients
    /// of new players, 1 writer stored 10.0k/s, 2 writers 9.5k/s, 4 writers 7.5k/s, 16 writers
    /// 5.2k/s (bench/run.py, same machine and day); measured again once the read-back was left to
    /// RETURNING: 1 writer 16.0k/s, 2 writers 15.0k/s, 3 writers 13.9k/s. SQLite has one writer
    /// anyway.
    /// `copies`: where stored assignments are copied too (a ClickHouse events store).
    pub fn start(
        db: DatabaseConnection,
        writes: WriteGate,
        copies: Option<Arc<ClickHouseEvents>>,
    ) -> Self {
        let (queue, mut receiver) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let mut connection = HeldConnection::default();
            while let Some(group) = next_group(&mut receiver, &mut connection).await {
                store(&db, &mut connection, &writes, copies.as_deref(), group).await;
            }
        });
        AssignmentWriter { queue }
    }

    /// The stored assignment of `user_id` in `experiment_id`: `cohort` if none was stored before,
    /// else the stored one. Returns once that row is committed.
    pub async fn assign(
        &self,
        user_id: &str,
        experiment_id: &str,
        cohort: &str,
    ) -> Result<Model, WriteError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            user_id: user_id.to_owned(),
            experiment_id: experiment_id.to_owned(),
            cohort: cohort.to_owned(),
            reply,
        };
        let stopped = || {
            Arc::new(DbErr::Custom(
                "the assignment writer has stopped".to_owned(),
            ))
        };
        self.queue.send(pending).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Everything queued right now, up to a group; waits only for the first, giving the held
/// connection back if none comes for a while.
async fn next_group(
    receiver: &mut mpsc::Receiver<Pending>,
    connection: &mut HeldConnection,
) -> Option<Vec<Pending>> {
    let first = match receiver.try_recv() {
        Ok(pending) => pending,
        Err(mpsc::error::TryRecvError::Disconnected) => return None,
        Err(mpsc::error::TryRecvError::Empty) => {
            match tokio::time::timeout(KEEP_CONNECTION_IDLE, receiver.recv()).await {
                Ok(first) => first?,
                Err(_) => {
                    connection.release();
                    receiver.recv().await?
                }
            }
        }
    };
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(pending) => group.push(pending),
            Err(_) => break,
        }
    }
    Some(group)
}

/// The writer's PostgreSQL connection, kept from one group to the next while groups keep coming:
/// sqlx pings every connection given back to its pool, a round trip per group (2.4 % of the
/// server's samples under new players). Given back after [`KEEP_CONNECTION_IDLE`] without a
/// group and after an error (the pool then tests it and replaces it if broken); never kept from a
/// pool of one connection, whose other users would wait as long as new players kept arriving.
#[derive(Default)]
struct HeldConnection(Option<PoolConnection<Postgres>>);

impl HeldConnection {
    fn keep(&mut self, connection: PoolConnection<Postgres>, db: &DatabaseConnection) {
        let pool = db.get_postgres_connection_pool();
        if pool.options().get_max_connections() > 1 {
            self.0 = Some(connection);
        }
    }

    fn release(&mut self) {
        self.0 = None;
    }

    async fn take(&mut self, db: &DatabaseConnection) -> Result<PoolConnection<Postgres>, DbErr> {
        match self.0.take() {
            Some(connection) => Ok(connection),
            None => db
                .get_postgres_connection_pool()
                .acquire()
                .await
                .map_err(|error| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error)))),
        }
    }
}

async fn store(
    db: &DatabaseConnection,
    connection: &mut HeldConnection,
    writes: &WriteGate,
    copies: Option<&ClickHouseEvents>,
    group: Vec<Pending>,
) {
    let outcome = {
        let _turn = writes.enter().await;
        insert_then_read(db, connection, &group).await
    };
    match outcome {
        Ok(Stored {
            rows: stored,
            created,
        }) => {
            if let Some(copies) = copies {
                copy_assignments(copies, &stored).await;
            }
            for pending in group {
                let row = stored
                    .iter()
                    .find(|row| {
                        row.user_id == pending.user_id && row.experiment_id == pending.experiment_id
                    })
                    .cloned()
                    .ok_or_else(|| {
                        tracing::error!("an assignment row is missing right after it was written");
                        Arc::new(DbErr::RecordNotFound("assignment".to_owned()))
                    });
                let _ = pending.reply.send(row);
            }
            // After the replies: nobody waits on the metrics.
            count_created(&stored[..created]);
        }
        Err(error) => {
            let error = Arc::new(error);
            for pending in group {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Copies stored assignments to ClickHouse before their requests are answered, so results there
/// see every assignment a client was told of. A failed copy does not fail the requests (the
/// assignment is stored): it is logged, and `octp-backend events backfill` copies what is missing.
pub async fn copy_assignments(copies: &ClickHouseEvents, stored: &[Model]) {
    let rows = copies_of(stored);
    let copied = tokio::time::timeout(COPY_TIMEOUT, copies.copy_assignments(&rows)).await;
    let problem = match copied {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {} s", COPY_TIMEOUT.as_secs()),
    };
    tracing::error!(
        assignments = rows.len(),
        %problem,
        "assignments could not be copied to ClickHouse; results there miss them until `octp-backend events backfill` runs"
    );
}

/// Copies every stored assignment to ClickHouse, in id order and pages of [`BACKFILL_PAGE`];
/// returns how many. Rows written meanwhile are copied by their writer.
pub async fn backfill(db: &DatabaseConnection, copies: &ClickHouseEvents) -> anyhow::Result<u64> {
    use sea_orm::{QueryOrder, QuerySelect};
    let mut after = i64::MIN;
    let mut copied = 0;
    loop {
        let page = Entity::find()
            .filter(Column::Id.gt(after))
            .order_by_asc(Column::Id)
            .limit(BACKFILL_PAGE)
            .all(db)
            .await?;
        let Some(last) = page.last() else {
            return Ok(copied);
        };
        after = last.id;
        let rows = copies_of(&page);
        copies.copy_assignments(&rows).await?;
        copied += rows.len() as u64;
    }
}

const BACKFILL_PAGE: u64 = 10_000;

fn copies_of(rows: &[Model]) -> Vec<AssignmentCopy<'_>> {
    rows.iter()
        .map(|row| AssignmentCopy {
            user_id: &row.user_id,
            experiment_id: &row.experiment_id,
            cohort: &row.cohort,
            assigned_at: row.assigned_at,
        })
        .collect()
}

/// The longest a group of first assignments waits for its copy to ClickHouse.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A group's stored rows, those this group inserted first.
struct Stored {
    rows: Vec<Model>,
    created: usize,
}

/// One INSERT for the group (rows already stored are left alone), one SELECT of every key.
async fn insert_then_read(
    db: &DatabaseConnection,
    connection: &mut HeldConnection,
    group: &[Pending],
) -> Result<Stored, DbErr> {
    let now = validate::truncate_to_micros(chrono::Utc::now());
    // One row per key (the first request's cohort), sorted: keys take their index locks in one
    // order, so groups from several instances cannot deadlock.
    let mut keys: Vec<(&str, &str, &str)> = group
        .iter()
        .map(|pending| {
            (
                pending.user_id.as_str(),
                pending.experiment_id.as_str(),
                pending.cohort.as_str(),
            )
        })
        .collect();
    keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    keys.dedup_by(|later, first| (later.0, later.1) == (first.0, first.1));
    // RETURNING names the rows this group inserted, which for new players is all of them: only keys
    // stored earlier (by another request or instance) need the second round trip.
    let mut stored = if Backend::of(db) == Backend::Postgres {
        insert_postgres(db, connection, &keys, now).await?
    } else {
        let rows = keys
            .iter()
            .map(|(user_id, experiment_id, cohort)| ActiveModel {
                id: NotSet,
                user_id: Set((*user_id).to_owned()),
                experiment_id: Set((*experiment_id).to_owned()),
                cohort: Set((*cohort).to_owned()),
                assigned_at: Set(now),
            });
        let insert = Entity::insert_many(rows)
            .on_conflict_do_nothing_on([Column::UserId, Column::ExperimentId]);
        if !db.support_returning() {
            insert.exec_without_returning(db).await?;
            let (mut rows, earlier): (Vec<Model>, Vec<Model>) = read_stored(db, &keys)
                .await?
                .into_iter()
                .partition(|row| row.assigned_at == now);
            let created = rows.len();
            rows.extend(earlier);
            return Ok(Stored { rows, created });
        }
        match insert.exec_with_returning_many(db).await? {
            TryInsertResult::Inserted(rows) => rows,
            TryInsertResult::Conflicted | TryInsertResult::Empty => Vec::new(),
        }
    };
    let created = stored.len();
    let existing: Vec<_> = keys
        .iter()
        .filter(|(user_id, experiment_id, _)| {
            !stored
                .iter()
                .any(|row| row.user_id == *user_id && row.experiment_id == *experiment_id)
        })
        .copied()
        .collect();
    if !existing.is_empty() {
        stored.extend(read_stored(db, &existing).await?);
    }
    Ok(Stored {
        rows: stored,
        created,
    })
}

/// Counts rows this group inserted, per experiment (experiment ids are a set admins made): one
/// registry lookup per experiment in the group, not per row.
fn count_created(inserted: &[Model]) {
    let mut per_experiment: Vec<(&str, u64)> = Vec::new();
    for row in inserted {
        match per_experiment
            .iter_mut()
            .find(|(experiment, _)| *experiment == row.experiment_id)
        {
            Some((_, count)) => *count += 1,
            None => per_experiment.push((&row.experiment_id, 1)),
        }
    }
    for (experiment, count) in per_experiment {
        metrics::counter!(
            crate::telemetry::ASSIGNMENTS_CREATED,
            "experiment" => experiment.to_owned()
        )
        .increment(count);
    }
}

/// PostgreSQL: the group as three arrays in one statement whose text never changes, so each
/// connection prepares it once and binds 3 arrays instead of a statement per group size with 4
/// parameters per row.
const POSTGRES_INSERT: &str = "INSERT INTO user_experiment_assignments (user_id, experiment_id, cohort, assigned_at) \
     SELECT user_id, experiment_id, cohort, $4 \
     FROM UNNEST($1::text[], $2::text[], $3::text[]) AS group_rows (user_id, experiment_id, cohort) \
     ON CONFLICT (user_id, experiment_id) DO NOTHING \
     RETURNING id, user_id, experiment_id, cohort, assigned_at";

async fn insert_postgres(
    db: &DatabaseConnection,
    held: &mut HeldConnection,
    keys: &[(&str, &str, &str)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Model>, DbErr> {
    let mut user_ids = Vec::with_capacity(keys.len());
    let mut experiment_ids = Vec::with_capacity(keys.len());
    let mut cohorts = Vec::with_capacity(keys.len());
    for (user_id, experiment_id, cohort) in keys {
        user_ids.push(*user_id);
        experiment_ids.push(*experiment_id);
        cohorts.push(*cohort);
    }
    let mut connection = held.take(db).await?;
    let rows = sea_orm::sqlx::query(POSTGRES_INSERT)
        .bind(user_ids)
        .bind(experiment_ids)
        .bind(cohorts)
        .bind(now)
        .fetch_all(&mut *connection)
        .await
        .map_err(|error| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error))))?;
    held.keep(connection, db);
    rows.iter()
        .map(|row| {
            let read = |error| DbErr::Query(RuntimeErr::SqlxError(Arc::new(error)));
            Ok(Model {
                id: row.try_get("id").map_err(read)?,
                user_id: row.try_get("user_id").map_err(read)?,
                experiment_id: row.try_get("experiment_id").map_err(read)?,
                cohort: row.try_get("cohort").map_err(read)?,
                assigned_at: row.try_get("assigned_at").map_err(read)?,
            })
        })
        .collect()
}

async fn read_stored(
    db: &DatabaseConnection,
    keys: &[(&str, &str, &str)],
) -> Result<Vec<Model>, DbErr> {
    let mut stored = Condition::any();
    for (user_id, experiment_id, _) in keys {
        stored = stored.add(
            Condition::all()
                .add(Column::UserId.eq(*user_id))
                .add(Column::ExperimentId.eq(*experiment_id)),
        );
    }
    Entity::find().filter(stored).all(db).await
}
