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
//! [`http_regions`] names the regions to time over HTTP(S) when STUN cannot. The
//! prober, [`run`], is a thin tokio driver: it sends the planned STUN binding requests
//! from the caller's socket(s), collects answers, falls back to
//! `GET /derp/latency-check`, and calls [`build_report`].

mod probe;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Serialize, Serializer};
use tether_derp::map::{DerpMap, DerpNode, DerpRegion};

pub use probe::{Options, Sockets, run};

/// STUN tries per region and address family.
pub const STUN_TRIES: u32 = 3;
/// Time between two STUN tries to one region.
pub const STUN_RETRY_INTERVAL: Duration = Duration::from_millis(100);
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
/// unless its region already answered on that family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    /// Offset from the start of the STUN phase.
    pub delay: Duration,
    /// The server.
    pub target: StunTarget,
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

/// The STUN probe plan: per region and family, [`STUN_TRIES`] probes
/// [`STUN_RETRY_INTERVAL`] apart, cycling through the region's nodes in order.
/// `targets` holds the resolved STUN servers (any order within a region is kept).
pub fn plan_stun(targets: &[StunTarget]) -> Vec<PlannedProbe> {
    let mut groups: BTreeMap<(u32, Family), Vec<&StunTarget>> = BTreeMap::new();
    for t in targets {
        groups
            .entry((t.region, Family::of(&t.addr)))
            .or_default()
            .push(t);
    }
    let mut plan = Vec::new();
    for nodes in groups.values() {
        for attempt in 0..STUN_TRIES {
            let i = usize::try_from(attempt).unwrap_or(0) % nodes.len().max(1);
            if let Some(target) = nodes.get(i) {
                plan.push(PlannedProbe {
                    delay: STUN_RETRY_INTERVAL * attempt,
                    target: (*target).clone(),
                });
            }
        }
    }
    plan.sort_by_key(|p| p.delay);
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
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tether_derp::map::HomeParams;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn node(region: u32, host: &str, stun_port: i32, stun_only: bool) -> DerpNode {
        DerpNode {
            name: format!("{region}{host}"),
            region_id: region,
            host_name: host.into(),
            stun_port,
            stun_only,
            ..DerpNode::default()
        }
    }

    fn region(id: u32, nodes: Vec<DerpNode>) -> DerpRegion {
        DerpRegion {
            region_id: id,
            region_code: format!("r{id}"),
            nodes,
            ..DerpRegion::default()
        }
    }

    /// Regions 1, 2, 3 with DERP+STUN nodes, 1000 a STUN-only no-home region.
    fn map() -> DerpMap {
        let mut m = DerpMap::default();
        for id in [1, 2, 3] {
            m.regions
                .insert(id, region(id, vec![node(id, "192.0.2.1", 0, false)]));
        }
        let mut stun = region(1000, vec![node(1000, "192.0.2.9", 3478, true)]);
        stun.no_measure_no_home = true;
        m.regions.insert(1000, stun);
        m
    }

    fn answer(region: u32, server: &str, mapped: &str, latency: u64) -> StunAnswer {
        StunAnswer {
            region,
            server: sa(server),
            mapped: sa(mapped),
            latency: ms(latency),
        }
    }

    fn lat(pairs: &[(u32, u64)]) -> BTreeMap<u32, Duration> {
        pairs.iter().map(|&(r, l)| (r, ms(l))).collect()
    }

    #[test]
    fn easy_nat_same_mapping_from_two_servers() {
        let m = Measurements {
            stun: vec![
                answer(1, "192.0.2.1:3478", "203.0.113.5:41641", 20),
                answer(2, "198.51.100.1:3478", "203.0.113.5:41641", 30),
            ],
            can_send_v4: true,
            ..Measurements::default()
        };
        let r = build_report(&map(), &m, None);
        assert!(r.udp && r.ipv4 && !r.ipv6 && r.ipv4_can_send);
        assert_eq!(r.mapping_varies_by_dest_ip, Some(false));
        assert_eq!(r.global_v4, Some(sa("203.0.113.5:41641")));
        assert_eq!(r.global_v6, None);
        assert_eq!(r.region_latency, lat(&[(1, 20), (2, 30)]));
        assert_eq!(r.region_v4_latency, lat(&[(1, 20), (2, 30)]));
        assert_eq!(r.preferred_derp, Some(1));
    }

    #[test]
    fn hard_nat_different_ports_per_destination() {
        let stun = vec![
            answer(1, "192.0.2.1:3478", "203.0.113.5:1000", 20),
            answer(2, "198.51.100.1:3478", "203.0.113.5:1001", 30),
        ];
        assert_eq!(mapping_varies(&stun), Some(true));
        // A different public IP per destination is just as hard.
        let stun = vec![
            answer(1, "192.0.2.1:3478", "203.0.113.5:1000", 20),
            answer(2, "198.51.100.1:3478", "203.0.113.6:1000", 30),
        ];
        assert_eq!(mapping_varies(&stun), Some(true));
        let r = build_report(
            &map(),
            &Measurements {
                stun,
                ..Measurements::default()
            },
            None,
        );
        assert_eq!(r.mapping_varies_by_dest_ip, Some(true));
        // The first answer is the global address.
        assert_eq!(r.global_v4, Some(sa("203.0.113.5:1000")));
    }

    #[test]
    fn mapping_unknown_with_fewer_than_two_servers_per_family() {
        assert_eq!(mapping_varies(&[]), None);
        // Three answers from one server (retransmissions) are still one server.
        let one = vec![
            answer(1, "192.0.2.1:3478", "203.0.113.5:1000", 20),
            answer(1, "192.0.2.1:3478", "203.0.113.5:1000", 25),
        ];
        assert_eq!(mapping_varies(&one), None);
        // One IPv4 and one IPv6 server cannot be compared with each other.
        let mixed = vec![
            answer(1, "192.0.2.1:3478", "203.0.113.5:1000", 20),
            answer(1, "[2001:db8::1]:3478", "[2001:db8::5]:1000", 20),
        ];
        assert_eq!(mapping_varies(&mixed), None);
        let r = build_report(
            &map(),
            &Measurements {
                stun: mixed,
                ..Measurements::default()
            },
            None,
        );
        assert!(r.ipv4 && r.ipv6);
        assert_eq!(r.global_v6, Some(sa("[2001:db8::5]:1000")));
        assert_eq!(r.mapping_varies_by_dest_ip, None);
    }

    #[test]
    fn stun_only_servers_count_for_mapping_but_never_become_home() {
        let m = Measurements {
            stun: vec![
                answer(1000, "192.0.2.9:3478", "203.0.113.5:1000", 1),
                answer(2, "198.51.100.1:3478", "203.0.113.5:1000", 40),
            ],
            ..Measurements::default()
        };
        let r = build_report(&map(), &m, None);
        assert_eq!(r.mapping_varies_by_dest_ip, Some(false));
        assert_eq!(r.region_latency.get(&1000), Some(&ms(1)));
        assert_eq!(r.preferred_derp, Some(2));
    }

    #[test]
    fn region_latency_is_the_minimum_over_tries_and_families() {
        let m = Measurements {
            stun: vec![
                answer(1, "192.0.2.1:3478", "203.0.113.5:1000", 30),
                answer(1, "192.0.2.2:3478", "203.0.113.5:1000", 25),
                answer(1, "[2001:db8::1]:3478", "[2001:db8::5]:1000", 22),
            ],
            ..Measurements::default()
        };
        let r = build_report(&map(), &m, None);
        assert_eq!(r.region_v4_latency, lat(&[(1, 25)]));
        assert_eq!(r.region_v6_latency, lat(&[(1, 22)]));
        assert_eq!(r.region_latency, lat(&[(1, 22)]));
    }

    #[test]
    fn preferred_region_applies_region_score() {
        let mut m = map();
        let latency = lat(&[(1, 20), (2, 30), (3, 25)]);
        assert_eq!(preferred_region(&m, &latency, None), Some(1));
        // Penalise region 1 (20 × 2 = 40), favour region 2 (30 × 0.5 = 15).
        m.home_params = Some(HomeParams {
            region_score: [(1, 2.0), (2, 0.5)].into_iter().collect(),
        });
        assert_eq!(preferred_region(&m, &latency, None), Some(2));
        // Scores ≤ 0 are ignored.
        m.home_params = Some(HomeParams {
            region_score: [(1, 0.0), (3, -1.0)].into_iter().collect(),
        });
        assert_eq!(preferred_region(&m, &latency, None), Some(1));
        assert_eq!(region_score(&m, 3), 1.0);
    }

    #[test]
    fn preferred_region_skips_unfit_regions_and_ties_go_low() {
        let mut m = map();
        assert_eq!(preferred_region(&m, &BTreeMap::new(), None), None);
        // Only a STUN-only / no-home region measured: no home.
        assert_eq!(preferred_region(&m, &lat(&[(1000, 1)]), None), None);
        // Unknown regions (not in the map) are ignored.
        assert_eq!(
            preferred_region(&m, &lat(&[(77, 1), (3, 9)]), None),
            Some(3)
        );
        // Ties: lower region ID.
        assert_eq!(preferred_region(&m, &lat(&[(2, 9), (3, 9)]), None), Some(2));
        // Avoid and NoMeasureNoHome exclude a region.
        m.regions.get_mut(&2).unwrap().avoid = true;
        m.regions.get_mut(&3).unwrap().no_measure_no_home = true;
        assert_eq!(
            preferred_region(&m, &lat(&[(2, 1), (3, 2), (1, 50)]), None),
            Some(1)
        );
    }

    #[test]
    fn stickiness_rules() {
        // Less than 10 ms better: keep, even when a lot faster relatively.
        assert!(keep_old_home(ms(12), ms(3)));
        // At least 10 ms better but not a third faster: keep (100 → 70; ⅔·100 ≈ 66.7).
        assert!(keep_old_home(ms(100), ms(70)));
        // At least 10 ms better and more than a third faster: move.
        assert!(!keep_old_home(ms(100), ms(60)));
        assert!(!keep_old_home(ms(30), ms(15)));
        // Exactly 10 ms better and exactly ⅔: move (both thresholds are strict).
        assert!(!keep_old_home(ms(30), ms(20)));

        let m = map();
        // Old home 2 at 25 ms, best 1 at 20 ms: keep 2.
        assert_eq!(
            preferred_region(&m, &lat(&[(1, 20), (2, 25)]), Some(2)),
            Some(2)
        );
        // Old home 2 at 100 ms, best 1 at 20 ms: move.
        assert_eq!(
            preferred_region(&m, &lat(&[(1, 20), (2, 100)]), Some(2)),
            Some(1)
        );
        // Old home unreachable (no latency): move.
        assert_eq!(preferred_region(&m, &lat(&[(1, 20)]), Some(2)), Some(1));
        // Old home no longer fit to be home: move.
        let mut m2 = map();
        m2.regions.get_mut(&2).unwrap().avoid = true;
        assert_eq!(
            preferred_region(&m2, &lat(&[(1, 20), (2, 25)]), Some(2)),
            Some(1)
        );
        // Stickiness compares scored latencies: 2 at 25 × 3 = 75 vs 20: move.
        let mut m3 = map();
        m3.home_params = Some(HomeParams {
            region_score: [(2, 3.0)].into_iter().collect(),
        });
        assert_eq!(
            preferred_region(&m3, &lat(&[(1, 20), (2, 25)]), Some(2)),
            Some(1)
        );
    }

    #[test]
    fn udp_blocked_falls_back_to_http_latency() {
        let m = map();
        // No STUN answers: every home-capable region is timed over HTTP(S).
        assert_eq!(http_regions(&m, &[]), vec![1, 2, 3]);
        let meas = Measurements {
            stun: vec![],
            can_send_v4: true,
            can_send_v6: false,
            http: lat(&[(1, 40), (2, 35)]),
        };
        let r = build_report(&m, &meas, None);
        assert!(!r.udp && !r.ipv4 && !r.ipv6);
        assert!(r.ipv4_can_send);
        assert_eq!(r.global_v4, None);
        assert_eq!(r.global_v6, None);
        assert_eq!(r.mapping_varies_by_dest_ip, None);
        assert_eq!(r.region_latency, lat(&[(1, 40), (2, 35)]));
        assert!(r.region_v4_latency.is_empty() && r.region_v6_latency.is_empty());
        assert_eq!(r.preferred_derp, Some(2));

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["UDP"], false);
        assert_eq!(json["GlobalV4"], serde_json::Value::Null);
        assert_eq!(json["MappingVariesByDestIP"], serde_json::Value::Null);
        assert_eq!(json["RegionLatency"]["2"], 35.0);
        assert_eq!(json["PreferredDERP"], 2);
    }

    #[test]
    fn http_only_for_regions_stun_cannot_measure_when_udp_works() {
        let mut m = map();
        m.regions
            .insert(4, region(4, vec![node(4, "192.0.2.4", -1, false)]));
        let stun = vec![answer(1, "192.0.2.1:3478", "203.0.113.5:1000", 20)];
        assert_eq!(http_regions(&m, &stun), vec![4]);
        // HTTP never overrides a STUN latency.
        let meas = Measurements {
            stun,
            http: lat(&[(1, 99), (4, 50)]),
            ..Measurements::default()
        };
        let r = build_report(&m, &meas, None);
        assert_eq!(r.region_latency, lat(&[(1, 20), (4, 50)]));
    }

    #[test]
    fn report_json_uses_tailscale_names() {
        let r = Report {
            udp: true,
            ipv4: true,
            global_v4: Some(sa("127.0.0.1:5000")),
            mapping_varies_by_dest_ip: Some(false),
            preferred_derp: Some(999),
            region_latency: [(999, Duration::from_micros(1234))].into_iter().collect(),
            ..Report::default()
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["UDP"], true);
        assert_eq!(json["IPv4"], true);
        assert_eq!(json["IPv6"], false);
        assert_eq!(json["GlobalV4"], "127.0.0.1:5000");
        assert_eq!(json["MappingVariesByDestIP"], false);
        assert_eq!(json["PreferredDERP"], 999);
        assert_eq!(json["RegionLatency"]["999"], 1.234);
        let none = serde_json::to_value(Report::default()).unwrap();
        assert_eq!(none["PreferredDERP"], 0);
    }

    #[test]
    fn stun_sources_follow_pins_and_test_ip() {
        let n = node(1, "derp1.example.net", 0, false);
        assert_eq!(
            stun_sources(&n),
            Some((
                3478,
                AddrSource::Resolve("derp1.example.net".into()),
                AddrSource::Resolve("derp1.example.net".into())
            ))
        );
        let mut pinned = n.clone();
        pinned.ipv4 = "192.0.2.1".into();
        pinned.ipv6 = "none".into();
        assert_eq!(
            stun_sources(&pinned),
            Some((
                3478,
                AddrSource::Ip(sa("192.0.2.1:0").ip()),
                AddrSource::Disabled
            ))
        );
        let mut test_ip = n.clone();
        test_ip.stun_test_ip = "127.0.0.1".into();
        test_ip.stun_port = 4000;
        assert_eq!(
            stun_sources(&test_ip),
            Some((
                4000,
                AddrSource::Ip(sa("127.0.0.1:0").ip()),
                AddrSource::Disabled
            ))
        );
        let v6_host = node(1, "[::1]", 5000, true);
        assert_eq!(
            stun_sources(&v6_host),
            Some((
                5000,
                AddrSource::Disabled,
                AddrSource::Ip(sa("[::1]:0").ip())
            ))
        );
        let mut off = n;
        off.stun_port = -1;
        assert_eq!(stun_sources(&off), None);
    }

    #[test]
    fn plan_spaces_tries_and_cycles_nodes() {
        let t = |region: u32, node: &str, addr: &str| StunTarget {
            region,
            node: node.into(),
            addr: sa(addr),
        };
        let targets = vec![
            t(1, "1a", "192.0.2.1:3478"),
            t(1, "1b", "192.0.2.2:3478"),
            t(2, "2a", "198.51.100.1:3478"),
            t(2, "2a", "[2001:db8::1]:3478"),
        ];
        let plan = plan_stun(&targets);
        // 3 tries for each of (1, v4), (2, v4), (2, v6).
        assert_eq!(plan.len(), 9);
        let of = |region: u32, fam: Family| -> Vec<(Duration, String)> {
            plan.iter()
                .filter(|p| p.target.region == region && Family::of(&p.target.addr) == fam)
                .map(|p| (p.delay, p.target.node.clone()))
                .collect()
        };
        assert_eq!(
            of(1, Family::V4),
            vec![
                (ms(0), "1a".into()),
                (ms(100), "1b".into()),
                (ms(200), "1a".into())
            ]
        );
        assert_eq!(of(2, Family::V6).len(), 3);
        assert!(plan.windows(2).all(|w| w[0].delay <= w[1].delay));
        assert!(
            plan.iter()
                .all(|p| p.delay < STUN_PHASE_TIMEOUT && p.delay <= STUN_RETRY_INTERVAL * 2)
        );
        assert!(plan_stun(&[]).is_empty());
    }
}
