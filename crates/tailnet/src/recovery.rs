//! Loss recovery and congestion control for the netstack's TCP senders, beside smoltcp.
//!
//! smoltcp repairs one hole per three duplicate ACKs and otherwise waits for its
//! retransmission timeout, after which it resends the whole window. With 1 % random loss
//! on a fast path most windows have several holes, so most of the time went to timeouts.
//!
//! [`Recovery`] watches the data segments smoltcp sends and the ACKs that come back (both
//! ends are smoltcp, which SACKs the block holding the segment that triggered each ACK),
//! and repairs holes itself as RACK-TLP does (RFC 8985): a segment is lost once a segment
//! sent after it has been delivered and a reordering window has passed, and a tail loss
//! probe resends the last segment when ACKs stop coming. A connection that sends
//! [`PROBATION`] bytes before its first SACK stops keeping copies until that SACK, so a
//! clean path pays little for all this.
//!
//! Congestion control is here too, since only here are SACKs and losses seen: smoltcp's
//! own controller is off, and the window of every ACK handed to it is lowered to what
//! the congestion window ([`crate::congestion`]) allows beyond the data in flight, minus
//! what was SACKed (the "pipe" of RFC 6675). Loss counts as congestion only above 2 % of
//! the segments (the bound of BBRv2, judged over at least 1000) or above 10 % at once,
//! so a lossy but uncongested path keeps its speed and its losses are only repaired.
//! A receiver that falls behind (its window shrinks below a quarter of its largest)
//! also makes the window back off, down to an eighth of that, so that its buffer does
//! not fill to zero windows.
//! Duplicate ACKs for holes repaired here reach smoltcp as window updates, so smoltcp
//! does not resend too; holes we hold no copy of are left to its fast retransmit. Its
//! retransmission timeout still resends everything, and then the window starts small.
//!
//! Sans-IO: packets in, packets out, explicit time.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::core::{PacketMap, packet_map};

mod flow;
mod inflight;
mod segment;
mod window;

use flow::Flow;
use inflight::Seg;
use segment::{FlowKey, looks_like_syn, parse, rewrite};
use window::WindowUpdates;

/// Flows tracked at once; connections beyond this get smoltcp's recovery only, and no
/// congestion window (smoltcp's own controller is off).
const MAX_FLOWS: usize = 4096;
/// A flow with unacknowledged data and no packet either way for this long is forgotten
/// (smoltcp has given up on it by then).
const IDLE_FLOW: Duration = Duration::from_secs(300);
/// A flow with nothing unacknowledged is forgotten sooner: it costs nothing to start
/// again from its next segment, and closed connections should not fill the table.
const IDLE_EMPTY_FLOW: Duration = Duration::from_secs(10);
/// A connection that sends this much before its first SACK stops keeping copies of its
/// segments: copying every segment cost about a tenth of the throughput of a CPU-bound
/// path. The first SACK starts it again for good (smoltcp repairs that first hole).
const PROBATION: u64 = 8 << 20;
/// Spare copy buffers kept for reuse.
const MAX_SPARE: usize = 1024;
/// A peer window below 1/`RECEIVER_BEHIND` of the largest it advertised means the
/// receiver falls behind.
const RECEIVER_BEHIND: u64 = 4;
/// Cuts for a receiver that falls behind stop at 1/`RECEIVER_FLOOR` of its largest
/// window, so that a stalled reader (a slow terminal, say) does not leave a long path
/// to regrow from a few segments once it reads again.
const RECEIVER_FLOOR: u64 = 8;

/// Counters, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segments resent because a later one was delivered.
    pub rack_retransmits: u64,
    /// Tail loss probes sent.
    pub probes: u64,
    /// Duplicate ACKs handed to smoltcp as window updates.
    pub masked_dup_acks: u64,
    /// Congestion window cuts (loss above the random-loss bound).
    pub congestion_cuts: u64,
    /// Congestion window cuts because the receiver fell behind (its window shrank).
    pub receiver_cuts: u64,
    /// Retransmission timeouts of smoltcp (it resent a segment we hold a copy of).
    pub timeouts: u64,
    /// Segments smoltcp itself sent again (fast retransmit, or everything after a timeout).
    pub stack_resends: u64,
    /// Connections that stopped keeping copies after a clean start and started again at
    /// their first SACK.
    pub rearmed_flows: u64,
}

