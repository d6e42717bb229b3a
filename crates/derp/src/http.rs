//! HTTP endpoints of a DERP node, as an axum router the tether server merges into
//! its own: `/derp` (plain `Upgrade: DERP` or WebSocket with subprotocol `derp`),
//! `/derp/probe`, `/derp/latency-check` and `/generate_204`.
//!
//! Derp-Fast-Start (no HTTP response before DERP bytes) is not offered: the server
//! always answers `101 Switching Protocols`, which fast-start clients accept too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use tether_proto::derpmap::DERP_PATH;
use tracing::debug;

use crate::frame::PROTOCOL_VERSION;
use crate::server::Server;
use crate::ws::{MAX_MESSAGE, WsIo};

/// Subprotocol name for DERP over WebSocket.
pub const WS_PROTOCOL: &str = "derp";

/// The DERP routes with the server applied as state, ready to `.merge()`.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route(DERP_PATH, get(derp).post(derp))
        .route("/derp/probe", get(probe).head(probe))
        .route("/derp/latency-check", get(probe).head(probe))
        .route("/generate_204", get(generate_204))
        .with_state(server)
}

fn header_tokens<'a>(
    h: &'a HeaderMap,
    name: header::HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    h.get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn upgrade_required() -> Response {
    (
        StatusCode::UPGRADE_REQUIRED,
        [(header::UPGRADE, "DERP")],
        "DERP requires connection upgrade (Upgrade: DERP or a WebSocket with subprotocol derp)\n",
    )
        .into_response()
}

async fn derp(State(server): State<Arc<Server>>, mut req: Request) -> Response {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let headers = req.headers();
    let wants =
        |p: &str| header_tokens(headers, header::UPGRADE).any(|t| t.eq_ignore_ascii_case(p));

    if wants("websocket") {
        if !header_tokens(headers, header::SEC_WEBSOCKET_PROTOCOL)
            .any(|t| t.eq_ignore_ascii_case(WS_PROTOCOL))
        {
            return upgrade_required();
        }
        let (mut parts, _body) = req.into_parts();
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws,
            Err(rejection) => return rejection.into_response(),
        };
        return ws
            .protocols([WS_PROTOCOL])
            .max_message_size(MAX_MESSAGE)
            .max_frame_size(MAX_MESSAGE)
            .on_upgrade(move |socket| async move {
                let mut io = WsIo::new(socket);
                if let Err(e) = server.accept(&mut io, remote).await {
                    debug!(error = %e, ?remote, "websocket DERP connection ended with error");
                }
                if server.is_shutting_down() {
                    io.going_away().await;
                }
            });
    }
    if !wants("derp") {
        return upgrade_required();
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        debug!("DERP upgrade requested on a connection that cannot be upgraded");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection cannot be upgraded\n",
        )
            .into_response();
    };
    let public = server.public_key().to_hex();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = server.accept(TokioIo::new(upgraded), remote).await {
                    debug!(error = %e, ?remote, "DERP connection ended with error");
                }
            }
            Err(e) => debug!(error = %e, ?remote, "DERP upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("DERP"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert("Derp-Version", HeaderValue::from(PROTOCOL_VERSION));
    if let Ok(v) = HeaderValue::from_str(&public) {
        h.insert("Derp-Public-Key", v);
    }
    resp
}

async fn probe() -> Response {
    (StatusCode::OK, [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")]).into_response()
}

/// Captive-portal check: echo a sane challenge so the client knows nothing rewrote us.
async fn generate_204(headers: HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let challenge = headers
        .get("X-Tailscale-Challenge")
        .and_then(|v| v.to_str().ok());
    if let Some(c) = challenge
        && !c.is_empty()
        && c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
        && let Ok(v) = HeaderValue::from_str(&format!("response {c}"))
    {
        resp.headers_mut().insert("X-Tailscale-Response", v);
    }
    resp
}
