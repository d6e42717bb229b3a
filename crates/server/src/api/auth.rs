//! Request authentication: a user's session token or a workspace agent's token, from
//! our header or `Authorization: Bearer`. Tokens are looked up by their SHA-256 hash.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::Utc;
use tether_store::{User, Workspace, secret};

use super::error::ApiError;
use super::types::{AGENT_TOKEN_HEADER, SESSION_TOKEN_HEADER};
use crate::state::AppState;

fn token_from(parts: &Parts, header: &str) -> Option<String> {
    if let Some(v) = parts.headers.get(header).and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The session of a request: its user and the hash of the token it presented.
pub struct Session {
    /// The logged-in user.
    pub user: User,
    /// SHA-256 of the session token (what the store keys sessions by).
    pub token_hash: [u8; 32],
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = token_from(parts, SESSION_TOKEN_HEADER).ok_or_else(|| {
            ApiError::unauthorized(
                "You are not logged in; run `tether login <url>` or set TETHER_SESSION_TOKEN.",
            )
        })?;
        let token_hash = secret::hash_token(&token);
        match state.store.session_user(token_hash, Utc::now()).await? {
            Some(user) => Ok(Self { user, token_hash }),
            None => Err(ApiError::unauthorized(
                "Your session token is invalid or expired; run `tether login <url>` again.",
            )),
        }
    }
}

/// The logged-in user of a request.
pub struct SessionUser(pub User);

impl FromRequestParts<AppState> for SessionUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self(Session::from_request_parts(parts, state).await?.user))
    }
}

/// An admin user.
pub struct AdminUser(pub User);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let SessionUser(user) = SessionUser::from_request_parts(parts, state).await?;
        if !user.is_admin {
            return Err(ApiError::forbidden("Only an admin can do that."));
        }
        Ok(Self(user))
    }
}

/// The workspace whose agent token authenticated the request.
pub struct AgentAuth(pub Workspace);

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = token_from(parts, AGENT_TOKEN_HEADER).ok_or_else(|| {
            ApiError::unauthorized("An agent token is required (--token or TETHER_AGENT_TOKEN).")
        })?;
        match state
            .store
            .workspace_by_agent_token(secret::hash_token(&token))
            .await?
        {
            Some(ws) => Ok(Self(ws)),
            None => Err(ApiError::unauthorized(
                "The agent token is not valid; the workspace may have been deleted.",
            )),
        }
    }
}
