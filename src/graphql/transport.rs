//! The GraphQL HTTP transport, as GraphQL over HTTP specifies it: the key, CSRF rules, the body
//! limit, content negotiation and status codes, request errors, batches, no mutations over GET,
//! completed responses (`complete`), bounded errors, and whole replies of plain config reads kept by
//! the config service.

use std::{sync::Arc, time::Duration};

use async_graphql::{BatchRequest, BatchResponse, ParseRequestError, ServerError};
use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::Response,
};
use tokio::sync::OnceCell;

use super::{
    AppSchema,
    budget::ResponseBudget,
    cacheable::CacheableDocuments,
    complete::{Shapes, complete},
    guard::Documents,
    operations,
};
use crate::{
    auth::{self, Keys, Role},
    body::{self, BodyError, MAX_BODY_BYTES},
    domain::{
        Services,
        config::replies::{ReplyKey, ReplyScope},
    },
    error::{Error, ErrorCode},
    telemetry::requests::Operation,
};

/// Most operations one batched request may carry (async-graphql runs a batch concurrently).
const MAX_BATCH_OPERATIONS: usize = 10;
/// Most errors one response reports; a document with 50,000 mistakes gets a summary line instead
/// of megabytes of errors.
const MAX_ERRORS: usize = 20;
/// Longest error message sent. A bad batch names each of its up to 100 bad events in its message;
/// nothing else comes near.
const MAX_MESSAGE_CHARS: usize = 16_000;

/// What the GraphQL routes share. Axum clones route state for every request, so it is one
/// shared pointer rather than a bundle of them (the clones showed up in profiles of cached reads).
#[derive(Clone)]
pub(super) struct Transport(Arc<Shared>);

pub(super) struct Shared {
    pub schema: AppSchema,
    pub services: Services,
    pub keys: Arc<Keys>,
    /// Which documents are plain config reads, whose replies may be kept.
    pub plain_config_reads: CacheableDocuments,
    /// Checked documents by text, filled by the guard as requests run.
    pub documents: Documents,
    /// Field types for completing responses, read from the schema on first use.
    pub shapes: OnceCell<Shapes>,
    /// Whether the schema may be introspected; when not, engine errors are kept vague.
    pub introspection: bool,
    /// The open `/graphql/ws` connections.
    pub sockets: super::Sockets,
}

impl Transport {
    pub fn new(shared: Shared) -> Self {
        Transport(Arc::new(shared))
    }

    pub fn shared(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// Key order and null propagation along the request's document (see `complete`); returns
    /// the operation's metrics label, read from the same document.
    async fn complete(
        &self,
        query: &str,
        operation: Option<&str>,
        response: &mut async_graphql::Response,
    ) -> &'static str {
        let document = match self.documents.get(query) {
            Some(document) => document,
            // Long documents are not cached; they parsed once already, so they parse again.
            None => match async_graphql::parser::parse_query(query) {
                Ok(document) => Arc::new(document),
                Err(_) => return Operation::OTHER,
            },
        };
        let label = operations::label(&document, operation);
        if response.data == async_graphql::Value::Null && response.errors.is_empty() {
            return label;
        }
        let shapes = self
            .shapes
            .get_or_init(|| async { Shapes::of(&super::schema().finish()).await })
            .await;
        complete(shapes, &document, operation, response);
        label
    }
}

pub(super) async fn graphql(State(transport): State<Transport>, request: Request) -> Response {
    let state = &transport.0;
    let media = Media::accepted(request.headers());
    let Some(role) = role(&state.keys, &request) else {
        return unauthenticated(media);
    };
    if let Err((status, error)) = csrf_check(request.method(), request.headers()) {
        let mut response = request_error(media, error);
        *response.status_mut() = status;
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = match body::read(&parts.headers, body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return request_error(
                media,
                Error::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                },
            );
        }
        Err(BodyError::Unreadable) => {
            return request_error(media, Error::invalid("body", "could not be read"));
        }
    };
    let key = (parts.method == Method::POST)
        .then(|| ReplyKey::new(ReplyScope::GraphQL, role, &body))
        .flatten();
    let ran = std::sync::Mutex::new(None);
    let reply = state
        .services
        .config
        .cached_reply(key, run(state, role, media, parts, body, &ran))
        .await;
    let response = match reply {
        Ok(cacheable) => media.body(StatusCode::OK, cacheable),
        Err(response) => response,
    };
    // Only plain config reads are kept whole, so a reply that did not run was one of those.
    let name = ran.into_inner().ok().flatten().unwrap_or("remoteConfig");
    Operation {
        transport: "graphql",
        name,
    }
    .attach(response)
}

/// A request running past the timeout: a 408 with a GraphQL error body, not an empty reply.
pub(super) async fn timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let media = Media::accepted(request.headers());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => request_error(
            media,
            Error::Timeout {
                seconds: limit.as_secs(),
            },
        ),
    }
}

