//! What a node may claim: the coordinator refuses oversize nodes and addresses that are
//! not derived from the peer's id, and passes on nothing of them.

use std::collections::BTreeMap;

use tether_key::DiscoPublic;

use super::*;
use tether_proto::coord::{PeerUpdateKind, Request, Response};

const USER: Uuid = Uuid::from_u128(0xa);
const AGENT: Uuid = Uuid::from_u128(0x1a);
const CLIENT: Uuid = Uuid::from_u128(0x2a);

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn node(id: Uuid, key: u8) -> Node {
    let ip = format!("{}/128", proto::tailnet_ip(id));
    Node {
        id,
        key: NodePublic::from_bytes([key; 32]),
        disco: DiscoPublic::from_bytes([key + 100; 32]),
        preferred_derp: 1,
        derp_latency: BTreeMap::new(),
        addresses: vec![ip.clone()],
        allowed_ips: vec![ip],
        endpoints: vec!["192.0.2.1:41641".into(), "[2001:db8::1]:41641".into()],
        mapping_varies_by_dest_ip: None,
    }
}

fn drain(c: &mut Coordinator) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

/// A client with a tunnel to a connected agent; outputs drained.
fn tunnel() -> (Coordinator, Instant) {
    let now = t0();
    let mut c = Coordinator::new(Config::default(), DerpMap::default());
    c.set_agent_owner(AGENT, USER);
    c.connect(1, Role::Agent { id: AGENT }, now).expect("agent");
    c.connect(
        2,
        Role::Client {
            id: CLIENT,
            user: USER,
        },
        now,
    )
    .expect("client");
    c.handle_request(2, Request::AddTunnel { id: AGENT }, now);
    drain(&mut c);
    (c, now)
}

/// Sends `node` as the agent's; the errors the agent got and whether the client heard of it.
fn offer(c: &mut Coordinator, now: Instant, node: Node) -> (Vec<String>, bool) {
    offer_on(c, now, 1, node, 2)
}

/// Sends `node` on `from`; the errors `from` got and whether `to` heard of it.
fn offer_on(
    c: &mut Coordinator,
    now: Instant,
    from: ConnId,
    node: Node,
    to: ConnId,
) -> (Vec<String>, bool) {
    c.handle_request(from, Request::UpdateSelf { node }, now);
    let out = drain(c);
    let errors = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                conn,
                msg: Response::Error { message },
            } if *conn == from => Some(message.clone()),
            _ => None,
        })
        .collect();
    let heard = out.iter().any(|o| {
        matches!(o, Output::Send { conn, msg: Response::PeerUpdates { updates } }
            if *conn == to && updates.iter().any(|u| u.kind == PeerUpdateKind::Node))
    });
    (errors, heard)
}

#[test]
fn a_legal_node_is_passed_on() {
    let (mut c, now) = tunnel();
    let (errors, heard) = offer(&mut c, now, node(AGENT, 1));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(heard);
}

#[test]
fn a_node_with_300k_endpoints_is_refused() {
    let (mut c, now) = tunnel();
    let mut n = node(AGENT, 1);
    n.endpoints = (0..300_000u32)
        .map(|i| {
            format!(
                "10.{}.{}.{}:{}",
                i >> 16,
                (i >> 8) & 0xff,
                i & 0xff,
                1 + i % 60000
            )
        })
        .collect();
    let (errors, heard) = offer(&mut c, now, n);
    assert!(!heard, "an oversize node was passed on");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("endpoints"), "{errors:?}");
    assert!(
        c.agent_status(AGENT).and_then(|s| s.node).is_none(),
        "an oversize node was kept"
    );
    assert!(!c.is_known_key(&NodePublic::from_bytes([1; 32])));
}

#[test]
fn endpoint_count_limit_is_exact() {
    let (mut c, now) = tunnel();
    let mut n = node(AGENT, 1);
    n.endpoints = (0..crate::limits::MAX_ENDPOINTS)
        .map(|i| format!("192.0.2.1:{}", 1000 + i))
        .collect();
    let (errors, heard) = offer(&mut c, now, n.clone());
    assert!(errors.is_empty() && heard, "{errors:?}");
    n.endpoints.push("192.0.2.2:1".into());
    let (errors, heard) = offer(&mut c, now, n);
    assert!(!heard && errors.len() == 1, "{errors:?}");
}

