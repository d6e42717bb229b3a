//! The HTTP API under `/api/v2`: request and response bodies, the error body, the
//! authentication header names, and (in [`route`]) the paths.

pub mod route;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::derpmap::DerpMap;

/// Header carrying a user's session token (Coder calls it `Coder-Session-Token`).
pub const SESSION_TOKEN_HEADER: &str = "Tether-Session-Token";
/// Header carrying a workspace agent's token.
pub const AGENT_TOKEN_HEADER: &str = "Tether-Agent-Token";

/// What a deployment with `--browser-only` answers (409) to a user's tailnet connection,
/// and what the CLI prints then.
pub const BROWSER_ONLY_MESSAGE: &str = "Non-browser connections are disabled for your deployment.";

/// The JSON body of every error response: `{"message": "...", "detail": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One sentence for the user.
    pub message: String,
    /// More detail, when there is any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A user as the API shows it (never with a password hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub id: Uuid,
    /// Login name.
    pub username: String,
    /// Email address.
    pub email: String,
    /// May create users.
    pub is_admin: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Whether the user may log in (absent from older servers: active).
    #[serde(default)]
    pub status: UserStatus,
}

/// Whether a user may log in, after Coder's user status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// May log in; their sessions work.
    #[default]
    Active,
    /// May not log in, and their sessions do not work until they are activated again.
    Suspended,
}

impl UserStatus {
    /// The spelling on the wire: `active` or `suspended`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
        }
    }
}

/// `GET /api/v2/users` (admins only): every user, by username.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    /// The users.
    pub users: Vec<User>,
    /// How many.
    pub count: usize,
}

/// `POST /api/v2/users/first` and `POST /api/v2/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUserRequest {
    /// Login name (DNS-label rules).
    pub username: String,
    /// Email address.
    pub email: String,
    /// Password, at least 8 characters.
    pub password: String,
    /// Make the user an admin (ignored for the first user, who always is).
    #[serde(default)]
    pub is_admin: bool,
}

/// `POST /api/v2/users/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// Username or email.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A fresh session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The session token (shown once; stored only as a hash on the server).
    pub session_token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Who logged in.
    pub user: User,
}

/// `POST /api/v2/workspaces`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateWorkspaceRequest {
    /// Workspace name (DNS-label rules).
    pub name: String,
}

/// Agent connection status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// The agent holds a coordinator connection now.
    Connected,
    /// It does not.
    Disconnected,
}

/// A DERP region reference.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Relay {
    /// Region ID.
    pub region_id: u32,
    /// Region code.
    pub region_code: String,
    /// Region name.
    pub region_name: String,
}

/// A workspace as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workspace {
    /// Workspace id.
    pub id: Uuid,
    /// Name, unique per owner.
    pub name: String,
    /// Owner's username.
    pub owner: String,
    /// The agent's id (its tailnet identity).
    pub agent_id: Uuid,
    /// Whether the agent is connected.
    pub status: AgentStatus,
    /// When the agent was last heard from (now, if connected).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The agent's home DERP region.
    pub relay: Option<Relay>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// The agent's version, as it last connected (null while unknown).
    #[serde(default)]
    pub agent_version: Option<String>,
    /// How the server's own tailnet node reaches the agent now; null without a tunnel.
    #[serde(default)]
    pub server_path: Option<ServerPath>,
}

/// How a path reaches an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Peer to peer over UDP.
    Direct,
    /// Relayed by a DERP server.
    Derp,
}

/// How the server's own tailnet node reaches an agent (the path the web terminal and
/// other browser traffic take).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerPath {
    /// Direct or relayed.
    pub kind: PathKind,
    /// Round trip of the latest ping, when one was answered lately.
    pub latency_ms: Option<f64>,
    /// The DERP region's name, when relayed.
    pub derp_region: Option<String>,
    /// The agent's UDP address, when direct.
    pub endpoint: Option<String>,
    /// Why the path is not direct (null when it is).
    pub reason: Option<String>,
}

/// One TCP port listening in a workspace (from the agent's `/proc/net/tcp{,6}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningPort {
    /// The listening process's name, where the agent could tell (else empty).
    #[serde(default)]
    pub process_name: String,
    /// `tcp`.
    pub network: String,
    /// The port.
    pub port: u16,
}

