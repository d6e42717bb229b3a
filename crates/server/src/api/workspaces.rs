//! Workspaces: create (with a one-time agent token), list, show, delete. A workspace's
//! JSON carries its agent's live status and, while the server's node has a tunnel to
//! the agent (opened by a web terminal or a listening-ports request), the path.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use tether_proto::api::{
    AgentStatus, CreateWorkspaceRequest, CreateWorkspaceResponse, Relay, Workspace,
};
use tether_store::{NewWorkspace, secret};
use uuid::Uuid;

use super::auth::SessionUser;
use super::error::{ApiError, ApiJson, ApiPath};
use super::names;
use crate::state::AppState;

/// The API view of a stored workspace, with live status from the coordinator.
pub fn to_api(state: &AppState, ws: &tether_store::Workspace) -> Workspace {
    let (connected, relay) = state.hub.read(|c| {
        let live = c.agent_status(ws.agent_id);
        let region = match &live {
            Some(s) => s.node.as_ref().map(|n| n.preferred_derp),
            None => ws.last_relay,
        };
        let relay = region.filter(|r| *r != 0).map(|id| {
            let (region_code, region_name) = c
                .derp_map()
                .regions
                .get(&id)
                .map(|r| (r.region_code.clone(), r.region_name.clone()))
                .unwrap_or_default();
            Relay {
                region_id: id,
                region_code,
                region_name,
            }
        });
        (live.is_some(), relay)
    });
    let (status, last_seen_at) = if connected {
        (AgentStatus::Connected, Some(Utc::now()))
    } else {
        (AgentStatus::Disconnected, ws.last_seen_at)
    };
    Workspace {
        id: ws.id,
        name: ws.name.clone(),
        owner: ws.owner_username.clone(),
        agent_id: ws.agent_id,
        status,
        last_seen_at,
        relay,
        created_at: ws.created_at,
        agent_version: state.agent_version(ws.agent_id),
        server_path: if connected {
            state.node.path(ws.agent_id)
        } else {
            None
        },
    }
}

async fn find(
    state: &AppState,
    owner: Uuid,
    name: &str,
) -> Result<tether_store::Workspace, ApiError> {
    state
        .store
        .workspace_by_name(owner, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("You have no workspace named {name:?}.")))
}

/// `POST /api/v2/workspaces`.
pub async fn create(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
    ApiJson(req): ApiJson<CreateWorkspaceRequest>,
) -> Result<(StatusCode, Json<CreateWorkspaceResponse>), ApiError> {
    names::validate("workspace", &req.name)?;
    let agent_token = secret::new_token();
    let ws = state
        .store
        .create_workspace(NewWorkspace {
            owner_id: user.id,
            name: req.name.clone(),
            agent_id: Uuid::new_v4(),
            agent_token_hash: secret::hash_token(&agent_token),
        })
        .await?;
    state
        .hub
        .with(|c| c.set_agent_owner(ws.agent_id, ws.owner_id));
    tracing::info!(workspace = %ws.name, owner = %user.username, "workspace created");
    Ok((
        StatusCode::CREATED,
        Json(CreateWorkspaceResponse {
            workspace: to_api(&state, &ws),
            agent_token,
        }),
    ))
}

/// `GET /api/v2/workspaces`: the caller's workspaces.
pub async fn list(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
) -> Result<Json<Vec<Workspace>>, ApiError> {
    let all = state.store.workspaces_for_owner(user.id).await?;
    Ok(Json(all.iter().map(|w| to_api(&state, w)).collect()))
}

/// `GET /api/v2/workspaces/{name}`.
pub async fn get(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Workspace>, ApiError> {
    let ws = find(&state, user.id, &name).await?;
    Ok(Json(to_api(&state, &ws)))
}

/// `DELETE /api/v2/workspaces/{name}`: also disconnects its agent and revokes its token.
pub async fn delete(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let ws = find(&state, user.id, &name).await?;
    state.store.delete_workspace(ws.id).await?;
    state
        .hub
        .with(|c| c.remove_agent(ws.agent_id, std::time::Instant::now()));
    state.node.forget(ws.agent_id);
    tracing::info!(workspace = %ws.name, owner = %user.username, "workspace deleted");
    Ok(StatusCode::NO_CONTENT)
}
