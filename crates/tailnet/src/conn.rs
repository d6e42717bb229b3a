//! The tokio driver around [`Core`]: connection info, the coordination WebSocket, DERP
//! connections per region, and the task that moves packets and services timers.
//!
//! Tasks: one coordination task (reconnects with backoff, re-sends our node and
//! tunnels), one driver task (polls the core, hands transmits to DERP links or the UDP
//! socket, feeds received DERP packets and UDP datagrams in), a STUN task (our endpoints
//! from the UDP socket, refreshed every 20–26 s and on demand, published with
//! `update_self`; not started when direct paths are disabled), and per DERP region a
//! [`ReconnectingClient`] plus a sender and an event-forwarding task. All of them end
//! when the [`Conn`] is closed or dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Deserialize;
use tether_backoff::Backoff;
use tether_coord::proto::{self, Node, PeerUpdateKind, Request, Response};
use tether_derp::client::{ClientConfig, Event as DerpEvent, ReconnectingClient};
use tether_derp::map::DerpMap;
use tether_key::{NodePrivate, NodePublic};
use tether_stun::message::{TransactionId, binding_request, parse_binding_response};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::{debug, info, trace, warn};
use url::Url;
use uuid::Uuid;

use crate::core::{Core, Event, PeerConfig, Transmit};
use crate::disco::{self, PacketKind, TxId};
use crate::error::TailnetError;
use crate::netcheck::{self, AddrSource, StunAnswer, stun_sources};
use crate::path::{PathInfo, PathKind, PeerStatus, Pong};
use crate::stream::{self, TcpListener, TcpStream, UdpSocket};
use crate::udp::{DirectSocket, RecvBufs, SendBatch};

/// Cap on each HTTP request and on the coordination WebSocket connect.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `join` waits for the home DERP region to admit us.
const DERP_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Cap on `dial_tcp`.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Datagrams queued per DERP region before new ones are dropped.
const DERP_SEND_QUEUE: usize = 1024;
/// Datagrams written to a DERP server in one write, at most.
const DERP_SEND_BATCH: usize = 64;
/// Received DERP datagrams queued for the driver.
const INBOUND_QUEUE: usize = 1024;
/// Receive syscalls per wake-up of the driver (each reads a batch of datagrams).
const UDP_DRAIN_CALLS: usize = 8;
/// Our endpoints are re-STUNed this often (plus up to [`RESTUN_JITTER`]).
const RESTUN_INTERVAL: Duration = Duration::from_secs(20);
/// Random extra delay of a re-STUN.
const RESTUN_JITTER: Duration = Duration::from_secs(6);
/// How long one STUN round waits for answers.
const STUN_ROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// STUN requests per server per round, [`STUN_RETRY`] apart.
const STUN_TRIES: u32 = 3;
/// Time between two STUN tries.
const STUN_RETRY: Duration = Duration::from_millis(100);

/// Upper bound of the latency probe that picks the first home region among several.
const FIRST_HOME_PROBE: Duration = Duration::from_secs(2);

/// How this node authenticates to the server.
#[derive(Clone)]
pub enum Auth {
    /// A user's session token: this node is a client.
    Session(String),
    /// A workspace agent's token: this node is the agent.
    Agent(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never print them.
        match self {
            Self::Session(_) => f.write_str("Session(..)"),
            Self::Agent(_) => f.write_str("Agent(..)"),
        }
    }
}

impl Auth {
    fn header(&self) -> (&'static str, &str) {
        match self {
            Self::Session(t) => ("Tether-Session-Token", t),
            Self::Agent(t) => ("Tether-Agent-Token", t),
        }
    }

    fn is_agent(&self) -> bool {
        matches!(self, Self::Agent(_))
    }

    fn paths(&self) -> (&'static str, &'static str) {
        match self {
            Self::Session(_) => ("/api/v2/tailnet/connection", "/api/v2/tailnet/coordinate"),
            Self::Agent(_) => (
                "/api/v2/workspaceagents/me/connection",
                "/api/v2/workspaceagents/me/coordinate",
            ),
        }
    }
}

/// How to join the tailnet.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// The tether server, e.g. `https://tether.example.com`.
    pub server: Url,
    /// Who we are.
    pub auth: Auth,
    /// Reach DERP over WebSocket only; `None` follows the server's setting.
    pub force_websockets: Option<bool>,
    /// Accept any TLS certificate on the DERP connections (tests only).
    pub insecure_tls: bool,
    /// Never use direct UDP paths (DERP only), whatever the server allows.
    pub disable_direct: bool,
}

