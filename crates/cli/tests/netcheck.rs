//! `tether netcheck` against a real server: STUN through the built-in server on
//! loopback, and hard-NAT detection with two extra STUN servers the test runs.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use tether_testing::{TestServer, Tether};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// Runs `tether netcheck --format json` and parses its JSON.
fn netcheck(srv: &TestServer) -> Value {
    let cfg = TETHER.first_user(srv);
    let out = TETHER.run(&cfg, &["netcheck", "--format", "json"]);
    assert_eq!(out.code, 0, "netcheck failed: {}", out.stderr);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("netcheck printed no JSON ({e}): {}", out.stdout))
}

/// The GlobalV4 field as an address on 127.0.0.1 with a real port.
fn assert_loopback_mapping(report: &Value) {
    let global: std::net::SocketAddr = report["GlobalV4"]
        .as_str()
        .unwrap_or_else(|| panic!("no GlobalV4: {report}"))
        .parse()
        .unwrap();
    assert_eq!(global.ip().to_string(), "127.0.0.1", "{report}");
    assert_ne!(global.port(), 0, "{report}");
}

#[test]
fn netcheck_reports_udp_mapping_and_home_region() {
    let srv = TestServer::start(&[]);
    let report = netcheck(&srv);
    assert_eq!(report["UDP"], true, "{report}");
    assert_eq!(report["IPv4"], true, "{report}");
    assert_loopback_mapping(&report);
    assert_eq!(report["PreferredDERP"], 999, "{report}");
    assert!(
        report["RegionLatency"]["999"].as_f64().is_some(),
        "no latency for region 999: {report}"
    );
    // Only the built-in STUN server answered: one server cannot show a varying mapping.
    assert_eq!(report["MappingVariesByDestIP"], Value::Null, "{report}");
    assert!(report["InterfaceMTUs"].is_object(), "{report}");
}

#[test]
fn netcheck_compares_mappings_from_several_stun_servers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async {
        let bind = || tether_stun::Server::bind("127.0.0.1:0".parse().unwrap());
        (bind().await.unwrap().spawn(), bind().await.unwrap().spawn())
    });
    let extra = format!("{},{}", a.local_addr(), b.local_addr());
    let srv = TestServer::start(&["--derp-server-stun-addresses", &extra]);
    let report = netcheck(&srv);

    assert_eq!(report["UDP"], true, "{report}");
    assert_loopback_mapping(&report);
    // Three STUN servers saw the same socket on loopback: one mapping, an easy NAT.
    assert_eq!(report["MappingVariesByDestIP"], false, "{report}");
    // The extra servers really took part...
    assert!(a.stats().answered() >= 1, "first extra STUN server unused");
    assert!(b.stats().answered() >= 1, "second extra STUN server unused");
    let latency = report["RegionLatency"].as_object().unwrap();
    assert!(latency.len() >= 3, "{report}");
    // ...but STUN-only regions never become home.
    assert_eq!(report["PreferredDERP"], 999, "{report}");
    rt.block_on(async {
        a.shutdown().await;
        b.shutdown().await;
    });
}
