//! Keeping a path: heartbeats on a virtual-clock driver, a lost one retried, DERP when
//! pongs stop and back when they resume, heartbeats stopping when idle, a slow best
//! raced again.

use super::*;

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
