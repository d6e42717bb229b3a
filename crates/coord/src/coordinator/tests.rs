use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tether_key::DiscoPublic;
use tether_proto::coord::{PeerUpdateKind, Request, Response};
use tether_proto::derpmap::DerpRegion;

use super::*;

mod revoke;
mod server;

const USER_A: Uuid = Uuid::from_u128(0xa);
const USER_B: Uuid = Uuid::from_u128(0xb);
const AGENT_A: Uuid = Uuid::from_u128(0x1a);
const AGENT_B: Uuid = Uuid::from_u128(0x1b);
const CLIENT_A: Uuid = Uuid::from_u128(0x2a);
const CLIENT_A2: Uuid = Uuid::from_u128(0x2a2);
const CLIENT_B: Uuid = Uuid::from_u128(0x2b);

/// The one real clock read in the tests: a base that every other time is an offset of.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn secs(base: Instant, s: u64) -> Instant {
    base + Duration::from_secs(s)
}

fn key(b: u8) -> NodePublic {
    NodePublic::from_bytes([b; 32])
}

fn node(id: Uuid, key_byte: u8) -> Node {
    Node {
        id,
        key: key(key_byte),
        disco: DiscoPublic::from_bytes([key_byte.wrapping_add(100); 32]),
        preferred_derp: 1,
        derp_latency: BTreeMap::new(),
        addresses: vec![format!("{}/128", proto::tailnet_ip(id))],
        allowed_ips: vec![],
        endpoints: vec![],
        mapping_varies_by_dest_ip: None,
    }
}

fn region_map(ids: &[u32]) -> DerpMap {
    let mut map = DerpMap::default();
    for id in ids {
        map.regions.insert(
            *id,
            DerpRegion {
                region_id: *id,
                region_code: format!("r{id}"),
                region_name: format!("Region {id}"),
                ..DerpRegion::default()
            },
        );
    }
    map
}

fn drain(c: &mut Coordinator) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

/// All peer updates sent to `conn` in `out`, flattened in order.
fn updates_to(out: &[Output], conn: ConnId) -> Vec<PeerUpdate> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                conn: c,
                msg: Response::PeerUpdates { updates },
            } if *c == conn => Some(updates.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn errors_to(out: &[Output], conn: ConnId) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                conn: c,
                msg: Response::Error { message },
            } if *c == conn => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn closes(out: &[Output]) -> Vec<(ConnId, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, reason } => Some((*conn, reason.clone())),
            _ => None,
        })
        .collect()
}

/// A coordinator with AGENT_A owned by USER_A and AGENT_B owned by USER_B.
fn setup() -> Coordinator {
    let mut c = Coordinator::new(Config::default(), region_map(&[1]));
    c.set_agent_owner(AGENT_A, USER_A);
    c.set_agent_owner(AGENT_B, USER_B);
    c
}

fn agent(id: Uuid) -> Role {
    Role::Agent { id }
}

fn client(id: Uuid, user: Uuid) -> Role {
    Role::Client { id, user }
}

#[test]
fn connect_sends_welcome_then_derp_map() {
    let now = t0();
    let mut c = setup();
    c.connect(1, agent(AGENT_A), now).expect("connect");
    let out = drain(&mut c);
    assert_eq!(
        out,
        vec![
            Output::Send {
                conn: 1,
                msg: Response::Welcome {
                    version: proto::VERSION.to_owned(),
                    id: AGENT_A,
                    heartbeat_secs: 5,
                    lost_after_secs: 15,
                },
            },
            Output::Send {
                conn: 1,
                msg: Response::DerpMap {
                    derp_map: region_map(&[1]),
                },
            },
        ]
    );
    assert_eq!(
        c.stats(),
        Stats {
            agents: 1,
            clients: 0,
            servers: 0,
            tunnels: 0
        }
    );
}

