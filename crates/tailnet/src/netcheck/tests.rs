//! The report decisions, tested on crafted measurements and maps.

#![allow(clippy::unwrap_used)]

use super::*;
use tether_proto::derpmap::HomeParams;

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

#[test]
fn per_server_plan_tries_every_server_alone_once_per_address() {
    let t = |region: u32, node: &str, addr: &str| StunTarget {
        region,
        node: node.into(),
        addr: sa(addr),
    };
    let targets = vec![
        t(1, "1a", "192.0.2.1:3478"),
        t(1, "1b", "192.0.2.2:3478"),
        // The same server twice (two nodes naming one address) is one server.
        t(1, "1c", "192.0.2.2:3478"),
        t(1000, "stun", "198.51.100.1:3478"),
    ];
    let plan = plan_stun_per_server(&targets);
    assert_eq!(plan.len(), 3 * STUN_TRIES as usize);
    for addr in ["192.0.2.1:3478", "192.0.2.2:3478", "198.51.100.1:3478"] {
        let tries: Vec<&PlannedProbe> = plan.iter().filter(|p| p.target.addr == sa(addr)).collect();
        assert_eq!(
            tries.iter().map(|p| p.delay).collect::<Vec<_>>(),
            vec![ms(0), STUN_RETRY_INTERVAL, STUN_RETRY_INTERVAL * 2]
        );
        // One group per server.
        assert!(tries.iter().all(|p| p.group == tries[0].group));
        assert_eq!(
            plan.iter().filter(|p| p.group == tries[0].group).count(),
            STUN_TRIES as usize
        );
    }
    assert!(plan.windows(2).all(|w| w[0].delay <= w[1].delay));
    assert!(plan_stun_per_server(&[]).is_empty());
}
