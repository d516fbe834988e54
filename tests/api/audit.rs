//! The audit log and experiment history (docs/api.md §10).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestApp, TestDatabase};

const AUDIT: &str = "query($first: Int, $after: String, $type: String, $id: String) { auditLog(first: $first, after: $after, entityType: $type, entityId: $id) { nodes { id at actor action entityType entityId before after } pageInfo { hasNextPage endCursor } } }";
const EXPERIMENT_HISTORY: &str = "query($id: String!) { experiment(id: $id) { history { at actor cohorts { name weight } salt active startAt endAt } } }";
const UPSERT: &str =
    "mutation($input: ExperimentInput!) { upsertExperiment(input: $input) { id } }";
const SET_ACTIVE: &str = "mutation($id: String!, $active: Boolean!) { setExperimentActive(id: $id, active: $active) { id } }";
const UPDATE: &str = "mutation($e: String, $c: String, $config: JSON!, $expected: Int) { updateRemoteConfig(experimentId: $e, cohort: $c, config: $config, expectedVersion: $expected) { version } }";

async fn audit(app: &TestApp, variables: Value) -> Value {
    audit_as(app, ADMIN_KEY, variables).await
}

async fn audit_as(app: &TestApp, key: &str, variables: Value) -> Value {
    let (status, body) = app.gql_as(Some(key), AUDIT, variables).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["auditLog"].clone()
}

fn actions(page: &Value) -> Vec<String> {
    page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            format!(
                "{} {}/{}",
                node["action"].as_str().unwrap(),
                node["entityType"].as_str().unwrap(),
                node["entityId"].as_str().unwrap()
            )
        })
        .collect()
}

async fn history(app: &TestApp, id: &str) -> Vec<Value> {
    app.admin(EXPERIMENT_HISTORY, json!({"id": id})).await["experiment"]["history"]
        .as_array()
        .unwrap()
        .clone()
}

