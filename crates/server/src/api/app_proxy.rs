//! Path apps: `/@<user>/<workspace>/apps/<slug>/…` proxied to the app's URL inside the
//! workspace through the server's own tailnet node (the agent's accept-any forwarder
//! maps tailnet port N to `127.0.0.1:N`). The bare `…/apps/<slug>` gets a 307 adding the
//! slash, so the app's relative links resolve under its prefix.
//!
//! A path app shares the dashboard's origin and cookies, so its scripts could call the
//! API as whoever opens it: `--disable-path-apps` answers 403, and unless
//! `--dangerous-allow-path-app-sharing` is set, only the workspace's owner may open one
//! whatever its share level. Anyone else gets the same 404 as for an app that does not
//! exist (as Coder does), so existence does not leak.
//!
//! Bodies stream both ways (hyper bodies, never collected); a WebSocket upgrade is passed
//! through and the two upgraded connections copied. What the app sees is cleaned by
//! [`headers`]: tether's credentials never reach it, `X-Forwarded-*` are ours.

pub mod headers;
mod page;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tether_proto::api::AppShare;
use url::Url;

use self::headers::Forwarded;
use self::page::page;
use super::auth::AppSession;
use crate::state::AppState;

/// How long reaching the agent may take, tunnel and TCP connect included.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the app may take to send its response head.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET /@{user}/{workspace}/apps/{slug}`: 307 to the same path with a trailing slash.
pub async fn bare(uri: Uri) -> Response {
    let target = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    match HeaderValue::try_from(target) {
        Ok(loc) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, loc)]).into_response(),
        Err(_) => page(
            StatusCode::BAD_REQUEST,
            "Bad app path",
            "The path is not valid.",
        ),
    }
}

/// The part of a raw (still percent-encoded) path app path after `/apps/<slug>/`.
fn rest_of(raw_path: &str) -> &str {
    raw_path.splitn(6, '/').nth(5).unwrap_or("")
}

/// The upstream path and query: the app URL's path, then `rest` and `query`.
fn upstream_path(app_url: &Url, rest: &str, query: Option<&str>) -> String {
    let base = app_url.path().trim_end_matches('/');
    match query {
        Some(q) => format!("{base}/{rest}?{q}"),
        None => format!("{base}/{rest}"),
    }
}

/// Whether `req` asks to switch to a WebSocket.
fn wants_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn not_found(user: &str, workspace: &str, slug: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Application not found",
        &format!(
            "There is no app {slug:?} in workspace {workspace:?} of {user:?} that you may open."
        ),
    )
}

