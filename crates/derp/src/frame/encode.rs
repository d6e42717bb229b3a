//! Frames to bytes: [`Frame::encode`] and the borrowed fast path for SendPacket.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use tether_key::{KEY_LEN, NodePublic};

use super::{Frame, FrameType, HEADER_LEN, MAGIC, PING_LEN};

impl Frame {
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
}
