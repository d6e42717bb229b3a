//! `forward_tcp` / `forward_udp` against local servers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use tether_agent::ForwardError;
use tether_agent::forward::{ChannelDatagrams, forward_tcp, forward_udp};
use tether_testing::openssh::echo_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[tokio::test]
async fn tcp_forward_echo_with_half_close() {
    let port = echo_server().await;
    let (tailnet, agent_side) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(forward_tcp(agent_side, port));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let (mut r, mut w) = tokio::io::split(tailnet);
    let to_send = payload.clone();
    let wtask = tokio::spawn(async move {
        w.write_all(&to_send).await.unwrap();
        // Half-close: the echo server only ends its side once it sees our EOF.
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert!(back == payload);
    drop(r.unsplit(wtask.await.unwrap()));
    let stats = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stats.to_workspace, payload.len() as u64);
    assert_eq!(stats.from_workspace, payload.len() as u64);
}

#[tokio::test]
async fn tcp_forward_nothing_listening() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_tailnet, agent_side) = tokio::io::duplex(1024);
    let err = forward_tcp(agent_side, port).await.unwrap_err();
    assert!(
        matches!(err, ForwardError::NotListening { port: p } if p == port),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("nothing is listening on 127.0.0.1:{port} in the workspace")
    );
}

#[tokio::test]
async fn udp_forward_relays_replies() {
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            let mut reply = b"re:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = server.send_to(&reply, from).await;
        }
    });
    let (to_agent, incoming) = mpsc::channel(8);
    let (outgoing, mut replies) = mpsc::channel(8);
    let task = tokio::spawn(forward_udp(
        ChannelDatagrams { incoming, outgoing },
        port,
        Duration::from_secs(30),
    ));
    for msg in ["one", "two"] {
        to_agent.send(Bytes::from(msg)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, Bytes::from(format!("re:{msg}")));
    }
    drop(to_agent);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn udp_forward_expires_when_idle() {
    let (_to_agent, incoming) = mpsc::channel::<Bytes>(1);
    let (outgoing, _replies) = mpsc::channel(1);
    let started = std::time::Instant::now();
    forward_udp(
        ChannelDatagrams { incoming, outgoing },
        9,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
}
