-- tether's first schema: users, browser/CLI sessions, workspaces with their agent
-- credentials, and a small key/value table for server-wide settings.
--
-- Conventions kept portable to PostgreSQL: ids are UUIDs (BLOB here, UUID there),
-- timestamps are RFC 3339 UTC text written by the application (TIMESTAMPTZ there),
-- secrets are stored only as SHA-256 / argon2id hashes.

CREATE TABLE users (
    id            BLOB    PRIMARY KEY NOT NULL,
    username      TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TEXT    NOT NULL
);

-- Logins are case-insensitive, so uniqueness must be too ("Alice" clashes with "alice").
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

CREATE TABLE sessions (
    token_hash   BLOB PRIMARY KEY NOT NULL,
    user_id      BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_used_at TEXT NOT NULL
);

CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE workspaces (
    id               BLOB    PRIMARY KEY NOT NULL,
    owner_id         BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL,
    agent_id         BLOB    NOT NULL UNIQUE,
    agent_token_hash BLOB    NOT NULL UNIQUE,
    created_at       TEXT    NOT NULL,
    last_seen_at     TEXT,
    last_relay       INTEGER,
    UNIQUE (owner_id, name)
);

CREATE TABLE config (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
