//! The ceiling for first assignments: plain clients storing new players' assignments straight into
//! PostgreSQL (same table, same unique index, the server's `INSERT … ON CONFLICT DO NOTHING
//! RETURNING`), with no HTTP in between: one row per commit, and 32-row batches per commit.
//!
//! `cargo run --release --example pg_assignment_ceiling -- <postgres-url> <experiment-id> [seconds] [connections]`
//! prints `SINGLE <rows/s>` and `BATCH32 <rows/s>`. The URL must name a database the server has
//! migrated and the experiment must exist there (bench/run.py passes its benchmark database and
//! experiment).

use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;

#[path = "common/pg.rs"]
mod pg;
use pg::connect;

const BATCH: usize = 32;

#[tokio::main]
async fn main() -> Result<(), tokio_postgres::Error> {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: pg_assignment_ceiling <postgres-url> <experiment-id> [seconds] [connections]";
    let url = args.next().expect(usage);
    let experiment = args.next().expect(usage);
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("seconds"));
    let connections: usize = args.next().map_or(32, |s| s.parse().expect("connections"));
    let duration = Duration::from_secs(seconds);
    let single = run(&url, &experiment, connections, duration, 1).await?;
    let batched = run(&url, &experiment, connections, duration, BATCH).await?;
    println!("SINGLE {single:.0}");
    println!("BATCH{BATCH} {batched:.0}");
    Ok(())
}

/// Rows committed per second by `workers` clients, each committing `rows` new players at a time.
async fn run(
    url: &str,
    experiment: &str,
    workers: usize,
    duration: Duration,
    rows: usize,
) -> Result<f64, tokio_postgres::Error> {
    let started = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let client = connect(url).await?;
        let experiment = experiment.to_owned();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            let insert = client.prepare(&insert_sql(rows)).await?;
            let mut commits = 0u64;
            while started.elapsed() < duration {
                let users: Vec<String> = (0..rows)
                    .map(|row| format!("ceiling-{run_id}-{rows}-{worker}-{commits}-{row}"))
                    .collect();
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows * 2);
                for user in &users {
                    params.extend_from_slice(&[user, &experiment]);
                }
                client.query(&insert, &params).await?;
                commits += 1;
            }
            Ok::<u64, tokio_postgres::Error>(commits)
        }));
    }
    let mut commits = 0;
    for task in tasks {
        commits += task.await.expect("worker panicked")?;
    }
    Ok((commits as usize * rows) as f64 / started.elapsed().as_secs_f64())
}

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO user_experiment_assignments (user_id, experiment_id, cohort, assigned_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(${}, ${}, 'a', now())", row * 2 + 1, row * 2 + 2));
    }
    sql.push_str(
        " ON CONFLICT (user_id, experiment_id) DO NOTHING RETURNING id, user_id, experiment_id, cohort, assigned_at",
    );
    sql
}