/// Parses and runs a request: `Ok` with the body of a successful plain config read (which may be
/// kept), `Err` with any other response.
async fn run(
    state: &Shared,
    role: Role,
    media: Media,
    parts: Parts,
    body: Bytes,
    ran: &std::sync::Mutex<Option<&'static str>>,
) -> Result<Bytes, Response> {
    let label = |name: &'static str| {
        if let Ok(mut ran) = ran.lock() {
            *ran = Some(name);
        }
    };
    label(Operation::OTHER);
    let is_get = parts.method == Method::GET;
    let batch = if is_get {
        parse_get(parts.uri.query().unwrap_or_default())
            .map_err(|error| request_error(media, error))?
    } else {
        parse_json_batch(&body).map_err(|error| request_error(media, not_a_request(error)))?
    };
    if batch.iter().any(|request| request.query.trim().is_empty()) {
        return Err(request_error(
            media,
            Error::invalid("query", "is required: send the GraphQL document in `query`"),
        ));
    }
    if let BatchRequest::Batch(operations) = &batch
        && operations.len() > MAX_BATCH_OPERATIONS
    {
        return Err(request_error(
            media,
            Error::invalid(
                "batch",
                format!(
                    "at most {MAX_BATCH_OPERATIONS} operations per request (got {})",
                    operations.len()
                ),
            ),
        ));
    }
    // GET must stay safe: a link or an <img> must not be able to change anything.
    if is_get && batch.iter().any(is_mutation) {
        let mut response = request_error(
            media,
            Error::invalid("query", "mutations are only accepted over POST"),
        );
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(response);
    }
    let budget = ResponseBudget::default();
    match batch {
        BatchRequest::Single(single) => {
            let cacheable = !is_get && state.plain_config_reads.is_cacheable(&single.query);
            let (query, operation) = (single.query.clone(), single.operation_name.clone());
            let mut response = state
                .schema
                .execute(single.data(role).data(budget.clone()))
                .await;
            label(
                state
                    .complete(&query, operation.as_deref(), &mut response)
                    .await,
            );
            tidy(&mut response, &budget, state.introspection);
            let succeeded = response.is_ok();
            let (status, body) = media.shape(response);
            if cacheable && succeeded && status == StatusCode::OK {
                Ok(body)
            } else {
                Err(media.body(status, body))
            }
        }
        BatchRequest::Batch(operations) => {
            label(operations::BATCH);
            let documents: Vec<(String, Option<String>)> = operations
                .iter()
                .map(|operation| (operation.query.clone(), operation.operation_name.clone()))
                .collect();
            // One budget for the whole HTTP response, however many operations it carries.
            let batch = BatchRequest::Batch(operations)
                .data(role)
                .data(budget.clone());
            let BatchResponse::Batch(mut responses) = state.schema.execute_batch(batch).await
            else {
                return Err(request_error(media, Error::Internal));
            };
            let mut bodies = Vec::with_capacity(responses.len());
            for (response, (query, operation)) in responses.iter_mut().zip(&documents) {
                state.complete(query, operation.as_deref(), response).await;
                tidy(response, &budget, state.introspection);
            }
            for response in responses {
                bodies.push(media.shape(response).1);
            }
            let mut joined = Vec::new();
            joined.push(b'[');
            for (index, body) in bodies.iter().enumerate() {
                if index > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(body);
            }
            joined.push(b']');
            Err(media.body(StatusCode::OK, Bytes::from(joined)))
        }
    }
}

/// The media types of GraphQL over HTTP. `application/graphql-response+json` lets status codes
/// tell request errors (400) from execution results (200); `application/json`, for clients that
/// predate it, answers every well-formed request with 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    GraphQLResponse,
    Json,
}

impl Media {
    const GRAPHQL_RESPONSE: &str = "application/graphql-response+json; charset=utf-8";
    const JSON: &str = "application/json; charset=utf-8";

    /// The first media type of the `Accept` header that we can send (`application/json` when it
    /// names none, or is absent, as the spec asks for clients that predate it).
    fn accepted(headers: &HeaderMap) -> Self {
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for entry in accept {
            let mut parts = entry.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let refused = parts.any(|parameter| {
                parameter
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            match media.as_str() {
                "application/graphql-response+json" => return Media::GraphQLResponse,
                "application/json" | "application/*" | "*/*" => return Media::Json,
                _ => {}
            }
        }
        Media::Json
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Media::GraphQLResponse => Self::GRAPHQL_RESPONSE,
            Media::Json => Self::JSON,
        })
    }

    fn body(self, status: StatusCode, body: Bytes) -> Response {
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, self.content_type());
        response
    }

    /// An executed request as status and body. A request error (the document did not parse or
    /// validate: no data, and no error has a path) has no `data` entry at all, and is a 400 when the
    /// client understands `application/graphql-response+json`.
    fn shape(self, response: async_graphql::Response) -> (StatusCode, Bytes) {
        let request_error = response.data == async_graphql::Value::Null
            && !response.errors.is_empty()
            && response.errors.iter().all(|error| error.path.is_empty());
        if !request_error {
            return match serde_json::to_vec(&response) {
                Ok(body) => (StatusCode::OK, Bytes::from(body)),
                Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, internal_body()),
            };
        }
        let status = match self {
            Media::GraphQLResponse => StatusCode::BAD_REQUEST,
            Media::Json => StatusCode::OK,
        };
        (status, errors_body(&response.errors))
    }
}

