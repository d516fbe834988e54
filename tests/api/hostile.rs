//! What a client holding only the public http key can send, and what it must never achieve:
//! unbounded memory or time, rows that cannot be read back, deadlocks, noisy logs.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{HTTP_KEY, TestApp, TestDatabase, free_port, start_binary};

const COLLECT: &str =
    "mutation($e: [EventInput!]!) { collectEvents(events: $e) { accepted duplicates } }";

/// Peak resident memory of a process, in MiB (Linux).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line");
    kib / 1024
}

/// `levels` fragments, each spreading the next twice: 2^levels fields from a few hundred bytes.
fn fan_out(levels: usize) -> String {
    let mut query = String::from("{ ...F0 }");
    for level in 0..levels {
        query.push_str(&format!(
            " fragment F{level} on Query {{ ...F{next} ...F{next} }}",
            next = level + 1
        ));
    }
    query.push_str(&format!(
        " fragment F{levels} on Query {{ health {{ status }} }}"
    ));
    query
}

async fn post(client: &reqwest::Client, port: u16, body: &Value) -> (StatusCode, Value) {
    let response = client
        .post(format!("http://127.0.0.1:{port}/graphql"))
        .bearer_auth(HTTP_KEY)
        .json(body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

fn first_error(body: &Value) -> (String, String) {
    let error = &body["errors"][0];
    (
        error["extensions"]["code"]
            .as_str()
            .unwrap_or("none")
            .to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The shapes that took the server to tens of GB (and the kernel's OOM killer) are refused before
/// they run, and the heaviest query that is allowed stays within the response budget; the server's
/// peak memory through all of it, four at a time, stays far below what one of them used to take.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worst_query_shapes_are_refused_in_time_and_memory_stays_bounded() {
    let database = TestDatabase::create().await;
    let port = free_port();
    let server = start_binary(&database, port, &[], None).await;
    let pid = server.id().expect("the server runs");
    let client = reqwest::Client::new();
    // 500 events whose properties are the heaviest 16 KiB there is: thousands of tiny values.
    let zeros = vec![0; 8_180];
    for batch in 0..10 {
        let events: Vec<Value> = (0..50)
            .map(|i| json!({"eventId": format!("heavy-{batch}-{i}"), "userId": "heavy", "eventName": "e", "properties": {"a": zeros}}))
            .collect();
        let (status, body) = post(
            &client,
            port,
            &json!({"query": COLLECT, "variables": {"e": events}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["collectEvents"]["accepted"], 50, "{body}");
    }
    let page = "userEvents(userId: \"heavy\", first: 500) { nodes { properties } }";
    let aliased = |count: usize| -> String {
        let fields: String = (0..count).map(|i| format!("a{i}: {page} ")).collect();
        format!("{{ {fields} }}")
    };
    let typenames: String = (0..10_000).map(|i| format!("t{i}: __typename ")).collect();
    let health_aliases: String = (0..1_000)
        .map(|i| format!("h{i}: health {{ status }} "))
        .collect();
    let shapes: Vec<(&str, String, &str)> = vec![
        ("fragment fan-out 2^30", fan_out(30), "too complex"),
        (
            "fragment cycle",
            "{ ...A } fragment A on Query { ...A ...A }".to_owned(),
            "spreads itself",
        ),
        ("64 aliased pages", aliased(64), "complex"),
        ("3 aliased pages", aliased(3), "complex"),
        (
            "10,000 __typename aliases",
            format!("{{ {typenames} }}"),
            "fields",
        ),
        (
            "1,000 health aliases",
            format!("{{ {health_aliases} }}"),
            "aliases",
        ),
        (
            "one full page of the heaviest properties",
            aliased(1),
            "too large",
        ),
        ("two pages", aliased(2), "too large"),
    ];

    for (name, query, expected) in &shapes {
        let body = json!({"query": query});
        let requests = (0..4).map(|_| post(&client, port, &body));
        let replies = futures_util::future::join_all(requests).await;
        eprintln!("{name}: peak RSS so far {} MiB", peak_rss_mib(pid));
        for (status, body) in replies {
            let (code, message) = first_error(&body);
            assert_eq!(code, "BAD_USER_INPUT", "{name}: {status} {body:.300}");
            assert!(
                expected
                    .split('|')
                    .any(|expected| message.contains(expected)),
                "{name}: {message}"
            );
            assert!(
                body["data"].is_null() || body["data"].get("a0").is_none_or(Value::is_null),
                "{name}: nothing is half-answered: {:.300}",
                body.to_string()
            );
        }
    }
    // A reasonable page of the same user is still served.
    let (status, body) = post(&client, port, &json!({"query": "{ userEvents(userId: \"heavy\", first: 20) { nodes { eventId properties } } }"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"]["userEvents"]["nodes"].as_array().map(Vec::len),
        Some(20),
        "{body:.300}"
    );

    let peak = peak_rss_mib(pid);
    eprintln!("server peak RSS through the worst shapes: {peak} MiB");
    assert!(peak < 768, "peak RSS {peak} MiB");
}

/// A raw-JSON RPC call (`?unwrap`): the status and the reply as JSON.
async fn rpc(app: &TestApp, id: &str, key: &str, payload: &Value) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url(&format!("/v2/rpc/{id}?http_key={key}&unwrap")))
        .header("content-type", "application/json")
        .body(payload.to_string())
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON reply"))
}

/// `levels` levels of objects: `{"a": {"a": … {} }}` (the outer object is level 1).
fn nested_json(levels: usize) -> Value {
    (1..levels).fold(json!({}), |inner, _| json!({ "a": inner }))
}

/// The same as a GraphQL literal.
fn nested_literal(levels: usize) -> String {
    format!("{}{}", "{a: ".repeat(levels - 1) + "{", "}".repeat(levels))
}

/// Every extreme a JSON number can take comes back as the same number on both backends
/// (PostgreSQL's JSONB prints 1.7976931348623157e308 as a 309-digit integer), and such a value in
/// a config breaks nobody's reads.
#[tokio::test]
async fn extreme_numbers_come_back_as_the_numbers_that_were_sent() {
    let app = TestApp::spawn().await;
    let numbers = json!({
        "max": 1.7976931348623157e308,
        "min": -1.7976931348623157e308,
        "big": 1.6e308,
        "tiny": 5e-324,
        "third": 0.1,
        "huge_int": 18446744073709551615u64,
        "neg_int": -9223372036854775808i64,
    });
    app.gql(
        "mutation($p: JSON) { collectEvents(events: [{userId: \"numbers\", eventName: \"e\", properties: $p}]) { accepted } }",
        json!({"p": numbers}),
    )
    .await;
    let history = app
        .gql(
            "{ userEvents(userId: \"numbers\") { nodes { properties } } }",
            json!({}),
        )
        .await;
    assert_eq!(history["userEvents"]["nodes"][0]["properties"], numbers);
    let (status, reply) = rpc(
        &app,
        "AnalyticsGetUserEvents",
        HTTP_KEY,
        &json!({"userId": "numbers"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["events"][0]["properties"], numbers);

    // In configs: the global default, and a cohort of an inactive experiment.
    app.upsert_experiment(
        json!({"id": "off", "name": "Off", "cohorts": {"a": 1}, "active": false}),
    )
    .await;
    app.set_config(Some("off"), Some("a"), numbers.clone(), false)
        .await;
    app.set_config(None, None, numbers.clone(), false).await;
    let fetched = app
        .gql("{ remoteConfig(userId: \"anyone\") { config } }", json!({}))
        .await;
    assert_eq!(fetched["remoteConfig"]["config"], numbers);
    let (status, reply) = rpc(
        &app,
        "FetchRemoteConfig",
        HTTP_KEY,
        &json!({"userId": "someone"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["config"], numbers);
    let overwritten = app
        .set_config(Some("off"), Some("a"), json!({"x": 1}), false)
        .await;
    assert_eq!(overwritten["version"], 2);
}

/// JSON deeper than 64 levels is refused the same way whether it comes as a literal or a variable,
/// naming the event and field; 64 levels are stored and read back.
#[tokio::test]
async fn json_deeper_than_64_levels_is_refused_by_name_and_64_round_trip() {
    let app = TestApp::spawn().await;
    let collect_literal = |properties: String| {
        format!(
            "mutation {{ collectEvents(events: [{{userId: \"deep\", eventName: \"ok\"}}, {{userId: \"deep\", eventName: \"e\", properties: {properties}}}]) {{ accepted }} }}"
        )
    };
    let by_variable = "mutation($p: JSON) { collectEvents(events: [{userId: \"deep\", eventName: \"ok\"}, {userId: \"deep\", eventName: \"e\", properties: $p}]) { accepted } }";

    for (status, body) in [
        app.gql_as(
            Some(HTTP_KEY),
            &collect_literal(nested_literal(65)),
            json!({}),
        )
        .await,
        app.gql_as(Some(HTTP_KEY), by_variable, json!({"p": nested_json(65)}))
            .await,
    ] {
        assert_eq!(status, StatusCode::OK);
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{body}");
        assert_eq!(error["extensions"]["errors"][0]["index"], 1, "{body}");
        assert_eq!(
            error["extensions"]["errors"][0]["field"], "properties",
            "{body}"
        );
        assert!(
            error["message"].as_str().unwrap().contains("64 levels"),
            "{body}"
        );
    }
    let (_, config) = app
        .gql_as(
            Some(crate::helpers::ADMIN_KEY),
            "mutation($c: JSON!) { updateRemoteConfig(config: $c) { version } }",
            json!({"c": nested_json(65)}),
        )
        .await;
    assert_eq!(
        config["errors"][0]["extensions"]["errors"][0]["field"], "config",
        "{config}"
    );

    app.gql(&collect_literal(nested_literal(64)), json!({}))
        .await;
    app.gql(by_variable, json!({"p": nested_json(64)})).await;
    let history = app
        .gql(
            "{ userEvents(userId: \"deep\", eventName: \"e\") { nodes { properties } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        history["userEvents"]["nodes"][0]["properties"],
        nested_json(64)
    );
    assert_eq!(
        history["userEvents"]["nodes"][1]["properties"],
        nested_json(64)
    );
    let stored = app
        .gql(
            "{ userEvents(userId: \"deep\") { nodes { eventName } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        stored["userEvents"]["nodes"].as_array().unwrap().len(),
        4,
        "the refused batches stored nothing"
    );
}

/// NUL cannot live in PostgreSQL's JSONB or text columns, so both backends refuse it by name.
#[tokio::test]
async fn nul_characters_are_refused_by_name_on_every_path() {
    let app = TestApp::spawn().await;
    let nul = "a\u{0}b";
    let field_of = |body: &Value| {
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
        body["errors"][0]["extensions"]["errors"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let collect = "mutation($p: JSON) { collectEvents(events: [{userId: \"u\", eventName: \"e\", properties: $p}]) { accepted } }";
    for properties in [
        json!({"k": nul}),
        json!({nul: 1}),
        json!({"list": [{"deep": nul}]}),
    ] {
        let (_, body) = app
            .gql_as(Some(HTTP_KEY), collect, json!({"p": properties}))
            .await;
        assert_eq!(field_of(&body), "properties");
    }
    let update = "mutation($c: JSON!) { updateRemoteConfig(config: $c) { version } }";
    for config in [json!({"k": nul}), json!({nul: true})] {
        let (_, body) = app
            .gql_as(
                Some(crate::helpers::ADMIN_KEY),
                update,
                json!({"c": config}),
            )
            .await;
        assert_eq!(field_of(&body), "config");
    }
    let upsert = "mutation($d: String) { upsertExperiment(input: {id: \"x\", name: \"X\", cohorts: {a: 1}, description: $d}) { id } }";
    let (_, body) = app
        .gql_as(Some(crate::helpers::ADMIN_KEY), upsert, json!({"d": nul}))
        .await;
    assert_eq!(field_of(&body), "description");
    let (_, body) = app
        .gql_as(
            Some(crate::helpers::ADMIN_KEY),
            "query($id: String!) { experiment(id: $id) { id } }",
            json!({"id": nul}),
        )
        .await;
    assert_eq!(field_of(&body), "id");
    let (status, reply) = rpc(
        &app,
        "AnalyticsCollectEvents",
        HTTP_KEY,
        &json!({"events": [{"userId": "u", "eventName": "e", "properties": {"k": nul}}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(
        reply["error"]["errors"][0]["field"], "properties",
        "{reply}"
    );

    let nothing = app.gql("{ userEvents(userId: \"u\") { nodes { id } } remoteConfig(userId: \"u\") { version } }", json!({})).await;
    assert_eq!(nothing["userEvents"]["nodes"], json!([]));
    assert_eq!(nothing["remoteConfig"]["version"], 0);
}

/// Rows written before these rules (or by hand) that cannot be read back fail only where they are
/// used: other variants and other users keep being served, and the bad variant can be replaced.
#[tokio::test]
async fn an_unreadable_stored_row_breaks_no_other_read() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "exp", "name": "Exp", "cohorts": {"a": 1}}))
        .await;
    app.set_config(None, None, json!({"global": true}), false)
        .await;
    app.set_config(Some("exp"), Some("a"), json!({"cohort": true}), false)
        .await;
    app.gql(
        "mutation { collectEvents(events: [{eventId: \"good\", userId: \"mixed\", eventName: \"e\", properties: {ok: 1}}]) { accepted } }",
        json!({}),
    )
    .await;
    // 200 levels: more than any JSON parser here reads back.
    let unreadable = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let unreadable = format!("{{\"a\": {unreadable}}}");
    let connection = app.database.connect().await;
    let cast = if app.database.is_postgres() {
        "::jsonb"
    } else {
        ""
    };
    for sql in [
        format!(
            "UPDATE config_variants SET config_data = '{unreadable}'{cast} WHERE experiment_id = 'exp'"
        ),
        format!(
            "INSERT INTO analytics_events (event_id, user_id, event_name, event_timestamp, received_at, properties) VALUES ('bad', 'mixed', 'e', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z', '{unreadable}'{cast})"
        ),
    ] {
        sea_orm::ConnectionTrait::execute_unprepared(&connection, &sql)
            .await
            .expect(&sql);
    }
    // Writes by hand are unseen by the caches; any write on the instance makes them current.
    app.set_config(Some("exp"), None, json!({"exp_default": true}), false)
        .await;

    let config = app
        .gql(
            "{ remoteConfig(userId: \"someone\", experimentId: \"exp\") { source config } }",
            json!({}),
        )
        .await;
    assert_eq!(
        config["remoteConfig"]["source"], "EXPERIMENT_DEFAULT",
        "{config}"
    );
    let merged = app
        .gql(
            "{ remoteConfig(userId: \"someone\") { config } }",
            json!({}),
        )
        .await;
    assert_eq!(merged["remoteConfig"]["config"]["global"], true, "{merged}");
    let history = app
        .gql(
            "{ userEvents(userId: \"mixed\") { nodes { eventId } } }",
            json!({}),
        )
        .await;
    assert_eq!(history["userEvents"]["nodes"], json!([{"eventId": "good"}]));

    let (_, merge) = app
        .gql_as(
            Some(crate::helpers::ADMIN_KEY),
            "mutation { updateRemoteConfig(experimentId: \"exp\", cohort: \"a\", config: {x: 1}, merge: true) { version } }",
            json!({}),
        )
        .await;
    assert_eq!(
        merge["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{merge}"
    );
    let replaced = app
        .set_config(Some("exp"), Some("a"), json!({"fixed": true}), false)
        .await;
    assert_eq!(replaced["version"], 2);
    let config = app
        .gql(
            "{ remoteConfig(userId: \"someone\", experimentId: \"exp\") { source config } }",
            json!({}),
        )
        .await;
    assert_eq!(
        config["remoteConfig"]["config"],
        json!({"fixed": true}),
        "{config}"
    );
}

/// Retries from many devices: batches whose ids overlap in shuffled orders, over both transports
/// at once. Every batch succeeds, every id is stored once and counted as accepted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_overlapping_in_shuffled_orders_all_succeed_and_store_each_id_once() {
    let app = TestApp::spawn().await;
    const CLIENTS: usize = 40;
    const BATCHES: usize = 10;
    const POOL: usize = 300;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64*: a fixed, reproducible shuffle without another dependency.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut plans = Vec::new();
    for round in 0..BATCHES {
        let mut round_plans = Vec::new();
        for _ in 0..CLIENTS {
            let mut ids: Vec<usize> = (0..POOL).collect();
            for i in (1..ids.len()).rev() {
                ids.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            ids.truncate(100);
            // Each round uses fresh ids, so every round contends anew.
            round_plans.push(
                ids.into_iter()
                    .map(|id| id + round * POOL)
                    .collect::<Vec<_>>(),
            );
        }
        plans.push(round_plans);
    }
    // Each client sends its batches one after another; the clients run all at once.
    let clients = (0..CLIENTS).map(|client| {
        let app = &app;
        let batches: Vec<Vec<usize>> = plans.iter().map(|round| round[client].clone()).collect();
        async move {
            let mut accepted = 0;
            for ids in batches {
                accepted += send(app, client, ids).await;
            }
            accepted
        }
    });
    let outcomes = futures_util::future::join_all(clients).await;
    async fn send(app: &TestApp, client: usize, ids: Vec<usize>) -> u64 {
        {
            let events: Vec<Value> = ids
                .iter()
                .map(|id| json!({"eventId": format!("overlap-{id}"), "userId": "crowd", "eventName": "tick"}))
                .collect();
            if client.is_multiple_of(2) {
                let (status, body) = app
                    .gql_as(Some(HTTP_KEY), COLLECT, json!({"e": events}))
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(body.get("errors").is_none(), "a valid batch failed: {body}");
                body["data"]["collectEvents"]["accepted"].as_u64().unwrap()
            } else {
                let (status, reply) = rpc(
                    app,
                    "AnalyticsCollectEvents",
                    HTTP_KEY,
                    &json!({"events": events}),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "a valid batch failed: {reply}");
                reply["accepted"].as_u64().unwrap()
            }
        }
    }

    let accepted: u64 = outcomes.iter().sum();
    let (stored, distinct) = app.stored_event_ids("crowd").await;
    assert_eq!(stored, distinct, "no id is stored twice");
    assert_eq!(
        accepted, distinct as u64,
        "each stored id was accepted exactly once"
    );
    assert!(
        distinct > 2_500,
        "the batches covered the pool ({distinct})"
    );
}

/// Concurrent merges into one variant queue up in the database: all succeed, none is lost, each
/// gets its own version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merges_into_one_variant_all_succeed_and_keep_every_key() {
    let app = TestApp::spawn().await;
    app.set_config(None, None, json!({"base": 0}), false).await;
    let merges = futures_util::future::join_all((0..16).map(|i| {
        let app = &app;
        async move {
            let (status, body) = app
                .gql_as(
                    Some(crate::helpers::ADMIN_KEY),
                    "mutation($c: JSON!) { updateRemoteConfig(config: $c, merge: true) { version } }",
                    json!({"c": {format!("k{i}"): i}}),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            assert!(body.get("errors").is_none(), "a merge failed: {body}");
            body["data"]["updateRemoteConfig"]["version"].as_i64().unwrap()
        }
    }))
    .await;

    let mut versions = merges.clone();
    versions.sort_unstable();
    assert_eq!(versions, (2..=17).collect::<Vec<i64>>(), "one version each");
    let config = app
        .gql(
            "{ remoteConfig(userId: \"u\") { version config } }",
            json!({}),
        )
        .await;
    assert_eq!(config["remoteConfig"]["version"], 17);
    let stored = config["remoteConfig"]["config"].as_object().unwrap();
    assert_eq!(stored.len(), 17, "{stored:?}");
}

/// Connections that never finish their headers, or never send anything, are closed after the
/// header-read timeout; at most `--max-client-connections` are open at once, and a real client
/// is still served once the stalled ones are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_and_cannot_crowd_out_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let database = TestDatabase::create().await;
    let port = free_port();
    let _server = start_binary(
        &database,
        port,
        &[
            "--header-read-timeout-secs",
            "1",
            "--max-client-connections",
            "8",
        ],
        None,
    )
    .await;
    let mut stalled = Vec::new();
    for i in 0..24 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        if i % 2 == 0 {
            // Headers begun, never finished.
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .await
                .unwrap();
        }
        stalled.push(stream);
    }

    // Every stalled connection is eventually closed by the server (read gives end of stream or an
    // error); the connection limit lets later ones in only as earlier ones go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (i, stream) in stalled.iter_mut().enumerate() {
        let mut buffer = [0u8; 512];
        loop {
            let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("stalled connection {i} was never closed"));
            match read {
                Ok(0) | Err(_) => break,
                // A 408 for the unfinished headers is fine; the close must follow.
                Ok(_) => continue,
            }
        }
    }
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("a real client is served");
    assert_eq!(ready.status(), StatusCode::OK);
}

/// A client's mistake (a method the RPC route does not take, a bad key, a bad payload) is not a
/// server error: nothing reaches the log at ERROR.
#[tokio::test]
async fn client_mistakes_write_no_error_lines_to_the_log() {
    let database = TestDatabase::create().await;
    let port = free_port();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("server.log");
    let mut server = start_binary(&database, port, &[], Some(&log)).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let reply = client
            .request(method.clone(), format!("{base}/v2/rpc/HealthCheck"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::NOT_IMPLEMENTED, "{method}");
    }
    for path in [
        "/v2/rpc/HealthCheck?http_key=wrong",
        "/v2/rpc/Nope?http_key=defaulthttpkey",
        "/v2/rpc/FetchRemoteConfig?http_key=defaulthttpkey&unwrap",
    ] {
        let reply = client
            .post(format!("{base}{path}"))
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert!(
            reply.status().is_client_error(),
            "{path}: {}",
            reply.status()
        );
    }
    let reply = client
        .post(format!("{base}/graphql"))
        .bearer_auth(HTTP_KEY)
        .json(&json!({"query": "{ nope }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);

    server.kill().await.ok();
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(
        !written.lines().any(|line| line.contains("ERROR")),
        "client mistakes were logged as errors:\n{written}"
    );
}

/// Error responses stay small whatever the request: a parse error does not echo a huge document,
/// and a document with thousands of mistakes gets a bounded list.
#[tokio::test]
async fn error_responses_are_bounded_in_count_and_length() {
    let app = TestApp::spawn().await;
    let huge = format!("{{ health {{ status }} {} ", "x".repeat(900_000));
    let (_, parse_error) = app.gql_as(Some(HTTP_KEY), &huge, json!({})).await;
    let size = parse_error.to_string().len();
    assert!(size < 4_096, "a parse error of {size} bytes");
    assert_eq!(
        parse_error["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{parse_error:.300}"
    );

    let arguments: String = (0..50_000).map(|i| format!("a{i}: 1 ")).collect();
    let (_, many) = app
        .gql_as(
            Some(HTTP_KEY),
            &format!("{{ health({arguments}) {{ status }} }}"),
            json!({}),
        )
        .await;
    let errors = many["errors"].as_array().expect("errors");
    assert!(errors.len() <= 20, "{} errors", errors.len());
    assert!(
        errors.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("more errors")
    );
    let size = many.to_string().len();
    assert!(size < 16_384, "{size} bytes of errors");
}

/// A request stuck past the timeout gets 408 with its protocol's error body on both transports,
/// never an empty reply.
#[tokio::test]
async fn timeouts_answer_408_with_an_error_body_on_both_transports() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let app = TestApp::spawn_with(TestDatabase::create().await, |config| {
        config.server.request_timeout_secs = 1;
    })
    .await;
    let blocker = app.database.connect().await;
    let transaction = blocker.begin().await.unwrap();
    // Hold the events table so every batch waits longer than the timeout.
    let hold = if app.database.is_postgres() {
        "LOCK TABLE analytics_events IN ACCESS EXCLUSIVE MODE"
    } else {
        "INSERT INTO analytics_events (event_id, user_id, event_name, event_timestamp, received_at, properties) \
         VALUES ('blocker', 'b', 'e', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z', '{}')"
    };
    transaction.execute_unprepared(hold).await.unwrap();

    let (status, body) = app
        .gql_as(
            Some(HTTP_KEY),
            COLLECT,
            json!({"e": [{"userId": "u", "eventName": "e"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "REQUEST_TIMEOUT",
        "{body}"
    );
    let (status, reply) = rpc(
        &app,
        "AnalyticsCollectEvents",
        HTTP_KEY,
        &json!({"events": [{"userId": "u", "eventName": "e"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{reply}");
    assert_eq!(reply["code"], 4, "{reply}");
    assert!(
        reply["error"].is_string() && reply["message"].as_str().unwrap().contains("1 s"),
        "{reply}"
    );
    transaction.rollback().await.unwrap();
}
