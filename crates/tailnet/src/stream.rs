//! Sockets on the tailnet: TCP streams and listeners, UDP sockets. Each is a handle
//! into the shared netstack; the driver task moves their packets.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddrV6;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Shared;
use crate::error::TailnetError;
use crate::netstack::{AcceptKey, Accepted, NetstackError, TcpHandle, UdpHandle};

/// A netstack error as the `io::Error` a TCP reader or writer expects.
fn io_error(e: NetstackError) -> io::Error {
    match e {
        NetstackError::Reset => io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the TCP connection is closed for writing",
        ),
        NetstackError::WriteClosed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the TCP connection is closed for writing",
        ),
        other => io::Error::other(other.to_string()),
    }
}

/// A netstack error of a UDP socket as the tailnet error its caller expects.
fn udp_error(e: NetstackError) -> TailnetError {
    match e {
        NetstackError::Udp(m) => TailnetError::Udp(m),
        other => other.into(),
    }
}

fn closed_err() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the tailnet connection is closed",
    )
}

/// A TCP connection over the tailnet. `shutdown` sends FIN; dropping closes it.
pub struct TcpStream {
    shared: Arc<Shared>,
    handle: TcpHandle,
    local: SocketAddrV6,
    peer: SocketAddrV6,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl TcpStream {
    pub(crate) fn new(
        shared: Arc<Shared>,
        handle: TcpHandle,
        local: SocketAddrV6,
        peer: SocketAddrV6,
    ) -> Self {
        Self {
            shared,
            handle,
            local,
            peer,
        }
    }

    fn from_accepted(shared: Arc<Shared>, a: Accepted) -> Self {
        let local = SocketAddrV6::new(shared.ip, a.local_port, 0, 0);
        Self::new(shared, a.handle, local, a.remote)
    }

    /// Our address.
    pub fn local_addr(&self) -> SocketAddrV6 {
        self.local
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddrV6 {
        self.peer
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(closed_err()));
        }
        let mut core = self.shared.lock();
        let unfilled = buf.initialize_unfilled();
        match core
            .netstack()
            .tcp_poll_read(self.handle, unfilled, cx.waker())
        {
            Poll::Ready(Ok(n)) => {
                drop(core);
                buf.advance(n);
                if n > 0 {
                    // The window opened: let the driver tell the peer.
                    self.shared.wake_driver();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(closed_err()));
        }
        let r = self
            .shared
            .lock()
            .netstack()
            .tcp_poll_write(self.handle, data, cx.waker());
        if let Poll::Ready(Ok(_)) = r {
            self.shared.wake_driver();
        }
        r.map_err(io_error)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.lock().netstack().tcp_shutdown(self.handle);
        self.shared.wake_driver();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.shared.lock().netstack().tcp_close(self.handle);
        self.shared.wake_driver();
    }
}

/// Waits until a connecting socket is established (Ok(true)) or closed (Ok(false)).
pub(crate) async fn wait_established(
    shared: &Shared,
    handle: TcpHandle,
) -> Result<bool, TailnetError> {
    poll_fn(|cx| {
        if shared.is_closed() {
            return Poll::Ready(Err(TailnetError::Closed));
        }
        shared
            .lock()
            .netstack()
            .tcp_poll_established(handle, cx.waker())
            .map(Ok)
    })
    .await
}

/// Accepts TCP connections to one port.
pub struct TcpListener {
    shared: Arc<Shared>,
    port: u16,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TcpListener {
    pub(crate) fn new(shared: Arc<Shared>, port: u16) -> Self {
        Self { shared, port }
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next established connection and the peer's address.
    pub async fn accept(&self) -> Result<(TcpStream, SocketAddrV6), TailnetError> {
        let a = accept(&self.shared, AcceptKey::Port(self.port)).await?;
        let remote = a.remote;
        Ok((TcpStream::from_accepted(self.shared.clone(), a), remote))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared.lock().netstack().tcp_unlisten(self.port);
        self.shared.wake_driver();
    }
}

pub(crate) async fn accept(shared: &Shared, key: AcceptKey) -> Result<Accepted, TailnetError> {
    poll_fn(|cx| {
        if shared.is_closed() {
            return Poll::Ready(Err(TailnetError::Closed));
        }
        match shared.lock().netstack().tcp_accept(key, Some(cx.waker())) {
            Some(a) => Poll::Ready(Ok(a)),
            None => Poll::Pending,
        }
    })
    .await
}

pub(crate) async fn accept_any(shared: &Arc<Shared>) -> Result<(TcpStream, u16), TailnetError> {
    let a = accept(shared, AcceptKey::Any).await?;
    let port = a.local_port;
    Ok((TcpStream::from_accepted(shared.clone(), a), port))
}

pub(crate) async fn accept_any_udp(shared: &Arc<Shared>) -> Result<(UdpSocket, u16), TailnetError> {
    let a = poll_fn(|cx| {
        if shared.is_closed() {
            return Poll::Ready(Err(TailnetError::Closed));
        }
        match shared.lock().netstack().udp_accept_any(Some(cx.waker())) {
            Some(a) => Poll::Ready(Ok(a)),
            None => Poll::Pending,
        }
    })
    .await?;
    Ok((
        UdpSocket::new(shared.clone(), a.handle, a.local_port),
        a.local_port,
    ))
}

/// A UDP socket on the tailnet.
pub struct UdpSocket {
    shared: Arc<Shared>,
    handle: UdpHandle,
    port: u16,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl UdpSocket {
    pub(crate) fn new(shared: Arc<Shared>, handle: UdpHandle, port: u16) -> Self {
        Self {
            shared,
            handle,
            port,
        }
    }

    /// Our address.
    pub fn local_addr(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.shared.ip, self.port, 0, 0)
    }

    /// Sends one datagram to `dst`; waits while the send buffer is full.
    pub async fn send_to(&self, data: &[u8], dst: SocketAddrV6) -> Result<usize, TailnetError> {
        let n = poll_fn(|cx| {
            if self.shared.is_closed() {
                return Poll::Ready(Err(TailnetError::Closed));
            }
            self.shared
                .lock()
                .netstack()
                .udp_poll_send_to(self.handle, data, dst, cx.waker())
                .map_err(udp_error)
        })
        .await?;
        self.shared.wake_driver();
        Ok(n)
    }

    /// Receives one datagram into `buf` (truncated if longer) and its sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV6), TailnetError> {
        poll_fn(|cx| {
            if self.shared.is_closed() {
                return Poll::Ready(Err(TailnetError::Closed));
            }
            self.shared
                .lock()
                .netstack()
                .udp_poll_recv_from(self.handle, buf, cx.waker())
                .map_err(udp_error)
        })
        .await
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.shared.lock().netstack().udp_close(self.handle);
    }
}
