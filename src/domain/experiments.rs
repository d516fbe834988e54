//! A/B experiments: definitions, the computed "active" state, and sticky cohort assignments.
//! Definitions and assignments are cached; a write on this instance invalidates at once.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use moka::future::Cache;
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
    sea_query::OnConflict,
};

use crate::{
    auth::Role,
    db::{
        WriteGate,
        assignments::AssignmentWriter,
        clickhouse::ClickHouseEvents,
        entities::{experiment_change, experiment_metadata, user_experiment_assignment},
        notify,
    },
    domain::{
        assignment::{self, CohortWeights},
        audit::{self, AuditRecord, EntityType},
        cache::BoundedCache,
        changes::Changes,
        ids::{Slug, UserId},
        metrics::{self, Metric},
        validate::{self, TimestampValue},
    },
    error::{Error, FieldErrors, Result},
};

/// The experiment id reserved for the global default config.
pub const GLOBAL: &str = "global";
/// What a cache entry costs beyond its strings: the cache's own node, the key and value structs,
/// the `Arc` and allocator rounding: set so that RSS grows about as the budget allows (measured
/// with new players at --cache-memory-mb 16 and 64; at 192 the caches took twice their budget).
pub const ENTRY_OVERHEAD_BYTES: usize = 400;
/// Whether an upserted experiment is switched on when the input does not say.
pub const DEFAULT_ACTIVE: bool = true;
const MAX_DESCRIPTION_CHARS: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub cohorts: CohortWeights,
    pub salt: String,
    /// The stored flag; see [`Experiment::is_live`] for the computed state.
    pub active: bool,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What `experimentResults` analyses when the query names no metrics.
    pub metrics: Vec<Metric>,
}

impl Experiment {
    /// Active flag set and `now` inside the [start, end) window.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.active
            && self.start_at.is_none_or(|start| now >= start)
            && self.end_at.is_none_or(|end| now < end)
    }
}

/// Database collations may differ from byte order; the contract wants byte order.
fn in_byte_order(mut experiments: Vec<Arc<Experiment>>) -> Vec<Arc<Experiment>> {
    experiments.sort_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
    experiments
}

impl From<experiment_metadata::Model> for Experiment {
    fn from(model: experiment_metadata::Model) -> Self {
        Experiment {
            cohorts: CohortWeights::from_stored(&model.cohorts),
            id: model.experiment_id,
            name: model.name,
            description: model.description,
            salt: model.salt,
            active: model.is_active,
            start_at: model.start_at,
            end_at: model.end_at,
            created_at: model.created_at,
            updated_at: model.updated_at,
            metrics: metrics::from_stored(&model.metrics),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub user_id: String,
    pub experiment_id: String,
    pub cohort: String,
    pub assigned_at: DateTime<Utc>,
}

impl From<user_experiment_assignment::Model> for Assignment {
    fn from(model: user_experiment_assignment::Model) -> Self {
        Assignment {
            user_id: model.user_id,
            experiment_id: model.experiment_id,
            cohort: model.cohort,
            assigned_at: model.assigned_at,
        }
    }
}

/// `upsertExperiment` input as the client sent it.
#[derive(Debug, Clone)]
pub struct ExperimentInput {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub cohorts: serde_json::Value,
    /// Absent: [`DEFAULT_ACTIVE`].
    pub active: Option<bool>,
    pub start_at: Option<TimestampValue>,
    pub end_at: Option<TimestampValue>,
    pub salt: Option<String>,
    /// Absent: the saved metrics are kept (none for a new experiment).
    pub metrics: Option<Vec<Metric>>,
}

/// How long a cached assignment is served before it is read from the database again, so that a
/// row changed by hand is seen in time. The read goes through the group writer (the insert finds
/// the row and leaves it alone): one row in a group per active player every ten minutes.
const ASSIGNMENT_TRUSTED_FOR: Duration = Duration::from_secs(600);

/// The assignment cache's key.
#[derive(PartialEq, Eq, Hash)]
struct AssignmentKey {
    user_id: String,
    experiment_id: String,
}

/// [`AssignmentKey`] borrowed, so a hit allocates nothing. Hashes as the owned key does: both
/// hash their two strings in the same order.
#[derive(Hash)]
struct AssignmentKeyRef<'a> {
    user_id: &'a str,
    experiment_id: &'a str,
}

impl quick_cache::Equivalent<AssignmentKey> for AssignmentKeyRef<'_> {
    fn equivalent(&self, key: &AssignmentKey) -> bool {
        self.user_id == key.user_id && self.experiment_id == key.experiment_id
    }
}

