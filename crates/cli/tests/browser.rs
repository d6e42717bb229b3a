//! The real server as a browser meets it: login with the session cookie, the
//! cross-site checks on cookie requests and WebSocket upgrades, logout, the public
//! deployment facts, and the embedded dashboard with its SPA routes.
#![allow(clippy::unwrap_used)]

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, SET_COOKIE};
use serde_json::{Value, json};
use tether_testing::{TestServer, free_tcp_port};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PASSWORD: &str = "correct horse battery";

/// A parsed `Set-Cookie`: name, value and the attributes (lower-cased names).
#[derive(Debug)]
struct SetCookie {
    name: String,
    value: String,
    attrs: Vec<(String, String)>,
}

impl SetCookie {
    fn parse(header: &str) -> Self {
        let mut parts = header.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        let attrs = parts
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), v.to_string()),
                None => (a.to_ascii_lowercase(), String::new()),
            })
            .collect();
        Self {
            name: name.into(),
            value: value.into(),
            attrs,
        }
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }
}

fn session_cookie(resp: &reqwest::Response) -> SetCookie {
    let all: Vec<SetCookie> = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| SetCookie::parse(v.to_str().unwrap()))
        .collect();
    assert_eq!(all.len(), 1, "expected one Set-Cookie: {all:?}");
    let c = all.into_iter().next().unwrap();
    assert_eq!(c.name, "tether_session_token");
    c
}

