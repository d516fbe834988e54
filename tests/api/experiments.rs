use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestApp};

const ASSIGN: &str = "query($u: String!, $e: String!) { experimentAssignment(userId: $u, experimentId: $e) { userId experimentId cohort assignedAt } }";

/// Assigns many users in few requests (200 aliased fields each); returns user → cohort.
async fn assign_many(app: &TestApp, experiment: &str, users: &[String]) -> HashMap<String, String> {
    let mut cohorts = HashMap::new();
    for chunk in users.chunks(200) {
        let fields: String = chunk
            .iter()
            .enumerate()
            .map(|(i, user)| {
                format!("a{i}: experimentAssignment(userId: {}, experimentId: \"{experiment}\") {{ cohort }} ", json!(user))
            })
            .collect();
        let data = app.gql(&format!("{{ {fields} }}"), json!({})).await;
        for (i, user) in chunk.iter().enumerate() {
            cohorts.insert(
                user.clone(),
                data[format!("a{i}")]["cohort"].as_str().unwrap().to_owned(),
            );
        }
    }
    cohorts
}

/// user → cohort of every assignment stored in `experiment`, read straight from the database.
async fn stored_cohorts(app: &TestApp, experiment: &str) -> HashMap<String, String> {
    let connection = app.database.connect().await;
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        &connection,
        sea_orm::Statement::from_sql_and_values(
            connection.get_database_backend(),
            match connection.get_database_backend() {
                sea_orm::DatabaseBackend::Postgres => {
                    "SELECT user_id, cohort FROM user_experiment_assignments WHERE experiment_id = $1"
                }
                _ => "SELECT user_id, cohort FROM user_experiment_assignments WHERE experiment_id = ?",
            },
            [experiment.into()],
        ),
    )
    .await
    .expect("read the stored assignments");
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "user_id").unwrap(),
                row.try_get("", "cohort").unwrap(),
            )
        })
        .collect()
}

fn share(cohorts: &HashMap<String, String>, cohort: &str) -> f64 {
    cohorts.values().filter(|c| *c == cohort).count() as f64 / cohorts.len() as f64
}

#[tokio::test]
async fn the_contract_vectors_hold_through_the_api() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(
        json!({"id": "onboarding_v2", "name": "O", "cohorts": {"control": 0.5, "variant_b": 0.5}}),
    )
    .await;
    app.upsert_experiment(json!({"id": "shop_prices", "name": "S", "cohorts": {"control": 1, "cheap": 1, "premium": 2}})).await;
    app.upsert_experiment(json!({"id": "difficulty", "name": "D", "cohorts": {"easy": 0.2, "normal": 0.6, "hard": 0.2}})).await;
    app.upsert_experiment(
        json!({"id": "holdout", "name": "H", "cohorts": {"control": 0.9, "treatment": 0.1}}),
    )
    .await;

    for (experiment, user, cohort) in [
        ("onboarding_v2", "user-1", "control"),
        ("onboarding_v2", "user-3", "variant_b"),
        ("shop_prices", "alice", "premium"),
        ("shop_prices", "erin", "cheap"),
        ("shop_prices", "sybil", "control"),
        ("difficulty", "7f3c2a9e-0b1d-4e55-9a61-2f4e8c1d0b77", "easy"),
        ("difficulty", "Ωmega-üser", "hard"),
        ("holdout", "user-28", "treatment"),
    ] {
        assert_eq!(
            app.cohort_of(user, experiment).await,
            cohort,
            "{experiment}/{user}"
        );
    }
}

#[tokio::test]
async fn ten_thousand_users_split_close_to_the_weights() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "half", "name": "Half", "cohorts": {"a": 0.5, "b": 0.5}}))
        .await;
    app.upsert_experiment(
        json!({"id": "quarters", "name": "Q", "cohorts": {"x": 1, "y": 1, "z": 2}}),
    )
    .await;
    let users: Vec<String> = (0..10_000).map(|i| format!("player-{i}")).collect();

    let half = assign_many(&app, "half", &users).await;
    let quarters = assign_many(&app, "quarters", &users).await;

    assert!(
        (share(&half, "a") - 0.5).abs() <= 0.02,
        "a: {}",
        share(&half, "a")
    );
    assert!(
        (share(&quarters, "x") - 0.25).abs() <= 0.02,
        "x: {}",
        share(&quarters, "x")
    );
    assert!(
        (share(&quarters, "y") - 0.25).abs() <= 0.02,
        "y: {}",
        share(&quarters, "y")
    );
    assert!(
        (share(&quarters, "z") - 0.5).abs() <= 0.02,
        "z: {}",
        share(&quarters, "z")
    );
}

