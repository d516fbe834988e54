//! Subscriptions over `/graphql/ws` (docs/api.md, "Real time, and many instances") through a real
//! WebSocket client, on one instance and either backend: keys, `remoteConfigChanged`,
//! `liveEvents`, the limits and shutdown. `instances.rs` covers writes made on another instance;
//! `graphql_ws.rs` runs the standard npm client.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_KEY, HTTP_KEY, TestApp},
    ws_client::{DEADLINE, WsClient},
};

pub const CHANGED: &str = "subscription($u: String!, $e: String) { remoteConfigChanged(userId: $u, experimentId: $e) { source cohort version config } }";
pub const LIVE: &str = "subscription($u: String, $n: String, $e: String) { liveEvents(userId: $u, eventName: $n, experimentId: $e) { eventId userId eventName experimentId } }";
/// Longer than the contract's 1 s: a message owed for a write would have come by then.
const QUIET: Duration = Duration::from_millis(1_500);

/// Stores events for `user` as `(eventId, eventName)` in one batch through `app`.
pub async fn collect(app: &TestApp, user: &str, events: &[(&str, &str)]) {
    let events: Vec<Value> = events
        .iter()
        .map(|(id, name)| json!({"eventId": id, "eventName": name, "userId": user}))
        .collect();
    let data = app
        .gql(
            "mutation($events: [EventInput!]!) { collectEvents(events: $events) { accepted } }",
            json!({"events": events}),
        )
        .await;
    assert_eq!(data["collectEvents"]["accepted"], events.len());
}

/// Sends marker events for `user` through `app` until the `liveEvents` subscription `id` on
/// `client` shows one: from then on, the subscription is surely running. Returns the marker seen.
pub async fn wait_until_live(client: &mut WsClient, id: &str, app: &TestApp, user: &str) -> Value {
    let started = tokio::time::Instant::now();
    for marker in 0.. {
        assert!(started.elapsed() < DEADLINE, "no marker event came through");
        collect(app, user, &[(&format!("marker-{id}-{marker}"), "marker")]).await;
        if let Some(message) = client.message_within(Duration::from_millis(200)).await {
            assert_eq!(message["id"], id, "{message}");
            return message["payload"]["data"]["liveEvents"].clone();
        }
    }
    unreachable!()
}

/// The next `liveEvents` events on `client` for `id` that are not markers, `count` of them.
pub async fn live_events_after_markers(
    client: &mut WsClient,
    id: &str,
    count: usize,
) -> Vec<Value> {
    let mut events = Vec::new();
    while events.len() < count {
        let event = client.next_data(id, "liveEvents").await;
        if event["eventName"] != "marker" {
            events.push(event);
        }
    }
    events
}

