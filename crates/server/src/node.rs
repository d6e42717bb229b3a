//! The server's own tailnet node (Coder's "server tailnet"): one per server process. It
//! reaches workspace agents over WireGuard like a CLI client does, direct when NAT
//! traversal between server and agent works, else through DERP, and carries everything a
//! browser does (the web terminal, listening ports); browsers never join the tailnet.
//!
//! - **Control**: the node talks to the coordinator in this process through
//!   [`Hub::open_local`] as [`Role::Server`], the one role allowed a tunnel to every agent.
//!   No HTTP route leads to that role, so there is no credential to steal or guess, and
//!   coordination does not depend on the access URL or TLS.
//! - **DERP**: the built-in region is dialed at the server's own HTTP listener, so the node
//!   reaches its relay even when the access URL does not resolve from inside the server;
//!   other regions as the map says.
//! - **Tunnels** are opened on first use and dropped after the idle time ([`Tunnels`]);
//!   an open terminal holds its tunnel ([`Lease`]).
//! - **Paths**: every [`PROBE_EVERY`] the node pings each agent it has a tunnel to; the
//!   last pong and [`Conn::diagnostics`] make the [`ServerPath`] the workspace JSON and
//!   health report show.

mod tunnels;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tether_backoff::Backoff;
use tether_coord::Role;
use tether_proto::api::{ConnectionInfo, PathKind as ApiPathKind, ServerPath};
use tether_tailnet::verdict::{self, Us};
use tether_tailnet::{
    Auth, Conn, ConnConfig, LocalControl, LocalLink, PathKind, Pong, TailnetError, TcpStream,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use url::Url;
use uuid::Uuid;

pub use tunnels::Tunnels;

use crate::coordinate::Hub;

/// Default idle time after which an unused tunnel is dropped.
pub const IDLE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often each agent with a tunnel is pinged for its path and latency.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long a probe waits for its pong.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// A latency older than this is not shown.
const LATENCY_FRESH: Duration = Duration::from_secs(30);
/// How a relayed path's reason starts when the agent did not answer the last ping.
pub const NO_PONG: &str = "the agent did not answer the server's last ping";
/// How long a request waits for the node to finish joining.
const UP_WAIT: Duration = Duration::from_secs(10);

/// How the server's node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The server's own HTTP listener (an unspecified address is dialed on loopback).
    pub http_listener: SocketAddr,
    /// The built-in DERP region, when the built-in relay runs.
    pub builtin_region: Option<u32>,
    /// Tell the node to reach DERP over WebSocket only.
    pub derp_force_websockets: bool,
    /// Direct paths are forbidden (`--block-direct-connections`).
    pub block_direct: bool,
    /// Unused tunnels are dropped after this long.
    pub idle_after: Duration,
}

/// Why the node cannot serve a request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node has not joined the tailnet (yet).
    #[error("the server's tailnet node is not up: {0}")]
    NotUp(String),
    /// Reaching the agent failed.
    #[error(transparent)]
    Tailnet(#[from] TailnetError),
}

/// The node's join state, for health.
#[derive(Debug, Clone)]
enum State {
    Joining {
        attempts: u32,
        last_error: Option<String>,
    },
    Up(Arc<Conn>),
}

/// The latest ping of one agent.
#[derive(Debug, Clone, Copy)]
struct Probe {
    pong: Option<Pong>,
    at: Instant,
}

/// The coordinator in this process, as the node's control transport.
struct HubControl {
    hub: Arc<Hub>,
    id: Uuid,
    force_websockets: bool,
    block_direct: bool,
}

impl LocalControl for HubControl {
    fn connection_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            derp_map: self.hub.read(|c| c.derp_map().clone()),
            derp_force_websockets: self.force_websockets,
            disable_direct_connections: self.block_direct,
        }
    }

    fn open(&self) -> Result<LocalLink, String> {
        self.hub
            .open_local(Role::Server { id: self.id })
            .map_err(|e| e.to_string())
    }
}

/// What health shows of the node.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// Whether the node has joined.
    pub up: bool,
    /// The join error, while it has not.
    pub error: Option<String>,
    /// Join attempts so far, while it has not.
    pub attempts: u32,
    /// Its coordination id.
    pub id: Uuid,
    /// Its tailnet address, once up.
    pub ip: Option<String>,
    /// Its home DERP region, once up.
    pub home_region: Option<u32>,
    /// Whether the home region has admitted it now.
    pub home_derp_connected: bool,
    /// Whether its coordination link is up now.
    pub coordinator_connected: bool,
    /// Every agent it has a tunnel to, and the path (`None` while the agent's node is
    /// not known, e.g. the agent is offline).
    pub agents: Vec<(Uuid, Option<ServerPath>)>,
}

/// The server's tailnet node. See the module docs.
pub struct ServerNode {
    id: Uuid,
    cfg: NodeConfig,
    hub: Arc<Hub>,
    state: RwLock<State>,
    up: watch::Sender<bool>,
    tunnels: Mutex<Tunnels>,
    probes: Mutex<HashMap<Uuid, Probe>>,
    /// Wakes the sweep: a tunnel was opened (probe it now).
    kick: Notify,
}

