//! Accepting: listeners per port and "accept any" for TCP (a listening socket made for
//! each inbound SYN just before smoltcp sees it), accept queues, and UDP "accept any".

use std::collections::VecDeque;
use std::net::SocketAddrV6;
use std::task::Waker;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{AnySocket, tcp};
use tracing::{debug, trace};

use super::{
    ACCEPT_BACKLOG, MAX_SOCKETS, MAX_UDP_ACCEPT_ANY, Netstack, NetstackError, TcpHandle, UdpHandle,
    v6,
};

/// Where an accepted connection is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcceptKey {
    /// An explicit listener on this port.
    Port(u16),
    /// The "accept any port" queue.
    Any,
}

/// A connection ready to be handed to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The socket.
    pub handle: TcpHandle,
    /// Our port the peer connected to.
    pub local_port: u16,
    /// The peer's address.
    pub remote: SocketAddrV6,
}

#[derive(Default)]
pub(super) struct AcceptQueue {
    ready: VecDeque<Accepted>,
    waker: Option<Waker>,
}

/// A UDP socket bound on the fly by "accept any", ready to be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpAccepted {
    /// The socket.
    pub handle: UdpHandle,
    /// The port it is bound to (the first datagram's destination port).
    pub local_port: u16,
}

impl Netstack {
    pub(super) fn on_syn(&mut self, remote: SocketAddrV6, port: u16) {
        let key = if self.listening.contains(&port) {
            AcceptKey::Port(port)
        } else if self.accept_any {
            AcceptKey::Any
        } else {
            return;
        };
        let mut have_listener = false;
        for (h, s) in self.sockets.iter() {
            let Some(s) = tcp::Socket::downcast(s) else {
                continue;
            };
            if s.state() == tcp::State::Listen {
                if self.pending.contains_key(&h) && s.listen_endpoint().port == port {
                    have_listener = true;
                }
            } else if s.local_endpoint().is_some_and(|l| l.port == port)
                && s.remote_endpoint().and_then(v6) == Some(remote)
            {
                // A retransmitted SYN for a connection we already have.
                return;
            }
        }
        if have_listener {
            return;
        }
        if self.socket_count() >= MAX_SOCKETS {
            debug!(%remote, port, "too many sockets; refusing inbound connection");
            return;
        }
        let mut s = Self::new_tcp_socket();
        if s.listen(port).is_err() {
            return;
        }
        let h = self.sockets.add(s);
        self.pending.insert(h, key);
        trace!(%remote, port, "listening socket created for inbound SYN");
    }

    /// UDP "accept any": binds a socket to `port` for a datagram nobody is bound to.
    pub(super) fn on_udp_datagram(&mut self, remote: SocketAddrV6, port: u16) {
        if port == 0 || self.udp_ports.contains_key(&port) {
            return;
        }
        if self.udp_any.len() >= MAX_UDP_ACCEPT_ANY {
            debug!(%remote, port, limit = MAX_UDP_ACCEPT_ANY, "too many accept-any UDP sockets; dropping datagram");
            return;
        }
        let h = match self.udp_bind(port) {
            Ok(h) => h,
            Err(e) => {
                debug!(%remote, port, error = %e, "cannot bind accept-any UDP socket; dropping datagram");
                return;
            }
        };
        self.udp_any.insert(h.0);
        self.udp_any_ready.push_back(UdpAccepted {
            handle: h,
            local_port: port,
        });
        debug!(%remote, port, "UDP socket bound for an inbound datagram");
        if let Some(w) = self.udp_any_waker.take() {
            w.wake();
        }
    }

