//! The NAT lab: an "internet" network namespace holding the tether server, and two sites,
//! each a router namespace doing nftables NAT in front of one LAN host namespace.
//!
//! ```text
//!   site A LAN host ─ 10.1.0.0/24 ─ router A ─┐                 ┌─ router B ─ 10.2.0.0/24 ─ site B LAN host
//!   (tether CLI)                  198.18.1.2 │  bridge in the  │ 198.18.2.2                  (tether agent)
//!                                            └─ "internet" ────┘
//!                                              198.18.0.1: tether server (HTTP + STUN)
//! ```
//!
//! Everything lives inside namespaces named `tlab<pid><tag>-<role>`; the host's own
//! interfaces, routes and firewall are never touched. [`Lab`] kills the processes it
//! started and deletes its namespaces on drop, also when a test panics.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

/// Result of a finished command.
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

/// Runs `cmd` with `input` on stdin; kills it and panics if it runs longer than `limit`.
pub fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> Out {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    // `ip netns exec` execs the command, so this pid is the command itself.
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

/// The server's address on the lab internet.
pub const SERVER_IP: &str = "198.18.0.1";
/// The server's HTTP port (the namespace is private, so a fixed port cannot clash).
pub const HTTP_PORT: u16 = 8080;
/// The server's STUN port.
pub const STUN_PORT: u16 = 3478;

/// What a site's router does to its LAN's traffic.
#[derive(Clone, Copy, Debug)]
pub enum Nat {
    /// Port-restricted cone: `masquerade` on the WAN side (conntrack keeps the source
    /// port and lets in only replies from peers the LAN host already sent to).
    PortRestrictedCone,
    /// Like [`Nat::PortRestrictedCone`], and every UDP packet from the LAN is dropped.
    UdpDropped,
}

/// Fails the test (not skip) when the lab cannot be built here.
pub fn require_tools() {
    // The effective uid, from /proc/self/status (`Uid: real effective saved fs`).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    assert_eq!(
        euid, "0",
        "the NAT lab needs root (it creates network namespaces); run the tests as root"
    );
    for (tool, args, package) in [
        ("ip", &["-V"][..], "iproute2"),
        ("nft", &["--version"][..], "nftables"),
    ] {
        let ok = Command::new(tool)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the NAT lab needs `{tool}`: install it with `apt-get install -y {package}`"
        );
    }
}

/// Runs a setup command and panics with its output when it fails.
fn sh(args: &[&str]) {
    sh_input(args, None);
}

fn sh_input(args: &[&str], input: Option<&str>) {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    let out = run_with_input(cmd, input.unwrap_or("").as_bytes(), Duration::from_secs(20));
    assert_eq!(
        out.code, 0,
        "lab setup command {args:?} failed: {}{}",
        out.stdout, out.stderr
    );
}

/// Kills every process inside namespace `ns` (all were started by this lab) and
/// deletes it.
fn delete_namespace(ns: &str) {
    for _ in 0..50 {
        let out = Command::new("ip").args(["netns", "pids", ns]).output();
        let pids = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => String::new(),
        };
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Deletes lab namespaces left behind by test processes that no longer exist (a run
/// killed with SIGKILL cannot run its drop guards).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("tlab") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
        }
    }
}

/// A built lab; dropping it tears everything down.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Config and data dirs of every process.
    pub dir: tempfile::TempDir,
}

/// The site A host namespace (the client's).
pub const HOST_A: &str = "ha";
/// The site B host namespace (the agent's).
pub const HOST_B: &str = "hb";

