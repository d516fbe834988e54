//! The GraphQL HTTP transport: the key, CSRF rules, the body limit, parse errors as JSON, batches,
//! no mutations over GET, and whole replies of plain config reads kept by the config service.

use std::sync::Arc;

use async_graphql::{BatchRequest, BatchResponse, ErrorExtensions, ParseRequestError, ServerError};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::{
    Json,
    body::{Body, Bytes},
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};

use super::{AppSchema, budget::ResponseBudget, cacheable::CacheableDocuments};
use crate::{
    auth::{self, Keys, Role},
    body::{self, BodyError, MAX_BODY_BYTES},
    domain::{
        Services,
        config::replies::{ReplyKey, ReplyScope},
    },
    error::{Error, ErrorCode},
};

/// Most operations one batched request may carry (async-graphql runs a batch concurrently).
const MAX_BATCH_OPERATIONS: usize = 10;
/// Most errors one response reports; a document with 50,000 mistakes gets a summary line instead
/// of megabytes of errors.
const MAX_ERRORS: usize = 20;
/// Longest error message sent: parse errors quote the offending line, which may be the whole
/// document.
const MAX_MESSAGE_CHARS: usize = 500;

/// What the GraphQL routes share. Axum clones route state for every request, so it is one
/// shared pointer rather than a bundle of them (the clones showed up in profiles of cached reads).
#[derive(Clone)]
pub(super) struct Transport(Arc<Shared>);

pub(super) struct Shared {
    pub schema: AppSchema,
    pub services: Services,
    pub keys: Arc<Keys>,
    pub documents: CacheableDocuments,
}

impl Transport {
    pub fn new(shared: Shared) -> Self {
        Transport(Arc::new(shared))
    }
}

pub(super) async fn graphql(State(transport): State<Transport>, request: Request) -> Response {
    let state = &transport.0;
    let Some(role) = role(&state.keys, &request) else {
        return unauthenticated();
    };
    if request.method() == Method::POST && !json_or_preflighted(request.headers()) {
        return error_response(Error::invalid(
            "Content-Type",
            "must be application/json (a cross-site form post cannot set it, which keeps \
             mutations safe from CSRF); requests carrying an Authorization header are exempt",
        ));
    }
    let (parts, body) = request.into_parts();
    let body = match body::read(&parts.headers, body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return error_response(Error::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        Err(BodyError::Unreadable) => {
            return error_response(Error::invalid(
                "request",
                "not a valid GraphQL request: the body could not be read",
            ));
        }
    };
    let key = (parts.method == Method::POST)
        .then(|| ReplyKey::new(ReplyScope::GraphQL, role, &body))
        .flatten();
    let reply = state
        .services
        .config
        .cached_reply(key, run(state, role, parts, body))
        .await;
    match reply {
        Ok(cacheable) => json_bytes(cacheable),
        Err(response) => response,
    }
}

/// Parses and runs a request: `Ok` with the body of a successful plain config read (which may be
/// kept), `Err` with any other response.
async fn run(state: &Shared, role: Role, parts: Parts, body: Bytes) -> Result<Bytes, Response> {
    let is_get = parts.method == Method::GET;
    let parsed = if parts.method == Method::POST && !is_multipart(&parts.headers) {
        parse_json_batch(&body)
    } else {
        let request = Request::from_parts(parts, Body::from(body));
        GraphQLBatchRequest::<Rejection>::from_request(request, &())
            .await
            .map(GraphQLBatchRequest::into_inner)
            .map_err(|rejection| rejection.0)
    };
    let batch = parsed.map_err(|error| Rejection(error).into_response())?;
    if let BatchRequest::Batch(operations) = &batch
        && operations.len() > MAX_BATCH_OPERATIONS
    {
        return Err(error_response(Error::invalid(
            "batch",
            format!(
                "at most {MAX_BATCH_OPERATIONS} operations per request (got {})",
                operations.len()
            ),
        )));
    }
    // GET must stay safe: a link or an <img> must not be able to change anything.
    if is_get && batch.iter().any(is_mutation) {
        let mut response = error_response(Error::invalid(
            "query",
            "mutations are only accepted over POST",
        ));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(response);
    }
    match batch {
        BatchRequest::Single(single) if !is_get && state.documents.is_cacheable(&single.query) => {
            let budget = ResponseBudget::default();
            let mut response = state
                .schema
                .execute(single.data(role).data(budget.clone()))
                .await;
            tidy(&mut response, &budget);
            let body = serde_json::to_vec(&response)
                .map(Bytes::from)
                .map_err(|_| error_response(Error::Internal))?;
            if response.is_ok() {
                Ok(body)
            } else {
                Err(json_bytes(body))
            }
        }
        batch => {
            // One budget for the whole HTTP response, however many operations it carries.
            let budget = ResponseBudget::default();
            let batch = batch.data(role).data(budget.clone());
            let mut responses = state.schema.execute_batch(batch).await;
            match &mut responses {
                BatchResponse::Single(response) => tidy(response, &budget),
                BatchResponse::Batch(responses) => responses
                    .iter_mut()
                    .for_each(|response| tidy(response, &budget)),
            }
            Err(GraphQLResponse::from(responses).into_response())
        }
    }
}

/// A response past its budget carries no data (a page cut off part way would mislead), and no
/// response carries unbounded errors.
fn tidy(response: &mut async_graphql::Response, budget: &ResponseBudget) {
    if budget.exceeded() {
        response.data = async_graphql::Value::Null;
    }
    tidy_errors(&mut response.errors);
}

/// Bounds what errors a response carries, and gives async-graphql's own errors (parsing,
/// validation, input coercion, complexity) the code of the client's mistake they are: every error
/// of ours already has its code.
fn tidy_errors(errors: &mut Vec<ServerError>) {
    if errors.len() > MAX_ERRORS {
        let left_out = errors.len() - (MAX_ERRORS - 1);
        errors.truncate(MAX_ERRORS - 1);
        errors.push(ServerError::new(
            format!("… and {left_out} more errors, not shown"),
            None,
        ));
    }
    for error in errors {
        if let Some((cut, _)) = error.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            error.message.truncate(cut);
            error.message.push_str(" … (message shortened)");
        }
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::BadUserInput.as_str());
        }
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
fn role(keys: &Keys, request: &Request) -> Option<Role> {
    let header_key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let key = match auth::bearer_token(header_key) {
        Some(token) => token.to_owned(),
        None => auth::query_key(request.uri().query())?,
    };
    keys.role(&key)
}

fn unauthenticated() -> Response {
    let mut response = error_response(Error::Unauthenticated(
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
fn error_response(error: Error) -> Response {
    let status = StatusCode::from_u16(error.code().http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut errors = vec![
        error
            .extend()
            .into_server_error(async_graphql::Pos::default()),
    ];
    tidy_errors(&mut errors);
    (status, Json(async_graphql::Response::from_errors(errors))).into_response()
}

struct Rejection(ParseRequestError);

impl From<ParseRequestError> for Rejection {
    fn from(error: ParseRequestError) -> Self {
        Rejection(error)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let error = match self.0 {
            ParseRequestError::PayloadTooLarge => Error::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            },
            other => Error::invalid("request", format!("not a valid GraphQL request: {other}")),
        };
        error_response(error)
    }
}