/// `/@{user}/{workspace}/apps/{slug}/{*rest}`, every method: the proxy.
pub async fn proxy(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    if state.apps.disable_path_apps {
        return page(
            StatusCode::FORBIDDEN,
            "Path apps are disabled",
            "This deployment runs with --disable-path-apps: apps under the dashboard's own address could act as the visitor on the dashboard, so they are turned off. Ask the administrator for subdomain apps instead.",
        );
    }
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let (user, workspace, slug) = (get("user"), get("workspace"), get("slug"));
    let (parts, body) = req.into_parts();
    let session = match AppSession::from_parts(&parts, &state).await {
        Ok(s) => s,
        Err(e) if e.status == StatusCode::FORBIDDEN => {
            return page(
                StatusCode::FORBIDDEN,
                "Cross-site request refused",
                &e.message,
            );
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return login_page(),
        Err(e) => return page(e.status, "App unavailable", &e.message),
    };
    let strip_authorization = session.authorization_is_ours;
    let session = session.session;

    let resolved = resolve(&state, &user, &workspace, &slug).await;
    let (ws, app) = match resolved {
        Ok(Some(found)) => found,
        Ok(None) if session.is_none() => return login_page(),
        Ok(None) => return not_found(&user, &workspace, &slug),
        Err(r) => return r,
    };
    let share = AppShare::parse(&app.share).unwrap_or(AppShare::Owner);
    let owner = session.as_ref().is_some_and(|s| s.user.id == ws.owner_id);
    let allowed = owner
        || (state.apps.allow_path_app_sharing
            && match share {
                AppShare::Owner => false,
                AppShare::Authenticated => session.is_some(),
                AppShare::Public => true,
            });
    if !allowed {
        if session.is_none() {
            return login_page();
        }
        return not_found(&user, &workspace, &slug);
    }

    let Ok(app_url) = Url::parse(&app.url) else {
        return page(
            StatusCode::BAD_GATEWAY,
            "Bad app URL",
            &format!("The app's URL {:?} does not parse.", app.url),
        );
    };
    let port = app_url.port_or_known_default().unwrap_or(80);
    let agent = ws.agent_id;
    if state.hub.read(|c| c.agent_status(agent).is_none()) {
        return page(
            StatusCode::BAD_GATEWAY,
            "Workspace agent offline",
            &format!(
                "The agent of workspace {:?} is not connected, so its app {:?} cannot be reached. Start it with `tether agent` inside the workspace.",
                ws.name, app.slug
            ),
        );
    }

    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = Forwarded {
        client: peer,
        host: parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        proto: state.access_url.scheme().to_owned(),
    };
    let mut req = Request::from_parts(parts, body);
    let upgrade = wants_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let host = app_url
        .host_str()
        .map(|h| format!("{h}:{port}"))
        .unwrap_or_default();
    parts.headers = headers::for_upstream(
        &parts.headers,
        &host,
        strip_authorization,
        upgrade,
        &forwarded,
    );
    let path = upstream_path(&app_url, rest_of(parts.uri.path()), parts.uri.query());
    parts.uri = match path.parse() {
        Ok(u) => u,
        Err(_) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Bad app path",
                "The path is not valid.",
            );
        }
    };
    parts.version = http::Version::HTTP_11;
    let upstream_req = http::Request::from_parts(parts, body);

    let lease = state.node.lease(agent);
    let dialed = tokio::time::timeout(DIAL_TIMEOUT, state.node.dial(agent, port)).await;
    let stream = match dialed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return page(
                StatusCode::BAD_GATEWAY,
                "Workspace agent unreachable",
                &format!(
                    "The server could not reach the agent of workspace {:?}: {e}.",
                    ws.name
                ),
            );
        }
        Err(_) => {
            return page(
                StatusCode::BAD_GATEWAY,
                "Workspace agent unreachable",
                &format!(
                    "The server's tailnet node did not reach the agent of workspace {:?} within {}s.",
                    ws.name,
                    DIAL_TIMEOUT.as_secs()
                ),
            );
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return nothing_listening(&ws.name, port, &e.to_string()),
    };
    // The driver owns the tunnel lease: the tunnel stays while bytes still flow.
    tokio::spawn(async move {
        let _lease = lease;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "app connection ended with an error");
        }
    });
    let sent = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(upstream_req)).await;
    let mut resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return nothing_listening(&ws.name, port, &e.to_string()),
        Err(_) => {
            return page(
                StatusCode::GATEWAY_TIMEOUT,
                "App did not answer",
                &format!(
                    "The app on port {port} in workspace {:?} sent no response within {}s.",
                    ws.name,
                    RESPONSE_TIMEOUT.as_secs()
                ),
            );
        }
    };
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let headers = headers::for_client(resp.headers(), switching);
    if switching {
        let Some(client_upgrade) = client_upgrade else {
            return page(
                StatusCode::BAD_GATEWAY,
                "Unexpected upgrade",
                "The app switched protocols without being asked to.",
            );
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) else {
                tracing::debug!("app WebSocket upgrade did not complete");
                return;
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "app WebSocket ended with an error");
            }
        });
        let mut out = Response::new(Body::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *out.headers_mut() = headers;
        return out;
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers = headers;
    Response::from_parts(parts, Body::new(body))
}

/// The workspace and app named in a path app URL, `None` when either does not exist.
async fn resolve(
    state: &AppState,
    user: &str,
    workspace: &str,
    slug: &str,
) -> Result<Option<(tether_store::Workspace, tether_store::App)>, Response> {
    let unavailable = |e: tether_store::StoreError| {
        tracing::error!(error = %e, "store error resolving an app");
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "App unavailable",
            "The server's database could not be read; try again.",
        )
    };
    let Some(owner) = state
        .store
        .user_by_login(user)
        .await
        .map_err(unavailable)?
        .filter(|u| u.username.eq_ignore_ascii_case(user))
    else {
        return Ok(None);
    };
    let Some(ws) = state
        .store
        .workspace_by_name(owner.id, workspace)
        .await
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    let app = state
        .store
        .app_by_slug(ws.id, slug)
        .await
        .map_err(unavailable)?
        .filter(|a| !a.subdomain);
    Ok(app.map(|a| (ws, a)))
}

fn login_page() -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "Log in first",
        "Log in to the dashboard, then open this app again.",
    )
}

fn nothing_listening(workspace: &str, port: u16, error: &str) -> Response {
    page(
        StatusCode::BAD_GATEWAY,
        "Nothing is listening",
        &format!(
            "The agent of workspace {workspace:?} is connected, but nothing answered on port {port} inside it (is the app running?): {error}."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_under_the_app_url() {
        assert_eq!(rest_of("/@alice/dev/apps/code/"), "");
        assert_eq!(rest_of("/@alice/dev/apps/code/a/b%2Fc"), "a/b%2Fc");
        assert_eq!(rest_of("/@alice/dev/apps/code"), "");
        let root = Url::parse("http://127.0.0.1:8080").expect("url");
        let based = Url::parse("http://127.0.0.1:8080/base/").expect("url");
        assert_eq!(upstream_path(&root, "", None), "/");
        assert_eq!(upstream_path(&root, "x/y", Some("q=1")), "/x/y?q=1");
        assert_eq!(upstream_path(&based, "x", None), "/base/x");
    }
}
