//! Interop: Tailscale's own Rust DERP client (`ts_derp`) logs in to our relay over a
//! plain-HTTP upgrade (sent the way ts_derp sends it: POST, absolute-form target,
//! host without port) and exchanges packets both ways with a tether client.

use bytes::Bytes;
use tether_key::{NodePrivate, NodePublic};
use tether_testing::relay::{WAIT, connect, next_packet, raw_upgrade, start};
use tokio::time::timeout;

#[tokio::test]
async fn ts_derp_client_logs_in_and_exchanges_packets() {
    let srv = start().await;
    let request_line = format!("POST http://127.0.0.1:{}/derp HTTP/1.1", srv.addr.port());
    let (stream, status) = raw_upgrade(srv.addr, &request_line, "").await;
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");

    let ts_keys = ts_keys::NodeKeyPair::random();
    let ts_pub: NodePublic = ts_keys
        .public
        .to_string()
        .parse()
        .expect("same nodekey text form");
    let ts = timeout(WAIT, ts_derp::Client::handshake(stream, &ts_keys))
        .await
        .expect("handshake in time")
        .expect("ts_derp accepts our ServerKey/ServerInfo");

    let ours = NodePrivate::generate();
    let (tx, mut rx) = connect(&srv, &ours, false).await.split();
    assert_eq!(srv.derp.stats().clients, 2);

    for i in 0..50u8 {
        let msg = vec![i; 100 + usize::from(i)];
        ts.send_one(
            ts_keys::NodePublicKey::from_bytes(*ours.public().as_bytes()),
            &msg,
        )
        .await
        .expect("ts_derp send");
        let (src, data) = next_packet(&mut rx).await;
        assert_eq!(src, ts_pub);
        assert_eq!(data, Bytes::from(msg));

        let reply = vec![i ^ 0xff; 1200];
        tx.send(ts_pub, &reply).await.expect("tether send");
        let (src, data) = timeout(WAIT, ts.recv_one())
            .await
            .expect("ts recv in time")
            .expect("ts recv");
        assert_eq!(src.to_string(), ours.public().to_string());
        assert_eq!(data.as_ref(), reply.as_slice());
    }
    assert_eq!(srv.derp.stats().packets_dropped, 0);
}
