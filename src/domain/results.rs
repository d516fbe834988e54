//! Experiment results: which cohort won. The analysed users are the stored assignments (the
//! assignment is the exposure; users without events count as 0); the database aggregates their
//! qualifying events per user and per cohort, and [`statistics`] compares each cohort with control.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::{
    auth::Role,
    db::results::{self, Analysis},
    domain::{
        assignment::CohortWeights,
        events::EventStore,
        experiments::{Experiment, ExperimentService},
        ids::Slug,
        metrics::{self, Metric},
        statistics::{self, Comparison, Phase, Sample, SampleRatio},
        validate::{self, TimestampValue},
    },
    error::{Error, FieldError, FieldErrors, Result},
};

/// `alpha` when the query gives none.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// The cohort taken as control when the query names none, if the experiment has one so named.
const CONTROL: &str = "control";

/// `experimentResults` as the client asked it.
#[derive(Debug, Clone)]
pub struct ResultsQuery {
    pub experiment_id: String,
    /// Absent: the experiment's saved metrics.
    pub metrics: Option<Vec<Metric>>,
    pub control: Option<String>,
    pub since: Option<TimestampValue>,
    pub until: Option<TimestampValue>,
    pub alpha: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentResults {
    pub experiment_id: String,
    pub control: String,
    pub alpha: f64,
    pub users: u64,
    pub computed_at: DateTime<Utc>,
    pub cohorts: Vec<CohortExposure>,
    pub sample_ratio: SampleRatio,
    pub metrics: Vec<MetricResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CohortExposure {
    pub cohort: String,
    pub users: u64,
    pub observed_share: f64,
    pub expected_share: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    pub metric: Metric,
    pub cohorts: Vec<CohortMetric>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CohortMetric {
    pub cohort: String,
    pub sample: Sample,
    /// Against control; `None` for control itself and when either side has fewer than 2 users.
    pub comparison: Option<Comparison>,
}

#[derive(Clone)]
pub struct ResultsService {
    /// The pool heavy reads go through, so an analysis never holds the hot path's connections.
    db: DatabaseConnection,
    experiments: ExperimentService,
    events: EventStore,
}

impl ResultsService {
    pub fn new(db: DatabaseConnection, experiments: ExperimentService, events: EventStore) -> Self {
        ResultsService {
            db,
            experiments,
            events,
        }
    }

    /// The experiment's results (admin key).
    #[tracing::instrument(skip_all, fields(experiment_id = %query.experiment_id))]
    pub async fn results(&self, caller: Role, query: ResultsQuery) -> Result<ExperimentResults> {
        caller.require_admin()?;
        let mut errors = FieldErrors::default();
        let experiment_id = errors.take(Slug::parse("experimentId", query.experiment_id));
        if !(query.alpha > 0.0 && query.alpha < 0.5) {
            errors.push(FieldError::new(
                "alpha",
                format!(
                    "must be greater than 0 and less than 0.5 (got {})",
                    query.alpha
                ),
            ));
        }
        if let Some(listed) = &query.metrics
            && let Err(problems) = metrics::parse_metrics("metrics", listed, 1)
        {
            errors.extend(problems);
        }
        let (since, until) = errors.time_range(
            ("since", query.since.as_ref()),
            ("until", query.until.as_ref()),
        );
        errors.into_result()?;
        let experiment_id = experiment_id.ok_or(Error::Internal)?;
        let experiment = self
            .experiments
            .get(&experiment_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("experiment not found: {experiment_id}")))?;
        let metrics = match query.metrics {
            Some(listed) => listed,
            None if experiment.metrics.is_empty() => {
                return Err(Error::bad_input(vec![FieldError::new(
                    "metrics",
                    "none given, and the experiment has no saved metrics: list 1 to 20 here or save them with upsertExperiment",
                )]));
            }
            None => experiment.metrics.clone(),
        };
        let control = control_cohort(&experiment, query.control.as_deref())?;

        let cohorts: Vec<&str> = experiment.cohorts.iter().map(|(name, _)| name).collect();
        let analysis = Analysis {
            experiment_id: &experiment.id,
            cohorts: &cohorts,
            metrics: &metrics,
            since,
            until,
        };
        let phase_starts = self.phase_starts(caller, &experiment).await?;
        let boundaries: Vec<DateTime<Utc>> =
            phase_starts.iter().skip(1).map(|(at, _)| *at).collect();
        let aggregates = match &self.events {
            EventStore::Main => results::aggregate(&self.db, &analysis, &boundaries).await?,
            EventStore::ClickHouse(store) => store
                .aggregate(&analysis, &boundaries)
                .await
                .map_err(crate::domain::events::store_unavailable)?,
        };
        let phases = phases(&experiment, &phase_starts, &aggregates);
        Ok(assemble(
            &experiment,
            control,
            query.alpha,
            metrics,
            &aggregates.cohorts,
            &phases,
        ))
    }

    /// When each of the experiment's weight phases began, and its weights: a phase starts at
    /// each recorded change that moved the weights (other changes leave the split alone).
    async fn phase_starts(
        &self,
        caller: Role,
        experiment: &Experiment,
    ) -> Result<Vec<(DateTime<Utc>, CohortWeights)>> {
        let mut starts: Vec<(DateTime<Utc>, CohortWeights)> = Vec::new();
        for change in self.experiments.history(caller, &experiment.id).await? {
            if starts
                .last()
                .is_none_or(|(_, last)| *last != change.cohorts)
            {
                starts.push((change.at, change.cohorts));
            }
        }
        if starts.is_empty() {
            starts.push((experiment.created_at, experiment.cohorts.clone()));
        }
        Ok(starts)
    }
}

/// The phases with their analysed users: those assigned from the phase's start until the next
/// (before the first recorded change: the first phase). Weights are in the experiment's cohort
/// order, 0 for a cohort the phase did not have; shares are taken among today's cohorts, since
/// users still stored in a removed cohort are not analysed.
fn phases(
    experiment: &Experiment,
    starts: &[(DateTime<Utc>, CohortWeights)],
    aggregates: &results::Aggregates,
) -> Vec<Phase> {
    let total: u64 = aggregates.cohorts.iter().map(|cohort| cohort.users).sum();
    let mut counted = 0;
    starts
        .iter()
        .enumerate()
        .map(|(index, (_, weights))| {
            let through = aggregates
                .assigned_before
                .get(index)
                .copied()
                .unwrap_or(total);
            let users = through.saturating_sub(counted);
            counted = counted.max(through);
            Phase {
                users,
                weights: experiment
                    .cohorts
                    .iter()
                    .map(|(name, _)| weights.weight(name))
                    .collect(),
            }
        })
        .collect()
}

/// The named control, else the cohort called `control`, else the first in byte order.
fn control_cohort(experiment: &Experiment, named: Option<&str>) -> Result<String> {
    match named {
        Some(name) if experiment.cohorts.contains(name) => Ok(name.to_owned()),
        Some(name) => Err(Error::bad_input(vec![FieldError::new(
            "control",
            format!(
                "{name:?} is not a cohort of experiment {} (cohorts: {})",
                experiment.id,
                experiment
                    .cohorts
                    .iter()
                    .map(|(cohort, _)| cohort)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )])),
        None if experiment.cohorts.contains(CONTROL) => Ok(CONTROL.to_owned()),
        None => experiment
            .cohorts
            .iter()
            .next()
            .map(|(cohort, _)| cohort.to_owned())
            .ok_or(Error::Internal),
    }
}

/// Everything the database gave, put through the statistics.
fn assemble(
    experiment: &Experiment,
    control: String,
    alpha: f64,
    metrics: Vec<Metric>,
    sums: &[results::CohortSums],
    phases: &[Phase],
) -> ExperimentResults {
    let cohorts: Vec<&str> = experiment.cohorts.iter().map(|(name, _)| name).collect();
    let of = |cohort: &str| sums.iter().find(|found| found.cohort == cohort);
    let users_of: Vec<u64> = cohorts
        .iter()
        .map(|cohort| of(cohort).map_or(0, |found| found.users))
        .collect();
    let total: u64 = users_of.iter().sum();
    let expected = statistics::expected_shares(phases);
    let exposure = cohorts
        .iter()
        .zip(&users_of)
        .enumerate()
        .map(|(index, (cohort, users))| CohortExposure {
            cohort: (*cohort).to_owned(),
            users: *users,
            observed_share: if total == 0 {
                0.0
            } else {
                *users as f64 / total as f64
            },
            expected_share: expected.get(index).copied().unwrap_or(0.0),
        })
        .collect();
    let sample_of = |cohort: &str, metric: usize| -> Sample {
        of(cohort).map_or(
            Sample {
                n: 0,
                sum: 0.0,
                sum_of_squares: 0.0,
            },
            |found| Sample {
                n: found.users,
                sum: found.metrics[metric].0,
                sum_of_squares: found.metrics[metric].1,
            },
        )
    };
    let metric_results = metrics
        .into_iter()
        .enumerate()
        .map(|(index, metric)| {
            let control_sample = sample_of(&control, index);
            MetricResult {
                metric,
                cohorts: cohorts
                    .iter()
                    .map(|cohort| {
                        let sample = sample_of(cohort, index);
                        CohortMetric {
                            cohort: (*cohort).to_owned(),
                            sample,
                            comparison: if *cohort == control {
                                None
                            } else {
                                statistics::compare(&sample, &control_sample, alpha)
                            },
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    ExperimentResults {
        experiment_id: experiment.id.clone(),
        control,
        alpha,
        users: total,
        computed_at: validate::truncate_to_micros(Utc::now()),
        cohorts: exposure,
        sample_ratio: statistics::sample_ratio(&users_of, &expected),
        metrics: metric_results,
    }
}
