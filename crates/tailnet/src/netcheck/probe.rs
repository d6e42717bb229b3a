//! The prober: a thin tokio driver that measures and hands the numbers to
//! [`build_report`]. It resolves STUN node addresses, runs the [`plan_stun`] binding
//! requests from the caller's socket(s) through [`stun_round`] (answers matched by
//! transaction ID, so several regions share a socket), then times
//! `GET /derp/latency-check` for the regions [`http_regions`] names.
//!
//! [`stun_round`] drives a sans-IO [`StunRound`] over any [`StunIo`]: the sockets of a
//! report here, the shared socket of a [`Conn`](crate::Conn) there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use tether_derp::headers::ServerHeaders;
use tether_proto::derpmap::{DerpMap, DerpRegion};
use tether_stun::message::{TransactionId, binding_request, parse_binding_response};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{debug, trace};

use super::{
    AddrSource, Family, Measurements, PlannedProbe, REPORT_TIMEOUT, Report, STUN_PHASE_TIMEOUT,
    StunRound, StunTarget, build_report, http_regions, plan_stun, stun_sources,
};

/// Longest wait for resolving STUN node host names.
const DNS_TIMEOUT: Duration = Duration::from_secs(1);
/// A STUN answer is well under this.
const RECV_BUF_LEN: usize = 1500;

/// The UDP socket(s) a report is made from; the mapping learned is theirs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sockets<'a> {
    /// Sends to IPv4 STUN servers.
    pub v4: Option<&'a UdpSocket>,
    /// Sends to IPv6 STUN servers.
    pub v6: Option<&'a UdpSocket>,
}

impl<'a> Sockets<'a> {
    /// One socket, used for the family it is bound to.
    pub fn single(sock: &'a UdpSocket) -> Self {
        match sock.local_addr() {
            Ok(a) if a.is_ipv6() => Self {
                v4: None,
                v6: Some(sock),
            },
            _ => Self {
                v4: Some(sock),
                v6: None,
            },
        }
    }

    fn get(&self, family: Family) -> Option<&'a UdpSocket> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// How a report runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The current home region, for stickiness.
    pub previous_home: Option<u32>,
    /// Upper bound of the STUN phase.
    pub stun_timeout: Duration,
    /// Upper bound of the whole report.
    pub report_timeout: Duration,
    /// Extra headers for the HTTP(S) latency checks of DERP nodes at the server's origin.
    pub server_headers: ServerHeaders,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            previous_home: None,
            stun_timeout: STUN_PHASE_TIMEOUT,
            report_timeout: REPORT_TIMEOUT,
            server_headers: ServerHeaders::none(),
        }
    }
}

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    // The prober is a driver: the one place in netcheck that reads the clock.
    Instant::now()
}

/// Makes a report of `map` from `sockets`, within `opts.report_timeout`.
///
/// The caller must not read from the sockets meanwhile: answers are taken off them
/// here. Failures (no route, no answer, DNS) only make the report poorer.
pub async fn run(map: &DerpMap, sockets: Sockets<'_>, opts: &Options) -> Report {
    let start = now();
    let deadline = start + opts.report_timeout;
    let families = (sockets.v4.is_some(), sockets.v6.is_some());
    let targets = resolve_targets(map, families, deadline.min(start + DNS_TIMEOUT)).await;
    let plan = plan_stun(&targets);
    debug!(
        targets = targets.len(),
        probes = plan.len(),
        "netcheck STUN phase"
    );
    let stun_deadline = deadline.min(now() + opts.stun_timeout);
    let mut io = SocketIo {
        sockets,
        buf4: vec![0u8; RECV_BUF_LEN],
        buf6: vec![0u8; RECV_BUF_LEN],
    };
    let mut m = stun_round(&mut io, plan, stun_deadline).await;
    let regions = http_regions(map, &m.stun);
    if !regions.is_empty() {
        debug!(
            ?regions,
            udp = !m.stun.is_empty(),
            "netcheck HTTP(S) latency phase"
        );
        m.http = http_phase(map, &regions, deadline, &opts.server_headers).await;
    }
    let report = build_report(map, &m, opts.previous_home);
    debug!(
        udp = report.udp,
        preferred = ?report.preferred_derp,
        elapsed = ?now().saturating_duration_since(start),
        "netcheck report done"
    );
    report
}