/// Creates the first user through the page's request; returns the cookie's value.
async fn first_user_cookie(http: &reqwest::Client, url: &str) -> String {
    let r = http
        .post(format!("{url}/api/v2/users/first"))
        .header("Origin", url)
        .json(&json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD, "set_cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let c = session_cookie(&r);
    let body: Value = r.json().await.unwrap();
    assert!(body.get("session_token").is_none(), "{body}");
    assert_eq!(body["user"]["username"], "alice");
    c.value
}

#[tokio::test]
async fn login_sets_an_httponly_cookie_and_no_token_in_the_body() {
    let srv = TestServer::start(&[]);
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{}/api/v2/users/first", srv.url))
        .json(&json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD, "set_cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let c = session_cookie(&r);
    assert_eq!(c.value.len(), 64, "{c:?}");
    assert!(c.value.bytes().all(|b| b.is_ascii_hexdigit()), "{c:?}");
    assert!(c.has("httponly"), "{c:?}");
    assert_eq!(c.attr("samesite"), Some("Lax"), "{c:?}");
    assert_eq!(c.attr("path"), Some("/"), "{c:?}");
    assert!(!c.has("secure"), "plain http must not set Secure: {c:?}");
    let max_age: i64 = c.attr("max-age").unwrap().parse().unwrap();
    let thirty_days = 30 * 24 * 3600;
    assert!(
        (thirty_days - 60..=thirty_days).contains(&max_age),
        "Max-Age {max_age}"
    );
    let body: Value = r.json().await.unwrap();
    assert!(body.get("session_token").is_none(), "{body}");
    assert_eq!(body["user"]["username"], "alice");
    assert!(body["expires_at"].is_string(), "{body}");

    // The cookie alone authenticates.
    let me: Value = http
        .get(format!("{}/api/v2/users/me", srv.url))
        .header("Cookie", format!("tether_session_token={}", c.value))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "alice");

    // Among other cookies too.
    let r = http
        .get(format!("{}/api/v2/users/me", srv.url))
        .header(
            "Cookie",
            format!("theme=dark; tether_session_token={}; x=1", c.value),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Login with set_cookie: a new cookie, no token in the body.
    let r = http
        .post(format!("{}/api/v2/users/login", srv.url))
        .json(&json!({"username": "alice", "password": PASSWORD, "set_cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let c2 = session_cookie(&r);
    assert_ne!(c2.value, c.value);
    assert!(c2.has("httponly") && c2.attr("samesite") == Some("Lax"));
    let body: Value = r.json().await.unwrap();
    assert!(body.get("session_token").is_none(), "{body}");

    // Without set_cookie (the CLI): the token in the body and no cookie, as before.
    let r = http
        .post(format!("{}/api/v2/users/login", srv.url))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["session_token"].as_str().unwrap().len(), 64, "{body}");

    // A wrong password sets nothing.
    let r = http
        .post(format!("{}/api/v2/users/login", srv.url))
        .json(&json!({"username": "alice", "password": "wrong password", "set_cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());

    // A bogus cookie is a 401 with a sentence.
    let r = http
        .get(format!("{}/api/v2/users/me", srv.url))
        .header("Cookie", "tether_session_token=00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("log in again"),
        "{body}"
    );
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_our_origin() {
    let srv = TestServer::start(&[]);
    let http = reqwest::Client::new();
    let cookie = format!(
        "tether_session_token={}",
        first_user_cookie(&http, &srv.url).await
    );
    let create = |name: &str, origin: Option<&str>| {
        let mut req = http
            .post(format!("{}/api/v2/workspaces", srv.url))
            .header("Cookie", &cookie)
            .json(&json!({ "name": name }));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send()
    };

    for origin in [
        None,
        Some("http://evil.example"),
        Some("null"),
        // Same host, other scheme or port: another origin.
        Some(&*srv.url.replace("http://", "https://")),
        Some(&*format!("{}1", srv.url)),
    ] {
        let r = create("dev", origin).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "Origin {origin:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["message"], "Cross-site request refused.", "{body}");
    }
    // Nothing was created by the refused requests.
    let list: Vec<Value> = http
        .get(format!("{}/api/v2/workspaces", srv.url))
        .header("Cookie", &cookie)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.is_empty(), "{list:?}");

    // Our own origin goes through.
    let r = create("dev", Some(&srv.url)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // A header token is no ambient credential: no Origin check, whatever the Origin.
    let token = {
        let r: Value = http
            .post(format!("{}/api/v2/users/login", srv.url))
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["session_token"].as_str().unwrap().to_string()
    };
    let r = http
        .post(format!("{}/api/v2/workspaces", srv.url))
        .header("Tether-Session-Token", &token)
        .header("Origin", "http://evil.example")
        .json(&json!({"name": "second"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .post(format!("{}/api/v2/workspaces", srv.url))
        .bearer_auth(&token)
        .header("Cookie", &cookie)
        .header("Origin", "http://evil.example")
        .json(&json!({"name": "third"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "the Bearer token wins over the cookie"
    );
}

#[tokio::test]
async fn cookie_websocket_upgrades_need_our_origin() {
    let srv = TestServer::start(&[]);
    let http = reqwest::Client::new();
    let value = first_user_cookie(&http, &srv.url).await;
    let ws_url = format!(
        "{}/api/v2/tailnet/coordinate?version=1.0",
        srv.url.replace("http://", "ws://")
    );
    let connect = |headers: Vec<(&'static str, String)>| {
        let mut req = ws_url.clone().into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(k, v.parse().unwrap());
        }
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
    };
    let cookie = format!("tether_session_token={value}");

    for origin in [None, Some("http://evil.example".to_string())] {
        let mut h = vec![("cookie", cookie.clone())];
        if let Some(o) = &origin {
            h.push(("origin", o.clone()));
        }
        match connect(h).await.unwrap() {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 403, "Origin {origin:?}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(body.contains("Cross-site request refused."), "{body}");
            }
            other => panic!(
                "Origin {origin:?}: expected 403, got {:?}",
                other.map(|_| ())
            ),
        }
    }

    let (mut ws, _) = connect(vec![
        ("cookie", cookie.clone()),
        ("origin", srv.url.clone()),
    ])
    .await
    .unwrap()
    .expect("our own origin may open the WebSocket");
    let _ = ws.close(None).await;
}

#[tokio::test]
async fn logout_revokes_the_session_and_clears_the_cookie() {
    let srv = TestServer::start(&[]);
    let http = reqwest::Client::new();
    let cookie = format!(
        "tether_session_token={}",
        first_user_cookie(&http, &srv.url).await
    );
    let logout = |origin: &str| {
        http.post(format!("{}/api/v2/users/logout", srv.url))
            .header("Cookie", &cookie)
            .header("Origin", origin)
            .send()
    };
    let me = || {
        http.get(format!("{}/api/v2/users/me", srv.url))
            .header("Cookie", &cookie)
            .send()
    };

    // Another site cannot log the user out.
    let r = logout("http://evil.example").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_eq!(me().await.unwrap().status(), StatusCode::OK);

    let r = logout(&srv.url).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let c = session_cookie(&r);
    assert_eq!(c.value, "");
    assert_eq!(c.attr("max-age"), Some("0"));
    assert_eq!(c.attr("path"), Some("/"));
    assert!(
        c.has("httponly") && c.attr("samesite") == Some("Lax"),
        "{c:?}"
    );
    // Revoked on the server, not only forgotten by the browser.
    assert_eq!(me().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Logging out of a session that is already gone still clears the cookie.
    let r = logout(&srv.url).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(session_cookie(&r).attr("max-age"), Some("0"));
}

#[tokio::test]
async fn https_access_url_makes_the_cookie_secure() {
    // The access URL decides (a TLS proxy in front is the usual setup), so plain HTTP on
    // loopback with an https access URL shows the attribute.
    let port = free_tcp_port();
    let access = format!("https://127.0.0.1:{port}");
    let srv = TestServer::start(&["--access-url", &access]);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v2/users/first", srv.url))
        .json(&json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD, "set_cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let c = session_cookie(&r);
    assert!(c.has("secure"), "{c:?}");
    let cookie = format!("tether_session_token={}", c.value);

    // The dashboard's origin is the access URL's, so the http one is another site here.
    let r = http
        .post(format!("{}/api/v2/workspaces", srv.url))
        .header("Cookie", &cookie)
        .header("Origin", &srv.url)
        .json(&json!({"name": "dev"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(format!("{}/api/v2/workspaces", srv.url))
        .header("Cookie", &cookie)
        .header("Origin", &access)
        .json(&json!({"name": "dev"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = http.get(format!("{}/", srv.url)).send().await.unwrap();
    let csp = r.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains(&format!("connect-src 'self' wss://127.0.0.1:{port};")),
        "{csp}"
    );
}

#[tokio::test]
async fn deployment_is_public() {
    let srv = TestServer::start(&[]);
    let r = reqwest::get(format!("{}/api/v2/deployment", srv.url))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["access_url"], srv.url.as_str(), "{d}");
    assert_eq!(d["browser_only"], false, "{d}");
    assert!(d["wildcard_access_url"].is_null(), "{d}");
    assert_eq!(d["disable_path_apps"], false, "{d}");
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"), "{d}");
}

#[tokio::test]
async fn the_dashboard_is_served_with_spa_fallback() {
    let srv = TestServer::start(&[]);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", srv.url)).send();

    let r = get("/").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
    let csp = r.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    let ws_origin = srv.url.replace("http://", "ws://");
    for part in [
        "default-src 'self'",
        &format!("connect-src 'self' {ws_origin};"),
        "frame-ancestors 'self'",
    ] {
        assert!(csp.contains(part), "CSP lacks {part:?}: {csp}");
    }
    let index = r.text().await.unwrap();
    assert!(index.contains(r#"<div id="app">"#), "{index}");

    // The page's script and stylesheet, as Vite named them.
    let asset = |ext: &str| {
        let end = index
            .find(&format!(".{ext}\""))
            .unwrap_or_else(|| panic!("no .{ext} in {index}"));
        let start = index[..end].rfind("/assets/").unwrap();
        index[start..end + 1 + ext.len()].to_string()
    };
    for (ext, ctype) in [
        ("js", "text/javascript; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
    ] {
        let path = asset(ext);
        let r = get(&path).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[CONTENT_TYPE], ctype, "{path}");
        assert_eq!(
            r.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    let r = get("/favicon.svg").await.unwrap();
    assert_eq!(r.headers()[CONTENT_TYPE], "image/svg+xml");

    // Every page route is the app.
    for path in [
        "/login",
        "/setup",
        "/health",
        "/@alice/dev",
        "/@alice/dev/terminal?reconnect=x",
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers().contains_key(CONTENT_SECURITY_POLICY), "{path}");
        assert_eq!(r.text().await.unwrap(), index, "{path}");
    }

    // The rest keeps its own answers: the API's JSON 404, DERP, /healthz, path apps.
    for path in [
        "/api/v2/nonexistent",
        "/api",
        "/assets/missing.js",
        "/derp/nonexistent",
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            r.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let body: Value = r.json().await.unwrap();
        assert!(body["message"].is_string(), "{path}: {body}");
    }
    // A path app is the app proxy's, not the dashboard's: logged out, its 401 page.
    let r = get("/@alice/dev/apps/code/").await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
    );
    assert_ne!(r.text().await.unwrap(), index);
    let body: Value = get("/api/v2/nonexistent")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["message"], "No such API route.");
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "OK");
    // A page route is GET only.
    let r = http
        .post(format!("{}/login", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "No such API route."
    );
}
