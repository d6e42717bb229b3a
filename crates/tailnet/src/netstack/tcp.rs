//! TCP sockets: connecting, reading and writing, waiting for room or data, releasing.

use std::collections::HashSet;
use std::net::SocketAddrV6;
use std::task::Waker;

use rand::Rng;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{AnySocket, tcp};
use smoltcp::wire::IpAddress;
use tracing::debug;

use super::{
    MAX_SOCKETS, Netstack, NetstackError, TCP_BUFFER, TCP_KEEPALIVE, TCP_TIMEOUT, smol_duration, v6,
};

/// A writer that found its connection's send buffer full waits until this much room is
/// free, instead of being woken by every ACK to copy a few segments' worth.
pub const SEND_LOW_WATER: usize = TCP_BUFFER / 4;

impl Netstack {
    pub(super) fn new_tcp_socket() -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        );
        s.set_nagle_enabled(false);
        // Congestion control is recovery's: it clamps the windows smoltcp sees.
        s.set_congestion_control(tcp::CongestionControl::None);
        s.set_keep_alive(Some(smol_duration(TCP_KEEPALIVE)));
        s.set_timeout(Some(smol_duration(TCP_TIMEOUT)));
        s
    }

    /// Opens a TCP connection to `remote` from a random free port.
    pub fn tcp_connect(&mut self, remote: SocketAddrV6) -> Result<SocketHandle, NetstackError> {
        if self.socket_count() >= MAX_SOCKETS {
            return Err(NetstackError::TooManySockets);
        }
        let used: HashSet<u16> = self
            .sockets
            .iter()
            .filter_map(|(_, s)| tcp::Socket::downcast(s))
            .filter_map(|s| s.local_endpoint().map(|l| l.port))
            .collect();
        let mut port = None;
        for _ in 0..64 {
            let p = self.rng.gen_range(49152..=65535u16);
            if !used.contains(&p) && !self.listening.contains(&p) {
                port = Some(p);
                break;
            }
        }
        let port = port.ok_or(NetstackError::NoFreePort)?;
        let mut s = Self::new_tcp_socket();
        s.connect(
            self.iface.context(),
            (IpAddress::Ipv6(*remote.ip()), remote.port()),
            port,
        )
        .map_err(|e| NetstackError::Connect(remote, e.to_string()))?;
        debug!(%remote, local_port = port, "TCP connect");
        Ok(self.sockets.add(s))
    }

    /// Wakes `waker` once `h` has [`SEND_LOW_WATER`] bytes of room (or can send no more).
    pub fn wait_send_room(&mut self, h: SocketHandle, waker: &Waker) {
        self.writers.insert(h, waker.clone());
    }

    /// Wakes `waker` after the poll that brings `h` data (or its end).
    pub fn wait_recv(&mut self, h: SocketHandle, waker: &Waker) {
        self.readers.insert(h, waker.clone());
    }

    /// The application took data out of `h`'s receive buffer: the next poll tells the
    /// peer of the larger window if smoltcp would not yet (see `recovery::window`).
    pub fn tcp_consumed(&mut self, h: SocketHandle) {
        if !self.consumed.contains(&h) {
            self.consumed.push(h);
        }
    }

    /// Queues window updates for the sockets read from since the last poll.
    pub(super) fn send_window_updates(&mut self) {
        for h in self.consumed.drain(..) {
            // Handles here are live: a released one leaves the list (`tcp_release`).
            let s = self.sockets.get::<tcp::Socket>(h);
            if s.state() != tcp::State::Established {
                continue;
            }
            let (Some(local), Some(remote)) =
                (s.local_endpoint(), s.remote_endpoint().and_then(v6))
            else {
                continue;
            };
            let free = s.recv_capacity() - s.recv_queue();
            if let Some(p) =
                self.recovery
                    .window_update(self.ip, local.port, remote, free, s.recv_capacity())
            {
                self.device.tx.push_back(p);
            }
        }
    }

    /// The TCP socket behind `h`. `h` must be a live TCP handle from this stack.
    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// The application is done with `h`: close it (FIN) and forget it once closed.
    pub fn tcp_release(&mut self, h: SocketHandle) {
        debug!(recovery_totals = ?self.recovery.stats(), "TCP connection released");
        self.writers.remove(&h);
        self.readers.remove(&h);
        self.consumed.retain(|&x| x != h);
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        if s.state() == tcp::State::Closed {
            self.sockets.remove(h);
            return;
        }
        if s.recv_queue() > 0 {
            // Data nobody will read: reset, as a kernel does, so that the peer stops
            // instead of stalling on our full window for ever.
            s.abort();
        } else {
            s.close();
        }
        self.orphans.insert(h);
    }
}
