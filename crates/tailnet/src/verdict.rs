//! Why a peer is reached through DERP rather than directly, in words, from a node's
//! [`Diagnostics`]: the CLI's `tether ping` prints it for the user's node, the server's
//! health report and workspace view for its own node.

use tether_proto::derpmap::DerpMap;

use crate::Diagnostics;
use crate::netcheck::stun_sources;

/// How the reasons name this side.
#[derive(Debug, Clone, Copy)]
pub struct Us<'a> {
    /// This node in a sentence: "this client", "the server".
    pub name: &'a str,
    /// What turns direct paths off on this node, in parentheses after the sentence
    /// saying they are off.
    pub local_switch: &'a str,
}

/// Whether any node of the DERP map answers STUN.
pub fn map_has_stun(map: &DerpMap) -> bool {
    map.regions
        .values()
        .flat_map(|r| &r.nodes)
        .any(|n| stun_sources(n).is_some())
}

/// What a hard NAT does, for the verdict.
const HARD_NAT: &str = "its public UDP port changes with each destination (MappingVariesByDestIP), so the other side cannot reach the port it learned";

/// Why the path to the peer of `d` is relayed, as far as this side can tell (never
/// empty).
pub fn relay_reasons(d: &Diagnostics, map: &DerpMap, us: Us<'_>) -> Vec<String> {
    let name = us.name;
    let mut r = Vec::new();
    if d.direct_disabled_by_server {
        r.push(
            "the server blocks direct connections (it runs with --block-direct-connections)"
                .to_string(),
        );
    }
    if d.direct_disabled_locally {
        r.push(format!(
            "direct connections are disabled on {name} ({})",
            us.local_switch
        ));
    }
    if !r.is_empty() {
        return r;
    }
    if !map_has_stun(map) {
        r.push(
            "the DERP map has no STUN servers, so neither side can learn its public address".into(),
        );
    }
    if d.udp_local.is_none() {
        r.push(format!("{name} could not bind a UDP socket"));
    } else if d.local_endpoints.is_empty() {
        r.push(format!(
            "{name} found no UDP endpoints of its own (no STUN answer: UDP may be blocked here)"
        ));
    } else if d.stun_answered == Some(false) {
        r.push(format!(
            "no STUN server answered {name} over UDP, so it has no public endpoint: UDP is probably blocked on {name}'s network"
        ));
    }
    match &d.peer {
        None => r.push("the agent's node never arrived, so its endpoints are unknown".into()),
        Some(p) if !p.has_disco => r.push(
            "the agent published no disco key, so no direct path can be tried (an older agent?)"
                .into(),
        ),
        Some(p) if p.endpoints.is_empty() => r.push(
            "the agent published no endpoints (direct connections disabled on the agent, or UDP/STUN blocked on its side)"
                .into(),
        ),
        Some(p) => {
            // Each side measured its own NAT with STUN; the agent's verdict came with
            // its node.
            let hard = |v: Option<bool>| v == Some(true);
            if hard(d.mapping_varies_by_dest_ip) {
                r.push(format!("{name} is behind a hard NAT: {HARD_NAT}"));
            }
            if hard(p.mapping_varies_by_dest_ip) {
                r.push(format!("the agent is behind a hard NAT: {HARD_NAT}"));
            }
            if r.is_empty() {
                let easy = d.mapping_varies_by_dest_ip == Some(false)
                    && p.mapping_varies_by_dest_ip == Some(false);
                r.push(if easy {
                    format!(
                        "none of the agent's {} endpoint(s) answered over UDP, though neither side is behind a hard NAT: UDP is probably blocked between you (a firewall)",
                        p.endpoints.len()
                    )
                } else {
                    format!(
                        "none of the agent's {} endpoint(s) answered over UDP: UDP may be blocked between you, or a NAT on either side maps each destination differently (hard NAT)",
                        p.endpoints.len()
                    )
                });
            }
        }
    }
    r
}
