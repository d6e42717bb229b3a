//! The API's paths, as the server mounts them and clients request them.
//!
//! A path with a parameter is built by a function here, never by `format!` at a call
//! site: the parameter is percent-encoded as one path segment, so a name such as
//! `../users/me` stays inside its route instead of being resolved into another one.

use std::fmt::Write as _;

/// Liveness probe, outside `/api/v2` and without authentication.
pub const HEALTHZ: &str = "/healthz";
/// `GET`: server and coordination versions.
pub const BUILDINFO: &str = "/api/v2/buildinfo";
/// Public deployment facts for the dashboard.
pub const DEPLOYMENT: &str = "/api/v2/deployment";
/// `GET`: the health report.
pub const DEBUG_HEALTH: &str = "/api/v2/debug/health";
/// `GET`: 200 when a first user exists, 404 while setup is pending; `POST`: create it.
pub const USERS_FIRST: &str = "/api/v2/users/first";
/// `POST`: log in with a password.
pub const USERS_LOGIN: &str = "/api/v2/users/login";
/// `POST`: revoke the session token used.
pub const USERS_LOGOUT: &str = "/api/v2/users/logout";
/// `GET`: the logged-in user.
pub const USERS_ME: &str = "/api/v2/users/me";
/// `GET`: every user; `POST`: create a user (admins only).
pub const USERS: &str = "/api/v2/users";
/// `DELETE`: delete a user (admins only; by username or id).
pub const USER: &str = "/api/v2/users/{user}";
/// `PUT`: suspend a user (admins only): no login, their sessions stop working.
pub const USER_SUSPEND: &str = "/api/v2/users/{user}/status/suspend";
/// `PUT`: activate a suspended user again (admins only).
pub const USER_ACTIVATE: &str = "/api/v2/users/{user}/status/activate";
/// `GET`: the caller's workspaces; `POST`: create one.
pub const WORKSPACES: &str = "/api/v2/workspaces";
/// `GET`/`DELETE` one workspace by name: the server's route pattern (see [`workspace`]).
pub const WORKSPACE: &str = "/api/v2/workspaces/{name}";
/// `GET`: the effective DERP map.
pub const DERP_MAP: &str = "/api/v2/derp-map";
/// `GET`: a client's connection info.
pub const TAILNET_CONNECTION: &str = "/api/v2/tailnet/connection";
/// WebSocket: a client's coordination (`?version=MAJOR.MINOR`).
pub const TAILNET_COORDINATE: &str = "/api/v2/tailnet/coordinate";
/// `GET`: an agent's connection info.
pub const AGENT_CONNECTION: &str = "/api/v2/workspaceagents/me/connection";
/// WebSocket: an agent's coordination (`?version=MAJOR.MINOR`).
pub const AGENT_COORDINATE: &str = "/api/v2/workspaceagents/me/coordinate";

/// WebSocket: the web terminal of an agent (`?reconnect=<uuid>&width=&height=[&command=]`),
/// the server's route pattern (see [`agent_pty`]).
pub const AGENT_PTY: &str = "/api/v2/workspaceagents/{agent_id}/pty";
/// `GET`: the TCP ports listening in an agent's workspace, the route pattern (see
/// [`agent_listening_ports`]).
pub const AGENT_LISTENING_PORTS: &str = "/api/v2/workspaceagents/{agent_id}/listening-ports";
/// `GET` on the agent's own HTTP API (tailnet port 4): its listening ports.
pub const AGENT_API_LISTENING_PORTS: &str = "/api/v0/listening-ports";

/// The path of agent `id`'s web terminal ([`AGENT_PTY`] filled in).
pub fn agent_pty(id: uuid::Uuid) -> String {
    AGENT_PTY.replace("{agent_id}", &id.to_string())
}

/// The path of agent `id`'s listening ports ([`AGENT_LISTENING_PORTS`] filled in).
pub fn agent_listening_ports(id: uuid::Uuid) -> String {
    AGENT_LISTENING_PORTS.replace("{agent_id}", &id.to_string())
}

/// `GET`/`POST`: a workspace's web apps, the route pattern (see [`workspace_apps`]).
pub const WORKSPACE_APPS: &str = "/api/v2/workspaces/{name}/apps";
/// `DELETE`: one web app of a workspace, the route pattern (see [`workspace_app`]).
pub const WORKSPACE_APP: &str = "/api/v2/workspaces/{name}/apps/{slug}";
/// A path app without its trailing slash (answered with a 307 adding it).
pub const PATH_APP_BARE: &str = "/@{user}/{workspace}/apps/{slug}";
/// A path app's root.
pub const PATH_APP_ROOT: &str = "/@{user}/{workspace}/apps/{slug}/";
/// Anything under a path app.
pub const PATH_APP: &str = "/@{user}/{workspace}/apps/{slug}/{*rest}";

