//! User administration (admins only), after Coder's: list users, suspend and activate
//! them, delete them. A suspended user cannot log in and their sessions stop working
//! (they work again once activated); deleting a user who still owns workspaces is
//! refused, as Coder does, rather than deleting the workspaces with them. Suspending or
//! deleting ends the user's live coordinator connections at once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tether_proto::api::{User, UserList};
use tether_store::{UserChange, UserStatus};
use uuid::Uuid;

use super::auth::AdminUser;
use super::error::{ApiError, ApiPath};
use super::users::to_api;
use crate::coordinate::{DELETED, SUSPENDED};
use crate::state::AppState;

/// `GET /api/v2/users`: every user, by username.
pub async fn list(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
) -> Result<Json<UserList>, ApiError> {
    let users: Vec<User> = state.store.list_users().await?.iter().map(to_api).collect();
    Ok(Json(UserList {
        count: users.len(),
        users,
    }))
}

/// The user a path names, by id or username.
async fn target(state: &AppState, name: &str) -> Result<tether_store::User, ApiError> {
    let found = match Uuid::parse_str(name) {
        Ok(id) => state.store.user_by_id(id).await?,
        Err(_) => state
            .store
            .user_by_login(name)
            .await?
            .filter(|u| u.username.eq_ignore_ascii_case(name)),
    };
    found.ok_or_else(|| ApiError::not_found(format!("No user {name:?}.")))
}

/// What a refused or done change answers.
fn answer(change: UserChange, name: &str) -> Result<tether_store::User, ApiError> {
    match change {
        UserChange::Done(user) => Ok(user),
        UserChange::NotFound => Err(ApiError::not_found(format!("No user {name:?}."))),
        UserChange::LastAdmin => Err(ApiError::conflict(format!(
            "{name} is the last active admin; make another user an admin first."
        ))),
        UserChange::HasWorkspaces(n) => Err(ApiError::conflict(format!(
            "{name} still owns {n} workspace{}; delete {} first.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "it" } else { "them" },
        ))),
    }
}

/// `PUT /api/v2/users/{user}/status/suspend`: the user can no longer log in, their
/// sessions stop working, and their coordinator connections end now.
pub async fn suspend(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    let user = target(&state, &name).await?;
    if user.id == admin.id {
        return Err(ApiError::forbidden("You cannot suspend yourself."));
    }
    let change = state
        .store
        .set_user_status(user.id, UserStatus::Suspended)
        .await?;
    let user = answer(change, &user.username)?;
    let ended = state.hub.end_user(user.id, SUSPENDED);
    tracing::info!(user = %user.username, by = %admin.username, connections = ended, "user suspended");
    Ok(Json(to_api(&user)))
}

/// `PUT /api/v2/users/{user}/status/activate`: the user may log in again, and their
/// sessions that have not expired work again.
pub async fn activate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    let user = target(&state, &name).await?;
    let change = state
        .store
        .set_user_status(user.id, UserStatus::Active)
        .await?;
    let user = answer(change, &user.username)?;
    tracing::info!(user = %user.username, by = %admin.username, "user activated");
    Ok(Json(to_api(&user)))
}

/// `DELETE /api/v2/users/{user}`: deletes the user and their sessions, ending their
/// coordinator connections; refused while they own workspaces.
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user = target(&state, &name).await?;
    if user.id == admin.id {
        return Err(ApiError::forbidden("You cannot delete yourself."));
    }
    let change = state.store.delete_user(user.id).await?;
    let user = answer(change, &user.username)?;
    let ended = state.hub.end_user(user.id, DELETED);
    tracing::info!(user = %user.username, by = %admin.username, connections = ended, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}
