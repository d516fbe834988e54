//! `experimentResults`, and the metric types experiments save.

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};

use crate::{
    domain::{
        metrics::{self, MetricKind as DomainMetricKind},
        results::{self, DEFAULT_ALPHA, ResultsQuery as DomainResultsQuery},
        statistics::{Comparison, SampleRatio},
    },
    graphql::{LIST, QUERY, error::Extend, role, scalars::DateTime, services},
};

/// What an analysis reads: one aggregation over the experiment's users and their events.
const ANALYSIS: usize = 50 * QUERY;

#[derive(Default)]
pub struct ResultsQuery;

#[Object]
impl ResultsQuery {
    /// Which cohort won (admin key). Every user with a stored assignment is analysed in their
    /// cohort (`assigned_at < until` when given); users without events count as 0. Each metric
    /// reads the user's events of `eventName` from assignment on (within `windowHours` and
    /// `[since, until)` when given). Cohorts are compared with `control` (else the cohort named
    /// `control`, else the first by name) by Welch's t-test at `alpha` (0 < alpha < 0.5).
    /// `metrics` absent: those saved on the experiment.
    #[graphql(complexity = "ANALYSIS + child_complexity")]
    #[allow(clippy::too_many_arguments)] // one per GraphQL argument, as the contract lists them
    async fn experiment_results(
        &self,
        ctx: &Context<'_>,
        experiment_id: String,
        metrics: Option<Vec<MetricInput>>,
        control: Option<String>,
        since: Option<DateTime>,
        until: Option<DateTime>,
        #[graphql(default_with = "Some(DEFAULT_ALPHA)")] alpha: Option<f64>,
    ) -> Result<ExperimentResults> {
        let query = DomainResultsQuery {
            experiment_id,
            metrics: metrics
                .map(|listed| listed.into_iter().map(MetricInput::into_domain).collect()),
            control,
            since: since.map(DateTime::into_input),
            until: until.map(DateTime::into_input),
            alpha: alpha.unwrap_or(DEFAULT_ALPHA),
        };
        services(ctx)
            .results
            .results(role(ctx), query)
            .await
            .map(ExperimentResults)
            .extended()
    }
}

/// How a user's value is computed from their qualifying events.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// 1 when the user has a qualifying event, else 0.
    Conversion,
    /// The number of qualifying events.
    Count,
    /// The sum of `property` over qualifying events where it is a JSON number.
    Sum,
}

impl From<MetricKind> for DomainMetricKind {
    fn from(kind: MetricKind) -> Self {
        match kind {
            MetricKind::Conversion => DomainMetricKind::Conversion,
            MetricKind::Count => DomainMetricKind::Count,
            MetricKind::Sum => DomainMetricKind::Sum,
        }
    }
}

impl From<DomainMetricKind> for MetricKind {
    fn from(kind: DomainMetricKind) -> Self {
        match kind {
            DomainMetricKind::Conversion => MetricKind::Conversion,
            DomainMetricKind::Count => MetricKind::Count,
            DomainMetricKind::Sum => MetricKind::Sum,
        }
    }
}

/// A metric: `key` 1–64 characters of `[A-Za-z0-9_.:-]`, unique in its list; `property` required
/// for `SUM` and refused otherwise; `windowHours` (0 < h ≤ 87,600) limits the events counted to
/// those within that many hours after the user's assignment.
#[derive(InputObject)]
pub struct MetricInput {
    key: String,
    event_name: String,
    kind: MetricKind,
    property: Option<String>,
    window_hours: Option<f64>,
}

impl MetricInput {
    pub fn into_domain(self) -> metrics::Metric {
        metrics::Metric {
            key: self.key,
            event_name: self.event_name,
            kind: self.kind.into(),
            property: self.property,
            window_hours: self.window_hours,
        }
    }
}

#[derive(SimpleObject)]
pub struct Metric {
    key: String,
    event_name: String,
    kind: MetricKind,
    property: Option<String>,
    window_hours: Option<f64>,
}

impl From<&metrics::Metric> for Metric {
    fn from(metric: &metrics::Metric) -> Self {
        Metric {
            key: metric.key.clone(),
            event_name: metric.event_name.clone(),
            kind: metric.kind.into(),
            property: metric.property.clone(),
            window_hours: metric.window_hours,
        }
    }
}

/// GraphQL `Int` is 32-bit; counts beyond it are clamped.
fn int(count: u64) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

pub struct ExperimentResults(results::ExperimentResults);

