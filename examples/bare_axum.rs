//! The ceiling for this HTTP stack: axum answering a small JSON body with no work at all.
//! `cargo run --release --example bare_axum -- 127.0.0.1:7399`; used by bench/run.sh.

use axum::{Json, Router, routing::get};
use serde_json::json;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7399".to_owned());
    let app = Router::new().route(
        "/",
        get(|| async { Json(json!({"status": "ok", "version": "bare"})) })
            .post(|| async { Json(json!({"status": "ok", "version": "bare"})) }),
    );
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, app).await
}
