//! Tailnet endpoints: the DERP map, connection info, and the two coordination
//! WebSockets (agents by agent token, clients by session token).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::response::Response;
use chrono::Utc;
use tether_coord::Role;
use tether_coord::limits;
use tether_proto::api::{ConnectionInfo, route};
use tether_proto::coord as proto;
use tether_proto::derpmap::DerpMap;

use super::auth::{AgentAuth, SessionUser};
use super::error::ApiError;
use crate::coordinate::{Hub, PeerEvent};
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

/// `GET /api/v2/tailnet/connection` for clients.
pub async fn connection_info(
    State(state): State<AppState>,
    SessionUser(_): SessionUser,
) -> Json<ConnectionInfo> {
    Json(info(&state))
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

/// `GET /api/v2/tailnet/coordinate?version=1.0` (WebSocket): a client's coordination.
pub async fn client_coordinate(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_version(&q)?;
    let ws = limit(ws);
    let hub = state.hub.clone();
    let role = Role::Client {
        id: Hub::new_client_id(),
        user: user.id,
    };
    Ok(ws.on_upgrade(move |socket| async move {
        hub.serve(socket, role, |_| {}).await;
    }))
}

/// `GET /api/v2/workspaceagents/me/coordinate?version=1.0` (WebSocket): an agent's coordination.
pub async fn agent_coordinate(
    State(state): State<AppState>,
    AgentAuth(ws_row): AgentAuth,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_version(&q)?;
    let ws = limit(ws);
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
        hub.serve(socket, Role::Agent { id: agent_id }, move |event| {
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
