//! `tether ping WS [-n N] [-t TIMEOUT]`, after `coder ping`: disco pings to the
//! workspace's agent over the current best path, one line per pong, then a summary like
//! ping(8)'s (also after Ctrl-C: sent, received, loss, min/avg/max, paths), diagnostics
//! (home DERP region, coordination, the agent's node and endpoints, WireGuard handshake)
//! and a verdict that names why the connection is relayed when it is not direct.
//! The global `-v` adds the tailnet's debug log on stderr.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tether_proto::derpmap::DerpMap;
use tether_tailnet::{Diagnostics, PathKind, Pong, TailnetError, verdict};

use crate::Globals;
use crate::cmd::ssh::open_tunnel;

mod stats;

use stats::Stats;

/// `tether ping` flags.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// Workspace name.
    pub workspace: String,
    /// Number of pings to send, one second apart (Ctrl-C stops early; the summary follows).
    #[arg(short = 'n', long = "num", default_value_t = 5)]
    pub num: u32,
    /// How long to wait for each pong (e.g. `5s`, `500ms`, `1m`; a bare number is seconds).
    #[arg(short = 't', long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Time between two pings.
const INTERVAL: Duration = Duration::from_secs(1);
/// How long the first ping waits, at least, for the WireGuard session with the agent.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Runs `tether ping`; exits 0 if any pong arrived, 1 otherwise. Ctrl-C stops the pings
/// early; the summary and diagnostics follow all the same.
pub async fn run(g: &Globals, args: PingArgs) -> Result<i32> {
    let ws = args.workspace.as_str();
    let tunnel = open_tunnel(g, ws).await?;
    let agent = tunnel.workspace.agent_id;
    let map = tunnel.conn.derp_map();
    let start = Instant::now();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut stats = Stats::default();
    let mut did_p2p = false;
    let mut last_direct = false;
    // Without a session the pings below time out and the report says why.
    let waited = tokio::select! {
        _ = tunnel.wait_session(args.timeout.max(HANDSHAKE_WAIT)) => true,
        _ = &mut interrupted => false,
    };
    if waited {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..args.num {
            // A ping still waiting for its pong when Ctrl-C comes is not counted.
            let answer = tokio::select! {
                r = async {
                    ticks.tick().await;
                    tunnel.conn.ping(agent, args.timeout).await
                } => r,
                _ = &mut interrupted => break,
            };
            match answer {
                Ok(pong) => {
                    stats.answered(&pong);
                    last_direct = matches!(pong.via, PathKind::Direct { .. });
                    if last_direct && !did_p2p {
                        did_p2p = true;
                        println!("{}", established_line(start.elapsed()));
                    }
                    println!("{}", pong_line(ws, &pong, &map));
                }
                Err(TailnetError::Timeout { .. }) => {
                    stats.lost();
                    println!("ping to {ws} timed out");
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("could not ping workspace {ws}"));
                }
            }
        }
    }
    let any_pong = stats.received() > 0;
    println!();
    for line in stats.lines(ws, &map) {
        println!("{line}");
    }
    let diag = tunnel.conn.diagnostics(agent);
    println!();
    for line in report(ws, &diag, &map, any_pong, last_direct) {
        println!("{line}");
    }
    tunnel.conn.close().await;
    Ok(if any_pong { 0 } else { 1 })
}

/// Parses `5s`, `500ms`, `1m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?} is not a duration like 5s or 500ms")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!("{s:?} must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A latency as people read it: `412µs` below a millisecond, `42ms` below a second,
/// `1.234s` above.
pub fn fmt_latency(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", (d.as_micros() + 500) / 1000)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// `tether embedded relay` for a region of the map, else its code, else `region N`.
fn region_name(map: &DerpMap, region: u32) -> String {
    match map.regions.get(&region) {
        Some(r) if !r.region_name.is_empty() => r.region_name.clone(),
        Some(r) if !r.region_code.is_empty() => r.region_code.clone(),
        _ => format!("region {region}"),
    }
}

/// `pong from dev p2p via 127.0.0.1:41641 in 1ms` or
/// `pong from dev proxied via DERP(tether embedded relay) in 42ms`.
pub fn pong_line(ws: &str, pong: &Pong, map: &DerpMap) -> String {
    let via = match pong.via {
        PathKind::Direct { addr } => format!("p2p via {addr}"),
        PathKind::Derp { region } => format!("proxied via DERP({})", region_name(map, region)),
    };
    format!("pong from {ws} {via} in {}", fmt_latency(pong.latency))
}

/// `p2p connection established in 1.204s`.
pub fn established_line(since_start: Duration) -> String {
    format!("p2p connection established in {}", fmt_latency(since_start))
}

/// A duration in the largest whole unit: `3s`, `2m`, `1h`.
fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h", s / 3600)
    }
}

