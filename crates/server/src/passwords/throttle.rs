//! Login rate limits, sans-IO: a token bucket per account and per source address, each
//! attempt taking a token from both and a correct password giving them back, so only
//! failures add up. Both maps are bounded: when one is full, entries that have refilled
//! (and so carry nothing) go first, then the half least limited; an attacker who makes up
//! names or addresses cannot grow them, nor push a locked account out. A source may also
//! have only a few attempts under way at once, so a handful of addresses cannot fill the
//! queue for argon2 that everyone else waits in.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One bucket's rule: `burst` attempts at once, then one per `refill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Attempts allowed in a row.
    pub burst: u32,
    /// Time to earn one attempt back.
    pub refill: Duration,
}

/// The rules of a [`LoginThrottle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failed logins per account (by user, or by the name tried when there is none).
    pub account: Rate,
    /// Failed logins per source address (IPv6 by /64).
    pub source: Rate,
    /// Attempts under way at once per source address.
    pub source_in_flight: u32,
    /// Entries each map keeps before evicting.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            account: Rate {
                burst: 10,
                refill: Duration::from_secs(30),
            },
            source: Rate {
                burst: 30,
                refill: Duration::from_secs(2),
            },
            source_in_flight: 4,
            max_entries: 10_000,
        }
    }
}

/// The source key of an address: IPv4 as is, IPv6 by its /64 (what one host gets).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    in_flight: u32,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            at: now,
            in_flight: 0,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() / rate.refill.as_secs_f64();
        self.tokens = (self.tokens + earned).min(f64::from(rate.burst));
        self.at = now.max(self.at);
    }

    /// How long until one token is there.
    fn wait(&self, rate: Rate) -> Duration {
        rate.refill.mul_f64((1.0 - self.tokens).max(0.0))
    }
}

/// A bounded map of buckets.
#[derive(Debug)]
struct Buckets<K> {
    rate: Rate,
    max: usize,
    map: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    fn new(rate: Rate, max: usize) -> Self {
        Self {
            rate,
            max: max.max(2),
            map: HashMap::new(),
        }
    }

    /// The bucket of `key`, refilled to `now`; made (full) if missing.
    fn get(&mut self, key: K, now: Instant) -> &mut Bucket {
        if !self.map.contains_key(&key) && self.map.len() >= self.max {
            self.evict(now);
        }
        let rate = self.rate;
        let b = self
            .map
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, now));
        b.refill(rate, now);
        b
    }

    fn evict(&mut self, now: Instant) {
        let rate = self.rate;
        let burst = f64::from(rate.burst);
        self.map.retain(|_, b| {
            b.refill(rate, now);
            b.in_flight > 0 || b.tokens < burst
        });
        if self.map.len() < self.max * 9 / 10 {
            return;
        }
        let mut idle: Vec<(f64, K)> = self
            .map
            .iter()
            .filter(|(_, b)| b.in_flight == 0)
            .map(|(k, b)| (b.tokens, *k))
            .collect();
        idle.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, k) in idle.into_iter().take(self.max / 2) {
            self.map.remove(&k);
        }
    }
}

/// A login attempt under way; hand it back to [`LoginThrottle::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    source: IpAddr,
    account: [u8; 32],
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password was right: both tokens are given back.
    Correct,
    /// The password was wrong, or the check was abandoned: the tokens stay spent.
    Wrong,
    /// The password was never checked (the server was busy): the tokens are given back.
    Unchecked,
}

/// The per-account and per-source login limits.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: Limits,
    accounts: Buckets<[u8; 32]>,
    sources: Buckets<IpAddr>,
}

