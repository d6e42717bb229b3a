//! One TCP connection as recovery tracks it: positions, kept segments, round trips,
//! the RACK loss detection and the loss meter that tells random loss from congestion.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::RecoveryStats;
use super::inflight::InFlight;
use super::segment::{bare_fin_of, rewrite};
use crate::congestion::Window;

/// Probe timeout before the first round-trip sample.
const INITIAL_PTO: Duration = Duration::from_millis(50);
/// The probe timeout never goes below this.
const MIN_PTO: Duration = Duration::from_millis(1);
/// The reordering window grows up to this many quarters of the minimum round trip
/// (and never beyond the smoothed round trip).
const MAX_REO_QUARTERS: u32 = 16;
/// Loss counts as congestion above 1 in 50 segments (2 %, the threshold of BBRv2)...
const CONGESTION_LOSS_RATIO: u64 = 50;
/// ...judged over at least this many segments, so that a few random losses in a small
/// window are not mistaken for it. Slow paths take long to judge, but heavy loss counts
/// at once.
const JUDGE_SEGMENTS: u32 = 1000;
/// Loss of more than 1 in 10 segments (at least 3) is congestion without waiting for
/// the judgement.
const HEAVY_LOSS_RATIO: u64 = 10;
/// No fewer losses than this count as congestion.
const CONGESTION_MIN_LOSSES: u32 = 3;
/// Segment size assumed until a connection's first segment shows it.
pub(super) const DEFAULT_MSS: u64 = 1220;
/// Where sequence positions start, so that positions below a flow's first segment stay
/// positive.
const ORIGIN: u64 = 1 << 32;

/// Deliveries and losses, to tell random loss from congestion.
#[derive(Debug, Default)]
pub(super) struct LossMeter {
    /// Deliveries and losses since the last judgement.
    pub(super) delivered: u32,
    pub(super) lost: u32,
    /// The last judgement.
    pub(super) congested: bool,
}

impl LossMeter {
    pub(super) fn exceeds(delivered: u32, lost: u32, ratio: u64) -> bool {
        lost >= CONGESTION_MIN_LOSSES
            && u64::from(lost) * ratio > u64::from(delivered) + u64::from(lost)
    }

    /// Judges the loss rate once enough has been seen.
    pub(super) fn judge(&mut self) {
        if self.delivered.saturating_add(self.lost) >= JUDGE_SEGMENTS {
            self.congested = Self::exceeds(self.delivered, self.lost, CONGESTION_LOSS_RATIO);
            (self.delivered, self.lost) = (0, 0);
        }
    }

    /// Whether loss looks like congestion now. In slow start (`starting`) the window
    /// doubles each round trip, so an overshoot shows as loss above 2 % at once and
    /// must end it before the next doubling, without waiting for a judgement.
    pub(super) fn congested(&self, starting: bool) -> bool {
        let ratio = if starting {
            CONGESTION_LOSS_RATIO
        } else {
            HEAVY_LOSS_RATIO
        };
        self.congested || Self::exceeds(self.delivered, self.lost, ratio)
    }
}

#[derive(Debug)]
pub(super) struct Flow {
    /// Cumulative ACK, as a position and as the sequence number it maps to.
    pub(super) una: u64,
    pub(super) una_seq: u32,
    /// End of the highest segment sent.
    pub(super) nxt: u64,
    /// Copies of the segments sent and not cumulatively acknowledged.
    pub(super) segs: InFlight,
    /// End of the highest segment delivered (SACKed or cumulatively acknowledged).
    pub(super) delivered_high: u64,
    /// The largest window the peer advertised, in bytes.
    pub(super) peer_max: u64,
    /// The congestion window.
    pub(super) cwnd: Window,
    /// The peer's window scale (from its SYN).
    pub(super) shift: u8,
    /// Send time and end of the most recently sent segment known delivered.
    pub(super) rack: Option<(Instant, u64)>,
    /// Round trip of that segment.
    pub(super) rack_rtt: Duration,
    pub(super) min_rtt: Option<Duration>,
    pub(super) srtt: Option<Duration>,
    /// The reordering window in quarters of the minimum round trip: grows each time a
    /// resend turns out to have been needless (the path reorders), as RFC 8985 does on
    /// DSACKs.
    pub(super) reo_quarters: u32,
    /// When the RACK reordering window of a suspected segment ends.
    pub(super) reo_deadline: Option<Instant>,
    /// The ACK number and window of the peer's latest ACK, and of the one smoltcp saw.
    pub(super) peer_in: Option<(u32, u16)>,
    pub(super) ack_in: Option<(u32, u16)>,
    pub(super) loss: LossMeter,
    /// The ACK number and window of our latest packet, written into resent copies.
    pub(super) ack_out: Option<(u32, u16)>,
    /// Last ACK progress (or first send into an empty pipe); the probe timer counts from it.
    pub(super) pto_base: Instant,
    pub(super) tlp_sent: bool,
    pub(super) active: Instant,
    /// Whether segments are kept (copied). A flow that sends [`PROBATION`](super::PROBATION) bytes before
    /// its first SACK stops keeping them, until that SACK.
    pub(super) armed: bool,
    /// Bytes sent since the start, while no SACK came.
    pub(super) clean_bytes: u64,
    /// A SACK has come: the path loses packets, keep copies for good.
    pub(super) sack_seen: bool,
}