impl ConnConfig {
    /// A config with the server's DERP transport settings.
    pub fn new(server: Url, auth: Auth) -> Self {
        Self {
            server,
            auth,
            force_websockets: None,
            insecure_tls: false,
            disable_direct: false,
        }
    }
}

/// `GET …/connection`: what a node needs before it joins.
#[derive(Debug, Clone, Deserialize)]
struct ConnectionInfo {
    derp_map: DerpMap,
    #[serde(default)]
    derp_force_websockets: bool,
    #[serde(default)]
    disable_direct_connections: bool,
}

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

/// What a STUN round found about us, published in our node.
#[derive(Debug, Clone, PartialEq)]
struct NetInfo {
    endpoints: Vec<String>,
    preferred_derp: u32,
    derp_latency: BTreeMap<String, f64>,
    mapping_varies_by_dest_ip: Option<bool>,
}

/// Requests from the API to the coordination task.
enum CoordCmd {
    AddTunnel(Uuid),
    SetNetInfo(NetInfo),
    Disconnect(oneshot::Sender<()>),
}

/// State shared by the API handles and the tasks.
pub(crate) struct Shared {
    core: Mutex<Core>,
    wake: Notify,
    closed: AtomicBool,
    pub(crate) ip: Ipv6Addr,
    id: Mutex<Uuid>,
    peers_changed: watch::Sender<u64>,
    derp_map: Mutex<DerpMap>,
    links: Mutex<HashMap<u32, RegionLink>>,
    derp_base: ClientConfig,
    inbound: mpsc::Sender<(u32, NodePublic, Bytes)>,
    home_ready: watch::Sender<bool>,
    /// The one UDP socket: direct WireGuard, disco and STUN.
    udp: Option<Arc<DirectSocket>>,
    /// STUN answers read by the driver, for the STUN task.
    stun_answers: mpsc::Sender<(TransactionId, SocketAddr)>,
    /// Asks the STUN task for fresh endpoints now.
    stun_kick: Notify,
    /// Pings of [`Conn::ping`] waiting for their pong.
    pings: Mutex<HashMap<TxId, oneshot::Sender<Pong>>>,
    /// The coordination WebSocket is up.
    coord_up: AtomicBool,
    /// Our node went out on the current coordination connection.
    node_sent: AtomicBool,
    /// The server's `disable_direct_connections`.
    direct_off_by_server: bool,
    /// [`ConnConfig::disable_direct`].
    direct_off_locally: bool,
    /// What our latest STUN round found.
    stun_verdict: Mutex<StunVerdict>,
}

/// What a STUN round says about our network, for diagnostics.
#[derive(Debug, Clone, Copy, Default)]
struct StunVerdict {
    /// Hard NAT (`None` while fewer than two servers answered).
    mapping_varies: Option<bool>,
    /// Any server answered (`None`: no round yet, or no servers in the map).
    answered: Option<bool>,
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

