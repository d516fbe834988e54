//! `remoteConfig` and `updateRemoteConfig`.

use std::sync::Arc;

use async_graphql::{Context, Enum, Json, Object, Result};

use crate::{
    domain::{
        config::{self, ConfigUpdate, DEFAULT_MERGE},
        ids::{Slug, UserId},
    },
    graphql::{
        HEAVY_JSON, LIST, QUERY, budget::json_output, error::Extend, experiments::Assignment, role,
        scalars::DateTime, services,
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
}

#[derive(Default)]
pub struct ConfigMutation;

#[Object]
impl ConfigMutation {
    /// Stores a config (admin key) and bumps its version. `experimentId` absent: the global
    /// default; `cohort` absent: the experiment's `default`. With `merge`, the new top-level keys
    /// are laid over the stored object instead of replacing it.
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn update_remote_config(
        &self,
        ctx: &Context<'_>,
        experiment_id: Option<String>,
        cohort: Option<String>,
        config: Json<serde_json::Value>,
        #[graphql(default_with = "Some(DEFAULT_MERGE)")] merge: Option<bool>,
    ) -> Result<ConfigVariant> {
        let update = ConfigUpdate {
            experiment_id,
            cohort,
            config: config.0,
            merge,
            decode_errors: Vec::new(),
        };
        services(ctx)
            .config
            .update(role(ctx), update)
            .await
            .map(ConfigVariant)
            .extended()
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

pub struct RemoteConfig(Arc<config::RemoteConfig>);

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
