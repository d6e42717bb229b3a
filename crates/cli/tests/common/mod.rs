//! Test harness: starts the real `tether` binary with a temp data dir on free loopback
//! ports, runs CLI commands against it, and speaks the coordinator's WebSocket.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_key::{DiscoPrivate, NodePrivate};
use tether_proto::coord::{Node, Request, Response, tailnet_ip};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

/// A running `tether server`, killed on drop.
pub struct TestServer {
    child: Child,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Temp dir holding data and CLI config dirs.
    pub dir: tempfile::TempDir,
    /// Lines the server printed on stdout before it was ready.
    pub banner: Vec<String>,
}

impl TestServer {
    /// Starts a server with default flags plus `extra`.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cmd = Command::new(bin());
        Self::launch(cmd, dir, extra)
    }

    /// Starts a server whose data directory is a tmpfs of `size` (e.g. `"4m"`), mounted
    /// in a mount namespace of its own, so the disk it writes to can really fill up.
    /// Needs root and `unshare` (util-linux). The test reaches the directory at
    /// [`TestServer::data_dir_seen_by_server`].
    pub fn start_on_tmpfs(size: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size} tether-test \"$0\" && exec \"$@\""
            ))
            .arg(&data)
            .arg(bin());
        Self::launch(cmd, dir, extra)
    }

    /// The data directory as the server sees it (through its own mount namespace).
    pub fn data_dir_seen_by_server(&self) -> PathBuf {
        let data = self.dir.path().join("data");
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(data.strip_prefix("/").unwrap())
    }

    /// Runs `cmd` (the `tether` binary, or a wrapper that execs it) as a server with
    /// default flags plus `extra`, its data in `dir`, and waits until it is ready.
    pub fn launch(mut cmd: Command, dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let data = dir.path().join("data");
        let mut child = cmd
            .args([
                "server",
                "--http-address",
                "127.0.0.1:0",
                "--stun-address",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&data)
            .args(extra)
            .env("TETHER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let mut url = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while url.is_none() || !banner.iter().any(|l: &String| l.contains("tether login")) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not become ready; printed: {banner:?}");
                }
            };
            if let Some(rest) = line.strip_prefix("tether server listening on http://") {
                url = Some(format!("http://{}", rest.trim()));
            }
            banner.push(line);
        }
        Self {
            child,
            url: url.unwrap(),
            dir,
            banner,
        }
    }

    /// A fresh CLI config dir under the temp dir.
    pub fn config_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("cfg-{name}"))
    }

    /// Kills the server, keeping its temp dir (and the CLI config dirs in it).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Result of a CLI run.
