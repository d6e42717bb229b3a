//! A raw coordinator WebSocket, agent or client side, for tests of the coordinator
//! itself: send requests, wait for responses, with every wait bounded.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_key::{DiscoPrivate, NodePrivate};
use tether_proto::api::route;
use tether_proto::api::{AGENT_TOKEN_HEADER, SESSION_TOKEN_HEADER};
use tether_proto::coord::{Node, Request, Response, tailnet_ip};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

/// A coordination WebSocket.
pub struct CoordConn {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// Why a coordination connect failed.
#[derive(Debug)]
pub struct ConnectRefused {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl CoordConn {
    /// Connects to `path` with a header token.
    pub async fn connect(
        base: &str,
        path: &str,
        header: &str,
        token: &str,
    ) -> Result<Self, ConnectRefused> {
        let url = format!("{}{path}", base.replace("http://", "ws://"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(header.as_bytes())
                .unwrap(),
            token.parse().unwrap(),
        );
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await
        {
            Ok(Ok((ws, _))) => Ok(Self { ws }),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(ConnectRefused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Ok(Err(e)) => panic!("websocket connect failed: {e}"),
            Err(_) => panic!("websocket connect timed out"),
        }
    }

    /// An agent's coordination connection.
    pub async fn agent(base: &str, token: &str) -> Result<Self, ConnectRefused> {
        let path = format!("{}?{}", route::AGENT_COORDINATE, route::coordinate_query());
        Self::connect(base, &path, AGENT_TOKEN_HEADER, token).await
    }

    /// A client's coordination connection.
    pub async fn client(base: &str, token: &str) -> Result<Self, ConnectRefused> {
        let path = format!(
            "{}?{}",
            route::TAILNET_COORDINATE,
            route::coordinate_query()
        );
        Self::connect(base, &path, SESSION_TOKEN_HEADER, token).await
    }

    /// Sends a request.
    pub async fn send(&mut self, req: &Request) {
        let text = serde_json::to_string(req).unwrap();
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Sends raw text.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .unwrap();
    }

    /// The next coordinator message (10 s cap), skipping pings.
    pub async fn recv(&mut self) -> Response {
        self.try_recv(Duration::from_secs(10))
            .await
            .expect("no coordinator message within 10 s")
    }

    /// The next message within `wait`, or None.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Response> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Reads until the server's close frame (within `wait`), skipping other messages: its
    /// code and reason, or `None` when the socket ended without one or nothing came.
    pub async fn close_frame(&mut self, wait: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
            {
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits for a message matching `pred` (10 s cap), skipping others.
    pub async fn expect(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Response) -> bool,
    ) -> Response {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(m) if pred(&m) => return m,
                Some(_) => continue,
                None => panic!("did not receive {what} within 10 s"),
            }
        }
    }
}

/// A node for peer `id` holding `key`, homed in region `derp`.
pub fn node_for(id: Uuid, key: &NodePrivate, derp: u32) -> Node {
    Node {
        id,
        key: key.public(),
        disco: DiscoPrivate::generate().public(),
        preferred_derp: derp,
        derp_latency: Default::default(),
        addresses: vec![format!("{}/128", tailnet_ip(id))],
        allowed_ips: vec![format!("{}/128", tailnet_ip(id))],
        endpoints: vec![],
        mapping_varies_by_dest_ip: None,
    }
}

/// Reads the coordinator's Welcome and returns the id it assigned.
pub async fn welcome(c: &mut CoordConn) -> Uuid {
    match c.recv().await {
        Response::Welcome { id, .. } => id,
        other => panic!("expected welcome, got {other:?}"),
    }
}
