//! [`Conn`], the tokio driver around [`Core`]: it joins (connection info, the first
//! home region, the coordination WebSocket, the home DERP region) and gives
//! applications streams, listeners, datagram sockets, pings and diagnostics.
//!
//! Its tasks, each a thin driver of a sans-IO part, all ended when the [`Conn`] is
//! closed or dropped:
//! - `coordination`: the WebSocket around a [`control::Session`] (the coordination
//!   rules), applying its peer configs to the core;
//! - `driver`: the data plane: polls the core, hands transmits to DERP links or the UDP
//!   socket, feeds received DERP packets and UDP datagrams in;
//! - `endpoints`: a [`netcheck::stun_round`](crate::netcheck::stun_round) from the UDP
//!   socket every 20–26 s and on demand, judged by [`netinfo`](crate::netinfo) and
//!   published through the session (not started when direct paths are disabled);
//! - `derp_links`: per DERP region a reconnecting client, a sender and an
//!   event-forwarding task.

mod config;
mod coordination;
mod derp_links;
mod driver;
mod endpoints;
mod local;
mod traffic;

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_derp::client::ClientConfig;
use tether_derp::headers::ServerHeaders;
use tether_key::NodePrivate;
use tether_proto::coord::{self as proto, Node};
use tether_proto::derpmap::{DERP_PATH, DerpMap};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use uuid::Uuid;

pub use config::{Auth, ConnConfig};
pub(crate) use driver::Shared;
pub use local::{LocalControl, LocalLink};

use crate::control;
use crate::core::{Core, Seed};
use crate::error::TailnetError;
use crate::netinfo::StunVerdict;
use crate::path::{PathInfo, PeerStatus, Pong, Traffic};
use crate::stream::{self, TcpListener, TcpStream, UdpSocket};
use crate::udp::DirectSocket;
use coordination::CoordCmd;
use derp_links::link_to;
use driver::now;

