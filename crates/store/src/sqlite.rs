//! The SQLite backend: one database file in WAL mode behind a small connection pool.
//!
//! SQL here sticks to what PostgreSQL also accepts (`$n` placeholders, `ON CONFLICT`,
//! `lower()` indexes) so a second backend can mostly reuse it. Timestamps are bound as
//! `DateTime<Utc>` (RFC 3339 text in SQLite) and compared in Rust, because SQLite's text
//! comparison of timestamps with varying fractional digits would not order correctly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::Row;
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use crate::{NewUser, NewWorkspace, Session, StoreError, User, UserStatus, Workspace};

mod accounts;

mod apps;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock before failing busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite allows one writer at a time; a few connections are enough for concurrent reads.
const MAX_CONNECTIONS: u32 = 4;

/// SQLite primary result codes that mean "the database cannot be used right now" rather
/// than "this statement is wrong": BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN,
/// NOTADB. Extended codes carry the primary code in their low byte.
const UNAVAILABLE_CODES: [i32; 8] = [5, 6, 8, 10, 11, 13, 14, 26];

/// A session's last use is recorded to this precision.
const LAST_USED_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

const USER_COLUMNS: &str = "id, username, email, is_admin, created_at, password_hash, status";

/// The workspace columns a [`Workspace`] is built from, owner username joined in.
macro_rules! workspace_select {
    () => {
        "SELECT w.id, w.owner_id, u.username AS owner_username, w.name, w.agent_id, \
         w.created_at, w.last_seen_at, w.last_relay \
         FROM workspaces w JOIN users u ON u.id = w.owner_id"
    };
}

/// A pool on one SQLite file, plus its path for error messages.
#[derive(Debug, Clone)]
pub(crate) struct SqliteBackend {
    pool: SqlitePool,
    path: Arc<PathBuf>,
}

impl SqliteBackend {
    pub(crate) async fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let cannot_open = |reason: String| {
            StoreError::Unavailable(format!("cannot open database {shown}: {reason}"))
        };

        // The data directory may not exist on first run. If `parent` exists but is not a
        // directory, the open below reports that precisely.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !tokio::fs::try_exists(parent).await.unwrap_or(false)
        {
            crate::permissions::private_dir(parent).map_err(|e| {
                cannot_open(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        // SQLite only says "unable to open database file"; opening it ourselves first
        // turns that into the OS's reason (permission denied, not a directory, ...).
        let mut create = tokio::fs::OpenOptions::new();
        create.read(true).write(true).create(true).truncate(false);
        // SQLite gives the -wal and -shm files it creates the database file's mode.
        #[cfg(unix)]
        create.mode(0o600);
        create
            .open(path)
            .await
            .map_err(|e| cannot_open(e.to_string()))?;
        crate::permissions::private_files(path).map_err(|e| cannot_open(e.to_string()))?;

        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across process crashes in WAL mode; only a power loss can
            // drop the last transactions, which is acceptable for this data.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| match classify(&e) {
                Some(reason) => cannot_open(reason),
                None => StoreError::Other(e),
            })?;

        if let Err(source) = MIGRATOR.run(&pool).await {
            pool.close().await;
            // A migration that fails because the disk is full or locked is an availability
            // problem, not a schema one; report it as such.
            let unavailable = match &source {
                sqlx::migrate::MigrateError::Execute(e) => classify(e),
                _ => None,
            };
            return Err(match unavailable {
                Some(reason) => cannot_open(reason),
                None => StoreError::Migration {
                    path: shown,
                    source,
                },
            });
        }
        // The pool has made -wal and -shm by now, with the database file's mode; make
        // sure of it, cheaply.
        crate::permissions::private_files(path).map_err(|e| cannot_open(e.to_string()))?;
        tracing::info!(path = %shown, "store opened (sqlite)");
        Ok(Self {
            pool,
            path: Arc::new(path.to_path_buf()),
        })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
        tracing::debug!(path = %self.path.display(), "store closed");
    }

    /// Maps a driver error to [`StoreError`], naming the database file when the cause
    /// is the database being unusable rather than the statement.
    fn err(&self, e: sqlx::Error) -> StoreError {
        match classify(&e) {
            Some(reason) => {
                StoreError::Unavailable(format!("database {}: {reason}", self.path.display()))
            }
            None => StoreError::Other(e),
        }
    }

    pub(crate) async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let _one: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(start.elapsed())
    }

