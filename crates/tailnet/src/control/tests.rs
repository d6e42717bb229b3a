//! One test per rule of the coordination session, on a virtual clock.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use tether_key::{DiscoPublic, NodePublic};
use tether_proto::coord::PeerUpdate;

use super::*;

/// The tests' epoch; every later time is explicit.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn node(n: u128) -> Node {
    let ip = proto::tailnet_ip(id(n));
    Node {
        id: id(n),
        key: NodePublic::from([n as u8; 32]),
        disco: DiscoPublic::from([n as u8 + 100; 32]),
        preferred_derp: 999,
        derp_latency: BTreeMap::new(),
        addresses: vec![format!("{ip}/128")],
        allowed_ips: vec![format!("{ip}/128")],
        endpoints: vec!["192.0.2.7:41641".into()],
        mapping_varies_by_dest_ip: None,
    }
}

fn welcome(n: u128, lost_after_secs: u64) -> Welcome {
    Welcome {
        id: id(n),
        lost_after: Duration::from_secs(lost_after_secs),
    }
}

/// A client (id 1) or agent session, connected at `t0`, its first transmits drained.
fn session(agent: bool, t0: Instant) -> Session {
    let mut s = Session::new(node(1), agent, welcome(1, 15), t0, 7);
    assert_eq!(
        s.poll_transmit(),
        Some(Request::UpdateSelf { node: node(1) })
    );
    assert_eq!(s.poll_transmit(), None);
    s
}

fn transmits(s: &mut Session) -> Vec<Request> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn updates(list: Vec<PeerUpdate>) -> String {
    serde_json::to_string(&Response::PeerUpdates { updates: list }).unwrap()
}

#[test]
fn welcome_is_read_checked_and_other_messages_skipped() {
    let text = |v: &str, lost: u64| {
        serde_json::to_string(&Response::Welcome {
            version: v.into(),
            id: id(5),
            heartbeat_secs: 5,
            lost_after_secs: lost,
        })
        .unwrap()
    };
    assert_eq!(parse_welcome(&text("1.0", 15)), Ok(Some(welcome(5, 15))));
    // A later minor is fine; lost-after is at least a second.
    assert_eq!(parse_welcome(&text("1.7", 0)), Ok(Some(welcome(5, 1))));
    assert!(
        parse_welcome(&text("2.0", 15))
            .unwrap_err()
            .contains("not supported")
    );
    let refused = serde_json::to_string(&Response::Error {
        message: "no such agent".into(),
    })
    .unwrap();
    assert_eq!(parse_welcome(&refused), Err("no such agent".into()));
    let map = serde_json::to_string(&Response::DerpMap {
        derp_map: DerpMap::default(),
    })
    .unwrap();
    assert_eq!(parse_welcome(&map), Ok(None));
    assert!(
        parse_welcome("{not json")
            .unwrap_err()
            .starts_with("bad message before the welcome")
    );
}

#[test]
fn every_connection_sends_our_node_then_the_tunnels() {
    let t0 = epoch();
    let mut s = session(false, t0);
    assert!(s.is_connected() && s.node_sent());
    s.add_tunnel(id(10));
    assert_eq!(transmits(&mut s), vec![Request::AddTunnel { id: id(10) }]);
    // Asking again on a live connection asks the coordinator again.
    s.add_tunnel(id(10));
    assert_eq!(transmits(&mut s), vec![Request::AddTunnel { id: id(10) }]);
    s.handle_lost(t0, "reset");
    assert!(!s.is_connected() && !s.node_sent());
    // Asked for while disconnected: sent with the others on the next connection.
    s.add_tunnel(id(11));
    assert_eq!(transmits(&mut s), vec![]);
    s.handle_connected(t0, welcome(1, 15));
    assert_eq!(
        transmits(&mut s),
        vec![
            Request::UpdateSelf { node: node(1) },
            Request::AddTunnel { id: id(10) },
            Request::AddTunnel { id: id(11) },
        ]
    );
    assert!(s.node_sent());
}

