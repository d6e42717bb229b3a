//! Tailnet endpoints: the DERP map, connection info, and the two coordination
//! WebSockets (agents by agent token, clients by session token).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use chrono::Utc;
use tether_coord::Role;
use tether_coord::limits;
use tether_proto::api::{BROWSER_ONLY_MESSAGE, ConnectionInfo, route};
use tether_proto::coord as proto;
use tether_proto::derpmap::DerpMap;

use super::auth::{AgentAuth, Session, SessionUser};
use super::error::ApiError;
use crate::coordinate::{ClientSession, Hub, PeerEvent, SessionTag};
use crate::state::AppState;

/// `GET /api/v2/derp-map`: the effective map.
pub async fn derp_map(State(state): State<AppState>) -> Json<DerpMap> {
    Json(state.hub.read(|c| c.derp_map().clone()))
}

fn info(state: &AppState) -> ConnectionInfo {
    ConnectionInfo {
        derp_map: state.hub.read(|c| c.derp_map().clone()),
        derp_force_websockets: state.derp_force_websockets,
        disable_direct_connections: state.block_direct,
    }
}

/// Refuses users' tailnet connections on a browser-only deployment.
fn check_not_browser_only(state: &AppState) -> Result<(), ApiError> {
    if state.browser_only {
        return Err(ApiError::conflict(BROWSER_ONLY_MESSAGE));
    }
    Ok(())
}

/// `GET /api/v2/tailnet/connection` for clients (409 when browser-only).
pub async fn connection_info(
    State(state): State<AppState>,
    SessionUser(_): SessionUser,
) -> Result<Json<ConnectionInfo>, ApiError> {
    check_not_browser_only(&state)?;
    Ok(Json(info(&state)))
}

/// `GET /api/v2/workspaceagents/me/connection` for agents.
pub async fn agent_connection_info(
    State(state): State<AppState>,
    AgentAuth(_): AgentAuth,
) -> Json<ConnectionInfo> {
    Json(info(&state))
}

fn check_version(q: &HashMap<String, String>) -> Result<(), ApiError> {
    let v = q.get(route::VERSION_PARAM).ok_or_else(|| {
        ApiError::bad_request(format!(
            "The coordination request lacks ?version=; this server speaks {}.",
            proto::VERSION
        ))
    })?;
    proto::check_version(v).map_err(ApiError::bad_request)
}

/// A peer's messages are bounded by the protocol's own limit, also while fragmented,
/// instead of the WebSocket library's 64 MiB.
fn limit(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(limits::MAX_REQUEST_BYTES)
        .max_frame_size(limits::MAX_REQUEST_BYTES)
}

/// `GET /api/v2/tailnet/coordinate?version=1.0` (WebSocket): a client's coordination
/// (409 when browser-only), lasting as long as the session it was opened with.
pub async fn client_coordinate(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_not_browser_only(&state)?;
    check_version(&q)?;
    let ws = limit(ws);
    let hub = state.hub.clone();
    let role = Role::Client {
        id: Hub::new_client_id(),
        user: session.user.id,
    };
    let session = ClientSession {
        tag: SessionTag {
            user: session.user.id,
            token_hash: session.token_hash,
            expires_at: session.expires_at,
        },
        store: state.store.clone(),
    };
    Ok(ws.on_upgrade(move |socket| async move {
        hub.serve(socket, role, Some(session), |_| {}).await;
    }))
}

/// The version in a `User-Agent: tether/<version>`, if it looks like one.
fn tether_version(headers: &HeaderMap) -> Option<String> {
    let ua = headers.get(header::USER_AGENT)?.to_str().ok()?;
    let v = ua.strip_prefix("tether/")?.split_whitespace().next()?;
    let plausible = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'));
    plausible.then(|| v.to_owned())
}

/// `GET /api/v2/workspaceagents/me/coordinate?version=1.0` (WebSocket): an agent's coordination.
pub async fn agent_coordinate(
    State(state): State<AppState>,
    AgentAuth(ws_row): AgentAuth,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_version(&q)?;
    let ws = limit(ws);
    if let Some(version) = tether_version(&headers) {
        state
            .agent_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ws_row.agent_id, version);
    }
    let hub = state.hub.clone();
    let store = state.store.clone();
    let agent_id = ws_row.agent_id;
    if let Err(e) = store
        .record_agent_seen(agent_id, Utc::now(), ws_row.last_relay)
        .await
    {
        tracing::warn!(error = %e, "could not record agent connect");
    }
    tracing::info!(workspace = %ws_row.name, owner = %ws_row.owner_username, "agent connected");
    Ok(ws.on_upgrade(move |socket| async move {
        let name = ws_row.name.clone();
        let owner = ws_row.owner_username.clone();
        hub.serve(socket, Role::Agent { id: agent_id }, None, move |event| {
            let (relay, left) = match event {
                PeerEvent::Relay(r) => (Some(r), false),
                PeerEvent::Left { relay } => (relay, true),
            };
            if left {
                tracing::info!(workspace = %name, owner = %owner, "agent disconnected");
            }
            let store = store.clone();
            let relay = relay.or(ws_row.last_relay);
            tokio::spawn(async move {
                if let Err(e) = store.record_agent_seen(agent_id, Utc::now(), relay).await {
                    tracing::warn!(error = %e, "could not record agent last seen");
                }
            });
        })
        .await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_versions_come_from_the_user_agent() {
        let with = |ua: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::USER_AGENT, ua.parse().expect("header"));
            tether_version(&h)
        };
        assert_eq!(with("tether/0.1.0").as_deref(), Some("0.1.0"));
        assert_eq!(
            with("tether/1.2.3-rc.1 (linux)").as_deref(),
            Some("1.2.3-rc.1")
        );
        assert_eq!(with("curl/8.0"), None);
        assert_eq!(with("tether/"), None);
        assert_eq!(with("tether/<script>"), None);
        assert_eq!(with(&format!("tether/{}", "1".repeat(65))), None);
        assert_eq!(tether_version(&HeaderMap::new()), None);
    }
}