#[test]
fn connect_refusals() {
    let now = t0();
    let mut c = setup();
    let stranger = Uuid::from_u128(0xdead);
    assert_eq!(
        c.connect(1, agent(stranger), now),
        Err(CoordError::UnknownAgent(stranger))
    );
    c.connect(2, client(CLIENT_A, USER_A), now).expect("client");
    assert_eq!(
        c.connect(2, client(CLIENT_B, USER_B), now),
        Err(CoordError::ConnInUse(2))
    );
    // A client may not take an agent's id, nor another user's client id.
    assert_eq!(
        c.connect(3, client(AGENT_A, USER_A), now),
        Err(CoordError::IdInUse(AGENT_A))
    );
    assert_eq!(
        c.connect(4, client(CLIENT_A, USER_B), now),
        Err(CoordError::IdInUse(CLIENT_A))
    );
    let out = drain(&mut c);
    // Only the one accepted client got anything.
    assert!(
        out.iter()
            .all(|o| matches!(o, Output::Send { conn: 2, .. }))
    );
    assert!(!c.is_connected(1) && !c.is_connected(3) && !c.is_connected(4));
}

#[test]
fn add_tunnel_authorisation() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent a");
    c.connect(3, agent(AGENT_B), now).expect("agent b");
    drain(&mut c);

    // Own agent: accepted, no error.
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    assert!(errors_to(&drain(&mut c), 1).is_empty());
    assert!(c.has_tunnel(CLIENT_A, AGENT_A));

    // Another user's agent, then the same id once it no longer exists: same text.
    c.handle_request(1, Request::AddTunnel { id: AGENT_B }, now);
    let foreign = errors_to(&drain(&mut c), 1);
    c.remove_agent(AGENT_B, now);
    drain(&mut c);
    c.handle_request(1, Request::AddTunnel { id: AGENT_B }, now);
    let missing = errors_to(&drain(&mut c), 1);
    assert_eq!(foreign.len(), 1);
    assert_eq!(foreign, missing);
    assert!(!c.has_tunnel(CLIENT_A, AGENT_B));

    // Agents may not add tunnels.
    c.handle_request(2, Request::AddTunnel { id: AGENT_A }, now);
    let out = drain(&mut c);
    assert_eq!(errors_to(&out, 2), vec!["only clients may add tunnels"]);
    assert_eq!(c.stats().tunnels, 1);
}

#[test]
fn add_tunnel_is_idempotent() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 2),
        },
        now,
    );
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    assert_eq!(updates_to(&drain(&mut c), 1).len(), 1);
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    assert_eq!(drain(&mut c), vec![]);
    assert_eq!(c.stats().tunnels, 1);
}

#[test]
fn nodes_propagate_agent_first() {
    let now = t0();
    let mut c = setup();
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 2),
        },
        now,
    );
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 1),
        },
        now,
    );
    // No tunnel yet: nobody hears about anybody.
    let out = drain(&mut c);
    assert!(updates_to(&out, 1).is_empty() && updates_to(&out, 2).is_empty());

    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::node(node(AGENT_A, 2))]
    );
    assert_eq!(
        updates_to(&out, 2),
        vec![PeerUpdate::node(node(CLIENT_A, 1))]
    );
}

#[test]
fn nodes_propagate_client_first() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 1),
        },
        now,
    );
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    let out = drain(&mut c);
    assert!(updates_to(&out, 1).is_empty());
    assert!(errors_to(&out, 1).is_empty());

    // The agent gets the client's node as soon as it connects…
    c.connect(2, agent(AGENT_A), now).expect("agent");
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 2),
        vec![PeerUpdate::node(node(CLIENT_A, 1))]
    );
    // …and the client the agent's as soon as it is sent.
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 2),
        },
        now,
    );
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::node(node(AGENT_A, 2))]
    );
    assert!(updates_to(&out, 2).is_empty());
}

