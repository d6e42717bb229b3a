//! TCP segments as recovery reads and rewrites them: which connection a packet belongs
//! to, and the few fields rewritten in place (checksums updated incrementally).

use std::net::Ipv6Addr;

use bytes::BytesMut;
use smoltcp::wire::{IpProtocol, Ipv6Packet, TcpPacket, TcpSeqNumber};

/// A TCP connection, seen from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FlowKey {
    pub(super) local_port: u16,
    pub(super) remote: Ipv6Addr,
    pub(super) remote_port: u16,
}

impl FlowKey {
    /// The connection a packet we send (`outbound`) or receive belongs to.
    pub(super) fn of(ip: &Ipv6Packet<&[u8]>, tcp: &TcpPacket<&[u8]>, outbound: bool) -> Self {
        if outbound {
            Self {
                local_port: tcp.src_port(),
                remote: ip.dst_addr(),
                remote_port: tcp.dst_port(),
            }
        } else {
            Self {
                local_port: tcp.dst_port(),
                remote: ip.src_addr(),
                remote_port: tcp.src_port(),
            }
        }
    }
}

/// A TCP segment inside an IPv6 packet, both borrowed.
pub(super) type Segment<'a> = (Ipv6Packet<&'a [u8]>, TcpPacket<&'a [u8]>);

pub(super) fn parse(packet: &[u8]) -> Option<Segment<'_>> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((Ipv6Packet::new_unchecked(packet), tcp))
}

/// Whether an IPv6 packet is a TCP segment with SYN set, from its fixed offsets (smoltcp
/// sends no extension headers).
pub(super) fn looks_like_syn(packet: &[u8]) -> bool {
    const TCP_FLAGS: usize = 40 + 13;
    packet.len() > TCP_FLAGS
        && packet[6] == u8::from(IpProtocol::Tcp)
        && packet[TCP_FLAGS] & 0x02 != 0
}

/// The FIN of a kept segment that carries data and a FIN, as a segment of its own: the
/// same headers, no payload, the sequence number after the data, the checksum redone.
pub(super) fn bare_fin_of(packet: &[u8]) -> Option<BytesMut> {
    let (ip, tcp) = parse(packet)?;
    if !tcp.fin() {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let header = tcp.header_len();
    let fin_seq = tcp.seq_number() + tcp.payload().len();
    let mut p = BytesMut::from(&packet[..packet.len() - tcp.payload().len()]);
    let mut ip = Ipv6Packet::new_unchecked(&mut p[..]);
    ip.set_payload_len(u16::from(header));
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.set_seq_number(fin_seq);
    tcp.fill_checksum(&src.into(), &dst.into());
    Some(p)
}

/// Rewrites the ACK number (if given) and window of a TCP packet and updates its
/// checksum for just those fields (RFC 1624), so that no pass over the payload is needed:
/// this runs for nearly every ACK a sender receives.
pub(super) fn rewrite(packet: &mut [u8], ack: Option<u32>, window: u16) {
    let Ok(mut ip) = Ipv6Packet::new_checked(packet) else {
        return;
    };
    let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) else {
        return;
    };
    // One's complement sum of the checksum's complement, the old words' complements and
    // the new words.
    let mut sum = u32::from(!tcp.checksum());
    let mut change = |old: u16, new: u16| sum += u32::from(!old) + u32::from(new);
    if let Some(ack) = ack {
        let old = tcp.ack_number().0 as u32;
        change((old >> 16) as u16, (ack >> 16) as u16);
        change(old as u16, ack as u16);
        tcp.set_ack_number(TcpSeqNumber(ack as i32));
    }
    change(tcp.window_len(), window);
    tcp.set_window_len(window);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    tcp.set_checksum(!(sum as u16));
}
