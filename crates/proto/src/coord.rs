//! The coordination wire protocol: JSON text messages over one WebSocket per peer.
//!
//! Shaped after Coder's tailnet v2 (node, add/remove tunnel, ready-for-handshake,
//! peer updates NODE / DISCONNECTED / LOST / READY_FOR_HANDSHAKE) but carried as JSON
//! rather than protobuf over dRPC. The server speaks first with [`Response::Welcome`].
//! Unknown fields are ignored so that later minor versions can add them, and a message
//! of an unknown type is skipped, so [`PeerUpdate::revoked`] and
//! [`Response::SessionEnded`] are understood by new peers and harmless to old ones.
//!
//! Also here: the protocol version and its check, and how a peer's tailnet address
//! derives from its id ([`tailnet_ip`]), which both ends compute the same way.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};
use tether_key::{DiscoPublic, NodePublic};
use uuid::Uuid;

use crate::derpmap::DerpMap;

/// Protocol major version: a peer with another major is refused at connect.
pub const VERSION_MAJOR: u16 = 1;
/// Protocol minor version: additions only, compatible both ways.
pub const VERSION_MINOR: u16 = 0;
/// The version string sent in the `version` query parameter, e.g. `1.0`.
pub const VERSION: &str = "1.0";

/// Checks a peer's `MAJOR.MINOR` version string against ours.
pub fn check_version(v: &str) -> Result<(), String> {
    let (major, minor) = v
        .split_once('.')
        .ok_or_else(|| format!("coordination version {v:?} is not of the form MAJOR.MINOR"))?;
    let major: u16 = major
        .parse()
        .map_err(|_| format!("coordination version {v:?} has a non-numeric major"))?;
    minor
        .parse::<u16>()
        .map_err(|_| format!("coordination version {v:?} has a non-numeric minor"))?;
    if major != VERSION_MAJOR {
        return Err(format!(
            "coordination version {v} is not supported; this server speaks {VERSION_MAJOR}.x"
        ));
    }
    Ok(())
}

/// The most bytes one message from a peer to the coordinator may have; the coordinator
/// refuses longer ones unread. The largest node within its limits is about 20 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;
/// The most bytes one message from the coordinator may have: the coordinator sends at
/// most 64 peer updates to a message (each node within [`MAX_REQUEST_BYTES`]), and a
/// DERP map.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// The tailnet IPv6 prefix shared with Coder and Tailscale (`fd7a:115c:a1e0::/48`).
pub const TAILNET_PREFIX: [u8; 6] = [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0];

/// A peer's tailnet IPv6 address: the /48 prefix followed by bytes 6..16 of its UUID,
/// the way Coder derives agent addresses.
pub fn tailnet_ip(id: Uuid) -> Ipv6Addr {
    let mut raw = [0u8; 16];
    raw[..6].copy_from_slice(&TAILNET_PREFIX);
    raw[6..].copy_from_slice(&id.as_bytes()[6..]);
    Ipv6Addr::from(raw)
}

/// Everything a peer needs to know to reach a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The peer's id (an agent's id, or a client connection's id).
    pub id: Uuid,
    /// WireGuard / DERP public key.
    pub key: NodePublic,
    /// Disco public key.
    pub disco: DiscoPublic,
    /// Home DERP region ID; 0 while unknown.
    #[serde(default)]
    pub preferred_derp: u32,
    /// Measured latency in seconds per region (`"<id>-v4"` keys, as Coder sends).
    #[serde(default)]
    pub derp_latency: BTreeMap<String, f64>,
    /// The node's own tailnet addresses as CIDR prefixes.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Prefixes routed to this node.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Candidate UDP endpoints (`ip:port`) for direct paths.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The node's own netcheck verdict: its NAT maps each destination to another public
    /// port (hard NAT); `None` while unknown. Lets the other side explain a relayed path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_varies_by_dest_ip: Option<bool>,
}

