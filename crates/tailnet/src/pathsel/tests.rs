//! Path selection on a virtual clock.

use super::*;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A public IPv4 candidate.
fn pub_a() -> SocketAddr {
    sa("203.0.113.5:41641")
}

/// Another public IPv4 candidate.
fn pub_b() -> SocketAddr {
    sa("198.51.100.9:41641")
}

/// Our own endpoints, for CallMeMaybe.
fn ours() -> Vec<SocketAddr> {
    vec![sa("192.0.2.77:41641")]
}

fn drain(ps: &mut PathSel) -> Vec<Output> {
    std::iter::from_fn(|| ps.poll_output()).collect()
}

fn pings(outs: &[Output]) -> Vec<(SocketAddr, TxId)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendPing { addr, txid } => Some((*addr, *txid)),
            _ => None,
        })
        .collect()
}

fn ping_to(outs: &[Output], to: SocketAddr) -> TxId {
    pings(outs)
        .into_iter()
        .find(|(a, _)| *a == to)
        .map(|(_, t)| t)
        .expect("a ping to the address")
}

/// A path selection with our endpoints and `candidates`, sending to the peer since `now`.
fn sending(seed: u64, now: Instant, candidates: &[SocketAddr]) -> PathSel {
    let mut ps = PathSel::new(seed);
    ps.set_local_endpoints(now, ours());
    ps.set_endpoints(now, candidates.iter().copied());
    ps.on_send(now);
    ps
}

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

/// A driver on a virtual clock: 10 ms steps, pings to `alive` addresses answered after
/// `rtt`.
struct Sim {
    ps: PathSel,
    now: Instant,
    rtt: Duration,
    alive: BTreeSet<SocketAddr>,
    in_flight: Vec<(Instant, TxId, SocketAddr)>,
    /// Every output with the time it was polled.
    log: Vec<(Instant, Output)>,
    /// Times the decision was direct, per step.
    direct: Vec<(Instant, bool)>,
    /// When a pong last confirmed the best address.
    last_best_pong: Option<Instant>,
}

impl Sim {
    fn new(candidates: &[SocketAddr]) -> Self {
        let now = t0();
        let mut ps = PathSel::new(5);
        ps.set_local_endpoints(now, ours());
        ps.set_endpoints(now, candidates.iter().copied());
        Self {
            ps,
            now,
            rtt: 20 * MS,
            alive: candidates.iter().copied().collect(),
            in_flight: Vec::new(),
            log: Vec::new(),
            direct: Vec::new(),
            last_best_pong: None,
        }
    }

    fn run(&mut self, dur: Duration, sending: bool) {
        let end = self.now + dur;
        while self.now < end {
            self.now += 10 * MS;
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|(at, _, _)| *at <= now);
            self.in_flight = rest;
            for (at, txid, addr) in due {
                if let Some(o) = self.ps.handle_pong(at, txid, Via::Udp(addr))
                    && o.best
                {
                    self.last_best_pong = Some(at);
                }
            }
            if sending {
                self.ps.on_send(now);
            }
            if self.ps.poll_timeout().is_some_and(|t| t <= now) {
                self.ps.handle_timeout(now);
                assert!(self.ps.poll_timeout().is_none_or(|t| t > now));
            }
            while let Some(o) = self.ps.poll_output() {
                if let Output::SendPing { addr, txid } = o
                    && self.alive.contains(&addr)
                {
                    self.in_flight.push((now + self.rtt, txid, addr));
                }
                self.log.push((now, o));
            }
            let d = self.ps.decision(now);
            self.direct.push((now, d.direct().is_some()));
        }
    }

    fn first_change_after(&self, since: Instant, to_direct: bool) -> Option<Instant> {
        self.direct
            .iter()
            .find(|(t, d)| *t >= since && *d == to_direct)
            .map(|(t, _)| *t)
    }

    fn pings_in(&self, from: Instant, to: Instant) -> usize {
        self.log
            .iter()
            .filter(|(t, o)| *t >= from && *t < to && matches!(o, Output::SendPing { .. }))
            .count()
    }
}

#[test]
fn falls_back_to_derp_when_pongs_stop_and_returns_when_they_resume() {
    // A answers; B is a dead candidate, as most candidates are.
    let mut sim = Sim::new(&[pub_a(), pub_b()]);
    sim.alive.remove(&pub_b());
    let start = sim.now;
    sim.run(10 * SEC, true);
    let up = sim.first_change_after(start, true).expect("went direct");
    assert!(
        up - start <= 50 * MS,
        "direct after one RTT, took {:?}",
        up - start
    );
    assert!(sim.direct.iter().filter(|(t, _)| *t >= up).all(|(_, d)| *d));
    assert_eq!(sim.ps.best().map(|b| b.latency), Some(20 * MS));

    // The direct path dies.
    sim.alive.clear();
    let died = sim.now;
    sim.run(15 * SEC, true);
    let down = sim
        .first_change_after(died, false)
        .expect("fell back to DERP");
    let last_pong = sim.last_best_pong.expect("pongs before");
    assert!(down - last_pong <= TRUST_UDP_ADDR_DURATION + 10 * MS);
    // Not the whole trust period: the first unanswered heartbeat ends it.
    assert!(
        down - died <= HEARTBEAT_INTERVAL + BEST_PONG_DEADLINE + 100 * MS,
        "fell back after {:?}",
        down - died
    );
    assert!(
        sim.log
            .iter()
            .any(|(t, o)| *t >= down && *o == Output::PathChanged { direct: None })
    );
    // While on DERP, sends still copy to the old best and rediscovery runs: pings,
    // and CallMeMaybes to make the peer punch too.
    assert_eq!(
        sim.ps.decision(sim.now),
        SendDecision::Derp {
            also: Some(pub_a())
        }
    );
    assert!(sim.pings_in(down, down + 6 * SEC) >= 2);
    assert!(
        sim.log
            .iter()
            .any(|(t, o)| *t >= down && matches!(o, Output::SendCallMeMaybe { .. }))
    );

    // It comes back.
    sim.alive.insert(pub_a());
    let back = sim.now;
    sim.run(10 * SEC, true);
    let up = sim.first_change_after(back, true).expect("direct again");
    assert!(
        up - back <= HEARTBEAT_INTERVAL + 100 * MS,
        "direct again after {:?}",
        up - back
    );
    assert_eq!(sim.ps.decision(sim.now), SendDecision::Direct(pub_a()));
}

