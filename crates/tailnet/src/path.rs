//! Paths to a peer: how a WireGuard datagram reaches it.
//!
//! A peer starts on DERP; [`PathKind::Direct`] is the UDP path once disco finds one
//! (see [`crate::pathsel`]). Everything above this layer asks for "the current path"
//! and never for DERP specifically.

use std::net::SocketAddr;

/// One way to carry a datagram to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Relayed through the DERP server of this region, addressed by the peer's node key.
    Derp {
        /// DERP region id.
        region: u32,
    },
    /// Sent over UDP straight to this address, found and kept alive by disco.
    Direct {
        /// The peer's UDP endpoint.
        addr: SocketAddr,
    },
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Derp { region } => write!(f, "DERP region {region}"),
            Self::Direct { addr } => write!(f, "direct {addr}"),
        }
    }
}

/// What is known about the way to one peer, for `tether ping` and status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path packets to the peer take now.
    pub current: PathKind,
    /// The peer's home DERP region (0 while unknown).
    pub home_region: u32,
    /// Whether a WireGuard session with the peer is up.
    pub handshake_done: bool,
}

/// The answer to a disco ping sent with [`Conn::ping`](crate::Conn::ping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// Round-trip time.
    pub latency: std::time::Duration,
    /// The path the ping went out on: a DERP region or the peer's UDP address.
    pub via: PathKind,
}

/// What we know about one peer, for `tether ping`'s diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The path packets to the peer take now.
    pub current: PathKind,
    /// The peer's home DERP region (0 while unknown).
    pub home_region: u32,
    /// Whether the peer published a disco key (without one no direct path is tried).
    pub has_disco: bool,
    /// The UDP endpoints the peer published through the coordinator.
    pub endpoints: Vec<SocketAddr>,
    /// Every candidate endpoint path selection knows (published, CallMeMaybe, ping
    /// sources).
    pub candidates: Vec<SocketAddr>,
    /// The best UDP address found so far, trusted or not.
    pub best_addr: Option<SocketAddr>,
    /// Time since the latest completed WireGuard handshake, if there was one.
    pub last_handshake: Option<std::time::Duration>,
    /// Whether direct paths to the peer are blocked by policy (server or client).
    pub direct_blocked: bool,
    /// The peer's own verdict on hard NAT, as it published it (`None` while unknown).
    pub mapping_varies_by_dest_ip: Option<bool>,
}

/// Datagrams and bytes on one kind of path, as they went to the UDP socket or the DERP
/// link (WireGuard and disco, encrypted; STUN not included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Datagrams sent.
    pub sent_packets: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Datagrams received.
    pub received_packets: u64,
    /// Bytes received.
    pub received_bytes: u64,
}

/// What this node sent and received since it joined, by kind of path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Over UDP straight to peers.
    pub direct: PathCounts,
    /// Through DERP relays.
    pub derp: PathCounts,
}

impl std::ops::Add for PathCounts {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            sent_packets: self.sent_packets + o.sent_packets,
            sent_bytes: self.sent_bytes + o.sent_bytes,
            received_packets: self.received_packets + o.received_packets,
            received_bytes: self.received_bytes + o.received_bytes,
        }
    }
}

impl std::ops::Add for Traffic {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            direct: self.direct + o.direct,
            derp: self.derp + o.derp,
        }
    }
}
