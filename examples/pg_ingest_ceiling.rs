//! The ceiling for ingest: a plain client inserting 100-row batches of analytics rows straight into
//! PostgreSQL (same table, same indexes), as multi-row INSERT and as COPY, with no HTTP in between.
//!
//! `cargo run --release --example pg_ingest_ceiling -- <postgres-url> [seconds] [connections]`
//! prints `INSERT <events/s>` and `COPY <events/s>`. The URL must name a database the server has
//! migrated (bench/run.sh passes its benchmark database).

use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, PgPool, postgres::PgPoolOptions};

const BATCH: usize = 100;

#[tokio::main]
async fn main() -> Result<(), sqlx::Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: pg_ingest_ceiling <postgres-url> [seconds] [connections]");
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("seconds"));
    let connections: usize = args.next().map_or(2, |s| s.parse().expect("connections"));
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32)
        .connect(&url)
        .await?;
    let duration = Duration::from_secs(seconds);
    let insert = run(&pool, connections, duration, Mode::Insert).await?;
    let copy = run(&pool, connections, duration, Mode::Copy).await?;
    println!("INSERT {insert:.0}");
    println!("COPY {copy:.0}");
    Ok(())
}

#[derive(Clone, Copy)]
enum Mode {
    Insert,
    Copy,
}

async fn run(
    pool: &PgPool,
    workers: usize,
    duration: Duration,
    mode: Mode,
) -> Result<f64, sqlx::Error> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut batches = 0u64;
            while started.elapsed() < duration {
                let prefix = format!(
                    "ceiling-{worker}-{batches}-{}",
                    uuid::Uuid::new_v4().simple()
                );
                match mode {
                    Mode::Insert => insert_batch(&pool, &prefix).await?,
                    Mode::Copy => copy_batch(&pool, &prefix).await?,
                }
                batches += 1;
            }
            Ok::<u64, sqlx::Error>(batches)
        }));
    }
    let mut batches = 0;
    for task in tasks {
        batches += task.await.expect("worker panicked")?;
    }
    Ok((batches as usize * BATCH) as f64 / started.elapsed().as_secs_f64())
}

async fn insert_batch(pool: &PgPool, prefix: &str) -> Result<(), sqlx::Error> {
    let mut sql = String::from(
        "INSERT INTO analytics_events (event_id, user_id, session_id, event_name, event_timestamp, received_at, properties) VALUES ",
    );
    for row in 0..BATCH {
        let p = row * 4;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${}, ${}, 's', ${}, now(), now(), ${}::jsonb)",
            p + 1,
            p + 2,
            p + 3,
            p + 4
        ));
    }
    sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
    // Only placeholders are formatted into the text; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in 0..BATCH {
        query = query
            .bind(format!("{prefix}-{row}"))
            .bind("ceiling-user")
            .bind("level_up")
            .bind(r#"{"level": 3, "platform": "ios"}"#);
    }
    query.execute(pool).await?;
    Ok(())
}

async fn copy_batch(pool: &PgPool, prefix: &str) -> Result<(), sqlx::Error> {
    let mut connection = pool.acquire().await?;
    let mut copy = connection
        .copy_in_raw(
            "COPY analytics_events (event_id, user_id, session_id, event_name, event_timestamp, received_at, properties) FROM STDIN",
        )
        .await?;
    let mut data = String::new();
    for row in 0..BATCH {
        data.push_str(&format!(
            "{prefix}-{row}\tceiling-user\ts\tlevel_up\t2026-01-01 00:00:00+00\t2026-01-01 00:00:00+00\t{{\"level\": 3, \"platform\": \"ios\"}}\n"
        ));
    }
    copy.send(data.as_bytes()).await?;
    copy.finish().await?;
    Ok(())
}
