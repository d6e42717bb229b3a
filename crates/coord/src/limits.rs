//! Bounds of the coordination protocol: the size of one message each way, and what a
//! peer may claim about itself: bounded lists, and one tailnet address (for an agent, the
//! one derived from its id; a client keeps the address of its first connection's id
//! across reconnects, so for a client the coordinator only refuses an agent's address).
//! A node is relayed to every tunnel peer, so an unbounded one would cost memory and
//! bandwidth at each of them, and a node claiming another peer's address would ask its
//! peers to route that peer's traffic to it.

use std::net::Ipv6Addr;

use tether_proto::coord::{self as proto, Node, Request};

pub use tether_proto::coord::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

/// The most peer updates the coordinator puts in one message; more go in several, so a
/// message stays within [`MAX_RESPONSE_BYTES`].
pub const MAX_UPDATES_PER_MESSAGE: usize = 64;
/// The most candidate endpoints a node may list.
pub const MAX_ENDPOINTS: usize = 64;
/// The most entries in `addresses`, and in `allowed_ips`.
pub const MAX_ADDRESSES: usize = 4;
/// The most DERP latency measurements a node may carry.
pub const MAX_DERP_LATENCIES: usize = 256;
/// The longest endpoint, address or latency key, in bytes (`[v6]:port` is at most 47).
pub const MAX_ITEM_LEN: usize = 64;

/// Why a coordination message or node was refused; one sentence for the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The message is longer than [`MAX_REQUEST_BYTES`].
    #[error("coordination message of {0} bytes refused: at most {MAX_REQUEST_BYTES} are allowed")]
    TooLarge(usize),
    /// The message is not a request of this protocol.
    #[error("malformed coordination message: {0}")]
    Malformed(String),
    /// A list of the node is longer than allowed.
    #[error("node refused: it lists {count} {what}; at most {max} are allowed")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An item of a list is longer than [`MAX_ITEM_LEN`].
    #[error(
        "node refused: an entry of {what} is {len} bytes long; at most {MAX_ITEM_LEN} are allowed"
    )]
    ItemTooLong {
        /// Which list.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// An address or allowed IP is not the peer's own tailnet address.
    #[error("node refused: {what} entry {claimed:?} is not this peer's address {own}/128")]
    NotOwnAddress {
        /// Which list.
        what: &'static str,
        /// The entry.
        claimed: String,
        /// The address derived from the peer's id.
        own: Ipv6Addr,
    },
    /// An address or allowed IP is not one tailnet address (`fd7a:115c:a1e0::/48`, bare
    /// or as a /128), or the lists name more than one.
    #[error(
        "node refused: {what} entry {claimed:?} is not this node's one tailnet address (a /128 in fd7a:115c:a1e0::/48)"
    )]
    NotTailnetAddress {
        /// Which list.
        what: &'static str,
        /// The entry.
        claimed: String,
    },
    /// A client claimed the address of a workspace agent.
    #[error("node refused: {0} is a workspace agent's address")]
    AgentAddress(Ipv6Addr),
}

/// Parses one text message from a peer, refusing an oversize one before parsing it.
pub fn parse_request(text: &str) -> Result<Request, Refusal> {
    if text.len() > MAX_REQUEST_BYTES {
        return Err(Refusal::TooLarge(text.len()));
    }
    serde_json::from_str(text).map_err(|e| Refusal::Malformed(e.to_string()))
}