/// The STUN servers of `map` for IPv4 and/or IPv6, host names resolved within
/// a second (those that do not resolve in time are left out).
pub async fn stun_targets(map: &DerpMap, v4: bool, v6: bool) -> Vec<StunTarget> {
    resolve_targets(map, (v4, v6), now() + DNS_TIMEOUT).await
}

/// STUN servers of every region (`NoMeasureNoHome` ones too: their answers still show
/// the mapping), for the families (IPv4, IPv6) wanted.
async fn resolve_targets(
    map: &DerpMap,
    (v4_wanted, v6_wanted): (bool, bool),
    deadline: Instant,
) -> Vec<StunTarget> {
    let mut wanted = Vec::new();
    let mut hosts = HashSet::new();
    for region in map.regions.values() {
        for node in &region.nodes {
            let Some((port, v4, v6)) = stun_sources(node) else {
                continue;
            };
            for (family, source) in [(Family::V4, v4), (Family::V6, v6)] {
                let family_wanted = match family {
                    Family::V4 => v4_wanted,
                    Family::V6 => v6_wanted,
                };
                if !family_wanted {
                    continue;
                }
                if let AddrSource::Resolve(host) = &source {
                    hosts.insert((host.clone(), port));
                }
                wanted.push((region.region_id, node.name.clone(), port, family, source));
            }
        }
    }
    let lookups = join_all(hosts.into_iter().map(|(host, port)| async move {
        let addrs = match timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port))).await
        {
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
            Ok(Err(err)) => {
                debug!(%host, %err, "could not resolve STUN server");
                Vec::new()
            }
            Err(_) => {
                debug!(%host, "resolving STUN server timed out");
                Vec::new()
            }
        };
        ((host, port), addrs)
    }))
    .await;
    let resolved: HashMap<(String, u16), Vec<SocketAddr>> = lookups.into_iter().collect();
    let mut targets = Vec::new();
    for (region, node, port, family, source) in wanted {
        let addr = match source {
            AddrSource::Disabled => None,
            AddrSource::Ip(ip) => Some(SocketAddr::new(ip, port)),
            AddrSource::Resolve(host) => resolved.get(&(host, port)).and_then(|addrs| {
                addrs
                    .iter()
                    .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
                    .find(|a| Family::of(a) == family)
            }),
        };
        if let Some(addr) = addr {
            targets.push(StunTarget { region, node, addr });
        }
    }
    targets
}

/// What a [`StunIo`] received.
#[derive(Debug)]
pub enum Received {
    /// A STUN binding response from `src`: transaction `txid` saw us as `mapped`.
    Answer {
        /// Who answered.
        src: SocketAddr,
        /// The transaction it answers.
        txid: TransactionId,
        /// Our address as the server saw it.
        mapped: SocketAddr,
    },
    /// Something else, or a transient error.
    Other,
    /// The socket of this family is broken.
    Failed(Family, io::Error),
}

/// How a STUN round reaches the network: [`Sockets`] read their own sockets; a
/// [`Conn`](crate::Conn) sends from its shared socket and gets the answers its driver
/// read off it.
pub trait StunIo {
    /// Sends the binding request `packet` to `to`.
    fn send(
        &mut self,
        to: SocketAddr,
        packet: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// The next datagram's meaning; cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Received> + Send;
}

/// [`Sockets`] with a receive buffer per family.
struct SocketIo<'a> {
    sockets: Sockets<'a>,
    buf4: Vec<u8>,
    buf6: Vec<u8>,
}

