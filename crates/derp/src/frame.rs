//! The DERP wire format, sans I/O: frame types, the frame codec, the login JSON and
//! the NaCl boxes that carry it.
//!
//! A frame is `type (1) ‖ length (4, big-endian) ‖ payload`. [`Frame::encode`] writes
//! one; [`FrameDecoder`] turns a byte stream into frames and refuses any declared
//! length above its limit, after which the stream is unusable and must be closed.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use crypto_box::SalsaBox;
use crypto_box::aead::{Aead, AeadCore, OsRng};
use serde::{Deserialize, Serialize};
use tether_key::{KEY_LEN, NodePrivate, NodePublic};

/// `"DERP🔑"`: the first 8 bytes of every ServerKey frame.
pub const MAGIC: [u8; 8] = [0x44, 0x45, 0x52, 0x50, 0xF0, 0x9F, 0x94, 0x91];
/// The DERP protocol version we speak (and announce in ServerInfo/ClientInfo).
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest relayed packet payload.
pub const MAX_PACKET_SIZE: usize = 64 << 10;
/// Largest frame payload either side accepts; larger declared lengths kill the stream.
pub const MAX_FRAME_SIZE: usize = 1 << 20;
/// Largest login JSON (ClientInfo/ServerInfo) we will open.
pub const MAX_INFO_LEN: usize = 1 << 20;
/// A ClientInfo payload shorter than this (key + nonce) is rejected.
pub const MIN_CLIENT_INFO_LEN: usize = KEY_LEN + NONCE_LEN;
/// A ClientInfo payload longer than this is rejected.
pub const MAX_CLIENT_INFO_LEN: usize = 256 << 10;
/// At most this much of a ServerKey payload is meaningful (future bytes are ignored).
pub const MAX_SERVER_KEY_LEN: usize = 1 << 10;
/// Length of a NaCl box nonce.
pub const NONCE_LEN: usize = 24;
/// Length of a frame header (type + length).
pub const HEADER_LEN: usize = 5;
/// Length of a Ping/Pong payload.
pub const PING_LEN: usize = 8;
/// Longest Ping payload a server accepts (only the first 8 bytes are echoed).
pub const MAX_PING_LEN: usize = 1000;
/// How often a server sends KeepAlive (plus up to [`KEEPALIVE_JITTER`]).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Random extra delay added to each keepalive interval.
pub const KEEPALIVE_JITTER: Duration = Duration::from_secs(5);
/// A client treats a connection this long without any frame as dead.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for each of the first two login steps.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// `"TS💬"`: disco packets start with this, which the server uses to queue them apart.
pub const DISCO_MAGIC: [u8; 6] = [0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC];

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
    /// The client's key and its sealed [`ClientInfo`] (`nonce ‖ box`).
    ClientInfo {
        /// Client public key.
        key: NodePublic,
        /// `nonce(24) ‖ ciphertext`.
        sealed: Bytes,
    },
    /// The sealed [`ServerInfo`] (`nonce ‖ box`).
    ServerInfo {
        /// `nonce(24) ‖ ciphertext`.
        sealed: Bytes,
    },
    /// A packet for `dst`.
    SendPacket {
        /// Destination key.
        dst: NodePublic,
        /// Packet bytes (≤ [`MAX_PACKET_SIZE`]).
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

/// A frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The declared payload length is above the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The payload is too short for its type.
    #[error("{ty:?} frame too short: {got} bytes, need {need}")]
    Truncated {
        /// Frame type.
        ty: FrameType,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// The payload is longer than its type allows.
    #[error("{ty:?} frame too long: {got} bytes, at most {max}")]
    TooLong {
        /// Frame type.
        ty: FrameType,
        /// Bytes present.
        got: usize,
        /// Limit.
        max: usize,
    },
    /// ServerKey did not start with the DERP magic.
    #[error("server key frame lacks the DERP magic")]
    BadMagic,
}

fn need(ty: FrameType, p: &Bytes, n: usize) -> Result<(), FrameError> {
    if p.len() < n {
        return Err(FrameError::Truncated {
            ty,
            need: n,
            got: p.len(),
        });
    }
    Ok(())
}

fn take_key(p: &mut Bytes) -> NodePublic {
    let mut k = [0u8; KEY_LEN];
    p.copy_to_slice(&mut k);
    NodePublic::from_bytes(k)
}

fn at_most(ty: FrameType, p: &Bytes, max: usize) -> Result<(), FrameError> {
    if p.len() > max {
        return Err(FrameError::TooLong {
            ty,
            got: p.len(),
            max,
        });
    }
    Ok(())
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

    /// Payload length in bytes (without the 5-byte header).
    pub fn payload_len(&self) -> usize {
        match self {
            Self::ServerKey { .. } => MAGIC.len() + KEY_LEN,
            Self::ClientInfo { sealed, .. } => KEY_LEN + sealed.len(),
            Self::ServerInfo { sealed } => sealed.len(),
            Self::SendPacket { packet, .. } | Self::RecvPacket { packet, .. } => {
                KEY_LEN + packet.len()
            }
            Self::KeepAlive | Self::WatchConns => 0,
            Self::NotePreferred { .. } => 1,
            Self::PeerGone { .. } => KEY_LEN + 1,
            Self::PeerPresent { addr, flags, .. } => {
                KEY_LEN
                    + if addr.is_some() || flags.is_some() {
                        18
                    } else {
                        0
                    }
                    + usize::from(flags.is_some())
            }
            Self::ForwardPacket { packet, .. } => 2 * KEY_LEN + packet.len(),
            Self::ClosePeer { .. } => KEY_LEN,
            Self::Ping { .. } | Self::Pong { .. } => PING_LEN,
            Self::Health { problem } => problem.len(),
            Self::Restarting { .. } => 8,
            Self::Unknown { payload, .. } => payload.len(),
        }
    }

    /// Total encoded length (header + payload).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Appends a SendPacket frame for a borrowed packet to `dst`: the same bytes as
    /// `Frame::SendPacket { .. }.encode`, without first copying the packet into `Bytes`.
    pub fn encode_send_packet(dst: &mut BytesMut, to: NodePublic, packet: &[u8]) {
        let len = KEY_LEN + packet.len();
        dst.reserve(HEADER_LEN + len);
        dst.put_u8(FrameType::SendPacket as u8);
        dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        dst.put_slice(to.as_bytes());
        dst.put_slice(packet);
    }

    /// Appends the encoded frame (header and payload) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let len = self.payload_len();
        dst.reserve(HEADER_LEN + len);
        dst.put_u8(self.type_byte());
        // Frames are bounded far below 4 GiB by construction; saturate rather than wrap.
        dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        match self {
            Self::ServerKey { key } => {
                dst.put_slice(&MAGIC);
                dst.put_slice(key.as_bytes());
            }
            Self::ClientInfo { key, sealed } => {
                dst.put_slice(key.as_bytes());
                dst.put_slice(sealed);
            }
            Self::ServerInfo { sealed } => dst.put_slice(sealed),
            Self::SendPacket { dst: k, packet } | Self::RecvPacket { src: k, packet } => {
                dst.put_slice(k.as_bytes());
                dst.put_slice(packet);
            }
            Self::KeepAlive | Self::WatchConns => {}
            Self::NotePreferred { preferred } => dst.put_u8(u8::from(*preferred)),
            Self::PeerGone { key, reason } => {
                dst.put_slice(key.as_bytes());
                dst.put_u8(reason.to_u8());
            }
            Self::PeerPresent { key, addr, flags } => {
                dst.put_slice(key.as_bytes());
                if addr.is_some() || flags.is_some() {
                    let a = addr.unwrap_or(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
                    let ip16 = match a.ip() {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                        IpAddr::V6(v6) => v6,
                    };
                    dst.put_slice(&ip16.octets());
                    dst.put_u16(a.port());
                }
                if let Some(f) = flags {
                    dst.put_u8(*f);
                }
            }
            Self::ForwardPacket {
                src,
                dst: d,
                packet,
            } => {
                dst.put_slice(src.as_bytes());
                dst.put_slice(d.as_bytes());
                dst.put_slice(packet);
            }
            Self::ClosePeer { key } => dst.put_slice(key.as_bytes()),
            Self::Ping { data } | Self::Pong { data } => dst.put_slice(data),
            Self::Health { problem } => dst.put_slice(problem.as_bytes()),
            Self::Restarting {
                reconnect_in_ms,
                try_for_ms,
            } => {
                dst.put_u32(*reconnect_in_ms);
                dst.put_u32(*try_for_ms);
            }
            Self::Unknown { payload, .. } => dst.put_slice(payload),
        }
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes one payload of wire type `ty`. Unknown types become [`Frame::Unknown`];
    /// trailing bytes beyond a fixed-size body are ignored, as Go's implementation does.
    pub fn decode(ty: u8, payload: Bytes) -> Result<Frame, FrameError> {
        let Some(t) = FrameType::from_u8(ty) else {
            return Ok(Frame::Unknown { ty, payload });
        };
        let mut p = payload;
        Ok(match t {
            FrameType::ServerKey => {
                need(t, &p, MAGIC.len() + KEY_LEN)?;
                if p[..MAGIC.len()] != MAGIC {
                    return Err(FrameError::BadMagic);
                }
                p.advance(MAGIC.len());
                Frame::ServerKey {
                    key: take_key(&mut p),
                }
            }
            FrameType::ClientInfo => {
                need(t, &p, KEY_LEN)?;
                let key = take_key(&mut p);
                Frame::ClientInfo { key, sealed: p }
            }
            FrameType::ServerInfo => Frame::ServerInfo { sealed: p },
            FrameType::SendPacket | FrameType::RecvPacket => {
                need(t, &p, KEY_LEN)?;
                let key = take_key(&mut p);
                at_most(t, &p, MAX_PACKET_SIZE)?;
                if t == FrameType::SendPacket {
                    Frame::SendPacket {
                        dst: key,
                        packet: p,
                    }
                } else {
                    Frame::RecvPacket {
                        src: key,
                        packet: p,
                    }
                }
            }
            FrameType::KeepAlive => Frame::KeepAlive,
            FrameType::NotePreferred => {
                need(t, &p, 1)?;
                Frame::NotePreferred {
                    preferred: p[0] != 0,
                }
            }
            FrameType::PeerGone => {
                need(t, &p, KEY_LEN)?;
                let key = take_key(&mut p);
                let reason = p.first().map_or(PeerGoneReason::Disconnected, |b| {
                    PeerGoneReason::from_u8(*b)
                });
                Frame::PeerGone { key, reason }
            }
            FrameType::PeerPresent => {
                need(t, &p, KEY_LEN)?;
                let key = take_key(&mut p);
                let mut addr = None;
                let mut flags = None;
                if p.len() >= 18 {
                    let mut ip = [0u8; 16];
                    p.copy_to_slice(&mut ip);
                    let port = p.get_u16();
                    let v6 = Ipv6Addr::from(ip);
                    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
                    addr = Some(SocketAddr::new(ip, port));
                    if let Some(f) = p.first() {
                        flags = Some(*f);
                    }
                }
                Frame::PeerPresent { key, addr, flags }
            }
            FrameType::ForwardPacket => {
                need(t, &p, 2 * KEY_LEN)?;
                let src = take_key(&mut p);
                let dst = take_key(&mut p);
                at_most(t, &p, MAX_PACKET_SIZE)?;
                Frame::ForwardPacket {
                    src,
                    dst,
                    packet: p,
                }
            }
            FrameType::WatchConns => Frame::WatchConns,
            FrameType::ClosePeer => {
                need(t, &p, KEY_LEN)?;
                Frame::ClosePeer {
                    key: take_key(&mut p),
                }
            }
            FrameType::Ping | FrameType::Pong => {
                need(t, &p, PING_LEN)?;
                at_most(t, &p, MAX_PING_LEN)?;
                let mut data = [0u8; PING_LEN];
                p.copy_to_slice(&mut data);
                if t == FrameType::Ping {
                    Frame::Ping { data }
                } else {
                    Frame::Pong { data }
                }
            }
            FrameType::Health => Frame::Health {
                problem: String::from_utf8_lossy(&p).into_owned(),
            },
            FrameType::Restarting => {
                need(t, &p, 8)?;
                Frame::Restarting {
                    reconnect_in_ms: p.get_u32(),
                    try_for_ms: p.get_u32(),
                }
            }
        })
    }
}

/// True if `packet` looks like a disco message (magic prefix, room for key and nonce).
pub fn is_disco(packet: &[u8]) -> bool {
    packet.len() >= DISCO_MAGIC.len() + KEY_LEN + NONCE_LEN && packet.starts_with(&DISCO_MAGIC)
}

/// Incremental frame decoder: feed bytes, take frames.
///
/// After [`FrameDecoder::next_frame`] returns an error the stream is desynchronised;
/// the caller must close the connection.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with the protocol limit, [`MAX_FRAME_SIZE`].
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_SIZE)
    }

    /// A decoder that rejects payloads longer than `max`.
    pub fn with_max_frame_len(max: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(16 << 10),
            max_frame_len: max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The internal buffer, to read into directly (e.g. with `read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The header of the next frame, if all 5 bytes are buffered: `(type, length)`.
    /// Checks the length limit, so an oversize frame is refused before its payload arrives.
    pub fn peek_header(&self) -> Result<Option<(u8, usize)>, FrameError> {
        let Some(h) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let ty = h[0];
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        Ok(Some((ty, len)))
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((ty, len)) = self.peek_header()? else {
            return Ok(None);
        };
        if self.buf.len() < HEADER_LEN + len {
            // Make room for the whole frame at once instead of growing in small steps.
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Frame::decode(ty, payload).map(Some)
    }
}

/// A NaCl box could not be sealed or opened, or its JSON was bad.
#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    /// The sealed bytes were shorter than a nonce plus tag.
    #[error("sealed box too short ({0} bytes)")]
    TooShort(usize),
    /// Authentication failed: wrong key or tampered data.
    #[error("box did not open (wrong key or corrupted)")]
    Open,
    /// Encryption failed (should not happen).
    #[error("box could not be sealed")]
    Seal,
    /// The opened JSON was too long.
    #[error("info JSON of {0} bytes is too long")]
    TooLong(usize),
    /// The opened JSON did not parse.
    #[error("bad info JSON: {0}")]
    Json(#[from] serde_json::Error),
}

const TAG_LEN: usize = 16;

/// Seals `plaintext` from `sender` to `recipient`: returns `nonce(24) ‖ ciphertext`.
pub fn seal(
    sender: &NodePrivate,
    recipient: &NodePublic,
    plaintext: &[u8],
) -> Result<Bytes, BoxError> {
    let b = SalsaBox::new(&recipient.to_box_key(), sender.secret());
    let nonce = SalsaBox::generate_nonce(&mut OsRng);
    let ct = b.encrypt(&nonce, plaintext).map_err(|_| BoxError::Seal)?;
    let mut out = BytesMut::with_capacity(NONCE_LEN + ct.len());
    out.put_slice(&nonce);
    out.put_slice(&ct);
    Ok(out.freeze())
}

/// Opens `nonce ‖ ciphertext` sent by `sender` to `recipient`.
pub fn open(
    recipient: &NodePrivate,
    sender: &NodePublic,
    sealed: &[u8],
) -> Result<Vec<u8>, BoxError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(BoxError::TooShort(sealed.len()));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let b = SalsaBox::new(&sender.to_box_key(), recipient.secret());
    b.decrypt(crypto_box::Nonce::from_slice(nonce), ct)
        .map_err(|_| BoxError::Open)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The client's login JSON (sealed inside the ClientInfo frame).
///
/// Accepts Go's spellings (`CanAckPings`; Go decodes case-insensitively) and ts_derp's
/// snake_case (`can_ack_pings`, `mesh_key`); unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientInfo {
    /// Mesh key as 64 hex digits; empty (or ts_derp's `"none"`) means not a mesh peer.
    #[serde(
        rename = "meshKey",
        alias = "MeshKey",
        alias = "meshkey",
        alias = "mesh_key",
        skip_serializing_if = "String::is_empty"
    )]
    pub mesh_key: String,
    /// Protocol version.
    #[serde(rename = "version", alias = "Version")]
    pub version: u32,
    /// The client answers server pings.
    #[serde(
        rename = "CanAckPings",
        alias = "canAckPings",
        alias = "canackpings",
        alias = "can_ack_pings"
    )]
    pub can_ack_pings: bool,
    /// The client is a prober.
    #[serde(
        rename = "IsProber",
        alias = "isProber",
        alias = "isprober",
        alias = "is_prober",
        skip_serializing_if = "is_false"
    )]
    pub is_prober: bool,
    /// Application name, for logs.
    #[serde(
        rename = "AppName",
        alias = "appName",
        alias = "appname",
        alias = "app_name",
        skip_serializing_if = "String::is_empty"
    )]
    pub app_name: String,
}

impl ClientInfo {
    /// The mesh key, if the client sent a real one (64 hex digits).
    pub fn mesh_key_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.mesh_key, &mut out).ok()?;
        Some(out)
    }
}

/// The server's login JSON (sealed inside the ServerInfo frame). Always has `"version"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Protocol version (always serialised; ts_derp requires `"version":2`).
    #[serde(rename = "version", alias = "Version", default)]
    pub version: u32,
    /// Client-side rate limit: bytes per second.
    #[serde(
        rename = "TokenBucketBytesPerSecond",
        alias = "tokenBucketBytesPerSecond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token_bucket_bytes_per_second: Option<u64>,
    /// Client-side rate limit: burst bytes.
    #[serde(
        rename = "TokenBucketBytesBurst",
        alias = "tokenBucketBytesBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token_bucket_bytes_burst: Option<u64>,
}

impl Default for ServerInfo {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            token_bucket_bytes_per_second: None,
            token_bucket_bytes_burst: None,
        }
    }
}

