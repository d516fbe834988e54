//! Config versions (docs/api.md §10): history, rollback, optimistic concurrency, pruning.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestApp, TestDatabase};

const UPDATE: &str = "mutation($e: String, $c: String, $config: JSON!, $expected: Int, $note: String) { updateRemoteConfig(experimentId: $e, cohort: $c, config: $config, expectedVersion: $expected, note: $note) { experimentId cohort config version } }";
const ROLLBACK: &str = "mutation($e: String, $c: String, $to: Int!, $expected: Int, $note: String) { rollbackRemoteConfig(experimentId: $e, cohort: $c, toVersion: $to, expectedVersion: $expected, note: $note) { experimentId cohort config version } }";
const HISTORY: &str = "query($e: String, $c: String, $first: Int, $after: String) { configHistory(experimentId: $e, cohort: $c, first: $first, after: $after) { nodes { experimentId cohort version config actor note rolledBackFrom createdAt } pageInfo { hasNextPage hasPreviousPage endCursor } } }";
const FETCH: &str = "query($u: String!) { remoteConfig(userId: $u) { version config } }";

async fn history(app: &TestApp, variables: Value) -> Value {
    app.admin(HISTORY, variables).await["configHistory"].clone()
}

fn versions(page: &Value) -> Vec<i64> {
    page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["version"].as_i64().unwrap())
        .collect()
}