pub struct Out {
    /// Exit code.
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

/// Runs `tether --global-config CFG ARGS…` with a 60 s cap and no stdin.
pub fn tether(cfg: &Path, args: &[&str]) -> Out {
    tether_env(cfg, args, &[])
}

/// Runs a command with `input` on stdin, capped at `limit`.
pub fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> Out {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    };
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `tether agent` process, killed on drop.
pub struct Agent {
    child: Child,
}

impl Agent {
    /// Starts `tether agent --url URL --token TOKEN`.
    pub fn start(url: &str, token: &str) -> Self {
        let child = Command::new(bin())
            .args(["agent", "--url", url, "--token", token])
            .env("TETHER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self { child }
    }

    /// Kills the agent now.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server started with `extra` flags, its first user's config dir, and workspace
/// `dev` with its agent running and connected.
pub fn dev_workspace(extra: &[&str]) -> (TestServer, PathBuf, Agent) {
    let srv = TestServer::start(extra);
    let cfg = first_user(&srv);
    let token = create_workspace(&cfg, "dev");
    let agent = Agent::start(&srv.url, &token);
    wait_connected(&cfg, "dev", Duration::from_secs(20));
    (srv, cfg, agent)
}

/// Waits (up to `limit`) until `tether list` shows `ws` as connected.
pub fn wait_connected(cfg: &Path, ws: &str, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let out = tether(cfg, &["list", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        let up = list.as_array().is_some_and(|a| {
            a.iter()
                .any(|w| w["name"] == ws && w["status"] == "connected")
        });
        if up {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workspace {ws} never connected: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free TCP port on loopback (bound and released; a small race is accepted).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Like [`tether`] with extra environment variables.
pub fn tether_env(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(bin());
    cmd.arg("--global-config").arg(cfg).args(args);
    cmd.env_remove("TETHER_URL")
        .env_remove("TETHER_SESSION_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Empty stdin: EOF at once, like no terminal at all.
    run_with_input(cmd, b"", Duration::from_secs(60))
}

/// Logs in the first user `alice` and returns her config dir.
pub fn first_user(srv: &TestServer) -> PathBuf {
    let cfg = srv.config_dir("alice");
    let out = tether(
        &cfg,
        &[
            "login",
            &srv.url,
            "--first-user-username",
            "alice",
            "--first-user-email",
            "alice@example.com",
            "--first-user-password",
            "correct horse battery",
        ],
    );
    assert_eq!(out.code, 0, "login failed: {}", out.stderr);
    cfg
}

/// Creates workspace `name`; returns its agent token, parsed from the printed command.
pub fn create_workspace(cfg: &Path, name: &str) -> String {
    let out = tether(cfg, &["create", name]);
    assert_eq!(out.code, 0, "create failed: {}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("tether agent --url"))
        .unwrap();
    line.split("--token ").nth(1).unwrap().trim().to_string()
}

/// Reads the stored session token of a config dir.
pub fn session_token(cfg: &Path) -> String {
    std::fs::read_to_string(cfg.join("session"))
        .unwrap()
        .trim()
        .to_string()
}

/// A coordination WebSocket.
pub struct CoordConn {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// Why a coordination connect failed.
#[derive(Debug)]
pub struct ConnectRefused {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl CoordConn {
    /// Connects to `path` with a header token.
    pub async fn connect(
        base: &str,
        path: &str,
        header: &str,
        token: &str,
    ) -> Result<Self, ConnectRefused> {
        let url = format!("{}{path}", base.replace("http://", "ws://"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(header.as_bytes())
                .unwrap(),
            token.parse().unwrap(),
        );
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await
        {
            Ok(Ok((ws, _))) => Ok(Self { ws }),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(ConnectRefused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Ok(Err(e)) => panic!("websocket connect failed: {e}"),
            Err(_) => panic!("websocket connect timed out"),
        }
    }

    /// An agent's coordination connection.
    pub async fn agent(base: &str, token: &str) -> Result<Self, ConnectRefused> {
        Self::connect(
            base,
            "/api/v2/workspaceagents/me/coordinate?version=1.0",
            "Tether-Agent-Token",
            token,
        )
        .await
    }

    /// A client's coordination connection.
    pub async fn client(base: &str, token: &str) -> Result<Self, ConnectRefused> {
        Self::connect(
            base,
            "/api/v2/tailnet/coordinate?version=1.0",
            "Tether-Session-Token",
            token,
        )
        .await
    }

    /// Sends a request.
    pub async fn send(&mut self, req: &Request) {
        let text = serde_json::to_string(req).unwrap();
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Sends raw text.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .unwrap();
    }

    /// The next coordinator message (10 s cap), skipping pings.
    pub async fn recv(&mut self) -> Response {
        self.try_recv(Duration::from_secs(10))
            .await
            .expect("no coordinator message within 10 s")
    }

    /// The next message within `wait`, or None.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Response> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Waits for a message matching `pred` (10 s cap), skipping others.
    pub async fn expect(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Response) -> bool,
    ) -> Response {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(m) if pred(&m) => return m,
                Some(_) => continue,
                None => panic!("did not receive {what} within 10 s"),
            }
        }
    }
}

/// A node for peer `id` holding `key`, homed in region `derp`.
pub fn node_for(id: Uuid, key: &NodePrivate, derp: u32) -> Node {
    Node {
        id,
        key: key.public(),
        disco: DiscoPrivate::generate().public(),
        preferred_derp: derp,
        derp_latency: Default::default(),
        addresses: vec![format!("{}/128", tailnet_ip(id))],
        allowed_ips: vec![format!("{}/128", tailnet_ip(id))],
        endpoints: vec![],
        mapping_varies_by_dest_ip: None,
    }
}

/// Reads the coordinator's Welcome and returns the id it assigned.
pub async fn welcome(c: &mut CoordConn) -> Uuid {
    match c.recv().await {
        Response::Welcome { id, .. } => id,
        other => panic!("expected welcome, got {other:?}"),
    }
}
