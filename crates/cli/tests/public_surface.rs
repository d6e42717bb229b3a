//! What the server tells someone who is not logged in (issue 18's Low items): the
//! health report needs a login, `/healthz` stays public.
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
