//! `tether agent`: joins the tailnet as a workspace's agent and serves SSH on ports 22
//! and 1 and every other TCP port by forwarding to `127.0.0.1:<port>` in the workspace.
//! The server may be down: the agent retries with backoff forever and logs one line per
//! change of state; only a refused token ends it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tether_agent::SshServer;
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

/// SSH ports: 22, and 1 as Coder's agent also serves.
const SSH_PORTS: [u16; 2] = [22, 1];

/// Runs the agent until a fatal error.
pub async fn run(args: AgentArgs) -> Result<()> {
    let ssh = Arc::new(SshServer::new()?);
    let mut backoff = Duration::from_millis(500);
    let mut last_error = String::new();
    loop {
        let cfg = ConnConfig::new(args.url.clone(), Auth::Agent(args.token.clone()));
        match Conn::join(cfg).await {
            Ok(conn) => {
                tracing::info!(server = %args.url, agent = %conn.id(), ip = %conn.ip(), "agent connected; serving SSH on ports 22 and 1");
                eprintln!(
                    "tether agent: connected to {} as agent {} ({})",
                    args.url,
                    conn.id(),
                    conn.ip()
                );
                serve(conn, ssh.clone()).await?;
                // serve only returns if the tailnet closed for good; start over.
                backoff = Duration::from_millis(500);
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
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn serve(conn: Conn, ssh: Arc<SshServer>) -> Result<()> {
    let conn = Arc::new(conn);
    let mut tasks = tokio::task::JoinSet::new();
    for port in SSH_PORTS {
        let listener = conn.listen_tcp(port).await?;
        let ssh = ssh.clone();
        tasks.spawn(async move {
            loop {
                let (stream, from) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => return e,
                };
                let ssh = ssh.clone();
                tokio::spawn(async move {
                    if let Err(e) = ssh.serve(stream).await {
                        tracing::debug!(%from, error = %e, "ssh connection ended with an error");
                    }
                });
            }
        });
    }
    let any = conn.clone();
    tasks.spawn(async move {
        loop {
            let (stream, port) = match any.accept_any_tcp().await {
                Ok(x) => x,
                Err(e) => return e,
            };
            tokio::spawn(async move {
                if let Err(e) = tether_agent::forward_tcp(stream, port).await {
                    tracing::info!(port, error = %e, "port forward failed");
                }
            });
        }
    });
    // Every task runs until the tailnet itself is closed.
    if let Some(Ok(e)) = tasks.join_next().await {
        tracing::warn!(error = %e, "tailnet listener ended");
    }
    tasks.abort_all();
    Ok(())
}
