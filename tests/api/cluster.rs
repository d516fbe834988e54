//! Events on a two-shard ClickHouse cluster (docs/api.md §13). `.ci/run` starts ZooKeeper and two
//! ClickHouse servers, then runs the events, RPC and results tests against the cluster
//! (TEST_EVENTS_URL on the first shard, TEST_EVENTS_CLUSTER, TEST_EVENTS_SHARDS, and
//! TEST_EVENTS_SINGLE_URL, a ClickHouse server outside the cluster). This test checks what only a
//! cluster can get wrong: where rows land, that each event is read once, and that results there
//! equal those of one ClickHouse server and of the main database for the same players and events.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::helpers::{EventsDatabase, TestApp, TestDatabase, skip};

const ASSIGN: &str = "query($u: String!, $e: String!) { experimentAssignment(userId: $u, experimentId: $e) { cohort } }";
const COLLECT: &str =
    "mutation($events: [EventInput!]!) { collectEvents(events: $events) { accepted duplicates } }";
const USER_EVENTS: &str =
    "query($u: String!, $after: String) { userEvents(userId: $u, first: 100, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { eventId } } } }";
const RESULTS: &str = "query($e: String!, $m: [MetricInput!]) { experimentResults(experimentId: $e, metrics: $m) {
  users cohorts { cohort users }
  metrics { metric { key } cohorts { cohort users total mean stddev diff lift pValue chanceToBeatControl significant } }
} }";

const PLAYERS: usize = 60;

