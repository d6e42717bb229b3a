//! The server's own node ([`Role::Server`]): tunnels to every agent, not bound to owners.

use super::*;

const SERVER: Uuid = Uuid::from_u128(0x5e);

fn server() -> Role {
    Role::Server { id: SERVER }
}

#[test]
fn server_node_may_tunnel_to_every_existing_agent() {
    let now = t0();
    let mut c = setup();
    c.connect(1, server(), now).expect("server node");
    c.connect(2, agent(AGENT_A), now).expect("agent a");
    c.connect(3, agent(AGENT_B), now).expect("agent b");
    drain(&mut c);
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(SERVER, 9),
        },
        now,
    );
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(AGENT_A, 1),
        },
        now,
    );
    drain(&mut c);

    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    c.handle_request(1, Request::AddTunnel { id: AGENT_B }, now);
    let out = drain(&mut c);
    assert!(errors_to(&out, 1).is_empty(), "{out:?}");
    assert!(c.has_tunnel(SERVER, AGENT_A) && c.has_tunnel(SERVER, AGENT_B));
    // Each side learns the other's node as with a user's client.
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::node(node(AGENT_A, 1))]
    );
    assert_eq!(updates_to(&out, 2), vec![PeerUpdate::node(node(SERVER, 9))]);
    assert_eq!(updates_to(&out, 3), vec![PeerUpdate::node(node(SERVER, 9))]);

    // An agent that does not exist is refused with the usual text.
    let stranger = Uuid::from_u128(0xdead);
    c.handle_request(1, Request::AddTunnel { id: stranger }, now);
    assert_eq!(errors_to(&drain(&mut c), 1), vec![no_such_agent(stranger)]);
    assert_eq!(
        c.stats(),
        Stats {
            agents: 2,
            clients: 0,
            servers: 1,
            tunnels: 2
        }
    );
    c.assert_invariants();
}

#[test]
fn owner_change_keeps_the_server_node_tunnel() {
    let now = t0();
    let mut c = setup();
    c.connect(1, server(), now).expect("server node");
    c.connect(2, client(CLIENT_A, USER_A), now).expect("client");
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    c.handle_request(2, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);
    c.set_agent_owner(AGENT_A, USER_B);
    let out = drain(&mut c);
    assert!(updates_to(&out, 1).is_empty(), "{out:?}");
    assert!(c.has_tunnel(SERVER, AGENT_A));
    assert!(!c.has_tunnel(CLIENT_A, AGENT_A));
    c.assert_invariants();
}

#[test]
fn server_node_tunnels_end_with_removal_deletion_and_leaving() {
    let now = t0();
    let mut c = setup();
    c.connect(1, server(), now).expect("server node");
    c.connect(2, agent(AGENT_A), now).expect("agent");
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(SERVER, 9),
        },
        now,
    );
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    c.handle_request(1, Request::AddTunnel { id: AGENT_B }, now);
    drain(&mut c);

    // Removed by the node (the idle sweep): the agent hears DISCONNECTED.
    c.handle_request(1, Request::RemoveTunnel { id: AGENT_A }, now);
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 2),
        vec![PeerUpdate::disconnected(SERVER, "tunnel removed")]
    );
    assert!(!c.has_tunnel(SERVER, AGENT_A));

    // The workspace is deleted: the node hears DISCONNECTED for it.
    c.remove_agent(AGENT_B, now);
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::disconnected(AGENT_B, "workspace deleted")]
    );

    // The node leaves: its tunnels go with it.
    c.handle_request(1, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);
    c.disconnected(1, now);
    let out = drain(&mut c);
    assert_eq!(
        updates_to(&out, 2),
        vec![PeerUpdate::lost(SERVER, "connection lost")]
    );
    assert_eq!(c.stats().tunnels, 0);
    assert!(!c.is_known_key(&key(9)));
    c.assert_invariants();
}

#[test]
fn server_node_may_not_take_an_agent_id() {
    let now = t0();
    let mut c = setup();
    assert_eq!(
        c.connect(1, Role::Server { id: AGENT_A }, now),
        Err(CoordError::IdInUse(AGENT_A))
    );
    // Nor may a client take the server node's id while it is connected.
    c.connect(2, server(), now).expect("server node");
    assert_eq!(
        c.connect(3, client(SERVER, USER_A), now),
        Err(CoordError::IdInUse(SERVER))
    );
}