#[test]
fn node_updates_reach_tunnel_peers_only() {
    let now = t0();
    let mut c = setup();
    c.set_agent_owner(AGENT_B, USER_A);
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent a");
    c.connect(3, agent(AGENT_B), now).expect("agent b");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);

    let mut moved = node(CLIENT_A, 1);
    moved.endpoints = vec!["198.51.100.7:41641".to_owned()];
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: moved.clone(),
        },
        now,
    );
    let out = drain(&mut c);
    assert_eq!(updates_to(&out, 2), vec![PeerUpdate::node(moved.clone())]);
    assert!(updates_to(&out, 3).is_empty());

    // Re-sending the same node is not news.
    c.handle_request(1, Request::UpdateSelf { node: moved }, now);
    assert_eq!(drain(&mut c), vec![]);
}

#[test]
fn update_self_checks_id_and_key() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 7),
        },
        now,
    );
    drain(&mut c);

    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(AGENT_A, 1),
        },
        now,
    );
    let errs = errors_to(&drain(&mut c), 1);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("does not match"), "{errs:?}");

    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 7),
        },
        now,
    );
    let errs = errors_to(&drain(&mut c), 1);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("already used"), "{errs:?}");
    assert_eq!(
        c.agent_status(AGENT_A).and_then(|s| s.node),
        Some(node(AGENT_A, 7))
    );
}

#[test]
fn ready_for_handshake_routing() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.connect(3, client(CLIENT_A2, USER_A), now)
        .expect("client 2");
    drain(&mut c);

    // No tunnel yet: refused.
    c.handle_request(2, Request::ReadyForHandshake { id: CLIENT_A }, now);
    let out = drain(&mut c);
    assert_eq!(errors_to(&out, 2).len(), 1);
    assert!(updates_to(&out, 1).is_empty());

    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);
    c.handle_request(2, Request::ReadyForHandshake { id: CLIENT_A }, now);
    let out = drain(&mut c);
    assert_eq!(
        out,
        vec![Output::Send {
            conn: 1,
            msg: Response::PeerUpdates {
                updates: vec![PeerUpdate::ready_for_handshake(AGENT_A)],
            },
        }]
    );
    // The other direction works too.
    c.handle_request(1, Request::ReadyForHandshake { id: AGENT_A }, now);
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 2),
        vec![PeerUpdate::ready_for_handshake(CLIENT_A)]
    );
    // A client without a tunnel cannot poke the agent.
    c.handle_request(3, Request::ReadyForHandshake { id: AGENT_A }, now);
    let out = drain(&mut c);
    assert_eq!(errors_to(&out, 3).len(), 1);
    assert!(updates_to(&out, 2).is_empty());
}

#[test]
fn remove_tunnel_disconnects_agent_side() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);

    c.handle_request(1, Request::RemoveTunnel { id: AGENT_A }, now);
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 2),
        vec![PeerUpdate::disconnected(CLIENT_A, "tunnel removed")]
    );
    assert!(updates_to(&out, 1).is_empty());
    assert!(!c.has_tunnel(CLIENT_A, AGENT_A));

    // Afterwards the agent hears nothing of the client.
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 1),
        },
        now,
    );
    assert!(updates_to(&drain(&mut c), 2).is_empty());
    // Agents may not remove tunnels.
    c.handle_request(2, Request::RemoveTunnel { id: AGENT_A }, now);
    assert_eq!(errors_to(&drain(&mut c), 2).len(), 1);
}

#[test]
fn disconnect_sends_disconnected_and_closes() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 2),
        },
        now,
    );
    drain(&mut c);

    c.handle_request(2, Request::Disconnect, now);
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::disconnected(AGENT_A, "disconnected")]
    );
    assert_eq!(closes(&out), vec![(2, "disconnected".to_owned())]);
    assert!(!c.is_connected(2));
    // The driver's disconnected() after the close is a no-op; so are stray requests.
    c.disconnected(2, now);
    c.handle_request(2, Request::AddTunnel { id: AGENT_A }, now);
    assert_eq!(drain(&mut c), vec![]);
    // The client's tunnel waits for the agent to come back.
    assert!(c.has_tunnel(CLIENT_A, AGENT_A));
}