#[tokio::test]
async fn assignments_stay_sticky_when_weights_change_and_move_only_when_their_cohort_is_removed() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"control": 1, "treat": 1}}))
        .await;
    let users: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
    let before = assign_many(&app, "e", &users).await;
    assert!(
        share(&before, "control") > 0.3,
        "both cohorts are populated"
    );

    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"control": 0, "treat": 1}}))
        .await;
    let after_weights = assign_many(&app, "e", &users).await;
    let newcomers = assign_many(
        &app,
        "e",
        &[
            "late-1".to_owned(),
            "late-2".to_owned(),
            "late-3".to_owned(),
        ],
    )
    .await;

    assert_eq!(after_weights, before, "a weight change moves nobody");
    assert!(
        newcomers.values().all(|c| c == "treat"),
        "new users follow the new weights"
    );

    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"treat": 1, "fresh": 1}}))
        .await;
    let after_removal = assign_many(&app, "e", &users).await;

    for user in &users {
        match before[user].as_str() {
            "treat" => assert_eq!(after_removal[user], "treat", "{user} stays"),
            _ => assert!(["treat", "fresh"].contains(&after_removal[user].as_str())),
        }
    }
    assert!(
        after_removal.values().any(|c| c == "fresh"),
        "removed users are drawn again"
    );
    let connection = app.database.connect().await;
    let rows = sea_orm::ConnectionTrait::query_one_raw(
        &connection,
        sea_orm::Statement::from_string(
            connection.get_database_backend(),
            "SELECT COUNT(*) AS n FROM user_experiment_assignments WHERE cohort = 'control'",
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        rows.try_get::<i64>("", "n").unwrap(),
        0,
        "stored rows follow the reassignment"
    );
}

#[tokio::test]
async fn concurrent_first_requests_agree_and_store_one_row() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(
        json!({"id": "race", "name": "Race", "cohorts": {"a": 1, "b": 1, "c": 1}}),
    )
    .await;

    let requests = (0..24).map(|_| app.cohort_of("racer", "race"));
    let cohorts = futures_util::future::join_all(requests).await;

    assert!(
        cohorts.windows(2).all(|pair| pair[0] == pair[1]),
        "{cohorts:?}"
    );
    let connection = app.database.connect().await;
    let row = sea_orm::ConnectionTrait::query_one_raw(
        &connection,
        sea_orm::Statement::from_string(
            connection.get_database_backend(),
            "SELECT COUNT(*) AS n FROM user_experiment_assignments WHERE user_id = 'racer'",
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);
}

#[tokio::test]
async fn unknown_inactive_and_out_of_window_experiments_are_not_found() {
    let app = TestApp::spawn().await;
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    app.upsert_experiment(
        json!({"id": "off", "name": "Off", "cohorts": {"a": 1}, "active": false}),
    )
    .await;
    app.upsert_experiment(
        json!({"id": "later", "name": "Later", "cohorts": {"a": 1}, "startAt": future}),
    )
    .await;
    app.upsert_experiment(
        json!({"id": "over", "name": "Over", "cohorts": {"a": 1}, "endAt": past}),
    )
    .await;
    app.upsert_experiment(json!({"id": "on", "name": "On", "cohorts": {"a": 1}}))
        .await;

    for experiment in ["missing", "off", "later", "over"] {
        let code = app
            .gql_err_code(Some(HTTP_KEY), ASSIGN, json!({"u": "u", "e": experiment}))
            .await;
        assert_eq!(code, "NOT_FOUND", "{experiment}");
    }
    assert_eq!(app.cohort_of("u", "on").await, "a");

    app.admin(
        "mutation { setExperimentActive(id: \"on\", active: false) { active } }",
        json!({}),
    )
    .await;
    let code = app
        .gql_err_code(Some(HTTP_KEY), ASSIGN, json!({"u": "u", "e": "on"}))
        .await;
    assert_eq!(code, "NOT_FOUND", "deactivation is visible at once");
}

