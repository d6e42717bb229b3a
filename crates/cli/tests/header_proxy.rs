//! `--header`, `TETHER_HEADER` and `--header-command` through an access proxy: a small
//! hyper proxy on loopback in front of a real server refuses every request without
//! `X-Proxy-Auth: <secret>` (upgrades included: the coordinator's WebSocket and DERP).
//! `tether login`, `list`, `ssh dev -- echo ok` and the agent work through it with the
//! header and fail with a clear sentence without it; the proxy saw every kind of request.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tether_testing::{Out, TestServer, Tether, run_with_input};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

const NAME: &str = "x-proxy-auth";
const SECRET: &str = "open-sesame-4711";

/// What the proxy let through and what it refused, as `METHOD PATH`.
#[derive(Default)]
struct Seen {
    passed: Vec<String>,
    refused: Vec<String>,
}

/// The proxy: listening on `addr`, forwarding to the server, on its own runtime.
struct Proxy {
    url: String,
    seen: Arc<Mutex<Seen>>,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    _rt: tokio::runtime::Runtime,
}

type Body = BoxBody<Bytes, hyper::Error>;

impl Proxy {
    /// Listens now (so the server's access URL can name it); forwards once
    /// [`Proxy::forward_to`] is called.
    fn listen() -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let backend = Arc::new(Mutex::new(None));
        let (s, b) = (seen.clone(), backend.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (s, b) = (s.clone(), b.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| handle(req, s.clone(), b.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            url,
            seen,
            backend,
            _rt: rt,
        }
    }

    fn forward_to(&self, server_url: &str) {
        let addr = server_url.strip_prefix("http://").unwrap().parse().unwrap();
        *self.backend.lock().unwrap() = Some(addr);
    }

    fn passed(&self) -> Vec<String> {
        self.seen.lock().unwrap().passed.clone()
    }

    fn refused(&self) -> Vec<String> {
        self.seen.lock().unwrap().refused.clone()
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

/// Refuses a request without the header; else sends it to the server on a connection of
/// its own and, on `101 Switching Protocols`, joins the two upgraded streams.
async fn handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Seen>>,
    backend: Arc<Mutex<Option<SocketAddr>>>,
) -> Result<Response<Body>, hyper::Error> {
    let what = format!("{} {}", req.method(), req.uri().path());
    if req.headers().get(NAME).is_none_or(|v| v != SECRET) {
        seen.lock().unwrap().refused.push(what);
        return Ok(text(
            StatusCode::FORBIDDEN,
            "access denied: X-Proxy-Auth is missing\n",
        ));
    }
    seen.lock().unwrap().passed.push(what);
    let Some(addr) = *backend.lock().unwrap() else {
        return Ok(text(StatusCode::BAD_GATEWAY, "no backend yet\n"));
    };
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return Ok(text(StatusCode::BAD_GATEWAY, "backend down\n"));
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let client_side = hyper::upgrade::on(&mut req);
    let mut resp = sender.send_request(req).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(c), Ok(s)) = (client_side.await, server_side.await) else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(s)).await;
        });
    }
    Ok(resp.map(BodyExt::boxed))
}

/// Runs the CLI with `--global-config cfg`, `args` and `env`.
fn cli(cfg: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = TETHER.run_env(cfg, args, env);
    println!("$ tether {}\n{}{}", args.join(" "), out.stdout, out.stderr);
    out
}

#[test]
fn every_request_carries_the_header_through_an_access_proxy() {
    let proxy = Proxy::listen();
    let srv = TestServer::start(&["--access-url", &proxy.url]);
    proxy.forward_to(&srv.url);
    let header = format!("{NAME}={SECRET}");
    let cfg = srv.config_dir("alice");

    // Without the header the proxy answers, and the sentence says what to do.
    let out = cli(
        &cfg,
        &[
            "login",
            &proxy.url,
            "--first-user-username",
            "alice",
            "--first-user-email",
            "alice@example.com",
            "--first-user-password",
            "correct horse battery",
        ],
        &[],
    );
    assert_ne!(out.code, 0);
    let err = out.stderr.trim();
    assert!(
        err.starts_with(&format!(
            "error: {}/ does not look like a tether server (GET /api/v2/users/first answered 403 Forbidden)",
            proxy.url
        )),
        "{err}"
    );
    assert!(err.contains("pass them with --header"), "{err}");

    // With it (as a flag) the first user is created through the proxy.
    let out = cli(
        &cfg,
        &[
            "--header",
            &header,
            "login",
            &proxy.url,
            "--first-user-username",
            "alice",
            "--first-user-email",
            "alice@example.com",
            "--first-user-password",
            "correct horse battery",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // TETHER_HEADER works as well as the flag.
    let env = [("TETHER_HEADER", header.as_str())];
    let out = cli(&cfg, &["create", "dev"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let token = out
        .stdout
        .split("TETHER_AGENT_TOKEN=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let out = cli(&cfg, &["list"], &[]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("403 Forbidden"), "{}", out.stderr);

    // The agent without the header stops with a sentence naming the proxy.
    let mut agent = Command::new(TETHER.bin());
    agent
        .args(["agent", "--url", &proxy.url])
        .env("TETHER_AGENT_TOKEN", &token)
        .env_remove("TETHER_HEADER")
        .env_remove("TETHER_HEADER_COMMAND");
    let out = run_with_input(agent, b"", Duration::from_secs(30));
    println!("agent without the header: {}", out.stderr);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("something in front of the server refused the agent (403: access denied: X-Proxy-Auth is missing)"),
        "{}",
        out.stderr
    );

    // With the header (from a command) it connects: connection info, its coordinator
    // WebSocket and DERP all went through the proxy.
    let _agent = KillOnDrop(
        Command::new(TETHER.bin())
            .args([
                "--header-command",
                &format!("echo {header}"),
                "agent",
                "--url",
                &proxy.url,
            ])
            .env("TETHER_AGENT_TOKEN", &token)
            .env("TETHER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = TETHER.run_env(&cfg, &["list", "-o", "json"], &env);
        if out.stdout.contains("\"connected\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never connected: {}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cli(&cfg, &["list", "--header", &header], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("dev"), "{}", out.stdout);

    // tether ssh, relayed through DERP behind the proxy.
    let out = cli(
        &cfg,
        &[
            "--header-command",
            &format!("printf '{header}\\n'"),
            "--disable-direct-connections",
            "ssh",
            "dev",
            "--",
            "echo",
            "ok",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "ok");
    let out = cli(&cfg, &["ssh", "dev", "--", "echo", "ok"], &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("403 Forbidden"), "{}", out.stderr);
    assert!(!out.stdout.contains("ok"), "{}", out.stdout);

    let passed = proxy.passed();
    for want in [
        "GET /api/v2/workspaceagents/me/connection",
        "GET /api/v2/workspaceagents/me/coordinate",
        "GET /api/v2/tailnet/connection",
        "GET /api/v2/tailnet/coordinate",
        "GET /api/v2/workspaces/dev",
        "/derp",
    ] {
        assert!(
            passed
                .iter()
                .any(|p| p.starts_with(want) || p.ends_with(want)),
            "the proxy never passed {want:?}: {passed:?}"
        );
    }
    // The runs without the header were refused at their first request.
    let refused = proxy.refused();
    for want in [
        "GET /api/v2/users/first",
        "GET /api/v2/workspaces",
        "GET /api/v2/workspaceagents/me/connection",
        "GET /api/v2/workspaces/dev",
    ] {
        assert!(
            refused.iter().any(|r| r == want),
            "{want:?} not refused: {refused:?}"
        );
    }
}

/// A child process killed when the test ends, also by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
