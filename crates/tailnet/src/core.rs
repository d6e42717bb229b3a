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
//! One caveat about time: gotatun's `Tunn` keeps its own monotonic clock for the
//! WireGuard protocol timers (rekey, keepalive, session expiry), which it reads when
//! [`Core::poll`] calls `update_timers`. The retransmission of our handshake
//! initiations, which is what matters for getting a session up over a lossy path, is
//! driven here by the time passed in, so simulations on a virtual clock recover from
//! lost handshakes deterministically.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gotatun::noise::errors::WireGuardError;
use gotatun::noise::index_table::IndexTable;
use gotatun::noise::rate_limiter::RateLimiter;
use gotatun::noise::{Tunn, TunnResult};
use gotatun::packet::{Packet, WgKind};
use gotatun::tun::MtuWatcher;
use gotatun::x25519;
use tether_key::{DiscoPrivate, DiscoPublic, NodePrivate, NodePublic};
use tracing::{debug, info, trace};
use uuid::Uuid;

use crate::disco::{self, Message, PacketKind, PeerBox, Ping, Pong, TxId};
use crate::netstack::{MTU, Netstack};
use crate::path::{self, PathInfo, PathKind, PeerStatus};
use crate::pathsel::{Output, PathSel, SendDecision, Via};

/// Resend our handshake initiation after this long without an answer (WireGuard's
/// REKEY_TIMEOUT).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Stop retrying a handshake after this long (WireGuard's REKEY_ATTEMPT_TIME).
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// How often gotatun's own WireGuard timers are serviced.
pub const WG_TICK: Duration = Duration::from_secs(1);
/// Handshake initiations accepted per second before cookies are demanded.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// UDP source addresses remembered per peer (from authenticated disco packets).
const MAX_UDP_SOURCES: usize = 64;
/// Pings of [`Core::ping`] awaiting a pong, at most; the oldest is forgotten first.
const MAX_USER_PINGS: usize = 256;
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

/// A ping sent with [`Core::ping`], awaiting its pong.
#[derive(Debug, Clone, Copy)]
struct UserPing {
    peer: Uuid,
    at: Instant,
    via: PathKind,
}

struct Peer {
    cfg: PeerConfig,
    tunn: Tunn,
    /// When our latest handshake initiation went out, while unanswered.
    init_sent: Option<Instant>,
    /// When the current series of initiations started.
    init_started: Option<Instant>,
    session_up: bool,
    /// Path selection between DERP and direct UDP.
    pathsel: PathSel,
    /// The disco box with the peer, when it has a disco key.
    disco_box: Option<PeerBox>,
    /// The direct address in use, as last reported by `pathsel`.
    direct: Option<SocketAddr>,
    /// UDP sources the peer proved with disco: WireGuard from them is the peer's.
    udp_sources: BTreeSet<SocketAddr>,
}

impl Peer {
    fn region(&self, fallback_region: u32) -> u32 {
        if self.cfg.home_region != 0 {
            self.cfg.home_region
        } else {
            fallback_region
        }
    }

    fn path(&self, fallback_region: u32) -> PathKind {
        match self.direct {
            Some(addr) => PathKind::Direct { addr },
            None => PathKind::Derp {
                region: self.region(fallback_region),
            },
        }
    }

    fn candidates_from_cfg(&self) -> Vec<SocketAddr> {
        if self.disco_box.is_some() {
            self.cfg.endpoints.clone()
        } else {
            Vec::new()
        }
    }
}

/// A map looked up for every packet. foldhash, seeded per map, costs a fraction of
/// SipHash on these short keys; the keys come from authenticated peers, and every such
/// map is bounded.
pub(crate) type PacketMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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
    by_disco: HashMap<DiscoPublic, Uuid>,
    by_udp: PacketMap<SocketAddr, Uuid>,
    direct_blocked: bool,
    local_endpoints: Vec<SocketAddr>,
    local_endpoints_at: Option<Instant>,
    need_endpoints: bool,
    seed: u64,
    pathsel_count: u64,
    /// The latest time passed in, for calls that take none.
    last_now: Instant,
    /// Pings of [`Core::ping`] awaiting their pong.
    user_pings: HashMap<TxId, UserPing>,
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

