//! What a node tells the coordinator about its network, decided sans-IO from STUN
//! measurements: the first home DERP region at join ([`first_home`]), and after each
//! endpoint-refresh round ([`after_round`]) its UDP endpoints, its home region (moved
//! only when the current home was measured, with [`netcheck`]'s stickiness), its
//! latencies and hard-NAT verdict, and whether that is worth sending our node again
//! ([`NetInfo::differs_from`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tether_proto::derpmap::DerpMap;

use crate::netcheck::{self, Measurements, Report};

/// The network facts of our node, as sent to the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub struct NetInfo {
    /// Our UDP endpoints (`ip:port`).
    pub endpoints: Vec<String>,
    /// Our home DERP region.
    pub preferred_derp: u32,
    /// Latency in seconds per region, keyed `"<id>-v4"` as Coder sends it.
    pub derp_latency: BTreeMap<String, f64>,
    /// Hard NAT, `None` while unknown.
    pub mapping_varies_by_dest_ip: Option<bool>,
}

impl NetInfo {
    /// Whether `self` tells peers something `published` did not: endpoints, home region
    /// or hard-NAT verdict (latencies alone are not worth a node update).
    pub fn differs_from(&self, published: Option<&NetInfo>) -> bool {
        published.is_none_or(|p| {
            p.endpoints != self.endpoints
                || p.preferred_derp != self.preferred_derp
                || p.mapping_varies_by_dest_ip != self.mapping_varies_by_dest_ip
        })
    }
}

/// What a STUN round says about our network, for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StunVerdict {
    /// Hard NAT (`None` while fewer than two servers answered).
    pub mapping_varies: Option<bool>,
    /// Any server answered (`None`: no round yet, or no servers in the map).
    pub answered: Option<bool>,
}

/// What one endpoint-refresh round decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Refresh {
    /// Our endpoints: STUN mappings and local interface addresses, sorted.
    pub endpoints: Vec<SocketAddr>,
    /// The home region from now on.
    pub home: u32,
    /// This round's latency per region.
    pub latency: BTreeMap<u32, Duration>,
    /// For diagnostics.
    pub verdict: StunVerdict,
    /// What to publish.
    pub info: NetInfo,
}

/// Decides after a refresh round over `servers` STUN servers that measured `m`, with
/// home region `current` and our `local` interface endpoints. The home moves only when
/// `current` itself was measured (one chosen by HTTP latency at join may have no STUN
/// server, and cannot be compared), to [`netcheck::preferred_region`] with stickiness.
pub fn after_round(
    map: &DerpMap,
    current: u32,
    servers: usize,
    m: &Measurements,
    local: impl IntoIterator<Item = SocketAddr>,
) -> Refresh {
    let mut endpoints: BTreeSet<SocketAddr> = m.stun.iter().map(|a| a.mapped).collect();
    endpoints.extend(local);
    let endpoints: Vec<SocketAddr> = endpoints.into_iter().collect();
    // The same report as `tether netcheck`, from this round's answers.
    let stun_only = Measurements {
        stun: m.stun.clone(),
        ..Measurements::default()
    };
    let report = netcheck::build_report(map, &stun_only, Some(current));
    let latency = report.region_latency;
    let home = match report.preferred_derp {
        Some(best) if latency.contains_key(&current) => best,
        _ => current,
    };
    let varies = report.mapping_varies_by_dest_ip;
    let info = NetInfo {
        endpoints: endpoints.iter().map(ToString::to_string).collect(),
        preferred_derp: home,
        derp_latency: latency
            .iter()
            .map(|(r, d)| (format!("{r}-v4"), d.as_secs_f64()))
            .collect(),
        mapping_varies_by_dest_ip: varies,
    };
    Refresh {
        endpoints,
        home,
        latency,
        verdict: StunVerdict {
            mapping_varies: varies,
            answered: (servers > 0).then_some(!m.stun.is_empty()),
        },
        info,
    }
}

/// How to pick the home region at join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstHome {
    /// The map has one DERP region: that one.
    Only(u32),
    /// Several: measure (a short netcheck) and call [`first_home`]; `fallback` is the
    /// lowest region ID, for ties and failures.
    Measure {
        /// Taken when measuring fails.
        fallback: u32,
    },
}

/// How to pick the first home region of `map`; `None` when it has no DERP region.
pub fn first_home_plan(map: &DerpMap) -> Option<FirstHome> {
    let lowest = map.derp_region_ids().min()?;
    Some(if map.derp_region_ids().nth(1).is_none() {
        FirstHome::Only(lowest)
    } else {
        FirstHome::Measure { fallback: lowest }
    })
}

