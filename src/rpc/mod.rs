//! The Nakama-compatible adapter: `/v2/rpc/{id}` with Nakama's transport rules (docs/nakama-rpc.md):
//! authentication, then the id, then the body, then the call, then the reply, with Nakama's
//! fixed transport error bodies byte for byte. Each RPC is a thin alias over a domain service.

mod calls;
mod payload;
mod replies;

use std::{io::Read, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::any,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use percent_encoding::percent_decode_str;
use tower_http::compression::CompressionLayer;

use crate::{
    auth::{self, Keys, Role},
    body::{self, BodyError, MAX_BODY_BYTES},
    domain::{
        Services,
        config::replies::{ReplyKey, ReplyScope},
    },
    error::Error,
    telemetry::requests::Operation,
};

const NO_KEY: &str = r#"{"error":"Auth token or HTTP key required","message":"Auth token or HTTP key required","code":16}"#;
const BAD_KEY: &str = r#"{"error":"HTTP key invalid","message":"HTTP key invalid","code":16}"#;
const BAD_TOKEN: &str =
    r#"{"error":"Auth token invalid","message":"Auth token invalid","code":16}"#;
const NO_ID: &str = r#"{"error":"RPC ID must be set","message":"RPC ID must be set","code":3}"#;
const UNKNOWN_ID: &str =
    r#"{"error":"RPC function not found","message":"RPC function not found","code":5}"#;
const NOT_A_STRING: &str = r#"{"error":"json: cannot unmarshal object into Go value of type string","message":"json: cannot unmarshal object into Go value of type string","code":3}"#;
const TOO_LARGE: &str = r#"{"code":3, "message":"http: request body too large"}"#;
const METHOD_NOT_ALLOWED: &str = r#"{"code":12,"message":"Method Not Allowed"}"#;
const NO_STORE: &str = "no-store, no-cache, must-revalidate";

/// Decodes an `AnalyticsCollectEvents` payload text into the events it carries, as the RPC does
/// before the domain checks them; public for the property tests.
pub fn decode_event_batch(text: &str) -> Result<Vec<crate::domain::events::EventInput>, Error> {
    calls::decode_events(&payload::Payload::parse(text)?)
}

/// What the RPC route shares (one pointer: axum clones route state for every request).
#[derive(Clone)]
struct Rpc(Arc<(Services, Arc<Keys>)>);

/// `/v2/rpc/{id}` for every method, as Nakama routes it.
pub fn router(services: Services, keys: Arc<Keys>, request_timeout: Duration) -> Router {
    // Nakama gzips replies for clients that ask; request bodies are decompressed in the handler,
    // after the key and the id are checked, in Nakama's order.
    Router::new()
        .route("/v2/rpc/", any(handle))
        .route("/v2/rpc/{*id}", any(handle))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            timeout,
        ))
        .layer(CompressionLayer::new().gzip(true))
        .with_state(Rpc(Arc::new((services, keys))))
}

/// A request running past the timeout gets Nakama's error body (code 4, DEADLINE_EXCEEDED) with
/// status 408, not an empty reply.
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error_reply(&Error::Timeout {
            seconds: limit.as_secs(),
        }),
    }
}

/// Entry point for every method on `/v2/rpc/` and below; the response names the RPC for the
/// request metrics (`other` for an unknown id).
async fn handle(State(rpc): State<Rpc>, request: Request) -> Response {
    let mut call = None;
    let response = answer(&rpc, request, &mut call).await;
    Operation {
        transport: "rpc",
        name: call.map_or(Operation::OTHER, calls::Call::id),
    }
    .attach(response)
}

