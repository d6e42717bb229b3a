//! UDP sockets by handle: binding (to a given or a random free port), sending and
//! receiving (at once, or as a poll that registers a waker), closing.

use std::net::SocketAddrV6;
use std::task::{Poll, Waker};

use rand::Rng;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

use super::{MAX_SOCKETS, MTU, Netstack, NetstackError, UDP_PACKETS, v6};

/// A UDP socket of one [`Netstack`]; valid until [`Netstack::udp_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UdpHandle(pub(super) SocketHandle);

impl Netstack {
    /// Binds a UDP socket to `port`, or to a random free port from 49152 up if `port`
    /// is 0 (read it back with [`Netstack::udp_port`]).
    pub fn udp_bind(&mut self, port: u16) -> Result<UdpHandle, NetstackError> {
        if self.socket_count() >= MAX_SOCKETS {
            return Err(NetstackError::TooManySockets);
        }
        let port = if port == 0 {
            let mut free = None;
            for _ in 0..64 {
                let p = self.rng.gen_range(49152..=65535u16);
                if !self.udp_ports.contains_key(&p) {
                    free = Some(p);
                    break;
                }
            }
            free.ok_or(NetstackError::NoFreePort)?
        } else if self.udp_ports.contains_key(&port) {
            return Err(NetstackError::AddrInUse(port));
        } else {
            port
        };
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0u8; UDP_PACKETS * MTU],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0u8; UDP_PACKETS * MTU],
            ),
        );
        s.bind(port).map_err(|_| NetstackError::AddrInUse(port))?;
        let h = self.sockets.add(s);
        self.udp_ports.insert(port, h);
        Ok(UdpHandle(h))
    }

    /// The socket behind `h`, a live handle of this stack.
    fn udp_socket(&mut self, h: UdpHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h.0)
    }

    /// The port UDP socket `h` is bound to.
    pub fn udp_port(&self, h: UdpHandle) -> u16 {
        self.sockets.get::<udp::Socket>(h.0).endpoint().port
    }

    /// Queues one datagram to `dst`; an error when the send buffer is full.
    pub fn udp_send_to(
        &mut self,
        h: UdpHandle,
        data: &[u8],
        dst: SocketAddrV6,
    ) -> Result<(), NetstackError> {
        let ep = IpEndpoint::new(IpAddress::Ipv6(*dst.ip()), dst.port());
        self.udp_socket(h)
            .send_slice(data, ep)
            .map_err(|e| NetstackError::Udp(e.to_string()))
    }

    /// Takes the next datagram into `buf` (truncated if longer): its length and sender,
    /// or `None` when nothing is queued.
    pub fn udp_recv_from(
        &mut self,
        h: UdpHandle,
        buf: &mut [u8],
    ) -> Result<Option<(usize, SocketAddrV6)>, NetstackError> {
        let Ok((d, meta)) = self.udp_socket(h).recv() else {
            return Ok(None);
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        let from = v6(meta.endpoint)
            .ok_or_else(|| NetstackError::Udp("datagram from a non-IPv6 source".into()))?;
        Ok(Some((n, from)))
    }

    /// Queues one datagram to `dst`, or (`Pending`) registers `waker` for when the send
    /// buffer has room.
    pub fn udp_poll_send_to(
        &mut self,
        h: UdpHandle,
        data: &[u8],
        dst: SocketAddrV6,
        waker: &Waker,
    ) -> Poll<Result<usize, NetstackError>> {
        let s = self.udp_socket(h);
        if !s.can_send() {
            s.register_send_waker(waker);
            return Poll::Pending;
        }
        Poll::Ready(self.udp_send_to(h, data, dst).map(|()| data.len()))
    }

    /// [`Netstack::udp_recv_from`], or (`Pending`) registers `waker` for the next
    /// datagram.
    pub fn udp_poll_recv_from(
        &mut self,
        h: UdpHandle,
        buf: &mut [u8],
        waker: &Waker,
    ) -> Poll<Result<(usize, SocketAddrV6), NetstackError>> {
        match self.udp_recv_from(h, buf) {
            Ok(Some(got)) => Poll::Ready(Ok(got)),
            Ok(None) => {
                self.udp_socket(h).register_recv_waker(waker);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Closes UDP socket `h`, freeing its port. The handle is invalid from now on.
    pub fn udp_close(&mut self, h: UdpHandle) {
        let port = self.udp_port(h);
        self.udp_ports.remove(&port);
        self.udp_any.remove(&h.0);
        self.sockets.remove(h.0);
    }
}
