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