async fn answer(Rpc(state): &Rpc, request: Request, found: &mut Option<calls::Call>) -> Response {
    let (services, keys) = state.as_ref();
    match *request.method() {
        Method::GET | Method::POST => {}
        Method::OPTIONS => {
            return (StatusCode::OK, [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")]).into_response();
        }
        _ => return json_reply(StatusCode::NOT_IMPLEMENTED, METHOD_NOT_ALLOWED),
    }
    let role = match authenticate(keys, &request) {
        Ok(role) => role,
        Err(body) => return json_reply(StatusCode::UNAUTHORIZED, body),
    };
    let raw_id = request
        .uri()
        .path()
        .strip_prefix("/v2/rpc/")
        .unwrap_or_default();
    let id = percent_decode_str(raw_id)
        .decode_utf8_lossy()
        .to_lowercase();
    if id.is_empty() {
        return json_reply(StatusCode::BAD_REQUEST, NO_ID);
    }
    let Some(call) = calls::Call::from_id(&id) else {
        return json_reply(StatusCode::NOT_FOUND, UNKNOWN_ID);
    };
    *found = Some(call);
    let query = request.uri().query().map(str::to_owned);
    let unwrap = query_params(query.as_deref()).any(|(name, _)| name == "unwrap");
    let request_content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let payload = match read_payload(request, query.as_deref(), unwrap).await {
        Ok(payload) => payload,
        Err(response) => return response,
    };
    let key = (call == calls::Call::FetchRemoteConfig)
        .then(|| ReplyKey::new(ReplyScope::FetchRemoteConfigRpc, role, payload.as_bytes()))
        .flatten();
    let reply = services
        .config
        .cached_reply(key, async {
            // Boxed where it starts: the dispatch future (room for every call's state) is large,
            // and held inline it made the handler's future large too, which is moved whole on
            // the way into axum's box. Under new-player load this halved the server's memmove
            // samples (8.2 % → 4.6 %).
            Box::pin(calls::dispatch(call, services, role, &payload))
                .await
                .map(Bytes::from)
        })
        .await;
    match reply.and_then(|reply| success(reply, unwrap, request_content_type)) {
        Ok(response) => response,
        Err(error) => error_reply(&error),
    }
}

/// Nakama's order of checks: a right `?http_key=` wins; an empty one counts as absent; then
/// Basic auth with the key as user name; a Bearer token is a session token, which we never issue.
fn authenticate(keys: &Keys, request: &Request) -> Result<Role, &'static str> {
    if let Some(key) = auth::query_key(request.uri().query()) {
        return keys.role(&key).ok_or(BAD_KEY);
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::trim);
    let Some(authorization) = authorization else {
        return Err(NO_KEY);
    };
    let (scheme, credentials) = authorization.split_once(' ').unwrap_or((authorization, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let user = STANDARD
            .decode(credentials.trim())
            .ok()
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .map(|decoded| decoded.split(':').next().unwrap_or_default().to_owned());
        return user.and_then(|user| keys.role(&user)).ok_or(BAD_KEY);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Err(BAD_TOKEN);
    }
    Err(NO_KEY)
}

fn query_params(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
}

/// The payload text per docs/nakama-rpc.md §4: GET takes `?payload=` raw; POST takes the raw body with
/// `unwrap`, else a JSON string whose content is the payload.
async fn read_payload(
    request: Request,
    query: Option<&str>,
    unwrap: bool,
) -> Result<String, Response> {
    if request.method() == Method::GET {
        return Ok(query_params(query)
            .find(|(name, _)| name == "payload")
            .map(|(_, value)| value)
            .unwrap_or_default());
    }
    let body = read_body(request).await?;
    if unwrap {
        return String::from_utf8(body.to_vec())
            .map_err(|_| error_reply(&Error::invalid("payload", "is not valid UTF-8")));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    match serde_json::from_slice::<Option<String>>(&body) {
        Ok(text) => Ok(text.unwrap_or_default()),
        Err(_) => Err(json_reply(StatusCode::BAD_REQUEST, NOT_A_STRING)),
    }
}

async fn read_body(request: Request) -> Result<Bytes, Response> {
    let (parts, body) = request.into_parts();
    let raw = match body::read(&parts.headers, body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return Err(too_large()),
        Err(BodyError::Unreadable) => {
            return Err(transport_error("request body could not be read"));
        }
    };
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_ascii_lowercase());
    // Nakama decompresses gzip and deflate and reads any other encoding as it is.
    let inflated = match encoding.as_deref() {
        Some("gzip" | "x-gzip") => inflate(flate2::read::GzDecoder::new(&raw[..])),
        Some("deflate") => inflate(flate2::read::ZlibDecoder::new(&raw[..])),
        _ => return Ok(raw),
    };
    inflated.map_err(|error| match error {
        BodyError::TooLarge => too_large(),
        BodyError::Unreadable => transport_error("request body could not be decompressed"),
    })
}

/// A decompressed body, at most the body limit (a small compressed body can expand enormously).
fn inflate(decoder: impl Read) -> Result<Bytes, BodyError> {
    let mut body = Vec::new();
    decoder
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|_| BodyError::Unreadable)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(body))
}

fn too_large() -> Response {
    let mut response = json_reply(StatusCode::BAD_REQUEST, TOO_LARGE);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A transport problem in Nakama's error shape, `error` a string equal to `message` (code 3).
fn transport_error(message: &str) -> Response {
    let body = serde_json::json!({ "code": 3, "error": message, "message": message });
    json_reply(StatusCode::BAD_REQUEST, body.to_string())
}

/// The reply as sent: the payload text itself with `unwrap`, else `{"payload": <text as a JSON
/// string>}`. Not UTF-8 text (never produced by the calls) is an internal error.
fn success(
    reply: Bytes,
    unwrap: bool,
    content_type: Option<HeaderValue>,
) -> Result<Response, Error> {
    let text = std::str::from_utf8(&reply).map_err(|_| Error::Internal)?;
    let (content_type, body) = if unwrap {
        (
            content_type.unwrap_or_else(|| HeaderValue::from_static("text/plain")),
            Body::from(reply),
        )
    } else {
        // The envelope by hand, the text escaped straight into it: building a JSON value only to
        // print it cost more than the lookup.
        let mut envelope = Vec::with_capacity(text.len() + text.len() / 4 + 16);
        envelope.extend_from_slice(b"{\"payload\":");
        serde_json::to_writer(&mut envelope, text).map_err(|_| Error::Internal)?;
        envelope.push(b'}');
        (
            HeaderValue::from_static("application/json"),
            Body::from(envelope),
        )
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    Ok(response)
}

/// Nakama's error body `{"code","error","message"}` (keys in Go's alphabetical order) with the
/// status of the code. `error` carries the per-field details when there are any.
fn error_reply(error: &Error) -> Response {
    let code = error.code();
    let message = error.to_string();
    let details = error.field_errors();
    let error_value = if details.is_empty() {
        serde_json::Value::String(message.clone())
    } else {
        serde_json::json!({ "code": code.as_str(), "errors": details })
    };
    let body = serde_json::json!({
        "code": code.grpc_code(),
        "error": error_value,
        "message": message,
    });
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_reply(status, body.to_string())
}

/// A JSON body with the headers every Nakama reply carries.
fn json_reply(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    response
}
