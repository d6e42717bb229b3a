//! `tether show WS [-o json]`: one workspace's agent (status, version, relay), the path
//! from this machine to it (joins the tailnet and pings, as `tether ping` does: p2p or
//! DERP, latency, why not direct), the server's own path to it, and the TCP ports
//! listening in the workspace (relayed by the server from the agent).

use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;
use tether_proto::api::{
    AgentStatus, ListeningPort, ListeningPorts, PathKind as ApiPathKind, ServerPath, Workspace,
    route,
};
use tether_proto::derpmap::DerpMap;
use tether_tailnet::{Conn, PathKind, Pong};

use crate::Globals;
use crate::cmd::ping::{fmt_latency, relay_reasons};
use crate::cmd::ssh::join;
use crate::cmd::workspaces::{Output, ago};

/// `tether show` flags.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Workspace name.
    pub workspace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// How long to wait for the WireGuard session before pinging.
const SESSION_WAIT: Duration = Duration::from_secs(10);
/// Pings sent at most, one second apart, until one comes back direct.
const PINGS: u32 = 3;
/// How long each ping waits.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What `-o json` prints.
#[derive(Debug, Serialize)]
struct Shown {
    workspace: Workspace,
    /// The path from this machine; null when the agent is not connected or did not answer.
    path: Option<ServerPath>,
    /// Why `path` is null, when the agent is connected.
    path_error: Option<String>,
    listening_ports: Option<Vec<ListeningPort>>,
    /// Why the ports could not be listed.
    listening_ports_error: Option<String>,
}

fn region_name(map: &DerpMap, region: u32) -> String {
    map.regions
        .get(&region)
        .map(|r| {
            if r.region_name.is_empty() {
                r.region_code.clone()
            } else {
                r.region_name.clone()
            }
        })
        .unwrap_or_else(|| format!("region {region}"))
}

/// Pings `agent` until a pong comes back direct (at most [`PINGS`]); the last pong.
async fn probe(conn: &Conn, agent: uuid::Uuid) -> Option<Pong> {
    conn.wait_session(agent, SESSION_WAIT).await;
    let mut best = None;
    for i in 0..PINGS {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Ok(p) = conn.ping(agent, PING_TIMEOUT).await {
            let direct = matches!(p.via, PathKind::Direct { .. });
            best = Some(p);
            if direct {
                break;
            }
        }
    }
    best
}

/// The path from here as the workspace JSON's `server_path` has it.
fn path_from(conn: &Conn, agent: uuid::Uuid, pong: &Pong) -> ServerPath {
    let latency_ms = Some((pong.latency.as_secs_f64() * 100_000.0).round() / 100.0);
    match pong.via {
        PathKind::Direct { addr } => ServerPath {
            kind: ApiPathKind::Direct,
            latency_ms,
            derp_region: None,
            endpoint: Some(addr.to_string()),
            reason: None,
        },
        PathKind::Derp { region } => {
            let map = conn.derp_map();
            ServerPath {
                kind: ApiPathKind::Derp,
                latency_ms,
                derp_region: Some(region_name(&map, region)),
                endpoint: None,
                reason: Some(relay_reasons(&conn.diagnostics(agent), &map).join("; ")),
            }
        }
    }
}

