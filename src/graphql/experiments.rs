//! Experiments and assignments.

use std::sync::Arc;

use async_graphql::{
    Context, InputObject, Json, Object, Result, SimpleObject, dataloader::DataLoader,
};

use crate::{
    domain::{
        assignment::CohortWeights,
        experiments::{self, DEFAULT_ACTIVE, ExperimentInput as DomainExperimentInput},
        ids::{Slug, UserId},
    },
    graphql::{
        LIST, LOOKUP, QUERY,
        config::ConfigVariant,
        error::Extend,
        loaders::VariantLoader,
        results::{Metric, MetricInput},
        role,
        scalars::DateTime,
        services,
    },
};

#[derive(Default)]
pub struct ExperimentsQuery;

#[Object]
impl ExperimentsQuery {
    /// The user's cohort in an active experiment, assigned deterministically on first request and
    /// sticky afterwards. Unknown or inactive experiment: `NOT_FOUND`.
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn experiment_assignment(
        &self,
        ctx: &Context<'_>,
        user_id: String,
        experiment_id: String,
    ) -> Result<Assignment> {
        let user_id = UserId::parse("userId", user_id).extended()?;
        let experiment_id = Slug::parse("experimentId", experiment_id).extended()?;
        services(ctx)
            .experiments
            .assignment(&user_id, &experiment_id)
            .await
            .map(Assignment)
            .extended()
    }

    /// Experiments active now (flag set and inside their time window), in byte order of their ids.
    #[graphql(complexity = "QUERY + LIST * child_complexity")]
    async fn active_experiments(&self, ctx: &Context<'_>) -> Result<Vec<Experiment>> {
        let active = services(ctx).experiments.active().await.extended()?;
        Ok(active.into_iter().map(Experiment).collect())
    }

    /// Every experiment, whatever its state, in byte order of their ids (admin key).
    #[graphql(complexity = "QUERY + LIST * child_complexity")]
    async fn experiments(&self, ctx: &Context<'_>) -> Result<Vec<Experiment>> {
        let every = services(ctx).experiments.list(role(ctx)).await.extended()?;
        Ok(every.into_iter().map(Experiment).collect())
    }

    /// Any experiment by id, whatever its state (admin key).
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn experiment(&self, ctx: &Context<'_>, id: String) -> Result<Option<Experiment>> {
        services(ctx)
            .experiments
            .definition(role(ctx), &id)
            .await
            .map(|found| found.map(Experiment))
            .extended()
    }
}

#[derive(Default)]
pub struct ExperimentsMutation;

#[Object]
impl ExperimentsMutation {
    /// Creates or replaces an experiment (admin key). Without `salt` the stored salt is kept (a new
    /// experiment's salt is its id); changing the salt re-randomises future assignments.
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn upsert_experiment(
        &self,
        ctx: &Context<'_>,
        input: ExperimentInput,
    ) -> Result<Experiment> {
        services(ctx)
            .experiments
            .upsert(role(ctx), "upsertExperiment", input.into_domain())
            .await
            .map(Experiment)
            .extended()
    }

    /// Turns an experiment on or off (admin key).
    #[graphql(complexity = "QUERY + child_complexity")]
    async fn set_experiment_active(
        &self,
        ctx: &Context<'_>,
        id: String,
        active: bool,
    ) -> Result<Experiment> {
        services(ctx)
            .experiments
            .set_active(role(ctx), "setExperimentActive", &id, active)
            .await
            .map(Experiment)
            .extended()
    }
}

/// An experiment definition. `cohorts` is a JSON object of cohort name → weight (1 to 20 cohorts,
/// finite weights ≥ 0, sum > 0); `default` is reserved.
#[derive(InputObject)]
pub struct ExperimentInput {
    id: String,
    name: String,
    description: Option<String>,
    cohorts: Json<serde_json::Value>,
    #[graphql(default_with = "Some(DEFAULT_ACTIVE)")]
    active: Option<bool>,
    start_at: Option<DateTime>,
    end_at: Option<DateTime>,
    salt: Option<String>,
    /// The metrics `experimentResults` analyses by default (at most 20); absent keeps the saved
    /// ones, `[]` clears them.
    metrics: Option<Vec<MetricInput>>,
}

