//! Micro-benchmarks of the pure functions on the hot paths: `cargo bench --bench hot_paths`.

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use octp_backend::domain::{
    assignment::{self, CohortWeights},
    config::overlay,
    events::{EventInput, validate_batch},
    validate::TimestampValue,
};
use serde_json::json;

fn assignment_hash(c: &mut Criterion) {
    let weights = CohortWeights::parse(&json!({"control": 1, "cheap": 1, "premium": 2})).unwrap();
    c.bench_function("assign (BLAKE3 draw + cohort pick, 3 cohorts)", |b| {
        b.iter(|| {
            assignment::assign(
                "shop_prices",
                std::hint::black_box("7f3c2a9e-0b1d-4e55-9a61-2f4e8c1d0b77"),
                &weights,
            )
        })
    });
}

fn config_merge(c: &mut Criterion) {
    let global = json!({"coins": 100, "theme": "dark", "ads": true, "limits": {"daily": 5}});
    let layers = [
        json!({"theme": "light", "tutorial": "short"}),
        json!({"coins": 150, "limits": {"daily": 7}}),
    ];
    c.bench_function("overlay global + 2 experiment layers", |b| {
        b.iter(|| {
            let mut merged = global.as_object().cloned().unwrap();
            for layer in &layers {
                overlay(&mut merged, layer);
            }
            merged
        })
    });
}

fn event_validation(c: &mut Criterion) {
    let batch: Vec<EventInput> = (0..100)
        .map(|i| EventInput {
            event_id: Some(format!("event-{i}")),
            user_id: "player-1".into(),
            session_id: Some("session-1".into()),
            event_name: "level_up".into(),
            timestamp: Some(TimestampValue::Text("2026-01-31T12:00:00+02:00".into())),
            properties: Some(json!({"level": i, "platform": "ios", "coins": 120})),
            ..EventInput::default()
        })
        .collect();
    c.bench_function("validate a batch of 100 events", |b| {
        b.iter_batched(
            || batch.clone(),
            |batch| validate_batch(batch, Utc::now()),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(hot_paths, assignment_hash, config_merge, event_validation);
criterion_main!(hot_paths);
