//! `tether server` stopped by `SIGTERM` (as `systemctl stop`, `docker stop` and
//! Kubernetes do): its WebSockets (a client's coordinator socket, a web terminal, DERP
//! over WebSocket) get a close frame 1001 with a reason instead of a dead TCP
//! connection, a request under way is still answered, no new connection gets in, and
//! the process exits 0 within its grace period.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether_testing::{CoordConn, ServerProcess, Tether, session_token, welcome};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// The server's own bound (`tether_server::server::SHUTDOWN_GRACE`) plus slack for a
/// loaded machine: the process must be gone by then.
const EXIT_LIMIT: Duration = Duration::from_secs(5 + 5);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn websocket(url: &str, headers: &[(&str, &str)]) -> Ws {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("WebSocket connect timed out")
    .expect("WebSocket refused");
    ws
}

/// Reads until a close frame (20 s cap): its code and reason; the output bytes seen
/// before it go to `out`.
async fn close_frame(ws: &mut Ws, out: &mut Vec<u8>) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close frame within 20 s"),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (u16::from(f.code), f.reason.to_string());
            }
            Ok(Some(Ok(Message::Binary(b)))) => out.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

/// Reads terminal output until it holds `needle` (30 s cap).
async fn wait_for(ws: &mut Ws, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(needle) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => out.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!("no {needle:?} in the terminal: {other:?}"),
        }
    }
}

fn agent_id(cfg: &std::path::Path) -> Uuid {
    let out = TETHER.run(cfg, &["list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    list[0]["agent_id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_close_frames_answers_requests_under_way_and_exits_0() {
    let mut srv: ServerProcess = TETHER.server_process(&[]);
    let addr: SocketAddr = srv.url.trim_start_matches("http://").parse().unwrap();
    let ws_base = srv.url.replace("http://", "ws://");
    let cfg = TETHER.first_user(&srv);
    let token = session_token(&cfg);
    let agent_token = TETHER.create_workspace(&cfg, "dev");
    let _agent = TETHER.agent(&srv.url, &agent_token);
    TETHER.wait_connected(&cfg, "dev", Duration::from_secs(20));
    let agent = agent_id(&cfg);

    // A raw coordinator client, a web terminal with a shell in it, and a DERP WebSocket.
    let mut coord = CoordConn::client(&srv.url, &token).await.unwrap();
    welcome(&mut coord).await;
    let mut pty = websocket(
        &format!(
            "{ws_base}/api/v2/workspaceagents/{agent}/pty?reconnect={}&width=80&height=24",
            Uuid::new_v4()
        ),
        &[("Tether-Session-Token", &token)],
    )
    .await;
    pty.send(Message::Binary(
        br#"{"data":"echo up-$((6*7))\r"}"#.to_vec().into(),
    ))
    .await
    .unwrap();
    wait_for(&mut pty, "up-42").await;
    let mut derp = websocket(
        &format!("{ws_base}/derp"),
        &[("Sec-WebSocket-Protocol", "derp")],
    )
    .await;
    // The relay speaks first (its key): the socket is served.
    let first = tokio::time::timeout(Duration::from_secs(10), derp.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(Ok(Message::Binary(_)))), "{first:?}");

    // A request under way: its head and half its body are in when the signal comes.
    let body = br#"{"username":"alice","password":"not her password"}"#;
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        slow,
        "POST /api/v2/users/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    slow.write_all(&body[..10]).unwrap();
    // Let the server read the head before it is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    srv.signal("TERM");

    // The request under way is still answered (a wrong password: 401), then closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow.write_all(&body[10..]).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // Every WebSocket gets 1001 with a reason.
    let (code, reason) = coord
        .close_frame(Duration::from_secs(20))
        .await
        .expect("the coordinator socket ended without a close frame");
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    let (code, reason) = close_frame(&mut pty, &mut Vec::new()).await;
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    let (code, reason) = close_frame(&mut derp, &mut Vec::new()).await;
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));

    // No new connection gets in; the process exits 0 within its grace period.
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "the listener still accepts after SIGTERM"
    );
    let status = tokio::task::spawn_blocking(move || srv.wait_exit(EXIT_LIMIT))
        .await
        .unwrap();
    let status = status.unwrap_or_else(|| panic!("still running {EXIT_LIMIT:?} after SIGTERM"));
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < EXIT_LIMIT,
        "{:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn sigint_shuts_down_the_same_way() {
    let mut srv: ServerProcess = TETHER.server_process(&[]);
    let cfg = TETHER.first_user(&srv);
    let mut coord = CoordConn::client(&srv.url, &session_token(&cfg))
        .await
        .unwrap();
    welcome(&mut coord).await;
    srv.signal("INT");
    let (code, reason) = coord
        .close_frame(Duration::from_secs(20))
        .await
        .expect("the coordinator socket ended without a close frame");
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    let status = tokio::task::spawn_blocking(move || srv.wait_exit(EXIT_LIMIT))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("still running {EXIT_LIMIT:?} after SIGINT"));
    assert!(status.success(), "exit status {status}");
}
