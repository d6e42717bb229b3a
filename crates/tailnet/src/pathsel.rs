//! Per-peer path selection after Tailscale's magicsock endpoint logic, sans-IO.
//!
//! One [`PathSel`] per peer decides whether a WireGuard datagram goes straight to a UDP
//! address or through the peer's home DERP region. Inputs: candidate endpoints (from the
//! coordinator, from CallMeMaybe, from the sources of incoming pings), outgoing data
//! ([`PathSel::on_send`]), pongs ([`PathSel::handle_pong`]) and the time, always passed
//! in. Outputs are polled ([`PathSel::poll_output`]): pings and CallMeMaybes to send,
//! and path changes to log. The driver seals and sends the disco messages (see
//! [`crate::disco`]), answers incoming pings itself, and calls
//! [`PathSel::handle_timeout`] at [`PathSel::poll_timeout`].
//!
//! The rules: a new peer starts on DERP. While the best address is not trusted, every
//! send also starts discovery: each candidate not pinged in the last
//! [`DISCO_PING_INTERVAL`] is pinged and, if any ping went out, a CallMeMaybe with our
//! endpoints goes over DERP. A pong over UDP makes its address the best one if there was
//! none, if the best is no longer trusted, or if it wins [`better_addr`]; a pong on the
//! best address trusts it for [`TRUST_UDP_ADDR_DURATION`]. While traffic flows a
//! heartbeat every [`HEARTBEAT_INTERVAL`] pings the best address and rediscovers when
//! needed; it stops [`SESSION_ACTIVE_TIMEOUT`] after the last outgoing packet. When
//! trust lapses, or a ping to the best address goes unanswered for
//! [`BEST_PONG_DEADLINE`], sends go to DERP (and still to the old best address) until
//! pongs return. A ping from an untrusted address is pinged back at once (at most every
//! [`PING_BACK_INTERVAL`]): through port-restricted NATs the first ping of each side is
//! dropped by the other's NAT, and the ping back is what gets through. No MTU probing yet: the "more MTU wins" rule is not modelled.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::core::{PacketMap, packet_map};
use crate::disco::{TX_ID_LEN, TxId};
use crate::path::PathKind;

/// A ping without a pong after this long is given up.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Discovery pings a candidate at most this often (a CallMeMaybe resets it).
pub const DISCO_PING_INTERVAL: Duration = Duration::from_secs(5);
/// A pong on the best address trusts it this long.
pub const TRUST_UDP_ADDR_DURATION: Duration = Duration::from_millis(6500);
/// Interval of heartbeat pings to the best address while traffic flows.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Heartbeats stop this long after the last outgoing packet.
pub const SESSION_ACTIVE_TIMEOUT: Duration = Duration::from_secs(45);
/// A candidate learned only from incoming pings is forgotten this long after the last one.
pub const PING_SOURCE_TTL: Duration = Duration::from_secs(45);
/// A best address slower than this is re-raced against the others every [`UPGRADE_INTERVAL`].
pub const GOOD_ENOUGH_LATENCY: Duration = Duration::from_millis(5);
/// How often a slow but working best address triggers a full rediscovery.
pub const UPGRADE_INTERVAL: Duration = Duration::from_secs(60);
/// Our endpoints older than this are re-STUNed before a CallMeMaybe carries them.
pub const ENDPOINTS_FRESH_ENOUGH: Duration = Duration::from_secs(27);
/// At most this many candidates per peer; further ones are ignored.
pub const MAX_CANDIDATES: usize = 64;
/// A ping from an address we do not trust is answered with a ping of ours at most this
/// often: the peer's ping opened its NAT for us, so our ping back completes the punch at
/// once instead of at the next discovery round.
pub const PING_BACK_INTERVAL: Duration = Duration::from_secs(1);
/// A ping to the trusted best address unanswered this long ends the trust early, so a
/// dead direct path falls back to DERP within a heartbeat plus this, not after the full
/// [`TRUST_UDP_ADDR_DURATION`]. Halfway through, a second ping goes out, so one lost
/// datagram alone does not end the trust.
pub const BEST_PONG_DEADLINE: Duration = Duration::from_secs(1);

/// The path a disco message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// Relayed through DERP.
    Derp,
    /// Over UDP from this source address.
    Udp(SocketAddr),
}

