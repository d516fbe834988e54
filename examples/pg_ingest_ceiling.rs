//! The ceiling for ingest: a plain client inserting 100-row batches of analytics rows straight into
//! PostgreSQL (same table, same indexes), as multi-row INSERT and as COPY, with no HTTP in between.
//!
//! `cargo run --release --example pg_ingest_ceiling -- <postgres-url> [seconds] [connections]`
//! prints `INSERT <events/s>` and `COPY <events/s>`. The URL must name a database the server has
//! migrated (bench/run.py passes its benchmark database). tokio-postgres is used because it sets
//! TCP_NODELAY: a COPY ends with a tiny CopyDone message that would otherwise wait out the
//! server's delayed ACK (~40 ms) on every batch.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, types::ToSql};

#[path = "common/pg.rs"]
mod pg;
use pg::connect;

const BATCH: usize = 100;

#[tokio::main]
async fn main() -> Result<(), tokio_postgres::Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: pg_ingest_ceiling <postgres-url> [seconds] [connections]");
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("seconds"));
    let connections: usize = args.next().map_or(2, |s| s.parse().expect("connections"));
    let duration = Duration::from_secs(seconds);
    let insert = run(&url, connections, duration, Mode::Insert).await?;
    let copy = run(&url, connections, duration, Mode::Copy).await?;
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
    url: &str,
    workers: usize,
    duration: Duration,
    mode: Mode,
) -> Result<f64, tokio_postgres::Error> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let client = connect(url).await?;
        tasks.push(tokio::spawn(async move {
            let mut batches = 0u64;
            let insert = client.prepare(&insert_sql()).await?;
            while started.elapsed() < duration {
                let prefix = format!(
                    "ceiling-{worker}-{batches}-{}",
                    uuid::Uuid::new_v4().simple()
                );
                match mode {
                    Mode::Insert => {
                        let ids: Vec<String> =
                            (0..BATCH).map(|row| format!("{prefix}-{row}")).collect();
                        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(BATCH * 4);
                        for id in &ids {
                            params.extend_from_slice(&[
                                id,
                                &"ceiling-user",
                                &"level_up",
                                &PROPERTIES,
                            ]);
                        }
                        client.execute(&insert, &params).await?;
                    }
                    Mode::Copy => copy_batch(&client, &prefix).await?,
                }
                batches += 1;
            }
            Ok::<u64, tokio_postgres::Error>(batches)
        }));
    }
    let mut batches = 0;
    for task in tasks {
        batches += task.await.expect("worker panicked")?;
    }
    Ok((batches as usize * BATCH) as f64 / started.elapsed().as_secs_f64())
}

const PROPERTIES: &str = r#"{"level": 3, "platform": "ios", "coins": 120}"#;

fn insert_sql() -> String {
    let mut sql = String::from(
        "INSERT INTO analytics_events (event_id, user_id, session_id, event_name, event_timestamp, received_at, properties) VALUES ",
    );
    for row in 0..BATCH {
        let p = row * 4;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${}, ${}, 's', ${}, now(), now(), ${}::text::jsonb)",
            p + 1,
            p + 2,
            p + 3,
            p + 4
        ));
    }
    sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
    sql
}

async fn copy_batch(client: &Client, prefix: &str) -> Result<(), tokio_postgres::Error> {
    let sink = client
        .copy_in(
            "COPY analytics_events (event_id, user_id, session_id, event_name, event_timestamp, received_at, properties) FROM STDIN",
        )
        .await?;
    let mut data = String::new();
    for row in 0..BATCH {
        data.push_str(&format!(
            "{prefix}-{row}\tceiling-user\ts\tlevel_up\t2026-01-01 00:00:00+00\t2026-01-01 00:00:00+00\t{PROPERTIES}\n"
        ));
    }
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(data)).await?;
    sink.finish().await?;
    Ok(())
}