/// How long `join` waits for the home DERP region to admit us.
const DERP_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Cap on `dial_tcp`.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Conn::tunnel_to`] (and so [`Conn::dial_agent`]) waits for the agent's
/// node.
pub const NODE_WAIT: Duration = Duration::from_secs(15);
/// Received DERP datagrams queued for the driver.
const INBOUND_QUEUE: usize = 1024;

/// A snapshot of this node's state and of one peer, for `tether ping`'s diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    /// Our coordination id.
    pub id: Uuid,
    /// Our home DERP region.
    pub home_region: u32,
    /// Whether the home region's DERP server has admitted us (now).
    pub home_derp_connected: bool,
    /// Whether the coordination WebSocket is up now.
    pub coordinator_connected: bool,
    /// Whether our node has been sent to the coordinator (on the current connection).
    pub node_sent: bool,
    /// The server forbids direct paths (`disable_direct_connections`).
    pub direct_disabled_by_server: bool,
    /// This node was configured never to go direct ([`ConnConfig::disable_direct`]).
    pub direct_disabled_locally: bool,
    /// The local address of our UDP socket, if one could be bound.
    pub udp_local: Option<SocketAddr>,
    /// Our UDP endpoints (interface addresses and STUN mappings) as last found.
    pub local_endpoints: Vec<SocketAddr>,
    /// Our NAT maps each destination to another public port (hard NAT), from our
    /// latest STUN round; `None` while fewer than two STUN servers answered.
    pub mapping_varies_by_dest_ip: Option<bool>,
    /// Whether any STUN server answered our latest round over UDP; `None` before the
    /// first round or without STUN servers in the map.
    pub stun_answered: Option<bool>,
    /// The peer asked about, if it is known.
    pub peer: Option<PeerStatus>,
}

/// Longest [`Conn::close`] waits for closed TCP connections' FINs to be acknowledged.
pub const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// A node on the tailnet.
pub struct Conn {
    shared: Arc<Shared>,
    cmds: mpsc::Sender<CoordCmd>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id())
            .field("ip", &self.ip())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Joins the tailnet: connection info → keys → coordination (the Welcome gives our
    /// id) → our node → the home DERP region (the lowest-latency one; later STUN rounds
    /// may move it, with stickiness) → ready. Every step is bounded.
    pub async fn join(cfg: ConnConfig) -> Result<Conn, TailnetError> {
        let info = config::connection_info(&cfg).await?;
        let home = match cfg.home_region {
            Some(region) if info.derp_map.regions.contains_key(&region) => region,
            _ => endpoints::first_home_region(&info.derp_map, &cfg.headers).await?,
        };
        let private = NodePrivate::generate();
        let (ws, welcome) = coordination::connect(&cfg).await?;
        let id = welcome.id;
        let ip = proto::tailnet_ip(id);
        info!(%id, %ip, home_region = home, agent = cfg.auth.is_agent(), "joined the coordinator");

        let t0 = now();
        let mut core = Core::new(&private, ip, t0, Seed::random());
        core.set_home_region(home);
        let blocked = cfg.disable_direct || info.disable_direct_connections;
        if blocked {
            info!(
                by_server = info.disable_direct_connections,
                "direct connections disabled; DERP only"
            );
            core.set_direct_blocked(t0, true);
        }
        let disco_public = core.disco_public();
        let udp = match DirectSocket::bind().await {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                warn!(error = %e, "could not bind a UDP socket; DERP only");
                None
            }
        };
        let (stun_tx, stun_rx) = mpsc::channel(64);
        let derp_url = cfg.url(DERP_PATH)?;
        let derp_region_urls = cfg.derp_region_urls.clone();
        let mut derp_base = ClientConfig::new(derp_url, private.clone());
        derp_base.force_websocket = cfg.force_websockets.unwrap_or(info.derp_force_websockets);
        derp_base.insecure_tls = cfg.insecure_tls;
        derp_base.headers = cfg.headers.clone();
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            ip,
            id: Mutex::new(id),
            peers_changed: watch::Sender::new(0),
            derp_map: Mutex::new(info.derp_map),
            links: Mutex::new(HashMap::new()),
            derp_base,
            derp_region_urls,
            inbound: inbound_tx,
            home_ready: watch::Sender::new(false),
            udp,
            stun_answers: stun_tx,
            stun_kick: Notify::new(),
            pings: Mutex::new(HashMap::new()),
            coord_up: AtomicBool::new(true),
            node_sent: AtomicBool::new(false),
            direct_off_by_server: info.disable_direct_connections,
            direct_off_locally: cfg.disable_direct,
            stun_verdict: Mutex::new(StunVerdict::default()),
            traffic: Default::default(),
            ended: watch::Sender::new(None),
        });

        let node = Node {
            id,
            key: private.public(),
            disco: disco_public,
            preferred_derp: home,
            derp_latency: Default::default(),
            addresses: vec![format!("{ip}/128")],
            allowed_ips: vec![format!("{ip}/128")],
            endpoints: Vec::new(),
            mapping_varies_by_dest_ip: None,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let session = control::Session::new(node, cfg.auth.is_agent(), welcome, t0, rand::random());
        let coord_task = tokio::spawn(coordination::run(
            shared.clone(),
            cfg.clone(),
            session,
            ws,
            cmd_rx,
        ));
        let driver = tokio::spawn(driver::drive(shared.clone(), inbound_rx));
        let mut tasks = vec![coord_task, driver];
        if !blocked && shared.udp.is_some() {
            tasks.push(tokio::spawn(endpoints::refresh(
                shared.clone(),
                stun_rx,
                cmd_tx.clone(),
            )));
        }
        let conn = Conn {
            shared: shared.clone(),
            cmds: cmd_tx,
            tasks,
        };

        // The relay admits our key once the coordinator has our node; the reconnecting
        // client retries until then.
        link_to(&shared, &mut shared.links(), home);
        let mut ready = shared.home_ready.subscribe();
        let waited = tokio::time::timeout(DERP_READY_TIMEOUT, ready.wait_for(|r| *r)).await;
        if !matches!(waited, Ok(Ok(_))) {
            conn.shutdown();
            return Err(TailnetError::Timeout {
                what: format!("DERP region {home} to admit this node"),
                after: DERP_READY_TIMEOUT,
            });
        }
        info!(%id, "tailnet ready");
        Ok(conn)
    }

    /// Our current coordination id (an agent's id; a client's changes if the
    /// coordination connection is re-established, while its address stays).
    pub fn id(&self) -> Uuid {
        *self.shared.id()
    }

    /// Our tailnet address.
    pub fn ip(&self) -> Ipv6Addr {
        self.shared.ip
    }

    /// Clients: asks the coordinator for a tunnel to `agent`. Its node arrives later
    /// (see [`Conn::wait_peer`]); a refusal is logged. [`Conn::tunnel_to`] also waits.
    pub async fn add_tunnel(&self, agent: Uuid) -> Result<(), TailnetError> {
        self.cmds
            .send(CoordCmd::AddTunnel(agent))
            .await
            .map_err(|_| TailnetError::Closed)
    }

    /// Why the server ended this node's session (logged out, expired, revoked, its user
    /// suspended or deleted), once it has; every stream has ended then.
    pub fn session_ended(&self) -> Option<String> {
        self.shared.ended.borrow().clone()
    }

    /// Waits until the server ends this node's session; why.
    pub async fn wait_session_ended(&self) -> String {
        let mut rx = self.shared.ended.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives as long as this Conn.
            Err(_) => std::future::pending().await,
        }
    }

    /// Clients: drops the tunnel to `agent`: the coordinator is told (the agent forgets
    /// us) and the peer is removed here, with every stream to it.
    pub async fn remove_tunnel(&self, agent: Uuid) -> Result<(), TailnetError> {
        self.cmds
            .send(CoordCmd::RemoveTunnel(agent))
            .await
            .map_err(|_| TailnetError::Closed)
    }

    /// Waits until peer `peer`'s node is known.
    pub async fn wait_peer(&self, peer: Uuid, timeout: Duration) -> Result<(), TailnetError> {
        match self.wait_for(timeout, |core| core.has_peer(peer)).await {
            Some(r) => r,
            None => Err(TailnetError::Timeout {
                what: format!("peer {peer}"),
                after: timeout,
            }),
        }
    }

    /// Waits up to `limit` for a WireGuard session with `peer`; false if none came. An
    /// agent starts the handshake once it learns our node, a moment after we learn its
    /// node (until then it drops our packets).
    pub async fn wait_session(&self, peer: Uuid, limit: Duration) -> bool {
        let up = |core: &Core| core.path(peer).is_some_and(|p| p.handshake_done);
        matches!(self.wait_for(limit, up).await, Some(Ok(())))
    }

    /// Checks `done` on the core now and after each peer change (node, session), for up
    /// to `limit`: `None` on timeout.
    async fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&Core) -> bool,
    ) -> Option<Result<(), TailnetError>> {
        let mut rx = self.shared.peers_changed.subscribe();
        let fut = async {
            loop {
                if done(&self.shared.lock()) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(TailnetError::Closed);
                }
            }
        };
        tokio::time::timeout(limit, fut).await.ok()
    }

    /// Clients: a tunnel to `agent`, ready to dial: asks the coordinator for it unless
    /// the agent's node is already here, and waits up to [`NODE_WAIT`] for that node.
    /// Returns the agent's tailnet address.
    pub async fn tunnel_to(&self, agent: Uuid) -> Result<Ipv6Addr, TailnetError> {
        if !self.shared.lock().has_peer(agent) {
            self.add_tunnel(agent).await?;
            self.wait_peer(agent, NODE_WAIT).await?;
        }
        Ok(proto::tailnet_ip(agent))
    }

    /// Clients: a TCP connection to `port` of workspace agent `agent`, in one call:
    /// [`Conn::tunnel_to`], then [`Conn::dial_tcp`] to the agent's address.
    pub async fn dial_agent(&self, agent: Uuid, port: u16) -> Result<TcpStream, TailnetError> {
        let ip = self.tunnel_to(agent).await?;
        self.dial_tcp(ip, port).await
    }

    /// Opens a TCP connection to `ip:port` on the tailnet, within [`DIAL_TIMEOUT`].
    pub async fn dial_tcp(&self, ip: Ipv6Addr, port: u16) -> Result<TcpStream, TailnetError> {
        let remote = SocketAddrV6::new(ip, port, 0, 0);
        let handle = {
            let mut core = self.shared.lock();
            if core.peer_by_ip(ip).is_none() {
                return Err(TailnetError::NoRoute(ip));
            }
            core.netstack().tcp_connect(remote)?
        };
        self.shared.wake_driver();
        let result =
            tokio::time::timeout(DIAL_TIMEOUT, stream::wait_established(&self.shared, handle))
                .await;
        let local_port = {
            let mut core = self.shared.lock();
            core.netstack().tcp_local_port(handle)
        };
        let stream = TcpStream::new(
            self.shared.clone(),
            handle,
            SocketAddrV6::new(self.shared.ip, local_port, 0, 0),
            remote,
        );
        match result {
            Ok(Ok(true)) => {
                debug!(%remote, "TCP connected");
                Ok(stream)
            }
            Ok(Ok(false)) => Err(TailnetError::ConnectionRefused(remote)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.shared.lock().netstack().tcp_abort(handle);
                Err(TailnetError::Timeout {
                    what: format!("TCP connect to {remote}"),
                    after: DIAL_TIMEOUT,
                })
            }
        }
    }

    /// Accepts TCP connections to `port`.
    pub async fn listen_tcp(&self, port: u16) -> Result<TcpListener, TailnetError> {
        self.shared.lock().netstack().tcp_listen(port)?;
        Ok(TcpListener::new(self.shared.clone(), port))
    }

    /// Accepts a TCP connection to any port nobody listens on explicitly: the stream
    /// and the port it was made to. The first call turns this on; it stays on.
    pub async fn accept_any_tcp(&self) -> Result<(TcpStream, u16), TailnetError> {
        self.shared.lock().netstack().set_accept_any(true);
        stream::accept_any(&self.shared).await
    }

    /// Binds UDP `port`; 0 picks a free port (see [`UdpSocket::local_addr`]).
    pub async fn bind_udp(&self, port: u16) -> Result<UdpSocket, TailnetError> {
        let (h, port) = {
            let mut core = self.shared.lock();
            let ns = core.netstack();
            let h = ns.udp_bind(port)?;
            (h, ns.udp_port(h))
        };
        Ok(UdpSocket::new(self.shared.clone(), h, port))
    }

    /// Accepts UDP on any port no socket is bound to: the first datagram to such a port
    /// binds a socket there (the datagram is in it), returned with its port. Later
    /// datagrams to that port go to the same socket; dropping it frees the port. Ports
    /// bound with [`Conn::bind_udp`] are never taken over, and at most
    /// [`MAX_UDP_ACCEPT_ANY`](crate::netstack::MAX_UDP_ACCEPT_ANY) such sockets exist at
    /// once (datagrams beyond that are dropped). The first call turns this on; it stays on.
    pub async fn accept_any_udp(&self) -> Result<(UdpSocket, u16), TailnetError> {
        self.shared.lock().netstack().set_udp_accept_any(true);
        stream::accept_any_udp(&self.shared).await
    }

    /// The path to `peer`, if known.
    pub fn path(&self, peer: Uuid) -> Option<PathInfo> {
        self.shared.lock().path(peer)
    }

    /// Every known peer with its path.
    pub fn peer_paths(&self) -> Vec<(Uuid, PathInfo)> {
        let core = self.shared.lock();
        core.peer_ids()
            .into_iter()
            .filter_map(|id| core.path(id).map(|p| (id, p)))
            .collect()
    }

    /// Datagrams and bytes sent and received since this node joined, by kind of path.
    pub fn traffic(&self) -> Traffic {
        self.shared.traffic.read()
    }

    /// Sends a disco ping to `peer` on its primary path (the trusted direct address,
    /// else DERP, which also starts path discovery) and waits up to `timeout` for the
    /// pong with its TxID: the round-trip time and the path the ping took.
    pub async fn ping(&self, peer: Uuid, timeout: Duration) -> Result<Pong, TailnetError> {
        let (tx, rx) = oneshot::channel();
        let tx_id = {
            let mut core = self.shared.lock();
            if !core.has_peer(peer) {
                return Err(TailnetError::UnknownPeer(peer));
            }
            let Some(tx_id) = core.ping(now(), peer) else {
                return Err(TailnetError::Coordination(format!(
                    "peer {peer} has no disco key; it cannot be pinged"
                )));
            };
            // Registered before the core lock is released: the driver cannot see the
            // pong before this.
            self.shared.pings().insert(tx_id, tx);
            tx_id
        };
        self.shared.wake_driver();
        let got = tokio::time::timeout(timeout, rx).await;
        match got {
            Ok(Ok(pong)) => Ok(pong),
            Ok(Err(_)) => Err(TailnetError::Closed),
            Err(_) => {
                self.shared.pings().remove(&tx_id);
                self.shared.lock().cancel_ping(tx_id);
                Err(TailnetError::Timeout {
                    what: format!("a pong from {peer}"),
                    after: timeout,
                })
            }
        }
    }

    /// This node's state and what is known about `peer`, for diagnostics.
    pub fn diagnostics(&self, peer: Uuid) -> Diagnostics {
        let (home_region, local_endpoints, peer) = {
            let core = self.shared.lock();
            (
                core.home_region(),
                core.local_endpoints().to_vec(),
                core.peer_status(peer),
            )
        };
        let verdict = *self.shared.stun_verdict();
        Diagnostics {
            id: self.id(),
            home_region,
            home_derp_connected: *self.shared.home_ready.borrow(),
            coordinator_connected: self.shared.coord_up.load(Ordering::Acquire),
            node_sent: self.shared.node_sent.load(Ordering::Acquire),
            direct_disabled_by_server: self.shared.direct_off_by_server,
            direct_disabled_locally: self.shared.direct_off_locally,
            udp_local: self.shared.udp.as_ref().and_then(|s| s.local_addr().ok()),
            local_endpoints,
            mapping_varies_by_dest_ip: verdict.mapping_varies,
            stun_answered: verdict.answered,
            peer,
        }
    }

    /// The DERP map in use (as the server last sent it).
    pub fn derp_map(&self) -> DerpMap {
        self.shared.derp_map().clone()
    }

    /// The extra headers for the server's URL this node joined with
    /// ([`ConnConfig::headers`]).
    pub fn server_headers(&self) -> ServerHeaders {
        self.shared.derp_base.headers.clone()
    }

    /// Leaves: lets TCP connections that were just closed deliver their FIN (at most
    /// [`CLOSE_FLUSH`]), tells the coordinator (peers see DISCONNECTED), stops every task.
    pub async fn close(self) {
        // Without this the agent learns of a finished `tether ssh` only from its SSH
        // keepalives, minutes later.
        let deadline = tokio::time::Instant::now() + CLOSE_FLUSH;
        while self.shared.lock().netstack().tcp_fin_unacked()
            && tokio::time::Instant::now() < deadline
        {
            self.shared.wake_driver();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Drop the relay links first: once the coordinator forgets our key the relay
        // closes them, and that must not read as a lost connection to reconnect.
        self.shared.links().clear();
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(CoordCmd::Disconnect(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        info!(id = %self.id(), "left the tailnet");
        self.shutdown();
    }

    fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
        self.shared.links().clear();
        self.shared.lock().netstack().wake_all_waiters();
        self.shared.wake_driver();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shutdown();
    }
}
