//! Two sans-IO nodes that know each other as peers over DERP: the setup the simulator
//! tests and `benches/dataplane.rs` share (included by `#[path]`).

use std::time::Instant;

use tether_coord::proto::tailnet_ip;
use tether_key::{NodePrivate, NodePublic};
use tether_tailnet::core::{Core, PeerConfig};
use uuid::Uuid;

/// Two nodes, ids `(seed, 1)` and `(seed, 2)`, home region `region`, each with the other
/// as a DERP-only peer; their public keys and ids.
pub fn pair(seed: u64, region: u32, now: Instant) -> (Vec<Core>, Vec<NodePublic>, Vec<Uuid>) {
    let mut nodes = Vec::new();
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for i in 0..2u64 {
        let private = NodePrivate::generate();
        let id = Uuid::from_u64_pair(seed, i + 1);
        let mut core = Core::new(&private, tailnet_ip(id), now, seed.wrapping_add(i));
        core.set_home_region(region);
        keys.push(private.public());
        ids.push(id);
        nodes.push(core);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        let j = 1 - i;
        node.upsert_peer(PeerConfig {
            id: ids[j],
            key: keys[j],
            home_region: region,
            addresses: vec![tailnet_ip(ids[j])],
            disco: None,
            endpoints: Vec::new(),
            mapping_varies_by_dest_ip: None,
        });
    }
    (nodes, keys, ids)
}