#[test]
fn a_removed_tunnel_is_told_forgotten_and_not_asked_for_again() {
    let t0 = epoch();
    let mut s = session(false, t0);
    s.add_tunnel(id(10));
    s.add_tunnel(id(11));
    transmits(&mut s);
    s.handle_text(t0, &updates(vec![PeerUpdate::node(node(10))]));
    events(&mut s);
    s.remove_tunnel(id(10));
    assert_eq!(
        transmits(&mut s),
        vec![Request::RemoveTunnel { id: id(10) }]
    );
    assert_eq!(events(&mut s), vec![Event::PeerGone(id(10))]);
    // Removing again, or a tunnel never asked for, does nothing.
    s.remove_tunnel(id(10));
    s.remove_tunnel(id(12));
    assert_eq!(transmits(&mut s), vec![]);
    assert_eq!(events(&mut s), vec![]);
    // A tunnel whose node never came is forgotten without a PeerGone.
    s.remove_tunnel(id(11));
    assert_eq!(
        transmits(&mut s),
        vec![Request::RemoveTunnel { id: id(11) }]
    );
    assert_eq!(events(&mut s), vec![]);
    // The next connection asks for none of them.
    s.handle_lost(t0, "reset");
    s.handle_connected(t0, welcome(1, 15));
    assert_eq!(
        transmits(&mut s),
        vec![Request::UpdateSelf { node: node(1) }]
    );
}

#[test]
fn a_node_update_becomes_a_peer_config() {
    let t0 = epoch();
    let mut s = session(false, t0);
    let mut n = node(2);
    n.addresses.push("not an address".into());
    n.endpoints.push("nor an endpoint".into());
    n.mapping_varies_by_dest_ip = Some(true);
    s.handle_text(t0, &updates(vec![PeerUpdate::node(n.clone())]));
    let got = events(&mut s);
    let [Event::Peer(cfg)] = &got[..] else {
        panic!("one peer event: {got:?}")
    };
    assert_eq!(cfg.id, id(2));
    assert_eq!(cfg.key, n.key);
    assert_eq!(cfg.home_region, 999);
    assert_eq!(cfg.addresses, vec![proto::tailnet_ip(id(2))]);
    assert_eq!(cfg.endpoints, vec!["192.0.2.7:41641".parse().unwrap()]);
    assert_eq!(cfg.disco, Some(n.disco));
    assert_eq!(cfg.mapping_varies_by_dest_ip, Some(true));
    // A client does not answer nodes.
    assert_eq!(transmits(&mut s), vec![]);
    // An all-zero disco key means none; a NODE update without a node is skipped.
    n.disco = DiscoPublic::from([0; 32]);
    assert_eq!(peer_config(&n).disco, None);
    let empty = PeerUpdate {
        node: None,
        ..PeerUpdate::node(node(3))
    };
    s.handle_text(t0, &updates(vec![empty]));
    assert_eq!(events(&mut s), vec![]);
}

#[test]
fn an_agent_answers_a_new_peer_with_ready_for_handshake_once() {
    let t0 = epoch();
    let mut s = session(true, t0);
    s.handle_text(
        t0,
        &updates(vec![PeerUpdate::node(node(2)), PeerUpdate::node(node(3))]),
    );
    // The core gets the peers before the answers go out.
    assert_eq!(events(&mut s).len(), 2);
    assert_eq!(
        transmits(&mut s),
        vec![
            Request::ReadyForHandshake { id: id(2) },
            Request::ReadyForHandshake { id: id(3) },
        ]
    );
    // A changed node of a known peer is applied, not answered.
    let mut moved = node(2);
    moved.preferred_derp = 7;
    s.handle_text(t0, &updates(vec![PeerUpdate::node(moved)]));
    assert!(matches!(&events(&mut s)[..], [Event::Peer(c)] if c.home_region == 7));
    assert_eq!(transmits(&mut s), vec![]);
    // Once gone, the peer is new again when it comes back.
    s.handle_text(t0, &updates(vec![PeerUpdate::lost(id(2), "silent")]));
    s.handle_text(t0, &updates(vec![PeerUpdate::node(node(2))]));
    assert_eq!(
        transmits(&mut s),
        vec![Request::ReadyForHandshake { id: id(2) }]
    );
}

#[test]
fn ready_for_handshake_starts_ours_and_disconnected_or_lost_forget_the_peer() {
    let t0 = epoch();
    let mut s = session(false, t0);
    s.handle_text(
        t0,
        &updates(vec![
            PeerUpdate::ready_for_handshake(id(2)),
            PeerUpdate::disconnected(id(3), "left"),
            PeerUpdate::lost(id(4), "silent"),
        ]),
    );
    assert_eq!(
        events(&mut s),
        vec![
            Event::Handshake(id(2)),
            Event::PeerGone(id(3)),
            Event::PeerGone(id(4)),
        ]
    );
    assert_eq!(transmits(&mut s), vec![]);
}

