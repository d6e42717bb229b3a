//! The coordinator's I/O: two WebSocket endpoints (agents by agent token, clients by
//! session token) and the in-process link of the server's own tailnet node
//! ([`Hub::open_local`]) around the sans-IO [`tether_coord::Coordinator`], a timer task
//! for heartbeats, and DERP admission backed by the coordinator's known keys.
//!
//! Each socket has a bounded outbox; a peer too slow to drain it is disconnected rather
//! than allowed to grow memory without bound.
//!
//! A user's client connection carries the session it was opened with
//! ([`SessionTag`]); logging that session out, its expiry, or its user being suspended
//! or deleted revokes the connection ([`revocation`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tether_coord::limits;
use tether_coord::{ConnId, CoordError, Coordinator, Output, Role};
use tether_key::NodePublic;
use tether_proto::coord::{Request, Response, tailnet_ip};
use tether_proto::derpmap::DerpMap;
use tether_tailnet::LocalLink;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod traffic;
pub use traffic::{Traffic, TrafficStats};

/// Messages queued for one socket before it is considered too slow.
const OUTBOX: usize = 512;
/// The close code every WebSocket gets when the server shuts down (RFC 6455 going away).
pub const GOING_AWAY: u16 = 1001;
/// The close reason that goes with it.
pub const SHUTTING_DOWN: &str = "server shutting down";

mod revocation;

pub use revocation::{ClientSession, DELETED, EXPIRED, LOGGED_OUT, Revoked, SUSPENDED, SessionTag};

/// The close code of a connection whose access was revoked (policy violation).
const CLOSE_REVOKED: u16 = 1008;
/// The close code of any other close by the server.
const CLOSE_NORMAL: u16 = 1000;

enum Cmd {
    Send(Response),
    Close { code: u16, reason: String },
}

struct Inner {
    coord: Coordinator,
    conns: HashMap<ConnId, mpsc::Sender<Cmd>>,
    next_conn: ConnId,
    /// The session of every user's client connection.
    sessions: HashMap<ConnId, SessionTag>,
    /// Connections being revoked, whose close gets [`CLOSE_REVOKED`].
    revoking: std::collections::HashSet<ConnId>,
}

/// Shared handle to the coordinator and its sockets.
pub struct Hub {
    inner: Mutex<Inner>,
    derp: Option<Arc<tether_derp::server::Server>>,
    heartbeat: Duration,
    wake: tokio::sync::Notify,
    traffic: Traffic,
    /// Told every revocation, for [`Hub::until_revoked`].
    revoked: tokio::sync::broadcast::Sender<revocation::Revoked>,
    /// Cancelled when the server shuts down: each socket sends 1001 and ends.
    shutdown: CancellationToken,
}

/// What a served peer did that its endpoint may want to record.
#[derive(Debug, Clone, Copy)]
pub enum PeerEvent {
    /// The peer reported this home DERP region.
    Relay(u32),
    /// The peer's socket ended; its last reported region, if any.
    Left {
        /// Last home region.
        relay: Option<u32>,
    },
}

/// Lets the built-in relay admit only keys the coordinator knows. The hub is set after
/// construction because the hub in turn holds the relay (to close forgotten keys).
#[derive(Default)]
pub struct CoordinatorAdmission(pub std::sync::OnceLock<std::sync::Weak<Hub>>);

impl tether_derp::server::Admission for CoordinatorAdmission {
    fn admit(&self, key: &NodePublic) -> bool {
        let admitted = self
            .0
            .get()
            .and_then(std::sync::Weak::upgrade)
            .is_some_and(|hub| hub.lock().coord.is_known_key(key));
        if !admitted {
            tracing::debug!(key = ?key, "DERP login refused: key unknown to the coordinator");
        }
        admitted
    }
}

