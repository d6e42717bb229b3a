//! The agent's SSH server on `127.0.0.1:0` and OpenSSH's clients (`ssh`, `scp`,
//! `sftp`, `ssh-keygen`) pointed at it, with a fresh key and no user configuration.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tether_agent::SshServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

/// Upper bound for any client subprocess.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// A running SSH server, a client key for it, and a temp dir.
pub struct SshEnv {
    /// Temp dir (holding the key).
    pub dir: tempfile::TempDir,
    /// The client's private key.
    pub key: PathBuf,
    /// The server's port on 127.0.0.1.
    pub port: u16,
}

/// Starts an [`SshServer`] on 127.0.0.1:0 serving each connection on its own task;
/// returns its port.
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

/// Logs at `warn` (see [`crate::init_tracing_with`]), makes a client key and starts a
/// server.
pub async fn setup() -> SshEnv {
    crate::init_tracing_with("warn");
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
    SshEnv { dir, key, port }
}

impl SshEnv {
    /// A path in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Options shared by ssh, scp and sftp (no port).
    pub fn common_opts(&self) -> Vec<String> {
        self.opts_with_log_level("ERROR")
    }

    /// [`SshEnv::common_opts`] with another `LogLevel` (ssh keeps the first value it
    /// sees).
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

    /// `scp <opts> -P PORT <args...>`
    pub fn scp(&self, args: &[&str]) -> Command {
        let mut c = Command::new("scp");
        c.args(self.common_opts())
            .arg("-P")
            .arg(self.port.to_string())
            .args(args)
            .kill_on_drop(true);
        c
    }

    /// `sftp <opts> -P PORT -b BATCH 127.0.0.1`
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

/// Runs a client with optional stdin, bounded by [`CMD_TIMEOUT`].
pub async fn run(cmd: Command, stdin: Option<&[u8]>) -> Output {
    crate::run_async(cmd, stdin, CMD_TIMEOUT).await
}

/// Its stdout, lossily decoded.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its stderr, lossily decoded.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A TCP echo server on 127.0.0.1:0; its port.
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

/// Connects to `port`, sends `msg`, half-closes, and reads everything back.
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
