//! Recovery on crafted segments: holes, lost resends, masked duplicates, tail probes,
//! window cuts, garbage.
#![allow(clippy::unwrap_used)]

use super::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::flow::{DEFAULT_MSS, LossMeter};

const US: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1);
const PEER: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 2);
const ISN: u32 = 0xffff_f000; // wraps within the test's first segments
const MSS: u32 = 1000;

struct Pkt {
    from_us: bool,
    seq: u32,
    ack: Option<u32>,
    window: u16,
    len: usize,
    sack: [Option<(u32, u32)>; 3],
    control: TcpControl,
    wscale: Option<u8>,
}

impl Pkt {
    fn data(i: u32) -> Self {
        Self {
            from_us: true,
            seq: ISN.wrapping_add(i * MSS),
            ack: Some(77),
            window: 500,
            len: MSS as usize,
            sack: [None; 3],
            control: TcpControl::None,
            wscale: None,
        }
    }

    fn ack(upto: u32, window: u16) -> Self {
        Self {
            from_us: false,
            seq: 77,
            ack: Some(ISN.wrapping_add(upto * MSS)),
            window,
            len: 0,
            sack: [None; 3],
            control: TcpControl::None,
            wscale: None,
        }
    }

    /// SACK block `i` covering segments `from..to`.
    fn block(mut self, i: usize, from: u32, to: u32) -> Self {
        self.sack[i] = Some((ISN.wrapping_add(from * MSS), ISN.wrapping_add(to * MSS)));
        self
    }

    fn sack(self, from: u32, to: u32) -> Self {
        self.block(0, from, to)
    }

    fn sack2(self, from: u32, to: u32) -> Self {
        self.block(1, from, to)
    }

    fn bytes(&self) -> Vec<u8> {
        let payload = vec![0x5a; self.len];
        let (src, dst, sport, dport) = if self.from_us {
            (US, PEER, 40000, 22)
        } else {
            (PEER, US, 22, 40000)
        };
        let tcp = TcpRepr {
            src_port: sport,
            dst_port: dport,
            control: self.control,
            seq_number: TcpSeqNumber(self.seq as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: self.window,
            window_scale: self.wscale,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: self.sack,
            timestamp: None,
            payload: &payload,
        };
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; 40 + tcp.buffer_len()];
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        tcp.emit(
            &mut TcpPacket::new_unchecked(&mut buf[40..]),
            &IpAddress::Ipv6(src),
            &IpAddress::Ipv6(dst),
            &ChecksumCapabilities::default(),
        );
        buf
    }
}

/// Sequence number, ACK number and window of a packet whose checksum must hold.
fn fields(p: &[u8]) -> (u32, u32, u16) {
    let ip = Ipv6Packet::new_checked(p).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(
        tcp.verify_checksum(
            &IpAddress::Ipv6(ip.src_addr()),
            &IpAddress::Ipv6(ip.dst_addr())
        ),
        "checksum must hold after a rewrite"
    );
    (
        tcp.seq_number().0 as u32,
        tcp.ack_number().0 as u32,
        tcp.window_len(),
    )
}

/// The window of a packet, in bytes (the tests' peers do not scale it).
fn window_of(p: &[u8]) -> u64 {
    u64::from(fields(p).2)
}

fn ms(n: u64) -> Duration {
    Duration::from_micros(n * 100) // tenths of a millisecond
}

struct Bed {
    r: Recovery,
    t0: Instant,
    out: Vec<BytesMut>,
}

impl Bed {
    #[allow(clippy::disallowed_methods)] // the tests' epoch; every later time is explicit
    fn new() -> Self {
        Self {
            r: Recovery::new(Duration::from_micros(500), 0, 1),
            t0: Instant::now(),
            out: Vec::new(),
        }
    }
    fn send(&mut self, at: u64, p: Pkt) {
        self.r.on_outbound(&p.bytes(), self.t0 + ms(at));
    }
    /// Sends data segments `segs` at `at`.
    fn burst(&mut self, at: u64, segs: std::ops::Range<u32>) {
        for i in segs {
            self.send(at, Pkt::data(i));
        }
    }
    /// Delivers an inbound packet; returns it as the stack would see it.
    fn recv(&mut self, at: u64, p: Pkt) -> Vec<u8> {
        let mut b = p.bytes();
        self.r.on_inbound(&mut b, self.t0 + ms(at), &mut self.out);
        b
    }
    fn poll(&mut self, at: u64) {
        self.r.poll(self.t0 + ms(at), &mut self.out);
    }
}

