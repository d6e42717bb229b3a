//! The coordinator: who is connected, who may talk to whom, and which peer updates
//! go where.
//!
//! A sans-IO state machine. The driver owns the sockets and the clock: it calls
//! [`Coordinator::connect`], [`Coordinator::handle_request`], [`Coordinator::heard_from`],
//! [`Coordinator::disconnected`], [`Coordinator::revoke`] and [`Coordinator::handle_timeout`] with the current
//! [`Instant`], then drains [`Coordinator::poll_output`] and routes each [`Output`] to
//! its socket. Nothing here blocks, spawns or reads the clock.
//!
//! Model:
//! - a *peer* is an agent (id = agent id) or a client (id = the client connection's
//!   id); each live peer has exactly one live connection;
//! - a *tunnel* is a (client, agent) pair, added by the client. Tunnels are keyed by
//!   peer id, so they survive an agent reconnecting; they end when the client leaves,
//!   the client removes them, or the agent's workspace is deleted;
//! - the server's own node ([`Role::Server`]) is a client that may add a tunnel to any
//!   existing agent; the driver gives that role only to the node it runs itself, never
//!   to a connection authenticated by a user's token;
//! - a peer only ever hears about peers it shares a tunnel with.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use tether_key::NodePublic;
use tether_proto::coord::{self as proto, Node, PeerUpdate};
use tether_proto::derpmap::DerpMap;
use tracing::{debug, info};
use uuid::Uuid;

/// Identifies one socket; assigned by the driver, unique for the driver's lifetime.
pub type ConnId = u64;

/// Who is on the other end of a connection, as established by the driver's auth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A workspace agent, authenticated by its agent token.
    Agent {
        /// The agent's id.
        id: Uuid,
    },
    /// A user's client (the CLI), authenticated by a session token.
    Client {
        /// The id assigned to this client connection.
        id: Uuid,
        /// The user the session belongs to.
        user: Uuid,
    },
    /// The server's own tailnet node, which relays browsers' terminals and requests: a
    /// client allowed to tunnel to every agent. Only the server process connects as it.
    Server {
        /// The id assigned to the node's connection.
        id: Uuid,
    },
}

impl Role {
    /// The peer id this role connects as.
    pub fn id(&self) -> Uuid {
        match self {
            Role::Agent { id } | Role::Client { id, .. } | Role::Server { id } => *id,
        }
    }
}

/// Timing knobs, announced to every peer in [`proto::Response::Welcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How often the driver pings each socket.
    pub heartbeat: Duration,
    /// Silence after which a connection is closed and its peers told it is LOST.
    pub lost_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            lost_after: Duration::from_secs(15),
        }
    }
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `msg` on connection `conn`.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: proto::Response,
    },
    /// Close connection `conn`; the coordinator has already forgotten it, so the
    /// driver's later [`Coordinator::disconnected`] call for it is a no-op.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for the close frame and the logs.
        reason: String,
    },
}

/// Why [`Coordinator::connect`] refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// No workspace has this agent id (never created, or deleted).
    #[error("unknown workspace agent {0}")]
    UnknownAgent(Uuid),
    /// The driver reused a connection id that is still live.
    #[error("connection id {0} is already in use")]
    ConnInUse(ConnId),
    /// The peer id is taken by a peer of another kind or another user.
    #[error("peer id {0} is already in use by another peer")]
    IdInUse(Uuid),
}

/// A connected agent, for the server's health and workspace views.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStatus {
    /// The agent's current connection.
    pub conn: ConnId,
    /// The agent's last node, if it has sent one.
    pub node: Option<Node>,
    /// When the current connection was accepted.
    pub connected_at: Instant,
    /// When the current connection was last heard from.
    pub last_heard: Instant,
}

impl AgentStatus {
    /// The agent's home DERP region, if its node names one.
    pub fn preferred_derp(&self) -> Option<u32> {
        self.node
            .as_ref()
            .map(|n| n.preferred_derp)
            .filter(|r| *r != 0)
    }
}

