//! What the driver reads back: known and forgotten node keys (DERP admission), agent status.

use super::*;

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