/// SACK/RACK-TLP loss recovery for every TCP connection of one netstack.
#[derive(Debug)]
pub struct Recovery {
    flows: PacketMap<FlowKey, Flow>,
    /// The peer's delayed-ACK time, added to the probe timeout.
    peer_ack_delay: Duration,
    stats: RecoveryStats,
    last_sweep: Option<Instant>,
    /// Buffers of acknowledged segments, reused for new copies.
    spare: Vec<Vec<u8>>,
    /// Window scales from the peers' SYNs, until a reset (or until the table is full).
    shifts: PacketMap<FlowKey, u8>,
    /// Window updates smoltcp holds back (we are the receiver).
    updates: WindowUpdates,
    /// The window scale assumed for a connection whose SYN we missed.
    default_shift: u8,
}

/// Keeps a buffer for the next copy, up to [`MAX_SPARE`].
fn recycle(spare: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if spare.len() < MAX_SPARE {
        spare.push(buf);
    }
}

impl Recovery {
    /// Recovery for a stack whose peers delay their ACKs by up to `peer_ack_delay` and
    /// scale their windows by `default_shift` unless their SYN says otherwise; `seed`
    /// seeds its maps' hashers.
    pub fn new(peer_ack_delay: Duration, default_shift: u8, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            flows: packet_map(rng.next_u64()),
            peer_ack_delay,
            stats: RecoveryStats::default(),
            last_sweep: None,
            spare: Vec::new(),
            shifts: packet_map(rng.next_u64()),
            updates: WindowUpdates::new(rng.next_u64()),
            default_shift,
        }
    }

    /// The scale of the windows we advertise on a connection, when it is known that
    /// the peer agreed to scaling (its SYN carried a scale; all tether stacks use the
    /// same buffers, so ours is the default one).
    fn own_shift(&self, key: &FlowKey) -> Option<u8> {
        self.shifts
            .get(key)
            .filter(|&&s| s > 0)
            .map(|_| self.default_shift)
    }

    /// A window update for the connection from `local_port` to `remote`, if its
    /// receive window (`free` of `capacity` bytes) has grown enough since we last
    /// advertised it; `local` is our address.
    pub fn window_update(
        &mut self,
        local: Ipv6Addr,
        local_port: u16,
        remote: std::net::SocketAddrV6,
        free: usize,
        capacity: usize,
    ) -> Option<BytesMut> {
        let key = FlowKey {
            local_port,
            remote: *remote.ip(),
            remote_port: remote.port(),
        };
        let shift = self.own_shift(&key)?;
        self.updates.update(key, local, free, capacity, shift)
    }

    /// What recovery has done so far.
    pub fn stats(&self) -> RecoveryStats {
        self.stats
    }

    /// Connections currently tracked.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Notes a packet the stack sends.
    pub fn on_outbound(&mut self, packet: &[u8], now: Instant) {
        let Some((ip, tcp)) = parse(packet) else {
            return;
        };
        let key = FlowKey::of(&ip, &tcp, true);
        self.updates.on_outbound(key, &tcp);
        if tcp.rst() || tcp.syn() {
            // A reset ends the connection; a SYN starts a new one on these ports.
            self.flows.remove(&key);
            if tcp.rst() {
                self.shifts.remove(&key);
            }
            return;
        }
        let payload = tcp.payload().len();
        // A FIN takes a sequence number of its own: kept, acknowledged and found lost like
        // a byte, so a lost FIN is resent as a lost segment is, not after smoltcp's timeout.
        let length = payload + usize::from(tcp.fin());
        let seq = tcp.seq_number().0 as u32;
        if length == 0 && !self.flows.contains_key(&key) {
            return;
        }
        if self.flows.len() >= MAX_FLOWS && !self.flows.contains_key(&key) {
            self.flows.retain(|_, f| !f.segs.is_empty());
            if self.flows.len() >= MAX_FLOWS {
                return;
            }
        }
        let flow = self.flows.entry(key).or_insert_with(|| {
            // Kept for the connection's life: an idle flow is forgotten and made anew.
            let shift = self.shifts.get(&key).copied().unwrap_or(self.default_shift);
            Flow::new(seq, shift, now)
        });
        flow.active = now;
        if tcp.ack() {
            flow.ack_out = Some((tcp.ack_number().0 as u32, tcp.window_len()));
        }
        if length == 0 {
            return;
        }
        if payload > 0 {
            flow.cwnd.set_mss(payload as u64);
        }
        let start = flow.pos(seq);
        let end = start + length as u64;
        if end <= flow.una {
            return;
        }
        let resent = start < flow.nxt;
        if resent && end <= flow.nxt && start <= flow.una && flow.segs.contains(start) {
            // smoltcp resends a hole we repair ourselves (so it saw no duplicate ACKs):
            // its retransmission timer fired, and it goes back to the cumulative ACK.
            // (A segment that reaches beyond what was sent follows a zero-window probe.)
            flow.cwnd.on_timeout(flow.nxt);
            self.stats.timeouts += 1;
        }
        flow.nxt = flow.nxt.max(end);
        flow.clean_bytes += payload as u64;
        if flow.armed && !flow.sack_seen && flow.clean_bytes > PROBATION {
            // A clean path: stop copying.
            flow.armed = false;
            for seg in flow.segs.drain() {
                recycle(&mut self.spare, seg.packet);
            }
        }
        if !flow.armed {
            return;
        }
        let mut retransmitted = false;
        // New data (at or past the old end) overlaps nothing kept: no search.
        while resent && let Some(k) = flow.segs.first_start_in(start, end) {
            if let Some((old, _)) = flow.segs.remove(k) {
                recycle(&mut self.spare, old.packet);
            }
            retransmitted = true;
        }
        if retransmitted {
            self.stats.stack_resends += 1;
        }
        if !flow.segs.has_unsacked() {
            flow.pto_base = now;
            flow.tlp_sent = false;
        }
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(packet);
        flow.segs.insert(
            start,
            Seg {
                end,
                xmit: now,
                retransmitted,
                packet: copy,
            },
        );
    }

    /// Notes a packet arriving for the stack, before the stack sees it. Its window is
    /// lowered to what the congestion window allows, and a duplicate ACK that smoltcp
    /// must not count becomes a window update; lost segments found are queued in `out`.
    pub fn on_inbound(&mut self, packet: &mut [u8], now: Instant, out: &mut Vec<BytesMut>) {
        if self.flows.is_empty() && !looks_like_syn(packet) {
            // Nothing of ours in flight (a receiver): no need to parse.
            return;
        }
        let Some((ip, tcp)) = parse(packet) else {
            return;
        };
        let key = FlowKey::of(&ip, &tcp, false);
        if tcp.rst() {
            self.flows.remove(&key);
            self.shifts.remove(&key);
            self.updates.forget(&key);
            return;
        }
        if tcp.syn() {
            // Windows of the peer's other segments are scaled by what its SYN says.
            let shift = tcp
                .options_summary()
                .ok()
                .and_then(|o| o.window_scale)
                .unwrap_or(0)
                .min(14);
            if self.shifts.len() >= MAX_FLOWS {
                // Mostly connections closed without a reset; the default serves the
                // others, as all tether peers scale alike.
                self.shifts.clear();
            }
            self.shifts.insert(key, shift);
            return;
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if !tcp.ack() {
            return;
        }
        flow.active = now;
        let ack_seq = tcp.ack_number().0 as u32;
        let ack = flow.pos(ack_seq);
        // A FIN takes one sequence number beyond the data.
        if ack > flow.nxt + 1 {
            return;
        }
        let sacks = tcp.selective_ack_ranges().unwrap_or_default();
        let window = tcp.window_len();
        let pure = tcp.payload().is_empty() && !tcp.fin();
        if sacks.iter().any(Option::is_some) {
            flow.sack_seen = true;
            if !flow.armed {
                flow.armed = true;
                self.stats.rearmed_flows += 1;
            }
        }

        let pipe = flow
            .nxt
            .saturating_sub(flow.una)
            .saturating_sub(flow.segs.sacked_bytes());
        let mut newly = 0;
        let mut progress = false;
        let advanced = ack > flow.una;
        if advanced {
            if flow.segs.is_empty() {
                // Not keeping copies: the cumulative ACK is all there is.
                newly += ack.min(flow.nxt).saturating_sub(flow.una);
            }
            while let Some((start, seg, sacked)) = flow.segs.pop_acked(ack) {
                // Delivered now unless a SACK already counted it.
                if !sacked {
                    flow.delivered(seg.xmit, seg.end, seg.retransmitted, now);
                    newly += seg.end - start;
                }
                recycle(&mut self.spare, seg.packet);
            }
            flow.una = ack;
            flow.una_seq = ack_seq;
            progress = true;
        }
        for (l, r) in sacks.into_iter().flatten() {
            let (l, r) = (flow.pos(l), flow.pos(r));
            if r <= l || r <= flow.una || r > flow.nxt {
                continue;
            }
            let mut cursor = l;
            while let Some(start) = flow.segs.first_unsacked_in(cursor, r) {
                cursor = start + 1;
                let Some(seg) = flow.segs.get(start) else {
                    continue;
                };
                if seg.end > r {
                    continue;
                }
                let (xmit, end, retransmitted) = (seg.xmit, seg.end, seg.retransmitted);
                flow.segs.mark_sacked(start);
                newly += end - start;
                flow.delivered(xmit, end, retransmitted, now);
                progress = true;
            }
        }
        if progress {
            flow.pto_base = now;
            flow.tlp_sent = false;
        }
        flow.cwnd.on_delivered(newly, pipe);
        flow.loss.judge();

        // A receiver whose window shrank below a quarter of its largest cannot keep up:
        // filling its buffer would only queue our packets ahead of it and end in zero
        // windows. Back off as from congestion (in the NAT lab, where the receiving
        // process is the bottleneck, this is worth a fifth of the throughput; letting
        // the window regrow by slow start instead lost that gain).
        let peer_bytes = u64::from(window) << flow.shift;
        flow.peer_max = flow.peer_max.max(peer_bytes);
        if peer_bytes < flow.peer_max / RECEIVER_BEHIND {
            let floor = flow.peer_max / RECEIVER_FLOOR;
            let cut = flow
                .cwnd
                .on_receiver_behind(flow.delivered_high, flow.nxt, floor);
            if cut {
                self.stats.receiver_cuts += 1;
            }
        }
        // smoltcp may send up to the ACK plus the window: as far as the congestion window
        // reaches beyond what is in flight, never beyond the peer's own window.
        let edge = flow.una + flow.cwnd.bytes() + flow.segs.sacked_bytes();
        let allowed = (edge.saturating_sub(ack) >> flow.shift).max(1);
        let mut deliver = window.min(u16::try_from(allowed).unwrap_or(u16::MAX));
        let peer_dup = pure && flow.peer_in == Some((ack_seq, window)) && ack < flow.nxt;
        flow.peer_in = Some((ack_seq, window));
        let last = flow.ack_in.filter(|&(a, _)| a == ack_seq).map(|(_, w)| w);
        // Only holes we hold copies of are ours to repair; older ones are smoltcp's.
        let ours = flow.segs.first_start().is_some_and(|s| s <= flow.una);
        if pure && ack < flow.nxt && last == Some(deliver) && ours {
            // smoltcp would count a duplicate and resend what we repair.
            deliver = if deliver > 1 {
                deliver - 1
            } else {
                window.min(2)
            };
            self.stats.masked_dup_acks += 1;
        } else if peer_dup
            && !ours
            && let Some(w) = last
        {
            // smoltcp repairs this hole: it must see the duplicate as one.
            deliver = w;
        }
        flow.ack_in = Some((ack_seq, deliver));
        if progress {
            flow.detect_losses(now, out, &mut self.stats);
        }
        if deliver != window {
            rewrite(packet, None, deliver);
        }
    }

    /// Runs the timers due by `now`: RACK reordering windows and tail loss probes.
    /// Resent segments are queued in `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<BytesMut>) {
        for flow in self.flows.values_mut() {
            if flow.reo_deadline.is_some_and(|d| now >= d) {
                flow.detect_losses(now, out, &mut self.stats);
            }
            if !flow.tlp_sent
                && flow.segs.has_unsacked()
                && now >= flow.pto_base + flow.pto(self.peer_ack_delay)
            {
                // Resend the last segment: its SACK shows what else is missing.
                flow.tlp_sent = true;
                if let Some(last) = flow.segs.last_unsacked()
                    && let Some(p) = flow.resend(last, now)
                {
                    out.push(p);
                    self.stats.probes += 1;
                }
            }
        }
        if self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
        {
            self.last_sweep = Some(now);
            self.flows.retain(|_, f| {
                let idle = now.saturating_duration_since(f.active);
                idle < if f.segs.is_empty() {
                    IDLE_EMPTY_FLOW
                } else {
                    IDLE_FLOW
                }
            });
        }
    }

    /// When [`Recovery::poll`] must run next.
    pub fn poll_at(&self) -> Option<Instant> {
        self.flows
            .values()
            .flat_map(|f| {
                let tlp = (!f.tlp_sent && f.segs.has_unsacked())
                    .then(|| f.pto_base + f.pto(self.peer_ack_delay));
                [f.reo_deadline, tlp]
            })
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests;
