//! `tether agent`: joins the tailnet as a workspace's agent and serves what
//! [`Services::standard`] lists (SSH on ports 22 and 1, the web terminal on port 2, the
//! speedtest responder on port 3, the HTTP API on port 4, every other TCP and UDP port
//! forwarded to `127.0.0.1:<port>` in the workspace).
//! The server may be down: the agent retries with backoff forever and logs one line per
//! change of state; only a refused token ends it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tether_agent::http_api::ConnNetcheck;
use tether_agent::metrics::AgentMetrics;
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
    /// The workspace's agent token (printed by `tether create`). Prefer the environment
    /// variable or `--token-file`: a command line is visible to every user in `ps`.
    #[arg(
        long,
        env = "TETHER_AGENT_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the agent token (surrounding whitespace is ignored).
    #[arg(long, env = "TETHER_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDRESS/metrics, and nothing else there; off
    /// unless set. Keep it on a private address (e.g. 127.0.0.1:9101).
    #[arg(long, env = "TETHER_AGENT_PROMETHEUS_ADDRESS")]
    pub prometheus_address: Option<SocketAddr>,
    /// A web terminal session with no browser attached ends after this long (`5m`,
    /// `90s`, `500ms`).
    #[arg(long, env = "TETHER_AGENT_TERMINAL_IDLE_TIMEOUT", default_value = "5m", value_parser = crate::cmd::ping::parse_duration)]
    pub terminal_idle_timeout: Duration,
}

impl AgentArgs {
    /// The token, from `--token`/`TETHER_AGENT_TOKEN` or read from `--token-file`.
    fn token(&self) -> Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let Some(path) = &self.token_file else {
            bail!("the agent needs a token: set TETHER_AGENT_TOKEN or pass --token-file");
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the agent token from {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            bail!("the token file {} is empty", path.display());
        }
        Ok(token.to_string())
    }
}

/// Runs the agent until a fatal error; `headers` (of `--header`) go with every request to
/// the server.
pub async fn run(args: AgentArgs, headers: reqwest::header::HeaderMap) -> Result<()> {
    let token = args.token()?;
    crate::redact::secret(&token);
    // One host key and one set of web terminal sessions for the life of the process,
    // across reconnects.
    let ssh = SshServer::new()?;
    let terminals = ReconnectingPty::new(
        User::current(),
        tether_agent::reconnecting_pty::Config {
            idle_timeout: args.terminal_idle_timeout,
            ..Default::default()
        },
    );
    let metrics = AgentMetrics::new(ssh.clone(), terminals.clone());
    // Bound before joining, so a taken port fails the start; served for the agent's life.
    let _metrics_task = match args.prometheus_address {
        Some(addr) => {
            let listener = AgentMetrics::bind(addr).await.map_err(anyhow::Error::msg)?;
            let bound = listener.local_addr().unwrap_or(addr);
            eprintln!("tether agent: metrics at http://{bound}/metrics");
            Some(AbortOnDrop(tokio::spawn(metrics.clone().serve(listener))))
        }
        None => None,
    };
    let mut backoff =
        Backoff::with_random_seed(Duration::from_millis(500), Duration::from_secs(30));
    let mut last_error = String::new();
    loop {
        let cfg = ConnConfig::new(args.url.clone(), Auth::Agent(token.clone()))
            .with_headers(headers.clone());
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
                metrics.joined(&conn);
                let api = HttpApi::new(ConnNetcheck::new(&conn));
                let served = Services::standard(ssh.clone(), terminals.clone(), api)
                    .serve(conn)
                    .await;
                metrics.left();
                served?;
                // serve only returns if the tailnet closed for good; start over.
                backoff.reset();
            }
            Err(TailnetError::Refused {
                status: status @ (401 | 403),
                body,
                ..
            }) if !from_tether(&body) => {
                bail!(
                    "something in front of the server refused the agent ({status}: {}); if an access proxy needs headers, pass them with --header or --header-command",
                    first_line(&body)
                )
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

/// Aborts the metrics task when the agent ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether an error body has the tether server's JSON shape (else a proxy answered).
pub fn from_tether(body: &str) -> bool {
    serde_json::from_str::<tether_proto::api::ErrorBody>(body).is_ok()
}

/// The first line of a body, at most 200 characters.
pub fn first_line(body: &str) -> String {
    body.trim()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
