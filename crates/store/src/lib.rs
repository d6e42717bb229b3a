//! `tether-store` is the server's persistent state: users and their password hashes,
//! login sessions, workspaces with their agent credentials and declared web apps, and a few server-wide
//! settings. It is one cheap-to-clone [`Store`] handle whose async methods are the whole
//! API; [`secret`] holds the token and password helpers that decide what gets stored
//! (hashes only, never a raw token or password).
//!
//! Only SQLite is implemented today (one file, WAL journal, migrations applied at open).
//! PostgreSQL, needed for several server replicas, is deliberately absent: the backend is
//! an internal enum and the SQL is kept portable, so it can be added without touching
//! callers. There is no caching, no business rules (name validation, permissions) and no
//! clock: callers pass `now`. `tether-server` drives it from its HTTP handlers, auth
//! middleware and coordinator.

mod error;
mod model;
mod permissions;
pub mod secret;
mod sqlite;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use error::StoreError;
pub use model::{
    App, NewApp, NewUser, NewWorkspace, Session, User, UserChange, UserStatus, Workspace,
    session_id,
};
pub use permissions::private_dir;

/// Handle to the database; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

/// The database behind a [`Store`]. A PostgreSQL variant will sit next to SQLite.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteBackend),
}

impl Store {
    /// Opens (creating if missing, parent directories included) the SQLite database at
    /// `path` and brings its schema up to date. The database holds password hashes and the
    /// relay's private key, so on Unix a directory it creates is 0700 and the database
    /// files (the database, its `-wal` and `-shm`) are 0600; existing files with wider
    /// modes are narrowed, with a log line.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let backend = sqlite::SqliteBackend::open(path).await?;
        Ok(Store {
            backend: Backend::Sqlite(backend),
        })
    }

    /// Closes every pooled connection, flushing the journal; later calls fail with
    /// [`StoreError::Unavailable`]. Dropping all clones also closes, but not awaitably.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => db.close().await,
        }
    }

    /// Health check: the round-trip time of a trivial query.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.ping().await,
        }
    }

    /// Number of users; zero means the first user to sign up becomes the admin.
    pub async fn user_count(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.user_count().await,
        }
    }

    /// Creates a user. Usernames and emails are unique case-insensitively;
    /// a clash is [`StoreError::Conflict`].
    pub async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.create_user(new).await,
        }
    }

    /// Creates `new` as the first user, atomically: `None` (and nothing written) when any
    /// user exists already, so of several simultaneous callers exactly one succeeds.
    pub async fn create_first_user(&self, new: NewUser) -> Result<Option<User>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.create_first_user(new).await,
        }
    }

    /// Finds a user by username or email (case-insensitive); a username match wins.
    pub async fn user_by_login(&self, username_or_email: &str) -> Result<Option<User>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.user_by_login(username_or_email).await,
        }
    }

    /// Every user, ordered by username.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.list_users().await,
        }
    }

    /// Sets a user's status. Suspending the last active admin is refused
    /// ([`UserChange::LastAdmin`]), atomically, so two admins suspending each other at
    /// once cannot leave the server without one. Sessions are not touched here.
    pub async fn set_user_status(
        &self,
        id: Uuid,
        status: UserStatus,
    ) -> Result<UserChange, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.set_user_status(id, status).await,
        }
    }

    /// Deletes a user and their sessions, unless they own workspaces
    /// ([`UserChange::HasWorkspaces`]) or are the last active admin, both checked in the
    /// deleting statement itself.
    pub async fn delete_user(&self, id: Uuid) -> Result<UserChange, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.delete_user(id).await,
        }
    }

    /// Finds a user by id.
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.user_by_id(id).await,
        }
    }

    /// Records a login session, keyed by the SHA-256 of its token
    /// (see [`secret::hash_token`]). An unknown user is [`StoreError::NotFound`].
    pub async fn create_session(
        &self,
        user_id: Uuid,
        token_hash: [u8; 32],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.create_session(user_id, token_hash, expires_at).await,
        }
    }

    /// The user owning a session that has not expired at `now`, or `None` (also when
    /// the user is suspended). A hit records `now` as the session's last use.
    pub async fn session_user(
        &self,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        Ok(self.session(token_hash, now).await?.map(|(user, _)| user))
    }

    /// Like [`Store::session_user`], with the session itself (for its expiry).
    pub async fn session(
        &self,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<(User, Session)>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.session(token_hash, now).await,
        }
    }

    /// A user's sessions that have not expired at `now`, newest first.
    pub async fn sessions_for_user(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.sessions_for_user(user_id, now).await,
        }
    }

    /// Deletes every session of a user; returns how many there were.
    pub async fn delete_user_sessions(&self, user_id: Uuid) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.delete_user_sessions(user_id).await,
        }
    }

    /// Deletes a session (logout). Deleting an unknown session is not an error.
    pub async fn delete_session(&self, token_hash: [u8; 32]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.delete_session(token_hash).await,
        }
    }

    /// Deletes every session expired at `now`; returns how many were removed.
    pub async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.delete_expired_sessions(now).await,
        }
    }

    /// Creates a workspace. A second workspace with the same name for the same owner is
    /// [`StoreError::Conflict`]; an unknown owner is [`StoreError::NotFound`].
    pub async fn create_workspace(&self, new: NewWorkspace) -> Result<Workspace, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.create_workspace(new).await,
        }
    }

    /// The workspaces of one owner, ordered by name.
    pub async fn workspaces_for_owner(&self, owner: Uuid) -> Result<Vec<Workspace>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.workspaces_for_owner(owner).await,
        }
    }

    /// Every workspace, ordered by owner username then name.
    pub async fn all_workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.all_workspaces().await,
        }
    }

    /// One owner's workspace by exact name.
    pub async fn workspace_by_name(
        &self,
        owner: Uuid,
        name: &str,
    ) -> Result<Option<Workspace>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.workspace_by_name(owner, name).await,
        }
    }

    /// The workspace whose agent token hashes to `hash` (agent authentication).
    pub async fn workspace_by_agent_token(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<Workspace>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.workspace_by_agent_token(hash).await,
        }
    }

    /// Deletes a workspace; `false` if there was none with that id.
    pub async fn delete_workspace(&self, id: Uuid) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.delete_workspace(id).await,
        }
    }

    /// Records that an agent was connected at `at`, with its home DERP region if known.
    /// An unknown agent is ignored (its workspace may have just been deleted).
    pub async fn record_agent_seen(
        &self,
        agent_id: Uuid,
        at: DateTime<Utc>,
        relay: Option<u32>,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.record_agent_seen(agent_id, at, relay).await,
        }
    }

    /// A server-wide setting, if set.
    pub async fn config_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.config_value(key).await,
        }
    }

    /// Stores `value` under `key` unless a value is already there, and returns whichever
    /// value is stored: the first writer wins, even across concurrent callers and replicas.
    pub async fn config_value_or_insert(
        &self,
        key: &str,
        value: &str,
    ) -> Result<String, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.config_value_or_insert(key, value).await,
        }
    }

    /// Declares an app on a workspace. A second app with the same slug on the same
    /// workspace is [`StoreError::Conflict`]; an unknown workspace is [`StoreError::NotFound`].
    pub async fn create_app(&self, new: NewApp) -> Result<App, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.create_app(new).await,
        }
    }

    /// A workspace's apps, ordered by slug.
    pub async fn apps_for_workspace(&self, workspace: Uuid) -> Result<Vec<App>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.apps_for_workspace(workspace).await,
        }
    }

    /// One app of a workspace by exact slug.
    pub async fn app_by_slug(
        &self,
        workspace: Uuid,
        slug: &str,
    ) -> Result<Option<App>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.app_by_slug(workspace, slug).await,
        }
    }

    /// Removes an app; `false` if the workspace had none with that slug.
    pub async fn delete_app(&self, workspace: Uuid, slug: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.delete_app(workspace, slug).await,
        }
    }
}
