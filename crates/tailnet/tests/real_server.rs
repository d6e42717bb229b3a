//! Two `Conn`s (an agent and a client) through the real tether server (in this process,
//! `tether_testing::TestServer`): coordination, DERP (plain upgrade and WebSocket),
//! WireGuard and the netstack end to end.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use tether_tailnet::{Auth, Conn, ConnConfig, PathKind, TcpStream};
use tether_testing::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

fn init_logs() {
    tether_testing::init_tracing_with("tether_tailnet=debug,info");
}

async fn echo(mut s: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown().await;
}

/// Writes `data`, half-closes, and reads everything back until EOF.
async fn round_trip(mut s: TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(&mut s);
    let write = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = r.read_to_end(&mut back);
    let (_, n) = tokio::join!(write, read);
    n.unwrap();
    back
}

async fn echo_through_server(force_websockets: bool) {
    init_logs();
    let srv = TestServer::start(&[]);
    let (session, agent_token) = srv.user_and_workspace().await;
    let base = Url::parse(&srv.url).unwrap();
    // These tests are about the DERP transports: keep the traffic on DERP.
    let mut acfg = ConnConfig::new(base.clone(), Auth::Agent(agent_token));
    acfg.force_websockets = Some(force_websockets);
    acfg.disable_direct = true;
    let mut ccfg = ConnConfig::new(base, Auth::Session(session));
    ccfg.force_websockets = Some(force_websockets);
    ccfg.disable_direct = true;

    let agent = tokio::time::timeout(Duration::from_secs(30), Conn::join(acfg))
        .await
        .unwrap()
        .unwrap();
    let client = tokio::time::timeout(Duration::from_secs(30), Conn::join(ccfg))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(agent.ip(), client.ip());
    assert_eq!(agent.ip(), tether_proto::coord::tailnet_ip(agent.id()));

    // Agent: an echo server on 7, and everything else through accept-any.
    let listener = agent.listen_tcp(7).await.unwrap();
    let echo7 = tokio::spawn(async move {
        let (s, from) = listener.accept().await.unwrap();
        let port = s.local_addr().port();
        tokio::spawn(echo(s));
        (from, port)
    });
    let agent = std::sync::Arc::new(agent);
    let any_agent = agent.clone();
    let any = tokio::spawn(async move {
        let (s, port) = any_agent.accept_any_tcp().await.unwrap();
        tokio::spawn(echo(s));
        port
    });

    client.add_tunnel(agent.id()).await.unwrap();
    client
        .wait_peer(agent.id(), Duration::from_secs(10))
        .await
        .unwrap();
    agent
        .wait_peer(client.id(), Duration::from_secs(10))
        .await
        .unwrap();

    let payload: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let s = client.dial_tcp(agent.ip(), 7).await.unwrap();
    assert_eq!(s.peer_addr().port(), 7);
    let back = tokio::time::timeout(Duration::from_secs(60), round_trip(s, &payload))
        .await
        .unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
    let (from, port) = echo7.await.unwrap();
    assert_eq!(*from.ip(), client.ip());
    assert_eq!(port, 7);

    let s = client.dial_tcp(agent.ip(), 8080).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(30), round_trip(s, b"any port works"))
        .await
        .unwrap();
    assert_eq!(back, b"any port works");
    assert_eq!(any.await.unwrap(), 8080);

    let path = client.path(agent.id()).expect("path to the agent");
    assert!(matches!(path.current, PathKind::Derp { .. }), "{path:?}");
    assert!(path.handshake_done);

    // UDP both ways.
    let ua = agent.bind_udp(5000).await.unwrap();
    let uc = client.bind_udp(5001).await.unwrap();
    uc.send_to(b"ping", ua.local_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), ua.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from, uc.local_addr());
    ua.send_to(b"pong", from).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), uc.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"pong");

    // UDP accept-any: a datagram to an unbound agent port binds a socket there.
    let udp_agent = agent.clone();
    let udp_any = tokio::spawn(async move {
        let (s, port) = udp_agent.accept_any_udp().await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).await.unwrap();
        let first = buf[..n].to_vec();
        let mut reply = b"re:".to_vec();
        reply.extend_from_slice(&first);
        s.send_to(&reply, from).await.unwrap();
        // Answer retransmissions too, while the client waits.
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let mut reply = b"re:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, from).await;
            }
        });
        (port, from, first, echo)
    });
    let uc = client.bind_udp(0).await.unwrap();
    assert_ne!(uc.local_addr().port(), 0);
    let dst = std::net::SocketAddrV6::new(agent.ip(), 5353, 0, 0);
    // The agent turns accept-any on in its task: resend until it answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (n, from) = loop {
        uc.send_to(b"query", dst).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(500), uc.recv_from(&mut buf)).await {
            Ok(r) => break r.unwrap(),
            Err(_) => assert!(Instant::now() < deadline, "no UDP reply from accept-any"),
        }
    };
    assert_eq!(&buf[..n], b"re:query");
    assert_eq!(from, dst);
    let (port, from, first, echo) = udp_any.await.unwrap();
    assert_eq!(port, 5353);
    assert_eq!(from, uc.local_addr());
    assert_eq!(first, b"query");
    echo.abort();

    // The client leaves: the agent forgets it (DISCONNECTED), well before LOST would fire.
    let client_id = client.id();
    client.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.path(client_id).is_some() {
        assert!(
            Instant::now() < deadline,
            "agent still knows the client after it left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_client_echo_over_derp_upgrade() {
    echo_through_server(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_client_echo_over_derp_websocket() {
    echo_through_server(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_come_back_after_a_server_restart() {
    init_logs();
    let srv = TestServer::start(&[]);
    // Echo on port 7 works before the restart.
    let (agent, client) = joined_pair(&srv).await;

    let (old_id, ip) = (client.id(), client.ip());
    let srv = srv.restart();
    // The client reconnects and is given a new id, but keeps its address.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.id() == old_id {
        assert!(
            Instant::now() < deadline,
            "client did not re-join the restarted server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.ip(), ip);
    agent
        .wait_peer(client.id(), Duration::from_secs(20))
        .await
        .unwrap();
    // DERP reconnects on its own backoff; retry the dial until it is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        match client.dial_tcp(agent.ip(), 7).await {
            Ok(s) => {
                break tokio::time::timeout(Duration::from_secs(20), round_trip(s, b"after"))
                    .await
                    .unwrap();
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no connection after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(back, b"after");
    drop(srv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_errors_are_bounded_and_clear() {
    init_logs();
    let srv = TestServer::start(&[]);
    let (session, agent_token) = srv.user_and_workspace().await;
    let base = Url::parse(&srv.url).unwrap();
    let agent = Conn::join(ConnConfig::new(base.clone(), Auth::Agent(agent_token)))
        .await
        .unwrap();
    let client = Conn::join(ConnConfig::new(base.clone(), Auth::Session(session)))
        .await
        .unwrap();
    // No tunnel yet: the agent's address is not routable.
    let err = client.dial_tcp(agent.ip(), 7).await.unwrap_err();
    assert!(
        matches!(err, tether_tailnet::TailnetError::NoRoute(_)),
        "{err}"
    );
    client.add_tunnel(agent.id()).await.unwrap();
    client
        .wait_peer(agent.id(), Duration::from_secs(10))
        .await
        .unwrap();
    // Nobody listens on 9 and accept-any is off: refused (RST), quickly.
    let t = Instant::now();
    let err = client.dial_tcp(agent.ip(), 9).await.unwrap_err();
    assert!(
        matches!(err, tether_tailnet::TailnetError::ConnectionRefused(_)),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // A bad token is refused with the server's status.
    let err = Conn::join(ConnConfig::new(base, Auth::Session("nope".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            tether_tailnet::TailnetError::Refused { status: 401, .. }
        ),
        "{err}"
    );
}

/// Joins an agent and a client, tunnels them, and checks one TCP echo: (agent, client).
async fn joined_pair(srv: &TestServer) -> (Conn, Conn) {
    let (session, agent_token) = srv.user_and_workspace().await;
    let base = Url::parse(&srv.url).unwrap();
    let agent = Conn::join(ConnConfig::new(base.clone(), Auth::Agent(agent_token)))
        .await
        .unwrap();
    let client = Conn::join(ConnConfig::new(base, Auth::Session(session)))
        .await
        .unwrap();
    let listener = agent.listen_tcp(7).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(echo(s));
        }
    });
    client.add_tunnel(agent.id()).await.unwrap();
    client
        .wait_peer(agent.id(), Duration::from_secs(10))
        .await
        .unwrap();
    let s = client.dial_tcp(agent.ip(), 7).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(30), round_trip(s, b"hello"))
        .await
        .unwrap();
    assert_eq!(back, b"hello");
    (agent, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_region_is_the_lowest_latency_one() {
    init_logs();
    // Region 2000 is another name for the built-in relay (so it admits our keys), with
    // no STUN; the map's RegionScore makes the built-in region 999 look 1000× slower.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = tempfile::tempdir().unwrap();
    let map = cfg.path().join("derp.json");
    std::fs::write(
        &map,
        format!(
            r#"{{"HomeParams":{{"RegionScore":{{"999":1000}}}},"Regions":{{"2000":{{"RegionID":2000,"RegionCode":"alias","RegionName":"alias","Nodes":[{{"Name":"2000a","RegionID":2000,"HostName":"127.0.0.1","DERPPort":{port},"STUNPort":-1,"ForceHTTP":true}}]}}}}}}"#
        ),
    )
    .unwrap();
    let srv = TestServer::start(&[
        "--http-address",
        &format!("127.0.0.1:{port}"),
        "--derp-config-path",
        map.to_str().unwrap(),
    ]);
    let (agent, client) = joined_pair(&srv).await;
    for (who, conn) in [("agent", &agent), ("client", &client)] {
        assert_eq!(
            conn.diagnostics(uuid::Uuid::nil()).home_region,
            2000,
            "the {who} did not pick the lower-latency region"
        );
    }
    // The peers learned it from each other's nodes and reach each other through it.
    let path = client.path(agent.id()).expect("path to the agent");
    assert_eq!(path.home_region, 2000, "{path:?}");
    let s = client.dial_tcp(agent.ip(), 7).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), round_trip(s, b"again"))
        .await
        .unwrap();
    assert_eq!(back, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_loopback_go_direct() {
    init_logs();
    let srv = TestServer::start(&[]);
    let (agent, client) = joined_pair(&srv).await;
    // Usually milliseconds: endpoints that arrive after the first packet are pinged at
    // once, and a ping from the peer is pinged back at once.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let path = client.path(agent.id()).expect("path to the agent");
        if matches!(path.current, PathKind::Direct { .. }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the path did not become direct within 3 s: {path:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Traffic keeps working over the direct path, in both directions.
    let payload: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 13 + i / 253) as u8)
        .collect();
    let s = client.dial_tcp(agent.ip(), 7).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(30), round_trip(s, &payload))
        .await
        .unwrap();
    assert!(back == payload, "echoed bytes differ");
    let path = client.path(agent.id()).unwrap();
    assert!(matches!(path.current, PathKind::Direct { .. }), "{path:?}");
    assert!(path.handshake_done);
    let back_path = agent.path(client.id()).expect("agent knows the client");
    assert!(
        matches!(back_path.current, PathKind::Direct { .. }),
        "{back_path:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_direct_connections_stay_on_derp() {
    init_logs();
    let srv = TestServer::start(&["--block-direct-connections"]);
    let (agent, client) = joined_pair(&srv).await;
    // Keep traffic flowing for a while: the path must never leave DERP.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let s = client.dial_tcp(agent.ip(), 7).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), round_trip(s, b"still derp"))
            .await
            .unwrap();
        assert_eq!(back, b"still derp");
        let path = client.path(agent.id()).unwrap();
        assert!(matches!(path.current, PathKind::Derp { .. }), "{path:?}");
        let path = agent.path(client.id()).unwrap();
        assert!(matches!(path.current, PathKind::Derp { .. }), "{path:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_agent_tunnels_waits_and_dials_in_one_call() {
    init_logs();
    let srv = TestServer::start(&[]);
    let (session, agent_token) = srv.user_and_workspace().await;
    let base = Url::parse(&srv.url).unwrap();
    let agent = Conn::join(ConnConfig::new(base.clone(), Auth::Agent(agent_token)))
        .await
        .unwrap();
    let client = Conn::join(ConnConfig::new(base, Auth::Session(session)))
        .await
        .unwrap();
    let listener = agent.listen_tcp(7).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(echo(s));
        }
    });
    // No tunnel yet, no node: one call asks for the tunnel, waits for the node and dials.
    assert!(client.path(agent.id()).is_none());
    let s = client.dial_agent(agent.id(), 7).await.unwrap();
    assert_eq!(*s.peer_addr().ip(), agent.ip());
    let back = tokio::time::timeout(Duration::from_secs(30), round_trip(s, b"one call"))
        .await
        .unwrap();
    assert_eq!(back, b"one call");
    // The dial went through a WireGuard session; waiting for it returns at once.
    let t = Instant::now();
    assert!(
        client
            .wait_session(agent.id(), Duration::from_secs(10))
            .await
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(client.tunnel_to(agent.id()).await.unwrap(), agent.ip());
    // Nobody listens on 9: refused, as with dial_tcp.
    let err = client.dial_agent(agent.id(), 9).await.unwrap_err();
    assert!(
        matches!(err, tether_tailnet::TailnetError::ConnectionRefused(_)),
        "{err}"
    );
    // No session with a peer that does not exist: false once the limit passes.
    let nobody = uuid::Uuid::from_u128(7);
    let t = Instant::now();
    assert!(
        !client
            .wait_session(nobody, Duration::from_millis(200))
            .await
    );
    assert!(t.elapsed() >= Duration::from_millis(200));
}
