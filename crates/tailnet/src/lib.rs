//! The userspace tailnet: WireGuard over DERP with a smoltcp netstack, no root, no TUN.
//!
//! Layers, bottom up: [`path`] (how a WireGuard datagram reaches a peer: a DERP region
//! today, a direct UDP address once disco exists), [`core`] (the sans-IO node: one
//! gotatun `Tunn` per peer, handshake retries on the time passed in, and the [`netstack`]
//! with TCP/UDP sockets and "accept any port" for both), and [`Conn`], the tokio driver that
//! fetches connection info, holds the coordination WebSocket, keeps DERP connections up
//! and gives applications [`TcpStream`]s, [`TcpListener`]s and [`UdpSocket`]s.
//!
//! It lacks, for now: direct UDP paths (disco, STUN-based netcheck, call-me-maybe), a
//! home region chosen by latency (the lowest region id with DERP nodes is used), IPv4
//! addresses and ICMP. The agent and the CLI drive it through [`Conn`].

pub mod core;
pub mod netstack;
pub mod path;

mod conn;
mod error;
mod stream;

pub use conn::{Auth, Conn, ConnConfig, DIAL_TIMEOUT};
pub use error::TailnetError;
pub use path::{PathInfo, PathKind};
pub use stream::{TcpListener, TcpStream, UdpSocket};
