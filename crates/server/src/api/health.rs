//! `/api/v2/debug/health`: database, DERP, STUN, coordinator and server-tailnet sections,
//! each with a severity and a stable code, so a minor caveat reads as a warning, not an
//! outage. The server-tailnet section is the server's own node (what the web terminal
//! goes through) and its path to each agent it has a tunnel to.
//!
//! The report tells who is active (agents, clients, tunnels, their paths), so it is for
//! logged-in users only (any of them: the dashboard's health page shows it to everyone
//! who can log in); the public liveness probe is `/healthz`.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde_json::json;
use tether_proto::api::{BuildInfo, HealthReport, HealthSection, PathKind, Severity};

use super::auth::SessionUser;
use crate::state::AppState;

/// Stable health codes.
pub mod code {
    /// The database did not answer.
    pub const DATABASE_UNREACHABLE: &str = "EDB01";
    /// The database answered slowly (over 500 ms).
    pub const DATABASE_SLOW: &str = "EDB02";
    /// The built-in relay is off (an external map is in use).
    pub const DERP_BUILTIN_DISABLED: &str = "EDERP01";
    /// Refreshing --derp-config-url failed; the last good map is in use.
    pub const DERP_MAP_REFRESH_FAILED: &str = "EDERP02";
    /// No region in the map has a STUN server: direct connections cannot be found.
    pub const STUN_NONE: &str = "ESTUN01";
    /// Direct connections are blocked by --block-direct-connections.
    pub const DIRECT_BLOCKED: &str = "ECOORD01";
    /// Users' tailnet connections are refused by --browser-only.
    pub const BROWSER_ONLY: &str = "ECOORD02";
    /// The server's tailnet node is still joining.
    pub const NODE_STARTING: &str = "ESTN01";
    /// The server's tailnet node could not join.
    pub const NODE_DOWN: &str = "ESTN02";
    /// The server's node is not admitted by its home DERP region right now.
    pub const NODE_DERP_DOWN: &str = "ESTN03";
    /// An agent with a tunnel did not answer the server's last ping.
    pub const AGENT_UNANSWERED: &str = "ESTN04";
}

fn ok(message: impl Into<String>, details: serde_json::Value) -> HealthSection {
    HealthSection {
        severity: Severity::Ok,
        code: None,
        message: message.into(),
        details,
    }
}

fn problem(
    severity: Severity,
    code: &str,
    message: impl Into<String>,
    details: serde_json::Value,
) -> HealthSection {
    HealthSection {
        severity,
        code: Some(code.into()),
        message: message.into(),
        details,
    }
}

/// `GET /api/v2/debug/health` (401 without a login).
pub async fn report(
    State(state): State<AppState>,
    SessionUser(_): SessionUser,
) -> Json<HealthReport> {
    let database =
        match tokio::time::timeout(std::time::Duration::from_secs(5), state.store.ping()).await {
            Ok(Ok(latency)) if latency.as_millis() > 500 => problem(
                Severity::Warning,
                code::DATABASE_SLOW,
                format!("The database answered in {} ms.", latency.as_millis()),
                json!({ "latency_ms": latency.as_secs_f64() * 1000.0 }),
            ),
            Ok(Ok(latency)) => ok(
                "The database answers.",
                json!({ "latency_ms": latency.as_secs_f64() * 1000.0 }),
            ),
            Ok(Err(e)) => problem(
                Severity::Error,
                code::DATABASE_UNREACHABLE,
                format!("The database is unreachable: {e}"),
                json!({}),
            ),
            Err(_) => problem(
                Severity::Error,
                code::DATABASE_UNREACHABLE,
                "The database did not answer within 5 s.",
                json!({}),
            ),
        };

    let map = state.hub.read(|c| c.derp_map().clone());
    let regions: Vec<_> = map
        .regions
        .values()
        .map(|r| json!({"id": r.region_id, "code": r.region_code, "name": r.region_name}))
        .collect();
    let refresh_error = state
        .derp_map_status
        .read()
        .ok()
        .and_then(|s| s.last_refresh_error.clone());
    let derp = match (&state.derp, refresh_error) {
        (_, Some(err)) => problem(
            Severity::Warning,
            code::DERP_MAP_REFRESH_FAILED,
            format!("Refreshing the DERP map failed; the last good map is in use: {err}"),
            json!({ "regions": regions }),
        ),
        (Some(server), None) => {
            let s = server.stats();
            ok(
                "The built-in DERP relay is serving.",
                json!({ "regions": regions, "clients": s.clients, "packets_forwarded": s.packets_forwarded,
                        "packets_dropped": s.packets_dropped, "refused_by_admission": s.refused_by_admission }),
            )
        }
        (None, None) => problem(
            Severity::Ok,
            code::DERP_BUILTIN_DISABLED,
            "The built-in DERP relay is off; clients use the configured DERP map.",
            json!({ "regions": regions }),
        ),
    };

    let stun_servers: Vec<String> = map
        .regions
        .values()
        .flat_map(|r| r.nodes.iter())
        .filter_map(|n| n.stun_port().map(|p| format!("{}:{p}", n.host_name)))
        .collect();
    let stun = if stun_servers.is_empty() {
        problem(
            Severity::Warning,
            code::STUN_NONE,
            "No STUN server is configured, so clients cannot discover direct paths; traffic is relayed.",
            json!({}),
        )
    } else {
        let builtin = state.stun.as_ref().map(|s| {
            let st = s.stats.snapshot();
            json!({ "address": s.addr.to_string(), "requests_answered": st.answered, "packets_ignored": st.ignored })
        });
        ok(
            "STUN is available.",
            json!({ "servers": stun_servers, "builtin": builtin }),
        )
    };

    let stats = state.hub.read(|c| c.stats());
    let details =
        json!({ "agents": stats.agents, "clients": stats.clients, "tunnels": stats.tunnels });
    let coordinator = if state.browser_only {
        problem(
            Severity::Ok,
            code::BROWSER_ONLY,
            "The coordinator is running; this deployment is browser-only (--browser-only): users' tailnet connections are refused, the web terminal works.",
            details,
        )
    } else if state.block_direct {
        problem(
            Severity::Ok,
            code::DIRECT_BLOCKED,
            "The coordinator is running; direct connections are blocked by --block-direct-connections.",
            details,
        )
    } else {
        ok("The coordinator is running.", details)
    };

    let server_tailnet = server_tailnet(&state);

    let severity = [
        database.severity,
        derp.severity,
        stun.severity,
        coordinator.severity,
        server_tailnet.severity,
    ]
    .into_iter()
    .max()
    .unwrap_or(Severity::Ok);
    Json(HealthReport {
        healthy: severity != Severity::Error,
        severity,
        time: Utc::now(),
        database,
        derp,
        stun,
        coordinator,
        server_tailnet,
        browser_only: state.browser_only,
    })
}

