//! The server's `/metrics`, served on `--prometheus-address` only (off by default): the
//! HTTP API's requests ([`http`]), and at each scrape the numbers the relay, the STUN
//! server, the coordinator, the login limits and the connection table already keep
//! ([`collect`]), plus the standard `process_*` metrics.
//!
//! Every name but `process_*` starts with `tether_`; counters end in `_total`. Nothing
//! here adds work to the relay's forwarding path: its counters are read, not copied.

pub mod collect;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::StartError;
pub use collect::Sources;

/// The flag and variable that turn metrics on.
pub const FLAG: &str = "--prometheus-address";
/// The environment variable of [`FLAG`].
pub const ENV: &str = "TETHER_PROMETHEUS_ADDRESS";

/// The metrics listener, bound at start so a taken port fails the start.
pub struct Prometheus {
    listener: TcpListener,
    addr: SocketAddr,
    http: http::HttpMetrics,
}

impl Prometheus {
    /// Binds `addr`.
    ///
    /// # Errors
    /// The address cannot be listened on; the sentence names the flag.
    pub async fn bind(addr: SocketAddr) -> Result<Self, StartError> {
        let listener = tether_metrics::listener::bind(addr, FLAG, ENV)
            .await
            .map_err(StartError::Config)?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Config(e.to_string()))?;
        Ok(Self {
            listener,
            addr,
            http: http::HttpMetrics::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `app` with every request counted.
    pub fn instrument(&self, app: Router) -> Router {
        self.http.layer(app)
    }

    /// Serves `/metrics` of `sources` (and of the requests [`Prometheus::instrument`]
    /// saw) until the task is dropped.
    pub async fn serve(self, sources: Sources) {
        let registry = self.registry(sources);
        tracing::info!(addr = %self.addr, "serving metrics at /metrics");
        tether_metrics::listener::serve(self.listener, Arc::new(registry)).await;
    }

    fn registry(&self, sources: Sources) -> Registry {
        let mut root = Registry::default();
        root.register_collector(Box::new(tether_metrics::process::ProcessCollector));
        let tether = root.sub_registry_with_prefix("tether");
        self.http.register(tether);
        tether.register_collector(Box::new(sources));
        root
    }
}
