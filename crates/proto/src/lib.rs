//! Every type that crosses a tether process boundary, in one place: the coordination
//! messages and their version ([`coord`]), tailnet address derivation, the DERP map in
//! Tailscale's JSON format ([`derpmap`]), the HTTP API's request and response bodies,
//! header names and route paths ([`api`]), the web terminal's frames ([`pty`]), and the
//! server's readiness file ([`ready`]).
//! The server, the tailnet library and the CLI all take their wire types from here, so
//! each shape is defined once and a change to it shows up on both sides of the wire.
//!
//! Deliberately lacks tokio, sockets, HTTP clients and servers, and clocks: these are plain
//! serde types, constants and pure functions, cheap to depend on (the coordinator's
//! sans-IO state machine builds on them without pulling in a runtime). How a request is
//! handled, or an error mapped to a status, stays with the crate that does it.

pub mod api;
pub mod coord;
pub mod derpmap;
pub mod pty;
pub mod ready;
