//! The sans-IO tailnet node: WireGuard tunnels per peer, the path layer and the netstack.
//!
//! Inputs are DERP packets ([`Core::handle_derp`]), UDP datagrams ([`Core::handle_udp`]),
//! peer changes ([`Core::upsert_peer`], [`Core::remove_peer`]), our UDP endpoints
//! ([`Core::set_local_endpoints`]) and the time, passed to [`Core::poll`]. Outputs are
//! [`Transmit`]s (a WireGuard or disco datagram, the peer's key and the path to use),
//! the next deadline ([`Core::poll_timeout`]) and [`Event`]s. Nothing here reads a clock
//! or touches a socket.
//!
//! Direct paths: each peer with a disco key has a [`PathSel`] fed with its endpoints
//! from the coordinator. Every WireGuard datagram asks it for the path
//! ([`PathSel::on_send`]): direct UDP when trusted, otherwise DERP (plus a copy to an
//! untrusted best address). Disco pings go over UDP, CallMeMaybes over DERP (inside
//! SendPacket to the peer's node key); a ping is answered on the path it came in on, a
//! CallMeMaybe counts only over DERP, and disco from unknown disco keys is dropped (so
//! discovery sent before the peer added us is repeated when it says it is ready).
//! WireGuard over UDP belongs to the peer that proved its source address with disco.
//!
//! Randomness is injected too: every random choice here and below (disco key, nonces
//! and TxIDs, WireGuard session indices and retry jitter, TCP sequence numbers and
//! ports, map hashers) derives from the [`Seed`] given to [`Core::new`], so two runs with
//! one seed and the same inputs emit the same bytes, except where gotatun reads its own:
//!
//! - **Handshake keys.** gotatun draws each handshake's ephemeral key from the OS RNG
//!   (`noise::handshake`, initiation and response), so the ephemeral public key, the
//!   encrypted static key and timestamp and MAC1 of every handshake message differ
//!   between runs, and so do the session keys: the ciphertext and tag of every
//!   transport datagram. What stays reproducible of WireGuard's bytes is the message
//!   type, the session indices (from our seeded index table), the counters and the
//!   lengths. Its cookie secret (`noise::rate_limiter`) also comes from the OS RNG; it
//!   only shows in cookie replies, sent above [`HANDSHAKE_RATE_LIMIT`] handshakes a
//!   second.
//! - **Clocks.** gotatun stamps initiations with TAI64N from `SystemTime` and keeps its
//!   own monotonic clock (CLOCK_BOOTTIME) for the WireGuard timers: rekey after 120 s,
//!   keepalive after 10 s, session expiry, and its own retry of an unanswered
//!   initiation after 5 s plus jitter (`noise::timers`, read when [`Core::poll`] calls
//!   `update_timers` once per [`WG_TICK`] of the time passed in); the rate limiter
//!   counts handshakes per real second. The retries that matter for getting a session
//!   up over a lossy path are driven here by the time passed in, so simulations on a
//!   virtual clock recover from lost handshakes deterministically; gotatun's own timers
//!   only fire in a simulation that runs that long in real time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gotatun::noise::TunnResult;
use gotatun::noise::index_table::IndexTable;
use gotatun::noise::rate_limiter::RateLimiter;
use gotatun::packet::{Packet, WgKind};
use gotatun::tun::MtuWatcher;
use gotatun::x25519;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rand_09::SeedableRng as _;
use rand_09::rngs::StdRng as GotatunRng;
use tether_key::{DiscoPrivate, DiscoPublic, NodePrivate, NodePublic};
use tracing::{debug, trace};
use uuid::Uuid;

use crate::disco::{self, PacketKind, TxId};
use crate::netstack::{MTU, Netstack};
use crate::path::{self, PathInfo, PathKind, PeerStatus};
use crate::pathsel::Via;

mod discovery;
mod handshake;
mod peer;
mod seed;

pub use seed::Seed;

use discovery::UserPing;
use peer::{Peer, push_transmit};

