//! Property test: random operation sequences keep the coordinator's invariants, and
//! every output follows from the state before and after it.

use super::*;

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
