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
use smoltcp::wire::{IpProtocol, Ipv6Packet, TcpPacket, TcpSeqNumber};

use crate::congestion::Window;
use crate::core::PacketMap;

mod inflight;
mod window;

use inflight::{InFlight, Seg};
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
/// Segment size assumed until a connection's first segment shows it.
const DEFAULT_MSS: u64 = 1220;
/// Where sequence positions start, so that positions below a flow's first segment stay
/// positive.
const ORIGIN: u64 = 1 << 32;

/// A TCP connection, seen from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    local_port: u16,
    remote: Ipv6Addr,
    remote_port: u16,
}

impl FlowKey {
    /// The connection a packet we send (`outbound`) or receive belongs to.
    fn of(ip: &Ipv6Packet<&[u8]>, tcp: &TcpPacket<&[u8]>, outbound: bool) -> Self {
        if outbound {
            Self {
                local_port: tcp.src_port(),
                remote: ip.dst_addr(),
                remote_port: tcp.dst_port(),
            }
        } else {
            Self {
                local_port: tcp.dst_port(),
                remote: ip.src_addr(),
                remote_port: tcp.src_port(),
            }
        }
    }
}

/// Deliveries and losses, to tell random loss from congestion.
#[derive(Debug, Default)]
struct LossMeter {
    /// Deliveries and losses since the last judgement.
    delivered: u32,
    lost: u32,
    /// The last judgement.
    congested: bool,
}

impl LossMeter {
    fn exceeds(delivered: u32, lost: u32, ratio: u64) -> bool {
        lost >= CONGESTION_MIN_LOSSES
            && u64::from(lost) * ratio > u64::from(delivered) + u64::from(lost)
    }

    /// Judges the loss rate once enough has been seen.
    fn judge(&mut self) {
        if self.delivered.saturating_add(self.lost) >= JUDGE_SEGMENTS {
            self.congested = Self::exceeds(self.delivered, self.lost, CONGESTION_LOSS_RATIO);
            (self.delivered, self.lost) = (0, 0);
        }
    }

    /// Whether loss looks like congestion now. In slow start (`starting`) the window
    /// doubles each round trip, so an overshoot shows as loss above 2 % at once and
    /// must end it before the next doubling, without waiting for a judgement.
    fn congested(&self, starting: bool) -> bool {
        let ratio = if starting {
            CONGESTION_LOSS_RATIO
        } else {
            HEAVY_LOSS_RATIO
        };
        self.congested || Self::exceeds(self.delivered, self.lost, ratio)
    }
}

#[derive(Debug)]
struct Flow {
    /// Cumulative ACK, as a position and as the sequence number it maps to.
    una: u64,
    una_seq: u32,
    /// End of the highest segment sent.
    nxt: u64,
    /// Copies of the segments sent and not cumulatively acknowledged.
    segs: InFlight,
    /// End of the highest segment delivered (SACKed or cumulatively acknowledged).
    delivered_high: u64,
    /// The largest window the peer advertised, in bytes.
    peer_max: u64,
    /// The congestion window.
    cwnd: Window,
    /// The peer's window scale (from its SYN).
    shift: u8,
    /// Send time and end of the most recently sent segment known delivered.
    rack: Option<(Instant, u64)>,
    /// Round trip of that segment.
    rack_rtt: Duration,
    min_rtt: Option<Duration>,
    srtt: Option<Duration>,
    /// The reordering window in quarters of the minimum round trip: grows each time a
    /// resend turns out to have been needless (the path reorders), as RFC 8985 does on
    /// DSACKs.
    reo_quarters: u32,
    /// When the RACK reordering window of a suspected segment ends.
    reo_deadline: Option<Instant>,
    /// The ACK number and window of the peer's latest ACK, and of the one smoltcp saw.
    peer_in: Option<(u32, u16)>,
    ack_in: Option<(u32, u16)>,
    loss: LossMeter,
    /// The ACK number and window of our latest packet, written into resent copies.
    ack_out: Option<(u32, u16)>,
    /// Last ACK progress (or first send into an empty pipe); the probe timer counts from it.
    pto_base: Instant,
    tlp_sent: bool,
    active: Instant,
    /// Whether segments are kept (copied). A flow that sends [`PROBATION`] bytes before
    /// its first SACK stops keeping them, until that SACK.
    armed: bool,
    /// Bytes sent since the start, while no SACK came.
    clean_bytes: u64,
    /// A SACK has come: the path loses packets, keep copies for good.
    sack_seen: bool,
}

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

