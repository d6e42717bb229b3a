//! `tether netcheck`'s default report for people against a real server with two extra
//! STUN servers on loopback: the facts of the JSON report, in lines, regions fastest first.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use tether_testing::{TestServer, Tether};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// Milliseconds of a latency cell (`0.412ms`, `29.3ms`, `142ms`).
fn ms(cell: &str) -> f64 {
    cell.strip_suffix("ms")
        .unwrap_or_else(|| panic!("{cell:?}"))
        .parse()
        .unwrap()
}

#[test]
fn the_default_report_is_for_people_and_json_is_one_flag_away() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async {
        let bind = || tether_stun::Server::bind("127.0.0.1:0".parse().unwrap());
        (bind().await.unwrap().spawn(), bind().await.unwrap().spawn())
    });
    let extra = format!("{},{}", a.local_addr(), b.local_addr());
    let srv = TestServer::start(&["--derp-server-stun-addresses", &extra]);
    let cfg = TETHER.first_user(&srv);

    let out = TETHER.run(&cfg, &["netcheck"]);
    println!("{}", out.stdout);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(serde_json::from_str::<Value>(&out.stdout).is_err());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "Report:");
    assert_eq!(lines[1], "  * UDP: yes");
    assert!(
        lines[2].starts_with("  * IPv4: yes, 127.0.0.1:"),
        "{}",
        lines[2]
    );
    assert!(lines[3].starts_with("  * IPv6: "), "{}", lines[3]);
    assert_eq!(lines[4], "  * Hard NAT (MappingVariesByDestIP): no");
    assert_eq!(
        lines[5],
        "  * Home DERP region: 999 (tether embedded relay)"
    );
    assert_eq!(lines[6], "  * DERP latency:");
    let regions: Vec<&str> = lines[7..]
        .iter()
        .take_while(|l| l.starts_with("      - "))
        .copied()
        .collect();
    assert_eq!(regions.len(), 3, "{}", out.stdout);
    assert!(
        regions
            .iter()
            .any(|r| r.contains("999 (tether embedded relay)")),
        "{regions:?}"
    );
    let latencies: Vec<f64> = regions
        .iter()
        .map(|r| ms(r.split_whitespace().last().unwrap()))
        .collect();
    assert!(
        latencies.windows(2).all(|w| w[0] <= w[1]),
        "not fastest first: {regions:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  * Interface MTUs: ") && l.contains("lo ")),
        "{}",
        out.stdout
    );

    // The same facts as JSON.
    let out = TETHER.run(&cfg, &["netcheck", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["UDP"], true);
    assert_eq!(report["MappingVariesByDestIP"], false);
    assert_eq!(report["PreferredDERP"], 999);
    assert_eq!(report["RegionLatency"].as_object().unwrap().len(), 3);

    let out = TETHER.run(&cfg, &["netcheck", "--format", "yaml"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("human") && out.stderr.contains("json"),
        "{}",
        out.stderr
    );
    rt.block_on(async {
        a.shutdown().await;
        b.shutdown().await;
    });
}
