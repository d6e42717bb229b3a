//! The coordination client's rules, sans-IO: what a node sends the coordinator and
//! what it does with what the coordinator sends.
//!
//! Contract (quinn's): the driver owns the WebSocket and the clock, and calls in with
//! what happened and the time: [`Session::handle_connected`] (a fresh connection's
//! [`Welcome`], read with [`parse_welcome`]), [`Session::handle_connect_failed`],
//! [`Session::handle_text`] and [`Session::handle_heard`] (what arrived),
//! [`Session::handle_lost`] (the socket failed or closed) and
//! [`Session::handle_timeout`] (once [`Session::poll_timeout`] has passed); and with the
//! node's requests: [`Session::add_tunnel`], [`Session::remove_tunnel`],
//! [`Session::set_net_info`], [`Session::close`]. After each call it drains [`Session::poll_event`] (applied to
//! the node first: peer configs, DERP maps, a new id) and then
//! [`Session::poll_transmit`] (requests to send, in order), and connects while
//! [`Session::connect_due`]. Nothing here reads a clock, sleeps or touches a socket.
//!
//! The rules:
//! - every connection starts with our node (`update_self`), then `add_tunnel` for each
//!   tunnel asked for so far;
//! - a NODE update becomes the peer's [`PeerConfig`] (an all-zero disco key means none);
//!   an agent answers a peer it did not know with `ready_for_handshake`, once the node
//!   has the peer;
//! - READY_FOR_HANDSHAKE starts our WireGuard handshake with that peer now;
//!   DISCONNECTED and LOST forget the peer; a DISCONNECTED marked `revoked` (the peer's
//!   access was taken away) also ends every stream with it;
//! - `session_ended` (our session was logged out, expired or revoked) forgets every
//!   peer, ends every stream and closes the session for good, as does a connect refused
//!   with 401 ([`Session::handle_session_ended`]);
//! - a pushed DERP map replaces ours; an `error` is logged and changes nothing;
//! - nothing heard for the welcome's lost-after plus 5 s means the connection is dead;
//! - a lost connection is re-made at once, a failed connect again after a backoff
//!   (250 ms doubling to 10 s, jittered from the seed); a welcome with a new id replaces
//!   ours (our address stays);
//! - our node is sent again only when it changed; `close` says `disconnect`, so peers
//!   see DISCONNECTED rather than LOST.

use std::collections::{BTreeSet, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tether_backoff::Backoff;
use tether_proto::coord::{self as proto, Node, PeerUpdate, PeerUpdateKind, Request, Response};
use tether_proto::derpmap::DerpMap;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::core::PeerConfig;
use crate::netinfo::NetInfo;

/// How much longer than the coordinator's lost-after we wait before calling the
/// connection dead (the server pings every few seconds).
const SILENCE_MARGIN: Duration = Duration::from_secs(5);
/// First reconnect delay after a failed connect.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the coordinator's first message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// Our id on this connection.
    pub id: Uuid,
    /// Silence after which the coordinator reports a peer LOST (at least 1 s).
    pub lost_after: Duration,
}

/// Reads one text message of a fresh connection: `Some` for the welcome, `None` for a
/// message to skip, an error for a refusal, another major version or garbage.
pub fn parse_welcome(text: &str) -> Result<Option<Welcome>, String> {
    match serde_json::from_str::<Response>(text) {
        Ok(Response::Welcome {
            version,
            id,
            lost_after_secs,
            ..
        }) => {
            proto::check_version(&version)?;
            Ok(Some(Welcome {
                id,
                lost_after: Duration::from_secs(lost_after_secs.max(1)),
            }))
        }
        Ok(Response::Error { message }) => Err(message),
        Ok(_) => Ok(None),
        Err(e) => Err(format!("bad message before the welcome: {e}")),
    }
}

/// What the node must do, from the coordinator's messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Add or update this peer.
    Peer(PeerConfig),
    /// Forget this peer.
    PeerGone(Uuid),
    /// Start the WireGuard handshake with this peer now.
    Handshake(Uuid),
    /// Use this DERP map from now on.
    DerpMap(DerpMap),
    /// The coordinator gave us a new id (a client that reconnected).
    IdChanged(Uuid),
    /// Forget this peer and end every stream with it: its access was revoked.
    PeerRevoked(Uuid),
    /// Our session ended, for this reason: forget every peer, end every stream; the
    /// session is closed and does not reconnect.
    SessionEnded(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// On a connection; the last message came at `last_heard`.
    Connected { last_heard: Instant },
    /// Between connections: connect at `at`.
    Reconnecting { at: Instant },
    /// Closed for good.
    Closed,
}

