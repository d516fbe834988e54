//! The HTTP surface: routes, the GraphQL transport (key check, body limit, parse errors as JSON),
//! probes, the playground page, and the tower layers around them.

use std::{sync::Arc, time::Duration};

use async_graphql::{BatchRequest, ErrorExtensions, ParseRequestError};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{FromRequest, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use serde_json::json;
use tower_http::{
    compression::CompressionLayer, decompression::RequestDecompressionLayer, timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    auth,
    config::MAX_BODY_BYTES,
    error::Error,
    graphql::Role,
    playground,
    response_cache::{Freshness, MAX_CACHED_REQUEST_BYTES, Scope},
    rpc,
    state::AppState,
};

pub fn router(state: AppState, request_timeout: Duration) -> Router {
    // Nakama decompresses gzip/deflate request bodies and gzips replies for clients that ask.
    let rpc = Router::new()
        .route("/v2/rpc/", any(rpc::handle))
        .route("/v2/rpc/{*id}", any(rpc::handle))
        .layer(RequestDecompressionLayer::new())
        .layer(CompressionLayer::new().gzip(true));
    // The bundles are large and compress well.
    let playground = Router::new()
        .route("/playground", get(playground::page))
        .route("/playground/assets/{name}", get(playground::asset))
        .route("/playground/schema.json", get(playground::schema))
        .layer(CompressionLayer::new().gzip(true));
    Router::new()
        .route("/graphql", get(graphql).post(graphql))
        .merge(playground)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(rpc)
        .layer(trace_layer())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
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

/// Most operations one batched request may carry (async-graphql runs a batch concurrently).
const MAX_BATCH_OPERATIONS: usize = 10;

async fn graphql(State(state): State<AppState>, request: Request) -> Response {
    let Some(role) = graphql_role(&state, &request) else {
        return unauthenticated();
    };
    if request.method() == Method::POST && !json_or_preflighted(request.headers()) {
        return graphql_error(Error::invalid(
            "Content-Type",
            "must be application/json (a cross-site form post cannot set it, which keeps \
             mutations safe from CSRF); requests carrying an Authorization header are exempt",
        ));
    }
    let is_get = request.method() == Method::GET;
    if declared_length(request.headers()).is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return graphql_error(Error::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    // Taken before any work, so an answer stored under it can never hide a write that raced it.
    let generation = state.services.experiments.generation();
    let (parts, body) = request.into_parts();
    // Cap the stream itself, not just Content-Length (which may be absent or wrong).
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            return GraphQLRejection(ParseRequestError::Io(io_error(error))).into_response();
        }
    };
    let cacheable_body = (parts.method == Method::POST && body.len() <= MAX_CACHED_REQUEST_BYTES)
        .then(|| body.clone());
    if let Some(body) = &cacheable_body
        && let Some(cached) = state.responses.get(Scope::GraphQL, role, body, generation)
    {
        state.services.config.count_cached_fetches(cached.fetches);
        return json_bytes(cached.body);
    }
    let parsed = if parts.method == Method::POST && !is_multipart(&parts.headers) {
        parse_json_batch(&body)
    } else {
        let request = Request::from_parts(parts, Body::from(body));
        GraphQLBatchRequest::<GraphQLRejection>::from_request(request, &())
            .await
            .map(GraphQLBatchRequest::into_inner)
            .map_err(|rejection| rejection.0)
    };
    let batch = match parsed {
        Ok(batch) => batch,
        Err(error) => return GraphQLRejection(error).into_response(),
    };
    if let BatchRequest::Batch(operations) = &batch
        && operations.len() > MAX_BATCH_OPERATIONS
    {
        return graphql_error(Error::invalid(
            "batch",
            format!(
                "at most {MAX_BATCH_OPERATIONS} operations per request (got {})",
                operations.len()
            ),
        ));
    }
    // GET must stay safe: a link or an <img> must not be able to change anything.
    if is_get && batch.iter().any(is_mutation) {
        let mut response = graphql_error(Error::invalid(
            "query",
            "mutations are only accepted over POST",
        ));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    match (batch, cacheable_body) {
        (BatchRequest::Single(single), Some(request_body))
            if state.responses.is_cacheable(&single.query) =>
        {
            let freshness = Arc::new(Freshness::default());
            let response = state
                .schema
                .execute(single.data(role).data(freshness.clone()))
                .await;
            let Ok(response_body) = serde_json::to_vec(&response).map(Bytes::from) else {
                return graphql_error(Error::Internal);
            };
            if response.is_ok() {
                state.responses.insert(
                    Scope::GraphQL,
                    role,
                    request_body,
                    generation,
                    &freshness,
                    response_body.clone(),
                );
            }
            json_bytes(response_body)
        }
        (batch, _) => GraphQLResponse::from(state.schema.execute_batch(batch.data(role)).await)
            .into_response(),
    }
}

/// A JSON body as one operation or a batch. async-graphql's own `BatchRequest` is an untagged enum,
/// which makes serde copy the whole document into an intermediate tree first and, on a mistake,
/// report only that it matched no variant; the first byte tells the two shapes apart.
fn parse_json_batch(body: &[u8]) -> Result<BatchRequest, ParseRequestError> {
    let invalid = |error: serde_json::Error| ParseRequestError::InvalidRequest(Box::new(error));
    match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'[') => {
            let operations: Vec<async_graphql::Request> =
                serde_json::from_slice(body).map_err(invalid)?;
            if operations.is_empty() {
                return Err(ParseRequestError::InvalidRequest(
                    "an empty batch holds no operation".into(),
                ));
            }
            Ok(BatchRequest::Batch(operations))
        }
        _ => serde_json::from_slice(body)
            .map(BatchRequest::Single)
            .map_err(invalid),
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        })
}

