//! Disco: Tailscale's path-discovery messages, sans-IO.
//!
//! A disco packet is `magic (6) ‖ sender disco public key (32) ‖ nonce (24) ‖ NaCl box`.
//! The box (XSalsa20-Poly1305, [`crypto_box::SalsaBox`]) is keyed from my disco private
//! key and the peer's disco public key; [`PeerBox`] holds that precomputed key for one
//! peer. Inside is `type (1) ‖ version (1) = 0 ‖ body`, see [`Message`].
//!
//! [`classify`] sorts datagrams arriving on the shared UDP socket into STUN, disco and
//! WireGuard, in that order, as magicsock does. Nothing here does I/O; every parser takes
//! untrusted bytes and returns an error instead of panicking.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crypto_box::SalsaBox;
use crypto_box::aead::{Aead, AeadCore, OsRng};
use rand::{CryptoRng, RngCore};
use tether_key::{DiscoPrivate, DiscoPublic, KEY_LEN, NodePublic};

/// The 6-byte magic that opens every disco packet: `"TS💬"`.
pub const MAGIC: [u8; 6] = [0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC];
/// Length of the NaCl box nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the cleartext header: magic, sender key, nonce.
pub const HEADER_LEN: usize = MAGIC.len() + KEY_LEN + NONCE_LEN;
/// Bytes the box adds to the plaintext (the Poly1305 tag).
pub const BOX_OVERHEAD: usize = 16;
/// Shortest datagram [`looks_like_disco`] accepts: magic and sender key.
pub const MIN_LOOKS_LIKE_LEN: usize = MAGIC.len() + KEY_LEN;
/// Length of a transaction id.
pub const TX_ID_LEN: usize = 12;
/// Length of one endpoint on the wire: IPv6 (or IPv4-mapped) address and port.
pub const ENDPOINT_LEN: usize = 18;
/// Length of a Ping body without padding: TxID and sender node key.
pub const PING_BODY_LEN: usize = TX_ID_LEN + KEY_LEN;
/// Length of a Pong body: TxID and the observed source endpoint.
pub const PONG_BODY_LEN: usize = TX_ID_LEN + ENDPOINT_LEN;
/// Size of a whole unpadded Ping packet (Tailscale's minimum ping size).
pub const MIN_PING_PACKET_LEN: usize = HEADER_LEN + BOX_OVERHEAD + 2 + PING_BODY_LEN;
/// The only message version defined.
pub const VERSION: u8 = 0;

/// Message type byte of [`Message::Ping`].
pub const TYPE_PING: u8 = 0x01;
/// Message type byte of [`Message::Pong`].
pub const TYPE_PONG: u8 = 0x02;
/// Message type byte of [`Message::CallMeMaybe`].
pub const TYPE_CALL_ME_MAYBE: u8 = 0x03;

/// STUN magic cookie at bytes 4..8 of every RFC 5389 message.
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// STUN header length.
const STUN_HEADER_LEN: usize = 20;

/// A disco transaction id: random per ping, echoed by the pong.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub [u8; TX_ID_LEN]);

impl TxId {
    /// A fresh random id from the OS RNG.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut b = [0u8; TX_ID_LEN];
        OsRng.fill_bytes(&mut b);
        Self(b)
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// What went wrong parsing or opening a disco packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoError {
    /// The packet does not start with the disco magic or is shorter than a header.
    #[error("not a disco packet")]
    NotDisco,
    /// The sender key in the packet is not the peer this box belongs to.
    #[error("disco packet from an unexpected sender {0:?}")]
    WrongSender(DiscoPublic),
    /// The box did not open: wrong key, or the packet was altered.
    #[error("disco box failed to open")]
    Decrypt,
    /// The plaintext has fewer than the two type/version bytes.
    #[error("disco plaintext too short")]
    Empty,
    /// The message type byte is not one we know.
    #[error("unknown disco message type {0:#04x}")]
    UnknownType(u8),
    /// The body is shorter than its message type needs.
    #[error("disco message type {0:#04x} truncated")]
    Truncated(u8),
}

/// A path probe: "answer me on the path this came in on".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// Random id the pong echoes.
    pub tx_id: TxId,
    /// The sender's node (WireGuard) key.
    pub node_key: NodePublic,
    /// Zero bytes appended after the body (path-MTU probes); 0 for ordinary pings.
    pub padding: usize,
}