#[test]
fn transport_drop_sends_lost() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);

    c.disconnected(1, secs(now, 3));
    let out = drain(&mut c);
    assert_eq!(
        out,
        vec![Output::Send {
            conn: 2,
            msg: Response::PeerUpdates {
                updates: vec![PeerUpdate::lost(CLIENT_A, "connection lost")],
            },
        }]
    );
    // A client's tunnels end with it.
    assert_eq!(c.stats().tunnels, 0);
    assert_eq!(c.stats().clients, 0);
}

#[test]
fn heartbeat_timeout_at_exactly_lost_after() {
    let base = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), base)
        .expect("client");
    c.connect(2, agent(AGENT_A), base).expect("agent");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, base);
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(secs(base, 15)));

    // The client keeps talking; the agent goes quiet.
    c.heard_from(1, secs(base, 10));
    assert_eq!(c.poll_timeout(), Some(secs(base, 15)));

    c.handle_timeout(secs(base, 15) - Duration::from_nanos(1));
    assert_eq!(drain(&mut c), vec![]);
    assert!(c.is_connected(2));

    c.handle_timeout(secs(base, 15));
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::lost(AGENT_A, "no heartbeat for 15s")]
    );
    assert_eq!(closes(&out), vec![(2, "no heartbeat for 15s".to_owned())]);
    assert!(!c.is_connected(2));
    // Now only the client's deadline, moved by heard_from, remains.
    assert_eq!(c.poll_timeout(), Some(secs(base, 25)));
    c.handle_timeout(secs(base, 24));
    assert!(c.is_connected(1));
    c.handle_timeout(secs(base, 25));
    assert!(!c.is_connected(1));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn requests_count_as_heartbeats() {
    let base = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), base)
        .expect("client");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, secs(base, 9));
    assert_eq!(c.poll_timeout(), Some(secs(base, 24)));
    // Time does not run backwards for a deadline.
    c.heard_from(1, secs(base, 2));
    assert_eq!(c.poll_timeout(), Some(secs(base, 24)));
}

#[test]
fn agent_reconnect_replaces_old_connection() {
    let now = t0();
    let later = secs(now, 4);
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 1),
        },
        now,
    );
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 2),
        },
        now,
    );
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);

    c.connect(3, agent(AGENT_A), later).expect("reconnect");
    let out = drain(&mut c);
    assert_eq!(
        out[0],
        Output::Close {
            conn: 2,
            reason: "replaced by a newer connection".to_owned(),
        }
    );
    assert!(matches!(
        &out[1],
        Output::Send { conn: 3, msg: Response::Welcome { id, .. } } if *id == AGENT_A
    ));
    assert!(matches!(
        &out[2],
        Output::Send {
            conn: 3,
            msg: Response::DerpMap { .. }
        }
    ));
    assert_eq!(
        updates_to(&out, 3),
        vec![PeerUpdate::node(node(CLIENT_A, 1))]
    );
    // The client is not told anything until the new node arrives.
    assert!(updates_to(&out, 1).is_empty());
    assert_eq!(out.len(), 4);

    let status = c.agent_status(AGENT_A).expect("status");
    assert_eq!((status.conn, status.connected_at), (3, later));

    // The old socket closing does not make the agent LOST.
    c.disconnected(2, later);
    assert_eq!(drain(&mut c), vec![]);

    c.handle_request(
        3,
        Request::UpdateSelf {
            node: node(AGENT_A, 3),
        },
        later,
    );
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::node(node(AGENT_A, 3))]
    );
    assert_eq!(c.drain_forgotten_keys(), vec![key(2)]);
    assert_eq!(c.stats().agents, 1);
}

#[test]
fn lost_agent_gets_client_nodes_when_back() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 1),
        },
        now,
    );
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    c.disconnected(2, now);
    drain(&mut c);
    assert!(c.agent_status(AGENT_A).is_none());

    c.connect(5, agent(AGENT_A), now).expect("agent back");
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 5),
        vec![PeerUpdate::node(node(CLIENT_A, 1))]
    );
}

