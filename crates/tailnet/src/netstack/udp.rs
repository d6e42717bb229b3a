//! UDP sockets: binding (to a given or a random free port), sending, receiving, releasing.

use rand::Rng;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;

use super::{MAX_SOCKETS, MTU, Netstack, NetstackError, UDP_PACKETS};

impl Netstack {
    /// Binds a UDP socket to `port`, or to a random free port from 49152 up if `port`
    /// is 0 (read it back with [`Netstack::udp_port`]).
    pub fn udp_bind(&mut self, port: u16) -> Result<SocketHandle, NetstackError> {
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
        Ok(h)
    }

    /// The UDP socket behind `h`. `h` must be a live UDP handle from this stack.
    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h)
    }

    /// The port UDP socket `h` is bound to. `h` must be a live UDP handle from this stack.
    pub fn udp_port(&self, h: SocketHandle) -> u16 {
        self.sockets.get::<udp::Socket>(h).endpoint().port
    }

    /// Closes a UDP socket, freeing its port.
    pub fn udp_release(&mut self, h: SocketHandle) {
        let port = self.udp_port(h);
        self.udp_ports.remove(&port);
        self.udp_any.remove(&h);
        self.sockets.remove(h);
    }
}
