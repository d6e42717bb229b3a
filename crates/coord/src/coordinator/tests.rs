use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tether_key::DiscoPublic;
use tether_proto::coord::{PeerUpdateKind, Request, Response};
use tether_proto::derpmap::DerpRegion;

use super::*;

mod keys_and_status;
mod property;
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
