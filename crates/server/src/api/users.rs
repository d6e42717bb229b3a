//! Users and sessions: first-user setup, login, logout, admin user creation.
//!
//! The CLI gets its session token in the JSON answer. The dashboard asks for
//! `"set_cookie": true` instead and gets the token only as an HttpOnly cookie.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use tether_proto::api::{
    BrowserSession, CreateUserRequest, LoginRequest, LoginResponse, User, UserStatus,
};
use tether_store::{NewUser, secret};

use super::auth::{AdminUser, SESSION_COOKIE, Session, SessionUser};
use super::error::{ApiError, ApiJson};
use super::names;
use crate::state::AppState;

/// The API view of a stored user.
pub fn to_api(u: &tether_store::User) -> User {
    User {
        id: u.id,
        username: u.username.clone(),
        email: u.email.clone(),
        is_admin: u.is_admin,
        created_at: u.created_at,
        status: match u.status {
            tether_store::UserStatus::Active => UserStatus::Active,
            tether_store::UserStatus::Suspended => UserStatus::Suspended,
        },
    }
}

fn validate_new_user(req: &CreateUserRequest) -> Result<(), ApiError> {
    names::validate("user", &req.username)?;
    let email = req.email.trim();
    let valid_email = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !email.contains(char::is_whitespace)
    });
    if !valid_email {
        return Err(ApiError::bad_request(format!(
            "Invalid email address {:?}.",
            req.email
        )));
    }
    if req.password.chars().count() < 8 {
        return Err(ApiError::bad_request(
            "The password must be at least 8 characters long.",
        ));
    }
    Ok(())
}

async fn insert_user(
    state: &AppState,
    req: &CreateUserRequest,
    is_admin: bool,
) -> Result<tether_store::User, ApiError> {
    let new = checked_new_user(state, req, is_admin).await?;
    Ok(state.store.create_user(new).await?)
}

/// Validates a new user and hashes its password.
async fn checked_new_user(
    state: &AppState,
    req: &CreateUserRequest,
    is_admin: bool,
) -> Result<NewUser, ApiError> {
    validate_new_user(req)?;
    let password_hash = state.passwords.hash(req.password.clone()).await?;
    Ok(NewUser {
        username: req.username.clone(),
        email: req.email.trim().to_string(),
        password_hash,
        is_admin,
    })
}

async fn new_session(
    state: &AppState,
    user: &tether_store::User,
) -> Result<LoginResponse, ApiError> {
    let token = secret::new_token();
    let lifetime = Duration::from_std(state.session_duration).unwrap_or(Duration::MAX);
    let expires_at = Utc::now()
        .checked_add_signed(lifetime)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    state
        .store
        .create_session(user.id, secret::hash_token(&token), expires_at)
        .await?;
    Ok(LoginResponse {
        session_token: token,
        expires_at,
        user: to_api(user),
    })
}

/// `GET /api/v2/users/first`: 200 when a first user exists, 404 when setup is pending.
pub async fn first_exists(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    if state.store.user_count().await? > 0 {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::not_found(
            "The first user has not been created yet.",
        ))
    }
}

/// A login or first-user body with the dashboard's `set_cookie` option beside it.
#[derive(Deserialize)]
pub struct WithCookie<T> {
    /// The request proper.
    #[serde(flatten)]
    pub req: T,
    /// Put the token in a cookie instead of the body.
    #[serde(default)]
    pub set_cookie: bool,
}

/// The `Set-Cookie` value for the session cookie: `token` for `max_age` seconds, or
/// cleared (`""`, 0 s). `Secure` when the dashboard is served over https.
pub fn session_cookie(
    state: &AppState,
    token: &str,
    max_age: i64,
) -> Result<HeaderValue, ApiError> {
    let secure = if state.access_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let value = format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.max(0)
    );
    HeaderValue::from_str(&value).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The session token cannot be put into a cookie.",
        )
    })
}