/// Where to send the next datagram to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendDecision {
    /// UDP only, to this trusted address.
    Direct(SocketAddr),
    /// Through the peer's DERP region, and also over UDP to `also` (an untrusted best
    /// address) if there is one.
    Derp {
        /// The untrusted best address, worth a copy while discovery runs.
        also: Option<SocketAddr>,
    },
}

impl SendDecision {
    /// The direct address, when the decision is [`SendDecision::Direct`].
    pub fn direct(&self) -> Option<SocketAddr> {
        match self {
            Self::Direct(a) => Some(*a),
            Self::Derp { .. } => None,
        }
    }

    /// The primary path as a [`PathKind`], given the peer's home DERP region.
    pub fn path(&self, home_region: u32) -> PathKind {
        match self {
            Self::Direct(addr) => PathKind::Direct { addr: *addr },
            Self::Derp { .. } => PathKind::Derp {
                region: home_region,
            },
        }
    }
}

/// Something the driver has to do or may want to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Seal a disco Ping with this TxID and send it over UDP to `addr`.
    SendPing {
        /// Destination.
        addr: SocketAddr,
        /// The ping's transaction id.
        txid: TxId,
    },
    /// Send a CallMeMaybe carrying these endpoints (ours) over DERP.
    SendCallMeMaybe {
        /// Our endpoints, as last given to [`PathSel::set_local_endpoints`].
        endpoints: Vec<SocketAddr>,
    },
    /// A CallMeMaybe is waiting for fresh endpoints: re-STUN, then call
    /// [`PathSel::set_local_endpoints`].
    NeedFreshEndpoints,
    /// The primary path changed (an INFO-level event).
    PathChanged {
        /// The direct address now used, or `None` for DERP.
        direct: Option<SocketAddr>,
    },
}

/// What a pong told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PongOutcome {
    /// Round-trip time of the ping it answers.
    pub latency: Duration,
    /// The UDP address the ping went to, or `None` for a ping over DERP.
    pub addr: Option<SocketAddr>,
    /// Whether that address is now the (trusted) best address.
    pub best: bool,
}

/// An address with its measured round-trip time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrQuality {
    /// The UDP address.
    pub addr: SocketAddr,
    /// Its latest ping round-trip time.
    pub latency: Duration,
}

/// Whether `a` should replace the current best `b`.
///
/// Any address beats none; the same address never replaces itself (no MTU probing
/// yet). Otherwise each side scores latency points, `100 − 100·fast/slow` for the faster
/// one (the improvement in whole percent, rounded down), plus bonuses: +50 loopback, +30 link-local, +20 private (RFC 1918, ULA), +10
/// IPv6. `a` wins only with strictly more points, so a tie or an improvement under about
/// 1 % keeps `b` (hysteresis against flapping between equivalent paths).
pub fn better_addr(a: AddrQuality, b: Option<AddrQuality>) -> bool {
    let Some(b) = b else {
        return true;
    };
    if a.addr == b.addr {
        return false;
    }
    let (mut a_points, mut b_points) = (0u128, 0u128);
    let (al, bl) = (a.latency.as_nanos(), b.latency.as_nanos());
    if al > 0 && bl > 0 {
        // The improvement in whole percent, rounded down: under 1 % scores nothing.
        if al < bl {
            a_points = (bl - al) * 100 / bl;
        } else if bl < al {
            b_points = (al - bl) * 100 / al;
        }
    }
    a_points += bonus(a.addr.ip());
    b_points += bonus(b.addr.ip());
    a_points > b_points
}

/// The address-class bonus of [`better_addr`].
fn bonus(ip: IpAddr) -> u128 {
    let mut p = 0;
    let (loopback, link_local, private) = match ip {
        IpAddr::V4(a) => (a.is_loopback(), a.is_link_local(), a.is_private()),
        IpAddr::V6(a) => {
            p += 10;
            let seg0 = a.segments()[0];
            (
                a.is_loopback(),
                seg0 & 0xffc0 == 0xfe80,
                seg0 & 0xfe00 == 0xfc00,
            )
        }
    };
    if loopback {
        p += 50;
    }
    if link_local {
        p += 30;
    }
    if private {
        p += 20;
    }
    p
}

