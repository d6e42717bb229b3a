//! Disco wire tests: exact bytes (the box bytes come from an independent Python
//! XSalsa20-Poly1305 implementation checked against NaCl's own test vector), roundtrips,
//! and no panics on hostile input.

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn key_a() -> DiscoPrivate {
    DiscoPrivate::from_bytes(std::array::from_fn(|i| i as u8 + 1))
}

fn key_b() -> DiscoPrivate {
    DiscoPrivate::from_bytes(std::array::from_fn(|i| i as u8 + 33))
}

const NONCE: [u8; NONCE_LEN] = [
    0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f,
    0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57,
];

fn txid() -> TxId {
    TxId(std::array::from_fn(|i| i as u8))
}

fn v4_ep() -> SocketAddr {
    "192.0.2.1:41641".parse().expect("addr")
}

fn ping() -> Message {
    Message::Ping(Ping {
        tx_id: txid(),
        node_key: NodePublic::from_bytes([0xaa; 32]),
        padding: 0,
    })
}

fn pong() -> Message {
    Message::Pong(Pong {
        tx_id: txid(),
        src: v4_ep(),
    })
}

fn cmm() -> Message {
    Message::CallMeMaybe(CallMeMaybe {
        endpoints: vec![v4_ep(), "[2001:db8::1]:3478".parse().expect("addr")],
    })
}

#[test]
fn plaintext_exact_bytes() {
    let mut want = vec![0x01, 0x00];
    want.extend(0u8..12);
    want.extend([0xaa; 32]);
    assert_eq!(ping().encode(), want);
    assert_eq!(ping().encode().len(), 2 + PING_BODY_LEN);

    let want = hex("0200 000102030405060708090a0b 00000000000000000000ffffc0000201 a2a9");
    assert_eq!(pong().encode(), want);

    let want =
        hex("0300 00000000000000000000ffffc0000201 a2a9 20010db8000000000000000000000001 0d96");
    assert_eq!(cmm().encode(), want);

    let padded = Message::Ping(Ping {
        tx_id: txid(),
        node_key: NodePublic::from_bytes([0xaa; 32]),
        padding: 5,
    });
    let enc = padded.encode();
    assert_eq!(enc.len(), 2 + PING_BODY_LEN + 5);
    assert_eq!(&enc[enc.len() - 5..], &[0; 5]);
    assert_eq!(Message::decode(&enc), Ok(padded));
}

#[test]
fn frame_exact_bytes() {
    let a = key_a();
    let b = key_b();
    assert_eq!(
        a.public().to_hex(),
        "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c"
    );
    let ab = PeerBox::new(&a, b.public());
    let cases = [
        (
            ping(),
            "5453f09f92ac07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c\
             404142434445464748494a4b4c4d4e4f5051525354555657b8a4274f017e83f71fa20980834d72\
             a7caff8d45b08bfb20c3a4741605e2856274fccce4d033df62701940a984324d7287b4808da7be\
             fe6ff0e442624c51",
        ),
        (
            pong(),
            "5453f09f92ac07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c\
             404142434445464748494a4b4c4d4e4f5051525354555657a96e505c6b7bef0ca6ca582127ef35\
             b4c9ff8d45b08bfb20c3a4741605e22fc8de56664e7a9975c8254c2a032c994571",
        ),
        (
            cmm(),
            "5453f09f92ac07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c\
             404142434445464748494a4b4c4d4e4f5051525354555657a1d3ed7b7603ae04ca0f5c053d0d8c\
             62c8ff8d44b288ff25c5a37c1ff016efc8dc57c4e75a987870dab3ea032e98e7d82d1e2a260082",
        ),
    ];
    let ba = PeerBox::new(&b, a.public());
    for (msg, want) in cases {
        let frame = ab.seal_with_nonce(&msg, NONCE);
        assert_eq!(frame, hex(want), "{msg:?}");
        assert_eq!(frame.len(), HEADER_LEN + BOX_OVERHEAD + msg.encode().len());
        assert_eq!(ba.open(&frame), Ok(msg));
    }
    // An unpadded ping is Tailscale's minimum ping size.
    assert_eq!(ab.seal(&ping()).len(), MIN_PING_PACKET_LEN);
    assert_eq!(MIN_PING_PACKET_LEN, 124);
}