impl StunIo for SocketIo<'_> {
    async fn send(&mut self, to: SocketAddr, packet: &[u8]) -> io::Result<()> {
        let Some(sock) = self.sockets.get(Family::of(&to)) else {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no socket of this family",
            ));
        };
        sock.send_to(packet, to).await.map(drop)
    }

    async fn recv(&mut self) -> Received {
        let (v4, v6) = (self.sockets.v4, self.sockets.v6);
        let received = tokio::select! {
            r = recv(v4, &mut self.buf4) => (Family::V4, r),
            r = recv(v6, &mut self.buf6) => (Family::V6, r),
        };
        match received {
            (family, Err(err)) => {
                match family {
                    Family::V4 => self.sockets.v4 = None,
                    Family::V6 => self.sockets.v6 = None,
                }
                Received::Failed(family, err)
            }
            (_, Ok(r)) => r,
        }
    }
}

/// Reads one datagram from `sock` (pending forever without a socket). Cancel-safe.
async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<Received> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    match sock.recv_from(buf).await {
        Ok((len, src)) => Ok(
            match parse_binding_response(buf.get(..len).unwrap_or_default()) {
                Ok((txid, mapped)) => Received::Answer { src, txid, mapped },
                Err(err) => {
                    trace!(%src, len, %err, "netcheck: ignoring datagram");
                    Received::Other
                }
            },
        ),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
            ) =>
        {
            trace!(%err, "netcheck: transient receive error");
            Ok(Received::Other)
        }
        Err(err) => Err(err),
    }
}

/// Runs one STUN round of `plan` through `io` until every group of the plan answered
/// or `deadline`: the answers in arrival order and which families could send.
pub async fn stun_round<I: StunIo>(
    io: &mut I,
    plan: Vec<PlannedProbe>,
    deadline: Instant,
) -> Measurements {
    let mut round = StunRound::new(plan, now().into_std(), deadline.into_std());
    loop {
        while let Some(p) = round.poll_probe(now().into_std()) {
            let txid = TransactionId::random();
            match io.send(p.target.addr, &binding_request(txid)).await {
                Ok(()) => {
                    trace!(region = p.target.region, server = %p.target.addr, %txid, "netcheck: STUN request");
                    round.handle_sent(now().into_std(), p.index, txid);
                }
                Err(err) => {
                    debug!(region = p.target.region, server = %p.target.addr, %err,
                        "netcheck: could not send STUN request");
                }
            }
        }
        let Some(wake) = round.poll_timeout() else {
            break;
        };
        if round.is_finished(now().into_std()) {
            break;
        }
        tokio::select! {
            () = sleep_until(Instant::from_std(wake)) => {}
            r = io.recv() => match r {
                Received::Answer { src, txid, mapped } => {
                    match round.handle_answer(now().into_std(), txid, mapped) {
                        Some(a) => debug!(region = a.region, server = %a.server,
                            %mapped, latency = ?a.latency, "netcheck: STUN answer"),
                        None => trace!(%src, %txid, "netcheck: STUN answer for no pending request"),
                    }
                }
                Received::Other => {}
                Received::Failed(family, err) => {
                    debug!(?family, %err, "netcheck: socket failed; giving up on that family");
                    round.handle_family_failed(family);
                }
            },
        }
    }
    round.into_measurements()
}

/// Times `GET /derp/latency-check` on each region's first reachable DERP node.
async fn http_phase(
    map: &DerpMap,
    regions: &[u32],
    deadline: Instant,
    headers: &ServerHeaders,
) -> BTreeMap<u32, Duration> {
    let probes = regions
        .iter()
        .filter_map(|id| map.regions.get(id))
        .map(|region| async move {
            let latency = timeout_at(deadline, http_latency(region, headers))
                .await
                .ok()
                .flatten();
            (region.region_id, latency)
        });
    join_all(probes)
        .await
        .into_iter()
        .filter_map(|(id, latency)| latency.map(|l| (id, l)))
        .collect()
}

