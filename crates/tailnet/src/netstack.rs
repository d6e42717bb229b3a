//! The userspace IP stack: one smoltcp [`Interface`] over a packet-queue device.
//!
//! Decrypted IP packets go in with [`Netstack::push_inbound`]; packets the stack wants
//! to send come out of [`Netstack::pop_outbound`]. Time is passed in. Listening is per
//! port on the fly: an inbound SYN to a port someone listens on (or to any port, when
//! "accept any" is on) gets a fresh smoltcp listening socket just before smoltcp sees
//! it, so any number of concurrent connections per port are accepted.
//!
//! UDP has an "accept any" too: with it on, a datagram to a port no socket is bound to
//! makes the stack bind one there just before smoltcp sees the datagram, and queues
//! that socket (with its port) for [`Netstack::udp_accept_any`]. Later datagrams to the
//! port land in the same socket until the application releases it.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::RngCore;
use rand::SeedableRng;
use rand::rngs::StdRng;
use smoltcp::iface::{Config, Interface, Route, SocketHandle, SocketSet};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv6Packet, TcpPacket, UdpPacket,
};
use tracing::trace;

use crate::core::{PacketMap, PacketSet, packet_map, packet_set};
use crate::recovery::{Recovery, RecoveryStats};

use tether_proto::coord::TAILNET_PREFIX;

mod accept;
mod device;
mod tcp;
mod udp;

use accept::AcceptQueue;
pub use accept::{AcceptKey, Accepted, UdpAccepted};
use device::QueueDevice;
pub use tcp::{SEND_LOW_WATER, TcpHandle, TcpState};
pub use udp::UdpHandle;

/// The tailnet MTU, as Tailscale uses: fits a WireGuard packet in 1280-byte paths.
pub const MTU: usize = 1280;
/// TCP receive and send buffer per socket: large enough for window scaling to matter.
pub const TCP_BUFFER: usize = 1 << 20;
/// Connections per listening port (or for "accept any") waiting for `accept`.
pub const ACCEPT_BACKLOG: usize = 128;
/// Cap on sockets of all kinds, so a SYN flood cannot exhaust memory.
pub const MAX_SOCKETS: usize = 1024;
/// Cap on UDP sockets bound on the fly by "accept any" (queued or handed out).
pub const MAX_UDP_ACCEPT_ANY: usize = 256;
/// Packets queued in either direction inside the device before new ones are dropped.
const DEVICE_QUEUE: usize = 4096;
/// UDP datagrams buffered per socket in each direction.
const UDP_PACKETS: usize = 256;
/// Idle TCP connections send keepalives this often.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// A TCP peer silent for this long (unacknowledged data) is given up.
const TCP_TIMEOUT: Duration = Duration::from_secs(120);

/// What went wrong with a netstack operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NetstackError {
    /// The port is already listened on or bound.
    #[error("port {0} is already in use")]
    AddrInUse(u16),
    /// Too many sockets are open.
    #[error("too many open sockets (limit {MAX_SOCKETS})")]
    TooManySockets,
    /// No free local port was found for an outgoing connection.
    #[error("no free local port")]
    NoFreePort,
    /// smoltcp refused the connect (bad address or port 0).
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddrV6, String),
    /// The TCP connection was reset (or is gone), so nothing can be written.
    #[error("the TCP connection was reset")]
    Reset,
    /// The TCP connection is closed for writing (we sent our FIN).
    #[error("the TCP connection is closed for writing")]
    WriteClosed,
    /// smoltcp refused a TCP read or write.
    #[error("{0}")]
    Socket(String),
    /// A UDP send or receive failed.
    #[error("{0}")]
    Udp(String),
}

/// Wakes (and forgets) the waiters whose socket is `ready`.
fn wake_ready(
    waiters: &mut PacketMap<SocketHandle, Waker>,
    sockets: &SocketSet<'static>,
    ready: impl Fn(&smoltcp::socket::tcp::Socket<'static>) -> bool,
) {
    waiters.retain(|&h, w| {
        let woken = ready(sockets.get::<smoltcp::socket::tcp::Socket>(h));
        if woken {
            w.wake_by_ref();
        }
        !woken
    });
}

/// The node's IP stack.
pub struct Netstack {
    ip: Ipv6Addr,
    epoch: Instant,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    /// Explicitly listened ports.
    listening: PacketSet<u16>,
    accept_any: bool,
    queues: PacketMap<AcceptKey, AcceptQueue>,
    /// Sockets created for inbound SYNs, not yet handed out, and where they go.
    pending: PacketMap<SocketHandle, AcceptKey>,
    /// Sockets the application dropped; removed once closed.
    orphans: PacketSet<SocketHandle>,
    udp_ports: PacketMap<u16, SocketHandle>,
    udp_accept_any: bool,
    /// UDP sockets bound on the fly by "accept any", queued or handed out.
    udp_any: PacketSet<SocketHandle>,
    /// Those not yet handed out, in arrival order.
    udp_any_ready: VecDeque<UdpAccepted>,
    /// Writers waiting for send room (see [`Netstack::wait_send_room`]).
    writers: PacketMap<SocketHandle, Waker>,
    /// Readers waiting for data (see [`Netstack::wait_recv`]).
    readers: PacketMap<SocketHandle, Waker>,
    udp_any_waker: Option<Waker>,
    rng: StdRng,
    /// Loss recovery beside smoltcp's own (see [`crate::recovery`]).
    recovery: Recovery,
    /// Packets at the front of the transmit queue that recovery has seen.
    tx_seen: usize,
    /// Segments recovery resends, before they join the transmit queue.
    resends: Vec<BytesMut>,
    /// Sockets the application read from since the last poll: their windows may have
    /// grown enough for an update (see [`Netstack::tcp_consumed`]).
    consumed: Vec<SocketHandle>,
}

impl std::fmt::Debug for Netstack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netstack")
            .field("ip", &self.ip)
            .field("sockets", &self.sockets.iter().count())
            .finish_non_exhaustive()
    }
}

