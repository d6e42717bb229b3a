//! The agent's HTTP API over loopback TCP: listening ports against a real listener,
//! netcheck from a stand-in source, and the error answers.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tether_agent::HttpApi;
use tether_agent::http_api::listening_ports::{IGNORED_PORTS, MIN_PORT};
use tether_agent::http_api::{Netcheck, NetcheckError, ReportFuture};
use tether_tailnet::netcheck::Report;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BOUND: Duration = Duration::from_secs(20);

/// A netcheck source that counts its reports; `fail` makes every one fail.
struct Fake {
    calls: Arc<AtomicUsize>,
    fail: bool,
}

impl Netcheck for Fake {
    fn report(&self) -> ReportFuture<'_> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(NetcheckError::Closed);
            }
            Ok(Report {
                udp: true,
                ipv4: true,
                preferred_derp: Some(999),
                global_v4: Some("198.51.100.7:41641".parse().unwrap()),
                ..Report::default()
            })
        })
    }
}

/// Serve `api` on a loopback port; every connection gets its own task.
async fn start(api: HttpApi) -> SocketAddr {
    tether_testing::init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let api = api.clone();
            tokio::spawn(async move { api.serve(stream).await });
        }
    });
    addr
}

/// One request on a new connection: status code, headers, body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(BOUND, s.read_to_end(&mut all))
        .await
        .expect("no answer")
        .unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(all[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, all[split + 4..].to_vec())
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

fn api() -> (HttpApi, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let api = HttpApi::new(Fake {
        calls: Arc::clone(&calls),
        fail: false,
    });
    (api, calls)
}

#[tokio::test]
async fn listening_ports_lists_a_real_listener_with_its_process_name() {
    let (api, _) = api();
    let addr = start(api).await;
    let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mine.local_addr().unwrap().port();
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();

    let (status, head, body) = request(addr, "GET", "/api/v0/listening-ports").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let v = json(&body);
    let ports = v["ports"].as_array().unwrap();
    let entry = ports
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("port {port} not in {v}"));
    assert_eq!(entry["network"], "tcp");
    assert_eq!(entry["process_name"], comm.trim_end());
    // The API's own listener is ours too.
    assert!(ports.iter().any(|p| p["port"] == addr.port()));
    let numbers: Vec<u64> = ports.iter().map(|p| p["port"].as_u64().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "not sorted or repeated: {numbers:?}"
    );
    for n in &numbers {
        let n = u16::try_from(*n).unwrap();
        assert!(n >= MIN_PORT && !IGNORED_PORTS.contains(&n), "{n} listed");
    }

    // Closed, it is gone.
    drop(mine);
    let (_, _, body) = request(addr, "GET", "/api/v0/listening-ports").await;
    let v = json(&body);
    assert!(
        !v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == port),
        "{v}"
    );
}

#[tokio::test]
async fn an_ipv6_listener_on_the_same_port_is_listed_once() {
    let (api, _) = api();
    let addr = start(api).await;
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = v4.local_addr().unwrap().port();
    // IPv6 may be off on a host: then there is nothing to deduplicate.
    let v6 = std::net::TcpListener::bind(("::1", port));
    let (_, _, body) = request(addr, "GET", "/api/v0/listening-ports").await;
    let v = json(&body);
    let n = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["port"] == port)
        .count();
    assert_eq!(n, 1, "v6 bound: {}; {v}", v6.is_ok());
}

#[tokio::test]
async fn netcheck_reports_and_reuses_the_report() {
    let (api, calls) = api();
    let addr = start(api).await;
    let (status, _, body) = request(addr, "GET", "/api/v0/netcheck").await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["UDP"], true);
    assert_eq!(v["PreferredDERP"], 999);
    assert_eq!(v["GlobalV4"], "198.51.100.7:41641");
    let (_, _, again) = request(addr, "GET", "/api/v0/netcheck").await;
    assert_eq!(again, body);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second answer was not reused"
    );
}

#[tokio::test]
async fn netcheck_failure_is_a_json_503() {
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = start(HttpApi::new(Fake {
        calls: Arc::clone(&calls),
        fail: true,
    }))
    .await;
    let (status, _, body) = request(addr, "GET", "/api/v0/netcheck").await;
    assert_eq!(status, 503);
    assert_eq!(
        json(&body)["message"],
        "the agent's tailnet connection is closed"
    );
    // A failure is not cached.
    request(addr, "GET", "/api/v0/netcheck").await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let (api, _) = api();
    let addr = start(api).await;
    for path in [
        "/",
        "/api/v0/nope",
        "/api/v0/listening-ports/x",
        "/api/v2/netcheck",
    ] {
        let (status, _, body) = request(addr, "GET", path).await;
        assert_eq!(status, 404, "{path}");
        assert!(json(&body)["message"].is_string(), "{path}");
    }
    let (status, head, body) = request(addr, "POST", "/api/v0/listening-ports").await;
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    assert!(json(&body)["message"].is_string());
}

#[tokio::test]
async fn garbage_ends_the_connection() {
    let (api, _) = api();
    let addr = start(api).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x01\x02 not http\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(BOUND, s.read_to_end(&mut all))
        .await
        .expect("garbage kept the connection open")
        .unwrap();
    // hyper answers 400 (or just closes); either way the connection ends.
    assert!(
        all.is_empty() || all.starts_with(b"HTTP/1.1 400"),
        "{all:?}"
    );
}
