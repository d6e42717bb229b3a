//! Deterministic simulation of direct paths: two sans-IO nodes joined by a simulated
//! DERP relay and a simulated UDP network on a virtual clock. Disco finds the UDP path,
//! a TCP stream keeps flowing while the path switches, falls back to DERP when the UDP
//! link dies and returns to the direct path when it comes back.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use tether_key::NodePublic;
use tether_proto::coord::tailnet_ip;
use tether_tailnet::core::{Core, Event};
use tether_tailnet::disco;
use tether_tailnet::netstack::{AcceptKey, TcpHandle, TcpState};
use tether_tailnet::path::PathKind;
use tether_testing::pair;
use uuid::Uuid;

const REGION: u32 = 999;
const DERP_DELAY: Duration = Duration::from_millis(20);
const UDP_DELAY: Duration = Duration::from_millis(2);

/// (deliver at, sequence, from, to, over UDP, bytes).
type InFlight = Reverse<(Instant, u64, usize, usize, bool, Vec<u8>)>;

struct Net {
    now: Instant,
    nodes: Vec<Core>,
    keys: Vec<NodePublic>,
    ids: Vec<Uuid>,
    addrs: Vec<SocketAddr>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    udp_up: bool,
    /// WireGuard datagrams delivered over UDP and over DERP.
    wg_udp: usize,
    wg_derp: usize,
    /// Disco datagrams seen over DERP and over UDP.
    disco_derp: usize,
    disco_udp: usize,
    /// Records what the nodes emit, when a test compares runs.
    recorder: Option<pair::Recorder>,
}

impl Net {
    fn new(blocked: bool) -> Self {
        Self::with_core_seed(blocked, 100)
    }

    /// A network whose nodes are seeded from `core_seed`.
    fn with_core_seed(blocked: bool, core_seed: u64) -> Self {
        let now = Instant::now();
        let addrs: Vec<SocketAddr> = vec![
            "192.0.2.1:41641".parse().unwrap(),
            "198.51.100.7:41641".parse().unwrap(),
        ];
        let (nodes, keys, ids) =
            pair::pair_with(77, core_seed, REGION, now, Some(&addrs), |_, core| {
                if blocked {
                    core.set_direct_blocked(now, true);
                }
            });
        Self {
            now,
            nodes,
            keys,
            ids,
            addrs,
            queue: BinaryHeap::new(),
            seq: 0,
            udp_up: true,
            wg_udp: 0,
            wg_derp: 0,
            disco_derp: 0,
            disco_udp: 0,
            recorder: None,
        }
    }

    fn flush(&mut self) {
        for i in 0..2 {
            self.nodes[i].poll(self.now);
            while let Some(e) = self.nodes[i].poll_event() {
                if let Some(r) = &mut self.recorder {
                    r.event(self.now, i, &e);
                }
                if e == Event::NeedFreshEndpoints {
                    let own = self.addrs[i];
                    self.nodes[i].set_local_endpoints(self.now, vec![own]);
                }
            }
            while let Some(t) = self.nodes[i].poll_transmit() {
                if let Some(r) = &mut self.recorder {
                    r.transmit(self.now, i, &t);
                }
                let (to, udp, delay) = match t.path {
                    PathKind::Derp { region } => {
                        assert_eq!(region, REGION);
                        let to = self.keys.iter().position(|k| *k == t.dst).unwrap();
                        (to, false, DERP_DELAY)
                    }
                    PathKind::Direct { addr } => {
                        let Some(to) = self.addrs.iter().position(|a| *a == addr) else {
                            continue;
                        };
                        if !self.udp_up {
                            continue;
                        }
                        (to, true, UDP_DELAY)
                    }
                };
                self.seq += 1;
                self.queue
                    .push(Reverse((self.now + delay, self.seq, i, to, udp, t.data)));
            }
        }
    }