#[tokio::test]
async fn remote_config_changed_sends_the_answer_then_each_change_and_nothing_for_other_writes() {
    let app = TestApp::spawn().await;
    app.upsert_experiment(json!({"id": "shop", "name": "Shop", "cohorts": {"a": 1}}))
        .await;
    app.set_config(Some("shop"), None, json!({"price": 1}), false)
        .await;
    let mut client = WsClient::connect(&app, HTTP_KEY).await;
    client
        .subscribe("shop", CHANGED, json!({"u": "player", "e": "shop"}))
        .await;
    let first = client.next_data("shop", "remoteConfigChanged").await;
    assert_eq!(
        first,
        json!({"source": "EXPERIMENT_DEFAULT", "cohort": "a", "version": 1, "config": {"price": 1}})
    );

    // Writes that leave this answer as it is: another experiment's config, the global default
    // (shadowed by the experiment's), another experiment created.
    app.upsert_experiment(json!({"id": "other", "name": "Other", "cohorts": {"b": 1}}))
        .await;
    app.set_config(Some("other"), None, json!({"x": 1}), false)
        .await;
    app.set_config(None, None, json!({"coins": 5}), false).await;
    client.expect_silence(QUIET).await;

    app.set_config(Some("shop"), Some("a"), json!({"price": 2}), false)
        .await;
    let second = client.next_data("shop", "remoteConfigChanged").await;
    assert_eq!(
        second,
        json!({"source": "COHORT", "cohort": "a", "version": 1, "config": {"price": 2}})
    );
    app.set_config(Some("shop"), Some("a"), json!({"price": 3}), false)
        .await;
    let third = client.next_data("shop", "remoteConfigChanged").await;
    assert_eq!(third["version"], 2);
    assert_eq!(third["config"], json!({"price": 3}));

    // Completing a subscription stops it: a later change sends nothing.
    client.complete("shop").await;
    assert_eq!(
        client.message().await,
        json!({"type": "complete", "id": "shop"})
    );
    app.set_config(Some("shop"), Some("a"), json!({"price": 4}), false)
        .await;
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn the_key_comes_in_connection_init_or_the_url_and_a_bad_one_closes_with_4403() {
    let app = TestApp::spawn().await;
    for (query, payload) in [
        ("", json!({})),
        ("", json!({"Authorization": "Bearer wrong"})),
        ("", json!({"http_key": "wrong"})),
        ("?http_key=wrong", json!({})),
        ("", json!({"Authorization": HTTP_KEY})),
    ] {
        let mut client = WsClient::open(&app, query).await;
        client.init(payload.clone()).await;
        let (code, reason) = client.closed().await;
        assert_eq!(code, 4403, "{query} {payload}: {reason}");
    }
    for (query, payload) in [
        ("", json!({"Authorization": format!("Bearer {HTTP_KEY}")})),
        ("", json!({"http_key": HTTP_KEY})),
        (&*format!("?http_key={HTTP_KEY}"), json!({})),
        ("", json!({"Authorization": format!("Bearer {ADMIN_KEY}")})),
    ] {
        let mut client = WsClient::open(&app, query).await;
        client.init(payload.clone()).await;
        client.expect_ack().await;
        client.subscribe("c", CHANGED, json!({"u": "player"})).await;
        let answer = client.next_data("c", "remoteConfigChanged").await;
        assert_eq!(answer["source"], "NONE", "{query} {payload}");
    }

    // liveEvents needs the admin key.
    let mut client = WsClient::connect(&app, HTTP_KEY).await;
    client.subscribe("live", LIVE, json!({})).await;
    let (code, message) = client.error_then_complete("live").await;
    assert_eq!(code, "FORBIDDEN", "{message}");
}

#[tokio::test]
async fn bad_arguments_and_operations_are_refused_by_name_and_the_connection_goes_on() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect(&app, ADMIN_KEY).await;
    client
        .subscribe("bad-user", CHANGED, json!({"u": ""}))
        .await;
    let (code, message) = client.error_then_complete("bad-user").await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("userId"), "{message}");
    client
        .subscribe("bad-name", LIVE, json!({"n": "no spaces"}))
        .await;
    let (code, message) = client.error_then_complete("bad-name").await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("eventName"), "{message}");
    client
        .subscribe("query", "{ health { status } }", json!({}))
        .await;
    let (code, message) = client.error_then_complete("query").await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(
        message.contains("send a query to POST /graphql"),
        "{message}"
    );
    client
        .subscribe("syntax", "subscription {", json!({}))
        .await;
    let (code, _) = client.error_then_complete("syntax").await;
    assert_eq!(code, "BAD_USER_INPUT");
    // Still serving.
    client
        .subscribe("ok", CHANGED, json!({"u": "player"}))
        .await;
    client.next_data("ok", "remoteConfigChanged").await;
}

#[tokio::test]
async fn protocol_violations_close_with_the_protocols_codes() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::open(&app, "").await;
    client
        .subscribe("early", CHANGED, json!({"u": "player"}))
        .await;
    assert_eq!(
        client.closed().await.0,
        4401,
        "subscribe before connection_init"
    );

    let mut client = WsClient::connect(&app, HTTP_KEY).await;
    client.send_text("{not json").await;
    assert_eq!(client.closed().await.0, 4400);

    let mut client = WsClient::connect(&app, HTTP_KEY).await;
    client
        .init(json!({"Authorization": format!("Bearer {HTTP_KEY}")}))
        .await;
    assert_eq!(client.closed().await.0, 4429, "a second connection_init");
}

#[tokio::test]
async fn a_connection_holds_at_most_100_subscriptions() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect(&app, HTTP_KEY).await;
    for index in 0..100 {
        client
            .subscribe(
                &index.to_string(),
                CHANGED,
                json!({"u": format!("p{index}")}),
            )
            .await;
    }
    let mut answered = std::collections::HashSet::new();
    while answered.len() < 100 {
        let message = client.message().await;
        assert_eq!(message["type"], "next", "{message}");
        answered.insert(message["id"].as_str().unwrap().to_owned());
    }
    client
        .subscribe("one-too-many", CHANGED, json!({"u": "late"}))
        .await;
    let (code, message) = client.error_then_complete("one-too-many").await;
    assert_eq!(code, "LIMIT_EXCEEDED");
    assert!(message.contains("at most 100 subscriptions"), "{message}");

    // Completing one frees its place.
    client.complete("7").await;
    assert_eq!(
        client.message().await,
        json!({"type": "complete", "id": "7"})
    );
    client
        .subscribe("in-its-place", CHANGED, json!({"u": "late"}))
        .await;
    client
        .next_data("in-its-place", "remoteConfigChanged")
        .await;
}

