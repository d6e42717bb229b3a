//! `tether-agent`: what `tether agent` serves inside a workspace.
//!
//! - [`ssh`]: an SSH server (russh) with shells and commands on PTYs or pipes, `env`,
//!   exit status and signals, window changes, the SFTP subsystem (so `scp`, `sftp` and
//!   VS Code Remote-SSH work), agent forwarding (`-A`), remote (`-R`) and local (`-L`)
//!   port forwarding.
//! - [`forward`]: relays a TCP stream or UDP flow that reached the agent's tailnet address
//!   to `127.0.0.1:<port>` in the workspace.
//! - [`speedtest`]: the responder `tether speedtest` measures throughput against, and
//!   its small wire protocol.
//!
//! Everything here works over any `AsyncRead + AsyncWrite` byte stream and knows nothing
//! of the tailnet: the `tether agent` command (crate `cli`) accepts connections on the
//! tailnet (ports 22 and 1 for SSH, 3 for speedtests, any other port for forwarding) and
//! hands each stream to [`ssh::SshServer::serve`], [`speedtest::serve`] or
//! [`forward::forward_tcp`]. It deliberately lacks user authentication (the tailnet
//! authenticated the peer), privilege switching (programs run as the agent's user), X11
//! forwarding, the reconnecting PTY and the listening-ports API.

pub mod forward;
pub mod speedtest;
pub mod ssh;

pub use forward::{ForwardError, forward_tcp, forward_udp};
pub use speedtest::SpeedtestError;
pub use ssh::{SshError, SshServer};
