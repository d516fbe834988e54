//! Config variants in the database. Stored configs are read as text and parsed row by row, so a
//! row that cannot be read (written by an older version, or edited by hand) is skipped with an
//! error in the log instead of failing every fetch of every user; and a write locks its row, so
//! concurrent writes to one variant queue up instead of failing.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect, Select,
    sea_query::Expr,
};
use serde_json::Value;

use super::{ConfigVariant, overlay};
use crate::{
    db::entities::config_variant::{self, Column, Entity},
    domain::{experiments::GLOBAL, validate},
    error::{Error, Result},
};

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
) -> Result<ConfigVariant> {
    let now = validate::truncate_to_micros(Utc::now());
    let stored = match locked(db, experiment_id, cohort).await? {
        Some(stored) => stored,
        None => {
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
    let config = if merge {
        let mut merged = match stored.config() {
            Ok(Value::Object(stored)) => stored,
            Ok(_) | Err(_) => {
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
    Ok(variant(
        stored.experiment_id,
        stored.cohort,
        config,
        version,
        now,
    ))
}