/// smoltcp runs on a clock this many times faster than real time. Its TCP timers are
/// constants tuned for slow links: a 1 s minimum retransmission timeout (so a lost
/// segment that three duplicate ACKs cannot repair stalls a 1 ms path for a second; at
/// 1 % loss that happens every few hundred packets), a 60 s maximum and a 10 ms delayed
/// ACK. At 20× they become 50 ms, 3 s and 0.5 ms (both ends are smoltcp, so no peer
/// delays its ACKs by 40 ms as Linux may, the reason for Linux's 200 ms floor);
/// measured round trips scale alike, so the RTO still follows the path's real RTT above
/// that floor. In a simulated 1 ms path with 1 % loss, 16 MiB took 51 s at 1×, 15.5 s
/// at 5×, 9.5 s at 10×, 7.2 s at 20× (333 ms without loss); in the NAT lab with 1 %
/// loss, 7–20 Mbit/s at 1×, 66 at 10×, 96 at 20× (before [`crate::recovery`], which
/// now repairs most holes before a timeout). Durations we hand to smoltcp go through
/// [`smol_duration`].
const CLOCK_SCALE: u32 = 20;

/// The window scale smoltcp announces for a [`TCP_BUFFER`] receive buffer (bits of its
/// size above 16), so peers that are tether too scale their windows by it.
const OWN_WINDOW_SHIFT: u8 = (usize::BITS - TCP_BUFFER.leading_zeros()).saturating_sub(16) as u8;

/// How long a peer's smoltcp may hold back an ACK: its 10 ms delayed ACK on our clock.
const PEER_ACK_DELAY: Duration = Duration::from_micros(10_000 / CLOCK_SCALE as u64);

fn to_smol(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    let d = now.saturating_duration_since(epoch) * CLOCK_SCALE;
    smoltcp::time::Instant::from_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn from_smol(epoch: Instant, t: smoltcp::time::Instant) -> Instant {
    epoch + Duration::from_micros(u64::try_from(t.total_micros()).unwrap_or(0)) / CLOCK_SCALE
}

/// A real-time duration in smoltcp's clock (see [`CLOCK_SCALE`]).
fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(
        u64::try_from((d * CLOCK_SCALE).as_micros()).unwrap_or(u64::MAX),
    )
}

fn v6(ep: IpEndpoint) -> Option<SocketAddrV6> {
    #[allow(unreachable_patterns)]
    match ep.addr {
        IpAddress::Ipv6(a) => Some(SocketAddrV6::new(a, ep.port, 0, 0)),
        _ => None,
    }
}

impl Netstack {
    /// A stack with address `ip/128` and a route to the tailnet /48; `seed` drives every
    /// random choice (TCP initial sequence numbers, ports, map hashers).
    pub fn new(ip: Ipv6Addr, now: Instant, seed: u64) -> Self {
        let mut device = QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut iface = Interface::new(config, &mut device, to_smol(now, now));
        iface.update_ip_addrs(|addrs| {
            // One address; the capacity is at least one.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(ip), 128));
        });
        let mut prefix = [0u8; 16];
        prefix[..6].copy_from_slice(&TAILNET_PREFIX);
        iface.routes_mut().update(|routes| {
            let _ = routes.push(Route {
                cidr: IpCidr::new(IpAddress::Ipv6(Ipv6Addr::from(prefix)), 48),
                via_router: IpAddress::Ipv6(ip),
                preferred_until: None,
                expires_at: None,
            });
        });
        Self {
            ip,
            epoch: now,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            listening: packet_set(rng.next_u64()),
            accept_any: false,
            queues: packet_map(rng.next_u64()),
            pending: packet_map(rng.next_u64()),
            orphans: packet_set(rng.next_u64()),
            udp_ports: packet_map(rng.next_u64()),
            udp_accept_any: false,
            udp_any: packet_set(rng.next_u64()),
            udp_any_ready: VecDeque::new(),
            writers: packet_map(rng.next_u64()),
            readers: packet_map(rng.next_u64()),
            udp_any_waker: None,
            recovery: Recovery::new(PEER_ACK_DELAY, OWN_WINDOW_SHIFT, rng.next_u64()),
            rng,
            tx_seen: 0,
            resends: Vec::new(),
            consumed: Vec::new(),
        }
    }