#[test]
fn derp_map_pushed_only_on_change() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    drain(&mut c);

    c.set_derp_map(region_map(&[1]));
    assert_eq!(drain(&mut c), vec![]);

    c.set_derp_map(region_map(&[1, 2]));
    let out = drain(&mut c);
    let expect = |conn| Output::Send {
        conn,
        msg: Response::DerpMap {
            derp_map: region_map(&[1, 2]),
        },
    };
    assert_eq!(out, vec![expect(1), expect(2)]);
    assert_eq!(c.derp_map(), &region_map(&[1, 2]));
}

#[test]
fn remove_agent_closes_and_disconnects_clients() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 2),
        },
        now,
    );
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);

    c.remove_agent(AGENT_A, now);
    let out = drain(&mut c);
    assert_eq!(closes(&out), vec![(2, "workspace deleted".to_owned())]);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::disconnected(AGENT_A, "workspace deleted")]
    );
    assert_eq!(c.stats().tunnels, 0);
    assert!(!c.is_known_key(&key(2)));
    // The owner is forgotten: the agent cannot come back.
    assert_eq!(
        c.connect(3, agent(AGENT_A), now),
        Err(CoordError::UnknownAgent(AGENT_A))
    );
    c.disconnected(2, now);
    assert_eq!(drain(&mut c), vec![]);
}

#[test]
fn owner_change_revokes_foreign_tunnels() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);

    c.set_agent_owner(AGENT_A, USER_A);
    assert_eq!(drain(&mut c), vec![]);
    c.set_agent_owner(AGENT_A, USER_B);
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::disconnected(AGENT_A, "access revoked")]
    );
    assert_eq!(
        updates_to(&out, 2),
        vec![PeerUpdate::disconnected(CLIENT_A, "access revoked")]
    );
    assert!(!c.has_tunnel(CLIENT_A, AGENT_A));
}

#[test]
fn known_keys_and_forgotten_keys() {
    let now = t0();
    let mut c = setup();
    c.connect(1, client(CLIENT_A, USER_A), now).expect("client");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    assert!(!c.is_known_key(&key(1)));
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 1),
        },
        now,
    );
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 2),
        },
        now,
    );
    assert!(c.is_known_key(&key(1)) && c.is_known_key(&key(2)));
    assert_eq!(c.drain_forgotten_keys(), vec![]);

    // Key rotation forgets the old key.
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 11),
        },
        now,
    );
    assert!(!c.is_known_key(&key(1)) && c.is_known_key(&key(11)));
    // Leaving forgets the key too.
    c.disconnected(2, now);
    assert!(!c.is_known_key(&key(2)));
    assert_eq!(c.drain_forgotten_keys(), vec![key(1), key(2)]);
    assert_eq!(c.drain_forgotten_keys(), vec![]);

    // A key that comes back before the drain is not reported.
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 12),
        },
        now,
    );
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(CLIENT_A, 11),
        },
        now,
    );
    assert_eq!(c.drain_forgotten_keys(), vec![key(12)]);
}

#[test]
fn agent_status_reports_node_and_times() {
    let base = t0();
    let mut c = setup();
    assert!(c.agent_status(AGENT_A).is_none());
    c.connect(2, agent(AGENT_A), base).expect("agent");
    let mut n = node(AGENT_A, 2);
    n.preferred_derp = 7;
    c.handle_request(2, Request::UpdateSelf { node: n.clone() }, secs(base, 3));
    let s = c.agent_status(AGENT_A).expect("status");
    assert_eq!(s.node, Some(n));
    assert_eq!(s.preferred_derp(), Some(7));
    assert_eq!(s.connected_at, base);
    assert_eq!(s.last_heard, secs(base, 3));
    c.connect(1, client(CLIENT_A, USER_A), base)
        .expect("client");
    assert!(c.agent_status(CLIENT_A).is_none());
}

// ---- property test: random operation sequences ----

