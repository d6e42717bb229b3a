//! The data plane's counters: one relaxed atomic add per datagram and direction, read
//! by [`Conn::traffic`](super::Conn::traffic) (for the agent's metrics).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::path::{PathCounts, Traffic};

/// Datagrams and bytes each way on one kind of path.
#[derive(Debug, Default)]
struct Counters {
    sent_packets: AtomicU64,
    sent_bytes: AtomicU64,
    received_packets: AtomicU64,
    received_bytes: AtomicU64,
}

impl Counters {
    fn sent(&self, len: usize) {
        self.sent_packets.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn received(&self, len: usize) {
        self.received_packets.fetch_add(1, Ordering::Relaxed);
        self.received_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn read(&self) -> PathCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PathCounts {
            sent_packets: get(&self.sent_packets),
            sent_bytes: get(&self.sent_bytes),
            received_packets: get(&self.received_packets),
            received_bytes: get(&self.received_bytes),
        }
    }
}

/// The counters of one [`Conn`](super::Conn).
#[derive(Debug, Default)]
pub(crate) struct TrafficCounters {
    direct: Counters,
    derp: Counters,
}

impl TrafficCounters {
    pub(super) fn direct_sent(&self, len: usize) {
        self.direct.sent(len);
    }

    pub(super) fn direct_received(&self, len: usize) {
        self.direct.received(len);
    }

    pub(super) fn derp_sent(&self, len: usize) {
        self.derp.sent(len);
    }

    pub(super) fn derp_received(&self, len: usize) {
        self.derp.received(len);
    }

    pub(super) fn read(&self) -> Traffic {
        Traffic {
            direct: self.direct.read(),
            derp: self.derp.read(),
        }
    }
}