/// The path of workspace `name`'s apps ([`WORKSPACE_APPS`] filled in).
pub fn workspace_apps(name: &str) -> Result<String, BadSegment> {
    Ok(format!("{}/apps", workspace(name)?))
}

/// The path of app `slug` of workspace `name` ([`WORKSPACE_APP`] filled in).
pub fn workspace_app(name: &str, slug: &str) -> Result<String, BadSegment> {
    Ok(format!("{}/apps/{}", workspace(name)?, segment(slug)?))
}

/// The root of path app `slug` of `user`'s workspace `workspace`, with its trailing slash.
pub fn path_app(user: &str, workspace: &str, slug: &str) -> Result<String, BadSegment> {
    Ok(format!(
        "/@{}/{}/apps/{}/",
        segment(user)?,
        segment(workspace)?,
        segment(slug)?
    ))
}

/// The query parameter of both coordinate routes that carries the peer's protocol
/// version (`MAJOR.MINOR`); the server refuses another major with 400.
pub const VERSION_PARAM: &str = "version";

/// The query string of a coordinate request: our protocol version, `version=1.0`.
pub fn coordinate_query() -> String {
    format!("{VERSION_PARAM}={}", crate::coord::VERSION)
}

/// A value that cannot be carried as one URL path segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} cannot be sent as a name in a URL path")]
pub struct BadSegment(pub String);

/// The path of user `user` ([`USER`] with the username or id filled in).
pub fn user(user: &str) -> Result<String, BadSegment> {
    Ok(format!("{USERS}/{}", segment(user)?))
}

/// The path of the workspace named `name` ([`WORKSPACE`] with the name filled in).
pub fn workspace(name: &str) -> Result<String, BadSegment> {
    Ok(format!("{WORKSPACES}/{}", segment(name)?))
}

/// `value` percent-encoded as exactly one path segment: every byte but RFC 3986's
/// unreserved characters is escaped, `/`, `?`, `#` and `%` included.
///
/// The empty value, `.` and `..` are refused: URL resolution drops or climbs on them
/// (also when their dots are escaped), so no encoding keeps them in place.
pub fn segment(value: &str) -> Result<String, BadSegment> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(BadSegment(value.to_owned()));
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use url::Url;

    use super::*;

    /// Where a client that joins `path` onto `base` (as the CLI and tailnet do) ends up:
    /// the decoded path segments, and whether a query or fragment slipped in.
    fn resolve(base: &str, path: &str) -> (Vec<String>, bool) {
        let url = Url::parse(base).and_then(|b| b.join(path)).expect("join");
        let segments = url
            .path_segments()
            .expect("a path")
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .expect("utf-8")
                    .into_owned()
            })
            .collect();
        (segments, url.query().is_some() || url.fragment().is_some())
    }

    #[test]
    fn a_traversing_name_stays_in_the_workspace_route() {
        for base in ["http://127.0.0.1:3000", "https://tether.example/"] {
            for name in [
                "../users/me",
                "..%2Fusers%2Fme",
                "%2e%2e/users/me",
                "a/../../users/me",
                "dev?x=1#f",
                "dev\\..\\users",
            ] {
                let path = workspace(name).expect(name);
                assert_eq!(
                    resolve(base, &path),
                    (
                        vec!["api".into(), "v2".into(), "workspaces".into(), name.into()],
                        false
                    ),
                    "{name} as {path}"
                );
            }
        }
    }

    #[test]
    fn dot_segments_and_the_empty_name_are_refused() {
        for name in ["", ".", ".."] {
            assert_eq!(workspace(name), Err(BadSegment(name.into())));
        }
        assert_eq!(workspace("...").as_deref(), Ok("/api/v2/workspaces/..."));
    }

    #[test]
    fn builders_agree_with_the_route_patterns() {
        assert_eq!(
            workspace("dev").as_deref(),
            Ok(WORKSPACE.replace("{name}", "dev").as_str())
        );
        assert_eq!(
            workspace("my box").as_deref(),
            Ok("/api/v2/workspaces/my%20box")
        );
        assert_eq!(segment("é/"), Ok("%C3%A9%2F".to_owned()));
        assert_eq!(coordinate_query(), "version=1.0");
    }

    proptest! {
        #[test]
        fn any_name_is_one_segment_of_its_route(name in "(?s).{1,24}") {
            prop_assume!(name != "." && name != "..");
            let path = workspace(&name).expect("encodes");
            let (segments, extra) = resolve("http://h/", &path);
            prop_assert!(!extra, "{} leaked a query or fragment", path);
            prop_assert_eq!(segments, vec!["api".to_owned(), "v2".into(), "workspaces".into(), name]);
        }
    }
}
