//! `tether netcheck`: a netcheck report against the server's DERP map, for people by
//! default (UDP, IPv4/IPv6 with the mapped addresses, hard NAT, home region, latency per
//! region, fastest first) or as JSON with Tailscale's field names (`--format json`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use tether_proto::api::{ConnectionInfo, route};
use tether_proto::derpmap::DerpMap;
use tether_tailnet::ServerHeaders;
use tether_tailnet::netcheck::{self, Options, Report, Sockets};
use tokio::net::UdpSocket;

use crate::Globals;

/// `tether netcheck` flags.
#[derive(Debug, clap::Args)]
pub struct NetcheckArgs {
    /// `human` (a report to read) or `json` (Tailscale's field names, for scripts).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A report to read.
    Human,
    /// JSON.
    Json,
}

/// What `tether netcheck` prints.
#[derive(Debug, Serialize)]
struct Output {
    #[serde(flatten)]
    report: Report,
    /// Interface name → MTU, from `/sys/class/net` (empty where that does not exist).
    #[serde(rename = "InterfaceMTUs")]
    interface_mtus: BTreeMap<String, u32>,
}

/// Fetches the DERP map, measures from fresh UDP sockets and prints the report.
pub async fn run(g: &Globals, args: NetcheckArgs) -> Result<()> {
    let api = g.client()?;
    let info: ConnectionInfo = api
        .get(route::TAILNET_CONNECTION)
        .await
        .context("could not get the DERP map")?;
    if info.disable_direct_connections {
        eprintln!("note: this server disables direct connections; traffic will use DERP");
    }
    let v4 = UdpSocket::bind("0.0.0.0:0")
        .await
        .context("could not bind a UDP socket")?;
    // IPv6 is optional: a host without it still gets an IPv4 report.
    let v6 = UdpSocket::bind("[::]:0").await.ok();
    let sockets = Sockets {
        v4: Some(&v4),
        v6: v6.as_ref(),
    };
    let opts = Options {
        server_headers: ServerHeaders::new(&api.base, g.headers.clone()),
        ..Options::default()
    };
    let report = netcheck::run(&info.derp_map, sockets, &opts).await;
    let out = Output {
        report,
        interface_mtus: interface_mtus(),
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&out).context("could not format the report")?
        ),
        Format::Human => {
            for line in human(&out, &info.derp_map) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The report for people, after `tailscale netcheck`.
fn human(out: &Output, map: &DerpMap) -> Vec<String> {
    let r = &out.report;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let family = |answered: bool, can_send: bool, global: Option<std::net::SocketAddr>| match (
        answered, global,
    ) {
        (true, Some(a)) => format!("yes, {a}"),
        (true, None) => "yes".to_string(),
        (false, _) if can_send => "no answer".to_string(),
        (false, _) => "no".to_string(),
    };
    let name = |id: u32| match map.regions.get(&id) {
        Some(reg) if !reg.region_name.is_empty() => format!("{id} ({})", reg.region_name),
        Some(reg) if !reg.region_code.is_empty() => format!("{id} ({})", reg.region_code),
        _ => id.to_string(),
    };
    let mut lines = vec![
        "Report:".to_string(),
        format!("  * UDP: {}", yes_no(r.udp)),
        format!("  * IPv4: {}", family(r.ipv4, r.ipv4_can_send, r.global_v4)),
        format!("  * IPv6: {}", family(r.ipv6, r.ipv6_can_send, r.global_v6)),
        format!(
            "  * Hard NAT (MappingVariesByDestIP): {}",
            match r.mapping_varies_by_dest_ip {
                Some(true) =>
                    "yes: the public port changes with each destination, so direct connections will rarely work",
                Some(false) => "no",
                None => "unknown (fewer than two STUN servers of one family answered)",
            }
        ),
        format!(
            "  * Home DERP region: {}",
            r.preferred_derp.map_or_else(|| "none".to_string(), name)
        ),
        "  * DERP latency:".to_string(),
    ];
    let mut measured: Vec<(u32, std::time::Duration)> =
        r.region_latency.iter().map(|(id, d)| (*id, *d)).collect();
    measured.sort_by_key(|(id, d)| (*d, *id));
    let labels: Vec<String> = measured.iter().map(|(id, _)| name(*id)).collect();
    let unmeasured: Vec<String> = map
        .regions
        .keys()
        .filter(|id| !r.region_latency.contains_key(id))
        .map(|id| name(*id))
        .collect();
    let width = labels
        .iter()
        .chain(&unmeasured)
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (label, (_, d)) in labels.iter().zip(&measured) {
        lines.push(format!("      - {label:<width$}  {}", fmt_ms(*d)));
    }
    for label in &unmeasured {
        lines.push(format!("      - {label:<width$}  no answer"));
    }
    if r.region_latency.is_empty() && unmeasured.is_empty() {
        lines.push("      (no regions)".to_string());
    }
    if !out.interface_mtus.is_empty() {
        let mtus: Vec<String> = out
            .interface_mtus
            .iter()
            .map(|(i, m)| format!("{i} {m}"))
            .collect();
        lines.push(format!("  * Interface MTUs: {}", mtus.join(", ")));
    }
    lines
}

/// `0.412ms`, `29.3ms`, `142ms`.
fn fmt_ms(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.3}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// Reads `/sys/class/net/*/mtu`; silently empty where that does not exist.
fn interface_mtus() -> BTreeMap<String, u32> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return BTreeMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let mtu = std::fs::read_to_string(e.path().join("mtu")).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                mtu.trim().parse().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_report_to_read_fastest_region_first() {
        let map: DerpMap = serde_json::from_str(
            r#"{"Regions":{
                "999":{"RegionID":999,"RegionCode":"tether","RegionName":"tether embedded relay","Nodes":[]},
                "1000":{"RegionID":1000,"RegionCode":"stun1","Nodes":[]},
                "1001":{"RegionID":1001,"RegionCode":"stun2","RegionName":"","Nodes":[]},
                "7":{"RegionID":7,"RegionCode":"","Nodes":[]}}}"#,
        )
        .expect("DERP map");
        let mut report = Report {
            udp: true,
            ipv4: true,
            ipv4_can_send: true,
            ipv6_can_send: true,
            mapping_varies_by_dest_ip: Some(false),
            global_v4: Some("198.51.100.7:41641".parse().expect("addr")),
            preferred_derp: Some(999),
            ..Report::default()
        };
        report
            .region_latency
            .insert(999, Duration::from_micros(2_412));
        report
            .region_latency
            .insert(1000, Duration::from_micros(412));
        report
            .region_latency
            .insert(1001, Duration::from_micros(142_300));
        let out = Output {
            report,
            interface_mtus: [("eth0".to_string(), 1500), ("lo".to_string(), 65536)].into(),
        };
        assert_eq!(
            human(&out, &map),
            [
                "Report:",
                "  * UDP: yes",
                "  * IPv4: yes, 198.51.100.7:41641",
                "  * IPv6: no answer",
                "  * Hard NAT (MappingVariesByDestIP): no",
                "  * Home DERP region: 999 (tether embedded relay)",
                "  * DERP latency:",
                "      - 1000 (stun1)                 0.412ms",
                "      - 999 (tether embedded relay)  2.412ms",
                "      - 1001 (stun2)                 142ms",
                "      - 7                            no answer",
                "  * Interface MTUs: eth0 1500, lo 65536",
            ]
        );
        let nothing = Output {
            report: Report::default(),
            interface_mtus: BTreeMap::new(),
        };
        let lines = human(&nothing, &DerpMap::default());
        assert_eq!(lines[1], "  * UDP: no");
        assert_eq!(lines[2], "  * IPv4: no");
        assert!(lines[4].ends_with("unknown (fewer than two STUN servers of one family answered)"));
        assert_eq!(lines[5], "  * Home DERP region: none");
        assert_eq!(lines.last().map(String::as_str), Some("      (no regions)"));
    }
}