/// The answer to a [`Ping`]; doubles as a STUN answer (where the ping came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The ping's id.
    pub tx_id: TxId,
    /// The source address the ping arrived from, as the answering side saw it.
    pub src: SocketAddr,
}

/// "Here are my endpoints; ping them": sent over DERP only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallMeMaybe {
    /// The sender's candidate endpoints.
    pub endpoints: Vec<SocketAddr>,
}

/// A decoded disco message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 0x01.
    Ping(Ping),
    /// Type 0x02.
    Pong(Pong),
    /// Type 0x03.
    CallMeMaybe(CallMeMaybe),
}

impl Message {
    /// The plaintext: type ‖ version ‖ body.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Ping(p) => {
                let mut v = Vec::with_capacity(2 + PING_BODY_LEN + p.padding);
                v.extend_from_slice(&[TYPE_PING, VERSION]);
                v.extend_from_slice(&p.tx_id.0);
                v.extend_from_slice(p.node_key.as_bytes());
                v.resize(v.len() + p.padding, 0);
                v
            }
            Self::Pong(p) => {
                let mut v = Vec::with_capacity(2 + PONG_BODY_LEN);
                v.extend_from_slice(&[TYPE_PONG, VERSION]);
                v.extend_from_slice(&p.tx_id.0);
                put_endpoint(&mut v, p.src);
                v
            }
            Self::CallMeMaybe(c) => {
                let mut v = Vec::with_capacity(2 + ENDPOINT_LEN * c.endpoints.len());
                v.extend_from_slice(&[TYPE_CALL_ME_MAYBE, VERSION]);
                for ep in &c.endpoints {
                    put_endpoint(&mut v, *ep);
                }
                v
            }
        }
    }

    /// Parses a plaintext. Trailing bytes are ignored (a Ping counts them as padding).
    pub fn decode(plain: &[u8]) -> Result<Self, DiscoError> {
        let [ty, version, body @ ..] = plain else {
            return Err(DiscoError::Empty);
        };
        match *ty {
            TYPE_PING => {
                if body.len() < PING_BODY_LEN {
                    return Err(DiscoError::Truncated(TYPE_PING));
                }
                Ok(Self::Ping(Ping {
                    tx_id: TxId(array(&body[..TX_ID_LEN])),
                    node_key: NodePublic::from_bytes(array(&body[TX_ID_LEN..PING_BODY_LEN])),
                    padding: body.len() - PING_BODY_LEN,
                }))
            }
            TYPE_PONG => {
                if body.len() < PONG_BODY_LEN {
                    return Err(DiscoError::Truncated(TYPE_PONG));
                }
                Ok(Self::Pong(Pong {
                    tx_id: TxId(array(&body[..TX_ID_LEN])),
                    src: get_endpoint(&body[TX_ID_LEN..PONG_BODY_LEN]),
                }))
            }
            TYPE_CALL_ME_MAYBE => {
                if *version != VERSION || !body.len().is_multiple_of(ENDPOINT_LEN) {
                    return Ok(Self::CallMeMaybe(CallMeMaybe::default()));
                }
                Ok(Self::CallMeMaybe(CallMeMaybe {
                    endpoints: body.chunks_exact(ENDPOINT_LEN).map(get_endpoint).collect(),
                }))
            }
            other => Err(DiscoError::UnknownType(other)),
        }
    }
}

/// Copies a slice the caller has already sized into an array.
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(b);
    out
}

/// Writes IP (16, IPv4 as IPv4-mapped) ‖ port (2, BE).
fn put_endpoint(v: &mut Vec<u8>, ep: SocketAddr) {
    let ip = match ep.ip() {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    v.extend_from_slice(&ip.octets());
    v.extend_from_slice(&ep.port().to_be_bytes());
}

/// Reads 18 bytes written by [`put_endpoint`]; IPv4-mapped addresses come back as IPv4.
fn get_endpoint(b: &[u8]) -> SocketAddr {
    let ip = Ipv6Addr::from(array::<16>(&b[..16]));
    let port = u16::from_be_bytes([b[16], b[17]]);
    SocketAddr::new(IpAddr::V6(ip).to_canonical(), port)
}

/// Magic at offset 0 and at least magic + sender key long.
pub fn looks_like_disco(packet: &[u8]) -> bool {
    packet.len() >= MIN_LOOKS_LIKE_LEN && packet.starts_with(&MAGIC)
}

/// The sender's disco key of a packet that [`looks_like_disco`], to find its [`PeerBox`].
/// Packets from keys the coordinator never told us about are to be dropped.
pub fn sender_key(packet: &[u8]) -> Option<DiscoPublic> {
    if !looks_like_disco(packet) {
        return None;
    }
    Some(DiscoPublic::from_bytes(array(
        &packet[MAGIC.len()..MIN_LOOKS_LIKE_LEN],
    )))
}

/// What a datagram on the shared UDP socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A STUN binding message (our netcheck's answers).
    Stun,
    /// A disco packet.
    Disco,
    /// A WireGuard message (type 1–4).
    WireGuard,
    /// None of the above; drop it.
    Unknown,
}

