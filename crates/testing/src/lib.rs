//! The one test harness of tether's integration tests and benches. A dev-dependency
//! only (`publish = false`); a test crate adds `tether-testing.workspace = true` under
//! `[dev-dependencies]`.
//!
//! What to reach for:
//!
//! - [`TestServer::start`]: a real control server **in this process** (built from
//!   [`tether_server::Server`], on free loopback ports, its SQLite database in a temp
//!   dir, shut down on drop). The default for every test that needs a server.
//! - [`ServerProcess::start`]: the `tether server` binary as a **separate process**,
//!   ready when its `--ready-file` appears; for tests of the binary itself (banner,
//!   start-up errors, a server in its own mount namespace).
//! - [`Tether`]: the `tether` binary under test (the CLI crate passes it in with
//!   `Tether::at(env!("CARGO_BIN_EXE_tether"))`): [`Tether::run`] a command,
//!   [`Tether::first_user`], [`Tether::create_workspace`], [`Tether::agent`],
//!   [`Tether::wait_connected`], [`Tether::dev_workspace`] (all of these at once).
//! - [`run_with_input`] / [`run_async`]: any subprocess, with a time limit.
//! - [`CoordConn`]: a raw coordinator WebSocket (agent or client side).
//! - [`checksum`]: SHA-256 of files and bytes; [`init_tracing`]: logs in tests.
//! - [`relay`]: a DERP relay alone, and its clients; [`openssh`]: the agent's SSH
//!   server with OpenSSH's clients; [`lab`]: the NAT lab in network namespaces.
//! - [`pair`]: two sans-IO tailnet nodes and the [`pair::Trace`] of a simulation, for
//!   the simulator tests and the dataplane bench; [`attacker`]: raw sockets and
//!   WebSocket frames against a server, for the hardening tests and bench.

// A harness fails by panicking with the step that failed; that is its job.
#![allow(clippy::unwrap_used)]

pub mod attacker;
pub mod checksum;
mod coordinator;
pub mod lab;
mod logs;
pub mod openssh;
pub mod pair;
mod process;
pub mod relay;
mod server;
mod server_process;
mod tether;

pub use coordinator::{ConnectRefused, CoordConn, node_for, welcome};
pub use logs::{init_tracing, init_tracing_with};
pub use process::{Out, free_tcp_port, run_async, run_with_input, wait_ready_file};
pub use server::{TestServer, health};
pub use server_process::ServerProcess;
pub use tether::{AgentProcess, Deployment, Tether, agent_token, session_token};
