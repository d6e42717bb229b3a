//! The agent's `/metrics` (served on `tether agent --prometheus-address`): its SSH
//! connections and sessions, web terminal sessions, tailnet peers by path and the
//! datagrams and bytes it sent and received directly and through DERP, plus the
//! standard `process_*` metrics.
//!
//! Everything is read at scrape time from counters the parts already keep; the tailnet's
//! are per [`Conn`], so the numbers of a connection that ended are carried over and the
//! counters never go back across reconnects.

use std::sync::{Arc, Mutex, MutexGuard};

use tether_metrics::emit::{self, count};
use tether_metrics::prometheus_client::collector::Collector;
use tether_metrics::prometheus_client::encoding::DescriptorEncoder;
use tether_metrics::prometheus_client::registry::Registry;
use tether_tailnet::{Conn, PathKind, Traffic};

use crate::{ReconnectingPty, SshServer};

/// The flag that turns the agent's metrics on.
pub const FLAG: &str = "--prometheus-address";
/// Its environment variable.
pub const ENV: &str = "TETHER_AGENT_PROMETHEUS_ADDRESS";

#[derive(Default)]
struct Tailnet {
    conn: Option<Arc<Conn>>,
    /// What connections that ended carried.
    carried: Traffic,
    joins: u64,
}

struct Inner {
    ssh: SshServer,
    terminals: ReconnectingPty,
    tailnet: Mutex<Tailnet>,
}

/// The agent's metrics; clones share them. Tell it of each tailnet connection
/// ([`AgentMetrics::joined`], [`AgentMetrics::left`]).
#[derive(Clone)]
pub struct AgentMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// Metrics of `ssh` and `terminals` (the agent's, kept for its whole life).
    pub fn new(ssh: SshServer, terminals: ReconnectingPty) -> Self {
        Self {
            inner: Arc::new(Inner {
                ssh,
                terminals,
                tailnet: Mutex::default(),
            }),
        }
    }

    fn tailnet(&self) -> MutexGuard<'_, Tailnet> {
        self.inner.tailnet.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent joined the tailnet as `conn`.
    pub fn joined(&self, conn: &Arc<Conn>) {
        let mut t = self.tailnet();
        if let Some(old) = t.conn.replace(Arc::clone(conn)) {
            t.carried = t.carried + old.traffic();
        }
        t.joins += 1;
    }

    /// The tailnet connection ended; its numbers are kept.
    pub fn left(&self) {
        let mut t = self.tailnet();
        if let Some(old) = t.conn.take() {
            t.carried = t.carried + old.traffic();
        }
    }

    /// Binds `addr` for [`AgentMetrics::serve`], with one sentence naming the flag when
    /// it cannot.
    ///
    /// # Errors
    /// The address is taken, not allowed or not local.
    pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, String> {
        tether_metrics::listener::bind(addr, FLAG, ENV).await
    }

    /// Serves `GET /metrics` on `listener` (and nothing else) until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        tether_metrics::listener::serve(listener, Arc::new(self.registry())).await;
    }

    /// A registry of every metric (`tether_agent_*` and `process_*`).
    pub fn registry(&self) -> Registry {
        let mut root = Registry::default();
        root.register_collector(Box::new(tether_metrics::process::ProcessCollector));
        root.sub_registry_with_prefix("tether_agent")
            .register_collector(Box::new(self.clone()));
        root
    }
}

/// Peers by the kind of their current path, and how many have a WireGuard session.
fn peers(conn: Option<&Conn>) -> (usize, usize, usize) {
    let Some(conn) = conn else { return (0, 0, 0) };
    let paths = conn.peer_paths();
    let direct = paths
        .iter()
        .filter(|(_, p)| matches!(p.current, PathKind::Direct { .. }))
        .count();
    let sessions = paths.iter().filter(|(_, p)| p.handshake_done).count();
    (direct, paths.len() - direct, sessions)
}

