//! The node alone or in pairs: keys, peers replaced, disco over DERP and UDP, user pings.

use super::*;
use crate::disco::{Message, PeerBox, Ping, Pong};

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
    let mut core = Core::new(
        &NodePrivate::generate(),
        Ipv6Addr::LOCALHOST,
        now,
        Seed::from_u64(1),
    );
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
    core.upsert_peer(now, cfg(old));
    assert_eq!(core.peer_by_ip(addr), Some(old));
    core.upsert_peer(now, cfg(new));
    assert!(!core.has_peer(old));
    assert_eq!(core.peer_by_ip(addr), Some(new));
    assert_eq!(
        core.path(new).map(|p| p.current),
        Some(PathKind::Derp { region: 7 })
    );
    // Our own key is never a peer.
    let mine = core.public_key();
    core.upsert_peer(
        now,
        PeerConfig {
            id: Uuid::from_u128(3),
            key: mine,
            home_region: 7,
            addresses: vec![],
            disco: None,
            endpoints: Vec::new(),
            mapping_varies_by_dest_ip: None,
        },
    );
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
    let a = Core::new(&pa, ip(ida), now, Seed::from_u64(1));
    let mut b = Core::new(&pb, ip(idb), now, Seed::from_u64(2));
    b.upsert_peer(
        now,
        PeerConfig {
            id: ida,
            key: pa.public(),
            home_region: 7,
            addresses: vec![],
            disco: Some(a.disco_public()),
            endpoints: vec![],
            mapping_varies_by_dest_ip: None,
        },
    );
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
    let mut a = Core::new(&pa, ip(ida), now, Seed::from_u64(1));
    let mut b = Core::new(&pb, ip(idb), now, Seed::from_u64(2));
    a.set_home_region(7);
    b.set_home_region(7);
    let ep: SocketAddr = "192.0.2.9:41641".parse().unwrap();
    a.upsert_peer(
        now,
        PeerConfig {
            id: idb,
            key: pb.public(),
            home_region: 7,
            addresses: vec![],
            disco: Some(b.disco_public()),
            endpoints: vec![ep],
            mapping_varies_by_dest_ip: None,
        },
    );
    b.upsert_peer(
        now,
        PeerConfig {
            id: ida,
            key: pa.public(),
            home_region: 7,
            addresses: vec![],
            disco: Some(a.disco_public()),
            endpoints: vec![],
            mapping_varies_by_dest_ip: None,
        },
    );
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
