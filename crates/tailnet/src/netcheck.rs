//! netcheck: what the network between this node and the DERP map looks like, after
//! Tailscale's `net/netcheck`.
//!
//! A [`Report`] says whether UDP works at all (any STUN answer), per address family,
//! which public address and port one UDP socket is mapped to, whether that mapping
//! varies by destination (a "hard" NAT that defeats hole punching), the latency to each
//! DERP region, and which region should be home.
//!
//! The decisions are pure functions of measurements, tested without sockets or clocks:
//! [`build_report`] turns [`Measurements`] into a [`Report`], [`preferred_region`]
//! picks a home (lowest latency × `HomeParams.RegionScore`, with [`keep_old_home`]
//! stickiness), [`plan_stun`] lays out which STUN probes go where and when, and
//! [`http_regions`] names the regions to time over HTTP(S) when STUN cannot, and
//! [`StunRound`] runs one round of a plan (what is due, which answers count, when it is
//! over). The prober, [`run`], is a thin tokio driver: it sends the planned STUN binding
//! requests from the caller's socket(s) through [`stun_round`], falls back to
//! `GET /derp/latency-check`, and calls [`build_report`].
//!
//! [`stun_round`] is also how [`Conn`](crate::Conn) refreshes its endpoints from its
//! shared UDP socket (whose datagrams its driver reads), through the [`StunIo`] it
//! implements, with [`plan_stun_per_server`] and [`REFRESH_ROUND_TIMEOUT`].

mod probe;
mod round;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Serialize, Serializer};
use tether_proto::derpmap::{DerpMap, DerpNode, DerpRegion};

pub use probe::{Options, Received, Sockets, StunIo, run, stun_round, stun_targets};
pub use round::{Probe, StunRound};

/// STUN tries per region and address family.
pub const STUN_TRIES: u32 = 3;
/// Time between two STUN tries to one region.
pub const STUN_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound of one endpoint-refresh round of a [`Conn`](crate::Conn).
pub const REFRESH_ROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound of the STUN phase of a report.
pub const STUN_PHASE_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound of a whole report (STUN, then the HTTP(S) fallback).
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The old home stays when the best region is less than this much faster.
pub const HOME_KEEP_ABSOLUTE: Duration = Duration::from_millis(10);

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr` (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(addr: &SocketAddr) -> Self {
        match addr.ip().to_canonical() {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// One STUN server to probe: a node of a region at one resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunTarget {
    /// The node's region.
    pub region: u32,
    /// The node's name.
    pub node: String,
    /// Where to send binding requests.
    pub addr: SocketAddr,
}

/// One STUN probe of the plan: send to `target` at `delay` after the phase starts,
/// unless its group already answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    /// Offset from the start of the STUN phase.
    pub delay: Duration,
    /// The server.
    pub target: StunTarget,
    /// Probes of one group stand in for each other: one answer ends them all.
    pub group: usize,
}

/// One STUN answer: `server` (a node of `region`) saw us as `mapped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunAnswer {
    /// The region of the answering node.
    pub region: u32,
    /// The STUN server's address.
    pub server: SocketAddr,
    /// Our address as the server saw it.
    pub mapped: SocketAddr,
    /// Time from sending the request to receiving this answer.
    pub latency: Duration,
}

/// What the prober measured; the input of [`build_report`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    /// STUN answers in the order they arrived.
    pub stun: Vec<StunAnswer>,
    /// At least one IPv4 STUN request could be sent.
    pub can_send_v4: bool,
    /// At least one IPv6 STUN request could be sent.
    pub can_send_v6: bool,
    /// Region → latency of `GET /derp/latency-check` (the fallback when STUN fails).
    pub http: BTreeMap<u32, Duration>,
}

/// The netcheck report; serializes with Tailscale's field names, latencies in
/// milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Some STUN server answered.
    #[serde(rename = "UDP")]
    pub udp: bool,
    /// Some STUN server answered over IPv4.
    #[serde(rename = "IPv4")]
    pub ipv4: bool,
    /// Some STUN server answered over IPv6.
    #[serde(rename = "IPv6")]
    pub ipv6: bool,
    /// An IPv4 STUN request could be sent.
    #[serde(rename = "IPv4CanSend")]
    pub ipv4_can_send: bool,
    /// An IPv6 STUN request could be sent.
    #[serde(rename = "IPv6CanSend")]
    pub ipv6_can_send: bool,
    /// Two STUN servers saw different mapped addresses (hard NAT); `None` when fewer
    /// than two servers of one family answered.
    #[serde(rename = "MappingVariesByDestIP")]
    pub mapping_varies_by_dest_ip: Option<bool>,
    /// Our public IPv4 address and port (the first IPv4 answer).
    #[serde(rename = "GlobalV4")]
    pub global_v4: Option<SocketAddr>,
    /// Our public IPv6 address and port (the first IPv6 answer).
    #[serde(rename = "GlobalV6")]
    pub global_v6: Option<SocketAddr>,
    /// The home region; `None` (serialized as 0, as Tailscale does) when none qualifies.
    #[serde(rename = "PreferredDERP", serialize_with = "zero_if_none")]
    pub preferred_derp: Option<u32>,
    /// Region → best latency over any family (or HTTP(S) when STUN failed).
    #[serde(rename = "RegionLatency", serialize_with = "ms_map")]
    pub region_latency: BTreeMap<u32, Duration>,
    /// Region → best IPv4 STUN latency.
    #[serde(rename = "RegionV4Latency", serialize_with = "ms_map")]
    pub region_v4_latency: BTreeMap<u32, Duration>,
    /// Region → best IPv6 STUN latency.
    #[serde(rename = "RegionV6Latency", serialize_with = "ms_map")]
    pub region_v6_latency: BTreeMap<u32, Duration>,
}