    pub(crate) async fn user_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        self.insert_user(new, false)
            .await?
            .ok_or_else(|| StoreError::Conflict("the user was not created".to_owned()))
    }

    pub(crate) async fn create_first_user(&self, new: NewUser) -> Result<Option<User>, StoreError> {
        self.insert_user(new, true).await
    }

    /// Inserts a user; with `only_if_first`, in the same statement as the check that the
    /// table is empty (one statement is atomic), and `None` when it was not.
    async fn insert_user(
        &self,
        new: NewUser,
        only_if_first: bool,
    ) -> Result<Option<User>, StoreError> {
        let user = User {
            id: Uuid::new_v4(),
            username: new.username,
            email: new.email,
            is_admin: new.is_admin,
            created_at: now_micros(),
            password_hash: new.password_hash,
            status: UserStatus::Active,
        };
        let sql = if only_if_first {
            "INSERT INTO users (id, username, email, is_admin, created_at, password_hash) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM users)"
        } else {
            "INSERT INTO users (id, username, email, is_admin, created_at, password_hash) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        };
        let inserted = sqlx::query(sql)
            .bind(user.id)
            .bind(&user.username)
            .bind(&user.email)
            .bind(user.is_admin)
            .bind(user.created_at)
            .bind(&user.password_hash)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(done) if done.rows_affected() == 0 => {
                tracing::debug!(user = %user.username, "not the first user: one exists already");
                Ok(None)
            }
            Ok(_) => {
                tracing::info!(user = %user.username, admin = user.is_admin, "user created");
                Ok(Some(user))
            }
            Err(e) if is_kind(&e, ErrorKind::UniqueViolation) => {
                Err(StoreError::Conflict(self.user_conflict(&user).await?))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Says which unique field of `user` clashed with an existing row.
    async fn user_conflict(&self, user: &User) -> Result<String, StoreError> {
        let exists = |sql: &'static str, value: String| async move {
            sqlx::query(sql)
                .bind(value)
                .fetch_optional(&self.pool)
                .await
                .map(|row| row.is_some())
                .map_err(|e| self.err(e))
        };
        if exists(
            "SELECT 1 FROM users WHERE lower(username) = lower($1)",
            user.username.clone(),
        )
        .await?
        {
            return Ok(format!("a user named {} already exists", user.username));
        }
        if exists(
            "SELECT 1 FROM users WHERE lower(email) = lower($1)",
            user.email.clone(),
        )
        .await?
        {
            return Ok(format!("a user with email {} already exists", user.email));
        }
        Ok(format!("a user with id {} already exists", user.id))
    }

    pub(crate) async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE lower(username) = lower($1) OR lower(email) = lower($1) \
             ORDER BY CASE WHEN lower(username) = lower($1) THEN 0 ELSE 1 END LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(login)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.as_ref()
            .map(user_from_row)
            .transpose()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.as_ref()
            .map(user_from_row)
            .transpose()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn create_session(
        &self,
        user_id: Uuid,
        token_hash: [u8; 32],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = now_micros();
        let inserted = sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $3)",
        )
        .bind(&token_hash[..])
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {
                tracing::debug!(user_id = %user_id, %expires_at, "session created");
                Ok(())
            }
            Err(e) if is_kind(&e, ErrorKind::ForeignKeyViolation) => {
                Err(StoreError::NotFound(format!("no user with id {user_id}")))
            }
            Err(e) if is_kind(&e, ErrorKind::UniqueViolation) => Err(StoreError::Conflict(
                "a session with that token already exists".to_owned(),
            )),
            Err(e) => Err(self.err(e)),
        }
    }

    pub(crate) async fn session(
        &self,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<(User, Session)>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.email, u.is_admin, u.created_at, u.password_hash, \
             u.status, s.created_at AS session_created_at, s.expires_at, s.last_used_at \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
        )
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires_at: DateTime<Utc> = row.try_get("expires_at").map_err(|e| self.err(e))?;
        if expires_at <= now {
            tracing::debug!(%expires_at, "session expired");
            return Ok(None);
        }
        let user = user_from_row(&row).map_err(|e| self.err(e))?;
        if user.status != UserStatus::Active {
            tracing::debug!(user = %user.username, "session of a suspended user");
            return Ok(None);
        }
        let last_used: DateTime<Utc> = row.try_get("last_used_at").map_err(|e| self.err(e))?;
        let session = Session {
            token_hash,
            user_id: user.id,
            created_at: row.try_get("session_created_at").map_err(|e| self.err(e))?,
            expires_at,
            last_used_at: last_used,
        };
        // Last use is bookkeeping: written at most once per LAST_USED_GRANULARITY, so
        // reads do not turn into writes, and a failed write (a full disk, a locked
        // database) is logged without refusing a session that is valid.
        if now - last_used >= LAST_USED_GRANULARITY {
            let update = sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(&token_hash[..])
                .execute(&self.pool)
                .await;
            if let Err(e) = update {
                tracing::warn!(error = %self.err(e), "could not record the session's last use");
            }
        }
        Ok(Some((user, session)))
    }

    pub(crate) async fn delete_session(&self, token_hash: [u8; 32]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(&token_hash[..])
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) async fn delete_expired_sessions(
        &self,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Read then delete by key: expiry is compared in Rust (see the module docs).
        let rows = sqlx::query("SELECT token_hash, expires_at FROM sessions")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        let mut removed = 0;
        for row in rows {
            let expires_at: DateTime<Utc> = row.try_get("expires_at").map_err(|e| self.err(e))?;
            if expires_at > now {
                continue;
            }
            let hash: Vec<u8> = row.try_get("token_hash").map_err(|e| self.err(e))?;
            removed += sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(hash)
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?
                .rows_affected();
        }
        if removed > 0 {
            tracing::debug!(removed, "expired sessions deleted");
        }
        Ok(removed)
    }

    pub(crate) async fn create_workspace(
        &self,
        new: NewWorkspace,
    ) -> Result<Workspace, StoreError> {
        let id = Uuid::new_v4();
        let inserted = sqlx::query(
            "INSERT INTO workspaces (id, owner_id, name, agent_id, agent_token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(new.owner_id)
        .bind(&new.name)
        .bind(new.agent_id)
        .bind(&new.agent_token_hash[..])
        .bind(now_micros())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_kind(&e, ErrorKind::ForeignKeyViolation) => {
                return Err(StoreError::NotFound(format!(
                    "no user with id {}",
                    new.owner_id
                )));
            }
            Err(e) if is_kind(&e, ErrorKind::UniqueViolation) => {
                return Err(StoreError::Conflict(self.workspace_conflict(&new).await?));
            }
            Err(e) => return Err(self.err(e)),
        }
        let row = sqlx::query(concat!(workspace_select!(), " WHERE w.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        // Only a concurrent delete of the owner or workspace can make the row vanish.
        let workspace = row
            .as_ref()
            .map(workspace_from_row)
            .transpose()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "workspace {} was deleted while being created",
                    new.name
                ))
            })?;
        tracing::info!(
            owner = %workspace.owner_username,
            workspace = %workspace.name,
            agent_id = %workspace.agent_id,
            "workspace created"
        );
        Ok(workspace)
    }

    /// Says which unique field of `new` clashed with an existing workspace.
    async fn workspace_conflict(&self, new: &NewWorkspace) -> Result<String, StoreError> {
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT u.username FROM workspaces w JOIN users u ON u.id = w.owner_id \
             WHERE w.owner_id = $1 AND w.name = $2",
        )
        .bind(new.owner_id)
        .bind(&new.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(match owner {
            Some(owner) => format!("{owner} already has a workspace named {}", new.name),
            None => format!(
                "agent {} or its token is already used by another workspace",
                new.agent_id
            ),
        })
    }

    pub(crate) async fn workspaces_for_owner(
        &self,
        owner: Uuid,
    ) -> Result<Vec<Workspace>, StoreError> {
        let rows = sqlx::query(concat!(
            workspace_select!(),
            " WHERE w.owner_id = $1 ORDER BY w.name"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(workspace_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn all_workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        let rows = sqlx::query(concat!(workspace_select!(), " ORDER BY u.username, w.name"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(workspace_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn workspace_by_name(
        &self,
        owner: Uuid,
        name: &str,
    ) -> Result<Option<Workspace>, StoreError> {
        let row = sqlx::query(concat!(
            workspace_select!(),
            " WHERE w.owner_id = $1 AND w.name = $2"
        ))
        .bind(owner)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.as_ref()
            .map(workspace_from_row)
            .transpose()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn workspace_by_agent_token(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<Workspace>, StoreError> {
        let row = sqlx::query(concat!(
            workspace_select!(),
            " WHERE w.agent_token_hash = $1"
        ))
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.as_ref()
            .map(workspace_from_row)
            .transpose()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn delete_workspace(&self, id: Uuid) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM workspaces WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected()
            > 0;
        if deleted {
            tracing::info!(workspace_id = %id, "workspace deleted");
        }
        Ok(deleted)
    }

    pub(crate) async fn record_agent_seen(
        &self,
        agent_id: Uuid,
        at: DateTime<Utc>,
        relay: Option<u32>,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE workspaces SET last_seen_at = $1, last_relay = $2 WHERE agent_id = $3",
        )
        .bind(at)
        .bind(relay)
        .bind(agent_id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?
        .rows_affected();
        if updated == 0 {
            tracing::debug!(agent_id = %agent_id, "agent seen but has no workspace");
        }
        Ok(())
    }

    pub(crate) async fn config_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM config WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn config_value_or_insert(
        &self,
        key: &str,
        value: &str,
    ) -> Result<String, StoreError> {
        // Insert-or-ignore then read: each statement is atomic on its own, and a stored
        // value is never replaced, so every caller reads the first writer's value.
        let inserted = sqlx::query(
            "INSERT INTO config (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?
        .rows_affected();
        if inserted > 0 {
            tracing::debug!(key, "config value set");
        }
        sqlx::query_scalar("SELECT value FROM config WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }
}

/// The current time at the precision PostgreSQL keeps, so what a create call returns
/// equals what a later read returns on either backend.
fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn is_kind(e: &sqlx::Error, kind: ErrorKind) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == kind)
}

/// If `e` means the database itself is unusable (I/O, locked, full, closed...), a short
/// reason for the operator; `None` for errors about the statement or data.
fn classify(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Io(io) => Some(format!("I/O error: {io}")),
        sqlx::Error::PoolTimedOut => Some("timed out waiting for a free connection".to_owned()),
        sqlx::Error::PoolClosed => Some("the store has been closed".to_owned()),
        sqlx::Error::Database(db) => {
            let primary = db.code()?.parse::<i32>().ok()? & 0xff;
            UNAVAILABLE_CODES
                .contains(&primary)
                .then(|| db.message().to_owned())
        }
        _ => None,
    }
}

fn user_from_row(row: &SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        is_admin: row.try_get("is_admin")?,
        created_at: row.try_get("created_at")?,
        password_hash: row.try_get("password_hash")?,
        status: UserStatus::from_stored(row.try_get("status")?),
    })
}

fn workspace_from_row(row: &SqliteRow) -> Result<Workspace, sqlx::Error> {
    Ok(Workspace {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        owner_username: row.try_get("owner_username")?,
        name: row.try_get("name")?,
        agent_id: row.try_get("agent_id")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        last_relay: row.try_get("last_relay")?,
    })
}
