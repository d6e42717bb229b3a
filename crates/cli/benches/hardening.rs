//! Probes of the denial-of-service findings of issue 18 against a real server on
//! loopback, as figures: the server's RSS under a login flood and a real login's latency
//! meanwhile; how long slowloris and idle sockets stay open; whether `/healthz` answers
//! while 1,100 idle sockets exceed a 1,024 descriptor limit; RSS while 30 WebSockets each
//! send one 60 MiB fragmented message; admins created by 8 simultaneous first-user
//! requests. Run with `cargo bench -p tether-cli --bench hardening`; `TETHER_BIN=<path>`
//! probes another build of `tether` (an older one, for before and after).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tether_testing::attacker::*;

/// A flood stops early once the server's RSS passes this, to spare the machine.
const RSS_SAFETY: u64 = 6 << 30;

struct Server {
    child: Child,
    url: String,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn bin() -> String {
    std::env::var("TETHER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tether").to_string())
}

/// Starts `tether server` on free loopback ports, run through `wrapper` if given.
fn start(wrapper: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    let mut child = cmd
        .args([
            "server",
            "--http-address",
            "127.0.0.1:0",
            "--stun-address",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("TETHER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.strip_prefix("tether server listening on http://") {
            break format!("http://{}", rest.trim());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let addr = url.trim_start_matches("http://").parse().unwrap();
    Server {
        child,
        url,
        addr,
        _dir: dir,
    }
}

fn client_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.header("Tether-Session-Token", t);
    }
    match req.send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

/// 32 posters for 10 s, each from its own address; `spray` makes each attempt name a new
/// account (which neither rate limit catches), otherwise all attack `alice`.
async fn login_flood(spray: bool) {
    let srv = start(&[]);
    let http = reqwest::Client::new();
    let (_, first) = post(
        &http,
        format!("{}/api/v2/users/first", srv.url),
        None,
        serde_json::json!({"username": "alice", "email": "a@example.com", "password": "alice password"}),
    )
    .await;
    let token = first["session_token"].as_str().unwrap().to_string();
    post(
        &http,
        format!("{}/api/v2/users", srv.url),
        Some(&token),
        serde_json::json!({"username": "bob", "email": "b@example.com", "password": "bob password"}),
    )
    .await;
    let idle = rss(srv.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let http = client_from(Ipv4Addr::new(127, 0, 1, 10 + i));
        let (url, stop, statuses) = (srv.url.clone(), stop.clone(), statuses.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let user = if spray {
                    format!("nobody-{i}-{n}")
                } else {
                    "alice".into()
                };
                let (status, _) = post(
                    &http,
                    format!("{url}/api/v2/users/login"),
                    None,
                    serde_json::json!({"username": user, "password": "wrong password"}),
                )
                .await;
                let slot = match status {
                    401 => 0,
                    429 => 1,
                    503 => 2,
                    _ => 3,
                };
                statuses[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    let mut peak = 0;
    let mut logins = Vec::new();
    let bob = client_from(Ipv4Addr::new(127, 0, 0, 2));
    while start.elapsed() < Duration::from_secs(10) {
        peak = peak.max(rss(srv.pid()));
        if peak > RSS_SAFETY {
            println!("  (stopped early: RSS passed {})", mib(RSS_SAFETY));
            break;
        }
        let t = Instant::now();
        let (status, _) = post(
            &bob,
            format!("{}/api/v2/users/login", srv.url),
            None,
            serde_json::json!({"username": "bob", "password": "bob password"}),
        )
        .await;
        logins.push((t.elapsed(), status));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    peak = peak.max(rss(srv.pid()));
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = rss(srv.pid());
    let mut times: Vec<Duration> = logins.iter().map(|(d, _)| *d).collect();
    times.sort();
    let ok = logins.iter().filter(|(_, s)| *s == 200).count();
    let s: Vec<u64> = statuses.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!(
        "  RSS idle {}, peak {}, 12 s after {}; attempts: {} refused (401), {} limited (429), {} busy (503), {} other",
        mib(idle),
        mib(peak),
        mib(after),
        s[0],
        s[1],
        s[2],
        s[3]
    );
    println!(
        "  bob's real login meanwhile: {ok}/{} succeeded, median {:?}, max {:?}",
        logins.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// 20 slowloris sockets and 20 idle ones: how long each stays open (60 s at most).
fn slow_sockets() {
    let srv = start(&[]);
    let mut threads = Vec::new();
    for i in 0..40 {
        let addr = srv.addr;
        threads.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let trickle: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            time_until_closed(&mut s, (i < 20).then_some(trickle), Duration::from_secs(60))
        }));
    }
    let times: Vec<Option<Duration>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (what, t) in [("slowloris", &times[..20]), ("idle", &times[20..])] {
        let open = t.iter().filter(|t| t.is_none()).count();
        let closed: Vec<Duration> = t.iter().flatten().copied().collect();
        let max = closed.iter().max();
        println!(
            "  {what}: {} of 20 closed (latest after {max:?}), {open} still open after 60 s",
            closed.len()
        );
    }
}

/// Under a 1,024 descriptor limit, 1,100 idle sockets, then `/healthz`.
fn fd_limit() {
    let _ = rlimit::increase_nofile_limit(4096);
    let srv = start(&["prlimit", "--nofile=1024:1024", "--"]);
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match TcpStream::connect_timeout(&srv.addr, Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(e) => {
                println!("  connect {} failed: {e}", idle.len());
                break;
            }
        }
    }
    let t = Instant::now();
    let r = get(srv.addr, "/healthz");
    println!(
        "  {} idle sockets; /healthz: {r:?} after {:?}",
        idle.len(),
        t.elapsed()
    );
    let r = get(srv.addr, "/derp/probe").map(|(s, _)| s);
    println!("  /derp/probe: {r:?}");
}

/// 30 DERP WebSockets, each sending one 60 MiB fragmented message.
fn websocket_fragments() {
    let srv = start(&[]);
    let before = rss(srv.pid());
    let pid = srv.pid();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let threads: Vec<_> = (0..30)
        .map(|_| {
            let addr = srv.addr;
            std::thread::spawn(move || {
                let mut s = ws_handshake(addr, "/derp", "Sec-WebSocket-Protocol: derp\r\n");
                let sent = send_fragmented(&mut s, 2, 60 << 20);
                (sent, s)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = rss(pid);
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap().max(held);
    let closed_early = results.iter().filter(|(s, _)| s.is_some()).count();
    println!(
        "  RSS before {}, peak {}, with the 30 sockets still open {}; {closed_early} of 30 closed before the whole message was taken",
        mib(before),
        mib(peak),
        mib(held)
    );
}

/// 8 simultaneous `POST /api/v2/users/first`: how many admins.
async fn first_user_race() {
    let srv = start(&[]);
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (url, barrier) = (srv.url.clone(), barrier.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                barrier.wait().await;
                post(
                    &http,
                    format!("{url}/api/v2/users/first"),
                    None,
                    serde_json::json!({"username": format!("admin{i}"), "email": format!("admin{i}@example.com"), "password": "first password"}),
                )
                .await
                .0
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap() == 201);
    }
    println!("  admins created: {created} of 8 attempts");
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("binary: {}", bin());
    println!("login flood, 32 posters on one account from 32 addresses, 10 s:");
    rt.block_on(login_flood(false));
    println!("login flood, 32 posters naming a new account each time from 32 addresses, 10 s:");
    rt.block_on(login_flood(true));
    println!("slow sockets:");
    slow_sockets();
    println!("descriptor limit 1024:");
    fd_limit();
    println!("DERP WebSocket, 30 x 60 MiB fragmented messages:");
    websocket_fragments();
    println!("first-user race:");
    rt.block_on(first_user_race());
}
