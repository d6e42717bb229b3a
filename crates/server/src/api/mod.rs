//! The HTTP API under `/api/v2`, plus `/healthz`. Handlers are small: they check input,
//! call the store or the coordinator, and map results to types in [`types`].

pub mod auth;
pub mod deployment;
pub mod error;
pub mod health;
pub mod names;
pub mod tailnet;
pub mod types;
pub mod users;
pub mod workspaces;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// All API routes (the DERP routes and the dashboard, whose fallback answers unknown
/// API routes with a JSON 404, are merged in by the caller).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/api/v2/buildinfo", get(health::buildinfo))
        .route("/api/v2/debug/health", get(health::report))
        .route("/api/v2/deployment", get(deployment::get))
        .route(
            "/api/v2/users/first",
            get(users::first_exists).post(users::create_first),
        )
        .route("/api/v2/users/login", post(users::login))
        .route("/api/v2/users/logout", post(users::logout))
        .route("/api/v2/users/me", get(users::me))
        .route("/api/v2/users", post(users::create))
        .route(
            "/api/v2/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route(
            "/api/v2/workspaces/{name}",
            get(workspaces::get).delete(workspaces::delete),
        )
        .route("/api/v2/derp-map", get(tailnet::derp_map))
        .route("/api/v2/tailnet/connection", get(tailnet::connection_info))
        .route(
            "/api/v2/tailnet/coordinate",
            get(tailnet::client_coordinate),
        )
        .route(
            "/api/v2/workspaceagents/me/coordinate",
            get(tailnet::agent_coordinate),
        )
        .route(
            "/api/v2/workspaceagents/me/connection",
            get(tailnet::agent_connection_info),
        )
        .with_state(state)
}
