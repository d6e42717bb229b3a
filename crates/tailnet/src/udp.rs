//! The UDP socket of direct paths, with batched I/O: WireGuard datagrams to one peer go
//! out as one UDP GSO send (up to 64 datagrams a syscall) and come in through
//! `recvmmsg` with UDP GRO (many datagrams a syscall), via `quinn-udp`. Per-datagram
//! syscalls were most of the CPU time of a direct stream before.
//!
//! STUN, disco and WireGuard share this one socket, so the STUN-mapped port is the one
//! peers reach.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tracing::{debug, trace};

/// Kernel buffer asked for each way: the default (about 200 KiB) overflows while the
/// driver is busy with a burst, and each datagram lost there costs the TCP stream above
/// a congestion-window cut. The kernel caps it at `net.core.rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 7 << 20;
/// Bytes of one receive buffer: a GRO batch is at most 64 KiB.
const RECV_BUF: usize = 1 << 16;
/// A GSO send carries at most this many bytes (the UDP length field's limit, rounded down).
const MAX_GSO_BYTES: usize = 65_000;

/// An IPv4 UDP socket with GSO/GRO batching.
#[derive(Debug)]
pub struct DirectSocket {
    sock: tokio::net::UdpSocket,
    state: UdpSocketState,
}

impl DirectSocket {
    /// Binds `0.0.0.0:0` and sizes the kernel buffers.
    pub async fn bind() -> io::Result<Self> {
        let sock = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        let state = UdpSocketState::new((&sock).into())?;
        let _ = state.set_recv_buffer_size((&sock).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&sock).into(), SOCKET_BUFFER);
        debug!(
            local = ?sock.local_addr().ok(),
            recv_buffer = ?state.recv_buffer_size((&sock).into()).ok(),
            send_buffer = ?state.send_buffer_size((&sock).into()).ok(),
            gso = state.max_gso_segments(),
            gro = state.gro_segments(),
            "UDP socket for direct paths bound"
        );
        Ok(Self { sock, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Sends one datagram (STUN requests), waiting for buffer space.
    pub async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(data, to).await
    }

    /// Waits until datagrams may be waiting.
    pub async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Reads every datagram waiting now (no wait), up to `max_calls` syscalls, calling
    /// `each(source, datagram)` for each. Returns how many datagrams were read.
    pub fn drain(
        &self,
        bufs: &mut RecvBufs,
        max_calls: usize,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> usize {
        let mut count = 0;
        for _ in 0..max_calls {
            let mut iovs: Vec<IoSliceMut<'_>> =
                bufs.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let got = self.sock.try_io(Interest::READABLE, || {
                self.state
                    .recv((&self.sock).into(), &mut iovs, &mut bufs.meta)
            });
            let n = match got {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    trace!(error = %e, "UDP receive error");
                    break;
                }
            };
            for (iov, meta) in iovs.iter().zip(&bufs.meta).take(n) {
                let data = iov.get(..meta.len).unwrap_or_default();
                // With GRO one buffer holds several datagrams, `stride` bytes apart.
                for datagram in data.chunks(meta.stride.max(1)) {
                    each(meta.addr, datagram);
                    count += 1;
                }
            }
        }
        count
    }

    /// Sends a batch built with [`SendBatch`]; a full socket buffer drops it (the
    /// protocols above retransmit), other errors are logged by quinn-udp.
    fn send_batch(&self, b: &SendBatch) {
        let Some(destination) = b.dst else { return };
        let t = Transmit {
            destination,
            ecn: None,
            contents: &b.buf,
            segment_size: (b.count > 1).then_some(b.segment),
            src_ip: None,
        };
        let sent = self.sock.try_io(Interest::WRITABLE, || {
            self.state.send((&self.sock).into(), &t)
        });
        if let Err(e) = sent {
            trace!(%destination, datagrams = b.count, error = %e, "UDP send failed; dropping");
        }
    }

    /// The most datagrams one send may carry.
    fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }
}

/// Receive buffers and metadata for [`DirectSocket::drain`], allocated once.
#[derive(Debug)]
pub struct RecvBufs {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

impl Default for RecvBufs {
    fn default() -> Self {
        let n = quinn_udp::BATCH_SIZE.clamp(1, 32);
        Self {
            bufs: (0..n).map(|_| vec![0u8; RECV_BUF]).collect(),
            meta: vec![RecvMeta::default(); n],
        }
    }
}

/// Consecutive datagrams to one address, equal in size but for a shorter last one: the
/// shape one GSO send can carry.
#[derive(Debug, Default)]
pub struct SendBatch {
    buf: Vec<u8>,
    dst: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch.
    closed: bool,
}

impl SendBatch {
    /// Queues `data` for `to`, first sending what is queued if `data` cannot join it.
    pub fn push(&mut self, sock: &DirectSocket, to: SocketAddr, data: &[u8]) {
        if !self.fits(sock, to, data.len()) {
            self.flush(sock);
        }
        if self.count == 0 {
            self.dst = Some(to);
            self.segment = data.len();
        } else if data.len() < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
    }

    /// Sends what is queued.
    pub fn flush(&mut self, sock: &DirectSocket) {
        if self.count > 0 {
            sock.send_batch(self);
        }
        self.buf.clear();
        self.dst = None;
        self.count = 0;
        self.closed = false;
    }

    fn fits(&self, sock: &DirectSocket, to: SocketAddr, len: usize) -> bool {
        self.count == 0
            || (self.dst == Some(to)
                && !self.closed
                && len <= self.segment
                && self.count < sock.max_segments()
                && self.buf.len() + len <= MAX_GSO_BYTES)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Many datagrams of mixed sizes to two destinations arrive whole, in order per
    /// destination, however they were batched.
    #[tokio::test]
    async fn batches_arrive_as_the_datagrams_they_were() {
        let tx = DirectSocket::bind().await.unwrap();
        let rx1 = DirectSocket::bind().await.unwrap();
        let rx2 = DirectSocket::bind().await.unwrap();
        let lo = |s: &DirectSocket| {
            SocketAddr::new([127, 0, 0, 1].into(), s.local_addr().unwrap().port())
        };
        let (a1, a2) = (lo(&rx1), lo(&rx2));
        // A fresh socket's writability is known after the reactor's first poll.
        tx.sock.writable().await.unwrap();
        let mut sent: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        let mut batch = SendBatch::default();
        for i in 0..300u32 {
            // Mostly full-size runs, with short datagrams and a change of destination
            // now and then (each must start a new batch).
            let len = if i % 37 == 5 { 100 } else { 1312 };
            let to = if i % 101 == 50 { a2 } else { a1 };
            let mut d = vec![(i % 251) as u8; len];
            d[..4].copy_from_slice(&i.to_be_bytes());
            batch.push(&tx, to, &d);
            sent.push((to, d));
        }
        batch.flush(&tx);
        for (rx, addr) in [(&rx1, a1), (&rx2, a2)] {
            let want: Vec<&Vec<u8>> = sent
                .iter()
                .filter(|(t, _)| *t == addr)
                .map(|(_, d)| d)
                .collect();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut bufs = RecvBufs::default();
            while got.len() < want.len() {
                tokio::time::timeout(Duration::from_secs(5), rx.readable())
                    .await
                    .expect("datagrams within 5 s")
                    .unwrap();
                rx.drain(&mut bufs, 64, |_, d| got.push(d.to_vec()));
            }
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g, w);
            }
        }
    }
}