const AGENTS: [Uuid; 3] = [
    Uuid::from_u128(0x100),
    Uuid::from_u128(0x101),
    Uuid::from_u128(0x102),
];
const USERS: [Uuid; 2] = [Uuid::from_u128(0x200), Uuid::from_u128(0x201)];
const CLIENTS: [Uuid; 3] = [
    Uuid::from_u128(0x300),
    Uuid::from_u128(0x301),
    Uuid::from_u128(0x302),
];
/// The id the server's own node connects with in the property test.
const SERVER_NODE: Uuid = Uuid::from_u128(0x3ff);

#[derive(Debug, Clone)]
enum Op {
    SetOwner(usize, usize),
    RemoveAgent(usize),
    ConnectAgent(usize),
    ConnectClient(usize),
    ConnectServer,
    UpdateSelf(prop::sample::Index, u8, bool),
    AddTunnel(prop::sample::Index, usize),
    RemoveTunnel(prop::sample::Index, usize),
    Ready(prop::sample::Index, usize),
    Disconnect(prop::sample::Index),
    Heard(prop::sample::Index),
    Dropped(prop::sample::Index),
    Advance(u64),
    SetDerp(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..2usize).prop_map(|(a, u)| Op::SetOwner(a, u)),
        (0..3usize).prop_map(Op::RemoveAgent),
        (0..3usize).prop_map(Op::ConnectAgent),
        (0..3usize).prop_map(Op::ConnectClient),
        Just(Op::ConnectServer),
        (any::<prop::sample::Index>(), 0..4u8, any::<bool>())
            .prop_map(|(c, k, w)| Op::UpdateSelf(c, k, w)),
        (any::<prop::sample::Index>(), 0..4usize).prop_map(|(c, a)| Op::AddTunnel(c, a)),
        (any::<prop::sample::Index>(), 0..3usize).prop_map(|(c, a)| Op::RemoveTunnel(c, a)),
        (any::<prop::sample::Index>(), 0..6usize).prop_map(|(c, p)| Op::Ready(c, p)),
        any::<prop::sample::Index>().prop_map(Op::Disconnect),
        any::<prop::sample::Index>().prop_map(Op::Heard),
        any::<prop::sample::Index>().prop_map(Op::Dropped),
        (0..20_000u64).prop_map(Op::Advance),
        (0..3u8).prop_map(Op::SetDerp),
    ]
}

/// Every peer id the test can name.
fn all_ids() -> Vec<Uuid> {
    AGENTS
        .iter()
        .chain(CLIENTS.iter())
        .chain([SERVER_NODE].iter())
        .copied()
        .collect()
}

struct Snapshot {
    live: BTreeMap<ConnId, Uuid>,
    tunnels: BTreeSet<(Uuid, Uuid)>,
}

fn snapshot(c: &Coordinator, conns: &[ConnId]) -> Snapshot {
    let live = conns
        .iter()
        .filter_map(|conn| Some((*conn, c.peer_of(*conn)?)))
        .collect();
    let ids = all_ids();
    let mut tunnels = BTreeSet::new();
    for a in &ids {
        for b in &ids {
            if c.has_tunnel(*a, *b) {
                tunnels.insert((*a, *b));
            }
        }
    }
    Snapshot { live, tunnels }
}

