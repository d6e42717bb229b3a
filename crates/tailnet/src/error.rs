//! The one error type of the tailnet API.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use uuid::Uuid;

use crate::netstack::NetstackError;

/// What went wrong joining or using the tailnet.
#[derive(Debug, thiserror::Error)]
pub enum TailnetError {
    /// The server URL cannot be used.
    #[error("bad server URL {0}")]
    BadUrl(String),
    /// An HTTP request to the server failed.
    #[error("could not reach the tether server at {url}: {message}")]
    Unreachable {
        /// What was requested.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// The server answered with an error status.
    #[error("the tether server refused {what} ({status}): {body}")]
    Refused {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The coordination WebSocket failed or said something unexpected.
    #[error("coordination failed: {0}")]
    Coordination(String),
    /// The DERP map has no region with DERP nodes.
    #[error("the server's DERP map has no region with DERP nodes")]
    NoDerp,
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        after: Duration,
    },
    /// No peer owns this address.
    #[error("no peer on the tailnet has address {0}")]
    NoRoute(Ipv6Addr),
    /// The peer refused the TCP connection (RST) or it died while connecting.
    #[error("connection to {0} refused")]
    ConnectionRefused(SocketAddrV6),
    /// A netstack operation failed.
    #[error(transparent)]
    Netstack(#[from] NetstackError),
    /// A UDP send or receive failed.
    #[error("UDP: {0}")]
    Udp(String),
    /// The peer is not known.
    #[error("peer {0} is not known")]
    UnknownPeer(Uuid),
    /// The connection was closed.
    #[error("the tailnet connection is closed")]
    Closed,
}
