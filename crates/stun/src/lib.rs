//! STUN for tether: the RFC 5389 Binding method and nothing else.
//!
//! [`message`] is a sans-IO codec (bytes in, bytes out; no tokio, no clock) for
//! binding requests and responses, byte-compatible with what Tailscale's `net/stun`
//! sends, plus the cheap [`message::is_stun_binding`] check that magicsock uses to
//! demultiplex one UDP socket. [`server`] is a small tokio UDP responder that answers
//! every valid binding request with the source address it saw, and [`client`] sends
//! binding requests from a caller-owned socket so the learned mapping is that socket's.
//!
//! Deliberately absent: TURN, long-term/short-term credentials (MESSAGE-INTEGRITY is
//! skipped, never checked), RFC 5780 NAT behaviour discovery, TCP/TLS transports and
//! ERROR-CODE answers (bad requests are silently dropped, as Tailscale's DERP STUN does).
//!
//! Driven by the `server` crate (built-in STUN next to DERP, with [`server::Server`]'s
//! stats on the health endpoint) and by `tailnet`'s netcheck and magicsock, which call
//! [`client::binding`] or use the codec directly on the WireGuard socket.

pub mod client;
pub mod error;
pub mod message;
pub mod server;

pub use error::StunError;
pub use message::{
    TransactionId, binding_request, binding_response, is_stun_binding, parse_binding_request,
    parse_binding_response,
};
pub use server::{Server, ServerHandle, ServerStats, StatsSnapshot};

/// The IANA-assigned default STUN port (UDP and TCP).
pub const DEFAULT_PORT: u16 = 3478;