impl Hub {
    /// A hub over a fresh coordinator; its sockets close with 1001 once `shutdown` is
    /// cancelled.
    pub fn new(
        config: tether_coord::Config,
        derp_map: DerpMap,
        derp: Option<Arc<tether_derp::server::Server>>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let heartbeat = config.heartbeat;
        Arc::new(Self {
            inner: Mutex::new(Inner {
                coord: Coordinator::new(config, derp_map),
                conns: HashMap::new(),
                next_conn: 1,
                sessions: HashMap::new(),
                revoking: Default::default(),
            }),
            derp,
            heartbeat,
            wake: tokio::sync::Notify::new(),
            traffic: Traffic::default(),
            revoked: tokio::sync::broadcast::Sender::new(64),
            shutdown,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug; the state is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the coordinator, then routes what it produced.
    pub fn with<R>(&self, f: impl FnOnce(&mut Coordinator) -> R) -> R {
        let mut inner = self.lock();
        let r = f(&mut inner.coord);
        self.flush(&mut inner);
        drop(inner);
        // The call may have moved the next heartbeat deadline earlier.
        self.wake.notify_one();
        r
    }

    /// What the coordinator's connections carried.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Read-only access.
    pub fn read<R>(&self, f: impl FnOnce(&Coordinator) -> R) -> R {
        f(&self.lock().coord)
    }

    fn flush(&self, inner: &mut Inner) {
        let mut slow = Vec::new();
        while let Some(out) = inner.coord.poll_output() {
            match out {
                Output::Send { conn, msg } => {
                    if let Some(tx) = inner.conns.get(&conn)
                        && tx.try_send(Cmd::Send(msg)).is_err()
                    {
                        slow.push(conn);
                    }
                }
                Output::Close { conn, reason } => {
                    inner.sessions.remove(&conn);
                    let code = if inner.revoking.remove(&conn) {
                        CLOSE_REVOKED
                    } else {
                        CLOSE_NORMAL
                    };
                    if let Some(tx) = inner.conns.remove(&conn) {
                        let _ = tx.try_send(Cmd::Close { code, reason });
                    }
                }
            }
        }
        for conn in slow {
            if let Some(tx) = inner.conns.remove(&conn) {
                tracing::warn!(
                    conn,
                    "coordinator peer too slow to read its updates; disconnecting"
                );
                let _ = tx.try_send(Cmd::Close {
                    code: CLOSE_NORMAL,
                    reason: "too slow".into(),
                });
                self.traffic.slow();
                inner.sessions.remove(&conn);
                inner.revoking.remove(&conn);
                inner.coord.disconnected(conn, Instant::now());
            }
        }
        if let Some(derp) = &self.derp {
            for key in inner.coord.drain_forgotten_keys() {
                derp.disconnect(&key);
            }
        }
    }

    /// Drives heartbeats and session expiry: wakes at the coordinator's next deadline,
    /// at least once a second, so an expired session's connections end within a second.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let deadline = self.read(|c| c.poll_timeout());
            let max = Instant::now() + Duration::from_secs(1);
            let at = deadline.map_or(max, |d| d.min(max));
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = self.wake.notified() => {}
            }
            // Not through `with`: its wake-up would make this loop spin.
            let mut inner = self.lock();
            inner.coord.handle_timeout(Instant::now());
            revocation::end_expired(&mut inner, chrono::Utc::now());
            self.flush(&mut inner);
        }
    }

    /// Registers a connection for `role` (opened with `session`, for a user's client):
    /// its id and the queue of what to send it.
    fn attach(
        &self,
        role: Role,
        session: Option<SessionTag>,
    ) -> Result<(ConnId, mpsc::Receiver<Cmd>), CoordError> {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let mut inner = self.lock();
        let conn = inner.next_conn;
        inner.next_conn += 1;
        inner.conns.insert(conn, tx);
        match inner.coord.connect(conn, role, Instant::now()) {
            Ok(()) => {
                self.traffic.accepted(&role);
                if let Some(tag) = session {
                    inner.sessions.insert(conn, tag);
                }
                self.flush(&mut inner);
                Ok((conn, rx))
            }
            Err(e) => {
                inner.conns.remove(&conn);
                Err(e)
            }
        }
    }

    /// The transport of `conn` ended.
    fn detach(&self, conn: ConnId) {
        let mut inner = self.lock();
        inner.conns.remove(&conn);
        inner.sessions.remove(&conn);
        inner.revoking.remove(&conn);
        inner.coord.disconnected(conn, Instant::now());
        self.flush(&mut inner);
    }

    /// Feeds one text message of `conn` to the coordinator (within the protocol's
    /// limits); the error reply when it is not a request.
    fn handle_text(&self, conn: ConnId, text: &str) -> Result<Request, Response> {
        let now = Instant::now();
        match limits::parse_request(text) {
            Ok(req) => {
                self.traffic.received(true);
                self.with(|c| {
                    c.heard_from(conn, now);
                    c.handle_request(conn, req.clone(), now);
                });
                Ok(req)
            }
            Err(e) => {
                self.traffic.received(false);
                self.with(|c| c.heard_from(conn, now));
                Err(Response::Error {
                    message: e.to_string(),
                })
            }
        }
    }

