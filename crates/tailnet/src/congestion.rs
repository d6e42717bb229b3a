//! The congestion window of one TCP sender, driven by [`crate::recovery`] (smoltcp's own
//! controller is off).
//!
//! smoltcp's CUBIC cuts its window by 30 % for every loss episode and, on a path of a
//! fraction of a millisecond, regrows it at Reno's pace; with 1 % random loss in the NAT
//! lab that held a sender to a third of its lossless speed, although every loss was
//! repaired within a round trip. This window follows BBRv2's loss bound instead: loss
//! is congestion only while more than 2 % of the segments are lost (judged over at least
//! 1000 segments) or more than 10 % at once (2 % in slow start), as [`crate::recovery`]
//! judges it. Then the window is cut by 30 %, at most once per round trip; a lossy but
//! uncongested path keeps its window, and its losses are only repaired.
//! [`crate::recovery`] also cuts when the receiver falls behind.
//!
//! Growth: doubling per round trip (slow start) until the first cut, then 1/32 of the
//! window per round trip (about 3 %; on a sub-millisecond path that regains a cut in a
//! few milliseconds, where Reno's one segment per round trip took hundreds). It grows
//! only while the sender fills at least half of it (RFC 7661), so a window that an
//! application or the receiver limits does not grow without bound. A retransmission
//! timeout starts again from [`MIN_SEGMENTS`].
//!
//! Sans-IO: byte counts and sequence positions in, a window out.

/// The initial window in segments (RFC 6928).
const INITIAL_SEGMENTS: u64 = 10;
/// The window is never cut below this many segments.
const MIN_SEGMENTS: u64 = 4;
/// After slow start the window grows by 1/`GROWTH_DIVISOR` of itself per round trip.
const GROWTH_DIVISOR: u64 = 32;
/// An upper bound, far above any buffer the netstack gives a socket.
const MAX_WINDOW: u64 = 1 << 30;

/// A congestion window in bytes.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    mss: u64,
    cwnd: u64,
    ssthresh: u64,
    /// No further cut until data beyond this (the end of what was sent at the last cut)
    /// is delivered: one cut per round trip, also while a hole holds the cumulative ACK.
    recover: u64,
}

impl Window {
    /// A fresh window for segments of up to `mss` bytes.
    pub(crate) fn new(mss: u64) -> Self {
        let mss = mss.max(1);
        Self {
            mss,
            cwnd: INITIAL_SEGMENTS * mss,
            ssthresh: u64::MAX,
            recover: 0,
        }
    }

    /// The window: bytes that may be in flight (sent, neither acknowledged nor SACKed).
    pub(crate) fn bytes(&self) -> u64 {
        self.cwnd
    }

    /// Whether the window is still doubling.
    pub(crate) fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// Segments of `mss` bytes were seen: the window counts in them from now on.
    pub(crate) fn set_mss(&mut self, mss: u64) {
        if mss > self.mss {
            if self.cwnd == INITIAL_SEGMENTS * self.mss {
                self.cwnd = INITIAL_SEGMENTS * mss;
            }
            self.mss = mss;
        }
    }

    /// `acked` bytes were delivered (cumulatively acknowledged or SACKed) while `pipe`
    /// bytes, these included, were in flight.
    pub(crate) fn on_delivered(&mut self, acked: u64, pipe: u64) {
        if acked == 0 || pipe < self.cwnd / 2 {
            // Not limited by the window: growing it would prove nothing.
            return;
        }
        let grow = if self.in_slow_start() {
            acked
        } else {
            let per_round = (self.cwnd / GROWTH_DIVISOR).max(self.mss);
            // Spread over the round's ACKs; u128 because a product of two windows can
            // pass u64 on absurd inputs.
            u64::try_from(u128::from(per_round) * u128::from(acked) / u128::from(self.cwnd))
                .unwrap_or(u64::MAX)
                .max(1)
        };
        self.cwnd = self.cwnd.saturating_add(grow).min(MAX_WINDOW);
    }

    /// Loss that counts as congestion was found when data up to `delivered` (the end of
    /// the highest segment SACKed or acknowledged) had arrived and `nxt` was the end of
    /// the data sent: cut by 30 % unless this round trip was cut already. Returns
    /// whether it cut.
    pub(crate) fn on_congestion(&mut self, delivered: u64, nxt: u64) -> bool {
        if !self.new_round(delivered) {
            return false;
        }
        self.cut_to(self.reduced(0), nxt);
        true
    }

    /// The receiver falls behind (its window shrank): cut by 30 % like congestion, at
    /// most once per round trip, but never below `floor`. Returns whether it cut.
    pub(crate) fn on_receiver_behind(&mut self, delivered: u64, nxt: u64, floor: u64) -> bool {
        let cut = self.reduced(floor);
        if !self.new_round(delivered) || cut >= self.cwnd {
            return false;
        }
        self.cut_to(cut, nxt);
        true
    }