/// Counts for metrics and the health page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connected agents.
    pub agents: usize,
    /// Connected clients (users' nodes).
    pub clients: usize,
    /// Connected server nodes.
    pub servers: usize,
    /// Tunnels (client, agent pairs), whether or not the agent is connected.
    pub tunnels: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Agent,
    Client { user: Uuid },
    Server,
}

impl Kind {
    /// Whether this peer adds tunnels (a user's client or the server's node).
    fn is_client(self) -> bool {
        matches!(self, Kind::Client { .. } | Kind::Server)
    }

    /// Whether this peer may have a tunnel to an agent owned by `owner`.
    fn may_reach(self, owner: Option<Uuid>) -> bool {
        match self {
            Kind::Client { user } => owner == Some(user),
            Kind::Server => owner.is_some(),
            Kind::Agent => false,
        }
    }
}

#[derive(Debug)]
struct Peer {
    kind: Kind,
    conn: ConnId,
    node: Option<Node>,
    connected_at: Instant,
    last_heard: Instant,
}

/// The coordinator state machine. See the module docs.
#[derive(Debug)]
pub struct Coordinator {
    config: Config,
    derp_map: DerpMap,
    /// Agent id → owning user, for every existing workspace agent.
    owners: BTreeMap<Uuid, Uuid>,
    /// Live peers by id. BTree maps keep output order deterministic.
    peers: BTreeMap<Uuid, Peer>,
    /// Live connections → peer id.
    conns: BTreeMap<ConnId, Uuid>,
    /// (last_heard + lost_after, conn) for every live connection.
    deadlines: BTreeSet<(Instant, ConnId)>,
    /// Client → agents it has tunnels to.
    client_tunnels: BTreeMap<Uuid, BTreeSet<Uuid>>,
    /// Agent → clients with tunnels to it (the mirror of `client_tunnels`).
    agent_tunnels: BTreeMap<Uuid, BTreeSet<Uuid>>,
    /// Node key of every live peer that sent a node → that peer.
    keys: BTreeMap<NodePublic, Uuid>,
    /// The tailnet address of every known agent, which no client may claim.
    agent_addresses: BTreeSet<Ipv6Addr>,
    /// Keys that stopped being known since the last drain.
    forgotten: BTreeSet<NodePublic>,
    outputs: VecDeque<Output>,
}

const REASON_REPLACED: &str = "replaced by a newer connection";
const REASON_DISCONNECTED: &str = "disconnected";
const REASON_CONNECTION_LOST: &str = "connection lost";
const REASON_TUNNEL_REMOVED: &str = "tunnel removed";
const REASON_WORKSPACE_DELETED: &str = "workspace deleted";
const REASON_ACCESS_REVOKED: &str = "access revoked";

/// The refusal for an agent that does not exist *or* belongs to someone else: one text
/// for both, so a client cannot probe for other users' agents.
fn no_such_agent(id: Uuid) -> String {
    format!("no workspace agent {id} that you may connect to")
}

