//! Two sans-IO nodes that know each other as peers: the setup the simulator tests and
//! `benches/dataplane.rs` share (included by `#[path]`; each uses part of it).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tether_key::{NodePrivate, NodePublic};
use tether_proto::coord::tailnet_ip;
use tether_tailnet::core::{Core, PeerConfig, Seed};
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