#[derive(Clone)]
pub struct ExperimentService {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    writes: WriteGate,
    /// Where assignments are copied for results next to the events (a ClickHouse events store).
    assignment_copies: Option<Arc<ClickHouseEvents>>,
    /// Experiment id → definition (None: no such experiment).
    definitions: Cache<String, Option<Arc<Experiment>>>,
    /// Every stored experiment, for the active list and the merged config.
    all: Cache<(), Arc<Vec<Arc<Experiment>>>>,
    /// (user, experiment) → assignment, and when it was read from the database. Assignments are
    /// sticky, so a hit stays right as long as its cohort still exists, which is checked on every
    /// read.
    assignments: BoundedCache<AssignmentKey, (Arc<Assignment>, Instant)>,
    /// Stores first assignments in groups.
    first_assignments: AssignmentWriter,
    changes: Changes,
}

impl ExperimentService {
    pub fn new(
        db: DatabaseConnection,
        writes: WriteGate,
        changes: Changes,
        ttl: Duration,
        assignment_bytes: u64,
        assignment_copies: Option<Arc<ClickHouseEvents>>,
    ) -> Self {
        ExperimentService {
            inner: Arc::new(Inner {
                first_assignments: AssignmentWriter::start(
                    db.clone(),
                    writes.clone(),
                    assignment_copies.clone(),
                ),
                assignment_copies,
                db,
                writes,
                changes,
                definitions: Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(ttl)
                    .build(),
                all: Cache::builder().max_capacity(1).time_to_live(ttl).build(),
                assignments: BoundedCache::new(
                    assignment_bytes,
                    ENTRY_OVERHEAD_BYTES + 64,
                    |key: &AssignmentKey, (assignment, _): &(Arc<Assignment>, Instant)| {
                        ENTRY_OVERHEAD_BYTES
                            + key.user_id.len()
                            + key.experiment_id.len()
                            + assignment.user_id.len()
                            + assignment.experiment_id.len()
                            + assignment.cohort.len()
                    },
                ),
            }),
        }
    }

    /// After a write here or on another instance: this service's caches and everything derived
    /// from experiments are stale.
    pub(crate) fn invalidate(&self) {
        self.inner.definitions.invalidate_all();
        self.inner.all.invalidate_all();
        self.inner.changes.record();
    }

    /// Any experiment by id, whatever its state (admin key).
    pub async fn definition(&self, caller: Role, id: &str) -> Result<Option<Arc<Experiment>>> {
        caller.require_admin()?;
        let id = Slug::parse("id", id)?;
        self.get(&id).await
    }

