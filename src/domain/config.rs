//! Remote configuration (API.md §6): the fallback chain, the merged answer, versioned updates.
//! The service owns the fetch cache: a hit does no database work; a write on this instance makes
//! the next fetch see it at once (cache keys carry the experiments/configs generation).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use moka::future::Cache;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
};
use serde_json::{Map, Value};

use crate::{
    db::{WriteGate, entities::config_variant},
    domain::{
        assignment::DEFAULT_COHORT,
        experiments::{Assignment, ExperimentService, GLOBAL},
        validate,
    },
    error::{Error, Result},
};

/// Optimistic update attempts before giving up under extreme write contention.
const UPDATE_ATTEMPTS: usize = 8;

/// Counters of the remote-config cache, as reported by `health { cache }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub ttl_seconds: u64,
}

/// Which level of the fallback chain served a config; ordered from least to most specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigSource {
    None,
    Global,
    ExperimentDefault,
    Cohort,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    pub user_id: String,
    pub experiment_id: Option<String>,
    pub cohort: Option<String>,
    pub source: ConfigSource,
    pub version: i64,
    pub config: Value,
    pub assignments: Vec<Arc<Assignment>>,
    /// When this answer was assembled; it may be served from caches until `fetched_at + ttl`.
    pub fetched_at: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigVariant {
    /// None for the global default.
    pub experiment_id: Option<String>,
    pub cohort: String,
    pub config: Value,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

impl From<config_variant::Model> for ConfigVariant {
    fn from(model: config_variant::Model) -> Self {
        ConfigVariant {
            experiment_id: (model.experiment_id != GLOBAL).then_some(model.experiment_id),
            cohort: model.cohort,
            config: model.config_data,
            version: i64::from(model.version),
            updated_at: model.updated_at,
        }
    }
}

/// `updateRemoteConfig` input as the client sent it.
#[derive(Debug, Clone)]
pub struct ConfigUpdate {
    pub experiment_id: Option<String>,
    pub cohort: Option<String>,
    pub config: Value,
    pub merge: bool,
}

type FetchKey = (u64, String, Option<String>);
type VariantMap = HashMap<(String, String), Arc<ConfigVariant>>;

#[derive(Clone)]
pub struct ConfigService {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    writes: WriteGate,
    experiments: ExperimentService,
    fetches: Cache<FetchKey, Arc<RemoteConfig>>,
    /// Every variant, keyed by (experiment id, cohort), for the generation in the key.
    variants: Cache<u64, Arc<VariantMap>>,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ConfigService {
    pub fn new(
        db: DatabaseConnection,
        writes: WriteGate,
        experiments: ExperimentService,
        ttl: Duration,
    ) -> Self {
        ConfigService {
            inner: Arc::new(Inner {
                db,
                writes,
                experiments,
                fetches: Cache::builder()
                    .max_capacity(200_000)
                    .time_to_live(ttl)
                    .build(),
                variants: Cache::builder().max_capacity(4).time_to_live(ttl).build(),
                ttl,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// Counts fetches answered by a cache in front of this service (a cached response holding
    /// them), so the statistics keep describing every fetch.
    pub fn count_cached_fetches(&self, fetches: u64) {
        self.inner.hits.fetch_add(fetches, Ordering::Relaxed);
    }

    pub async fn cache_stats(&self) -> CacheStats {
        let inner = &self.inner;
        // Entry counts are eventually consistent in moka; settle pending work so the figure is exact.
        inner.fetches.run_pending_tasks().await;
        CacheStats {
            entries: inner.fetches.entry_count(),
            hits: inner.hits.load(Ordering::Relaxed),
            misses: inner.misses.load(Ordering::Relaxed),
            ttl_seconds: inner.ttl.as_secs(),
        }
    }

    /// The config a user gets: for one experiment through the fallback chain, or without one the
    /// global default with every active experiment's config laid over it.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn remote_config(
        &self,
        user_id: &str,
        experiment_id: Option<&str>,
    ) -> Result<Arc<RemoteConfig>> {
        validate::printable_text(user_id).map_err(|reason| Error::invalid("userId", reason))?;
        if let Some(id) = experiment_id {
            validate::slug(id).map_err(|reason| Error::invalid("experimentId", reason))?;
        }
        let generation = self.inner.experiments.generation();
        let key = (
            generation,
            user_id.to_owned(),
            experiment_id.map(str::to_owned),
        );
        let this = self.clone();
        let entry = self
            .inner
            .fetches
            .entry(key)
            .or_try_insert_with(async move {
                let config = match experiment_id {
                    Some(id) => this.resolve_one(user_id, id, generation).await?,
                    None => this.resolve_merged(user_id, generation).await?,
                };
                Ok::<_, Error>(Arc::new(config))
            })
            .await
            .map_err(crate::error::unwrap_shared)?;
        let counter = if entry.is_fresh() {
            &self.inner.misses
        } else {
            &self.inner.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(entry.into_value())
    }

    async fn resolve_one(
        &self,
        user_id: &str,
        experiment_id: &str,
        generation: u64,
    ) -> Result<RemoteConfig> {
        let variants = self.variants(generation).await?;
        let experiments = &self.inner.experiments;
        let experiment = experiments
            .get(experiment_id)
            .await?
            .filter(|experiment| experiment.is_live(Utc::now()));
        let assignment = match &experiment {
            Some(experiment) => Some(experiments.assign(user_id, experiment).await?),
            None => None,
        };
        let cohort = assignment
            .as_ref()
            .map(|assignment| assignment.cohort.clone());
        let lookup = |experiment: &str, cohort: &str| {
            variants.get(&(experiment.to_owned(), cohort.to_owned()))
        };
        let served = cohort
            .as_deref()
            .and_then(|cohort| lookup(experiment_id, cohort))
            .map(|variant| (ConfigSource::Cohort, variant))
            .or_else(|| {
                experiment.as_ref().and_then(|_| {
                    lookup(experiment_id, DEFAULT_COHORT)
                        .map(|variant| (ConfigSource::ExperimentDefault, variant))
                })
            })
            .or_else(|| {
                lookup(GLOBAL, DEFAULT_COHORT).map(|variant| (ConfigSource::Global, variant))
            });
        let (source, version, config) = match served {
            Some((source, variant)) => (source, variant.version, variant.config.clone()),
            None => (ConfigSource::None, 0, Value::Object(Map::new())),
        };
        Ok(RemoteConfig {
            user_id: user_id.to_owned(),
            experiment_id: Some(experiment_id.to_owned()),
            cohort,
            source,
            version,
            config,
            assignments: assignment.into_iter().collect(),
            fetched_at: Instant::now(),
        })
    }

    async fn resolve_merged(&self, user_id: &str, generation: u64) -> Result<RemoteConfig> {
        let variants = self.variants(generation).await?;
        let experiments = &self.inner.experiments;
        let mut config = Map::new();
        let mut version = 0;
        let mut source = ConfigSource::None;
        let mut layers = Vec::new();
        if let Some(global) = variants.get(&(GLOBAL.to_owned(), DEFAULT_COHORT.to_owned())) {
            layers.push((ConfigSource::Global, global.clone()));
        }
        let mut assignments = Vec::new();
        for experiment in experiments.active().await? {
            let assignment = experiments.assign(user_id, &experiment).await?;
            let cohort_variant = variants.get(&(experiment.id.clone(), assignment.cohort.clone()));
            let default_variant = variants.get(&(experiment.id.clone(), DEFAULT_COHORT.to_owned()));
            match (cohort_variant, default_variant) {
                (Some(variant), _) => layers.push((ConfigSource::Cohort, variant.clone())),
                (None, Some(variant)) => {
                    layers.push((ConfigSource::ExperimentDefault, variant.clone()))
                }
                (None, None) => {}
            }
            assignments.push(assignment);
        }
        for (level, variant) in layers {
            overlay(&mut config, &variant.config);
            version += variant.version;
            source = source.max(level);
        }
        Ok(RemoteConfig {
            user_id: user_id.to_owned(),
            experiment_id: None,
            cohort: None,
            source,
            version,
            config: Value::Object(config),
            assignments,
            fetched_at: Instant::now(),
        })
    }

    async fn variants(&self, generation: u64) -> Result<Arc<VariantMap>> {
        let db = self.inner.db.clone();
        self.inner
            .variants
            .try_get_with(generation, async move {
                let rows = config_variant::Entity::find().all(&db).await?;
                Ok::<_, Error>(Arc::new(
                    rows.into_iter()
                        .map(|row| {
                            let key = (row.experiment_id.clone(), row.cohort.clone());
                            (key, Arc::new(ConfigVariant::from(row)))
                        })
                        .collect(),
                ))
            })
            .await
            .map_err(crate::error::unwrap_shared)
    }

    /// Variants of the given experiments (every cohort and the default), for batch loading.
    pub async fn variants_of(&self, experiment_ids: &[String]) -> Result<Vec<ConfigVariant>> {
        let rows = config_variant::Entity::find()
            .filter(config_variant::Column::ExperimentId.is_in(experiment_ids.iter().cloned()))
            .all(&self.inner.db)
            .await?;
        let mut variants: Vec<ConfigVariant> = rows.into_iter().map(ConfigVariant::from).collect();
        variants.sort_by(|a, b| a.cohort.as_bytes().cmp(b.cohort.as_bytes()));
        Ok(variants)
    }

    /// Stores a config (replacing it, or laying its keys over the stored one with `merge`) and
    /// bumps its version.
    #[tracing::instrument(skip_all, fields(experiment_id = ?update.experiment_id, cohort = ?update.cohort))]
    pub async fn update(&self, update: ConfigUpdate) -> Result<ConfigVariant> {
        let (experiment_id, cohort) = self.target(&update).await?;
        validate::json_object(&update.config, validate::MAX_CONFIG_BYTES)
            .map_err(|reason| Error::invalid("config", reason))?;
        let db = &self.inner.db;
        let turn = self.inner.writes.enter().await;
        for _ in 0..UPDATE_ATTEMPTS {
            let now = validate::truncate_to_micros(Utc::now());
            let stored = config_variant::Entity::find()
                .filter(config_variant::Column::ExperimentId.eq(&experiment_id))
                .filter(config_variant::Column::Cohort.eq(&cohort))
                .one(db)
                .await?;
            let Some(stored) = stored else {
                let row = config_variant::ActiveModel {
                    id: NotSet,
                    experiment_id: Set(experiment_id.clone()),
                    cohort: Set(cohort.clone()),
                    config_data: Set(update.config.clone()),
                    version: Set(1),
                    updated_at: Set(now),
                };
                let inserted = config_variant::Entity::insert(row)
                    .on_conflict_do_nothing_on([
                        config_variant::Column::ExperimentId,
                        config_variant::Column::Cohort,
                    ])
                    .exec_without_returning(db)
                    .await?;
                if matches!(inserted, sea_orm::TryInsertResult::Inserted(1)) {
                    drop(turn);
                    return self.finish_update(&experiment_id, &cohort).await;
                }
                continue; // another writer created it first: update theirs
            };
            let config = if update.merge {
                let mut merged = stored.config_data.as_object().cloned().unwrap_or_default();
                overlay(&mut merged, &update.config);
                let merged = Value::Object(merged);
                validate::json_object(&merged, validate::MAX_CONFIG_BYTES).map_err(|reason| {
                    Error::invalid("config", format!("merged result {reason}"))
                })?;
                merged
            } else {
                update.config.clone()
            };
            // Compare-and-set on the version, so concurrent updates neither lose writes nor
            // share a version number.
            let updated = config_variant::Entity::update_many()
                .col_expr(config_variant::Column::ConfigData, config.into())
                .col_expr(config_variant::Column::Version, (stored.version + 1).into())
                .col_expr(config_variant::Column::UpdatedAt, now.into())
                .filter(config_variant::Column::Id.eq(stored.id))
                .filter(config_variant::Column::Version.eq(stored.version))
                .exec(db)
                .await?;
            if updated.rows_affected == 1 {
                drop(turn);
                return self.finish_update(&experiment_id, &cohort).await;
            }
        }
        tracing::warn!("config update gave up after repeated concurrent writes");
        Err(Error::ServiceUnavailable)
    }

    async fn finish_update(&self, experiment_id: &str, cohort: &str) -> Result<ConfigVariant> {
        self.inner.experiments.invalidate().await;
        self.inner.fetches.invalidate_all();
        self.inner.variants.invalidate_all();
        let row = config_variant::Entity::find()
            .filter(config_variant::Column::ExperimentId.eq(experiment_id))
            .filter(config_variant::Column::Cohort.eq(cohort))
            .one(&self.inner.db)
            .await?
            .ok_or(Error::Internal)?;
        Ok(row.into())
    }

    /// The (experiment id, cohort) row an update addresses, after checking both exist.
    async fn target(&self, update: &ConfigUpdate) -> Result<(String, String)> {
        let cohort = update
            .cohort
            .clone()
            .unwrap_or_else(|| DEFAULT_COHORT.to_owned());
        validate::slug(&cohort).map_err(|reason| Error::invalid("cohort", reason))?;
        let experiment_id = match update.experiment_id.as_deref() {
            None | Some(GLOBAL) => {
                if cohort != DEFAULT_COHORT {
                    return Err(Error::invalid(
                        "cohort",
                        format!(
                            "the global config has only the {DEFAULT_COHORT:?} cohort (got {cohort:?})"
                        ),
                    ));
                }
                return Ok((GLOBAL.to_owned(), cohort));
            }
            Some(id) => id,
        };
        validate::slug(experiment_id).map_err(|reason| Error::invalid("experimentId", reason))?;
        let experiment = self
            .inner
            .experiments
            .get(experiment_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("experiment not found: {experiment_id}")))?;
        if cohort != DEFAULT_COHORT && !experiment.cohorts.contains(&cohort) {
            return Err(Error::invalid(
                "cohort",
                format!("experiment {experiment_id:?} has no cohort {cohort:?}"),
            ));
        }
        Ok((experiment_id.to_owned(), cohort))
    }
}

/// Lays the top-level keys of `top` over `base`, replacing whole values.
pub fn overlay(base: &mut Map<String, Value>, top: &Value) {
    if let Value::Object(top) = top {
        for (key, value) in top {
            base.insert(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn overlay_replaces_top_level_keys_whole() {
        let mut base = json!({"a": 1, "nested": {"x": 1, "y": 2}})
            .as_object()
            .cloned()
            .unwrap();
        overlay(&mut base, &json!({"nested": {"x": 9}, "b": 2}));
        assert_eq!(
            Value::Object(base),
            json!({"a": 1, "b": 2, "nested": {"x": 9}})
        );
    }

    #[test]
    fn sources_order_from_least_to_most_specific() {
        assert!(ConfigSource::None < ConfigSource::Global);
        assert!(ConfigSource::Global < ConfigSource::ExperimentDefault);
        assert!(ConfigSource::ExperimentDefault < ConfigSource::Cohort);
    }
}