/// `{"errors":[…]}` with no `data` entry.
fn errors_body(errors: &[ServerError]) -> Bytes {
    serde_json::to_vec(&serde_json::json!({ "errors": errors }))
        .map(Bytes::from)
        .unwrap_or_else(|_| internal_body())
}

fn internal_body() -> Bytes {
    Bytes::from_static(br#"{"errors":[{"message":"internal error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}"#)
}

/// A response past its budget carries no data (a page cut off part way would mislead), and no
/// response carries unbounded errors.
fn tidy(response: &mut async_graphql::Response, budget: &ResponseBudget, introspection: bool) {
    if budget.exceeded() {
        response.data = async_graphql::Value::Null;
    }
    if !introspection {
        hide_schema_details(&mut response.errors);
    }
    tidy_errors(&mut response.errors);
}

/// With introspection off, the engine's validation messages ("Unknown field …", "Field "x" of
/// type "Y" …") would rebuild the schema name by name, as tools like clairvoyance do: they are
/// replaced by one sentence. Errors of ours (with a code) name nothing of the schema.
fn hide_schema_details(errors: &mut [ServerError]) {
    for error in errors {
        let ours = error
            .extensions
            .as_ref()
            .is_some_and(|extensions| extensions.get("code").is_some());
        if !ours && error.path.is_empty() {
            error.message = "the document does not match the schema (details are not shown \
                             while introspection is disabled)"
                .to_owned();
        }
    }
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

/// The parameters of a GET, as GraphQL over HTTP names them (`query`, `operationName`, and
/// `variables`/`extensions` as JSON text). async-graphql's own reader expects `operation_name`, so
/// a GET naming its operation ran the wrong one (or was refused as a mutation).
fn parse_get(query_string: &str) -> Result<BatchRequest, Error> {
    let mut request = async_graphql::Request::new("");
    for (name, value) in form_urlencoded::parse(query_string.as_bytes()) {
        match name.as_ref() {
            "query" => request.query = value.into_owned(),
            "operationName" => request.operation_name = Some(value.into_owned()),
            "variables" => {
                let json = serde_json::from_str(&value).map_err(|error| {
                    Error::invalid("variables", format!("must be JSON ({error})"))
                })?;
                request.variables = async_graphql::Variables::from_json(json);
            }
            "extensions" => {
                request.extensions = serde_json::from_str(&value).map_err(|error| {
                    Error::invalid("extensions", format!("must be a JSON object ({error})"))
                })?;
            }
            _ => {}
        }
    }
    Ok(BatchRequest::Single(request))
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

/// What may run. A POST must send JSON, as GraphQL over HTTP specifies: a cross-site form cannot
/// set that content type without a preflight, which keeps mutations safe from CSRF. A GET (which
/// any page can trigger with a link) runs only with a header no simple request can carry, as in
/// Apollo's CSRF prevention.
fn csrf_check(method: &Method, headers: &HeaderMap) -> Result<(), (StatusCode, Error)> {
    const PREFLIGHTED: [&str; 5] = [
        "authorization",
        "apollo-require-preflight",
        "graphql-preflight",
        "x-apollo-operation-name",
        "x-requested-with",
    ];
    if *method == Method::GET {
        if PREFLIGHTED.iter().any(|name| headers.contains_key(*name)) {
            return Ok(());
        }
        return Err((
            StatusCode::BAD_REQUEST,
            Error::invalid(
                "headers",
                "a GET must carry a header a cross-site page cannot send (Authorization, \
                 GraphQL-Preflight: 1, Apollo-Require-Preflight or X-Requested-With); \
                 a key in `?http_key=` alone is not enough",
            ),
        ));
    }
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase());
    match mime {
        Some(mime) if mime == "application/json" || mime.ends_with("+json") => Ok(()),
        Some(_) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::invalid("Content-Type", "must be application/json"),
        )),
        None => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::invalid(
                "Content-Type",
                "is required: send the request as application/json",
            ),
        )),
    }
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

fn unauthenticated(media: Media) -> Response {
    let mut response = request_error(
        media,
        Error::Unauthenticated(
            "a valid key is required: send `Authorization: Bearer <key>` or `?http_key=<key>`"
                .to_owned(),
        ),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// An error found before the request reaches the schema: `{"errors":[…]}` (no `data`, no
/// locations) with the status of the error's code.
fn request_error(media: Media, error: Error) -> Response {
    let status = StatusCode::from_u16(error.code().http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut errors = vec![super::error::request_error(&error)];
    tidy_errors(&mut errors);
    media.body(status, errors_body(&errors))
}

/// Why a body is not a GraphQL request, in one sentence.
fn not_a_request(error: ParseRequestError) -> Error {
    match error {
        ParseRequestError::PayloadTooLarge => Error::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        },
        ParseRequestError::InvalidRequest(reason) => {
            Error::invalid("body", format!("is not a GraphQL request ({reason})"))
        }
        other => Error::invalid("body", format!("is not a GraphQL request ({other})")),
    }
}
