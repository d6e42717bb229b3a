//! Port forwarding from the tailnet into the workspace: a TCP stream or a flow of UDP
//! datagrams that arrived for `<agent tailnet address>:<port>` is relayed to
//! `127.0.0.1:<port>` inside the workspace.
//!
//! Both helpers are transport-agnostic: the tailnet side is any byte stream (TCP) or any
//! [`DatagramPipe`] (UDP), so the netstack, a test or a plain socket can drive them.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// How long [`forward_tcp`] waits for the workspace port to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Buffer of each direction of a TCP forward: large copies take the tailnet's lock and
/// wake its driver once per 256 KiB instead of once per 8 KiB (tokio's default).
pub const COPY_BUFFER: usize = 256 * 1024;

/// Largest UDP datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing accepts connections on the workspace port.
    #[error("nothing is listening on 127.0.0.1:{port} in the workspace")]
    NotListening {
        /// The port that refused.
        port: u16,
    },
    /// The workspace port did not answer within [`CONNECT_TIMEOUT`].
    #[error("timed out connecting to 127.0.0.1:{port} in the workspace")]
    ConnectTimeout {
        /// The port that did not answer.
        port: u16,
    },
    /// Connecting to the workspace port failed for another reason.
    #[error("cannot connect to 127.0.0.1:{port} in the workspace: {source}")]
    Connect {
        /// The target port.
        port: u16,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Copying bytes failed after the connection was made.
    #[error("forwarding to 127.0.0.1:{port} failed: {source}")]
    Copy {
        /// The target port.
        port: u16,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The local UDP socket could not be set up or used.
    #[error("UDP forward to 127.0.0.1:{port} failed: {source}")]
    Udp {
        /// The target port.
        port: u16,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Bytes moved by a finished TCP forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardStats {
    /// Bytes from the tailnet side to the workspace port.
    pub to_workspace: u64,
    /// Bytes from the workspace port back to the tailnet side.
    pub from_workspace: u64,
}

/// Connect to `127.0.0.1:port` in the workspace and copy both ways until both directions
/// have ended. EOF on one side is passed on as a half-close (`shutdown`) of the other, so
/// request/response protocols that close their sending side keep working.
///
/// # Errors
/// [`ForwardError::NotListening`] when the port refuses the connection, the other variants
/// for timeouts and I/O failures.
pub async fn forward_tcp<S>(mut stream: S, port: u16) -> Result<ForwardStats, ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut local = connect_local(port).await?;
    let (to_workspace, from_workspace) =
        tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut local, COPY_BUFFER, COPY_BUFFER)
            .await
            .map_err(|source| ForwardError::Copy { port, source })?;
    tracing::debug!(port, to_workspace, from_workspace, "tcp forward done");
    Ok(ForwardStats {
        to_workspace,
        from_workspace,
    })
}

async fn connect_local(port: u16) -> Result<TcpStream, ForwardError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => Err(ForwardError::ConnectTimeout { port }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Err(ForwardError::NotListening { port })
        }
        Ok(Err(source)) => Err(ForwardError::Connect { port, source }),
        Ok(Ok(s)) => {
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(port, error = %e, "set_nodelay failed");
            }
            Ok(s)
        }
    }
}

/// The tailnet side of one UDP flow (one remote address and port talking to one of our
/// ports). A tailnet UDP socket, a test or an mpsc pair implements it.
pub trait DatagramPipe: Send {
    /// Wait for the next datagram from the tailnet peer; `None` ends the flow.
    fn recv(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
    /// Send a reply datagram back to the tailnet peer.
    fn send(&mut self, datagram: Bytes) -> impl Future<Output = io::Result<()>> + Send;
}

/// A [`DatagramPipe`] made of two channels: datagrams in, replies out.
#[derive(Debug)]
pub struct ChannelDatagrams {
    /// Datagrams from the tailnet peer.
    pub incoming: mpsc::Receiver<Bytes>,
    /// Replies to the tailnet peer.
    pub outgoing: mpsc::Sender<Bytes>,
}

impl DatagramPipe for ChannelDatagrams {
    async fn recv(&mut self) -> Option<Bytes> {
        self.incoming.recv().await
    }

    async fn send(&mut self, datagram: Bytes) -> io::Result<()> {
        self.outgoing
            .send(datagram)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reply receiver gone"))
    }
}

/// Relay one UDP flow: every datagram from `pipe` goes to `127.0.0.1:port` from a fresh
/// local socket, and every datagram that port answers goes back through `pipe`.
///
/// The flow ends when `pipe` yields `None` or after `idle` without traffic either way
/// (NAT-style expiry; 60 s is a good default).
///
/// # Errors
/// [`ForwardError::Udp`] when the local socket cannot be bound or used, or the reply
/// cannot be handed back to the tailnet side.
pub async fn forward_udp<P: DatagramPipe>(
    mut pipe: P,
    port: u16,
    idle: Duration,
) -> Result<(), ForwardError> {
    let err = |source| ForwardError::Udp { port, source };
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(err)?;
    socket
        .connect((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(err)?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            incoming = pipe.recv() => {
                let Some(datagram) = incoming else {
                    tracing::debug!(port, "udp flow ended by tailnet side");
                    return Ok(());
                };
                match socket.send(&datagram).await {
                    Ok(_) => {}
                    // An ICMP "port unreachable" from an earlier datagram: UDP is lossy anyway.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::trace!(port, "udp port unreachable");
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            reply = socket.recv(&mut buf) => {
                match reply {
                    Ok(n) => {
                        let datagram = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                        pipe.send(datagram).await.map_err(err)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::trace!(port, "udp port unreachable");
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            () = tokio::time::sleep(idle) => {
                tracing::debug!(port, "udp flow idle, closing");
                return Ok(());
            }
        }
    }
}