/// One node's coordination session, across reconnects.
#[derive(Debug)]
pub struct Session {
    node: Node,
    agent: bool,
    tunnels: BTreeSet<Uuid>,
    /// Peers whose node we have (and have not been told are gone).
    peers: BTreeSet<Uuid>,
    state: State,
    lost_after: Duration,
    node_sent: bool,
    backoff: Backoff,
    transmits: VecDeque<Request>,
    events: VecDeque<Event>,
}

impl Session {
    /// A session on a connection that just sent `welcome` at `now`, for our `node`
    /// (whose id is the welcome's); `agent` says whether we are the workspace agent.
    /// The reconnect jitter is drawn from `seed`. Our node is the first transmit.
    pub fn new(node: Node, agent: bool, welcome: Welcome, now: Instant, seed: u64) -> Self {
        let mut s = Self {
            node,
            agent,
            tunnels: BTreeSet::new(),
            peers: BTreeSet::new(),
            state: State::Closed,
            lost_after: welcome.lost_after,
            node_sent: false,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX, seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.start(now);
        s
    }

    /// Our id (it changes if a reconnect assigns a new one).
    pub fn id(&self) -> Uuid {
        self.node.id
    }

    /// Our node as last sent (or to be sent on the next connection).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// Whether our node went out on the current connection.
    pub fn node_sent(&self) -> bool {
        self.node_sent
    }

    /// Whether [`Session::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the driver should connect now.
    pub fn connect_due(&self, now: Instant) -> bool {
        matches!(self.state, State::Reconnecting { at } if now >= at)
    }

    /// Clients: asks for a tunnel to `agent` (again on every later connection).
    pub fn add_tunnel(&mut self, agent: Uuid) {
        if self.tunnels.insert(agent) {
            info!(agent = %agent, "adding tunnel");
        }
        if self.is_connected() {
            self.transmits.push_back(Request::AddTunnel { id: agent });
        }
    }

    /// Clients: drops the tunnel to `agent` (asked for with [`Session::add_tunnel`]): the
    /// coordinator is told (the agent hears DISCONNECTED) and the peer is forgotten here,
    /// since the coordinator sends the remover nothing.
    pub fn remove_tunnel(&mut self, agent: Uuid) {
        if !self.tunnels.remove(&agent) {
            return;
        }
        info!(agent = %agent, "removing tunnel");
        if self.is_connected() {
            self.transmits
                .push_back(Request::RemoveTunnel { id: agent });
        }
        if self.peers.remove(&agent) {
            self.events.push_back(Event::PeerGone(agent));
        }
    }

    /// Our network facts changed: our node goes out again if that changed it.
    pub fn set_net_info(&mut self, ni: NetInfo) {
        let mut node = self.node.clone();
        node.endpoints = ni.endpoints;
        node.preferred_derp = ni.preferred_derp;
        node.derp_latency = ni.derp_latency;
        node.mapping_varies_by_dest_ip = ni.mapping_varies_by_dest_ip;
        if node != self.node {
            self.node = node.clone();
            if self.is_connected() {
                self.transmits.push_back(Request::UpdateSelf { node });
            }
        }
    }

    /// Leaves: `disconnect` goes out if connected, and nothing more happens.
    pub fn close(&mut self) {
        if self.is_connected() {
            self.transmits.push_back(Request::Disconnect);
        }
        self.state = State::Closed;
        self.node_sent = false;
    }

    /// A new connection sent `welcome` at `now`.
    pub fn handle_connected(&mut self, now: Instant, welcome: Welcome) {
        if self.is_closed() {
            return;
        }
        self.lost_after = welcome.lost_after;
        let old = self.node.id;
        if welcome.id != old {
            info!(old = %old, new = %welcome.id, "coordinator assigned a new id; keeping our address");
            self.node.id = welcome.id;
            self.events.push_back(Event::IdChanged(welcome.id));
        }
        info!(id = %welcome.id, "coordination reconnected");
        self.start(now);
    }

    fn start(&mut self, now: Instant) {
        self.backoff.reset();
        self.state = State::Connected { last_heard: now };
        self.transmits.clear();
        self.transmits.push_back(Request::UpdateSelf {
            node: self.node.clone(),
        });
        self.node_sent = true;
        for &id in &self.tunnels {
            self.transmits.push_back(Request::AddTunnel { id });
        }
    }

    /// Connecting failed with `error` at `now`: try again after the backoff.
    pub fn handle_connect_failed(&mut self, now: Instant, error: &str) {
        if self.is_closed() {
            return;
        }
        let delay = self.backoff.next_delay();
        debug!(%error, ?delay, "coordination connect failed; retrying");
        self.state = State::Reconnecting { at: now + delay };
    }

    /// The connection failed or closed at `now`: reconnect at once. What was still to
    /// send is dropped (the next connection re-sends our node and tunnels).
    pub fn handle_lost(&mut self, now: Instant, reason: &str) {
        if !self.is_connected() {
            return;
        }
        warn!(%reason, "coordination connection lost; reconnecting");
        self.state = State::Reconnecting { at: now };
        self.node_sent = false;
        self.transmits.clear();
    }

    /// Something other than text (a ping, a pong) arrived at `now`.
    pub fn handle_heard(&mut self, now: Instant) {
        if let State::Connected { last_heard } = &mut self.state {
            *last_heard = now;
        }
    }

    /// A text message arrived at `now`.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        if !self.is_connected() {
            return;
        }
        self.handle_heard(now);
        match serde_json::from_str::<Response>(text) {
            Ok(resp) => self.handle_response(resp),
            Err(e) => debug!(error = %e, "ignoring a malformed coordination message"),
        }
    }

    fn handle_response(&mut self, resp: Response) {
        match resp {
            Response::PeerUpdates { updates } => {
                let mut ready_for = Vec::new();
                for u in updates {
                    self.handle_update(u, &mut ready_for);
                }
                self.transmits.extend(
                    ready_for
                        .into_iter()
                        .map(|id| Request::ReadyForHandshake { id }),
                );
            }
            Response::DerpMap { derp_map } => {
                debug!(regions = derp_map.regions.len(), "DERP map updated");
                self.events.push_back(Event::DerpMap(derp_map));
            }
            Response::Error { message } => warn!(%message, "the coordinator refused a request"),
            Response::Welcome { .. } => debug!("ignoring a second welcome"),
            Response::SessionEnded { reason } => self.handle_session_ended(&reason),
        }
    }

    /// Our session ended (the coordinator said so, or refused to reconnect with 401):
    /// every peer is forgotten, and the session closes for good without `disconnect`.
    pub fn handle_session_ended(&mut self, reason: &str) {
        if self.is_closed() {
            return;
        }
        warn!(%reason, "the server ended this session");
        self.state = State::Closed;
        self.node_sent = false;
        self.transmits.clear();
        self.peers.clear();
        self.events
            .push_back(Event::SessionEnded(reason.to_owned()));
    }

    fn handle_update(&mut self, u: PeerUpdate, ready_for: &mut Vec<Uuid>) {
        match u.kind {
            PeerUpdateKind::Node => {
                let Some(node) = u.node else { return };
                let new = self.peers.insert(node.id);
                if self.agent && new {
                    ready_for.push(node.id);
                }
                self.events.push_back(Event::Peer(peer_config(&node)));
            }
            PeerUpdateKind::ReadyForHandshake => {
                debug!(peer = %u.id, "peer ready for handshake");
                self.events.push_back(Event::Handshake(u.id));
            }
            PeerUpdateKind::Disconnected if u.revoked => {
                info!(peer = %u.id, reason = %u.reason, "peer's access revoked");
                self.peers.remove(&u.id);
                self.events.push_back(Event::PeerRevoked(u.id));
            }
            PeerUpdateKind::Disconnected | PeerUpdateKind::Lost => {
                info!(peer = %u.id, kind = ?u.kind, reason = %u.reason, "peer left");
                self.peers.remove(&u.id);
                self.events.push_back(Event::PeerGone(u.id));
            }
        }
    }

    /// Time passed: a connection silent for too long is lost.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Connected { last_heard } = self.state {
            let silence = self.silence();
            if now >= last_heard + silence {
                self.handle_lost(now, &format!("nothing heard for {silence:?}"));
            }
        }
    }

    fn silence(&self) -> Duration {
        self.lost_after + SILENCE_MARGIN
    }

    /// When [`Session::handle_timeout`] (or a reconnect) is due; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Connected { last_heard } => Some(last_heard + self.silence()),
            State::Reconnecting { at } => Some(at),
            State::Closed => None,
        }
    }

    /// The next request to send on the current connection.
    pub fn poll_transmit(&mut self) -> Option<Request> {
        self.transmits.pop_front()
    }

    /// The next thing the node must do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// A peer's node as the core takes it: tailnet addresses and endpoints that parse, and
/// no disco key when it is all zeros.
pub fn peer_config(node: &Node) -> PeerConfig {
    PeerConfig {
        id: node.id,
        key: node.key,
        home_region: node.preferred_derp,
        addresses: node
            .addresses
            .iter()
            .filter_map(|a| a.strip_suffix("/128").unwrap_or(a).parse::<Ipv6Addr>().ok())
            .collect(),
        disco: (*node.disco.as_bytes() != [0u8; 32]).then_some(node.disco),
        endpoints: node
            .endpoints
            .iter()
            .filter_map(|e| e.parse::<SocketAddr>().ok())
            .collect(),
        mapping_varies_by_dest_ip: node.mapping_varies_by_dest_ip,
    }
}

#[cfg(test)]
mod tests;
