//! Extra HTTP headers for the tether server's own URL (`tether --header`), for an access
//! proxy in front of the server that wants them on every request. They go only to URLs
//! of the server's origin, so another region's DERP server never sees them.

use http::HeaderMap;
use url::Url;

/// Headers for requests to one origin (scheme, host and port). `Debug` shows only the
/// names: values are often credentials.
#[derive(Clone)]
pub struct ServerHeaders {
    origin: url::Origin,
    headers: HeaderMap,
}

impl ServerHeaders {
    /// `headers` for URLs with the origin of `server`.
    pub fn new(server: &Url, headers: HeaderMap) -> Self {
        Self {
            origin: server.origin(),
            headers,
        }
    }

    /// No headers at all.
    pub fn none() -> Self {
        Self {
            origin: url::Origin::new_opaque(),
            headers: HeaderMap::new(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The headers, if `url` has the server's origin (else none).
    pub fn for_url(&self, url: &Url) -> Option<&HeaderMap> {
        (!self.headers.is_empty() && url.origin() == self.origin).then_some(&self.headers)
    }

    /// Adds the headers for `url` to `request`, except those `request` already has: what
    /// the protocol itself sets (tokens, `Upgrade`, WebSocket keys) is never replaced.
    pub fn apply(&self, url: &Url, request: &mut HeaderMap) {
        let Some(extra) = self.for_url(url) else {
            return;
        };
        for name in extra.keys() {
            if request.contains_key(name) {
                continue;
            }
            for value in extra.get_all(name) {
                request.append(name, value.clone());
            }
        }
    }
}

impl Default for ServerHeaders {
    fn default() -> Self {
        Self::none()
    }
}

impl std::fmt::Debug for ServerHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHeaders")
            .field("origin", &self.origin.ascii_serialization())
            .field("names", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_servers_origin_gets_them_and_nothing_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-proxy-auth", HeaderValue::from_static("secret"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h.insert("upgrade", HeaderValue::from_static("nope"));
        let s = ServerHeaders::new(&Url::parse("http://127.0.0.1:3000/").unwrap(), h);
        let derp = Url::parse("http://127.0.0.1:3000/derp").unwrap();
        let mut req = HeaderMap::new();
        req.insert("upgrade", HeaderValue::from_static("DERP"));
        s.apply(&derp, &mut req);
        assert_eq!(req["x-proxy-auth"], "secret");
        assert_eq!(req.get_all("x-multi").iter().count(), 2);
        assert_eq!(req["upgrade"], "DERP");
        for other in [
            "http://127.0.0.1:3001/derp",
            "https://127.0.0.1:3000/derp",
            "http://localhost:3000/derp",
            "http://derp.example.com/derp",
        ] {
            assert!(s.for_url(&Url::parse(other).unwrap()).is_none(), "{other}");
        }
        assert!(!format!("{s:?}").contains("secret"), "{s:?}");
        assert!(ServerHeaders::none().for_url(&derp).is_none());
    }
}