    fn bump_peers(&self) {
        self.peers_changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn links(&self) -> MutexGuard<'_, HashMap<u32, RegionLink>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pings(&self) -> MutexGuard<'_, HashMap<TxId, oneshot::Sender<Pong>>> {
        self.pings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    // The driver is the one place that reads the clock.
    Instant::now()
}

/// One DERP region: a reconnecting client and its sender queue.
struct RegionLink {
    queue: mpsc::Sender<(NodePublic, Bytes)>,
    /// Whether the region's server has admitted us (now).
    connected: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RegionLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RegionLink {
    fn spawn(shared: &Arc<Shared>, region: u32) -> Option<Self> {
        let map_region = {
            let map = shared.derp_map.lock().unwrap_or_else(|e| e.into_inner());
            map.regions.get(&region).cloned()
        };
        let Some(map_region) = map_region else {
            warn!(
                region,
                "no such DERP region in the DERP map; cannot reach peers homed there"
            );
            return None;
        };
        let home = shared.lock().home_region();
        info!(region, home = region == home, "connecting to DERP region");
        let (client, mut events) =
            ReconnectingClient::spawn_region(map_region, shared.derp_base.clone());
        let client = Arc::new(client);
        let (queue, mut rx) = mpsc::channel::<(NodePublic, Bytes)>(DERP_SEND_QUEUE);
        let sender_client = client.clone();
        let sender = tokio::spawn(async move {
            // What queued up while the last write ran goes out in one write.
            let mut batch = Vec::with_capacity(DERP_SEND_BATCH);
            while rx.recv_many(&mut batch, DERP_SEND_BATCH).await > 0 {
                if let Err(e) = sender_client.send_many(&batch).await {
                    trace!(region, datagrams = batch.len(), error = %e, "DERP send failed; dropping datagrams");
                }
                batch.clear();
            }
        });
        let weak = Arc::downgrade(shared);
        let connected = Arc::new(AtomicBool::new(false));
        let up = connected.clone();
        let forward = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Some(shared) = weak.upgrade() else { return };
                match ev {
                    DerpEvent::Packet { src, data } => {
                        if shared.inbound.try_send((region, src, data)).is_err() {
                            trace!(region, "driver busy; dropping received datagram");
                        }
                    }
                    DerpEvent::Connected { .. } => {
                        up.store(true, Ordering::Release);
                        let home = shared.lock().home_region() == region;
                        info!(region, home, "DERP connected");
                        if home {
                            if let Err(e) = client.note_preferred(true).await {
                                debug!(region, error = %e, "could not mark DERP region preferred");
                            }
                            shared.home_ready.send_replace(true);
                            shared.lock().retry_handshakes(now());
                            shared.wake_driver();
                        }
                    }
                    DerpEvent::Disconnected { error } => {
                        up.store(false, Ordering::Release);
                        info!(region, %error, "DERP disconnected; reconnecting");
                        if shared.lock().home_region() == region {
                            shared.home_ready.send_replace(false);
                        }
                    }
                    DerpEvent::PeerGone { key, reason } => {
                        debug!(region, peer = %key.short(), ?reason, "DERP peer gone");
                    }
                    DerpEvent::Health(h) => {
                        if !h.is_empty() {
                            warn!(region, health = %h, "DERP server reports a problem");
                        }
                    }
                }
            }
        });
        Some(Self {
            queue,
            connected,
            tasks: vec![sender, forward],
        })
    }
}

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

async fn http_get_info(cfg: &ConnConfig) -> Result<ConnectionInfo, TailnetError> {
    let (info_path, _) = cfg.auth.paths();
    let url = cfg
        .server
        .join(info_path)
        .map_err(|e| TailnetError::BadUrl(format!("{}: {e}", cfg.server)))?;
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| TailnetError::Unreachable {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    let (name, token) = cfg.auth.header();
    let resp = client
        .get(url.clone())
        .header(name, token)
        .send()
        .await
        .map_err(|e| TailnetError::Unreachable {
            url: cfg.server.to_string(),
            message: e.to_string(),
        })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(TailnetError::Refused {
            what: "the connection info request".into(),
            status: status.as_u16(),
            body,
        });
    }
    resp.json::<ConnectionInfo>()
        .await
        .map_err(|e| TailnetError::Unreachable {
            url: url.to_string(),
            message: format!("bad connection info: {e}"),
        })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn coordinate_url(cfg: &ConnConfig) -> Result<Url, TailnetError> {
    let (_, path) = cfg.auth.paths();
    let mut url = cfg
        .server
        .join(path)
        .map_err(|e| TailnetError::BadUrl(format!("{}: {e}", cfg.server)))?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => {
            return Err(TailnetError::BadUrl(format!(
                "{}: scheme {other} is not http(s)",
                cfg.server
            )));
        }
    };
    url.set_scheme(scheme)
        .map_err(|()| TailnetError::BadUrl(cfg.server.to_string()))?;
    url.set_query(Some(&format!("version={}", proto::VERSION)));
    Ok(url)
}

