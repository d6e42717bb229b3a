//! Two stacks wired back to back: accept any, listeners, wake-ups, resets, window
//! updates, UDP accept any and its cap.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]
use super::*;

/// Moves every outbound packet of `a` into `b` and vice versa until both are quiet.
fn pump(a: &mut Netstack, b: &mut Netstack, now: Instant) {
    for _ in 0..100 {
        a.poll(now);
        b.poll(now);
        let mut moved = false;
        while let Some(p) = a.pop_outbound() {
            b.push_inbound(p);
            moved = true;
        }
        while let Some(p) = b.pop_outbound() {
            a.push_inbound(p);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn ip(last: u8) -> Ipv6Addr {
    let mut raw = [0u8; 16];
    raw[..6].copy_from_slice(&TAILNET_PREFIX);
    raw[15] = last;
    Ipv6Addr::from(raw)
}

#[test]
fn accept_any_creates_listeners_per_syn_and_unlistened_ports_are_refused() {
    let now = Instant::now();
    let mut a = Netstack::new(ip(1), now, 1);
    let mut b = Netstack::new(ip(2), now, 2);
    // Nobody listens on b: the connect is reset.
    let refused = a.tcp_connect(SocketAddrV6::new(ip(2), 4444, 0, 0)).unwrap();
    pump(&mut a, &mut b, now);
    assert_eq!(a.tcp_state(refused), TcpState::Closed);

    b.set_accept_any(true);
    let c1 = a.tcp_connect(SocketAddrV6::new(ip(2), 4444, 0, 0)).unwrap();
    let c2 = a.tcp_connect(SocketAddrV6::new(ip(2), 4444, 0, 0)).unwrap();
    let c3 = a.tcp_connect(SocketAddrV6::new(ip(2), 5555, 0, 0)).unwrap();
    pump(&mut a, &mut b, now);
    for c in [c1, c2, c3] {
        assert_eq!(a.tcp_state(c), TcpState::Established);
    }
    let mut ports = Vec::new();
    while let Some(acc) = b.tcp_accept(AcceptKey::Any, None) {
        assert_eq!(acc.remote.ip(), &ip(1));
        ports.push(acc.local_port);
    }
    ports.sort_unstable();
    assert_eq!(ports, vec![4444, 4444, 5555]);
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl CountingWaker {
    /// A waker and the count of its wake-ups.
    fn new() -> (std::sync::Arc<Self>, Waker) {
        let count = std::sync::Arc::new(Self::default());
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Two stacks with one established connection from `a` to port 7 of `b`: the
/// stacks, `a`'s handle and `b`'s.
fn connected(now: Instant) -> (Netstack, Netstack, TcpHandle, TcpHandle) {
    let mut a = Netstack::new(ip(1), now, 1);
    let mut b = Netstack::new(ip(2), now, 2);
    b.tcp_listen(7).unwrap();
    let c = a.tcp_connect(SocketAddrV6::new(ip(2), 7, 0, 0)).unwrap();
    pump(&mut a, &mut b, now);
    let accepted = b.tcp_accept(AcceptKey::Port(7), None).unwrap().handle;
    (a, b, c, accepted)
}

/// A writer waiting for room is woken once a quarter of the buffer is free, not
/// while it stays full; released handles and closing stop the wait.
#[test]
fn a_waiting_writer_is_woken_at_the_low_water_mark() {
    let now = Instant::now();
    let (mut a, mut b, c, accepted) = connected(now);
    let chunk = vec![7u8; 64 << 10];
    while a.tcp_write(c, &chunk).unwrap() > 0 {}
    let (count, waker) = CountingWaker::new();
    a.wait_send_room(c, &waker);
    a.poll(now);
    assert_eq!(count.count(), 0, "woken with a full buffer");
    pump(&mut a, &mut b, now);
    assert_eq!(count.count(), 1, "not woken once acknowledged");
    pump(&mut a, &mut b, now);
    assert_eq!(count.count(), 1, "woken twice for one wait");

    // A released handle is forgotten (its socket goes away later); closing wakes the rest.
    while a.tcp_write(c, &chunk).unwrap() > 0 {}
    a.wait_send_room(c, &waker);
    a.tcp_close(c);
    b.tcp_close(accepted);
    pump(&mut a, &mut b, now);
    let c2 = a.tcp_connect(SocketAddrV6::new(ip(2), 7, 0, 0)).unwrap();
    a.wait_send_room(c2, &waker);
    a.wake_all_waiters();
    assert_eq!(count.count(), 2);
}

/// A waiting reader is woken by the poll that brings data, and by the one that
/// brings the end of the stream.
#[test]
fn a_waiting_reader_is_woken_by_data_and_by_the_end() {
    let now = Instant::now();
    let (mut a, mut b, c, r) = connected(now);
    let (count, waker) = CountingWaker::new();
    b.wait_recv(r, &waker);
    pump(&mut a, &mut b, now);
    assert_eq!(count.count(), 0, "woken without data");
    a.tcp_write(c, b"hello").unwrap();
    pump(&mut a, &mut b, now);
    assert_eq!(count.count(), 1, "not woken by data");
    let mut buf = [0u8; 16];
    assert_eq!(b.tcp_read(r, &mut buf).unwrap(), 5);
    b.wait_recv(r, &waker);
    a.tcp_shutdown(c);
    pump(&mut a, &mut b, now);
    assert_eq!(count.count(), 2, "not woken by the FIN");
    assert!(b.tcp_at_eof(r));
}

/// A connection released with unread data, or sent data after its release, is
/// reset, so that the sender learns nobody reads (it would stall on a zero window).
#[test]
fn data_nobody_will_read_resets_the_connection() {
    let now = Instant::now();
    for data_before_release in [true, false] {
        let (mut a, mut b, c, accepted) = connected(now);
        if data_before_release {
            a.tcp_write(c, b"unread").unwrap();
            pump(&mut a, &mut b, now);
            assert!(b.tcp_unread(accepted) > 0);
        }
        b.tcp_close(accepted);
        pump(&mut a, &mut b, now);
        if !data_before_release {
            // A graceful close: FIN, and the half-open side may still send.
            assert_eq!(a.tcp_state(c), TcpState::CloseWait);
            a.tcp_write(c, b"too late").unwrap();
            pump(&mut a, &mut b, now);
        }
        assert_eq!(
            a.tcp_state(c),
            TcpState::Closed,
            "data before release: {data_before_release}"
        );
    }
}

/// Resetting a revoked peer's connections ends exactly those, at once: a waiting
/// reader is woken and reads the end, a writer gets an error; others stay open.
#[test]
fn resetting_a_peers_connections_ends_only_those() {
    let now = Instant::now();
    let (mut a, mut b, _c, r) = connected(now);
    let mut other = Netstack::new(ip(3), now, 3);
    b.tcp_listen(8).unwrap();
    let c3 = other
        .tcp_connect(SocketAddrV6::new(ip(2), 8, 0, 0))
        .unwrap();
    pump(&mut other, &mut b, now);
    let r3 = b.tcp_accept(AcceptKey::Port(8), None).unwrap().handle;
    assert_eq!(b.tcp_state(r3), TcpState::Established);
    let (count, waker) = CountingWaker::new();
    b.wait_recv(r, &waker);

    assert_eq!(b.reset_connections(|peer| peer == ip(1)), 1);
    b.poll(now);
    assert_eq!(count.count(), 1, "the waiting reader was not woken");
    assert_eq!(b.tcp_state(r), TcpState::Closed);
    let mut buf = [0u8; 8];
    assert_eq!(b.tcp_read(r, &mut buf).unwrap_or(0), 0);
    assert!(
        b.tcp_write(r, b"x").is_err(),
        "a reset connection took data"
    );
    assert_eq!(b.tcp_state(r3), TcpState::Established);
    other.tcp_write(c3, b"still").unwrap();
    pump(&mut other, &mut b, now);
    assert_eq!(b.tcp_read(r3, &mut buf).unwrap(), 5);
    // Nothing is left to reset for that peer.
    assert_eq!(b.reset_connections(|peer| peer == ip(1)), 0);
    drop(a.pop_outbound());
}

/// A receiver whose application drains part of its buffer tells the sender at once,
/// where smoltcp alone waits until its window has doubled.
#[test]
fn a_drained_receive_buffer_is_advertised_before_its_window_doubles() {
    let now = Instant::now();
    for tell in [false, true] {
        let (mut a, mut b, c, accepted) = connected(now);
        let data = vec![7u8; TCP_BUFFER * 3 / 4];
        assert_eq!(a.tcp_write(c, &data).unwrap(), data.len());
        pump(&mut a, &mut b, now);
        assert_eq!(b.tcp_unread(accepted), data.len());
        // The last ACK advertised a quarter of the buffer; drain a fifth more.
        let mut buf = vec![0u8; TCP_BUFFER / 5];
        assert_eq!(b.tcp_read(accepted, &mut buf).unwrap(), buf.len());
        if tell {
            b.tcp_consumed(accepted);
        }
        b.poll(now);
        let mut updates = Vec::new();
        while let Some(p) = b.pop_outbound() {
            let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.ack() && tcp.payload().is_empty(), "not a pure ACK");
            updates.push(usize::from(tcp.window_len()) << OWN_WINDOW_SHIFT);
        }
        if tell {
            let free = TCP_BUFFER - data.len() + buf.len();
            assert_eq!(updates, [free & !((1 << OWN_WINDOW_SHIFT) - 1)]);
        } else {
            assert!(updates.is_empty(), "smoltcp sent {updates:?} by itself");
        }
    }
}

#[test]
fn explicit_listener_gets_its_port_only() {
    let now = Instant::now();
    let mut a = Netstack::new(ip(1), now, 1);
    let mut b = Netstack::new(ip(2), now, 2);
    b.tcp_listen(7).unwrap();
    assert_eq!(b.tcp_listen(7), Err(NetstackError::AddrInUse(7)));
    let c = a.tcp_connect(SocketAddrV6::new(ip(2), 7, 0, 0)).unwrap();
    let other = a.tcp_connect(SocketAddrV6::new(ip(2), 8, 0, 0)).unwrap();
    pump(&mut a, &mut b, now);
    assert_eq!(a.tcp_state(c), TcpState::Established);
    assert_eq!(a.tcp_state(other), TcpState::Closed);
    let acc = b.tcp_accept(AcceptKey::Port(7), None).unwrap();
    assert_eq!(acc.local_port, 7);
    a.tcp_write(c, b"ping").unwrap();
    pump(&mut a, &mut b, now);
    let mut buf = [0u8; 8];
    let n = b.tcp_read(acc.handle, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
}

fn udp_send(a: &mut Netstack, h: UdpHandle, to: u16, data: &[u8]) {
    a.udp_send_to(h, data, SocketAddrV6::new(ip(2), to, 0, 0))
        .unwrap();
}

fn udp_recv(b: &mut Netstack, h: UdpHandle) -> Option<(Vec<u8>, u16)> {
    let mut buf = [0u8; 2048];
    b.udp_recv_from(h, &mut buf)
        .unwrap()
        .map(|(n, from)| (buf[..n].to_vec(), from.port()))
}

#[test]
fn udp_accept_any_binds_unbound_ports_and_leaves_bound_ones_alone() {
    let now = Instant::now();
    let mut a = Netstack::new(ip(1), now, 1);
    let mut b = Netstack::new(ip(2), now, 2);
    let ua = a.udp_bind(0).unwrap();
    let from = a.udp_port(ua);
    assert!(from >= 49152);

    // Off: a datagram to an unbound port is dropped and nothing is queued.
    udp_send(&mut a, ua, 5353, b"lost");
    pump(&mut a, &mut b, now);
    assert_eq!(b.udp_accept_any(None), None);

    // On: the port is bound on the fly and the datagram lands in the new socket.
    b.set_udp_accept_any(true);
    let bound = b.udp_bind(53).unwrap();
    udp_send(&mut a, ua, 5353, b"hello");
    pump(&mut a, &mut b, now);
    let acc = b.udp_accept_any(None).unwrap();
    assert_eq!(acc.local_port, 5353);
    assert_eq!(b.udp_port(acc.handle), 5353);
    assert_eq!(
        udp_recv(&mut b, acc.handle),
        Some((b"hello".to_vec(), from))
    );

    // Later datagrams to that port go to the same socket; replies reach the sender.
    udp_send(&mut a, ua, 5353, b"again");
    pump(&mut a, &mut b, now);
    assert_eq!(b.udp_accept_any(None), None);
    assert_eq!(
        udp_recv(&mut b, acc.handle),
        Some((b"again".to_vec(), from))
    );
    b.udp_send_to(acc.handle, b"reply", SocketAddrV6::new(ip(1), from, 0, 0))
        .unwrap();
    pump(&mut a, &mut b, now);
    assert_eq!(udp_recv(&mut a, ua), Some((b"reply".to_vec(), 5353)));

    // An explicitly bound port is never taken over.
    udp_send(&mut a, ua, 53, b"dns");
    pump(&mut a, &mut b, now);
    assert_eq!(b.udp_accept_any(None), None);
    assert_eq!(udp_recv(&mut b, bound), Some((b"dns".to_vec(), from)));
    assert_eq!(b.udp_bind(5353), Err(NetstackError::AddrInUse(5353)));

    // Releasing the accepted socket frees the port: the next datagram binds afresh.
    b.udp_close(acc.handle);
    udp_send(&mut a, ua, 5353, b"fresh");
    pump(&mut a, &mut b, now);
    let acc2 = b.udp_accept_any(None).unwrap();
    assert_eq!(acc2.local_port, 5353);
    assert_eq!(
        udp_recv(&mut b, acc2.handle),
        Some((b"fresh".to_vec(), from))
    );

    // Off again: sockets not yet handed out are closed and their ports freed.
    udp_send(&mut a, ua, 6000, b"queued");
    pump(&mut a, &mut b, now);
    b.set_udp_accept_any(false);
    assert_eq!(b.udp_accept_any(None), None);
    let h = b.udp_bind(6000).unwrap();
    b.udp_close(h);
}

#[test]
fn udp_accept_any_is_capped() {
    let now = Instant::now();
    let mut a = Netstack::new(ip(1), now, 1);
    let mut b = Netstack::new(ip(2), now, 2);
    b.set_udp_accept_any(true);
    let ua = a.udp_bind(9).unwrap();
    let total = MAX_UDP_ACCEPT_ANY as u16 + 4;
    for port in 1000..1000 + total {
        udp_send(&mut a, ua, port, b"x");
        if port % 64 == 0 {
            pump(&mut a, &mut b, now);
        }
    }
    pump(&mut a, &mut b, now);
    let mut got = Vec::new();
    while let Some(acc) = b.udp_accept_any(None) {
        got.push(acc);
    }
    assert_eq!(got.len(), MAX_UDP_ACCEPT_ANY);
    // Freeing one makes room for one more.
    b.udp_close(got[0].handle);
    udp_send(&mut a, ua, 2000, b"y");
    pump(&mut a, &mut b, now);
    assert_eq!(b.udp_accept_any(None).map(|a| a.local_port), Some(2000));
}