#[test]
fn a_hole_below_sacked_data_is_resent_once_the_reordering_window_passes() {
    let mut b = Bed::new();
    b.burst(0, 0..6);
    // Our stack has since acknowledged more of the peer's data.
    let mut ours = Pkt::ack(0, 0);
    ours.from_us = true;
    ours.seq = ISN.wrapping_add(6 * MSS);
    ours.ack = Some(99);
    ours.window = 321;
    b.send(5, ours);
    b.recv(10, Pkt::ack(1, 400)); // RTT 1 ms
    assert!(b.out.is_empty());
    // Segment 1 is missing; 2 arrived.
    b.recv(11, Pkt::ack(1, 400).sack(2, 3));
    assert!(b.out.is_empty(), "still inside the reordering window");
    // Sent at 0, the segment after it took 1.1 ms, the window is 1/4 of 1 ms.
    assert_eq!(b.r.poll_at(), Some(b.t0 + Duration::from_micros(1350)));
    b.poll(13);
    assert!(b.out.is_empty());
    b.poll(14);
    assert_eq!(b.out.len(), 1, "the hole is resent");
    let (seq, ack, win) = fields(&b.out[0]);
    assert_eq!(seq, ISN.wrapping_add(MSS));
    assert_eq!(
        (ack, win),
        (99, 321),
        "resent with our latest ACK and window"
    );
    assert_eq!(b.r.stats().rack_retransmits, 1);
    // Not again until something sent after the resend is delivered.
    b.poll(30);
    b.recv(31, Pkt::ack(1, 400).sack(2, 6));
    assert_eq!(b.out.len(), 1);
    // The resend arrives: the ACK covers everything SACKed.
    b.recv(33, Pkt::ack(6, 400));
    assert_eq!(b.out.len(), 1);
    assert_eq!(b.r.flows(), 1);
}

#[test]
fn a_lost_resend_is_found_like_any_lost_segment() {
    let mut b = Bed::new();
    b.burst(0, 0..4);
    b.recv(10, Pkt::ack(0, 400).sack(1, 2));
    b.poll(20);
    assert_eq!(b.out.len(), 1, "segment 0 resent");
    // New data after the resend, delivered, while the resend itself was lost.
    b.send(21, Pkt::data(4));
    b.recv(31, Pkt::ack(0, 400).sack(1, 5));
    b.poll(45);
    assert_eq!(b.out.len(), 2, "segment 0 resent again");
    assert_eq!(fields(&b.out[1]).0, ISN);
}

#[test]
fn random_loss_is_repaired_without_smoltcp_counting_duplicates() {
    let mut b = Bed::new();
    b.burst(0, 0..200);
    b.recv(10, Pkt::ack(1, 400));
    // Segment 1 lost: smoltcp never sees two equal duplicates in a row.
    let mut seen = Vec::new();
    for k in 0..6 {
        let p = b.recv(11 + k, Pkt::ack(1, 400).sack(2, 3 + k as u32));
        seen.push(fields(&p).2);
        b.poll(11 + k);
    }
    assert_eq!(seen, [399, 400, 399, 400, 399, 400]);
    // All were sent at 0 and the last SACKed one took 1.6 ms: the window is 0.25 ms.
    b.poll(19);
    assert_eq!(b.out.len(), 1, "the hole is resent by RACK");
    assert_eq!(b.r.stats().masked_dup_acks, 3);
}

