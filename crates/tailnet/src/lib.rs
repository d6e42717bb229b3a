//! The userspace tailnet: WireGuard over DERP with a smoltcp netstack, no root, no TUN.
//!
//! Layers, bottom up: [`path`] (how a WireGuard datagram reaches a peer: a DERP region
//! or a direct UDP address), [`core`] (the sans-IO node: one
//! gotatun `Tunn` per peer, handshake retries on the time passed in, and the [`netstack`]
//! with TCP/UDP sockets and "accept any port" for both), [`control`] (the sans-IO
//! coordination session: nodes in, peer configs and messages out), and [`Conn`], the
//! tokio driver that fetches connection info, holds the coordination WebSocket around a
//! [`control::Session`], keeps DERP connections up and gives applications
//! [`TcpStream`]s, [`TcpListener`]s and [`UdpSocket`]s; [`Conn::dial_agent`] reaches a
//! workspace agent's port in one call.
//!
//! Direct paths: [`Conn`] holds one IPv4 UDP socket, demultiplexed with
//! [`disco::classify`] into STUN answers (our endpoints, published to the coordinator),
//! [`disco`] messages (Tailscale's ping/pong/call-me-maybe) and WireGuard. Per peer,
//! [`pathsel`] chooses between DERP and a direct address (trust, heartbeats, DERP
//! fallback); `disable_direct_connections` from the server or
//! [`ConnConfig::disable_direct`] keeps everything on DERP. [`netcheck`] makes the STUN
//! report used by `tether netcheck`, and its STUN round refreshes the endpoints, which
//! [`netinfo`] turns into what our node publishes (endpoints, home region, hard NAT).
//! [`Conn::ping`] sends a disco ping on the current best path and reports the [`Pong`];
//! [`Conn::diagnostics`] says why a path is what it is, [`verdict`] in words. [`recovery`] repairs TCP losses beside smoltcp (SACK/RACK-TLP) and holds its
//! congestion window, which tolerates random loss. It lacks, for now:
//! IPv6 UDP, IPv4 tailnet addresses and ICMP. The agent and the CLI drive it through
//! [`Conn`].

pub mod control;
pub mod core;
pub mod disco;
pub mod netcheck;
pub mod netinfo;
pub mod netstack;
pub mod path;
pub mod pathsel;
pub mod recovery;
pub mod verdict;

mod congestion;
mod conn;
mod error;
mod interfaces;
mod stream;
mod udp;

pub use conn::{
    Auth, Conn, ConnConfig, DIAL_TIMEOUT, Diagnostics, LocalControl, LocalLink, NODE_WAIT,
};
pub use error::TailnetError;
pub use path::{PathCounts, PathInfo, PathKind, PeerStatus, Pong, Traffic};
pub use stream::{TcpListener, TcpStream, UdpSocket};
pub use tether_derp::headers::ServerHeaders;