/// `GET /api/v2/workspaceagents/{id}/listening-ports` (and the agent's own
/// `GET /api/v0/listening-ports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningPorts {
    /// The ports, as the agent lists them.
    pub ports: Vec<ListeningPort>,
}

/// The answer to creating a workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateWorkspaceResponse {
    /// The workspace.
    pub workspace: Workspace,
    /// The agent token, shown only this once.
    pub agent_token: String,
}

/// What a peer needs besides the coordinator to join the tailnet
/// (`GET /api/v2/tailnet/connection`, after Coder's agent connection info).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// The effective DERP map.
    pub derp_map: DerpMap,
    /// Reach DERP over WebSocket only (false when a server leaves it out).
    #[serde(default)]
    pub derp_force_websockets: bool,
    /// The server forbids direct paths (false when a server leaves it out).
    #[serde(default)]
    pub disable_direct_connections: bool,
}

/// `GET /api/v2/buildinfo`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Server version.
    pub version: String,
    /// Coordination protocol version.
    pub coordination_version: String,
}

/// Health severities, after Coder's: minor issues are warnings, not alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// All good.
    Ok,
    /// Works, with a caveat.
    Warning,
    /// Broken.
    Error,
}

/// One section of the health report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthSection {
    /// How bad.
    pub severity: Severity,
    /// A stable code for the worst problem, or null when healthy.
    pub code: Option<String>,
    /// One sentence.
    pub message: String,
    /// Section-specific facts.
    #[serde(default)]
    pub details: serde_json::Value,
}

/// `GET /api/v2/debug/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    /// True unless some section has severity error.
    pub healthy: bool,
    /// Worst severity of the sections.
    pub severity: Severity,
    /// When the report was made.
    pub time: DateTime<Utc>,
    /// Database section.
    pub database: HealthSection,
    /// DERP section.
    pub derp: HealthSection,
    /// STUN section.
    pub stun: HealthSection,
    /// Coordinator section.
    pub coordinator: HealthSection,
    /// The server's own tailnet node and its paths to agents.
    pub server_tailnet: HealthSection,
    /// Only browser connections are allowed (`--browser-only`).
    #[serde(default)]
    pub browser_only: bool,
}

/// A fresh dashboard session (`"set_cookie": true`): the token went into the
/// `tether_session_token` cookie and is deliberately absent here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrowserSession {
    /// When the session expires.
    pub expires_at: DateTime<Utc>,
    /// Who logged in.
    pub user: User,
}

/// `GET /api/v2/deployment`: public facts the dashboard needs before anyone logs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// The access URL.
    pub access_url: String,
    /// Only browser connections are allowed (no CLI tailnet connections).
    pub browser_only: bool,
    /// The wildcard URL for subdomain apps, when configured.
    pub wildcard_access_url: Option<String>,
    /// Path-based apps are turned off.
    pub disable_path_apps: bool,
    /// Server version.
    pub version: String,
}

/// Who may open a workspace app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppShare {
    /// Only the workspace's owner.
    #[default]
    Owner,
    /// Any logged-in user.
    Authenticated,
    /// Anyone, without logging in.
    Public,
}

impl AppShare {
    /// The level as the API and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Authenticated => "authenticated",
            Self::Public => "public",
        }
    }

    /// Parses [`AppShare::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Owner, Self::Authenticated, Self::Public]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// `POST /api/v2/workspaces/{name}/apps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateAppRequest {
    /// URL slug (DNS-label rules).
    pub slug: String,
    /// Where the app listens inside the workspace, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// What the dashboard calls it; the slug when empty.
    #[serde(default)]
    pub display_name: String,
    /// Served on its own subdomain instead of under a path.
    #[serde(default)]
    pub subdomain: bool,
    /// Who may open it.
    #[serde(default)]
    pub share: AppShare,
}

/// A workspace app as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    /// App id.
    pub id: Uuid,
    /// URL slug, unique per workspace.
    pub slug: String,
    /// What the dashboard calls it.
    pub display_name: String,
    /// Where it listens inside the workspace.
    pub url: String,
    /// Served on its own subdomain.
    pub subdomain: bool,
    /// Who may open it.
    pub share: AppShare,
    /// Where a browser opens it on this server (a path app's path, absolute); null when
    /// it cannot be opened here (a subdomain app without a wildcard URL, or path apps
    /// disabled).
    #[serde(default)]
    pub open_url: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests;
