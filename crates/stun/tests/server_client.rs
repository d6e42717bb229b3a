//! Our client against our server (and against scripted fake servers) over loopback.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use tether_stun::message::{binding_request, binding_response, parse_binding_request};
use tether_stun::{Server, StunError, TransactionId, client};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

const BOUND: Duration = Duration::from_secs(10);

async fn loopback_server() -> tether_stun::ServerHandle {
    Server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .spawn()
}

#[tokio::test]
async fn client_learns_its_own_ipv4_address() {
    let server = loopback_server().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mapped = timeout(
        BOUND,
        client::binding(&sock, server.local_addr(), Duration::from_secs(3), 3),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(mapped, sock.local_addr().unwrap());
    let stats = server.stats().snapshot();
    assert!(stats.answered >= 1, "{stats:?}");
    assert_eq!(stats.ignored, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn client_learns_its_own_ipv6_address() {
    let server = match Server::bind("[::1]:0".parse().unwrap()).await {
        Ok(server) => server.spawn(),
        Err(err) => {
            println!("skipping: cannot bind [::1] on this machine: {err}");
            return;
        }
    };
    let sock = UdpSocket::bind("[::1]:0").await.unwrap();
    let mapped = timeout(
        BOUND,
        client::binding(&sock, server.local_addr(), Duration::from_secs(3), 3),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(mapped, sock.local_addr().unwrap());
    assert!(mapped.is_ipv6());
    server.shutdown().await;
}

#[tokio::test]
async fn server_counts_and_survives_bad_packets() {
    let server = loopback_server().await;
    let stats = server.stats(); // a clone, read while the server runs
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = binding_request(TransactionId::random());
    let junk: [&[u8]; 4] = [
        b"hello",
        &request[..30], // truncated
        &binding_response(TransactionId::random(), sock.local_addr().unwrap()), // not a request
        &[0u8; 0],      // empty datagram
    ];
    for packet in junk {
        sock.send_to(packet, server.local_addr()).await.unwrap();
    }
    // Same socket, same path: the server has seen the junk before it sees this request.
    let mapped = timeout(
        BOUND,
        client::binding(&sock, server.local_addr(), Duration::from_secs(3), 3),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(mapped, sock.local_addr().unwrap());
    assert_eq!(stats.ignored(), 4);
    assert!(stats.answered() >= 1);
    assert_eq!(stats.send_errors(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn client_matches_txid_and_ignores_noise() {
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let claimed: SocketAddr = "198.51.100.7:4242".parse().unwrap();
    let responder = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let (len, src) = fake.recv_from(&mut buf).await.unwrap();
        let txid = parse_binding_request(&buf[..len]).unwrap();
        fake.send_to(b"not stun at all", src).await.unwrap();
        let other = binding_response(TransactionId::random(), "203.0.113.1:1".parse().unwrap());
        fake.send_to(&other, src).await.unwrap();
        fake.send_to(&binding_response(txid, claimed), src)
            .await
            .unwrap();
    });
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mapped = timeout(
        BOUND,
        client::binding(&sock, fake_addr, Duration::from_secs(3), 1),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(mapped, claimed);
    timeout(BOUND, responder).await.unwrap().unwrap();
}

#[tokio::test]
async fn client_retransmits_same_txid_until_answered() {
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let responder = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        // Drop the first request, answer the second.
        let (len, _) = fake.recv_from(&mut buf).await.unwrap();
        let first = parse_binding_request(&buf[..len]).unwrap();
        let (len, src) = fake.recv_from(&mut buf).await.unwrap();
        let second = parse_binding_request(&buf[..len]).unwrap();
        fake.send_to(&binding_response(second, src), src)
            .await
            .unwrap();
        (first, second)
    });
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mapped = timeout(
        BOUND,
        client::binding(&sock, fake_addr, Duration::from_millis(1500), 3),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(mapped, sock.local_addr().unwrap());
    let (first, second) = timeout(BOUND, responder).await.unwrap().unwrap();
    assert_eq!(first, second, "retransmissions reuse the transaction ID");
}

#[tokio::test]
async fn client_times_out_after_all_tries() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let result = timeout(
        BOUND,
        client::binding(&sock, silent.local_addr().unwrap(), limit, 3),
    )
    .await
    .unwrap();
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(StunError::Timeout { tries: 3, .. })),
        "{result:?}"
    );
    assert!(elapsed >= limit, "returned early after {elapsed:?}");
    assert!(elapsed < limit * 5, "overran the timeout: {elapsed:?}");
    // All three requests reached the (silent) server.
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        let (len, _) = timeout(BOUND, silent.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(parse_binding_request(&buf[..len]).is_ok());
    }
}

#[tokio::test]
async fn shutdown_stops_answering() {
    let server = loopback_server().await;
    let addr = server.local_addr();
    let stats = server.stats();
    timeout(BOUND, server.shutdown()).await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let result = timeout(
        BOUND,
        client::binding(&sock, addr, Duration::from_millis(200), 2),
    )
    .await
    .unwrap();
    assert!(result.is_err(), "stopped server answered: {result:?}");
    assert_eq!(stats.answered(), 0);
}