/// One region's HTTP(S) latency: a first request opens the connection (TCP, TLS), the
/// second one on the same connection is timed, so the number is about one round trip.
async fn http_latency(region: &DerpRegion, headers: &ServerHeaders) -> Option<Duration> {
    for node in region.nodes.iter().filter(|n| !n.stun_only) {
        let url = format!("{}/latency-check", node.derp_url());
        let extra = url::Url::parse(&url)
            .ok()
            .and_then(|u| headers.for_url(&u).cloned())
            .unwrap_or_default();
        let mut builder = reqwest::Client::builder()
            .danger_accept_invalid_certs(node.insecure_for_tests)
            .default_headers(extra)
            .timeout(REPORT_TIMEOUT);
        let host = node.host_name.trim_matches(['[', ']']);
        if host.parse::<std::net::IpAddr>().is_err()
            && let Ok(ip) = node.ipv4.parse::<std::net::IpAddr>()
        {
            builder = builder.resolve(host, SocketAddr::new(ip, node.derp_port()));
        }
        let Ok(client) = builder.build() else {
            continue;
        };
        let get = || async {
            let resp = client.get(&url).send().await?.error_for_status()?;
            resp.bytes().await.map(drop)
        };
        if let Err(err) = get().await {
            debug!(region = region.region_id, node = %node.name, %err, "netcheck: latency check failed");
            continue;
        }
        let sent = now();
        match get().await {
            Ok(()) => return Some(now().saturating_duration_since(sent)),
            Err(err) => {
                debug!(region = region.region_id, node = %node.name, %err, "netcheck: latency check failed");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tether_proto::derpmap::DerpNode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn stun_region(id: u32, addr: SocketAddr, no_home: bool) -> DerpRegion {
        DerpRegion {
            region_id: id,
            no_measure_no_home: no_home,
            nodes: vec![DerpNode {
                name: format!("{id}a"),
                region_id: id,
                host_name: addr.ip().to_string(),
                stun_port: i32::from(addr.port()),
                stun_only: no_home,
                // A DERP port that refuses, so HTTP(S) never measures this node.
                derp_port: 1,
                force_http: true,
                ..DerpNode::default()
            }],
            ..DerpRegion::default()
        }
    }

    fn quick() -> Options {
        Options {
            stun_timeout: Duration::from_millis(600),
            report_timeout: Duration::from_secs(3),
            ..Options::default()
        }
    }

    #[tokio::test]
    async fn two_stun_servers_on_loopback_agree_on_the_mapping() {
        let a = tether_stun::Server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
            .spawn();
        let b = tether_stun::Server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
            .spawn();
        let mut map = DerpMap::default();
        map.regions.insert(1, stun_region(1, a.local_addr(), false));
        map.regions
            .insert(1000, stun_region(1000, b.local_addr(), true));
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();

        let started = now();
        let r = run(&map, Sockets::single(&sock), &quick()).await;
        // Every region answered, so the phase ended long before its timeout.
        assert!(now() - started < Duration::from_millis(600));
        assert!(r.udp && r.ipv4 && r.ipv4_can_send && !r.ipv6_can_send);
        assert_eq!(r.global_v4, Some(local));
        assert_eq!(r.mapping_varies_by_dest_ip, Some(false));
        assert!(r.region_latency.contains_key(&1) && r.region_latency.contains_key(&1000));
        assert_eq!(r.preferred_derp, Some(1));
        assert!(a.stats().answered() >= 1 && b.stats().answered() >= 1);
    }

    #[tokio::test]
    async fn silent_stun_falls_back_to_http_latency_check() {
        // A UDP socket that never answers, and an HTTP server for /derp/latency-check.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = http.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    // One request per read is enough for reqwest's small GETs.
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if conn.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut region = stun_region(7, silent.local_addr().unwrap(), false);
        region.nodes[0].derp_port = i32::from(http_addr.port());
        let mut map = DerpMap::default();
        map.regions.insert(7, region);
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        let r = run(&map, Sockets::single(&sock), &quick()).await;
        assert!(!r.udp && !r.ipv4);
        assert!(r.ipv4_can_send);
        assert_eq!(r.global_v4, None);
        assert_eq!(r.mapping_varies_by_dest_ip, None);
        assert!(r.region_latency.contains_key(&7), "{r:?}");
        assert!(r.region_v4_latency.is_empty());
        assert_eq!(r.preferred_derp, Some(7));
        server.abort();
    }

    #[tokio::test]
    async fn nothing_to_measure_is_an_empty_report() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let r = run(&DerpMap::default(), Sockets::single(&sock), &quick()).await;
        assert_eq!(r, Report::default());
    }
}