#[tokio::test]
async fn active_experiments_lists_live_ones_in_byte_order_with_their_variants() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "b_exp", "name": "B", "cohorts": {"z": 1, "a": 1, "B": 1}}))
        .await;
    app.upsert_experiment(json!({"id": "a_exp", "name": "A", "cohorts": {"only": 1}}))
        .await;
    app.upsert_experiment(json!({"id": "Z_exp", "name": "Z", "cohorts": {"only": 1}}))
        .await;
    app.upsert_experiment(
        json!({"id": "c_off", "name": "C", "cohorts": {"only": 1}, "active": false}),
    )
    .await;
    app.set_config(Some("b_exp"), Some("a"), json!({"color": "red"}), false)
        .await;
    app.set_config(Some("b_exp"), None, json!({"color": "grey"}), false)
        .await;

    let data = app
        .gql("{ activeExperiments { id cohorts { name weight } variants { cohort config version } } }", json!({}))
        .await;

    let list = data["activeExperiments"].as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["Z_exp", "a_exp", "b_exp"]);
    let cohort_names: Vec<&str> = list[2]["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cohort_names, ["B", "a", "z"]);
    assert_eq!(
        list[2]["variants"],
        json!([{"cohort": "a", "config": {"color": "red"}, "version": 1}, {"cohort": "default", "config": {"color": "grey"}, "version": 1}])
    );
    assert_eq!(list[0]["variants"], json!([]));
}

#[tokio::test]
async fn experiment_definitions_are_validated() {
    let app = TestApp::spawn().await;
    let mutation = "mutation($input: ExperimentInput!) { upsertExperiment(input: $input) { id } }";
    let cases = [
        (
            json!({"id": "global", "name": "n", "cohorts": {"a": 1}}),
            "id",
        ),
        (
            json!({"id": "bad id", "name": "n", "cohorts": {"a": 1}}),
            "id",
        ),
        (json!({"id": "e", "name": "", "cohorts": {"a": 1}}), "name"),
        (
            json!({"id": "e", "name": "n", "cohorts": {"default": 1}}),
            "cohorts",
        ),
        (json!({"id": "e", "name": "n", "cohorts": {}}), "cohorts"),
        (
            json!({"id": "e", "name": "n", "cohorts": {"a": -1}}),
            "cohorts",
        ),
        (
            json!({"id": "e", "name": "n", "cohorts": {"a": 0, "b": 0}}),
            "cohorts",
        ),
        (
            json!({"id": "e", "name": "n", "cohorts": {"a": "1"}}),
            "cohorts",
        ),
        (json!({"id": "e", "name": "n", "cohorts": [1]}), "cohorts"),
        (
            json!({"id": "e", "name": "n", "cohorts": (0..21).map(|i| (format!("c{i}"), json!(1))).collect::<serde_json::Map<_, _>>()}),
            "cohorts",
        ),
        (
            json!({"id": "e", "name": "n", "cohorts": {"a": 1}, "salt": "has space"}),
            "salt",
        ),
        (
            json!({"id": "e", "name": "n", "cohorts": {"a": 1}, "startAt": "2030-01-01T00:00:00Z", "endAt": "2029-01-01T00:00:00Z"}),
            "endAt",
        ),
        (
            json!({"id": "e", "name": "n", "cohorts": {"a": 1}, "startAt": "soon"}),
            "startAt",
        ),
    ];
    for (input, field) in cases {
        let (_, body) = app
            .gql_as(Some(ADMIN_KEY), mutation, json!({"input": input}))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{input}: {body}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["errors"][0]["field"], field,
            "{input}: {body}"
        );
    }
    let data = app
        .admin("{ experiment(id: \"e\") { id } }", json!({}))
        .await;
    assert_eq!(data["experiment"], Value::Null, "nothing was stored");
}

#[tokio::test]
async fn an_upsert_without_salt_keeps_the_stored_salt() {
    let app = TestApp::spawn().await;
    let cohorts = json!({"a": 1, "b": 1});
    app.upsert_experiment(
        json!({"id": "salty", "name": "S", "cohorts": cohorts, "salt": "pepper"}),
    )
    .await;
    app.upsert_experiment(json!({"id": "salty", "name": "S renamed", "cohorts": cohorts}))
        .await;

    let weights = octp_backend::domain::assignment::CohortWeights::parse(&cohorts).unwrap();
    let users: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
    let assigned = assign_many(&app, "salty", &users).await;

    for user in &users {
        let expected = octp_backend::domain::assignment::assign("pepper", user, &weights);
        assert_eq!(assigned[user], expected, "{user} follows the kept salt");
    }
    let differs_from_id_salt = users.iter().any(|user| {
        octp_backend::domain::assignment::assign("salty", user, &weights) != assigned[user]
    });
    assert!(differs_from_id_salt, "the salt in use is not the id");
}