    pub(super) fn sweep(&mut self) {
        let mut moved = Vec::new();
        let mut dead = Vec::new();
        for (&h, &key) in &self.pending {
            let s = self.sockets.get::<tcp::Socket>(h);
            match s.state() {
                tcp::State::Listen | tcp::State::SynReceived => {}
                tcp::State::Established | tcp::State::CloseWait => {
                    let local_port = s.local_endpoint().map_or(0, |l| l.port);
                    match s.remote_endpoint().and_then(v6) {
                        Some(remote) => moved.push((
                            key,
                            Accepted {
                                handle: TcpHandle(h),
                                local_port,
                                remote,
                            },
                        )),
                        None => dead.push(h),
                    }
                }
                _ => dead.push(h),
            }
        }
        for h in dead {
            self.pending.remove(&h);
            self.sockets.remove(h);
        }
        for (key, acc) in moved {
            self.pending.remove(&acc.handle.0);
            let q = self.queues.entry(key).or_default();
            if q.ready.len() >= ACCEPT_BACKLOG {
                debug!(remote = %acc.remote, port = acc.local_port, "accept backlog full; resetting connection");
                self.sockets.get_mut::<tcp::Socket>(acc.handle.0).abort();
                self.orphans.insert(acc.handle.0);
                continue;
            }
            debug!(remote = %acc.remote, port = acc.local_port, "inbound TCP connection established");
            q.ready.push_back(acc);
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
        let closed: Vec<SocketHandle> = self
            .orphans
            .iter()
            .copied()
            .filter(|&h| {
                matches!(
                    self.sockets.get::<tcp::Socket>(h).state(),
                    tcp::State::Closed | tcp::State::TimeWait
                )
            })
            .collect();
        for h in closed {
            self.orphans.remove(&h);
            self.sockets.remove(h);
        }
    }

    /// Starts accepting connections to `port`.
    pub fn tcp_listen(&mut self, port: u16) -> Result<(), NetstackError> {
        if port == 0 || !self.listening.insert(port) {
            return Err(NetstackError::AddrInUse(port));
        }
        debug!(port, "listening");
        Ok(())
    }

    /// Stops accepting on `port`; connections not yet accepted are reset.
    pub fn tcp_unlisten(&mut self, port: u16) {
        if self.listening.remove(&port) {
            self.drop_queue(AcceptKey::Port(port));
        }
    }

    /// Turns "accept connections to any port nobody listens on" on or off.
    pub fn set_accept_any(&mut self, on: bool) {
        self.accept_any = on;
        if !on {
            self.drop_queue(AcceptKey::Any);
        }
    }

    /// Whether "accept any" is on.
    pub fn accept_any(&self) -> bool {
        self.accept_any
    }

    fn drop_queue(&mut self, key: AcceptKey) {
        if let Some(q) = self.queues.remove(&key) {
            for a in q.ready {
                self.sockets.get_mut::<tcp::Socket>(a.handle.0).abort();
                self.orphans.insert(a.handle.0);
            }
        }
        let half: Vec<SocketHandle> = self
            .pending
            .iter()
            .filter(|(_, k)| **k == key)
            .map(|(h, _)| *h)
            .collect();
        for h in half {
            self.pending.remove(&h);
            self.sockets.get_mut::<tcp::Socket>(h).abort();
            self.orphans.insert(h);
        }
    }

    /// Takes an established inbound connection from a queue, or registers `waker`.
    pub fn tcp_accept(&mut self, key: AcceptKey, waker: Option<&Waker>) -> Option<Accepted> {
        let q = self.queues.entry(key).or_default();
        let got = q.ready.pop_front();
        if got.is_none()
            && let Some(w) = waker
        {
            q.waker = Some(w.clone());
        }
        got
    }

    /// Turns UDP "accept any" on or off: with it on, a datagram to a port no socket is
    /// bound to binds one there. Turning it off closes the sockets not yet handed out.
    pub fn set_udp_accept_any(&mut self, on: bool) {
        self.udp_accept_any = on;
        if !on {
            for a in std::mem::take(&mut self.udp_any_ready) {
                self.udp_close(a.handle);
            }
        }
    }

    /// Whether UDP "accept any" is on.
    pub fn udp_accept_any_enabled(&self) -> bool {
        self.udp_accept_any
    }

    /// Takes the next UDP socket bound by "accept any", or registers `waker`. The
    /// caller owns it from then on and frees its port with [`Netstack::udp_close`].
    pub fn udp_accept_any(&mut self, waker: Option<&Waker>) -> Option<UdpAccepted> {
        let got = self.udp_any_ready.pop_front();
        if got.is_none()
            && let Some(w) = waker
        {
            self.udp_any_waker = Some(w.clone());
        }
        got
    }
}
