//! Prometheus exposition for tether's server and agent.
//!
//! - [`listener`]: binds `--prometheus-address` and serves `GET /metrics` there and
//!   nothing else (404 for every other path), with bounded waits and connections, so
//!   metrics live on an address of their own that is never public by accident.
//! - [`emit`]: writes counters and gauges read at scrape time (the relay's, STUN's and
//!   the coordinator's own counters) from a [`Collector`](prometheus_client::collector::Collector),
//!   so nothing on a hot path is counted twice.
//! - [`process`]: the standard `process_*` metrics (resident memory, CPU seconds, open
//!   and maximum descriptors, start time) from `/proc/self`, on Linux.
//! - [`text`]: a strict parser of the text exposition format, for tests that check what
//!   a scrape returns.
//!
//! The metrics themselves are defined by the crates that own the numbers (the server's
//! and the agent's `metrics` modules); this crate holds no state of its own. It
//! re-exports [`prometheus_client`] so every crate uses one version.

pub mod emit;
pub mod listener;
pub mod process;
pub mod text;

pub use prometheus_client;
use prometheus_client::registry::Registry;

/// The `Content-Type` of a scrape: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric of `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        // Writing to a String cannot fail; a collector that fails loses its own lines.
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}
