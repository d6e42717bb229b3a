//! Receive-window updates that smoltcp holds back.
//!
//! smoltcp, like Linux, sends a pure window update only once its receive window has
//! doubled since it last advertised it. A sender that filled the window then sits idle
//! until that happens, although the application may long have drained most of the
//! buffer. In the NAT lab the sender of a download waited so, about 0.5 ms at a time,
//! for a quarter of its time, while the receiving process idled. Here a window update
//! goes out as soon as the window has grown by [`GROWTH_DIVISOR`]th of the buffer.
//!
//! Sans-IO: our outbound segments in (what we last told each peer), update packets out.

use std::net::Ipv6Addr;

use bytes::BytesMut;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpProtocol, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::segment::FlowKey;
use crate::core::{PacketMap, packet_map};

/// An update goes out once the window has grown by 1/`GROWTH_DIVISOR` of the buffer.
const GROWTH_DIVISOR: u64 = 8;
/// Connections tracked at once. A full table is emptied: the entries left are mostly of
/// connections gone without a FIN or reset, and live ones are noted again by their
/// next segment.
const MAX_TRACKED: usize = 4096;

/// What we last told the peer of one connection.
#[derive(Debug, Clone, Copy)]
struct Told {
    /// The end of what we have sent (the sequence number of our next byte).
    seq_end: u32,
    /// The acknowledgement number.
    ack: u32,
    /// The advertised window field (scaled), beyond `ack`.
    window: u16,
}

/// Per-connection record of our last advertisement, and the updates it calls for.
#[derive(Debug)]
pub(super) struct WindowUpdates {
    told: PacketMap<FlowKey, Told>,
}

impl WindowUpdates {
    /// No connection known yet; `seed` seeds the map's hasher.
    pub(super) fn new(seed: u64) -> Self {
        Self {
            told: packet_map(seed),
        }
    }

    /// Notes one of our outbound segments (the window as sent: its scale is applied
    /// only when an update is due, off the per-packet path).
    pub(super) fn on_outbound(&mut self, key: FlowKey, tcp: &TcpPacket<&[u8]>) {
        if tcp.rst() || tcp.fin() || tcp.syn() {
            // Closing, or opening with windows not yet scaled: smoltcp's rules serve.
            self.told.remove(&key);
            return;
        }
        if !tcp.ack() {
            return;
        }
        let seq_end = (tcp.seq_number() + tcp.payload().len()).0 as u32;
        let ack = tcp.ack_number().0 as u32;
        let window = tcp.window_len();
        if self.told.len() >= MAX_TRACKED && !self.told.contains_key(&key) {
            self.told.clear();
        }
        let told = self.told.entry(key).or_insert(Told {
            seq_end,
            ack,
            window,
        });
        // A resent segment does not move our sequence back.
        if seq_end.wrapping_sub(told.seq_end) as i32 > 0 {
            told.seq_end = seq_end;
        }
        told.ack = ack;
        told.window = window;
    }

    /// Forgets a connection (reset by the peer, or gone).
    pub(super) fn forget(&mut self, key: &FlowKey) {
        self.told.remove(key);
    }

    /// A pure ACK advertising `free` bytes of a `capacity`-byte receive buffer (our
    /// windows scaled by `shift`), if the window has grown enough since we last
    /// advertised one. It acknowledges no more
    /// than we already did, so it never claims data smoltcp has not taken in; data that
    /// arrived since only makes the advertised right edge conservative.
    pub(super) fn update(
        &mut self,
        key: FlowKey,
        local: Ipv6Addr,
        free: usize,
        capacity: usize,
        shift: u8,
    ) -> Option<BytesMut> {
        let told = self.told.get_mut(&key)?;
        let raw = u16::try_from(free >> shift).unwrap_or(u16::MAX);
        let growth = (capacity as u64 / GROWTH_DIVISOR) >> shift;
        if u64::from(raw) < u64::from(told.window) + growth {
            return None;
        }
        told.window = raw;
        let tcp = TcpRepr {
            src_port: key.local_port,
            dst_port: key.remote_port,
            control: TcpControl::None,
            seq_number: TcpSeqNumber(told.seq_end as i32),
            ack_number: Some(TcpSeqNumber(told.ack as i32)),
            window_len: raw,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv6Repr {
            src_addr: local,
            dst_addr: key.remote,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.header_len(),
            hop_limit: 64,
        };
        let len = ip.buffer_len() + tcp.header_len();
        // Room for WireGuard's padding, as for smoltcp's own packets.
        let mut buf = BytesMut::with_capacity(len.next_multiple_of(16));
        buf.resize(len, 0);
        let mut packet = Ipv6Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut packet);
        tcp.emit(
            &mut TcpPacket::new_unchecked(packet.payload_mut()),
            &local.into(),
            &key.remote.into(),
            &ChecksumCapabilities::default(),
        );
        Some(buf)
    }
}