    /// This stack's address.
    pub fn ip(&self) -> Ipv6Addr {
        self.ip
    }

    fn socket_count(&self) -> usize {
        self.sockets.iter().count()
    }

    /// Hands a decrypted IP packet to the stack (processed by the next [`Netstack::poll`]).
    /// A `BytesMut`, so that WireGuard's decrypted buffer, which starts past its header,
    /// is taken as it is rather than moved to the front of a `Vec`.
    pub fn push_inbound(&mut self, mut packet: BytesMut) {
        let Ok(ip) = Ipv6Packet::new_checked(&packet[..]) else {
            trace!(
                len = packet.len(),
                "dropping inbound packet that is not IPv6"
            );
            return;
        };
        // WireGuard pads packets to 16 bytes; give smoltcp only the IP packet itself.
        let total = 40 + usize::from(ip.payload_len());
        packet.truncate(total);
        if self.device.rx.len() >= DEVICE_QUEUE {
            trace!("netstack inbound queue full; dropping packet");
            return;
        }
        self.device.rx.push_back(packet);
    }

    /// A SYN to a port that is listened on (or any port with "accept any") gets a
    /// listening socket just before smoltcp processes it; so does a UDP datagram to an
    /// unbound port with UDP "accept any" on.
    fn inspect_inbound(&mut self) {
        let Some(packet) = self.device.rx.front() else {
            return;
        };
        let Ok(ip) = Ipv6Packet::new_checked(&packet[..]) else {
            return;
        };
        let src = ip.src_addr();
        if ip.next_header() == IpProtocol::Udp {
            if !self.udp_accept_any || ip.dst_addr() != self.ip {
                return;
            }
            let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                return;
            };
            let (src_ip, dst_ip) = (IpAddress::Ipv6(src), IpAddress::Ipv6(ip.dst_addr()));
            if !udp.verify_checksum(&src_ip, &dst_ip) {
                return;
            }
            let remote = SocketAddrV6::new(src, udp.src_port(), 0, 0);
            let port = udp.dst_port();
            self.on_udp_datagram(remote, port);
            return;
        }
        if ip.next_header() != IpProtocol::Tcp {
            return;
        }
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            return;
        };
        if tcp.syn() && !tcp.ack() {
            let (sport, dport) = (tcp.src_port(), tcp.dst_port());
            self.on_syn(SocketAddrV6::new(src, sport, 0, 0), dport);
        }
    }

    /// Runs the stack: consumes inbound packets, produces outbound ones, moves
    /// established inbound connections to their accept queues, reaps closed sockets.
    pub fn poll(&mut self, now: Instant) {
        let ts = to_smol(self.epoch, now);
        self.iface.poll_maintenance(ts);
        while !self.device.rx.is_empty() {
            self.inspect_inbound();
            if let Some(p) = self.device.rx.front_mut() {
                self.recovery.on_inbound(p, now, &mut self.resends);
            }
            self.iface
                .poll_ingress_single(ts, &mut self.device, &mut self.sockets);
        }
        for &h in &self.orphans {
            let s = self.sockets.get_mut::<smoltcp::socket::tcp::Socket>(h);
            if s.recv_queue() > 0 {
                // Data after the application let go: nobody will read it (see
                // `tcp_release`). The reset goes out just below.
                s.abort();
            }
        }
        while self
            .iface
            .poll_egress(ts, &mut self.device, &mut self.sockets)
            != smoltcp::iface::PollResult::None
        {}
        for p in self.device.tx.iter().skip(self.tx_seen) {
            self.recovery.on_outbound(p, now);
        }
        self.send_window_updates();
        self.recovery.poll(now, &mut self.resends);
        // Resends go out before new data: behind a burst they would find a bottleneck's
        // queue full, and be dropped again every round trip.
        for p in self.resends.drain(..).rev() {
            self.device.tx.push_front(p);
        }
        self.tx_seen = self.device.tx.len();
        self.sweep();
        wake_ready(&mut self.writers, &self.sockets, |s| {
            s.send_capacity() - s.send_queue() >= SEND_LOW_WATER || !s.may_send()
        });
        wake_ready(&mut self.readers, &self.sockets, |s| {
            s.can_recv() || !s.may_recv()
        });
    }

    /// What loss recovery has done so far.
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.recovery.stats()
    }

    /// Next packet the stack wants to send.
    pub fn pop_outbound(&mut self) -> Option<BytesMut> {
        self.tx_seen = self.tx_seen.saturating_sub(1);
        self.device.tx.pop_front()
    }

    /// When [`Netstack::poll`] must run next, if a socket timer is pending.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.device.rx.is_empty() {
            return Some(now);
        }
        let ts = to_smol(self.epoch, now);
        let stack = self
            .iface
            .poll_at(ts, &self.sockets)
            .map(|t| from_smol(self.epoch, t));
        [stack, self.recovery.poll_at()]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(now))
    }

    /// Wakes every waiting reader and writer (the tailnet is closing: they must see it).
    pub fn wake_all_waiters(&mut self) {
        for (_, w) in self.writers.drain() {
            w.wake();
        }
        for (_, w) in self.readers.drain() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests;