    /// An experiment by id, whatever its state.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Arc<Experiment>>> {
        let db = self.inner.db.clone();
        let key = id.to_owned();
        self.inner
            .definitions
            .try_get_with(key.clone(), async move {
                let model = experiment_metadata::Entity::find_by_id(key)
                    .one(&db)
                    .await?;
                Ok::<_, Error>(model.map(|model| Arc::new(Experiment::from(model))))
            })
            .await
            .map_err(crate::error::unwrap_shared)
    }

    /// Experiments by id, for batch loading; unknown ids are absent from the map.
    pub async fn get_many(&self, ids: &[String]) -> Result<HashMap<String, Arc<Experiment>>> {
        let models = experiment_metadata::Entity::find()
            .filter(experiment_metadata::Column::ExperimentId.is_in(ids.iter().cloned()))
            .all(&self.inner.db)
            .await?;
        Ok(models
            .into_iter()
            .map(|model| {
                (
                    model.experiment_id.clone(),
                    Arc::new(Experiment::from(model)),
                )
            })
            .collect())
    }

    async fn all(&self) -> Result<Arc<Vec<Arc<Experiment>>>> {
        let db = self.inner.db.clone();
        self.inner
            .all
            .try_get_with((), async move {
                let models = experiment_metadata::Entity::find()
                    .order_by_asc(experiment_metadata::Column::ExperimentId)
                    .all(&db)
                    .await?;
                Ok::<_, Error>(Arc::new(
                    models
                        .into_iter()
                        .map(|model| Arc::new(Experiment::from(model)))
                        .collect(),
                ))
            })
            .await
            .map_err(crate::error::unwrap_shared)
    }

    /// Experiments active now, in byte order of their ids.
    pub async fn active(&self) -> Result<Vec<Arc<Experiment>>> {
        let now = Utc::now();
        Ok(in_byte_order(
            self.all()
                .await?
                .iter()
                .filter(|experiment| experiment.is_live(now))
                .cloned()
                .collect(),
        ))
    }

    /// Every experiment, whatever its state, in byte order of their ids (admin key).
    pub async fn list(&self, caller: Role) -> Result<Vec<Arc<Experiment>>> {
        caller.require_admin()?;
        Ok(in_byte_order(self.all().await?.to_vec()))
    }

    /// An active experiment, or `NOT_FOUND`.
    async fn live(&self, id: &Slug) -> Result<Arc<Experiment>> {
        match self.get(id).await? {
            Some(experiment) if experiment.is_live(Utc::now()) => Ok(experiment),
            _ => Err(Error::NotFound(format!(
                "experiment not found or not active: {id}"
            ))),
        }
    }

    /// The user's cohort in an active experiment: the stored one, or a new deterministic draw
    /// when none is stored or the stored cohort was removed from the experiment.
    #[tracing::instrument(skip_all, fields(user_id = %user_id, experiment_id = %experiment_id))]
    pub async fn assignment(
        &self,
        user_id: &UserId,
        experiment_id: &Slug,
    ) -> Result<Arc<Assignment>> {
        let experiment = self.live(experiment_id).await?;
        self.assign(user_id, &experiment).await
    }

    /// As [`ExperimentService::assignment`], for an experiment already known to be active.
    pub async fn assign(
        &self,
        user_id: &UserId,
        experiment: &Experiment,
    ) -> Result<Arc<Assignment>> {
        let key = AssignmentKeyRef {
            user_id,
            experiment_id: &experiment.id,
        };
        if let Some((cached, cached_at)) = self.inner.assignments.get(&key)
            && cached_at.elapsed() < ASSIGNMENT_TRUSTED_FOR
            && experiment.cohorts.contains(&cached.cohort)
        {
            return Ok(cached);
        }
        let assignment = Arc::new(self.assign_in_database(user_id, experiment).await?);
        self.inner.assignments.insert(
            AssignmentKey {
                user_id: user_id.to_string(),
                experiment_id: experiment.id.clone(),
            },
            (assignment.clone(), Instant::now()),
        );
        Ok(assignment)
    }

    async fn assign_in_database(
        &self,
        user_id: &UserId,
        experiment: &Experiment,
    ) -> Result<Assignment> {
        let drawn = assignment::assign(&experiment.salt, user_id, &experiment.cohorts);
        // Concurrent first requests of one user race here; the unique (user, experiment) index
        // keeps the first stored row, and every request gets that row back.
        let stored = self
            .inner
            .first_assignments
            .assign(user_id, &experiment.id, drawn)
            .await
            .map_err(|error| Error::from(error.as_ref()))?;
        if experiment.cohorts.contains(&stored.cohort) {
            return Ok(stored.into());
        }
        // Its cohort was removed: draw again. The update is conditional on the old cohort, so
        // concurrent reassignments settle on one row.
        let db = &self.inner.db;
        {
            let _turn = self.inner.writes.enter().await;
            user_experiment_assignment::Entity::update_many()
                .col_expr(user_experiment_assignment::Column::Cohort, drawn.into())
                .col_expr(
                    user_experiment_assignment::Column::AssignedAt,
                    validate::truncate_to_micros(Utc::now()).into(),
                )
                .filter(user_experiment_assignment::Column::Id.eq(stored.id))
                .filter(user_experiment_assignment::Column::Cohort.eq(stored.cohort))
                .exec(db)
                .await?;
        }
        let reassigned = find_assignment(db, user_id, &experiment.id)
            .await?
            .ok_or_else(|| {
                tracing::error!("assignment row missing right after it was written");
                Error::Internal
            })?;
        if let Some(copies) = &self.inner.assignment_copies {
            crate::db::assignments::copy_assignments(copies, std::slice::from_ref(&reassigned))
                .await;
        }
        Ok(reassigned.into())
    }

    /// Creates or replaces an experiment. Without `salt`, a stored salt is kept (a new experiment's
    /// salt is its id).
    #[tracing::instrument(skip_all, fields(experiment_id = %input.id))]
    pub async fn upsert(
        &self,
        caller: Role,
        action: &'static str,
        input: ExperimentInput,
    ) -> Result<Arc<Experiment>> {
        caller.require_admin()?;
        let valid = validate_experiment(&input)?;
        let now = validate::truncate_to_micros(Utc::now());
        let row = experiment_metadata::ActiveModel {
            experiment_id: Set(input.id.clone()),
            name: Set(input.name),
            description: Set(input.description),
            cohorts: Set(valid.cohorts.to_json()),
            salt: Set(input.salt.clone().unwrap_or_else(|| input.id.clone())),
            is_active: Set(input.active.unwrap_or(DEFAULT_ACTIVE)),
            start_at: Set(valid.start_at),
            end_at: Set(valid.end_at),
            created_at: Set(now),
            updated_at: Set(now),
            metrics: Set(metrics::to_stored(
                input.metrics.as_deref().unwrap_or_default(),
            )),
        };
        let mut update = vec![
            experiment_metadata::Column::Name,
            experiment_metadata::Column::Description,
            experiment_metadata::Column::Cohorts,
            experiment_metadata::Column::IsActive,
            experiment_metadata::Column::StartAt,
            experiment_metadata::Column::EndAt,
            experiment_metadata::Column::UpdatedAt,
        ];
        if input.salt.is_some() {
            update.push(experiment_metadata::Column::Salt);
        }
        if input.metrics.is_some() {
            update.push(experiment_metadata::Column::Metrics);
        }
        let turn = self.inner.writes.enter().await;
        let transaction = self.inner.db.begin().await?;
        let before = locked_experiment(&transaction, &input.id).await?;
        experiment_metadata::Entity::insert(row)
            .on_conflict(
                OnConflict::column(experiment_metadata::Column::ExperimentId)
                    .update_columns(update)
                    .to_owned(),
            )
            .exec_without_returning(&transaction)
            .await?;
        let after = record_change(&transaction, caller, action, &input.id, before, now).await?;
        notify::announce_change(&transaction, self.inner.changes.origin()).await?;
        transaction.commit().await?;
        drop(turn);
        self.invalidate();
        Ok(Arc::new(Experiment::from(after)))
    }

    /// Sets the stored active flag (admin key).
    pub async fn set_active(
        &self,
        caller: Role,
        action: &'static str,
        id: &str,
        active: bool,
    ) -> Result<Arc<Experiment>> {
        caller.require_admin()?;
        let id = Slug::parse("id", id)?;
        let now = validate::truncate_to_micros(Utc::now());
        let turn = self.inner.writes.enter().await;
        let transaction = self.inner.db.begin().await?;
        let Some(before) = locked_experiment(&transaction, &id).await? else {
            return Err(Error::NotFound(format!("experiment not found: {id}")));
        };
        experiment_metadata::Entity::update_many()
            .col_expr(experiment_metadata::Column::IsActive, active.into())
            .col_expr(experiment_metadata::Column::UpdatedAt, now.into())
            .filter(experiment_metadata::Column::ExperimentId.eq(id.as_ref()))
            .exec(&transaction)
            .await?;
        let after = record_change(&transaction, caller, action, &id, Some(before), now).await?;
        notify::announce_change(&transaction, self.inner.changes.origin()).await?;
        transaction.commit().await?;
        drop(turn);
        self.invalidate();
        Ok(Arc::new(Experiment::from(after)))
    }

    /// Every recorded state of an experiment, oldest first (admin key). The cohort weights of
    /// consecutive changes delimit the phases results are analysed in.
    pub async fn history(&self, caller: Role, id: &str) -> Result<Vec<ExperimentChange>> {
        caller.require_admin()?;
        let rows = experiment_change::Entity::find()
            .filter(experiment_change::Column::ExperimentId.eq(id))
            .order_by_asc(experiment_change::Column::Id)
            .all(&self.inner.db)
            .await?;
        Ok(rows.into_iter().map(ExperimentChange::from).collect())
    }
}