/// Resend our handshake initiation after this long without an answer (WireGuard's
/// REKEY_TIMEOUT).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Stop retrying a handshake after this long (WireGuard's REKEY_ATTEMPT_TIME).
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// How often gotatun's own WireGuard timers are serviced.
pub const WG_TICK: Duration = Duration::from_secs(1);
/// Handshake initiations accepted per second before cookies are demanded.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// A ping of [`Core::ping`] without a pong is forgotten after this long.
pub const USER_PING_TTL: Duration = Duration::from_secs(60);

/// What a peer is, as the coordinator told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's id.
    pub id: Uuid,
    /// Its WireGuard / DERP key.
    pub key: NodePublic,
    /// Its home DERP region (0 while unknown).
    pub home_region: u32,
    /// Its tailnet addresses; packets to these go to it, packets from it must carry one.
    pub addresses: Vec<Ipv6Addr>,
    /// Its disco key; without one no direct path is tried.
    pub disco: Option<DiscoPublic>,
    /// Its candidate UDP endpoints, as the coordinator lists them.
    pub endpoints: Vec<SocketAddr>,
    /// Its own verdict on hard NAT (`None` while unknown).
    pub mapping_varies_by_dest_ip: Option<bool>,
}

/// A datagram to hand to the path layer's I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The peer it is for.
    pub peer: Uuid,
    /// The peer's node key (the DERP destination).
    pub dst: NodePublic,
    /// Which path to send it on.
    pub path: PathKind,
    /// The WireGuard datagram (ciphertext, or a handshake message).
    pub data: Vec<u8>,
}

/// Something the driver may want to log or wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A WireGuard session with the peer came up.
    SessionUp {
        /// The peer.
        peer: Uuid,
    },
    /// Our handshake attempts to the peer ran out of time.
    HandshakeGaveUp {
        /// The peer.
        peer: Uuid,
    },
    /// The primary path to the peer changed (logged at INFO by the core).
    PathChanged {
        /// The peer.
        peer: Uuid,
        /// The new path.
        path: PathKind,
    },
    /// A CallMeMaybe waits for fresh local endpoints: re-STUN, then call
    /// [`Core::set_local_endpoints`].
    NeedFreshEndpoints,
    /// The pong to a ping sent with [`Core::ping`] arrived.
    Pong {
        /// The peer.
        peer: Uuid,
        /// The TxID [`Core::ping`] returned.
        tx_id: TxId,
        /// Latency and path.
        pong: path::Pong,
    },
}

/// A map looked up for every packet. foldhash, seeded per map (from the node's
/// [`Seed`], so that iteration order repeats too), costs a fraction of SipHash on these
/// short keys; the keys come from authenticated peers, and every such map is bounded.
pub(crate) type PacketMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A set hashed as a [`PacketMap`].
pub(crate) type PacketSet<K> = HashSet<K, foldhash::fast::FixedState>;

/// An empty [`PacketMap`] hashed with `seed`.
pub(crate) fn packet_map<K, V>(seed: u64) -> PacketMap<K, V> {
    HashMap::with_hasher(foldhash::fast::FixedState::with_seed(seed))
}

/// An empty [`PacketSet`] hashed with `seed`.
pub(crate) fn packet_set<K>(seed: u64) -> PacketSet<K> {
    HashSet::with_hasher(foldhash::fast::FixedState::with_seed(seed))
}

/// Which way a plaintext IP packet crossed WireGuard at a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapDirection {
    /// From the netstack, about to be encrypted.
    Outbound,
    /// Decrypted, about to enter the netstack.
    Inbound,
}

/// Sees every plaintext IP packet at the WireGuard boundary (see [`Core::set_packet_tap`]).
pub type PacketTap = Box<dyn FnMut(Instant, TapDirection, &[u8]) + Send>;