fn json_bytes(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The body reader's error as the I/O error the GraphQL extractor would have reported.
fn io_error(error: axum::Error) -> std::io::Error {
    let limit_hit = std::iter::successors(
        Some(&error as &(dyn std::error::Error + 'static)),
        |error| error.source(),
    )
    .any(|error| error.is::<http_body_util::LengthLimitError>());
    if limit_hit {
        std::io::Error::other("length limit exceeded")
    } else {
        std::io::Error::other(error)
    }
}

/// A JSON content type, or a header no cross-site form or simple request can carry (so the browser
/// would have asked first, as Apollo's CSRF prevention does).
fn json_or_preflighted(headers: &HeaderMap) -> bool {
    const PREFLIGHTED: [&str; 4] = [
        "authorization",
        "apollo-require-preflight",
        "x-apollo-operation-name",
        "x-requested-with",
    ];
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false);
    json || PREFLIGHTED.iter().any(|name| headers.contains_key(*name))
}

/// Whether the operation a request would run is a mutation (unparseable: let execution report it).
fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    document.operations.iter().any(|(name, operation)| {
        let selected = match (&request.operation_name, name) {
            (Some(wanted), Some(name)) => wanted.as_str() == name.as_str(),
            (Some(_), None) => false,
            (None, _) => true,
        };
        selected && operation.node.ty == async_graphql::parser::types::OperationType::Mutation
    })
}

/// The caller's role from `Authorization: Bearer <key>` or `?http_key=<key>`.
fn graphql_role(state: &AppState, request: &Request) -> Option<Role> {
    let header_key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let key = match auth::bearer_token(header_key) {
        Some(token) => token.to_owned(),
        None => auth::query_key(request.uri().query())?,
    };
    state.keys.role(&key)
}

/// The body size a request announces; both transports refuse oversized bodies before reading.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn unauthenticated() -> Response {
    let mut response = graphql_error(Error::Unauthenticated(
        "a valid key is required: send `Authorization: Bearer <key>` or `?http_key=<key>`"
            .to_owned(),
    ));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A GraphQL-shaped error body with the status of the error's code, for failures that happen
/// before the request reaches the schema.
fn graphql_error(error: Error) -> Response {
    let status = StatusCode::from_u16(error.code().http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = async_graphql::Response::from_errors(vec![
        error
            .extend()
            .into_server_error(async_graphql::Pos::default()),
    ]);
    (status, Json(body)).into_response()
}

struct GraphQLRejection(ParseRequestError);

impl From<ParseRequestError> for GraphQLRejection {
    fn from(error: ParseRequestError) -> Self {
        GraphQLRejection(error)
    }
}

impl IntoResponse for GraphQLRejection {
    fn into_response(self) -> Response {
        let error = match self.0 {
            ParseRequestError::PayloadTooLarge => Error::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            },
            ParseRequestError::Io(io) if io.to_string().contains("length limit exceeded") => {
                Error::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            }
            other => Error::invalid("request", format!("not a valid GraphQL request: {other}")),
        };
        graphql_error(error)
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let health = &state.services.health;
    Json(json!({"status": "ok", "version": health.version()})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.services.health.database_reachable().await {
        Json(json!({"status": "ready", "database": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": "unreachable"})),
        )
            .into_response()
    }
}
