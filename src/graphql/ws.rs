//! Subscriptions over WebSocket at `/graphql/ws`, protocol `graphql-transport-ws` (the `graphql-ws`
//! npm library's). async-graphql's `WebSocket` speaks the protocol; this module adds what it leaves
//! to the server: the key (in `connection_init` or `?http_key=`; a missing or wrong one closes with
//! 4403), subscriptions only, at most [`MAX_SUBSCRIPTIONS`] per connection and [`Sockets`]' limit
//! of connections, bounded messages, a deadline for `connection_init`, a deadline per message
//! sent (a client that stops reading is dropped instead of holding anything), and 1001 on
//! shutdown. It also gives the protocol's close codes where async-graphql uses generic ones.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_graphql::{
    Data, Executor, Request, Response, ServerError,
    http::{WebSocket as GraphQLWebSocket, WebSocketProtocols as Protocols, WsMessage},
    parser::types::{DocumentOperations, ExecutableDocument, OperationType},
};
use axum::{
    extract::{
        RawQuery, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::StatusCode,
    response::{IntoResponse, Response as HttpResponse},
};
use futures_util::{SinkExt, StreamExt, stream::BoxStream};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use super::{AppSchema, error::request_error, guard, transport::Transport};
use crate::{
    auth::{self, Keys, Role},
    body::MAX_BODY_BYTES,
    error::Error,
    telemetry,
};

/// Most subscriptions one connection may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// How long a client has, once connected, to send an accepted `connection_init`.
const INIT_DEADLINE: Duration = Duration::from_secs(10);
/// Longest one message may take to be handed to the client. A client whose socket stays full
/// this long has stopped reading; its subscriptions would only fall behind, so it is dropped.
const SEND_DEADLINE: Duration = Duration::from_secs(10);
/// How long shutdown waits for sockets to say goodbye.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

const PROTOCOL: &str = "graphql-transport-ws";
/// The protocol's close codes.
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_BAD_REQUEST: u16 = 4400;
const CLOSE_UNAUTHORIZED: u16 = 4401;
const CLOSE_FORBIDDEN: u16 = 4403;
const CLOSE_INIT_TIMEOUT: u16 = 4408;

/// The open WebSocket connections of one server: their number is bounded (an upgraded connection
/// leaves the HTTP server's connection limit), and shutdown closes them with 1001.
#[derive(Clone)]
pub struct Sockets {
    slots: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    open: TaskTracker,
}

impl Sockets {
    pub fn new(max_connections: usize) -> Self {
        Sockets {
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            shutdown: watch::Sender::new(false),
            open: TaskTracker::new(),
        }
    }

    /// Closes every socket with 1001 and waits (a few seconds at most) until they are closed.
    pub async fn close(&self) {
        self.shutdown.send_replace(true);
        self.open.close();
        if tokio::time::timeout(CLOSE_DEADLINE, self.open.wait())
            .await
            .is_err()
        {
            tracing::warn!("some WebSocket connections did not close in time");
        }
    }
}

/// `GET /graphql/ws`: upgrades to a `graphql-transport-ws` connection.
pub(super) async fn upgrade(
    State(transport): State<Transport>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> HttpResponse {
    let state = transport.shared();
    let Ok(slot) = state.sockets.slots.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket connections; try again shortly",
        )
            .into_response();
    };
    let url_key = auth::query_key(query.as_deref());
    let open = state.sockets.open.clone();
    upgrade
        .protocols([PROTOCOL])
        .max_message_size(MAX_BODY_BYTES)
        .max_frame_size(MAX_BODY_BYTES)
        .on_upgrade(move |socket| {
            open.track_future(async move {
                serve(transport, socket, url_key).await;
                drop(slot);
            })
        })
}

async fn serve(transport: Transport, socket: WebSocket, url_key: Option<String>) {
    let state = transport.shared();
    let (mut sink, incoming) = socket.split();
    let incoming = incoming
        .take_while(|message| std::future::ready(message.is_ok()))
        .filter_map(|message| async move {
            match message {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            }
        });
    let refused = Arc::new(AtomicBool::new(false));
    let executor = SubscriptionsOnly {
        schema: state.schema.clone(),
        introspection: state.introspection,
        active: Arc::new(AtomicUsize::new(0)),
    };
    let keys = state.keys.clone();
    let refusing = refused.clone();
    let mut protocol = Box::pin(
        GraphQLWebSocket::new(executor, incoming, Protocols::GraphQLWS).on_connection_init(
            move |payload| async move {
                match connection_role(&keys, &payload, url_key.as_deref()) {
                    Some(role) => {
                        let mut data = Data::default();
                        data.insert(role);
                        Ok(data)
                    }
                    None => {
                        refusing.store(true, Ordering::Release);
                        Err("Forbidden: a valid http or admin key is required".into())
                    }
                }
            },
        ),
    );
    let mut shutdown = state.sockets.shutdown.subscribe();
    if *shutdown.borrow() {
        return;
    }
    let init_deadline = tokio::time::sleep(INIT_DEADLINE);
    tokio::pin!(init_deadline);
    let mut acknowledged = false;
    let close = loop {
        tokio::select! {
            message = protocol.next() => match message {
                Some(WsMessage::Text(text)) => {
                    // The first message the server sends is the `connection_ack`.
                    acknowledged = true;
                    match tokio::time::timeout(SEND_DEADLINE, sink.send(Message::text(text))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            tracing::info!("dropping a WebSocket client that stopped reading");
                            return;
                        }
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    break (protocol_close_code(code, refused.load(Ordering::Acquire)), reason);
                }
                None => return,
            },
            // Only ever moves to true.
            _ = shutdown.changed() => {
                break (CLOSE_GOING_AWAY, "the server is shutting down".to_owned());
            }
            () = &mut init_deadline, if !acknowledged => {
                break (CLOSE_INIT_TIMEOUT, "Connection initialisation timeout".to_owned());
            }
        }
    };
    let (code, reason) = close;
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_DEADLINE, sink.send(Message::Close(Some(frame)))).await;
}

