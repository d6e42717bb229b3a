//! One STUN round, sans-IO: which binding request goes where and when, which answers
//! count, and when the round is over.
//!
//! Contract: the driver ([`super::stun_round`]) asks [`StunRound::poll_probe`] for the
//! probes due at `now`, sends each with a fresh transaction ID and reports it with
//! [`StunRound::handle_sent`]; it feeds answers to [`StunRound::handle_answer`] and a
//! broken socket to [`StunRound::handle_family_failed`]; it sleeps until
//! [`StunRound::poll_timeout`] (`None`: the round is over) and finally takes
//! [`StunRound::into_measurements`]. No clock, no socket, no randomness here.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use tether_stun::message::TransactionId;

use super::{Family, Measurements, PlannedProbe, StunAnswer, StunTarget};

/// A probe due now: send a binding request to `target`, then report it with
/// [`StunRound::handle_sent`] and `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Its place in the plan.
    pub index: usize,
    /// Where it goes.
    pub target: StunTarget,
}

/// The state of one STUN round: the plan, what was sent, what answered.
#[derive(Debug)]
pub struct StunRound {
    plan: Vec<PlannedProbe>,
    start: Instant,
    deadline: Instant,
    next: usize,
    groups: BTreeSet<usize>,
    done: BTreeSet<usize>,
    failed: BTreeSet<Family>,
    pending: HashMap<TransactionId, (usize, Instant)>,
    measurements: Measurements,
}

impl StunRound {
    /// A round that starts at `now`, sends `plan` (sorted by delay) and ends once every
    /// group of the plan answered, or at `deadline`.
    pub fn new(mut plan: Vec<PlannedProbe>, now: Instant, deadline: Instant) -> Self {
        plan.sort_by_key(|p| p.delay);
        let groups = plan.iter().map(|p| p.group).collect();
        Self {
            plan,
            start: now,
            deadline,
            next: 0,
            groups,
            done: BTreeSet::new(),
            failed: BTreeSet::new(),
            pending: HashMap::new(),
            measurements: Measurements::default(),
        }
    }