#[test]
fn smoltcp_sees_the_congestion_window_and_heavy_loss_cuts_it_once_per_round_trip() {
    let mut b = Bed::new();
    let mss = u64::from(MSS);
    b.burst(0, 0..10);
    // The initial window (10 segments of the assumed size) and, in slow start, one
    // segment more for the one delivered.
    let first = b.recv(10, Pkt::ack(1, 20_000));
    assert_eq!(window_of(&first), 10 * DEFAULT_MSS + mss);
    // The peer's own window still wins when smaller.
    let small = b.recv(10, Pkt::ack(1, 6_000));
    assert_eq!(window_of(&small), 6_000);
    b.burst(11, 10..12);
    // Segments 1, 2 and 3 are lost, 4 arrived: 3 of 4 is heavy loss, a cut.
    let before = window_of(&b.recv(12, Pkt::ack(1, 20_000).sack(4, 5))) - mss;
    b.poll(20);
    assert_eq!(b.out.len(), 3);
    assert_eq!(b.r.stats().congestion_cuts, 1);
    // 70 % of the window, and what was SACKed no longer counts as in flight (the
    // window grew by a few bytes for segment 5 since).
    let cut = window_of(&b.recv(21, Pkt::ack(1, 20_000).sack(4, 6))) - 2 * mss;
    assert!(
        (before / 10 * 7..before / 10 * 7 + mss / 4).contains(&cut),
        "{cut} after {before}"
    );
    // More losses of the same round trip: no second cut.
    b.recv(22, Pkt::ack(1, 20_000).sack(4, 8).sack2(9, 10));
    b.poll(30);
    assert_eq!(b.out.len(), 4, "segment 8 resent");
    assert_eq!(b.r.stats().congestion_cuts, 1);
}

#[test]
fn a_receiver_that_falls_behind_makes_the_window_back_off() {
    let mut b = Bed::new();
    b.burst(0, 0..20);
    let open = window_of(&b.recv(10, Pkt::ack(1, 20_000)));
    // The receiver's window shrinks to a third of its largest: still keeping up.
    b.recv(11, Pkt::ack(2, 7_000));
    assert_eq!(b.r.stats().receiver_cuts, 0);
    // Below a quarter it falls behind.
    b.recv(12, Pkt::ack(3, 4_000));
    assert_eq!(b.r.stats().receiver_cuts, 1);
    // Once per round trip: segments sent before the cut do not count.
    b.recv(13, Pkt::ack(4, 1_000));
    assert_eq!(b.r.stats().receiver_cuts, 1);
    let back = window_of(&b.recv(14, Pkt::ack(5, 20_000)));
    assert!(
        back < open,
        "the window did not shrink: {back} against {open}"
    );
}

#[test]
fn loss_is_judged_over_a_thousand_segments() {
    let seen = |m: &mut LossMeter, delivered: u32, lost: u32| {
        m.delivered += delivered;
        m.lost += lost;
        m.judge();
    };
    let mut m = LossMeter::default();
    // Small windows: 4 losses in 100 segments is no verdict yet.
    seen(&mut m, 96, 4);
    assert!(!m.congested(false));
    // Except in slow start, where the window doubles each round trip.
    assert!(m.congested(true));
    seen(&mut m, 884, 16);
    assert!(!m.congested(false), "20 of 1000 is 2 %, not above");
    seen(&mut m, 975, 25);
    assert!(m.congested(false), "2.5 %");
    // The verdict holds until the next judgement.
    seen(&mut m, 500, 0);
    assert!(m.congested(false));
    seen(&mut m, 490, 10);
    assert!(!m.congested(false), "1 %");
    // Heavy loss counts before any judgement, but not two losses of a tiny window.
    let mut m = LossMeter {
        delivered: 3,
        lost: 2,
        ..LossMeter::default()
    };
    assert!(!m.congested(false));
    m.lost = 3;
    assert!(m.congested(false));
}

