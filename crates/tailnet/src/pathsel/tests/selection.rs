//! Choosing a path: DERP first, direct after a pong, the lower latency of two, and the
//! bonuses and hysteresis that keep a choice from flapping.

use super::*;

#[test]
fn starts_on_derp_and_asks_for_fresh_endpoints() {
    let now = t0();
    let mut ps = PathSel::new(1);
    assert_eq!(ps.decision(now), SendDecision::Derp { also: None });
    assert_eq!(ps.poll_timeout(), None);
    ps.set_endpoints(now, [pub_a()]);
    assert!(drain(&mut ps).is_empty(), "nothing happens before traffic");

    assert_eq!(ps.on_send(now), SendDecision::Derp { also: None });
    let outs = drain(&mut ps);
    assert_eq!(pings(&outs).len(), 1);
    // No endpoints of ours yet: re-STUN first, CallMeMaybe follows.
    assert!(outs.contains(&Output::NeedFreshEndpoints));
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::SendCallMeMaybe { .. }))
    );
    ps.set_local_endpoints(now + 100 * MS, ours());
    assert_eq!(
        drain(&mut ps),
        vec![Output::SendCallMeMaybe { endpoints: ours() }]
    );
    assert_eq!(
        SendDecision::Derp { also: None }.path(7),
        PathKind::Derp { region: 7 }
    );
}

#[test]
fn upgrades_to_direct_after_a_pong_and_reports_the_latency() {
    let now = t0();
    let mut ps = sending(2, now, &[pub_a()]);
    let outs = drain(&mut ps);
    let txid = ping_to(&outs, pub_a());
    assert!(outs.contains(&Output::SendCallMeMaybe { endpoints: ours() }));

    let later = now + 23 * MS;
    let got = ps.handle_pong(later, txid, Via::Udp(pub_a()));
    assert_eq!(
        got,
        Some(PongOutcome {
            latency: 23 * MS,
            addr: Some(pub_a()),
            best: true
        })
    );
    assert_eq!(ps.decision(later), SendDecision::Direct(pub_a()));
    assert_eq!(
        ps.decision(later).path(7),
        PathKind::Direct { addr: pub_a() }
    );
    assert_eq!(
        ps.best(),
        Some(AddrQuality {
            addr: pub_a(),
            latency: 23 * MS
        })
    );
    assert_eq!(ps.trusted_until(), Some(later + TRUST_UDP_ADDR_DURATION));
    assert_eq!(
        drain(&mut ps),
        vec![Output::PathChanged {
            direct: Some(pub_a())
        }]
    );
    // The same pong again is unknown now.
    assert_eq!(ps.handle_pong(later, txid, Via::Udp(pub_a())), None);
    // While trusted, sends start no discovery.
    assert_eq!(ps.on_send(later), SendDecision::Direct(pub_a()));
    assert!(drain(&mut ps).is_empty());
}

#[test]
fn derp_pongs_measure_but_never_become_best_and_late_pongs_are_ignored() {
    let now = t0();
    let mut ps = PathSel::new(3);
    ps.set_local_endpoints(now, ours());
    let txid = ps.ping_via_derp(now);
    let got = ps.handle_pong(now + 80 * MS, txid, Via::Derp);
    assert_eq!(
        got,
        Some(PongOutcome {
            latency: 80 * MS,
            addr: None,
            best: false
        })
    );
    // A UDP ping answered over DERP does not count as a direct path either.
    ps.set_endpoints(now, [pub_a()]);
    ps.on_send(now);
    let txid = ping_to(&drain(&mut ps), pub_a());
    let got = ps.handle_pong(now + 30 * MS, txid, Via::Derp);
    assert_eq!(got.map(|g| g.best), Some(false));
    assert_eq!(
        ps.decision(now + 30 * MS),
        SendDecision::Derp { also: None }
    );
    // A pong after the ping timed out is ignored, even without handle_timeout.
    let t = now + 6 * SEC;
    ps.on_send(t);
    let txid = ping_to(&drain(&mut ps), pub_a());
    assert_eq!(
        ps.handle_pong(t + PING_TIMEOUT, txid, Via::Udp(pub_a())),
        None
    );
    assert_eq!(ps.best(), None);
    // Unknown TxIDs are ignored.
    assert_eq!(ps.handle_pong(t, TxId([9; 12]), Via::Udp(pub_a())), None);
}

#[test]
fn a_user_ping_goes_over_derp_and_discovers_until_direct_then_refreshes_trust() {
    let now = t0();
    let mut ps = PathSel::new(11);
    ps.set_local_endpoints(now, ours());
    ps.set_endpoints(now, [pub_a()]);
    // Not trusted yet: the ping goes over DERP and discovery starts.
    let (derp_tx, to) = ps.ping_primary(now);
    assert_eq!(to, None);
    let outs = drain(&mut ps);
    let disco_tx = ping_to(&outs, pub_a());
    assert!(outs.contains(&Output::SendCallMeMaybe { endpoints: ours() }));
    let got = ps.handle_pong(now + 40 * MS, derp_tx, Via::Derp);
    assert_eq!(got.map(|g| (g.latency, g.addr)), Some((40 * MS, None)));
    ps.handle_pong(now + 2 * MS, disco_tx, Via::Udp(pub_a()));
    assert_eq!(ps.decision(now + 2 * MS), SendDecision::Direct(pub_a()));
    drain(&mut ps);
    // Trusted: the next ping goes to the best address, and its pong extends the trust.
    let t = now + 3 * SEC;
    let (tx, to) = ps.ping_primary(t);
    assert_eq!(to, Some(pub_a()));
    assert!(drain(&mut ps).is_empty(), "no discovery while trusted");
    let got = ps.handle_pong(t + MS, tx, Via::Udp(pub_a()));
    assert_eq!(
        got,
        Some(PongOutcome {
            latency: MS,
            addr: Some(pub_a()),
            best: true
        })
    );
    assert_eq!(ps.trusted_until(), Some(t + MS + TRUST_UDP_ADDR_DURATION));
    // Blocked: DERP, no discovery.
    ps.set_blocked(t, true);
    drain(&mut ps);
    let (_, to) = ps.ping_primary(t + SEC);
    assert_eq!(to, None);
    assert!(drain(&mut ps).is_empty());
}

