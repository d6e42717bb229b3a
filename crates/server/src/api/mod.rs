//! The HTTP API under `/api/v2`, plus `/healthz` and the path apps (`/@user/…/apps/…`). Handlers are small: they check input,
//! call the store or the coordinator, and map results to `tether_proto::api`'s types.

pub mod agent;
pub mod app_proxy;
pub mod apps;
pub mod auth;
pub mod deployment;
pub mod error;
pub mod health;
pub mod names;
pub mod pty;
pub mod tailnet;
pub mod user_admin;
pub mod users;
pub mod workspaces;

use axum::Router;
use axum::routing::{any, get, post, put};
use tether_proto::api::route;

use crate::state::AppState;

/// All API routes (the DERP routes and the dashboard, whose fallback answers unknown
/// API routes with a JSON 404, are merged in by the caller).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(route::HEALTHZ, get(|| async { "OK" }))
        .route(route::BUILDINFO, get(health::buildinfo))
        .route(route::DEBUG_HEALTH, get(health::report))
        .route(route::DEPLOYMENT, get(deployment::get))
        .route(
            route::USERS_FIRST,
            get(users::first_exists).post(users::create_first),
        )
        .route(route::USERS_LOGIN, post(users::login))
        .route(route::USERS_LOGOUT, post(users::logout))
        .route(route::USERS_ME, get(users::me))
        .route(route::USERS, get(user_admin::list).post(users::create))
        .route(route::USER, axum::routing::delete(user_admin::delete))
        .route(route::USER_SUSPEND, put(user_admin::suspend))
        .route(route::USER_ACTIVATE, put(user_admin::activate))
        .route(
            route::WORKSPACES,
            get(workspaces::list).post(workspaces::create),
        )
        .route(
            route::WORKSPACE,
            get(workspaces::get).delete(workspaces::delete),
        )
        .route(route::WORKSPACE_APPS, get(apps::list).post(apps::create))
        .route(route::WORKSPACE_APP, axum::routing::delete(apps::delete))
        .route(route::PATH_APP_BARE, any(app_proxy::bare))
        .route(route::PATH_APP_ROOT, any(app_proxy::proxy))
        .route(route::PATH_APP, any(app_proxy::proxy))
        .route(route::DERP_MAP, get(tailnet::derp_map))
        .route(route::TAILNET_CONNECTION, get(tailnet::connection_info))
        .route(route::TAILNET_COORDINATE, get(tailnet::client_coordinate))
        .route(route::AGENT_COORDINATE, get(tailnet::agent_coordinate))
        .route(route::AGENT_CONNECTION, get(tailnet::agent_connection_info))
        .route(route::AGENT_PTY, get(pty::pty))
        .route(route::AGENT_LISTENING_PORTS, get(agent::listening_ports))
        .with_state(state)
}
