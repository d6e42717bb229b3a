use proptest::prelude::*;

use super::*;

/// A trimmed copy of the shape of Tailscale's published default map.
const TAILSCALE_SHAPE: &str = r#"{
  "Regions": {
    "1": {"RegionID": 1, "RegionCode": "nyc", "RegionName": "New York City",
          "Latitude": 40.71, "Longitude": -74.0,
          "Nodes": [{"Name": "1f", "RegionID": 1, "HostName": "derp1f.example.net",
                     "IPv4": "192.0.2.1", "IPv6": "2001:db8::1", "CanPort80": true}]},
    "2": {"RegionID": 2, "RegionCode": "sfo", "RegionName": "San Francisco",
          "Nodes": [{"Name": "2d", "RegionID": 2, "HostName": "derp2d.example.net", "STUNPort": -1}]}
  },
  "HomeParams": {"RegionScore": {"2": 1.5}},
  "SomeFutureField": true
}"#;

#[test]
fn parses_tailscale_shape() {
    let m = DerpMap::from_json(TAILSCALE_SHAPE.as_bytes()).expect("parse");
    assert_eq!(m.regions.len(), 2);
    let nyc = &m.regions[&1];
    assert_eq!(nyc.region_code, "nyc");
    assert_eq!(nyc.nodes[0].stun_port(), Some(3478));
    assert_eq!(
        nyc.nodes[0].derp_url(),
        "https://derp1f.example.net:443/derp"
    );
    assert_eq!(m.regions[&2].nodes[0].stun_port(), None);
    assert_eq!(
        m.home_params.as_ref().map(|h| h.region_score[&2]),
        Some(1.5)
    );
}

#[test]
fn accepts_other_key_casings_and_roundtrips() {
    let m: DerpMap = serde_json::from_str(
        r#"{"regions":{"999":{"regionID":999,"regionCode":"tether","nodes":[{"name":"999b","hostName":"127.0.0.1","derpPort":3000,"forceHTTP":true,"stunPort":-1}]}}}"#,
    )
    .expect("parse");
    let n = &m.regions[&999].nodes[0];
    assert_eq!(n.derp_url(), "http://127.0.0.1:3000/derp");
    let back: DerpMap = serde_json::from_str(&serde_json::to_string(&m).expect("ser")).expect("de");
    assert_eq!(back, m);
}

#[test]
fn node_helpers_follow_the_defaults() {
    let n = DerpNode {
        host_name: "::1".into(),
        ..Default::default()
    };
    assert_eq!(n.stun_port(), Some(DEFAULT_STUN_PORT));
    assert_eq!(n.derp_port(), DEFAULT_DERP_PORT);
    assert_eq!(n.derp_url(), "https://[::1]:443/derp");
    let http = DerpNode {
        host_name: "relay.example".into(),
        force_http: true,
        stun_port: 70_000,
        ..Default::default()
    };
    assert_eq!(http.stun_port(), None);
    assert_eq!(http.derp_url(), "http://relay.example:80/derp");
    let insecure = DerpNode {
        host_name: "127.0.0.1".into(),
        insecure_for_tests: true,
        derp_port: 80,
        ..Default::default()
    };
    assert!(insecure.uses_http());
    assert!(insecure.derp_url().ends_with(DERP_PATH));
}

#[test]
fn only_regions_with_a_derp_node_count() {
    let m: DerpMap = serde_json::from_str(
        r#"{"Regions":{"1":{"RegionID":1,"Nodes":[{"HostName":"a","STUNOnly":true}]},"2":{"RegionID":2,"Nodes":[{"HostName":"b"}]},"3":{"RegionID":3}}}"#,
    )
    .expect("parse");
    assert_eq!(m.derp_region_ids().collect::<Vec<_>>(), vec![2]);
}

#[test]
fn a_region_key_that_is_not_a_number_is_an_error() {
    let e = DerpMap::from_json(br#"{"Regions":{"nyc":{"RegionID":1}}}"#).expect_err("bad key");
    assert!(e.to_string().contains("not a region ID"), "{e}");
}

/// Coordinates and scores are short decimals, which JSON carries exactly.
fn arb_decimal() -> impl Strategy<Value = f64> {
    (-18_000i32..18_000).prop_map(|c| f64::from(c) / 100.0)
}

fn arb_node() -> impl Strategy<Value = DerpNode> {
    (
        (
            ".{0,6}",
            any::<u32>(),
            ".{0,12}",
            ".{0,6}",
            ".{0,6}",
            ".{0,6}",
        ),
        (
            any::<i32>(),
            any::<bool>(),
            any::<i32>(),
            any::<bool>(),
            ".{0,6}",
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (name, region_id, host_name, cert_name, ipv4, ipv6),
                (stun_port, stun_only, derp_port, insecure, stun_test_ip, can_port_80, force_http),
            )| DerpNode {
                name,
                region_id,
                host_name,
                cert_name,
                ipv4,
                ipv6,
                stun_port,
                stun_only,
                derp_port,
                insecure_for_tests: insecure,
                stun_test_ip,
                can_port_80,
                force_http,
            },
        )
}

fn arb_region() -> impl Strategy<Value = DerpRegion> {
    (
        any::<u32>(),
        ".{0,6}",
        ".{0,12}",
        arb_decimal(),
        arb_decimal(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(arb_node(), 0..3),
    )
        .prop_map(
            |(region_id, region_code, region_name, latitude, longitude, avoid, nmnh, nodes)| {
                DerpRegion {
                    region_id,
                    region_code,
                    region_name,
                    latitude,
                    longitude,
                    avoid,
                    no_measure_no_home: nmnh,
                    nodes,
                }
            },
        )
}

/// Any DERP map, also for the coordination messages that carry one.
pub(crate) fn arb_map() -> impl Strategy<Value = DerpMap> {
    (
        prop::collection::btree_map(any::<u32>(), arb_region(), 0..3),
        prop::option::of(
            prop::collection::btree_map(any::<u32>(), arb_decimal(), 0..3)
                .prop_map(|region_score| HomeParams { region_score }),
        ),
        any::<bool>(),
    )
        .prop_map(|(regions, home_params, omit_default_regions)| DerpMap {
            regions,
            home_params,
            omit_default_regions,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn maps_roundtrip(map in arb_map()) {
        let text = serde_json::to_vec(&map).expect("ser");
        prop_assert_eq!(DerpMap::from_json(&text).expect("de"), map);
    }

    #[test]
    fn mutated_maps_never_panic(
        map in arb_map(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = serde_json::to_vec(&map).expect("ser");
        prop_assert!(DerpMap::from_json(&bytes[..cut.index(bytes.len())]).is_err());
        for (i, b) in &flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b | 1;
        }
        // Any answer will do, as long as it is one: a parsed map keeps its helpers total.
        if let Ok(m) = DerpMap::from_json(&bytes) {
            for n in m.regions.values().flat_map(|r| &r.nodes) {
                prop_assert!(n.derp_port() > 0);
                prop_assert!(n.derp_url().ends_with(DERP_PATH));
            }
        }
    }
}
