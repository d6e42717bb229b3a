//! The state the [`Conn`](super::Conn) handles and tasks share, and the data-plane
//! task: it polls the [`Core`], hands transmits to the UDP socket or a DERP link, feeds
//! received datagrams in and sleeps until the core's next deadline.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_derp::client::ClientConfig;
use tether_key::NodePublic;
use tether_proto::derpmap::DerpMap;
use tether_stun::message::{TransactionId, parse_binding_response};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{debug, info, trace};
use uuid::Uuid;

use super::derp_links::{RegionLink, link_to};
use super::traffic::TrafficCounters;
use crate::core::{Core, Event, Transmit};
use crate::disco::{self, PacketKind, TxId};
use crate::netinfo::StunVerdict;
use crate::path::{PathKind, Pong};
use crate::udp::{DirectSocket, RecvBufs, SendBatch};

/// Receive syscalls per wake-up of the driver (each reads a batch of datagrams).
const UDP_DRAIN_CALLS: usize = 8;

/// A STUN answer read off the shared socket: (server, transaction, our mapped address).
pub(super) type StunReply = (SocketAddr, TransactionId, SocketAddr);

/// State shared by the API handles and the tasks.
pub(crate) struct Shared {
    pub(super) core: Mutex<Core>,
    pub(super) wake: Notify,
    pub(super) closed: AtomicBool,
    pub(crate) ip: Ipv6Addr,
    pub(super) id: Mutex<Uuid>,
    /// Bumped when a peer's node arrives or leaves, or its WireGuard session comes up.
    pub(super) peers_changed: watch::Sender<u64>,
    pub(super) derp_map: Mutex<DerpMap>,
    pub(super) links: Mutex<HashMap<u32, RegionLink>>,
    pub(super) derp_base: ClientConfig,
    /// [`ConnConfig::derp_region_urls`](super::ConnConfig::derp_region_urls).
    pub(super) derp_region_urls: std::collections::BTreeMap<u32, url::Url>,
    pub(super) inbound: mpsc::Sender<(u32, NodePublic, Bytes)>,
    pub(super) home_ready: watch::Sender<bool>,
    /// The one UDP socket: direct WireGuard, disco and STUN.
    pub(super) udp: Option<Arc<DirectSocket>>,
    /// STUN answers read by the driver, for the endpoint-refresh task.
    pub(super) stun_answers: mpsc::Sender<StunReply>,
    /// Asks the endpoint-refresh task for fresh endpoints now.
    pub(super) stun_kick: Notify,
    /// Pings of [`Conn::ping`](super::Conn::ping) waiting for their pong.
    pub(super) pings: Mutex<HashMap<TxId, oneshot::Sender<Pong>>>,
    /// The coordination WebSocket is up.
    pub(super) coord_up: AtomicBool,
    /// Our node went out on the current coordination connection.
    pub(super) node_sent: AtomicBool,
    /// The server's `disable_direct_connections`.
    pub(super) direct_off_by_server: bool,
    /// [`ConnConfig::disable_direct`](super::ConnConfig::disable_direct).
    pub(super) direct_off_locally: bool,
    /// What our latest STUN round found.
    pub(super) stun_verdict: Mutex<StunVerdict>,
    /// Datagrams and bytes by kind of path.
    pub(super) traffic: TrafficCounters,
    /// Why the server ended our session, once it has.
    pub(super) ended: watch::Sender<Option<String>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wake_driver(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(super) fn bump_peers(&self) {
        self.peers_changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub(super) fn links(&self) -> MutexGuard<'_, HashMap<u32, RegionLink>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn pings(&self) -> MutexGuard<'_, HashMap<TxId, oneshot::Sender<Pong>>> {
        self.pings.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn derp_map(&self) -> MutexGuard<'_, DerpMap> {
        self.derp_map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server ended our session: whoever waits for it hears why.
    pub(super) fn end(&self, reason: String) {
        self.ended.send_replace(Some(reason));
    }

    pub(super) fn id(&self) -> MutexGuard<'_, Uuid> {
        self.id.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stun_verdict(&self) -> MutexGuard<'_, StunVerdict> {
        self.stun_verdict.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[allow(clippy::disallowed_methods)]
pub(super) fn now() -> Instant {
    // The drivers are the one place that reads the clock.
    Instant::now()
}

/// Sends a transmit: a direct one joins the UDP batch, a relayed one goes to its DERP
/// region's link (connecting to the region if needed).
fn send_transmit(shared: &Arc<Shared>, batch: &mut SendBatch, t: Transmit) {
    let region = match t.path {
        PathKind::Derp { region } => region,
        PathKind::Direct { addr } => {
            let Some(sock) = &shared.udp else {
                return;
            };
            if addr.is_ipv6() {
                trace!(peer = %t.peer, %addr, "no IPv6 UDP socket; dropping");
                return;
            }
            batch.push(sock, addr, &t.data);
            shared.traffic.direct_sent(t.data.len());
            return;
        }
    };
    if region == 0 {
        trace!(peer = %t.peer, "no DERP region for peer yet; dropping");
        return;
    }
    let mut links = shared.links();
    let Some(link) = link_to(shared, &mut links, region) else {
        return;
    };
    let len = t.data.len();
    if link.queue.try_send((t.dst, Bytes::from(t.data))).is_err() {
        trace!(peer = %t.peer, region, "DERP send queue full; dropping datagram");
    } else {
        shared.traffic.derp_sent(len);
    }
}

/// The data-plane loop: poll the core, send what it produced, sleep until the next
/// deadline, a received datagram or a wake-up from an API call.
pub(super) async fn drive(
    shared: Arc<Shared>,
    mut inbound: mpsc::Receiver<(u32, NodePublic, Bytes)>,
) {
    let udp = shared.udp.clone();
    let mut bufs = RecvBufs::default();
    let mut batch = SendBatch::default();
    loop {
        if shared.is_closed() {
            return;
        }
        let (transmits, events, deadline) = {
            let t = now();
            let mut core = shared.lock();
            core.poll(t);
            let mut transmits = Vec::new();
            while let Some(x) = core.poll_transmit() {
                transmits.push(x);
            }
            let mut events = Vec::new();
            while let Some(e) = core.poll_event() {
                events.push(e);
            }
            (transmits, events, core.poll_timeout(t))
        };
        for t in transmits {
            send_transmit(&shared, &mut batch, t);
        }
        if let Some(sock) = &udp {
            batch.flush(sock);
        }
        for e in events {
            match e {
                Event::SessionUp { peer } => {
                    debug!(%peer, "session up");
                    shared.bump_peers();
                }
                Event::HandshakeGaveUp { peer } => {
                    info!(%peer, "WireGuard handshake with peer timed out")
                }
                Event::PathChanged { peer, path } => debug!(%peer, %path, "path changed"),
                Event::NeedFreshEndpoints => shared.stun_kick.notify_one(),
                Event::Pong { tx_id, pong, .. } => {
                    if let Some(waiter) = shared.pings().remove(&tx_id) {
                        let _ = waiter.send(pong);
                    }
                }
            }
        }
        let sleep_until = deadline
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            got = inbound.recv() => {
                let Some((region, src, data)) = got else { return };
                let t = now();
                let mut core = shared.lock();
                shared.traffic.derp_received(data.len());
                core.handle_derp(t, region, src, &data);
                // Take what else is waiting in one go: one poll per batch.
                for _ in 0..256 {
                    match inbound.try_recv() {
                        Ok((region, src, data)) => {
                            shared.traffic.derp_received(data.len());
                            core.handle_derp(t, region, src, &data);
                        }
                        Err(_) => break,
                    }
                }
            }
            ready = udp_readable(udp.as_deref()) => {
                let Some(sock) = udp.as_deref() else { continue };
                if let Err(e) = ready {
                    trace!(error = %e, "UDP socket not readable");
                    // Avoid a hot loop on a persistent error.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let t = now();
                // Take what else is waiting in one go: one poll per batch.
                sock.drain(&mut bufs, UDP_DRAIN_CALLS, |src, data| handle_udp(&shared, t, src, data));
            }
            () = shared.wake.notified() => {}
            () = tokio::time::sleep_until(sleep_until) => {}
        }
    }
}

/// Waits until the UDP socket may have datagrams (forever without a socket).
async fn udp_readable(sock: Option<&DirectSocket>) -> std::io::Result<()> {
    match sock {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// Demultiplexes one datagram from the UDP socket: STUN answers to the endpoint-refresh
/// task, disco and WireGuard to the core.
fn handle_udp(shared: &Shared, t: Instant, src: SocketAddr, data: &[u8]) {
    let src = SocketAddr::new(src.ip().to_canonical(), src.port());
    match disco::classify(data) {
        PacketKind::Stun => match parse_binding_response(data) {
            Ok((txid, mapped)) => {
                let _ = shared.stun_answers.try_send((src, txid, mapped));
            }
            Err(e) => trace!(%src, error = %e, "ignoring a STUN message"),
        },
        PacketKind::Disco | PacketKind::WireGuard => {
            shared.traffic.direct_received(data.len());
            shared.lock().handle_udp(t, src, data);
        }
        PacketKind::Unknown => trace!(%src, len = data.len(), "ignoring an unknown UDP datagram"),
    }
}
