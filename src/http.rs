//! The HTTP surface: merges the adapters' routers, adds the probes and the tower layers around them.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tower_http::{classify::ServerErrorsFailureClass, trace::TraceLayer};

use crate::{
    auth::Keys,
    console,
    domain::{Services, health::HealthService},
    graphql, playground, rpc, telemetry,
};

/// Everything the server answers, for one set of services and keys.
pub fn router(
    services: Services,
    keys: Arc<Keys>,
    introspection: bool,
    request_timeout: Duration,
    sockets: graphql::Sockets,
    with_metrics: bool,
) -> Router {
    let metrics = if with_metrics {
        metrics_router(services.clone())
    } else {
        Router::new()
    };
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(services.health.clone());
    // Each adapter times its requests out itself, so a 408 carries its protocol's error body;
    // the probes, the playground and the console answer from memory (the readiness probe has its own limit).
    Router::new()
        .merge(graphql::router(
            services.clone(),
            keys.clone(),
            introspection,
            request_timeout,
            sockets,
        ))
        .merge(playground::router(introspection))
        .merge(console::router())
        .merge(probes)
        .merge(rpc::router(services, keys, request_timeout))
        .merge(metrics)
        // Inside the trace layer, so that what it counts is what the trace shows.
        .layer(axum::middleware::from_fn(telemetry::requests::record))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(log_failure),
        )
}

/// `GET /metrics` alone, for `--metrics-bind` or the API's router.
pub fn metrics_router(services: Services) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(services)
}

async fn metrics(State(services): State<Services>) -> Response {
    telemetry::requests::render(&services).await
}

/// A request span named by the matched route (not the raw path, which may carry ids or keys).
/// Completed requests log at DEBUG: at tens of thousands of requests a second an INFO line each
/// would cost more than the requests.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    tracing::debug_span!("request", method = %request.method(), route)
}

/// Server errors log at ERROR, except 501: Nakama's answer to a method it does not route (a PUT
/// to `/v2/rpc`), which is the client's mistake and must not page anyone.
fn log_failure(failure: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    let latency_ms = latency.as_millis();
    match failure {
        ServerErrorsFailureClass::StatusCode(StatusCode::NOT_IMPLEMENTED) => {
            tracing::debug!(
                status = 501,
                latency_ms,
                "request for an unsupported method"
            );
        }
        failure => tracing::error!(%failure, latency_ms, "request failed"),
    }
}

async fn healthz(State(health): State<HealthService>) -> Response {
    Json(json!({"status": "ok", "version": health.version()})).into_response()
}

async fn readyz(State(health): State<HealthService>) -> Response {
    let database_ok = health.database_reachable().await;
    let events = health.events_store().await;
    let ready = database_ok && events.as_ref().is_none_or(|events| events.ok);
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": if database_ok { "ok" } else { "unreachable" },
    });
    if let Some(events) = events {
        body["events"] = json!(if events.ok { "ok" } else { "unreachable" });
        body["eventsStore"] = json!(events.kind);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
