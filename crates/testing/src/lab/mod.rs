//! The NAT lab: an "internet" network namespace holding the tether server, and two sites,
//! each a router namespace doing nftables NAT in front of a LAN (a bridge in the router)
//! with one host namespace, or two (see [`Lab::add_lan_host`]).
//!
//! ```text
//!   site A LAN host ─ 10.1.0.0/24 ─ router A ─┐                 ┌─ router B ─ 10.2.0.0/24 ─ site B LAN host
//!   (tether CLI)                  198.18.1.2 │  bridge in the  │ 198.18.2.2                  (tether agent)
//!                                            └─ "internet" ────┘
//!                                 198.18.0.1: tether server (HTTP + DERP + STUN)
//!                                 198.18.0.2: a second tether server, used only for STUN
//! ```
//!
//! Everything lives inside namespaces named `tlab<pid><tag>-<role>`; the host's own
//! interfaces, routes and firewall are never touched. [`Lab`] kills the processes it
//! started and deletes its namespaces on drop, also when a test panics.

mod log;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use log::{elapsed, first, first_after, now_of_day, strip_ansi, timestamp};

use crate::{Out, Tether, run_with_input, wait_ready_file};

/// The server's address on the lab internet.
pub const SERVER_IP: &str = "198.18.0.1";
/// The second STUN server's address. Only answers from two IPs tell a hard NAT (a new
/// public port per destination) from an easy one.
pub const STUN2_IP: &str = "198.18.0.2";
/// The servers' HTTP port (the namespace is private, so a fixed port cannot clash).
pub const HTTP_PORT: u16 = 8080;
/// The servers' STUN port.
pub const STUN_PORT: u16 = 3478;

/// What a site's router does to its LAN's traffic.
#[derive(Clone, Copy, Debug)]
pub enum Nat {
    /// Port-restricted cone: `masquerade` on the WAN side (conntrack keeps the source
    /// port and lets in only replies from peers the LAN host already sent to).
    PortRestrictedCone,
    /// Like [`Nat::PortRestrictedCone`], and every UDP packet from the LAN is dropped.
    UdpDropped,
    /// 1:1 NAT, like a cloud VM with a public IP: `masquerade` (keeping the port), and
    /// any UDP arriving on the WAN goes to the site's first host, same port.
    FullCone,
    /// Symmetric ("hard") NAT: `masquerade random,fully-random` picks a new public port
    /// for every destination; only replies get in.
    Symmetric,
}

/// The router's nftables ruleset for `nat`; `host` is the LAN host a full cone
/// forwards inbound UDP to.
fn router_rules(nat: Nat, host: &str) -> String {
    // Unsolicited inbound packets are dropped before conntrack confirms them:
    // a confirmed entry for (peer → our WAN port) would make masquerade pick
    // another source port for our own packets to that peer later, i.e. turn the
    // cone NAT symmetric for exactly the simultaneous open that punches holes.
    // A full cone lets new UDP in instead, DNATed to the host: that entry then is the
    // host's mapping itself (its packets to the peer match it and keep the port).
    let (new_inbound, dnat) = match nat {
        Nat::FullCone => (
            "iifname \"wan\" meta l4proto != udp ct state new drop".to_string(),
            format!("iifname \"wan\" meta l4proto udp dnat to {host}"),
        ),
        _ => (
            "iifname \"wan\" ct state new drop".to_string(),
            String::new(),
        ),
    };
    let masquerade = match nat {
        Nat::Symmetric => "masquerade random,fully-random",
        _ => "masquerade",
    };
    let drop_udp = match nat {
        Nat::UdpDropped => "iifname \"lan\" meta l4proto udp drop",
        _ => "",
    };
    format!(
        "table ip lab {{
  chain prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    {new_inbound}
  }}
  chain inbound {{
    type nat hook prerouting priority dstnat; policy accept;
    {dnat}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" {masquerade}
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    {drop_udp}
    ct state established,related accept
    ct status dnat accept
    iifname \"wan\" drop
  }}
}}
"
    )
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

/// `ip -n NS ARGS…` as a setup step; `args` is split at spaces.
fn ip(ns: &str, args: &str) {
    let mut all = vec!["ip", "-n", ns];
    all.extend(args.split_whitespace());
    sh(&all);
}

/// Loads the nftables `ruleset` in namespace `ns`.
fn nft(ns: &str, ruleset: &str) {
    sh_input(
        &["ip", "netns", "exec", ns, "nft", "-f", "-"],
        Some(ruleset),
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
    tether: Tether,
    prefix: String,
    namespaces: Vec<String>,
    /// Every started process, by name; killed on drop.
    children: Vec<(String, Child)>,
    /// The host role [`Lab::workspace`] runs the agent in.
    agent_host: &'static str,
    /// Config and data dirs of every process.
    pub dir: tempfile::TempDir,
}

/// The site A host namespace (the client's).
pub const HOST_A: &str = "ha";
/// The site B host namespace (the agent's).
pub const HOST_B: &str = "hb";
/// A second host on site A's LAN, 10.1.0.3 (the agent's, see [`Lab::same_lan`]).
pub const HOST_A2: &str = "ha2";

/// Drops all UDP a router forwards, both ways; TCP (and so DERP over HTTP) still flows.
const CUT_UDP: &str = "table ip cut {
  chain forward {
    type filter hook forward priority filter; policy accept;
    meta l4proto udp drop
  }
}
";