/// Checks that `node` is within the limits and claims one tailnet address at most (as a
/// bare address or a /128, the same in `addresses` and `allowed_ips`), which must be
/// `own` if given; returns the address claimed, if any.
pub fn check_node(node: &Node, own: Option<Ipv6Addr>) -> Result<Option<Ipv6Addr>, Refusal> {
    let at_most = |what, count, max| {
        if count > max {
            Err(Refusal::TooMany { what, count, max })
        } else {
            Ok(())
        }
    };
    at_most("endpoints", node.endpoints.len(), MAX_ENDPOINTS)?;
    at_most("addresses", node.addresses.len(), MAX_ADDRESSES)?;
    at_most("allowed IPs", node.allowed_ips.len(), MAX_ADDRESSES)?;
    at_most(
        "DERP latencies",
        node.derp_latency.len(),
        MAX_DERP_LATENCIES,
    )?;
    let items = node
        .endpoints
        .iter()
        .map(|e| ("endpoints", e))
        .chain(node.derp_latency.keys().map(|k| ("DERP latencies", k)))
        .chain(node.addresses.iter().map(|a| ("addresses", a)))
        .chain(node.allowed_ips.iter().map(|a| ("allowed IPs", a)));
    for (what, item) in items {
        if item.len() > MAX_ITEM_LEN {
            return Err(Refusal::ItemTooLong {
                what,
                len: item.len(),
            });
        }
    }
    let mut claimed: Option<Ipv6Addr> = None;
    let entries = node
        .addresses
        .iter()
        .map(|a| ("addresses", a))
        .chain(node.allowed_ips.iter().map(|a| ("allowed IPs", a)));
    for (what, entry) in entries {
        let (ip, prefix) = entry.split_once('/').unwrap_or((entry, "128"));
        let ip = ip.parse::<Ipv6Addr>().ok().filter(|ip| {
            prefix == "128"
                && ip.octets()[..6] == proto::TAILNET_PREFIX
                && claimed.is_none_or(|c| c == *ip)
        });
        let Some(ip) = ip else {
            return Err(Refusal::NotTailnetAddress {
                what,
                claimed: entry.clone(),
            });
        };
        if let Some(own) = own
            && ip != own
        {
            return Err(Refusal::NotOwnAddress {
                what,
                claimed: entry.clone(),
                own,
            });
        }
        claimed = Some(ip);
    }
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tether_key::{DiscoPublic, NodePublic};
    use uuid::Uuid;

    use super::*;
    use tether_proto::coord::{PeerUpdate, Response};

    fn own(id: Uuid) -> Option<Ipv6Addr> {
        Some(proto::tailnet_ip(id))
    }

    /// A node with every list at its limit and every item at its longest.
    fn largest_legal_node(id: Uuid) -> Node {
        let own = format!("{}/128", proto::tailnet_ip(id));
        let long = |i: usize| format!("{i:0>width$}", width = MAX_ITEM_LEN);
        Node {
            id,
            key: NodePublic::from_bytes([1; 32]),
            disco: DiscoPublic::from_bytes([2; 32]),
            preferred_derp: u32::MAX,
            derp_latency: (0..MAX_DERP_LATENCIES)
                .map(|i| (long(i), f64::MAX))
                .collect(),
            addresses: vec![own.clone(); MAX_ADDRESSES],
            allowed_ips: vec![own; MAX_ADDRESSES],
            endpoints: (0..MAX_ENDPOINTS).map(long).collect(),
            mapping_varies_by_dest_ip: Some(true),
        }
    }

    #[test]
    fn the_largest_legal_node_fits_in_one_message() {
        let id = Uuid::from_u128(u128::MAX);
        let node = largest_legal_node(id);
        assert_eq!(check_node(&node, own(id)), Ok(own(id)));
        let text = serde_json::to_string(&Request::UpdateSelf { node }).expect("json");
        assert!(text.len() <= MAX_REQUEST_BYTES, "{} bytes", text.len());
        assert!(parse_request(&text).is_ok());
    }

    #[test]
    fn a_full_batch_of_the_largest_nodes_fits_in_one_response() {
        let updates = (0..MAX_UPDATES_PER_MESSAGE)
            .map(|i| PeerUpdate::node(largest_legal_node(Uuid::from_u128(i as u128))))
            .collect();
        let text = serde_json::to_string(&Response::PeerUpdates { updates }).expect("json");
        assert!(text.len() <= MAX_RESPONSE_BYTES, "{} bytes", text.len());
    }

    #[test]
    fn an_oversize_message_is_refused_before_parsing() {
        // 7 MB with ~300k endpoints, as an attacker sent it.
        let endpoints: Vec<String> = (0..300_000).map(|i| format!("10.0.0.1:{i}")).collect();
        let text = format!(
            r#"{{"type":"update_self","node":{{"endpoints":{}}}}}"#,
            serde_json::to_string(&endpoints).expect("json")
        );
        assert!(text.len() > 3_000_000);
        assert_eq!(parse_request(&text), Err(Refusal::TooLarge(text.len())));
        // Just over the limit is refused, at it is parsed.
        let pad = |n: usize| format!(r#"{{"type":"disconnect","pad":"{}"}}"#, " ".repeat(n));
        let base = pad(0).len();
        assert!(parse_request(&pad(MAX_REQUEST_BYTES - base)).is_ok());
        assert!(matches!(
            parse_request(&pad(MAX_REQUEST_BYTES - base + 1)),
            Err(Refusal::TooLarge(_))
        ));
        assert!(matches!(parse_request("{"), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn each_limit_is_exact() {
        let id = Uuid::from_u128(7);
        let mut n = largest_legal_node(id);
        n.endpoints.push("1.2.3.4:5".into());
        assert!(matches!(
            check_node(&n, own(id)),
            Err(Refusal::TooMany {
                what: "endpoints",
                ..
            })
        ));
        let mut n = largest_legal_node(id);
        n.derp_latency.insert("x".into(), 1.0);
        assert!(matches!(
            check_node(&n, own(id)),
            Err(Refusal::TooMany { .. })
        ));
        let mut n = largest_legal_node(id);
        n.addresses.push(n.addresses[0].clone());
        assert!(matches!(
            check_node(&n, own(id)),
            Err(Refusal::TooMany { .. })
        ));
        let mut n = largest_legal_node(id);
        n.endpoints[3].push('x');
        assert!(matches!(
            check_node(&n, own(id)),
            Err(Refusal::ItemTooLong { .. })
        ));
        let mut n = largest_legal_node(id);
        n.derp_latency = BTreeMap::from([("y".repeat(MAX_ITEM_LEN + 1), 0.1)]);
        assert!(matches!(
            check_node(&n, own(id)),
            Err(Refusal::ItemTooLong { .. })
        ));
    }

    #[test]
    fn one_tailnet_address_may_be_claimed_and_for_an_agent_only_its_own() {
        let id = Uuid::from_u128(0x1234);
        let mine = proto::tailnet_ip(id);
        let other = proto::tailnet_ip(Uuid::from_u128(0x5678));
        let mut n = largest_legal_node(id);
        n.addresses = vec![mine.to_string(), format!("{mine}/128")];
        n.allowed_ips = vec![];
        assert_eq!(check_node(&n, own(id)), Ok(Some(mine)));
        // Without an own address (a client), another tailnet address is claimable.
        n.addresses = vec![format!("{other}/128")];
        assert_eq!(check_node(&n, None), Ok(Some(other)));
        assert!(matches!(
            check_node(&n, own(id)),
            Err(Refusal::NotOwnAddress { .. })
        ));
        n.addresses = vec![];
        assert_eq!(check_node(&n, own(id)), Ok(None));
        n.addresses = vec![format!("{mine}/128")];
        for bad in [
            format!("{other}/128"),
            format!("{mine}/64"),
            format!("{mine}/0128"),
            "::/0".to_string(),
            "fd7a:115c:a1e1::1/128".to_string(),
            "0.0.0.0/0".to_string(),
            format!("{mine}/"),
            String::new(),
        ] {
            n.allowed_ips = vec![bad.clone()];
            assert!(
                matches!(check_node(&n, None), Err(Refusal::NotTailnetAddress { .. })),
                "{bad:?} was accepted"
            );
        }
    }
}
