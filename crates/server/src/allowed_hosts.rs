//! The `Host` allow-list, against DNS rebinding: a page at a name the attacker owns
//! (`attacker.example`) whose DNS answer is switched to this server's address is, to the
//! browser, same-origin with the server, so without this check it could read answers and
//! drive the API (on a fresh server: create the first admin). The browser still sends the
//! attacker's name as `Host`, so the server answers only to names it knows:
//!
//! - the access URL's host name (any port: a name the operator owns is not the attacker's,
//!   whatever port a proxy in front exposes), and the wildcard access URL's pattern once
//!   the server has one ([`AllowedHosts::with_wildcard`]);
//! - `localhost`, which public DNS never delegates, so no attacker can point it anywhere;
//! - any IP literal: a page whose origin is an IP address talks to that address, there
//!   is no name to rebind (and the server's own node, tests and agents on a LAN dial IPs);
//! - no `Host` at all (HTTP/1.0 tools; browsers always send one).
//!
//! Exempt whatever the name: `/healthz` (load balancers probe under their own names, and
//! it says only `OK`) and the DERP routes (`/derp`, its probes, `/generate_204`): relay
//! clients take this server's name from a DERP map, which may list it under any name it
//! answers to, and DERP authenticates itself (a NaCl box proves the node key, then only
//! keys of live coordinator peers are admitted), so a rebinding page gains nothing there.
//!
//! A refused request gets `421 Misdirected Request` in the JSON error shape; a `Host`
//! that is not `host[:port]` gets 400.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tether_proto::api::route;
use tether_proto::derpmap::DERP_PATH;
use url::Url;

use crate::api::error::ApiError;

/// The names this server answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    /// The access URL's host name, lower case, without a trailing dot; `None` when the
    /// access URL is an IP literal (every IP literal is allowed anyway).
    access: Option<String>,
    /// Suffixes of wildcard patterns (`*.apps.example.com` → `.apps.example.com`).
    wildcards: Vec<String>,
}

/// What a `Host` header value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
}

/// Parses a `Host` header value: `name`, `name:port`, `1.2.3.4[:port]` or
/// `[v6][:port]`. `None` when it is none of them.
pub fn parse_host(value: &str) -> Option<HostName> {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return Some(HostName::Ip(IpAddr::V6(ip)));
    }
    let name = match value.split_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => value,
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(HostName::Ip(ip));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| HostName::Name(name.to_ascii_lowercase()))
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

impl AllowedHosts {
    /// The names of a server reached at `access_url`.
    pub fn new(access_url: &Url) -> Self {
        let access = match access_url.host() {
            Some(url::Host::Domain(d)) => {
                let d = d.strip_suffix('.').unwrap_or(d);
                Some(d.to_ascii_lowercase())
            }
            _ => None,
        };
        Self {
            access,
            wildcards: Vec::new(),
        }
    }

    /// Also answers to the hosts of a wildcard access URL's pattern: `*` then a suffix,
    /// as in `*.apps.example.com` or `*--apps.example.com`; the `*` stands for one label's
    /// worth of characters (no dots).
    pub fn with_wildcard(mut self, pattern: &str) -> Result<Self, String> {
        let bad = || format!("{pattern:?} is not a wildcard host like *.apps.example.com");
        let suffix = pattern.strip_prefix('*').ok_or_else(bad)?;
        // The rest is a host name's tail: `x` plus it parses as a name, and it names a
        // domain (a dot inside, not a trailing one), so `*.` or `*x` cannot match the world.
        let named = matches!(parse_host(&format!("x{suffix}")), Some(HostName::Name(_)));
        if !named || suffix.contains(':') || suffix.ends_with('.') || !suffix.contains('.') {
            return Err(bad());
        }
        self.wildcards.push(suffix.to_ascii_lowercase());
        Ok(self)
    }

    /// Whether a request under `host` (a parsed `Host` value) is for this server.
    pub fn allows(&self, host: &HostName) -> bool {
        let name = match host {
            HostName::Ip(_) => return true,
            HostName::Name(name) => name,
        };
        if name == "localhost" || self.access.as_deref() == Some(name.as_str()) {
            return true;
        }
        self.wildcards.iter().any(|suffix| {
            name.strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        })
    }

    /// The name to tell a refused client this server answers to.
    fn expected(&self) -> &str {
        self.access.as_deref().unwrap_or("its IP address")
    }
}