#[tokio::test]
async fn live_events_sends_what_is_stored_from_then_on_filtered_in_storage_order() {
    let app = TestApp::spawn().await;
    collect(&app, "live-user", &[("before", "purchase")]).await;
    let mut client = WsClient::connect(&app, ADMIN_KEY).await;
    client
        .subscribe("user", LIVE, json!({"u": "live-user"}))
        .await;
    let marker = wait_until_live(&mut client, "user", &app, "live-user").await;
    assert_eq!(marker["userId"], "live-user");

    client
        .subscribe(
            "purchases",
            LIVE,
            json!({"u": "live-user", "n": "purchase"}),
        )
        .await;
    // A marker the filtered subscription ignores, so it is surely running once it shows.
    let started = tokio::time::Instant::now();
    loop {
        assert!(started.elapsed() < DEADLINE);
        collect(
            &app,
            "live-user",
            &[(&format!("m-{:?}", started.elapsed()), "marker")],
        )
        .await;
        let event = client.next_data("user", "liveEvents").await;
        if event["eventId"].as_str().unwrap().starts_with("m-") {
            break;
        }
    }
    collect(
        &app,
        "live-user",
        &[("c", "purchase"), ("a", "level_up"), ("b", "purchase")],
    )
    .await;
    collect(&app, "someone-else", &[("other", "purchase")]).await;
    collect(&app, "live-user", &[("d", "purchase")]).await;

    let mut by_subscription: std::collections::HashMap<String, Vec<String>> = Default::default();
    while by_subscription.values().map(Vec::len).sum::<usize>() < 7 {
        let message = client.message().await;
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["liveEvents"];
        assert_eq!(event["userId"], "live-user", "{message}");
        if event["eventName"] == "marker" {
            continue;
        }
        by_subscription
            .entry(message["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["eventId"].as_str().unwrap().to_owned());
    }
    // A batch is stored in eventId order; batches in the order they were stored.
    assert_eq!(by_subscription["user"], ["a", "b", "c", "d"]);
    assert_eq!(by_subscription["purchases"], ["b", "c", "d"]);
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_reader_too_slow_to_keep_up_is_ended_with_an_error_and_never_blocks_ingest() {
    let app = TestApp::spawn().await;
    let mut slow = WsClient::open_with_small_receive_buffer(&app).await;
    slow.init(json!({"http_key": ADMIN_KEY})).await;
    slow.expect_ack().await;
    // With the properties, each message is over 2 KB: what the sockets hold is far less than what
    // is stored.
    slow.subscribe(
        "flood",
        "subscription { liveEvents(userId: \"flooder\") { eventId eventName properties } }",
        json!({}),
    )
    .await;
    wait_until_live(&mut slow, "flood", &app, "flooder").await;

    // The slow reader stops reading while far more is stored than the server holds for it.
    let padding = "x".repeat(2_000);
    let batches: Vec<Vec<Value>> = (0..100)
        .map(|batch| {
            (0..100)
                .map(|index| {
                    json!({"eventId": format!("flood-{batch}-{index}"), "eventName": "flood",
                           "userId": "flooder", "properties": {"padding": padding}})
                })
                .collect()
        })
        .collect();
    let ingest = batches.chunks(25).map(|chunk| {
        let app = &app;
        async move {
            for events in chunk {
                let data = app
                    .gql(
                        "mutation($events: [EventInput!]!) { collectEvents(events: $events) { accepted } }",
                        json!({"events": events}),
                    )
                    .await;
                assert_eq!(data["collectEvents"]["accepted"], 100);
            }
        }
    });
    futures_util::future::join_all(ingest).await;

    // Reading again: what was held, then the error, then the end of the subscription.
    let started = tokio::time::Instant::now();
    let mut received = 0;
    let error = loop {
        assert!(started.elapsed() < Duration::from_secs(30));
        let Some(message) = slow.message_within(DEADLINE).await else {
            panic!("no error after {received} events");
        };
        match message["type"].as_str() {
            Some("next") if message["payload"].get("errors").is_none() => received += 1,
            Some("next") => break message["payload"]["errors"][0].clone(),
            _ => panic!("unexpected {message}"),
        }
    };
    assert_eq!(error["extensions"]["code"], "LIMIT_EXCEEDED", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("behind"),
        "{error}"
    );
    assert_eq!(
        slow.message().await,
        json!({"type": "complete", "id": "flood"})
    );
    assert!(received < 10_000, "all {received} events were delivered");
    // The connection itself goes on.
    slow.subscribe("after", CHANGED, json!({"u": "flooder"}))
        .await;
    slow.next_data("after", "remoteConfigChanged").await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let mut app = TestApp::spawn().await;
    let mut client = WsClient::connect(&app, HTTP_KEY).await;
    client.subscribe("c", CHANGED, json!({"u": "player"})).await;
    client.next_data("c", "remoteConfigChanged").await;
    app.begin_shutdown();
    assert_eq!(client.closed().await.0, 1001);
}

#[tokio::test]
async fn subscriptions_are_not_served_over_http() {
    let app = TestApp::spawn().await;
    let (_, body) = app
        .gql_as(Some(HTTP_KEY), CHANGED, json!({"u": "player"}))
        .await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.to_lowercase().contains("subscription"), "{body}");
}