/// The answer to a fresh session: the token in the body for the CLI, or only in a
/// cookie for the dashboard.
fn session_response(
    state: &AppState,
    status: StatusCode,
    session: LoginResponse,
    set_cookie: bool,
) -> Result<Response, ApiError> {
    if !set_cookie {
        return Ok((status, Json(session)).into_response());
    }
    let max_age = remaining_seconds(session.expires_at, Utc::now());
    let cookie = session_cookie(state, &session.session_token, max_age)?;
    let body = BrowserSession {
        expires_at: session.expires_at,
        user: session.user,
    };
    Ok((status, [(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

fn remaining_seconds(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (expires_at - now).num_seconds().max(0)
}

/// `POST /api/v2/users/first`: creates the first (admin) user and logs them in.
pub async fn create_first(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<WithCookie<CreateUserRequest>>,
) -> Result<Response, ApiError> {
    if state.store.user_count().await? > 0 {
        return Err(ApiError::conflict(
            "The first user already exists; log in instead.",
        ));
    }
    // The check above spares the hashing; this insert is the one that decides.
    let new = checked_new_user(&state, &body.req, true).await?;
    let user = state
        .store
        .create_first_user(new)
        .await?
        .ok_or_else(|| ApiError::conflict("The first user already exists; log in instead."))?;
    tracing::info!(user = %user.username, "first user created");
    let session = new_session(&state, &user).await?;
    session_response(&state, StatusCode::CREATED, session, body.set_cookie)
}

/// `POST /api/v2/users/login`.
pub async fn login(
    State(state): State<AppState>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiJson(WithCookie { req, set_cookie }): ApiJson<WithCookie<LoginRequest>>,
) -> Result<Response, ApiError> {
    let refused = || ApiError::unauthorized("Incorrect username or password.");
    let user = state.store.user_by_login(req.username.trim()).await?;
    let account = user
        .as_ref()
        .map_or(req.username.clone(), |u| u.id.to_string());
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let source = remote.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(a))| {
        a.ip()
    });
    let ok = state
        .passwords
        .check_login(source, &account, req.password, hash)
        .await?;
    match user {
        // Only who knows the password learns that the account is suspended.
        Some(user) if ok && user.status == tether_store::UserStatus::Suspended => {
            tracing::info!(user = %user.username, "login of a suspended user refused");
            Err(ApiError::unauthorized(
                "Your account is suspended; ask an admin to activate it.",
            ))
        }
        Some(user) if ok => {
            let session = new_session(&state, &user).await?;
            session_response(&state, StatusCode::OK, session, set_cookie)
        }
        _ => Err(refused()),
    }
}

/// The session of a logout: the one presented, or none when it is already gone (a
/// cross-site request with the cookie is still refused).
pub struct LogoutSession(Option<Session>);

impl FromRequestParts<AppState> for LogoutSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Session::from_request_parts(parts, state).await {
            Ok(s) => Ok(Self(Some(s))),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(Self(None)),
            Err(e) => Err(e),
        }
    }
}

/// `POST /api/v2/users/logout`: revokes the session presented (cookie or header), ends
/// the coordinator connections opened with it, and clears the cookie. Logging out of a
/// session that is already gone (expired, revoked, or never sent) succeeds too, so a
/// stale page can always log out.
pub async fn logout(
    State(state): State<AppState>,
    LogoutSession(session): LogoutSession,
) -> Result<Response, ApiError> {
    if let Some(session) = session {
        state.store.delete_session(session.token_hash).await?;
        state
            .hub
            .end_session(session.token_hash, crate::coordinate::LOGGED_OUT);
    }
    let clear = [(header::SET_COOKIE, session_cookie(&state, "", 0)?)];
    Ok((StatusCode::NO_CONTENT, clear).into_response())
}

/// `GET /api/v2/users/me`.
pub async fn me(SessionUser(user): SessionUser) -> Json<User> {
    Json(to_api(&user))
}

/// `POST /api/v2/users` (admin only).
pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = insert_user(&state, &req, req.is_admin).await?;
    tracing::info!(user = %user.username, by = %admin.username, "user created");
    Ok((StatusCode::CREATED, Json(to_api(&user))))
}