/// The first home region from a short netcheck `report`: its preferred region, else
/// `fallback`.
pub fn first_home(report: &Report, fallback: u32) -> u32 {
    report.preferred_derp.unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tether_proto::derpmap::{DerpNode, DerpRegion};

    use super::*;
    use crate::netcheck::StunAnswer;

    fn region(id: u32, stun_only: bool) -> DerpRegion {
        DerpRegion {
            region_id: id,
            no_measure_no_home: stun_only,
            nodes: vec![DerpNode {
                name: format!("{id}a"),
                region_id: id,
                host_name: "192.0.2.1".into(),
                stun_only,
                ..DerpNode::default()
            }],
            ..DerpRegion::default()
        }
    }

    fn map(ids: &[(u32, bool)]) -> DerpMap {
        let mut m = DerpMap::default();
        for &(id, stun_only) in ids {
            m.regions.insert(id, region(id, stun_only));
        }
        m
    }

    fn answer(region: u32, server: &str, mapped: &str, ms: u64) -> StunAnswer {
        StunAnswer {
            region,
            server: server.parse().unwrap(),
            mapped: mapped.parse().unwrap(),
            latency: Duration::from_millis(ms),
        }
    }

    fn measured(stun: Vec<StunAnswer>) -> Measurements {
        Measurements {
            stun,
            ..Measurements::default()
        }
    }

    #[test]
    fn endpoints_are_mappings_and_interfaces_sorted_once() {
        let m = measured(vec![
            answer(1, "192.0.2.1:3478", "203.0.113.5:41641", 20),
            answer(1000, "192.0.2.9:3478", "203.0.113.5:41641", 25),
        ]);
        let local = ["10.0.0.2:41641".parse().unwrap()];
        let r = after_round(&map(&[(1, false), (1000, true)]), 1, 2, &m, local);
        assert_eq!(
            r.endpoints,
            vec![
                "10.0.0.2:41641".parse().unwrap(),
                "203.0.113.5:41641".parse().unwrap()
            ]
        );
        assert_eq!(
            r.info.endpoints,
            vec!["10.0.0.2:41641", "203.0.113.5:41641"]
        );
        assert_eq!(
            r.verdict,
            StunVerdict {
                mapping_varies: Some(false),
                answered: Some(true)
            }
        );
        assert_eq!(r.info.mapping_varies_by_dest_ip, Some(false));
        assert_eq!(r.info.derp_latency.get("1-v4"), Some(&0.02));
        assert_eq!(r.home, 1);
    }

    #[test]
    fn home_moves_only_when_the_current_one_was_measured_and_much_slower() {
        let m3 = map(&[(1, false), (2, false)]);
        // 2 is home, measured at 100 ms; 1 answers at 20 ms: move.
        let slow_home = measured(vec![
            answer(1, "192.0.2.1:3478", "203.0.113.5:1", 20),
            answer(2, "192.0.2.2:3478", "203.0.113.5:1", 100),
        ]);
        let r = after_round(&m3, 2, 2, &slow_home, []);
        assert_eq!(r.home, 1);
        assert_eq!(r.info.preferred_derp, 1);
        // 2 at 25 ms: sticky, stays.
        let close = measured(vec![
            answer(1, "192.0.2.1:3478", "203.0.113.5:1", 20),
            answer(2, "192.0.2.2:3478", "203.0.113.5:1", 25),
        ]);
        assert_eq!(after_round(&m3, 2, 2, &close, []).home, 2);
        // Home 2 not measured this round (no STUN there, or no answer): stays.
        let only_1 = measured(vec![answer(1, "192.0.2.1:3478", "203.0.113.5:1", 1)]);
        assert_eq!(after_round(&m3, 2, 2, &only_1, []).home, 2);
    }

    #[test]
    fn no_answers_or_no_servers_say_so() {
        let m = map(&[(1, false)]);
        let none = after_round(&m, 1, 1, &Measurements::default(), []);
        assert_eq!(none.verdict.answered, Some(false));
        assert_eq!(none.verdict.mapping_varies, None);
        assert!(none.endpoints.is_empty());
        assert_eq!(none.home, 1);
        let no_servers = after_round(&m, 1, 0, &Measurements::default(), []);
        assert_eq!(no_servers.verdict.answered, None);
    }

    #[test]
    fn only_endpoints_home_and_nat_verdict_are_worth_republishing() {
        let base = NetInfo {
            endpoints: vec!["203.0.113.5:1".into()],
            preferred_derp: 1,
            derp_latency: [("1-v4".to_string(), 0.02)].into_iter().collect(),
            mapping_varies_by_dest_ip: Some(false),
        };
        assert!(base.differs_from(None));
        assert!(!base.differs_from(Some(&base)));
        let mut latency = base.clone();
        latency.derp_latency.insert("1-v4".into(), 0.5);
        assert!(!latency.differs_from(Some(&base)));
        let mut eps = base.clone();
        eps.endpoints.push("10.0.0.2:1".into());
        assert!(eps.differs_from(Some(&base)));
        let mut home = base.clone();
        home.preferred_derp = 2;
        assert!(home.differs_from(Some(&base)));
        let mut nat = base.clone();
        nat.mapping_varies_by_dest_ip = Some(true);
        assert!(nat.differs_from(Some(&base)));
    }

    #[test]
    fn first_home_is_the_only_region_or_measured_with_the_lowest_as_fallback() {
        assert_eq!(first_home_plan(&DerpMap::default()), None);
        // A STUN-only region is not a DERP region.
        assert_eq!(first_home_plan(&map(&[(1000, true)])), None);
        assert_eq!(
            first_home_plan(&map(&[(7, false), (1000, true)])),
            Some(FirstHome::Only(7))
        );
        assert_eq!(
            first_home_plan(&map(&[(7, false), (3, false)])),
            Some(FirstHome::Measure { fallback: 3 })
        );
        let mut report = Report::default();
        assert_eq!(first_home(&report, 3), 3);
        report.preferred_derp = Some(7);
        assert_eq!(first_home(&report, 3), 7);
    }
}