impl Lab {
    /// Builds the topology with NAT kinds for site A and site B. `tag` keeps the names
    /// of tests in one process apart.
    pub fn new(tag: &str, site_a: Nat, site_b: Nat) -> Self {
        require_tools();
        remove_stale();
        let mut lab = Self {
            prefix: format!("tlab{}{tag}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        let inet = lab.add_ns("inet");
        sh(&["ip", "-n", &inet, "link", "set", "lo", "up"]);
        sh(&[
            "ip", "-n", &inet, "link", "add", "name", "br0", "type", "bridge",
        ]);
        sh(&[
            "ip",
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{SERVER_IP}/15"),
            "dev",
            "br0",
        ]);
        sh(&["ip", "-n", &inet, "link", "set", "br0", "up"]);
        for (n, site, nat) in [(1, "a", site_a), (2, "b", site_b)] {
            let router = lab.add_ns(&format!("r{site}"));
            let host = lab.add_ns(&format!("h{site}"));
            let port = format!("site{site}");
            // WAN: router ↔ the internet bridge.
            sh(&[
                "ip", "-n", &inet, "link", "add", "name", &port, "type", "veth", "peer", "name",
                "wan", "netns", &router,
            ]);
            sh(&["ip", "-n", &inet, "link", "set", &port, "master", "br0"]);
            sh(&["ip", "-n", &inet, "link", "set", &port, "up"]);
            sh(&["ip", "-n", &router, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                &router,
                "addr",
                "add",
                &format!("198.18.{n}.2/15"),
                "dev",
                "wan",
            ]);
            sh(&["ip", "-n", &router, "link", "set", "wan", "up"]);
            // LAN: router ↔ host.
            sh(&[
                "ip", "-n", &router, "link", "add", "name", "lan", "type", "veth", "peer", "name",
                "eth0", "netns", &host,
            ]);
            sh(&[
                "ip",
                "-n",
                &router,
                "addr",
                "add",
                &format!("10.{n}.0.1/24"),
                "dev",
                "lan",
            ]);
            sh(&["ip", "-n", &router, "link", "set", "lan", "up"]);
            sh(&["ip", "-n", &host, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                &host,
                "addr",
                "add",
                &format!("10.{n}.0.2/24"),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", &host, "link", "set", "eth0", "up"]);
            sh(&[
                "ip",
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                &format!("10.{n}.0.1"),
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &router,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ]);
            let drop_udp = match nat {
                Nat::PortRestrictedCone => "",
                Nat::UdpDropped => "iifname \"lan\" meta l4proto udp drop",
            };
            // Unsolicited inbound packets are dropped before conntrack confirms them:
            // a confirmed entry for (peer → our WAN port) would make masquerade pick
            // another source port for our own packets to that peer later, i.e. turn the
            // cone NAT symmetric for exactly the simultaneous open that punches holes.
            let rules = format!(
                "table ip lab {{
  chain prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    iifname \"wan\" ct state new drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    {drop_udp}
    ct state established,related accept
    iifname \"wan\" drop
  }}
}}
"
            );
            sh_input(
                &["ip", "netns", "exec", &router, "nft", "-f", "-"],
                Some(&rules),
            );
        }
        lab
    }

