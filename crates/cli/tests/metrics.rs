//! `/metrics` of the real `tether server` binary and of `tether agent`, fetched with curl
//! and parsed by the strict text parser (`tether_metrics::text`), while a relayed
//! `tether ssh` runs: the relay's forwarded packets and bytes and the agent's DERP bytes
//! grow by what the session carried, the coordinator's client peers and tunnels and the
//! agent's SSH connections are up during the session and back to zero after it, and HTTP
//! requests are labelled by route template. The metrics address serves nothing else, and
//! the main listener does not serve metrics.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether_metrics::text::Scrape;
use tether_testing::{Tether, free_tcp_port};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// Bytes the relayed session carries from the agent to the client.
const PAYLOAD: usize = 2_000_000;

/// `curl URL`: status code and body (curl is what an operator would use; without it, a
/// plain HTTP/1.0 request).
fn fetch(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output();
    match out {
        Ok(out) => {
            assert!(
                out.status.success(),
                "curl {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let (body, code) = text.rsplit_once('\n').unwrap();
            (code.parse().unwrap(), body.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => plain_get(url),
        Err(e) => panic!("running curl: {e}"),
    }
}

fn plain_get(url: &str) -> (u16, String) {
    use std::io::Read;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// A strictly parsed scrape of `/metrics` at `addr`.
fn scrape(addr: SocketAddr) -> Scrape {
    let (code, body) = fetch(&format!("http://{addr}/metrics"), &[]);
    assert_eq!(code, 200, "{body}");
    tether_metrics::text::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// Scrapes `addr` until `done` holds (at most 30 s); the last scrape.
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrape(addr);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kind<'a>(s: &'a Scrape, family: &str) -> &'a str {
    s.families
        .get(family)
        .and_then(|f| f.kind.as_deref())
        .unwrap_or_else(|| panic!("no family {family}"))
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.value(name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

#[test]
fn server_and_agent_metrics_move_with_a_relayed_ssh_session() {
    let srv = TETHER.server_process(&[
        "--prometheus-address",
        "127.0.0.1:0",
        "--block-direct-connections",
    ]);
    let metrics = srv
        .ready
        .prometheus_address
        .expect("the ready file names the metrics address");
    assert!(
        srv.banner()
            .iter()
            .any(|l| l.contains(&format!("http://{metrics}/metrics"))),
        "{:?}",
        srv.banner()
    );
    // The metrics address serves only /metrics; the public listener serves no metrics.
    for path in ["/", "/api/v2/buildinfo", "/healthz", "/derp"] {
        let (code, _) = fetch(&format!("http://{metrics}{path}"), &[]);
        assert_eq!(code, 404, "{path} on the metrics address");
    }
    let (_, public) = fetch(&format!("{}/metrics", srv.url), &[]);
    assert!(!public.contains("tether_derp_forwarded"), "{public}");

    let alice = TETHER.first_user(&srv);
    let token = TETHER.create_workspace(&alice, "dev");
    let agent_metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let _agent = TETHER.agent_with(
        &srv.url,
        &token,
        &["--prometheus-address", &agent_metrics.to_string()],
    );
    TETHER.wait_connected(&alice, "dev", Duration::from_secs(20));

    // A wrong password and the right one, counted by result.
    let (code, _) = fetch(
        &format!("{}/api/v2/users/login", srv.url),
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"username":"alice","password":"wrong"}"#,
        ],
    );
    assert_eq!(code, 401);
    let (code, body) = fetch(
        &format!("{}/api/v2/users/login", srv.url),
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"username":"alice","password":"correct horse battery"}"#,
        ],
    );
    assert!(code == 200 || code == 201, "{code} {body}");

    let before = scrape_until(metrics, "saw the agent", |s| {
        s.value("tether_coordinator_peers", &[("role", "agent")]) == Some(1.0)
    });
    for (family, want) in [
        ("tether_coordinator_peers", "gauge"),
        ("tether_coordinator_tunnels", "gauge"),
        ("tether_derp_clients", "gauge"),
        ("tether_derp_forwarded_packets_total", "counter"),
        ("tether_derp_forwarded_bytes_total", "counter"),
        ("tether_derp_dropped_packets_total", "counter"),
        ("tether_stun_requests_total", "counter"),
        ("tether_http_requests_total", "counter"),
        ("tether_http_request_duration_seconds", "histogram"),
        ("tether_login_attempts_total", "counter"),
        ("tether_http_connections", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(kind(&before, family), want, "{family}");
    }
    assert_eq!(
        value(&before, "tether_coordinator_peers", &[("role", "client")]),
        0.0
    );
    assert_eq!(value(&before, "tether_coordinator_tunnels", &[]), 0.0);
    assert!(
        value(
            &before,
            "tether_login_attempts_total",
            &[("result", "failure")]
        ) >= 1.0
    );
    assert!(
        value(
            &before,
            "tether_login_attempts_total",
            &[("result", "success")]
        ) >= 1.0
    );
    for reason in [
        "queue_full",
        "unknown_destination",
        "destination_gone",
        "write_timeout",
    ] {
        value(
            &before,
            "tether_derp_dropped_packets_total",
            &[("reason", reason)],
        );
    }
    let agent_before = scrape(agent_metrics);
    assert_eq!(
        value(&agent_before, "tether_agent_tailnet_connected", &[]),
        1.0
    );
    assert_eq!(
        value(&agent_before, "tether_agent_ssh_connections_open", &[]),
        0.0
    );

    // A session held open: `cat` echoes a line, and ends when its stdin closes.
    let mut held = TETHER
        .command(&alice)
        .args(["ssh", "dev", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = held.stdin.take().unwrap();
    let mut stdout = BufReader::new(held.stdout.take().unwrap());
    writeln!(stdin, "hello").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");

    let during = scrape_until(metrics, "counted the client and its tunnel", |s| {
        s.value("tether_coordinator_peers", &[("role", "client")]) == Some(1.0)
            && s.value("tether_coordinator_tunnels", &[]) == Some(1.0)
    });
    assert!(value(&during, "tether_derp_clients", &[]) >= 2.0);
    let agent_during = scrape_until(agent_metrics, "counted the SSH connection", |s| {
        s.value("tether_agent_ssh_connections_open", &[]) == Some(1.0)
    });
    assert!(value(&agent_during, "tether_agent_peers", &[("path", "derp")]) >= 1.0);
    assert_eq!(
        value(&agent_during, "tether_agent_peers", &[("path", "direct")]),
        0.0
    );
    assert!(value(&agent_during, "tether_agent_ssh_sessions_open", &[]) >= 1.0);

    // A second relayed session carries the payload.
    let out = TETHER.run(
        &alice,
        &[
            "ssh",
            "dev",
            "--",
            "head",
            "-c",
            &PAYLOAD.to_string(),
            "/dev/zero",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.len(), PAYLOAD);

    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the held ssh did not end with its stdin"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let after = scrape_until(metrics, "saw the client and its tunnel go", |s| {
        s.value("tether_coordinator_peers", &[("role", "client")]) == Some(0.0)
            && s.value("tether_coordinator_tunnels", &[]) == Some(0.0)
    });
    let grew = |name: &str| value(&after, name, &[]) - value(&before, name, &[]);
    assert!(
        grew("tether_derp_forwarded_bytes_total") >= PAYLOAD as f64,
        "the relay forwarded {} bytes",
        grew("tether_derp_forwarded_bytes_total")
    );
    // At most 64 KiB of payload per WireGuard datagram: over 30 packets.
    assert!(grew("tether_derp_forwarded_packets_total") >= (PAYLOAD / 65_536) as f64);
    assert!(
        value(
            &after,
            "tether_coordinator_connections_total",
            &[("role", "client")]
        ) >= value(
            &before,
            "tether_coordinator_connections_total",
            &[("role", "client")]
        ) + 2.0
    );
    assert_eq!(
        value(&after, "tether_coordinator_peers", &[("role", "agent")]),
        1.0
    );

    // Requests by route template: the workspace's name is in no label.
    let routes: Vec<&str> = after
        .samples("tether_http_requests_total")
        .map(|s| s.labels["route"].as_str())
        .collect();
    assert!(
        routes
            .iter()
            .all(|r| r.starts_with('/') || *r == "fallback"),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r.contains('{')),
        "no templated route: {routes:?}"
    );
    assert!(
        routes.iter().all(|r| !r
            .split('/')
            .any(|seg| seg == "dev" || seg.contains("alice"))),
        "{routes:?}"
    );
    assert!(
        value(
            &after,
            "tether_http_requests_total",
            &[
                ("route", "/api/v2/users/login"),
                ("method", "POST"),
                ("code", "401")
            ]
        ) >= 1.0
    );

    let agent_after = scrape_until(agent_metrics, "saw the SSH connections end", |s| {
        s.value("tether_agent_ssh_connections_open", &[]) == Some(0.0)
    });
    let agent_grew = |labels: &[(&str, &str)]| {
        value(&agent_after, "tether_agent_tailnet_bytes_total", labels)
            - value(&agent_before, "tether_agent_tailnet_bytes_total", labels)
    };
    let derp_sent = agent_grew(&[("path", "derp"), ("direction", "sent")]);
    assert!(
        derp_sent >= PAYLOAD as f64,
        "the agent sent {derp_sent} bytes over DERP"
    );
    assert!(agent_grew(&[("path", "derp"), ("direction", "received")]) > 0.0);
    assert_eq!(
        agent_grew(&[("path", "direct"), ("direction", "sent")]),
        0.0
    );
    assert!(
        value(&agent_after, "tether_agent_ssh_connections_total", &[])
            >= value(&agent_before, "tether_agent_ssh_connections_total", &[]) + 2.0
    );
    assert!(value(&agent_after, "tether_agent_ssh_sessions_total", &[]) >= 2.0);
    scrape_until(agent_metrics, "saw the peer go", |s| {
        s.sum("tether_agent_peers", &[]) == 0.0
    });
}

#[test]
fn metrics_are_off_unless_asked_for_and_a_taken_port_is_named() {
    let srv = TETHER.server_process(&[]);
    assert_eq!(srv.ready.prometheus_address, None);
    assert!(
        !srv.banner().iter().any(|l| l.contains("metrics")),
        "{:?}",
        srv.banner()
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = TETHER.run(
        &srv.config_dir("x"),
        &[
            "agent",
            "--url",
            &srv.url,
            "--token",
            "t",
            "--prometheus-address",
            &addr,
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("already in use (--prometheus-address {addr})")),
        "{}",
        out.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = TETHER.command(&dir.path().join("cfg"));
    cmd.args([
        "server",
        "--http-address",
        "127.0.0.1:0",
        "--stun-address",
        "disable",
        "--data-dir",
    ])
    .arg(dir.path().join("data"))
    .args(["--prometheus-address", &addr]);
    let out = tether_testing::run_with_input(cmd, b"", Duration::from_secs(30));
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("--prometheus-address"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("TETHER_PROMETHEUS_ADDRESS"),
        "{}",
        out.stderr
    );
}
