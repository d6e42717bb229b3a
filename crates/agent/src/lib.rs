//! `tether-agent`: what `tether agent` serves inside a workspace.
//!
//! - [`services`]: the port → service table on the agent's tailnet address (SSH on 22
//!   and 1, the reconnecting PTY on 2, speedtest on 3, the HTTP API on 4, every other TCP
//!   and UDP port forwarded) and the one accept loop that serves it:
//!   `Services::standard(ssh, terminals, api).serve(conn)`.
//! - [`ssh`]: an SSH server (russh) with shells and commands on PTYs or pipes, `env`,
//!   exit status and signals, window changes, the SFTP subsystem (so `scp`, `sftp` and
//!   VS Code Remote-SSH work), agent forwarding (`-A`), remote (`-R`) and local (`-L`)
//!   port forwarding.
//! - [`reconnecting_pty`]: the web terminal's sessions (Coder's wire format), which
//!   outlive their connections, each with a terminal screen model so that an attaching
//!   connection gets a repaint of exactly what is on screen, and flow control.
//! - [`http_api`]: the agent's HTTP API: listening TCP ports (from `/proc`), netcheck.
//! - [`metrics`]: what `tether agent --prometheus-address` serves at `/metrics`.
//! - [`pty`]: a program on a pseudo-terminal (spawn with a size, output and input
//!   streams, resize, signal, exit status), free of SSH types, for SSH and the web
//!   terminal alike.
//! - [`user`]: the account programs run as, and the command for its login shell or
//!   `$SHELL -c`.
//! - [`signal`]: the signals a client may send, and hanging a program up.
//! - [`forward`]: relays a TCP stream or UDP flow that reached the agent's tailnet address
//!   to `127.0.0.1:<port>` in the workspace.
//! - [`speedtest`]: the responder `tether speedtest` measures throughput against, and
//!   its small wire protocol.
//!
//! Only [`services`] knows the tailnet; every protocol works over any
//! `AsyncRead + AsyncWrite` byte stream ([`ssh::SshServer::serve`], [`speedtest::serve`],
//! [`forward::forward_tcp`], [`ReconnectingPty::serve`], [`HttpApi::serve`]), so tests
//! drive them over loopback or in memory. The agent deliberately lacks user
//! authentication (the tailnet authenticated the peer), privilege switching (programs run
//! as the agent's user) and X11 forwarding.

pub mod forward;
pub mod http_api;
pub mod metrics;
pub mod pty;
pub mod reconnecting_pty;
pub mod services;
pub mod signal;
pub mod speedtest;
pub mod ssh;
pub mod user;

pub use forward::{ForwardError, forward_tcp, forward_udp};
pub use http_api::HttpApi;
pub use reconnecting_pty::ReconnectingPty;
pub use services::{Service, Services};
pub use speedtest::SpeedtestError;
pub use ssh::{SshError, SshServer};