/// Connects the coordination WebSocket and reads the Welcome: (socket, our id, lost-after).
async fn coord_connect(cfg: &ConnConfig) -> Result<(Ws, Uuid, Duration), TailnetError> {
    let url = coordinate_url(cfg)?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| TailnetError::BadUrl(e.to_string()))?;
    let (name, token) = cfg.auth.header();
    let value = http::HeaderValue::from_str(token)
        .map_err(|_| TailnetError::Coordination("token is not a valid header value".into()))?;
    req.headers_mut().insert(name, value);
    let (mut ws, _) =
        match tokio::time::timeout(HTTP_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
            Err(_) => {
                return Err(TailnetError::Timeout {
                    what: "the coordination WebSocket".into(),
                    after: HTTP_TIMEOUT,
                });
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(TailnetError::Refused {
                    what: "the coordination connection".into(),
                    status: resp.status().as_u16(),
                    body,
                });
            }
            Ok(Err(e)) => {
                return Err(TailnetError::Unreachable {
                    url: cfg.server.to_string(),
                    message: e.to_string(),
                });
            }
            Ok(Ok(x)) => x,
        };
    let deadline = tokio::time::Instant::now() + HTTP_TIMEOUT;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                return Err(TailnetError::Timeout {
                    what: "the coordinator's welcome".into(),
                    after: HTTP_TIMEOUT,
                });
            }
            Ok(None) => {
                return Err(TailnetError::Coordination(
                    "closed before the welcome".into(),
                ));
            }
            Ok(Some(Err(e))) => return Err(TailnetError::Coordination(e.to_string())),
            Ok(Some(Ok(m))) => m,
        };
        let Message::Text(text) = msg else { continue };
        match serde_json::from_str::<Response>(text.as_str()) {
            Ok(Response::Welcome {
                version,
                id,
                lost_after_secs,
                ..
            }) => {
                proto::check_version(&version).map_err(TailnetError::Coordination)?;
                return Ok((ws, id, Duration::from_secs(lost_after_secs.max(1))));
            }
            Ok(Response::Error { message }) => return Err(TailnetError::Coordination(message)),
            Ok(_) => continue,
            Err(e) => {
                return Err(TailnetError::Coordination(format!(
                    "bad message before the welcome: {e}"
                )));
            }
        }
    }
}

fn parse_addresses(node: &Node) -> Vec<Ipv6Addr> {
    node.addresses
        .iter()
        .filter_map(|a| a.strip_suffix("/128").unwrap_or(a).parse::<Ipv6Addr>().ok())
        .collect()
}

fn parse_endpoints(node: &Node) -> Vec<SocketAddr> {
    node.endpoints
        .iter()
        .filter_map(|e| e.parse::<SocketAddr>().ok())
        .collect()
}

