//! The tether control server: the only node with an inbound address. It serves the HTTP
//! API (users, sessions, workspaces), the coordinator's WebSockets, the built-in DERP
//! relay and the built-in STUN server, and health.
//!
//! What it deliberately lacks: no packet-level logic of its own (that is `tether-derp`,
//! `tether-stun` and the sans-IO `tether-coord`), no SQL (that is `tether-store`), and
//! no clap parsing beyond the [`Config`] struct the `tether` binary flattens in. The
//! binary calls [`run`]; tests and embedders use [`Server::build`] and [`Server::serve`].

pub mod allowed_hosts;
pub mod api;
mod banner;
pub mod config;
pub mod coordinate;
pub mod derpmap;
pub mod listen;
pub mod metrics;
pub mod node;
pub mod passwords;
pub mod ready;
pub mod server;
pub mod site;
pub mod state;

pub use config::Config;
pub use server::Server;

/// Why the server could not start: always one sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration or environment problem.
    #[error("{0}")]
    Config(String),
    /// The DERP map could not be built.
    #[error(transparent)]
    DerpMap(#[from] derpmap::DerpMapError),
    /// The database could not be opened.
    #[error("could not open the database: {0}")]
    Store(#[from] tether_store::StoreError),
}

/// Builds the server, prints the banner, writes `--ready-file` if asked, and serves
/// until Ctrl-C / SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    let ready_file = config.ready_file.clone();
    if let Some(path) = &ready_file {
        ready::remove_stale(path).map_err(StartError::Config)?;
    }
    let server = Server::build(config).await?;
    banner::print(&server);
    if let Some(path) = &ready_file {
        ready::write(&ready::of(&server), path).map_err(StartError::Config)?;
    }
    server.serve(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
