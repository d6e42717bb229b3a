use std::net::{Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use tether_key::{NodePrivate, NodePublic};

use super::*;
use proptest::prelude::*;

fn k(b: u8) -> NodePublic {
    NodePublic::from_bytes([b; 32])
}

fn hex_of(f: &Frame) -> String {
    hex::encode(f.to_bytes())
}

fn key_hex(b: u8) -> String {
    format!("{b:02x}").repeat(32)
}

#[test]
fn exact_bytes_for_every_frame_type() {
    let cases: Vec<(Frame, String)> = vec![
        (
            Frame::ServerKey { key: k(1) },
            format!("0100000028{}{}", "44455250f09f9491", key_hex(1)),
        ),
        (
            Frame::ClientInfo {
                key: k(2),
                sealed: Bytes::from_static(&[9, 8]),
            },
            format!("0200000022{}0908", key_hex(2)),
        ),
        (
            Frame::ServerInfo {
                sealed: Bytes::from_static(&[7]),
            },
            "030000000107".to_string(),
        ),
        (
            Frame::SendPacket {
                dst: k(3),
                packet: Bytes::from_static(b"hi"),
            },
            format!("0400000022{}6869", key_hex(3)),
        ),
        (
            Frame::RecvPacket {
                src: k(4),
                packet: Bytes::from_static(b"yo"),
            },
            format!("0500000022{}796f", key_hex(4)),
        ),
        (Frame::KeepAlive, "0600000000".to_string()),
        (
            Frame::NotePreferred { preferred: true },
            "070000000101".to_string(),
        ),
        (
            Frame::PeerGone {
                key: k(5),
                reason: PeerGoneReason::NotHere,
            },
            format!("0800000021{}01", key_hex(5)),
        ),
        (
            Frame::PeerPresent {
                key: k(6),
                addr: Some("192.0.2.1:41641".parse().expect("addr")),
                flags: Some(PEER_PRESENT_IS_REGULAR),
            },
            format!(
                "0900000033{}00000000000000000000ffffc0000201a2a901",
                key_hex(6)
            ),
        ),
        (
            Frame::ForwardPacket {
                src: k(7),
                dst: k(8),
                packet: Bytes::from_static(b"x"),
            },
            format!("0a00000041{}{}78", key_hex(7), key_hex(8)),
        ),
        (Frame::WatchConns, "1000000000".to_string()),
        (
            Frame::ClosePeer { key: k(9) },
            format!("1100000020{}", key_hex(9)),
        ),
        (
            Frame::Ping {
                data: [1, 2, 3, 4, 5, 6, 7, 8],
            },
            "12000000080102030405060708".to_string(),
        ),
        (
            Frame::Pong {
                data: [8, 7, 6, 5, 4, 3, 2, 1],
            },
            "13000000080807060504030201".to_string(),
        ),
        (
            Frame::Health {
                problem: "bad".into(),
            },
            "1400000003626164".to_string(),
        ),
        (
            Frame::Restarting {
                reconnect_in_ms: 1000,
                try_for_ms: 0x0001_0000,
            },
            "1500000008000003e800010000".to_string(),
        ),
        (
            Frame::Unknown {
                ty: 0x7f,
                payload: Bytes::from_static(&[1]),
            },
            "7f0000000101".to_string(),
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (f, want) in cases {
        assert_eq!(hex_of(&f), want, "{f:?}");
        if let Some(t) = f.frame_type() {
            seen.insert(t);
        }
        let mut d = FrameDecoder::new();
        d.push(&f.to_bytes());
        assert_eq!(d.next_frame().expect("decode"), Some(f.clone()));
        assert_eq!(d.buffered(), 0);
    }
    assert_eq!(seen.len(), FrameType::ALL.len(), "every known type covered");
}

#[test]
fn peer_gone_without_reason_means_disconnected() {
    let f = Frame::decode(0x08, Bytes::from(vec![3u8; 32])).expect("decode");
    assert_eq!(
        f,
        Frame::PeerGone {
            key: k(3),
            reason: PeerGoneReason::Disconnected
        }
    );
}

#[test]
fn peer_present_short_forms() {
    let f = Frame::decode(0x09, Bytes::from(vec![3u8; 32])).expect("decode");
    assert_eq!(
        f,
        Frame::PeerPresent {
            key: k(3),
            addr: None,
            flags: None
        }
    );
    let mut p = vec![3u8; 32];
    p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    p.extend_from_slice(&[0, 80]);
    let f = Frame::decode(0x09, Bytes::from(p)).expect("decode");
    assert_eq!(
        f,
        Frame::PeerPresent {
            key: k(3),
            addr: Some("[::1]:80".parse().expect("a")),
            flags: None
        }
    );
}

#[test]
fn server_key_checks_magic_and_ignores_future_bytes() {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&[1; 32]);
    p.extend_from_slice(b"future");
    assert_eq!(
        Frame::decode(1, Bytes::from(p.clone())),
        Ok(Frame::ServerKey { key: k(1) })
    );
    p[0] = b'X';
    assert_eq!(Frame::decode(1, Bytes::from(p)), Err(FrameError::BadMagic));
    assert!(matches!(
        Frame::decode(1, Bytes::from_static(&MAGIC)),
        Err(FrameError::Truncated { .. })
    ));
}

#[test]
fn oversize_packet_and_ping_rejected() {
    let mut p = vec![0u8; 32 + MAX_PACKET_SIZE + 1];
    p[0] = 1;
    assert!(matches!(
        Frame::decode(4, Bytes::from(p)),
        Err(FrameError::TooLong { .. })
    ));
    assert!(Frame::decode(4, Bytes::from(vec![0u8; 32 + MAX_PACKET_SIZE])).is_ok());
    assert!(matches!(
        Frame::decode(0x12, Bytes::from(vec![0u8; 1001])),
        Err(FrameError::TooLong { .. })
    ));
    assert_eq!(
        Frame::decode(0x12, Bytes::from(vec![5u8; 1000])),
        Ok(Frame::Ping { data: [5; 8] }),
        "long pings are accepted, only the first 8 bytes matter"
    );
}

#[test]
fn decoder_rejects_declared_length_over_limit_before_payload() {
    let mut d = FrameDecoder::new();
    d.push(&[0x04, 0x00, 0x10, 0x00, 0x01]);
    assert_eq!(
        d.next_frame(),
        Err(FrameError::TooLarge {
            len: (1 << 20) + 1,
            max: MAX_FRAME_SIZE
        })
    );
    let mut d = FrameDecoder::with_max_frame_len(10);
    d.push(&[0x06, 0, 0, 0, 11]);
    assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
}

#[test]
fn decoder_handles_split_input_and_back_to_back_frames() {
    let a = Frame::SendPacket {
        dst: k(1),
        packet: Bytes::from_static(b"hello"),
    };
    let b = Frame::KeepAlive;
    let mut all = a.to_bytes().to_vec();
    all.extend_from_slice(&b.to_bytes());
    let mut d = FrameDecoder::new();
    let mut out = vec![];
    for byte in &all {
        d.push(std::slice::from_ref(byte));
        while let Some(f) = d.next_frame().expect("ok") {
            out.push(f);
        }
    }
    assert_eq!(out, vec![a, b]);
}

#[test]
fn client_info_json_spellings() {
    let go: ClientInfo = serde_json::from_str(
        r#"{"version":2,"CanAckPings":true,"IsProber":true,"AppName":"x","extra":1}"#,
    )
    .expect("go");
    assert!(go.can_ack_pings && go.is_prober);
    assert_eq!(go.app_name, "x");
    let lower: ClientInfo =
        serde_json::from_str(r#"{"version":2,"canAckPings":true}"#).expect("lower");
    assert!(lower.can_ack_pings);
    let ts: ClientInfo = serde_json::from_str(
        r#"{"can_ack_pings":false,"is_prober":false,"mesh_key":"none","version":2}"#,
    )
    .expect("ts_derp");
    assert_eq!(ts.version, 2);
    assert_eq!(ts.mesh_key_bytes(), None, "\"none\" is not a mesh key");
    let mesh: ClientInfo =
        serde_json::from_str(&format!(r#"{{"meshKey":"{}"}}"#, "ab".repeat(32))).expect("mesh");
    assert_eq!(mesh.mesh_key_bytes(), Some([0xab; 32]));
    let ours = serde_json::to_string(&ClientInfo {
        version: 2,
        can_ack_pings: true,
        ..Default::default()
    })
    .expect("ser");
    assert_eq!(ours, r#"{"version":2,"CanAckPings":true}"#);
}

#[test]
fn server_info_always_has_version() {
    assert_eq!(
        serde_json::to_string(&ServerInfo::default()).expect("ser"),
        r#"{"version":2}"#
    );
    let s: ServerInfo =
        serde_json::from_str(r#"{"version":2,"TokenBucketBytesBurst":5}"#).expect("de");
    assert_eq!(s.token_bucket_bytes_burst, Some(5));
}

#[test]
fn boxes_open_only_with_the_right_keys() {
    let client = NodePrivate::generate();
    let server = NodePrivate::generate();
    let info = ClientInfo {
        version: 2,
        can_ack_pings: true,
        ..Default::default()
    };
    let Frame::ClientInfo { key, sealed } =
        seal_client_info(&client, &server.public(), &info).expect("seal")
    else {
        panic!("not a ClientInfo frame")
    };
    assert_eq!(key, client.public());
    assert_eq!(
        open_client_info(&server, &key, &sealed).expect("open"),
        info
    );
    let other = NodePrivate::generate();
    assert!(matches!(
        open_client_info(&server, &other.public(), &sealed),
        Err(BoxError::Open)
    ));
    let mut bad = sealed.to_vec();
    if let Some(last) = bad.last_mut() {
        *last ^= 1;
    }
    assert!(matches!(
        open_client_info(&server, &key, &bad),
        Err(BoxError::Open)
    ));
    assert!(matches!(
        open_client_info(&server, &key, &[0; 10]),
        Err(BoxError::TooShort(10))
    ));

    let Frame::ServerInfo { sealed } =
        seal_server_info(&server, &client.public(), &ServerInfo::default()).expect("seal")
    else {
        panic!("not a ServerInfo frame")
    };
    assert_eq!(
        open_server_info(&client, &server.public(), &sealed)
            .expect("open")
            .version,
        2
    );
}

#[test]
fn disco_detection() {
    let mut p = DISCO_MAGIC.to_vec();
    p.resize(62, 0);
    assert!(is_disco(&p));
    assert!(!is_disco(&p[..61]));
    p[0] = 0;
    assert!(!is_disco(&p));
}

fn arb_key() -> impl Strategy<Value = NodePublic> {
    any::<[u8; 32]>().prop_map(NodePublic::from_bytes)
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let addr = prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_filter("not v4-mapped", |(ip, _)| Ipv6Addr::from(*ip)
                .to_ipv4_mapped()
                .is_none())
            .prop_map(|(ip, p)| SocketAddr::from((Ipv6Addr::from(ip), p))),
    ];
    prop_oneof![
        arb_key().prop_map(|key| Frame::ServerKey { key }),
        (arb_key(), arb_bytes(200)).prop_map(|(key, sealed)| Frame::ClientInfo { key, sealed }),
        arb_bytes(200).prop_map(|sealed| Frame::ServerInfo { sealed }),
        (arb_key(), arb_bytes(2000)).prop_map(|(dst, packet)| Frame::SendPacket { dst, packet }),
        (arb_key(), arb_bytes(2000)).prop_map(|(src, packet)| Frame::RecvPacket { src, packet }),
        Just(Frame::KeepAlive),
        any::<bool>().prop_map(|preferred| Frame::NotePreferred { preferred }),
        (arb_key(), any::<u8>()).prop_map(|(key, r)| Frame::PeerGone {
            key,
            reason: PeerGoneReason::from_u8(r)
        }),
        (
            arb_key(),
            proptest::option::of((addr, proptest::option::of(any::<u8>())))
        )
            .prop_map(|(key, a)| Frame::PeerPresent {
                key,
                addr: a.map(|x| x.0),
                flags: a.and_then(|x| x.1)
            }),
        (arb_key(), arb_key(), arb_bytes(500))
            .prop_map(|(src, dst, packet)| Frame::ForwardPacket { src, dst, packet }),
        Just(Frame::WatchConns),
        arb_key().prop_map(|key| Frame::ClosePeer { key }),
        any::<[u8; 8]>().prop_map(|data| Frame::Ping { data }),
        any::<[u8; 8]>().prop_map(|data| Frame::Pong { data }),
        ".{0,40}".prop_map(|problem| Frame::Health { problem }),
        (any::<u32>(), any::<u32>()).prop_map(|(reconnect_in_ms, try_for_ms)| Frame::Restarting {
            reconnect_in_ms,
            try_for_ms
        }),
        (0x16u8..=0xff, arb_bytes(100)).prop_map(|(ty, payload)| Frame::Unknown { ty, payload }),
    ]
}

proptest! {
    #[test]
    fn roundtrip_and_length(f in arb_frame()) {
        let b = f.to_bytes();
        prop_assert_eq!(b.len(), f.encoded_len());
        prop_assert_eq!(b[0], f.type_byte());
        prop_assert_eq!(u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize, f.payload_len());
        let mut d = FrameDecoder::new();
        d.push(&b);
        prop_assert_eq!(d.next_frame(), Ok(Some(f)));
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn truncated_input_never_panics_nor_yields(f in arb_frame(), cut in any::<prop::sample::Index>()) {
        let b = f.to_bytes();
        let cut = cut.index(b.len());
        let mut d = FrameDecoder::new();
        d.push(&b[..cut]);
        prop_assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn mutated_input_never_panics(f in arb_frame(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut b = f.to_bytes().to_vec();
        for (i, x) in flips {
            let i = i.index(b.len());
            b[i] ^= x;
        }
        let mut d = FrameDecoder::new();
        d.push(&b);
        for _ in 0..4 {
            match d.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn random_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), ty in any::<u8>()) {
        let _ = Frame::decode(ty, Bytes::from(data.clone()));
        let mut d = FrameDecoder::new();
        d.push(&data);
        while let Ok(Some(_)) = d.next_frame() {}
        let server = NodePrivate::from_bytes([1; 32]);
        let _ = open_client_info(&server, &NodePublic::from_bytes([2; 32]), &data);
        let _ = serde_json::from_slice::<ClientInfo>(&data);
    }
}

#[test]
fn send_packet_from_a_borrowed_slice_encodes_like_the_frame() {
    let to = NodePublic::from_bytes([7; 32]);
    let packet = b"hello over the relay";
    let mut want = BytesMut::new();
    Frame::SendPacket {
        dst: to,
        packet: Bytes::from_static(packet),
    }
    .encode(&mut want);
    let mut got = BytesMut::new();
    Frame::encode_send_packet(&mut got, to, packet);
    assert_eq!(got, want);
}
