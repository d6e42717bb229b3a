//! How a node reaches the tether server: who it is ([`Auth`]), what it asks for
//! ([`ConnConfig`]), and the connection info (`tether_proto::api::ConnectionInfo`)
//! fetched before it joins.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tether_derp::headers::ServerHeaders;
use tether_proto::api::{AGENT_TOKEN_HEADER, ConnectionInfo, SESSION_TOKEN_HEADER, route};
use url::Url;

use super::local::LocalControl;
use crate::error::TailnetError;

/// Cap on each HTTP request and on the coordination WebSocket connect.
pub(super) const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How this node authenticates to the server.
#[derive(Clone)]
pub enum Auth {
    /// A user's session token: this node is a client.
    Session(String),
    /// A workspace agent's token: this node is the agent.
    Agent(String),
    /// The tether server's own node: a client of the coordinator in the same process.
    Local(Arc<dyn LocalControl>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never print them.
        match self {
            Self::Session(_) => f.write_str("Session(..)"),
            Self::Agent(_) => f.write_str("Agent(..)"),
            Self::Local(_) => f.write_str("Local"),
        }
    }
}

impl Auth {
    /// The token header; `None` for an in-process node, which has no token.
    pub(super) fn header(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::Session(t) => Some((SESSION_TOKEN_HEADER, t)),
            Self::Agent(t) => Some((AGENT_TOKEN_HEADER, t)),
            Self::Local(_) => None,
        }
    }

    pub(super) fn is_agent(&self) -> bool {
        matches!(self, Self::Agent(_))
    }

    fn paths(&self) -> (&'static str, &'static str) {
        match self {
            Self::Session(_) | Self::Local(_) => {
                (route::TAILNET_CONNECTION, route::TAILNET_COORDINATE)
            }
            Self::Agent(_) => (route::AGENT_CONNECTION, route::AGENT_COORDINATE),
        }
    }
}

/// How to join the tailnet.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// The tether server, e.g. `https://tether.example.com`.
    pub server: Url,
    /// Who we are.
    pub auth: Auth,
    /// Reach DERP over WebSocket only; `None` follows the server's setting.
    pub force_websockets: Option<bool>,
    /// Accept any TLS certificate on the DERP connections (tests only).
    pub insecure_tls: bool,
    /// Never use direct UDP paths (DERP only), whatever the server allows.
    pub disable_direct: bool,
    /// DERP regions to reach at these URLs instead of their nodes in the map: the
    /// server's own node dials its built-in relay at its own listener, which works even
    /// when the access URL does not from inside the server.
    pub derp_region_urls: BTreeMap<u32, Url>,
    /// Start with this home DERP region instead of measuring (it must be in the map).
    pub home_region: Option<u32>,
    /// Extra headers for every request to the server (connection info, coordination,
    /// DERP and latency checks at the server's origin), for an access proxy in front of
    /// it; see [`ConnConfig::with_headers`].
    pub headers: ServerHeaders,
}

impl ConnConfig {
    /// A config with the server's DERP transport settings.
    pub fn new(server: Url, auth: Auth) -> Self {
        Self {
            server,
            auth,
            force_websockets: None,
            insecure_tls: false,
            disable_direct: false,
            derp_region_urls: BTreeMap::new(),
            home_region: None,
            headers: ServerHeaders::none(),
        }
    }

    /// The same config sending `headers` with every request to the server.
    pub fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        self.headers = ServerHeaders::new(&self.server, headers);
        self
    }

    /// The server URL joined with `path`.
    pub(super) fn url(&self, path: &str) -> Result<Url, TailnetError> {
        self.server
            .join(path)
            .map_err(|e| TailnetError::BadUrl(format!("{}: {e}", self.server)))
    }

    /// The coordination WebSocket's URL (`ws`/`wss`, with our protocol version).
    pub(super) fn coordinate_url(&self) -> Result<Url, TailnetError> {
        let (_, path) = self.auth.paths();
        let mut url = self.url(path)?;
        let scheme = match url.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => {
                return Err(TailnetError::BadUrl(format!(
                    "{}: scheme {other} is not http(s)",
                    self.server
                )));
            }
        };
        url.set_scheme(scheme)
            .map_err(|()| TailnetError::BadUrl(self.server.to_string()))?;
        url.set_query(Some(&route::coordinate_query()));
        Ok(url)
    }
}

/// Fetches the connection info, within [`HTTP_TIMEOUT`].
pub(super) async fn connection_info(cfg: &ConnConfig) -> Result<ConnectionInfo, TailnetError> {
    let (name, token) = match (&cfg.auth, cfg.auth.header()) {
        (Auth::Local(local), _) => return Ok(local.connection_info()),
        (_, Some(header)) => header,
        (_, None) => return Err(TailnetError::Coordination("no token to present".into())),
    };
    let (info_path, _) = cfg.auth.paths();
    let url = cfg.url(info_path)?;
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .default_headers(cfg.headers.for_url(&url).cloned().unwrap_or_default())
        .build()
        .map_err(|e| TailnetError::Unreachable {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    let resp = client
        .get(url.clone())
        .header(name, token)
        .send()
        .await
        .map_err(|e| TailnetError::Unreachable {
            url: cfg.server.to_string(),
            message: e.to_string(),
        })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(TailnetError::Refused {
            what: "the connection info request".into(),
            status: status.as_u16(),
            body,
        });
    }
    resp.json::<ConnectionInfo>()
        .await
        .map_err(|e| TailnetError::Unreachable {
            url: url.to_string(),
            message: format!("bad connection info: {e}"),
        })
}
