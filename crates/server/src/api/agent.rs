//! Requests about one workspace agent that the server relays over its own tailnet node:
//! who may ask ([`owned_agent`]) and `GET /api/v2/workspaceagents/{agent_id}/listening-ports`,
//! the agent's own `GET /api/v0/listening-ports` (its HTTP API on tailnet port 4).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use tether_proto::api::{ListeningPorts, route};
use uuid::Uuid;

use super::auth::SessionUser;
use super::error::ApiError;
use crate::state::AppState;

/// The agent's HTTP API port on the tailnet.
pub const AGENT_API_PORT: u16 = 4;
/// The whole relay (tunnel, dial, request, answer) gives up after this.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from the agent.
const MAX_ANSWER: usize = 1 << 20;

/// The agent `agent_id` of one of `user`'s workspaces; a 404 that reads the same for
/// "not yours" and "does not exist".
pub async fn owned_agent(state: &AppState, user: Uuid, agent_id: &str) -> Result<Uuid, ApiError> {
    let missing =
        || ApiError::not_found(format!("No workspace agent {agent_id} that you may reach."));
    let id = Uuid::parse_str(agent_id).map_err(|_| missing())?;
    let mine = state.store.workspaces_for_owner(user).await?;
    if mine.iter().any(|w| w.agent_id == id) {
        Ok(id)
    } else {
        Err(missing())
    }
}

/// 400 when the agent has no live coordinator connection.
pub fn require_connected(state: &AppState, agent: Uuid) -> Result<(), ApiError> {
    if state.hub.read(|c| c.agent_status(agent).is_none()) {
        return Err(ApiError::bad_request(
            "The workspace's agent is not connected; start it with `tether agent` inside the workspace.",
        ));
    }
    Ok(())
}

fn unreachable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("Could not reach the workspace agent: {e}"),
    )
}

/// `GET` `path` on the agent's HTTP API through the server's node; the body as JSON.
async fn agent_get<T: serde::de::DeserializeOwned>(
    state: &AppState,
    agent: Uuid,
    path: &str,
) -> Result<T, ApiError> {
    let stream = state
        .node
        .dial(agent, AGENT_API_PORT)
        .await
        .map_err(unreachable)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(unreachable)?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, "agent")
        .body(Empty::<Bytes>::new())
        .map_err(unreachable)?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(unreachable)?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(unreachable)?
            .to_bytes();
        if !status.is_success() {
            return Err(unreachable(format!(
                "it answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )));
        }
        serde_json::from_slice(&body).map_err(|e| unreachable(format!("bad answer: {e}")))
    }
    .await;
    driver.abort();
    result
}

/// `GET /api/v2/workspaceagents/{agent_id}/listening-ports`.
pub async fn listening_ports(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
    Path(agent_id): Path<String>,
) -> Result<Json<ListeningPorts>, ApiError> {
    let agent = owned_agent(&state, user.id, &agent_id).await?;
    require_connected(&state, agent)?;
    let ask = agent_get::<ListeningPorts>(&state, agent, route::AGENT_API_LISTENING_PORTS);
    match tokio::time::timeout(RELAY_TIMEOUT, ask).await {
        Ok(r) => r.map(Json),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "The workspace agent did not list its ports within {}s.",
                RELAY_TIMEOUT.as_secs()
            ),
        )),
    }
}
