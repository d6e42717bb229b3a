//! The `tether` binary under test, and the CLI steps tests repeat: log in the first user,
//! create a workspace, start its agent, wait until it is connected.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Out, run_with_input};
use crate::server::TestServer;
use crate::server_process::ServerProcess;

/// How long one CLI command may take.
const CLI_LIMIT: Duration = Duration::from_secs(60);

/// A server the CLI can talk to: in-process ([`TestServer`]) or a process
/// ([`ServerProcess`]).
pub trait Deployment {
    /// `http://` and its bound HTTP address, without a trailing slash.
    fn url(&self) -> &str;
    /// Its temp dir, where CLI config dirs go.
    fn dir(&self) -> &Path;
    /// A CLI config dir named `name` under [`Deployment::dir`].
    fn config_dir(&self, name: &str) -> PathBuf {
        self.dir().join(format!("cfg-{name}"))
    }
}

/// The `tether` binary. Only the CLI crate's tests know where cargo built it, so they
/// pass it in: `const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));`.
#[derive(Debug, Clone, Copy)]
pub struct Tether {
    bin: &'static str,
}

impl Tether {
    /// The binary at `bin`.
    pub const fn at(bin: &'static str) -> Self {
        Self { bin }
    }

    /// Its path.
    pub fn bin(&self) -> &'static str {
        self.bin
    }

    /// `tether --global-config CFG`, with no `TETHER_URL` / `TETHER_SESSION_TOKEN` from
    /// the test's environment.
    pub fn command(&self, cfg: &Path) -> Command {
        let mut c = Command::new(self.bin);
        c.arg("--global-config").arg(cfg);
        c.env_remove("TETHER_URL")
            .env_remove("TETHER_SESSION_TOKEN");
        c
    }

    /// Runs `tether --global-config CFG ARGS…` with empty stdin (EOF at once, like no
    /// terminal at all), capped at 60 s.
    pub fn run(&self, cfg: &Path, args: &[&str]) -> Out {
        self.run_env(cfg, args, &[])
    }

    /// Like [`Tether::run`] with extra environment variables.
    pub fn run_env(&self, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = self.command(cfg);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_input(cmd, b"", CLI_LIMIT)
    }

    /// Starts `tether agent --url URL --token TOKEN`.
    pub fn agent(&self, url: &str, token: &str) -> AgentProcess {
        self.agent_with(url, token, &[])
    }

    /// Starts `tether agent --url URL --token TOKEN FLAGS…`.
    pub fn agent_with(&self, url: &str, token: &str, flags: &[&str]) -> AgentProcess {
        let child = Command::new(self.bin)
            .args(["agent", "--url", url, "--token", token])
            .args(flags)
            .env("TETHER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        AgentProcess { child }
    }

    /// Starts `tether server` as a process of its own (see [`ServerProcess::start`]).
    pub fn server_process(&self, flags: &[&str]) -> ServerProcess {
        ServerProcess::start(*self, flags)
    }

    /// Logs in the first user `alice` with the CLI; returns her config dir.
    pub fn first_user(&self, srv: &impl Deployment) -> PathBuf {
        let cfg = srv.config_dir("alice");
        let out = self.run(
            &cfg,
            &[
                "login",
                srv.url(),
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

    /// Creates workspace `name`; returns its agent token, parsed from the printed command
    /// (`TETHER_AGENT_TOKEN=… tether agent --url …`).
    pub fn create_workspace(&self, cfg: &Path, name: &str) -> String {
        let out = self.run(cfg, &["create", name]);
        assert_eq!(out.code, 0, "create failed: {}", out.stderr);
        agent_token(&out.stdout)
    }

    /// Waits (up to `limit`) until `tether list` shows `ws` as connected.
    pub fn wait_connected(&self, cfg: &Path, ws: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.run(cfg, &["list", "-o", "json"]);
            let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            let up = list.as_array().is_some_and(|a| {
                a.iter()
                    .any(|w| w["name"] == ws && w["status"] == "connected")
            });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "workspace {ws} never connected: {}",
                out.stdout
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An in-process server started with `flags`, its first user's config dir, and
    /// workspace `dev` with its agent running and connected.
    pub fn dev_workspace(&self, flags: &[&str]) -> (TestServer, PathBuf, AgentProcess) {
        let srv = TestServer::start(flags);
        let cfg = self.first_user(&srv);
        let token = self.create_workspace(&cfg, "dev");
        let agent = self.agent(&srv.url, &token);
        self.wait_connected(&cfg, "dev", Duration::from_secs(20));
        (srv, cfg, agent)
    }
}

/// The agent token in what `tether create` printed.
pub fn agent_token(create_stdout: &str) -> String {
    create_stdout
        .lines()
        .find(|l| l.contains("tether agent --url"))
        .and_then(|l| l.split("TETHER_AGENT_TOKEN=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("create printed no agent command: {create_stdout}"))
        .to_string()
}

/// Reads the stored session token of a CLI config dir.
pub fn session_token(cfg: &Path) -> String {
    std::fs::read_to_string(cfg.join("session"))
        .unwrap()
        .trim()
        .to_string()
}

/// A `tether agent` process, killed on drop.
pub struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    /// Kills the agent now.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