#[test]
fn a_clean_flow_stops_keeping_copies_until_a_sack() {
    let mut b = Bed::new();
    let n = (PROBATION / u64::from(MSS)) as u32 + 1;
    for i in 0..n {
        b.send(0, Pkt::data(i));
        if i % 100 == 99 {
            b.recv(1, Pkt::ack(i + 1, 400));
        }
    }
    assert_eq!(b.r.poll_at(), None, "nothing kept, nothing to time");
    // Segment n is lost; smoltcp repairs it (no copy), the SACK starts copying again.
    b.send(2, Pkt::data(n));
    b.send(2, Pkt::data(n + 1));
    let first = b.recv(10, Pkt::ack(n, 400).sack(n + 1, n + 2));
    let second = b.recv(11, Pkt::ack(n, 400).sack(n + 1, n + 2));
    assert_eq!((fields(&first).2, fields(&second).2), (400, 400));
    assert_eq!(b.r.stats().rearmed_flows, 1);
    b.poll(100);
    assert!(b.out.is_empty());
    b.send(101, Pkt::data(n + 2));
    assert!(b.r.poll_at().is_some(), "what is sent from now on is kept");
}

#[test]
fn a_silent_tail_gets_one_probe() {
    let mut b = Bed::new();
    b.burst(0, 0..3);
    b.recv(10, Pkt::ack(1, 400)); // srtt 1 ms: probe after 2 ms + 0.5 ms
    b.poll(30);
    assert!(b.out.is_empty());
    b.poll(35);
    assert_eq!(b.out.len(), 1);
    assert_eq!(
        fields(&b.out[0]).0,
        ISN.wrapping_add(2 * MSS),
        "the last segment"
    );
    assert_eq!(b.r.stats().probes, 1);
    b.poll(100);
    assert_eq!(b.out.len(), 1, "one probe, then smoltcp's timeout");
    // Everything acknowledged: nothing left to time.
    b.recv(101, Pkt::ack(3, 400));
    assert_eq!(b.r.poll_at(), None);
}

#[test]
fn a_fin_behind_a_hole_is_resent_alone_once_the_data_is_in() {
    let mut b = Bed::new();
    b.burst(0, 0..3);
    let mut last = Pkt::data(3);
    last.control = TcpControl::Fin;
    b.send(0, last);
    // Segment 1 is lost; the peer holds 2 and 3's data, and dropped the FIN that
    // came ahead of the hole (smoltcp keeps no out-of-order FIN).
    b.recv(10, Pkt::ack(1, 400).sack(2, 4));
    b.poll(20);
    assert_eq!(b.out.len(), 1, "the hole is repaired");
    assert_eq!(fields(&b.out[0]).0, ISN.wrapping_add(MSS));
    // All data is in, the FIN is not: sent before the repair that just arrived, it is
    // lost, and goes again at once.
    b.recv(30, Pkt::ack(4, 400));
    assert_eq!(b.out.len(), 2, "the FIN is resent");
    let fin = &b.out[1];
    let (seq, ack, _) = fields(fin);
    assert_eq!(
        seq,
        ISN.wrapping_add(4 * MSS),
        "sequence number after the data"
    );
    assert_eq!(ack, 77);
    let ip = Ipv6Packet::new_checked(&fin[..]).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.fin() && tcp.ack());
    assert!(
        tcp.payload().is_empty(),
        "a FIN on data the peer has would be ignored by smoltcp"
    );
    // Its acknowledgement ends the flow's timers.
    let mut fin_acked = Pkt::ack(4, 400);
    fin_acked.ack = Some(ISN.wrapping_add(4 * MSS + 1));
    b.recv(110, fin_acked);
    assert_eq!(b.r.poll_at(), None);
}

#[test]
fn resets_forget_flows_and_garbage_is_ignored() {
    let mut b = Bed::new();
    b.send(0, Pkt::data(0));
    assert_eq!(b.r.flows(), 1);
    let mut rst = Pkt::ack(0, 0);
    rst.control = TcpControl::Rst;
    b.recv(1, rst);
    assert_eq!(b.r.flows(), 0);

    b.send(2, Pkt::data(0));
    let good = Pkt::ack(1, 400).bytes();
    for cut in 0..good.len() {
        let mut p = good[..cut].to_vec();
        b.r.on_inbound(&mut p, b.t0, &mut b.out);
        b.r.on_outbound(&p, b.t0);
    }
    let mut noise: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
    b.r.on_inbound(&mut noise, b.t0, &mut b.out);
    // An ACK beyond anything sent is not believed.
    b.recv(3, Pkt::ack(50, 400));
    b.poll(1000);
    assert_eq!(b.out.len(), 1, "only the tail probe for the real segment");
    assert_eq!(b.r.flows(), 1);
}

