use proptest::prelude::*;

use super::*;
use crate::derpmap::tests::arb_map;

#[test]
fn tailnet_ip_uses_prefix_and_uuid_tail() {
    let id = Uuid::from_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    assert_eq!(
        tailnet_ip(id).to_string(),
        "fd7a:115c:a1e0:607:809:a0b:c0d:e0f"
    );
}

#[test]
fn version_check() {
    assert!(check_version("1.0").is_ok());
    assert!(check_version("1.7").is_ok());
    assert!(check_version("2.0").is_err());
    assert!(check_version("one").is_err());
}

#[test]
fn request_json_shape() {
    let id = Uuid::nil();
    let j = serde_json::to_string(&Request::AddTunnel { id }).expect("ser");
    assert_eq!(
        j,
        r#"{"type":"add_tunnel","id":"00000000-0000-0000-0000-000000000000"}"#
    );
    let d: Request = serde_json::from_str(r#"{"type":"disconnect","extra":1}"#).expect("de");
    assert_eq!(d, Request::Disconnect);
}

#[test]
fn hard_nat_verdict_is_optional_on_the_wire() {
    let mut node = Node {
        id: Uuid::nil(),
        key: NodePublic::from_bytes([1; 32]),
        disco: DiscoPublic::from_bytes([2; 32]),
        preferred_derp: 999,
        derp_latency: BTreeMap::new(),
        addresses: vec![],
        allowed_ips: vec![],
        endpoints: vec![],
        mapping_varies_by_dest_ip: None,
    };
    // Unknown: not sent at all, so older peers see the node they know.
    let j = serde_json::to_value(&node).expect("ser");
    assert!(j.get("mapping_varies_by_dest_ip").is_none(), "{j}");
    let back: Node = serde_json::from_value(j).expect("de");
    assert_eq!(back, node);
    node.mapping_varies_by_dest_ip = Some(true);
    let j = serde_json::to_value(&node).expect("ser");
    assert_eq!(j["mapping_varies_by_dest_ip"], true);
    assert_eq!(serde_json::from_value::<Node>(j).expect("de"), node);
}

#[test]
fn derp_map_survives_the_tagged_response() {
    let map: DerpMap = serde_json::from_str(
        r#"{"Regions":{"999":{"RegionID":999,"RegionCode":"tether","Nodes":[{"Name":"999b","HostName":"127.0.0.1"}]}}}"#,
    )
    .expect("map");
    let text = serde_json::to_string(&Response::DerpMap {
        derp_map: map.clone(),
    })
    .expect("ser");
    let back: Response = serde_json::from_str(&text).expect("de");
    assert_eq!(back, Response::DerpMap { derp_map: map });
}

#[test]
fn home_params_survive_the_tagged_response() {
    // Region-score keys are strings in JSON; inside the buffered tagged enum they need
    // the same explicit parse as region keys.
    let map: DerpMap =
        serde_json::from_str(r#"{"Regions":{},"HomeParams":{"RegionScore":{"2":1.5}}}"#)
            .expect("map");
    let text = serde_json::to_string(&Response::DerpMap {
        derp_map: map.clone(),
    })
    .expect("ser");
    let back: Response = serde_json::from_str(&text).expect("de");
    assert_eq!(back, Response::DerpMap { derp_map: map });
}

/// A node with every field set, for the exact-bytes tests.
fn full_node() -> Node {
    Node {
        id: Uuid::from_u128(0x1a),
        key: NodePublic::from_bytes([0x11; 32]),
        disco: DiscoPublic::from_bytes([0x22; 32]),
        preferred_derp: 999,
        derp_latency: BTreeMap::from([("999-v4".to_owned(), 0.25)]),
        addresses: vec!["fd7a:115c:a1e0::1a/128".into()],
        allowed_ips: vec!["fd7a:115c:a1e0::1a/128".into()],
        endpoints: vec!["192.0.2.1:41641".into()],
        mapping_varies_by_dest_ip: Some(false),
    }
}

/// The JSON of [`full_node`], written out by hand from the field attributes.
fn full_node_json() -> String {
    format!(
        concat!(
            r#"{{"id":"00000000-0000-0000-0000-00000000001a","key":"nodekey:{k}","disco":"discokey:{d}","#,
            r#""preferred_derp":999,"derp_latency":{{"999-v4":0.25}},"#,
            r#""addresses":["fd7a:115c:a1e0::1a/128"],"allowed_ips":["fd7a:115c:a1e0::1a/128"],"#,
            r#""endpoints":["192.0.2.1:41641"],"mapping_varies_by_dest_ip":false}}"#
        ),
        k = "11".repeat(32),
        d = "22".repeat(32),
    )
}

#[test]
fn every_request_has_its_exact_bytes() {
    let id = Uuid::from_u128(0x2b);
    let ids = "00000000-0000-0000-0000-00000000002b";
    let cases = [
        (
            Request::UpdateSelf { node: full_node() },
            format!(r#"{{"type":"update_self","node":{}}}"#, full_node_json()),
        ),
        (
            Request::AddTunnel { id },
            format!(r#"{{"type":"add_tunnel","id":"{ids}"}}"#),
        ),
        (
            Request::RemoveTunnel { id },
            format!(r#"{{"type":"remove_tunnel","id":"{ids}"}}"#),
        ),
        (
            Request::ReadyForHandshake { id },
            format!(r#"{{"type":"ready_for_handshake","id":"{ids}"}}"#),
        ),
        (Request::Disconnect, r#"{"type":"disconnect"}"#.to_owned()),
    ];
    for (req, want) in cases {
        assert_eq!(serde_json::to_string(&req).expect("ser"), want);
        assert_eq!(serde_json::from_str::<Request>(&want).expect("de"), req);
    }
}

#[test]
fn every_response_has_its_exact_bytes() {
    let id = Uuid::from_u128(0x2b);
    let ids = "00000000-0000-0000-0000-00000000002b";
    let map: crate::derpmap::DerpMap = serde_json::from_str(
        r#"{"Regions":{"7":{"RegionID":7,"RegionCode":"x","RegionName":"X","Nodes":[]}}}"#,
    )
    .expect("map");
    let cases = [
        (
            Response::Welcome {
                version: VERSION.into(),
                id,
                heartbeat_secs: 5,
                lost_after_secs: 15,
            },
            format!(
                r#"{{"type":"welcome","version":"1.0","id":"{ids}","heartbeat_secs":5,"lost_after_secs":15}}"#
            ),
        ),
        (
            Response::PeerUpdates {
                updates: vec![
                    PeerUpdate::node(full_node()),
                    PeerUpdate::disconnected(id, "bye"),
                    PeerUpdate::revoked(id, "logged out"),
                    PeerUpdate::lost(id, "silent"),
                    PeerUpdate::ready_for_handshake(id),
                ],
            },
            format!(
                concat!(
                    r#"{{"type":"peer_updates","updates":["#,
                    r#"{{"id":"00000000-0000-0000-0000-00000000001a","kind":"NODE","node":{node}}},"#,
                    r#"{{"id":"{ids}","kind":"DISCONNECTED","reason":"bye"}},"#,
                    r#"{{"id":"{ids}","kind":"DISCONNECTED","reason":"logged out","revoked":true}},"#,
                    r#"{{"id":"{ids}","kind":"LOST","reason":"silent"}},"#,
                    r#"{{"id":"{ids}","kind":"READY_FOR_HANDSHAKE"}}]}}"#
                ),
                node = full_node_json(),
                ids = ids,
            ),
        ),
        (
            Response::DerpMap { derp_map: map },
            r#"{"type":"derp_map","derp_map":{"Regions":{"7":{"RegionID":7,"RegionCode":"x","RegionName":"X","Nodes":[]}}}}"#.to_owned(),
        ),
        (
            Response::Error {
                message: "no".into(),
            },
            r#"{"type":"error","message":"no"}"#.to_owned(),
        ),
        (
            Response::SessionEnded {
                reason: "logged out".into(),
            },
            r#"{"type":"session_ended","reason":"logged out"}"#.to_owned(),
        ),
    ];
    for (resp, want) in cases {
        assert_eq!(serde_json::to_string(&resp).expect("ser"), want);
        assert_eq!(serde_json::from_str::<Response>(&want).expect("de"), resp);
    }
}

#[test]
fn revocation_is_understood_by_new_peers_and_harmless_to_old_ones() {
    let id = Uuid::from_u128(0x2b);
    // A 1.0 server's DISCONNECTED has no flag: not a revocation.
    let old =
        r#"{"id":"00000000-0000-0000-0000-00000000002b","kind":"DISCONNECTED","reason":"bye"}"#;
    let u: PeerUpdate = serde_json::from_str(old).expect("de");
    assert_eq!(u, PeerUpdate::disconnected(id, "bye"));
    assert!(!u.revoked);
    // A peer that does not know the flag still reads the update as DISCONNECTED.
    #[derive(serde::Deserialize)]
    struct OldUpdate {
        kind: PeerUpdateKind,
    }
    let new = serde_json::to_string(&PeerUpdate::revoked(id, "logged out")).expect("ser");
    let seen: OldUpdate = serde_json::from_str(&new).expect("old de");
    assert_eq!(seen.kind, PeerUpdateKind::Disconnected);
    // The flag is only on the wire when set.
    let plain = serde_json::to_string(&PeerUpdate::disconnected(id, "bye")).expect("ser");
    assert!(!plain.contains("revoked"), "{plain}");
}

#[test]
fn a_minimal_node_takes_defaults() {
    let j = format!(
        r#"{{"id":"{}","key":"nodekey:{}","disco":"discokey:{}"}}"#,
        Uuid::nil(),
        "11".repeat(32),
        "22".repeat(32)
    );
    let n: Node = serde_json::from_str(&j).expect("de");
    assert_eq!(n.preferred_derp, 0);
    assert!(n.derp_latency.is_empty() && n.addresses.is_empty() && n.endpoints.is_empty());
    assert_eq!(n.mapping_varies_by_dest_ip, None);
}

#[test]
fn bad_messages_are_errors() {
    for bad in [
        "",
        "{}",
        r#"{"type":"add_tunnel"}"#,
        r#"{"type":"add_tunnel","id":"not-a-uuid"}"#,
        r#"{"type":"teleport"}"#,
        r#"{"type":"update_self","node":{"id":"00000000-0000-0000-0000-000000000000","key":"discokey:00","disco":"x"}}"#,
        "[1,2,3]",
        "\u{0}",
    ] {
        assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad:?}");
        assert!(serde_json::from_str::<Response>(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn version_check_explains_each_refusal() {
    for (v, says) in [
        ("1", "not of the form"),
        ("x.0", "non-numeric major"),
        ("1.x", "non-numeric minor"),
        ("70000.0", "non-numeric major"),
        ("2.0", "not supported"),
    ] {
        let e = check_version(v).expect_err(v);
        assert!(e.contains(says), "{v}: {e}");
    }
    assert_eq!(check_version(VERSION), Ok(()));
}

fn arb_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Latencies are whole milliseconds in seconds: short decimals that JSON carries exactly.
fn arb_latency() -> impl Strategy<Value = f64> {
    (0u32..100_000).prop_map(|ms| f64::from(ms) / 1000.0)
}

fn arb_node() -> impl Strategy<Value = Node> {
    (
        arb_uuid(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<u32>(),
        prop::collection::btree_map(".{0,8}", arb_latency(), 0..4),
        prop::collection::vec(".{0,20}", 0..3),
        prop::collection::vec(".{0,20}", 0..3),
        prop::collection::vec(".{0,20}", 0..3),
        any::<Option<bool>>(),
    )
        .prop_map(
            |(
                id,
                key,
                disco,
                preferred_derp,
                derp_latency,
                addresses,
                allowed_ips,
                endpoints,
                hard,
            )| {
                Node {
                    id,
                    key: NodePublic::from_bytes(key),
                    disco: DiscoPublic::from_bytes(disco),
                    preferred_derp,
                    derp_latency,
                    addresses,
                    allowed_ips,
                    endpoints,
                    mapping_varies_by_dest_ip: hard,
                }
            },
        )
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        arb_node().prop_map(|node| Request::UpdateSelf { node }),
        arb_uuid().prop_map(|id| Request::AddTunnel { id }),
        arb_uuid().prop_map(|id| Request::RemoveTunnel { id }),
        arb_uuid().prop_map(|id| Request::ReadyForHandshake { id }),
        Just(Request::Disconnect),
    ]
}

fn arb_update() -> impl Strategy<Value = PeerUpdate> {
    prop_oneof![
        arb_node().prop_map(PeerUpdate::node),
        (arb_uuid(), ".{0,20}").prop_map(|(id, r)| PeerUpdate::disconnected(id, r)),
        (arb_uuid(), ".{0,20}").prop_map(|(id, r)| PeerUpdate::revoked(id, r)),
        (arb_uuid(), ".{0,20}").prop_map(|(id, r)| PeerUpdate::lost(id, r)),
        arb_uuid().prop_map(PeerUpdate::ready_for_handshake),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (".{0,8}", arb_uuid(), any::<u64>(), any::<u64>()).prop_map(
            |(version, id, heartbeat_secs, lost_after_secs)| Response::Welcome {
                version,
                id,
                heartbeat_secs,
                lost_after_secs,
            }
        ),
        prop::collection::vec(arb_update(), 0..4)
            .prop_map(|updates| Response::PeerUpdates { updates }),
        arb_map().prop_map(|derp_map| Response::DerpMap { derp_map }),
        ".{0,40}".prop_map(|message| Response::Error { message }),
        ".{0,40}".prop_map(|reason| Response::SessionEnded { reason }),
    ]
}

/// Flips bytes of `text` at the given positions, so a parser sees near-valid input.
fn mutate(text: &str, flips: &[(prop::sample::Index, u8)]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for (i, b) in flips {
        let i = i.index(bytes.len());
        bytes[i] ^= b | 1;
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_roundtrip(req in arb_request()) {
        let text = serde_json::to_string(&req).expect("ser");
        prop_assert_eq!(serde_json::from_str::<Request>(&text).expect("de"), req);
    }

    #[test]
    fn responses_roundtrip(resp in arb_response()) {
        let text = serde_json::to_string(&resp).expect("ser");
        prop_assert_eq!(serde_json::from_str::<Response>(&text).expect("de"), resp);
    }

    #[test]
    fn tailnet_ip_is_in_the_prefix_and_keeps_the_id_tail(id in arb_uuid()) {
        let ip = tailnet_ip(id).octets();
        prop_assert_eq!(&ip[..6], &TAILNET_PREFIX[..]);
        prop_assert_eq!(&ip[6..], &id.as_bytes()[6..]);
    }

    #[test]
    fn mutated_messages_never_panic(
        req in arb_request(),
        resp in arb_response(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        for text in [serde_json::to_string(&req).expect("ser"), serde_json::to_string(&resp).expect("ser")] {
            let bytes = mutate(&text, &flips);
            // Either outcome is fine; what matters is an answer and no panic.
            let _ = serde_json::from_slice::<Request>(&bytes);
            let _ = serde_json::from_slice::<Response>(&bytes);
            let truncated = &text.as_bytes()[..cut.index(text.len())];
            prop_assert!(serde_json::from_slice::<Request>(truncated).is_err());
            prop_assert!(serde_json::from_slice::<Response>(truncated).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Request>(&data);
        let _ = serde_json::from_slice::<Response>(&data);
        let _ = check_version(&String::from_utf8_lossy(&data));
    }
}
