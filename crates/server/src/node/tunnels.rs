//! Which agents the server's node keeps a tunnel to, sans-IO: a tunnel is opened on
//! first use, held while something uses it (a [`Tunnels::acquire`] not yet released:
//! an open web terminal), and dropped once it has been idle for the configured time
//! (30 min by default). Time is passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Users that hold the tunnel now.
    leases: usize,
    /// When it was last used or released.
    last_used: Instant,
}

/// The server node's tunnels and their idle clocks.
#[derive(Debug)]
pub struct Tunnels {
    idle_after: Duration,
    entries: BTreeMap<Uuid, Entry>,
}

impl Tunnels {
    /// No tunnels; an unused one is dropped after `idle_after`.
    pub fn new(idle_after: Duration) -> Self {
        Self {
            idle_after,
            entries: BTreeMap::new(),
        }
    }

    /// How long an unused tunnel lives.
    pub fn idle_after(&self) -> Duration {
        self.idle_after
    }

    /// `agent`'s tunnel was used at `now` (a page asked for its path, a request went
    /// through it). True when it is new: the caller opens it.
    pub fn touch(&mut self, agent: Uuid, now: Instant) -> bool {
        match self.entries.get_mut(&agent) {
            Some(e) => {
                e.last_used = e.last_used.max(now);
                false
            }
            None => {
                self.entries.insert(
                    agent,
                    Entry {
                        leases: 0,
                        last_used: now,
                    },
                );
                true
            }
        }
    }

    /// Something starts holding `agent`'s tunnel at `now`; it cannot expire until the
    /// matching [`Tunnels::release`]. True when the tunnel is new.
    pub fn acquire(&mut self, agent: Uuid, now: Instant) -> bool {
        let new = self.touch(agent, now);
        if let Some(e) = self.entries.get_mut(&agent) {
            e.leases += 1;
        }
        new
    }

    /// A holder of `agent`'s tunnel let go at `now`; its idle time starts then.
    pub fn release(&mut self, agent: Uuid, now: Instant) {
        if let Some(e) = self.entries.get_mut(&agent) {
            e.leases = e.leases.saturating_sub(1);
            e.last_used = e.last_used.max(now);
        }
    }

    /// Removes and returns the tunnels idle for `idle_after` as of `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Uuid> {
        let idle_after = self.idle_after;
        let gone: Vec<Uuid> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.leases == 0 && now.saturating_duration_since(e.last_used) >= idle_after
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.entries.remove(id);
        }
        gone
    }

    /// When the next unused tunnel expires, if any is unused.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.leases == 0)
            .map(|e| e.last_used + self.idle_after)
            .min()
    }

    /// Forgets `agent`'s tunnel (its workspace is gone).
    pub fn remove(&mut self, agent: Uuid) -> bool {
        self.entries.remove(&agent).is_some()
    }

    /// Whether the node has a tunnel to `agent`.
    pub fn contains(&self, agent: Uuid) -> bool {
        self.entries.contains_key(&agent)
    }

    /// Every agent with a tunnel, in id order.
    pub fn agents(&self) -> Vec<Uuid> {
        self.entries.keys().copied().collect()
    }

    /// How many hold `agent`'s tunnel now.
    pub fn leases(&self, agent: Uuid) -> usize {
        self.entries.get(&agent).map_or(0, |e| e.leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Uuid = Uuid::from_u128(1);
    const B: Uuid = Uuid::from_u128(2);
    const IDLE: Duration = Duration::from_secs(30 * 60);

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn mins(base: Instant, m: u64) -> Instant {
        base + Duration::from_secs(m * 60)
    }

    #[test]
    fn an_unused_tunnel_expires_after_the_idle_time_and_not_before() {
        let t = t0();
        let mut tun = Tunnels::new(IDLE);
        assert!(tun.touch(A, t));
        assert!(!tun.touch(A, mins(t, 10)));
        assert_eq!(tun.next_expiry(), Some(mins(t, 40)));
        assert_eq!(tun.expire(mins(t, 39)), Vec::<Uuid>::new());
        assert_eq!(tun.expire(mins(t, 40)), vec![A]);
        assert!(!tun.contains(A));
        // Used again: a new tunnel.
        assert!(tun.touch(A, mins(t, 41)));
    }

    #[test]
    fn a_held_tunnel_never_expires_and_idles_from_its_release() {
        let t = t0();
        let mut tun = Tunnels::new(IDLE);
        assert!(tun.acquire(A, t));
        assert!(!tun.acquire(A, t));
        tun.touch(B, t);
        assert_eq!(tun.next_expiry(), Some(mins(t, 30)));
        assert_eq!(tun.expire(mins(t, 600)), vec![B]);
        assert_eq!(tun.leases(A), 2);
        tun.release(A, mins(t, 600));
        assert_eq!(tun.expire(mins(t, 700)), Vec::<Uuid>::new());
        tun.release(A, mins(t, 700));
        assert_eq!(tun.next_expiry(), Some(mins(t, 730)));
        assert_eq!(tun.expire(mins(t, 729)), Vec::<Uuid>::new());
        assert_eq!(tun.expire(mins(t, 730)), vec![A]);
        assert_eq!(tun.agents(), Vec::<Uuid>::new());
    }

    #[test]
    fn a_short_clock_and_stray_calls() {
        let t = t0();
        let mut tun = Tunnels::new(Duration::from_millis(200));
        tun.release(A, t); // never acquired: nothing happens
        assert!(!tun.contains(A));
        tun.touch(A, t);
        // An earlier time never moves the clock back.
        tun.touch(A, t + Duration::from_millis(150));
        tun.touch(A, t + Duration::from_millis(100));
        assert_eq!(
            tun.expire(t + Duration::from_millis(349)),
            Vec::<Uuid>::new()
        );
        assert_eq!(tun.expire(t + Duration::from_millis(350)), vec![A]);
        tun.touch(B, t);
        assert!(tun.remove(B));
        assert!(!tun.remove(B));
        assert_eq!(tun.next_expiry(), None);
    }
}
