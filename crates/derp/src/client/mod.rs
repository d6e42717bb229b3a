//! DERP client: dial (TCP, TLS for https), upgrade (`Upgrade: DERP`, falling back to
//! a WebSocket with subprotocol `derp` when the plain upgrade is refused), log in, then
//! send and receive packets by node key.
//!
//! [`Client`] is one connection; [`ReconnectingClient`] keeps one up in a background
//! task with exponential backoff and reports what happens as [`Event`]s.
//!
//! `dial` opens the TCP (and `tls` the TLS) stream, `transport` upgrades it to a DERP
//! byte stream, `connection` logs in and moves frames, `reconnect` keeps one up.

use std::net::IpAddr;
use std::time::Duration;

use tether_key::NodePrivate;
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

use crate::frame::{self, BoxError, FrameError};
use crate::headers::ServerHeaders;

mod connection;
mod dial;
mod reconnect;
mod tls;
mod transport;

pub use connection::{Client, ClientReceiver, ClientSender, Received};
pub use reconnect::{Event, ReconnectingClient};
pub use transport::Transport;

/// How to reach one DERP server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http(s)://host:port/derp`.
    pub url: Url,
    /// The node's private key (its DERP identity).
    pub private: NodePrivate,
    /// Skip the plain upgrade and use WebSocket at once.
    pub force_websocket: bool,
    /// Accept any TLS certificate (tests and pinned self-signed setups only).
    pub insecure_tls: bool,
    /// Dial this address instead of resolving the URL's host (TLS still uses the host).
    pub connect_addr: Option<IpAddr>,
    /// Cap on the whole connect: DNS, TCP, TLS, upgrade and login.
    pub connect_timeout: Duration,
    /// Cap on each TCP connect attempt.
    pub dial_timeout: Duration,
    /// A connection with no frame for this long is considered dead.
    pub idle_timeout: Duration,
    /// A single write taking longer than this fails the connection.
    pub write_timeout: Duration,
    /// Extra headers for the upgrade request, sent to the tether server's origin only.
    pub headers: ServerHeaders,
}

impl ClientConfig {
    /// Defaults: plain upgrade first, verified TLS, 10 s connect cap, 120 s idle limit.
    pub fn new(url: Url, private: NodePrivate) -> Self {
        Self {
            url,
            private,
            force_websocket: false,
            insecure_tls: false,
            connect_addr: None,
            connect_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(10),
            idle_timeout: frame::CLIENT_IDLE_TIMEOUT,
            write_timeout: Duration::from_secs(10),
            headers: ServerHeaders::none(),
        }
    }
}

/// A DERP client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be dialed.
    #[error("bad DERP URL: {0}")]
    BadUrl(String),
    /// Network or stream failure.
    #[error("DERP connection i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Connecting took longer than the configured cap.
    #[error("connecting to the DERP server timed out")]
    ConnectTimeout,
    /// The server answered the plain upgrade with another status.
    #[error("DERP server refused the upgrade with HTTP {0}")]
    UpgradeRefused(u16),
    /// HTTP-level failure during the plain upgrade.
    #[error("DERP upgrade: {0}")]
    Http(#[from] hyper::Error),
    /// WebSocket handshake or transport failure.
    #[error("DERP WebSocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The server sent a malformed frame.
    #[error("bad frame from DERP server: {0}")]
    Frame(#[from] FrameError),
    /// The login exchange went wrong.
    #[error("DERP login: {0}")]
    Login(String),
    /// The login box did not open.
    #[error("DERP login box: {0}")]
    LoginBox(#[from] BoxError),
    /// The server closed the connection.
    #[error("DERP server closed the connection")]
    Closed,
    /// No frame arrived within the idle limit.
    #[error("no frame from the DERP server for {0:?}; connection presumed dead")]
    IdleTimeout(Duration),
    /// A write took longer than the write timeout.
    #[error("write to the DERP server timed out")]
    WriteTimeout,
    /// The packet is larger than DERP carries.
    #[error("packet of {0} bytes exceeds the DERP limit of 65536")]
    PacketTooLarge(usize),
    /// [`ReconnectingClient`] has no live connection right now.
    #[error("not connected to the DERP server")]
    NotConnected,
    /// A region had no DERP node to dial.
    #[error("DERP region {0} has no dialable node")]
    NoNodes(u32),
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;

#[cfg(test)]
mod tests {
    use super::dial::host_and_port;
    use super::transport::request_path;
    use super::*;

    #[test]
    fn url_parts() {
        let u = Url::parse("https://[::1]/derp").expect("url");
        let (h, p, tls) = host_and_port(&u).expect("parts");
        assert_eq!((h.to_string(), p, tls), ("[::1]".to_string(), 443, true));
        assert!(host_and_port(&Url::parse("ftp://x/derp").expect("url")).is_err());
        assert_eq!(
            request_path(&Url::parse("http://h:1/derp?x=1").expect("url")),
            "/derp?x=1"
        );
    }
}
