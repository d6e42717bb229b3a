//! Web apps (issue 15, path apps): declaring them with the CLI and every refusal, and
//! the path-app proxy through the real server binary, agent and tailnet to real
//! upstreams (`python3 -m http.server`, and an echo server of this test's own that
//! answers with the request headers it got and echoes WebSocket messages).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tether_testing::{AgentProcess, ServerProcess, Tether, free_tcp_port, session_token};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self, Message};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));
const BOUND: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse battery";

/// A server process with `flags`, alice logged in, and workspace `dev`.
fn deployment(flags: &[&str]) -> (ServerProcess, PathBuf, String) {
    let srv = TETHER.server_process(flags);
    let cfg = TETHER.first_user(&srv);
    let token = TETHER.create_workspace(&cfg, "dev");
    (srv, cfg, token)
}

fn start_agent(srv: &ServerProcess, cfg: &std::path::Path, token: &str) -> AgentProcess {
    let agent = TETHER.agent(&srv.url, token);
    TETHER.wait_connected(cfg, "dev", Duration::from_secs(30));
    agent
}

/// Creates user `name` (by alice, the admin) and returns her session token.
async fn second_user(srv: &ServerProcess, alice: &std::path::Path, name: &str) -> String {
    let out = TETHER.run(
        alice,
        &[
            "users",
            "create",
            "-u",
            name,
            "-e",
            &format!("{name}@example.com"),
            "-p",
            PASSWORD,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r: Value = reqwest::Client::new()
        .post(format!("{}/api/v2/users/login", srv.url))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["session_token"].as_str().unwrap().to_string()
}

/// The dashboard cookie `tether_session_token=…` for alice.
async fn alice_cookie(srv: &ServerProcess) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/users/login", srv.url))
        .header("Origin", &srv.url)
        .json(&json!({"username": "alice", "password": PASSWORD, "set_cookie": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

#[test]
fn apps_are_declared_listed_and_removed_and_bad_ones_refused() {
    let (srv, cfg, _token) = deployment(&[]);
    let ok = |args: &[&str]| {
        let out = TETHER.run(&cfg, args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out.stdout
    };
    let refused = |args: &[&str], says: &str| {
        let out = TETHER.run(&cfg, args);
        assert_ne!(out.code, 0, "{args:?} succeeded: {}", out.stdout);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    };
    let said = ok(&[
        "apps",
        "add",
        "dev",
        "code",
        "--url",
        "http://127.0.0.1:8080",
        "--name",
        "Code",
    ]);
    assert!(said.contains("App code added"), "{said}");
    assert!(
        said.contains(&format!("{}/@alice/dev/apps/code/", srv.url)),
        "{said}"
    );
    ok(&[
        "apps",
        "add",
        "dev",
        "jup",
        "--url",
        "http://localhost:8888",
        "--subdomain",
        "--share",
        "public",
    ]);
    let list: Value = serde_json::from_str(&ok(&["apps", "list", "dev", "-o", "json"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["slug"], "code");
    assert_eq!(list[0]["display_name"], "Code");
    assert_eq!(list[0]["share"], "owner");
    assert_eq!(list[0]["subdomain"], false);
    assert_eq!(list[1]["slug"], "jup");
    assert_eq!(list[1]["share"], "public");
    assert_eq!(list[1]["subdomain"], true);
    assert!(list[1]["open_url"].is_null(), "no wildcard URL: {list:?}");
    let table = ok(&["apps", "list", "dev"]);
    assert!(table.starts_with("SLUG"), "{table}");
    assert!(table.contains("http://127.0.0.1:8080"), "{table}");

    refused(
        &[
            "apps",
            "add",
            "dev",
            "code",
            "--url",
            "http://127.0.0.1:9000",
        ],
        "already has an app named code",
    );
    refused(
        &[
            "apps",
            "add",
            "dev",
            "Bad_Slug",
            "--url",
            "http://127.0.0.1:9000",
        ],
        "Invalid app name",
    );
    refused(
        &["apps", "add", "dev", "ssh", "--url", "http://127.0.0.1:8"],
        "Port 8 is reserved for the workspace agent",
    );
    refused(
        &[
            "apps",
            "add",
            "dev",
            "tls",
            "--url",
            "https://127.0.0.1:8443",
        ],
        "scheme must be http",
    );
    refused(
        &["apps", "add", "dev", "far", "--url", "http://10.1.2.3:8080"],
        "127.0.0.1 or localhost",
    );
    refused(
        &["apps", "add", "nope", "x", "--url", "http://127.0.0.1:9000"],
        "no workspace named",
    );
    // The 63-character host label: `<slug>--<workspace>--<user>`.
    let long_ws = "w".repeat(40);
    TETHER.create_workspace(&cfg, &long_ws);
    let slug = "s".repeat(63 - 40 - "alice".len() - 4);
    ok(&[
        "apps",
        "add",
        &long_ws,
        &slug,
        "--url",
        "http://127.0.0.1:9000",
        "--subdomain",
    ]);
    let too_long = format!("{slug}x");
    refused(
        &[
            "apps",
            "add",
            &long_ws,
            &too_long,
            "--url",
            "http://127.0.0.1:9000",
            "--subdomain",
        ],
        "would be 64 characters, more than the 63 a DNS label can hold",
    );
    // The same slug is fine as a path app.
    ok(&[
        "apps",
        "add",
        &long_ws,
        &too_long,
        "--url",
        "http://127.0.0.1:9000",
    ]);

    // Only the owner (or an admin) declares: bob cannot touch alice's workspace.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bob = rt.block_on(second_user(&srv, &cfg, "bob"));
    let bob_cfg = srv.dir.path().join("cfg-bob");
    let env = [
        ("TETHER_URL", srv.url.as_str()),
        ("TETHER_SESSION_TOKEN", bob.as_str()),
    ];
    for args in [
        &[
            "apps",
            "add",
            "alice/dev",
            "mine",
            "--url",
            "http://127.0.0.1:9000",
        ][..],
        &["apps", "list", "alice/dev"][..],
        &["apps", "rm", "alice/dev", "code"][..],
    ] {
        let out = TETHER.run_env(&bob_cfg, args, &env);
        assert_ne!(out.code, 0, "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.contains("no workspace named"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // alice, an admin, may name bob's workspaces as owner/workspace.
    let bob_ws = TETHER.run_env(&bob_cfg, &["create", "box"], &env);
    assert_eq!(bob_ws.code, 0, "{}", bob_ws.stderr);
    ok(&[
        "apps",
        "add",
        "bob/box",
        "web",
        "--url",
        "http://127.0.0.1:9000",
    ]);
    let bobs: Value = serde_json::from_str(
        &TETHER
            .run_env(&bob_cfg, &["apps", "list", "box", "-o", "json"], &env)
            .stdout,
    )
    .unwrap();
    assert_eq!(bobs[0]["slug"], "web", "{bobs}");

    let said = ok(&["apps", "rm", "dev", "code"]);
    assert!(said.contains("App code removed"), "{said}");
    refused(&["apps", "rm", "dev", "code"], "has no app named");
    let list: Value = serde_json::from_str(&ok(&["apps", "list", "dev", "-o", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

/// An upstream that answers with the request's method, path and headers as JSON, and
/// echoes WebSocket messages (answering with the first offered subprotocol).
async fn echo_upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                let is_ws = req
                    .headers()
                    .get("upgrade")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
                if is_ws {
                    let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
                    let proto = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                        .map(|v| v.trim().to_string());
                    let up = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let io = TokioIo::new(up.await.unwrap());
                        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                            io,
                            Role::Server,
                            None,
                        )
                        .await;
                        while let Some(Ok(m)) = ws.next().await {
                            if m.is_text() || m.is_binary() {
                                ws.send(m).await.unwrap();
                            }
                        }
                    });
                    let mut resp = Response::builder()
                        .status(101)
                        .header("connection", "upgrade")
                        .header("upgrade", "websocket")
                        .header(
                            "sec-websocket-accept",
                            tungstenite::handshake::derive_accept_key(&key),
                        );
                    if let Some(p) = proto {
                        resp = resp.header("sec-websocket-protocol", p);
                    }
                    return Ok::<_, Infallible>(resp.body(Full::new(Bytes::new())).unwrap());
                }
                let mut headers = BTreeMap::<String, Vec<String>>::new();
                for (k, v) in req.headers() {
                    headers
                        .entry(k.as_str().to_string())
                        .or_default()
                        .push(v.to_str().unwrap_or("").to_string());
                }
                let body = json!({
                    "method": req.method().as_str(),
                    "path": req.uri().to_string(),
                    "headers": headers,
                });
                Ok(Response::new(Full::new(Bytes::from(body.to_string()))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// `python3 -m http.server PORT` serving a temp dir with one file; killed on drop.
struct PyServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl PyServer {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hello from the workspace\n").unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + BOUND;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, _dir: dir }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn path_apps_proxy_http_and_websockets_without_leaking_credentials() {
    let (srv, cfg, token) = deployment(&[]);
    let agent = start_agent(&srv, &cfg, &token);
    let py_port = free_tcp_port();
    let _py = PyServer::start(py_port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    rt.spawn(echo_upstream(echo));
    let dead_port = free_tcp_port();
    for (slug, port) in [("files", py_port), ("echo", echo_port), ("dead", dead_port)] {
        let out = TETHER.run(
            &cfg,
            &[
                "apps",
                "add",
                "dev",
                slug,
                "--url",
                &format!("http://127.0.0.1:{port}"),
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let alice_token = session_token(&cfg);
    let url = srv.url.clone();

    rt.block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let cookie = alice_cookie(&srv).await;
        let app = |slug: &str, rest: &str| format!("{url}/@alice/dev/apps/{slug}/{rest}");

        // The missing slash: 307, query kept.
        let r = http
            .get(format!("{url}/@alice/dev/apps/files?x=1"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(r.headers()["location"], "/@alice/dev/apps/files/?x=1");

        // A real file server behind the path app.
        let r = http
            .get(app("files", "hello.txt"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "hello from the workspace\n");
        let r = http
            .get(app("files", ""))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("hello.txt"));

        // The upstream sees none of tether's credentials, and our X-Forwarded-*.
        for auth in [
            vec![("Cookie", format!("{cookie}; app_pref=dark"))],
            vec![("Tether-Session-Token", alice_token.clone())],
            vec![("Authorization", format!("Bearer {alice_token}"))],
        ] {
            let mut req = http
                .post(app("echo", "some/path?q=1"))
                .header("Origin", &url)
                .header("X-Forwarded-Host", "evil.example")
                .header("X-Forwarded-For", "203.0.113.9")
                .header("X-Forwarded-Proto", "gopher")
                .body("payload");
            for (k, v) in &auth {
                req = req.header(*k, v);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{auth:?}");
            let seen: Value = r.json().await.unwrap();
            let text = seen.to_string();
            assert!(
                !text.contains(&alice_token),
                "{auth:?}: the app saw the token: {text}"
            );
            assert!(!text.contains("tether_session_token"), "{text}");
            assert!(!text.contains("tether-session-token"), "{text}");
            assert!(!text.contains("evil.example"), "{text}");
            assert!(!text.contains("203.0.113.9"), "{text}");
            assert!(!text.contains("gopher"), "{text}");
            assert_eq!(seen["method"], "POST");
            assert_eq!(seen["path"], "/some/path?q=1");
            let h = &seen["headers"];
            let host = url.trim_start_matches("http://");
            assert_eq!(h["x-forwarded-host"], json!([host]), "{text}");
            assert_eq!(h["x-forwarded-for"], json!(["127.0.0.1"]), "{text}");
            assert_eq!(h["x-forwarded-proto"], json!(["http"]), "{text}");
            assert!(h.get("authorization").is_none(), "{text}");
            if auth[0].0 == "Cookie" {
                assert_eq!(h["cookie"], json!(["app_pref=dark"]), "{text}");
            }
        }
        // An Authorization that is not ours is the app's own and passes through.
        let r = http
            .get(app("echo", ""))
            .header("Cookie", &cookie)
            .header("Authorization", "Bearer app-own-token")
            .send()
            .await
            .unwrap();
        let seen: Value = r.json().await.unwrap();
        assert_eq!(
            seen["headers"]["authorization"],
            json!(["Bearer app-own-token"])
        );

        // A WebSocket echo through the path app, subprotocol (mixed case) intact.
        let ws_url = app("echo", "ws").replace("http://", "ws://");
        let mut req = ws_url.into_client_request().unwrap();
        req.headers_mut().insert("Cookie", cookie.parse().unwrap());
        req.headers_mut().insert("Origin", url.parse().unwrap());
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "EchoProto, other".parse().unwrap(),
        );
        let (mut ws, resp) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(req))
            .await
            .expect("WebSocket handshake timed out")
            .unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "EchoProto");
        for msg in ["ping-1", "ping-2"] {
            ws.send(Message::text(msg)).await.unwrap();
            let back = tokio::time::timeout(BOUND, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(back, Message::text(msg));
        }
        let big = vec![7u8; 300_000];
        ws.send(Message::binary(big.clone())).await.unwrap();
        let back = tokio::time::timeout(BOUND, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_data().as_ref(), &big[..]);
        ws.close(None).await.ok();

        // Not logged in: 401; bob, logged in, gets the same 404 as for no app at all.
        let r = http.get(app("files", "hello.txt")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let bob = second_user(&srv, &cfg, "bob").await;
        let r = http
            .get(app("files", "hello.txt"))
            .header("Tether-Session-Token", &bob)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let refused = r.text().await.unwrap();
        let r = http
            .get(app("nope", ""))
            .header("Tether-Session-Token", &bob)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(refused.contains("that you may open"), "{refused}");

        // Nothing listening on the app's port: a 502 that says so.
        let r = http
            .get(app("dead", ""))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        let page = r.text().await.unwrap();
        assert!(
            page.contains(&format!("nothing answered on port {dead_port}")),
            "{page}"
        );
    });

    // The agent offline: a 502 that says so.
    agent.kill();
    let deadline = Instant::now() + BOUND;
    rt.block_on(async {
        let cookie = alice_cookie(&srv).await;
        loop {
            let r = reqwest::Client::new()
                .get(format!("{url}/@alice/dev/apps/files/hello.txt"))
                .header("Cookie", &cookie)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let page = r.text().await.unwrap();
            if status == 502 && page.contains("is not connected") {
                break;
            }
            assert!(Instant::now() < deadline, "still {status}: {page}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn disabled_path_apps_answer_403_saying_why() {
    let (srv, cfg, _token) = deployment(&["--disable-path-apps"]);
    let out = TETHER.run(
        &cfg,
        &[
            "apps",
            "add",
            "dev",
            "code",
            "--url",
            "http://127.0.0.1:8080",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("Open it at"), "{}", out.stdout);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cookie = alice_cookie(&srv).await;
        let r = reqwest::Client::new()
            .get(format!("{}/@alice/dev/apps/code/", srv.url))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let page = r.text().await.unwrap();
        assert!(page.contains("--disable-path-apps"), "{page}");
        let d: Value = reqwest::get(format!("{}/api/v2/deployment", srv.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(d["disable_path_apps"], true, "{d}");
    });
}

#[test]
fn path_app_share_levels_apply_only_with_the_dangerous_flag() {
    for dangerous in [false, true] {
        let flags: &[&str] = if dangerous {
            &["--dangerous-allow-path-app-sharing"]
        } else {
            &[]
        };
        let (srv, cfg, token) = deployment(flags);
        let _agent = start_agent(&srv, &cfg, &token);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let echo = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = echo.local_addr().unwrap().port();
        rt.spawn(echo_upstream(echo));
        for (slug, share) in [
            ("mine", "owner"),
            ("team", "authenticated"),
            ("open", "public"),
        ] {
            let out = TETHER.run(
                &cfg,
                &[
                    "apps",
                    "add",
                    "dev",
                    slug,
                    "--url",
                    &format!("http://127.0.0.1:{port}"),
                    "--share",
                    share,
                ],
            );
            assert_eq!(out.code, 0, "{}", out.stderr);
        }
        rt.block_on(async {
            let bob = second_user(&srv, &cfg, "bob").await;
            let http = reqwest::Client::new();
            let get = |slug: &str, token: Option<&str>| {
                let mut req = http.get(format!("{}/@alice/dev/apps/{slug}/", srv.url));
                if let Some(t) = token {
                    req = req.header("Tether-Session-Token", t);
                }
                async move { req.send().await.unwrap().status().as_u16() }
            };
            let open_if = |ok: bool, otherwise: u16| if ok { 200 } else { otherwise };
            assert_eq!(get("mine", Some(&bob)).await, 404, "dangerous={dangerous}");
            assert_eq!(
                get("team", Some(&bob)).await,
                open_if(dangerous, 404),
                "dangerous={dangerous}"
            );
            assert_eq!(
                get("open", Some(&bob)).await,
                open_if(dangerous, 404),
                "dangerous={dangerous}"
            );
            assert_eq!(
                get("open", None).await,
                open_if(dangerous, 401),
                "dangerous={dangerous}"
            );
            assert_eq!(get("team", None).await, 401, "dangerous={dangerous}");
        });
    }
}