/// IPv4-mapped IPv6 addresses become IPv4, so one endpoint has one spelling.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// One candidate endpoint and what we know of it.
#[derive(Debug, Clone, Default)]
struct Candidate {
    /// Listed in the peer's node from the coordinator.
    from_coordinator: bool,
    /// Listed in the peer's latest CallMeMaybe.
    from_call_me_maybe: bool,
    /// When a ping from this source last arrived (ping-learned candidates expire).
    last_got_ping: Option<Instant>,
    /// When we last pinged it.
    last_ping: Option<Instant>,
    /// When we last pinged it back in answer to its ping.
    last_ping_back: Option<Instant>,
}

impl Candidate {
    fn has_source(&self) -> bool {
        self.from_coordinator || self.from_call_me_maybe || self.last_got_ping.is_some()
    }
}

/// An unanswered ping.
#[derive(Debug, Clone, Copy)]
struct SentPing {
    /// UDP destination, `None` for DERP.
    to: Option<SocketAddr>,
    at: Instant,
}

/// The path state of one peer. See the module docs for the rules.
#[derive(Debug)]
pub struct PathSel {
    candidates: BTreeMap<SocketAddr, Candidate>,
    sent: PacketMap<TxId, SentPing>,
    best: Option<AddrQuality>,
    trust_until: Option<Instant>,
    last_send: Option<Instant>,
    last_full_ping: Option<Instant>,
    heartbeat_at: Option<Instant>,
    local_endpoints: Vec<SocketAddr>,
    local_endpoints_at: Option<Instant>,
    call_me_maybe_pending: bool,
    blocked: bool,
    reported_direct: Option<SocketAddr>,
    outputs: VecDeque<Output>,
    rng: StdRng,
}

