//! `/metrics` (docs/api.md "Operations") scraped from the real binary (a process of its own, so the
//! counts are its requests alone) and read with a Prometheus text parser; `--metrics-bind`; the
//! `healthcheck` command.

use std::collections::HashSet;

use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestDatabase, free_port, start_binary};

/// The real binary in a process of its own, so its metrics count its requests alone.
pub(crate) struct Server {
    _process: tokio::process::Child,
    port: u16,
    client: reqwest::Client,
}

impl Server {
    pub(crate) async fn start(database: &TestDatabase, extra_args: &[&str]) -> Self {
        let port = free_port();
        Server {
            _process: start_binary(database, port, extra_args, None).await,
            port,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) async fn graphql(&self, key: &str, query: &str, variables: Value) -> Value {
        self.client
            .post(self.url("/graphql"))
            .bearer_auth(key)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn rpc(&self, id: &str, payload: Value) -> reqwest::StatusCode {
        self.client
            .post(self.url(&format!("/v2/rpc/{id}?http_key={HTTP_KEY}")))
            .body(Value::String(payload.to_string()).to_string())
            .send()
            .await
            .unwrap()
            .status()
    }

    pub(crate) async fn scrape(&self) -> Scrape {
        scrape(&self.client, &self.url("/metrics")).await
    }
}

async fn scrape(client: &reqwest::Client, url: &str) -> Scrape {
    scrape_with_text(client, url).await.0
}

/// `/metrics` at `url`, parsed, and its text as served.
pub(crate) async fn scrape_with_text(client: &reqwest::Client, url: &str) -> (Scrape, String) {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    let text = response.text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .expect("Prometheus text format");
    (scrape, text)
}

/// The value of the counter or gauge `metric` with exactly these labels (0 when absent).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == metric && has_labels(sample, labels))
        .collect();
    assert!(matching.len() <= 1, "{metric} {labels:?}: {matching:?}");
    match matching.first().map(|sample| &sample.value) {
        None => 0.0,
        Some(Metric::Counter(value) | Metric::Gauge(value) | Metric::Untyped(value)) => *value,
        Some(other) => panic!("{metric} is not a counter or gauge: {other:?}"),
    }
}

fn has_labels(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(name, wanted)| sample.labels.get(name) == Some(*wanted))
        && sample.labels.len() == labels.len()
}

const COLLECT: &str =
    "mutation($events: [EventInput!]!) { collectEvents(events: $events) { accepted duplicates } }";