    /// Opens an in-process coordination connection for `role` (the server's own node):
    /// the same messages as the WebSocket, as JSON text, with an empty text as the
    /// heartbeat. It lasts until either side drops its half.
    pub fn open_local(self: &Arc<Self>, role: Role) -> Result<LocalLink, CoordError> {
        let (conn, mut rx) = self.attach(role, None)?;
        let (to_node, from_hub) = mpsc::channel::<String>(OUTBOX);
        let (to_hub, mut from_node) = mpsc::channel::<String>(OUTBOX);
        let hub = self.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(hub.heartbeat);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let send = |text: String| {
                let to_node = to_node.clone();
                async move {
                    matches!(
                        tokio::time::timeout(Duration::from_secs(10), to_node.send(text)).await,
                        Ok(Ok(()))
                    )
                }
            };
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(Cmd::Send(msg)) => {
                            let Ok(text) = serde_json::to_string(&msg) else { continue };
                            if !send(text).await {
                                break;
                            }
                            hub.traffic.sent();
                        }
                        Some(Cmd::Close { reason, .. }) => {
                            tracing::debug!(conn, %reason, "closing the server node's coordination link");
                            break;
                        }
                        None => break,
                    },
                    _ = beat.tick() => {
                        // The node lives in this process: it is alive while it takes
                        // what we send it.
                        if !send(String::new()).await {
                            break;
                        }
                        hub.with(|c| c.heard_from(conn, Instant::now()));
                    }
                    text = from_node.recv() => {
                        let Some(text) = text else { break };
                        if let Err(reply) = hub.handle_text(conn, &text)
                            && let Ok(text) = serde_json::to_string(&reply)
                            && !send(text).await
                        {
                            break;
                        }
                    }
                }
            }
            hub.detach(conn);
        });
        Ok(LocalLink {
            send: to_hub,
            recv: from_hub,
        })
    }

    /// Serves one peer's socket until it ends; a user's client comes with the session
    /// it was opened with. `on_event` hears when the peer reports a new home DERP region
    /// and when it leaves (the agent endpoint keeps last-seen records).
    pub async fn serve(
        self: Arc<Self>,
        socket: WebSocket,
        role: Role,
        session: Option<ClientSession>,
        mut on_event: impl FnMut(PeerEvent) + Send,
    ) {
        let mut relay: Option<u32> = None;
        // Only a node the coordinator takes moves the recorded relay region.
        let own = matches!(role, Role::Agent { .. }).then(|| tailnet_ip(role.id()));
        let tag = session.as_ref().map(|s| s.tag);
        let attached = self.attach(role, tag);
        if let (Ok((conn, _)), Some(session)) = (&attached, session) {
            // A logout between the upgrade's authentication and the attach above found
            // no connection to end; this check after it closes that gap.
            self.recheck(*conn, session).await;
        }
        let (conn, mut rx) = match attached {
            Ok(attached) => attached,
            Err(e) => {
                let (mut sink, _) = socket.split();
                let msg = Response::Error {
                    message: e.to_string(),
                };
                if let Ok(text) = serde_json::to_string(&msg) {
                    let _ = sink.send(Message::Text(text.into())).await;
                }
                let _ = sink.close().await;
                on_event(PeerEvent::Left { relay: None });
                return;
            }
        };
        let (mut sink, mut stream) = socket.split();
        let mut ping = tokio::time::interval(self.heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Send(msg)) => {
                        let Ok(text) = serde_json::to_string(&msg) else { continue };
                        let send = sink.send(Message::Text(text.into()));
                        if !matches!(tokio::time::timeout(Duration::from_secs(10), send).await, Ok(Ok(()))) {
                            break;
                        }
                        self.traffic.sent();
                    }
                    Some(Cmd::Close { code, reason }) => {
                        tracing::debug!(conn, code, %reason, "closing coordinator connection");
                        let frame = Message::Close(Some(CloseFrame {
                            code,
                            reason: close_reason(&reason).into(),
                        }));
                        let close = async {
                            let _ = sink.send(frame).await;
                            let _ = sink.close().await;
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
                        break;
                    }
                    None => break,
                },
                () = self.shutdown.cancelled() => {
                    let frame = CloseFrame { code: GOING_AWAY, reason: SHUTTING_DOWN.into() };
                    let close = sink.send(Message::Close(Some(frame)));
                    let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
                    break;
                }
                _ = ping.tick() => {
                    let send = sink.send(Message::Ping(Default::default()));
                    if !matches!(tokio::time::timeout(Duration::from_secs(10), send).await, Ok(Ok(()))) {
                        break;
                    }
                }
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    match frame {
                        Message::Text(text) => match self.handle_text(conn, text.as_str()) {
                            Ok(Request::UpdateSelf { node })
                                if node.preferred_derp != 0
                                    && relay != Some(node.preferred_derp)
                                    && limits::check_node(&node, own).is_ok() =>
                            {
                                relay = Some(node.preferred_derp);
                                on_event(PeerEvent::Relay(node.preferred_derp));
                            }
                            Ok(_) => {}
                            Err(reply) => {
                                if let Ok(text) = serde_json::to_string(&reply) {
                                    let _ = sink.send(Message::Text(text.into())).await;
                                }
                            }
                        },
                        Message::Close(_) => break,
                        _ => self.with(|c| c.heard_from(conn, Instant::now())),
                    }
                }
            }
        }
        self.detach(conn);
        on_event(PeerEvent::Left { relay });
    }

    /// A fresh id for a client connection.
    pub fn new_client_id() -> Uuid {
        Uuid::new_v4()
    }
}

/// `reason` cut to the 123 bytes a close frame holds, at a character boundary.
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
