//! The real `tether` binary: first user, users, workspaces, tokens, health, start-up errors.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tether_proto::coord::{Request, Response};
use tether_testing::{CoordConn, ServerProcess, TestServer, Tether, session_token};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

#[test]
fn first_user_workspaces_and_list() {
    // The binary itself, for its banner.
    let srv = TETHER.server_process(&[]);
    let banner = srv.banner();
    assert!(
        banner
            .iter()
            .any(|l| l.contains(&format!("tether login {}", srv.url))),
        "{banner:?}"
    );
    let cfg = TETHER.first_user(&srv);

    // The token is stored with mode 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cfg.join("session"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let out = TETHER.run(&cfg, &["create", "dev"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The agent token goes in the environment, not on the agent's command line.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("TETHER_AGENT_TOKEN=")
                && l.trim_end()
                    .ends_with(&format!(" tether agent --url {}", srv.url))),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("--token "), "{}", out.stdout);

    let out = TETHER.run(&cfg, &["create", "Bad_Name"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Invalid workspace name \"Bad_Name\""),
        "{}",
        out.stderr
    );

    let out = TETHER.run(&cfg, &["create", "dev"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("already has a workspace named dev"),
        "{}",
        out.stderr
    );

    let out = TETHER.run(&cfg, &["list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "LAST", "SEEN", "RELAY"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["dev", "disconnected", "never", "-"]
    );

    let out = TETHER.run(&cfg, &["list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "dev");
    assert_eq!(list[0]["status"], "disconnected");

    // Deleting needs confirmation without a terminal, then works with --yes.
    let out = TETHER.run(&cfg, &["delete", "dev"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    let out = TETHER.run(&cfg, &["delete", "dev", "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = TETHER.run(&cfg, &["delete", "dev", "--yes"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no workspace named \"dev\""),
        "{}",
        out.stderr
    );

    // Logout revokes the token on the server.
    let token = session_token(&cfg);
    let out = TETHER.run(&cfg, &["logout"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = TETHER.run_env(
        &cfg,
        &["list"],
        &[("TETHER_URL", &srv.url), ("TETHER_SESSION_TOKEN", &token)],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("invalid or expired"), "{}", out.stderr);
}

/// The binary's `--ready-file` names what it bound, the same addresses its banner
/// prints, and the server answers once it is there.
#[test]
fn ready_file_names_every_bound_address() {
    let srv = TETHER.server_process(&[]);
    let ready = &srv.ready;
    let banner = srv.banner();
    let printed = |prefix: &str| {
        banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {banner:?}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        ready.http_address.to_string(),
        printed("tether server listening on http://")
    );
    let stun = ready.stun_address.expect("the built-in STUN server runs");
    assert_eq!(stun.to_string(), printed("STUN:        built in, udp "));
    assert_eq!(
        ready.url.as_str(),
        format!("http://{}/", ready.http_address)
    );
    assert_eq!(ready.tls_address, None);
    assert_eq!(ready.data_dir, srv.dir.path().join("data"));
    assert_eq!(ready.pid, srv.pid());
    assert_eq!(ready.version, env!("CARGO_PKG_VERSION"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let health = rt.block_on(async {
        reqwest::get(format!("{}/healthz", srv.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(health, "OK");
}

/// `TETHER_READY_FILE` works like the flag; a file left by an earlier run is replaced,
/// never read as this run's; STUN turned off shows as `null`; and a ready file that
/// cannot be written stops the server with one sentence.
#[test]
fn ready_file_from_the_environment_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.json");
    std::fs::write(&path, "{\"stale\": true}").unwrap();
    let mut child = std::process::Command::new(TETHER.bin())
        .args([
            "server",
            "--http-address",
            "127.0.0.1:0",
            "--stun-address",
            "disable",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("TETHER_READY_FILE", &path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = tether_testing::wait_ready_file(&path, &mut child, Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ready.stun_address, None);
    assert_eq!(ready.pid, child.id());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for key in [
        "url",
        "http_address",
        "tls_address",
        "stun_address",
        "data_dir",
        "pid",
        "version",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    assert!(json["stun_address"].is_null(), "{json}");

    let out = std::process::Command::new(TETHER.bin())
        .args([
            "server",
            "--http-address",
            "127.0.0.1:0",
            "--stun-address",
            "disable",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--ready-file")
        .arg(dir.path().join("no-such-dir").join("ready.json"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not write the ready file") && err.contains("--ready-file"),
        "{err}"
    );
}

#[test]
fn users_second_login_and_admin_only() {
    let srv = TestServer::start(&[]);
    let alice = TETHER.first_user(&srv);
    let out = TETHER.run(
        &alice,
        &[
            "users",
            "create",
            "--username",
            "bob",
            "--email",
            "bob@example.com",
            "--password",
            "hunter2hunter2",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A second first-user attempt logs in instead (and fails with the wrong password).
    let bob = srv.config_dir("bob");
    let out = TETHER.run(
        &bob,
        &[
            "login",
            &srv.url,
            "--username",
            "bob",
            "--password",
            "wrong-password",
        ],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Incorrect username or password"),
        "{}",
        out.stderr
    );
    let out = TETHER.run(
        &bob,
        &[
            "login",
            &srv.url,
            "--username",
            "bob",
            "--password",
            "hunter2hunter2",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Bob is not an admin.
    let out = TETHER.run(
        &bob,
        &[
            "users",
            "create",
            "--username",
            "carol",
            "--email",
            "c@example.com",
            "--password",
            "12345678x",
        ],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Only an admin"), "{}", out.stderr);

    // Without a terminal, missing login fields are named, never prompted for.
    let out = TETHER.run(&srv.config_dir("nobody"), &["login", &srv.url]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("--username is required"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn http_errors_are_clear() {
    let srv = TestServer::start(&[]);
    let cfg = TETHER.first_user(&srv);
    let token = session_token(&cfg);
    let http = reqwest::Client::new();

    let r = http
        .get(format!("{}/healthz", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "OK");

    // Missing and wrong tokens: 401 with a JSON message.
    for t in [None, Some("not-a-token")] {
        let mut req = http.get(format!("{}/api/v2/workspaces", srv.url));
        if let Some(t) = t {
            req = req.header("Tether-Session-Token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("login"),
            "{body}"
        );
    }

    // Malformed JSON: 400 with a message; nothing created.
    let r = http
        .post(format!("{}/api/v2/workspaces", srv.url))
        .header("Tether-Session-Token", &token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let list: Vec<serde_json::Value> = http
        .get(format!("{}/api/v2/workspaces", srv.url))
        .header("Tether-Session-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.is_empty());

    // A second first user is refused.
    let r = http
        .post(format!("{}/api/v2/users/first", srv.url))
        .json(&serde_json::json!({"username": "eve", "email": "e@example.com", "password": "12345678"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // Health: four sections, each with a severity; the default deployment is healthy.
    let h: serde_json::Value = http
        .get(format!("{}/api/v2/debug/health", srv.url))
        .header("Tether-Session-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["healthy"], true, "{h}");
    for s in ["database", "derp", "stun", "coordinator"] {
        assert_eq!(h[s]["severity"], "ok", "{s}: {h}");
    }

    // The effective DERP map has the built-in region with STUN.
    let m: serde_json::Value = http
        .get(format!("{}/api/v2/derp-map", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let region = &m["Regions"]["999"];
    assert_eq!(region["RegionCode"], "tether");
    assert_eq!(region["RegionName"], "tether embedded relay");
    let port: u16 = srv.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(region["Nodes"][0]["DERPPort"], port);
    assert_eq!(region["Nodes"][0]["ForceHTTP"], true);
    assert!(region["Nodes"][0]["STUNPort"].as_i64().unwrap() > 0);
}

#[test]
fn unreachable_server_fails_fast() {
    // Take a free port and close it, so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let start = std::time::Instant::now();
    let out = TETHER.run_env(
        dir.path(),
        &["list"],
        &[("TETHER_URL", &url), ("TETHER_SESSION_TOKEN", "x")],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("could not reach the tether server at {url}")),
        "{}",
        out.stderr
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    let out = TETHER.run(dir.path(), &["list"]);
    assert!(
        out.stderr.contains("you are not logged in"),
        "{}",
        out.stderr
    );
}

#[test]
fn startup_refusals_are_one_sentence() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(TETHER.bin())
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[
        "--http-address",
        &format!("127.0.0.1:{port}"),
        "--stun-address",
        "disable",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("port {port} is already in use")) && err.contains("--http-address"),
        "{err}"
    );

    let (code, err) = run(&[
        "--http-address",
        "127.0.0.1:0",
        "--derp-server-enable=false",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no other DERP map is configured"), "{err}");
}

#[tokio::test]
async fn coordinator_version_and_tokens() {
    let srv = TestServer::start(&[]);
    let cfg = TETHER.first_user(&srv);
    let token = TETHER.create_workspace(&cfg, "dev");

    let refused = CoordConn::agent(&srv.url, "wrong-token")
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 401);
    let refused = CoordConn::client(&srv.url, "wrong-token")
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 401);
    let refused = CoordConn::connect(
        &srv.url,
        "/api/v2/workspaceagents/me/coordinate?version=2.0",
        "Tether-Agent-Token",
        &token,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("not supported"), "{}", refused.body);

    let mut agent = CoordConn::agent(&srv.url, &token).await.unwrap();
    let Response::Welcome { version, .. } = agent.recv().await else {
        panic!("expected welcome")
    };
    assert_eq!(version, "1.0");
    assert!(matches!(agent.recv().await, Response::DerpMap { .. }));
    // Malformed JSON gets an error message and the connection stays usable.
    agent.send_raw("{not json").await;
    let r = agent.recv().await;
    assert!(
        matches!(&r, Response::Error { message } if message.contains("malformed")),
        "{r:?}"
    );
    agent
        .send(&Request::AddTunnel {
            id: uuid::Uuid::new_v4(),
        })
        .await;
    assert!(matches!(agent.recv().await, Response::Error { .. }));
}

/// A server whose disk fills up answers every write with a clear error, keeps serving
/// reads and everything it stored before, and takes writes again once there is room.
/// Needs root (it mounts a small tmpfs in a mount namespace of the server's own).
#[test]
fn a_full_disk_fails_writes_clearly_and_loses_nothing() {
    let srv = ServerProcess::start_on_tmpfs(TETHER, "8m", &[]);
    let cfg = TETHER.first_user(&srv);
    TETHER.create_workspace(&cfg, "before");

    // Fill the server's disk.
    let filler = srv.data_dir_seen_by_server().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x5a_u8; 64 << 10];
    let full = (0..1000)
        .map(|_| std::io::Write::write_all(&mut f, &chunk))
        .find_map(Result::err)
        .expect("8 MiB tmpfs took 64 MiB");
    assert_eq!(full.kind(), std::io::ErrorKind::StorageFull, "{full}");
    drop(f);

    // Writes fail clearly. SQLite may still fit a write or two into pages its files
    // already hold, so keep creating until one fails (a full 8 MiB disk cannot take 50).
    let mut made = vec!["before".to_string()];
    let failed = (0..50).find_map(|i| {
        let name = format!("full-{i}");
        let out = TETHER.run(&cfg, &["create", &name]);
        if out.code == 0 {
            made.push(name);
            None
        } else {
            Some(out)
        }
    });
    let failed = failed.expect("50 workspaces created on a full disk");
    assert!(
        failed.stderr.contains("nothing was changed") && failed.stderr.contains("disk is full"),
        "unclear error on a full disk: {}",
        failed.stderr
    );

    // Reads and everything stored before still work.
    let list = |cfg: &std::path::Path| -> Vec<String> {
        let out = TETHER.run(cfg, &["list", "-o", "json"]);
        assert_eq!(out.code, 0, "list failed: {}", out.stderr);
        let v: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        let mut names: Vec<String> = v
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    made.sort();
    assert_eq!(
        list(&cfg),
        made,
        "the list lost or invented workspaces on a full disk"
    );

    // With room again, writes work again and nothing was lost.
    std::fs::remove_file(&filler).unwrap();
    TETHER.create_workspace(&cfg, "after");
    made.push("after".into());
    made.sort();
    assert_eq!(list(&cfg), made);
}