impl Flow {
    pub(super) fn new(seq: u32, shift: u8, now: Instant) -> Self {
        Self {
            una: ORIGIN,
            una_seq: seq,
            nxt: ORIGIN,
            segs: InFlight::default(),
            delivered_high: ORIGIN,
            peer_max: 0,
            cwnd: Window::new(DEFAULT_MSS),
            shift,
            rack: None,
            rack_rtt: Duration::ZERO,
            min_rtt: None,
            srtt: None,
            reo_quarters: 1,
            reo_deadline: None,
            peer_in: None,
            ack_in: None,
            loss: LossMeter::default(),
            ack_out: None,
            pto_base: now,
            tlp_sent: false,
            active: now,
            armed: true,
            clean_bytes: 0,
            sack_seen: false,
        }
    }

    /// The position of a sequence number near the cumulative ACK.
    pub(super) fn pos(&self, seq: u32) -> u64 {
        let d = i64::from(seq.wrapping_sub(self.una_seq) as i32);
        self.una.saturating_add_signed(d)
    }

    pub(super) fn pto(&self, peer_ack_delay: Duration) -> Duration {
        self.srtt
            .map_or(INITIAL_PTO, |s| 2 * s + peer_ack_delay)
            .max(MIN_PTO)
    }

    /// A segment was delivered (SACKed or cumulatively acknowledged).
    pub(super) fn delivered(&mut self, xmit: Instant, end: u64, retransmitted: bool, now: Instant) {
        self.delivered_high = self.delivered_high.max(end);
        self.loss.delivered = self.loss.delivered.saturating_add(1);
        let rtt = now.saturating_duration_since(xmit);
        if retransmitted && self.min_rtt.is_some_and(|m| rtt < m) {
            // Too quick to be the answer to the resend: the original got through, late.
            self.reo_quarters = (self.reo_quarters + 1).min(MAX_REO_QUARTERS);
            return;
        }
        if !retransmitted {
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
            self.srtt = Some(self.srtt.map_or(rtt, |s| (s * 7 + rtt) / 8));
        }
        if self
            .rack
            .is_none_or(|(t, e)| xmit > t || (xmit == t && end > e))
        {
            self.rack = Some((xmit, end));
            self.rack_rtt = rtt;
        }
    }

    /// A copy of the segment at `start`, marked sent now, with our latest ACK and window,
    /// in the buffer type the netstack transmits.
    pub(super) fn resend(&mut self, start: u64, now: Instant) -> Option<BytesMut> {
        let ack_out = self.ack_out;
        let seg = self.segs.get_mut(start)?;
        seg.xmit = now;
        seg.retransmitted = true;
        // A FIN whose data is all acknowledged goes alone: smoltcp judges a segment by
        // its data, and ignores a FIN riding on data it already has.
        let data_acked = start < self.una && self.una + 1 == seg.end;
        let mut p = data_acked
            .then(|| bare_fin_of(&seg.packet))
            .flatten()
            .unwrap_or_else(|| BytesMut::from(&seg.packet[..]));
        if let Some((ack, win)) = ack_out {
            rewrite(&mut p, Some(ack), win);
        }
        Some(p)
    }

    /// RACK: resends every segment sent before one that was delivered, once the
    /// reordering window has passed; arms the timer for those still inside it. Loss
    /// above the random-loss bound cuts the congestion window.
    pub(super) fn detect_losses(
        &mut self,
        now: Instant,
        out: &mut Vec<BytesMut>,
        stats: &mut RecoveryStats,
    ) {
        self.reo_deadline = None;
        let Some((rack_xmit, rack_end)) = self.rack else {
            return;
        };
        let reo_wnd = (self.min_rtt.unwrap_or_default() * self.reo_quarters / 4)
            .min(self.srtt.unwrap_or_default());
        let mut lost = Vec::new();
        for start in self.segs.unsacked() {
            let Some(seg) = self.segs.get(start) else {
                continue;
            };
            let sent_before =
                seg.xmit < rack_xmit || (seg.xmit == rack_xmit && seg.end <= rack_end);
            if !sent_before {
                if seg.retransmitted {
                    continue;
                }
                // New data goes out in order, so everything above was sent later too.
                break;
            }
            let deadline = seg.xmit + self.rack_rtt + reo_wnd;
            if now >= deadline {
                lost.push(start);
            } else {
                self.reo_deadline = Some(self.reo_deadline.map_or(deadline, |d| d.min(deadline)));
            }
        }
        let n = lost.len() as u64;
        self.loss.lost = self
            .loss
            .lost
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if n > 0
            && self.loss.congested(self.cwnd.in_slow_start())
            && self.cwnd.on_congestion(self.delivered_high, self.nxt)
        {
            stats.congestion_cuts += 1;
        }
        stats.rack_retransmits += n;
        for start in lost {
            if let Some(p) = self.resend(start, now) {
                out.push(p);
            }
        }
    }
}
