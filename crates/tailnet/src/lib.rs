//! The userspace tailnet: WireGuard over DERP with a smoltcp netstack, no root, no TUN.
//!
//! Layers, bottom up: [`path`] (how a WireGuard datagram reaches a peer: a DERP region
//! today, a direct UDP address once disco exists), [`core`] (the sans-IO node: one
//! gotatun `Tunn` per peer, handshake retries on the time passed in, and the [`netstack`]
//! with TCP/UDP sockets and "accept any port" for both), and [`Conn`], the tokio driver that
//! fetches connection info, holds the coordination WebSocket, keeps DERP connections up
//! and gives applications [`TcpStream`]s, [`TcpListener`]s and [`UdpSocket`]s.
//!
//! Pieces for direct paths exist as sans-IO modules but are not driven yet: [`disco`]
//! (Tailscale's ping/pong/call-me-maybe wire format and demux), [`pathsel`] (per-peer
//! path choice with trust, heartbeats and DERP fallback) and [`netcheck`] (the STUN report
//! and home-region choice, used by `tether netcheck`). It lacks, for now: a UDP socket in
//! the driver (so every packet still goes over DERP), a home region chosen by latency in
//! [`Conn`] (the lowest region id with DERP nodes is used), IPv4 addresses and ICMP. The
//! agent and the CLI drive it through [`Conn`].

pub mod core;
pub mod disco;
pub mod netcheck;
pub mod netstack;
pub mod path;
pub mod pathsel;

mod conn;
mod error;
mod stream;

pub use conn::{Auth, Conn, ConnConfig, DIAL_TIMEOUT};
pub use error::TailnetError;
pub use path::{PathInfo, PathKind};
pub use stream::{TcpListener, TcpStream, UdpSocket};
