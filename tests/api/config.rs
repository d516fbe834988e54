use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestApp};

const FETCH: &str = "query($u: String!, $e: String) { remoteConfig(userId: $u, experimentId: $e) { userId experimentId cohort source version config assignments { experimentId cohort } } }";

async fn fetch(app: &TestApp, user: &str, experiment: Option<&str>) -> Value {
    app.gql(FETCH, json!({"u": user, "e": experiment})).await["remoteConfig"].clone()
}

async fn cache_stats(app: &TestApp) -> Value {
    app.gql(
        "{ health { cache { entries hits misses ttlSeconds } } }",
        json!({}),
    )
    .await["health"]["cache"]
        .clone()
}

#[tokio::test]
async fn the_fallback_chain_reports_each_level() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "exp", "name": "E", "cohorts": {"left": 1, "right": 1}}))
        .await;
    let cohort = app.cohort_of("u1", "exp").await;

    let none = fetch(&app, "u1", Some("exp")).await;
    assert_eq!(
        (
            none["source"].clone(),
            none["config"].clone(),
            none["version"].clone(),
            none["cohort"].clone()
        ),
        (json!("NONE"), json!({}), json!(0), json!(cohort))
    );

    app.set_config(None, None, json!({"level": "global"}), false)
        .await;
    let global = fetch(&app, "u1", Some("exp")).await;
    assert_eq!(
        (global["source"].clone(), global["config"].clone()),
        (json!("GLOBAL"), json!({"level": "global"}))
    );

    app.set_config(Some("exp"), None, json!({"level": "default"}), false)
        .await;
    let default = fetch(&app, "u1", Some("exp")).await;
    assert_eq!(
        (default["source"].clone(), default["config"].clone()),
        (json!("EXPERIMENT_DEFAULT"), json!({"level": "default"}))
    );
    assert_eq!(
        default["cohort"],
        json!(cohort),
        "the cohort is reported whichever level served"
    );

    app.set_config(
        Some("exp"),
        Some(&cohort),
        json!({"level": "cohort"}),
        false,
    )
    .await;
    let own = fetch(&app, "u1", Some("exp")).await;
    assert_eq!(
        (
            own["source"].clone(),
            own["config"].clone(),
            own["version"].clone()
        ),
        (json!("COHORT"), json!({"level": "cohort"}), json!(1))
    );
    assert_eq!(
        own["assignments"],
        json!([{"experimentId": "exp", "cohort": cohort}])
    );

    app.admin(
        "mutation { setExperimentActive(id: \"exp\", active: false) { id } }",
        json!({}),
    )
    .await;
    let inactive = fetch(&app, "u1", Some("exp")).await;
    assert_eq!(
        (inactive["source"].clone(), inactive["cohort"].clone()),
        (json!("GLOBAL"), Value::Null)
    );
    let unknown = fetch(&app, "u1", Some("no_such_experiment")).await;
    assert_eq!(
        (unknown["source"].clone(), unknown["experimentId"].clone()),
        (json!("GLOBAL"), json!("no_such_experiment"))
    );
}

#[tokio::test]
async fn without_an_experiment_the_global_default_gets_every_active_experiment_laid_over_it() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "b_colors", "name": "B", "cohorts": {"only": 1}}))
        .await;
    app.upsert_experiment(json!({"id": "a_speed", "name": "A", "cohorts": {"solo": 1}}))
        .await;
    app.upsert_experiment(
        json!({"id": "c_off", "name": "C", "cohorts": {"x": 1}, "active": false}),
    )
    .await;
    app.set_config(
        None,
        None,
        json!({"color": "grey", "speed": 1, "size": "m"}),
        false,
    )
    .await;
    app.set_config(
        Some("a_speed"),
        Some("solo"),
        json!({"speed": 2, "color": "blue"}),
        false,
    )
    .await;
    app.set_config(Some("b_colors"), None, json!({"color": "red"}), false)
        .await;
    app.set_config(Some("b_colors"), None, json!({"color": "green"}), false)
        .await;
    app.set_config(Some("c_off"), Some("x"), json!({"size": "xl"}), false)
        .await;

    let merged = fetch(&app, "player", None).await;

    assert_eq!(
        merged["config"],
        json!({"color": "green", "speed": 2, "size": "m"}),
        "b_colors is laid last"
    );
    assert_eq!(merged["version"], 1 + 1 + 2, "sum of the versions used");
    assert_eq!(merged["source"], "COHORT");
    assert_eq!(merged["experimentId"], Value::Null);
    assert_eq!(merged["cohort"], Value::Null);
    assert_eq!(
        merged["assignments"],
        json!([{"experimentId": "a_speed", "cohort": "solo"}, {"experimentId": "b_colors", "cohort": "only"}])
    );
}