fn push_transmit(
    out: &mut VecDeque<Transmit>,
    peer: &mut Peer,
    fallback_region: u32,
    kind: WgKind,
    now: Instant,
) {
    if matches!(kind, WgKind::HandshakeInit(_)) {
        peer.init_sent = Some(now);
        peer.init_started.get_or_insert(now);
        debug!(peer = %peer.cfg.id, "sending WireGuard handshake initiation");
    }
    let mut packet: Packet = kind.into();
    // Takes the buffer over instead of copying it.
    let data = Vec::from(std::mem::take(packet.buf_mut()));
    let region = peer.region(fallback_region);
    let mut push = |path: PathKind, data: Vec<u8>| {
        out.push_back(Transmit {
            peer: peer.cfg.id,
            dst: peer.cfg.key,
            path,
            data,
        })
    };
    match peer.pathsel.on_send(now) {
        SendDecision::Direct(addr) => push(PathKind::Direct { addr }, data),
        SendDecision::Derp { also } => {
            if let Some(addr) = also {
                push(PathKind::Direct { addr }, data.clone());
            }
            push(PathKind::Derp { region }, data);
        }
    }
}

/// Records a UDP source the peer proved with disco.
fn note_udp_source(by_udp: &mut PacketMap<SocketAddr, Uuid>, peer: &mut Peer, src: SocketAddr) {
    if peer.udp_sources.contains(&src) {
        by_udp.insert(src, peer.cfg.id);
        return;
    }
    if peer.udp_sources.len() >= MAX_UDP_SOURCES
        && let Some(old) = peer.udp_sources.pop_first()
        && by_udp.get(&old) == Some(&peer.cfg.id)
    {
        by_udp.remove(&old);
    }
    peer.udp_sources.insert(src);
    by_udp.insert(src, peer.cfg.id);
}

