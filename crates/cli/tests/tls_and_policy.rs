//! HTTPS with `--tls-*`, the relay over TLS, policy flags reaching clients, and the
//! built-in STUN server answering a stock client (coturn's `turnutils_stunclient`).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use tether_testing::{CoordConn, TestServer, Tether, node_for, session_token};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed (apt-get install -y openssl)");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    (cert, key)
}

#[tokio::test]
async fn https_serves_the_api_and_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let srv = TestServer::start(&[
        "--tls-address",
        "127.0.0.1:0",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ]);
    let https = srv.tls_address().unwrap().to_string();
    // The certificate is self-signed (and marked CA by openssl's defaults), so skip
    // verification; what is tested is that the server speaks TLS with it.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let body = client
        .get(format!("https://{https}/healthz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "OK");

    // The relay over TLS, with a key registered through the coordinator (also over TLS).
    let alice = TETHER.first_user(&srv);
    let agent_token = TETHER.create_workspace(&alice, "dev");
    let mut agent = CoordConn::agent(&srv.url, &agent_token).await.unwrap();
    let tether_proto::coord::Response::Welcome { id, .. } = agent.recv().await else {
        panic!("welcome")
    };
    let key = tether_key::NodePrivate::generate();
    let node = node_for(id, &key, 999);
    agent
        .send(&tether_proto::coord::Request::UpdateSelf { node })
        .await;
    let mut cfg = tether_derp::client::ClientConfig::new(
        format!("https://{https}/derp").parse().unwrap(),
        key,
    );
    cfg.insecure_tls = true;
    let mut connected = None;
    for _ in 0..50 {
        // The update is not acknowledged; retry briefly until the key is known.
        match tether_derp::client::Client::connect(&cfg).await {
            Ok(c) => {
                connected = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let c = connected.expect("DERP over TLS never connected");
    assert_eq!(c.transport(), tether_derp::client::Transport::Upgrade);

    // A bad key file is one sentence.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not pem").unwrap();
    let out = Command::new(TETHER.bin())
        .args([
            "server",
            "--http-address",
            "127.0.0.1:0",
            "--stun-address",
            "disable",
            "--tls-address",
            "127.0.0.1:0",
            "--tls-cert-file",
        ])
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path().join("d2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The binary's `--ready-file` names the HTTPS address its banner prints, and the
/// server speaks TLS there.
#[tokio::test]
async fn ready_file_names_the_https_address() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let srv = TETHER.server_process(&[
        "--tls-address",
        "127.0.0.1:0",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ]);
    let https = srv
        .ready
        .tls_address
        .expect("a TLS address in the ready file");
    let banner = srv.banner();
    assert!(
        banner
            .iter()
            .any(|l| l == &format!("tether server listening on https://{https}")),
        "{banner:?}"
    );
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let body = client
        .get(format!("https://{https}/healthz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "OK");
}

#[tokio::test]
async fn policy_flags_reach_clients_and_health() {
    let srv = TestServer::start(&["--derp-force-websockets", "--block-direct-connections"]);
    let cfg = TETHER.first_user(&srv);
    let info: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v2/tailnet/connection", srv.url))
        .header("Tether-Session-Token", session_token(&cfg))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["derp_force_websockets"], true);
    assert_eq!(info["disable_direct_connections"], true);
    assert!(info["derp_map"]["Regions"]["999"].is_object());
    let h = srv.health(&session_token(&cfg)).await;
    assert_eq!(h["coordinator"]["code"], "ECOORD01", "{h}");
    assert_eq!(h["healthy"], true);

    // No STUN anywhere is a warning with its own code, not an outage.
    let srv = TestServer::start(&["--derp-server-stun-addresses", "disable"]);
    let h = srv.health(&srv.first_user().await).await;
    assert_eq!(h["stun"]["severity"], "warning", "{h}");
    assert_eq!(h["stun"]["code"], "ESTUN01");
    assert_eq!(h["healthy"], true);
}

#[test]
fn builtin_stun_answers_turnutils_stunclient() {
    let srv = TestServer::start(&[]);
    let stun = srv.stun_address().unwrap().to_string();
    let (host, port) = stun.rsplit_once(':').unwrap();
    let child = Command::new("turnutils_stunclient")
        .args(["-p", port, host])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("turnutils_stunclient missing: install coturn (apt-get install -y coturn); .ci/run does");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("turnutils_stunclient hung");
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mapped = text
        .lines()
        .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
        .unwrap_or_else(|| panic!("no reflexive address in: {text}"))
        .trim();
    let (ip, mport) = mapped.rsplit_once(':').unwrap();
    assert_eq!(ip, "127.0.0.1", "{text}");
    let mport: u16 = mport.parse().unwrap();
    assert!(mport != 0 && mport.to_string() != port, "{text}");
    // And the server counted it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h: serde_json::Value = rt.block_on(async { srv.health(&srv.first_user().await).await });
    assert!(
        h["stun"]["details"]["builtin"]["requests_answered"]
            .as_u64()
            .unwrap()
            >= 1,
        "{h}"
    );
}