/// The error of a GraphQL operation run with the admin key: (code, message).
async fn admin_error(app: &TestApp, query: &str, variables: Value) -> (String, String) {
    let (_, body) = app.gql_as(Some(ADMIN_KEY), query, variables).await;
    let error = &body["errors"][0];
    assert!(body["data"].is_null(), "{body}");
    (
        error["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn every_version_is_kept_paged_newest_first_and_a_rollback_republishes_one() {
    let app = TestApp::spawn().await;
    for (coins, note) in [(1, Some("launch")), (2, None), (3, Some("weekend sale"))] {
        app.admin(UPDATE, json!({"config": {"coins": coins}, "note": note}))
            .await;
    }

    let first_page = history(&app, json!({"first": 2})).await;
    assert_eq!(versions(&first_page), [3, 2]);
    assert_eq!(first_page["pageInfo"]["hasNextPage"], true);
    assert_eq!(first_page["pageInfo"]["hasPreviousPage"], false);
    let newest = &first_page["nodes"][0];
    assert_eq!(newest["experimentId"], Value::Null);
    assert_eq!(newest["cohort"], "default");
    assert_eq!(newest["config"], json!({"coins": 3}));
    assert_eq!(newest["actor"], "admin");
    assert_eq!(newest["note"], "weekend sale");
    assert_eq!(newest["rolledBackFrom"], Value::Null);
    let cursor = first_page["pageInfo"]["endCursor"].clone();
    let second_page = history(&app, json!({"first": 2, "after": cursor})).await;
    assert_eq!(versions(&second_page), [1]);
    assert_eq!(second_page["pageInfo"]["hasNextPage"], false);
    assert_eq!(second_page["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(second_page["nodes"][0]["note"], "launch");
    assert_eq!(second_page["nodes"][0]["config"], json!({"coins": 1}));

    // Served config moves with the rollback at once (the caches are invalidated like an update).
    let before = app.gql(FETCH, json!({"u": "player"})).await;
    assert_eq!(before["remoteConfig"]["config"], json!({"coins": 3}));
    let rolled_back = app
        .admin(ROLLBACK, json!({"to": 1, "note": "sale broke the economy"}))
        .await["rollbackRemoteConfig"]
        .clone();
    assert_eq!(
        rolled_back,
        json!({"experimentId": null, "cohort": "default", "config": {"coins": 1}, "version": 4})
    );
    let after = app.gql(FETCH, json!({"u": "player"})).await;
    assert_eq!(
        after["remoteConfig"],
        json!({"version": 4, "config": {"coins": 1}})
    );
    let newest = history(&app, json!({"first": 1})).await["nodes"][0].clone();
    assert_eq!(newest["version"], 4);
    assert_eq!(newest["rolledBackFrom"], 1);
    assert_eq!(newest["note"], "sale broke the economy");

    // Pages are stable while new versions arrive: the cursor names a version, not an offset.
    app.admin(UPDATE, json!({"config": {"coins": 5}})).await;
    let resumed = history(&app, json!({"first": 2, "after": cursor})).await;
    assert_eq!(versions(&resumed), [1]);

    let (code, message) = admin_error(&app, ROLLBACK, json!({"to": 99})).await;
    assert_eq!(code, "NOT_FOUND");
    assert!(message.contains("version 99"), "{message}");
    let (code, _) = admin_error(&app, ROLLBACK, json!({"to": 0})).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = admin_error(&app, HISTORY, json!({"after": "not-a-cursor"})).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = admin_error(&app, HISTORY, json!({"first": 0})).await;
    assert_eq!(code, "BAD_USER_INPUT");
    for query in [HISTORY, ROLLBACK] {
        let code = app
            .gql_err_code(Some(HTTP_KEY), query, json!({"to": 1}))
            .await;
        assert_eq!(code, "FORBIDDEN", "{query}");
    }
}

#[tokio::test]
async fn history_is_per_variant_and_a_rollback_follows_the_update_rules() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(
        json!({"id": "shop", "name": "Shop", "cohorts": {"cheap": 1, "dear": 1}}),
    )
    .await;
    for price in [5, 6] {
        app.admin(
            UPDATE,
            json!({"e": "shop", "c": "cheap", "config": {"price": price}}),
        )
        .await;
    }
    app.admin(
        UPDATE,
        json!({"e": "shop", "c": "dear", "config": {"price": 50}}),
    )
    .await;

    let cheap = history(&app, json!({"e": "shop", "c": "cheap"})).await;
    assert_eq!(versions(&cheap), [2, 1]);
    assert_eq!(cheap["nodes"][0]["experimentId"], "shop");
    let dear = history(&app, json!({"e": "shop", "c": "dear"})).await;
    assert_eq!(versions(&dear), [1]);
    let never_written = history(&app, json!({"e": "shop"})).await;
    assert_eq!(versions(&never_written), Vec::<i64>::new());
    assert_eq!(never_written["pageInfo"]["hasNextPage"], false);

    let rolled_back = app
        .admin(ROLLBACK, json!({"e": "shop", "c": "cheap", "to": 1}))
        .await["rollbackRemoteConfig"]
        .clone();
    assert_eq!(rolled_back["config"], json!({"price": 5}));
    assert_eq!(rolled_back["version"], 3);

    // The cohort was removed from the experiment: its config cannot be published again.
    app.upsert_experiment(json!({"id": "shop", "name": "Shop", "cohorts": {"dear": 1}}))
        .await;
    let (code, message) =
        admin_error(&app, ROLLBACK, json!({"e": "shop", "c": "cheap", "to": 1})).await;
    assert_eq!(code, "BAD_USER_INPUT", "{message}");
    assert_eq!(
        versions(&history(&app, json!({"e": "shop", "c": "cheap"})).await),
        [3, 2, 1],
        "a refused rollback leaves no version behind"
    );
}

#[tokio::test]
async fn expected_version_refuses_writes_that_did_not_see_the_stored_version() {
    let app = TestApp::spawn().await;
    let created = app
        .admin(UPDATE, json!({"config": {"a": 1}, "expected": 0}))
        .await;
    assert_eq!(created["updateRemoteConfig"]["version"], 1);

    let (code, message) =
        admin_error(&app, UPDATE, json!({"config": {"a": 2}, "expected": 0})).await;
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("stored version is 1"), "{message}");
    let (code, message) =
        admin_error(&app, UPDATE, json!({"config": {"a": 2}, "expected": 7})).await;
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("stored version is 1"), "{message}");
    let (code, message) = admin_error(&app, ROLLBACK, json!({"to": 1, "expected": 3})).await;
    assert_eq!(code, "CONFLICT", "{message}");
    let (code, _) = admin_error(&app, UPDATE, json!({"config": {"a": 2}, "expected": -1})).await;
    assert_eq!(code, "BAD_USER_INPUT");

    // An experiment variant that does not exist yet is version 0.
    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"a": 1}}))
        .await;
    let (code, message) = admin_error(
        &app,
        UPDATE,
        json!({"e": "e", "c": "a", "config": {"x": 1}, "expected": 1}),
    )
    .await;
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("does not exist yet"), "{message}");

    let updated = app
        .admin(UPDATE, json!({"config": {"a": 2}, "expected": 1}))
        .await;
    assert_eq!(updated["updateRemoteConfig"]["version"], 2);
    let rolled_back = app.admin(ROLLBACK, json!({"to": 1, "expected": 2})).await;
    assert_eq!(rolled_back["rollbackRemoteConfig"]["version"], 3);
    assert_eq!(
        versions(&history(&app, json!({})).await),
        [3, 2, 1],
        "refused writes stored no version"
    );
    assert_eq!(
        versions(&history(&app, json!({"e": "e", "c": "a"})).await),
        Vec::<i64>::new()
    );
}

#[tokio::test]
async fn of_many_concurrent_writers_expecting_one_version_exactly_one_wins() {
    let app = TestApp::spawn().await;
    app.admin(UPDATE, json!({"config": {"winner": "none"}}))
        .await;

    let writers = (0..16).map(|writer| {
        app.gql_as(
            Some(ADMIN_KEY),
            UPDATE,
            json!({"config": {"winner": writer}, "expected": 1}),
        )
    });
    let outcomes = futures_util::future::join_all(writers).await;

    let mut winners = Vec::new();
    for (writer, (status, body)) in outcomes.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "{body}");
        if body["errors"].is_null() {
            assert_eq!(body["data"]["updateRemoteConfig"]["version"], 2, "{body}");
            winners.push(writer);
        } else {
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "CONFLICT",
                "{body}"
            );
        }
    }
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let page = history(&app, json!({})).await;
    assert_eq!(versions(&page), [2, 1]);
    assert_eq!(page["nodes"][0]["config"], json!({"winner": winners[0]}));
    let served = app.gql(FETCH, json!({"u": "anyone"})).await;
    assert_eq!(
        served["remoteConfig"]["config"],
        json!({"winner": winners[0]})
    );
}

