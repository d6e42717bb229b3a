//! The in-process way to the coordinator, for a node that runs inside the tether server
//! itself: no HTTP, no WebSocket and no credential, because the server hands the link
//! straight to its coordinator. The messages are the coordination protocol's JSON texts,
//! so the session rules ([`control`](crate::control)) are the same as over a WebSocket.

use tether_proto::api::ConnectionInfo;
use tokio::sync::mpsc;

/// A coordinator in this process.
pub trait LocalControl: Send + Sync + 'static {
    /// What `GET /api/v2/tailnet/connection` would answer.
    fn connection_info(&self) -> ConnectionInfo;
    /// Opens a coordination connection (a refusal is one sentence).
    fn open(&self) -> Result<LocalLink, String>;
}

/// One in-process coordination connection: requests go out on `send`, the coordinator's
/// messages arrive on `recv`; an empty text is the coordinator's heartbeat (what a
/// WebSocket ping is on the network). Either side ends it by dropping its half.
#[derive(Debug)]
pub struct LocalLink {
    /// Requests, as JSON text.
    pub send: mpsc::Sender<String>,
    /// The coordinator's messages, as JSON text; empty for a heartbeat.
    pub recv: mpsc::Receiver<String>,
}