impl Collector for AgentMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let (conn, carried, joins) = {
            let t = self.tailnet();
            (t.conn.clone(), t.carried, t.joins)
        };
        let traffic = carried + conn.as_ref().map(|c| c.traffic()).unwrap_or_default();
        let (direct, derp, sessions) = peers(conn.as_deref());
        let ssh = self.inner.ssh.stats();
        emit::gauges(
            &mut enc,
            "build_info",
            "Always 1; the version of this tether agent.",
            &[([("version", env!("CARGO_PKG_VERSION"))], 1)],
        )?;
        emit::gauge(
            &mut enc,
            "tailnet_connected",
            "1 while the agent is joined to the tailnet, else 0.",
            i64::from(conn.is_some()),
        )?;
        emit::counter(
            &mut enc,
            "tailnet_joins",
            "Times the agent joined the tailnet (the first time and each reconnect).",
            joins,
        )?;
        emit::gauges(
            &mut enc,
            "peers",
            "Peers (clients with a tunnel to this agent) by their current path: direct (UDP) or derp (relayed).",
            &[
                ([("path", "direct")], count(direct)),
                ([("path", "derp")], count(derp)),
            ],
        )?;
        emit::gauge(
            &mut enc,
            "peer_sessions",
            "Peers with a WireGuard session up.",
            count(sessions),
        )?;
        let (d, r) = (traffic.direct, traffic.derp);
        emit::counters(
            &mut enc,
            "tailnet_packets",
            "Tailnet datagrams (WireGuard and disco) by path and direction.",
            &[
                ([("path", "direct"), ("direction", "sent")], d.sent_packets),
                (
                    [("path", "direct"), ("direction", "received")],
                    d.received_packets,
                ),
                ([("path", "derp"), ("direction", "sent")], r.sent_packets),
                (
                    [("path", "derp"), ("direction", "received")],
                    r.received_packets,
                ),
            ],
        )?;
        emit::counters(
            &mut enc,
            "tailnet_bytes",
            "Bytes of tailnet datagrams (encrypted, as on the wire or to the relay) by path and direction.",
            &[
                ([("path", "direct"), ("direction", "sent")], d.sent_bytes),
                (
                    [("path", "direct"), ("direction", "received")],
                    d.received_bytes,
                ),
                ([("path", "derp"), ("direction", "sent")], r.sent_bytes),
                (
                    [("path", "derp"), ("direction", "received")],
                    r.received_bytes,
                ),
            ],
        )?;
        emit::counter(
            &mut enc,
            "ssh_connections",
            "SSH connections served.",
            ssh.connections_total,
        )?;
        emit::gauge(
            &mut enc,
            "ssh_connections_open",
            "SSH connections open now.",
            i64::try_from(ssh.connections_open).unwrap_or(i64::MAX),
        )?;
        emit::counter(
            &mut enc,
            "ssh_sessions",
            "SSH session channels opened (shells, commands, sftp).",
            ssh.sessions_total,
        )?;
        emit::gauge(
            &mut enc,
            "ssh_sessions_open",
            "SSH session channels open now.",
            i64::try_from(ssh.sessions_open).unwrap_or(i64::MAX),
        )?;
        emit::gauge(
            &mut enc,
            "terminal_sessions",
            "Web terminal (reconnecting PTY) sessions alive, attached or not.",
            count(self.inner.terminals.sessions().len()),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_scrape_without_a_tailnet_is_valid_and_zero() {
        let m = AgentMetrics::new(
            SshServer::new().unwrap(),
            ReconnectingPty::new(crate::user::User::current(), Default::default()),
        );
        m.left();
        let text = tether_metrics::encode(&m.registry());
        let s = tether_metrics::text::parse(&text).unwrap();
        assert_eq!(s.value("tether_agent_tailnet_connected", &[]), Some(0.0));
        assert_eq!(s.value("tether_agent_tailnet_joins_total", &[]), Some(0.0));
        assert_eq!(s.sum("tether_agent_tailnet_bytes_total", &[]), 0.0);
        assert_eq!(
            s.value("tether_agent_peers", &[("path", "derp")]),
            Some(0.0)
        );
        assert_eq!(s.value("tether_agent_ssh_connections_open", &[]), Some(0.0));
        assert_eq!(s.value("tether_agent_terminal_sessions", &[]), Some(0.0));
        assert!(s.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);
    }
}
