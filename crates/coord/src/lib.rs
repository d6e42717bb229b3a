//! Coordination for tether: the coordinator state machine ([`Coordinator`]) that decides
//! who may reach whom and routes node updates between agents and clients. The wire
//! messages it takes and gives are `tether_proto::coord`'s.
//!
//! Deliberately sans-IO: no tokio, no sockets and no clock reads here (clippy's
//! `disallowed-methods` forbids `Instant::now`/`SystemTime::now` in this crate). The
//! tether server drives it: each coordinate WebSocket task locks the shared
//! [`Coordinator`], feeds it requests, liveness and the current time, then drains
//! [`Coordinator::poll_output`] and routes each message to its socket.

pub mod coordinator;
pub mod limits;

pub use coordinator::{AgentStatus, Config, ConnId, CoordError, Coordinator, Output, Role, Stats};
