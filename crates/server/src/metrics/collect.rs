//! Numbers the server's parts already keep, written at each scrape: the coordinator's
//! peers and tunnels (and what its sockets carried), the relay's clients, forwarded and
//! dropped packets, the STUN server's requests, how logins ended and the connection
//! table. Reading them costs the scrape a lock of the coordinator and one of the relay's
//! client map, nothing per packet.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tether_metrics::emit::{self, count};

use crate::coordinate::Hub;
use crate::listen::ConnTable;
use crate::passwords::Passwords;
use crate::state::{AppState, StunInfo};

/// Where the collected numbers come from.
#[derive(Clone)]
pub struct Sources {
    hub: Arc<Hub>,
    derp: Option<Arc<tether_derp::server::Server>>,
    stun: Option<StunInfo>,
    passwords: Arc<Passwords>,
    conns: Arc<ConnTable>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("derp", &self.derp.is_some())
            .field("stun", &self.stun.as_ref().map(|s| s.addr))
            .finish_non_exhaustive()
    }
}

impl Sources {
    /// The parts of `state`, and the connection table of the HTTP listeners.
    pub fn new(state: &AppState, conns: Arc<ConnTable>) -> Self {
        Self {
            hub: Arc::clone(&state.hub),
            derp: state.derp.clone(),
            stun: state.stun.clone(),
            passwords: Arc::clone(&state.passwords),
            conns,
        }
    }
}

impl Collector for Sources {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        emit::gauges(
            &mut enc,
            "build_info",
            "Always 1; the version of this tether server.",
            &[([("version", env!("CARGO_PKG_VERSION"))], 1)],
        )?;
        self.coordinator(&mut enc)?;
        if let Some(derp) = &self.derp {
            relay(&mut enc, &derp.stats())?;
        }
        if let Some(stun) = &self.stun {
            stun_server(&mut enc, &stun.stats.snapshot())?;
        }
        let logins = self.passwords.login_stats();
        emit::counters(
            &mut enc,
            "login_attempts",
            "Password logins, by result: success, failure (wrong password or no such user), rate_limited (answered 429), unchecked (server busy, 503).",
            &[
                ([("result", "success")], logins.succeeded),
                ([("result", "failure")], logins.failed),
                ([("result", "rate_limited")], logins.rate_limited),
                ([("result", "unchecked")], logins.unchecked),
            ],
        )?;
        let table = self.conns.stats();
        emit::gauges(
            &mut enc,
            "http_connections",
            "Open HTTP(S) connections: on probation (not yet upgraded or logged in) or established.",
            &[
                ([("state", "probation")], count(table.probation)),
                ([("state", "established")], count(table.established)),
            ],
        )?;
        emit::counter(
            &mut enc,
            "http_connections_refused",
            "New connections refused for want of room in the connection table.",
            table.refused,
        )?;
        emit::counter(
            &mut enc,
            "http_connections_evicted",
            "Idle connections on probation closed to make room for new ones.",
            table.evicted,
        )
    }
}

impl Sources {
    fn coordinator(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let peers = self.hub.read(|c| c.stats());
        let traffic = self.hub.traffic().stats();
        emit::gauges(
            enc,
            "coordinator_peers",
            "Peers connected to the coordinator, by role: agent, client (a user's node), server (this server's own node, for the web terminal).",
            &[
                ([("role", "agent")], count(peers.agents)),
                ([("role", "client")], count(peers.clients)),
                ([("role", "server")], count(peers.servers)),
            ],
        )?;
        emit::gauge(
            enc,
            "coordinator_tunnels",
            "Tunnels (client or server node, agent) the coordinator keeps, whether or not the agent is connected.",
            count(peers.tunnels),
        )?;
        emit::counters(
            enc,
            "coordinator_connections",
            "Coordinator connections accepted, by role.",
            &[
                ([("role", "agent")], traffic.agents_accepted),
                ([("role", "client")], traffic.clients_accepted),
                ([("role", "server")], traffic.servers_accepted),
            ],
        )?;
        emit::counter(
            enc,
            "coordinator_messages_received",
            "Coordination messages received from peers and parsed.",
            traffic.received,
        )?;
        emit::counter(
            enc,
            "coordinator_malformed_messages",
            "Coordination messages from peers that did not parse (answered with an error).",
            traffic.malformed,
        )?;
        emit::counter(
            enc,
            "coordinator_messages_sent",
            "Coordination messages written to peers.",
            traffic.sent,
        )?;
        emit::counter(
            enc,
            "coordinator_slow_disconnects",
            "Peers disconnected because they did not read their updates in time.",
            traffic.slow_disconnects,
        )
    }
}

fn relay(enc: &mut DescriptorEncoder, s: &tether_derp::server::ServerStats) -> std::fmt::Result {
    emit::gauge(
        enc,
        "derp_clients",
        "Distinct node keys connected to the built-in DERP relay.",
        count(s.clients),
    )?;
    emit::gauge(
        enc,
        "derp_connections",
        "DERP connections logged in now (a key may have several).",
        count(s.connections),
    )?;
    emit::counter(
        enc,
        "derp_accepted_connections",
        "DERP logins accepted.",
        s.accepted_total,
    )?;
    emit::counter(
        enc,
        "derp_refused_connections",
        "DERP logins refused because the coordinator does not know the key.",
        s.refused_by_admission,
    )?;
    emit::counter(
        enc,
        "derp_forwarded_packets",
        "Packets the relay wrote to their destination.",
        s.packets_forwarded,
    )?;
    emit::counter(
        enc,
        "derp_forwarded_bytes",
        "Payload bytes the relay wrote to their destination.",
        s.bytes_forwarded,
    )?;
    let d = s.dropped;
    emit::counters(
        enc,
        "derp_dropped_packets",
        "Packets the relay dropped, by reason: queue_full (the destination's queue was full; its oldest packet went), unknown_destination, destination_gone (left with packets queued), write_timeout.",
        &[
            ([("reason", "queue_full")], d.queue_full),
            ([("reason", "unknown_destination")], d.unknown_destination),
            ([("reason", "destination_gone")], d.destination_gone),
            ([("reason", "write_timeout")], d.write_timeout),
        ],
    )
}

fn stun_server(
    enc: &mut DescriptorEncoder,
    s: &tether_stun::server::StatsSnapshot,
) -> std::fmt::Result {
    emit::counter(
        enc,
        "stun_requests",
        "Valid STUN binding requests received by the built-in STUN server.",
        s.answered + s.send_errors,
    )?;
    emit::counter(
        enc,
        "stun_responses",
        "STUN binding responses sent.",
        s.answered,
    )?;
    emit::counter(
        enc,
        "stun_send_errors",
        "STUN binding responses that could not be sent.",
        s.send_errors,
    )?;
    emit::counter(
        enc,
        "stun_invalid_packets",
        "Datagrams to the STUN port that were not binding requests (dropped).",
        s.ignored,
    )
}
