//! CPU cost of the data plane, without sockets: two sans-IO nodes in one thread, one
//! TCP stream from node 0 to node 1 through smoltcp, `recovery` and WireGuard, each
//! datagram handed straight to the other node. Both ends run on this one thread, so the
//! figure is the CPU per byte of sender and receiver together (the real driver splits
//! them between two processes). A second case drops one datagram in 200 (by a counter,
//! so runs repeat) to include loss recovery's bookkeeping: with every segment kept for
//! resending, as on any path that has lost one.
//!
//! `cargo bench -p tether-tailnet --bench dataplane` (`TETHER_BENCH_MIB` sets the size
//! per case, default 512). Under `valgrind --tool=callgrind` it gives repeatable
//! instruction counts for comparing changes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    missing_docs
)]

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use tether_key::NodePublic;
use tether_proto::coord::tailnet_ip;
use tether_tailnet::core::Core;
use tether_tailnet::netstack::{AcceptKey, TcpState};
use tether_testing::pair;
use uuid::Uuid;

const REGION: u32 = 1;
/// Seeds the two nodes' ids.
const SEED: u64 = 1;
const PORT: u16 = 7000;

struct Pair {
    nodes: Vec<Core>,
    keys: Vec<NodePublic>,
    /// Drop every `drop_every`-th datagram from node 0 (0: none).
    drop_every: u64,
    sent: u64,
    /// Datagrams node 1 sent back (ACKs).
    acks: u64,
    dropped: u64,
}

impl Pair {
    fn new(drop_every: u64) -> Self {
        let (nodes, keys, _) = pair::pair(SEED, REGION, Instant::now());
        Self {
            nodes,
            keys,
            drop_every,
            sent: 0,
            acks: 0,
            dropped: 0,
        }
    }

    /// Polls node `i` and hands what it sent to the other node.
    fn flush(&mut self, i: usize, now: Instant) {
        self.nodes[i].poll(now);
        let j = 1 - i;
        while let Some(t) = self.nodes[i].poll_transmit() {
            if i == 1 {
                self.acks += 1;
            } else {
                self.sent += 1;
                if self.drop_every > 0 && self.sent.is_multiple_of(self.drop_every) {
                    self.dropped += 1;
                    continue;
                }
            }
            let src = self.keys[i];
            self.nodes[j].handle_derp(now, REGION, src, &t.data);
        }
    }
}

/// Moves `total` bytes from node 0 to node 1; returns the wall time of the transfer.
fn transfer(pair: &mut Pair, total: u64) -> Duration {
    let ip1 = tailnet_ip(Uuid::from_u64_pair(SEED, 2));
    pair.nodes[1].netstack().tcp_listen(PORT).unwrap();
    let client = pair.nodes[0]
        .netstack()
        .tcp_connect(SocketAddrV6::new(ip1, PORT, 0, 0))
        .unwrap();
    let chunk = vec![0x5au8; 256 << 10];
    let mut buf = vec![0u8; 256 << 10];
    let (mut sent, mut received) = (0u64, 0u64);
    let mut server = None;
    let start = Instant::now();
    let limit = start + Duration::from_secs(600);
    while received < total {
        let now = Instant::now();
        assert!(now < limit, "no progress: {received} of {total} bytes");
        let s = pair.nodes[0].netstack();
        if s.tcp_may_send(client) && sent < total {
            let n = (total - sent).min(chunk.len() as u64) as usize;
            sent += s.tcp_write(client, &chunk[..n]).unwrap() as u64;
        }
        pair.flush(0, now);
        pair.flush(1, now);
        if server.is_none() {
            server = pair.nodes[1]
                .netstack()
                .tcp_accept(AcceptKey::Port(PORT), None)
                .map(|a| a.handle);
        }
        if let Some(h) = server {
            let s = pair.nodes[1].netstack();
            loop {
                let n = s.tcp_read(h, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                received += n as u64;
            }
            assert_ne!(s.tcp_state(h), TcpState::Closed, "the connection died");
            pair.nodes[1].netstack().tcp_consumed(h);
        }
    }
    start.elapsed()
}

fn main() {
    let mib: u64 = std::env::var("TETHER_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let total = mib << 20;
    println!(
        "{:<20} {:>6} {:>8} {:>8} {:>12} {:>10} {:>8}",
        "case", "MiB", "seconds", "Mbit/s", "ns/datagram", "acks/data", "dropped"
    );
    for (name, drop_every) in [("lossless", 0), ("1 in 200 dropped", 200)] {
        let mut pair = Pair::new(drop_every);
        let took = transfer(&mut pair, total);
        let secs = took.as_secs_f64();
        let stats = pair.nodes[0].netstack().recovery_stats();
        println!(
            "{:<20} {:>6} {:>8.3} {:>8.0} {:>12.0} {:>10.2} {:>8}",
            name,
            mib,
            secs,
            total as f64 * 8.0 / secs / 1e6,
            secs * 1e9 / pair.sent as f64,
            pair.acks as f64 / pair.sent as f64,
            pair.dropped
        );
        eprintln!("{name}: {stats:?}");
    }
}
