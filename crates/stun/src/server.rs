//! A UDP STUN server that answers binding requests with the source address it saw.
//!
//! One task, one socket, no per-client state. Anything that is not a valid binding
//! request is counted and dropped; socket errors are logged at debug and the loop goes
//! on, so a hostile or broken peer can neither crash nor stop the server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, trace};

use crate::message::{binding_response, parse_binding_request};

/// Receive buffer size: comfortably above any binding request a real client sends;
/// larger datagrams arrive truncated, fail the length check and are counted as ignored.
const RECV_BUF_LEN: usize = 2048;
/// Pause after a receive error so a persistent socket fault cannot become a busy loop.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// A bound, not yet running STUN server.
#[derive(Debug)]
pub struct Server {
    socket: UdpSocket,
    local_addr: SocketAddr,
    stats: ServerStats,
}

/// Live counters of a [`Server`]; cheap to clone and readable while the server runs
/// (e.g. from a health endpoint).
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    ignored: AtomicU64,
    send_errors: AtomicU64,
}

/// A point-in-time copy of [`ServerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Binding requests answered (response handed to the socket successfully).
    pub answered: u64,
    /// Datagrams that were not valid binding requests and were dropped.
    pub ignored: u64,
    /// Valid requests whose response could not be sent.
    pub send_errors: u64,
}

impl ServerStats {
    /// Binding requests answered so far.
    pub fn answered(&self) -> u64 {
        self.inner.answered.load(Ordering::Relaxed)
    }

    /// Invalid datagrams dropped so far.
    pub fn ignored(&self) -> u64 {
        self.inner.ignored.load(Ordering::Relaxed)
    }

    /// Responses that failed to send so far.
    pub fn send_errors(&self) -> u64 {
        self.inner.send_errors.load(Ordering::Relaxed)
    }

    /// All counters at once (each read individually; they may be a packet apart).
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            answered: self.answered(),
            ignored: self.ignored(),
            send_errors: self.send_errors(),
        }
    }
}

impl Server {
    /// Binds a UDP socket on `addr` (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> io::Result<Server> {
        let socket = UdpSocket::bind(addr).await?;
        Server::from_socket(socket)
    }

    /// Wraps an already bound socket (e.g. one inherited or configured by the caller).
    pub fn from_socket(socket: UdpSocket) -> io::Result<Server> {
        let local_addr = socket.local_addr()?;
        Ok(Server {
            socket,
            local_addr,
            stats: ServerStats::default(),
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle on the server's counters that stays valid while and after it runs.
    pub fn stats(&self) -> ServerStats {
        self.stats.clone()
    }

    /// Serves forever.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until<F: Future<Output = ()>>(self, shutdown: F) {
        info!(addr = %self.local_addr, "STUN server listening");
        let mut shutdown = std::pin::pin!(shutdown);
        let mut buf = vec![0u8; RECV_BUF_LEN];
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, src)) => {
                        let packet = buf.get(..len).unwrap_or_default();
                        self.handle(packet, src).await;
                    }
                    Err(err) => {
                        // Linux reports ICMP errors only on connected sockets, other
                        // platforms (ECONNRESET on Windows) on any: both are transient.
                        debug!(%err, "STUN server receive error");
                        tokio::time::sleep(RECV_ERROR_BACKOFF).await;
                    }
                },
            }
        }
        info!(addr = %self.local_addr, "STUN server stopped");
    }

    /// Starts serving on a new tokio task.
    ///
    /// Dropping the returned handle (or calling [`ServerHandle::shutdown`]) stops it;
    /// use `tokio::spawn(server.run())` for a detached server instead.
    pub fn spawn(self) -> ServerHandle {
        let (tx, rx) = oneshot::channel::<()>();
        let local_addr = self.local_addr;
        let stats = self.stats();
        let task = tokio::spawn(self.run_until(async move {
            // Err means the handle was dropped: stop as well.
            let _ = rx.await;
        }));
        ServerHandle {
            local_addr,
            stats,
            shutdown: Some(tx),
            task,
        }
    }

    async fn handle(&self, packet: &[u8], src: SocketAddr) {
        let txid = match parse_binding_request(packet) {
            Ok(txid) => txid,
            Err(err) => {
                self.stats.inner.ignored.fetch_add(1, Ordering::Relaxed);
                trace!(%src, len = packet.len(), %err, "ignoring non-binding-request datagram");
                return;
            }
        };
        let response = binding_response(txid, src);
        match self.socket.send_to(&response, src).await {
            Ok(_) => {
                self.stats.inner.answered.fetch_add(1, Ordering::Relaxed);
                trace!(%src, %txid, "answered STUN binding request");
            }
            Err(err) => {
                self.stats.inner.send_errors.fetch_add(1, Ordering::Relaxed);
                debug!(%src, %err, "failed to send STUN binding response");
            }
        }
    }
}

/// A running server started by [`Server::spawn`]. Dropping it stops the server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stats: ServerStats,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle on the live counters.
    pub fn stats(&self) -> ServerStats {
        self.stats.clone()
    }

    /// Stops the server and waits until its task (and socket) is gone.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Err(err) = (&mut self.task).await {
            debug!(%err, "STUN server task ended abnormally");
        }
    }
}
