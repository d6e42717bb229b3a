//! The DERP wire format, sans I/O: frame types, the frame codec, the login JSON and
//! the NaCl boxes that carry it.
//!
//! A frame is `type (1) ‖ length (4, big-endian) ‖ payload`. [`Frame::encode`] writes
//! one; [`FrameDecoder`] turns a byte stream into frames and refuses any declared
//! length above its limit, after which the stream is unusable and must be closed.
//!
//! `kind` holds what frames there are ([`FrameType`], [`Frame`]), `encode` and `decode`
//! the two directions of the codec, `login` the sealed ClientInfo/ServerInfo exchange.

use std::time::Duration;

use tether_key::KEY_LEN;

mod decode;
mod encode;
mod kind;
mod login;

pub use decode::{FrameDecoder, FrameError};
pub use kind::{
    Frame, FrameType, PEER_PRESENT_IS_MESH_PEER, PEER_PRESENT_IS_PROBER, PEER_PRESENT_IS_REGULAR,
    PEER_PRESENT_NOT_IDEAL, PeerGoneReason,
};
pub use login::{
    BoxError, ClientInfo, ServerInfo, open, open_client_info, open_server_info, seal,
    seal_client_info, seal_server_info,
};

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

/// True if `packet` looks like a disco message (magic prefix, room for key and nonce).
pub fn is_disco(packet: &[u8]) -> bool {
    packet.len() >= DISCO_MAGIC.len() + KEY_LEN + NONCE_LEN && packet.starts_with(&DISCO_MAGIC)
}

#[cfg(test)]
mod tests;
