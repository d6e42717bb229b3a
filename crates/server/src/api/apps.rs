//! A workspace's declared web apps: `GET`/`POST /api/v2/workspaces/{name}/apps` and
//! `DELETE /api/v2/workspaces/{name}/apps/{slug}`. Only the workspace's owner, or an
//! admin naming it `owner/workspace`, may list or change them; anyone else gets the same
//! 404 as for a workspace that does not exist.
//!
//! Rules checked here, at creation, so a bad app never exists: the slug is a DNS label;
//! the URL is `http://` on the workspace's loopback (the agent forwards tailnet port N to
//! `127.0.0.1:N`) and not on ports 1–8, which are the agent's own services; a subdomain
//! app's host label `<slug>--<workspace>--<user>` fits in 63 characters.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tether_proto::api::{App, AppShare, CreateAppRequest, route};
use tether_store::{NewApp, User};
use url::Url;

use super::auth::SessionUser;
use super::error::{ApiError, ApiJson, ApiPath};
use super::names;
use crate::state::AppState;

/// Ports below this are the agent's own services (SSH, PTY, speedtest, HTTP API).
pub const FIRST_APP_PORT: u16 = 9;
/// The longest DNS label.
pub const MAX_LABEL: usize = 63;
/// The longest display name.
const MAX_DISPLAY_NAME: usize = 64;

/// A subdomain app's host label: `<slug>--<workspace>--<user>`.
pub fn host_label(slug: &str, workspace: &str, user: &str) -> String {
    format!("{slug}--{workspace}--{user}")
}

/// The workspace named by `name` (`ws`, or `owner/ws` for an admin) if `user` may manage
/// its apps; one 404 for "not yours" and "does not exist".
pub async fn managed_workspace(
    state: &AppState,
    user: &User,
    name: &str,
) -> Result<tether_store::Workspace, ApiError> {
    let missing = || ApiError::not_found(format!("You have no workspace named {name:?}."));
    let (owner_id, ws_name) = match name.split_once('/') {
        None => (user.id, name),
        Some((owner, ws)) => {
            let owner = state
                .store
                .user_by_login(owner)
                .await?
                .filter(|o| o.username.eq_ignore_ascii_case(owner))
                .ok_or_else(missing)?;
            if owner.id != user.id && !user.is_admin {
                return Err(missing());
            }
            (owner.id, ws)
        }
    };
    state
        .store
        .workspace_by_name(owner_id, ws_name)
        .await?
        .ok_or_else(missing)
}

/// The API view of a stored app.
pub fn to_api(state: &AppState, ws: &tether_store::Workspace, app: &tether_store::App) -> App {
    let open_url = (!app.subdomain && !state.apps.disable_path_apps)
        .then(|| route::path_app(&ws.owner_username, &ws.name, &app.slug).ok())
        .flatten()
        .and_then(|p| state.access_url.join(&p).ok())
        .map(String::from);
    App {
        id: app.id,
        slug: app.slug.clone(),
        display_name: app.display_name.clone(),
        url: app.url.clone(),
        subdomain: app.subdomain,
        // The server wrote the value; an unknown one reads as the strictest.
        share: AppShare::parse(&app.share).unwrap_or(AppShare::Owner),
        open_url,
        created_at: app.created_at,
    }
}

/// Checks an app URL: `http://127.0.0.1` or `http://localhost`, a port of 9 or more, no
/// credentials, query or fragment. Returns it normalised.
pub fn check_url(raw: &str) -> Result<Url, ApiError> {
    let bad = |why: String| ApiError::bad_request(format!("Invalid app URL {raw:?}: {why}."));
    let url = Url::parse(raw.trim()).map_err(|e| bad(e.to_string()))?;
    if url.scheme() != "http" {
        return Err(bad(format!(
            "the scheme must be http (the server proxies to plain HTTP inside the workspace; {}:// is not supported yet)",
            url.scheme()
        )));
    }
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if !loopback {
        return Err(bad(
            "the host must be 127.0.0.1 or localhost: the agent forwards to the workspace's own loopback"
                .into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not carry a user name or password".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment".into()));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    if port < FIRST_APP_PORT {
        return Err(ApiError::bad_request(format!(
            "Port {port} is reserved for the workspace agent's own services (ports 1-{}); run the app on port {FIRST_APP_PORT} or above.",
            FIRST_APP_PORT - 1
        )));
    }
    Ok(url)
}

/// `GET /api/v2/workspaces/{name}/apps`.
pub async fn list(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<App>>, ApiError> {
    let ws = managed_workspace(&state, &user, &name).await?;
    let apps = state.store.apps_for_workspace(ws.id).await?;
    Ok(Json(apps.iter().map(|a| to_api(&state, &ws, a)).collect()))
}

/// `POST /api/v2/workspaces/{name}/apps`.
pub async fn create(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<App>), ApiError> {
    let ws = managed_workspace(&state, &user, &name).await?;
    names::validate("app", &req.slug)?;
    let url = check_url(&req.url)?;
    let display_name = match req.display_name.trim() {
        "" => req.slug.clone(),
        n if n.chars().count() > MAX_DISPLAY_NAME || n.chars().any(char::is_control) => {
            return Err(ApiError::bad_request(format!(
                "An app's display name is at most {MAX_DISPLAY_NAME} printable characters."
            )));
        }
        n => n.to_string(),
    };
    if req.subdomain {
        let label = host_label(&req.slug, &ws.name, &ws.owner_username);
        if label.len() > MAX_LABEL {
            let room = MAX_LABEL.saturating_sub(label.len() - req.slug.len());
            return Err(ApiError::bad_request(format!(
                "The subdomain app's host name label {label:?} would be {} characters, more than the {MAX_LABEL} a DNS label can hold; use a slug of at most {room} characters (or a path app).",
                label.len()
            )));
        }
    }
    let app = state
        .store
        .create_app(NewApp {
            workspace_id: ws.id,
            slug: req.slug,
            display_name,
            url: url.as_str().trim_end_matches('/').to_string(),
            subdomain: req.subdomain,
            share: req.share.as_str().into(),
        })
        .await?;
    tracing::info!(workspace = %ws.name, owner = %ws.owner_username, app = %app.slug, by = %user.username, "app declared");
    Ok((StatusCode::CREATED, Json(to_api(&state, &ws, &app))))
}

/// `DELETE /api/v2/workspaces/{name}/apps/{slug}`.
pub async fn delete(
    State(state): State<AppState>,
    SessionUser(user): SessionUser,
    ApiPath((name, slug)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = managed_workspace(&state, &user, &name).await?;
    if !state.store.delete_app(ws.id, &slug).await? {
        return Err(ApiError::not_found(format!(
            "Workspace {} has no app named {slug:?}.",
            ws.name
        )));
    }
    tracing::info!(workspace = %ws.name, owner = %ws.owner_username, app = %slug, by = %user.username, "app removed");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_urls() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:9",
            "http://127.0.0.1:3000/base/",
            "http://127.0.0.1",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("http://127.0.0.1:8", "reserved"),
            ("http://127.0.0.1:1", "reserved"),
            ("http://127.0.0.1:0", "reserved"),
            ("https://127.0.0.1:8443", "scheme"),
            ("http://10.0.0.1:8080", "host"),
            ("http://u:p@127.0.0.1:8080", "password"),
            ("http://127.0.0.1:8080/?a=1", "query"),
            ("not a url", "Invalid app URL"),
        ] {
            let e = check_url(bad).expect_err(bad);
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn host_labels() {
        assert_eq!(host_label("code", "dev", "alice"), "code--dev--alice");
    }
}
