//! `tether netcheck`: a netcheck report against the server's DERP map, as JSON.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use tether_proto::api::{ConnectionInfo, route};
use tether_tailnet::netcheck::{self, Options, Report, Sockets};
use tokio::net::UdpSocket;

use crate::Globals;

/// `tether netcheck` flags.
#[derive(Debug, clap::Args)]
pub struct NetcheckArgs {}

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
pub async fn run(g: &Globals, _args: NetcheckArgs) -> Result<()> {
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
    let report = netcheck::run(&info.derp_map, sockets, &Options::default()).await;
    let out = Output {
        report,
        interface_mtus: interface_mtus(),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&out).context("could not format the report")?
    );
    Ok(())
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
