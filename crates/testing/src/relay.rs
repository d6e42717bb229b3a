//! A DERP relay on its own (no coordinator, no store) on `127.0.0.1`, served by the
//! server's own HTTP accept loop, and the client-side steps the relay tests repeat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tether_derp::client::{Client, ClientConfig, ClientReceiver, Received};
use tether_derp::server::{AllowAll, Server};
use tether_key::{NodePrivate, NodePublic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any single wait in the relay tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running relay; dropping it stops accepting and closes every connection.
pub struct Relay {
    /// The bound HTTP address.
    pub addr: SocketAddr,
    /// The relay itself.
    pub derp: Arc<Server>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Aborting the accept loop closes its HTTP connections; upgraded DERP
        // connections belong to the relay.
        self.task.abort();
        self.derp.disconnect_all();
    }
}

impl Relay {
    /// The relay's `/derp` URL.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/derp", self.addr)).unwrap()
    }
}

/// Serves `app` (which should route to `derp`) on `listener`, as `tether server` does.
pub async fn serve_router(listener: TcpListener, app: Router, derp: Arc<Server>) -> Relay {
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(tether_server::listen::serve(
        listener,
        app,
        None,
        tether_server::listen::conn_table(),
        // Never stopped: the relay ends when its task is aborted.
        tether_server::listen::stop_signal().1,
    ));
    Relay { addr, derp, task }
}

/// Serves `derp`'s HTTP routes on a free loopback port.
pub async fn start_with(derp: Arc<Server>) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = tether_derp::http::router(derp.clone());
    serve_router(listener, app, derp).await
}

/// A relay with a fresh key that admits everyone.
pub async fn start() -> Relay {
    start_with(Server::new(NodePrivate::generate(), Arc::new(AllowAll))).await
}

/// A client of `relay` holding `key`, over WebSocket when `ws`.
pub async fn connect(relay: &Relay, key: &NodePrivate, ws: bool) -> Client {
    let mut cfg = ClientConfig::new(relay.url(), key.clone());
    cfg.force_websocket = ws;
    tokio::time::timeout(WAIT, Client::connect(&cfg))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Waits for the next packet (skipping other events), bounded.
pub async fn next_packet(rx: &mut ClientReceiver) -> (NodePublic, bytes::Bytes) {
    loop {
        let received = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("recv in time")
            .expect("recv");
        if let Received::Packet { src, data } = received {
            return (src, data);
        }
    }
}

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

/// Reads an HTTP response head (up to the blank line), byte by byte, bounded.
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
