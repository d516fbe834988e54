use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestApp};

const HEALTH: &str = "{ health { status version uptimeSeconds database { ok backend latencyMs migrationsApplied migrationsPending error } } }";

#[tokio::test]
async fn health_reports_status_version_uptime_and_a_reachable_migrated_database() {
    let app = TestApp::spawn().await;

    let data = app.gql(HEALTH, json!({})).await;

    let health = &data["health"];
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptimeSeconds"].as_f64().unwrap() >= 0.0);
    let database = &health["database"];
    assert_eq!(database["ok"], true);
    let backend = if app.database.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(database["backend"], backend);
    assert!(database["latencyMs"].as_f64().unwrap() >= 0.0);
    assert_eq!(database["migrationsApplied"], 8);
    assert_eq!(database["migrationsPending"], 0);
    assert_eq!(database["error"], Value::Null);
}

#[tokio::test]
async fn health_cache_part_reports_the_configured_ttl_and_counters() {
    let app = TestApp::spawn_with(crate::helpers::TestDatabase::create().await, |config| {
        config.cache.config_ttl_secs = 17;
    })
    .await;

    let data = app
        .gql(
            "{ health { cache { entries hits misses ttlSeconds } } }",
            json!({}),
        )
        .await;

    assert_eq!(
        data["health"]["cache"],
        json!({"entries": 0, "hits": 0, "misses": 0, "ttlSeconds": 17})
    );
}

#[tokio::test]
async fn a_request_without_a_key_is_refused_with_401_unauthenticated() {
    let app = TestApp::spawn().await;

    let (status, body) = app.gql_as(None, "{ health { status } }", json!({})).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert!(body.get("data").is_none_or(Value::is_null));
}

#[tokio::test]
async fn a_wrong_key_is_refused_whether_sent_as_bearer_or_query_parameter() {
    let app = TestApp::spawn().await;

    let (status, _) = app
        .gql_as(Some("not-the-key"), "{ health { status } }", json!({}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let code = app
        .gql_err_code(Some("not-the-key"), "{ health { status } }", json!({}))
        .await;
    assert_eq!(code, "UNAUTHENTICATED");

    let response = app
        .client
        .get(app.url("/graphql?query=%7B%20health%20%7B%20status%20%7D%20%7D&http_key=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let empty_key = app
        .client
        .get(app.url("/graphql?query=%7Bhealth%7Bstatus%7D%7D&http_key="))
        .send()
        .await
        .unwrap();
    assert_eq!(empty_key.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_http_key_works_as_query_parameter_and_the_admin_key_as_bearer() {
    let app = TestApp::spawn().await;

    let by_query: Value = app
        .client
        .get(app.url(&format!(
            "/graphql?query=%7Bhealth%7Bstatus%7D%7D&http_key={HTTP_KEY}"
        )))
        // A GET needs a header no cross-site page can send (CSRF); the key may still be a parameter.
        .header("graphql-preflight", "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_query["data"]["health"]["status"], "ok");

    let (status, by_admin) = app
        .gql_as(Some(ADMIN_KEY), "{ health { status } }", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_admin["data"]["health"]["status"], "ok");
}

#[tokio::test]
async fn liveness_and_readiness_probes_answer_without_a_key() {
    let app = TestApp::spawn().await;

    for (path, expected) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], expected, "{path}");
    }
}