fn check_outputs(out: &[Output], before: &Snapshot, after: &Snapshot) {
    let mut closed = BTreeSet::new();
    for o in out {
        match o {
            Output::Close { conn, .. } => {
                assert!(
                    before.live.contains_key(conn),
                    "close of a conn that was not live"
                );
                assert!(!after.live.contains_key(conn), "closed conn still live");
                closed.insert(*conn);
            }
            Output::Send { conn, msg } => {
                assert!(!closed.contains(conn), "send after close");
                let me = before
                    .live
                    .get(conn)
                    .or_else(|| after.live.get(conn))
                    .expect("send to a conn that was never live");
                if let Response::PeerUpdates { updates } = msg {
                    assert!(!updates.is_empty());
                    for u in updates {
                        let pair = (*me, u.id);
                        assert!(
                            before.tunnels.contains(&pair) || after.tunnels.contains(&pair),
                            "update about a non-tunnel peer: {u:?} to {me}"
                        );
                        if u.kind == PeerUpdateKind::Node {
                            assert_eq!(u.node.as_ref().map(|n| n.id), Some(u.id));
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_keep_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let base = t0();
        let mut now = base;
        let mut c = Coordinator::new(Config::default(), region_map(&[1]));
        let mut conns: Vec<ConnId> = Vec::new();
        let mut next_conn: ConnId = 1;
        let pick = |conns: &[ConnId], i: &prop::sample::Index| -> ConnId {
            if conns.is_empty() { 0 } else { conns[i.index(conns.len())] }
        };
        for op in ops {
            let before = snapshot(&c, &conns);
            match &op {
                Op::SetOwner(a, u) => c.set_agent_owner(AGENTS[*a], USERS[*u]),
                Op::RemoveAgent(a) => c.remove_agent(AGENTS[*a], now),
                Op::ConnectAgent(a) => {
                    let conn = next_conn;
                    next_conn += 1;
                    if c.connect(conn, Role::Agent { id: AGENTS[*a] }, now).is_ok() {
                        conns.push(conn);
                    }
                }
                Op::ConnectClient(i) => {
                    let conn = next_conn;
                    next_conn += 1;
                    let role = Role::Client { id: CLIENTS[*i], user: USERS[*i % 2] };
                    if c.connect(conn, role, now).is_ok() {
                        conns.push(conn);
                    }
                }
                Op::ConnectServer => {
                    let conn = next_conn;
                    next_conn += 1;
                    if c.connect(conn, Role::Server { id: SERVER_NODE }, now).is_ok() {
                        conns.push(conn);
                    }
                }
                Op::UpdateSelf(i, k, wrong_id) => {
                    let conn = pick(&conns, i);
                    let id = c.peer_of(conn).unwrap_or(Uuid::nil());
                    let id = if *wrong_id { Uuid::from_u128(0x999) } else { id };
                    c.handle_request(conn, Request::UpdateSelf { node: node(id, *k) }, now);
                }
                Op::AddTunnel(i, a) => {
                    let id = AGENTS.get(*a).copied().unwrap_or(Uuid::from_u128(0x777));
                    c.handle_request(pick(&conns, i), Request::AddTunnel { id }, now);
                }
                Op::RemoveTunnel(i, a) => {
                    c.handle_request(pick(&conns, i), Request::RemoveTunnel { id: AGENTS[*a] }, now);
                }
                Op::Ready(i, p) => {
                    let id = all_ids()[*p];
                    c.handle_request(pick(&conns, i), Request::ReadyForHandshake { id }, now);
                }
                Op::Disconnect(i) => c.handle_request(pick(&conns, i), Request::Disconnect, now),
                Op::Heard(i) => c.heard_from(pick(&conns, i), now),
                Op::Dropped(i) => c.disconnected(pick(&conns, i), now),
                Op::Advance(ms) => {
                    now += Duration::from_millis(*ms);
                    c.handle_timeout(now);
                    if let Some(t) = c.poll_timeout() {
                        prop_assert!(t > now, "a due deadline survived handle_timeout");
                    }
                }
                Op::SetDerp(n) => {
                    let ids: Vec<u32> = (1..=u32::from(*n) + 1).collect();
                    c.set_derp_map(region_map(&ids));
                }
            }
            let out = drain(&mut c);
            let after = snapshot(&c, &conns);
            check_outputs(&out, &before, &after);
            c.assert_invariants();
            // The driver closes sockets and reports them gone: that must be silent.
            for (conn, _) in closes(&out) {
                c.disconnected(conn, now);
                prop_assert_eq!(drain(&mut c), vec![]);
            }
            // Every known key belongs to a live peer's node and vice versa (checked by
            // assert_invariants); forgotten keys are no longer known.
            for k in c.drain_forgotten_keys() {
                prop_assert!(!c.is_known_key(&k));
            }
        }
    }
}