/// `p2p via 1.2.3.4:41641, 2ms` or `DERP (tether embedded relay), 40ms`.
fn describe(p: &ServerPath) -> String {
    let how = match (p.kind, &p.endpoint, &p.derp_region) {
        (ApiPathKind::Direct, Some(e), _) => format!("p2p via {e}"),
        (ApiPathKind::Direct, None, _) => "p2p".to_string(),
        (ApiPathKind::Derp, _, Some(r)) => format!("DERP ({r})"),
        (ApiPathKind::Derp, _, None) => "DERP".to_string(),
    };
    match p.latency_ms {
        Some(ms) => format!(
            "{how}, {}",
            fmt_latency(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        ),
        None => how,
    }
}

/// The text form.
fn render(s: &Shown) -> String {
    let w = &s.workspace;
    let mut out = format!("Workspace {} (owner {})\n", w.name, w.owner);
    let version = w
        .agent_version
        .as_deref()
        .map(|v| format!(", version {v}"))
        .unwrap_or_default();
    match w.status {
        AgentStatus::Connected => {
            out.push_str(&format!("  Agent:            connected{version}\n"))
        }
        AgentStatus::Disconnected => out.push_str(&format!(
            "  Agent:            disconnected, last seen {}\n",
            ago(w.last_seen_at, Utc::now())
        )),
    }
    if let Some(r) = &w.relay {
        out.push_str(&format!(
            "  Relay:            {} (region {})\n",
            if r.region_name.is_empty() {
                &r.region_code
            } else {
                &r.region_name
            },
            r.region_id
        ));
    }
    if w.status == AgentStatus::Disconnected {
        return out;
    }
    match (&s.path, &s.path_error) {
        (Some(p), _) => {
            out.push_str(&format!("  Path from here:   {}\n", describe(p)));
            if let Some(why) = &p.reason {
                out.push_str(&format!("    not direct because {why}\n"));
            }
        }
        (None, Some(e)) => out.push_str(&format!("  Path from here:   unknown: {e}\n")),
        (None, None) => {}
    }
    match &w.server_path {
        Some(p) => out.push_str(&format!("  Server path:      {}\n", describe(p))),
        None => out.push_str("  Server path:      no tunnel yet\n"),
    }
    match (&s.listening_ports, &s.listening_ports_error) {
        (Some(ports), _) if ports.is_empty() => {
            out.push_str("  Listening ports:  none\n");
        }
        (Some(ports), _) => {
            out.push_str("  Listening ports:\n");
            let mut sorted = ports.clone();
            sorted.sort_by_key(|p| p.port);
            let width = sorted
                .iter()
                .map(|p| p.process_name.len())
                .max()
                .unwrap_or(0)
                .max("PROCESS".len());
            out.push_str(&format!("    PORT   {:<width$}  NETWORK\n", "PROCESS"));
            for p in sorted {
                let name = if p.process_name.is_empty() {
                    "-"
                } else {
                    &p.process_name
                };
                out.push_str(&format!(
                    "    {:<5}  {name:<width$}  {}\n",
                    p.port, p.network
                ));
            }
        }
        (None, Some(e)) => out.push_str(&format!("  Listening ports:  unknown: {e}\n")),
        (None, None) => {}
    }
    out
}

/// Runs `tether show`.
pub async fn run(g: &Globals, args: ShowArgs) -> Result<()> {
    let api = g.client()?;
    let path = route::workspace(&args.workspace)?;
    let workspace: Workspace = api.get(&path).await?;
    let mut shown = Shown {
        workspace,
        path: None,
        path_error: None,
        listening_ports: None,
        listening_ports_error: None,
    };
    if shown.workspace.status == AgentStatus::Connected {
        let agent = shown.workspace.agent_id;
        let ports_path = route::agent_listening_ports(agent);
        let ports = api.get::<ListeningPorts>(&ports_path);
        let here = async {
            let conn = join(g, &api).await?;
            let result = match conn.tunnel_to(agent).await {
                Ok(_) => match probe(&conn, agent).await {
                    Some(pong) => Ok(path_from(&conn, agent, &pong)),
                    None => Err("the agent did not answer any ping".to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            conn.close().await;
            anyhow::Ok(result)
        };
        let (ports, here) = tokio::join!(ports, here);
        match here? {
            Ok(p) => shown.path = Some(p),
            Err(e) => shown.path_error = Some(e),
        }
        match ports {
            Ok(p) => shown.listening_ports = Some(p.ports),
            Err(e) => shown.listening_ports_error = Some(e.to_string()),
        }
        // By now the server has had a moment to find its own path to the agent.
        if let Ok(w) = api.get::<Workspace>(&path).await {
            shown.workspace = w;
        }
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
        Output::Table => print!("{}", render(&shown)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(status: AgentStatus) -> Workspace {
        Workspace {
            id: uuid::Uuid::nil(),
            name: "dev".into(),
            owner: "alice".into(),
            agent_id: uuid::Uuid::nil(),
            status,
            last_seen_at: None,
            relay: None,
            created_at: Utc::now(),
            agent_version: Some("0.1.0".into()),
            server_path: Some(ServerPath {
                kind: ApiPathKind::Direct,
                latency_ms: Some(0.5),
                derp_region: None,
                endpoint: Some("198.18.0.2:41641".into()),
                reason: None,
            }),
        }
    }

    #[test]
    fn text_form() {
        let shown = Shown {
            workspace: ws(AgentStatus::Connected),
            path: Some(ServerPath {
                kind: ApiPathKind::Derp,
                latency_ms: Some(42.0),
                derp_region: Some("tether embedded relay".into()),
                endpoint: None,
                reason: Some("UDP is blocked".into()),
            }),
            path_error: None,
            listening_ports: Some(vec![
                ListeningPort {
                    process_name: "python3".into(),
                    network: "tcp".into(),
                    port: 8000,
                },
                ListeningPort {
                    process_name: String::new(),
                    network: "tcp".into(),
                    port: 22,
                },
            ]),
            listening_ports_error: None,
        };
        assert_eq!(
            render(&shown),
            concat!(
                "Workspace dev (owner alice)\n",
                "  Agent:            connected, version 0.1.0\n",
                "  Path from here:   DERP (tether embedded relay), 42ms\n",
                "    not direct because UDP is blocked\n",
                "  Server path:      p2p via 198.18.0.2:41641, 500µs\n",
                "  Listening ports:\n",
                "    PORT   PROCESS  NETWORK\n",
                "    22     -        tcp\n",
                "    8000   python3  tcp\n",
            )
        );
        let off = Shown {
            workspace: ws(AgentStatus::Disconnected),
            path: None,
            path_error: None,
            listening_ports: None,
            listening_ports_error: None,
        };
        assert_eq!(
            render(&off),
            "Workspace dev (owner alice)\n  Agent:            disconnected, last seen never\n"
        );
    }
}
