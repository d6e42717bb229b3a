//! The coordination task: the tokio driver of a [`control::Session`]. It owns the
//! connection (a WebSocket, or an in-process [`LocalLink`] for the server's own node),
//! feeds the session what arrives, the API's requests and the time, applies the
//! session's events to the core and the shared state, sends its requests, and connects
//! again when the session says so.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_proto::coord::Request;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::config::{Auth, ConnConfig, HTTP_TIMEOUT};
use super::driver::{Shared, now};
use super::local::LocalLink;
use crate::control::{self, Event, Session, Welcome};
use crate::error::TailnetError;
use crate::netinfo::NetInfo;

/// How long `close` lets the WebSocket close handshake take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The coordination WebSocket.
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The `User-Agent` of the coordination WebSocket request, so the server knows our version.
const USER_AGENT: &str = concat!("tether/", env!("CARGO_PKG_VERSION"));

/// One connection to the coordinator.
pub(super) enum Link {
    /// Over the network.
    Ws(Box<Ws>),
    /// In this process (the server's own node).
    Local(LocalLink),
}

/// What arrived on a [`Link`].
enum Incoming {
    /// A coordination message.
    Text(String),
    /// Proof of life only (a ping or pong, a local heartbeat).
    Heard,
    /// The link ended, and why.
    Lost(String),
}

impl Link {
    async fn recv(&mut self) -> Incoming {
        match self {
            Self::Ws(ws) => match ws.next().await {
                None | Some(Ok(Message::Close(_))) => Incoming::Lost("closed by the server".into()),
                Some(Err(e)) => Incoming::Lost(e.to_string()),
                Some(Ok(Message::Text(text))) => Incoming::Text(text.as_str().to_owned()),
                Some(Ok(_)) => Incoming::Heard,
            },
            Self::Local(link) => match link.recv.recv().await {
                None => Incoming::Lost("closed by the server".into()),
                Some(text) if text.is_empty() => Incoming::Heard,
                Some(text) => Incoming::Text(text),
            },
        }
    }

    async fn send(&mut self, text: String) -> Result<(), String> {
        let sent = match self {
            Self::Ws(ws) => {
                let send = ws.send(Message::Text(text.into()));
                tokio::time::timeout(HTTP_TIMEOUT, send)
                    .await
                    .map(|r| r.map_err(|e| e.to_string()))
            }
            Self::Local(link) => tokio::time::timeout(HTTP_TIMEOUT, link.send.send(text))
                .await
                .map(|r| r.map_err(|_| "closed by the server".to_string())),
        };
        sent.unwrap_or_else(|_| Err("send timed out".into()))
    }

    async fn close(&mut self) {
        if let Self::Ws(ws) = self {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, Ws::close(ws, None)).await;
        }
        // A local link closes when it is dropped.
    }
}

/// Requests from the API to the coordination task.
pub(super) enum CoordCmd {
    AddTunnel(uuid::Uuid),
    RemoveTunnel(uuid::Uuid),
    SetNetInfo(NetInfo),
    Disconnect(oneshot::Sender<()>),
}

/// Connects to the coordinator and reads the welcome, each within [`HTTP_TIMEOUT`].
pub(super) async fn connect(cfg: &ConnConfig) -> Result<(Link, Welcome), TailnetError> {
    let mut link = match &cfg.auth {
        Auth::Local(local) => Link::Local(local.open().map_err(TailnetError::Coordination)?),
        _ => Link::Ws(Box::new(connect_ws(cfg).await?)),
    };
    let deadline = tokio::time::Instant::now() + HTTP_TIMEOUT;
    loop {
        let text = match tokio::time::timeout_at(deadline, link.recv()).await {
            Err(_) => {
                return Err(TailnetError::Timeout {
                    what: "the coordinator's welcome".into(),
                    after: HTTP_TIMEOUT,
                });
            }
            Ok(Incoming::Lost(why)) => {
                return Err(TailnetError::Coordination(format!(
                    "closed before the welcome: {why}"
                )));
            }
            Ok(Incoming::Heard) => continue,
            Ok(Incoming::Text(text)) => text,
        };
        if let Some(welcome) = control::parse_welcome(&text).map_err(TailnetError::Coordination)? {
            return Ok((link, welcome));
        }
    }
}

/// Opens the coordination WebSocket with our token, within [`HTTP_TIMEOUT`].
async fn connect_ws(cfg: &ConnConfig) -> Result<Ws, TailnetError> {
    let url = cfg.coordinate_url()?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| TailnetError::BadUrl(e.to_string()))?;
    let (name, token) = cfg
        .auth
        .header()
        .ok_or_else(|| TailnetError::Coordination("no token to present".into()))?;
    let value = http::HeaderValue::from_str(token)
        .map_err(|_| TailnetError::Coordination("token is not a valid header value".into()))?;
    req.headers_mut().insert(name, value);
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    );
    // The WebSocket URL (ws/wss) is the server's (http/https) one.
    cfg.headers.apply(&cfg.server, req.headers_mut());
    let (ws, _) = match tokio::time::timeout(HTTP_TIMEOUT, connect_limited(req)).await {
        Err(_) => {
            return Err(TailnetError::Timeout {
                what: "the coordination WebSocket".into(),
                after: HTTP_TIMEOUT,
            });
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return Err(TailnetError::Refused {
                what: "the coordination connection".into(),
                status: resp.status().as_u16(),
                body,
            });
        }
        Ok(Err(e)) => {
            return Err(TailnetError::Unreachable {
                url: cfg.server.to_string(),
                message: e.to_string(),
            });
        }
        Ok(Ok(x)) => x,
    };
    Ok(ws)
}