/// async-graphql closes with 1002 for a refused `connection_init` and for a message that does
/// not parse, and with 1011 for a subscription before the handshake; the protocol says 4403,
/// 4400 and 4401.
fn protocol_close_code(code: u16, refused: bool) -> u16 {
    match code {
        1002 if refused => CLOSE_FORBIDDEN,
        1002 => CLOSE_BAD_REQUEST,
        1011 => CLOSE_UNAUTHORIZED,
        other => other,
    }
}

/// The role of the key in `connection_init`'s payload (`{"Authorization": "Bearer <key>"}` or
/// `{"http_key": "<key>"}`), else of the URL's `?http_key=`.
fn connection_role(keys: &Keys, payload: &Value, url_key: Option<&str>) -> Option<Role> {
    let text = |name: &str| payload.get(name).and_then(Value::as_str);
    let presented = text("Authorization")
        .or_else(|| text("authorization"))
        .and_then(|header| auth::bearer_token(Some(header)))
        .or_else(|| text("http_key").filter(|key| !key.is_empty()))
        .or(url_key)?;
    keys.role(presented)
}

/// Runs subscription operations only (queries and mutations belong on `POST /graphql`, with its
/// timeout and limits), at most [`MAX_SUBSCRIPTIONS`] at a time per connection.
#[derive(Clone)]
struct SubscriptionsOnly {
    schema: AppSchema,
    introspection: bool,
    /// Subscriptions running on this connection.
    active: Arc<AtomicUsize>,
}

/// A running subscription's place in its connection's count (and in the instance's gauge), given
/// back when it ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn taken(active: Arc<AtomicUsize>) -> Self {
        metrics::gauge!(telemetry::SUBSCRIPTIONS_ACTIVE).increment(1.0);
        Slot(active)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(telemetry::SUBSCRIPTIONS_ACTIVE).decrement(1.0);
    }
}

impl Executor for SubscriptionsOnly {
    async fn execute(&self, _request: Request) -> Response {
        refusal(&Error::invalid(
            "query",
            "only subscriptions run over /graphql/ws",
        ))
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let refused = |response: Response| futures_util::stream::once(async { response }).boxed();
        match guard::checked_document(&request.query, self.introspection) {
            Ok(document) => {
                if let Some(kind) = operation_kind(&document, request.operation_name.as_deref())
                    && kind != OperationType::Subscription
                {
                    return refused(refusal(&Error::invalid(
                        "query",
                        format!(
                            "only subscriptions run over /graphql/ws; send a {kind} to POST /graphql"
                        ),
                    )));
                }
            }
            Err(error) => return refused(Response::from_errors(vec![error])),
        }
        if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_SUBSCRIPTIONS {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return refused(refusal(&Error::LimitExceeded(format!(
                "a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions; complete one \
                 or open another connection"
            ))));
        }
        let slot = Slot::taken(self.active.clone());
        self.schema
            .execute_stream_with_session_data(request, session_data.unwrap_or_default())
            .map(move |response| {
                let _held = &slot;
                response
            })
            .boxed()
    }
}

fn refusal(error: &Error) -> Response {
    let error: ServerError = request_error(error);
    Response::from_errors(vec![error])
}

/// The kind of operation a request runs, when the document says it unambiguously (otherwise
/// async-graphql reports the problem).
fn operation_kind(document: &ExecutableDocument, name: Option<&str>) -> Option<OperationType> {
    match &document.operations {
        DocumentOperations::Single(operation) => Some(operation.node.ty),
        DocumentOperations::Multiple(operations) => match name {
            Some(name) => operations
                .iter()
                .find(|(candidate, _)| candidate.as_str() == name)
                .map(|(_, operation)| operation.node.ty),
            None => None,
        },
    }
}
