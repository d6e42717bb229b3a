//! The real server under the attacks of issue 18 that need no login: a login flood,
//! slow and idle sockets, running out of file descriptors, oversize WebSocket messages,
//! the first-user race; plus secrets at rest and the error shape of a bad path.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tether_testing::attacker::*;
use tether_testing::{CoordConn, ServerProcess, Tether, session_token, welcome};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

fn addr_of(srv: &ServerProcess) -> SocketAddr {
    srv.url.trim_start_matches("http://").parse().unwrap()
}

/// An HTTP client whose connections come from `source` (any 127/8 address works on lo).
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn login(
    http: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
) -> (u16, Option<u64>, serde_json::Value) {
    let r = http
        .post(format!("{url}/api/v2/users/login"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = r.json().await.unwrap_or_default();
    (status, retry_after, body)
}

async fn create_user(url: &str, admin_token: &str, name: &str, password: &str) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v2/users"))
        .header("Tether-Session-Token", admin_token)
        .json(&serde_json::json!({
            "username": name, "email": format!("{name}@example.com"), "password": password,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_flood_is_limited_per_account_and_memory_stays_bounded() {
    let srv = TETHER.server_process(&[]);
    let cfg = TETHER.first_user(&srv);
    create_user(&srv.url, &session_token(&cfg), "bob", "bob's password").await;

    // 32 attackers, each from its own address, so only the per-account limit can stop them.
    let stop = Arc::new(AtomicBool::new(false));
    let limited = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for i in 0..32u8 {
        let http = client_from(Ipv4Addr::new(127, 0, 1, 10 + i));
        let (url, stop, limited, refused) = (
            srv.url.clone(),
            stop.clone(),
            limited.clone(),
            refused.clone(),
        );
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match login(&http, &url, "alice", "wrong password").await {
                    (429, Some(secs), body) => {
                        assert!(secs >= 1, "Retry-After {secs}");
                        assert!(body["message"].is_string(), "{body}");
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                    (429, None, _) => panic!("429 without Retry-After"),
                    (401, _, _) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    (status, _, body) => panic!("login answered {status}: {body}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let pid = srv.pid();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    // Another account logs in meanwhile, from another address.
    let start = Instant::now();
    let (status, _, body) = login(
        &client_from(Ipv4Addr::LOCALHOST),
        &srv.url,
        "bob",
        "bob's password",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eprintln!("bob logged in during the flood in {:?}", start.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.await.unwrap();
    }
    let peak = sampler.await.unwrap();
    let (limited, refused) = (
        limited.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {refused} refused, {limited} rate-limited, peak RSS {} MiB",
        peak >> 20
    );
    assert!(
        limited > 0,
        "no attempt was rate-limited ({refused} refused)"
    );
    // The server hashes on one thread per core, 19 MiB each, beside its own ~40 MiB.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let bound = (128 + 24 * cores) << 20;
    assert!(
        peak < bound,
        "peak RSS {} MiB, bound {} MiB",
        peak >> 20,
        bound >> 20
    );
}

#[tokio::test]
async fn password_spraying_from_one_address_is_limited_per_source() {
    let srv = TETHER.server_process(&[]);
    let cfg = TETHER.first_user(&srv);
    create_user(&srv.url, &session_token(&cfg), "bob", "bob's password").await;

    let sprayer = client_from(Ipv4Addr::new(127, 0, 2, 2));
    let mut first_429 = None;
    for i in 0..200 {
        let (status, retry_after, body) =
            login(&sprayer, &srv.url, &format!("nobody{i}"), "password1").await;
        match status {
            401 => continue,
            429 => {
                assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
                assert!(body["message"].is_string(), "{body}");
                first_429 = Some(i);
                break;
            }
            _ => panic!("login answered {status}: {body}"),
        }
    }
    let first_429 = first_429.expect("200 wrong logins from one address were never limited");
    eprintln!("the source was limited after {first_429} attempts");
    // The limited source cannot log in even with the right password...
    let (status, _, _) = login(&sprayer, &srv.url, "bob", "bob's password").await;
    assert_eq!(status, 429);
    // ...while another source can.
    let other = client_from(Ipv4Addr::new(127, 0, 2, 3));
    let (status, _, body) = login(&other, &srv.url, "bob", "bob's password").await;
    assert_eq!(status, 200, "{body}");
}

/// The header-read and idle timeouts are 10 s; 15 s leaves room for a loaded machine.
const CLOSE_BOUND: Duration = Duration::from_secs(15);

#[test]
fn a_slowloris_socket_is_closed() {
    let srv = TETHER.server_process(&[]);
    let mut s = TcpStream::connect(addr_of(&srv)).unwrap();
    let took = time_until_closed(
        &mut s,
        Some(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        CLOSE_BOUND,
    );
    eprintln!("slowloris socket closed after {took:?}");
    assert!(
        took.is_some(),
        "a socket sending a header byte a second was still open after {CLOSE_BOUND:?}"
    );
}

#[test]
fn an_idle_socket_is_closed() {
    let srv = TETHER.server_process(&[]);
    let mut s = TcpStream::connect(addr_of(&srv)).unwrap();
    let took = time_until_closed(&mut s, None, CLOSE_BOUND);
    eprintln!("idle socket closed after {took:?}");
    assert!(
        took.is_some(),
        "a socket that sent nothing was still open after {CLOSE_BOUND:?}"
    );
}

#[tokio::test]
async fn healthz_coordinator_and_derp_answer_while_1100_idle_sockets_exceed_the_fd_limit() {
    // This test holds over 1,100 descriptors itself.
    rlimit::increase_nofile_limit(4096).unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:1024", "--"]).arg(TETHER.bin());
    let srv = ServerProcess::spawn(tempfile::tempdir().unwrap(), cmd, &[]);
    let cfg = TETHER.first_user(&srv);
    let token = session_token(&cfg);
    let addr = addr_of(&srv);

    let mut idle = Vec::new();
    for _ in 0..1100 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {} failed: {e}", idle.len()),
        }
    }
    let (status, body) = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .unwrap()
        .expect("/healthz did not answer");
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, _) = tokio::task::spawn_blocking(move || get(addr, "/derp/probe"))
        .await
        .unwrap()
        .expect("/derp/probe did not answer");
    assert_eq!(status, 200);
    let mut c = CoordConn::client(&srv.url, &token)
        .await
        .expect("coordinator refused");
    welcome(&mut c).await;
    drop(idle);
}

/// More than any buffer between us and the server can hold, so a socket the server
/// gave up on cannot take it all.
const OVERSIZE: usize = 24 << 20;

#[test]
fn an_oversize_fragmented_derp_websocket_message_closes_that_socket_only() {
    let srv = TETHER.server_process(&[]);
    let addr = addr_of(&srv);
    let proto = "Sec-WebSocket-Protocol: derp\r\n";
    let mut bystander = ws_handshake(addr, "/derp", proto);
    let mut attacker = ws_handshake(addr, "/derp", proto);
    let sent = send_fragmented(&mut attacker, 2, OVERSIZE);
    eprintln!("closed after {sent:?} bytes");
    assert!(
        sent.is_some(),
        "a {OVERSIZE}-byte fragmented DERP message was taken whole"
    );

    // The other socket is still served: it answers a ping with a pong.
    bystander.write_all(&ws_frame(true, 9, 0)).unwrap();
    assert!(
        ws_wait_for(&mut bystander, 0xa),
        "the bystander got no pong"
    );
}

#[tokio::test]
async fn an_oversize_coordination_message_closes_the_socket() {
    let srv = TETHER.server_process(&[]);
    let cfg = TETHER.first_user(&srv);
    let token = session_token(&cfg);
    let addr = addr_of(&srv);
    let header = format!("Tether-Session-Token: {token}\r\n");
    let sent = tokio::task::spawn_blocking(move || {
        let mut s = ws_handshake(addr, "/api/v2/tailnet/coordinate?version=1.0", &header);
        send_fragmented(&mut s, 1, OVERSIZE)
    })
    .await
    .unwrap();
    eprintln!("closed after {sent:?} bytes");
    assert!(
        sent.is_some(),
        "a {OVERSIZE}-byte coordination message was taken whole"
    );
}

#[test]
fn simultaneous_first_users_create_exactly_one_admin() {
    let srv = TETHER.server_process(&[]);
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (url, barrier) = (srv.url.clone(), barrier.clone());
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                let http = reqwest::Client::new();
                let req = http
                    .post(format!("{url}/api/v2/users/first"))
                    .json(&serde_json::json!({
                        "username": format!("admin{i}"),
                        "email": format!("admin{i}@example.com"),
                        "password": "first user password",
                    }));
                barrier.wait();
                handle.block_on(async move {
                    let r = req.send().await.unwrap();
                    let status = r.status().as_u16();
                    (
                        status,
                        r.json::<serde_json::Value>().await.unwrap_or_default(),
                    )
                })
            })
        })
        .collect();
    let results: Vec<(u16, serde_json::Value)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("already exists"),
            "{body}"
        );
    }
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn a_fresh_data_dir_is_private() {
    let srv = TETHER.server_process(&[]);
    let _ = TETHER.first_user(&srv);
    let data = srv.dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "data dir");
    for f in ["tether.db", "tether.db-wal", "tether.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

#[cfg(unix)]
#[test]
fn an_existing_data_dir_is_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join("tether.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let srv = ServerProcess::spawn(dir, Command::new(TETHER.bin()), &[]);
    assert_eq!(mode(&data), 0o700, "data dir");
    for f in ["tether.db", "tether.db-wal", "tether.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    drop(srv);
}

#[tokio::test]
async fn an_invalid_utf8_path_segment_gets_the_json_error_shape() {
    let srv = TETHER.server_process(&[]);
    let cfg = TETHER.first_user(&srv);
    let token = session_token(&cfg);
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = reqwest::Client::new()
            .request(
                method.clone(),
                format!("{}/api/v2/workspaces/%FF%FE", srv.url),
            )
            .header("Tether-Session-Token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{method}");
        let body: serde_json::Value = r.json().await.expect("a JSON body");
        assert!(body["message"].is_string(), "{body}");
    }
}