/// A message from a peer (agent or client) to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// My node changed (or is first known).
    UpdateSelf {
        /// The new node.
        node: Node,
    },
    /// Client only: start a tunnel to the agent with this id.
    AddTunnel {
        /// The agent's id.
        id: Uuid,
    },
    /// Client only: end the tunnel to this agent.
    RemoveTunnel {
        /// The agent's id.
        id: Uuid,
    },
    /// I have the peer's node and can take its WireGuard handshake.
    ReadyForHandshake {
        /// The peer's id.
        id: Uuid,
    },
    /// I am leaving on purpose: peers see DISCONNECTED rather than LOST.
    Disconnect,
}

/// The kind of a [`PeerUpdate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerUpdateKind {
    /// The peer's node (new or changed).
    Node,
    /// The peer left cleanly or the tunnel was removed.
    Disconnected,
    /// The peer vanished without saying goodbye (connection dropped or no heartbeat).
    Lost,
    /// The peer is ready for our WireGuard handshake.
    ReadyForHandshake,
}

/// One change about one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerUpdate {
    /// The peer's id.
    pub id: Uuid,
    /// What happened.
    pub kind: PeerUpdateKind,
    /// The peer's node, for [`PeerUpdateKind::Node`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// Human-readable reason, for DISCONNECTED and LOST.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// DISCONNECTED only: the peer's access was taken away (its session logged out,
    /// expired or revoked, its user suspended or deleted), so whatever it had open must
    /// end now; a peer that merely left or was lost keeps its streams for a reconnect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

impl PeerUpdate {
    /// A NODE update carrying `node` (the update's id is the node's id).
    pub fn node(node: Node) -> Self {
        Self {
            id: node.id,
            kind: PeerUpdateKind::Node,
            node: Some(node),
            reason: String::new(),
            revoked: false,
        }
    }

    /// A DISCONNECTED update about peer `id`.
    pub fn disconnected(id: Uuid, reason: impl Into<String>) -> Self {
        Self {
            id,
            kind: PeerUpdateKind::Disconnected,
            node: None,
            reason: reason.into(),
            revoked: false,
        }
    }

    /// A DISCONNECTED update about peer `id` whose access was taken away: the other
    /// side ends what the peer had open (see [`PeerUpdate::revoked`]).
    pub fn revoked(id: Uuid, reason: impl Into<String>) -> Self {
        Self {
            revoked: true,
            ..Self::disconnected(id, reason)
        }
    }

    /// A LOST update about peer `id`.
    pub fn lost(id: Uuid, reason: impl Into<String>) -> Self {
        Self {
            id,
            kind: PeerUpdateKind::Lost,
            node: None,
            reason: reason.into(),
            revoked: false,
        }
    }

    /// A READY_FOR_HANDSHAKE update: peer `id` is ready for our handshake.
    pub fn ready_for_handshake(id: Uuid) -> Self {
        Self {
            id,
            kind: PeerUpdateKind::ReadyForHandshake,
            node: None,
            reason: String::new(),
            revoked: false,
        }
    }
}

/// A message from the coordinator to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// First message on every connection.
    Welcome {
        /// The server's protocol version (`MAJOR.MINOR`).
        version: String,
        /// This peer's id: the agent's id, or the id assigned to this client connection.
        id: Uuid,
        /// Seconds between the server's heartbeats; a peer silent for
        /// [`Response::Welcome::lost_after_secs`] is reported LOST.
        heartbeat_secs: u64,
        /// Silence after which a peer is LOST.
        lost_after_secs: u64,
    },
    /// Changes about peers this connection has a tunnel with.
    PeerUpdates {
        /// The updates, in order.
        updates: Vec<PeerUpdate>,
    },
    /// The effective DERP map: sent on connect and whenever it changes.
    DerpMap {
        /// The map.
        derp_map: DerpMap,
    },
    /// A request was refused; the connection stays open unless said otherwise.
    Error {
        /// One sentence for the user.
        message: String,
    },
    /// The session this connection was opened with has ended (logged out, expired or
    /// revoked, or its user suspended or deleted); the coordinator closes the
    /// connection next, and connecting again with the same credentials is refused.
    SessionEnded {
        /// Why, for the user ("logged out", "session expired", ...).
        reason: String,
    },
}

#[cfg(test)]
mod tests;
