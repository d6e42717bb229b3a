//! Path selection on a virtual clock: the shared fixtures, and one module per topic.

use super::*;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A public IPv4 candidate.
fn pub_a() -> SocketAddr {
    sa("203.0.113.5:41641")
}

/// Another public IPv4 candidate.
fn pub_b() -> SocketAddr {
    sa("198.51.100.9:41641")
}

/// Our own endpoints, for CallMeMaybe.
fn ours() -> Vec<SocketAddr> {
    vec![sa("192.0.2.77:41641")]
}

fn drain(ps: &mut PathSel) -> Vec<Output> {
    std::iter::from_fn(|| ps.poll_output()).collect()
}

fn pings(outs: &[Output]) -> Vec<(SocketAddr, TxId)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendPing { addr, txid } => Some((*addr, *txid)),
            _ => None,
        })
        .collect()
}

fn ping_to(outs: &[Output], to: SocketAddr) -> TxId {
    pings(outs)
        .into_iter()
        .find(|(a, _)| *a == to)
        .map(|(_, t)| t)
        .expect("a ping to the address")
}

/// A path selection with our endpoints and `candidates`, sending to the peer since `now`.
fn sending(seed: u64, now: Instant, candidates: &[SocketAddr]) -> PathSel {
    let mut ps = PathSel::new(seed);
    ps.set_local_endpoints(now, ours());
    ps.set_endpoints(now, candidates.iter().copied());
    ps.on_send(now);
    ps
}

mod discovery;
mod heartbeat;
mod random_events;
mod selection;