/// Both candidates pinged at `now`; pongs arrive after the given latencies, in order.
fn race(a: (SocketAddr, Duration), b: (SocketAddr, Duration)) -> PathSel {
    let now = t0();
    let mut ps = sending(4, now, &[a.0, b.0]);
    let outs = drain(&mut ps);
    let (ta, tb) = (ping_to(&outs, a.0), ping_to(&outs, b.0));
    ps.handle_pong(now + a.1, ta, Via::Udp(a.0));
    ps.handle_pong(now + b.1, tb, Via::Udp(b.0));
    ps
}

#[test]
fn chooses_the_lower_latency_of_two_candidates() {
    // Slow one answers first, fast one replaces it.
    let ps = race((pub_a(), 30 * MS), (pub_b(), 40 * MS));
    assert_eq!(ps.best().map(|b| b.addr), Some(pub_a()));
    let ps = race((pub_b(), 40 * MS), (pub_a(), 50 * MS));
    assert_eq!(ps.best().map(|b| b.addr), Some(pub_b()));
    // Fast one first: the slow one's later pong does not replace it.
    let ps = race((pub_a(), 10 * MS), (pub_b(), 30 * MS));
    assert_eq!(ps.best().map(|b| b.addr), Some(pub_a()));
    assert_eq!(ps.best().map(|b| b.latency), Some(10 * MS));
}

#[test]
fn bonuses_and_hysteresis() {
    let q = |addr: &str, ms: f64| AddrQuality {
        addr: sa(addr),
        latency: Duration::from_secs_f64(ms / 1000.0),
    };
    // Anything beats nothing; an address never replaces itself.
    assert!(better_addr(q("203.0.113.5:1", 50.0), None));
    assert!(!better_addr(
        q("203.0.113.5:1", 1.0),
        Some(q("203.0.113.5:1", 50.0))
    ));
    // Plain latency: 10 vs 20 ms is 50 points.
    assert!(better_addr(
        q("203.0.113.5:1", 10.0),
        Some(q("198.51.100.9:1", 20.0))
    ));
    assert!(!better_addr(
        q("203.0.113.5:1", 20.0),
        Some(q("198.51.100.9:1", 10.0))
    ));
    // Hysteresis: under 1 % better keeps the current one; 10 % better wins.
    assert!(!better_addr(
        q("203.0.113.5:1", 9.95),
        Some(q("198.51.100.9:1", 10.0))
    ));
    assert!(!better_addr(
        q("203.0.113.5:1", 10.0),
        Some(q("198.51.100.9:1", 10.0))
    ));
    assert!(better_addr(
        q("203.0.113.5:1", 9.0),
        Some(q("198.51.100.9:1", 10.0))
    ));
    // Private (+20) beats a public address up to ~20 % faster, not 50 % faster.
    assert!(better_addr(
        q("192.168.1.5:1", 11.0),
        Some(q("203.0.113.5:1", 10.0))
    ));
    assert!(!better_addr(
        q("203.0.113.5:1", 10.0),
        Some(q("192.168.1.5:1", 11.0))
    ));
    assert!(!better_addr(
        q("192.168.1.5:1", 20.0),
        Some(q("203.0.113.5:1", 10.0))
    ));
    // IPv6 (+10) breaks a tie with IPv4, ULA counts as private.
    assert!(better_addr(
        q("[2001:db8::1]:1", 10.0),
        Some(q("203.0.113.5:1", 10.0))
    ));
    assert!(better_addr(
        q("[fd7a::1]:1", 10.0),
        Some(q("[2001:db8::1]:1", 10.0))
    ));
    // Link-local (+30) beats private (+20) at equal latency; loopback (+50) beats both.
    assert!(better_addr(
        q("169.254.1.1:1", 10.0),
        Some(q("10.0.0.1:1", 10.0))
    ));
    assert!(better_addr(
        q("[fe80::1]:1", 10.0),
        Some(q("[fd00::1]:1", 10.0))
    ));
    assert!(better_addr(
        q("127.0.0.1:1", 10.0),
        Some(q("169.254.1.1:1", 10.0))
    ));
    assert!(better_addr(
        q("127.0.0.1:1", 14.0),
        Some(q("10.0.0.1:1", 10.0))
    ));

    // The same rules through pongs: a private address 10 % slower still wins.
    let lan = sa("192.168.1.5:41641");
    let ps = race((pub_a(), 10 * MS), (lan, 11 * MS));
    assert_eq!(ps.best().map(|b| b.addr), Some(lan));
    // Hysteresis through pongs: 0.5 % faster does not switch, 10 % faster does.
    let ps = race(
        (pub_a(), 10_000 * Duration::from_micros(1)),
        (pub_b(), Duration::from_micros(9_950)),
    );
    assert_eq!(ps.best().map(|b| b.addr), Some(pub_a()));
    let ps = race((pub_a(), 10 * MS), (pub_b(), 9 * MS));
    assert_eq!(ps.best().map(|b| b.addr), Some(pub_b()));
}
