//! The harness itself: the in-process server serves, keeps its data across a restart
//! and lets go of its port when stopped; start-up errors come back as text; subprocess
//! limits hold.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use tether_testing::{TestServer, run_with_input, wait_ready_file};

async fn workspaces(srv: &TestServer, session: &str) -> Vec<String> {
    let list: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("{}/api/v2/workspaces", srv.url))
        .header("Tether-Session-Token", session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn in_process_server_restarts_with_its_data_and_releases_its_port() {
    let srv = TestServer::start(&[]);
    assert_eq!(srv.url, format!("http://{}", srv.http_address()));
    assert!(srv.stun_address().is_some());
    assert_eq!(srv.tls_address(), None);
    assert_eq!(srv.data_dir(), srv.dir.path().join("data"));
    let (session, agent_token) = srv.user_and_workspace().await;
    assert!(!agent_token.is_empty());
    assert_eq!(workspaces(&srv, &session).await, ["dev"]);

    let addr = srv.http_address();
    let mut srv = srv.restart();
    assert_eq!(srv.http_address(), addr);
    assert_eq!(workspaces(&srv, &session).await, ["dev"]);

    srv.stop();
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "something still listens on {addr}");
    assert!(srv.data_dir().join("tether.db").exists());
}

#[test]
fn start_up_errors_come_back_as_text() {
    let err = TestServer::try_start(&["--derp-server-enable=false"])
        .err()
        .unwrap();
    assert!(err.contains("no other DERP map is configured"), "{err}");
    let err = TestServer::try_start(&["--no-such-flag"]).err().unwrap();
    assert!(err.contains("bad server flags"), "{err}");
}

#[test]
fn run_with_input_feeds_stdin_and_captures_both_streams() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "cat; echo oops >&2; exit 4"]);
    let out = run_with_input(cmd, b"hello\n", Duration::from_secs(20));
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (4, "hello\n", "oops\n")
    );
}

#[test]
#[should_panic(expected = "did not finish within")]
fn run_with_input_kills_what_overruns_its_limit() {
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    run_with_input(cmd, b"", Duration::from_millis(200));
}

#[test]
#[should_panic(expected = "exited")]
fn a_server_that_exits_before_it_is_ready_fails_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
    wait_ready_file(
        &dir.path().join("ready.json"),
        &mut child,
        Duration::from_secs(20),
    );
}