/// Holds an agent's tunnel open while it lives (an open web terminal).
pub struct Lease {
    node: Arc<ServerNode>,
    agent: Uuid,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.node.tunnels().release(self.agent, Instant::now());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few map operations: a poisoned lock holds a usable map.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `http://<listener>/`, with an unspecified address dialed on loopback.
fn listener_url(addr: SocketAddr) -> Option<Url> {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    Url::parse(&format!("http://{ip}:{}/", addr.port())).ok()
}

impl ServerNode {
    /// A node that has not joined yet ([`ServerNode::spawn`] joins it).
    pub fn new(hub: Arc<Hub>, cfg: NodeConfig) -> Arc<Self> {
        Arc::new(Self {
            id: Uuid::new_v4(),
            tunnels: Mutex::new(Tunnels::new(cfg.idle_after)),
            cfg,
            hub,
            state: RwLock::new(State::Joining {
                attempts: 0,
                last_error: None,
            }),
            up: watch::Sender::new(false),
            probes: Mutex::new(HashMap::new()),
            kick: Notify::new(),
        })
    }

    fn tunnels(&self) -> MutexGuard<'_, Tunnels> {
        lock(&self.tunnels)
    }

    fn conn_now(&self) -> Option<Arc<Conn>> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            State::Up(conn) => Some(conn.clone()),
            State::Joining { .. } => None,
        }
    }

    fn conn_config(&self) -> Result<ConnConfig, String> {
        let base = listener_url(self.cfg.http_listener)
            .ok_or_else(|| format!("no URL for the listener {}", self.cfg.http_listener))?;
        let control = HubControl {
            hub: self.hub.clone(),
            id: self.id,
            force_websockets: self.cfg.derp_force_websockets,
            block_direct: self.cfg.block_direct,
        };
        let mut cfg = ConnConfig::new(base.clone(), Auth::Local(Arc::new(control)));
        if let Some(region) = self.cfg.builtin_region {
            let derp = base
                .join(tether_proto::derpmap::DERP_PATH)
                .map_err(|e| e.to_string())?;
            cfg.derp_region_urls = BTreeMap::from([(region, derp)]);
            cfg.home_region = Some(region);
        }
        Ok(cfg)
    }

    /// Joins the tailnet in the background (retrying with backoff until it works) and
    /// starts the task that pings agents and drops idle tunnels. Call once the HTTP
    /// listener serves (the node's DERP goes through it).
    pub fn spawn(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().join_loop()),
            tokio::spawn(self.clone().sweep_loop()),
        ]
    }

    async fn join_loop(self: Arc<Self>) {
        let cfg = match self.conn_config() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the server's tailnet node cannot start");
                self.set_joining_error(e);
                return;
            }
        };
        let mut backoff =
            Backoff::with_random_seed(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            match Conn::join(cfg.clone()).await {
                Ok(conn) => {
                    tracing::info!(id = %conn.id(), ip = %conn.ip(), "the server's tailnet node is up");
                    *self.state.write().unwrap_or_else(|p| p.into_inner()) =
                        State::Up(Arc::new(conn));
                    self.up.send_replace(true);
                    self.kick.notify_one();
                    return;
                }
                Err(e) => {
                    let e = e.to_string();
                    let first = matches!(&*self.state.read().unwrap_or_else(|p| p.into_inner()),
                        State::Joining { last_error, .. } if last_error.as_deref() != Some(e.as_str()));
                    if first {
                        tracing::warn!(error = %e, "the server's tailnet node could not join; retrying");
                    }
                    self.set_joining_error(e);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    fn set_joining_error(&self, error: String) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let State::Joining {
            attempts,
            last_error,
        } = &mut *state
        {
            *attempts += 1;
            *last_error = Some(error);
        }
    }

    /// Pings every agent with a tunnel each [`PROBE_EVERY`] (and at once when a tunnel
    /// opens), and drops tunnels idle for the configured time.
    async fn sweep_loop(self: Arc<Self>) {
        loop {
            let wake = {
                let t = self.tunnels();
                let probe = tokio::time::Instant::now() + PROBE_EVERY;
                t.next_expiry()
                    .map(tokio::time::Instant::from_std)
                    .map_or(probe, |e| e.min(probe))
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.kick.notified() => {}
            }
            let Some(conn) = self.conn_now() else {
                continue;
            };
            let expired = self.tunnels().expire(Instant::now());
            for agent in expired {
                tracing::info!(%agent, idle_after = ?self.cfg.idle_after, "dropping the server's idle tunnel");
                lock(&self.probes).remove(&agent);
                if conn.remove_tunnel(agent).await.is_err() {
                    return;
                }
            }
            let agents = self.tunnels().agents();
            let pings = agents.into_iter().map(|agent| {
                let conn = conn.clone();
                async move {
                    // Agents whose node is not here (offline) are not pinged.
                    conn.path(agent)?;
                    Some((agent, conn.ping(agent, PROBE_TIMEOUT).await.ok()))
                }
            });
            let results = futures_util::future::join_all(pings).await;
            let now = Instant::now();
            let mut probes = lock(&self.probes);
            for (agent, pong) in results.into_iter().flatten() {
                probes.insert(agent, Probe { pong, at: now });
            }
        }
    }

    /// The node once it has joined, waiting up to [`UP_WAIT`] for that.
    async fn conn(&self) -> Result<Arc<Conn>, NodeError> {
        if let Some(conn) = self.conn_now() {
            return Ok(conn);
        }
        let mut up = self.up.subscribe();
        let _ = tokio::time::timeout(UP_WAIT, up.wait_for(|u| *u)).await;
        self.conn_now().ok_or_else(|| {
            NodeError::NotUp(
                match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
                    State::Joining {
                        last_error: Some(e),
                        ..
                    } => e.clone(),
                    _ => "it is still joining".into(),
                },
            )
        })
    }

    /// Holds `agent`'s tunnel until the lease is dropped.
    pub fn lease(self: &Arc<Self>, agent: Uuid) -> Lease {
        if self.tunnels().acquire(agent, Instant::now()) {
            self.kick.notify_one();
        }
        Lease {
            node: self.clone(),
            agent,
        }
    }

    /// A TCP connection to `port` of `agent`, through a tunnel opened if need be.
    pub async fn dial(self: &Arc<Self>, agent: Uuid, port: u16) -> Result<TcpStream, NodeError> {
        let conn = self.conn().await?;
        if self.tunnels().touch(agent, Instant::now()) {
            self.kick.notify_one();
        }
        Ok(conn.dial_agent(agent, port).await?)
    }

    /// The workspace agent `agent`'s workspace was deleted: forget its tunnel.
    pub fn forget(&self, agent: Uuid) {
        self.tunnels().remove(agent);
        lock(&self.probes).remove(&agent);
    }

    /// How the node reaches `agent` now; `None` without a tunnel or while the agent's
    /// node is unknown.
    pub fn path(&self, agent: Uuid) -> Option<ServerPath> {
        if !self.tunnels().contains(agent) {
            return None;
        }
        let conn = self.conn_now()?;
        let info = conn.path(agent)?;
        let probe = lock(&self.probes).get(&agent).copied();
        let fresh = probe.filter(|p| p.at.elapsed() < LATENCY_FRESH);
        let latency_ms = fresh
            .and_then(|p| p.pong)
            .map(|p| (p.latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0);
        let map = conn.derp_map();
        Some(match info.current {
            PathKind::Direct { addr } => ServerPath {
                kind: ApiPathKind::Direct,
                latency_ms,
                derp_region: None,
                endpoint: Some(addr.to_string()),
                reason: None,
            },
            PathKind::Derp { region } => {
                let name = map.regions.get(&region).map(|r| {
                    if r.region_name.is_empty() {
                        r.region_code.clone()
                    } else {
                        r.region_name.clone()
                    }
                });
                let mut reasons = verdict::relay_reasons(
                    &conn.diagnostics(agent),
                    &map,
                    Us {
                        name: "the server",
                        local_switch: "its own node",
                    },
                );
                if fresh.is_some_and(|p| p.pong.is_none()) {
                    reasons.insert(0, NO_PONG.into());
                }
                ServerPath {
                    kind: ApiPathKind::Derp,
                    latency_ms,
                    derp_region: name.or_else(|| Some(format!("region {region}"))),
                    endpoint: None,
                    reason: Some(reasons.join("; ")),
                }
            }
        })
    }

    /// The node's state and its paths, for health.
    pub fn report(&self) -> NodeReport {
        let (up, error, attempts) = match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            State::Up(_) => (true, None, 0),
            State::Joining {
                attempts,
                last_error,
            } => (false, last_error.clone(), *attempts),
        };
        let conn = self.conn_now();
        let diag = conn.as_ref().map(|c| c.diagnostics(Uuid::nil()));
        let with_tunnel = self.tunnels().agents();
        let agents = with_tunnel.into_iter().map(|a| (a, self.path(a))).collect();
        NodeReport {
            up,
            error,
            attempts,
            id: self.id,
            ip: conn.as_ref().map(|c| c.ip().to_string()),
            home_region: diag.as_ref().map(|d| d.home_region),
            home_derp_connected: diag.as_ref().is_some_and(|d| d.home_derp_connected),
            coordinator_connected: diag.as_ref().is_some_and(|d| d.coordinator_connected),
            agents,
        }
    }

    /// The configured idle time.
    pub fn idle_after(&self) -> Duration {
        self.cfg.idle_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_urls_dial_loopback_for_unspecified_addresses() {
        let url = |s: &str| listener_url(s.parse().expect("addr")).map(|u| u.to_string());
        assert_eq!(
            url("0.0.0.0:3000").as_deref(),
            Some("http://127.0.0.1:3000/")
        );
        assert_eq!(url("[::]:3000").as_deref(), Some("http://[::1]:3000/"));
        assert_eq!(url("198.18.0.2:80").as_deref(), Some("http://198.18.0.2/"));
        assert_eq!(
            url("[fd00::2]:8080").as_deref(),
            Some("http://[fd00::2]:8080/")
        );
    }
}