#[test]
fn the_peers_window_scale_comes_from_its_syn_and_outlives_an_idle_flow() {
    let mut b = Bed::new();
    let mut syn_ack = Pkt::ack(0, 1000);
    syn_ack.control = TcpControl::Syn;
    syn_ack.seq = 76;
    syn_ack.wscale = Some(3);
    b.recv(0, syn_ack);
    let clamped = |b: &mut Bed, at: u64, upto: u32| {
        b.burst(at, upto - 1..upto);
        // The peer offers 60,000 units of 8 bytes; the congestion window is smaller.
        window_of(&b.recv(at + 10, Pkt::ack(upto, 60_000)))
    };
    let first = clamped(&mut b, 1, 1);
    assert!((1_000..10_000).contains(&first), "{first} units");
    // Idle for long with nothing in flight: the flow is forgotten, the scale is not.
    b.poll(20);
    b.poll(20 + 110_000);
    assert_eq!(b.r.flows(), 0);
    let again = clamped(&mut b, 110_030, 2);
    assert_eq!(again, first, "a fresh window in the same units");
}

#[test]
fn finished_flows_are_forgotten_and_a_full_table_makes_room() {
    let mut b = Bed::new();
    b.send(0, Pkt::data(0));
    b.recv(10, Pkt::ack(1, 400));
    b.poll(20);
    assert_eq!(b.r.flows(), 1, "kept while recently active");
    b.poll(20 + 110_000);
    assert_eq!(
        b.r.flows(),
        0,
        "an idle flow with nothing in flight is forgotten"
    );

    // A full table of finished flows makes room for a new one.
    for port in 0..MAX_FLOWS as u16 {
        let mut p = Pkt::data(0).bytes();
        let ip = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        let (src, dst) = (
            IpAddress::Ipv6(ip.src_addr()),
            IpAddress::Ipv6(ip.dst_addr()),
        );
        let mut tcp = TcpPacket::new_checked(&mut p[40..]).unwrap();
        tcp.set_src_port(1000 + port);
        tcp.fill_checksum(&src, &dst);
        b.r.on_outbound(&p, b.t0);
        if port > 0 {
            // Acknowledge all but the first: their copies are gone.
            let mut a = Pkt::ack(1, 400).bytes();
            let mut tcp = TcpPacket::new_checked(&mut a[40..]).unwrap();
            tcp.set_dst_port(1000 + port);
            tcp.fill_checksum(&dst, &src);
            b.r.on_inbound(&mut a, b.t0, &mut b.out);
        }
    }
    assert_eq!(b.r.flows(), MAX_FLOWS);
    b.send(1, Pkt::data(0));
    assert_eq!(
        b.r.flows(),
        2,
        "the flow with data in flight and the new one"
    );
}

#[test]
fn a_needless_resend_widens_the_reordering_window() {
    let mut b = Bed::new();
    b.burst(0, 0..4);
    b.recv(10, Pkt::ack(0, 400).sack(1, 2));
    b.poll(13);
    assert_eq!(b.out.len(), 1);
    // The original of segment 0 arrives late, long before the resend could.
    b.recv(14, Pkt::ack(2, 400));
    b.send(15, Pkt::data(4));
    b.send(15, Pkt::data(5));
    b.recv(25, Pkt::ack(2, 400).sack(3, 4));
    // Segment 2 was sent at 0 like segment 3, which took 2.5 ms; the window is now
    // 2/4 of the 1 ms minimum round trip.
    let at = b.r.poll_at().unwrap();
    assert_eq!(at, b.t0 + ms(0) + ms(25) + ms(5));
}
