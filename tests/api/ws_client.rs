//! A `graphql-transport-ws` client over a real WebSocket (tokio-tungstenite), for the
//! subscription tests.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::helpers::TestApp;

/// How long a test waits for a message the server owes it.
pub const DEADLINE: Duration = Duration::from_secs(5);

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Opens the socket (`query` is appended to the path, e.g. `?http_key=…`); nothing sent yet.
    pub async fn open(app: &TestApp, query: &str) -> Self {
        Self::open_with(app.address, query, None).await
    }

    /// Opens the socket with a small receive buffer, so that a client that stops reading is
    /// felt by the server sooner. Not much smaller: below two loopback segments (64 KiB each) the
    /// kernel stops announcing free space and the connection stalls for seconds at a time.
    pub async fn open_with_small_receive_buffer(app: &TestApp) -> Self {
        Self::open_with(app.address, "", Some(256 * 1024)).await
    }

    async fn open_with(address: SocketAddr, query: &str, receive_buffer: Option<u32>) -> Self {
        let mut request = format!("ws://{address}/graphql/ws{query}")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let tcp = TcpSocket::new_v4().unwrap();
        if let Some(bytes) = receive_buffer {
            tcp.set_recv_buffer_size(bytes).unwrap();
        }
        let stream = tcp.connect(address).await.expect("connect");
        let (socket, response) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                .await
                .expect("the WebSocket handshake succeeds");
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "graphql-transport-ws"
        );
        WsClient { socket }
    }

    /// Opens, sends `connection_init` with the key as a bearer token and waits for the ack.
    pub async fn connect(app: &TestApp, key: &str) -> Self {
        Self::connect_to(app.address, key).await
    }

    /// [`Self::connect`] to any address (a proxy in front of servers, say).
    pub async fn connect_to(address: SocketAddr, key: &str) -> Self {
        let mut client = Self::open_with(address, "", None).await;
        client
            .init(json!({"Authorization": format!("Bearer {key}")}))
            .await;
        client.expect_ack().await;
        client
    }

    pub async fn init(&mut self, payload: Value) {
        self.send(json!({"type": "connection_init", "payload": payload}))
            .await;
    }

    pub async fn expect_ack(&mut self) {
        let message = self.message().await;
        assert_eq!(message, json!({"type": "connection_ack"}));
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({"type": "subscribe", "id": id, "payload": {"query": query, "variables": variables}}))
            .await;
    }

    pub async fn complete(&mut self, id: &str) {
        self.send(json!({"type": "complete", "id": id})).await;
    }

    /// The next protocol message (pings answered), failing after [`DEADLINE`] or on a close.
    pub async fn message(&mut self) -> Value {
        self.message_within(DEADLINE)
            .await
            .unwrap_or_else(|| panic!("no message within {DEADLINE:?}"))
    }

    /// The next protocol message, or `None` if none comes within `wait`.
    pub async fn message_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    return Some(message);
                }
                Some(Ok(Message::Close(frame))) => panic!("closed by the server: {frame:?}"),
                Some(Ok(_)) => {}
                other => panic!("the socket ended: {other:?}"),
            }
        }
    }

    /// The payload of the next `next` message, which must be for `id`.
    pub async fn next_payload(&mut self, id: &str) -> Value {
        let message = self.message().await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], id, "{message}");
        message["payload"].clone()
    }

    /// `next_payload`'s `data.<field>`, failing on errors.
    pub async fn next_data(&mut self, id: &str, field: &str) -> Value {
        let payload = self.next_payload(id).await;
        assert!(
            payload.get("errors").is_none(),
            "unexpected errors: {payload}"
        );
        payload["data"][field].clone()
    }

    /// The code of the first error of the next `next` message for `id`, then its `complete`.
    pub async fn error_then_complete(&mut self, id: &str) -> (String, String) {
        let payload = self.next_payload(id).await;
        let error = &payload["errors"][0];
        let code = error["extensions"]["code"].as_str().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or_default();
        let completed = self.message().await;
        assert_eq!(completed, json!({"type": "complete", "id": id}));
        (code.to_owned(), message.to_owned())
    }

    /// Asserts that nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(message) = self.message_within(wait).await {
            panic!("expected nothing, got {message}");
        }
    }

    /// The close code and reason the server ends the connection with.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("the server closes the socket in time");
            match frame {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => {}
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    }
}
