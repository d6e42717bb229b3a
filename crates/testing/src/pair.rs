//! Two sans-IO tailnet nodes that know each other as peers: the setup `tether-tailnet`'s
//! simulator tests and its dataplane bench share, and the [`Trace`] two runs of a
//! simulation are compared by.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tether_key::{NodePrivate, NodePublic};
use tether_proto::coord::tailnet_ip;
use tether_tailnet::core::{Core, Event, PeerConfig, Seed, TapDirection, Transmit};
use tether_tailnet::disco;
use tether_tailnet::path::PathKind;
use uuid::Uuid;

/// Two nodes, ids `(seed, 1)` and `(seed, 2)`, home region `region`, each with the other
/// as a DERP-only peer; their public keys and ids.
pub fn pair(seed: u64, region: u32, now: Instant) -> (Vec<Core>, Vec<NodePublic>, Vec<Uuid>) {
    pair_with(seed, seed, region, now, None, |_, _| {})
}

/// Mixed into a node's seed for its node key, which is the caller's to give [`Core`].
const NODE_KEY_SALT: u64 = 0x6e6f_6465_6b65_7973;

/// [`pair`] with node `i` seeded `core_seed + i` (its [`Seed`] and its node key) and
/// prepared by `setup`; with `direct` addresses, node `i` is at `direct[i]` and knows
/// the other's address and disco key.
pub fn pair_with(
    seed: u64,
    core_seed: u64,
    region: u32,
    now: Instant,
    direct: Option<&[SocketAddr]>,
    mut setup: impl FnMut(usize, &mut Core),
) -> (Vec<Core>, Vec<NodePublic>, Vec<Uuid>) {
    let mut nodes = Vec::new();
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for i in 0..2usize {
        let node_seed = core_seed.wrapping_add(i as u64);
        let private =
            NodePrivate::from_bytes(StdRng::seed_from_u64(node_seed ^ NODE_KEY_SALT).r#gen());
        let id = Uuid::from_u64_pair(seed, i as u64 + 1);
        let mut core = Core::new(&private, tailnet_ip(id), now, Seed::from_u64(node_seed));
        core.set_home_region(region);
        setup(i, &mut core);
        if let Some(addrs) = direct {
            core.set_local_endpoints(now, vec![addrs[i]]);
        }
        keys.push(private.public());
        ids.push(id);
        nodes.push(core);
    }
    let discos: Vec<_> = nodes.iter().map(Core::disco_public).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        let j = 1 - i;
        node.upsert_peer(
            now,
            PeerConfig {
                id: ids[j],
                key: keys[j],
                home_region: region,
                addresses: vec![tailnet_ip(ids[j])],
                disco: direct.map(|_| discos[j]),
                endpoints: direct.map_or_else(Vec::new, |a| vec![a[j]]),
                mapping_varies_by_dest_ip: None,
            },
        );
    }
    (nodes, keys, ids)
}

/// One datagram a node handed to the network, as a [`Trace`] compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    /// Virtual time since the simulation started.
    pub at: Duration,
    /// The sending node.
    pub from: usize,
    /// The path it was sent on.
    pub path: PathKind,
    /// Its length.
    pub len: usize,
    /// The bytes tether controls (see [`controlled`]).
    pub bytes: Vec<u8>,
}

/// A plaintext IP packet at a node's WireGuard boundary: virtual time since the start,
/// node, direction, bytes.
pub type PlaintextRecord = (Duration, usize, TapDirection, Vec<u8>);

/// Everything a simulation emitted that tether controls, to compare two runs byte for
/// byte, and the WireGuard datagrams whole (which gotatun's own randomness makes differ).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Every datagram either node sent, in order.
    pub wire: Vec<WireRecord>,
    /// Every plaintext IP packet at either node's WireGuard boundary.
    pub plaintext: Vec<PlaintextRecord>,
    /// Every event either node reported: virtual time, node, event.
    pub events: Vec<(Duration, usize, Event)>,
    /// The WireGuard datagrams, whole, in order.
    pub wireguard: Vec<Vec<u8>>,
}

impl Trace {
    /// The trace without the whole WireGuard datagrams: what two runs with one seed
    /// must agree on exactly.
    pub fn reproducible(&self) -> Trace {
        Trace {
            wireguard: Vec::new(),
            ..self.clone()
        }
    }
}

/// The bytes of a datagram that tether controls: a disco message whole (its nonce and
/// key derive from the node's seed); of WireGuard the header fields before the first
/// one that gotatun derives from its own randomness: the message type and the session
/// indices (from our seeded index table), and of a transport message its counter. The
/// ephemeral key, the encrypted static key, timestamp and MAC1 of a handshake message,
/// a cookie reply's nonce and cookie, and a transport message's ciphertext are left out.
pub fn controlled(data: &[u8]) -> Vec<u8> {
    if disco::looks_like_disco(data) {
        return data.to_vec();
    }
    let keep = match data.first() {
        // Initiation: type, reserved, sender index.
        Some(1) => 8,
        // Response: type, reserved, sender index, receiver index.
        Some(2) => 12,
        // Cookie reply: type, reserved, receiver index.
        Some(3) => 8,
        // Transport: type, reserved, receiver index, counter.
        Some(4) => 16,
        _ => data.len(),
    };
    data[..keep.min(data.len())].to_vec()
}

/// Builds a [`Trace`] as a simulation runs: taps both nodes' plaintext and is told of
/// their transmits and events.
pub struct Recorder {
    start: Instant,
    trace: Trace,
    plaintext: Arc<Mutex<Vec<PlaintextRecord>>>,
}

impl Recorder {
    /// A recorder for a simulation that started at `start`, tapping `nodes`.
    pub fn attach(start: Instant, nodes: &mut [Core]) -> Self {
        let plaintext = Arc::new(Mutex::new(Vec::new()));
        for (i, node) in nodes.iter_mut().enumerate() {
            let sink = plaintext.clone();
            node.set_packet_tap(Some(Box::new(move |at, dir, bytes: &[u8]| {
                let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                sink.push((at - start, i, dir, bytes.to_vec()));
            })));
        }
        Self {
            start,
            trace: Trace::default(),
            plaintext,
        }
    }

    /// Node `from` sent `t` at `now`.
    pub fn transmit(&mut self, now: Instant, from: usize, t: &Transmit) {
        if !disco::looks_like_disco(&t.data) {
            self.trace.wireguard.push(t.data.clone());
        }
        self.trace.wire.push(WireRecord {
            at: now - self.start,
            from,
            path: t.path,
            len: t.data.len(),
            bytes: controlled(&t.data),
        });
    }

    /// Node `node` reported `e` at `now`.
    pub fn event(&mut self, now: Instant, node: usize, e: &Event) {
        self.trace.events.push((now - self.start, node, e.clone()));
    }

    /// The trace so far.
    pub fn trace(&self) -> Trace {
        let mut t = self.trace.clone();
        t.plaintext = self
            .plaintext
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        t
    }
}
