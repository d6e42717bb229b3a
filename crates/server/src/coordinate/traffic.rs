//! What the coordinator's sockets carried, for metrics: counted by the driver (the
//! sans-IO coordinator counts nothing of its own), read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use tether_coord::Role;

/// Counters of the coordinator's sockets.
#[derive(Debug, Default)]
pub struct Traffic {
    accepted: [AtomicU64; 3],
    received: AtomicU64,
    malformed: AtomicU64,
    sent: AtomicU64,
    slow: AtomicU64,
}

/// A copy of [`Traffic`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Agent connections the coordinator took.
    pub agents_accepted: u64,
    /// Client connections the coordinator took.
    pub clients_accepted: u64,
    /// Connections of the server's own node the coordinator took.
    pub servers_accepted: u64,
    /// Requests received and parsed.
    pub received: u64,
    /// Messages that did not parse (answered with an error).
    pub malformed: u64,
    /// Messages written to peers.
    pub sent: u64,
    /// Peers disconnected because they did not read their updates in time.
    pub slow_disconnects: u64,
}

impl Traffic {
    pub(super) fn accepted(&self, role: &Role) {
        let i = match role {
            Role::Agent { .. } => 0,
            Role::Client { .. } => 1,
            Role::Server { .. } => 2,
        };
        self.accepted[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn received(&self, parsed: bool) {
        let c = if parsed {
            &self.received
        } else {
            &self.malformed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn slow(&self) {
        self.slow.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn stats(&self) -> TrafficStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TrafficStats {
            agents_accepted: get(&self.accepted[0]),
            clients_accepted: get(&self.accepted[1]),
            servers_accepted: get(&self.accepted[2]),
            received: get(&self.received),
            malformed: get(&self.malformed),
            sent: get(&self.sent),
            slow_disconnects: get(&self.slow),
        }
    }
}