fn list(addrs: &[std::net::SocketAddr]) -> String {
    if addrs.is_empty() {
        "none".into()
    } else {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The diagnostics and the verdict printed after the pongs.
pub fn report(
    ws: &str,
    d: &Diagnostics,
    map: &DerpMap,
    any_pong: bool,
    direct: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let home = format!("{} ({})", d.home_region, region_name(map, d.home_region));
    if d.home_derp_connected {
        out.push(format!("✔ home DERP region: {home}, connected"));
    } else {
        out.push(format!("✘ home DERP region: {home}, not connected now"));
    }
    if d.node_sent {
        out.push(format!(
            "✔ sent our node to the coordinator (endpoints: {})",
            list(&d.local_endpoints)
        ));
    } else {
        out.push(
            "✘ our node is not with the coordinator (the coordination connection is down)".into(),
        );
    }
    match &d.peer {
        Some(p) => {
            out.push("✔ received the agent's node from the coordinator".into());
            out.push(format!(
                "    home DERP region: {} ({})",
                p.home_region,
                region_name(map, p.home_region)
            ));
            out.push(format!("    endpoints: {}", list(&p.endpoints)));
            match p.last_handshake {
                Some(age) => out.push(format!("✔ WireGuard handshake {} ago", fmt_age(age))),
                None => out.push("✘ no WireGuard handshake with the agent yet".into()),
            }
        }
        None => out.push("✘ the agent's node has not been received from the coordinator".into()),
    }
    out.push(String::new());
    if !any_pong {
        out.push(format!(
            "✘ {ws}'s agent did not answer any ping (timed out on every path)"
        ));
        return out;
    }
    if direct {
        out.push("✔ You are connected directly (p2p)".into());
        return out;
    }
    out.push("❗ You are connected via a DERP relay, not directly (p2p)".into());
    let reasons = relay_reasons(d, map);
    out.push(
        if reasons.len() == 1 {
            "   Likely reason:"
        } else {
            "   Likely reasons:"
        }
        .into(),
    );
    out.extend(reasons.into_iter().map(|r| format!("   - {r}")));
    out
}

/// Why the connection is relayed, as far as this side can tell (never empty).
pub fn relay_reasons(d: &Diagnostics, map: &DerpMap) -> Vec<String> {
    verdict::relay_reasons(
        d,
        map,
        verdict::Us {
            name: "this client",
            local_switch: "--disable-direct-connections or TETHER_DISABLE_DIRECT_CONNECTIONS",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_tailnet::PeerStatus;
    use uuid::Uuid;

    fn map() -> DerpMap {
        serde_json::from_str(
            r#"{"Regions":{"999":{"RegionID":999,"RegionCode":"tether","RegionName":"tether embedded relay",
                "Nodes":[{"Name":"999a","RegionID":999,"HostName":"127.0.0.1","STUNPort":3478,"DERPPort":3000,"ForceHTTP":true}]}}}"#,
        )
        .expect("DERP map")
    }

    fn diag() -> Diagnostics {
        Diagnostics {
            id: Uuid::from_u128(1),
            home_region: 999,
            home_derp_connected: true,
            coordinator_connected: true,
            node_sent: true,
            direct_disabled_by_server: false,
            direct_disabled_locally: false,
            udp_local: Some("0.0.0.0:40000".parse().expect("addr")),
            local_endpoints: vec!["127.0.0.1:40000".parse().expect("addr")],
            mapping_varies_by_dest_ip: None,
            stun_answered: Some(true),
            peer: Some(PeerStatus {
                current: PathKind::Derp { region: 999 },
                home_region: 999,
                has_disco: true,
                endpoints: vec!["127.0.0.1:41641".parse().expect("addr")],
                candidates: vec![],
                best_addr: None,
                last_handshake: Some(Duration::from_secs(3)),
                direct_blocked: false,
                mapping_varies_by_dest_ip: None,
            }),
        }
    }

    #[test]
    fn pong_lines() {
        let m = map();
        let derp = Pong {
            latency: Duration::from_micros(41_600),
            via: PathKind::Derp { region: 999 },
        };
        assert_eq!(
            pong_line("dev", &derp, &m),
            "pong from dev proxied via DERP(tether embedded relay) in 42ms"
        );
        let direct = Pong {
            latency: Duration::from_millis(1),
            via: PathKind::Direct {
                addr: "127.0.0.1:41641".parse().expect("addr"),
            },
        };
        assert_eq!(
            pong_line("dev", &direct, &m),
            "pong from dev p2p via 127.0.0.1:41641 in 1ms"
        );
        let unknown = Pong {
            latency: Duration::from_micros(250),
            via: PathKind::Derp { region: 7 },
        };
        assert_eq!(
            pong_line("dev", &unknown, &m),
            "pong from dev proxied via DERP(region 7) in 250µs"
        );
        assert_eq!(
            established_line(Duration::from_millis(1204)),
            "p2p connection established in 1.204s"
        );
        assert_eq!(fmt_latency(Duration::from_millis(999)), "999ms");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn direct_verdict_and_diagnostics() {
        let lines = report("dev", &diag(), &map(), true, true);
        assert_eq!(
            lines,
            vec![
                "✔ home DERP region: 999 (tether embedded relay), connected",
                "✔ sent our node to the coordinator (endpoints: 127.0.0.1:40000)",
                "✔ received the agent's node from the coordinator",
                "    home DERP region: 999 (tether embedded relay)",
                "    endpoints: 127.0.0.1:41641",
                "✔ WireGuard handshake 3s ago",
                "",
                "✔ You are connected directly (p2p)",
            ]
        );
    }

    #[test]
    fn relay_verdict_names_the_reasons() {
        let mut d = diag();
        d.direct_disabled_by_server = true;
        let lines = report("dev", &d, &map(), true, false);
        let tail = &lines[lines.len() - 3..];
        assert_eq!(
            tail,
            [
                "❗ You are connected via a DERP relay, not directly (p2p)",
                "   Likely reason:",
                "   - the server blocks direct connections (it runs with --block-direct-connections)",
            ]
        );
        d.direct_disabled_locally = true;
        assert_eq!(relay_reasons(&d, &map()).len(), 2);

        // Not blocked: what is missing is named.
        let mut d = diag();
        if let Some(p) = &mut d.peer {
            p.endpoints.clear();
        }
        let r = relay_reasons(&d, &map());
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("agent published no endpoints"), "{r:?}");
        let no_stun: DerpMap = serde_json::from_str(
            r#"{"Regions":{"999":{"RegionID":999,"RegionCode":"tether","RegionName":"tether embedded relay",
                "Nodes":[{"Name":"999a","RegionID":999,"HostName":"127.0.0.1","STUNPort":-1}]}}}"#,
        )
        .expect("DERP map");
        let r = relay_reasons(&diag(), &no_stun);
        assert!(r[0].contains("no STUN servers"), "{r:?}");
        // Everything looks fine: UDP or NAT trouble.
        let r = relay_reasons(&diag(), &map());
        assert!(r[0].contains("hard NAT"), "{r:?}");
        // Each side's own STUN verdict names the side behind the hard NAT.
        let with_nat = |client: Option<bool>, agent: Option<bool>| {
            let mut d = diag();
            d.mapping_varies_by_dest_ip = client;
            if let Some(p) = &mut d.peer {
                p.mapping_varies_by_dest_ip = agent;
            }
            relay_reasons(&d, &map())
        };
        let r = with_nat(Some(true), Some(false));
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].starts_with("this client is behind a hard NAT"),
            "{r:?}"
        );
        let r = with_nat(Some(false), Some(true));
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].starts_with("the agent is behind a hard NAT"), "{r:?}");
        let r = with_nat(Some(true), Some(true));
        assert_eq!(r.len(), 2, "{r:?}");
        let r = with_nat(Some(false), Some(false));
        assert!(r[0].contains("UDP is probably blocked"), "{r:?}");
        // No STUN answer at all: this side's UDP is blocked.
        let mut d = diag();
        d.stun_answered = Some(false);
        let r = relay_reasons(&d, &map());
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].starts_with("no STUN server answered this client"),
            "{r:?}"
        );

        // No pong at all, no handshake, no agent node.
        let mut d = diag();
        d.peer = None;
        d.node_sent = false;
        d.home_derp_connected = false;
        let lines = report("dev", &d, &map(), false, false);
        assert!(lines[0].starts_with("✘ home DERP region: 999"));
        assert!(lines[1].starts_with("✘ our node"));
        assert!(lines[2].starts_with("✘ the agent's node"));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("✘ dev's agent did not answer any ping (timed out on every path)")
        );
    }
}