impl Conn {
    /// Joins the tailnet: connection info → keys → coordination (the Welcome gives our
    /// id) → our node → the home DERP region (the lowest-latency one; later STUN rounds
    /// may move it, with stickiness) → ready. Every step is bounded.
    pub async fn join(cfg: ConnConfig) -> Result<Conn, TailnetError> {
        let info = http_get_info(&cfg).await?;
        let home = first_home_region(&info.derp_map).await?;
        let private = NodePrivate::generate();
        let (ws, id, lost_after) = coord_connect(&cfg).await?;
        let ip = proto::tailnet_ip(id);
        info!(%id, %ip, home_region = home, agent = cfg.auth.is_agent(), "joined the coordinator");

        let t0 = now();
        let mut core = Core::new(&private, ip, t0, rand::thread_rng().r#gen());
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
        let derp_url = cfg
            .server
            .join("/derp")
            .map_err(|e| TailnetError::BadUrl(format!("{}: {e}", cfg.server)))?;
        let mut derp_base = ClientConfig::new(derp_url, private.clone());
        derp_base.force_websocket = cfg.force_websockets.unwrap_or(info.derp_force_websockets);
        derp_base.insecure_tls = cfg.insecure_tls;
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
        let coord = CoordTask {
            shared: shared.clone(),
            cfg: cfg.clone(),
            node,
            tunnels: BTreeSet::new(),
            lost_after,
        };
        let coord_task = tokio::spawn(coord.run(ws, cmd_rx));
        let driver = tokio::spawn(drive(shared.clone(), inbound_rx));
        let mut tasks = vec![coord_task, driver];
        if !blocked && shared.udp.is_some() {
            tasks.push(tokio::spawn(stun_task(
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
        *self.shared.id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our tailnet address.
    pub fn ip(&self) -> Ipv6Addr {
        self.shared.ip
    }

    /// Clients: asks the coordinator for a tunnel to `agent`. Its node arrives later
    /// (see [`Conn::wait_peer`]); a refusal is logged.
    pub async fn add_tunnel(&self, agent: Uuid) -> Result<(), TailnetError> {
        self.cmds
            .send(CoordCmd::AddTunnel(agent))
            .await
            .map_err(|_| TailnetError::Closed)
    }

    /// Waits until peer `peer`'s node is known.
    pub async fn wait_peer(&self, peer: Uuid, timeout: Duration) -> Result<(), TailnetError> {
        let mut rx = self.shared.peers_changed.subscribe();
        let shared = &self.shared;
        let fut = async {
            loop {
                if shared.lock().has_peer(peer) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(TailnetError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| TailnetError::Timeout {
                what: format!("peer {peer}"),
                after: timeout,
            })?
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
            core.netstack()
                .tcp(handle)
                .local_endpoint()
                .map_or(0, |e| e.port)
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
                self.shared.lock().netstack().tcp(handle).abort();
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
        let verdict = *self
            .shared
            .stun_verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner());
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
        self.shared
            .derp_map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Leaves: tells the coordinator (peers see DISCONNECTED), stops every task.
    pub async fn close(self) {
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
    if link.queue.try_send((t.dst, Bytes::from(t.data))).is_err() {
        trace!(peer = %t.peer, region, "DERP send queue full; dropping datagram");
    }
}

/// The data-plane loop: poll the core, send what it produced, sleep until the next
/// deadline, a received datagram or a wake-up from an API call.
async fn drive(shared: Arc<Shared>, mut inbound: mpsc::Receiver<(u32, NodePublic, Bytes)>) {
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
                Event::SessionUp { peer } => debug!(%peer, "session up"),
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
                core.handle_derp(t, region, src, &data);
                // Take what else is waiting in one go: one poll per batch.
                for _ in 0..256 {
                    match inbound.try_recv() {
                        Ok((region, src, data)) => core.handle_derp(t, region, src, &data),
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

/// Demultiplexes one datagram from the UDP socket: STUN answers to the STUN task,
/// disco and WireGuard to the core.
fn handle_udp(shared: &Shared, t: Instant, src: SocketAddr, data: &[u8]) {
    let src = SocketAddr::new(src.ip().to_canonical(), src.port());
    match disco::classify(data) {
        PacketKind::Stun => match parse_binding_response(data) {
            Ok((txid, mapped)) => {
                let _ = shared.stun_answers.try_send((txid, mapped));
            }
            Err(e) => trace!(%src, error = %e, "ignoring a STUN message"),
        },
        PacketKind::Disco | PacketKind::WireGuard => shared.lock().handle_udp(t, src, data),
        PacketKind::Unknown => trace!(%src, len = data.len(), "ignoring an unknown UDP datagram"),
    }
}

/// The IPv4 STUN servers of the DERP map, with their regions.
async fn stun_servers(map: &DerpMap) -> Vec<(u32, SocketAddr)> {
    let mut out = BTreeSet::new();
    for (&id, region) in &map.regions {
        for node in &region.nodes {
            let Some((port, v4, _)) = stun_sources(node) else {
                continue;
            };
            match v4 {
                AddrSource::Disabled => {}
                AddrSource::Ip(ip) => {
                    out.insert((id, SocketAddr::new(ip, port)));
                }
                AddrSource::Resolve(host) => {
                    let looked = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::lookup_host((host.as_str(), port)),
                    )
                    .await;
                    if let Ok(Ok(addrs)) = looked {
                        out.extend(addrs.filter(|a| a.is_ipv4()).map(|a| (id, a)));
                    } else {
                        debug!(%host, "could not resolve STUN server");
                    }
                }
            }
        }
    }
    out.into_iter().collect()
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
fn fib_trie_local_ips(text: &str) -> BTreeSet<Ipv4Addr> {
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

/// Our local interface addresses (IPv4, no loopback) with the UDP socket's `port`.
fn local_endpoints(port: u16) -> BTreeSet<SocketAddr> {
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

/// One STUN round from the shared socket: the first answer of each server (our mapped
/// address as it saw it, and the round trip).
async fn stun_round(
    sock: &DirectSocket,
    servers: &[(u32, SocketAddr)],
    answers: &mut mpsc::Receiver<(TransactionId, SocketAddr)>,
) -> Vec<StunAnswer> {
    while answers.try_recv().is_ok() {}
    let mut found = Vec::new();
    if servers.is_empty() {
        return found;
    }
    let mut pending: HashMap<TransactionId, (usize, tokio::time::Instant)> = HashMap::new();
    let mut answered: BTreeSet<usize> = BTreeSet::new();
    let start = tokio::time::Instant::now();
    let deadline = start + STUN_ROUND_TIMEOUT;
    let mut tries = 0u32;
    let mut next_send = start;
    while answered.len() < servers.len() {
        let send_due = tries < STUN_TRIES;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep_until(next_send), if send_due => {
                for (i, (_, server)) in servers.iter().enumerate() {
                    if answered.contains(&i) {
                        continue;
                    }
                    let txid = TransactionId::random();
                    match sock.send_to(&binding_request(txid), *server).await {
                        Ok(_) => {
                            pending.insert(txid, (i, tokio::time::Instant::now()));
                        }
                        Err(e) => trace!(%server, error = %e, "STUN send failed"),
                    }
                }
                tries += 1;
                next_send += STUN_RETRY;
            }
            got = answers.recv() => {
                let Some((txid, addr)) = got else { break };
                if let Some((i, sent)) = pending.remove(&txid)
                    && answered.insert(i)
                {
                    let (region, server) = servers[i];
                    trace!(%server, mapped = %addr, "STUN answer");
                    found.push(StunAnswer {
                        region,
                        server,
                        mapped: SocketAddr::new(addr.ip().to_canonical(), addr.port()),
                        latency: sent.elapsed(),
                    });
                }
            }
        }
    }
    found
}

/// Keeps our endpoints fresh: STUN from the shared socket every 20–26 s and whenever
/// the core asks, plus the default-route address; hands them to the core and, when
/// they change, to the coordinator.
async fn stun_task(
    shared: Arc<Shared>,
    mut answers: mpsc::Receiver<(TransactionId, SocketAddr)>,
    cmds: mpsc::Sender<CoordCmd>,
) {
    let Some(sock) = shared.udp.clone() else {
        return;
    };
    let Ok(local) = sock.local_addr() else {
        return;
    };
    let mut published: Option<NetInfo> = None;
    loop {
        let map = shared
            .derp_map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let servers = stun_servers(&map).await;
        let found = stun_round(&sock, &servers, &mut answers).await;
        let mut eps: BTreeSet<SocketAddr> = found.iter().map(|a| a.mapped).collect();
        eps.extend(local_endpoints(local.port()));
        let eps: Vec<SocketAddr> = eps.into_iter().collect();
        let answered = (!servers.is_empty()).then_some(!found.is_empty());
        let current = shared.lock().home_region();
        // The same report as `tether netcheck`, from this round's answers.
        let m = netcheck::Measurements {
            stun: found,
            ..Default::default()
        };
        let report = netcheck::build_report(&map, &m, Some(current));
        let (varies, latency) = (report.mapping_varies_by_dest_ip, report.region_latency);
        *shared
            .stun_verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = StunVerdict {
            mapping_varies: varies,
            answered,
        };
        // Only a home STUN measured can be compared (one chosen by HTTP latency at join
        // may have no STUN server).
        let home = match report.preferred_derp {
            Some(best) if latency.contains_key(&current) => best,
            _ => current,
        };
        if home != current {
            switch_home(&shared, current, home, &latency);
        }
        shared.lock().set_local_endpoints(now(), eps.clone());
        shared.wake_driver();
        let info = NetInfo {
            endpoints: eps.iter().map(ToString::to_string).collect(),
            preferred_derp: home,
            derp_latency: latency
                .iter()
                .map(|(r, d)| (format!("{r}-v4"), d.as_secs_f64()))
                .collect(),
            mapping_varies_by_dest_ip: varies,
        };
        let changed = published.as_ref().is_none_or(|p| {
            p.endpoints != info.endpoints
                || p.preferred_derp != info.preferred_derp
                || p.mapping_varies_by_dest_ip != info.mapping_varies_by_dest_ip
        });
        if changed {
            info!(endpoints = ?eps, hard_nat = ?varies, home_region = home, "our UDP endpoints");
            if cmds.send(CoordCmd::SetNetInfo(info.clone())).await.is_err() {
                return;
            }
            published = Some(info);
        }
        let jitter = rand::thread_rng().gen_range(0..=RESTUN_JITTER.as_millis() as u64);
        let wait = RESTUN_INTERVAL + Duration::from_millis(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.stun_kick.notified() => {}
        }
    }
}

/// The home region to start with: with one DERP region, that one; with several, the
/// lowest-latency one by a short netcheck (ties and failures: the lowest region ID).
async fn first_home_region(map: &DerpMap) -> Result<u32, TailnetError> {
    let lowest = map.derp_region_ids().min().ok_or(TailnetError::NoDerp)?;
    if map.derp_region_ids().nth(1).is_none() {
        return Ok(lowest);
    }
    let Ok(sock) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else {
        return Ok(lowest);
    };
    let opts = netcheck::Options {
        previous_home: None,
        stun_timeout: FIRST_HOME_PROBE / 2,
        report_timeout: FIRST_HOME_PROBE,
    };
    let report = netcheck::run(map, netcheck::Sockets::single(&sock), &opts).await;
    let home = report.preferred_derp.unwrap_or(lowest);
    debug!(home, latency = ?report.region_latency, "first home region by latency");
    Ok(home)
}

/// Makes `to` our home DERP region (lower latency than `from`): peers learn it from our
/// node; the link to `from` stays, for peers homed there and packets still in flight.
fn switch_home(shared: &Arc<Shared>, from: u32, to: u32, latency: &BTreeMap<u32, Duration>) {
    info!(from, to, latency = ?latency.get(&to), "moving home DERP region (lower latency)");
    shared.lock().set_home_region(to);
    let mut links = shared.links();
    let up = link_to(shared, &mut links, to).is_some_and(|l| l.connected.load(Ordering::Acquire));
    shared.home_ready.send_replace(up);
}

/// The link to DERP `region`, connecting to it first if there is none (and the node is
/// not closing).
fn link_to<'a>(
    shared: &Arc<Shared>,
    links: &'a mut HashMap<u32, RegionLink>,
    region: u32,
) -> Option<&'a mut RegionLink> {
    match links.entry(region) {
        std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) => {
            if shared.is_closed() {
                return None;
            }
            RegionLink::spawn(shared, region).map(|l| e.insert(l))
        }
    }
}

/// The coordination connection and what must be re-sent after a reconnect.
struct CoordTask {
    shared: Arc<Shared>,
    cfg: ConnConfig,
    node: Node,
    tunnels: BTreeSet<Uuid>,
    lost_after: Duration,
}

/// Why a coordination session ended.
enum SessionEnd {
    Lost(String),
    Disconnected,
}

impl CoordTask {
    async fn run(mut self, first: Ws, mut cmds: mpsc::Receiver<CoordCmd>) {
        let mut ws = Some(first);
        let mut backoff =
            Backoff::with_random_seed(Duration::from_millis(250), Duration::from_secs(10));
        loop {
            let socket = match ws.take() {
                Some(s) => s,
                None => match coord_connect(&self.cfg).await {
                    Ok((s, id, lost_after)) => {
                        self.lost_after = lost_after;
                        let old = self.node.id;
                        if id != old {
                            info!(old = %old, new = %id, "coordinator assigned a new id; keeping our address");
                            self.node.id = id;
                            *self.shared.id.lock().unwrap_or_else(|e| e.into_inner()) = id;
                        }
                        info!(%id, "coordination reconnected");
                        s
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        debug!(error = %e, ?delay, "coordination connect failed; retrying");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                },
            };
            backoff.reset();
            match self.session(socket, &mut cmds).await {
                SessionEnd::Disconnected => return,
                SessionEnd::Lost(why) => {
                    if self.shared.is_closed() {
                        return;
                    }
                    warn!(reason = %why, "coordination connection lost; reconnecting");
                }
            }
        }
    }

    async fn send(ws: &mut Ws, req: &Request) -> Result<(), String> {
        let text = serde_json::to_string(req).map_err(|e| e.to_string())?;
        match tokio::time::timeout(HTTP_TIMEOUT, ws.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("send timed out".into()),
        }
    }

    async fn session(&mut self, ws: Ws, cmds: &mut mpsc::Receiver<CoordCmd>) -> SessionEnd {
        self.shared.coord_up.store(true, Ordering::Release);
        let end = self.session_inner(ws, cmds).await;
        self.shared.coord_up.store(false, Ordering::Release);
        self.shared.node_sent.store(false, Ordering::Release);
        end
    }

    async fn session_inner(
        &mut self,
        mut ws: Ws,
        cmds: &mut mpsc::Receiver<CoordCmd>,
    ) -> SessionEnd {
        let node = self.node.clone();
        if let Err(e) = Self::send(&mut ws, &Request::UpdateSelf { node }).await {
            return SessionEnd::Lost(e);
        }
        self.shared.node_sent.store(true, Ordering::Release);
        for t in self.tunnels.clone() {
            if let Err(e) = Self::send(&mut ws, &Request::AddTunnel { id: t }).await {
                return SessionEnd::Lost(e);
            }
        }
        // The server pings every few seconds; silence this long means the link is dead.
        let silence = self.lost_after + Duration::from_secs(5);
        loop {
            tokio::select! {
                msg = tokio::time::timeout(silence, ws.next()) => {
                    let msg = match msg {
                        Err(_) => return SessionEnd::Lost(format!("nothing heard for {silence:?}")),
                        Ok(None) => return SessionEnd::Lost("closed by the server".into()),
                        Ok(Some(Err(e))) => return SessionEnd::Lost(e.to_string()),
                        Ok(Some(Ok(m))) => m,
                    };
                    match msg {
                        Message::Text(text) => match serde_json::from_str::<Response>(text.as_str()) {
                            Ok(resp) => {
                                if let Err(e) = self.handle(&mut ws, resp).await {
                                    return SessionEnd::Lost(e);
                                }
                            }
                            Err(e) => debug!(error = %e, "ignoring a malformed coordination message"),
                        },
                        Message::Close(_) => return SessionEnd::Lost("closed by the server".into()),
                        _ => {}
                    }
                }
                cmd = cmds.recv() => match cmd {
                    Some(CoordCmd::AddTunnel(id)) => {
                        if self.tunnels.insert(id) {
                            info!(agent = %id, "adding tunnel");
                        }
                        if let Err(e) = Self::send(&mut ws, &Request::AddTunnel { id }).await {
                            return SessionEnd::Lost(e);
                        }
                    }
                    Some(CoordCmd::SetNetInfo(ni)) => {
                        let mut node = self.node.clone();
                        node.endpoints = ni.endpoints;
                        node.preferred_derp = ni.preferred_derp;
                        node.derp_latency = ni.derp_latency;
                        node.mapping_varies_by_dest_ip = ni.mapping_varies_by_dest_ip;
                        if node != self.node {
                            self.node = node.clone();
                            if let Err(e) = Self::send(&mut ws, &Request::UpdateSelf { node }).await {
                                return SessionEnd::Lost(e);
                            }
                        }
                    }
                    Some(CoordCmd::Disconnect(ack)) => {
                        let _ = Self::send(&mut ws, &Request::Disconnect).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                        let _ = ack.send(());
                        return SessionEnd::Disconnected;
                    }
                    None => {
                        let _ = Self::send(&mut ws, &Request::Disconnect).await;
                        return SessionEnd::Disconnected;
                    }
                },
            }
        }
    }

    async fn handle(&mut self, ws: &mut Ws, resp: Response) -> Result<(), String> {
        match resp {
            Response::PeerUpdates { updates } => {
                let mut ready_for = Vec::new();
                {
                    let t = now();
                    let mut core = self.shared.lock();
                    for u in updates {
                        match u.kind {
                            PeerUpdateKind::Node => {
                                let Some(node) = u.node else { continue };
                                let cfg = PeerConfig {
                                    id: node.id,
                                    key: node.key,
                                    home_region: node.preferred_derp,
                                    addresses: parse_addresses(&node),
                                    disco: (*node.disco.as_bytes() != [0u8; 32])
                                        .then_some(node.disco),
                                    endpoints: parse_endpoints(&node),
                                    mapping_varies_by_dest_ip: node.mapping_varies_by_dest_ip,
                                };
                                let was_known = core.path(node.id).is_some();
                                core.upsert_peer(cfg);
                                if self.cfg.auth.is_agent() && !was_known {
                                    ready_for.push(node.id);
                                }
                            }
                            PeerUpdateKind::ReadyForHandshake => {
                                debug!(peer = %u.id, "peer ready for handshake");
                                core.initiate_handshake(u.id, t);
                            }
                            PeerUpdateKind::Disconnected | PeerUpdateKind::Lost => {
                                info!(peer = %u.id, kind = ?u.kind, reason = %u.reason, "peer left");
                                core.remove_peer(u.id);
                            }
                        }
                    }
                }
                self.shared.bump_peers();
                self.shared.wake_driver();
                for id in ready_for {
                    Self::send(ws, &Request::ReadyForHandshake { id }).await?;
                }
            }
            Response::DerpMap { derp_map } => {
                debug!(regions = derp_map.regions.len(), "DERP map updated");
                *self
                    .shared
                    .derp_map
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = derp_map;
            }
            Response::Error { message } => warn!(%message, "the coordinator refused a request"),
            Response::Welcome { .. } => debug!("ignoring a second welcome"),
        }
        Ok(())
    }
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
}