fn zero_if_none<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(v.unwrap_or(0))
}

fn ms_map<S: Serializer>(m: &BTreeMap<u32, Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, d)| (k, millis(*d))))
}

/// A duration in milliseconds, rounded to microseconds.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Whether `region` may be measured and chosen as home.
fn home_candidate(region: &DerpRegion) -> bool {
    !region.no_measure_no_home && !region.avoid && region.nodes.iter().any(|n| !n.stun_only)
}

/// The region's latency multiplier from `HomeParams.RegionScore` (1 when absent or ≤ 0).
pub fn region_score(map: &DerpMap, region: u32) -> f64 {
    map.home_params
        .as_ref()
        .and_then(|h| h.region_score.get(&region).copied())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

/// Stickiness: keep the old home (latency `old`, still reachable) over a new best
/// region (latency `best`, both scored) unless the best is at least 10 ms and a third
/// faster.
pub fn keep_old_home(old: Duration, best: Duration) -> bool {
    old.saturating_sub(best) < HOME_KEEP_ABSOLUTE || best > old * 2 / 3
}

/// The home region: the lowest scored latency among regions that may be home (not
/// `NoMeasureNoHome`, not `Avoid`, with a DERP node), ties to the lower region ID; the
/// `previous` home stays while it is reachable and [`keep_old_home`] says so.
pub fn preferred_region(
    map: &DerpMap,
    latency: &BTreeMap<u32, Duration>,
    previous: Option<u32>,
) -> Option<u32> {
    let scored = |id: u32| -> Option<Duration> {
        let region = map.regions.get(&id)?;
        if !home_candidate(region) {
            return None;
        }
        let d = latency.get(&id)?;
        Some(d.mul_f64(region_score(map, id)))
    };
    let mut best: Option<(u32, Duration)> = None;
    for &id in latency.keys() {
        if let Some(d) = scored(id)
            && best.is_none_or(|(_, b)| d < b)
        {
            best = Some((id, d));
        }
    }
    let (best_id, best_latency) = best?;
    if let Some(old) = previous
        && old != best_id
        && let Some(old_latency) = scored(old)
        && keep_old_home(old_latency, best_latency)
    {
        return Some(old);
    }
    Some(best_id)
}

/// Whether the mapping varies by destination: `Some(true)` when two STUN servers of one
/// family saw different mapped addresses, `Some(false)` when at least two servers of a
/// family answered and all agreed, `None` when no family had two servers.
pub fn mapping_varies(answers: &[StunAnswer]) -> Option<bool> {
    let mut per_family: BTreeMap<Family, BTreeMap<SocketAddr, SocketAddr>> = BTreeMap::new();
    for a in answers {
        per_family
            .entry(Family::of(&a.server))
            .or_default()
            .entry(a.server)
            .or_insert(a.mapped);
    }
    let mut verdict = None;
    for servers in per_family.values() {
        if servers.len() < 2 {
            continue;
        }
        let distinct: BTreeSet<SocketAddr> = servers
            .values()
            .map(|m| SocketAddr::new(m.ip().to_canonical(), m.port()))
            .collect();
        verdict = Some(verdict.unwrap_or(false) || distinct.len() > 1);
    }
    verdict
}

/// Builds the report from measurements: UDP and family flags, global addresses, hard-NAT
/// detection, per-region latencies (STUN; HTTP(S) fills regions STUN did not measure),
/// and the home region given the `previous` one.
pub fn build_report(map: &DerpMap, m: &Measurements, previous: Option<u32>) -> Report {
    let mut r = Report {
        udp: !m.stun.is_empty(),
        ipv4_can_send: m.can_send_v4,
        ipv6_can_send: m.can_send_v6,
        mapping_varies_by_dest_ip: mapping_varies(&m.stun),
        ..Report::default()
    };
    for a in &m.stun {
        let mapped = SocketAddr::new(a.mapped.ip().to_canonical(), a.mapped.port());
        let (seen, global, per_family) = match Family::of(&a.server) {
            Family::V4 => (&mut r.ipv4, &mut r.global_v4, &mut r.region_v4_latency),
            Family::V6 => (&mut r.ipv6, &mut r.global_v6, &mut r.region_v6_latency),
        };
        *seen = true;
        global.get_or_insert(mapped);
        keep_min(per_family, a.region, a.latency);
        keep_min(&mut r.region_latency, a.region, a.latency);
    }
    for (&region, &d) in &m.http {
        r.region_latency.entry(region).or_insert(d);
    }
    r.preferred_derp = preferred_region(map, &r.region_latency, previous);
    r
}

fn keep_min(m: &mut BTreeMap<u32, Duration>, region: u32, d: Duration) {
    m.entry(region)
        .and_modify(|old| *old = (*old).min(d))
        .or_insert(d);
}

/// Where a node takes STUN requests for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSource {
    /// Not on this family.
    Disabled,
    /// At this IP.
    Ip(IpAddr),
    /// At what the host name resolves to.
    Resolve(String),
}

