//! Request authentication: a user's session token or a workspace agent's token, from
//! our header, `Authorization: Bearer`, or (sessions only) the dashboard's cookie.
//! Tokens are looked up by their SHA-256 hash.
//!
//! A cookie is an ambient credential: the browser attaches it to requests other sites
//! make it send. So a request authenticated by the cookie that changes state, or opens a
//! WebSocket, must come from the dashboard's own origin (the access URL's).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use chrono::Utc;
use tether_proto::api::{AGENT_TOKEN_HEADER, SESSION_TOKEN_HEADER};
use tether_store::{User, Workspace, secret};

use super::error::ApiError;
use crate::state::AppState;

/// The dashboard's session cookie (HttpOnly; page scripts never see the token).
pub const SESSION_COOKIE: &str = "tether_session_token";

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Our own header (`Tether-Session-Token` / `Tether-Agent-Token`).
    Header,
    /// `Authorization: Bearer`.
    Bearer,
    /// The dashboard's cookie.
    Cookie,
}

/// The token of a request from `header`, then `Authorization: Bearer`, then (when
/// `cookie` is given) that cookie.
fn token_from(
    headers: &HeaderMap,
    header: &str,
    cookie: Option<&str>,
) -> Option<(String, TokenSource)> {
    if let Some(v) = headers.get(header).and_then(|v| v.to_str().ok()) {
        return Some((v.trim().to_string(), TokenSource::Header));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    if let Some(token) = bearer {
        return Some((token, TokenSource::Bearer));
    }
    let name = cookie?;
    cookie_value(headers, name).map(|v| (v.to_string(), TokenSource::Cookie))
}

/// The first non-empty value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.trim_matches('"'))
}

/// Whether a cookie-authenticated request may go ahead: safe methods may, except a
/// WebSocket upgrade; everything else needs `Origin` equal to the access URL's origin.
fn same_origin_required(parts: &Parts) -> bool {
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    !safe || upgrade
}

/// Refuses a cookie-authenticated request that needs the dashboard's origin and lacks it.
pub fn check_origin(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    if !same_origin_required(parts) {
        return Ok(());
    }
    let ours = state.access_url.origin().ascii_serialization();
    let theirs = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if theirs == Some(ours.as_str()) {
        return Ok(());
    }
    tracing::debug!(origin = ?theirs, expected = %ours, method = %parts.method, path = %parts.uri.path(), "cross-site cookie request refused");
    Err(ApiError::forbidden("Cross-site request refused."))
}

/// An authenticated request's connection leaves probation (see [`crate::listen::table`]).
fn established(parts: &Parts) {
    if let Some(conn) = parts.extensions.get::<crate::listen::ConnHandle>() {
        conn.establish();
    }
}

/// The session of a request: its user and the hash of the token it presented.
pub struct Session {
    /// The logged-in user.
    pub user: User,
    /// SHA-256 of the session token (what the store keys sessions by).
    pub token_hash: [u8; 32],
    /// Where the token came from.
    pub source: TokenSource,
    /// When the session expires.
    pub expires_at: chrono::DateTime<Utc>,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token, source) = token_from(
            &parts.headers,
            SESSION_TOKEN_HEADER,
            Some(SESSION_COOKIE),
        )
        .ok_or_else(|| {
            ApiError::unauthorized(
                "You are not logged in; run `tether login <url>` or set TETHER_SESSION_TOKEN.",
            )
        })?;
        let token_hash = secret::hash_token(&token);
        let Some((user, session)) = state.store.session(token_hash, Utc::now()).await? else {
            return Err(ApiError::unauthorized(match source {
                TokenSource::Cookie => "Your session has expired; log in again.",
                _ => "Your session token is invalid or expired; run `tether login <url>` again.",
            }));
        };
        if source == TokenSource::Cookie {
            check_origin(parts, state)?;
        }
        established(parts);
        Ok(Self {
            user,
            token_hash,
            source,
            expires_at: session.expires_at,
        })
    }
}

/// The session of a request to a workspace app, which may carry none, and whether its
/// `Authorization` header held a tether session token (then it is ours to strip).
pub struct AppSession {
    /// The session, if the request had a valid one.
    pub session: Option<Session>,
    /// `Authorization: Bearer` carried a valid tether session token.
    pub authorization_is_ours: bool,
}

impl AppSession {
    /// Tries our header, then `Authorization: Bearer`, then the cookie, and takes the
    /// first valid session. Unlike [`Session`], a bearer token that is not ours is the
    /// app's own business, not an error. No valid session but one of ours presented is
    /// 401; a cookie session still needs the dashboard's origin where [`Session`] does.
    pub async fn from_parts(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|auth| auth.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        let ours = parts
            .headers
            .get(SESSION_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string());
        let cookie = cookie_value(&parts.headers, SESSION_COOKIE).map(str::to_string);
        let mut authorization_is_ours = false;
        let mut found = None;
        let mut presented_ours = false;
        for (token, source) in [
            (ours, TokenSource::Header),
            (bearer, TokenSource::Bearer),
            (cookie, TokenSource::Cookie),
        ] {
            let Some(token) = token else { continue };
            presented_ours |= source != TokenSource::Bearer;
            let token_hash = secret::hash_token(&token);
            let Some((user, stored)) = state.store.session(token_hash, Utc::now()).await? else {
                continue;
            };
            if source == TokenSource::Bearer {
                authorization_is_ours = true;
            }
            if found.is_none() {
                found = Some(Session {
                    user,
                    token_hash,
                    source,
                    expires_at: stored.expires_at,
                });
            }
        }
        match &found {
            Some(s) if s.source == TokenSource::Cookie => check_origin(parts, state)?,
            Some(_) => {}
            None if presented_ours => {
                return Err(ApiError::unauthorized(
                    "Your session has expired or is invalid; log in again.",
                ));
            }
            None => {}
        }
        if found.is_some() {
            established(parts);
        }
        Ok(Self {
            session: found,
            authorization_is_ours,
        })
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
        let (token, _) = token_from(&parts.headers, AGENT_TOKEN_HEADER, None).ok_or_else(|| {
            ApiError::unauthorized("An agent token is required (--token or TETHER_AGENT_TOKEN).")
        })?;
        match state
            .store
            .workspace_by_agent_token(secret::hash_token(&token))
            .await?
        {
            Some(ws) => {
                established(parts);
                Ok(Self(ws))
            }
            None => Err(ApiError::unauthorized(
                "The agent token is not valid; the workspace may have been deleted.",
            )),
        }
    }
}