    fn add_ns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        // Registered before creation, so a half-built lab is still removed.
        self.namespaces.push(name.clone());
        sh(&["ip", "netns", "add", &name]);
        name
    }

    /// The full name of namespace `role` (`inet`, `ra`, `ha`, `rb`, `hb`).
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// A fresh config dir for one process.
    pub fn config_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(format!("cfg-{name}"));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `ip netns exec NS tether --global-config CFG ARGS…`, with a clean environment.
    pub fn tether_cmd(&self, role: &str, cfg: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(role), bin()])
            .arg("--global-config")
            .arg(cfg)
            .args(args);
        for var in [
            "TETHER_URL",
            "TETHER_SESSION_TOKEN",
            "TETHER_LOG",
            "TETHER_CONFIG_DIR",
            "TETHER_DISABLE_DIRECT_CONNECTIONS",
            "TETHER_BLOCK_DIRECT",
        ] {
            c.env_remove(var);
        }
        c.env("NO_COLOR", "1");
        if std::env::var_os("NAT_LAB_TRACE").is_some() {
            // For debugging the lab: per-packet tailnet logs from the CLI too.
            c.env("TETHER_LOG", "debug,tether_tailnet=trace");
        }
        c
    }

    /// Runs a CLI command in namespace `role` to completion (bounded by `limit`).
    pub fn run(&self, role: &str, cfg: &Path, args: &[&str], limit: Duration) -> Out {
        run_with_input(self.tether_cmd(role, cfg, args), b"", limit)
    }

    /// Starts `tether server` in the internet namespace with `extra` flags and waits
    /// (bounded) until it is ready. Returns its URL.
    pub fn start_server(&mut self, extra: &[&str]) -> String {
        let url = format!("http://{SERVER_IP}:{HTTP_PORT}");
        let cfg = self.config_dir("server");
        let data = self.dir.path().join("data");
        let http = format!("{SERVER_IP}:{HTTP_PORT}");
        let stun = format!("{SERVER_IP}:{STUN_PORT}");
        let mut args = vec![
            "server",
            "--http-address",
            &http,
            "--stun-address",
            &stun,
            "--access-url",
            &url,
            "--data-dir",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut child = self
            .tether_cmd("inet", &cfg, &args)
            .env("TETHER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.children.push(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut banner = Vec::new();
        while !banner.iter().any(|l: &String| l.contains("tether login")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => banner.push(line),
                Err(_) => panic!("the lab server did not become ready; printed: {banner:?}"),
            }
        }
        url
    }

    /// Starts a long-running `tether` process in namespace `role`, its stderr going to
    /// `<dir>/<name>.log`; killed on drop.
    pub fn spawn(&mut self, name: &str, role: &str, cfg: &Path, args: &[&str], log: &str) {
        let file = std::fs::File::create(self.log_path(name)).unwrap();
        let child = self
            .tether_cmd(role, cfg, args)
            .env(
                "TETHER_LOG",
                std::env::var("NAT_LAB_TRACE")
                    .map_or(log.to_string(), |_| format!("{log},tether_tailnet=trace")),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// What process `name` (see [`Lab::spawn`]) has logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Server, first user (in site A), workspace `dev` and its agent (in site B), up and
    /// connected. Returns the client's config dir.
    pub fn workspace(&mut self, server_flags: &[&str]) -> PathBuf {
        let url = self.start_server(server_flags);
        let cfg = self.config_dir("alice");
        let out = self.run(
            HOST_A,
            &cfg,
            &[
                "login",
                &url,
                "--first-user-username",
                "alice",
                "--first-user-email",
                "alice@example.com",
                "--first-user-password",
                "correct horse battery",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.code, 0, "login from site A failed: {}", out.stderr);
        let out = self.run(HOST_A, &cfg, &["create", "dev"], Duration::from_secs(60));
        assert_eq!(out.code, 0, "create failed: {}", out.stderr);
        let token = out
            .stdout
            .lines()
            .find(|l| l.contains("tether agent --url"))
            .and_then(|l| l.split("--token ").nth(1))
            .expect("create printed no agent command")
            .trim()
            .to_string();
        let agent_cfg = self.config_dir("agent");
        self.spawn(
            "agent",
            HOST_B,
            &agent_cfg,
            &["agent", "--url", &url, "--token", &token],
            "info",
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(
                HOST_A,
                &cfg,
                &["list", "-o", "json"],
                Duration::from_secs(30),
            );
            let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            let up = list.as_array().is_some_and(|a| {
                a.iter()
                    .any(|w| w["name"] == "dev" && w["status"] == "connected")
            });
            // The coordinator lists the agent as connected before its DERP link is up;
            // a client that dials in between loses its first handshake to the relay and
            // waits 5 s for the retry. Wait for the agent's own "ready" too.
            if up && self.log("agent").contains("tailnet ready") {
                return cfg;
            }
            assert!(
                Instant::now() < deadline,
                "the agent in site B never connected: {} {}\nagent log:\n{}",
                out.stdout,
                out.stderr,
                self.log("agent")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Hosts and routers first, the internet last; each also loses any stray
        // process (e.g. a shell the agent started for an SSH session).
        for ns in self.namespaces.iter().rev() {
            delete_namespace(ns);
        }
    }
}
