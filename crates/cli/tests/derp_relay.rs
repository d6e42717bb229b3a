//! The built-in DERP relay of the real server: two clients holding the agent's and the
//! client's node keys (registered through the coordinator) exchange 10,000 packets each
//! way without loss, by plain upgrade and over WebSocket; unknown keys are refused; a key
//! the coordinator forgets loses its relay connection.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tether_derp::client::{
    Client, ClientConfig, ClientReceiver, ClientSender, Received, Transport,
};
use tether_key::{NodePrivate, NodePublic};
use tether_proto::coord::{Request, Response};
use tether_testing::{CoordConn, TestServer, Tether, node_for, session_token, welcome};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

const PACKETS: u32 = 10_000;
/// Packets in flight: below the relay's 32-packet per-client queue, so nothing is dropped.
const WINDOW: u32 = 16;

async fn recv_packet(rx: &mut ClientReceiver) -> (NodePublic, bytes::Bytes) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Ok(Received::Packet { src, data })) => return (src, data),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("DERP receive failed: {e}"),
            Err(_) => panic!("no DERP packet within 10 s"),
        }
    }
}

/// `from` sends PACKETS numbered packets to `to`, at most WINDOW unacknowledged; `to`
/// acknowledges each with its number. Both sides check order, content and count.
async fn exchange(
    from: (ClientSender, ClientReceiver, NodePublic),
    to: (ClientSender, ClientReceiver, NodePublic),
) {
    let (a_tx, mut a_rx, a_key) = from;
    let (b_tx, mut b_rx, b_key) = to;
    let echo = tokio::spawn(async move {
        for i in 0..PACKETS {
            let (src, data) = recv_packet(&mut b_rx).await;
            assert_eq!(src, a_key);
            assert_eq!(data.len(), 1200);
            assert_eq!(
                u32::from_be_bytes(data[..4].try_into().unwrap()),
                i,
                "packet out of order or lost"
            );
            assert!(
                data[4..].iter().all(|&b| b == (i % 251) as u8),
                "payload corrupted"
            );
            b_tx.send(a_key, &i.to_be_bytes()).await.unwrap();
        }
    });
    let mut acked = 0u32;
    let mut sent = 0u32;
    while acked < PACKETS {
        while sent < PACKETS && sent - acked < WINDOW {
            let mut p = vec![(sent % 251) as u8; 1200];
            p[..4].copy_from_slice(&sent.to_be_bytes());
            a_tx.send(b_key, &p).await.unwrap();
            sent += 1;
        }
        let (src, data) = recv_packet(&mut a_rx).await;
        assert_eq!(src, b_key);
        assert_eq!(
            u32::from_be_bytes(data[..4].try_into().unwrap()),
            acked,
            "ack out of order or lost"
        );
        acked += 1;
    }
    tokio::time::timeout(Duration::from_secs(30), echo)
        .await
        .unwrap()
        .unwrap();
}

async fn derp(
    url: &str,
    key: &NodePrivate,
    ws: bool,
) -> Result<Client, tether_derp::client::ClientError> {
    let mut cfg = ClientConfig::new(format!("{url}/derp").parse().unwrap(), key.clone());
    cfg.force_websocket = ws;
    Client::connect(&cfg).await
}

#[tokio::test]
async fn relay_between_registered_keys_only() {
    // The test's coordinator sockets are not read while packets flow, so they answer no
    // heartbeats; a long LOST bound keeps a slow (loaded) run from losing its keys.
    let srv = TestServer::start(&["--coordinator-lost-after", "600s"]);
    let alice = TETHER.first_user(&srv);
    let agent_token = TETHER.create_workspace(&alice, "dev");

    // Register both keys through the coordinator.
    let agent_key = NodePrivate::generate();
    let client_key = NodePrivate::generate();
    let mut agent = CoordConn::agent(&srv.url, &agent_token).await.unwrap();
    let agent_id = welcome(&mut agent).await;
    agent
        .send(&Request::UpdateSelf {
            node: node_for(agent_id, &agent_key, 999),
        })
        .await;
    let mut client = CoordConn::client(&srv.url, &session_token(&alice))
        .await
        .unwrap();
    let client_id = welcome(&mut client).await;
    client
        .send(&Request::UpdateSelf {
            node: node_for(client_id, &client_key, 999),
        })
        .await;
    client.send(&Request::AddTunnel { id: agent_id }).await;
    client
        .expect("agent node", |r| matches!(r, Response::PeerUpdates { .. }))
        .await;

    for ws in [false, true] {
        let a = derp(&srv.url, &client_key, ws).await.unwrap();
        let b = derp(&srv.url, &agent_key, ws).await.unwrap();
        let want = if ws {
            Transport::WebSocket
        } else {
            Transport::Upgrade
        };
        assert_eq!((a.transport(), b.transport()), (want, want));
        let (a_tx, a_rx) = a.split();
        let (b_tx, b_rx) = b.split();
        exchange(
            (a_tx, a_rx, client_key.public()),
            (b_tx, b_rx, agent_key.public()),
        )
        .await;
    }

    // A key the coordinator does not know is refused, on both transports.
    for ws in [false, true] {
        let stranger = NodePrivate::generate();
        let err = derp(&srv.url, &stranger, ws)
            .await
            .expect_err("unknown key must be refused");
        eprintln!(
            "refused as expected ({}): {err}",
            if ws { "websocket" } else { "upgrade" }
        );
    }

    // When the agent leaves the coordinator, its relay connection is dropped.
    let b = derp(&srv.url, &agent_key, false).await.unwrap();
    let (_b_tx, mut b_rx) = b.split();
    agent.send(&Request::Disconnect).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if b_rx.recv().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the forgotten key kept its relay connection");
    let health = srv.health(&session_token(&alice)).await;
    assert!(
        health["derp"]["details"]["refused_by_admission"]
            .as_u64()
            .unwrap()
            >= 2,
        "{health}"
    );
}
