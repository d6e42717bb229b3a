//! `tether agent`: joins the tailnet as a workspace's agent and serves SSH on ports 22
//! and 1, the speedtest responder on port 3, and every other TCP port by forwarding to
//! `127.0.0.1:<port>` in the workspace.
//! The server may be down: the agent retries with backoff forever and logs one line per
//! change of state; only a refused token ends it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tether_agent::{SshServer, speedtest};
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

/// SSH ports: 22, and 1 as Coder's agent also serves.
const SSH_PORTS: [u16; 2] = [22, 1];

/// Runs the agent until a fatal error.
pub async fn run(args: AgentArgs) -> Result<()> {
    let ssh = Arc::new(SshServer::new()?);
    let mut backoff =
        Backoff::with_random_seed(Duration::from_millis(500), Duration::from_secs(30));
    let mut last_error = String::new();
    loop {
        let cfg = ConnConfig::new(args.url.clone(), Auth::Agent(args.token.clone()));
        match Conn::join(cfg).await {
            Ok(conn) => {
                tracing::info!(server = %args.url, agent = %conn.id(), ip = %conn.ip(), "agent connected; serving SSH on ports 22 and 1, speedtest on port 3");
                eprintln!(
                    "tether agent: connected to {} as agent {} ({})",
                    args.url,
                    conn.id(),
                    conn.ip()
                );
                serve(conn, ssh.clone()).await?;
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
    // Its own listener, so port 3 never reaches the accept-any forwarder below.
    let speedtests = conn.listen_tcp(speedtest::PORT).await?;
    tasks.spawn(async move {
        loop {
            let (stream, from) = match speedtests.accept().await {
                Ok(x) => x,
                Err(e) => return e,
            };
            tokio::spawn(async move {
                match speedtest::serve(stream).await {
                    Ok(done) => tracing::info!(
                        %from,
                        direction = done.header.direction.as_str(),
                        seconds = done.header.duration.as_secs_f64(),
                        bytes = done.bytes,
                        "speedtest done"
                    ),
                    Err(e) => tracing::info!(%from, error = %e, "speedtest ended early"),
                }
            });
        }
    });
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
    let any_udp = conn.clone();
    tasks.spawn(async move {
        loop {
            let (socket, port) = match any_udp.accept_any_udp().await {
                Ok(x) => x,
                Err(e) => return e,
            };
            tokio::spawn(relay_udp_port(Arc::new(socket), port));
        }
    });
    // Every task runs until the tailnet itself is closed.
    if let Some(Ok(e)) = tasks.join_next().await {
        tracing::warn!(error = %e, "tailnet listener ended");
    }
    tasks.abort_all();
    Ok(())
}

/// Relays one tailnet UDP port: each tailnet source gets its own flow to
/// `127.0.0.1:<port>` in the workspace, so replies go back to the right peer.
async fn relay_udp_port(socket: Arc<tether_tailnet::UdpSocket>, port: u16) {
    use std::collections::HashMap;
    use tokio::sync::mpsc;

    let mut flows: HashMap<std::net::SocketAddrV6, mpsc::Sender<bytes::Bytes>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, src)) = socket.recv_from(&mut buf).await else {
            return;
        };
        flows.retain(|_, tx| !tx.is_closed());
        let tx = flows.entry(src).or_insert_with(|| {
            let (in_tx, in_rx) = mpsc::channel(256);
            let (out_tx, mut out_rx) = mpsc::channel::<bytes::Bytes>(256);
            let pipe = tether_agent::forward::ChannelDatagrams {
                incoming: in_rx,
                outgoing: out_tx,
            };
            tokio::spawn(async move {
                if let Err(e) = tether_agent::forward_udp(pipe, port, Duration::from_secs(60)).await
                {
                    tracing::info!(port, error = %e, "UDP forward failed");
                }
            });
            let replies = socket.clone();
            tokio::spawn(async move {
                while let Some(d) = out_rx.recv().await {
                    if replies.send_to(&d, src).await.is_err() {
                        break;
                    }
                }
            });
            in_tx
        });
        // A full flow queue drops the datagram, as a congested link would.
        let _ = tx.try_send(bytes::Bytes::copy_from_slice(&buf[..n]));
    }
}