/// The node's data plane state.
pub struct Core {
    private: [u8; 32],
    public: NodePublic,
    home_region: u32,
    peers: PacketMap<Uuid, Peer>,
    by_key: PacketMap<NodePublic, Uuid>,
    by_ip: PacketMap<Ipv6Addr, Uuid>,
    index_table: IndexTable,
    rate_limiter: Arc<RateLimiter>,
    netstack: Netstack,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    mtu: MtuWatcher,
    next_wg_tick: Instant,
    disco: DiscoPrivate,
    by_disco: PacketMap<DiscoPublic, Uuid>,
    by_udp: PacketMap<SocketAddr, Uuid>,
    direct_blocked: bool,
    local_endpoints: Vec<SocketAddr>,
    local_endpoints_at: Option<Instant>,
    need_endpoints: bool,
    /// Draws the seeds of what is made later (a peer's path selection and jitter).
    rng: StdRng,
    /// Disco nonces.
    nonces: StdRng,
    /// Pings of [`Core::ping`] awaiting their pong.
    user_pings: PacketMap<TxId, UserPing>,
    /// Sees plaintext packets, for tests that compare runs.
    tap: Option<PacketTap>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("key", &self.public)
            .field("home_region", &self.home_region)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The fake source address gotatun's rate limiter keys DERP traffic by.
fn derp_addr(region: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), (region & 0xffff) as u16)
}

fn ipv6_src_dst(packet: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return None;
    }
    let src: [u8; 16] = packet[8..24].try_into().ok()?;
    let dst: [u8; 16] = packet[24..40].try_into().ok()?;
    Some((Ipv6Addr::from(src), Ipv6Addr::from(dst)))
}

impl Core {
    /// A node with this key and tailnet address, started at `now`; every random choice
    /// it makes derives from `seed` (see [`Seed`]).
    pub fn new(private: &NodePrivate, ip: Ipv6Addr, now: Instant, seed: Seed) -> Self {
        let public = private.public();
        let rate_limiter = Arc::new(RateLimiter::new(
            &x25519::PublicKey::from(*public.as_bytes()),
            HANDSHAKE_RATE_LIMIT,
        ));
        // Sub-seeds in a fixed order: adding a consumer goes at the end.
        let mut rng = seed.rng();
        let mut bytes = || {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            b
        };
        let disco = DiscoPrivate::from_bytes(bytes());
        let index_table = IndexTable::from_rng(GotatunRng::from_seed(bytes()));
        let nonces = StdRng::from_seed(bytes());
        let mut rng = StdRng::from_seed(bytes());
        Self {
            private: private.to_bytes(),
            public,
            home_region: 0,
            peers: packet_map(rng.next_u64()),
            by_key: packet_map(rng.next_u64()),
            by_ip: packet_map(rng.next_u64()),
            index_table,
            rate_limiter,
            netstack: Netstack::new(ip, now, rng.next_u64()),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            mtu: MtuWatcher::new(MTU as u16),
            next_wg_tick: now + WG_TICK,
            disco,
            by_disco: packet_map(rng.next_u64()),
            by_udp: packet_map(rng.next_u64()),
            direct_blocked: false,
            local_endpoints: Vec::new(),
            local_endpoints_at: None,
            need_endpoints: false,
            user_pings: packet_map(rng.next_u64()),
            rng,
            nonces,
            tap: None,
        }
    }

    /// Hands every plaintext IP packet to `tap` as it crosses WireGuard: each one the
    /// netstack sends (before encryption) and each one accepted for it (after
    /// decryption and the source check). For tests that compare runs byte for byte.
    pub fn set_packet_tap(&mut self, tap: Option<PacketTap>) {
        self.tap = tap;
    }

    /// Our disco public key (publish it in our node).
    pub fn disco_public(&self) -> DiscoPublic {
        self.disco.public()
    }

    /// Policy: while blocked, no peer goes direct and no disco pings are sent.
    pub fn set_direct_blocked(&mut self, now: Instant, blocked: bool) {
        self.direct_blocked = blocked;
        for p in self.peers.values_mut() {
            p.pathsel.set_blocked(now, blocked);
        }
        self.drain_paths();
    }

    /// Whether direct paths are blocked by policy.
    pub fn direct_blocked(&self) -> bool {
        self.direct_blocked
    }

    /// Our UDP endpoints (interface addresses and the STUN mapping), for CallMeMaybe.
    pub fn set_local_endpoints(&mut self, now: Instant, endpoints: Vec<SocketAddr>) {
        self.need_endpoints = false;
        self.local_endpoints_at = Some(now);
        for p in self.peers.values_mut() {
            p.pathsel
                .set_local_endpoints(now, endpoints.iter().copied());
        }
        self.local_endpoints = endpoints;
        self.drain_paths();
    }

