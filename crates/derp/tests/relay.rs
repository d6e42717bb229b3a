//! End-to-end relay tests against a real HTTP server on 127.0.0.1:0.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tether_derp::client::{
    Client, ClientConfig, ClientError, ClientReceiver, ClientSender, Event, Received,
    ReconnectingClient, Transport,
};
use tether_derp::frame::{self, ClientInfo, DISCO_MAGIC, Frame, FrameDecoder, PeerGoneReason};
use tether_derp::server::{AllowAll, Server, ServerConfig};
use tether_key::{NodePrivate, NodePublic};
use tether_testing::relay::{
    Relay, WAIT, connect, next_packet, raw_upgrade, read_head, serve_router, start, start_with,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

fn payload(seq: u32) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.resize(4 + (seq as usize * 7) % 1400, seq as u8);
    p
}

/// A sends `n` numbered packets to B with a 16-packet window (B acks every 8), so the
/// relay's 32-packet queue never has to drop; B checks order, length and content.
async fn exchange(
    a: (ClientSender, ClientReceiver, NodePublic),
    b: (ClientSender, ClientReceiver, NodePublic),
    n: u32,
) -> (
    (ClientSender, ClientReceiver),
    (ClientSender, ClientReceiver),
) {
    let (a_tx, mut a_rx, a_pub) = a;
    let (b_tx, mut b_rx, b_pub) = b;
    let receiver = tokio::spawn(async move {
        let mut expected = 0u32;
        while expected < n {
            let (src, data) = next_packet(&mut b_rx).await;
            assert_eq!(src, a_pub);
            assert_eq!(
                data.as_ref(),
                payload(expected).as_slice(),
                "packet {expected} intact and in order"
            );
            expected += 1;
            if expected.is_multiple_of(8) || expected == n {
                b_tx.send(a_pub, &expected.to_be_bytes())
                    .await
                    .expect("ack");
            }
        }
        (b_tx, b_rx)
    });
    let mut acked = 0u32;
    for seq in 0..n {
        while seq - acked >= 16 {
            let (src, d) = next_packet(&mut a_rx).await;
            assert_eq!(src, b_pub);
            acked = u32::from_be_bytes(d[..4].try_into().expect("ack len"));
        }
        a_tx.send(b_pub, &payload(seq)).await.expect("send");
    }
    while acked < n {
        let (_, d) = next_packet(&mut a_rx).await;
        acked = u32::from_be_bytes(d[..4].try_into().expect("ack len"));
    }
    let b = timeout(WAIT, receiver)
        .await
        .expect("receiver in time")
        .expect("receiver ok");
    ((a_tx, a_rx), b)
}

type Half = (ClientSender, ClientReceiver, NodePublic);

/// Two clients; `ws` forces WebSocket, and `want` is the transport they must end up on.
async fn pair_via(srv: &Relay, ws: bool, want: Transport) -> (Half, Half) {
    let (ka, kb) = (NodePrivate::generate(), NodePrivate::generate());
    let a = connect(srv, &ka, ws).await;
    let b = connect(srv, &kb, ws).await;
    assert_eq!(a.transport(), want);
    assert_eq!(b.transport(), want);
    assert_eq!(a.server_key(), srv.derp.public_key());
    let (at, ar) = a.split();
    let (bt, br) = b.split();
    ((at, ar, ka.public()), (bt, br, kb.public()))
}

async fn pair(srv: &Relay, ws: bool) -> (Half, Half) {
    pair_via(
        srv,
        ws,
        if ws {
            Transport::WebSocket
        } else {
            Transport::Upgrade
        },
    )
    .await
}

#[tokio::test]
async fn plain_upgrade_relays_10k_packets_without_loss() {
    let srv = start().await;
    let (a, b) = pair(&srv, false).await;
    timeout(Duration::from_secs(120), exchange(a, b, 10_000))
        .await
        .expect("exchange in time");
    let st = srv.derp.stats();
    assert_eq!(st.clients, 2);
    assert_eq!(st.packets_dropped, 0);
    assert!(st.packets_forwarded >= 10_000 + 1250, "{st:?}");
}

#[tokio::test]
async fn websocket_relays_10k_packets_without_loss() {
    let srv = start().await;
    let (a, b) = pair(&srv, true).await;
    timeout(Duration::from_secs(120), exchange(a, b, 10_000))
        .await
        .expect("exchange in time");
    assert_eq!(srv.derp.stats().packets_dropped, 0);
}