/// A TCP segment inside an IPv6 packet, both borrowed.
type Segment<'a> = (Ipv6Packet<&'a [u8]>, TcpPacket<&'a [u8]>);

fn parse(packet: &[u8]) -> Option<Segment<'_>> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((Ipv6Packet::new_unchecked(packet), tcp))
}

/// Whether an IPv6 packet is a TCP segment with SYN set, from its fixed offsets (smoltcp
/// sends no extension headers).
fn looks_like_syn(packet: &[u8]) -> bool {
    const TCP_FLAGS: usize = 40 + 13;
    packet.len() > TCP_FLAGS
        && packet[6] == u8::from(IpProtocol::Tcp)
        && packet[TCP_FLAGS] & 0x02 != 0
}

/// The FIN of a kept segment that carries data and a FIN, as a segment of its own: the
/// same headers, no payload, the sequence number after the data, the checksum redone.
fn bare_fin_of(packet: &[u8]) -> Option<BytesMut> {
    let (ip, tcp) = parse(packet)?;
    if !tcp.fin() {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let header = tcp.header_len();
    let fin_seq = tcp.seq_number() + tcp.payload().len();
    let mut p = BytesMut::from(&packet[..packet.len() - tcp.payload().len()]);
    let mut ip = Ipv6Packet::new_unchecked(&mut p[..]);
    ip.set_payload_len(u16::from(header));
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.set_seq_number(fin_seq);
    tcp.fill_checksum(&src.into(), &dst.into());
    Some(p)
}

/// Rewrites the ACK number (if given) and window of a TCP packet and updates its
/// checksum for just those fields (RFC 1624), so that no pass over the payload is needed:
/// this runs for nearly every ACK a sender receives.
fn rewrite(packet: &mut [u8], ack: Option<u32>, window: u16) {
    let Ok(mut ip) = Ipv6Packet::new_checked(packet) else {
        return;
    };
    let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) else {
        return;
    };
    // One's complement sum of the checksum's complement, the old words' complements and
    // the new words.
    let mut sum = u32::from(!tcp.checksum());
    let mut change = |old: u16, new: u16| sum += u32::from(!old) + u32::from(new);
    if let Some(ack) = ack {
        let old = tcp.ack_number().0 as u32;
        change((old >> 16) as u16, (ack >> 16) as u16);
        change(old as u16, ack as u16);
        tcp.set_ack_number(TcpSeqNumber(ack as i32));
    }
    change(tcp.window_len(), window);
    tcp.set_window_len(window);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    tcp.set_checksum(!(sum as u16));
}

