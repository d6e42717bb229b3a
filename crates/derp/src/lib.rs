//! Tailscale-compatible DERP ("Designated Encrypted Relay for Packets"): the frame
//! codec, the relay server, its HTTP upgrade and WebSocket transports, and a client.
//!
//! `frame` is sans-IO (bytes in, frames out); `server`, `http` and `client` are thin
//! tokio drivers around it. The relay only ever sees WireGuard/disco ciphertext
//! addressed by node key. Deliberately missing for now: meshing several relays
//! (WatchConns/ForwardPacket are refused), Derp-Fast-Start, HTTP CONNECT proxies and
//! per-client rate limits. `tether server` mounts [`http::router`] and drives the
//! [`server::Server`]; the tailnet's magicsock drives [`client`] connections to each
//! region it needs. The DERP map's JSON types are `tether_proto::derpmap`'s.

pub mod client;
pub mod frame;
pub mod headers;
pub mod http;
pub mod server;
mod ws;