impl Lab {
    /// Builds the topology with NAT kinds for site A and site B, to run the `tether`
    /// binary in. `tag` keeps the names of tests in one process apart.
    pub fn new(tether: Tether, tag: &str, site_a: Nat, site_b: Nat) -> Self {
        require_tools();
        remove_stale();
        let mut lab = Self {
            tether,
            prefix: format!("tlab{}{tag}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            agent_host: HOST_B,
            dir: tempfile::tempdir().unwrap(),
        };
        let inet = lab.add_ns("inet");
        ip(&inet, "link set lo up");
        ip(&inet, "link add name br0 type bridge");
        ip(&inet, &format!("addr add {SERVER_IP}/15 dev br0"));
        ip(&inet, &format!("addr add {STUN2_IP}/15 dev br0"));
        ip(&inet, "link set br0 up");
        for (n, site, nat) in [(1, 'a', site_a), (2, 'b', site_b)] {
            let router = lab.add_ns(&format!("r{site}"));
            // WAN: router ↔ the internet bridge.
            ip(
                &inet,
                &format!("link add name site{site} type veth peer name wan netns {router}"),
            );
            ip(&inet, &format!("link set site{site} master br0 up"));
            ip(&router, "link set lo up");
            ip(&router, &format!("addr add 198.18.{n}.2/15 dev wan"));
            ip(&router, "link set wan up");
            // LAN: a bridge, so that more than one host fits (see `add_lan_host`).
            ip(&router, "link add name lan type bridge");
            ip(&router, &format!("addr add 10.{n}.0.1/24 dev lan"));
            ip(&router, "link set lan up");
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
            nft(&router, &router_rules(nat, &format!("10.{n}.0.2")));
            lab.add_lan_host(n, &format!("h{site}"), 2);
        }
        lab
    }

    /// Like [`Lab::new`] with both sites port-restricted cones, plus [`HOST_A2`] on
    /// site A's LAN, where [`Lab::workspace`] then runs the agent: client and agent on
    /// one LAN.
    pub fn same_lan(tether: Tether, tag: &str) -> Self {
        let mut lab = Self::new(
            tether,
            tag,
            Nat::PortRestrictedCone,
            Nat::PortRestrictedCone,
        );
        lab.add_lan_host(1, HOST_A2, 3);
        lab.agent_host = HOST_A2;
        lab
    }

    /// Adds host namespace `role` as 10.`site`.0.`last` on the LAN of site `site`
    /// (1 is A, 2 is B), routed through that site's router.
    pub fn add_lan_host(&mut self, site: u8, role: &str, last: u8) {
        let router = self.ns(&format!("r{}", char::from(b'a' + site - 1)));
        let host = self.add_ns(role);
        let port = format!("to-{role}");
        ip(
            &router,
            &format!("link add name {port} type veth peer name eth0 netns {host}"),
        );
        ip(&router, &format!("link set {port} master lan up"));
        ip(&host, "link set lo up");
        ip(&host, &format!("addr add 10.{site}.0.{last}/24 dev eth0"));
        ip(&host, "link set eth0 up");
        ip(&host, &format!("route add default via 10.{site}.0.1"));
    }

    /// Makes router `router` (`ra`, `rb`) drop all UDP it forwards, as when a firewall
    /// starts blocking UDP mid-session; undone by [`Lab::restore_udp`].
    pub fn cut_udp(&self, router: &str) {
        nft(&self.ns(router), CUT_UDP);
    }

    /// Undoes [`Lab::cut_udp`].
    pub fn restore_udp(&self, router: &str) {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns(router),
            "nft",
            "delete",
            "table",
            "ip",
            "cut",
        ]);
    }

    fn add_ns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        // Registered before creation, so a half-built lab is still removed.
        self.namespaces.push(name.clone());
        sh(&["ip", "netns", "add", &name]);
        name
    }

    /// The full name of namespace `role` (`inet`, `ra`, `ha`, `rb`, `hb`, …).
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
        c.args(["netns", "exec", &self.ns(role), self.tether.bin()])
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
            "TETHER_STUN_ADDRESS",
            "TETHER_DERP_SERVER_STUN_ADDRESSES",
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
    /// (bounded) until it is ready. Returns its URL. Unless `extra` sets
    /// `--derp-server-stun-addresses` itself, a second server at [`STUN2_IP`] serves
    /// as a second STUN server in the DERP map, so hard NAT is detectable.
    pub fn start_server(&mut self, extra: &[&str]) -> String {
        let stun2 = format!("{STUN2_IP}:{STUN_PORT}");
        let mut flags = extra.to_vec();
        if !extra.contains(&"--derp-server-stun-addresses") {
            self.spawn_server("stun2", STUN2_IP, &[]);
            flags.extend(["--derp-server-stun-addresses", &stun2]);
        }
        self.spawn_server("server", SERVER_IP, &flags)
    }

    /// Starts a `tether server` named `name` on `ip` in the internet namespace and
    /// waits (bounded) until it is ready. Returns its URL.
    fn spawn_server(&mut self, name: &str, ip: &str, extra: &[&str]) -> String {
        let url = format!("http://{ip}:{HTTP_PORT}");
        let cfg = self.config_dir(name);
        let data = self.dir.path().join(format!("data-{name}"));
        let http = format!("{ip}:{HTTP_PORT}");
        let stun = format!("{ip}:{STUN_PORT}");
        let mut args = vec![
            "server",
            "--http-address",
            &http,
            "--access-url",
            &url,
            "--data-dir",
            data.to_str().unwrap(),
        ];
        if !extra.contains(&"--stun-address") {
            args.extend(["--stun-address", &stun]);
        }
        let ready_file = self.dir.path().join(format!("{name}.ready.json"));
        let ready_arg = ready_file.display().to_string();
        args.extend(["--ready-file", &ready_arg]);
        args.extend_from_slice(extra);
        let stdout = std::fs::File::create(self.dir.path().join(format!("{name}.out"))).unwrap();
        let child = self
            .tether_cmd("inet", &cfg, &args)
            .env("TETHER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Registered first, so a server that never gets ready is still killed.
        self.children.push((name.to_string(), child));
        let (_, child) = self.children.last_mut().unwrap();
        let ready = wait_ready_file(&ready_file, child, Duration::from_secs(30));
        assert_eq!(
            ready.url.as_str().trim_end_matches('/'),
            url,
            "the lab server {name} has another access URL"
        );
        url
    }

    /// Starts a long-running `tether` process in namespace `role`, its stdout going to
    /// `<dir>/<name>.out` (see [`Lab::output`]) and its stderr to `<dir>/<name>.log`
    /// (see [`Lab::log`]); killed on drop.
    pub fn spawn(&mut self, name: &str, role: &str, cfg: &Path, args: &[&str], log: &str) {
        let stdout = std::fs::File::create(self.dir.path().join(format!("{name}.out"))).unwrap();
        let stderr = std::fs::File::create(self.log_path(name)).unwrap();
        let child = self
            .tether_cmd(role, cfg, args)
            .env(
                "TETHER_LOG",
                std::env::var("NAT_LAB_TRACE")
                    .map_or(log.to_string(), |_| format!("{log},tether_tailnet=trace")),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.children.push((name.to_string(), child));
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// What process `name` (see [`Lab::spawn`]) has logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// What process `name` (see [`Lab::spawn`]) has printed on stdout so far.
    pub fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.out"))).unwrap_or_default()
    }

    /// Waits until the log of process `name` contains `what`; false after `limit`.
    pub fn wait_for_log(&self, name: &str, what: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.log(name).contains(what) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Waits for process `name` (see [`Lab::spawn`]) to exit and returns its exit code
    /// (-1 when killed by a signal); panics after `limit`.
    pub fn wait(&mut self, name: &str, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no process named {name}"));
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Logs in from site A as the first user. Returns the client's config dir.
    pub fn login(&self, url: &str) -> PathBuf {
        let cfg = self.config_dir("alice");
        let out = self.run(
            HOST_A,
            &cfg,
            &[
                "login",
                url,
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
        cfg
    }

    /// Server, first user (in site A), workspace `dev` and its agent (in site B, or
    /// [`HOST_A2`] for [`Lab::same_lan`]), up and connected. Returns the client's
    /// config dir.
    pub fn workspace(&mut self, server_flags: &[&str]) -> PathBuf {
        let url = self.start_server(server_flags);
        let cfg = self.login(&url);
        let out = self.run(HOST_A, &cfg, &["create", "dev"], Duration::from_secs(60));
        assert_eq!(out.code, 0, "create failed: {}", out.stderr);
        let token = out
            .stdout
            .lines()
            .find(|l| l.contains("tether agent --url"))
            .and_then(|l| l.split("TETHER_AGENT_TOKEN=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("create printed no agent command")
            .to_string();
        let agent_cfg = self.config_dir("agent");
        self.spawn(
            "agent",
            self.agent_host,
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
                "the agent never connected: {} {}\nagent log:\n{}",
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
        for (_, child) in &mut self.children {
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
