//! User administration on SQLite: listing users, suspending and activating them,
//! deleting them, and a user's sessions.
//!
//! Each guarded change is one statement whose `WHERE` holds the guard (not the last
//! active admin, no workspaces), so concurrent changes cannot both pass it.

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{SqliteBackend, USER_COLUMNS, user_from_row};
use crate::{Session, StoreError, User, UserChange, UserStatus};

/// True for a user who is an active admin and the only one: losing them would leave the
/// server without an admin.
const LAST_ACTIVE_ADMIN: &str = "(is_admin AND status = 'active' AND \
     (SELECT COUNT(*) FROM users WHERE is_admin AND status = 'active') <= 1)";

impl SqliteBackend {
    pub(crate) async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY lower(username)");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(user_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn set_user_status(
        &self,
        id: Uuid,
        status: UserStatus,
    ) -> Result<UserChange, StoreError> {
        // Only suspending can lose an admin; activating is never refused.
        let guard = match status {
            UserStatus::Active => "TRUE".to_owned(),
            UserStatus::Suspended => format!("NOT {LAST_ACTIVE_ADMIN}"),
        };
        let sql = format!("UPDATE users SET status = $2 WHERE id = $1 AND {guard}");
        let changed = sqlx::query(&sql)
            .bind(id)
            .bind(status.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected();
        let user = self.user_by_id(id).await?;
        Ok(match user {
            None => UserChange::NotFound,
            Some(user) if changed > 0 => {
                tracing::info!(user = %user.username, status = status.as_str(), "user status changed");
                UserChange::Done(user)
            }
            Some(_) => UserChange::LastAdmin,
        })
    }

    pub(crate) async fn delete_user(&self, id: Uuid) -> Result<UserChange, StoreError> {
        let Some(user) = self.user_by_id(id).await? else {
            return Ok(UserChange::NotFound);
        };
        // Sessions go with the user (ON DELETE CASCADE); workspaces would too, which is
        // why a user who owns any is refused instead.
        let sql = format!(
            "DELETE FROM users WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM workspaces WHERE owner_id = $1) \
             AND NOT {LAST_ACTIVE_ADMIN}"
        );
        let deleted = sqlx::query(&sql)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected();
        if deleted > 0 {
            tracing::info!(user = %user.username, "user deleted");
            return Ok(UserChange::Done(user));
        }
        let workspaces: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM workspaces WHERE owner_id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        Ok(match self.user_by_id(id).await? {
            None => UserChange::NotFound,
            Some(_) if workspaces > 0 => {
                UserChange::HasWorkspaces(u64::try_from(workspaces).unwrap_or(0))
            }
            Some(_) => UserChange::LastAdmin,
        })
    }

    pub(crate) async fn sessions_for_user(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(
            "SELECT token_hash, created_at, expires_at, last_used_at FROM sessions \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let hash: Vec<u8> = row.try_get("token_hash").map_err(|e| self.err(e))?;
            let Ok(token_hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
                continue;
            };
            let session = Session {
                token_hash,
                user_id,
                created_at: row.try_get("created_at").map_err(|e| self.err(e))?,
                expires_at: row.try_get("expires_at").map_err(|e| self.err(e))?,
                last_used_at: row.try_get("last_used_at").map_err(|e| self.err(e))?,
            };
            // Expiry is compared in Rust (see the module docs of the backend).
            if session.expires_at > now {
                sessions.push(session);
            }
        }
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions)
    }

    pub(crate) async fn delete_user_sessions(&self, user_id: Uuid) -> Result<u64, StoreError> {
        let removed = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected();
        tracing::debug!(user_id = %user_id, removed, "user's sessions deleted");
        Ok(removed)
    }
}
