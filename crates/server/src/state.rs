//! The explicit state every handler receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tether_store::Store;
use url::Url;

use crate::coordinate::Hub;
use crate::node::ServerNode;

/// What the built-in STUN server looks like from the outside.
#[derive(Clone)]
pub struct StunInfo {
    /// The bound UDP address.
    pub addr: std::net::SocketAddr,
    /// Live counters.
    pub stats: tether_stun::server::ServerStats,
}

/// Facts about the DERP map source, for health.
#[derive(Debug, Clone, Default)]
pub struct DerpMapStatus {
    /// Last error refreshing --derp-config-url, if the last try failed.
    pub last_refresh_error: Option<String>,
}

/// The deployment's web-app switches (`--disable-path-apps`,
/// `--dangerous-allow-path-app-sharing`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AppsPolicy {
    /// Path apps answer 403.
    pub disable_path_apps: bool,
    /// Path apps honour their share level instead of opening for the owner only.
    pub allow_path_app_sharing: bool,
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Users, sessions, workspaces.
    pub store: Store,
    /// The coordinator and its sockets.
    pub hub: Arc<Hub>,
    /// The built-in relay, when enabled.
    pub derp: Option<Arc<tether_derp::server::Server>>,
    /// The built-in STUN server, when enabled.
    pub stun: Option<StunInfo>,
    /// The access URL.
    pub access_url: Url,
    /// Tell clients to reach DERP over WebSocket only.
    pub derp_force_websockets: bool,
    /// Forbid direct paths.
    pub block_direct: bool,
    /// DERP map refresh status.
    pub derp_map_status: Arc<RwLock<DerpMapStatus>>,
    /// Password hashing and login limits.
    pub passwords: Arc<crate::passwords::Passwords>,
    /// The server's own tailnet node (the web terminal and other browser traffic).
    pub node: Arc<ServerNode>,
    /// Users' tailnet connections are refused; only the browser path works.
    pub browser_only: bool,
    /// How long a login session lasts.
    pub session_duration: std::time::Duration,
    /// How web apps may be reached.
    pub apps: AppsPolicy,
    /// Each agent's version as it last connected (from its coordination request).
    pub agent_versions: Arc<Mutex<HashMap<uuid::Uuid, String>>>,
    /// Cancelled when the server starts shutting down: every WebSocket then closes with
    /// 1001 (going away).
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// Agent `agent`'s version as it last connected, if known.
    pub fn agent_version(&self, agent: uuid::Uuid) -> Option<String> {
        self.agent_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&agent)
            .cloned()
    }
}