#[tokio::test]
async fn versions_beyond_the_kept_count_are_pruned() {
    let app = TestApp::spawn_with(TestDatabase::create().await, |config| {
        config.history.config_versions_kept = 3;
    })
    .await;
    for coins in 1..=5 {
        app.admin(UPDATE, json!({"config": {"coins": coins}})).await;
    }
    assert_eq!(versions(&history(&app, json!({})).await), [5, 4, 3]);
    let (code, _) = admin_error(&app, ROLLBACK, json!({"to": 2})).await;
    assert_eq!(code, "NOT_FOUND");
    let rolled_back = app.admin(ROLLBACK, json!({"to": 3})).await;
    assert_eq!(
        rolled_back["rollbackRemoteConfig"]["config"],
        json!({"coins": 3})
    );
    assert_eq!(versions(&history(&app, json!({})).await), [6, 5, 4]);
}

#[tokio::test]
async fn the_rpc_alias_takes_expected_version_and_answers_a_conflict_like_nakama() {
    let app = TestApp::spawn().await;
    let update = |payload: Value| {
        app.client
            .post(app.url(&format!("/v2/rpc/UpdateRemoteConfig?http_key={ADMIN_KEY}")))
            .json(&payload.to_string())
            .send()
    };
    let created = update(json!({"config": {"a": 1}, "expectedVersion": 0, "note": "first"}))
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);

    let stale = update(json!({"config": {"a": 2}, "expected_version": 0}))
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["code"], 10, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("stored version is 1"),
        "{body}"
    );
    let wrong_type = update(json!({"config": {"a": 2}, "expectedVersion": "one"}))
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::BAD_REQUEST);

    let current = update(json!({"config": {"a": 2}, "expected_version": 1}))
        .await
        .unwrap();
    assert_eq!(current.status(), StatusCode::OK);
    let page = history(&app, json!({})).await;
    assert_eq!(versions(&page), [2, 1]);
    assert_eq!(page["nodes"][1]["note"], "first");
}

#[tokio::test]
async fn variants_stored_before_history_existed_start_it_with_their_current_version() {
    let app = TestApp::spawn().await;
    for coins in [1, 2] {
        app.admin(UPDATE, json!({"config": {"coins": coins}})).await;
    }
    // Back to the schema before config versions: the table and its migration record gone.
    let upgraded = app
        .upgraded_after(&[
            "DROP TABLE config_versions",
            "DELETE FROM seaql_migrations WHERE version = 'm20261130_000005_create_config_versions'",
        ])
        .await;
    let page = history(&upgraded, json!({})).await;
    assert_eq!(versions(&page), [2]);
    assert_eq!(page["nodes"][0]["actor"], "migration");
    assert_eq!(page["nodes"][0]["config"], json!({"coins": 2}));
    let next = upgraded
        .admin(UPDATE, json!({"config": {"coins": 3}}))
        .await;
    assert_eq!(next["updateRemoteConfig"]["version"], 3);
    assert_eq!(versions(&history(&upgraded, json!({})).await), [3, 2]);
}

#[tokio::test]
async fn named_admin_keys_are_the_actors_and_listed_keys_rotate() {
    let app = TestApp::spawn_with(TestDatabase::create().await, |config| {
        config.keys.admin_key = "alice:alice-secret, bob:bob-secret".to_owned();
        config.keys.http_key = "game:new-game-key,old-game-key".to_owned();
    })
    .await;
    for (secret, coins) in [("alice-secret", 1), ("bob-secret", 2)] {
        let (status, body) = app
            .gql_as(Some(secret), UPDATE, json!({"config": {"coins": coins}}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["errors"].is_null(), "{body}");
    }
    let (_, body) = app.gql_as(Some("bob-secret"), HISTORY, json!({})).await;
    let actors: Vec<&str> = body["data"]["configHistory"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["bob", "alice"]);

    for key in ["new-game-key", "old-game-key"] {
        let (status, body) = app.gql_as(Some(key), FETCH, json!({"u": "p"})).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
        assert_eq!(body["data"]["remoteConfig"]["config"], json!({"coins": 2}));
    }
    for unlisted in [ADMIN_KEY, HTTP_KEY, "alice", "alice:alice-secret"] {
        let (status, _) = app.gql_as(Some(unlisted), FETCH, json!({"u": "p"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{unlisted}");
    }
}

#[tokio::test]
async fn a_bad_key_list_stops_startup_with_a_message_naming_it() {
    let database = TestDatabase::create().await;
    let mut config =
        octp_backend::Config::with_database(database.url(), "127.0.0.1:0".parse().unwrap());
    config.keys.admin_key = "ops team:hunter2".to_owned();
    let error = octp_backend::App::build(config)
        .await
        .err()
        .expect("startup fails");
    let message = format!("{error:#}");
    assert!(
        message.contains("--admin-key (OCTP_ADMIN_KEY): key 1 has the name \"ops team\""),
        "{message}"
    );
    assert!(
        !message.contains("hunter2"),
        "the secret is not shown: {message}"
    );
}