#[tokio::test]
async fn admission_refuses_unknown_key() {
    let allowed = NodePrivate::generate();
    let allowed_pub = allowed.public();
    let derp = Server::new(
        NodePrivate::generate(),
        Arc::new(move |k: &NodePublic| *k == allowed_pub),
    );
    let srv = start_with(derp).await;
    let stranger = NodePrivate::generate();
    let cfg = ClientConfig::new(srv.url(), stranger);
    let err = timeout(WAIT, Client::connect(&cfg))
        .await
        .expect("in time")
        .expect_err("must be refused");
    assert!(
        matches!(err, ClientError::Closed | ClientError::Io(_)),
        "{err}"
    );
    assert_eq!(srv.derp.stats().refused_by_admission, 1);
    assert_eq!(srv.derp.stats().clients, 0);
    let ok = connect(&srv, &allowed, false).await;
    assert_eq!(ok.server_key(), srv.derp.public_key());
    assert_eq!(srv.derp.stats().clients, 1);
}

/// Logs in over a raw TCP connection so the test can then write arbitrary bytes.
async fn raw_login(srv: &Relay, key: &NodePrivate) -> (TcpStream, FrameDecoder) {
    let (mut s, status) = raw_upgrade(srv.addr, "GET /derp HTTP/1.1", "").await;
    assert!(status.contains("101"), "{status}");
    let mut dec = FrameDecoder::new();
    let server_key = match read_frame(&mut s, &mut dec).await {
        Some(Frame::ServerKey { key }) => key,
        other => panic!("expected ServerKey, got {other:?}"),
    };
    let info = ClientInfo {
        version: 2,
        can_ack_pings: true,
        ..Default::default()
    };
    let hello = frame::seal_client_info(key, &server_key, &info).expect("seal");
    s.write_all(&hello.to_bytes()).await.expect("write");
    assert!(matches!(
        read_frame(&mut s, &mut dec).await,
        Some(Frame::ServerInfo { .. })
    ));
    (s, dec)
}

