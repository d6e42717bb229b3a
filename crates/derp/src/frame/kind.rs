//! What frames there are: the one-byte [`FrameType`], the decoded [`Frame`], and the
//! small enums and flags inside them.

use std::net::SocketAddr;

use bytes::Bytes;
use tether_key::NodePublic;

use super::PING_LEN;

/// The one-byte frame type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// S→C: magic + server public key.
    ServerKey = 0x01,
    /// C→S: client key + sealed ClientInfo JSON.
    ClientInfo = 0x02,
    /// S→C: sealed ServerInfo JSON.
    ServerInfo = 0x03,
    /// C→S: destination key + packet.
    SendPacket = 0x04,
    /// S→C: source key + packet.
    RecvPacket = 0x05,
    /// S→C: no payload; keeps middleboxes from timing out.
    KeepAlive = 0x06,
    /// C→S: whether this is the client's home region.
    NotePreferred = 0x07,
    /// S→C: a peer left (or was never here).
    PeerGone = 0x08,
    /// S→mesh: a peer is connected.
    PeerPresent = 0x09,
    /// mesh→S: a packet relayed from another mesh node.
    ForwardPacket = 0x0A,
    /// mesh→S: subscribe to PeerPresent/PeerGone.
    WatchConns = 0x10,
    /// mesh→S: close a client's connection.
    ClosePeer = 0x11,
    /// Both: 8 bytes to echo.
    Ping = 0x12,
    /// Both: the echoed 8 bytes.
    Pong = 0x13,
    /// S→C: problem text, empty when healthy.
    Health = 0x14,
    /// S→C: the server is restarting; reconnect timing.
    Restarting = 0x15,
}

impl FrameType {
    /// Every known type, in wire order.
    pub const ALL: [FrameType; 16] = [
        Self::ServerKey,
        Self::ClientInfo,
        Self::ServerInfo,
        Self::SendPacket,
        Self::RecvPacket,
        Self::KeepAlive,
        Self::NotePreferred,
        Self::PeerGone,
        Self::PeerPresent,
        Self::ForwardPacket,
        Self::WatchConns,
        Self::ClosePeer,
        Self::Ping,
        Self::Pong,
        Self::Health,
        Self::Restarting,
    ];

    /// The known type for a wire byte, if any.
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u8 == b)
    }
}

/// Why a PeerGone frame was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerGoneReason {
    /// The peer was connected and left (also what old servers without a reason byte mean).
    Disconnected,
    /// A packet was sent to a peer that is not connected here.
    NotHere,
    /// A reason this version does not know.
    Other(u8),
}

impl PeerGoneReason {
    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Disconnected => 0,
            Self::NotHere => 1,
            Self::Other(b) => b,
        }
    }

    /// From the wire byte.
    pub fn from_u8(b: u8) -> Self {
        match b {
            0 => Self::Disconnected,
            1 => Self::NotHere,
            b => Self::Other(b),
        }
    }
}

/// PeerPresent flag: an ordinary client.
pub const PEER_PRESENT_IS_REGULAR: u8 = 1;
/// PeerPresent flag: a mesh peer.
pub const PEER_PRESENT_IS_MESH_PEER: u8 = 2;
/// PeerPresent flag: a prober.
pub const PEER_PRESENT_IS_PROBER: u8 = 4;
/// PeerPresent flag: the client is not on its ideal node.
pub const PEER_PRESENT_NOT_IDEAL: u8 = 8;

/// One decoded DERP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The server's public key (the magic is checked when decoding).
    ServerKey {
        /// Server public key.
        key: NodePublic,
    },
    /// The client's key and its sealed [`ClientInfo`](super::ClientInfo) (`nonce ‖ box`).
    ClientInfo {
        /// Client public key.
        key: NodePublic,
        /// `nonce(24) ‖ ciphertext`.
        sealed: Bytes,
    },
    /// The sealed [`ServerInfo`](super::ServerInfo) (`nonce ‖ box`).
    ServerInfo {
        /// `nonce(24) ‖ ciphertext`.
        sealed: Bytes,
    },
    /// A packet for `dst`.
    SendPacket {
        /// Destination key.
        dst: NodePublic,
        /// Packet bytes (≤ [`MAX_PACKET_SIZE`](super::MAX_PACKET_SIZE)).
        packet: Bytes,
    },
    /// A packet from `src`.
    RecvPacket {
        /// Source key.
        src: NodePublic,
        /// Packet bytes.
        packet: Bytes,
    },
    /// Keepalive, no payload.
    KeepAlive,
    /// Whether this server is the client's home.
    NotePreferred {
        /// True when this is the client's preferred (home) region.
        preferred: bool,
    },
    /// A peer is gone.
    PeerGone {
        /// The peer.
        key: NodePublic,
        /// Why.
        reason: PeerGoneReason,
    },
    /// A peer is present (mesh watchers only).
    PeerPresent {
        /// The peer.
        key: NodePublic,
        /// Its remote address, if the sender included one.
        addr: Option<SocketAddr>,
        /// `PEER_PRESENT_*` flags, if included (only encoded when `addr` is set).
        flags: Option<u8>,
    },
    /// A packet forwarded from another mesh node.
    ForwardPacket {
        /// Original sender.
        src: NodePublic,
        /// Destination.
        dst: NodePublic,
        /// Packet bytes.
        packet: Bytes,
    },
    /// Subscribe to peer presence (mesh only).
    WatchConns,
    /// Close a peer's connection (mesh only).
    ClosePeer {
        /// The peer to close.
        key: NodePublic,
    },
    /// Ping with 8 bytes to echo.
    Ping {
        /// Opaque data.
        data: [u8; PING_LEN],
    },
    /// Answer to a Ping.
    Pong {
        /// The echoed data.
        data: [u8; PING_LEN],
    },
    /// Server health; empty text means healthy.
    Health {
        /// Problem description.
        problem: String,
    },
    /// The server is restarting.
    Restarting {
        /// Reconnect after this many milliseconds.
        reconnect_in_ms: u32,
        /// Keep trying for this many milliseconds.
        try_for_ms: u32,
    },
    /// A type this version does not know; skipped by both sides.
    Unknown {
        /// Wire type byte.
        ty: u8,
        /// Raw payload.
        payload: Bytes,
    },
}

impl Frame {
    /// The wire type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            Self::Unknown { ty, .. } => *ty,
            other => other.frame_type().map_or(0, |t| t as u8),
        }
    }

    /// The known frame type (`None` for [`Frame::Unknown`]).
    pub fn frame_type(&self) -> Option<FrameType> {
        Some(match self {
            Self::ServerKey { .. } => FrameType::ServerKey,
            Self::ClientInfo { .. } => FrameType::ClientInfo,
            Self::ServerInfo { .. } => FrameType::ServerInfo,
            Self::SendPacket { .. } => FrameType::SendPacket,
            Self::RecvPacket { .. } => FrameType::RecvPacket,
            Self::KeepAlive => FrameType::KeepAlive,
            Self::NotePreferred { .. } => FrameType::NotePreferred,
            Self::PeerGone { .. } => FrameType::PeerGone,
            Self::PeerPresent { .. } => FrameType::PeerPresent,
            Self::ForwardPacket { .. } => FrameType::ForwardPacket,
            Self::WatchConns => FrameType::WatchConns,
            Self::ClosePeer { .. } => FrameType::ClosePeer,
            Self::Ping { .. } => FrameType::Ping,
            Self::Pong { .. } => FrameType::Pong,
            Self::Health { .. } => FrameType::Health,
            Self::Restarting { .. } => FrameType::Restarting,
            Self::Unknown { .. } => return None,
        })
    }
}
