//! The network benchmark: builds the NAT lab of the tests (both sites behind a
//! port-restricted cone NAT, the agent's site also forwarding TCP 22 and 5201 to its
//! host, like a VM with a public SSH port) and prints one table from one run: raw TCP
//! (iperf3, the ceiling), OpenSSH `ssh -L` (what users would pick instead), tether's
//! speedtest direct and relayed, `tether port-forward` (each of these both ways: upload
//! from the laptop's site, and download), `scp` through `tether config-ssh`
//! against `scp` to a plain sshd, the wall time of `tether ssh dev -- true` against
//! `ssh host true`, the time to the direct path (median of several fresh clients), ping
//! round trips direct and through DERP, and download throughput with 1 % random loss on
//! one router. Every tether figure is also given as a ratio to the OpenSSH figure of the
//! same run and direction. A second table gives each throughput test's CPU cost (the
//! whole machine's busy core-seconds per GB moved, and the cores busy on average) beside
//! that of one loopback TCP connection, the price of each of a port-forward's two extra
//! legs.
//!
//! Needs root, `ip`, `nft`, `iperf3`, OpenSSH's `ssh`, `scp`, `sshd` and `ssh-keygen`:
//! `apt-get install -y iproute2 nftables iperf3 openssh-client openssh-server`, then
//! `cargo bench -p tether-cli --bench net` (`TETHER_BENCH_SECONDS` sets each throughput
//! test's length, default 5; throughput figures are medians of `TETHER_BENCH_RUNS`
//! interleaved rounds, default 3; `TETHER_BENCH_ONLY=throughput,scp,true,direct,ping,loss`
//! runs some parts only).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tether_testing::lab::{self, HOST_A, HOST_B, Lab, Nat};
use tether_testing::{Out, Tether, run_with_input};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// Port of the iperf3 server on the agent's host.
const IPERF_PORT: u16 = 5201;
/// The agent site's public address (its router's WAN side).
const SITE_B_PUBLIC: &str = "198.18.2.2";
/// The agent host's LAN address.
const HOST_B_IP: &str = "10.2.0.2";
/// Fresh clients whose time to a direct path is measured.
const DIRECT_RUNS: usize = 5;
/// Size of the file copied by `scp`.
const SCP_BYTES: u64 = 200 << 20;

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ip netns exec NS PROGRAM ARGS…`.
fn in_ns(lab: &Lab, role: &str, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.ns(role), program]).args(args);
    c
}

/// Runs a command to completion within `limit`; panics with its output on failure.
fn must(cmd: Command, limit: Duration) -> Out {
    let what = format!("{cmd:?}");
    let out = run_with_input(cmd, b"", limit);
    assert_eq!(
        out.code, 0,
        "{what} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    out
}

fn nft(lab: &Lab, role: &str, script: &str) {
    let mut c = in_ns(lab, role, "nft", &["-f", "-"]);
    c.stdin(Stdio::piped());
    let out = run_with_input(c, script.as_bytes(), Duration::from_secs(10));
    assert_eq!(out.code, 0, "nft failed: {}\n{script}", out.stderr);
}

/// Lets new TCP connections to ports 22 and [`IPERF_PORT`] on site B's public address
/// through to the agent's host (the lab drops every unsolicited inbound packet).
fn expose_tcp(lab: &Lab) {
    nft(
        lab,
        "rb",
        &format!(
            "table ip expose {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"wan\" tcp dport {{ 22, {IPERF_PORT} }} dnat to {HOST_B_IP}
  }}
}}
insert rule ip lab prerouting iifname \"wan\" tcp dport {{ 22, {IPERF_PORT} }} accept
insert rule ip lab forward ip daddr {HOST_B_IP} tcp dport {{ 22, {IPERF_PORT} }} accept
"
        ),
    );
}

/// Drops 1 % of the packets router B forwards, at random, both ways.
fn add_loss(lab: &Lab) {
    nft(
        lab,
        "rb",
        "table ip loss {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    numgen random mod 100 < 1 drop
  }
}
",
    );
}

fn remove_loss(lab: &Lab) {
    must(
        in_ns(lab, "rb", "nft", &["delete", "table", "ip", "loss"]),
        Duration::from_secs(10),
    );
}

/// A plain OpenSSH server on the agent's host, key-only, and the client's key.
struct Sshd {
    _proc: Proc,
    key: PathBuf,
}

fn start_sshd(lab: &Lab, dir: &Path) -> Sshd {
    std::fs::create_dir_all("/run/sshd").unwrap();
    let host_key = dir.join("ssh_host_ed25519_key");
    let key = dir.join("id_ed25519");
    for k in [&host_key, &key] {
        let _ = std::fs::remove_file(k);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(k);
        must(c, Duration::from_secs(30));
    }
    let auth = dir.join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &auth).unwrap();
    let conf = dir.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port 22\nListenAddress {HOST_B_IP}\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
            host_key.display(),
            auth.display()
        ),
    )
    .unwrap();
    let child = in_ns(lab, HOST_B, "/usr/sbin/sshd", &["-D", "-e", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sshd = Sshd {
        _proc: Proc(child),
        key,
    };
    // Ready when a command runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run_with_input(ssh_cmd(lab, &sshd, &["true"]), b"", Duration::from_secs(20));
        if out.code == 0 {
            return sshd;
        }
        assert!(
            Instant::now() < deadline,
            "sshd did not come up: {}",
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Common OpenSSH client options: the bench's key, no host-key prompts,
/// chacha20-poly1305 (as the reference figure).
fn ssh_opts(sshd: &Sshd) -> Vec<String> {
    vec![
        "-i".into(),
        sshd.key.display().to_string(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-c".into(),
        "chacha20-poly1305@openssh.com".into(),
    ]
}

fn ssh_cmd(lab: &Lab, sshd: &Sshd, remote: &[&str]) -> Command {
    let mut c = in_ns(lab, HOST_A, "ssh", &[]);
    c.args(ssh_opts(sshd))
        .arg(format!("root@{SITE_B_PUBLIC}"))
        .args(remote);
    c
}

/// The throughput tests, in the order of each round: the table's label, the CPU
/// table's, and whether the figure is compared with OpenSSH's.
const THROUGHPUT: [(&str, &str, bool); 5] = [
    ("raw TCP through the NATs (iperf3)", "raw TCP", false),
    ("OpenSSH ssh -L (iperf3)", "OpenSSH ssh -L", false),
    ("tether speedtest, direct", "speedtest direct", true),
    (
        "tether speedtest, relayed (DERP)",
        "speedtest relayed",
        true,
    ),
    ("tether port-forward (iperf3)", "port-forward", true),
];

/// Which way a throughput test moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// From the laptop (site A) to the workspace: iperf3's default.
    Up,
    /// From the workspace to the laptop: the speedtest's default.
    Down,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Up => "upload",
            Way::Down => "download",
        }
    }
}

/// iperf3 from site A to `host:port` for `secs` (`-R` for [`Way::Down`]); the
/// receiver's Mbit/s, or NaN (with iperf3's reason on stderr) when the run failed, as
/// OpenSSH's forward sometimes does at 1 % loss: one failed round must not lose the
/// others.
fn iperf(lab: &Lab, host: &str, port: u16, secs: u64, way: Way) -> f64 {
    let port = port.to_string();
    let secs_arg = secs.to_string();
    let mut args = vec!["-c", host, "-p", &port, "-t", &secs_arg, "-J"];
    if way == Way::Down {
        args.push("-R");
    }
    let out = run_with_input(
        in_ns(lab, HOST_A, "iperf3", &args),
        b"",
        Duration::from_secs(secs + 30),
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    match v["end"]["sum_received"]["bits_per_second"].as_f64() {
        Some(bps) if out.code == 0 => bps / 1e6,
        _ => {
            eprintln!(
                "bench: iperf3 to {host}:{port} failed (exit {}): {} {}",
                out.code,
                v["error"],
                out.stderr.trim()
            );
            f64::NAN
        }
    }
}

/// A free TCP port in namespace `role` (binds port 0 there).
fn free_port(lab: &Lab, role: &str) -> u16 {
    let out = must(
        in_ns(
            lab,
            role,
            "python3",
            &[
                "-c",
                "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])",
            ],
        ),
        Duration::from_secs(10),
    );
    out.stdout.trim().parse().unwrap()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` in site A.
