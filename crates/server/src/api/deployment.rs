//! `GET /api/v2/deployment`: public facts about this deployment that the dashboard needs
//! before anyone logs in (where it lives, which ways in are allowed).

use axum::Json;
use axum::extract::State;

use crate::state::AppState;
use tether_proto::api::Deployment;

/// `GET /api/v2/deployment` (no login).
pub async fn get(State(state): State<AppState>) -> Json<Deployment> {
    Json(Deployment {
        access_url: state.access_url.as_str().trim_end_matches('/').to_string(),
        browser_only: state.browser_only,
        // Subdomain apps are not served yet.
        wildcard_access_url: None,
        disable_path_apps: state.apps.disable_path_apps,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}
