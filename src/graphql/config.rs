//! `remoteConfig`, `configHistory`, `updateRemoteConfig` and `rollbackRemoteConfig`.

use std::sync::Arc;

use async_graphql::{
    Context, Enum, Json, Object, Result,
    connection::{Connection, Edge},
};

use crate::{
    domain::{
        config::{self, ConfigUpdate, DEFAULT_HISTORY_PAGE, DEFAULT_MERGE, MAX_HISTORY_PAGE},
        ids::{Slug, UserId},
    },
    graphql::{
        HEAVY_JSON, LIST, QUERY, ROW, budget::json_output, error::Extend, experiments::Assignment,
        listing_page_size, role, scalars::DateTime, services,
    },
};

#[derive(Default)]
pub struct ConfigQuery;

#[Object]
impl ConfigQuery {
    /// The config for a user. With `experimentId`: the user's cohort config, else the
    /// experiment's default, else the global default, else `{}` (`source` says which). Without:
    /// the global default with every active experiment's config laid over it.
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn remote_config(
        &self,
        ctx: &Context<'_>,
        user_id: String,
        experiment_id: Option<String>,
    ) -> Result<RemoteConfig> {
        let user_id = UserId::parse("userId", user_id).extended()?;
        let experiment_id = Slug::parse_optional("experimentId", experiment_id).extended()?;
        services(ctx)
            .config
            .remote_config(&user_id, experiment_id.as_ref())
            .await
            .map(RemoteConfig)
            .extended()
    }

    /// Every kept version of a config variant, newest first (admin key). `experimentId` absent:
    /// the global default; `cohort` absent: the experiment's `default`. `first` is capped at 300.
    #[graphql(
        complexity = "QUERY + listing_page_size(first, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE) * (ROW + child_complexity)"
    )]
    async fn config_history(
        &self,
        ctx: &Context<'_>,
        experiment_id: Option<String>,
        cohort: Option<String>,
        #[graphql(default_with = "Some(DEFAULT_HISTORY_PAGE as i32)")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ConfigVersion>> {
        let (versions, more) = services(ctx)
            .config
            .history(
                role(ctx),
                experiment_id.as_deref(),
                cohort.as_deref(),
                first.map(i64::from),
                after.as_deref(),
            )
            .await
            .extended()?;
        let mut connection = Connection::new(after.is_some(), more);
        connection.edges.extend(versions.into_iter().map(|version| {
            Edge::new(
                config::version_cursor(version.version),
                ConfigVersion(version),
            )
        }));
        Ok(connection)
    }
}

#[derive(Default)]
pub struct ConfigMutation;

#[Object]
impl ConfigMutation {
    /// Stores a config (admin key) and bumps its version; the new version is kept in the
    /// history. `experimentId` absent: the global default; `cohort` absent: the experiment's
    /// `default`. With `merge`, the new top-level keys are laid over the stored object instead of
    /// replacing it. With `expectedVersion`, nothing is written unless the stored version is that
    /// one (0: the variant must not exist yet): the error is `CONFLICT`, naming the stored version.
    #[allow(clippy::too_many_arguments)] // one per GraphQL argument
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn update_remote_config(
        &self,
        ctx: &Context<'_>,
        experiment_id: Option<String>,
        cohort: Option<String>,
        config: Json<serde_json::Value>,
        #[graphql(default_with = "Some(DEFAULT_MERGE)")] merge: Option<bool>,
        expected_version: Option<i32>,
        note: Option<String>,
    ) -> Result<ConfigVariant> {
        let update = ConfigUpdate {
            action: "updateRemoteConfig",
            experiment_id,
            cohort,
            config: config.0,
            merge,
            expected_version: expected_version.map(i64::from),
            note,
            decode_errors: Vec::new(),
        };
        services(ctx)
            .config
            .update(role(ctx), update)
            .await
            .map(ConfigVariant)
            .extended()
    }

