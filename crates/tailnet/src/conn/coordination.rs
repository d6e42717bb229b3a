//! The coordination task: the tokio driver of a [`control::Session`]. It owns the
//! WebSocket, feeds the session what arrives, the API's requests and the time, applies
//! the session's events to the core and the shared state, sends its requests, and
//! connects again when the session says so.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_proto::coord::Request;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::config::{ConnConfig, HTTP_TIMEOUT};
use super::driver::{Shared, now};
use crate::control::{self, Event, Session, Welcome};
use crate::error::TailnetError;
use crate::netinfo::NetInfo;

/// How long `close` lets the WebSocket close handshake take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The coordination WebSocket.
pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Requests from the API to the coordination task.
pub(super) enum CoordCmd {
    AddTunnel(uuid::Uuid),
    SetNetInfo(NetInfo),
    Disconnect(oneshot::Sender<()>),
}

/// Connects the coordination WebSocket and reads the welcome, each within
/// [`HTTP_TIMEOUT`].
pub(super) async fn connect(cfg: &ConnConfig) -> Result<(Ws, Welcome), TailnetError> {
    let url = cfg.coordinate_url()?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| TailnetError::BadUrl(e.to_string()))?;
    let (name, token) = cfg.auth.header();
    let value = http::HeaderValue::from_str(token)
        .map_err(|_| TailnetError::Coordination("token is not a valid header value".into()))?;
    req.headers_mut().insert(name, value);
    // The WebSocket URL (ws/wss) is the server's (http/https) one.
    cfg.headers.apply(&cfg.server, req.headers_mut());
    let (mut ws, _) = match tokio::time::timeout(HTTP_TIMEOUT, connect_limited(req)).await {
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
    let deadline = tokio::time::Instant::now() + HTTP_TIMEOUT;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                return Err(TailnetError::Timeout {
                    what: "the coordinator's welcome".into(),
                    after: HTTP_TIMEOUT,
                });
            }
            Ok(None) => {
                return Err(TailnetError::Coordination(
                    "closed before the welcome".into(),
                ));
            }
            Ok(Some(Err(e))) => return Err(TailnetError::Coordination(e.to_string())),
            Ok(Some(Ok(m))) => m,
        };
        let Message::Text(text) = msg else { continue };
        if let Some(welcome) =
            control::parse_welcome(text.as_str()).map_err(TailnetError::Coordination)?
        {
            return Ok((ws, welcome));
        }
    }
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

async fn send(ws: &mut Ws, req: &Request) -> Result<(), String> {
    let text = serde_json::to_string(req).map_err(|e| e.to_string())?;
    match tokio::time::timeout(HTTP_TIMEOUT, ws.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("send timed out".into()),
    }
}

/// The coordination task: runs until the [`Conn`](super::Conn) closes.
pub(super) async fn run(
    shared: Arc<Shared>,
    cfg: ConnConfig,
    mut session: Session,
    first: Ws,
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
                msg = socket.next() => {
                    let t = now();
                    let lost = match msg {
                        None | Some(Ok(Message::Close(_))) => Some("closed by the server".to_string()),
                        Some(Err(e)) => Some(e.to_string()),
                        Some(Ok(Message::Text(text))) => {
                            session.handle_text(t, text.as_str());
                            None
                        }
                        Some(Ok(_)) => {
                            session.handle_heard(t);
                            None
                        }
                    };
                    if let Some(why) = lost {
                        if shared.is_closed() {
                            return;
                        }
                        session.handle_lost(t, &why);
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
            Some(CoordCmd::SetNetInfo(ni)) => session.set_net_info(ni),
            Some(CoordCmd::Disconnect(ack)) => {
                session.close();
                if let Some(mut socket) = ws.take() {
                    while let Some(req) = session.poll_transmit() {
                        let _ = send(&mut socket, &req).await;
                    }
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
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
            Event::DerpMap(map) => *shared.derp_map() = map,
            Event::IdChanged(id) => *shared.id() = id,
        }
    }
    if peers_changed {
        shared.bump_peers();
        shared.wake_driver();
    }
}