#[tokio::test]
async fn updates_bump_the_version_merge_on_request_and_show_at_once_despite_the_cache() {
    let app = TestApp::spawn().await;

    let first = app
        .set_config(None, None, json!({"a": 1, "b": {"x": 1}}), false)
        .await;
    assert_eq!(
        (
            first["experimentId"].clone(),
            first["cohort"].clone(),
            first["version"].clone()
        ),
        (Value::Null, json!("default"), json!(1))
    );
    assert_eq!(
        fetch(&app, "u", None).await["config"],
        json!({"a": 1, "b": {"x": 1}})
    );
    assert_eq!(fetch(&app, "u", None).await["version"], 1);

    let merged = app
        .set_config(None, None, json!({"b": {"y": 2}, "c": 3}), true)
        .await;
    assert_eq!(merged["version"], 2);
    assert_eq!(
        merged["config"],
        json!({"a": 1, "b": {"y": 2}, "c": 3}),
        "top-level keys are replaced whole"
    );
    assert_eq!(
        fetch(&app, "u", None).await["config"],
        merged["config"],
        "visible to the next fetch"
    );

    let replaced = app
        .set_config(None, Some("default"), json!({"only": true}), false)
        .await;
    assert_eq!(
        (replaced["version"].clone(), replaced["config"].clone()),
        (json!(3), json!({"only": true}))
    );
    assert_eq!(fetch(&app, "u", None).await["version"], 3);
}

#[tokio::test]
async fn config_updates_are_validated() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "exp", "name": "E", "cohorts": {"a": 1}}))
        .await;
    let update = "mutation($e: String, $c: String, $config: JSON!, $m: Boolean) { updateRemoteConfig(experimentId: $e, cohort: $c, config: $config, merge: $m) { version } }";
    let big = json!({"k": "x".repeat(64 * 1024 - 7)});
    let fits = json!({"k": "x".repeat(64 * 1024 - 8)});

    let cases = [
        (json!({"e": "missing", "config": {}}), "NOT_FOUND"),
        (
            json!({"e": "exp", "c": "b", "config": {}}),
            "BAD_USER_INPUT",
        ),
        (json!({"c": "a", "config": {}}), "BAD_USER_INPUT"),
        (json!({"e": "exp", "config": [1]}), "BAD_USER_INPUT"),
        (json!({"e": "exp", "config": "text"}), "BAD_USER_INPUT"),
        (json!({"e": "exp", "config": big}), "BAD_USER_INPUT"),
        (json!({"e": "bad id", "config": {}}), "BAD_USER_INPUT"),
    ];
    for (variables, code) in cases {
        assert_eq!(
            app.gql_err_code(Some(ADMIN_KEY), update, variables.clone())
                .await,
            code,
            "{variables}"
        );
    }
    let stored = app.set_config(Some("exp"), Some("a"), fits, false).await;
    assert_eq!(stored["version"], 1);
    let code = app
        .gql_err_code(
            Some(ADMIN_KEY),
            update,
            json!({"e": "exp", "c": "a", "config": {"more": 1}, "m": true}),
        )
        .await;
    assert_eq!(
        code, "BAD_USER_INPUT",
        "a merge may not grow the config past 64 KiB"
    );
}

