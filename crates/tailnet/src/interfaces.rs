//! This host's own IPv4 addresses, for the endpoints a node publishes besides its STUN
//! mappings (peers on the same LAN reach those without any STUN): every local address
//! in Linux's `/proc/net/fib_trie` (none elsewhere) plus the one on the default route.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Our local interface addresses (IPv4, no loopback) with the UDP socket's `port`.
pub fn local_endpoints(port: u16) -> BTreeSet<SocketAddr> {
    let mut ips: BTreeSet<IpAddr> = std::fs::read_to_string("/proc/net/fib_trie")
        .map(|t| fib_trie_local_ips(&t))
        .unwrap_or_default()
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    ips.extend(default_route_ip());
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// This host's IPv4 address on the default route (no packet is sent).
fn default_route_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The host's own IPv4 addresses listed in a Linux `/proc/net/fib_trie` (an address
/// line `|-- a.b.c.d` followed by `/32 host LOCAL`), without loopback.
pub fn fib_trie_local_ips(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(ip) = line.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.is_loopback()
            && !ip.is_unspecified()
        {
            out.insert(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib_trie_yields_local_addresses_without_loopback() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
             \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
             \x20          |-- 192.0.2.0\n              /24 link UNICAST\n\
             \x20          |-- 192.0.2.2\n              /32 host LOCAL\n\
             \x20       |-- 192.0.2.255\n           /32 link BROADCAST\n\
             \x20          |-- 10.1.2.3\n              /32 host LOCAL\n";
        let ips: Vec<Ipv4Addr> = fib_trie_local_ips(text).into_iter().collect();
        assert_eq!(
            ips,
            vec![Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(192, 0, 2, 2)]
        );
    }

    #[test]
    fn fib_trie_garbage_and_broadcast_lines_yield_nothing() {
        assert!(fib_trie_local_ips("").is_empty());
        // A LOCAL line with no address before it, an unparsable address, and an
        // address that is only a broadcast.
        let text = "/32 host LOCAL\n|-- not-an-ip\n/32 host LOCAL\n\
                    |-- 192.0.2.255\n/32 link BROADCAST\n|-- 0.0.0.0\n/32 host LOCAL\n";
        assert!(
            fib_trie_local_ips(text).is_empty(),
            "{:?}",
            fib_trie_local_ips(text)
        );
    }

    #[test]
    fn local_endpoints_carry_the_port_and_no_loopback() {
        let eps = local_endpoints(41641);
        assert!(eps.iter().all(|e| e.port() == 41641 && e.is_ipv4()));
        assert!(eps.iter().all(|e| !e.ip().is_loopback()), "{eps:?}");
    }
}
