//! The store's error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the message names what clashed.
    #[error("{0}")]
    Conflict(String),
    /// Something the operation refers to does not exist; the message names it.
    #[error("{0}")]
    NotFound(String),
    /// The database cannot be used right now: cannot open, I/O error, disk full,
    /// locked or busy, closed. The message names the database and the reason.
    #[error("{0}")]
    Unavailable(String),
    /// The schema could not be brought up to date (for example a database written by a
    /// newer tether).
    #[error("database schema migration failed for {path}: {source}")]
    Migration {
        /// The database file.
        path: String,
        /// What went wrong.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Hashing a password failed (invalid parameters; should not happen with defaults).
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Other(#[from] sqlx::Error),
}