    /// Whether the round is over at `now`: every group answered (or its family failed),
    /// or the deadline passed.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.done.len() >= self.groups.len() || now >= self.deadline
    }

    /// The next probe due at `now`, skipping those whose group already answered or
    /// whose family failed.
    pub fn poll_probe(&mut self, now: Instant) -> Option<Probe> {
        if self.is_finished(now) {
            return None;
        }
        while let Some(p) = self.plan.get(self.next) {
            if self.start + p.delay > now {
                return None;
            }
            let index = self.next;
            self.next += 1;
            if self.done.contains(&p.group) || self.failed.contains(&Family::of(&p.target.addr)) {
                continue;
            }
            return Some(Probe {
                index,
                target: p.target.clone(),
            });
        }
        None
    }

    /// Probe `index` went out at `now` with transaction `txid`.
    pub fn handle_sent(&mut self, now: Instant, index: usize, txid: TransactionId) {
        let Some(p) = self.plan.get(index) else {
            return;
        };
        match Family::of(&p.target.addr) {
            Family::V4 => self.measurements.can_send_v4 = true,
            Family::V6 => self.measurements.can_send_v6 = true,
        }
        self.pending.insert(txid, (index, now));
    }

    /// An answer to `txid` saw us as `mapped`, at `now`: the answer it makes, or `None`
    /// when no request of this round is pending under that ID.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        txid: TransactionId,
        mapped: SocketAddr,
    ) -> Option<&StunAnswer> {
        let (index, sent) = self.pending.remove(&txid)?;
        let p = self.plan.get(index)?;
        self.done.insert(p.group);
        self.measurements.stun.push(StunAnswer {
            region: p.target.region,
            server: p.target.addr,
            mapped: SocketAddr::new(mapped.ip().to_canonical(), mapped.port()),
            latency: now.saturating_duration_since(sent),
        });
        self.measurements.stun.last()
    }

    /// The socket of `family` broke: its groups are given up.
    pub fn handle_family_failed(&mut self, family: Family) {
        self.failed.insert(family);
        for p in &self.plan {
            if Family::of(&p.target.addr) == family {
                self.done.insert(p.group);
            }
        }
    }

    /// When the driver must call again: the next probe's time or the deadline; `None`
    /// once the round is over (answers after that are not waited for).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done.len() >= self.groups.len() {
            return None;
        }
        let next_probe = self.plan.get(self.next).map(|p| self.start + p.delay);
        Some(next_probe.map_or(self.deadline, |t| t.min(self.deadline)))
    }

    /// What the round measured: answers in arrival order and which families could send.
    pub fn into_measurements(self) -> Measurements {
        self.measurements
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::super::{STUN_RETRY_INTERVAL, STUN_TRIES, plan_stun, plan_stun_per_server};
    use super::*;

    /// The tests' epoch; every later time is explicit.
    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn target(region: u32, addr: &str) -> StunTarget {
        StunTarget {
            region,
            node: format!("{region}a"),
            addr: addr.parse().unwrap(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn txid(n: u8) -> TransactionId {
        TransactionId([n; 12])
    }

    #[test]
    fn probes_come_when_due_and_stop_once_the_group_answered() {
        let t0 = epoch();
        let plan = plan_stun(&[target(1, "192.0.2.1:3478"), target(2, "192.0.2.2:3478")]);
        let mut r = StunRound::new(plan, t0, t0 + ms(1000));
        // Both regions' first tries are due at once.
        let a = r.poll_probe(t0).unwrap();
        let b = r.poll_probe(t0).unwrap();
        assert_eq!(r.poll_probe(t0), None);
        assert_eq!(r.poll_timeout(), Some(t0 + STUN_RETRY_INTERVAL));
        r.handle_sent(t0, a.index, txid(1));
        r.handle_sent(t0, b.index, txid(2));
        // Region 1 answers after 30 ms; only region 2 is tried again.
        let got = r
            .handle_answer(t0 + ms(30), txid(1), "203.0.113.5:1000".parse().unwrap())
            .unwrap();
        assert_eq!(got.region, a.target.region);
        assert_eq!(got.latency, ms(30));
        let again = r.poll_probe(t0 + STUN_RETRY_INTERVAL).unwrap();
        assert_eq!(again.target, b.target);
        assert_eq!(r.poll_probe(t0 + STUN_RETRY_INTERVAL), None);
        // An unknown or repeated transaction ID makes no answer.
        assert!(
            r.handle_answer(t0 + ms(120), txid(1), "203.0.113.5:1000".parse().unwrap())
                .is_none()
        );
        assert!(!r.is_finished(t0 + ms(120)));
        r.handle_sent(t0 + STUN_RETRY_INTERVAL, again.index, txid(3));
        r.handle_answer(t0 + ms(150), txid(3), "203.0.113.5:1000".parse().unwrap())
            .unwrap();
        assert!(r.is_finished(t0 + ms(150)));
        assert_eq!(r.poll_timeout(), None);
        let m = r.into_measurements();
        assert!(m.can_send_v4 && !m.can_send_v6);
        assert_eq!(m.stun.len(), 2);
        assert_eq!(m.stun[1].latency, ms(50));
    }

    #[test]
    fn every_try_of_a_silent_server_then_the_deadline() {
        let t0 = epoch();
        let plan = plan_stun_per_server(&[target(1, "192.0.2.1:3478")]);
        let deadline = t0 + ms(1000);
        let mut r = StunRound::new(plan, t0, deadline);
        let mut sent = 0;
        let mut t = t0;
        while let Some(wake) = r.poll_timeout() {
            if r.is_finished(t) {
                break;
            }
            while let Some(p) = r.poll_probe(t) {
                r.handle_sent(t, p.index, txid(sent));
                sent += 1;
            }
            t = wake;
        }
        assert_eq!(u32::from(sent), STUN_TRIES);
        assert_eq!(t, deadline);
        assert!(r.is_finished(deadline));
        assert_eq!(r.poll_probe(deadline), None);
        assert!(r.into_measurements().stun.is_empty());
    }

    #[test]
    fn per_server_plan_waits_for_each_server_of_a_region() {
        let t0 = epoch();
        let targets = [target(1, "192.0.2.1:3478"), target(1, "192.0.2.2:3478")];
        // One region, two servers: a report is done with either, a refresh wants both.
        let mut by_region = StunRound::new(plan_stun(&targets), t0, t0 + ms(1000));
        let p = by_region.poll_probe(t0).unwrap();
        by_region.handle_sent(t0, p.index, txid(1));
        by_region.handle_answer(t0, txid(1), "203.0.113.5:1".parse().unwrap());
        assert!(by_region.is_finished(t0));

        let mut each = StunRound::new(plan_stun_per_server(&targets), t0, t0 + ms(1000));
        let a = each.poll_probe(t0).unwrap();
        let b = each.poll_probe(t0).unwrap();
        assert_ne!(a.target.addr, b.target.addr);
        each.handle_sent(t0, a.index, txid(1));
        each.handle_sent(t0, b.index, txid(2));
        each.handle_answer(t0, txid(1), "203.0.113.5:1".parse().unwrap());
        assert!(!each.is_finished(t0));
        each.handle_answer(t0, txid(2), "203.0.113.5:2".parse().unwrap());
        assert!(each.is_finished(t0));
    }

    #[test]
    fn a_failed_family_ends_its_groups_and_empty_plans_end_at_once() {
        let t0 = epoch();
        let plan = plan_stun(&[target(1, "192.0.2.1:3478"), target(1, "[2001:db8::1]:3478")]);
        let mut r = StunRound::new(plan, t0, t0 + ms(1000));
        r.handle_family_failed(Family::V6);
        let p = r.poll_probe(t0).unwrap();
        assert_eq!(Family::of(&p.target.addr), Family::V4);
        assert_eq!(r.poll_probe(t0), None);
        r.handle_family_failed(Family::V4);
        assert!(r.is_finished(t0));
        assert_eq!(r.poll_timeout(), None);

        let r = StunRound::new(Vec::new(), t0, t0 + ms(1000));
        assert!(r.is_finished(t0));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.into_measurements(), Measurements::default());
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let t0 = epoch();
        let mut r = StunRound::new(plan_stun(&[target(1, "192.0.2.1:3478")]), t0, t0 + ms(1000));
        let p = r.poll_probe(t0).unwrap();
        r.handle_sent(t0, p.index, txid(9));
        let got = r
            .handle_answer(t0, txid(9), "[::ffff:203.0.113.5]:1000".parse().unwrap())
            .unwrap();
        assert_eq!(got.mapped, "203.0.113.5:1000".parse().unwrap());
    }
}
