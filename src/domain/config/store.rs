//! Config variants in the database. Stored configs are read as text and parsed row by row, so a
//! row that cannot be read (written by an older version, or edited by hand) is skipped with an
//! error in the log instead of failing every fetch of every user; and a write locks its row, so
//! concurrent writes to one variant queue up instead of failing. Every write also stores the new
//! version whole in `config_versions`, in the same transaction, for history and rollback.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Select,
    sea_query::Expr,
};
use serde_json::Value;

use super::{ConfigVariant, ConfigVersion, overlay};
use crate::{
    db::entities::{
        config_variant::{self, Column, Entity},
        config_version,
    },
    domain::{
        audit::{self, AuditRecord, EntityType},
        experiments::GLOBAL,
        validate,
    },
    error::{Error, Result},
};

/// What a write publishes beside the config: who, why, and which version it restores.
pub(super) struct Publication<'a> {
    pub actor: &'a str,
    /// The mutation or RPC name, for the audit log.
    pub action: &'a str,
    pub note: Option<String>,
    pub rolled_back_from: Option<i32>,
    /// Write only when the stored version is this one (0: the variant must not exist yet).
    pub expected_version: Option<i64>,
    /// Versions of the variant kept; older ones are pruned by the write.
    pub versions_kept: u32,
}