#[test]
fn a_lost_heartbeat_answered_by_a_later_one_keeps_the_path() {
    // Every other ping to the best address is lost: each later pong proves the path,
    // so the older lost ping must not end the trust.
    let mut sim = Sim::new(&[pub_a()]);
    sim.run(SEC, true);
    let start = sim.now;
    let mut lose = false;
    for _ in 0..20 {
        sim.run(HEARTBEAT_INTERVAL / 2, true);
        lose = !lose;
        if lose {
            sim.in_flight.clear();
        }
    }
    assert!(
        sim.direct
            .iter()
            .filter(|(t, _)| *t >= start)
            .all(|(_, d)| *d),
        "fell back to DERP although pongs kept arriving"
    );
}

#[test]
fn one_lost_heartbeat_is_retried_before_trust_ends() {
    let mut sim = Sim::new(&[pub_a()]);
    sim.run(SEC, true);
    assert_eq!(sim.ps.decision(sim.now), SendDecision::Direct(pub_a()));
    let start = sim.now;
    // The next heartbeat goes out into a dead network; the retry half a deadline later
    // finds it alive again.
    let hb = sim
        .log
        .iter()
        .filter(|(_, o)| matches!(o, Output::SendPing { .. }))
        .count();
    while sim
        .log
        .iter()
        .filter(|(_, o)| matches!(o, Output::SendPing { .. }))
        .count()
        == hb
    {
        sim.alive.clear();
        sim.run(10 * MS, true);
    }
    let lost_at = sim.now;
    sim.alive.insert(pub_a());
    sim.run(3 * SEC, true);
    assert!(
        sim.direct
            .iter()
            .filter(|(t, _)| *t >= start)
            .all(|(_, d)| *d),
        "one lost heartbeat ended the direct path"
    );
    let retry = sim
        .log
        .iter()
        .find(|(t, o)| *t > lost_at && matches!(o, Output::SendPing { .. }))
        .map(|(t, _)| *t)
        .expect("a retry ping");
    assert!(retry - lost_at <= BEST_PONG_DEADLINE / 2 + 20 * MS);
}

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
fn heartbeats_stop_after_45_s_idle() {
    let mut sim = Sim::new(&[pub_a()]);
    sim.run(5 * SEC, true);
    let last_send = sim.now;
    sim.run(90 * SEC, false);
    // Heartbeats keep pinging (and the path direct) for a while after the last send...
    assert!(sim.pings_in(last_send, last_send + 30 * SEC) >= 9);
    assert!(
        sim.direct
            .iter()
            .filter(|(t, _)| *t >= last_send && *t < last_send + 40 * SEC)
            .all(|(_, d)| *d)
    );
    // ...then stop; the driver is left with nothing to wake up for.
    assert_eq!(sim.pings_in(last_send + SESSION_ACTIVE_TIMEOUT, sim.now), 0);
    assert_eq!(sim.ps.poll_timeout(), None);
    assert_eq!(
        sim.ps.decision(sim.now),
        SendDecision::Derp {
            also: Some(pub_a())
        }
    );
    // The next send goes straight back to discovery.
    sim.run(SEC, true);
    assert_eq!(sim.ps.decision(sim.now), SendDecision::Direct(pub_a()));
}

#[test]
fn a_slow_best_is_raced_again_every_minute_a_fast_one_is_not() {
    for (rtt, want_races) in [(20 * MS, true), (2 * MS, false)] {
        let mut sim = Sim::new(&[pub_a(), pub_b()]);
        sim.alive.remove(&pub_b());
        sim.rtt = rtt;
        sim.run(5 * SEC, true);
        let t = sim.now;
        sim.run(130 * SEC, true);
        let b_pings = sim
            .log
            .iter()
            .filter(|(at, o)| {
                *at >= t && matches!(o, Output::SendPing { addr, .. } if *addr == pub_b())
            })
            .count();
        if want_races {
            assert!((2..=3).contains(&b_pings), "{rtt:?}: {b_pings}");
        } else {
            assert_eq!(b_pings, 0, "{rtt:?}");
        }
        assert_eq!(sim.ps.decision(sim.now), SendDecision::Direct(pub_a()));
    }
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