    /// Our node key.
    pub fn public_key(&self) -> NodePublic {
        self.public
    }

    /// Our tailnet address.
    pub fn ip(&self) -> Ipv6Addr {
        self.netstack.ip()
    }

    /// Our home DERP region (0 while unknown): used for peers whose home is unknown.
    pub fn home_region(&self) -> u32 {
        self.home_region
    }

    /// Sets our home DERP region.
    pub fn set_home_region(&mut self, region: u32) {
        self.home_region = region;
    }

    /// The IP stack, for socket operations.
    pub fn netstack(&mut self) -> &mut Netstack {
        &mut self.netstack
    }

    /// Ids of the peers we know.
    pub fn peer_ids(&self) -> Vec<Uuid> {
        self.peers.keys().copied().collect()
    }

    /// Whether peer `id` is known.
    pub fn has_peer(&self, id: Uuid) -> bool {
        self.peers.contains_key(&id)
    }

    /// The peer owning tailnet address `ip`.
    pub fn peer_by_ip(&self, ip: Ipv6Addr) -> Option<Uuid> {
        self.by_ip.get(&ip).copied()
    }

    /// The path to peer `id` and whether its session is up.
    pub fn path(&self, id: Uuid) -> Option<PathInfo> {
        let p = self.peers.get(&id)?;
        Some(PathInfo {
            current: p.path(self.home_region),
            home_region: p.cfg.home_region,
            handshake_done: p.session_up,
        })
    }

    /// Our UDP endpoints as last given to [`Core::set_local_endpoints`].
    pub fn local_endpoints(&self) -> &[SocketAddr] {
        &self.local_endpoints
    }

    /// What is known about peer `id`, for diagnostics.
    pub fn peer_status(&self, id: Uuid) -> Option<PeerStatus> {
        let p = self.peers.get(&id)?;
        Some(PeerStatus {
            current: p.path(self.home_region),
            home_region: p.cfg.home_region,
            has_disco: p.disco_box.is_some(),
            endpoints: p.cfg.endpoints.clone(),
            candidates: p.pathsel.candidates().collect(),
            best_addr: p.pathsel.best().map(|b| b.addr),
            last_handshake: p.tunn.time_since_last_handshake(),
            direct_blocked: p.pathsel.is_blocked(),
            mapping_varies_by_dest_ip: p.cfg.mapping_varies_by_dest_ip,
        })
    }

    /// A datagram arrived over DERP `region` from node `src`: WireGuard or disco.
    pub fn handle_derp(&mut self, now: Instant, region: u32, src: NodePublic, data: &[u8]) {
        let Some(&id) = self.by_key.get(&src) else {
            trace!(key = %src.short(), region, "dropping packet from an unknown node");
            return;
        };
        if disco::looks_like_disco(data) {
            self.handle_disco(now, id, Via::Derp, region, data);
        } else {
            self.handle_wg(now, id, derp_addr(region), region, data);
        }
        self.drain_paths();
    }

    /// A datagram arrived on our UDP socket from `src` (STUN answers are the driver's
    /// business and are ignored here).
    pub fn handle_udp(&mut self, now: Instant, src: SocketAddr, data: &[u8]) {
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        match disco::classify(data) {
            PacketKind::Disco => {
                let Some(id) = disco::sender_key(data).and_then(|k| self.by_disco.get(&k).copied())
                else {
                    trace!(%src, "dropping disco packet from an unknown disco key");
                    return;
                };
                let region = self
                    .peers
                    .get(&id)
                    .map_or(self.home_region, |p| p.region(self.home_region));
                self.handle_disco(now, id, Via::Udp(src), region, data);
            }
            PacketKind::WireGuard => {
                let Some(&id) = self.by_udp.get(&src) else {
                    trace!(%src, "dropping WireGuard packet from an unknown UDP source");
                    return;
                };
                self.handle_wg(now, id, src, 0, data);
            }
            PacketKind::Stun | PacketKind::Unknown => {
                trace!(%src, "ignoring a UDP datagram that is neither disco nor WireGuard");
            }
        }
        self.drain_paths();
    }