/// Next frame, or None on EOF/reset. Bounded.
async fn read_frame(s: &mut TcpStream, dec: &mut FrameDecoder) -> Option<Frame> {
    loop {
        if let Some(f) = dec.next_frame().expect("valid frame") {
            return Some(f);
        }
        let mut buf = [0u8; 4096];
        match timeout(WAIT, s.read(&mut buf)).await.expect("read in time") {
            Ok(0) | Err(_) => return None,
            Ok(n) => dec.push(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn malformed_or_oversize_frame_closes_only_that_client() {
    let srv = start().await;
    let (a, b) = pair(&srv, false).await;

    let (mut oversize, mut dec1) = raw_login(&srv, &NodePrivate::generate()).await;
    let (mut short, mut dec2) = raw_login(&srv, &NodePrivate::generate()).await;
    let (mut mesh, mut dec3) = raw_login(&srv, &NodePrivate::generate()).await;
    assert_eq!(srv.derp.stats().connections, 5);

    // A SendPacket header declaring 2 MiB, a SendPacket too short for its key,
    // and a mesh-only frame from a plain client.
    oversize
        .write_all(&[0x04, 0x00, 0x20, 0x00, 0x00])
        .await
        .expect("write");
    short
        .write_all(&[0x04, 0, 0, 0, 3, 1, 2, 3])
        .await
        .expect("write");
    mesh.write_all(&Frame::WatchConns.to_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_frame(&mut oversize, &mut dec1).await,
        None,
        "oversize sender closed"
    );
    assert_eq!(
        read_frame(&mut short, &mut dec2).await,
        None,
        "malformed sender closed"
    );
    assert_eq!(
        read_frame(&mut mesh, &mut dec3).await,
        None,
        "mesh frame sender closed"
    );

    timeout(Duration::from_secs(60), exchange(a, b, 500))
        .await
        .expect("others still exchange");
    assert_eq!(srv.derp.stats().connections, 2);
}

#[tokio::test]
async fn peer_gone_after_sender_leaves_and_not_here_for_disco() {
    let srv = start().await;
    let ((a_tx, a_rx, a_pub), (b_tx, mut b_rx, b_pub)) = pair(&srv, false).await;
    a_tx.send(b_pub, b"hello").await.expect("send");
    assert_eq!(
        next_packet(&mut b_rx).await,
        (a_pub, Bytes::from_static(b"hello"))
    );
    drop((a_tx, a_rx));
    let got = timeout(WAIT, b_rx.recv())
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(
        got,
        Received::PeerGone {
            key: a_pub,
            reason: PeerGoneReason::Disconnected
        }
    );

    // Unknown destination: a plain packet is silently dropped, a disco packet gets NotHere.
    let nobody = NodePrivate::generate().public();
    b_tx.send(nobody, b"plain").await.expect("send");
    let mut disco = DISCO_MAGIC.to_vec();
    disco.resize(100, 0);
    b_tx.send(nobody, &disco).await.expect("send");
    let got = timeout(WAIT, b_rx.recv())
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(
        got,
        Received::PeerGone {
            key: nobody,
            reason: PeerGoneReason::NotHere
        }
    );
    // Rate limit: burst of 3, then at most one per second.
    for _ in 0..10 {
        b_tx.send(nobody, &disco).await.expect("send");
    }
    b_tx.ping([9; 8]).await.expect("ping");
    let mut not_here = 0;
    loop {
        match timeout(WAIT, b_rx.recv())
            .await
            .expect("in time")
            .expect("recv")
        {
            Received::PeerGone {
                reason: PeerGoneReason::NotHere,
                ..
            } => not_here += 1,
            Received::Pong(d) => {
                assert_eq!(d, [9; 8]);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        (2..=3).contains(&not_here),
        "rate limited NotHere replies: {not_here}"
    );
    let st = srv.derp.stats();
    assert!(st.packets_dropped >= 12);
    assert!(st.dropped.unknown_destination >= 12, "{st:?}");
    assert_eq!(st.dropped.queue_full, 0, "{st:?}");
}

#[tokio::test]
async fn slow_reader_does_not_stall_others() {
    let srv = start_with(Server::with_config(
        NodePrivate::generate(),
        Arc::new(AllowAll),
        ServerConfig {
            write_timeout: Duration::from_millis(500),
            // Well under the 400 packets of the flood, so drops must happen.
            queue_len: 32,
            ..Default::default()
        },
    ))
    .await;
    let (a, b) = pair(&srv, false).await;
    // The sleeper logs in and never reads. A floods it while also exchanging with B,
    // so a relay that blocked a sender on a full destination would stall A→B.
    let sleeper_key = NodePrivate::generate();
    let (_sleeper, _dec) = raw_login(&srv, &sleeper_key).await;
    let sleeper = sleeper_key.public();
    let a_flood = a.0.clone();
    let flood = tokio::spawn(async move {
        let big = vec![7u8; 60_000];
        for _ in 0..400 {
            a_flood
                .send(sleeper, &big)
                .await
                .expect("flooding never blocks the sender");
        }
    });
    let still_connected = timeout(Duration::from_secs(60), exchange(a, b, 2000))
        .await
        .expect("exchange not stalled");
    timeout(WAIT, flood)
        .await
        .expect("flood in time")
        .expect("flood task");
    assert!(
        srv.derp.stats().packets_dropped > 0,
        "the sleeper's packets were dropped"
    );
    // The sleeper's blocked write hits the write timeout and only it is closed.
    timeout(WAIT, async {
        while srv.derp.is_connected(&sleeper) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("sleeper closed by write timeout");
    assert_eq!(srv.derp.stats().clients, 2);
    // Head drops while queued, then what was queued or being written when it was closed.
    let st = srv.derp.stats();
    assert!(st.dropped.queue_full > 0, "{st:?}");
    assert!(
        st.dropped.write_timeout + st.dropped.destination_gone > 0,
        "{st:?}"
    );
    assert_eq!(st.dropped.unknown_destination, 0, "{st:?}");
    assert_eq!(st.packets_dropped, st.dropped.total());
    drop(still_connected);
}

#[tokio::test]
async fn websocket_fallback_when_plain_upgrade_is_refused() {
    async fn refuse_plain(
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let plain = req
            .headers()
            .get("upgrade")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("derp"));
        if plain {
            return (axum::http::StatusCode::BAD_REQUEST, "proxy mangled upgrade").into_response();
        }
        next.run(req).await
    }
    use axum::response::IntoResponse;
    let derp = Server::new(NodePrivate::generate(), Arc::new(AllowAll));
    let app =
        tether_derp::http::router(derp.clone()).layer(axum::middleware::from_fn(refuse_plain));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let srv = serve_router(listener, app, derp).await;
    // Not forced: the client tries the plain upgrade, gets 400, and falls back.
    let (a, b) = pair_via(&srv, false, Transport::WebSocket).await;
    timeout(Duration::from_secs(60), exchange(a, b, 200))
        .await
        .expect("exchange");
}

#[tokio::test]
async fn ping_pong_duplicate_keys_and_disconnect() {
    let srv = start().await;
    let key = NodePrivate::generate();
    let (s1, mut r1) = connect(&srv, &key, false).await.split();
    let (s2, mut r2) = connect(&srv, &key, true).await.split();
    let p_key = NodePrivate::generate();
    let (p_tx, mut p_rx) = connect(&srv, &p_key, false).await.split();
    assert_eq!(srv.derp.stats().clients, 2);
    assert_eq!(srv.derp.stats().connections, 3);

    s1.ping([1, 2, 3, 4, 5, 6, 7, 8]).await.expect("ping");
    assert_eq!(
        timeout(WAIT, r1.recv()).await.expect("t").expect("pong"),
        Received::Pong([1, 2, 3, 4, 5, 6, 7, 8])
    );

    // The newest connection (s2) is active; then s1 sends and becomes active.
    p_tx.send(key.public(), b"to-newest").await.expect("send");
    assert_eq!(
        next_packet(&mut r2).await.1,
        Bytes::from_static(b"to-newest")
    );
    s1.send(NodePrivate::generate().public(), b"x")
        .await
        .expect("send");
    s1.ping([0; 8]).await.expect("ping");
    assert!(matches!(
        timeout(WAIT, r1.recv()).await.expect("t").expect("pong"),
        Received::Pong(_)
    ));
    p_tx.send(key.public(), b"to-sender").await.expect("send");
    assert_eq!(
        next_packet(&mut r1).await.1,
        Bytes::from_static(b"to-sender")
    );

    // The peer heard from the key; it gets PeerGone only once the key's last connection goes.
    s2.send(p_key.public(), b"hi").await.expect("send");
    assert_eq!(next_packet(&mut p_rx).await.1, Bytes::from_static(b"hi"));
    assert_eq!(srv.derp.disconnect(&key.public()), 2);
    for r in [&mut r1, &mut r2] {
        let e = timeout(WAIT, async {
            loop {
                match r.recv().await {
                    Ok(_) => continue,
                    Err(e) => return e,
                }
            }
        })
        .await
        .expect("closed in time");
        assert!(matches!(e, ClientError::Closed | ClientError::Io(_)), "{e}");
    }
    assert!(!srv.derp.is_connected(&key.public()));
    let got = timeout(WAIT, p_rx.recv())
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(
        got,
        Received::PeerGone {
            key: key.public(),
            reason: PeerGoneReason::Disconnected
        }
    );
}

async fn next(events: &mut tokio::sync::mpsc::Receiver<Event>) -> Event {
    timeout(WAIT, events.recv())
        .await
        .expect("event in time")
        .expect("task alive")
}

#[tokio::test]
async fn reconnecting_client_survives_server_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let derp = Server::new(NodePrivate::generate(), Arc::new(AllowAll));
    let srv = serve_router(listener, tether_derp::http::router(derp.clone()), derp).await;

    let key = NodePrivate::generate();
    let (rc, mut events) = ReconnectingClient::spawn(ClientConfig::new(srv.url(), key.clone()));
    assert!(matches!(next(&mut events).await, Event::Connected { .. }));
    assert!(rc.is_connected());

    drop(srv);
    assert!(matches!(
        next(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(
        rc.send(key.public(), b"x").await,
        Err(ClientError::NotConnected)
    ));

    // Same port, new relay (new server key).
    let listener = TcpListener::bind(addr).await.expect("rebind same port");
    let derp = Server::new(NodePrivate::generate(), Arc::new(AllowAll));
    let srv = serve_router(listener, tether_derp::http::router(derp.clone()), derp).await;
    match next(&mut events).await {
        Event::Connected { server_key } => assert_eq!(server_key, srv.derp.public_key()),
        other => panic!("expected Connected, got {other:?}"),
    }
    let other = NodePrivate::generate();
    let (o_tx, mut o_rx) = connect(&srv, &other, false).await.split();
    o_tx.send(key.public(), b"after restart")
        .await
        .expect("send");
    match next(&mut events).await {
        Event::Packet { src, data } => {
            assert_eq!(src, other.public());
            assert_eq!(data, Bytes::from_static(b"after restart"));
        }
        e => panic!("expected packet, got {e:?}"),
    }
    rc.send(other.public(), b"reply")
        .await
        .expect("send via reconnecting client");
    assert_eq!(next_packet(&mut o_rx).await.1, Bytes::from_static(b"reply"));

    // Dropping the handle stops the task: the event stream ends.
    drop(rc);
    assert!(
        timeout(WAIT, events.recv())
            .await
            .expect("ended in time")
            .is_none()
    );
}

#[tokio::test]
async fn http_endpoints() {
    let srv = start().await;
    let (_s, status) = raw_upgrade(srv.addr, "POST http://127.0.0.1/derp HTTP/1.1", "").await;
    assert!(
        status.starts_with("HTTP/1.1 101"),
        "absolute-form POST upgrade: {status}"
    );

    async fn request(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("tcp");
        s.write_all(req.as_bytes()).await.expect("write");
        read_head(&mut s).await
    }
    let h = request(srv.addr, "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(h.starts_with("HTTP/1.1 426"), "{h}");
    let h = request(
        srv.addr,
        "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: derp\r\nConnection: upgrade\r\n\r\n",
    )
    .await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    let lower = h.to_ascii_lowercase();
    assert!(
        lower.contains("upgrade: derp\r\n") && lower.contains("derp-version: 2\r\n"),
        "{h}"
    );
    assert!(
        lower.contains(&format!(
            "derp-public-key: {}",
            srv.derp.public_key().to_hex()
        )),
        "{h}"
    );
    let h = request(
        srv.addr,
        "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
    )
    .await;
    assert!(
        h.starts_with("HTTP/1.1 426"),
        "websocket without derp subprotocol: {h}"
    );
    for path in ["/derp/probe", "/derp/latency-check"] {
        let h = request(srv.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert!(
            h.to_ascii_lowercase()
                .contains("access-control-allow-origin: *"),
            "{h}"
        );
        let h = request(
            srv.addr,
            &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .await;
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        let h = request(
            srv.addr,
            &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        )
        .await;
        assert!(h.starts_with("HTTP/1.1 405"), "{h}");
    }
    let h = request(
        srv.addr,
        "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: abc.123\r\n\r\n",
    )
    .await;
    assert!(h.starts_with("HTTP/1.1 204"), "{h}");
    assert!(
        h.to_ascii_lowercase()
            .contains("x-tailscale-response: response abc.123\r\n"),
        "{h}"
    );
    let h = request(
        srv.addr,
        "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: a b\r\n\r\n",
    )
    .await;
    assert!(
        !h.to_ascii_lowercase().contains("x-tailscale-response"),
        "bad challenge not echoed: {h}"
    );
}

#[tokio::test]
async fn keepalive_sent_and_client_idle_timeout() {
    let srv = start_with(Server::with_config(
        NodePrivate::generate(),
        Arc::new(AllowAll),
        ServerConfig {
            keepalive: Duration::from_millis(100),
            keepalive_jitter: Duration::ZERO,
            ..Default::default()
        },
    ))
    .await;
    let (mut raw, mut dec) = raw_login(&srv, &NodePrivate::generate()).await;
    assert_eq!(read_frame(&mut raw, &mut dec).await, Some(Frame::KeepAlive));
    assert_eq!(read_frame(&mut raw, &mut dec).await, Some(Frame::KeepAlive));

    // Against a default server (60 s keepalive), a 300 ms idle limit must trip.
    let quiet = start().await;
    let mut cfg = ClientConfig::new(quiet.url(), NodePrivate::generate());
    cfg.idle_timeout = Duration::from_millis(300);
    let (_tx, mut rx) = timeout(WAIT, Client::connect(&cfg))
        .await
        .expect("t")
        .expect("connect")
        .split();
    let e = timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect_err("idle");
    assert!(matches!(e, ClientError::IdleTimeout(_)), "{e}");
}

#[tokio::test]
async fn region_dial_skips_stun_only_and_dead_nodes() {
    use tether_proto::derpmap::{DerpNode, DerpRegion};
    let srv = start().await;
    let dead_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let node = |name: &str, port: u16, stun_only: bool| DerpNode {
        name: name.into(),
        region_id: 999,
        host_name: "127.0.0.1".into(),
        derp_port: i32::from(port),
        stun_only,
        force_http: true,
        ..Default::default()
    };
    let region = DerpRegion {
        region_id: 999,
        nodes: vec![
            node("stun", srv.addr.port(), true),
            node("dead", dead_port, false),
            node("live", srv.addr.port(), false),
        ],
        ..Default::default()
    };
    let key = NodePrivate::generate();
    let base = ClientConfig::new(srv.url(), key.clone());
    let c = timeout(WAIT, Client::connect_region(&region, &base))
        .await
        .expect("t")
        .expect("connect");
    assert_eq!(c.server_key(), srv.derp.public_key());
    assert!(srv.derp.is_connected(&key.public()));

    let empty = DerpRegion {
        region_id: 5,
        nodes: vec![node("s", 1, true)],
        ..Default::default()
    };
    let e = Client::connect_region(&empty, &base)
        .await
        .expect_err("no nodes");
    assert!(matches!(e, ClientError::NoNodes(5)), "{e}");
}