fn wait_listening(lab: &Lab, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe =
        format!("import socket; socket.create_connection(('127.0.0.1',{port}),timeout=1).close()");
    loop {
        let out = run_with_input(
            in_ns(lab, HOST_A, "python3", &["-c", &probe]),
            b"",
            Duration::from_secs(10),
        );
        if out.code == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tether speedtest` from site A (`extra` are global flags); Mbit/s of the overall row.
fn speedtest(lab: &Lab, cfg: &Path, extra: &[&str], secs: u64, way: Way) -> f64 {
    let t = format!("{secs}s");
    let mut args = extra.to_vec();
    let direction = match way {
        Way::Up => "up",
        Way::Down => "down",
    };
    args.extend([
        "speedtest",
        "dev",
        "--direction",
        direction,
        "-t",
        &t,
        "-o",
        "json",
    ]);
    let out = lab.run(HOST_A, cfg, &args, Duration::from_secs(secs + 60));
    assert_eq!(out.code, 0, "speedtest failed: {}", out.stderr);
    let json = out
        .stdout
        .find('{')
        .map(|i| &out.stdout[i..])
        .expect("no JSON in the speedtest output");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["overall"]["throughput_mbits"].as_f64().unwrap()
}

/// Seconds of CPU time the whole machine has spent busy (user, system and interrupt
/// time of every core; not idle, I/O wait or time stolen by the hypervisor).
fn busy_cpu_secs() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    });
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    // "cpu  user nice system idle iowait irq softirq steal ..."
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0] + f[1] + f[2] + f[5] + f[6]) as f64 / ticks
}

/// One throughput test: Mbit/s, the machine's busy CPU seconds per gigabyte moved, and
/// how many cores were busy on average (all processes: both ends, iperf3, the kernel;
/// process start included).
#[derive(Debug, Clone, Copy)]
struct Sample {
    mbits: f64,
    cost: f64,
    cores: f64,
}

/// Runs one throughput test (`test` gives its Mbit/s over `secs`) and measures its CPU.
fn with_cpu(secs: u64, test: impl FnOnce() -> f64) -> Sample {
    let (before, start) = (busy_cpu_secs(), Instant::now());
    let mbits = test();
    let busy = busy_cpu_secs() - before;
    let gigabytes = mbits * secs as f64 / 8000.0;
    Sample {
        mbits,
        cost: busy / gigabytes,
        cores: busy / start.elapsed().as_secs_f64(),
    }
}

/// The median of each field of `v`.
fn median_sample(v: &[Sample]) -> Sample {
    let of = |f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    Sample {
        mbits: of(|s| s.mbits),
        cost: of(|s| s.cost),
        cores: of(|s| s.cores),
    }
}

/// Wall time of one command, started in site A.
fn wall(cmd: Command) -> Duration {
    let start = Instant::now();
    must(cmd, Duration::from_secs(60));
    start.elapsed()
}

/// Round trips in ms of the `pong from … in X` lines of `tether ping` that contain `via`.
fn pong_rtts(out: &str, via: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| l.starts_with("pong from") && l.contains(via))
        .filter_map(|l| {
            let t = l.rsplit(" in ").next()?;
            if let Some(us) = t.strip_suffix("µs") {
                us.parse::<f64>().ok().map(|x| x / 1000.0)
            } else if let Some(ms) = t.strip_suffix("ms") {
                ms.parse().ok()
            } else {
                t.strip_suffix('s')?.parse::<f64>().ok().map(|x| x * 1000.0)
            }
        })
        .collect()
}

/// One table row: name, figure, unit, and the ratio to its OpenSSH counterpart.
struct Row(String, f64, &'static str, Option<f64>);

/// A positive number from the environment, or `default`.
fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// The middle value of the rounds that produced one (the mean of the two middle ones
/// for an even count); NaN when none did.
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Adds a row, and prints it at once (the table comes at the end).
fn push(rows: &mut Vec<Row>, r: Row) {
    eprintln!("bench: {}: {:.1} {}", r.0, r.1, r.2);
    rows.push(r);
}

fn main() {
    let secs = env_count("TETHER_BENCH_SECONDS", 5);
    let runs = env_count("TETHER_BENCH_RUNS", 3) as usize;
    let mut lab = Lab::new(
        TETHER,
        "bench",
        Nat::PortRestrictedCone,
        Nat::PortRestrictedCone,
    );
    let cfg = lab.workspace(&[]);
    expose_tcp(&lab);
    let dir = tempfile::tempdir().unwrap();
    let sshd = start_sshd(&lab, dir.path());
    let _iperf = Proc(
        in_ns(
            &lab,
            HOST_B,
            "iperf3",
            &["-s", "-p", &IPERF_PORT.to_string()],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut rows = Vec::new();

    let l_port = free_port(&lab, HOST_A);
    let _ssh_l = Proc(
        ssh_cmd(
            &lab,
            &sshd,
            &[
                "-N",
                "-L",
                &format!("127.0.0.1:{l_port}:127.0.0.1:{IPERF_PORT}"),
            ],
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_listening(&lab, l_port);
    let only = std::env::var("TETHER_BENCH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    // Per direction (upload, download), the medians of the tests in THROUGHPUT; and
    // those of one loopback leg. NaN where the part did not run.
    let unmeasured = Sample {
        mbits: f64::NAN,
        cost: f64::NAN,
        cores: f64::NAN,
    };
    let mut measured = [[unmeasured; 5]; 2];
    let mut leg = unmeasured;
    // Throughput tests' CPU cost, by name.
    let mut cpu_rows: Vec<(String, Sample)> = Vec::new();

    if want("throughput") {
        let pf_port = free_port(&lab, HOST_A);
        let spec = format!("{pf_port}:{IPERF_PORT}");
        let mut pf = lab.tether_cmd(HOST_A, &cfg, &["port-forward", "dev", "--tcp", &spec]);
        let _pf = Proc(
            pf.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_listening(&lab, pf_port);
        // One loopback TCP connection in site A, iperf3 to iperf3: what each of the two
        // extra legs of a port-forward (application to CLI, agent to service) costs.
        let leg_port = free_port(&lab, HOST_A);
        let _leg_server = Proc(
            in_ns(&lab, HOST_A, "iperf3", &["-s", "-p", &leg_port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_listening(&lab, leg_port);
        // Interleaved rounds, so that a slow moment of this shared machine hits one
        // round of every measure rather than all of one.
        let ways = [Way::Up, Way::Down];
        let mut r: [[Vec<Sample>; 5]; 2] = Default::default();
        let mut legs = Vec::new();
        for round in 1..=runs {
            legs.push(with_cpu(secs, || {
                iperf(&lab, "127.0.0.1", leg_port, secs, Way::Up)
            }));
            for (w, &way) in ways.iter().enumerate() {
                let r = &mut r[w];
                r[0].push(with_cpu(secs, || {
                    iperf(&lab, SITE_B_PUBLIC, IPERF_PORT, secs, way)
                }));
                r[1].push(with_cpu(secs, || {
                    iperf(&lab, "127.0.0.1", l_port, secs, way)
                }));
                r[2].push(with_cpu(secs, || speedtest(&lab, &cfg, &[], secs, way)));
                r[3].push(with_cpu(secs, || {
                    speedtest(&lab, &cfg, &["--disable-direct-connections"], secs, way)
                }));
                r[4].push(with_cpu(secs, || {
                    iperf(&lab, "127.0.0.1", pf_port, secs, way)
                }));
                eprintln!(
                    "bench: round {round}, {}: raw {:.0}, ssh -L {:.0}, direct {:.0}, relayed {:.0}, port-forward {:.0} Mbit/s",
                    way.name(),
                    r[0][round - 1].mbits,
                    r[1][round - 1].mbits,
                    r[2][round - 1].mbits,
                    r[3][round - 1].mbits,
                    r[4][round - 1].mbits
                );
            }
        }
        leg = median_sample(&legs);
        cpu_rows.push(("loopback TCP, iperf3 to iperf3 in site A".into(), leg));
        for (w, way) in ways.iter().enumerate() {
            measured[w] = r[w].each_ref().map(|v| median_sample(v));
            let ssh_l = measured[w][1].mbits;
            for ((label, short, vs_openssh), m) in THROUGHPUT.iter().zip(measured[w]) {
                let way = way.name();
                let ratio = vs_openssh.then(|| m.mbits / ssh_l);
                push(
                    &mut rows,
                    Row(format!("{label}, {way}"), m.mbits, "Mbit/s", ratio),
                );
                cpu_rows.push((format!("{short}, {way}"), m));
            }
        }
    }

    if want("scp") {
        // scp of one file, through tether config-ssh and to the plain sshd.
        let file = dir.path().join("payload");
        {
            let f = std::fs::File::create(&file).unwrap();
            f.set_len(SCP_BYTES).unwrap();
        }
        let ssh_config = dir.path().join("ssh_config");
        let out = lab.run(
            HOST_A,
            &cfg,
            &[
                "config-ssh",
                "-y",
                "--ssh-config-file",
                ssh_config.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.code, 0, "config-ssh failed: {}", out.stderr);
        let file_arg = file.display().to_string();
        let mut tether_scp = in_ns(&lab, HOST_A, "scp", &["-q", "-F"]);
        tether_scp
            .arg(&ssh_config)
            .args([file_arg.as_str(), "tether.dev:/dev/null"]);
        let t_scp = wall(tether_scp);
        let mut plain_scp = in_ns(&lab, HOST_A, "scp", &["-q"]);
        plain_scp.args(ssh_opts(&sshd)).args([
            file_arg.as_str(),
            &format!("root@{SITE_B_PUBLIC}:/dev/null"),
        ]);
        let p_scp = wall(plain_scp);
        let mbits = |d: Duration| SCP_BYTES as f64 * 8.0 / d.as_secs_f64() / 1e6;
        push(
            &mut rows,
            Row("scp to plain sshd".into(), mbits(p_scp), "Mbit/s", None),
        );
        push(
            &mut rows,
            Row(
                "scp through tether config-ssh".into(),
                mbits(t_scp),
                "Mbit/s",
                Some(mbits(t_scp) / mbits(p_scp)),
            ),
        );
    }

    if want("true") {
        // Wall time of a trivial command (median of 5 each).
        let plain_true = median(
            (0..5)
                .map(|_| wall(ssh_cmd(&lab, &sshd, &["true"])).as_secs_f64() * 1000.0)
                .collect(),
        );
        let tether_true = median(
            (0..5)
                .map(|_| {
                    wall(lab.tether_cmd(HOST_A, &cfg, &["ssh", "dev", "--", "true"])).as_secs_f64()
                        * 1000.0
                })
                .collect(),
        );
        push(
            &mut rows,
            Row("ssh host true (wall)".into(), plain_true, "ms", None),
        );
        push(
            &mut rows,
            Row(
                "tether ssh dev -- true (wall)".into(),
                tether_true,
                "ms",
                Some(tether_true / plain_true),
            ),
        );
    }

    if want("direct") {
        // Time from a fresh client learning of the agent to its direct path.
        let mut to_direct = Vec::new();
        for _ in 0..DIRECT_RUNS {
            let out = lab.run(
                HOST_A,
                &cfg,
                &["-v", "ping", "dev", "-n", "4"],
                Duration::from_secs(60),
            );
            let log = lab::strip_ansi(&out.stderr);
            match lab::elapsed(&log, &["peer added"], &["path now direct via "]) {
                Some((s, _)) => to_direct.push(s * 1000.0),
                None => eprintln!("a client did not go direct within its ping run:\n{log}"),
            }
        }
        assert!(!to_direct.is_empty(), "no client went direct");
        let runs = to_direct.len();
        push(
            &mut rows,
            Row(
                format!("time to direct path (median of {runs})"),
                median(to_direct),
                "ms",
                None,
            ),
        );
    }

    if want("ping") {
        // Ping round trips, direct and through DERP.
        let p2p = lab.run(
            HOST_A,
            &cfg,
            &["ping", "dev", "-n", "10"],
            Duration::from_secs(60),
        );
        let derp = lab.run(
            HOST_A,
            &cfg,
            &["--disable-direct-connections", "ping", "dev", "-n", "10"],
            Duration::from_secs(60),
        );
        let direct_rtts = pong_rtts(&p2p.stdout, " p2p via ");
        let derp_rtts = pong_rtts(&derp.stdout, " proxied via DERP(");
        assert!(!direct_rtts.is_empty(), "no direct pong:\n{}", p2p.stdout);
        assert!(!derp_rtts.is_empty(), "no DERP pong:\n{}", derp.stdout);
        let (d_rtt, r_rtt) = (median(direct_rtts), median(derp_rtts));
        push(
            &mut rows,
            Row("ping RTT direct (median)".into(), d_rtt, "ms", None),
        );
        push(
            &mut rows,
            Row(
                "ping RTT via DERP (median)".into(),
                r_rtt,
                "ms",
                Some(r_rtt / d_rtt),
            ),
        );
    }

    let (mut direct_lossy, mut openssh_lossy) = (f64::NAN, f64::NAN);
    if want("loss") {
        // 1 % loss on router B.
        add_loss(&lab);
        let (mut ssh_l, mut dir) = (Vec::new(), Vec::new());
        for round in 1..=runs {
            ssh_l.push(iperf(&lab, "127.0.0.1", l_port, secs, Way::Down));
            dir.push(speedtest(&lab, &cfg, &[], secs, Way::Down));
            eprintln!(
                "bench: round {round} at 1% loss: ssh -L {:.0}, direct {:.0} Mbit/s",
                ssh_l[round - 1],
                dir[round - 1]
            );
        }
        remove_loss(&lab);
        (openssh_lossy, direct_lossy) = (median(ssh_l), median(dir));
        push(
            &mut rows,
            Row(
                "OpenSSH ssh -L, 1% loss, download".into(),
                openssh_lossy,
                "Mbit/s",
                None,
            ),
        );
        push(
            &mut rows,
            Row(
                "tether speedtest direct, 1% loss, download".into(),
                direct_lossy,
                "Mbit/s",
                Some(direct_lossy / openssh_lossy),
            ),
        );
    }

    println!(
        "\nNAT lab (both sites port-restricted cone), one run; throughput: median of {runs} interleaved rounds of {secs} s:\n"
    );
    println!(
        "{:<44} {:>12} {:<7} {:>11}",
        "measure", "value", "unit", "vs OpenSSH"
    );
    for Row(name, v, unit, ratio) in &rows {
        let ratio = ratio.map_or(String::new(), |r| format!("{r:.2}x"));
        println!("{name:<44} {v:>12.1} {unit:<7} {ratio:>11}");
    }
    let [up, down] = measured.map(|m| m.map(|s| s.mbits));
    let [_, ssh_down, dir_down, _, fwd_down] = down;
    let [_, _, dir_up, _, fwd_up] = up;
    println!(
        "\nport-forward / direct speedtest: upload {:.2}x, download {:.2}x; 1% loss / lossless (download): tether direct {:.2}x, OpenSSH {:.2}x",
        fwd_up / dir_up,
        fwd_down / dir_down,
        direct_lossy / dir_down,
        openssh_lossy / ssh_down
    );
    println!("(the DERP ping row's ratio is DERP / direct)");
    if cpu_rows.is_empty() {
        return;
    }
    // Throughput is busy cores / (CPU per byte): where every core is busy, a
    // port-forward, which pays the direct path's cost plus its two loopback legs,
    // reaches direct / port-forward cost of the speedtest's throughput.
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\nCPU cost of the throughput tests (whole machine of {cores} cores; medians):\n");
    println!(
        "{:<44} {:>12} {:>14} {:>11}",
        "measure", "Mbit/s", "core-s per GB", "cores busy"
    );
    for (name, m) in &cpu_rows {
        println!(
            "{name:<44} {:>12.1} {:>14.2} {:>11.2}",
            m.mbits, m.cost, m.cores
        );
    }
    for (w, way) in [Way::Up, Way::Down].iter().enumerate() {
        let (dir, fwd, leg) = (measured[w][2].cost, measured[w][4].cost, leg.cost);
        println!(
            "{}: port-forward costs {:.2} core-s/GB more than the direct speedtest (its two loopback legs alone: {:.2}); \
             were both CPU-bound, port-forward / direct would be {:.2}x",
            way.name(),
            fwd - dir,
            2.0 * leg,
            dir / fwd
        );
    }
}