#[test]
fn derp_maps_replace_ours_and_errors_and_garbage_change_nothing() {
    let t0 = epoch();
    let mut s = session(false, t0);
    let mut map = DerpMap::default();
    map.regions.insert(7, Default::default());
    let push = serde_json::to_string(&Response::DerpMap {
        derp_map: map.clone(),
    })
    .unwrap();
    s.handle_text(t0, &push);
    assert_eq!(events(&mut s), vec![Event::DerpMap(map)]);
    let error = serde_json::to_string(&Response::Error {
        message: "no".into(),
    })
    .unwrap();
    s.handle_text(t0, &error);
    s.handle_text(t0, "{garbage");
    let again = serde_json::to_string(&Response::Welcome {
        version: "1.0".into(),
        id: id(9),
        heartbeat_secs: 5,
        lost_after_secs: 15,
    })
    .unwrap();
    s.handle_text(t0, &again);
    assert_eq!(events(&mut s), vec![]);
    assert_eq!(transmits(&mut s), vec![]);
    assert!(s.is_connected());
    assert_eq!(s.id(), id(1));
}

#[test]
fn silence_past_lost_after_plus_margin_loses_the_connection() {
    let t0 = epoch();
    let mut s = session(false, t0);
    let silence = Duration::from_secs(15) + SILENCE_MARGIN;
    assert_eq!(s.poll_timeout(), Some(t0 + silence));
    // Anything heard (text or a ping) restarts the wait.
    let t1 = t0 + Duration::from_secs(10);
    s.handle_heard(t1);
    s.handle_timeout(t0 + silence);
    assert!(s.is_connected());
    assert_eq!(s.poll_timeout(), Some(t1 + silence));
    s.handle_text(t1 + Duration::from_secs(1), "{}");
    assert_eq!(
        s.poll_timeout(),
        Some(t1 + Duration::from_secs(1) + silence)
    );
    let dead = t1 + Duration::from_secs(1) + silence;
    s.handle_timeout(dead);
    assert!(!s.is_connected());
    // Lost: reconnect at once.
    assert!(s.connect_due(dead));
    assert_eq!(s.poll_timeout(), Some(dead));
}

#[test]
fn failed_connects_back_off_and_a_welcome_resets_it() {
    let t0 = epoch();
    let mut s = session(false, t0);
    s.handle_lost(t0, "reset");
    let mut t = t0;
    let mut delays = Vec::new();
    for _ in 0..8 {
        assert!(s.connect_due(t));
        s.handle_connect_failed(t, "refused");
        let at = s.poll_timeout().unwrap();
        assert!(!s.connect_due(at - Duration::from_millis(1)));
        delays.push(at - t);
        t = at;
    }
    assert!(
        delays[0] >= BACKOFF_MIN / 2 && delays[0] <= BACKOFF_MIN,
        "{delays:?}"
    );
    assert!(
        delays[1] >= BACKOFF_MIN && delays[1] <= BACKOFF_MIN * 2,
        "{delays:?}"
    );
    assert!(delays.iter().all(|d| *d <= BACKOFF_MAX), "{delays:?}");
    assert!(delays[7] >= BACKOFF_MAX / 2, "{delays:?}");
    s.handle_connected(t, welcome(1, 15));
    s.handle_lost(t, "reset");
    s.handle_connect_failed(t, "refused");
    assert!(s.poll_timeout().unwrap() - t <= BACKOFF_MIN);
    // The jitter comes from the seed: the same seed, the same delays.
    let replay = |seed| {
        let mut s = Session::new(node(1), false, welcome(1, 15), t0, seed);
        s.handle_lost(t0, "reset");
        s.handle_connect_failed(t0, "refused");
        s.poll_timeout()
    };
    assert_eq!(replay(3), replay(3));
}

#[test]
fn a_new_id_on_reconnect_replaces_ours() {
    let t0 = epoch();
    let mut s = session(false, t0);
    s.handle_lost(t0, "reset");
    s.handle_connected(t0, welcome(1, 15));
    assert_eq!(events(&mut s), vec![]);
    s.handle_lost(t0, "reset");
    s.handle_connected(t0, welcome(42, 20));
    assert_eq!(events(&mut s), vec![Event::IdChanged(id(42))]);
    assert_eq!(s.id(), id(42));
    let mut renamed = node(1);
    renamed.id = id(42);
    assert_eq!(
        transmits(&mut s),
        vec![Request::UpdateSelf { node: renamed }]
    );
    // The new lost-after counts.
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + Duration::from_secs(20) + SILENCE_MARGIN)
    );
}

