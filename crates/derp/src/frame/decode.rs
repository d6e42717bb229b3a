//! Bytes to frames: [`Frame::decode`] for one payload and [`FrameDecoder`] for a
//! stream, both refusing lengths their type or limit does not allow.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};
use tether_key::{KEY_LEN, NodePublic};

use super::{
    Frame, FrameType, HEADER_LEN, MAGIC, MAX_FRAME_SIZE, MAX_PACKET_SIZE, MAX_PING_LEN, PING_LEN,
    PeerGoneReason,
};

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
