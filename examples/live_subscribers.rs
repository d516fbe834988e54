//! `liveEvents` subscribers for bench/run.py: opens COUNT WebSocket connections to the server on
//! PORT, each with one `liveEvents` subscription (admin key KEY), and reads everything.
//! Prints `LIVE` once every subscriber has received an event (the bench sends markers until then),
//! then, SECONDS later, `RECEIVED <events> ENDED <subscriptions ended with an error>` and exits.
//! `cargo run --release --example live_subscribers -- PORT KEY COUNT SECONDS`
//! A Rust client rather than Python's: ten Python readers could not keep up with ingest, and the
//! bench would measure them instead of the server.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, key, count, seconds] = &args[..] else {
        eprintln!("usage: live_subscribers PORT KEY COUNT SECONDS");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let seconds: u64 = seconds.parse().expect("SECONDS is a number");
    let received = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let (live, mut went_live) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..count {
        let mut request = format!("ws://127.0.0.1:{port}/graphql/ws")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect to /graphql/ws");
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {key}")}});
        socket.send(Message::text(init.to_string())).await.unwrap();
        let subscribe = json!({"type": "subscribe", "id": "live", "payload": {
            "query": "subscription { liveEvents { eventId userId eventName timestamp properties } }"}});
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .unwrap();
        let (received, ended, live) = (received.clone(), ended.clone(), live.clone());
        tokio::spawn(async move {
            let mut first = true;
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let message: Value = serde_json::from_str(&text).unwrap();
                match message["type"].as_str() {
                    Some("next") if message["payload"].get("errors").is_some() => {
                        ended.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("next") => {
                        received.fetch_add(1, Ordering::Relaxed);
                        if std::mem::take(&mut first) {
                            let _ = live.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    for _ in 0..count {
        went_live
            .recv()
            .await
            .expect("every subscriber reports once");
    }
    println!("LIVE");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!(
        "RECEIVED {} ENDED {}",
        received.load(Ordering::Relaxed),
        ended.load(Ordering::Relaxed)
    );
}
