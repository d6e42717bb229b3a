//! Random event sequences (proptest): never a panic, never a path outside the candidates.

use super::*;

#[derive(Debug, Clone)]
enum Ev {
    Coord(Vec<usize>),
    CallMeMaybe(Vec<usize>),
    PingFrom(usize),
    Send,
    Pong { pick: usize, derp: bool },
    StrayPong([u8; 12], usize),
    Advance(u64),
    Timeout,
    Block(bool),
    Local,
    DerpPing,
}

const POOL: [&str; 6] = [
    "127.0.0.1:1",
    "192.168.1.2:41641",
    "203.0.113.5:41641",
    "[fe80::1]:41641",
    "[2001:db8::5]:41641",
    "[fd7a::9]:41641",
];

fn ev() -> impl Strategy<Value = Ev> {
    let idx = || proptest::collection::vec(0usize..POOL.len(), 0..4);
    prop_oneof![
        1 => idx().prop_map(Ev::Coord),
        1 => idx().prop_map(Ev::CallMeMaybe),
        1 => (0usize..POOL.len()).prop_map(Ev::PingFrom),
        4 => Just(Ev::Send),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, derp)| Ev::Pong { pick, derp }),
        1 => (any::<[u8; 12]>(), 0usize..POOL.len()).prop_map(|(t, i)| Ev::StrayPong(t, i)),
        4 => (0u64..8000).prop_map(Ev::Advance),
        3 => Just(Ev::Timeout),
        1 => any::<bool>().prop_map(Ev::Block),
        1 => Just(Ev::Local),
        1 => Just(Ev::DerpPing),
    ]
}

proptest! {
    #[test]
    fn prop_random_events_never_panic_or_leave_the_candidates(
        seed in any::<u64>(),
        evs in proptest::collection::vec(ev(), 1..120),
    ) {
        let pool: Vec<SocketAddr> = POOL.iter().map(|s| sa(s)).collect();
        let mut now = t0();
        let mut ps = PathSel::new(seed);
        let mut outstanding: Vec<(TxId, Option<SocketAddr>)> = Vec::new();
        for e in evs {
            match e {
                Ev::Coord(ix) => ps.set_endpoints(now, ix.iter().map(|i| pool[*i])),
                Ev::CallMeMaybe(ix) => ps.handle_call_me_maybe(now, ix.iter().map(|i| pool[*i])),
                Ev::PingFrom(i) => ps.handle_ping(now, Via::Udp(pool[i])),
                Ev::Send => {
                    let d = ps.on_send(now);
                    prop_assert_eq!(d, ps.decision(now));
                }
                Ev::Pong { pick, derp } => {
                    if !outstanding.is_empty() {
                        let (txid, to) = outstanding.remove(pick % outstanding.len());
                        let via = match (derp, to) {
                            (false, Some(a)) => Via::Udp(a),
                            _ => Via::Derp,
                        };
                        if let Some(o) = ps.handle_pong(now, txid, via) {
                            prop_assert_eq!(o.addr, to);
                            prop_assert!(!o.best || (to.is_some() && !derp));
                        }
                    }
                }
                Ev::StrayPong(t, i) => {
                    ps.handle_pong(now, TxId(t), Via::Udp(pool[i]));
                }
                Ev::Advance(ms) => now += Duration::from_millis(ms),
                Ev::Timeout => {
                    ps.handle_timeout(now);
                    prop_assert!(ps.poll_timeout().is_none_or(|t| t > now));
                }
                Ev::Block(b) => ps.set_blocked(now, b),
                Ev::Local => ps.set_local_endpoints(now, ours()),
                Ev::DerpPing => outstanding.push((ps.ping_via_derp(now), None)),
            }
            let cands: BTreeSet<SocketAddr> = ps.candidates().collect();
            prop_assert!(cands.len() <= MAX_CANDIDATES);
            while let Some(o) = ps.poll_output() {
                match o {
                    Output::SendPing { addr, txid } => {
                        prop_assert!(!ps.is_blocked());
                        prop_assert!(cands.contains(&addr), "ping to non-candidate {}", addr);
                        outstanding.push((txid, Some(addr)));
                    }
                    Output::PathChanged { direct: Some(a) } => {
                        prop_assert!(cands.contains(&a), "path to non-candidate {}", a);
                    }
                    Output::SendCallMeMaybe { .. } => prop_assert!(!ps.is_blocked()),
                    _ => {}
                }
            }
            match ps.decision(now) {
                SendDecision::Direct(a) => {
                    prop_assert!(!ps.is_blocked());
                    prop_assert!(cands.contains(&a), "direct to non-candidate {}", a);
                }
                SendDecision::Derp { also: Some(a) } => {
                    prop_assert!(cands.contains(&a), "copy to non-candidate {}", a);
                }
                SendDecision::Derp { also: None } => {}
            }
            if let Some(b) = ps.best() {
                prop_assert!(cands.contains(&b.addr));
            }
        }
    }
}
