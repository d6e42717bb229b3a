//! What the app proxy forwards, both ways: hop-by-hop headers dropped (an upgrade's own
//! `Connection`/`Upgrade` kept), tether's credentials removed from the request (its
//! session cookie, `Tether-Session-Token`, `Tether-Agent-Token`, and `Authorization`
//! when it carried our token), client-set forwarding headers replaced by ours, and an
//! app's attempt to set tether's session cookie dropped from the response.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use tether_proto::api::{AGENT_TOKEN_HEADER, SESSION_TOKEN_HEADER};

use crate::api::auth::SESSION_COOKIE;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Forwarding headers a client could forge; only the proxy sets them.
const FORWARDING: [&str; 7] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// What the proxy says about the original request.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The client's address as the server saw it.
    pub client: Option<IpAddr>,
    /// The `Host` the client asked for.
    pub host: Option<String>,
    /// `http` or `https`, as the dashboard is served.
    pub proto: String,
}

/// Copies `from` without hop-by-hop headers and without the headers `Connection` names.
fn without_hop_by_hop(from: &HeaderMap, keep_upgrade: bool) -> HeaderMap {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        let upgrade_header = n == "upgrade";
        if HOP_BY_HOP.contains(&n) || (named.iter().any(|x| x == n) && !upgrade_header) {
            continue;
        }
        if upgrade_header && !keep_upgrade {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if keep_upgrade {
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    out
}

/// `Cookie` values without tether's session cookie; `None` when nothing is left.
fn cookies_without_ours(from: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = from
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty()
                && pair.split_once('=').map_or(*pair, |(k, _)| k.trim()) != SESSION_COOKIE
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// The request headers the app gets. `host` is the app's own `host:port`;
/// `strip_authorization` when `Authorization` carried the tether session token.
pub fn for_upstream(
    from: &HeaderMap,
    host: &str,
    strip_authorization: bool,
    upgrade: bool,
    fwd: &Forwarded,
) -> HeaderMap {
    let mut out = without_hop_by_hop(from, upgrade);
    for name in FORWARDING {
        out.remove(name);
    }
    out.remove(SESSION_TOKEN_HEADER);
    out.remove(AGENT_TOKEN_HEADER);
    if strip_authorization {
        out.remove(header::AUTHORIZATION);
    }
    out.remove(header::COOKIE);
    if let Some(c) = cookies_without_ours(from) {
        out.insert(header::COOKIE, c);
    }
    if let Ok(h) = HeaderValue::from_str(host) {
        out.insert(header::HOST, h);
    }
    let set = |out: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), v);
        }
    };
    if let Some(ip) = fwd.client {
        set(&mut out, "x-forwarded-for", &ip.to_string());
    }
    if let Some(h) = &fwd.host {
        set(&mut out, "x-forwarded-host", h);
    }
    set(&mut out, "x-forwarded-proto", &fwd.proto);
    out
}

/// The response headers the client gets: hop-by-hop ones dropped (kept for a `101`), and
/// no `Set-Cookie` for tether's session cookie, which an app must not overwrite.
pub fn for_client(from: &HeaderMap, switching: bool) -> HeaderMap {
    let mut out = without_hop_by_hop(from, switching);
    let cookies: Vec<HeaderValue> = out
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v
                .to_str()
                .ok()
                .and_then(|s| s.split_once('='))
                .map(|(k, _)| k.trim());
            name != Some(SESSION_COOKIE)
        })
        .cloned()
        .collect();
    out.remove(header::SET_COOKIE);
    for c in cookies {
        out.append(header::SET_COOKIE, c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        m
    }

    fn fwd() -> Forwarded {
        Forwarded {
            client: Some("192.0.2.7".parse().expect("ip")),
            host: Some("tether.example:3000".into()),
            proto: "https".into(),
        }
    }

    #[test]
    fn credentials_and_forged_forwarding_headers_do_not_reach_the_app() {
        let from = map(&[
            ("cookie", "a=1; tether_session_token=SECRET; b=2"),
            ("cookie", "tether_session_token=SECRET2"),
            ("tether-session-token", "SECRET3"),
            ("authorization", "Bearer SECRET4"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=203.0.113.1"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("accept", "text/html"),
        ]);
        let out = for_upstream(&from, "127.0.0.1:8080", true, false, &fwd());
        let all = format!("{out:?}");
        assert!(!all.contains("SECRET"), "{all}");
        assert_eq!(out["cookie"], "a=1; b=2");
        assert_eq!(out["host"], "127.0.0.1:8080");
        assert_eq!(out["x-forwarded-host"], "tether.example:3000");
        assert_eq!(out["x-forwarded-for"], "192.0.2.7");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert!(out.get("forwarded").is_none());
        assert!(out.get("x-drop-me").is_none());
        assert!(out.get("connection").is_none());
        assert_eq!(out["accept"], "text/html");

        // The app's own Authorization passes when the session came from elsewhere.
        let out = for_upstream(&from, "127.0.0.1:8080", false, false, &fwd());
        assert_eq!(out["authorization"], "Bearer SECRET4");
        // Only our cookie: no Cookie header at all.
        let out = for_upstream(
            &map(&[("cookie", "tether_session_token=x")]),
            "h:1",
            false,
            false,
            &fwd(),
        );
        assert!(out.get("cookie").is_none());
    }

    #[test]
    fn websocket_headers_pass_intact() {
        let from = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat, MixedCase"),
        ]);
        let out = for_upstream(&from, "127.0.0.1:8080", false, true, &fwd());
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["connection"], "upgrade");
        assert_eq!(out["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(out["sec-websocket-protocol"], "chat, MixedCase");
        let plain = for_upstream(&from, "127.0.0.1:8080", false, false, &fwd());
        assert!(plain.get("upgrade").is_none());

        let resp = map(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        let out = for_client(&resp, true);
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn an_app_cannot_set_the_session_cookie() {
        let resp = map(&[
            ("set-cookie", "tether_session_token=evil; Path=/"),
            ("set-cookie", "app=1; Path=/"),
            ("transfer-encoding", "chunked"),
        ]);
        let out = for_client(&resp, false);
        let cookies: Vec<_> = out.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, vec!["app=1; Path=/"]);
        assert!(out.get("transfer-encoding").is_none());
    }
}
