//! Remote configuration (docs/api.md §6): the fallback chain, the merged answer, versioned
//! updates. The service owns its caches: fetches (a hit does no database work) and whole replies
//! ([`replies`]); a write on this instance makes the next read see it at once (cache keys carry
//! the experiments/configs generation of [`Changes`]).

mod fallback;
pub mod replies;
mod store;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use moka::future::Cache;
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde_json::Value;

pub use self::fallback::{Served, VariantMap, fallback, merge, overlay};
use self::{
    replies::{Freshness, ReplyCache, ReplyKey},
    store::Publication,
};
use crate::{
    auth::Role,
    db::{WriteGate, notify},
    domain::{
        CacheBudget,
        assignment::DEFAULT_COHORT,
        cache::BoundedCache,
        changes::Changes,
        experiments::{Assignment, ENTRY_OVERHEAD_BYTES, ExperimentService, GLOBAL},
        ids::{Slug, UserId},
        paging, validate,
    },
    error::{Error, FieldError, FieldErrors, Result},
};

/// Whether `updateRemoteConfig` lays the new keys over the stored object when it does not say.
pub const DEFAULT_MERGE: bool = false;

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

impl ConfigSource {
    pub const ALL: [ConfigSource; 4] = [
        ConfigSource::Cohort,
        ConfigSource::ExperimentDefault,
        ConfigSource::Global,
        ConfigSource::None,
    ];

    /// The contract's spelling, the same on every transport (docs/api.md §8).
    pub fn wire_name(self) -> &'static str {
        match self {
            ConfigSource::Cohort => "COHORT",
            ConfigSource::ExperimentDefault => "EXPERIMENT_DEFAULT",
            ConfigSource::Global => "GLOBAL",
            ConfigSource::None => "NONE",
        }
    }
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

impl RemoteConfig {
    /// Whether a client would see no difference: same version, config, source and cohort.
    pub fn same_answer(&self, other: &RemoteConfig) -> bool {
        self.version == other.version
            && self.source == other.source
            && self.cohort == other.cohort
            && self.config == other.config
    }

    /// Memory the answer holds: its strings, its config and its assignments.
    fn estimated_bytes(&self) -> usize {
        let assignments: usize = self
            .assignments
            .iter()
            .map(|assignment| {
                ENTRY_OVERHEAD_BYTES / 2
                    + assignment.user_id.len()
                    + assignment.experiment_id.len()
                    + assignment.cohort.len()
            })
            .sum();
        self.user_id.len()
            + self.experiment_id.as_ref().map_or(0, String::len)
            + self.cohort.as_ref().map_or(0, String::len)
            + validate::estimated_json_bytes(&self.config)
            + assignments
    }
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

/// One kept version of a variant (docs/api.md §10).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigVersion {
    /// None for the global default.
    pub experiment_id: Option<String>,
    pub cohort: String,
    pub version: i64,
    pub config: Value,
    pub created_at: DateTime<Utc>,
    pub actor: String,
    pub note: Option<String>,
    /// The version this one republished, for a rollback.
    pub rolled_back_from: Option<i64>,
}

/// What a write publishes: a new config, or the config of a kept version (a rollback).
enum Content {
    Config { config: Value, merge: bool },
    KeptVersion(i64),
}

/// Versions per `configHistory` page when the client does not say, and at most.
pub const DEFAULT_HISTORY_PAGE: u64 = 20;
pub const MAX_HISTORY_PAGE: u64 = 300;
const MAX_NOTE_CHARS: usize = 1024;
const VERSION_CURSOR_KIND: &str = "cv1";

/// `updateRemoteConfig` input as the client sent it.
#[derive(Debug, Clone)]
pub struct ConfigUpdate {
    /// The mutation or RPC name, as the audit log records it.
    pub action: &'static str,
    /// Absent: the global default.
    pub experiment_id: Option<String>,
    /// Absent: the experiment's `default`.
    pub cohort: Option<String>,
    pub config: Value,
    /// Absent: [`DEFAULT_MERGE`].
    pub merge: Option<bool>,
    /// Write only if the stored version is this one (0: the variant must not exist yet).
    pub expected_version: Option<i64>,
    /// Why the change was made, kept with the version.
    pub note: Option<String>,
    /// Problems a transport met while decoding the update (e.g. a number where text belongs),
    /// reported after the caller's key is checked, beside the domain's own findings.
    pub decode_errors: Vec<FieldError>,
}