#[tokio::test]
async fn a_cached_fetch_counts_as_a_hit_and_does_not_read_the_database() {
    let app = TestApp::spawn().await;
    app.set_config(None, None, json!({"coins": 10}), false)
        .await;

    fetch(&app, "u", None).await;
    // A cached answer cannot see this.
    app.set_every_config_behind_the_servers_back(json!({"coins": 99}))
        .await;
    let cached = fetch(&app, "u", None).await;

    assert_eq!(cached["config"], json!({"coins": 10}));
    let stats = cache_stats(&app).await;
    assert_eq!(
        (
            stats["hits"].clone(),
            stats["misses"].clone(),
            stats["entries"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    assert_eq!(stats["ttlSeconds"], 60);
}

#[tokio::test]
async fn remote_config_arguments_are_validated() {
    let app = TestApp::spawn().await;

    for variables in [
        json!({"u": ""}),
        json!({"u": "a\u{0}b"}),
        json!({"u": "u", "e": "bad id"}),
    ] {
        assert_eq!(
            app.gql_err_code(Some(HTTP_KEY), FETCH, variables.clone())
                .await,
            "BAD_USER_INPUT",
            "{variables}"
        );
    }
}

/// Reads nothing but plain `remoteConfig` fields: the server may answer it from its response cache.
const PLAIN_FETCH: &str =
    "query($u: String!) { remoteConfig(userId: $u) { source version config } }";

#[tokio::test]
async fn a_repeated_config_read_is_served_from_cache_counted_as_hits_and_dropped_on_a_write() {
    let app = TestApp::spawn().await;
    app.set_config(None, None, json!({"coins": 10}), false)
        .await;
    let first = app.gql(PLAIN_FETCH, json!({"u": "u"})).await;
    app.set_every_config_behind_the_servers_back(json!({"coins": 99}))
        .await;

    for _ in 0..2 {
        assert_eq!(app.gql(PLAIN_FETCH, json!({"u": "u"})).await, first);
    }
    let stats = cache_stats(&app).await;
    assert_eq!(
        (stats["hits"].clone(), stats["misses"].clone()),
        (json!(2), json!(1))
    );

    // A write on this instance makes the very same request read the database again.
    app.upsert_experiment(json!({"id": "unrelated", "name": "Unrelated", "cohorts": {"a": 1}}))
        .await;
    let after_write = app.gql(PLAIN_FETCH, json!({"u": "u"})).await;
    assert_eq!(after_write["remoteConfig"]["config"], json!({"coins": 99}));
}

#[tokio::test]
async fn a_cached_config_read_expires_with_the_ttl() {
    let app = TestApp::spawn_with(crate::helpers::TestDatabase::create().await, |config| {
        config.cache.config_ttl_secs = 1;
    })
    .await;
    app.set_config(None, None, json!({"coins": 10}), false)
        .await;
    app.gql(PLAIN_FETCH, json!({"u": "u"})).await;
    app.set_every_config_behind_the_servers_back(json!({"coins": 99}))
        .await;

    // Polled rather than slept on: the new row must show once the TTL has passed.
    let mut attempts = 0;
    loop {
        let config =
            app.gql(PLAIN_FETCH, json!({"u": "u"})).await["remoteConfig"]["config"].clone();
        if config == json!({"coins": 99}) {
            break;
        }
        assert_eq!(config, json!({"coins": 10}));
        attempts += 1;
        assert!(attempts < 100, "the cached config outlived its 1 s TTL");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn documents_reading_more_than_plain_config_are_run_every_time() {
    let app = TestApp::spawn().await;
    app.set_config(None, None, json!({"coins": 10}), false)
        .await;
    let query =
        "query($u: String!) { remoteConfig(userId: $u) { config } health { uptimeSeconds } }";
    let first = app.gql(query, json!({"u": "u"})).await;
    let second = app.gql(query, json!({"u": "u"})).await;
    assert_ne!(
        first["health"]["uptimeSeconds"], second["health"]["uptimeSeconds"],
        "a response with live fields was replayed"
    );
}