    fn step(&mut self) {
        self.flush();
        let mut next = self.queue.peek().map(|Reverse((at, ..))| *at);
        for n in &mut self.nodes {
            if let Some(t) = n.poll_timeout(self.now) {
                next = Some(next.map_or(t, |x| x.min(t)));
            }
        }
        let next = next.unwrap_or(self.now + Duration::from_millis(100));
        self.now = next.max(self.now + Duration::from_micros(100));
        while self
            .queue
            .peek()
            .is_some_and(|Reverse((at, ..))| *at <= self.now)
        {
            let Reverse((_, _, from, to, udp, data)) = self.queue.pop().unwrap();
            let is_disco = disco::looks_like_disco(&data);
            if udp {
                if !self.udp_up {
                    continue;
                }
                if is_disco {
                    self.disco_udp += 1;
                } else {
                    self.wg_udp += 1;
                }
                let src = self.addrs[from];
                self.nodes[to].handle_udp(self.now, src, &data);
            } else {
                if is_disco {
                    self.disco_derp += 1;
                } else {
                    self.wg_derp += 1;
                }
                let src = self.keys[from];
                self.nodes[to].handle_derp(self.now, REGION, src, &data);
            }
        }
        self.flush();
    }

    fn path(&self, from: usize) -> PathKind {
        self.nodes[from].path(self.ids[1 - from]).unwrap().current
    }

    fn both_direct(&self) -> bool {
        (0..2).all(|i| matches!(self.path(i), PathKind::Direct { .. }))
    }

    fn both_derp(&self) -> bool {
        (0..2).all(|i| matches!(self.path(i), PathKind::Derp { .. }))
    }
}

fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(7) ^ (i / 251)) as u8
}

/// A TCP stream from node 0 to node 1: the sender writes the `byte_at` pattern, the
/// receiver checks every byte in order (a loss, duplicate or reorder fails at once).
struct Stream {
    client: TcpHandle,
    server: Option<TcpHandle>,
    sent: usize,
    received: usize,
    closing: bool,
    eof: bool,
}

impl Stream {
    fn open(net: &mut Net) -> Self {
        net.nodes[1].netstack().tcp_listen(7000).unwrap();
        let dst = SocketAddrV6::new(tailnet_ip(net.ids[1]), 7000, 0, 0);
        let client = net.nodes[0].netstack().tcp_connect(dst).unwrap();
        Self {
            client,
            server: None,
            sent: 0,
            received: 0,
            closing: false,
            eof: false,
        }
    }