/// Whole seconds, rounded up so a sub-second setting never reads as 0.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Coordinator {
    /// A coordinator with no peers and no workspaces.
    pub fn new(config: Config, derp_map: DerpMap) -> Self {
        Self {
            config,
            derp_map,
            owners: BTreeMap::new(),
            peers: BTreeMap::new(),
            conns: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            client_tunnels: BTreeMap::new(),
            agent_tunnels: BTreeMap::new(),
            keys: BTreeMap::new(),
            agent_addresses: BTreeSet::new(),
            forgotten: BTreeSet::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The configuration this coordinator runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Records that workspace agent `agent` exists and belongs to `owner`.
    ///
    /// If the owner changes, tunnels from other users' clients are torn down
    /// (both sides get DISCONNECTED, reason "access revoked").
    pub fn set_agent_owner(&mut self, agent: Uuid, owner: Uuid) {
        let previous = self.owners.insert(agent, owner);
        self.agent_addresses.insert(proto::tailnet_ip(agent));
        if previous.is_none_or(|p| p == owner) {
            return;
        }
        info!(%agent, %owner, "workspace agent changed owner");
        let clients: Vec<Uuid> = self
            .agent_tunnels
            .get(&agent)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        for client in clients {
            let allowed = self
                .peers
                .get(&client)
                .is_some_and(|p| p.kind.may_reach(Some(owner)));
            if !allowed {
                self.remove_tunnel_entry(client, agent);
                self.send_updates(
                    client,
                    vec![PeerUpdate::disconnected(agent, REASON_ACCESS_REVOKED)],
                );
                self.send_updates(
                    agent,
                    vec![PeerUpdate::disconnected(client, REASON_ACCESS_REVOKED)],
                );
            }
        }
    }

    /// The workspace of `agent` was deleted: its connection is closed, its clients get
    /// DISCONNECTED ("workspace deleted"), its tunnels and owner are forgotten.
    pub fn remove_agent(&mut self, agent: Uuid, now: Instant) {
        self.owners.remove(&agent);
        self.agent_addresses.remove(&proto::tailnet_ip(agent));
        if self.peers.get(&agent).map(|p| p.kind) == Some(Kind::Agent)
            && let Some(peer) = self.detach_peer(agent)
        {
            info!(
                %agent,
                conn = peer.conn,
                connected_for = ?now.saturating_duration_since(peer.connected_at),
                "workspace deleted, closing its agent connection"
            );
            self.outputs.push_back(Output::Close {
                conn: peer.conn,
                reason: REASON_WORKSPACE_DELETED.to_owned(),
            });
        }
        let clients = self.agent_tunnels.remove(&agent).unwrap_or_default();
        for client in clients {
            if let Some(agents) = self.client_tunnels.get_mut(&client) {
                agents.remove(&agent);
                if agents.is_empty() {
                    self.client_tunnels.remove(&client);
                }
            }
            self.send_updates(
                client,
                vec![PeerUpdate::disconnected(agent, REASON_WORKSPACE_DELETED)],
            );
        }
    }

    /// Accepts a new connection for `role`: sends Welcome, the DERP map, and the nodes of
    /// the peers it already has tunnels with.
    ///
    /// A second connection for the same peer replaces the first, which gets
    /// [`Output::Close`]; its tunnels and last node carry over.
    pub fn connect(&mut self, conn: ConnId, role: Role, now: Instant) -> Result<(), CoordError> {
        if self.conns.contains_key(&conn) {
            return Err(CoordError::ConnInUse(conn));
        }
        let id = role.id();
        let kind = match role {
            Role::Agent { id } => {
                if !self.owners.contains_key(&id) {
                    debug!(agent = %id, "refusing connection of unknown agent");
                    return Err(CoordError::UnknownAgent(id));
                }
                Kind::Agent
            }
            Role::Client { id, user } => {
                // A client id equal to an agent id would make tunnels ambiguous.
                if self.owners.contains_key(&id) {
                    return Err(CoordError::IdInUse(id));
                }
                Kind::Client { user }
            }
            Role::Server { id } => {
                if self.owners.contains_key(&id) {
                    return Err(CoordError::IdInUse(id));
                }
                Kind::Server
            }
        };

        if let Some(existing) = self.peers.get_mut(&id) {
            if existing.kind != kind {
                return Err(CoordError::IdInUse(id));
            }
            let old = existing.conn;
            let old_deadline = existing.last_heard.checked_add(self.config.lost_after);
            existing.conn = conn;
            existing.connected_at = now;
            existing.last_heard = now;
            if let Some(d) = old_deadline {
                self.deadlines.remove(&(d, old));
            }
            self.conns.remove(&old);
            info!(peer = %id, old_conn = old, conn, "peer reconnected, replacing old connection");
            self.outputs.push_back(Output::Close {
                conn: old,
                reason: REASON_REPLACED.to_owned(),
            });
        } else {
            self.peers.insert(
                id,
                Peer {
                    kind,
                    conn,
                    node: None,
                    connected_at: now,
                    last_heard: now,
                },
            );
            info!(peer = %id, conn, role = ?role, "peer connected");
        }
        self.conns.insert(conn, id);
        if let Some(d) = now.checked_add(self.config.lost_after) {
            self.deadlines.insert((d, conn));
        }

        self.send(
            conn,
            proto::Response::Welcome {
                version: proto::VERSION.to_owned(),
                id,
                heartbeat_secs: ceil_secs(self.config.heartbeat),
                lost_after_secs: ceil_secs(self.config.lost_after),
            },
        );
        self.send(
            conn,
            proto::Response::DerpMap {
                derp_map: self.derp_map.clone(),
            },
        );
        let updates: Vec<PeerUpdate> = self
            .tunnel_peers(id)
            .into_iter()
            .filter_map(|p| self.peers.get(&p)?.node.clone())
            .map(PeerUpdate::node)
            .collect();
        self.send_updates(id, updates);
        Ok(())
    }

    /// Handles one request from connection `conn` (which also counts as hearing from it).
    /// Requests on unknown or already closed connections are ignored.
    pub fn handle_request(&mut self, conn: ConnId, req: proto::Request, now: Instant) {
        let Some(&id) = self.conns.get(&conn) else {
            debug!(conn, "ignoring request on unknown or closed connection");
            return;
        };
        self.heard_from(conn, now);
        match req {
            proto::Request::UpdateSelf { node } => self.update_self(conn, id, node),
            proto::Request::AddTunnel { id: agent } => self.add_tunnel(conn, id, agent),
            proto::Request::RemoveTunnel { id: agent } => self.remove_tunnel(conn, id, agent),
            proto::Request::ReadyForHandshake { id: to } => self.ready_for_handshake(conn, id, to),
            proto::Request::Disconnect => {
                info!(peer = %id, conn, "peer disconnected");
                self.drop_peer(
                    id,
                    PeerUpdate::disconnected(id, REASON_DISCONNECTED),
                    Some(REASON_DISCONNECTED),
                );
            }
        }
    }

    /// Records that something (any frame, including a WebSocket pong) arrived on `conn`.
    pub fn heard_from(&mut self, conn: ConnId, now: Instant) {
        let Some(id) = self.conns.get(&conn) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if now <= peer.last_heard {
            return;
        }
        if let Some(d) = peer.last_heard.checked_add(self.config.lost_after) {
            self.deadlines.remove(&(d, conn));
        }
        peer.last_heard = now;
        if let Some(d) = now.checked_add(self.config.lost_after) {
            self.deadlines.insert((d, conn));
        }
    }

    /// The transport of `conn` is gone. Unless the peer said Disconnect first (or the
    /// coordinator closed it), its peers get LOST.
    pub fn disconnected(&mut self, conn: ConnId, now: Instant) {
        let Some(&id) = self.conns.get(&conn) else {
            return;
        };
        if let Some(peer) = self.peers.get(&id) {
            info!(
                peer = %id,
                conn,
                connected_for = ?now.saturating_duration_since(peer.connected_at),
                "peer connection lost"
            );
        }
        self.drop_peer(id, PeerUpdate::lost(id, REASON_CONNECTION_LOST), None);
    }

    /// Closes every connection silent for `lost_after` as of `now`; their peers get LOST.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, conn)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let Some(&id) = self.conns.get(&conn) else {
                // Cannot happen while the indexes agree; drop the stray entry.
                self.deadlines.remove(&(deadline, conn));
                continue;
            };
            let reason = format!("no heartbeat for {}", fmt_duration(self.config.lost_after));
            info!(peer = %id, conn, "peer lost: {reason}");
            self.drop_peer(id, PeerUpdate::lost(id, reason.clone()), Some(&reason));
        }
    }

    /// The earliest instant at which [`Coordinator::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// The next thing the driver must do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Replaces the DERP map; if it differs from the current one, it is pushed to every
    /// live connection.
    pub fn set_derp_map(&mut self, map: DerpMap) {
        if map == self.derp_map {
            return;
        }
        info!(
            regions = map.regions.len(),
            "DERP map changed, pushing to peers"
        );
        self.derp_map = map;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.send(
                conn,
                proto::Response::DerpMap {
                    derp_map: self.derp_map.clone(),
                },
            );
        }
    }

    /// The current DERP map.
    pub fn derp_map(&self) -> &DerpMap {
        &self.derp_map
    }

    /// Whether `key` is the node key of a live peer (DERP admission).
    pub fn is_known_key(&self, key: &NodePublic) -> bool {
        self.keys.contains_key(key)
    }

    /// Keys that stopped being known since the last call; the driver closes their DERP
    /// connections. A key that became known again in between is not included.
    pub fn drain_forgotten_keys(&mut self) -> Vec<NodePublic> {
        std::mem::take(&mut self.forgotten).into_iter().collect()
    }

    /// The status of a connected agent; `None` when it is not connected.
    pub fn agent_status(&self, agent: Uuid) -> Option<AgentStatus> {
        let peer = self.peers.get(&agent)?;
        if peer.kind != Kind::Agent {
            return None;
        }
        Some(AgentStatus {
            conn: peer.conn,
            node: peer.node.clone(),
            connected_at: peer.connected_at,
            last_heard: peer.last_heard,
        })
    }

    /// Counts of live agents, live clients and tunnels.
    pub fn stats(&self) -> Stats {
        let agents = self
            .peers
            .values()
            .filter(|p| p.kind == Kind::Agent)
            .count();
        let servers = self
            .peers
            .values()
            .filter(|p| p.kind == Kind::Server)
            .count();
        Stats {
            agents,
            clients: self.peers.len() - agents - servers,
            servers,
            tunnels: self.client_tunnels.values().map(BTreeSet::len).sum(),
        }
    }

    /// Whether `conn` is a live connection (connected and not yet closed).
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The peer id of a live connection.
    pub fn peer_of(&self, conn: ConnId) -> Option<Uuid> {
        self.conns.get(&conn).copied()
    }

    /// Whether a tunnel joins peers `a` and `b` (in either order).
    pub fn has_tunnel(&self, a: Uuid, b: Uuid) -> bool {
        let has = |client: Uuid, agent: Uuid| {
            self.client_tunnels
                .get(&client)
                .is_some_and(|agents| agents.contains(&agent))
        };
        has(a, b) || has(b, a)
    }

    /// The limits of [`crate::limits`]; an agent may claim only its own address, a
    /// client no agent's.
    fn check_claims(&self, id: Uuid, node: &Node) -> Result<(), crate::limits::Refusal> {
        let agent = self.peers.get(&id).is_some_and(|p| p.kind == Kind::Agent);
        let own = agent.then(|| proto::tailnet_ip(id));
        match crate::limits::check_node(node, own)? {
            Some(ip) if !agent && self.agent_addresses.contains(&ip) => {
                Err(crate::limits::Refusal::AgentAddress(ip))
            }
            _ => Ok(()),
        }
    }

    fn update_self(&mut self, conn: ConnId, id: Uuid, node: Node) {
        if node.id != id {
            debug!(peer = %id, node_id = %node.id, "refusing node with another peer's id");
            self.send_error(
                conn,
                format!(
                    "node id {} does not match this connection's id {id}",
                    node.id
                ),
            );
            return;
        }
        if let Err(refusal) = self.check_claims(id, &node) {
            debug!(peer = %id, %refusal, "refusing node");
            self.send_error(conn, refusal.to_string());
            return;
        }
        if self.keys.get(&node.key).is_some_and(|owner| *owner != id) {
            debug!(peer = %id, key = %node.key.short(), "refusing node with a key in use");
            self.send_error(
                conn,
                format!(
                    "node key {} is already used by another peer",
                    node.key.short()
                ),
            );
            return;
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.node.as_ref() == Some(&node) {
            return;
        }
        let old_key = peer.node.as_ref().map(|n| n.key);
        peer.node = Some(node.clone());
        if old_key != Some(node.key) {
            if let Some(old) = old_key {
                self.keys.remove(&old);
                self.forgotten.insert(old);
            }
            self.keys.insert(node.key, id);
            self.forgotten.remove(&node.key);
        }
        debug!(peer = %id, preferred_derp = node.preferred_derp, endpoints = node.endpoints.len(), "node updated");
        for other in self.tunnel_peers(id) {
            self.send_updates(other, vec![PeerUpdate::node(node.clone())]);
        }
    }

    /// Removes a live peer: forgets its connection and key, optionally closes the
    /// connection, tells its tunnel peers `update`, and ends a client's tunnels.
    fn drop_peer(&mut self, id: Uuid, update: PeerUpdate, close: Option<&str>) {
        let Some(peer) = self.detach_peer(id) else {
            return;
        };
        if let Some(reason) = close {
            self.outputs.push_back(Output::Close {
                conn: peer.conn,
                reason: reason.to_owned(),
            });
        }
        for other in self.tunnel_peers(id) {
            self.send_updates(other, vec![update.clone()]);
        }
        // A client's id lives only as long as its connection; an agent's tunnels wait
        // for it to come back.
        if peer.kind.is_client() {
            for agent in self.client_tunnels.remove(&id).unwrap_or_default() {
                if let Some(clients) = self.agent_tunnels.get_mut(&agent) {
                    clients.remove(&id);
                    if clients.is_empty() {
                        self.agent_tunnels.remove(&agent);
                    }
                }
            }
        }
    }

    /// Removes a peer from the live indexes without telling anyone.
    fn detach_peer(&mut self, id: Uuid) -> Option<Peer> {
        let peer = self.peers.remove(&id)?;
        self.conns.remove(&peer.conn);
        if let Some(d) = peer.last_heard.checked_add(self.config.lost_after) {
            self.deadlines.remove(&(d, peer.conn));
        }
        if let Some(node) = &peer.node {
            self.keys.remove(&node.key);
            self.forgotten.insert(node.key);
        }
        Some(peer)
    }

    /// Queues `updates` for peer `to` if it is connected; no-op for an empty batch.
    fn send_updates(&mut self, to: Uuid, updates: Vec<PeerUpdate>) {
        if updates.is_empty() {
            return;
        }
        if let Some(conn) = self.peers.get(&to).map(|p| p.conn) {
            for chunk in updates.chunks(crate::limits::MAX_UPDATES_PER_MESSAGE) {
                let updates = chunk.to_vec();
                self.send(conn, proto::Response::PeerUpdates { updates });
            }
        }
    }

    fn send_error(&mut self, conn: ConnId, message: String) {
        self.send(conn, proto::Response::Error { message });
    }

    fn send(&mut self, conn: ConnId, msg: proto::Response) {
        self.outputs.push_back(Output::Send { conn, msg });
    }

    #[cfg(test)]
    fn assert_invariants(&self) {
        assert_eq!(self.conns.len(), self.peers.len());
        assert_eq!(self.deadlines.len(), self.conns.len());
        for (id, peer) in &self.peers {
            assert_eq!(self.conns.get(&peer.conn), Some(id));
            let d = peer
                .last_heard
                .checked_add(self.config.lost_after)
                .expect("deadline");
            assert!(self.deadlines.contains(&(d, peer.conn)));
            if let Some(node) = &peer.node {
                assert_eq!(node.id, *id);
                assert_eq!(self.keys.get(&node.key), Some(id));
            }
            if peer.kind == Kind::Agent {
                assert!(self.owners.contains_key(id), "live agent without owner");
            }
        }
        assert_eq!(
            self.keys.len(),
            self.peers.values().filter(|p| p.node.is_some()).count()
        );
        for (client, agents) in &self.client_tunnels {
            assert!(!agents.is_empty());
            let Some(kind) = self.peers.get(client).map(|p| p.kind) else {
                panic!("tunnel from a client that is not connected");
            };
            for agent in agents {
                assert!(
                    kind.may_reach(self.owners.get(agent).copied()),
                    "tunnel not authorised"
                );
                assert!(
                    self.agent_tunnels
                        .get(agent)
                        .is_some_and(|c| c.contains(client))
                );
            }
        }
        let mirrored: usize = self.agent_tunnels.values().map(BTreeSet::len).sum();
        assert_eq!(mirrored, self.stats().tunnels);
    }
}

mod revoke;
mod tunnels;

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod tests;
