//! The in-process server: [`tether_server::Server`] built and served on a runtime of its
//! own, on a thread of its own, so it works the same under `#[test]` and
//! `#[tokio::test]`, and stopping it (dropping that runtime) ends every task and closes
//! every socket it had, as killing a process would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;
use tether_proto::api::{SESSION_TOKEN_HEADER, route};
use tether_proto::ready::Ready;
use tether_server::{Config, Server};

use crate::tether::Deployment;

/// How long building a server may take before the test fails.
const START_LIMIT: Duration = Duration::from_secs(30);

/// `tether server`'s flags, parsed as the binary parses them.
#[derive(clap::Parser)]
#[command(name = "server", args_override_self = true)]
struct Flags {
    #[command(flatten)]
    config: Config,
}

/// A running in-process `tether server`; stopped on drop.
pub struct TestServer {
    /// `http://` and the bound HTTP address, e.g. `http://127.0.0.1:41234` (what a test
    /// dials, whatever `--access-url` says).
    pub url: String,
    /// What the server bound (the same facts `--ready-file` holds).
    pub ready: Ready,
    /// Temp dir holding the data dir (`data`) and CLI config dirs.
    pub dir: tempfile::TempDir,
    flags: Vec<String>,
    running: Option<Running>,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0` (HTTP and STUN) with its data in a temp dir,
    /// plus `flags` as `tether server` takes them (a flag given twice: the last wins).
    pub fn start(flags: &[&str]) -> Self {
        Self::try_start(flags).unwrap_or_else(|e| panic!("the server did not start: {e}"))
    }

    /// Like [`TestServer::start`], returning the start-up error instead of panicking.
    pub fn try_start(flags: &[&str]) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let flags = flags.iter().map(ToString::to_string).collect();
        Self::launch(dir, flags)
    }

    fn launch(dir: tempfile::TempDir, flags: Vec<String>) -> Result<Self, String> {
        crate::init_tracing();
        let data = dir.path().join("data");
        let mut args: Vec<String> = ["server", "--http-address", "127.0.0.1:0"]
            .iter()
            .chain(&["--stun-address", "127.0.0.1:0", "--data-dir"])
            .map(ToString::to_string)
            .collect();
        args.push(data.display().to_string());
        args.extend(flags.iter().cloned());
        let config = Flags::try_parse_from(&args)
            .map_err(|e| format!("bad server flags {flags:?}: {e}"))?
            .config;
        let (running, ready) = spawn(config)?;
        let url = crate::process::http_url(ready.http_address);
        Ok(Self {
            url,
            ready,
            dir,
            flags,
            running: Some(running),
        })
    }

    /// The bound HTTP address.
    pub fn http_address(&self) -> SocketAddr {
        self.ready.http_address
    }

    /// The bound HTTPS address, with `--tls-address`.
    pub fn tls_address(&self) -> Option<SocketAddr> {
        self.ready.tls_address
    }

    /// The built-in STUN server's address, unless it is off.
    pub fn stun_address(&self) -> Option<SocketAddr> {
        self.ready.stun_address
    }

    /// The data directory (holding `tether.db`).
    pub fn data_dir(&self) -> &Path {
        &self.ready.data_dir
    }

    /// A CLI config dir under the temp dir.
    pub fn config_dir(&self, name: &str) -> PathBuf {
        Deployment::config_dir(self, name)
    }

    /// Stops the server (every connection closes), keeping its temp dir and data.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
            let _ = r.thread.join();
        }
    }

    /// Stops the server and starts it again on the same HTTP address with the same
    /// data and flags (STUN gets a fresh port).
    pub fn restart(mut self) -> Self {
        self.stop();
        let addr = self.http_address().to_string();
        let mut flags = std::mem::take(&mut self.flags);
        flags.extend(["--http-address".to_string(), addr]);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::launch(dir, flags).unwrap_or_else(|e| panic!("the server did not restart: {e}"))
    }

    /// Creates the first user (`alice`, an admin) through the API: her session token.
    pub async fn first_user(&self) -> String {
        let body = serde_json::json!({
            "username": "alice",
            "email": "alice@example.com",
            "password": "correct horse battery",
        });
        let r: serde_json::Value = self.post(route::USERS_FIRST, None, body).await;
        r["session_token"].as_str().unwrap().to_string()
    }

    /// Creates workspace `name` for the user of `session` through the API: its agent
    /// token.
    pub async fn create_workspace(&self, session: &str, name: &str) -> String {
        let body = serde_json::json!({ "name": name });
        let r: serde_json::Value = self.post(route::WORKSPACES, Some(session), body).await;
        r["agent_token"].as_str().unwrap().to_string()
    }

    /// [`TestServer::first_user`] and her workspace `dev`: (session, agent token).
    pub async fn user_and_workspace(&self) -> (String, String) {
        let session = self.first_user().await;
        let agent = self.create_workspace(&session, "dev").await;
        (session, agent)
    }

    /// `GET /api/v2/debug/health` as the user of `session` (the report needs a login).
    pub async fn health(&self, session: &str) -> serde_json::Value {
        health(&self.url, session).await
    }

    async fn post(
        &self,
        path: &str,
        session: Option<&str>,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .timeout(Duration::from_secs(30))
            .json(&body);
        if let Some(s) = session {
            req = req.header(SESSION_TOKEN_HEADER, s);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

impl Deployment for TestServer {
    fn url(&self) -> &str {
        &self.url
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET /api/v2/debug/health` of the server at `url` as the user of `session`.
pub async fn health(url: &str, session: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .get(format!("{url}{}", route::DEBUG_HEALTH))
        .header(SESSION_TOKEN_HEADER, session)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "GET health: {status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Builds `config` on a new runtime thread and serves it there until stopped.
fn spawn(config: Config) -> Result<(Running, Ready), String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("tether-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("tether-server")
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                match Server::build(config).await {
                    Ok(server) => {
                        let _ = ready_tx.send(Ok(tether_server::ready::of(&server)));
                        server
                            .serve(async move {
                                let _ = stop_rx.await;
                            })
                            .await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
            // Ends every task still running (upgraded connections among them).
            rt.shutdown_timeout(Duration::from_secs(5));
        })
        .unwrap();
    let ready = match ready_rx.recv_timeout(START_LIMIT) {
        Ok(Ok(ready)) => ready,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => panic!("the in-process server was not built within {START_LIMIT:?}"),
    };
    Ok((Running { stop, thread }, ready))
}
