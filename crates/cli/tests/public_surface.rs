//! What the server tells, and lets do, someone who is not logged in or whose page is not
//! the server's own (issue 18's Low items): the health report needs a login, `/healthz`
//! stays public, and requests under a host name the server does not answer to (DNS
//! rebinding: an attacker's name re-pointed at a fresh local server) are refused before
//! they can create the first admin.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tether_testing::TestServer;

const PASSWORD: &str = "correct horse battery";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The server's port, for `Host` values that differ from the URL only by name.
fn port(srv: &TestServer) -> u16 {
    srv.http_address().port()
}

#[tokio::test]
async fn the_health_report_needs_a_login_and_healthz_stays_public() {
    let srv = TestServer::start(&[]);
    let http = http();
    let health = format!("{}/api/v2/debug/health", srv.url);

    // Not logged in: 401 in the JSON error shape, and nothing of the report.
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.expect("a JSON error body");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    for section in ["coordinator", "derp", "server_tailnet", "database"] {
        assert!(body.get(section).is_none(), "{section} leaked: {body}");
    }
    // A made-up token is no better.
    let r = http
        .get(&health)
        .header("Tether-Session-Token", "not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // `/healthz` answers anyone.
    let r = http
        .get(format!("{}/healthz", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "OK");

    // Any logged-in user gets the report: by token, and (as the dashboard's health page
    // asks) by the session cookie on a plain GET.
    let admin = srv.first_user().await;
    let r = http
        .get(&health)
        .header("Tether-Session-Token", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["coordinator"]["severity"], "ok", "{report}");

    let r = http
        .post(format!("{}/api/v2/users", srv.url))
        .header("Tether-Session-Token", &admin)
        .json(&json!({"username": "bob", "email": "bob@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .post(format!("{}/api/v2/users/login", srv.url))
        .json(&json!({"username": "bob", "password": PASSWORD, "set_cookie": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tether_session_token="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let r = http
        .get(&health)
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    assert!(report["server_tailnet"]["severity"].is_string(), "{report}");
}

#[tokio::test]
async fn a_page_under_a_foreign_host_name_cannot_create_the_first_admin() {
    let srv = TestServer::start(&[]);
    let http = http();
    let foreign = format!("attacker.example:{}", port(&srv));
    let first = json!({"username": "mallory", "email": "m@example.com", "password": PASSWORD});

    // What a rebinding page sends: its own name as Host, its own origin.
    let r = http
        .post(format!("{}/api/v2/users/first", srv.url))
        .header("Host", &foreign)
        .header("Origin", format!("http://{foreign}"))
        .json(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    let body: Value = r.json().await.expect("a JSON error body");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("attacker.example"), "{body}");
    assert!(message.contains("--access-url"), "{body}");

    // Nor can it read anything: the dashboard, the API, the coordinator's upgrade.
    for path in [
        "/",
        "/api/v2/users/first",
        "/api/v2/buildinfo",
        "/api/v2/tailnet/coordinate?version=1.0",
    ] {
        let r = http
            .get(format!("{}{path}", srv.url))
            .header("Host", &foreign)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
    }
    // A Host that is not a host at all is a bad request.
    let r = http
        .get(format!("{}/api/v2/buildinfo", srv.url))
        .header("Host", "a b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Still a fresh server: no user was created.
    let r = http
        .get(format!("{}/api/v2/users/first", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // `/healthz` and the DERP routes answer under any name (load balancers; DERP maps
    // that name this server otherwise; DERP authenticates itself).
    for path in ["/healthz", "/derp/probe", "/derp"] {
        let r = http
            .get(format!("{}{path}", srv.url))
            .header("Host", &foreign)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
    }

    // The names it does answer to: its IP (what this test dials), localhost.
    for host in [
        format!("127.0.0.1:{}", port(&srv)),
        format!("LOCALHOST:{}", port(&srv)),
    ] {
        let r = http
            .get(format!("{}/api/v2/buildinfo", srv.url))
            .header("Host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
    }
    // And the real first user goes through.
    srv.first_user().await;
}

#[tokio::test]
async fn the_access_urls_name_is_answered_on_any_port_and_nothing_else_is() {
    // A proxy in front may expose the server's name on another port; the name is the
    // operator's, so the port does not matter.
    let srv = TestServer::start(&["--access-url", "https://tether.example.test"]);
    let http = http();
    // 404: the route answered (no first user yet).
    for (host, expect) in [
        ("tether.example.test", StatusCode::NOT_FOUND),
        ("Tether.Example.Test:443", StatusCode::NOT_FOUND),
        ("tether.example.test.:8443", StatusCode::NOT_FOUND),
        ("evil.tether.example.test", StatusCode::MISDIRECTED_REQUEST),
        (
            "tether.example.test.evil.example",
            StatusCode::MISDIRECTED_REQUEST,
        ),
    ] {
        let r = http
            .get(format!("{}/api/v2/users/first", srv.url))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expect, "{host}");
    }
}