fn weights(change: &Value) -> Vec<(String, f64)> {
    change["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cohort| {
            (
                cohort["name"].as_str().unwrap().to_owned(),
                cohort["weight"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_admin_write_is_in_the_audit_log_with_who_what_and_from_what_to_what() {
    let app = TestApp::spawn_with(TestDatabase::create().await, |config| {
        config.keys.admin_key = "alice:alice-secret,bob:bob-secret".to_owned();
    })
    .await;
    let as_alice = |query: &'static str, variables: Value| {
        let app = &app;
        async move {
            let (status, body) = app.gql_as(Some("alice-secret"), query, variables).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body["errors"].is_null(), "{body}");
        }
    };
    as_alice(
        UPSERT,
        json!({"input": {"id": "shop", "name": "Shop", "cohorts": {"a": 1, "b": 1}}}),
    )
    .await;
    as_alice(SET_ACTIVE, json!({"id": "shop", "active": false})).await;
    as_alice(
        UPDATE,
        json!({"e": "shop", "c": "a", "config": {"price": 5}}),
    )
    .await;
    as_alice(
        UPDATE,
        json!({"e": "shop", "c": "a", "config": {"price": 6}}),
    )
    .await;
    let rpc = app
        .client
        .post(app.url("/v2/rpc/UpdateRemoteConfig?http_key=bob-secret"))
        .json(&json!({"config": {"coins": 1}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(rpc.status(), StatusCode::OK);
    let (_, body) = app
        .gql_as(
            Some("bob-secret"),
            "mutation { rollbackRemoteConfig(experimentId: \"shop\", cohort: \"a\", toVersion: 1) { version } }",
            json!({}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");

    let page = audit_as(&app, "alice-secret", json!({})).await;
    assert_eq!(
        actions(&page),
        [
            "rollbackRemoteConfig config/shop/a",
            "UpdateRemoteConfig config/global/default",
            "updateRemoteConfig config/shop/a",
            "updateRemoteConfig config/shop/a",
            "setExperimentActive experiment/shop",
            "upsertExperiment experiment/shop",
        ]
    );
    let nodes = page["nodes"].as_array().unwrap();
    let actors: Vec<&str> = nodes.iter().map(|n| n["actor"].as_str().unwrap()).collect();
    assert_eq!(actors, ["bob", "bob", "alice", "alice", "alice", "alice"]);
    assert_eq!(
        nodes[0]["before"],
        json!({"version": 2, "config": {"price": 6}})
    );
    assert_eq!(
        nodes[0]["after"],
        json!({"version": 3, "config": {"price": 5}})
    );
    assert_eq!(
        nodes[1]["before"],
        Value::Null,
        "the RPC created the global config"
    );
    assert_eq!(
        nodes[1]["after"],
        json!({"version": 1, "config": {"coins": 1}})
    );
    assert_eq!(nodes[4]["before"]["active"], true);
    assert_eq!(nodes[4]["after"]["active"], false);
    assert_eq!(nodes[5]["before"], Value::Null);
    assert_eq!(nodes[5]["after"]["cohorts"], json!({"a": 1.0, "b": 1.0}));
    assert_eq!(nodes[5]["after"]["salt"], "shop");
    let ids: Vec<i64> = nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "{ids:?}");

    // Filters and pages.
    let configs = audit_as(
        &app,
        "alice-secret",
        json!({"type": "config", "id": "shop/a", "first": 2}),
    )
    .await;
    assert_eq!(
        actions(&configs),
        [
            "rollbackRemoteConfig config/shop/a",
            "updateRemoteConfig config/shop/a"
        ]
    );
    assert_eq!(configs["pageInfo"]["hasNextPage"], true);
    let rest = audit_as(
        &app,
        "alice-secret",
        json!({"type": "config", "id": "shop/a", "first": 2, "after": configs["pageInfo"]["endCursor"]}),
    )
    .await;
    assert_eq!(actions(&rest), ["updateRemoteConfig config/shop/a"]);
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
    let experiments = audit_as(&app, "alice-secret", json!({"type": "experiment"})).await;
    assert_eq!(experiments["nodes"].as_array().unwrap().len(), 2);

    for (variables, field) in [
        (json!({"type": "user"}), "entityType"),
        (json!({"first": 0}), "first"),
        (json!({"first": 501}), "first"),
        (json!({"after": "nope"}), "after"),
        (json!({"id": ""}), "entityId"),
    ] {
        let (_, body) = app
            .gql_as(Some("alice-secret"), AUDIT, variables.clone())
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{variables}: {body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{variables}: {body}"
        );
    }
    let code = app.gql_err_code(Some(HTTP_KEY), AUDIT, json!({})).await;
    assert_eq!(code, "FORBIDDEN");
}

#[tokio::test]
async fn a_refused_write_leaves_no_entry_and_no_change() {
    let app = TestApp::spawn().await;
    app.admin(UPDATE, json!({"config": {"a": 1}})).await;
    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"a": 1}}))
        .await;
    let before = audit(&app, json!({})).await;

    let (_, conflict) = app
        .gql_as(
            Some(ADMIN_KEY),
            UPDATE,
            json!({"config": {"a": 2}, "expected": 9}),
        )
        .await;
    assert_eq!(conflict["errors"][0]["extensions"]["code"], "CONFLICT");
    let (_, bad) = app
        .gql_as(
            Some(ADMIN_KEY),
            UPSERT,
            json!({"input": {"id": "e", "name": "E", "cohorts": {"a": -1}}}),
        )
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let (_, missing) = app
        .gql_as(
            Some(ADMIN_KEY),
            SET_ACTIVE,
            json!({"id": "nope", "active": true}),
        )
        .await;
    assert_eq!(missing["errors"][0]["extensions"]["code"], "NOT_FOUND");
    let (_, forbidden) = app
        .gql_as(Some(HTTP_KEY), UPDATE, json!({"config": {"a": 3}}))
        .await;
    assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN");

    assert_eq!(audit(&app, json!({})).await, before);
    assert_eq!(history(&app, "e").await.len(), 1);
}

#[tokio::test]
async fn experiment_history_records_every_change_of_weights_salt_activity_and_window() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"control": 1, "treat": 1}}))
        .await;
    // A plain upsert that only changes weights is recorded exactly.
    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"control": 1, "treat": 3}}))
        .await;
    // Renaming changes nothing assignment or analysis depends on: no new change.
    app.upsert_experiment(
        json!({"id": "e", "name": "E renamed", "description": "d", "cohorts": {"control": 1, "treat": 3}}),
    )
    .await;
    app.admin(SET_ACTIVE, json!({"id": "e", "active": false}))
        .await;
    app.admin(SET_ACTIVE, json!({"id": "e", "active": false}))
        .await;
    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"control": 1, "treat": 3}, "salt": "s2", "active": true, "startAt": "2026-01-01T00:00:00Z"}))
        .await;

    let changes = history(&app, "e").await;
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert_eq!(
        weights(&changes[0]),
        [("control".to_owned(), 1.0), ("treat".to_owned(), 1.0)]
    );
    assert_eq!(
        weights(&changes[1]),
        [("control".to_owned(), 1.0), ("treat".to_owned(), 3.0)]
    );
    assert_eq!(changes[1]["active"], true);
    assert_eq!(changes[2]["active"], false);
    assert_eq!(changes[3]["salt"], "s2");
    assert_eq!(changes[3]["active"], true);
    assert_eq!(changes[3]["startAt"], "2026-01-01T00:00:00Z");
    assert!(changes.iter().all(|change| change["actor"] == "admin"));
    let times: Vec<&str> = changes.iter().map(|c| c["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    // Every write is audited, changed or not.
    let audited = audit(&app, json!({"type": "experiment", "id": "e"})).await;
    assert_eq!(audited["nodes"].as_array().unwrap().len(), 6);

    let code = app
        .gql_err_code(
            Some(HTTP_KEY),
            "{ activeExperiments { history { at } } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "FORBIDDEN");
}

#[tokio::test]
async fn experiments_stored_before_history_existed_start_it_with_their_state_at_creation() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "old", "name": "Old", "cohorts": {"a": 2, "b": 1}}))
        .await;
    let created_at = app
        .admin("{ experiment(id: \"old\") { createdAt } }", json!({}))
        .await["experiment"]["createdAt"]
        .clone();
    let upgraded = app
        .upgraded_after(&[
            "DROP TABLE experiment_changes",
            "DROP TABLE audit_log",
            "DELETE FROM seaql_migrations WHERE version = 'm20261130_000006_create_experiment_changes_and_audit_log'",
        ])
        .await;
    let changes = history(&upgraded, "old").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["actor"], "migration");
    assert_eq!(changes[0]["at"], created_at);
    assert_eq!(
        weights(&changes[0]),
        [("a".to_owned(), 2.0), ("b".to_owned(), 1.0)]
    );
    assert_eq!(
        audit(&upgraded, json!({})).await["nodes"],
        json!([]),
        "the audit log starts empty: earlier writes were not seen"
    );
}
