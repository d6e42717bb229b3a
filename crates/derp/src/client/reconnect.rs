//! [`ReconnectingClient`]: one DERP connection kept up by a background task, with
//! exponential backoff (or the server's own restart hint) between attempts.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use tether_backoff::Backoff;
use tether_key::NodePublic;
use tether_proto::derpmap::DerpRegion;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::{Client, ClientConfig, ClientError, ClientSender, Received};
use crate::frame::PeerGoneReason;

/// What a [`ReconnectingClient`] reports.
#[derive(Debug)]
pub enum Event {
    /// A connection is up (again).
    Connected {
        /// The server's key.
        server_key: NodePublic,
    },
    /// The connection was lost; a reconnect follows after a backoff.
    Disconnected {
        /// Why.
        error: ClientError,
    },
    /// A relayed packet.
    Packet {
        /// Sender.
        src: NodePublic,
        /// Packet bytes.
        data: Bytes,
    },
    /// A peer left, or is not on this server.
    PeerGone {
        /// The peer.
        key: NodePublic,
        /// Why.
        reason: PeerGoneReason,
    },
    /// Server health text; empty means healthy.
    Health(String),
}

enum Target {
    Url(ClientConfig),
    Region(DerpRegion, ClientConfig),
}

impl Target {
    async fn connect(&self) -> Result<Client, ClientError> {
        match self {
            Self::Url(c) => Client::connect(c).await,
            Self::Region(r, c) => Client::connect_region(r, c).await,
        }
    }
}

/// Keeps one DERP connection up in a background task; stops when dropped.
pub struct ReconnectingClient {
    current: Arc<StdMutex<Option<ClientSender>>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Events buffered before the reconnect task waits for the consumer.
const EVENT_QUEUE: usize = 256;

impl ReconnectingClient {
    /// Starts keeping a connection to `cfg.url` up. Events arrive on the receiver.
    pub fn spawn(cfg: ClientConfig) -> (Self, mpsc::Receiver<Event>) {
        Self::start(Target::Url(cfg))
    }

    /// Like [`ReconnectingClient::spawn`], dialing a DERP map region's nodes in order.
    pub fn spawn_region(region: DerpRegion, cfg: ClientConfig) -> (Self, mpsc::Receiver<Event>) {
        Self::start(Target::Region(region, cfg))
    }

    fn start(target: Target) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let current = Arc::new(StdMutex::new(None));
        let task = tokio::spawn(run(target, current.clone(), tx));
        (Self { current, task }, rx)
    }

    fn sender(&self) -> Option<ClientSender> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.sender().is_some()
    }

    /// Sends through the current connection; [`ClientError::NotConnected`] if none.
    pub async fn send(&self, dst: NodePublic, packet: &[u8]) -> Result<(), ClientError> {
        self.sender()
            .ok_or(ClientError::NotConnected)?
            .send(dst, packet)
            .await
    }

    /// Sends several packets in one write through the current connection.
    pub async fn send_many(&self, packets: &[(NodePublic, Bytes)]) -> Result<(), ClientError> {
        self.sender()
            .ok_or(ClientError::NotConnected)?
            .send_many(packets)
            .await
    }

    /// Tells the current server whether it is the home region.
    pub async fn note_preferred(&self, preferred: bool) -> Result<(), ClientError> {
        self.sender()
            .ok_or(ClientError::NotConnected)?
            .note_preferred(preferred)
            .await
    }
}

impl Drop for ReconnectingClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    target: Target,
    current: Arc<StdMutex<Option<ClientSender>>>,
    events: mpsc::Sender<Event>,
) {
    let set = |s: Option<ClientSender>| *current.lock().unwrap_or_else(|e| e.into_inner()) = s;
    let mut backoff =
        Backoff::with_random_seed(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let mut retry_in = None;
        match target.connect().await {
            Ok(client) => {
                backoff.reset();
                let server_key = client.server_key();
                let (tx, mut rx) = client.split();
                set(Some(tx.clone()));
                if events.send(Event::Connected { server_key }).await.is_err() {
                    return;
                }
                let error = loop {
                    let ev = match rx.recv().await {
                        Ok(Received::Packet { src, data }) => Event::Packet { src, data },
                        Ok(Received::PeerGone { key, reason }) => Event::PeerGone { key, reason },
                        Ok(Received::Health(h)) => Event::Health(h),
                        Ok(Received::Restarting { reconnect_in, .. }) => {
                            info!(?reconnect_in, "DERP server is restarting");
                            retry_in = Some(reconnect_in);
                            continue;
                        }
                        Ok(Received::Pong(_)) => continue,
                        Err(e) => break e,
                    };
                    if events.send(ev).await.is_err() {
                        set(None);
                        return;
                    }
                };
                set(None);
                info!(error = %error, "lost DERP connection; reconnecting");
                if events.send(Event::Disconnected { error }).await.is_err() {
                    return;
                }
            }
            Err(e) => debug!(error = %e, "DERP connect failed; will retry"),
        }
        let delay = retry_in
            .unwrap_or_else(|| backoff.next_delay())
            .min(Duration::from_secs(10));
        tokio::time::sleep(delay).await;
    }
}