#[test]
fn random_nonces_differ_and_open() {
    let (a, b) = (key_a(), key_b());
    let ab = PeerBox::new(&a, b.public());
    let ba = PeerBox::new(&b, a.public());
    let (f1, f2) = (ab.seal(&cmm()), ab.seal(&cmm()));
    assert_ne!(f1, f2);
    assert_eq!(ba.open(&f1), Ok(cmm()));
    assert_eq!(ba.open(&f2), Ok(cmm()));
    assert_eq!(sender_key(&f1), Some(a.public()));
    assert_eq!(ba.peer(), a.public());
}

#[test]
fn wrong_key_fails_to_open() {
    let (a, b, c) = (key_a(), key_b(), DiscoPrivate::generate());
    let frame = PeerBox::new(&a, b.public()).seal(&ping());
    // c believes the packet comes from a, but the box was not sealed to c.
    assert_eq!(
        PeerBox::new(&c, a.public()).open(&frame),
        Err(DiscoError::Decrypt)
    );
    // b expects c, but the packet names a as its sender.
    assert_eq!(
        PeerBox::new(&b, c.public()).open(&frame),
        Err(DiscoError::WrongSender(a.public()))
    );
    // A sender key rewritten to c's does not open either.
    let mut forged = frame.clone();
    forged[MAGIC.len()..MIN_LOOKS_LIKE_LEN].copy_from_slice(c.public().as_bytes());
    assert_eq!(
        PeerBox::new(&b, c.public()).open(&forged),
        Err(DiscoError::Decrypt)
    );
}

#[test]
fn decode_rules() {
    // Unknown type, empty, truncated bodies.
    assert_eq!(Message::decode(&[]), Err(DiscoError::Empty));
    assert_eq!(Message::decode(&[1]), Err(DiscoError::Empty));
    assert_eq!(Message::decode(&[9, 0]), Err(DiscoError::UnknownType(9)));
    let p = ping().encode();
    assert_eq!(
        Message::decode(&p[..p.len() - 1]),
        Err(DiscoError::Truncated(TYPE_PING))
    );
    let q = pong().encode();
    assert_eq!(
        Message::decode(&q[..q.len() - 1]),
        Err(DiscoError::Truncated(TYPE_PONG))
    );
    // Trailing bytes are ignored by Pong.
    let mut q2 = q.clone();
    q2.extend([1, 2, 3]);
    assert_eq!(Message::decode(&q2), Ok(pong()));
    // CallMeMaybe: bad length or version → empty list; zero endpoints is fine.
    let mut c = cmm().encode();
    c.push(0);
    assert_eq!(
        Message::decode(&c),
        Ok(Message::CallMeMaybe(CallMeMaybe::default()))
    );
    let mut c = cmm().encode();
    c[1] = 1;
    assert_eq!(
        Message::decode(&c),
        Ok(Message::CallMeMaybe(CallMeMaybe::default()))
    );
    assert_eq!(
        Message::decode(&[3, 0]),
        Ok(Message::CallMeMaybe(CallMeMaybe::default()))
    );
    // IPv4-mapped comes back as IPv4; plain IPv6 stays IPv6.
    let Ok(Message::CallMeMaybe(c)) = Message::decode(&cmm().encode()) else {
        panic!("cmm");
    };
    assert!(c.endpoints[0].is_ipv4());
    assert!(c.endpoints[1].is_ipv6());
}