impl Core {
    /// A node with this key and tailnet address; `seed` drives the netstack's choices.
    pub fn new(private: &NodePrivate, ip: Ipv6Addr, now: Instant, seed: u64) -> Self {
        let public = private.public();
        let rate_limiter = Arc::new(RateLimiter::new(
            &x25519::PublicKey::from(*public.as_bytes()),
            HANDSHAKE_RATE_LIMIT,
        ));
        Self {
            private: private.to_bytes(),
            public,
            home_region: 0,
            peers: PacketMap::default(),
            by_key: PacketMap::default(),
            by_ip: PacketMap::default(),
            index_table: IndexTable::from_os_rng(),
            rate_limiter,
            netstack: Netstack::new(ip, now, seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            mtu: MtuWatcher::new(MTU as u16),
            next_wg_tick: now + WG_TICK,
            disco: DiscoPrivate::generate(),
            by_disco: HashMap::new(),
            by_udp: PacketMap::default(),
            direct_blocked: false,
            local_endpoints: Vec::new(),
            local_endpoints_at: None,
            need_endpoints: false,
            seed,
            pathsel_count: 0,
            last_now: now,
            user_pings: HashMap::new(),
        }
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

    fn new_pathsel(&mut self, now: Instant) -> PathSel {
        self.pathsel_count += 1;
        let mut ps =
            PathSel::new(self.seed ^ self.pathsel_count.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if self.direct_blocked {
            ps.set_blocked(now, true);
        }
        if let Some(at) = self.local_endpoints_at {
            ps.set_local_endpoints(at, self.local_endpoints.iter().copied());
        }
        ps
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

    /// Sends a disco ping to peer `id` on its primary path: the trusted direct address,
    /// else DERP (starting discovery, so later pings may go direct). The pong arrives
    /// as [`Event::Pong`] with the returned TxID; `None` when the peer is unknown or has
    /// no disco key. A ping without a pong is forgotten after [`USER_PING_TTL`] or
    /// with [`Core::cancel_ping`].
    pub fn ping(&mut self, now: Instant, id: Uuid) -> Option<TxId> {
        self.last_now = now;
        let me = self.public;
        let home = self.home_region;
        let peer = self.peers.get_mut(&id)?;
        let bx = peer.disco_box.as_ref()?;
        let (tx_id, to) = peer.pathsel.ping_primary(now);
        let via = match to {
            Some(addr) => PathKind::Direct { addr },
            None => PathKind::Derp {
                region: peer.region(home),
            },
        };
        let data = bx.seal(&Message::Ping(Ping {
            tx_id,
            node_key: me,
            padding: 0,
        }));
        debug!(peer = %id, %via, "ping");
        self.transmits.push_back(Transmit {
            peer: id,
            dst: peer.cfg.key,
            path: via,
            data,
        });
        self.user_pings
            .retain(|_, u| now.saturating_duration_since(u.at) < USER_PING_TTL);
        if self.user_pings.len() >= MAX_USER_PINGS
            && let Some(oldest) = self
                .user_pings
                .iter()
                .min_by_key(|(_, u)| u.at)
                .map(|(t, _)| *t)
        {
            self.user_pings.remove(&oldest);
        }
        self.user_pings.insert(
            tx_id,
            UserPing {
                peer: id,
                at: now,
                via,
            },
        );
        self.drain_paths();
        Some(tx_id)
    }

    /// Forgets a ping of [`Core::ping`] (its pong, if it still comes, is not reported).
    pub fn cancel_ping(&mut self, tx_id: TxId) {
        self.user_pings.remove(&tx_id);
    }

    /// Adds a peer or updates it. A changed key starts a fresh tunnel.
    pub fn upsert_peer(&mut self, mut cfg: PeerConfig) {
        if cfg.addresses.is_empty() {
            cfg.addresses.push(tether_proto::coord::tailnet_ip(cfg.id));
        }
        if cfg.key == self.public {
            debug!(peer = %cfg.id, "ignoring a peer with our own key");
            return;
        }
        if let Some(&owner) = self.by_key.get(&cfg.key)
            && owner != cfg.id
        {
            // The coordinator keeps keys unique among live peers, so the key's old
            // owner is stale: a client that reconnected and was given a new id.
            info!(old = %owner, new = %cfg.id, "peer reappeared under a new id");
            self.remove_peer(owner);
        }
        let id = cfg.id;
        let now = self.last_now;
        match self.peers.get_mut(&id) {
            Some(p) if p.cfg.key == cfg.key => {
                if p.cfg.home_region != cfg.home_region {
                    info!(peer = %id, from = p.cfg.home_region, to = cfg.home_region, "peer moved home DERP region");
                }
                for a in &p.cfg.addresses {
                    self.by_ip.remove(a);
                }
                for a in &cfg.addresses {
                    self.by_ip.insert(*a, id);
                }
                let disco_changed = p.cfg.disco != cfg.disco;
                p.cfg = cfg;
                if disco_changed {
                    self.reset_disco(id, now);
                } else {
                    let eps = p.candidates_from_cfg();
                    p.pathsel.set_endpoints(now, eps);
                }
            }
            _ => {
                self.remove_peer(id);
                let tunn = Tunn::new(
                    x25519::StaticSecret::from(self.private),
                    x25519::PublicKey::from(*cfg.key.as_bytes()),
                    None,
                    None,
                    self.index_table.clone(),
                    self.rate_limiter.clone(),
                );
                info!(peer = %id, key = %cfg.key.short(), region = cfg.home_region, endpoints = cfg.endpoints.len(), "peer added");
                self.by_key.insert(cfg.key, id);
                for a in &cfg.addresses {
                    self.by_ip.insert(*a, id);
                }
                let pathsel = self.new_pathsel(now);
                self.peers.insert(
                    id,
                    Peer {
                        cfg,
                        tunn,
                        init_sent: None,
                        init_started: None,
                        session_up: false,
                        pathsel,
                        disco_box: None,
                        direct: None,
                        udp_sources: BTreeSet::new(),
                    },
                );
                self.reset_disco(id, now);
            }
        }
        self.drain_paths();
    }

    /// (Re)builds the disco state of peer `id` after its disco key changed.
    fn reset_disco(&mut self, id: Uuid, now: Instant) {
        let fresh = self.new_pathsel(now);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(old) = p.disco_box.take()
            && self.by_disco.get(&old.peer()) == Some(&id)
        {
            self.by_disco.remove(&old.peer());
        }
        for a in std::mem::take(&mut p.udp_sources) {
            if self.by_udp.get(&a) == Some(&id) {
                self.by_udp.remove(&a);
            }
        }
        p.pathsel = fresh;
        if p.direct.take().is_some() {
            info!(peer = %id, region = p.region(self.home_region), "path now DERP({})", p.region(self.home_region));
        }
        if let Some(key) = p.cfg.disco {
            p.disco_box = Some(PeerBox::new(&self.disco, key));
            self.by_disco.insert(key, id);
        }
        let eps = p.candidates_from_cfg();
        p.pathsel.set_endpoints(now, eps);
    }

    /// Forgets a peer and its tunnel. Returns whether it was known.
    pub fn remove_peer(&mut self, id: Uuid) -> bool {
        let Some(p) = self.peers.remove(&id) else {
            return false;
        };
        self.by_key.remove(&p.cfg.key);
        for a in &p.cfg.addresses {
            if self.by_ip.get(a) == Some(&id) {
                self.by_ip.remove(a);
            }
        }
        if let Some(b) = &p.disco_box
            && self.by_disco.get(&b.peer()) == Some(&id)
        {
            self.by_disco.remove(&b.peer());
        }
        for a in &p.udp_sources {
            if self.by_udp.get(a) == Some(&id) {
                self.by_udp.remove(a);
            }
        }
        info!(peer = %id, "peer removed");
        true
    }

    /// Starts a WireGuard handshake with `id` now (the peer said it is ready: it has just
    /// added us), unless one is in flight, and repeats discovery the peer may have
    /// dropped. Also with a session up: a peer that re-added us (say we rejoined under a
    /// new id) has a fresh tunnel and rejects that session.
    pub fn initiate_handshake(&mut self, id: Uuid, now: Instant) {
        self.last_now = now;
        let home = self.home_region;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.pathsel.on_peer_ready(now);
        if p.init_sent.is_none()
            && let Some(init) = p.tunn.format_handshake_initiation(false)
        {
            push_transmit(&mut self.transmits, p, home, init.into(), now);
        }
        self.drain_paths();
    }

    /// Our home DERP link just came (back) up: a handshake initiation sent while it was
    /// down, or while the relay did not admit us yet, was lost. Starts one now with every
    /// peer that has no session, instead of waiting for the retry timer (5 s).
    pub fn retry_handshakes(&mut self, now: Instant) {
        self.last_now = now;
        let home = self.home_region;
        for p in self.peers.values_mut() {
            if p.tunn.has_active_session() {
                continue;
            }
            if let Some(init) = p.tunn.format_handshake_initiation(true) {
                push_transmit(&mut self.transmits, p, home, init.into(), now);
            }
        }
        self.drain_paths();
    }

    /// A datagram arrived over DERP `region` from node `src`: WireGuard or disco.
    pub fn handle_derp(&mut self, now: Instant, region: u32, src: NodePublic, data: &[u8]) {
        self.last_now = now;
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
        self.last_now = now;
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

    fn handle_disco(&mut self, now: Instant, id: Uuid, via: Via, region: u32, data: &[u8]) {
        let blocked = self.direct_blocked;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(opened) = peer.disco_box.as_ref().map(|bx| bx.open(data)) else {
            trace!(peer = %id, "dropping disco from a peer without a disco key");
            return;
        };
        let msg = match opened {
            Ok(m) => m,
            Err(e) => {
                debug!(peer = %id, ?via, error = %e, "dropping a disco packet");
                return;
            }
        };
        let pong_path = |src: Option<SocketAddr>| match src {
            Some(addr) => PathKind::Direct { addr },
            None => PathKind::Derp { region },
        };
        match msg {
            Message::Ping(ping) => {
                if ping.node_key != peer.cfg.key {
                    debug!(peer = %id, "dropping a disco ping naming another node key");
                    return;
                }
                if blocked && matches!(via, Via::Udp(_)) {
                    trace!(peer = %id, "direct paths blocked; ignoring a UDP ping");
                    return;
                }
                let src = match via {
                    Via::Udp(a) => Some(a),
                    Via::Derp => None,
                };
                if let Some(a) = src {
                    note_udp_source(&mut self.by_udp, peer, a);
                }
                peer.pathsel.handle_ping(now, via);
                // The pong reports the source we saw (for DERP, none: unspecified).
                let seen = src.unwrap_or(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
                let Some(bx) = &peer.disco_box else { return };
                let pong = bx.seal(&Message::Pong(Pong {
                    tx_id: ping.tx_id,
                    src: seen,
                }));
                trace!(peer = %id, ?via, "answering a disco ping");
                self.transmits.push_back(Transmit {
                    peer: id,
                    dst: peer.cfg.key,
                    path: pong_path(src),
                    data: pong,
                });
            }
            Message::Pong(pong) => {
                if let Via::Udp(a) = via {
                    note_udp_source(&mut self.by_udp, peer, a);
                }
                let outcome = peer.pathsel.handle_pong(now, pong.tx_id, via);
                trace!(peer = %id, ?via, ?outcome, "disco pong");
                if let Some(u) = self.user_pings.get(&pong.tx_id)
                    && u.peer == id
                {
                    let latency = now.saturating_duration_since(u.at);
                    let via = u.via;
                    self.user_pings.remove(&pong.tx_id);
                    debug!(peer = %id, %via, ?latency, "pong");
                    self.events.push_back(Event::Pong {
                        peer: id,
                        tx_id: pong.tx_id,
                        pong: path::Pong { latency, via },
                    });
                }
            }
            Message::CallMeMaybe(cmm) => {
                if via != Via::Derp {
                    debug!(peer = %id, ?via, "dropping a CallMeMaybe that did not come over DERP");
                    return;
                }
                debug!(peer = %id, endpoints = cmm.endpoints.len(), "CallMeMaybe");
                peer.pathsel.handle_call_me_maybe(now, cmm.endpoints);
            }
        }
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
                            self.netstack.push_inbound(std::mem::take(ip.buf_mut()));
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

    /// Turns every peer's path-selection outputs into transmits, events and logs.
    fn drain_paths(&mut self) {
        let me = self.public;
        let home = self.home_region;
        for peer in self.peers.values_mut() {
            while let Some(out) = peer.pathsel.poll_output() {
                match out {
                    Output::SendPing { addr, txid } => {
                        let Some(bx) = &peer.disco_box else { continue };
                        let data = bx.seal(&Message::Ping(Ping {
                            tx_id: txid,
                            node_key: me,
                            padding: 0,
                        }));
                        trace!(peer = %peer.cfg.id, %addr, "disco ping");
                        self.transmits.push_back(Transmit {
                            peer: peer.cfg.id,
                            dst: peer.cfg.key,
                            path: PathKind::Direct { addr },
                            data,
                        });
                    }
                    Output::SendCallMeMaybe { endpoints } => {
                        let Some(bx) = &peer.disco_box else { continue };
                        debug!(peer = %peer.cfg.id, endpoints = endpoints.len(), "sending CallMeMaybe over DERP");
                        let data = bx.seal(&Message::CallMeMaybe(disco::CallMeMaybe { endpoints }));
                        self.transmits.push_back(Transmit {
                            peer: peer.cfg.id,
                            dst: peer.cfg.key,
                            path: PathKind::Derp {
                                region: peer.region(home),
                            },
                            data,
                        });
                    }
                    Output::NeedFreshEndpoints => {
                        if !self.need_endpoints {
                            self.need_endpoints = true;
                            self.events.push_back(Event::NeedFreshEndpoints);
                        }
                    }
                    Output::PathChanged { direct } => {
                        peer.direct = direct;
                        let path = peer.path(home);
                        match direct {
                            Some(addr) => info!(peer = %peer.cfg.id, "path now direct via {addr}"),
                            None => {
                                info!(peer = %peer.cfg.id, "path now DERP({})", peer.region(home))
                            }
                        }
                        self.events.push_back(Event::PathChanged {
                            peer: peer.cfg.id,
                            path,
                        });
                    }
                }
            }
        }
    }

    fn note_session(events: &mut VecDeque<Event>, peer: &mut Peer) {
        if !peer.session_up && peer.tunn.has_active_session() {
            peer.session_up = true;
            peer.init_sent = None;
            peer.init_started = None;
            info!(peer = %peer.cfg.id, "WireGuard session up");
            events.push_back(Event::SessionUp { peer: peer.cfg.id });
        } else if peer.session_up && peer.tunn.time_since_last_handshake().is_none() {
            peer.session_up = false;
            debug!(peer = %peer.cfg.id, "WireGuard session gone");
        }
    }

    /// Runs everything due at `now`: the netstack, encryption of what it sent, WireGuard
    /// timers and handshake retries.
    pub fn poll(&mut self, now: Instant) {
        self.last_now = now;
        self.netstack.poll(now);
        while let Some(p) = self.netstack.pop_outbound() {
            self.route_outbound(now, p);
        }
        self.run_timers(now);
        self.drain_paths();
    }

    fn route_outbound(&mut self, now: Instant, packet: BytesMut) {
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

    fn run_timers(&mut self, now: Instant) {
        let home = self.home_region;
        let wg_tick = now >= self.next_wg_tick;
        if wg_tick {
            self.next_wg_tick = now + WG_TICK;
        }
        for peer in self.peers.values_mut() {
            if peer.pathsel.poll_timeout().is_some_and(|t| t <= now) {
                peer.pathsel.handle_timeout(now);
            }
            Self::note_session(&mut self.events, peer);
            if let (Some(sent), Some(started)) = (peer.init_sent, peer.init_started) {
                if now.saturating_duration_since(started) >= REKEY_ATTEMPT_TIME {
                    debug!(peer = %peer.cfg.id, "giving up on the handshake");
                    peer.init_sent = None;
                    peer.init_started = None;
                    self.events
                        .push_back(Event::HandshakeGaveUp { peer: peer.cfg.id });
                } else if now.saturating_duration_since(sent) >= REKEY_TIMEOUT {
                    debug!(peer = %peer.cfg.id, "handshake unanswered; retrying");
                    if let Some(init) = peer.tunn.format_handshake_initiation(true) {
                        push_transmit(&mut self.transmits, peer, home, init.into(), now);
                    }
                }
            }
            if wg_tick {
                match peer.tunn.update_timers() {
                    Ok(Some(kind)) => push_transmit(&mut self.transmits, peer, home, kind, now),
                    Ok(None) => {}
                    Err(WireGuardError::ConnectionExpired) => {
                        if peer.session_up {
                            debug!(peer = %peer.cfg.id, "WireGuard session expired");
                            peer.session_up = false;
                        }
                    }
                    Err(e) => trace!(peer = %peer.cfg.id, error = ?e, "WireGuard timer error"),
                }
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
mod tests {
    use super::*;

    #[test]
    fn node_key_is_the_wireguard_static_key() {
        let private = NodePrivate::generate();
        let secret = x25519::StaticSecret::from(private.to_bytes());
        assert_eq!(
            x25519::PublicKey::from(&secret).to_bytes(),
            *private.public().as_bytes()
        );
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn a_key_reappearing_under_a_new_id_replaces_the_old_peer() {
        let now = Instant::now();
        let mut core = Core::new(&NodePrivate::generate(), Ipv6Addr::LOCALHOST, now, 1);
        let key = NodePrivate::generate().public();
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let addr = tether_proto::coord::tailnet_ip(old);
        let cfg = |id| PeerConfig {
            id,
            key,
            home_region: 7,
            addresses: vec![addr],
            disco: None,
            endpoints: Vec::new(),
            mapping_varies_by_dest_ip: None,
        };
        core.upsert_peer(cfg(old));
        assert_eq!(core.peer_by_ip(addr), Some(old));
        core.upsert_peer(cfg(new));
        assert!(!core.has_peer(old));
        assert_eq!(core.peer_by_ip(addr), Some(new));
        assert_eq!(
            core.path(new).map(|p| p.current),
            Some(PathKind::Derp { region: 7 })
        );
        // Our own key is never a peer.
        let mine = core.public_key();
        core.upsert_peer(PeerConfig {
            id: Uuid::from_u128(3),
            key: mine,
            home_region: 7,
            addresses: vec![],
            disco: None,
            endpoints: Vec::new(),
            mapping_varies_by_dest_ip: None,
        });
        assert!(!core.has_peer(Uuid::from_u128(3)));
        assert!(core.remove_peer(new));
        assert!(!core.remove_peer(new));
        assert_eq!(core.peer_by_ip(addr), None);
    }

    #[test]
    #[allow(clippy::disallowed_methods, clippy::unwrap_used)]
    fn disco_call_me_maybe_only_over_derp_and_pongs_take_the_ping_path() {
        let now = Instant::now();
        let (pa, pb) = (NodePrivate::generate(), NodePrivate::generate());
        let (ida, idb) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ip = tether_proto::coord::tailnet_ip;
        let a = Core::new(&pa, ip(ida), now, 1);
        let mut b = Core::new(&pb, ip(idb), now, 2);
        b.upsert_peer(PeerConfig {
            id: ida,
            key: pa.public(),
            home_region: 7,
            addresses: vec![],
            disco: Some(a.disco_public()),
            endpoints: vec![],
            mapping_varies_by_dest_ip: None,
        });
        let a_to_b = PeerBox::new(&a.disco, b.disco_public());
        let ep: SocketAddr = "192.0.2.9:41641".parse().unwrap();
        let cmm = a_to_b.seal(&Message::CallMeMaybe(disco::CallMeMaybe {
            endpoints: vec![ep],
        }));
        // Over UDP a CallMeMaybe is refused: no pings follow.
        b.handle_udp(now, ep, &cmm);
        b.poll(now);
        assert_eq!(b.poll_transmit(), None);
        // Over DERP it makes b ping the endpoint.
        b.handle_derp(now, 7, pa.public(), &cmm);
        let t = b.poll_transmit().expect("a ping");
        assert_eq!(t.path, PathKind::Direct { addr: ep });
        // a's box with b opens what b sealed to a.
        match a_to_b.open(&t.data).unwrap() {
            Message::Ping(p) => assert_eq!(p.node_key, pb.public()),
            other => panic!("expected a ping, got {other:?}"),
        }
        while b.poll_transmit().is_some() {}
        // A ping over UDP is answered over UDP to its source, one over DERP over DERP.
        let ping = a_to_b.seal(&Message::Ping(Ping {
            tx_id: disco::TxId([7; 12]),
            node_key: pa.public(),
            padding: 0,
        }));
        let src: SocketAddr = "198.51.100.1:1234".parse().unwrap();
        b.handle_udp(now, src, &ping);
        let t = b.poll_transmit().expect("a pong");
        assert_eq!(t.path, PathKind::Direct { addr: src });
        assert_eq!(
            a_to_b.open(&t.data).unwrap(),
            Message::Pong(Pong {
                tx_id: disco::TxId([7; 12]),
                src
            })
        );
        // ...and pinged back at once: that ping is what crosses a port-restricted NAT.
        let t = b.poll_transmit().expect("a ping back");
        assert_eq!(t.path, PathKind::Direct { addr: src });
        assert!(matches!(a_to_b.open(&t.data).unwrap(), Message::Ping(_)));
        assert_eq!(b.poll_transmit(), None);
        b.handle_derp(now, 7, pa.public(), &ping);
        let t = b.poll_transmit().expect("a pong");
        assert_eq!(t.path, PathKind::Derp { region: 7 });
        // WireGuard from a UDP source no peer proved with disco is dropped.
        b.handle_udp(now, "203.0.113.5:1".parse().unwrap(), &[1, 0, 0, 0, 0]);
        assert_eq!(b.poll_transmit(), None);
        // A blocked node ignores UDP pings.
        b.set_direct_blocked(now, true);
        b.handle_udp(now, src, &ping);
        assert_eq!(b.poll_transmit(), None);
        assert!(matches!(
            b.path(ida).unwrap().current,
            PathKind::Derp { region: 7 }
        ));
    }

    #[test]
    #[allow(clippy::disallowed_methods, clippy::unwrap_used)]
    fn a_user_ping_over_derp_reports_its_pong_by_txid() {
        let now = Instant::now();
        let (pa, pb) = (NodePrivate::generate(), NodePrivate::generate());
        let (ida, idb) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ip = tether_proto::coord::tailnet_ip;
        let mut a = Core::new(&pa, ip(ida), now, 1);
        let mut b = Core::new(&pb, ip(idb), now, 2);
        a.set_home_region(7);
        b.set_home_region(7);
        let ep: SocketAddr = "192.0.2.9:41641".parse().unwrap();
        a.upsert_peer(PeerConfig {
            id: idb,
            key: pb.public(),
            home_region: 7,
            addresses: vec![],
            disco: Some(b.disco_public()),
            endpoints: vec![ep],
            mapping_varies_by_dest_ip: None,
        });
        b.upsert_peer(PeerConfig {
            id: ida,
            key: pa.public(),
            home_region: 7,
            addresses: vec![],
            disco: Some(a.disco_public()),
            endpoints: vec![],
            mapping_varies_by_dest_ip: None,
        });
        assert_eq!(a.ping(now, Uuid::from_u128(9)), None, "unknown peer");
        let tx = a.ping(now, idb).expect("a ping");
        let sent: Vec<Transmit> = std::iter::from_fn(|| a.poll_transmit()).collect();
        // The ping over DERP, plus discovery of the published endpoint.
        let ping = sent
            .iter()
            .find(|t| t.path == PathKind::Derp { region: 7 })
            .expect("a DERP ping");
        assert!(sent.iter().any(|t| t.path == PathKind::Direct { addr: ep }));
        b.handle_derp(now, 7, pa.public(), &ping.data);
        let pong = b.poll_transmit().expect("a pong");
        assert_eq!(pong.path, PathKind::Derp { region: 7 });
        let later = now + Duration::from_millis(30);
        a.handle_derp(later, 7, pb.public(), &pong.data);
        let events: Vec<Event> = std::iter::from_fn(|| a.poll_event()).collect();
        assert!(
            events.contains(&Event::Pong {
                peer: idb,
                tx_id: tx,
                pong: path::Pong {
                    latency: Duration::from_millis(30),
                    via: PathKind::Derp { region: 7 }
                }
            }),
            "{events:?}"
        );
        // The same pong again reports nothing; a cancelled ping's pong neither.
        a.handle_derp(later, 7, pb.public(), &pong.data);
        assert!(!std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, Event::Pong { .. })));
        let tx2 = a.ping(later, idb).expect("a ping");
        let ping2 = std::iter::from_fn(|| a.poll_transmit())
            .find(|t| matches!(t.path, PathKind::Derp { .. }))
            .expect("a DERP ping");
        a.cancel_ping(tx2);
        b.handle_derp(later, 7, pa.public(), &ping2.data);
        let pong2 = b.poll_transmit().expect("a pong");
        a.handle_derp(later, 7, pb.public(), &pong2.data);
        assert!(!std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, Event::Pong { .. })));
        let st = a.peer_status(idb).expect("status");
        assert_eq!(st.endpoints, vec![ep]);
        assert!(st.has_disco && !st.direct_blocked);
        assert_eq!(st.last_handshake, None);
        assert_eq!(st.current, PathKind::Derp { region: 7 });
    }

    #[test]
    fn ipv6_addresses_are_read_from_the_header() {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[23] = 1;
        p[39] = 2;
        let (s, d) = ipv6_src_dst(&p).expect("v6");
        assert_eq!(s, Ipv6Addr::from(1u128));
        assert_eq!(d, Ipv6Addr::from(2u128));
        p[0] = 0x45;
        assert!(ipv6_src_dst(&p).is_none());
        assert!(ipv6_src_dst(&p[..10]).is_none());
    }
}
