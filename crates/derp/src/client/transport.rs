//! Turning a dialed stream into a DERP byte stream: the plain `Upgrade: DERP`, or a
//! WebSocket with subprotocol `derp` whose messages carry the frames.

use tracing::trace;
use url::Url;

use super::dial::dial;
use super::{BoxIo, ClientConfig, ClientError};
use crate::ws::WsIo;

/// Which HTTP transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: DERP`, raw frames on the upgraded stream.
    Upgrade,
    /// WebSocket with subprotocol `derp`.
    WebSocket,
}

pub(super) fn request_path(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

pub(super) async fn plain_upgrade(cfg: &ClientConfig) -> Result<BoxIo, ClientError> {
    let (io, authority) = dial(cfg).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            trace!(error = %e, "DERP upgrade connection ended");
        }
    });
    let mut req = http::Request::get(request_path(&cfg.url))
        .header(http::header::HOST, authority)
        .header(http::header::UPGRADE, "DERP")
        .header(http::header::CONNECTION, "Upgrade")
        .header(
            http::header::USER_AGENT,
            concat!("tether-derp/", env!("CARGO_PKG_VERSION")),
        )
        .body(String::new())
        .map_err(|e| ClientError::BadUrl(e.to_string()))?;
    cfg.headers.apply(&cfg.url, req.headers_mut());
    let resp = sender.send_request(req).await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(ClientError::UpgradeRefused(resp.status().as_u16()));
    }
    let upgraded = hyper::upgrade::on(resp).await?;
    Ok(Box::new(hyper_util::rt::TokioIo::new(upgraded)))
}

pub(super) async fn websocket(cfg: &ClientConfig) -> Result<BoxIo, ClientError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut ws_url = cfg.url.clone();
    let scheme = if matches!(cfg.url.scheme(), "https" | "wss") {
        "wss"
    } else {
        "ws"
    };
    ws_url
        .set_scheme(scheme)
        .map_err(|()| ClientError::BadUrl("cannot build WebSocket URL".into()))?;
    let mut req = ws_url.as_str().into_client_request()?;
    req.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(crate::http::WS_PROTOCOL),
    );
    cfg.headers.apply(&cfg.url, req.headers_mut());
    let (io, _) = dial(cfg).await?;
    let config = Some(crate::ws::client_config());
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(req, io, config).await?;
    Ok(Box::new(WsIo::new(ws)))
}
