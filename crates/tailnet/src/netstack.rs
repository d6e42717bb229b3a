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

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use smoltcp::iface::{Config, Interface, Route, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{AnySocket, tcp, udp};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv6Packet, TcpPacket, UdpPacket,
};
use tracing::{debug, trace};

use crate::core::PacketMap;
use crate::recovery::{Recovery, RecoveryStats};

use tether_proto::coord::TAILNET_PREFIX;

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
}

/// Where an accepted connection is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcceptKey {
    /// An explicit listener on this port.
    Port(u16),
    /// The "accept any port" queue.
    Any,
}

/// A connection ready to be handed to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The socket.
    pub handle: SocketHandle,
    /// Our port the peer connected to.
    pub local_port: u16,
    /// The peer's address.
    pub remote: SocketAddrV6,
}

#[derive(Default)]
struct AcceptQueue {
    ready: VecDeque<Accepted>,
    waker: Option<Waker>,
}

/// A device that is two packet queues.
struct QueueDevice {
    rx: VecDeque<BytesMut>,
    tx: VecDeque<BytesMut>,
}

struct RxToken(BytesMut);
struct TxToken<'a>(&'a mut VecDeque<BytesMut>);

impl smoltcp::phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Room for WireGuard's padding to 16 bytes, so that it needs no new buffer. One
        // allocation per packet: cutting packets from large shared buffers instead took
        // 3 % fewer instructions, yet was about 15 % slower in the NAT lab (a freed
        // buffer comes back hot from the allocator's cache; an arena marches through
        // memory).
        let mut buf = BytesMut::with_capacity(len.next_multiple_of(16));
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        (self.tx.len() < DEVICE_QUEUE).then_some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        // Every inbound packet has passed WireGuard's AEAD, which authenticates every
        // byte: verifying TCP and UDP checksums again only costs (a few percent of the
        // CPU per packet). Outbound checksums are still computed, for any peer that
        // verifies them.
        caps.checksum.tcp = Checksum::Tx;
        caps.checksum.udp = Checksum::Tx;
        caps
    }
}

/// A writer that found its connection's send buffer full waits until this much room is
/// free, instead of being woken by every ACK to copy a few segments' worth.
pub const SEND_LOW_WATER: usize = TCP_BUFFER / 4;