#[tokio::test]
async fn a_two_shard_cluster_keeps_each_player_on_one_shard_reads_each_event_once_and_agrees_with_one_server()
 {
    let test = "a_two_shard_cluster_keeps_each_player_on_one_shard_reads_each_event_once_and_agrees_with_one_server";
    let shards: Vec<String> = std::env::var("TEST_EVENTS_SHARDS")
        .unwrap_or_default()
        .split(',')
        .filter(|shard| !shard.is_empty())
        .map(str::to_owned)
        .collect();
    let clustered = std::env::var("TEST_EVENTS_CLUSTER").is_ok_and(|name| !name.is_empty());
    let single = std::env::var("TEST_EVENTS_SINGLE_URL")
        .ok()
        .and_then(|url| {
            url.strip_prefix("clickhouse://")
                .map(|host| host.trim_end_matches('/').to_owned())
        });
    let (true, 2, Some(single_host)) = (clustered, shards.len(), single) else {
        skip(
            test,
            "needs a two-shard ClickHouse cluster and one server outside it (TEST_EVENTS_URL, TEST_EVENTS_CLUSTER, TEST_EVENTS_SHARDS = the shards' HTTP URLs, TEST_EVENTS_SINGLE_URL = clickhouse://host:port; .ci/run's cluster pass sets them)",
            false,
        );
        return;
    };
    let cluster = TestApp::spawn().await;
    let events_database = cluster
        .events_database
        .as_ref()
        .expect("TEST_EVENTS_URL names the cluster's first shard");
    let reference = TestApp::spawn_with(TestDatabase::create().await, |config| {
        config.database.events_url = None;
        config.database.events_cluster = None;
    })
    .await;
    let single_database = EventsDatabase {
        http_url: format!("http://{single_host}"),
        name: format!("octp_test_{}", uuid::Uuid::new_v4().simple()),
        cluster: None,
    };
    let one_server = TestApp::spawn_with(TestDatabase::create().await, |config| {
        config.database.events_url = Some(single_database.events_url());
        config.database.events_cluster = None;
    })
    .await;

    let experiment =
        json!({"id": "spread", "name": "Spread", "cohorts": {"control": 1, "treatment": 1}});
    let players: Vec<String> = (0..PLAYERS).map(|i| format!("player-{i}")).collect();
    for app in [&cluster, &reference, &one_server] {
        app.upsert_experiment(experiment.clone()).await;
    }
    for player in &players {
        let on_cluster = cluster
            .gql(ASSIGN, json!({"u": player, "e": "spread"}))
            .await;
        for other in [&reference, &one_server] {
            let elsewhere = other.gql(ASSIGN, json!({"u": player, "e": "spread"})).await;
            assert_eq!(on_cluster, elsewhere, "the assignment rule is the same");
        }
    }

    // After every server's assignments, so every event counts on all of them.
    let start = Utc::now() + Duration::seconds(1);
    let mut sent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut events = Vec::new();
    for (index, player) in players.iter().enumerate() {
        for purchase in 0..index % 5 + 1 {
            let id = format!("{player}-purchase-{purchase}");
            sent.entry(player.clone()).or_default().insert(id.clone());
            events.push(json!({
                "eventId": id, "userId": player, "eventName": "purchase",
                "timestamp": (start + Duration::seconds(purchase as i64)).to_rfc3339_opts(SecondsFormat::Micros, true),
                "properties": {"amount": (index % 7) as f64 * 1.5},
            }));
        }
        for session in 0..index % 3 {
            let id = format!("{player}-session-{session}");
            sent.entry(player.clone()).or_default().insert(id.clone());
            events.push(json!({
                "eventId": id, "userId": player, "eventName": "session_start",
                "timestamp": (start + Duration::seconds(10 + session as i64)).to_rfc3339_opts(SecondsFormat::Micros, true),
            }));
        }
    }
    let total: usize = sent.values().map(BTreeSet::len).sum();
    let batches: Vec<&[Value]> = events.chunks(25).collect();

    // Sent from several clients at once, then all of it again: the resend is all duplicates.
    let send_all = || {
        futures_util::future::join_all(
            batches
                .iter()
                .map(|batch| cluster.gql(COLLECT, json!({"events": batch}))),
        )
    };
    let first = send_all().await;
    let accepted: i64 = first
        .iter()
        .map(|reply| reply["collectEvents"]["accepted"].as_i64().unwrap())
        .sum();
    assert_eq!(accepted as usize, total, "{first:?}");
    for reply in send_all().await {
        assert_eq!(reply["collectEvents"]["accepted"], 0, "{reply}");
    }
    for batch in &batches {
        reference.gql(COLLECT, json!({"events": batch})).await;
        one_server.gql(COLLECT, json!({"events": batch})).await;
    }

    // Every event read back once, through the Distributed table.
    for (player, ids) in &sent {
        let mut read = Vec::new();
        let mut after = Value::Null;
        loop {
            let page = cluster
                .gql(USER_EVENTS, json!({"u": player, "after": after}))
                .await;
            let connection = &page["userEvents"];
            for edge in connection["edges"].as_array().unwrap() {
                read.push(edge["node"]["eventId"].as_str().unwrap().to_owned());
            }
            if connection["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = connection["pageInfo"]["endCursor"].clone();
        }
        read.sort();
        let expected: Vec<String> = ids.iter().cloned().collect();
        assert_eq!(read, expected, "{player}'s events, each once");
    }

    // Each shard holds some players, whole: a player's events and assignment on one shard.
    let mut on_shards = Vec::new();
    for shard in &shards {
        let shard_query = |table: &str| {
            format!(
                "SELECT DISTINCT user_id FROM {}.{table} ORDER BY user_id",
                events_database.name
            )
        };
        let events_users = shard_sql(shard, &shard_query("events_local")).await;
        let assignment_users = shard_sql(shard, &shard_query("assignments_local")).await;
        assert_eq!(
            events_users, assignment_users,
            "{shard} holds the assignments of the players whose events it holds"
        );
        assert!(
            !events_users.is_empty(),
            "{shard} holds no events: nothing was spread"
        );
        on_shards.push(events_users);
    }
    let mut everyone: Vec<&String> = on_shards.iter().flatten().collect();
    everyone.sort();
    let before_dedup = everyone.len();
    everyone.dedup();
    assert_eq!(before_dedup, everyone.len(), "no player on two shards");
    assert_eq!(everyone.len(), PLAYERS);

    let metrics = json!([
        {"key": "buyer", "eventName": "purchase", "kind": "CONVERSION"},
        {"key": "revenue", "eventName": "purchase", "kind": "SUM", "property": "amount"},
        {"key": "sessions", "eventName": "session_start", "kind": "COUNT"},
    ]);
    let variables = json!({"e": "spread", "m": metrics});
    let on_cluster = cluster.admin(RESULTS, variables.clone()).await;
    assert_eq!(on_cluster["experimentResults"]["users"], PLAYERS);
    let on_one_server = one_server.admin(RESULTS, variables.clone()).await;
    assert_same_figures(
        &on_cluster,
        &on_one_server,
        "experimentResults (one ClickHouse server)",
    );
    let on_reference = reference.admin(RESULTS, variables).await;
    assert_same_figures(
        &on_cluster,
        &on_reference,
        "experimentResults (main database)",
    );
}

/// Equal JSON, numbers within 1e-9 (sums added up in another order may differ in the last bits).
fn assert_same_figures(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
                "{path}: cluster {a}, main database {b}"
            );
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: lengths");
            for (index, (a, b)) in a.iter().zip(b).enumerate() {
                assert_same_figures(a, b, &format!("{path}[{index}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            let keys = |object: &serde_json::Map<String, Value>| {
                object.keys().cloned().collect::<BTreeSet<_>>()
            };
            assert_eq!(keys(a), keys(b), "{path}: fields");
            for (key, value) in a {
                assert_same_figures(value, &b[key], &format!("{path}.{key}"));
            }
        }
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

/// One shard's answer to `sql` (ClickHouse's HTTP interface), a line per row.
async fn shard_sql(shard: &str, sql: &str) -> Vec<String> {
    crate::helpers::clickhouse_sql(shard, sql)
        .await
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Tables made for one server are not silently used as a cluster's (events would stay on one
/// shard), nor the reverse: the server refuses to start and names the table.
#[tokio::test]
async fn tables_of_the_other_layout_stop_the_start_with_the_table_named() {
    use octp_backend::db::clickhouse::ClickHouseEvents;

    use crate::helpers::EventsDatabase;

    let cluster = std::env::var("TEST_EVENTS_CLUSTER").unwrap_or_default();
    let (Some(single), Some(spread)) = (EventsDatabase::from_env(), EventsDatabase::from_env())
    else {
        return skip(
            "tables_of_the_other_layout_stop_the_start_with_the_table_named",
            "needs a ClickHouse cluster (TEST_EVENTS_URL, TEST_EVENTS_CLUSTER; .ci/run's cluster pass sets them)",
            false,
        );
    };
    if cluster.is_empty() {
        return skip(
            "tables_of_the_other_layout_stop_the_start_with_the_table_named",
            "needs a ClickHouse cluster (TEST_EVENTS_CLUSTER; .ci/run's cluster pass sets it)",
            false,
        );
    }
    ClickHouseEvents::open(&single.events_url(), None)
        .await
        .expect("one server's tables");
    let refused = ClickHouseEvents::open(&single.events_url(), Some(&cluster))
        .await
        .err()
        .expect("one server's tables are refused as a cluster's");
    let message = format!("{refused:#}");
    assert!(
        message.contains(&format!("table {}.", single.name))
            && message.contains("not a Distributed table"),
        "{message}"
    );
    let tables = shard_sql(
        &single.http_url,
        &format!(
            "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
            single.name
        ),
    )
    .await;
    assert_eq!(
        tables,
        [
            "assignments",
            "events",
            "recent_events",
            "recent_events_feed"
        ],
        "the refused start added no tables"
    );

    ClickHouseEvents::open(&spread.events_url(), Some(&cluster))
        .await
        .expect("a cluster's tables");
    let refused = ClickHouseEvents::open(&spread.events_url(), None)
        .await
        .err()
        .expect("a cluster's tables are refused without --events-cluster");
    let message = format!("{refused:#}");
    assert!(
        message.contains("is a Distributed table") && message.contains("--events-cluster"),
        "{message}"
    );

    let refused = ClickHouseEvents::open(&spread.events_url(), Some("no such; cluster"))
        .await
        .err()
        .expect("a malformed cluster name is refused");
    assert!(
        format!("{refused:#}").contains("--events-cluster (OCTP_EVENTS_CLUSTER)"),
        "{refused:#}"
    );
}
