//! Finding candidates: pings back to untrusted sources, endpoints that arrive late,
//! CallMeMaybe both ways, expiry and bounds of the candidate set, a blocked path.

use super::*;

#[test]
fn a_ping_from_an_untrusted_source_is_pinged_back_once_a_second() {
    let now = t0();
    let mut ps = PathSel::new(11);
    ps.set_local_endpoints(now, ours());
    let src = pub_a();
    ps.handle_ping(now, Via::Udp(src));
    let back = ping_to(&drain(&mut ps), src);
    // A second ping within the interval gets no second ping back; one later does.
    ps.handle_ping(now + 500 * MS, Via::Udp(src));
    assert!(pings(&drain(&mut ps)).is_empty());
    ps.handle_ping(now + PING_BACK_INTERVAL, Via::Udp(src));
    assert_eq!(pings(&drain(&mut ps)).len(), 1);
    // Pings over DERP are not pinged back over UDP.
    ps.handle_ping(now + 3 * SEC, Via::Derp);
    assert!(pings(&drain(&mut ps)).is_empty());
    // Our own ping a moment before (as discovery sends it, likely dropped by the
    // peer's NAT) does not hold back the ping back.
    let other = pub_b();
    ps.set_endpoints(now, [other]);
    ps.on_send(now + 2 * SEC);
    ping_to(&drain(&mut ps), other);
    ps.handle_ping(now + 2 * SEC + MS, Via::Udp(other));
    ping_to(&drain(&mut ps), other);
    // The pong to the ping back makes the source the trusted best; its pings then need
    // no ping back.
    let t = now + 3 * SEC;
    assert!(
        ps.handle_pong(t, back, Via::Udp(src))
            .is_some_and(|o| o.best)
    );
    assert_eq!(ps.decision(t), SendDecision::Direct(src));
    ps.handle_ping(t + 2 * SEC, Via::Udp(src));
    assert!(pings(&drain(&mut ps)).is_empty());
    // A blocked peer pings nobody back.
    let mut blocked = PathSel::new(12);
    blocked.set_blocked(now, true);
    blocked.handle_ping(now, Via::Udp(src));
    assert!(pings(&drain(&mut blocked)).is_empty());
}

#[test]
fn endpoints_arriving_after_traffic_started_are_pinged_at_once() {
    let now = t0();
    let mut ps = PathSel::new(13);
    ps.set_local_endpoints(now, ours());
    // Traffic before any endpoint is known: nothing to ping yet.
    ps.on_send(now);
    assert!(pings(&drain(&mut ps)).is_empty());
    ps.set_endpoints(now + 200 * MS, [pub_a()]);
    let outs = drain(&mut ps);
    ping_to(&outs, pub_a());
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::SendCallMeMaybe { .. }))
    );
    // An idle peer's new endpoints wait for traffic.
    let mut idle = PathSel::new(14);
    idle.set_endpoints(now, [pub_a()]);
    assert!(pings(&drain(&mut idle)).is_empty());
}

#[test]
fn discovery_sent_before_the_peer_was_ready_runs_again_when_it_is() {
    let now = t0();
    let mut ps = sending(15, now, &[pub_a()]);
    ping_to(&drain(&mut ps), pub_a());
    // The peer adds us a moment later: our first ping was dropped, so ping again and
    // ask it to ping us, without waiting for the discovery interval.
    ps.on_peer_ready(now + 2 * MS);
    let outs = drain(&mut ps);
    ping_to(&outs, pub_a());
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::SendCallMeMaybe { .. }))
    );
    // Once direct, readiness changes nothing.
    let txid = ping_to(&outs, pub_a());
    ps.handle_pong(now + 3 * MS, txid, Via::Udp(pub_a()));
    drain(&mut ps);
    ps.on_peer_ready(now + 4 * MS);
    assert!(drain(&mut ps).is_empty());
    // Nor does it start discovery for a peer we have not sent to.
    let mut idle = PathSel::new(16);
    idle.set_endpoints(now, [pub_a()]);
    idle.on_peer_ready(now);
    assert!(drain(&mut idle).is_empty());
}

#[test]
fn ping_source_candidates_expire() {
    let now = t0();
    let mut ps = PathSel::new(6);
    let src = sa("203.0.113.80:5555");
    // An IPv4-mapped source is the same candidate as its IPv4 form.
    ps.handle_ping(now, Via::Udp(sa("[::ffff:203.0.113.80]:5555")));
    ps.handle_ping(now, Via::Derp);
    assert_eq!(ps.candidates().collect::<Vec<_>>(), vec![src]);
    // The UDP source is pinged back once (not the DERP one); unanswered, that ping
    // times out and the candidate's expiry is what is left.
    assert_eq!(pings(&drain(&mut ps)).len(), 1);
    assert_eq!(ps.poll_timeout(), Some(now + PING_TIMEOUT));
    ps.handle_timeout(now + PING_TIMEOUT);
    assert_eq!(ps.poll_timeout(), Some(now + PING_SOURCE_TTL));
    // A later ping refreshes it, and is pinged back.
    let t = now + 30 * SEC;
    ps.handle_ping(t, Via::Udp(src));
    let txid = ping_to(&drain(&mut ps), src);
    // The pong to that ping back makes it the best path...
    ps.handle_pong(t + 5 * MS, txid, Via::Udp(src));
    assert_eq!(ps.decision(t + 5 * MS), SendDecision::Direct(src));
    ps.handle_timeout(now + PING_SOURCE_TTL);
    assert_eq!(ps.candidates().count(), 1);
    // ...but pings from it stop, and 45 s after the last one it is gone.
    let gone = now + 30 * SEC + PING_SOURCE_TTL;
    ps.handle_timeout(gone - MS);
    assert!(ps.candidates().any(|c| c == src));
    ps.handle_timeout(gone);
    assert_eq!(ps.candidates().count(), 0);
    assert_eq!(ps.best(), None);
    assert_eq!(ps.decision(gone), SendDecision::Derp { also: None });

    // A candidate the coordinator also lists outlives its ping source.
    ps.set_endpoints(gone, [src]);
    ps.handle_ping(gone, Via::Udp(src));
    ps.handle_timeout(gone + PING_SOURCE_TTL);
    assert_eq!(ps.candidates().collect::<Vec<_>>(), vec![src]);
    // Dropped from the coordinator's list, it is gone, and so is a best path on it.
    ps.set_endpoints(gone + PING_SOURCE_TTL, []);
    assert_eq!(ps.candidates().count(), 0);
}