/// Sorts a datagram: STUN first, then disco, then WireGuard (magicsock's order).
pub fn classify(packet: &[u8]) -> PacketKind {
    if packet.len() >= STUN_HEADER_LEN
        && packet[0] & 0xC0 == 0
        && packet[1] == 0x01
        && packet[4..8] == STUN_COOKIE
    {
        PacketKind::Stun
    } else if looks_like_disco(packet) {
        PacketKind::Disco
    } else if packet.len() >= 4 && (1..=4).contains(&packet[0]) && packet[1..4] == [0, 0, 0] {
        PacketKind::WireGuard
    } else {
        PacketKind::Unknown
    }
}

/// The precomputed NaCl box between my disco key and one peer's: seals messages to it
/// and opens messages from it.
pub struct PeerBox {
    me: DiscoPublic,
    peer: DiscoPublic,
    shared: SalsaBox,
}

impl fmt::Debug for PeerBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerBox")
            .field("me", &self.me)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl PeerBox {
    /// Precomputes the shared key (one X25519 + HSalsa20; do it once per peer).
    pub fn new(me: &DiscoPrivate, peer: DiscoPublic) -> Self {
        Self {
            me: me.public(),
            peer,
            shared: SalsaBox::new(&peer.to_box_key(), me.secret()),
        }
    }

    /// The peer's disco key.
    pub fn peer(&self) -> DiscoPublic {
        self.peer
    }

    /// Seals a message to the peer with a fresh random nonce from the OS.
    pub fn seal(&self, msg: &Message) -> Vec<u8> {
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        self.seal_with_nonce(msg, nonce.into())
    }

    /// Seals a message to the peer with a nonce drawn from `rng`, a cryptographic
    /// generator of this node's own (the peer seals with the same key, so two nodes must
    /// never draw from equal generators).
    pub fn seal_with_rng(&self, msg: &Message, rng: &mut (impl RngCore + CryptoRng)) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.seal_with_nonce(msg, nonce)
    }

    /// Seals with the given nonce. Never reuse a nonce; this exists for exact-byte tests.
    pub fn seal_with_nonce(&self, msg: &Message, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let plain = msg.encode();
        let mut out = Vec::with_capacity(HEADER_LEN + BOX_OVERHEAD + plain.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(self.me.as_bytes());
        out.extend_from_slice(&nonce);
        // Encrypting a Vec-sized buffer with XSalsa20-Poly1305 cannot fail; the only
        // error the AEAD reports is a length overflow far beyond any datagram.
        if let Ok(ct) = self
            .shared
            .encrypt(crypto_box::Nonce::from_slice(&nonce), plain.as_slice())
        {
            out.extend_from_slice(&ct);
        }
        out
    }

    /// Opens a packet from the peer and decodes its message.
    pub fn open(&self, packet: &[u8]) -> Result<Message, DiscoError> {
        if packet.len() < HEADER_LEN || !packet.starts_with(&MAGIC) {
            return Err(DiscoError::NotDisco);
        }
        let sender = DiscoPublic::from_bytes(array(&packet[MAGIC.len()..MIN_LOOKS_LIKE_LEN]));
        if sender != self.peer {
            return Err(DiscoError::WrongSender(sender));
        }
        let nonce = &packet[MIN_LOOKS_LIKE_LEN..HEADER_LEN];
        let plain = self
            .shared
            .decrypt(crypto_box::Nonce::from_slice(nonce), &packet[HEADER_LEN..])
            .map_err(|_| DiscoError::Decrypt)?;
        Message::decode(&plain)
    }
}

#[cfg(test)]
mod tests;