/// Paths served under any host name (see the module header for why).
fn exempt(path: &str) -> bool {
    path == route::HEALTHZ
        || path == "/generate_204"
        || path
            .strip_prefix(DERP_PATH)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Middleware: refuses requests under a host name this server does not answer to.
pub async fn check(State(hosts): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let value = match req.headers().get(header::HOST) {
        Some(v) => match v.to_str() {
            Ok(v) => Some(v.to_owned()),
            Err(_) => return bad_host(),
        },
        None => req.uri().authority().map(|a| a.as_str().to_owned()),
    };
    let Some(value) = value else {
        return next.run(req).await;
    };
    let Some(host) = parse_host(&value) else {
        return bad_host();
    };
    if hosts.allows(&host) {
        return next.run(req).await;
    }
    tracing::debug!(host = %value, path = %req.uri().path(), "request for a foreign host refused");
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "This server does not answer to the host {value:?}; it is {} (its --access-url).",
            hosts.expected()
        ),
    )
    .with_detail(
        "Requests under other host names are refused so that a web page cannot reach this server by re-pointing its own name at it (DNS rebinding). If this is your server's name, set --access-url to the URL you reach it at.",
    )
    .into_response()
}

fn bad_host() -> Response {
    ApiError::bad_request("The Host header is not a valid host[:port].").into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn name(s: &str) -> HostName {
        HostName::Name(s.into())
    }

    #[test]
    fn host_values_parse() {
        assert_eq!(
            parse_host("Tether.Example.com:8080"),
            Some(name("tether.example.com"))
        );
        assert_eq!(
            parse_host("tether.example.com."),
            Some(name("tether.example.com"))
        );
        assert_eq!(
            parse_host("127.0.0.1:3000"),
            Some(HostName::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            parse_host("[::1]:3000"),
            Some(HostName::Ip("::1".parse().unwrap()))
        );
        assert_eq!(
            parse_host("[::1]"),
            Some(HostName::Ip("::1".parse().unwrap()))
        );
        for bad in [
            "",
            ":80",
            "a:b",
            "a:80:81",
            "::1",
            "[::1",
            "[::1]x",
            "[nope]",
            "a b",
            "a..b",
            "a:123456",
            "é.example",
        ] {
            assert_eq!(parse_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_access_name_localhost_and_ips_are_allowed_nothing_else() {
        let hosts = AllowedHosts::new(&Url::parse("https://tether.example.com/").unwrap());
        for ok in [
            "tether.example.com",
            "TETHER.example.com:3000",
            "localhost:3000",
            "10.1.2.3",
            "[::1]:80",
        ] {
            assert!(hosts.allows(&parse_host(ok).unwrap()), "{ok}");
        }
        for refused in [
            "attacker.example",
            "tether.example.com.attacker.example",
            "x.tether.example.com",
            "example.com",
            "localhost.attacker.example",
        ] {
            assert!(!hosts.allows(&parse_host(refused).unwrap()), "{refused}");
        }
        let by_ip = AllowedHosts::new(&Url::parse("http://127.0.0.1:3000/").unwrap());
        assert!(by_ip.allows(&parse_host("127.0.0.1:3000").unwrap()));
        assert!(!by_ip.allows(&parse_host("attacker.example:3000").unwrap()));
    }

    #[test]
    fn a_wildcard_allows_one_label_under_its_suffix() {
        let url = Url::parse("https://tether.example.com/").unwrap();
        let hosts = AllowedHosts::new(&url)
            .with_wildcard("*.apps.example.com")
            .unwrap()
            .with_wildcard("*--dev.example.com")
            .unwrap();
        for ok in [
            "8080--agent--ws--alice.apps.example.com",
            "code--dev.example.com:443",
        ] {
            assert!(hosts.allows(&parse_host(ok).unwrap()), "{ok}");
        }
        for refused in [
            "apps.example.com",
            ".apps.example.com",
            "a.b.apps.example.com",
            "--dev.example.com",
        ] {
            if let Some(h) = parse_host(refused) {
                assert!(!hosts.allows(&h), "{refused}");
            }
        }
        for bad in ["apps.example.com", "*", "*.", "*com", "*.a:80", "**.a"] {
            assert!(AllowedHosts::new(&url).with_wildcard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn healthz_and_derp_are_exempt_and_nothing_beside_them() {
        for path in [
            "/healthz",
            "/derp",
            "/derp/probe",
            "/derp/latency-check",
            "/generate_204",
        ] {
            assert!(exempt(path), "{path}");
        }
        for path in [
            "/derpx",
            "/healthz/x",
            "/api/v2/users/first",
            "/",
            "/api/v2/debug/health",
        ] {
            assert!(!exempt(path), "{path}");
        }
    }
}