#[test]
fn our_node_goes_out_again_only_when_it_changed() {
    let t0 = epoch();
    let mut s = session(false, t0);
    let info = NetInfo {
        endpoints: vec!["203.0.113.5:41641".into()],
        preferred_derp: 2,
        derp_latency: [("2-v4".to_string(), 0.01)].into_iter().collect(),
        mapping_varies_by_dest_ip: Some(false),
    };
    s.set_net_info(info.clone());
    let got = transmits(&mut s);
    let [Request::UpdateSelf { node: sent }] = &got[..] else {
        panic!("one update_self: {got:?}")
    };
    assert_eq!(sent.endpoints, info.endpoints);
    assert_eq!(sent.preferred_derp, 2);
    assert_eq!(sent.derp_latency, info.derp_latency);
    assert_eq!(sent.mapping_varies_by_dest_ip, Some(false));
    assert_eq!(s.node(), sent);
    s.set_net_info(info.clone());
    assert_eq!(transmits(&mut s), vec![]);
    // Changed while disconnected: the next connection's first message carries it.
    s.handle_lost(t0, "reset");
    let mut moved = info;
    moved.preferred_derp = 3;
    s.set_net_info(moved);
    assert_eq!(transmits(&mut s), vec![]);
    s.handle_connected(t0, welcome(1, 15));
    assert!(matches!(
        &transmits(&mut s)[..],
        [Request::UpdateSelf { node }] if node.preferred_derp == 3
    ));
}

#[test]
fn close_says_disconnect_once_and_ends_everything() {
    let t0 = epoch();
    let mut s = session(false, t0);
    s.close();
    assert_eq!(transmits(&mut s), vec![Request::Disconnect]);
    assert!(s.is_closed() && !s.is_connected() && !s.node_sent());
    assert_eq!(s.poll_timeout(), None);
    // Nothing after that: no reconnect, no messages.
    s.handle_connected(t0, welcome(1, 15));
    s.handle_text(t0, &updates(vec![PeerUpdate::node(node(2))]));
    s.add_tunnel(id(10));
    assert_eq!(transmits(&mut s), vec![]);
    assert_eq!(events(&mut s), vec![]);
    assert!(!s.connect_due(t0 + Duration::from_secs(60)));
    // Closing while disconnected sends nothing.
    let mut s = session(false, t0);
    s.handle_lost(t0, "reset");
    s.close();
    assert_eq!(transmits(&mut s), vec![]);
}

#[test]
fn a_revoked_peer_is_forgotten_with_its_streams() {
    let t0 = epoch();
    let mut s = session(true, t0);
    s.handle_text(t0, &updates(vec![PeerUpdate::node(node(2))]));
    let _ = events(&mut s);
    let _ = transmits(&mut s);
    s.handle_text(
        t0,
        &updates(vec![
            PeerUpdate::revoked(id(2), "logged out"),
            PeerUpdate::disconnected(id(3), "left"),
        ]),
    );
    assert_eq!(
        events(&mut s),
        vec![Event::PeerRevoked(id(2)), Event::PeerGone(id(3))]
    );
    assert!(s.is_connected());
}

#[test]
fn session_ended_forgets_everything_and_never_reconnects() {
    let t0 = epoch();
    let mut s = session(false, t0);
    s.add_tunnel(id(2));
    s.handle_text(t0, &updates(vec![PeerUpdate::node(node(2))]));
    let _ = events(&mut s);
    let _ = transmits(&mut s);
    let ended = serde_json::to_string(&Response::SessionEnded {
        reason: "logged out".into(),
    })
    .unwrap();
    s.handle_text(t0, &ended);
    assert_eq!(
        events(&mut s),
        vec![Event::SessionEnded("logged out".into())]
    );
    assert!(s.is_closed());
    assert_eq!(s.poll_timeout(), None);
    // The close that follows changes nothing: no reconnect, no disconnect sent.
    s.handle_lost(t0, "closed by the server");
    s.close();
    assert!(!s.connect_due(t0 + Duration::from_secs(60)));
    assert_eq!(transmits(&mut s), vec![]);
    s.handle_session_ended("again");
    assert_eq!(events(&mut s), vec![]);
}

#[test]
fn a_reconnect_refused_as_unauthorised_ends_the_session() {
    let t0 = epoch();
    let mut s = session(false, t0);
    s.handle_lost(t0, "closed by the server");
    assert!(s.connect_due(t0));
    s.handle_session_ended("the session token is no longer valid");
    assert_eq!(
        events(&mut s),
        vec![Event::SessionEnded(
            "the session token is no longer valid".into()
        )]
    );
    assert!(s.is_closed() && !s.connect_due(t0 + Duration::from_secs(60)));
}
