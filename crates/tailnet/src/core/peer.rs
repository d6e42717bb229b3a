//! Peers: what the coordinator says of each (its tunnel, path selection and disco
//! box), adding, updating and removing them, and how their datagrams are routed.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use gotatun::noise::Tunn;
use gotatun::packet::{Packet, WgKind};
use gotatun::x25519;
use rand::RngCore;
use rand_09::SeedableRng;
use rand_09::rngs::StdRng as GotatunRng;
use tracing::{debug, info};
use uuid::Uuid;

use super::{Core, PacketMap, PeerConfig, Transmit};
use crate::disco::PeerBox;
use crate::path::PathKind;
use crate::pathsel::{PathSel, SendDecision};

/// UDP source addresses remembered per peer (from authenticated disco packets).
const MAX_UDP_SOURCES: usize = 64;

/// A peer: its configuration, WireGuard tunnel, handshake state and paths.
pub(super) struct Peer {
    pub(super) cfg: PeerConfig,
    pub(super) tunn: Tunn,
    /// When our latest handshake initiation went out, while unanswered.
    pub(super) init_sent: Option<Instant>,
    /// When the current series of initiations started.
    pub(super) init_started: Option<Instant>,
    pub(super) session_up: bool,
    /// Path selection between DERP and direct UDP.
    pub(super) pathsel: PathSel,
    /// The disco box with the peer, when it has a disco key.
    pub(super) disco_box: Option<PeerBox>,
    /// The direct address in use, as last reported by `pathsel`.
    pub(super) direct: Option<SocketAddr>,
    /// UDP sources the peer proved with disco: WireGuard from them is the peer's.
    pub(super) udp_sources: BTreeSet<SocketAddr>,
}

impl Peer {
    pub(super) fn region(&self, fallback_region: u32) -> u32 {
        if self.cfg.home_region != 0 {
            self.cfg.home_region
        } else {
            fallback_region
        }
    }

    pub(super) fn path(&self, fallback_region: u32) -> PathKind {
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

pub(super) fn push_transmit(
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
pub(super) fn note_udp_source(
    by_udp: &mut PacketMap<SocketAddr, Uuid>,
    peer: &mut Peer,
    src: SocketAddr,
) {
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
    fn new_pathsel(&mut self, now: Instant) -> PathSel {
        let mut ps = PathSel::new(self.rng.next_u64());
        if self.direct_blocked {
            ps.set_blocked(now, true);
        }
        if let Some(at) = self.local_endpoints_at {
            ps.set_local_endpoints(at, self.local_endpoints.iter().copied());
        }
        ps
    }

    /// Adds a peer or updates it at `now`. A changed key starts a fresh tunnel.
    pub fn upsert_peer(&mut self, now: Instant, mut cfg: PeerConfig) {
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
                let mut jitter = [0u8; 32];
                self.rng.fill_bytes(&mut jitter);
                let tunn = Tunn::new_with_rng(
                    x25519::StaticSecret::from(self.private),
                    x25519::PublicKey::from(*cfg.key.as_bytes()),
                    None,
                    None,
                    self.index_table.clone(),
                    self.rate_limiter.clone(),
                    GotatunRng::from_seed(jitter),
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

    /// Forgets a peer whose access was revoked, and resets every TCP connection with it
    /// first (its streams end instead of stalling). Returns whether it was known.
    pub fn revoke_peer(&mut self, id: Uuid) -> bool {
        let Some(addresses) = self.peers.get(&id).map(|p| p.cfg.addresses.clone()) else {
            return false;
        };
        let reset = self
            .netstack
            .reset_connections(|ip| addresses.contains(&ip));
        info!(peer = %id, connections = reset, "peer's access revoked; its connections reset");
        self.remove_peer(id)
    }

    /// Our own access ended (the coordinator ended our session): every TCP connection
    /// is reset and every peer forgotten.
    pub fn end_all(&mut self) {
        let reset = self.netstack.reset_connections(|_| true);
        let peers: Vec<Uuid> = self.peers.keys().copied().collect();
        info!(
            peers = peers.len(),
            connections = reset,
            "tailnet session ended; every peer forgotten"
        );
        for id in peers {
            self.remove_peer(id);
        }
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
}