impl PathSel {
    /// A peer with no candidates, on DERP; `seed` drives the TxIDs (and the hasher of
    /// the pings awaiting pongs).
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            candidates: BTreeMap::new(),
            sent: packet_map(rng.next_u64()),
            best: None,
            trust_until: None,
            last_send: None,
            last_full_ping: None,
            heartbeat_at: None,
            local_endpoints: Vec::new(),
            local_endpoints_at: None,
            call_me_maybe_pending: false,
            blocked: false,
            reported_direct: None,
            outputs: VecDeque::new(),
            rng,
        }
    }

    /// Policy switch: while blocked, never go direct, send no pings and no CallMeMaybe.
    pub fn set_blocked(&mut self, now: Instant, blocked: bool) {
        self.blocked = blocked;
        if blocked {
            self.best = None;
            self.trust_until = None;
            self.heartbeat_at = None;
            self.call_me_maybe_pending = false;
        }
        self.report_path(now);
    }

    /// Whether direct paths are blocked by policy.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The peer's endpoints as the coordinator lists them (replaces the previous list).
    pub fn set_endpoints(&mut self, now: Instant, endpoints: impl IntoIterator<Item = SocketAddr>) {
        let new: BTreeSet<SocketAddr> = endpoints.into_iter().map(canonical).collect();
        for (addr, c) in &mut self.candidates {
            c.from_coordinator = new.contains(addr);
        }
        let mut added = false;
        for addr in new {
            added |= !self.candidates.contains_key(&addr);
            if let Some(c) = self.candidate_entry(addr) {
                c.from_coordinator = true;
            }
        }
        self.prune(now);
        // Endpoints that arrive after traffic started are tried at once, not at the next
        // heartbeat.
        let active = self
            .last_send
            .is_some_and(|t| now.saturating_duration_since(t) < SESSION_ACTIVE_TIMEOUT);
        if added && active && !self.trusted(now) {
            self.discover(now, true);
        }
        self.report_path(now);
    }

    /// A CallMeMaybe from the peer (arrived over DERP): its endpoints replace those of
    /// the previous one, and every candidate is pinged at once (the simultaneous open).
    pub fn handle_call_me_maybe(
        &mut self,
        now: Instant,
        endpoints: impl IntoIterator<Item = SocketAddr>,
    ) {
        if self.blocked {
            return;
        }
        let new: BTreeSet<SocketAddr> = endpoints.into_iter().map(canonical).collect();
        for (addr, c) in &mut self.candidates {
            c.from_call_me_maybe = new.contains(addr);
        }
        for addr in new {
            if let Some(c) = self.candidate_entry(addr) {
                c.from_call_me_maybe = true;
            }
        }
        self.prune(now);
        for c in self.candidates.values_mut() {
            c.last_ping = None;
        }
        self.discover(now, false);
        self.report_path(now);
    }

    /// The peer has just added us (the coordinator said so). Disco we sent before that
    /// was dropped as coming from an unknown key, so if discovery already ran and no
    /// path is trusted yet, it runs again now instead of a discovery interval later.
    pub fn on_peer_ready(&mut self, now: Instant) {
        if self.blocked || self.trusted(now) {
            return;
        }
        if !self.candidates.values().any(|c| c.last_ping.is_some()) {
            return;
        }
        for c in self.candidates.values_mut() {
            c.last_ping = None;
        }
        self.discover(now, true);
        self.report_path(now);
    }

    /// A ping from the peer arrived (the driver answers it with a pong itself). A UDP
    /// source becomes a candidate until [`PING_SOURCE_TTL`] after its last ping.
    pub fn handle_ping(&mut self, now: Instant, via: Via) {
        if self.blocked {
            return;
        }
        let Via::Udp(addr) = via else {
            return;
        };
        let addr = canonical(addr);
        let trusted_best = self.trusted(now) && self.best.is_some_and(|b| b.addr == addr);
        let Some(c) = self.candidate_entry(addr) else {
            return;
        };
        c.last_got_ping = Some(now);
        // Only earlier pings back count: a ping of ours sent a moment before the peer's
        // arrived was most likely dropped by the peer's NAT, which only now lets us in.
        let pinged_back_lately = c
            .last_ping_back
            .is_some_and(|t| now.saturating_duration_since(t) < PING_BACK_INTERVAL);
        if !trusted_best && !pinged_back_lately {
            c.last_ping_back = Some(now);
            self.send_ping(now, addr);
        }
    }

    /// A pong arrived. Returns `None` for a TxID we did not send (or that timed out).
    pub fn handle_pong(&mut self, now: Instant, txid: TxId, via: Via) -> Option<PongOutcome> {
        let sp = self.sent.remove(&txid)?;
        let latency = now.saturating_duration_since(sp.at);
        if latency >= PING_TIMEOUT {
            return None;
        }
        let mut outcome = PongOutcome {
            latency,
            addr: sp.to,
            best: false,
        };
        // Pongs over DERP (or answering DERP pings) only measure; they never become best.
        let (Some(to), Via::Udp(_)) = (sp.to, via) else {
            return Some(outcome);
        };
        if self.blocked || !self.candidates.contains_key(&to) {
            return Some(outcome);
        }
        let this = AddrQuality { addr: to, latency };
        if !self.trusted(now) || better_addr(this, self.best) {
            self.best = Some(this);
        }
        if let Some(best) = &mut self.best
            && best.addr == to
        {
            best.latency = latency;
            self.trust_until = Some(now + TRUST_UDP_ADDR_DURATION);
            outcome.best = true;
            // Older pings to it were lost, but the path is proved alive since.
            self.sent
                .retain(|_, s| !(s.to == Some(to) && s.at <= sp.at));
        }
        self.report_path(now);
        Some(outcome)
    }

    /// Our current endpoints (after STUN and interface enumeration), for CallMeMaybe.
    /// Sends a CallMeMaybe that was waiting for them.
    pub fn set_local_endpoints(
        &mut self,
        now: Instant,
        endpoints: impl IntoIterator<Item = SocketAddr>,
    ) {
        self.local_endpoints = endpoints.into_iter().collect();
        self.local_endpoints_at = Some(now);
        if std::mem::take(&mut self.call_me_maybe_pending) && !self.blocked {
            self.outputs.push_back(Output::SendCallMeMaybe {
                endpoints: self.local_endpoints.clone(),
            });
        }
    }

    /// A data packet is about to go to the peer: notes the activity, starts discovery
    /// while the best address is not trusted, and returns where to send it.
    pub fn on_send(&mut self, now: Instant) -> SendDecision {
        self.last_send = Some(now);
        if !self.blocked {
            if self.heartbeat_at.is_none() {
                self.heartbeat_at = Some(now + HEARTBEAT_INTERVAL);
            }
            if !self.trusted(now) {
                self.discover(now, true);
            }
        }
        self.report_path(now);
        self.decision(now)
    }

    /// Where a datagram sent now should go (a pure query; [`PathSel::on_send`] also
    /// notes the activity).
    pub fn decision(&self, now: Instant) -> SendDecision {
        if self.blocked {
            return SendDecision::Derp { also: None };
        }
        match self.best {
            Some(b) if self.trusted(now) => SendDecision::Direct(b.addr),
            b => SendDecision::Derp {
                also: b.map(|b| b.addr),
            },
        }
    }

    /// Registers a ping over DERP (e.g. for `tether ping`) and returns its TxID; the
    /// driver sends it. Its pong reports the latency but never changes the path.
    pub fn ping_via_derp(&mut self, now: Instant) -> TxId {
        let txid = self.new_txid();
        self.sent.insert(txid, SentPing { to: None, at: now });
        txid
    }

    /// Registers a ping on the primary path (for `tether ping`) and returns its TxID
    /// and the UDP address to send it to, or `None` for DERP; the driver sends it.
    ///
    /// With a trusted best address the ping goes there and its pong refreshes the
    /// trust like a heartbeat's. Otherwise it goes over DERP and, unless blocked,
    /// discovery starts as for outgoing data (pings to the candidates, a CallMeMaybe),
    /// so that later pings can go direct, as Tailscale's `cliPing` does.
    pub fn ping_primary(&mut self, now: Instant) -> (TxId, Option<SocketAddr>) {
        if let SendDecision::Direct(addr) = self.decision(now) {
            return (self.register_ping(now, addr), Some(addr));
        }
        if !self.blocked {
            self.discover(now, true);
            self.report_path(now);
        }
        (self.ping_via_derp(now), None)
    }

    /// Runs what is due at `now`: ping timeouts, ping-source expiry, heartbeats, and the
    /// fallback to DERP when trust lapsed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sent
            .retain(|_, sp| now.saturating_duration_since(sp.at) < PING_TIMEOUT);
        if let Some((deadline, retry)) = self.best_pong_deadline() {
            if now >= deadline {
                self.trust_until = Some(deadline);
            } else if let (Some(retry), Some(best)) = (retry, self.best)
                && now >= retry
            {
                self.send_ping(now, best.addr);
            }
        }
        self.prune(now);
        if let Some(at) = self.heartbeat_at
            && now >= at
        {
            let idle = self
                .last_send
                .is_none_or(|t| now.saturating_duration_since(t) >= SESSION_ACTIVE_TIMEOUT);
            if self.blocked || idle {
                self.heartbeat_at = None;
            } else {
                if let Some(best) = self.best {
                    self.send_ping(now, best.addr);
                }
                if self.want_full_ping(now) {
                    self.discover(now, true);
                }
                self.heartbeat_at = Some(now + HEARTBEAT_INTERVAL);
            }
        }
        self.report_path(now);
    }

    /// The next instant [`PathSel::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pings = self.sent.values().map(|sp| sp.at + PING_TIMEOUT);
        let sources = self
            .candidates
            .values()
            .filter_map(|c| c.last_got_ping.map(|t| t + PING_SOURCE_TTL));
        let trust = self.reported_direct.and(self.trust_until);
        pings
            .chain(sources)
            .chain(self.heartbeat_at)
            .chain(trust)
            .chain(
                self.best_pong_deadline()
                    .map(|(deadline, retry)| retry.unwrap_or(deadline)),
            )
            .min()
    }

    /// While pings to the trusted best address go unanswered: when the oldest one ends
    /// the trust, and when to send the second ping (`None` once one was sent after it).
    fn best_pong_deadline(&self) -> Option<(Instant, Option<Instant>)> {
        let best = self.best?.addr;
        let until = self.trust_until?;
        let mut unanswered = self
            .sent
            .values()
            .filter(|sp| sp.to == Some(best))
            .map(|sp| sp.at);
        let first = unanswered.next()?;
        let (oldest, newest) =
            unanswered.fold((first, first), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let deadline = oldest + BEST_PONG_DEADLINE;
        if deadline >= until {
            return None;
        }
        let retry = (oldest == newest).then_some(oldest + BEST_PONG_DEADLINE / 2);
        Some((deadline, retry))
    }

    /// The next thing for the driver to do or log.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The best UDP address found so far, trusted or not.
    pub fn best(&self) -> Option<AddrQuality> {
        self.best
    }

    /// Until when the best address is trusted.
    pub fn trusted_until(&self) -> Option<Instant> {
        self.trust_until
    }

    /// The current candidate endpoints.
    pub fn candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.candidates.keys().copied()
    }

    fn trusted(&self, now: Instant) -> bool {
        self.best.is_some() && self.trust_until.is_some_and(|t| now < t)
    }

    /// The candidate at `addr`, created if there is room.
    fn candidate_entry(&mut self, addr: SocketAddr) -> Option<&mut Candidate> {
        if !self.candidates.contains_key(&addr) && self.candidates.len() >= MAX_CANDIDATES {
            return None;
        }
        Some(self.candidates.entry(addr).or_default())
    }

    /// Expires ping-learned candidates and forgets candidates without a source.
    fn prune(&mut self, now: Instant) {
        for c in self.candidates.values_mut() {
            if c.last_got_ping
                .is_some_and(|t| now.saturating_duration_since(t) >= PING_SOURCE_TTL)
            {
                c.last_got_ping = None;
            }
        }
        self.candidates.retain(|_, c| c.has_source());
        if let Some(b) = self.best
            && !self.candidates.contains_key(&b.addr)
        {
            self.best = None;
            self.trust_until = None;
        }
    }

    fn want_full_ping(&self, now: Instant) -> bool {
        let (Some(best), Some(last_full)) = (self.best, self.last_full_ping) else {
            return true;
        };
        if !self.trusted(now) {
            return true;
        }
        best.latency > GOOD_ENOUGH_LATENCY
            && now.saturating_duration_since(last_full) >= UPGRADE_INTERVAL
    }

    /// Pings every candidate not pinged within [`DISCO_PING_INTERVAL`]; if any ping went
    /// out and `call_me_maybe`, asks the peer to ping us back.
    fn discover(&mut self, now: Instant, call_me_maybe: bool) {
        if self.blocked {
            return;
        }
        self.last_full_ping = Some(now);
        let due: Vec<SocketAddr> = self
            .candidates
            .iter()
            .filter(|(_, c)| {
                c.last_ping
                    .is_none_or(|t| now.saturating_duration_since(t) >= DISCO_PING_INTERVAL)
            })
            .map(|(a, _)| *a)
            .collect();
        for addr in &due {
            self.send_ping(now, *addr);
        }
        if !due.is_empty() && call_me_maybe {
            self.queue_call_me_maybe(now);
        }
    }

    fn queue_call_me_maybe(&mut self, now: Instant) {
        let fresh = self
            .local_endpoints_at
            .is_some_and(|t| now.saturating_duration_since(t) < ENDPOINTS_FRESH_ENOUGH);
        if fresh {
            self.outputs.push_back(Output::SendCallMeMaybe {
                endpoints: self.local_endpoints.clone(),
            });
        } else if !self.call_me_maybe_pending {
            self.call_me_maybe_pending = true;
            self.outputs.push_back(Output::NeedFreshEndpoints);
        }
    }

    fn send_ping(&mut self, now: Instant, addr: SocketAddr) {
        let txid = self.register_ping(now, addr);
        self.outputs.push_back(Output::SendPing { addr, txid });
    }

    /// Notes a UDP ping to `addr` sent now and returns its TxID.
    fn register_ping(&mut self, now: Instant, addr: SocketAddr) -> TxId {
        let txid = self.new_txid();
        self.sent.insert(
            txid,
            SentPing {
                to: Some(addr),
                at: now,
            },
        );
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.last_ping = Some(now);
        }
        txid
    }

    fn new_txid(&mut self) -> TxId {
        let mut b = [0u8; TX_ID_LEN];
        self.rng.fill_bytes(&mut b);
        TxId(b)
    }

    /// Emits [`Output::PathChanged`] when the primary path differs from the last report.
    fn report_path(&mut self, now: Instant) {
        let direct = self.decision(now).direct();
        if direct != self.reported_direct {
            self.reported_direct = direct;
            self.outputs.push_back(Output::PathChanged { direct });
        }
    }
}

#[cfg(test)]
mod tests;
