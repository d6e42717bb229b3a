//! Exponential backoff with jitter for reconnecting loops (DERP links, the coordination
//! session, the agent's join loop).
//!
//! No clock and no I/O: the caller sleeps for what [`Backoff::next_delay`] returns. The
//! jitter comes from a seed given at construction, so a simulation that seeds it
//! reproduces the same delays.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Delays that double from `min` up to `max`; each one is drawn from `[d/2, d]` so that
/// many clients cut off at once do not come back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
    rng: StdRng,
}

impl Backoff {
    /// A backoff whose jitter is drawn from `seed`.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min,
            max: max.max(min),
            cur: min,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A backoff seeded from the OS, for drivers that need no reproducibility.
    pub fn with_random_seed(min: Duration, max: Duration) -> Self {
        Self::new(min, max, rand::random())
    }

    /// Starts over at `min`, after a success.
    pub fn reset(&mut self) {
        self.cur = self.min;
    }

    /// The next delay to wait; the one after it is twice as long, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        let half = d / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(self.rng.gen_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10), 7);
        let d1 = b.next_delay();
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        let d2 = b.next_delay();
        assert!(
            d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
            "{d2:?}"
        );
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(10), "{d:?}");
        }
        assert!(b.next_delay() >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn same_seed_same_delays() {
        let run = |seed| {
            let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(10), seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn zero_minimum_stays_zero() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, 1);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
