//! What a client holding only the public http key can send, and what it must never achieve:
//! unbounded memory or time, rows that cannot be read back, deadlocks, noisy logs.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{HTTP_KEY, TestDatabase, free_port, start_binary};

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
    let server = start_binary(&database, port, &[]).await;
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