/// Wakes (and forgets) the waiters whose socket is `ready`.
fn wake_ready(
    waiters: &mut PacketMap<SocketHandle, Waker>,
    sockets: &SocketSet<'static>,
    ready: impl Fn(&tcp::Socket<'static>) -> bool,
) {
    waiters.retain(|&h, w| {
        let woken = ready(sockets.get::<tcp::Socket>(h));
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
    listening: HashSet<u16>,
    accept_any: bool,
    queues: HashMap<AcceptKey, AcceptQueue>,
    /// Sockets created for inbound SYNs, not yet handed out, and where they go.
    pending: HashMap<SocketHandle, AcceptKey>,
    /// Sockets the application dropped; removed once closed.
    orphans: HashSet<SocketHandle>,
    udp_ports: HashMap<u16, SocketHandle>,
    udp_accept_any: bool,
    /// UDP sockets bound on the fly by "accept any", queued or handed out.
    udp_any: HashSet<SocketHandle>,
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

/// A UDP socket bound on the fly by "accept any", ready to be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpAccepted {
    /// The socket.
    pub handle: SocketHandle,
    /// The port it is bound to (the first datagram's destination port).
    pub local_port: u16,
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
    /// A stack with address `ip/128` and a route to the tailnet /48; `seed` drives port choice.
    pub fn new(ip: Ipv6Addr, now: Instant, seed: u64) -> Self {
        let mut device = QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
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
            listening: HashSet::new(),
            accept_any: false,
            queues: HashMap::new(),
            pending: HashMap::new(),
            orphans: HashSet::new(),
            udp_ports: HashMap::new(),
            udp_accept_any: false,
            udp_any: HashSet::new(),
            udp_any_ready: VecDeque::new(),
            writers: PacketMap::default(),
            readers: PacketMap::default(),
            udp_any_waker: None,
            rng: StdRng::seed_from_u64(seed),
            recovery: Recovery::new(PEER_ACK_DELAY, OWN_WINDOW_SHIFT),
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

    fn new_tcp_socket() -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        );
        s.set_nagle_enabled(false);
        // Congestion control is recovery's: it clamps the windows smoltcp sees.
        s.set_congestion_control(tcp::CongestionControl::None);
        s.set_keep_alive(Some(smol_duration(TCP_KEEPALIVE)));
        s.set_timeout(Some(smol_duration(TCP_TIMEOUT)));
        s
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

    fn on_syn(&mut self, remote: SocketAddrV6, port: u16) {
        let key = if self.listening.contains(&port) {
            AcceptKey::Port(port)
        } else if self.accept_any {
            AcceptKey::Any
        } else {
            return;
        };
        let mut have_listener = false;
        for (h, s) in self.sockets.iter() {
            let Some(s) = tcp::Socket::downcast(s) else {
                continue;
            };
            if s.state() == tcp::State::Listen {
                if self.pending.contains_key(&h) && s.listen_endpoint().port == port {
                    have_listener = true;
                }
            } else if s.local_endpoint().is_some_and(|l| l.port == port)
                && s.remote_endpoint().and_then(v6) == Some(remote)
            {
                // A retransmitted SYN for a connection we already have.
                return;
            }
        }
        if have_listener {
            return;
        }
        if self.socket_count() >= MAX_SOCKETS {
            debug!(%remote, port, "too many sockets; refusing inbound connection");
            return;
        }
        let mut s = Self::new_tcp_socket();
        if s.listen(port).is_err() {
            return;
        }
        let h = self.sockets.add(s);
        self.pending.insert(h, key);
        trace!(%remote, port, "listening socket created for inbound SYN");
    }

    /// UDP "accept any": binds a socket to `port` for a datagram nobody is bound to.
    fn on_udp_datagram(&mut self, remote: SocketAddrV6, port: u16) {
        if port == 0 || self.udp_ports.contains_key(&port) {
            return;
        }
        if self.udp_any.len() >= MAX_UDP_ACCEPT_ANY {
            debug!(%remote, port, limit = MAX_UDP_ACCEPT_ANY, "too many accept-any UDP sockets; dropping datagram");
            return;
        }
        let h = match self.udp_bind(port) {
            Ok(h) => h,
            Err(e) => {
                debug!(%remote, port, error = %e, "cannot bind accept-any UDP socket; dropping datagram");
                return;
            }
        };
        self.udp_any.insert(h);
        self.udp_any_ready.push_back(UdpAccepted {
            handle: h,
            local_port: port,
        });
        debug!(%remote, port, "UDP socket bound for an inbound datagram");
        if let Some(w) = self.udp_any_waker.take() {
            w.wake();
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
            let s = self.sockets.get_mut::<tcp::Socket>(h);
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

    fn sweep(&mut self) {
        let mut moved = Vec::new();
        let mut dead = Vec::new();
        for (&h, &key) in &self.pending {
            let s = self.sockets.get::<tcp::Socket>(h);
            match s.state() {
                tcp::State::Listen | tcp::State::SynReceived => {}
                tcp::State::Established | tcp::State::CloseWait => {
                    let local_port = s.local_endpoint().map_or(0, |l| l.port);
                    match s.remote_endpoint().and_then(v6) {
                        Some(remote) => moved.push((
                            key,
                            Accepted {
                                handle: h,
                                local_port,
                                remote,
                            },
                        )),
                        None => dead.push(h),
                    }
                }
                _ => dead.push(h),
            }
        }
        for h in dead {
            self.pending.remove(&h);
            self.sockets.remove(h);
        }
        for (key, acc) in moved {
            self.pending.remove(&acc.handle);
            let q = self.queues.entry(key).or_default();
            if q.ready.len() >= ACCEPT_BACKLOG {
                debug!(remote = %acc.remote, port = acc.local_port, "accept backlog full; resetting connection");
                self.sockets.get_mut::<tcp::Socket>(acc.handle).abort();
                self.orphans.insert(acc.handle);
                continue;
            }
            debug!(remote = %acc.remote, port = acc.local_port, "inbound TCP connection established");
            q.ready.push_back(acc);
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
        let closed: Vec<SocketHandle> = self
            .orphans
            .iter()
            .copied()
            .filter(|&h| {
                matches!(
                    self.sockets.get::<tcp::Socket>(h).state(),
                    tcp::State::Closed | tcp::State::TimeWait
                )
            })
            .collect();
        for h in closed {
            self.orphans.remove(&h);
            self.sockets.remove(h);
        }
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

    /// Starts accepting connections to `port`.
    pub fn tcp_listen(&mut self, port: u16) -> Result<(), NetstackError> {
        if port == 0 || !self.listening.insert(port) {
            return Err(NetstackError::AddrInUse(port));
        }
        debug!(port, "listening");
        Ok(())
    }

    /// Stops accepting on `port`; connections not yet accepted are reset.
    pub fn tcp_unlisten(&mut self, port: u16) {
        if self.listening.remove(&port) {
            self.drop_queue(AcceptKey::Port(port));
        }
    }

    /// Turns "accept connections to any port nobody listens on" on or off.
    pub fn set_accept_any(&mut self, on: bool) {
        self.accept_any = on;
        if !on {
            self.drop_queue(AcceptKey::Any);
        }
    }

    /// Whether "accept any" is on.
    pub fn accept_any(&self) -> bool {
        self.accept_any
    }

    fn drop_queue(&mut self, key: AcceptKey) {
        if let Some(q) = self.queues.remove(&key) {
            for a in q.ready {
                self.sockets.get_mut::<tcp::Socket>(a.handle).abort();
                self.orphans.insert(a.handle);
            }
        }
        let half: Vec<SocketHandle> = self
            .pending
            .iter()
            .filter(|(_, k)| **k == key)
            .map(|(h, _)| *h)
            .collect();
        for h in half {
            self.pending.remove(&h);
            self.sockets.get_mut::<tcp::Socket>(h).abort();
            self.orphans.insert(h);
        }
    }

    /// Takes an established inbound connection from a queue, or registers `waker`.
    pub fn tcp_accept(&mut self, key: AcceptKey, waker: Option<&Waker>) -> Option<Accepted> {
        let q = self.queues.entry(key).or_default();
        let got = q.ready.pop_front();
        if got.is_none()
            && let Some(w) = waker
        {
            q.waker = Some(w.clone());
        }
        got
    }

    /// Opens a TCP connection to `remote` from a random free port.
    pub fn tcp_connect(&mut self, remote: SocketAddrV6) -> Result<SocketHandle, NetstackError> {
        if self.socket_count() >= MAX_SOCKETS {
            return Err(NetstackError::TooManySockets);
        }
        let used: HashSet<u16> = self
            .sockets
            .iter()
            .filter_map(|(_, s)| tcp::Socket::downcast(s))
            .filter_map(|s| s.local_endpoint().map(|l| l.port))
            .collect();
        let mut port = None;
        for _ in 0..64 {
            let p = self.rng.gen_range(49152..=65535u16);
            if !used.contains(&p) && !self.listening.contains(&p) {
                port = Some(p);
                break;
            }
        }
        let port = port.ok_or(NetstackError::NoFreePort)?;
        let mut s = Self::new_tcp_socket();
        s.connect(
            self.iface.context(),
            (IpAddress::Ipv6(*remote.ip()), remote.port()),
            port,
        )
        .map_err(|e| NetstackError::Connect(remote, e.to_string()))?;
        debug!(%remote, local_port = port, "TCP connect");
        Ok(self.sockets.add(s))
    }

    /// Wakes `waker` once `h` has [`SEND_LOW_WATER`] bytes of room (or can send no more).
    pub fn wait_send_room(&mut self, h: SocketHandle, waker: &Waker) {
        self.writers.insert(h, waker.clone());
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

    /// Wakes `waker` after the poll that brings `h` data (or its end).
    pub fn wait_recv(&mut self, h: SocketHandle, waker: &Waker) {
        self.readers.insert(h, waker.clone());
    }

    /// The application took data out of `h`'s receive buffer: the next poll tells the
    /// peer of the larger window if smoltcp would not yet (see `recovery::window`).
    pub fn tcp_consumed(&mut self, h: SocketHandle) {
        if !self.consumed.contains(&h) {
            self.consumed.push(h);
        }
    }

    /// Queues window updates for the sockets read from since the last poll.
    fn send_window_updates(&mut self) {
        for h in self.consumed.drain(..) {
            // Handles here are live: a released one leaves the list (`tcp_release`).
            let s = self.sockets.get::<tcp::Socket>(h);
            if s.state() != tcp::State::Established {
                continue;
            }
            let (Some(local), Some(remote)) =
                (s.local_endpoint(), s.remote_endpoint().and_then(v6))
            else {
                continue;
            };
            let free = s.recv_capacity() - s.recv_queue();
            if let Some(p) =
                self.recovery
                    .window_update(self.ip, local.port, remote, free, s.recv_capacity())
            {
                self.device.tx.push_back(p);
            }
        }
    }

    /// The TCP socket behind `h`. `h` must be a live TCP handle from this stack.
    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// The application is done with `h`: close it (FIN) and forget it once closed.
    pub fn tcp_release(&mut self, h: SocketHandle) {
        debug!(recovery_totals = ?self.recovery.stats(), "TCP connection released");
        self.writers.remove(&h);
        self.readers.remove(&h);
        self.consumed.retain(|&x| x != h);
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        if s.state() == tcp::State::Closed {
            self.sockets.remove(h);
            return;
        }
        if s.recv_queue() > 0 {
            // Data nobody will read: reset, as a kernel does, so that the peer stops
            // instead of stalling on our full window for ever.
            s.abort();
        } else {
            s.close();
        }
        self.orphans.insert(h);
    }

    /// Binds a UDP socket to `port`, or to a random free port from 49152 up if `port`
    /// is 0 (read it back with [`Netstack::udp_port`]).
    pub fn udp_bind(&mut self, port: u16) -> Result<SocketHandle, NetstackError> {
        if self.socket_count() >= MAX_SOCKETS {
            return Err(NetstackError::TooManySockets);
        }
        let port = if port == 0 {
            let mut free = None;
            for _ in 0..64 {
                let p = self.rng.gen_range(49152..=65535u16);
                if !self.udp_ports.contains_key(&p) {
                    free = Some(p);
                    break;
                }
            }
            free.ok_or(NetstackError::NoFreePort)?
        } else if self.udp_ports.contains_key(&port) {
            return Err(NetstackError::AddrInUse(port));
        } else {
            port
        };
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0u8; UDP_PACKETS * MTU],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0u8; UDP_PACKETS * MTU],
            ),
        );
        s.bind(port).map_err(|_| NetstackError::AddrInUse(port))?;
        let h = self.sockets.add(s);
        self.udp_ports.insert(port, h);
        Ok(h)
    }

    /// The UDP socket behind `h`. `h` must be a live UDP handle from this stack.
    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h)
    }

    /// The port UDP socket `h` is bound to. `h` must be a live UDP handle from this stack.
    pub fn udp_port(&self, h: SocketHandle) -> u16 {
        self.sockets.get::<udp::Socket>(h).endpoint().port
    }

    /// Closes a UDP socket, freeing its port.
    pub fn udp_release(&mut self, h: SocketHandle) {
        let port = self.udp_port(h);
        self.udp_ports.remove(&port);
        self.udp_any.remove(&h);
        self.sockets.remove(h);
    }

    /// Turns UDP "accept any" on or off: with it on, a datagram to a port no socket is
    /// bound to binds one there. Turning it off closes the sockets not yet handed out.
    pub fn set_udp_accept_any(&mut self, on: bool) {
        self.udp_accept_any = on;
        if !on {
            for a in std::mem::take(&mut self.udp_any_ready) {
                self.udp_release(a.handle);
            }
        }
    }

    /// Whether UDP "accept any" is on.
    pub fn udp_accept_any_enabled(&self) -> bool {
        self.udp_accept_any
    }

    /// Takes the next UDP socket bound by "accept any", or registers `waker`. The
    /// caller owns it from then on and frees its port with [`Netstack::udp_release`].
    pub fn udp_accept_any(&mut self, waker: Option<&Waker>) -> Option<UdpAccepted> {
        let got = self.udp_any_ready.pop_front();
        if got.is_none()
            && let Some(w) = waker
        {
            self.udp_any_waker = Some(w.clone());
        }
        got
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;

    /// Moves every outbound packet of `a` into `b` and vice versa until both are quiet.
    fn pump(a: &mut Netstack, b: &mut Netstack, now: Instant) {
        for _ in 0..100 {
            a.poll(now);
            b.poll(now);
            let mut moved = false;
            while let Some(p) = a.pop_outbound() {
                b.push_inbound(p);
                moved = true;
            }
            while let Some(p) = b.pop_outbound() {
                a.push_inbound(p);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn ip(last: u8) -> Ipv6Addr {
        let mut raw = [0u8; 16];
        raw[..6].copy_from_slice(&TAILNET_PREFIX);
        raw[15] = last;
        Ipv6Addr::from(raw)
    }

    #[test]
    fn accept_any_creates_listeners_per_syn_and_unlistened_ports_are_refused() {
        let now = Instant::now();
        let mut a = Netstack::new(ip(1), now, 1);
        let mut b = Netstack::new(ip(2), now, 2);
        // Nobody listens on b: the connect is reset.
        let refused = a.tcp_connect(SocketAddrV6::new(ip(2), 4444, 0, 0)).unwrap();
        pump(&mut a, &mut b, now);
        assert_eq!(a.tcp(refused).state(), tcp::State::Closed);

        b.set_accept_any(true);
        let c1 = a.tcp_connect(SocketAddrV6::new(ip(2), 4444, 0, 0)).unwrap();
        let c2 = a.tcp_connect(SocketAddrV6::new(ip(2), 4444, 0, 0)).unwrap();
        let c3 = a.tcp_connect(SocketAddrV6::new(ip(2), 5555, 0, 0)).unwrap();
        pump(&mut a, &mut b, now);
        for c in [c1, c2, c3] {
            assert_eq!(a.tcp(c).state(), tcp::State::Established);
        }
        let mut ports = Vec::new();
        while let Some(acc) = b.tcp_accept(AcceptKey::Any, None) {
            assert_eq!(acc.remote.ip(), &ip(1));
            ports.push(acc.local_port);
        }
        ports.sort_unstable();
        assert_eq!(ports, vec![4444, 4444, 5555]);
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl CountingWaker {
        /// A waker and the count of its wake-ups.
        fn new() -> (std::sync::Arc<Self>, Waker) {
            let count = std::sync::Arc::new(Self::default());
            let waker = Waker::from(count.clone());
            (count, waker)
        }

        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Two stacks with one established connection from `a` to port 7 of `b`: the
    /// stacks, `a`'s handle and `b`'s.
    fn connected(now: Instant) -> (Netstack, Netstack, SocketHandle, SocketHandle) {
        let mut a = Netstack::new(ip(1), now, 1);
        let mut b = Netstack::new(ip(2), now, 2);
        b.tcp_listen(7).unwrap();
        let c = a.tcp_connect(SocketAddrV6::new(ip(2), 7, 0, 0)).unwrap();
        pump(&mut a, &mut b, now);
        let accepted = b.tcp_accept(AcceptKey::Port(7), None).unwrap().handle;
        (a, b, c, accepted)
    }

    /// A writer waiting for room is woken once a quarter of the buffer is free, not
    /// while it stays full; released handles and closing stop the wait.
    #[test]
    fn a_waiting_writer_is_woken_at_the_low_water_mark() {
        let now = Instant::now();
        let (mut a, mut b, c, accepted) = connected(now);
        let chunk = vec![7u8; 64 << 10];
        while a.tcp(c).send_slice(&chunk).unwrap() > 0 {}
        let (count, waker) = CountingWaker::new();
        a.wait_send_room(c, &waker);
        a.poll(now);
        assert_eq!(count.count(), 0, "woken with a full buffer");
        pump(&mut a, &mut b, now);
        assert_eq!(count.count(), 1, "not woken once acknowledged");
        pump(&mut a, &mut b, now);
        assert_eq!(count.count(), 1, "woken twice for one wait");

        // A released handle is forgotten (its socket goes away later); closing wakes the rest.
        while a.tcp(c).send_slice(&chunk).unwrap() > 0 {}
        a.wait_send_room(c, &waker);
        a.tcp_release(c);
        b.tcp_release(accepted);
        pump(&mut a, &mut b, now);
        let c2 = a.tcp_connect(SocketAddrV6::new(ip(2), 7, 0, 0)).unwrap();
        a.wait_send_room(c2, &waker);
        a.wake_all_waiters();
        assert_eq!(count.count(), 2);
    }

    /// A waiting reader is woken by the poll that brings data, and by the one that
    /// brings the end of the stream.
    #[test]
    fn a_waiting_reader_is_woken_by_data_and_by_the_end() {
        let now = Instant::now();
        let (mut a, mut b, c, r) = connected(now);
        let (count, waker) = CountingWaker::new();
        b.wait_recv(r, &waker);
        pump(&mut a, &mut b, now);
        assert_eq!(count.count(), 0, "woken without data");
        a.tcp(c).send_slice(b"hello").unwrap();
        pump(&mut a, &mut b, now);
        assert_eq!(count.count(), 1, "not woken by data");
        let mut buf = [0u8; 16];
        assert_eq!(b.tcp(r).recv_slice(&mut buf).unwrap(), 5);
        b.wait_recv(r, &waker);
        a.tcp(c).close();
        pump(&mut a, &mut b, now);
        assert_eq!(count.count(), 2, "not woken by the FIN");
        assert!(!b.tcp(r).may_recv());
    }

    /// A connection released with unread data, or sent data after its release, is
    /// reset, so that the sender learns nobody reads (it would stall on a zero window).
    #[test]
    fn data_nobody_will_read_resets_the_connection() {
        let now = Instant::now();
        for data_before_release in [true, false] {
            let (mut a, mut b, c, accepted) = connected(now);
            if data_before_release {
                a.tcp(c).send_slice(b"unread").unwrap();
                pump(&mut a, &mut b, now);
                assert!(b.tcp(accepted).recv_queue() > 0);
            }
            b.tcp_release(accepted);
            pump(&mut a, &mut b, now);
            if !data_before_release {
                // A graceful close: FIN, and the half-open side may still send.
                assert_eq!(a.tcp(c).state(), tcp::State::CloseWait);
                a.tcp(c).send_slice(b"too late").unwrap();
                pump(&mut a, &mut b, now);
            }
            assert_eq!(
                a.tcp(c).state(),
                tcp::State::Closed,
                "data before release: {data_before_release}"
            );
        }
    }

    /// A receiver whose application drains part of its buffer tells the sender at once,
    /// where smoltcp alone waits until its window has doubled.
    #[test]
    fn a_drained_receive_buffer_is_advertised_before_its_window_doubles() {
        let now = Instant::now();
        for tell in [false, true] {
            let (mut a, mut b, c, accepted) = connected(now);
            let data = vec![7u8; TCP_BUFFER * 3 / 4];
            assert_eq!(a.tcp(c).send_slice(&data).unwrap(), data.len());
            pump(&mut a, &mut b, now);
            assert_eq!(b.tcp(accepted).recv_queue(), data.len());
            // The last ACK advertised a quarter of the buffer; drain a fifth more.
            let mut buf = vec![0u8; TCP_BUFFER / 5];
            assert_eq!(b.tcp(accepted).recv_slice(&mut buf).unwrap(), buf.len());
            if tell {
                b.tcp_consumed(accepted);
            }
            b.poll(now);
            let mut updates = Vec::new();
            while let Some(p) = b.pop_outbound() {
                let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
                let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
                assert!(tcp.ack() && tcp.payload().is_empty(), "not a pure ACK");
                updates.push(usize::from(tcp.window_len()) << OWN_WINDOW_SHIFT);
            }
            if tell {
                let free = TCP_BUFFER - data.len() + buf.len();
                assert_eq!(updates, [free & !((1 << OWN_WINDOW_SHIFT) - 1)]);
            } else {
                assert!(updates.is_empty(), "smoltcp sent {updates:?} by itself");
            }
        }
    }

    #[test]
    fn explicit_listener_gets_its_port_only() {
        let now = Instant::now();
        let mut a = Netstack::new(ip(1), now, 1);
        let mut b = Netstack::new(ip(2), now, 2);
        b.tcp_listen(7).unwrap();
        assert_eq!(b.tcp_listen(7), Err(NetstackError::AddrInUse(7)));
        let c = a.tcp_connect(SocketAddrV6::new(ip(2), 7, 0, 0)).unwrap();
        let other = a.tcp_connect(SocketAddrV6::new(ip(2), 8, 0, 0)).unwrap();
        pump(&mut a, &mut b, now);
        assert_eq!(a.tcp(c).state(), tcp::State::Established);
        assert_eq!(a.tcp(other).state(), tcp::State::Closed);
        let acc = b.tcp_accept(AcceptKey::Port(7), None).unwrap();
        assert_eq!(acc.local_port, 7);
        a.tcp(c).send_slice(b"ping").unwrap();
        pump(&mut a, &mut b, now);
        let mut buf = [0u8; 8];
        let n = b.tcp(acc.handle).recv_slice(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
    }

    fn udp_send(a: &mut Netstack, h: SocketHandle, to: u16, data: &[u8]) {
        a.udp(h)
            .send_slice(data, (IpAddress::Ipv6(ip(2)), to))
            .unwrap();
    }

    fn udp_recv(b: &mut Netstack, h: SocketHandle) -> Option<(Vec<u8>, u16)> {
        b.udp(h)
            .recv()
            .ok()
            .map(|(d, m)| (d.to_vec(), m.endpoint.port))
    }

    #[test]
    fn udp_accept_any_binds_unbound_ports_and_leaves_bound_ones_alone() {
        let now = Instant::now();
        let mut a = Netstack::new(ip(1), now, 1);
        let mut b = Netstack::new(ip(2), now, 2);
        let ua = a.udp_bind(0).unwrap();
        let from = a.udp_port(ua);
        assert!(from >= 49152);

        // Off: a datagram to an unbound port is dropped and nothing is queued.
        udp_send(&mut a, ua, 5353, b"lost");
        pump(&mut a, &mut b, now);
        assert_eq!(b.udp_accept_any(None), None);

        // On: the port is bound on the fly and the datagram lands in the new socket.
        b.set_udp_accept_any(true);
        let bound = b.udp_bind(53).unwrap();
        udp_send(&mut a, ua, 5353, b"hello");
        pump(&mut a, &mut b, now);
        let acc = b.udp_accept_any(None).unwrap();
        assert_eq!(acc.local_port, 5353);
        assert_eq!(b.udp_port(acc.handle), 5353);
        assert_eq!(
            udp_recv(&mut b, acc.handle),
            Some((b"hello".to_vec(), from))
        );

        // Later datagrams to that port go to the same socket; replies reach the sender.
        udp_send(&mut a, ua, 5353, b"again");
        pump(&mut a, &mut b, now);
        assert_eq!(b.udp_accept_any(None), None);
        assert_eq!(
            udp_recv(&mut b, acc.handle),
            Some((b"again".to_vec(), from))
        );
        b.udp(acc.handle)
            .send_slice(b"reply", (IpAddress::Ipv6(ip(1)), from))
            .unwrap();
        pump(&mut a, &mut b, now);
        assert_eq!(udp_recv(&mut a, ua), Some((b"reply".to_vec(), 5353)));

        // An explicitly bound port is never taken over.
        udp_send(&mut a, ua, 53, b"dns");
        pump(&mut a, &mut b, now);
        assert_eq!(b.udp_accept_any(None), None);
        assert_eq!(udp_recv(&mut b, bound), Some((b"dns".to_vec(), from)));
        assert_eq!(b.udp_bind(5353), Err(NetstackError::AddrInUse(5353)));

        // Releasing the accepted socket frees the port: the next datagram binds afresh.
        b.udp_release(acc.handle);
        udp_send(&mut a, ua, 5353, b"fresh");
        pump(&mut a, &mut b, now);
        let acc2 = b.udp_accept_any(None).unwrap();
        assert_eq!(acc2.local_port, 5353);
        assert_eq!(
            udp_recv(&mut b, acc2.handle),
            Some((b"fresh".to_vec(), from))
        );

        // Off again: sockets not yet handed out are closed and their ports freed.
        udp_send(&mut a, ua, 6000, b"queued");
        pump(&mut a, &mut b, now);
        b.set_udp_accept_any(false);
        assert_eq!(b.udp_accept_any(None), None);
        let h = b.udp_bind(6000).unwrap();
        b.udp_release(h);
    }

    #[test]
    fn udp_accept_any_is_capped() {
        let now = Instant::now();
        let mut a = Netstack::new(ip(1), now, 1);
        let mut b = Netstack::new(ip(2), now, 2);
        b.set_udp_accept_any(true);
        let ua = a.udp_bind(9).unwrap();
        let total = MAX_UDP_ACCEPT_ANY as u16 + 4;
        for port in 1000..1000 + total {
            udp_send(&mut a, ua, port, b"x");
            if port % 64 == 0 {
                pump(&mut a, &mut b, now);
            }
        }
        pump(&mut a, &mut b, now);
        let mut got = Vec::new();
        while let Some(acc) = b.udp_accept_any(None) {
            got.push(acc);
        }
        assert_eq!(got.len(), MAX_UDP_ACCEPT_ANY);
        // Freeing one makes room for one more.
        b.udp_release(got[0].handle);
        udp_send(&mut a, ua, 2000, b"y");
        pump(&mut a, &mut b, now);
        assert_eq!(b.udp_accept_any(None).map(|a| a.local_port), Some(2000));
    }
}