    /// Publishes the config of the kept version `toVersion` again as a new version, with
    /// `rolledBackFrom` set (admin key). A version that is not kept: `NOT_FOUND`;
    /// `expectedVersion` as for `updateRemoteConfig`.
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn rollback_remote_config(
        &self,
        ctx: &Context<'_>,
        experiment_id: Option<String>,
        cohort: Option<String>,
        to_version: i32,
        expected_version: Option<i32>,
        note: Option<String>,
    ) -> Result<ConfigVariant> {
        services(ctx)
            .config
            .rollback(
                role(ctx),
                "rollbackRemoteConfig",
                experiment_id.as_deref(),
                cohort.as_deref(),
                i64::from(to_version),
                expected_version.map(i64::from),
                note,
            )
            .await
            .map(ConfigVariant)
            .extended()
    }
}

/// One kept version of a config variant.
pub struct ConfigVersion(config::ConfigVersion);

#[Object]
impl ConfigVersion {
    /// Null for the global default.
    async fn experiment_id(&self) -> Option<&str> {
        self.0.experiment_id.as_deref()
    }
    async fn cohort(&self) -> &str {
        &self.0.cohort
    }
    async fn version(&self) -> i32 {
        i32::try_from(self.0.version).unwrap_or(i32::MAX)
    }
    #[graphql(complexity = "HEAVY_JSON")]
    async fn config(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
        json_output(ctx, &self.0.config)
    }
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    /// The name of the key that published it (`migration`: found when history began).
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// The version this one republished, when it is a rollback.
    async fn rolled_back_from(&self) -> Option<i32> {
        self.0
            .rolled_back_from
            .map(|version| i32::try_from(version).unwrap_or(i32::MAX))
    }
}

/// Which level of the fallback chain served the config.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "config::ConfigSource")]
pub enum ConfigSource {
    /// The variant for the user's cohort.
    Cohort,
    /// The experiment's `default` variant.
    ExperimentDefault,
    /// The global default.
    Global,
    /// Nothing stored: `{}` with version 0.
    None,
}

pub struct RemoteConfig(pub(super) Arc<config::RemoteConfig>);

#[Object]
impl RemoteConfig {
    async fn user_id(&self) -> &str {
        &self.0.user_id
    }
    async fn experiment_id(&self) -> Option<&str> {
        self.0.experiment_id.as_deref()
    }
    /// The user's cohort when the experiment is active, whichever level served.
    async fn cohort(&self) -> Option<&str> {
        self.0.cohort.as_deref()
    }
    async fn source(&self) -> ConfigSource {
        self.0.source.into()
    }
    /// The served variant's version; for the merged answer, the sum of the versions used.
    async fn version(&self) -> i32 {
        i32::try_from(self.0.version).unwrap_or(i32::MAX)
    }
    #[graphql(complexity = "HEAVY_JSON")]
    async fn config(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
        json_output(ctx, &self.0.config)
    }
    #[graphql(complexity = "LIST * child_complexity")]
    async fn assignments(&self) -> Vec<Assignment> {
        self.0.assignments.iter().cloned().map(Assignment).collect()
    }
}

pub struct ConfigVariant(pub config::ConfigVariant);

#[Object]
impl ConfigVariant {
    /// Null for the global default.
    async fn experiment_id(&self) -> Option<&str> {
        self.0.experiment_id.as_deref()
    }
    async fn cohort(&self) -> &str {
        &self.0.cohort
    }
    #[graphql(complexity = "HEAVY_JSON")]
    async fn config(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
        json_output(ctx, &self.0.config)
    }
    async fn version(&self) -> i32 {
        i32::try_from(self.0.version).unwrap_or(i32::MAX)
    }
    async fn updated_at(&self) -> DateTime {
        self.0.updated_at.into()
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::resolver_utils::EnumType;

    use super::*;

    /// The RPC writes `wire_name`; GraphQL derives its own names: they must be the same words.
    #[test]
    fn config_sources_are_spelled_alike_on_both_transports() {
        for source in config::ConfigSource::ALL {
            let item = ConfigSource::items()
                .iter()
                .find(|item| config::ConfigSource::from(item.value) == source)
                .expect("every domain source has a GraphQL value");
            assert_eq!(item.name, source.wire_name());
        }
    }
}