#[test]
fn classify_in_magicsock_order() {
    // A STUN binding request as Tailscale sends it (header is what matters).
    let mut stun = vec![0x00, 0x01, 0x00, 0x14, 0x21, 0x12, 0xA4, 0x42];
    stun.extend([7; 12]);
    assert_eq!(classify(&stun), PacketKind::Stun);
    // Binding success response: type 0x0101.
    stun[0] = 0x01;
    assert_eq!(classify(&stun), PacketKind::Stun);
    // Cookie wrong → not STUN (and not anything else).
    let mut bad = stun.clone();
    bad[4] = 0;
    assert_eq!(classify(&bad), PacketKind::Unknown);
    // First two bits set → not STUN.
    let mut bad = stun.clone();
    bad[0] = 0x41;
    assert_eq!(classify(&bad), PacketKind::Unknown);
    // Truncated STUN header.
    assert_eq!(classify(&stun[..19]), PacketKind::Unknown);

    let frame = PeerBox::new(&key_a(), key_b().public()).seal(&ping());
    assert_eq!(classify(&frame), PacketKind::Disco);
    assert!(looks_like_disco(&frame[..MIN_LOOKS_LIKE_LEN]));
    assert!(!looks_like_disco(&frame[..MIN_LOOKS_LIKE_LEN - 1]));
    assert_eq!(classify(&frame[..37]), PacketKind::Unknown);
    assert_eq!(sender_key(&frame[..37]), None);

    for ty in 1..=4u8 {
        assert_eq!(classify(&[ty, 0, 0, 0, 9, 9]), PacketKind::WireGuard);
    }
    assert_eq!(classify(&[5, 0, 0, 0]), PacketKind::Unknown);
    assert_eq!(classify(&[1, 0, 1, 0]), PacketKind::Unknown);
    assert_eq!(classify(&[1, 0, 0]), PacketKind::Unknown);
    assert_eq!(classify(&[]), PacketKind::Unknown);
}

fn any_ep() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)).to_canonical(), port)
        }),
    ]
}

fn any_msg() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<[u8; 12]>(), any::<[u8; 32]>(), 0usize..64).prop_map(|(t, k, padding)| {
            Message::Ping(Ping {
                tx_id: TxId(t),
                node_key: NodePublic::from_bytes(k),
                padding,
            })
        }),
        (any::<[u8; 12]>(), any_ep()).prop_map(|(t, src)| Message::Pong(Pong {
            tx_id: TxId(t),
            src
        })),
        proptest::collection::vec(any_ep(), 0..8)
            .prop_map(|endpoints| Message::CallMeMaybe(CallMeMaybe { endpoints })),
    ]
}

proptest! {
    #[test]
    fn prop_roundtrip(msg in any_msg()) {
        let (a, b) = (key_a(), key_b());
        let frame = PeerBox::new(&a, b.public()).seal(&msg);
        prop_assert_eq!(frame.len(), HEADER_LEN + BOX_OVERHEAD + msg.encode().len());
        prop_assert_eq!(classify(&frame), PacketKind::Disco);
        prop_assert_eq!(Message::decode(&msg.encode()), Ok(msg.clone()));
        prop_assert_eq!(PeerBox::new(&b, a.public()).open(&frame), Ok(msg));
    }

    #[test]
    fn prop_truncated_or_flipped_never_opens(msg in any_msg(), cut in 0usize..200, bit in 0usize..2000) {
        let (a, b) = (key_a(), key_b());
        let frame = PeerBox::new(&a, b.public()).seal(&msg);
        let ba = PeerBox::new(&b, a.public());
        let cut = cut % frame.len();
        prop_assert!(ba.open(&frame[..cut]).is_err());
        let mut flipped = frame.clone();
        let bit = bit % (frame.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(ba.open(&flipped).is_err());
        // The plaintext parser copes with any cut too.
        let plain = msg.encode();
        let _ = Message::decode(&plain[..cut % (plain.len() + 1)]);
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160), magic in any::<bool>()) {
        let mut bytes = bytes;
        if magic && bytes.len() >= MAGIC.len() {
            bytes[..MAGIC.len()].copy_from_slice(&MAGIC);
        }
        let _ = classify(&bytes);
        let _ = sender_key(&bytes);
        let _ = Message::decode(&bytes);
        let ba = PeerBox::new(&key_b(), key_a().public());
        prop_assert!(ba.open(&bytes).is_err());
    }
}