    /// A WireGuard datagram from peer `id`; `src` keys the rate limiter.
    fn handle_wg(&mut self, now: Instant, id: Uuid, src: SocketAddr, region: u32, data: &[u8]) {
        let home = self.home_region;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let packet = Packet::from_bytes(BytesMut::from(data));
        let kind = match self.rate_limiter.verify_packet(src, packet) {
            Ok(k) => k,
            Err(TunnResult::WriteToNetwork(reply)) => {
                push_transmit(&mut self.transmits, peer, home, reply, now);
                return;
            }
            Err(e) => {
                debug!(peer = %id, region, %src, error = ?e, "dropping invalid WireGuard packet");
                return;
            }
        };
        match peer.tunn.handle_incoming_packet(kind) {
            TunnResult::Done => {}
            TunnResult::Err(e) => {
                debug!(peer = %id, region, %src, error = ?e, "WireGuard rejected a packet")
            }
            TunnResult::WriteToNetwork(reply) => {
                push_transmit(&mut self.transmits, peer, home, reply, now)
            }
            TunnResult::WriteToTunnel(ip) => {
                if !ip.is_empty() {
                    match ipv6_src_dst(&ip) {
                        Some((src_ip, _)) if peer.cfg.addresses.contains(&src_ip) => {
                            let mut ip = ip.into_bytes();
                            let ip = std::mem::take(ip.buf_mut());
                            if let Some(tap) = self.tap.as_mut() {
                                tap(now, TapDirection::Inbound, &ip);
                            }
                            self.netstack.push_inbound(ip);
                        }
                        other => {
                            debug!(peer = %id, src = ?other.map(|a| a.0), "dropping packet with a source address the peer does not own");
                        }
                    }
                }
            }
        }
        let queued: Vec<WgKind> = peer.tunn.get_queued_packets(&mut self.mtu).collect();
        for queued in queued {
            push_transmit(&mut self.transmits, peer, home, queued, now);
        }
        Self::note_session(&mut self.events, peer);
    }

    /// Runs everything due at `now`: the netstack, encryption of what it sent, WireGuard
    /// timers and handshake retries.
    pub fn poll(&mut self, now: Instant) {
        self.netstack.poll(now);
        while let Some(p) = self.netstack.pop_outbound() {
            self.route_outbound(now, p);
        }
        self.run_timers(now);
        self.drain_paths();
    }

    fn route_outbound(&mut self, now: Instant, packet: BytesMut) {
        if let Some(tap) = self.tap.as_mut() {
            tap(now, TapDirection::Outbound, &packet);
        }
        let Some((_, dst)) = ipv6_src_dst(&packet) else {
            trace!("dropping outbound packet that is not IPv6");
            return;
        };
        let Some(id) = self.by_ip.get(&dst).copied() else {
            trace!(%dst, "no peer for destination; dropping");
            return;
        };
        let home = self.home_region;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let p = Packet::from_bytes(packet);
        if let Some(kind) = peer.tunn.handle_outgoing_packet(p, Some(&mut self.mtu)) {
            push_transmit(&mut self.transmits, peer, home, kind, now);
        } else if peer.init_sent.is_none() && !peer.tunn.has_active_session() {
            // Queued behind a handshake we are not retrying (never started by us, or
            // given up on): a packet explicitly queued restarts the attempts, as in
            // WireGuard.
            peer.init_started = None;
            if let Some(init) = peer.tunn.format_handshake_initiation(true) {
                push_transmit(&mut self.transmits, peer, home, init.into(), now);
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Core::poll`] must run next at the latest.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        let mut t = self.netstack.poll_at(now);
        let mut min = |x: Instant| t = Some(t.map_or(x, |t: Instant| t.min(x)));
        if !self.peers.is_empty() {
            min(self.next_wg_tick);
        }
        for p in self.peers.values() {
            if let Some(sent) = p.init_sent {
                min(sent + REKEY_TIMEOUT);
            }
            if let Some(at) = p.pathsel.poll_timeout() {
                min(at);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests;