#[tokio::test]
async fn counts_move_with_requests_events_caches_and_assignments() {
    let database = TestDatabase::create().await;
    let server = Server::start(&database, &[]).await;
    let before = server.scrape().await;

    let events = json!([{"eventId": "m1", "userId": "u", "eventName": "level_up"},
                        {"eventId": "m2", "userId": "u", "eventName": "level_up"}]);
    server
        .graphql(HTTP_KEY, COLLECT, json!({"events": events}))
        .await;
    let retried = json!([{"eventId": "m2", "userId": "u", "eventName": "level_up"},
                         {"eventId": "m3", "userId": "u", "eventName": "level_up"}]);
    server
        .graphql(HTTP_KEY, COLLECT, json!({"events": retried}))
        .await;
    let invalid = json!([{"userId": "u", "eventName": "no spaces allowed"},
                         {"userId": "", "eventName": "ok"},
                         {"userId": "u", "eventName": "fine"}]);
    let refused = server
        .graphql(HTTP_KEY, COLLECT, json!({"events": invalid}))
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    server
        .graphql(
            ADMIN_KEY,
            "mutation($input: ExperimentInput!) { upsertExperiment(input: $input) { id } }",
            json!({"input": {"id": "exp", "name": "Exp", "cohorts": {"a": 1}}}),
        )
        .await;
    for user in ["p1", "p2", "p3"] {
        let reply = server
            .graphql(
                HTTP_KEY,
                "query($u: String!) { experimentAssignment(userId: $u, experimentId: \"exp\") { cohort } }",
                json!({"u": user}),
            )
            .await;
        assert_eq!(
            reply["data"]["experimentAssignment"]["cohort"], "a",
            "{reply}"
        );
    }
    // The same fetch twice: a miss, then a hit.
    for _ in 0..2 {
        assert_eq!(
            server
                .rpc("FetchRemoteConfig", json!({"userId": "fetcher"}))
                .await,
            200
        );
    }
    assert_eq!(server.rpc("NoSuchRpc", json!({})).await, 404);

    let after = server.scrape().await;
    let delta = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(delta("octp_events_total", &[("result", "accepted")]), 3.0);
    assert_eq!(delta("octp_events_total", &[("result", "duplicate")]), 1.0);
    assert_eq!(delta("octp_events_total", &[("result", "rejected")]), 3.0);
    // Three players asked, and the fetcher was assigned by its merged config fetch.
    assert_eq!(
        delta("octp_assignments_created_total", &[("experiment", "exp")]),
        4.0
    );
    assert_eq!(delta("octp_config_cache_misses_total", &[]), 1.0);
    assert_eq!(delta("octp_config_cache_hits_total", &[]), 1.0);
    assert!(value(&after, "octp_config_cache_entries", &[]) >= 1.0);
    let requests = |transport, operation, status| {
        delta(
            "octp_http_requests_total",
            &[
                ("transport", transport),
                ("operation", operation),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("graphql", "collectEvents", "200"), 3.0);
    assert_eq!(requests("graphql", "experimentAssignment", "200"), 3.0);
    assert_eq!(requests("graphql", "upsertExperiment", "200"), 1.0);
    assert_eq!(requests("rpc", "fetchremoteconfig", "200"), 2.0);
    assert_eq!(requests("rpc", "other", "404"), 1.0);
    assert_eq!(requests("http", "/metrics", "200"), 1.0, "the first scrape");

    // The duration histogram, with buckets from 50 µs up.
    let durations = after
        .samples
        .iter()
        .find(|sample| {
            sample.metric == "octp_http_request_duration_seconds"
                && sample.labels.get("operation") == Some("collectEvents")
        })
        .expect("a duration histogram for collectEvents");
    let Metric::Histogram(buckets) = &durations.value else {
        panic!("not a histogram: {durations:?}");
    };
    assert_eq!(
        buckets.first().map(|bucket| bucket.less_than),
        Some(0.000_05)
    );
    assert_eq!(
        buckets.last().map(|bucket| bucket.count),
        Some(3.0),
        "{buckets:?}"
    );

    assert!(value(&after, "octp_db_pool_connections", &[("state", "idle")]) >= 0.0);
    assert!(
        value(&after, "octp_db_pool_connections", &[("state", "idle")])
            + value(&after, "octp_db_pool_connections", &[("state", "in_use")])
            >= 1.0
    );
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1_000_000.0);
    // metrics-process counts whole seconds: a young process may still show 0.
    assert!(
        after
            .samples
            .iter()
            .any(|sample| sample.metric == "process_cpu_seconds_total")
    );
    assert_eq!(value(&after, "octp_subscriptions_active", &[]), 0.0);
}

#[tokio::test]
async fn no_request_can_add_series() {
    let database = TestDatabase::create().await;
    let server = Server::start(&database, &[]).await;
    server.scrape().await;
    let series = |scrape: &Scrape| -> HashSet<String> {
        scrape
            .samples
            .iter()
            .filter(|sample| sample.metric.starts_with("octp_http_"))
            .map(|sample| {
                let mut labels: Vec<_> = sample.labels.iter().collect();
                labels.sort();
                format!("{} {labels:?}", sample.metric)
            })
            .collect()
    };
    // Warm up every label a random request can land on, then count.
    let server = &server;
    let hostile = |index: usize| async move {
        let client = &server.client;
        match index % 4 {
            0 => {
                client
                    .post(server.url("/graphql"))
                    .bearer_auth(HTTP_KEY)
                    .json(&json!({"query": format!("{{ field{index} }}")}))
                    .send()
                    .await
                    .unwrap();
            }
            1 => {
                server.rpc(&format!("rpc{index}"), json!({})).await;
            }
            2 => {
                client
                    .get(server.url(&format!("/path{index}")))
                    .send()
                    .await
                    .unwrap();
            }
            _ => {
                client
                    .post(server.url("/graphql"))
                    .bearer_auth(HTTP_KEY)
                    .json(
                        &json!({"query": format!("query Q{index} {{ health {{ status }} }}"),
                                  "operationName": format!("Q{index}")}),
                    )
                    .send()
                    .await
                    .unwrap();
            }
        }
    };
    for index in 0..8 {
        hostile(index).await;
    }
    let warmed = series(&server.scrape().await);
    for index in 8..1_008 {
        hostile(index).await;
    }
    let after = series(&server.scrape().await);
    let added: Vec<&String> = after.difference(&warmed).collect();
    assert!(
        added.is_empty(),
        "1,000 random requests added series: {added:?}"
    );
    assert!(after.len() < 40, "{} series: {after:?}", after.len());
}

#[tokio::test]
async fn metrics_bind_moves_metrics_to_their_own_listener() {
    let database = TestDatabase::create().await;
    let metrics_port = free_port();
    let address = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(&database, &["--metrics-bind", &address]).await;
    let scraped = scrape(&server.client, &format!("http://{address}/metrics")).await;
    assert!(
        scraped
            .samples
            .iter()
            .any(|sample| sample.metric == "process_resident_memory_bytes")
    );
    let on_api = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404);
}

#[tokio::test]
async fn the_healthcheck_command_exits_0_only_for_a_ready_server() {
    let database = TestDatabase::create().await;
    let server = Server::start(&database, &[]).await;
    let healthcheck = |url: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_octp-backend"))
            .args(["healthcheck", "--url", &url])
            .output()
            .await
            .unwrap()
    };
    let ready = healthcheck(server.url("/readyz")).await;
    assert!(ready.status.success(), "{ready:?}");
    // The default URL: /readyz on --bind's port.
    let by_default = tokio::process::Command::new(env!("CARGO_BIN_EXE_octp-backend"))
        .args(["healthcheck", "--bind", &format!("0.0.0.0:{}", server.port)])
        .output()
        .await
        .unwrap();
    assert!(by_default.status.success(), "{by_default:?}");
    let missing = healthcheck(server.url("/no-such-page")).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );
    let closed = healthcheck(format!("http://127.0.0.1:{}/readyz", free_port())).await;
    assert!(!closed.status.success());
    assert!(
        String::from_utf8_lossy(&closed.stderr).contains("cannot reach"),
        "{closed:?}"
    );
}