#[test]
fn blocked_stays_on_derp() {
    let now = t0();
    let mut ps = PathSel::new(7);
    ps.set_local_endpoints(now, ours());
    ps.set_endpoints(now, [pub_a()]);
    ps.on_send(now);
    let txid = ping_to(&drain(&mut ps), pub_a());
    ps.handle_pong(now + 5 * MS, txid, Via::Udp(pub_a()));
    assert_eq!(ps.decision(now + 5 * MS), SendDecision::Direct(pub_a()));
    drain(&mut ps);

    let t = now + 10 * MS;
    ps.set_blocked(t, true);
    assert!(ps.is_blocked());
    assert_eq!(drain(&mut ps), vec![Output::PathChanged { direct: None }]);
    for i in 0..100u32 {
        let t = t + i * 500 * MS;
        assert_eq!(ps.on_send(t), SendDecision::Derp { also: None });
        ps.handle_call_me_maybe(t, [pub_b()]);
        ps.handle_ping(t, Via::Udp(pub_b()));
        if ps.poll_timeout().is_some_and(|d| d <= t) {
            ps.handle_timeout(t);
        }
        assert_eq!(
            drain(&mut ps),
            vec![],
            "no pings, no CallMeMaybe while blocked"
        );
    }
    // Unblocked, it discovers again.
    let t = t + 60 * SEC;
    ps.set_blocked(t, false);
    ps.on_send(t);
    assert_eq!(pings(&drain(&mut ps)).len(), 1);
}

#[test]
fn call_me_maybe_goes_out_with_pings_and_is_answered_with_pings() {
    let now = t0();
    let mut ps = PathSel::new(8);
    ps.set_local_endpoints(now, ours());
    // No candidates: no pings, so no CallMeMaybe.
    ps.on_send(now);
    assert!(drain(&mut ps).is_empty());

    ps.set_endpoints(now, [pub_a()]);
    ps.on_send(now);
    let outs = drain(&mut ps);
    assert_eq!(pings(&outs).len(), 1);
    assert_eq!(
        outs.iter()
            .filter(|o| matches!(o, Output::SendCallMeMaybe { .. }))
            .count(),
        1
    );
    // Within the ping interval: nothing new, however much traffic.
    for i in 1..50u32 {
        ps.on_send(now + i * 100 * MS);
    }
    assert!(drain(&mut ps).is_empty());
    // After it: ping and CallMeMaybe again.
    ps.on_send(now + DISCO_PING_INTERVAL);
    let outs = drain(&mut ps);
    assert_eq!(pings(&outs).len(), 1);
    assert!(outs.contains(&Output::SendCallMeMaybe { endpoints: ours() }));

    // Our endpoints went stale (27 s): re-STUN is requested once, the CallMeMaybe waits.
    let t = now + 30 * SEC;
    ps.on_send(t);
    let outs = drain(&mut ps);
    assert_eq!(pings(&outs).len(), 1);
    assert!(outs.contains(&Output::NeedFreshEndpoints));
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::SendCallMeMaybe { .. }))
    );
    ps.on_send(t + 6 * SEC);
    let outs = drain(&mut ps);
    assert!(!outs.contains(&Output::NeedFreshEndpoints));
    let fresh = vec![sa("192.0.2.77:50000")];
    ps.set_local_endpoints(t + 6 * SEC, fresh.clone());
    assert_eq!(
        drain(&mut ps),
        vec![Output::SendCallMeMaybe { endpoints: fresh }]
    );

    // The peer's CallMeMaybe: its endpoints become candidates and every candidate is
    // pinged at once, even one pinged a moment ago; no CallMeMaybe goes back.
    let t = t + 7 * SEC;
    ps.on_send(t);
    drain(&mut ps);
    ps.handle_call_me_maybe(t + MS, [pub_b(), sa("[::ffff:192.0.2.9]:7")]);
    let outs = drain(&mut ps);
    let mut to: Vec<_> = pings(&outs).into_iter().map(|(a, _)| a).collect();
    to.sort();
    let mut want = vec![pub_a(), pub_b(), sa("192.0.2.9:7")];
    want.sort();
    assert_eq!(to, want);
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::SendCallMeMaybe { .. }))
    );
    // A later CallMeMaybe replaces the earlier one's endpoints.
    ps.handle_call_me_maybe(t + 2 * MS, [pub_b()]);
    let mut c: Vec<_> = ps.candidates().collect();
    c.sort();
    let mut want = vec![pub_a(), pub_b()];
    want.sort();
    assert_eq!(c, want);
}

#[test]
fn candidates_are_bounded() {
    let now = t0();
    let mut ps = PathSel::new(9);
    ps.handle_call_me_maybe(
        now,
        (0..1000u16).map(|p| SocketAddr::from(([203, 0, 113, 1], p))),
    );
    assert_eq!(ps.candidates().count(), MAX_CANDIDATES);
    assert_eq!(pings(&drain(&mut ps)).len(), MAX_CANDIDATES);
}
