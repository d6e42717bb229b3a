//! Shared test harness: an `SshServer` on 127.0.0.1:0 and OpenSSH client helpers.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tether_agent::SshServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

/// Upper bound for any client subprocess.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub port: u16,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Start a server on 127.0.0.1:0 that calls `serve` per connection.
pub async fn start_server() -> u16 {
    let server = SshServer::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let server = server.clone();
            tokio::spawn(async move {
                if let Err(e) = server.serve(stream).await {
                    tracing::warn!(error = %e, "serve failed");
                }
            });
        }
    });
    port
}

pub async fn setup() -> Env {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tether-test", "-f"])
        .arg(&key)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "ssh-keygen failed: {out:?}");
    let port = start_server().await;
    Env { dir, key, port }
}

impl Env {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Options shared by ssh, scp and sftp (no port).
    pub fn common_opts(&self) -> Vec<String> {
        self.opts_with_log_level("ERROR")
    }

    /// [`Env::common_opts`] with another `LogLevel` (ssh keeps the first value it sees).
    pub fn opts_with_log_level(&self, level: &str) -> Vec<String> {
        let mut v: Vec<String> = [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        v.push(self.key.display().to_string());
        v.push("-o".into());
        v.push(format!("LogLevel={level}"));
        v
    }

    /// `ssh <opts> -p PORT <extra...> 127.0.0.1 <remote...>`
    pub fn ssh(&self, extra: &[&str], remote: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.common_opts())
            .arg("-p")
            .arg(self.port.to_string())
            .args(extra)
            .arg("127.0.0.1")
            .args(remote)
            .kill_on_drop(true);
        c
    }

    pub fn scp(&self, args: &[&str]) -> Command {
        let mut c = Command::new("scp");
        c.args(self.common_opts())
            .arg("-P")
            .arg(self.port.to_string())
            .args(args)
            .kill_on_drop(true);
        c
    }

    pub fn sftp(&self, batch: &Path) -> Command {
        let mut c = Command::new("sftp");
        c.args(self.common_opts())
            .arg("-P")
            .arg(self.port.to_string())
            .arg("-b")
            .arg(batch)
            .arg("127.0.0.1")
            .kill_on_drop(true);
        c
    }
}

/// Run with optional stdin, bounded by [`CMD_TIMEOUT`].
pub async fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
            drop(w);
        });
    }
    tokio::time::timeout(CMD_TIMEOUT, child.wait_with_output())
        .await
        .expect("client subprocess timed out")
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A TCP echo server on 127.0.0.1:0.
pub async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// Connect to `port`, send `msg`, half-close, and read everything back.
pub async fn echo_roundtrip(port: u16, msg: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(msg).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut back))
        .await
        .expect("echo timed out")
        .unwrap();
    back
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}