/// An experiment's recorded state: what assignment and analysis depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentChange {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub cohorts: CohortWeights,
    pub salt: String,
    pub active: bool,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
}

impl From<experiment_change::Model> for ExperimentChange {
    fn from(model: experiment_change::Model) -> Self {
        ExperimentChange {
            at: model.at,
            actor: model.actor,
            cohorts: CohortWeights::from_stored(&model.cohorts),
            salt: model.salt,
            active: model.is_active,
            start_at: model.start_at,
            end_at: model.end_at,
        }
    }
}

/// The experiment's row, locked until the transaction ends (PostgreSQL; SQLite has one writer).
async fn locked_experiment(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<experiment_metadata::Model>> {
    Ok(experiment_metadata::Entity::find_by_id(id)
        .lock_exclusive()
        .one(db)
        .await?)
}

/// After a write inside `db`'s transaction: an experiment change when the state that assignment
/// and analysis depend on moved (or the experiment is new), and an audit entry in any case.
/// Returns the stored row, which is what the write answers with.
async fn record_change(
    db: &impl ConnectionTrait,
    caller: Role,
    action: &str,
    id: &str,
    before: Option<experiment_metadata::Model>,
    now: DateTime<Utc>,
) -> Result<experiment_metadata::Model> {
    let after = experiment_metadata::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| {
            tracing::error!(experiment_id = %id, "an experiment vanished while it was being written");
            Error::Internal
        })?;
    let state = |model: &experiment_metadata::Model| {
        (
            CohortWeights::from_stored(&model.cohorts),
            model.salt.clone(),
            model.is_active,
            model.start_at,
            model.end_at,
        )
    };
    if before.as_ref().map(state) != Some(state(&after)) {
        experiment_change::ActiveModel {
            id: NotSet,
            experiment_id: Set(after.experiment_id.clone()),
            at: Set(now),
            actor: Set(caller.actor().to_owned()),
            cohorts: Set(after.cohorts.clone()),
            salt: Set(after.salt.clone()),
            is_active: Set(after.is_active),
            start_at: Set(after.start_at),
            end_at: Set(after.end_at),
        }
        .insert(db)
        .await?;
    }
    let record = AuditRecord {
        actor: caller.actor(),
        action,
        entity_type: EntityType::Experiment,
        entity_id: id.to_owned(),
        before: before.as_ref().map(audit_state),
        after: Some(audit_state(&after)),
    };
    audit::record(db, now, record).await?;
    Ok(after)
}

