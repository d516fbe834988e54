//! Prometheus metrics (`GET /metrics`, docs/api.md "Operations"): the series' names, and the
//! `metrics` facade's recorder (`metrics-exporter-prometheus`). The domain records through the
//! facade with these names and knows nothing else of metrics; [`requests`] holds the HTTP side
//! (the layer that counts and times every request, and the scrape).

pub mod requests;

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "octp_http_requests_total";
pub const REQUEST_DURATION: &str = "octp_http_request_duration_seconds";
pub const EVENTS: &str = "octp_events_total";
pub const CACHE_HITS: &str = "octp_config_cache_hits_total";
pub const CACHE_MISSES: &str = "octp_config_cache_misses_total";
pub const CACHE_ENTRIES: &str = "octp_config_cache_entries";
pub const ASSIGNMENTS_CREATED: &str = "octp_assignments_created_total";
pub const DB_POOL: &str = "octp_db_pool_connections";
pub const SUBSCRIPTIONS_ACTIVE: &str = "octp_subscriptions_active";

/// From a cached config read (~50 µs) to a slow results query (seconds).
const DURATION_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Histograms keep raw samples until drained; draining this often bounds that memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide recorder, installed on first use (one per process: the `metrics` facade has
/// one global recorder, shared by every server a test process starts).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(REQUEST_DURATION.to_owned()),
                &DURATION_BUCKETS,
            )
            .expect("the bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
        }
        describe();
        register_at_zero();
        metrics_process::Collector::default().describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn the metrics upkeep thread");
        handle
    })
}

/// Series that would otherwise appear only when first moved: present from the start, a dashboard
/// or an alert reads 0 where it would read "no data".
fn register_at_zero() {
    metrics::gauge!(SUBSCRIPTIONS_ACTIVE).increment(0.0);
    for result in ["accepted", "duplicate", "rejected"] {
        metrics::counter!(EVENTS, "result" => result).increment(0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "HTTP requests by transport (graphql, rpc, http), operation and status"
    );
    describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time to answer a request, by transport and operation"
    );
    describe_counter!(
        EVENTS,
        "Analytics events by result: accepted (stored), duplicate (eventId already stored), rejected (invalid batch)"
    );
    describe_counter!(CACHE_HITS, "Remote-config fetches answered from the cache");
    describe_counter!(CACHE_MISSES, "Remote-config fetches that read the database");
    describe_gauge!(CACHE_ENTRIES, "Remote-config fetches cached");
    describe_counter!(
        ASSIGNMENTS_CREATED,
        "First assignments of users to an experiment's cohorts, by experiment"
    );
    describe_gauge!(
        DB_POOL,
        "Database connections of the main pool by state (idle, in_use)"
    );
    describe_gauge!(
        SUBSCRIPTIONS_ACTIVE,
        "GraphQL subscriptions running on this instance"
    );
}