impl Publication<'_> {
    fn check(&self, stored_version: i32) -> Result<()> {
        match self.expected_version {
            Some(expected) if expected != i64::from(stored_version) => {
                Err(Error::Conflict(if stored_version == 0 {
                    format!(
                        "expectedVersion is {expected} but the variant does not exist yet \
                         (version 0); read it again before writing"
                    )
                } else {
                    format!(
                        "expectedVersion is {expected} but the stored version is \
                         {stored_version}; read it again before writing"
                    )
                }))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct StoredVariant {
    id: i64,
    experiment_id: String,
    cohort: String,
    config_text: String,
    version: i32,
    updated_at: DateTime<Utc>,
}

impl StoredVariant {
    fn config(&self) -> std::result::Result<Value, serde_json::Error> {
        serde_json::from_str(&self.config_text)
    }

    /// The variant, or `None` (logged) when its stored config cannot be read.
    fn readable(self) -> Option<ConfigVariant> {
        match self.config() {
            Ok(config) => Some(variant(
                self.experiment_id,
                self.cohort,
                config,
                self.version,
                self.updated_at,
            )),
            Err(error) => {
                tracing::error!(
                    experiment_id = %self.experiment_id,
                    cohort = %self.cohort,
                    %error,
                    "a stored config cannot be read; it is skipped until it is replaced"
                );
                None
            }
        }
    }
}

fn variant(
    experiment_id: String,
    cohort: String,
    config: Value,
    version: i32,
    updated_at: DateTime<Utc>,
) -> ConfigVariant {
    ConfigVariant {
        experiment_id: (experiment_id != GLOBAL).then_some(experiment_id),
        cohort,
        config,
        version: i64::from(version),
        updated_at,
    }
}

/// The columns of a variant, its config as text (both backends can cast JSON to text).
fn select() -> Select<Entity> {
    Entity::find()
        .select_only()
        .columns([
            Column::Id,
            Column::ExperimentId,
            Column::Cohort,
            Column::Version,
            Column::UpdatedAt,
        ])
        .column_as(Expr::cust("CAST(config_data AS TEXT)"), "config_text")
}

/// Every readable variant.
pub(super) async fn all(db: &impl ConnectionTrait) -> Result<Vec<ConfigVariant>> {
    let rows = select().into_model::<StoredVariant>().all(db).await?;
    Ok(rows
        .into_iter()
        .filter_map(StoredVariant::readable)
        .collect())
}

/// Every readable variant of the given experiments.
pub(super) async fn of_experiments(
    db: &impl ConnectionTrait,
    experiment_ids: &[String],
) -> Result<Vec<ConfigVariant>> {
    let rows = select()
        .filter(Column::ExperimentId.is_in(experiment_ids.iter().cloned()))
        .into_model::<StoredVariant>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(StoredVariant::readable)
        .collect())
}

/// The variant's row, locked until the transaction ends (PostgreSQL; SQLite has one writer).
async fn locked(
    db: &impl ConnectionTrait,
    experiment_id: &str,
    cohort: &str,
) -> Result<Option<StoredVariant>> {
    Ok(select()
        .filter(Column::ExperimentId.eq(experiment_id))
        .filter(Column::Cohort.eq(cohort))
        .lock_exclusive()
        .into_model::<StoredVariant>()
        .one(db)
        .await?)
}

/// Writes a config inside the caller's transaction: version 1 for a new variant, else the stored
/// version + 1, the row locked meanwhile so concurrent writers take turns and none is lost.
pub(super) async fn write(
    db: &impl ConnectionTrait,
    experiment_id: &str,
    cohort: &str,
    config: Value,
    merge: bool,
    publication: Publication<'_>,
) -> Result<ConfigVariant> {
    let now = validate::truncate_to_micros(Utc::now());
    let stored = match locked(db, experiment_id, cohort).await? {
        Some(stored) => stored,
        None => {
            publication.check(0)?;
            let row = config_variant::ActiveModel {
                id: NotSet,
                experiment_id: Set(experiment_id.to_owned()),
                cohort: Set(cohort.to_owned()),
                config_data: Set(config.clone()),
                version: Set(1),
                updated_at: Set(now),
            };
            let inserted = Entity::insert(row)
                .on_conflict_do_nothing_on([Column::ExperimentId, Column::Cohort])
                .exec_without_returning(db)
                .await?;
            if matches!(inserted, sea_orm::TryInsertResult::Inserted(1)) {
                record_version(db, experiment_id, cohort, 1, &config, now, &publication).await?;
                let after = Some(audit_state(1, Some(&config)));
                record_audit(db, experiment_id, cohort, now, &publication, None, after).await?;
                return Ok(variant(
                    experiment_id.to_owned(),
                    cohort.to_owned(),
                    config,
                    1,
                    now,
                ));
            }
            // Another writer created it meanwhile (the insert waited for it): queue behind it.
            locked(db, experiment_id, cohort).await?.ok_or_else(|| {
                tracing::error!("a config variant vanished while it was being written");
                Error::Internal
            })?
        }
    };
    publication.check(stored.version)?;
    // Parsed once: the merge builds on it and the audit entry shows it as `before`.
    let stored_config = stored.config().ok();
    let config = if merge {
        let mut merged = match stored_config.clone() {
            Some(Value::Object(stored)) => stored,
            Some(_) | None => {
                return Err(Error::invalid(
                    "merge",
                    "the stored config cannot be read, so nothing can be merged into it; \
                     replace it (merge: false)",
                ));
            }
        };
        overlay(&mut merged, &config);
        let merged = Value::Object(merged);
        validate::json_object(&merged, validate::MAX_CONFIG_BYTES)
            .map_err(|reason| Error::invalid("config", format!("merged result {reason}")))?;
        merged
    } else {
        config
    };
    let version = stored.version.checked_add(1).ok_or_else(|| {
        Error::invalid(
            "config",
            "this variant has reached the largest version number",
        )
    })?;
    Entity::update_many()
        .col_expr(Column::ConfigData, config.clone().into())
        .col_expr(Column::Version, version.into())
        .col_expr(Column::UpdatedAt, now.into())
        .filter(Column::Id.eq(stored.id))
        .exec(db)
        .await?;
    record_version(
        db,
        &stored.experiment_id,
        &stored.cohort,
        version,
        &config,
        now,
        &publication,
    )
    .await?;
    let before = Some(audit_state(stored.version, stored_config.as_ref()));
    let after = Some(audit_state(version, Some(&config)));
    record_audit(
        db,
        &stored.experiment_id,
        &stored.cohort,
        now,
        &publication,
        before,
        after,
    )
    .await?;
    Ok(variant(
        stored.experiment_id,
        stored.cohort,
        config,
        version,
        now,
    ))
}

/// Stores a published version and prunes the variant's versions beyond the ones kept.
async fn record_version(
    db: &impl ConnectionTrait,
    experiment_id: &str,
    cohort: &str,
    version: i32,
    config: &Value,
    now: DateTime<Utc>,
    publication: &Publication<'_>,
) -> Result<()> {
    let row = config_version::ActiveModel {
        id: NotSet,
        experiment_id: Set(experiment_id.to_owned()),
        cohort: Set(cohort.to_owned()),
        version: Set(version),
        config_data: Set(config.clone()),
        created_at: Set(now),
        actor: Set(publication.actor.to_owned()),
        note: Set(publication.note.clone()),
        rolled_back_from: Set(publication.rolled_back_from),
    };
    config_version::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    let oldest_kept = i64::from(version) - i64::from(publication.versions_kept) + 1;
    if oldest_kept > 1 {
        config_version::Entity::delete_many()
            .filter(config_version::Column::ExperimentId.eq(experiment_id))
            .filter(config_version::Column::Cohort.eq(cohort))
            .filter(config_version::Column::Version.lt(oldest_kept))
            .exec(db)
            .await?;
    }
    Ok(())
}

#[derive(Debug, FromQueryResult)]
struct StoredVersion {
    experiment_id: String,
    cohort: String,
    version: i32,
    config_text: String,
    created_at: DateTime<Utc>,
    actor: String,
    note: Option<String>,
    rolled_back_from: Option<i32>,
}

impl StoredVersion {
    /// The version, or `None` (logged) when its stored config cannot be read.
    fn readable(self) -> Option<ConfigVersion> {
        match serde_json::from_str(&self.config_text) {
            Ok(config) => Some(ConfigVersion {
                experiment_id: (self.experiment_id != GLOBAL).then_some(self.experiment_id),
                cohort: self.cohort,
                version: i64::from(self.version),
                config,
                created_at: self.created_at,
                actor: self.actor,
                note: self.note,
                rolled_back_from: self.rolled_back_from.map(i64::from),
            }),
            Err(error) => {
                tracing::error!(
                    experiment_id = %self.experiment_id,
                    cohort = %self.cohort,
                    version = self.version,
                    %error,
                    "a stored config version cannot be read; it is left out of the history"
                );
                None
            }
        }
    }
}

fn select_versions(experiment_id: &str, cohort: &str) -> Select<config_version::Entity> {
    use config_version::Column as C;
    config_version::Entity::find()
        .select_only()
        .columns([
            C::ExperimentId,
            C::Cohort,
            C::Version,
            C::CreatedAt,
            C::Actor,
            C::Note,
            C::RolledBackFrom,
        ])
        .column_as(Expr::cust("CAST(config_data AS TEXT)"), "config_text")
        .filter(C::ExperimentId.eq(experiment_id))
        .filter(C::Cohort.eq(cohort))
}

/// Up to `limit` kept versions of a variant below `before` (all when `None`), newest first.
pub(super) async fn versions(
    db: &impl ConnectionTrait,
    experiment_id: &str,
    cohort: &str,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<ConfigVersion>> {
    let mut query = select_versions(experiment_id, cohort);
    if let Some(before) = before {
        query = query.filter(config_version::Column::Version.lt(before));
    }
    let rows = query
        .order_by_desc(config_version::Column::Version)
        .limit(limit)
        .into_model::<StoredVersion>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(StoredVersion::readable)
        .collect())
}

/// One kept version of a variant, if it is kept and readable.
pub(super) async fn version(
    db: &impl ConnectionTrait,
    experiment_id: &str,
    cohort: &str,
    version: i64,
) -> Result<Option<ConfigVersion>> {
    let row = select_versions(experiment_id, cohort)
        .filter(config_version::Column::Version.eq(version))
        .into_model::<StoredVersion>()
        .one(db)
        .await?;
    Ok(row.and_then(StoredVersion::readable))
}

/// A variant as the audit log shows it (`config` is null when the stored one cannot be read).
fn audit_state(version: i32, config: Option<&Value>) -> Value {
    serde_json::json!({"version": version, "config": config})
}

async fn record_audit(
    db: &impl ConnectionTrait,
    experiment_id: &str,
    cohort: &str,
    now: DateTime<Utc>,
    publication: &Publication<'_>,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<()> {
    let record = AuditRecord {
        actor: publication.actor,
        action: publication.action,
        entity_type: EntityType::Config,
        entity_id: format!("{experiment_id}/{cohort}"),
        before,
        after,
    };
    audit::record(db, now, record).await
}
