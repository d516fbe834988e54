//! The real binary under load: SIGTERM lets in-flight requests finish and exits 0; SIGKILL loses no
//! acknowledged event. Either way every batch the server answered 200 is stored exactly once.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{HTTP_KEY, TestDatabase, free_port, start_binary};

/// Clients send batches with their own event ids until the server stops answering; returns the ids
/// of every batch the server acknowledged. `signal` is sent once `after` batches were acknowledged.
async fn load_then_signal(port: u16, child: &Child, signal: &str, after: usize) -> HashSet<String> {
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let acked_batches = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client_id in 0..8 {
        let (acknowledged, acked_batches, stopped) =
            (acknowledged.clone(), acked_batches.clone(), stopped.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for batch in 0.. {
                let ids: Vec<String> = (0..50).map(|i| format!("c{client_id}-b{batch}-e{i}")).collect();
                let events: Vec<Value> = ids.iter().map(|id| json!({"eventId": id, "userId": "load", "eventName": "tick"})).collect();
                let reply = client
                    .post(format!("http://127.0.0.1:{port}/graphql"))
                    .bearer_auth(HTTP_KEY)
                    .json(&json!({"query": "mutation($e: [EventInput!]!) { collectEvents(events: $e) { accepted } }", "variables": {"e": events}}))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let Ok(reply) = reply else { break };
                // A reply that arrives is a whole, successful one: shutdown never cuts a request short.
                assert_eq!(reply.status(), reqwest::StatusCode::OK);
                let body: Value = reply.json().await.expect("a complete JSON reply");
                assert_eq!(body["data"]["collectEvents"]["accepted"], 50, "{body}");
                acknowledged.lock().unwrap().extend(ids);
                acked_batches.fetch_add(1, Ordering::SeqCst);
                if stopped.load(Ordering::SeqCst) && batch > 10_000 {
                    break;
                }
            }
        }));
    }
    while acked_batches.load(Ordering::SeqCst) < after {
        tokio::task::yield_now().await;
    }
    let pid = child.id().expect("the server is running").to_string();
    let sent = Command::new("kill")
        .args([signal, &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    stopped.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("a client panicked");
    }
    Arc::try_unwrap(acknowledged).unwrap().into_inner().unwrap()
}

async fn stored_once(database: &TestDatabase, acknowledged: &HashSet<String>) {
    let connection = database.connect().await;
    let rows = connection
        .query_all_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT event_id FROM analytics_events WHERE user_id = 'load'",
        ))
        .await
        .unwrap();
    let stored: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("", "event_id").unwrap())
        .collect();
    let distinct: HashSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "no event is stored twice");
    let missing = acknowledged
        .iter()
        .filter(|id| !distinct.contains(id))
        .count();
    assert_eq!(missing, 0, "{missing} acknowledged events are missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests_and_exits_zero() {
    let database = TestDatabase::create().await;
    let port = free_port();
    let mut server = start_binary(&database, port, &[], None).await;

    let acknowledged = load_then_signal(port, &server, "-TERM", 40).await;
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("exits in time")
        .unwrap();

    assert!(status.success(), "exit status {status:?}");
    assert!(acknowledged.len() >= 40 * 50);
    stored_once(&database, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event() {
    let database = TestDatabase::create().await;
    let port = free_port();
    let mut server = start_binary(&database, port, &[], None).await;

    let acknowledged = load_then_signal(port, &server, "-KILL", 40).await;
    server.wait().await.unwrap();
    let mut restarted = start_binary(&database, port, &[], None).await;

    stored_once(&database, &acknowledged).await;
    restarted.kill().await.ok();
}