impl ExperimentInput {
    fn into_domain(self) -> DomainExperimentInput {
        DomainExperimentInput {
            id: self.id,
            name: self.name,
            description: self.description,
            cohorts: self.cohorts.0,
            active: self.active,
            start_at: self.start_at.map(DateTime::into_input),
            end_at: self.end_at.map(DateTime::into_input),
            salt: self.salt,
            metrics: self
                .metrics
                .map(|listed| listed.into_iter().map(MetricInput::into_domain).collect()),
        }
    }
}

pub struct Experiment(pub Arc<experiments::Experiment>);

#[Object]
impl Experiment {
    async fn id(&self) -> &str {
        &self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// Cohorts in byte order of their names.
    #[graphql(complexity = "LIST * child_complexity")]
    async fn cohorts(&self) -> Vec<Cohort> {
        cohorts_of(&self.0.cohorts)
    }
    /// The stored flag; the experiment is active only inside its time window as well.
    async fn active(&self) -> bool {
        self.0.active
    }
    async fn start_at(&self) -> Option<DateTime> {
        self.0.start_at.map(DateTime::from)
    }
    async fn end_at(&self) -> Option<DateTime> {
        self.0.end_at.map(DateTime::from)
    }
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    async fn updated_at(&self) -> DateTime {
        self.0.updated_at.into()
    }
    /// The metrics `experimentResults` analyses when the query lists none.
    #[graphql(complexity = "LIST * child_complexity")]
    async fn metrics(&self) -> Vec<Metric> {
        self.0.metrics.iter().map(Metric::from).collect()
    }
    /// The experiment's stored configs: one per cohort that has one, and its `default`.
    #[graphql(complexity = "LOOKUP + LIST * child_complexity")]
    async fn variants(&self, ctx: &Context<'_>) -> Result<Vec<ConfigVariant>> {
        let variants = ctx
            .data_unchecked::<DataLoader<VariantLoader>>()
            .load_one(self.0.id.clone())
            .await?
            .unwrap_or_default();
        Ok(variants.into_iter().map(ConfigVariant).collect())
    }
    /// Every recorded state of the experiment, oldest first (admin key): each upsert or
    /// activation that changed the weights, salt, active flag or window, with who and when.
    #[graphql(complexity = "QUERY + LIST * child_complexity")]
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<ExperimentChange>> {
        services(ctx)
            .experiments
            .history(role(ctx), &self.0.id)
            .await
            .map(|changes| changes.into_iter().map(ExperimentChange).collect())
            .extended()
    }
}

#[derive(SimpleObject)]
pub struct Cohort {
    name: String,
    weight: f64,
}

fn cohorts_of(weights: &CohortWeights) -> Vec<Cohort> {
    weights
        .iter()
        .map(|(name, weight)| Cohort {
            name: name.to_owned(),
            weight,
        })
        .collect()
}

/// The state of an experiment after a recorded change.
pub struct ExperimentChange(experiments::ExperimentChange);

#[Object]
impl ExperimentChange {
    async fn at(&self) -> DateTime {
        self.0.at.into()
    }
    /// The name of the admin key that made the change (`migration`: the state found when history
    /// began).
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// Cohorts in byte order of their names.
    #[graphql(complexity = "LIST * child_complexity")]
    async fn cohorts(&self) -> Vec<Cohort> {
        cohorts_of(&self.0.cohorts)
    }
    async fn salt(&self) -> &str {
        &self.0.salt
    }
    async fn active(&self) -> bool {
        self.0.active
    }
    async fn start_at(&self) -> Option<DateTime> {
        self.0.start_at.map(DateTime::from)
    }
    async fn end_at(&self) -> Option<DateTime> {
        self.0.end_at.map(DateTime::from)
    }
}

pub struct Assignment(pub Arc<experiments::Assignment>);

#[Object]
impl Assignment {
    async fn user_id(&self) -> &str {
        &self.0.user_id
    }
    async fn experiment_id(&self) -> &str {
        &self.0.experiment_id
    }
    async fn cohort(&self) -> &str {
        &self.0.cohort
    }
    async fn assigned_at(&self) -> DateTime {
        self.0.assigned_at.into()
    }
}