impl LoginThrottle {
    /// A throttle with these limits and nothing recorded.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            accounts: Buckets::new(limits.account, limits.max_entries),
            sources: Buckets::new(limits.source, limits.max_entries),
        }
    }

    /// Starts an attempt from `source` on `account` (a digest of the account's identity),
    /// or says how long to wait before one is allowed.
    pub fn begin(
        &mut self,
        source: IpAddr,
        account: [u8; 32],
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let source = source_key(source);
        let (source_rate, account_rate) = (self.limits.source, self.limits.account);
        let s = *self.sources.get(source, now);
        if s.in_flight >= self.limits.source_in_flight {
            return Err(Duration::from_secs(1));
        }
        let a = *self.accounts.get(account, now);
        if s.tokens < 1.0 || a.tokens < 1.0 {
            return Err(s.wait(source_rate).max(a.wait(account_rate)));
        }
        let s = self.sources.get(source, now);
        s.tokens -= 1.0;
        s.in_flight += 1;
        let a = self.accounts.get(account, now);
        a.tokens -= 1.0;
        a.in_flight += 1;
        Ok(Attempt { source, account })
    }

    /// Ends an attempt.
    pub fn finish(&mut self, attempt: Attempt, outcome: Outcome, now: Instant) {
        let refund = if outcome == Outcome::Wrong { 0.0 } else { 1.0 };
        let (source_burst, account_burst) = (self.limits.source.burst, self.limits.account.burst);
        let s = self.sources.get(attempt.source, now);
        s.in_flight = s.in_flight.saturating_sub(1);
        s.tokens = (s.tokens + refund).min(f64::from(source_burst));
        let a = self.accounts.get(attempt.account, now);
        a.in_flight = a.in_flight.saturating_sub(1);
        a.tokens = (a.tokens + refund).min(f64::from(account_burst));
    }

    /// Entries held, accounts and sources (for tests and health).
    pub fn len(&self) -> (usize, usize) {
        (self.accounts.map.len(), self.sources.map.len())
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn acct(b: u8) -> [u8; 32] {
        [b; 32]
    }

    fn limits() -> Limits {
        Limits {
            account: Rate {
                burst: 3,
                refill: Duration::from_secs(10),
            },
            source: Rate {
                burst: 5,
                refill: Duration::from_secs(1),
            },
            source_in_flight: 2,
            max_entries: 100,
        }
    }

    fn fail(
        t: &mut LoginThrottle,
        source: IpAddr,
        account: [u8; 32],
        now: Instant,
    ) -> Result<(), Duration> {
        let a = t.begin(source, account, now)?;
        t.finish(a, Outcome::Wrong, now);
        Ok(())
    }

    #[test]
    fn an_account_is_limited_from_any_source_and_refills() {
        let now = t0();
        let mut t = LoginThrottle::new(limits());
        for i in 0..3 {
            fail(&mut t, ip(i), acct(1), now).expect("within the burst");
        }
        let wait = fail(&mut t, ip(9), acct(1), now).expect_err("limited");
        assert_eq!(wait, Duration::from_secs(10));
        // Another account from the same sources is fine.
        fail(&mut t, ip(0), acct(2), now).expect("other account");
        // One token back after the refill time, not before.
        assert!(fail(&mut t, ip(9), acct(1), now + Duration::from_secs(9)).is_err());
        fail(&mut t, ip(9), acct(1), now + Duration::from_secs(10)).expect("refilled");
    }

    #[test]
    fn a_source_is_limited_across_accounts() {
        let now = t0();
        let mut t = LoginThrottle::new(limits());
        for i in 0..5 {
            fail(&mut t, ip(1), acct(i), now).expect("within the burst");
        }
        assert_eq!(
            fail(&mut t, ip(1), acct(50), now),
            Err(Duration::from_secs(1))
        );
        fail(&mut t, ip(2), acct(50), now).expect("another source");
    }

    #[test]
    fn correct_and_unchecked_attempts_give_their_tokens_back() {
        let now = t0();
        let mut t = LoginThrottle::new(limits());
        for _ in 0..20 {
            let a = t.begin(ip(1), acct(1), now).expect("allowed");
            t.finish(a, Outcome::Correct, now);
            let a = t.begin(ip(1), acct(1), now).expect("allowed");
            t.finish(a, Outcome::Unchecked, now);
        }
    }

    #[test]
    fn a_source_has_few_attempts_under_way() {
        let now = t0();
        let mut t = LoginThrottle::new(limits());
        let a = t.begin(ip(1), acct(1), now).expect("first");
        let b = t.begin(ip(1), acct(2), now).expect("second");
        assert_eq!(t.begin(ip(1), acct(3), now), Err(Duration::from_secs(1)));
        t.finish(a, Outcome::Wrong, now);
        let c = t.begin(ip(1), acct(3), now).expect("after one ended");
        t.finish(b, Outcome::Wrong, now);
        t.finish(c, Outcome::Wrong, now);
    }

    #[test]
    fn ipv6_sources_count_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(source_key(mapped), ip(7));
    }

    #[test]
    fn the_maps_stay_bounded_and_keep_a_locked_account() {
        let now = t0();
        let mut t = LoginThrottle::new(Limits {
            source: Rate {
                burst: 1_000_000,
                refill: Duration::from_millis(1),
            },
            ..limits()
        });
        for _ in 0..3 {
            fail(&mut t, ip(1), acct(7), now).expect("burst");
        }
        // An attacker makes up 100,000 account names and sources.
        for i in 0..100_000u32 {
            let mut name = [0u8; 32];
            name[..4].copy_from_slice(&i.to_be_bytes());
            name[31] = 0xff;
            let source = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let _ = fail(&mut t, source, name, now);
            let (accounts, sources) = t.len();
            assert!(accounts <= 100 && sources <= 100, "{accounts} {sources}");
        }
        assert!(
            fail(&mut t, ip(2), acct(7), now).is_err(),
            "the locked account was forgotten"
        );
    }
}
