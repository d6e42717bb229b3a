//! Revoking a client ([`Coordinator::revoke`]): told, closed, its agents told to end its
//! streams, its tunnels gone; agents and the server's node are not revoked this way.

use super::*;

/// AGENT_A and CLIENT_A (conns 1 and 2) with a tunnel and both nodes exchanged.
fn tunnelled() -> Coordinator {
    let now = t0();
    let mut c = setup();
    c.connect(1, agent(AGENT_A), now).expect("agent");
    c.connect(2, client(CLIENT_A, USER_A), now).expect("client");
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(AGENT_A, 1),
        },
        now,
    );
    c.handle_request(
        2,
        Request::UpdateSelf {
            node: node(CLIENT_A, 2),
        },
        now,
    );
    c.handle_request(2, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);
    c
}

#[test]
fn a_revoked_client_is_told_closed_and_its_agent_ends_its_streams() {
    let now = t0();
    let mut c = tunnelled();
    assert!(c.revoke(2, "logged out"));
    let out = drain(&mut c);
    // The client hears why before the close.
    let ended = out
        .iter()
        .position(|o| {
            matches!(o, Output::Send { conn: 2, msg: Response::SessionEnded { reason } } if reason == "logged out")
        })
        .expect("SessionEnded");
    let closed = out
        .iter()
        .position(|o| matches!(o, Output::Close { conn: 2, .. }))
        .expect("close");
    assert!(ended < closed, "{out:?}");
    assert_eq!(closes(&out), vec![(2, "logged out".to_owned())]);
    assert_eq!(
        updates_to(&out, 1),
        vec![PeerUpdate::revoked(CLIENT_A, "logged out")]
    );
    assert!(!c.is_connected(2));
    assert!(!c.has_tunnel(CLIENT_A, AGENT_A));
    assert!(!c.is_known_key(&key(2)));
    assert_eq!(c.drain_forgotten_keys(), vec![key(2)]);
    // Later traffic of the closed connection changes nothing, and the agent's node
    // changing reaches nobody.
    c.handle_request(2, Request::AddTunnel { id: AGENT_A }, now);
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(AGENT_A, 3),
        },
        now,
    );
    c.disconnected(2, now);
    let out = drain(&mut c);
    assert!(updates_to(&out, 2).is_empty(), "{out:?}");
    assert!(updates_to(&out, 1).is_empty(), "{out:?}");
    c.assert_invariants();
}

#[test]
fn only_a_live_users_client_is_revoked() {
    let mut c = tunnelled();
    c.connect(
        3,
        Role::Server {
            id: Uuid::from_u128(0x5e),
        },
        t0(),
    )
    .expect("server node");
    drain(&mut c);
    assert!(!c.revoke(1, "no"), "an agent");
    assert!(!c.revoke(3, "no"), "the server's node");
    assert!(!c.revoke(99, "no"), "an unknown connection");
    assert!(drain(&mut c).is_empty());
    assert!(c.is_connected(1) && c.is_connected(3));
    assert!(c.revoke(2, "suspended"));
    assert!(!c.revoke(2, "suspended"), "twice");
    c.assert_invariants();
}

#[test]
fn revoking_one_client_leaves_the_users_other_clients() {
    let now = t0();
    let mut c = tunnelled();
    c.connect(3, client(CLIENT_A2, USER_A), now)
        .expect("second client");
    c.handle_request(3, Request::AddTunnel { id: AGENT_A }, now);
    drain(&mut c);
    assert!(c.revoke(2, "logged out"));
    drain(&mut c);
    assert!(c.has_tunnel(CLIENT_A2, AGENT_A));
    c.handle_request(
        1,
        Request::UpdateSelf {
            node: node(AGENT_A, 4),
        },
        now,
    );
    let out = drain(&mut c);
    assert_eq!(updates_to(&out, 3).len(), 1, "{out:?}");
    c.assert_invariants();
}