fn open_json<T: serde::de::DeserializeOwned>(
    recipient: &NodePrivate,
    sender: &NodePublic,
    sealed: &[u8],
) -> Result<T, BoxError> {
    if sealed.len() > NONCE_LEN + TAG_LEN + MAX_INFO_LEN {
        return Err(BoxError::TooLong(sealed.len()));
    }
    let json = open(recipient, sender, sealed)?;
    Ok(serde_json::from_slice(&json)?)
}

/// Builds the ClientInfo frame: `info` sealed with the client's private key to the server.
pub fn seal_client_info(
    client: &NodePrivate,
    server: &NodePublic,
    info: &ClientInfo,
) -> Result<Frame, BoxError> {
    let json = serde_json::to_vec(info)?;
    Ok(Frame::ClientInfo {
        key: client.public(),
        sealed: seal(client, server, &json)?,
    })
}

/// Opens a ClientInfo's sealed part with the server's private key.
pub fn open_client_info(
    server: &NodePrivate,
    client: &NodePublic,
    sealed: &[u8],
) -> Result<ClientInfo, BoxError> {
    open_json(server, client, sealed)
}

/// Builds the ServerInfo frame: `info` sealed with the server's private key to the client.
pub fn seal_server_info(
    server: &NodePrivate,
    client: &NodePublic,
    info: &ServerInfo,
) -> Result<Frame, BoxError> {
    let json = serde_json::to_vec(info)?;
    Ok(Frame::ServerInfo {
        sealed: seal(server, client, &json)?,
    })
}

/// Opens a ServerInfo's sealed part with the client's private key.
pub fn open_server_info(
    client: &NodePrivate,
    server: &NodePublic,
    sealed: &[u8],
) -> Result<ServerInfo, BoxError> {
    open_json(client, server, sealed)
}

#[cfg(test)]
mod tests;