impl Flow {
    fn new(seq: u32, shift: u8, now: Instant) -> Self {
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
    fn pos(&self, seq: u32) -> u64 {
        let d = i64::from(seq.wrapping_sub(self.una_seq) as i32);
        self.una.saturating_add_signed(d)
    }

    fn pto(&self, peer_ack_delay: Duration) -> Duration {
        self.srtt
            .map_or(INITIAL_PTO, |s| 2 * s + peer_ack_delay)
            .max(MIN_PTO)
    }

    /// A segment was delivered (SACKed or cumulatively acknowledged).
    fn delivered(&mut self, xmit: Instant, end: u64, retransmitted: bool, now: Instant) {
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
    fn resend(&mut self, start: u64, now: Instant) -> Option<BytesMut> {
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
    fn detect_losses(&mut self, now: Instant, out: &mut Vec<BytesMut>, stats: &mut RecoveryStats) {
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

impl Recovery {
    /// Recovery for a stack whose peers delay their ACKs by up to `peer_ack_delay` and
    /// scale their windows by `default_shift` unless their SYN says otherwise.
    pub fn new(peer_ack_delay: Duration, default_shift: u8) -> Self {
        Self {
            flows: PacketMap::default(),
            peer_ack_delay,
            stats: RecoveryStats::default(),
            last_sweep: None,
            spare: Vec::new(),
            shifts: PacketMap::default(),
            updates: WindowUpdates::default(),
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, Ipv6Repr, TcpControl, TcpRepr};

    const US: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1);
    const PEER: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 2);
    const ISN: u32 = 0xffff_f000; // wraps within the test's first segments
    const MSS: u32 = 1000;

    struct Pkt {
        from_us: bool,
        seq: u32,
        ack: Option<u32>,
        window: u16,
        len: usize,
        sack: [Option<(u32, u32)>; 3],
        control: TcpControl,
        wscale: Option<u8>,
    }

    impl Pkt {
        fn data(i: u32) -> Self {
            Self {
                from_us: true,
                seq: ISN.wrapping_add(i * MSS),
                ack: Some(77),
                window: 500,
                len: MSS as usize,
                sack: [None; 3],
                control: TcpControl::None,
                wscale: None,
            }
        }

        fn ack(upto: u32, window: u16) -> Self {
            Self {
                from_us: false,
                seq: 77,
                ack: Some(ISN.wrapping_add(upto * MSS)),
                window,
                len: 0,
                sack: [None; 3],
                control: TcpControl::None,
                wscale: None,
            }
        }

        /// SACK block `i` covering segments `from..to`.
        fn block(mut self, i: usize, from: u32, to: u32) -> Self {
            self.sack[i] = Some((ISN.wrapping_add(from * MSS), ISN.wrapping_add(to * MSS)));
            self
        }

        fn sack(self, from: u32, to: u32) -> Self {
            self.block(0, from, to)
        }

        fn sack2(self, from: u32, to: u32) -> Self {
            self.block(1, from, to)
        }

        fn bytes(&self) -> Vec<u8> {
            let payload = vec![0x5a; self.len];
            let (src, dst, sport, dport) = if self.from_us {
                (US, PEER, 40000, 22)
            } else {
                (PEER, US, 22, 40000)
            };
            let tcp = TcpRepr {
                src_port: sport,
                dst_port: dport,
                control: self.control,
                seq_number: TcpSeqNumber(self.seq as i32),
                ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
                window_len: self.window,
                window_scale: self.wscale,
                max_seg_size: None,
                sack_permitted: false,
                sack_ranges: self.sack,
                timestamp: None,
                payload: &payload,
            };
            let ip = Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                hop_limit: 64,
            };
            let mut buf = vec![0u8; 40 + tcp.buffer_len()];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
            tcp.emit(
                &mut TcpPacket::new_unchecked(&mut buf[40..]),
                &IpAddress::Ipv6(src),
                &IpAddress::Ipv6(dst),
                &ChecksumCapabilities::default(),
            );
            buf
        }
    }

    /// Sequence number, ACK number and window of a packet whose checksum must hold.
    fn fields(p: &[u8]) -> (u32, u32, u16) {
        let ip = Ipv6Packet::new_checked(p).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(
            tcp.verify_checksum(
                &IpAddress::Ipv6(ip.src_addr()),
                &IpAddress::Ipv6(ip.dst_addr())
            ),
            "checksum must hold after a rewrite"
        );
        (
            tcp.seq_number().0 as u32,
            tcp.ack_number().0 as u32,
            tcp.window_len(),
        )
    }

    /// The window of a packet, in bytes (the tests' peers do not scale it).
    fn window_of(p: &[u8]) -> u64 {
        u64::from(fields(p).2)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_micros(n * 100) // tenths of a millisecond
    }

    struct Bed {
        r: Recovery,
        t0: Instant,
        out: Vec<BytesMut>,
    }

    impl Bed {
        #[allow(clippy::disallowed_methods)] // the tests' epoch; every later time is explicit
        fn new() -> Self {
            Self {
                r: Recovery::new(Duration::from_micros(500), 0),
                t0: Instant::now(),
                out: Vec::new(),
            }
        }
        fn send(&mut self, at: u64, p: Pkt) {
            self.r.on_outbound(&p.bytes(), self.t0 + ms(at));
        }
        /// Sends data segments `segs` at `at`.
        fn burst(&mut self, at: u64, segs: std::ops::Range<u32>) {
            for i in segs {
                self.send(at, Pkt::data(i));
            }
        }
        /// Delivers an inbound packet; returns it as the stack would see it.
        fn recv(&mut self, at: u64, p: Pkt) -> Vec<u8> {
            let mut b = p.bytes();
            self.r.on_inbound(&mut b, self.t0 + ms(at), &mut self.out);
            b
        }
        fn poll(&mut self, at: u64) {
            self.r.poll(self.t0 + ms(at), &mut self.out);
        }
    }

    #[test]
    fn a_hole_below_sacked_data_is_resent_once_the_reordering_window_passes() {
        let mut b = Bed::new();
        b.burst(0, 0..6);
        // Our stack has since acknowledged more of the peer's data.
        let mut ours = Pkt::ack(0, 0);
        ours.from_us = true;
        ours.seq = ISN.wrapping_add(6 * MSS);
        ours.ack = Some(99);
        ours.window = 321;
        b.send(5, ours);
        b.recv(10, Pkt::ack(1, 400)); // RTT 1 ms
        assert!(b.out.is_empty());
        // Segment 1 is missing; 2 arrived.
        b.recv(11, Pkt::ack(1, 400).sack(2, 3));
        assert!(b.out.is_empty(), "still inside the reordering window");
        // Sent at 0, the segment after it took 1.1 ms, the window is 1/4 of 1 ms.
        assert_eq!(b.r.poll_at(), Some(b.t0 + Duration::from_micros(1350)));
        b.poll(13);
        assert!(b.out.is_empty());
        b.poll(14);
        assert_eq!(b.out.len(), 1, "the hole is resent");
        let (seq, ack, win) = fields(&b.out[0]);
        assert_eq!(seq, ISN.wrapping_add(MSS));
        assert_eq!(
            (ack, win),
            (99, 321),
            "resent with our latest ACK and window"
        );
        assert_eq!(b.r.stats().rack_retransmits, 1);
        // Not again until something sent after the resend is delivered.
        b.poll(30);
        b.recv(31, Pkt::ack(1, 400).sack(2, 6));
        assert_eq!(b.out.len(), 1);
        // The resend arrives: the ACK covers everything SACKed.
        b.recv(33, Pkt::ack(6, 400));
        assert_eq!(b.out.len(), 1);
        assert_eq!(b.r.flows(), 1);
    }

    #[test]
    fn a_lost_resend_is_found_like_any_lost_segment() {
        let mut b = Bed::new();
        b.burst(0, 0..4);
        b.recv(10, Pkt::ack(0, 400).sack(1, 2));
        b.poll(20);
        assert_eq!(b.out.len(), 1, "segment 0 resent");
        // New data after the resend, delivered, while the resend itself was lost.
        b.send(21, Pkt::data(4));
        b.recv(31, Pkt::ack(0, 400).sack(1, 5));
        b.poll(45);
        assert_eq!(b.out.len(), 2, "segment 0 resent again");
        assert_eq!(fields(&b.out[1]).0, ISN);
    }

    #[test]
    fn random_loss_is_repaired_without_smoltcp_counting_duplicates() {
        let mut b = Bed::new();
        b.burst(0, 0..200);
        b.recv(10, Pkt::ack(1, 400));
        // Segment 1 lost: smoltcp never sees two equal duplicates in a row.
        let mut seen = Vec::new();
        for k in 0..6 {
            let p = b.recv(11 + k, Pkt::ack(1, 400).sack(2, 3 + k as u32));
            seen.push(fields(&p).2);
            b.poll(11 + k);
        }
        assert_eq!(seen, [399, 400, 399, 400, 399, 400]);
        // All were sent at 0 and the last SACKed one took 1.6 ms: the window is 0.25 ms.
        b.poll(19);
        assert_eq!(b.out.len(), 1, "the hole is resent by RACK");
        assert_eq!(b.r.stats().masked_dup_acks, 3);
    }

    #[test]
    fn smoltcp_sees_the_congestion_window_and_heavy_loss_cuts_it_once_per_round_trip() {
        let mut b = Bed::new();
        let mss = u64::from(MSS);
        b.burst(0, 0..10);
        // The initial window (10 segments of the assumed size) and, in slow start, one
        // segment more for the one delivered.
        let first = b.recv(10, Pkt::ack(1, 20_000));
        assert_eq!(window_of(&first), 10 * DEFAULT_MSS + mss);
        // The peer's own window still wins when smaller.
        let small = b.recv(10, Pkt::ack(1, 6_000));
        assert_eq!(window_of(&small), 6_000);
        b.burst(11, 10..12);
        // Segments 1, 2 and 3 are lost, 4 arrived: 3 of 4 is heavy loss, a cut.
        let before = window_of(&b.recv(12, Pkt::ack(1, 20_000).sack(4, 5))) - mss;
        b.poll(20);
        assert_eq!(b.out.len(), 3);
        assert_eq!(b.r.stats().congestion_cuts, 1);
        // 70 % of the window, and what was SACKed no longer counts as in flight (the
        // window grew by a few bytes for segment 5 since).
        let cut = window_of(&b.recv(21, Pkt::ack(1, 20_000).sack(4, 6))) - 2 * mss;
        assert!(
            (before / 10 * 7..before / 10 * 7 + mss / 4).contains(&cut),
            "{cut} after {before}"
        );
        // More losses of the same round trip: no second cut.
        b.recv(22, Pkt::ack(1, 20_000).sack(4, 8).sack2(9, 10));
        b.poll(30);
        assert_eq!(b.out.len(), 4, "segment 8 resent");
        assert_eq!(b.r.stats().congestion_cuts, 1);
    }

    #[test]
    fn a_receiver_that_falls_behind_makes_the_window_back_off() {
        let mut b = Bed::new();
        b.burst(0, 0..20);
        let open = window_of(&b.recv(10, Pkt::ack(1, 20_000)));
        // The receiver's window shrinks to a third of its largest: still keeping up.
        b.recv(11, Pkt::ack(2, 7_000));
        assert_eq!(b.r.stats().receiver_cuts, 0);
        // Below a quarter it falls behind.
        b.recv(12, Pkt::ack(3, 4_000));
        assert_eq!(b.r.stats().receiver_cuts, 1);
        // Once per round trip: segments sent before the cut do not count.
        b.recv(13, Pkt::ack(4, 1_000));
        assert_eq!(b.r.stats().receiver_cuts, 1);
        let back = window_of(&b.recv(14, Pkt::ack(5, 20_000)));
        assert!(
            back < open,
            "the window did not shrink: {back} against {open}"
        );
    }

    #[test]
    fn loss_is_judged_over_a_thousand_segments() {
        let seen = |m: &mut LossMeter, delivered: u32, lost: u32| {
            m.delivered += delivered;
            m.lost += lost;
            m.judge();
        };
        let mut m = LossMeter::default();
        // Small windows: 4 losses in 100 segments is no verdict yet.
        seen(&mut m, 96, 4);
        assert!(!m.congested(false));
        // Except in slow start, where the window doubles each round trip.
        assert!(m.congested(true));
        seen(&mut m, 884, 16);
        assert!(!m.congested(false), "20 of 1000 is 2 %, not above");
        seen(&mut m, 975, 25);
        assert!(m.congested(false), "2.5 %");
        // The verdict holds until the next judgement.
        seen(&mut m, 500, 0);
        assert!(m.congested(false));
        seen(&mut m, 490, 10);
        assert!(!m.congested(false), "1 %");
        // Heavy loss counts before any judgement, but not two losses of a tiny window.
        let mut m = LossMeter {
            delivered: 3,
            lost: 2,
            ..LossMeter::default()
        };
        assert!(!m.congested(false));
        m.lost = 3;
        assert!(m.congested(false));
    }

    #[test]
    fn a_clean_flow_stops_keeping_copies_until_a_sack() {
        let mut b = Bed::new();
        let n = (PROBATION / u64::from(MSS)) as u32 + 1;
        for i in 0..n {
            b.send(0, Pkt::data(i));
            if i % 100 == 99 {
                b.recv(1, Pkt::ack(i + 1, 400));
            }
        }
        assert_eq!(b.r.poll_at(), None, "nothing kept, nothing to time");
        // Segment n is lost; smoltcp repairs it (no copy), the SACK starts copying again.
        b.send(2, Pkt::data(n));
        b.send(2, Pkt::data(n + 1));
        let first = b.recv(10, Pkt::ack(n, 400).sack(n + 1, n + 2));
        let second = b.recv(11, Pkt::ack(n, 400).sack(n + 1, n + 2));
        assert_eq!((fields(&first).2, fields(&second).2), (400, 400));
        assert_eq!(b.r.stats().rearmed_flows, 1);
        b.poll(100);
        assert!(b.out.is_empty());
        b.send(101, Pkt::data(n + 2));
        assert!(b.r.poll_at().is_some(), "what is sent from now on is kept");
    }

    #[test]
    fn a_silent_tail_gets_one_probe() {
        let mut b = Bed::new();
        b.burst(0, 0..3);
        b.recv(10, Pkt::ack(1, 400)); // srtt 1 ms: probe after 2 ms + 0.5 ms
        b.poll(30);
        assert!(b.out.is_empty());
        b.poll(35);
        assert_eq!(b.out.len(), 1);
        assert_eq!(
            fields(&b.out[0]).0,
            ISN.wrapping_add(2 * MSS),
            "the last segment"
        );
        assert_eq!(b.r.stats().probes, 1);
        b.poll(100);
        assert_eq!(b.out.len(), 1, "one probe, then smoltcp's timeout");
        // Everything acknowledged: nothing left to time.
        b.recv(101, Pkt::ack(3, 400));
        assert_eq!(b.r.poll_at(), None);
    }

    #[test]
    fn a_fin_behind_a_hole_is_resent_alone_once_the_data_is_in() {
        let mut b = Bed::new();
        b.burst(0, 0..3);
        let mut last = Pkt::data(3);
        last.control = TcpControl::Fin;
        b.send(0, last);
        // Segment 1 is lost; the peer holds 2 and 3's data, and dropped the FIN that
        // came ahead of the hole (smoltcp keeps no out-of-order FIN).
        b.recv(10, Pkt::ack(1, 400).sack(2, 4));
        b.poll(20);
        assert_eq!(b.out.len(), 1, "the hole is repaired");
        assert_eq!(fields(&b.out[0]).0, ISN.wrapping_add(MSS));
        // All data is in, the FIN is not: sent before the repair that just arrived, it is
        // lost, and goes again at once.
        b.recv(30, Pkt::ack(4, 400));
        assert_eq!(b.out.len(), 2, "the FIN is resent");
        let fin = &b.out[1];
        let (seq, ack, _) = fields(fin);
        assert_eq!(
            seq,
            ISN.wrapping_add(4 * MSS),
            "sequence number after the data"
        );
        assert_eq!(ack, 77);
        let ip = Ipv6Packet::new_checked(&fin[..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.fin() && tcp.ack());
        assert!(
            tcp.payload().is_empty(),
            "a FIN on data the peer has would be ignored by smoltcp"
        );
        // Its acknowledgement ends the flow's timers.
        let mut fin_acked = Pkt::ack(4, 400);
        fin_acked.ack = Some(ISN.wrapping_add(4 * MSS + 1));
        b.recv(110, fin_acked);
        assert_eq!(b.r.poll_at(), None);
    }

    #[test]
    fn resets_forget_flows_and_garbage_is_ignored() {
        let mut b = Bed::new();
        b.send(0, Pkt::data(0));
        assert_eq!(b.r.flows(), 1);
        let mut rst = Pkt::ack(0, 0);
        rst.control = TcpControl::Rst;
        b.recv(1, rst);
        assert_eq!(b.r.flows(), 0);

        b.send(2, Pkt::data(0));
        let good = Pkt::ack(1, 400).bytes();
        for cut in 0..good.len() {
            let mut p = good[..cut].to_vec();
            b.r.on_inbound(&mut p, b.t0, &mut b.out);
            b.r.on_outbound(&p, b.t0);
        }
        let mut noise: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        b.r.on_inbound(&mut noise, b.t0, &mut b.out);
        // An ACK beyond anything sent is not believed.
        b.recv(3, Pkt::ack(50, 400));
        b.poll(1000);
        assert_eq!(b.out.len(), 1, "only the tail probe for the real segment");
        assert_eq!(b.r.flows(), 1);
    }

    #[test]
    fn the_peers_window_scale_comes_from_its_syn_and_outlives_an_idle_flow() {
        let mut b = Bed::new();
        let mut syn_ack = Pkt::ack(0, 1000);
        syn_ack.control = TcpControl::Syn;
        syn_ack.seq = 76;
        syn_ack.wscale = Some(3);
        b.recv(0, syn_ack);
        let clamped = |b: &mut Bed, at: u64, upto: u32| {
            b.burst(at, upto - 1..upto);
            // The peer offers 60,000 units of 8 bytes; the congestion window is smaller.
            window_of(&b.recv(at + 10, Pkt::ack(upto, 60_000)))
        };
        let first = clamped(&mut b, 1, 1);
        assert!((1_000..10_000).contains(&first), "{first} units");
        // Idle for long with nothing in flight: the flow is forgotten, the scale is not.
        b.poll(20);
        b.poll(20 + 110_000);
        assert_eq!(b.r.flows(), 0);
        let again = clamped(&mut b, 110_030, 2);
        assert_eq!(again, first, "a fresh window in the same units");
    }

    #[test]
    fn finished_flows_are_forgotten_and_a_full_table_makes_room() {
        let mut b = Bed::new();
        b.send(0, Pkt::data(0));
        b.recv(10, Pkt::ack(1, 400));
        b.poll(20);
        assert_eq!(b.r.flows(), 1, "kept while recently active");
        b.poll(20 + 110_000);
        assert_eq!(
            b.r.flows(),
            0,
            "an idle flow with nothing in flight is forgotten"
        );

        // A full table of finished flows makes room for a new one.
        for port in 0..MAX_FLOWS as u16 {
            let mut p = Pkt::data(0).bytes();
            let ip = Ipv6Packet::new_checked(&mut p[..]).unwrap();
            let (src, dst) = (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            );
            let mut tcp = TcpPacket::new_checked(&mut p[40..]).unwrap();
            tcp.set_src_port(1000 + port);
            tcp.fill_checksum(&src, &dst);
            b.r.on_outbound(&p, b.t0);
            if port > 0 {
                // Acknowledge all but the first: their copies are gone.
                let mut a = Pkt::ack(1, 400).bytes();
                let mut tcp = TcpPacket::new_checked(&mut a[40..]).unwrap();
                tcp.set_dst_port(1000 + port);
                tcp.fill_checksum(&dst, &src);
                b.r.on_inbound(&mut a, b.t0, &mut b.out);
            }
        }
        assert_eq!(b.r.flows(), MAX_FLOWS);
        b.send(1, Pkt::data(0));
        assert_eq!(
            b.r.flows(),
            2,
            "the flow with data in flight and the new one"
        );
    }

    #[test]
    fn a_needless_resend_widens_the_reordering_window() {
        let mut b = Bed::new();
        b.burst(0, 0..4);
        b.recv(10, Pkt::ack(0, 400).sack(1, 2));
        b.poll(13);
        assert_eq!(b.out.len(), 1);
        // The original of segment 0 arrives late, long before the resend could.
        b.recv(14, Pkt::ack(2, 400));
        b.send(15, Pkt::data(4));
        b.send(15, Pkt::data(5));
        b.recv(25, Pkt::ack(2, 400).sack(3, 4));
        // Segment 2 was sent at 0 like segment 3, which took 2.5 ms; the window is now
        // 2/4 of the 1 ms minimum round trip.
        let at = b.r.poll_at().unwrap();
        assert_eq!(at, b.t0 + ms(0) + ms(25) + ms(5));
    }
}