#[tokio::test]
async fn admin_operations_refuse_the_http_key_with_forbidden() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "e", "name": "E", "cohorts": {"a": 1}}))
        .await;

    for operation in [
        "mutation { upsertExperiment(input: {id: \"x\", name: \"X\", cohorts: {a: 1}}) { id } }",
        "mutation { setExperimentActive(id: \"e\", active: false) { id } }",
        "mutation { updateRemoteConfig(config: {a: 1}) { version } }",
        "{ experiment(id: \"e\") { id } }",
    ] {
        assert_eq!(
            app.gql_err_code(Some(HTTP_KEY), operation, json!({})).await,
            "FORBIDDEN",
            "{operation}"
        );
    }
    let data = app
        .admin("{ experiment(id: \"e\") { id active } }", json!({}))
        .await;
    assert_eq!(
        data["experiment"],
        json!({"id": "e", "active": true}),
        "nothing changed"
    );
    let code = app
        .gql_err_code(
            Some(ADMIN_KEY),
            "mutation { setExperimentActive(id: \"nope\", active: true) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

/// A launch: many new players at once, each asked for by several clients over both transports.
/// First assignments are written in groups; still one row per player, and every client gets that
/// row's cohort.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_assignments_of_many_players_from_many_clients_store_one_row_each() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(
        json!({"id": "launch", "name": "Launch", "cohorts": {"a": 1, "b": 1, "c": 2}}),
    )
    .await;
    let players: Vec<String> = (0..60).map(|i| format!("new-player-{i}")).collect();
    let app = &app;
    let asks = players.iter().flat_map(|player| {
        (0..6).map(move |client| async move {
            let cohort = if client % 2 == 0 {
                app.cohort_of(player, "launch").await
            } else {
                let reply = app
                    .client
                    .post(app.url(&format!(
                        "/v2/rpc/FetchRemoteConfig?http_key={}&unwrap",
                        crate::helpers::HTTP_KEY
                    )))
                    .body(json!({"userId": player}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(reply.status(), reqwest::StatusCode::OK);
                let reply: serde_json::Value = reply.json().await.unwrap();
                reply["assignments"][0]["cohort"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            (player.clone(), cohort)
        })
    });
    let answers = futures_util::future::join_all(asks).await;

    let stored = stored_cohorts(app, "launch").await;
    assert_eq!(stored.len(), players.len(), "one row per player");
    for (player, cohort) in answers {
        assert_eq!(
            stored.get(&player),
            Some(&cohort),
            "{player} was told another cohort than stored"
        );
    }
}

/// The console's list: every experiment whatever its state, in byte order of ids, admin key only.
#[tokio::test]
async fn every_experiment_is_listed_in_byte_order_for_the_admin_key_only() {
    let app = TestApp::spawn().await;
    for (id, active) in [("b_off", false), ("a_on", true), ("B_upper", true)] {
        app.upsert_experiment(json!({"id": id, "name": id, "cohorts": {"x": 1}, "active": active}))
            .await;
    }
    // Inside its flag but outside its window: listed too.
    app.upsert_experiment(json!({"id": "later", "name": "later", "cohorts": {"x": 1},
        "startAt": "2999-01-01T00:00:00Z"}))
        .await;
    let listed = app.admin("{ experiments { id active } }", json!({})).await;
    assert_eq!(
        listed["experiments"],
        json!([{"id": "B_upper", "active": true}, {"id": "a_on", "active": true},
               {"id": "b_off", "active": false}, {"id": "later", "active": true}])
    );
    assert_eq!(
        app.gql_err_code(Some(HTTP_KEY), "{ experiments { id } }", json!({}))
            .await,
        "FORBIDDEN"
    );
}

/// No API deletes an experiment, but one deleted by hand in SQL takes its assignments with it:
/// SQLite's foreign key cascades, and on PostgreSQL a trigger does (its foreign key was dropped:
/// migration 8), so an id used again starts with no players.
#[tokio::test]
async fn an_experiment_deleted_by_hand_takes_its_assignments_with_it() {
    use sea_orm::{ConnectionTrait, Statement};

    let app = TestApp::spawn().await;
    for id in ["gone", "kept"] {
        app.upsert_experiment(json!({"id": id, "name": id, "cohorts": {"a": 1, "b": 1}}))
            .await;
        for user in 0..5 {
            app.cohort_of(&format!("hand-{user}"), id).await;
        }
    }
    let connection = app.database.connect().await;
    connection
        .execute_unprepared("DELETE FROM experiment_metadata WHERE experiment_id = 'gone'")
        .await
        .expect("delete an experiment by hand");
    let backend = connection.get_database_backend();
    let rows = connection
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT experiment_id, COUNT(*) AS n FROM user_experiment_assignments GROUP BY experiment_id",
        ))
        .await
        .expect("count assignments");
    let counts: HashMap<String, i64> = rows
        .iter()
        .map(|row| {
            (
                row.try_get::<String>("", "experiment_id").unwrap(),
                row.try_get::<i64>("", "n").unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, HashMap::from([("kept".to_owned(), 5)]));
}

/// The assignment writer keeps its PostgreSQL connection while new players keep coming. When the
/// database kills it (and every other connection of the server) mid-launch, the group on it fails
/// with SERVICE_UNAVAILABLE, never another error nor a cohort that is not stored, and the groups
/// after it are stored on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_assignments_go_on_after_the_database_kills_the_writers_connection() {
    let test = "first_assignments_go_on_after_the_database_kills_the_writers_connection";
    let database = crate::helpers::TestDatabase::create().await;
    if !database.is_postgres() {
        crate::helpers::skip(
            test,
            "PostgreSQL only (set TEST_DATABASE_URL): SQLite has no connection to kill; .ci/run's PostgreSQL pass runs it",
            false,
        );
        return;
    }
    let app = TestApp::spawn_with(database, |_| {}).await;
    app.upsert_experiment(json!({"id": "killed", "name": "Killed", "cohorts": {"a": 1, "b": 1}}))
        .await;
    let answered = AtomicUsize::new(0);
    let progress = tokio::sync::Notify::new();
    let stop = AtomicBool::new(false);
    let (app, answered, progress, stop) = (&app, &answered, &progress, &stop);
    let client_loop = |client: usize| async move {
        let mut outcomes = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let player = format!("launch-{client}-{n}");
            n += 1;
            let reply = app
                .client
                .post(app.url(&format!(
                    "/v2/rpc/GetExperimentAssignment?http_key={HTTP_KEY}&unwrap"
                )))
                .body(json!({"userId": player, "experimentId": "killed"}).to_string())
                .send()
                .await
                .expect("the server answers");
            let status = reply.status();
            let body: Value = reply.json().await.expect("a JSON reply");
            answered.fetch_add(1, Ordering::Relaxed);
            progress.notify_waiters();
            outcomes.push((player, status, body));
        }
        outcomes
    };
    let clients = futures_util::future::join_all((0..8).map(client_loop));
    let kill_midway = async {
        let wait_for = |count: usize| async move {
            let reached = async {
                loop {
                    // Registered before the check, so an answer between the two still wakes it.
                    let next_answer = progress.notified();
                    if answered.load(Ordering::Relaxed) >= count {
                        return;
                    }
                    next_answer.await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(30), reached)
                .await
                .unwrap_or_else(|_| panic!("fewer than {count} answers within 30 s"));
        };
        wait_for(200).await;
        let connection = app.database.connect().await;
        let killed = sea_orm::ConnectionTrait::query_all_raw(
            &connection,
            sea_orm::Statement::from_string(
                connection.get_database_backend(),
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            ),
        )
        .await
        .expect("terminate the server's connections");
        assert!(!killed.is_empty(), "the server had connections to kill");
        let killed_at = answered.load(Ordering::Relaxed);
        wait_for(killed_at + 400).await;
        stop.store(true, Ordering::Relaxed);
        killed_at
    };
    let (outcomes, killed_at) = tokio::join!(clients, kill_midway);

    let stored = stored_cohorts(app, "killed").await;
    let mut assigned = 0;
    for (player, status, body) in outcomes.into_iter().flatten() {
        if status == reqwest::StatusCode::OK {
            assert_eq!(
                stored.get(&player).map(String::as_str),
                body["cohort"].as_str(),
                "{player} was told a cohort that is not the stored one"
            );
            assigned += 1;
        } else {
            assert_eq!(
                (status, body["code"].clone()),
                (reqwest::StatusCode::SERVICE_UNAVAILABLE, json!(14)),
                "{player}: {body}"
            );
        }
    }
    assert!(
        assigned > killed_at,
        "players were assigned after the kill ({assigned} assigned in all, {killed_at} answered before it)"
    );
}