    /// The window less 30 %, but not below `floor` or [`MIN_SEGMENTS`].
    fn reduced(&self, floor: u64) -> u64 {
        (self.cwnd / 10 * 7).max(floor).max(MIN_SEGMENTS * self.mss)
    }

    /// Whether data sent after the last cut has been delivered (data up to `delivered`).
    fn new_round(&self, delivered: u64) -> bool {
        self.recover == 0 || delivered > self.recover
    }

    /// Cuts to `cwnd`, ending slow start, with `nxt` the end of the data sent so far.
    fn cut_to(&mut self, cwnd: u64, nxt: u64) {
        self.ssthresh = cwnd;
        self.cwnd = cwnd;
        self.recover = nxt;
    }

    /// smoltcp's retransmission timer fired and it resends everything from `una`: what
    /// was in flight is presumed lost, start again from a small window.
    pub(crate) fn on_timeout(&mut self, nxt: u64) {
        self.ssthresh = (self.cwnd / 2).max(MIN_SEGMENTS * self.mss);
        self.cwnd = MIN_SEGMENTS * self.mss;
        self.recover = nxt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u64 = 1000;

    /// One round trip of a sender that keeps the window full: a window's worth is
    /// delivered, ACK by ACK, each arriving with the window in flight.
    fn round(w: &mut Window) {
        let mut left = w.bytes();
        while left > 0 {
            let acked = MSS.min(left);
            w.on_delivered(acked, w.bytes());
            left -= acked;
        }
    }

    /// A fresh window after `n` such round trips.
    fn after_rounds(n: usize) -> Window {
        let mut w = Window::new(MSS);
        for _ in 0..n {
            round(&mut w);
        }
        w
    }

    #[test]
    fn slow_start_doubles_each_round_trip() {
        let mut w = Window::new(MSS);
        assert_eq!(w.bytes(), 10 * MSS);
        round(&mut w);
        assert_eq!(w.bytes(), 20 * MSS);
        for _ in 0..5 {
            round(&mut w);
        }
        assert_eq!(w.bytes(), 640 * MSS);
        assert!(w.in_slow_start());
    }

    #[test]
    fn a_cut_takes_30_percent_once_per_round_trip_and_growth_then_is_gentle() {
        let mut w = after_rounds(8);
        let before = w.bytes();
        assert!(w.on_congestion(100, 500));
        let cut = w.bytes();
        assert_eq!(cut, before / 10 * 7);
        // Further losses of the same round trip do not cut again.
        assert!(!w.on_congestion(300, 900));
        assert_eq!(w.bytes(), cut);
        assert!(!w.in_slow_start());
        // About 3 % per round trip.
        round(&mut w);
        let grown = w.bytes() - cut;
        assert!(
            grown >= cut / 64 && grown <= cut / 16,
            "grew {grown} from {cut}"
        );
        // Once data sent after the cut is delivered, a new congestion signal cuts again.
        assert!(!w.on_congestion(500, 1500));
        assert!(w.on_congestion(501, 1500));
        assert!(w.bytes() < cut + grown);
    }

    #[test]
    fn an_idle_or_receiver_limited_window_does_not_grow() {
        let mut w = Window::new(MSS);
        for _ in 0..100 {
            w.on_delivered(MSS, 2 * MSS);
        }
        assert_eq!(w.bytes(), 10 * MSS);
    }

    #[test]
    fn a_timeout_restarts_small_and_cuts_never_go_below_the_minimum() {
        let mut w = after_rounds(6);
        let before = w.bytes();
        w.on_timeout(10_000);
        assert_eq!(w.bytes(), MIN_SEGMENTS * MSS);
        // Slow start again, up to half the old window.
        assert!(w.in_slow_start());
        while w.in_slow_start() {
            round(&mut w);
        }
        assert!(w.bytes() >= before / 2);
        let mut small = Window::new(MSS);
        for i in 0..20 {
            small.on_congestion(i * 10, i * 10 + 10);
        }
        assert_eq!(small.bytes(), MIN_SEGMENTS * MSS);
    }

    #[test]
    fn a_receiver_that_falls_behind_cuts_down_to_a_floor_only() {
        let mut w = after_rounds(6);
        let before = w.bytes();
        assert!(w.on_receiver_behind(100, 200, 0));
        assert_eq!(w.bytes(), before / 10 * 7);
        assert!(!w.on_receiver_behind(150, 300, 0), "same round trip");
        let mut delivered = 300;
        while w.on_receiver_behind(delivered, delivered + 100, 100 * MSS) {
            delivered += 200;
        }
        assert_eq!(w.bytes(), 100 * MSS);
        assert!(!w.in_slow_start());
    }

    #[test]
    fn the_initial_window_follows_the_segment_size() {
        let mut w = Window::new(536);
        w.set_mss(1220);
        assert_eq!(w.bytes(), 10 * 1220);
        w.set_mss(600);
        assert_eq!(w.bytes(), 10 * 1220);
    }
}