#[Object]
impl ExperimentResults {
    async fn experiment_id(&self) -> &str {
        &self.0.experiment_id
    }
    /// The cohort the others are compared with.
    async fn control(&self) -> &str {
        &self.0.control
    }
    async fn alpha(&self) -> f64 {
        self.0.alpha
    }
    /// Users analysed, in all cohorts.
    async fn users(&self) -> i32 {
        int(self.0.users)
    }
    async fn computed_at(&self) -> DateTime {
        self.0.computed_at.into()
    }
    /// Every cohort of the experiment, in byte order of the names.
    #[graphql(complexity = "LIST * child_complexity")]
    async fn cohorts(&self) -> Vec<CohortExposure> {
        self.0
            .cohorts
            .iter()
            .map(|exposure| CohortExposure {
                cohort: exposure.cohort.clone(),
                users: int(exposure.users),
                observed_share: exposure.observed_share,
                expected_share: exposure.expected_share,
            })
            .collect()
    }
    /// Whether the cohorts hold the users their weights (over time) should give them.
    async fn srm(&self) -> SampleRatioCheck {
        SampleRatioCheck(self.0.sample_ratio)
    }
    #[graphql(complexity = "LIST * child_complexity")]
    async fn metrics(&self) -> Vec<MetricResult<'_>> {
        self.0.metrics.iter().map(MetricResult).collect()
    }
}

#[derive(SimpleObject)]
pub struct CohortExposure {
    cohort: String,
    users: i32,
    /// users / all analysed users (0 when there are none).
    observed_share: f64,
    /// The share the weights gave, mixed over the weight phases by when users were assigned.
    expected_share: f64,
}

/// The sample-ratio-mismatch check: Pearson's χ² of the cohort sizes against their expected
/// shares. `checked` needs at least 8 users per cohort with an expected share and 2 such cohorts;
/// `ok` is false only when checked and the p-value is below 0.001.
pub struct SampleRatioCheck(SampleRatio);

#[Object]
impl SampleRatioCheck {
    async fn checked(&self) -> bool {
        self.0.checked
    }
    async fn ok(&self) -> bool {
        self.0.ok
    }
    async fn chi_square(&self) -> Option<f64> {
        self.0.chi_square
    }
    async fn p_value(&self) -> Option<f64> {
        self.0.p_value
    }
}

pub struct MetricResult<'a>(&'a results::MetricResult);

#[Object]
impl MetricResult<'_> {
    async fn metric(&self) -> Metric {
        Metric::from(&self.0.metric)
    }
    /// Every cohort of the experiment, in byte order of the names.
    #[graphql(complexity = "LIST * child_complexity")]
    async fn cohorts(&self) -> Vec<CohortMetric<'_>> {
        self.0.cohorts.iter().map(CohortMetric).collect()
    }
}

/// One cohort's values of a metric and, except for control and cohorts where either side has
/// fewer than 2 users, how it compares with control.
pub struct CohortMetric<'a>(&'a results::CohortMetric);

impl CohortMetric<'_> {
    fn comparison(&self) -> Option<&Comparison> {
        self.0.comparison.as_ref()
    }
}

#[Object]
impl CohortMetric<'_> {
    async fn cohort(&self) -> &str {
        &self.0.cohort
    }
    async fn users(&self) -> i32 {
        int(self.0.sample.n)
    }
    /// Σ of the users' values.
    async fn total(&self) -> f64 {
        self.0.sample.sum
    }
    async fn mean(&self) -> f64 {
        self.0.sample.mean()
    }
    /// Sample standard deviation (n − 1 denominator; 0 when fewer than 2 users).
    async fn stddev(&self) -> f64 {
        self.0.sample.stddev()
    }
    /// mean − control's mean.
    async fn diff(&self) -> Option<f64> {
        self.comparison().map(|comparison| comparison.diff)
    }
    /// Welch's (1 − alpha) interval of `diff`.
    async fn diff_ci(&self) -> Option<Vec<f64>> {
        self.comparison()
            .and_then(|comparison| comparison.diff_ci)
            .map(Vec::from)
    }
    /// diff / control's mean (null when that mean is 0).
    async fn lift(&self) -> Option<f64> {
        self.comparison().and_then(|comparison| comparison.lift)
    }
    /// The (1 − alpha) interval of `lift` by the delta method.
    async fn lift_ci(&self) -> Option<Vec<f64>> {
        self.comparison()
            .and_then(|comparison| comparison.lift_ci)
            .map(Vec::from)
    }
    /// Welch's two-sided p-value: how often a difference this large would appear by chance alone.
    async fn p_value(&self) -> Option<f64> {
        self.comparison().and_then(|comparison| comparison.p_value)
    }
    /// The probability this cohort's true mean is above control's (flat priors, normal
    /// approximation).
    async fn chance_to_beat_control(&self) -> Option<f64> {
        self.comparison()
            .map(|comparison| comparison.chance_to_beat_control)
    }
    /// pValue < alpha.
    async fn significant(&self) -> Option<bool> {
        self.comparison()
            .and_then(|comparison| comparison.significant)
    }
}
