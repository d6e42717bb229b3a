//! `tether agent`: joins the tailnet as a workspace's agent and serves what
//! [`Services::standard`] lists (SSH on ports 22 and 1, the web terminal on port 2, the
//! speedtest responder on port 3, the HTTP API on port 4, every other TCP and UDP port
//! forwarded to `127.0.0.1:<port>` in the workspace).
//! The server may be down: the agent retries with backoff forever and logs one line per
//! change of state; only a refused token ends it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tether_agent::http_api::ConnNetcheck;
use tether_agent::user::User;
use tether_agent::{HttpApi, ReconnectingPty, Services, SshServer};
use tether_backoff::Backoff;
use tether_tailnet::{Auth, Conn, ConnConfig, TailnetError};
use url::Url;

/// `tether agent` flags.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The server URL the agent dials (may differ from the access URL).
    #[arg(long, env = "TETHER_AGENT_URL")]
    pub url: Url,
    /// The workspace's agent token (printed by `tether create`).
    #[arg(long, env = "TETHER_AGENT_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// Runs the agent until a fatal error.
pub async fn run(args: AgentArgs) -> Result<()> {
    // One host key and one set of web terminal sessions for the life of the process,
    // across reconnects.
    let ssh = SshServer::new()?;
    let terminals = ReconnectingPty::new(User::current(), Default::default());
    let mut backoff =
        Backoff::with_random_seed(Duration::from_millis(500), Duration::from_secs(30));
    let mut last_error = String::new();
    loop {
        let cfg = ConnConfig::new(args.url.clone(), Auth::Agent(args.token.clone()));
        match Conn::join(cfg).await {
            Ok(conn) => {
                tracing::info!(server = %args.url, agent = %conn.id(), ip = %conn.ip(), "agent connected; serving SSH on ports 22 and 1, the web terminal on 2, speedtest on 3, the HTTP API on 4");
                eprintln!(
                    "tether agent: connected to {} as agent {} ({})",
                    args.url,
                    conn.id(),
                    conn.ip()
                );
                let conn = Arc::new(conn);
                let api = HttpApi::new(ConnNetcheck::new(&conn));
                Services::standard(ssh.clone(), terminals.clone(), api)
                    .serve(conn)
                    .await?;
                // serve only returns if the tailnet closed for good; start over.
                backoff.reset();
            }
            Err(TailnetError::Refused {
                status: 401 | 403, ..
            }) => {
                bail!(
                    "the server refused the agent token; the workspace may have been deleted (create a new one with `tether create`)"
                )
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    eprintln!(
                        "tether agent: cannot join via {}: {msg}; retrying",
                        args.url
                    );
                    last_error = msg;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
