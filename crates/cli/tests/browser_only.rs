//! `tether server --browser-only`: users' tailnet connections are refused with 409 and
//! one sentence, every CLI command that joins the tailnet fails at once with it (no
//! retry loop), the deployment and health say so, and the web terminal (the server's
//! own node) keeps working.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tether_testing::{CoordConn, Tether, free_tcp_port, run_with_input, session_token};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

const SENTENCE: &str = "Non-browser connections are disabled for your deployment.";
/// "At once": far below the CLI's tailnet waits (15 s for a node, 10 s for a session).
const FAST: Duration = Duration::from_secs(5);

#[test]
fn every_cli_connection_fails_fast_with_the_sentence() {
    let (srv, cfg, _agent) = TETHER.dev_workspace(&["--browser-only"]);
    let free = free_tcp_port().to_string();
    let forward = format!("{free}:22");
    let commands: Vec<Vec<&str>> = vec![
        vec!["ssh", "dev", "--", "true"],
        vec!["ssh", "--stdio", "dev"],
        vec!["port-forward", "dev", "--tcp", &forward],
        vec!["ping", "dev", "-n", "1"],
        vec!["speedtest", "dev"],
        vec!["show", "dev"],
    ];
    for args in &commands {
        let started = Instant::now();
        let out = TETHER.run(&cfg, args);
        let took = started.elapsed();
        assert_eq!(out.code, 1, "{args:?}: {}{}", out.stdout, out.stderr);
        assert_eq!(
            out.stderr.trim(),
            format!("error: {SENTENCE}"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(took < FAST, "{args:?} took {took:?}");
    }

    // The ProxyCommand `tether config-ssh` writes, as OpenSSH runs it.
    let ssh_config = srv.dir.path().join("ssh_config");
    let out = TETHER.run(
        &cfg,
        &[
            "config-ssh",
            "--ssh-config-file",
            ssh_config.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let written = std::fs::read_to_string(&ssh_config).unwrap();
    let proxy = written
        .lines()
        .find_map(|l| l.trim().strip_prefix("ProxyCommand "))
        .unwrap()
        .replace("%h", "tether.dev");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(&proxy);
    let started = Instant::now();
    let out = run_with_input(cmd, b"", Duration::from_secs(30));
    assert_eq!(out.code, 1, "{proxy}: {}", out.stderr);
    assert!(out.stderr.contains(SENTENCE), "{}", out.stderr);
    assert!(started.elapsed() < FAST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_says_so_and_the_web_terminal_works() {
    let (srv, cfg, _agent) = TETHER.dev_workspace(&["--browser-only"]);
    let token = session_token(&cfg);
    let url = srv.url.clone();
    let http = reqwest::Client::new();

    // The two ways onto the tailnet for a user: 409 with the sentence.
    let r = http
        .get(format!("{url}/api/v2/tailnet/connection"))
        .header("Tether-Session-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({ "message": SENTENCE }));
    let refused = CoordConn::client(&url, &token).await.err().unwrap();
    assert_eq!(refused.status, 409);
    assert_eq!(
        serde_json::from_str::<Value>(&refused.body).unwrap(),
        json!({ "message": SENTENCE })
    );

    let deployment: Value = http
        .get(format!("{url}/api/v2/deployment"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deployment["browser_only"], true);
    let health: Value = http
        .get(format!("{url}/api/v2/debug/health"))
        .header("Tether-Session-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["browser_only"], true);
    assert_eq!(health["coordinator"]["code"], "ECOORD02");
    assert!(
        health["coordinator"]["message"]
            .as_str()
            .unwrap()
            .contains("browser-only"),
        "{health}"
    );

    // The web terminal goes through the server's own node, which is unaffected.
    let list = TETHER.run(&cfg, &["list", "-o", "json"]);
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    let agent = list[0]["agent_id"].as_str().unwrap().to_string();
    let pty = format!(
        "{}/api/v2/workspaceagents/{agent}/pty?reconnect={}&width=80&height=24",
        url.replace("http://", "ws://"),
        uuid::Uuid::new_v4()
    );
    let mut req = pty.into_client_request().unwrap();
    req.headers_mut()
        .insert("Tether-Session-Token", token.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let input = json!({ "data": "echo browser-$((40+2))\r" }).to_string();
    ws.send(Message::Binary(input.into_bytes().into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&out).contains("browser-42") {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => out.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "no browser-42: {other:?}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}
