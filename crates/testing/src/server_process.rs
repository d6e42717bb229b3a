//! `tether server` as a process of its own, for tests of the binary itself. It is ready
//! when its `--ready-file` appears; its stdout (the banner) goes to a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tether_proto::ready::Ready;

use crate::process::wait_ready_file;
use crate::tether::{Deployment, Tether};

/// How long the binary may take to become ready.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running `tether server` process, killed on drop.
pub struct ServerProcess {
    child: Child,
    /// `http://` and the bound HTTP address, e.g. `http://127.0.0.1:41234` (what a test
    /// dials, whatever `--access-url` says).
    pub url: String,
    /// What the server wrote to its ready file.
    pub ready: Ready,
    /// Temp dir holding the data dir (`data`), the ready file, stdout and CLI config
    /// dirs.
    pub dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `tether server` on `127.0.0.1:0` (HTTP and STUN), its data in a temp dir,
    /// with `flags` after the defaults; logs at `info` to the test's stderr.
    pub fn start(tether: Tether, flags: &[&str]) -> Self {
        let mut cmd = Command::new(tether.bin());
        cmd.env("TETHER_LOG", "info").stderr(Stdio::inherit());
        Self::spawn(tempfile::tempdir().unwrap(), cmd, flags)
    }

    /// Starts a server whose data directory is a tmpfs of `size` (e.g. `"4m"`), mounted
    /// in a mount namespace of its own, so the disk it writes to can really fill up.
    /// Needs root and `unshare` (util-linux). The test reaches the directory at
    /// [`ServerProcess::data_dir_seen_by_server`].
    pub fn start_on_tmpfs(tether: Tether, size: &str, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size} tether-test \"$0\" && exec \"$@\""
            ))
            .arg(&data)
            .arg(tether.bin())
            .env("TETHER_LOG", "info")
            .stderr(Stdio::inherit());
        Self::spawn(dir, cmd, flags)
    }

    /// Runs `cmd` (the `tether` binary, or a wrapper that execs it, with the environment
    /// and stderr it should have) as `server` with default flags plus `flags`, its data
    /// in `dir`, and waits until it is ready.
    pub fn spawn(dir: tempfile::TempDir, mut cmd: Command, flags: &[&str]) -> Self {
        let ready_file = dir.path().join("ready.json");
        let stdout = std::fs::File::create(dir.path().join("server.out")).unwrap();
        let mut child = cmd
            .args([
                "server",
                "--http-address",
                "127.0.0.1:0",
                "--stun-address",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready_file)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(stdout)
            .spawn()
            .unwrap();
        let ready = wait_ready_file(&ready_file, &mut child, START_LIMIT);
        let url = crate::process::http_url(ready.http_address);
        Self {
            child,
            url,
            ready,
            dir,
        }
    }

    /// The lines the server has printed on stdout (all of the banner once it is ready).
    pub fn banner(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("server.out"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A CLI config dir under the temp dir.
    pub fn config_dir(&self, name: &str) -> PathBuf {
        Deployment::config_dir(self, name)
    }

    /// The data directory as the server sees it (through its own mount namespace).
    pub fn data_dir_seen_by_server(&self) -> PathBuf {
        let data = self.dir.path().join("data");
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(data.strip_prefix("/").unwrap())
    }

    /// Kills the server, keeping its temp dir (and the CLI config dirs in it).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends the server signal `name` (`"TERM"`, `"INT"`), as `systemctl stop` or
    /// `docker stop` do; returns at once.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `limit` for the server to exit: its exit status, or `None` if it is
    /// still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Deployment for ServerProcess {
    fn url(&self) -> &str {
        &self.url
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