/// (generation, user id, experiment id) of a fetch.
type FetchKey = (u64, String, Option<String>);

/// [`FetchKey`] borrowed, so a hit allocates nothing. A derived `Hash` hashes the fields in order,
/// as the tuple does, and `&str` hashes as `String`.
#[derive(Hash)]
struct FetchKeyRef<'a>(u64, &'a str, Option<&'a str>);

impl quick_cache::Equivalent<FetchKey> for FetchKeyRef<'_> {
    fn equivalent(&self, key: &FetchKey) -> bool {
        self.0 == key.0 && self.1 == key.1 && self.2 == key.2.as_deref()
    }
}

#[derive(Clone)]
pub struct ConfigService {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    writes: WriteGate,
    changes: Changes,
    experiments: ExperimentService,
    /// Answers kept until `fetched_at + ttl` (checked on every read) or pushed out by the budget.
    fetches: BoundedCache<FetchKey, Arc<RemoteConfig>>,
    replies: ReplyCache,
    /// Every variant, keyed by (experiment id, cohort), for the generation in the key.
    variants: Cache<u64, Arc<VariantMap>>,
    ttl: Duration,
    versions_kept: u32,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ConfigService {
    pub fn new(
        db: DatabaseConnection,
        writes: WriteGate,
        changes: Changes,
        experiments: ExperimentService,
        ttl: Duration,
        caches: CacheBudget,
        versions_kept: u32,
    ) -> Self {
        ConfigService {
            inner: Arc::new(Inner {
                db,
                writes,
                changes,
                experiments,
                replies: ReplyCache::new(ttl, caches.replies),
                fetches: BoundedCache::new(
                    caches.fetches,
                    2 * ENTRY_OVERHEAD_BYTES,
                    |key: &FetchKey, fetched: &Arc<RemoteConfig>| {
                        ENTRY_OVERHEAD_BYTES
                            + key.1.len()
                            + key.2.as_ref().map_or(0, String::len)
                            + fetched.estimated_bytes()
                    },
                ),
                variants: Cache::builder().max_capacity(4).time_to_live(ttl).build(),
                ttl,
                versions_kept: versions_kept.max(1),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// The reply to a plain config read: the stored one while it is current, else `compute`'s.
    /// `Ok` replies are kept (when they used a config fetch); `Err` ones are passed on, not kept.
    /// Without a key (a request too large to keep) the reply is just computed.
    pub async fn cached_reply<E>(
        &self,
        key: Option<ReplyKey>,
        compute: impl Future<Output = std::result::Result<Bytes, E>>,
    ) -> std::result::Result<Bytes, E> {
        let Some(key) = key else {
            return compute.await;
        };
        // Taken before any work, so a reply stored under it can never hide a write that raced it.
        let generation = self.inner.changes.generation();
        if let Some(cached) = self.inner.replies.get(&key, generation) {
            // The fetches the reply holds count as hits, so the statistics describe every fetch.
            self.inner.hits.fetch_add(cached.fetches, Ordering::Relaxed);
            return Ok(cached.body);
        }
        let freshness = Arc::new(Freshness::default());
        let reply = replies::observing(freshness.clone(), compute).await?;
        self.inner
            .replies
            .insert(key, generation, &freshness, reply.clone());
        Ok(reply)
    }

    pub async fn cache_stats(&self) -> CacheStats {
        let inner = &self.inner;
        CacheStats {
            entries: inner.fetches.entry_count() as u64,
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
        user_id: &UserId,
        experiment_id: Option<&Slug>,
    ) -> Result<Arc<RemoteConfig>> {
        let generation = self.inner.changes.generation();
        let key = FetchKeyRef(generation, user_id, experiment_id.map(|id| &**id));
        if let Some(config) = self.inner.fetches.get(&key)
            && config.fetched_at.elapsed() < self.inner.ttl
        {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            replies::observe(config.fetched_at);
            return Ok(config);
        }
        // Concurrent misses of one key are not coalesced: they are one player's requests racing,
        // each gets the same stored assignment from the writer, and coalescing cost every miss
        // (every new player) a waiter inserted into and removed from a map of its own.
        let config = Arc::new(match experiment_id {
            Some(id) => self.resolve_one(user_id, id, generation).await?,
            None => self.resolve_merged(user_id, generation).await?,
        });
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        self.inner.fetches.insert(
            (
                generation,
                user_id.to_string(),
                experiment_id.map(Slug::to_string),
            ),
            config.clone(),
        );
        replies::observe(config.fetched_at);
        Ok(config)
    }

    /// `remote_config`'s answer now, then again each time a write on any instance changes it
    /// (its version, config, source or cohort); other writes send nothing. An answer that cannot
    /// be computed (the database is away) is reported and watching goes on. Ends when the
    /// service does.
    pub fn watch(
        &self,
        user_id: UserId,
        experiment_id: Option<Slug>,
    ) -> impl Stream<Item = Result<Arc<RemoteConfig>>> + Send + 'static + use<> {
        struct Watch {
            service: ConfigService,
            user_id: UserId,
            experiment_id: Option<Slug>,
            // Taken before the first answer, so a write racing it is not missed.
            changes: tokio::sync::watch::Receiver<u64>,
            sent: Option<Arc<RemoteConfig>>,
            first: bool,
        }
        let state = Watch {
            changes: self.inner.changes.watch(),
            service: self.clone(),
            user_id,
            experiment_id,
            sent: None,
            first: true,
        };
        futures_util::stream::unfold(state, |mut state| async move {
            loop {
                // Several writes in a row wake the watch once: only the latest answer matters.
                if !std::mem::take(&mut state.first) && state.changes.changed().await.is_err() {
                    return None;
                }
                let answer = state
                    .service
                    .remote_config(&state.user_id, state.experiment_id.as_ref())
                    .await;
                match answer {
                    Ok(answer)
                        if state
                            .sent
                            .as_deref()
                            .is_some_and(|sent| sent.same_answer(&answer)) => {}
                    Ok(answer) => {
                        state.sent = Some(answer.clone());
                        return Some((Ok(answer), state));
                    }
                    Err(error) => return Some((Err(error), state)),
                }
            }
        })
    }

    async fn resolve_one(
        &self,
        user_id: &UserId,
        experiment_id: &Slug,
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
        let served = fallback(&variants, experiment_id, cohort.as_deref());
        Ok(RemoteConfig {
            user_id: user_id.to_string(),
            experiment_id: Some(experiment_id.to_string()),
            cohort,
            source: served.source,
            version: served.version,
            config: served.config,
            assignments: assignment.into_iter().collect(),
            fetched_at: Instant::now(),
        })
    }

    async fn resolve_merged(&self, user_id: &UserId, generation: u64) -> Result<RemoteConfig> {
        let variants = self.variants(generation).await?;
        let experiments = &self.inner.experiments;
        let active = experiments.active().await?;
        // Side by side, so a new player's first assignments share one group write instead of
        // waiting for one write per experiment.
        let assignments = futures_util::future::try_join_all(
            active
                .iter()
                .map(|experiment| experiments.assign(user_id, experiment)),
        )
        .await?;
        let cohorts: Vec<(&str, &str)> = assignments
            .iter()
            .map(|assignment| {
                (
                    assignment.experiment_id.as_str(),
                    assignment.cohort.as_str(),
                )
            })
            .collect();
        let served = merge(&variants, &cohorts);
        Ok(RemoteConfig {
            user_id: user_id.to_string(),
            experiment_id: None,
            cohort: None,
            source: served.source,
            version: served.version,
            config: served.config,
            assignments,
            fetched_at: Instant::now(),
        })
    }

    async fn variants(&self, generation: u64) -> Result<Arc<VariantMap>> {
        let db = self.inner.db.clone();
        self.inner
            .variants
            .try_get_with(generation, async move {
                let variants = store::all(&db).await?;
                Ok::<_, Error>(Arc::new(
                    variants
                        .into_iter()
                        .map(|variant| {
                            let experiment = variant.experiment_id.as_deref().unwrap_or(GLOBAL);
                            let key = (experiment.to_owned(), variant.cohort.clone());
                            (key, Arc::new(variant))
                        })
                        .collect(),
                ))
            })
            .await
            .map_err(crate::error::unwrap_shared)
    }

    /// Variants of the given experiments (every cohort and the default), for batch loading.
    pub async fn variants_of(&self, experiment_ids: &[String]) -> Result<Vec<ConfigVariant>> {
        let mut variants = store::of_experiments(&self.inner.db, experiment_ids).await?;
        variants.sort_by(|a, b| a.cohort.as_bytes().cmp(b.cohort.as_bytes()));
        Ok(variants)
    }

    /// Stores a config (replacing it, or laying its keys over the stored one with `merge`) and
    /// bumps its version. The write is one transaction: an error leaves nothing behind.
    #[tracing::instrument(skip_all, fields(experiment_id = ?update.experiment_id, cohort = ?update.cohort))]
    pub async fn update(&self, caller: Role, mut update: ConfigUpdate) -> Result<ConfigVariant> {
        caller.require_admin()?;
        let mut errors = FieldErrors::from(std::mem::take(&mut update.decode_errors));
        errors.take(check_expected_version(update.expected_version));
        errors.take(check_note(update.note.as_deref()));
        errors.into_result()?;
        let (experiment_id, cohort) = self
            .target(update.experiment_id.as_deref(), update.cohort.as_deref())
            .await?;
        validate::json_object(&update.config, validate::MAX_CONFIG_BYTES)
            .map_err(|reason| Error::invalid("config", reason))?;
        let merge = update.merge.unwrap_or(DEFAULT_MERGE);
        let publication = Publication {
            actor: caller.actor(),
            action: update.action,
            note: update.note,
            rolled_back_from: None,
            expected_version: update.expected_version,
            versions_kept: self.inner.versions_kept,
        };
        let content = Content::Config {
            config: update.config,
            merge,
        };
        self.publish(&experiment_id, &cohort, content, publication)
            .await
    }

    /// Publishes the config of a kept version again, as a new version (admin key).
    #[tracing::instrument(skip_all, fields(experiment_id = ?experiment_id, cohort = ?cohort, to_version))]
    #[allow(clippy::too_many_arguments)] // one per GraphQL argument, with the caller and action
    pub async fn rollback(
        &self,
        caller: Role,
        action: &'static str,
        experiment_id: Option<&str>,
        cohort: Option<&str>,
        to_version: i64,
        expected_version: Option<i64>,
        note: Option<String>,
    ) -> Result<ConfigVariant> {
        caller.require_admin()?;
        let mut errors = FieldErrors::default();
        if to_version < 1 {
            errors.push(FieldError::new("toVersion", "must be 1 or more"));
        }
        errors.take(check_expected_version(expected_version));
        errors.take(check_note(note.as_deref()));
        errors.into_result()?;
        let (experiment_id, cohort) = self.target(experiment_id, cohort).await?;
        let publication = Publication {
            actor: caller.actor(),
            action,
            note,
            rolled_back_from: i32::try_from(to_version).ok(),
            expected_version,
            versions_kept: self.inner.versions_kept,
        };
        let content = Content::KeptVersion(to_version);
        self.publish(&experiment_id, &cohort, content, publication)
            .await
    }

    /// Writes a variant and its version in one transaction; a failure leaves neither behind.
    async fn publish(
        &self,
        experiment_id: &str,
        cohort: &str,
        content: Content,
        publication: Publication<'_>,
    ) -> Result<ConfigVariant> {
        let variant = {
            let _turn = self.inner.writes.enter().await;
            let transaction = self.inner.db.begin().await?;
            let (config, merge) = match content {
                Content::Config { config, merge } => (config, merge),
                Content::KeptVersion(version) => {
                    let kept = store::version(&transaction, experiment_id, cohort, version)
                        .await?
                        .ok_or_else(|| {
                            Error::NotFound(format!(
                                "version {version} of config {experiment_id}/{cohort} is not kept"
                            ))
                        })?;
                    (kept.config, false)
                }
            };
            let variant = store::write(
                &transaction,
                experiment_id,
                cohort,
                config,
                merge,
                publication,
            )
            .await?;
            notify::announce_change(&transaction, self.inner.changes.origin()).await?;
            transaction.commit().await?;
            variant
        };
        self.written();
        Ok(variant)
    }

    /// Kept versions of a variant, newest first, `first` at a time after the cursor `after`
    /// (admin key). Returns the page and whether older versions follow.
    pub async fn history(
        &self,
        caller: Role,
        experiment_id: Option<&str>,
        cohort: Option<&str>,
        first: Option<i64>,
        after: Option<&str>,
    ) -> Result<(Vec<ConfigVersion>, bool)> {
        caller.require_admin()?;
        let mut errors = FieldErrors::default();
        let page = errors.take(paging::page_size(
            first,
            DEFAULT_HISTORY_PAGE,
            MAX_HISTORY_PAGE,
        ));
        let before = errors.take(
            after
                .map(|after| paging::decode_cursor(VERSION_CURSOR_KIND, after))
                .transpose(),
        );
        errors.into_result()?;
        let (page, before) = (page.unwrap_or(DEFAULT_HISTORY_PAGE), before.flatten());
        let (experiment_id, cohort) = self.variant_key(experiment_id, cohort)?;
        let mut versions =
            store::versions(&self.inner.db, &experiment_id, &cohort, before, page + 1).await?;
        let more = versions.len() as u64 > page;
        versions.truncate(page as usize);
        Ok((versions, more))
    }

    /// After a config write here or on another instance: every cached answer may be stale.
    pub(crate) fn written(&self) {
        self.inner.fetches.clear();
        self.inner.variants.invalidate_all();
        self.inner.changes.record();
    }

    /// The stored (experiment id, cohort) of a variant, checking only the shape of the ids:
    /// history outlives experiments and cohorts.
    fn variant_key(
        &self,
        experiment_id: Option<&str>,
        cohort: Option<&str>,
    ) -> Result<(String, String)> {
        let cohort = Slug::parse("cohort", cohort.unwrap_or(DEFAULT_COHORT))?;
        let experiment_id = match experiment_id {
            None => GLOBAL.to_owned(),
            Some(id) => String::from(Slug::parse("experimentId", id)?),
        };
        Ok((experiment_id, String::from(cohort)))
    }

    /// The (experiment id, cohort) row an update addresses, after checking both exist.
    async fn target(
        &self,
        experiment_id: Option<&str>,
        cohort: Option<&str>,
    ) -> Result<(String, String)> {
        let cohort = cohort.unwrap_or(DEFAULT_COHORT).to_owned();
        let cohort = String::from(Slug::parse("cohort", cohort)?);
        let experiment_id = match experiment_id {
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
        let experiment_id = Slug::parse("experimentId", experiment_id)?;
        let experiment = self
            .inner
            .experiments
            .get(&experiment_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("experiment not found: {experiment_id}")))?;
        if cohort != DEFAULT_COHORT && !experiment.cohorts.contains(&cohort) {
            return Err(Error::invalid(
                "cohort",
                format!("experiment {experiment_id:?} has no cohort {cohort:?}"),
            ));
        }
        Ok((experiment_id.into(), cohort))
    }
}

fn check_expected_version(expected: Option<i64>) -> std::result::Result<(), FieldError> {
    match expected {
        Some(expected) if expected < 0 => Err(FieldError::new(
            "expectedVersion",
            "must be 0 (the variant must not exist yet) or a stored version",
        )),
        _ => Ok(()),
    }
}

fn check_note(note: Option<&str>) -> std::result::Result<(), FieldError> {
    match note {
        Some(note) if note.chars().count() > MAX_NOTE_CHARS => Err(FieldError::new(
            "note",
            format!("must be at most {MAX_NOTE_CHARS} characters"),
        )),
        Some(note) => validate::free_text(note).map_err(|reason| FieldError::new("note", reason)),
        None => Ok(()),
    }
}

/// The opaque `configHistory` cursor: the version a page ended at.
pub fn version_cursor(version: i64) -> String {
    paging::cursor(VERSION_CURSOR_KIND, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_cached_under_its_owned_key_is_found_by_the_borrowed_one() {
        let cache = BoundedCache::new(1 << 20, 100, |_: &FetchKey, _: &u8| 100);
        cache.insert((3, "player-1".to_owned(), None), 1);
        cache.insert((3, "player-1".to_owned(), Some("exp_a".to_owned())), 2);
        assert_eq!(cache.get(&FetchKeyRef(3, "player-1", None)), Some(1));
        assert_eq!(
            cache.get(&FetchKeyRef(3, "player-1", Some("exp_a"))),
            Some(2)
        );
        assert_eq!(cache.get(&FetchKeyRef(4, "player-1", None)), None);
        assert_eq!(cache.get(&FetchKeyRef(3, "player-1", Some("exp_b"))), None);
    }
}