#[test]
fn an_agent_may_claim_only_the_address_derived_from_its_id() {
    let (mut c, now) = tunnel();
    let victim = format!("{}/128", proto::tailnet_ip(CLIENT));
    for (addresses, allowed_ips) in [
        (vec![victim.clone()], vec![]),
        (vec![], vec![victim.clone()]),
        (vec![], vec!["::/0".to_string()]),
        (vec!["fd7a:115c:a1e0::/48".to_string()], vec![]),
        (vec!["not an address".to_string()], vec![]),
    ] {
        let mut n = node(AGENT, 1);
        n.addresses.extend(addresses.clone());
        n.allowed_ips.extend(allowed_ips.clone());
        let (errors, heard) = offer(&mut c, now, n);
        assert!(!heard, "{addresses:?} {allowed_ips:?} was passed on");
        assert_eq!(errors.len(), 1, "{addresses:?} {allowed_ips:?}: {errors:?}");
        assert!(errors[0].contains("address"), "{errors:?}");
    }
    // The bare address (no prefix length) and no addresses at all are fine.
    let mut n = node(AGENT, 1);
    n.addresses = vec![proto::tailnet_ip(AGENT).to_string()];
    n.allowed_ips = vec![];
    let (errors, heard) = offer(&mut c, now, n);
    assert!(errors.is_empty() && heard, "{errors:?}");
}

#[test]
fn a_client_keeps_any_one_tailnet_address_but_no_agents() {
    let (mut c, now) = tunnel();
    // A client that reconnected keeps the address of its first connection's id.
    let earlier = proto::tailnet_ip(Uuid::from_u128(0x2a0));
    let mut n = node(CLIENT, 2);
    n.addresses = vec![format!("{earlier}/128")];
    n.allowed_ips = vec![format!("{earlier}/128")];
    let (errors, heard) = offer_on(&mut c, now, 2, n, 1);
    assert!(errors.is_empty() && heard, "{errors:?}");
    for bad in [
        vec![format!("{}/128", proto::tailnet_ip(AGENT))],
        vec![
            format!("{earlier}/128"),
            format!("{}/128", proto::tailnet_ip(CLIENT)),
        ],
        vec!["10.0.0.1/32".to_string()],
    ] {
        let mut n = node(CLIENT, 2);
        n.addresses = bad.clone();
        n.allowed_ips = vec![];
        let (errors, heard) = offer_on(&mut c, now, 2, n, 1);
        assert!(!heard, "{bad:?} was passed on");
        assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
    }
    // Once the workspace is gone, its address is no agent's any more.
    c.remove_agent(AGENT, now);
    drain(&mut c);
    let mut n = node(CLIENT, 2);
    n.addresses = vec![format!("{}/128", proto::tailnet_ip(AGENT))];
    n.allowed_ips = vec![];
    let (errors, _) = offer_on(&mut c, now, 2, n, 1);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn oversize_strings_and_maps_are_refused() {
    let (mut c, now) = tunnel();
    let mut n = node(AGENT, 1);
    n.endpoints = vec![format!("192.0.2.1:{}", "1".repeat(10_000))];
    assert_eq!(offer(&mut c, now, n).0.len(), 1);
    let mut n = node(AGENT, 1);
    n.derp_latency = (0..100_000).map(|i| (format!("{i}-v4"), 0.01)).collect();
    assert_eq!(offer(&mut c, now, n).0.len(), 1);
}

#[test]
fn many_peer_updates_are_sent_in_bounded_batches() {
    let now = t0();
    let mut c = Coordinator::new(Config::default(), DerpMap::default());
    c.set_agent_owner(AGENT, USER);
    let clients = 2 * crate::limits::MAX_UPDATES_PER_MESSAGE + 2;
    for i in 0..clients {
        let (conn, id) = (10 + i as ConnId, Uuid::from_u128(0x1000 + i as u128));
        c.connect(conn, Role::Client { id, user: USER }, now)
            .expect("client");
        c.handle_request(conn, Request::AddTunnel { id: AGENT }, now);
        let key = u8::try_from(i + 1).expect("key");
        c.handle_request(
            conn,
            Request::UpdateSelf {
                node: node(id, key),
            },
            now,
        );
    }
    drain(&mut c);
    c.connect(1, Role::Agent { id: AGENT }, now).expect("agent");
    let batches: Vec<usize> = drain(&mut c)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send {
                conn: 1,
                msg: Response::PeerUpdates { updates },
            } => Some(updates.len()),
            _ => None,
        })
        .collect();
    assert_eq!(batches.iter().sum::<usize>(), clients, "{batches:?}");
    assert_eq!(batches.len(), 3, "{batches:?}");
    assert!(
        batches
            .iter()
            .all(|n| *n <= crate::limits::MAX_UPDATES_PER_MESSAGE)
    );
}