/// Connects with the coordinator's messages bounded by the protocol's own limit (also
/// while fragmented) instead of the WebSocket library's 64 MiB.
async fn connect_limited(
    req: http::Request<()>,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let limit = Some(tether_proto::coord::MAX_RESPONSE_BYTES);
    let config = WebSocketConfig::default()
        .max_message_size(limit)
        .max_frame_size(limit);
    tokio_tungstenite::connect_async_with_config(req, Some(config), false).await
}

async fn send(link: &mut Link, req: &Request) -> Result<(), String> {
    let text = serde_json::to_string(req).map_err(|e| e.to_string())?;
    link.send(text).await
}

/// The coordination task: runs until the [`Conn`](super::Conn) closes.
pub(super) async fn run(
    shared: Arc<Shared>,
    cfg: ConnConfig,
    mut session: Session,
    first: Link,
    mut cmds: mpsc::Receiver<CoordCmd>,
) {
    let mut ws = Some(first);
    loop {
        apply_events(&shared, &mut session);
        if let Some(socket) = ws.as_mut() {
            while let Some(req) = session.poll_transmit() {
                if let Err(e) = send(socket, &req).await {
                    if shared.is_closed() {
                        return;
                    }
                    session.handle_lost(now(), &e);
                }
            }
        }
        shared
            .coord_up
            .store(session.is_connected(), Ordering::Release);
        shared
            .node_sent
            .store(session.node_sent(), Ordering::Release);
        if !session.is_connected() {
            ws = None;
        }
        let wake = session
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let cmd = match ws.as_mut() {
            Some(socket) => tokio::select! {
                msg = socket.recv() => {
                    let t = now();
                    match msg {
                        Incoming::Text(text) => session.handle_text(t, &text),
                        Incoming::Heard => session.handle_heard(t),
                        Incoming::Lost(why) => {
                            if shared.is_closed() {
                                return;
                            }
                            session.handle_lost(t, &why);
                        }
                    }
                    continue;
                }
                cmd = cmds.recv() => cmd,
                () = tokio::time::sleep_until(wake) => {
                    session.handle_timeout(now());
                    continue;
                }
            },
            None => tokio::select! {
                () = tokio::time::sleep_until(wake) => {
                    if session.connect_due(now()) {
                        match connect(&cfg).await {
                            Ok((socket, welcome)) => {
                                session.handle_connected(now(), welcome);
                                ws = Some(socket);
                            }
                            // The token no longer works: the session ended while we
                            // were away, and retrying cannot help.
                            Err(TailnetError::Refused { status: 401, .. }) => {
                                session.handle_session_ended("the session token is no longer valid");
                            }
                            Err(e) => session.handle_connect_failed(now(), &e.to_string()),
                        }
                    }
                    continue;
                }
                cmd = cmds.recv() => cmd,
            },
        };
        match cmd {
            Some(CoordCmd::AddTunnel(id)) => session.add_tunnel(id),
            Some(CoordCmd::RemoveTunnel(id)) => session.remove_tunnel(id),
            Some(CoordCmd::SetNetInfo(ni)) => session.set_net_info(ni),
            Some(CoordCmd::Disconnect(ack)) => {
                session.close();
                if let Some(mut socket) = ws.take() {
                    while let Some(req) = session.poll_transmit() {
                        let _ = send(&mut socket, &req).await;
                    }
                    socket.close().await;
                }
                let _ = ack.send(());
                return;
            }
            None => {
                session.close();
                if let Some(mut socket) = ws.take() {
                    while let Some(req) = session.poll_transmit() {
                        let _ = send(&mut socket, &req).await;
                    }
                }
                return;
            }
        }
    }
}

/// Applies what the session decided: peers to the core (then wakes whoever waits for
/// peers, and the data-plane driver), the DERP map and our id to the shared state.
fn apply_events(shared: &Shared, session: &mut Session) {
    let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
    if events.is_empty() {
        return;
    }
    let mut peers_changed = false;
    let t = now();
    for e in events {
        match e {
            Event::Peer(cfg) => {
                shared.lock().upsert_peer(t, cfg);
                peers_changed = true;
            }
            Event::PeerGone(id) => {
                shared.lock().remove_peer(id);
                peers_changed = true;
            }
            Event::Handshake(id) => {
                shared.lock().initiate_handshake(id, t);
                peers_changed = true;
            }
            Event::PeerRevoked(id) => {
                shared.lock().revoke_peer(id);
                peers_changed = true;
            }
            Event::SessionEnded(reason) => {
                shared.lock().end_all();
                shared.end(reason);
                peers_changed = true;
            }
            Event::DerpMap(map) => *shared.derp_map() = map,
            Event::IdChanged(id) => *shared.id() = id,
        }
    }
    if peers_changed {
        shared.bump_peers();
        shared.wake_driver();
    }
}