/// The server's own node and its path to each agent it has a tunnel to.
fn server_tailnet(state: &AppState) -> HealthSection {
    let r = state.node.report();
    let agents: Vec<_> = r
        .agents
        .iter()
        .map(|(agent, path)| match path {
            Some(p) => json!({
                "agent_id": agent,
                "path": if p.kind == PathKind::Direct { "p2p" } else { "DERP" },
                "latency_ms": p.latency_ms,
                "derp_region": p.derp_region,
                "endpoint": p.endpoint,
                "reason": p.reason,
            }),
            None => {
                json!({ "agent_id": agent, "path": null, "reason": "the agent is not connected" })
            }
        })
        .collect();
    let details = json!({
        "id": r.id,
        "ip": r.ip,
        "home_region": r.home_region,
        "home_derp_connected": r.home_derp_connected,
        "coordinator_connected": r.coordinator_connected,
        "idle_after_secs": state.node.idle_after().as_secs(),
        "browser_only": state.browser_only,
        "agents": agents,
    });
    if !r.up {
        return match r.error {
            Some(e) => problem(
                Severity::Error,
                code::NODE_DOWN,
                format!(
                    "The server's tailnet node could not join ({} attempts), so the web terminal cannot reach agents: {e}",
                    r.attempts
                ),
                details,
            ),
            None => problem(
                Severity::Warning,
                code::NODE_STARTING,
                "The server's tailnet node is joining.",
                details,
            ),
        };
    }
    if !r.home_derp_connected {
        return problem(
            Severity::Warning,
            code::NODE_DERP_DOWN,
            format!(
                "The server's tailnet node is not connected to its home DERP region {} now; it reconnects.",
                r.home_region.unwrap_or_default()
            ),
            details,
        );
    }
    let unanswered = r
        .agents
        .iter()
        .filter(|(_, p)| {
            p.as_ref()
                .and_then(|p| p.reason.as_deref())
                .is_some_and(|reason| reason.starts_with(crate::node::NO_PONG))
        })
        .count();
    if unanswered > 0 {
        return problem(
            Severity::Warning,
            code::AGENT_UNANSWERED,
            format!("{unanswered} agent(s) did not answer the server's last ping."),
            details,
        );
    }
    let direct = r
        .agents
        .iter()
        .filter(|(_, p)| p.as_ref().is_some_and(|p| p.kind == PathKind::Direct))
        .count();
    ok(
        format!(
            "The server's tailnet node is up, with tunnels to {} agent(s), {direct} of them direct (p2p).",
            r.agents.len()
        ),
        details,
    )
}

/// `GET /api/v2/buildinfo`.
pub async fn buildinfo() -> Json<BuildInfo> {
    Json(BuildInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        coordination_version: tether_proto::coord::VERSION.into(),
    })
}