/// A node's STUN address sources for IPv4 and IPv6 (`STUNTestIP` overrides both,
/// `IPv4`/`IPv6` pin or disable a family, otherwise the host name is resolved), or
/// `None` when the node does not do STUN.
pub fn stun_sources(node: &DerpNode) -> Option<(u16, AddrSource, AddrSource)> {
    let port = node.stun_port()?;
    if let Ok(ip) = node.stun_test_ip.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return Some(match ip {
            IpAddr::V4(_) => (port, AddrSource::Ip(ip), AddrSource::Disabled),
            IpAddr::V6(_) => (port, AddrSource::Disabled, AddrSource::Ip(ip)),
        });
    }
    let host = node.host_name.trim_matches(['[', ']']);
    let host_ip = host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    let source = |pinned: &str, want_v4: bool| -> AddrSource {
        match pinned {
            "none" => AddrSource::Disabled,
            "" => match host_ip {
                Some(ip) if ip.is_ipv4() == want_v4 => AddrSource::Ip(ip),
                Some(_) => AddrSource::Disabled,
                None if host.is_empty() => AddrSource::Disabled,
                None => AddrSource::Resolve(host.to_string()),
            },
            s => match s.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) if ip.is_ipv4() == want_v4 => AddrSource::Ip(ip),
                _ => AddrSource::Disabled,
            },
        }
    };
    Some((port, source(&node.ipv4, true), source(&node.ipv6, false)))
}

/// The STUN probe plan of a report: per region and family (one group each),
/// [`STUN_TRIES`] probes [`STUN_RETRY_INTERVAL`] apart, cycling through the region's
/// nodes in order. `targets` holds the resolved STUN servers (any order within a region
/// is kept).
pub fn plan_stun(targets: &[StunTarget]) -> Vec<PlannedProbe> {
    let mut groups: BTreeMap<(u32, Family), Vec<&StunTarget>> = BTreeMap::new();
    for t in targets {
        groups
            .entry((t.region, Family::of(&t.addr)))
            .or_default()
            .push(t);
    }
    let mut plan = Vec::new();
    for (group, nodes) in groups.values().enumerate() {
        for attempt in 0..STUN_TRIES {
            let i = usize::try_from(attempt).unwrap_or(0) % nodes.len().max(1);
            if let Some(target) = nodes.get(i) {
                plan.push(PlannedProbe {
                    delay: STUN_RETRY_INTERVAL * attempt,
                    target: (*target).clone(),
                    group,
                });
            }
        }
    }
    plan.sort_by_key(|p| p.delay);
    plan
}

/// The STUN probe plan of an endpoint refresh: every server (by address) is a group of
/// its own, tried [`STUN_TRIES`] times [`STUN_RETRY_INTERVAL`] apart, since each
/// server's view of our mapping counts (endpoints, hard-NAT detection).
pub fn plan_stun_per_server(targets: &[StunTarget]) -> Vec<PlannedProbe> {
    let mut servers: BTreeMap<SocketAddr, &StunTarget> = BTreeMap::new();
    for t in targets {
        servers.entry(t.addr).or_insert(t);
    }
    let mut plan = Vec::new();
    for attempt in 0..STUN_TRIES {
        for (group, target) in servers.values().enumerate() {
            plan.push(PlannedProbe {
                delay: STUN_RETRY_INTERVAL * attempt,
                target: (*target).clone(),
                group,
            });
        }
    }
    plan
}

/// Regions whose latency comes from timing `GET /derp/latency-check`: every region that
/// may be home when no STUN answer came at all, otherwise those STUN could not measure
/// (no STUN node).
pub fn http_regions(map: &DerpMap, stun: &[StunAnswer]) -> Vec<u32> {
    let measured: BTreeSet<u32> = stun.iter().map(|a| a.region).collect();
    map.regions
        .values()
        .filter(|r| home_candidate(r))
        .filter(|r| stun.is_empty() || !r.nodes.iter().any(|n| n.stun_port().is_some()))
        .filter(|r| !measured.contains(&r.region_id))
        .map(|r| r.region_id)
        .collect()
}

#[cfg(test)]
mod tests;
