//! The aggregation behind experiment results, done by the database: each analysed user's value per
//! metric (one pass over their qualifying events), then per cohort n, Σy and Σy². One statement for
//! all metrics, the same shape on both backends; only instants and JSON differ.
//!
//! Instants: PostgreSQL compares `timestamptz`. SQLite stores them as RFC 3339 text in UTC (what
//! sqlx writes: `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]+00:00`), which sorts as time for plain
//! comparisons; the window after assignment needs arithmetic, which SQLite's date functions do only
//! to the millisecond, so there the text is turned into whole microseconds by hand.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, Statement, Value};

use crate::{
    db::Backend,
    domain::metrics::{Metric, MetricKind},
};

/// Who and what one analysis covers.
pub struct Analysis<'a> {
    pub experiment_id: &'a str,
    /// The experiment's cohorts; users stored in any other cohort are left out.
    pub cohorts: &'a [&'a str],
    pub metrics: &'a [Metric],
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// One cohort's analysed users and, per metric in the analysis' order, (Σy, Σy²).
#[derive(Debug, Clone, PartialEq)]
pub struct CohortSums {
    pub cohort: String,
    pub users: u64,
    pub metrics: Vec<(f64, f64)>,
}

/// Per cohort of the analysis that has users (in no particular order).
pub async fn cohort_sums(
    db: &impl ConnectionTrait,
    analysis: &Analysis<'_>,
) -> Result<Vec<CohortSums>, DbErr> {
    let backend = Backend::of_backend(db.get_database_backend());
    let mut sql = Sql::new(backend);
    let windowed = analysis
        .metrics
        .iter()
        .any(|metric| metric.window_hours.is_some());
    sql.push("WITH a AS (SELECT user_id, cohort, assigned_at");
    if windowed && backend == Backend::Sqlite {
        sql.push(", ");
        sql.push(&sqlite_micros("assigned_at"));
        sql.push(" AS assigned_us");
    }
    sql.push(" FROM user_experiment_assignments WHERE ");
    analysed_users(&mut sql, analysis);
    sql.push("), y AS (SELECT a.cohort AS cohort");
    for (index, metric) in analysis.metrics.iter().enumerate() {
        sql.push(", ");
        user_value(&mut sql, metric);
        sql.push(&format!(" AS y{index}"));
    }
    sql.push(
        " FROM a LEFT JOIN analytics_events e ON e.user_id = a.user_id \
         AND e.event_timestamp >= a.assigned_at AND e.event_name IN (",
    );
    let mut names: Vec<&str> = analysis
        .metrics
        .iter()
        .map(|metric| metric.event_name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    sql.list(names.iter().map(|name| Value::from(*name)));
    sql.push(")");
    if let Some(since) = analysis.since {
        sql.push(" AND e.event_timestamp >= ");
        sql.bind(since);
    }
    if let Some(until) = analysis.until {
        sql.push(" AND e.event_timestamp < ");
        sql.bind(until);
    }
    sql.push(" GROUP BY a.user_id, a.cohort) SELECT cohort, COUNT(*) AS users");
    for index in 0..analysis.metrics.len() {
        sql.push(&format!(
            ", CAST(SUM(y{index}) AS DOUBLE PRECISION) AS s{index}, \
             CAST(SUM(y{index} * y{index}) AS DOUBLE PRECISION) AS q{index}"
        ));
    }
    sql.push(" FROM y GROUP BY cohort");

    let rows = db.query_all_raw(sql.statement()).await?;
    rows.iter()
        .map(|row| {
            let users: i64 = row.try_get_by_index(1)?;
            let metrics = (0..analysis.metrics.len())
                .map(|index| {
                    let sum: Option<f64> = row.try_get_by_index(2 + 2 * index)?;
                    let squares: Option<f64> = row.try_get_by_index(3 + 2 * index)?;
                    Ok((sum.unwrap_or(0.0), squares.unwrap_or(0.0)))
                })
                .collect::<Result<_, DbErr>>()?;
            Ok(CohortSums {
                cohort: row.try_get_by_index(0)?,
                users: users.max(0) as u64,
                metrics,
            })
        })
        .collect()
}

/// How many analysed users were assigned before each of `boundaries` (ascending), in one scan per
/// 64 boundaries.
pub async fn users_assigned_before(
    db: &impl ConnectionTrait,
    analysis: &Analysis<'_>,
    boundaries: &[DateTime<Utc>],
) -> Result<Vec<u64>, DbErr> {
    let backend = Backend::of_backend(db.get_database_backend());
    let mut counts = Vec::with_capacity(boundaries.len());
    for chunk in boundaries.chunks(64) {
        let mut sql = Sql::new(backend);
        sql.push("SELECT ");
        for (index, boundary) in chunk.iter().enumerate() {
            if index > 0 {
                sql.push(", ");
            }
            sql.push("CAST(COALESCE(SUM(CASE WHEN assigned_at < ");
            sql.bind(*boundary);
            sql.push(" THEN 1 ELSE 0 END), 0) AS BIGINT)");
        }
        sql.push(" FROM user_experiment_assignments WHERE ");
        analysed_users(&mut sql, analysis);
        let row = db
            .query_one_raw(sql.statement())
            .await?
            .ok_or_else(|| DbErr::Custom("an aggregate returned no row".to_owned()))?;
        for index in 0..chunk.len() {
            let count: i64 = row.try_get_by_index(index)?;
            counts.push(count.max(0) as u64);
        }
    }
    Ok(counts)
}

/// The filter on `user_experiment_assignments` that picks the analysed users.
fn analysed_users(sql: &mut Sql, analysis: &Analysis<'_>) {
    sql.push("experiment_id = ");
    sql.bind(analysis.experiment_id);
    sql.push(" AND cohort IN (");
    sql.list(analysis.cohorts.iter().map(|cohort| Value::from(*cohort)));
    sql.push(")");
    if let Some(until) = analysis.until {
        sql.push(" AND assigned_at < ");
        sql.bind(until);
    }
}

/// A user's value of one metric, aggregated over the user's joined events (none: 0).
fn user_value(sql: &mut Sql, metric: &Metric) {
    let (aggregate, counted) = match metric.kind {
        MetricKind::Conversion => ("MAX", None),
        MetricKind::Count => ("SUM", None),
        MetricKind::Sum => ("SUM", metric.property.as_deref()),
    };
    sql.push(aggregate);
    sql.push("(CASE WHEN e.event_name = ");
    sql.bind(metric.event_name.as_str());
    if let Some(micros) = metric.window_micros() {
        match sql.backend {
            Backend::Postgres => {
                sql.push(" AND e.event_timestamp < a.assigned_at + ");
                sql.bind(micros);
                sql.push(" * INTERVAL '1 microsecond'");
            }
            Backend::Sqlite => {
                sql.push(" AND ");
                sql.push(&sqlite_micros("e.event_timestamp"));
                sql.push(" < a.assigned_us + ");
                sql.bind(micros);
            }
        }
    }
    match counted {
        None => sql.push(" THEN 1 ELSE 0 END)"),
        Some(property) => match sql.backend {
            // `->>` gives a JSON number's own text, which float8 reads exactly as JSON means it.
            Backend::Postgres => {
                sql.push(" AND jsonb_typeof(e.properties -> ");
                sql.bind(property);
                sql.push(") = 'number' THEN (e.properties ->> ");
                sql.bind(property);
                sql.push(")::float8 ELSE CAST(0 AS DOUBLE PRECISION) END)");
            }
            Backend::Sqlite => {
                let path = format!("$.\"{property}\"");
                sql.push(" AND json_type(e.properties, ");
                sql.bind(path.clone());
                sql.push(") IN ('integer', 'real') THEN json_extract(e.properties, ");
                sql.bind(path);
                sql.push(") ELSE 0.0 END)");
            }
        },
    }
}

/// SQLite: the stored instant in `column` as whole microseconds since the epoch. The fraction has
/// 0, 3 or 6 digits before the fixed `+00:00`.
fn sqlite_micros(column: &str) -> String {
    format!(
        "(unixepoch(substr({column}, 1, 19)) * 1000000 + CASE WHEN length({column}) > 25 \
         THEN CAST(substr(substr({column}, 21, length({column}) - 26) || '000000', 1, 6) AS INTEGER) \
         ELSE 0 END)"
    )
}

/// A statement built left to right, with the backend's placeholders.
struct Sql {
    backend: Backend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: Backend) -> Self {
        Sql {
            backend,
            text: String::with_capacity(1024),
            values: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn bind(&mut self, value: impl Into<Value>) {
        self.values.push(value.into());
        match self.backend {
            Backend::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.values.len().to_string());
            }
            Backend::Sqlite => self.text.push('?'),
        }
    }

    fn list(&mut self, values: impl Iterator<Item = Value>) {
        for (index, value) in values.enumerate() {
            if index > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
    }

    fn statement(self) -> Statement {
        let backend = match self.backend {
            Backend::Postgres => sea_orm::DatabaseBackend::Postgres,
            Backend::Sqlite => sea_orm::DatabaseBackend::Sqlite,
        };
        Statement::from_sql_and_values(backend, self.text, self.values)
    }
}