/// An experiment as the audit log shows it.
fn audit_state(model: &experiment_metadata::Model) -> serde_json::Value {
    serde_json::json!({
        "id": model.experiment_id,
        "name": model.name,
        "description": model.description,
        "cohorts": model.cohorts,
        "salt": model.salt,
        "active": model.is_active,
        "startAt": model.start_at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "endAt": model.end_at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "metrics": model.metrics,
    })
}

async fn find_assignment(
    db: &DatabaseConnection,
    user_id: &UserId,
    experiment_id: &str,
) -> Result<Option<user_experiment_assignment::Model>> {
    Ok(user_experiment_assignment::Entity::find()
        .filter(user_experiment_assignment::Column::UserId.eq(user_id.as_ref()))
        .filter(user_experiment_assignment::Column::ExperimentId.eq(experiment_id))
        .one(db)
        .await?)
}

struct ValidExperiment {
    cohorts: CohortWeights,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
}

fn validate_experiment(input: &ExperimentInput) -> Result<ValidExperiment> {
    let mut errors = FieldErrors::default();
    errors.check("id", validate::slug(&input.id));
    if input.id == GLOBAL {
        errors.check::<()>(
            "id",
            Err(format!(
                "{GLOBAL:?} is reserved for the global default config"
            )),
        );
    }
    errors.check("name", validate::printable_text(&input.name));
    if let Some(description) = &input.description {
        errors.check("description", validate::free_text(description));
        let chars = description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            errors.check::<()>(
                "description",
                Err(format!(
                    "must be at most {MAX_DESCRIPTION_CHARS} characters (got {chars})"
                )),
            );
        }
    }
    if let Some(salt) = &input.salt {
        errors.check("salt", validate::slug(salt));
    }
    let cohorts = errors.check("cohorts", CohortWeights::parse(&input.cohorts));
    if let Some(listed) = &input.metrics
        && let Err(problems) = metrics::parse_metrics("metrics", listed, 0)
    {
        errors.extend(problems);
    }
    let (start_at, end_at) = errors.time_range(
        ("startAt", input.start_at.as_ref()),
        ("endAt", input.end_at.as_ref()),
    );
    errors.into_result()?;
    Ok(ValidExperiment {
        cohorts: cohorts.ok_or(Error::Internal)?,
        start_at,
        end_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_cached_under_its_owned_key_is_found_by_the_borrowed_one() {
        let cache = BoundedCache::new(1 << 20, 100, |_: &AssignmentKey, _: &u8| 100);
        cache.insert(
            AssignmentKey {
                user_id: "player-1".to_owned(),
                experiment_id: "exp_a".to_owned(),
            },
            7,
        );
        let found = |user_id, experiment_id| {
            cache.get(&AssignmentKeyRef {
                user_id,
                experiment_id,
            })
        };
        assert_eq!(found("player-1", "exp_a"), Some(7));
        assert_eq!(found("player-1", "exp_b"), None);
        // The boundary between the two strings is part of the key.
        assert_eq!(found("player-1e", "xp_a"), None);
    }
}