    /// One simulation step plus the applications' reads and writes.
    fn step(&mut self, net: &mut Net) {
        net.step();
        let s = net.nodes[0].netstack();
        if !self.closing {
            assert_ne!(
                s.tcp_state(self.client),
                TcpState::Closed,
                "client died after {} bytes",
                self.sent
            );
            if s.tcp_may_send(self.client) {
                let chunk: Vec<u8> = (self.sent..self.sent + 65536).map(byte_at).collect();
                self.sent += s.tcp_write(self.client, &chunk).unwrap();
            }
        }
        if self.server.is_none() {
            self.server = net.nodes[1]
                .netstack()
                .tcp_accept(AcceptKey::Port(7000), None)
                .map(|a| a.handle);
        }
        if let Some(h) = self.server {
            let s = net.nodes[1].netstack();
            let mut buf = [0u8; 65536];
            loop {
                let n = s.tcp_read(h, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                for (k, b) in buf[..n].iter().enumerate() {
                    let at = self.received + k;
                    assert_eq!(*b, byte_at(at), "stream corrupted at byte {at}");
                }
                self.received += n;
            }
            if self.closing && s.tcp_at_eof(h) {
                self.eof = true;
            }
            // As a `TcpStream` reader does: the stack may advertise the room at once.
            net.nodes[1].netstack().tcp_consumed(h);
        }
    }

    /// Steps until `cond` holds, at most `limit` of virtual time; returns the time taken.
    fn run_until(
        &mut self,
        net: &mut Net,
        limit: Duration,
        what: &str,
        mut cond: impl FnMut(&Net, &Stream) -> bool,
    ) -> Duration {
        let start = net.now;
        while !cond(net, self) {
            assert!(
                net.now - start < limit,
                "{what}: not within {limit:?} (paths {:?} / {:?}, {} bytes received)",
                net.path(0),
                net.path(1),
                self.received
            );
            self.step(net);
        }
        net.now - start
    }
}

#[test]
fn stream_moves_to_direct_falls_back_to_derp_and_returns() {
    let mut net = Net::new(false);
    assert!(net.both_derp(), "new peers start on DERP");
    let mut st = Stream::open(&mut net);

    // The first packets go over DERP; disco finds the UDP path within a few seconds.
    let took = st.run_until(&mut net, Duration::from_secs(5), "direct", |n, _| {
        n.both_direct()
    });
    eprintln!("direct after {took:?}");
    assert_eq!(net.path(0), PathKind::Direct { addr: net.addrs[1] });
    assert_eq!(net.path(1), PathKind::Direct { addr: net.addrs[0] });
    // No NAT in this network: the first ping (answered by a ping back) suffices, so a
    // CallMeMaybe over DERP may not even be needed; the NAT lab covers hole punching.
    assert!(net.disco_udp > 0, "pings and pongs went over UDP");
    // The stream flows over the direct path.
    let (wg_derp, received) = (net.wg_derp, st.received);
    st.run_until(&mut net, Duration::from_secs(10), "flow direct", |n, s| {
        s.received > received + (1 << 20) && n.wg_udp > 100
    });
    assert!(net.both_direct());
    assert!(
        net.wg_derp - wg_derp < 10,
        "data stays off DERP while direct"
    );

    // The UDP link dies: both sides fall back to DERP and the stream continues.
    net.udp_up = false;
    let took = st.run_until(&mut net, Duration::from_secs(15), "fallback", |n, _| {
        n.both_derp()
    });
    eprintln!("back on DERP after {took:?}");
    let (received, wg_udp) = (st.received, net.wg_udp);
    st.run_until(
        &mut net,
        Duration::from_secs(60),
        "flow over DERP",
        |_, s| s.received > received + (1 << 20),
    );
    assert_eq!(net.wg_udp, wg_udp, "nothing crossed the dead link");
    assert!(net.both_derp());

    // The link returns: direct again.
    net.udp_up = true;
    let took = st.run_until(&mut net, Duration::from_secs(15), "direct again", |n, _| {
        n.both_direct()
    });
    eprintln!("direct again after {took:?}");
    let (received, wg_udp) = (st.received, net.wg_udp);
    st.run_until(
        &mut net,
        Duration::from_secs(10),
        "flow direct again",
        |n, s| s.received > received + (1 << 20) && n.wg_udp > wg_udp + 100,
    );

    // Finish: every byte sent arrived exactly once, in order.
    st.closing = true;
    net.nodes[0].netstack().tcp_shutdown(st.client);
    st.run_until(&mut net, Duration::from_secs(30), "EOF", |_, s| s.eof);
    assert_eq!(st.received, st.sent, "bytes lost or duplicated");
    eprintln!(
        "{} bytes, {} via UDP, {} via DERP",
        st.sent, net.wg_udp, net.wg_derp
    );
}

#[test]
fn blocked_direct_stays_on_derp_and_sends_no_disco() {
    let mut net = Net::new(true);
    let mut st = Stream::open(&mut net);
    let received = st.received;
    st.run_until(&mut net, Duration::from_secs(20), "flow", |_, s| {
        s.received > received + (1 << 20)
    });
    assert!(net.both_derp());
    assert_eq!(net.wg_udp + net.disco_udp + net.disco_derp, 0);
}

#[test]
fn disco_from_unknown_keys_and_garbage_on_udp_are_dropped() {
    let mut net = Net::new(false);
    // A stranger's disco packet and garbage on the UDP socket cause nothing.
    let stranger = tether_key::DiscoPrivate::generate();
    let bx = disco::PeerBox::new(&stranger, net.nodes[1].disco_public());
    let ping = bx.seal(&disco::Message::Ping(disco::Ping {
        tx_id: disco::TxId([1; 12]),
        node_key: net.keys[0],
        padding: 0,
    }));
    let now = net.now;
    net.nodes[1].handle_udp(now, net.addrs[0], &ping);
    net.nodes[1].handle_udp(now, net.addrs[0], &[1, 0, 0, 0, 9, 9]);
    net.nodes[1].handle_udp(now, net.addrs[0], b"hello");
    net.nodes[1].poll(now);
    assert!(net.nodes[1].poll_transmit().is_none());
}

/// One recorded run with nodes seeded `core_seed`: disco finds the direct path, the
/// stream moves 256 KiB over it, the UDP link dies and both fall back to DERP, 64 KiB
/// more, then the FIN.
fn recorded_run(core_seed: u64) -> pair::Trace {
    let mut net = Net::with_core_seed(false, core_seed);
    net.recorder = Some(pair::Recorder::attach(net.now, &mut net.nodes));
    let mut st = Stream::open(&mut net);
    st.run_until(&mut net, Duration::from_secs(5), "direct", |n, s| {
        n.both_direct() && s.received > 256 << 10
    });
    net.udp_up = false;
    st.run_until(&mut net, Duration::from_secs(15), "fallback", |n, _| {
        n.both_derp()
    });
    let received = st.received;
    st.run_until(
        &mut net,
        Duration::from_secs(30),
        "flow over DERP",
        |_, s| s.received > received + (64 << 10),
    );
    st.closing = true;
    net.nodes[0].netstack().tcp_shutdown(st.client);
    st.run_until(&mut net, Duration::from_secs(30), "EOF", |_, s| s.eof);
    assert_eq!(st.received, st.sent, "bytes lost or duplicated");
    net.recorder.as_ref().unwrap().trace()
}

/// Two runs with direct paths, disco and a fallback emit the same bytes with one seed,
/// other bytes with another: as `sim::the_same_seed_emits_the_same_bytes` compares
/// them (plaintext at WireGuard, events, and each datagram's time, node, path, length
/// and the bytes tether controls), here with disco pings, pongs and CallMeMaybes
/// compared whole (their keys, nonces and TxIDs come from the seed) and path changes
/// among the events. WireGuard's handshake fields and ciphertext are left out: gotatun
/// draws its ephemeral keys from the OS RNG.
#[test]
fn the_same_seed_emits_the_same_disco_and_paths() {
    let a = recorded_run(100);
    let b = recorded_run(100);
    let disco = |t: &pair::Trace| -> Vec<pair::WireRecord> {
        t.wire
            .iter()
            .filter(|w| disco::looks_like_disco(&w.bytes))
            .cloned()
            .collect()
    };
    let paths = |t: &pair::Trace| {
        t.events
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::PathChanged { .. }))
            .count()
    };
    eprintln!(
        "compared {} datagrams ({} disco), {} plaintext packets, {} events ({} path changes)",
        a.wire.len(),
        disco(&a).len(),
        a.plaintext.len(),
        a.events.len(),
        paths(&a)
    );
    assert!(disco(&a).len() > 4, "disco worth comparing");
    assert!(
        paths(&a) >= 4,
        "both nodes went direct and back: {:?}",
        a.events
    );
    assert!(
        a.wire
            .iter()
            .any(|w| matches!(w.path, PathKind::Direct { .. }))
    );
    assert_eq!(a.wire.len(), b.wire.len());
    for (i, (x, y)) in a.wire.iter().zip(&b.wire).enumerate() {
        assert_eq!(x, y, "datagram {i} differs");
    }
    assert_eq!(a.reproducible(), b.reproducible());
    assert_ne!(
        a.wireguard, b.wireguard,
        "gotatun's WireGuard bytes repeat now: compare them whole"
    );

    // Other node seeds: other disco keys, nonces and TxIDs.
    let c = recorded_run(200);
    let (da, dc) = (disco(&a), disco(&c));
    assert!(!dc.is_empty());
    assert!(
        da.iter().all(|x| dc.iter().all(|y| x.bytes != y.bytes)),
        "a disco datagram repeats under another seed"
    );
    assert_ne!(a.plaintext, c.plaintext);
}
