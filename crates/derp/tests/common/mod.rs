//! Shared helpers: a real HTTP server on 127.0.0.1 (hyper-util auto builder with
//! upgrades, as `tether server` runs it) and small client utilities.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tether_derp::client::{Client, ClientConfig, ClientReceiver, Received};
use tether_derp::server::{AllowAll, Server};
use tether_key::{NodePrivate, NodePublic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running HTTP server; dropping it stops accepting and closes every connection.
pub struct TestServer {
    pub addr: SocketAddr,
    pub derp: Arc<Server>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
        self.derp.disconnect_all();
    }
}

impl TestServer {
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/derp", self.addr)).expect("url")
    }
}

pub async fn serve_router(listener: TcpListener, app: Router, derp: Arc<Server>) -> TestServer {
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(app.clone());
            conns.spawn(async move {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    TestServer { addr, derp, task }
}

pub async fn start_with(derp: Arc<Server>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = tether_derp::http::router(derp.clone());
    serve_router(listener, app, derp).await
}

pub async fn start() -> TestServer {
    start_with(Server::new(NodePrivate::generate(), Arc::new(AllowAll))).await
}

pub async fn connect(srv: &TestServer, key: &NodePrivate, ws: bool) -> Client {
    let mut cfg = ClientConfig::new(srv.url(), key.clone());
    cfg.force_websocket = ws;
    tokio::time::timeout(WAIT, Client::connect(&cfg))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Waits for the next packet (skipping other events), bounded.
pub async fn next_packet(rx: &mut ClientReceiver) -> (NodePublic, bytes::Bytes) {
    loop {
        match tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("recv in time")
            .expect("recv")
        {
            Received::Packet { src, data } => return (src, data),
            other => tracing_skip(&other),
        }
    }
}

fn tracing_skip(_r: &Received) {}

/// Raw TCP: sends the DERP upgrade request and reads the response head byte by byte,
/// so nothing after it is consumed. Returns the stream and the status line.
pub async fn raw_upgrade(addr: SocketAddr, request_line: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.expect("tcp");
    let req = format!(
        "{request_line}\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let head = read_head(&mut s).await;
    let status = head.lines().next().unwrap_or_default().to_string();
    (s, status)
}

pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .expect("head in time")
            .expect("read");
        assert_eq!(n, 1, "connection closed during HTTP response head");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}
