//! Plain records passed in and out of the store.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: Uuid,
    /// Login name, unique case-insensitively.
    pub username: String,
    /// Email address, unique case-insensitively.
    pub email: String,
    /// Whether the user may administer the server.
    pub is_admin: bool,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// argon2id PHC string (see [`crate::secret::hash_password`]).
    pub password_hash: String,
    /// Whether the user may log in.
    pub status: UserStatus,
}

/// Whether a user may log in, after Coder's user status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserStatus {
    /// May log in.
    Active,
    /// May not log in; their sessions do not resolve until they are active again.
    Suspended,
}

impl UserStatus {
    /// The stored (and API) spelling: `active` or `suspended`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
        }
    }

    /// The status spelled `s`; anything but `active` reads as suspended, so a value this
    /// version does not know never lets a user in.
    pub fn from_stored(s: &str) -> Self {
        if s == "active" {
            UserStatus::Active
        } else {
            UserStatus::Suspended
        }
    }
}

/// A login session, without its token (which the store never holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the session token.
    pub token_hash: [u8; 32],
    /// The user it belongs to.
    pub user_id: Uuid,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// When it was last used (recorded to the minute).
    pub last_used_at: DateTime<Utc>,
}

impl Session {
    /// The session's public id: the first 8 bytes of its token hash in hex. It names the
    /// session in listings and revocations and reveals nothing about the token.
    pub fn id(&self) -> String {
        session_id(&self.token_hash)
    }
}

/// The public id of the session whose token hashes to `token_hash` (see [`Session::id`]).
pub fn session_id(token_hash: &[u8; 32]) -> String {
    token_hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a change to a user (suspend, activate, delete) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    /// Done; the user as it is now (as it was, for a deletion).
    Done(User),
    /// No user has that id.
    NotFound,
    /// The user is the last active admin, whom the server cannot lose.
    LastAdmin,
    /// The user still owns this many workspaces (deletion only).
    HasWorkspaces(u64),
}

/// What [`crate::Store::create_user`] needs.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// Email address.
    pub email: String,
    /// argon2id PHC string, never the password itself.
    pub password_hash: String,
    /// Whether the user may administer the server.
    pub is_admin: bool,
}

/// A workspace and its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Stable id.
    pub id: Uuid,
    /// The owning user's id.
    pub owner_id: Uuid,
    /// The owning user's username (joined in for display and URLs).
    pub owner_username: String,
    /// Name, unique per owner.
    pub name: String,
    /// The agent's id on the tailnet.
    pub agent_id: Uuid,
    /// When the workspace was created.
    pub created_at: DateTime<Utc>,
    /// When its agent was last connected, if ever.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The agent's home DERP region when last seen.
    pub last_relay: Option<u32>,
}

/// What [`crate::Store::create_workspace`] needs.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    /// The owning user's id.
    pub owner_id: Uuid,
    /// Name, unique per owner.
    pub name: String,
    /// The agent's id on the tailnet.
    pub agent_id: Uuid,
    /// SHA-256 of the agent's token (see [`crate::secret::hash_token`]).
    pub agent_token_hash: [u8; 32],
}

/// A web app declared on a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Stable id.
    pub id: Uuid,
    /// The workspace it belongs to.
    pub workspace_id: Uuid,
    /// Its URL slug, unique per workspace.
    pub slug: String,
    /// What the dashboard calls it.
    pub display_name: String,
    /// Where it listens inside the workspace (`http://127.0.0.1:8080`).
    pub url: String,
    /// Served on its own subdomain rather than under a path.
    pub subdomain: bool,
    /// Who may open it (`owner`, `authenticated`, `public`; the server checks the value).
    pub share: String,
    /// When it was declared.
    pub created_at: DateTime<Utc>,
}

/// What [`crate::Store::create_app`] needs.
#[derive(Debug, Clone)]
pub struct NewApp {
    /// The workspace it belongs to.
    pub workspace_id: Uuid,
    /// Its URL slug.
    pub slug: String,
    /// What the dashboard calls it.
    pub display_name: String,
    /// Where it listens inside the workspace.
    pub url: String,
    /// Served on its own subdomain.
    pub subdomain: bool,
    /// Who may open it.
    pub share: String,
}
