//! Users and sessions: first-user setup, login, logout, admin user creation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use tether_store::{NewUser, secret};

use super::auth::{AdminUser, Session, SessionUser};
use super::error::{ApiError, ApiJson};
use super::names;
use super::types::{CreateUserRequest, LoginRequest, LoginResponse, User};
use crate::state::AppState;

/// How long a session token lives.
pub const SESSION_LIFETIME_DAYS: i64 = 30;

/// The API view of a stored user.
pub fn to_api(u: &tether_store::User) -> User {
    User {
        id: u.id,
        username: u.username.clone(),
        email: u.email.clone(),
        is_admin: u.is_admin,
        created_at: u.created_at,
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
    validate_new_user(req)?;
    let password = req.password.clone();
    // Argon2 is deliberately slow; keep it off the async workers.
    let password_hash = tokio::task::spawn_blocking(move || secret::hash_password(&password))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("password hashing failed: {e}"),
            )
        })??;
    Ok(state
        .store
        .create_user(NewUser {
            username: req.username.clone(),
            email: req.email.trim().to_string(),
            password_hash,
            is_admin,
        })
        .await?)
}

async fn new_session(
    state: &AppState,
    user: &tether_store::User,
) -> Result<LoginResponse, ApiError> {
    let token = secret::new_token();
    let expires_at = Utc::now() + Duration::days(SESSION_LIFETIME_DAYS);
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

/// `POST /api/v2/users/first`: creates the first (admin) user and logs them in.
pub async fn create_first(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<LoginResponse>), ApiError> {
    if state.store.user_count().await? > 0 {
        return Err(ApiError::conflict(
            "The first user already exists; log in instead.",
        ));
    }
    let user = insert_user(&state, &req, true).await?;
    tracing::info!(user = %user.username, "first user created");
    Ok((StatusCode::CREATED, Json(new_session(&state, &user).await?)))
}

/// `POST /api/v2/users/login`.
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let refused = || ApiError::unauthorized("Incorrect username or password.");
    let user = state.store.user_by_login(req.username.trim()).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = req.password;
    // Verify even for an unknown user so timing does not reveal which names exist.
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(h) => secret::verify_password(&password, &h),
        None => {
            let _ = secret::verify_password(&password, dummy_hash());
            false
        }
    })
    .await
    .unwrap_or(false);
    match user {
        Some(user) if ok => Ok(Json(new_session(&state, &user).await?)),
        _ => Err(refused()),
    }
}

/// A real argon2id hash of a random string, so unknown users cost a real verification.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| secret::hash_password(&secret::new_token()).unwrap_or_default())
}

/// `POST /api/v2/users/logout`: revokes the session token used.
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
) -> Result<StatusCode, ApiError> {
    state.store.delete_session(session.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
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
