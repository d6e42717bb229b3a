-- Web apps a workspace's owner declares (issue 15): a slug unique per workspace, the URL
-- inside the workspace the server proxies to, and how the app is reached and shared.
-- Share levels and URLs are validated by the server; the store keeps them as text.

CREATE TABLE workspace_apps (
    id           BLOB    PRIMARY KEY NOT NULL,
    workspace_id BLOB    NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    slug         TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    url          TEXT    NOT NULL,
    subdomain    BOOLEAN NOT NULL DEFAULT FALSE,
    share        TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    UNIQUE (workspace_id, slug)
);
