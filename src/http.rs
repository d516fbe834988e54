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
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};

use crate::{
    auth::Keys,
    domain::{Services, health::HealthService},
    graphql, playground, rpc,
};

/// Everything the server answers, for one set of services and keys.
pub fn router(
    services: Services,
    keys: Arc<Keys>,
    introspection: bool,
    request_timeout: Duration,
) -> Router {
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(services.health.clone());
    Router::new()
        .merge(graphql::router(
            services.clone(),
            keys.clone(),
            introspection,
        ))
        .merge(playground::router(introspection))
        .merge(probes)
        .merge(rpc::router(services, keys))
        .layer(trace_layer())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
}

/// A request span named by the matched route (not the raw path, which may carry ids or keys).
/// Completed requests log at DEBUG: at tens of thousands of requests a second an INFO line each
/// would cost more than the requests; server errors still log at ERROR.
fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&Request) -> tracing::Span + Clone,
> {
    TraceLayer::new_for_http().make_span_with(|request: &Request| {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
            .unwrap_or("unmatched");
        tracing::debug_span!("request", method = %request.method(), route)
    })
}

async fn healthz(State(health): State<HealthService>) -> Response {
    Json(json!({"status": "ok", "version": health.version()})).into_response()
}

async fn readyz(State(health): State<HealthService>) -> Response {
    if health.database_reachable().await {
        Json(json!({"status": "ready", "database": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": "unreachable"})),
        )
            .into_response()
    }
}
