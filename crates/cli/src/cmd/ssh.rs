//! `tether ssh WS [-- CMD…]` and `tether ssh --stdio WS` (for OpenSSH's ProxyCommand):
//! find the workspace, join the tailnet, open a tunnel to its agent, then either run an
//! SSH session or copy the raw SSH byte stream. Every wait is bounded and explained.

use std::io::IsTerminal;
use std::net::Ipv6Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tether_proto::api::{AgentStatus, BROWSER_ONLY_MESSAGE, ErrorBody, Workspace, route};
use tether_tailnet::{Auth, Conn, ConnConfig, NODE_WAIT, TailnetError, TcpStream};

use crate::Globals;
use crate::cmd::workspaces::ago;
use crate::sshforward::RemoteForward;

/// `tether ssh` flags.
#[derive(Debug, clap::Args)]
pub struct SshArgs {
    /// Workspace name (a `--ssh-host-prefix` in front is stripped).
    pub workspace: String,
    /// Command to run instead of a login shell.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Copy the raw SSH stream on stdin/stdout (for ProxyCommand).
    #[arg(long)]
    pub stdio: bool,
    /// Host name prefix to strip from the workspace name.
    #[arg(long, env = "TETHER_SSH_HOST_PREFIX", default_value = "tether.")]
    pub ssh_host_prefix: String,
    /// Environment variables to set remotely (`KEY=VALUE`, repeatable).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Force a PTY even for a command (`-t`), like `ssh -t`.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Forward the local SSH agent (`SSH_AUTH_SOCK`) into the session, like `ssh -A`.
    #[arg(short = 'A', long, conflicts_with = "stdio")]
    pub forward_agent: bool,
    /// Remote forward, like `ssh -R`: the workspace's `[bind:]port` to `host:hostport` as
    /// seen from here (repeatable; port 0 lets the agent choose).
    #[arg(short = 'R', long = "remote-forward", value_name = "[BIND:]PORT:HOST:HOSTPORT", value_parser = RemoteForward::parse, conflicts_with = "stdio")]
    pub remote_forwards: Vec<RemoteForward>,
}

/// A live tunnel to a workspace's agent.
pub struct Tunnel {
    /// The tailnet connection (closed with a Disconnect on drop of the process).
    pub conn: Conn,
    /// The workspace.
    pub workspace: Workspace,
    /// The agent's tailnet address.
    pub agent_ip: Ipv6Addr,
}

/// Looks the workspace up, joins the tailnet and opens a tunnel to its agent.
pub async fn open_tunnel(g: &Globals, name: &str) -> Result<Tunnel> {
    let api = g.client()?;
    let workspace: Workspace = api.get(&route::workspace(name)?).await?;
    if workspace.status != AgentStatus::Connected {
        bail!(
            "workspace {name}'s agent is not connected; last seen {} (start it with `tether agent` inside the workspace)",
            ago(workspace.last_seen_at, chrono::Utc::now())
        );
    }
    let conn = join(g, &api).await?;
    let agent_ip = conn.tunnel_to(workspace.agent_id).await.with_context(|| {
        format!(
            "workspace {name}'s agent did not answer within {}s",
            NODE_WAIT.as_secs()
        )
    })?;
    Ok(Tunnel {
        conn,
        workspace,
        agent_ip,
    })
}

/// Joins the tailnet as the logged-in user. A refusal that is final (a browser-only
/// deployment's 409) is the server's one sentence, at once.
pub async fn join(g: &Globals, api: &crate::client::ApiClient) -> Result<Conn> {
    let token = api.token().map(str::to_string).unwrap_or_default();
    let mut cfg =
        ConnConfig::new(api.base.clone(), Auth::Session(token)).with_headers(g.headers.clone());
    cfg.disable_direct = g.disable_direct;
    match Conn::join(cfg).await {
        Ok(conn) => Ok(conn),
        Err(TailnetError::Refused {
            status: 409, body, ..
        }) => {
            let message = serde_json::from_str::<ErrorBody>(&body)
                .map(|b| b.message)
                .unwrap_or_else(|_| BROWSER_ONLY_MESSAGE.to_string());
            bail!("{message}")
        }
        Err(e) => Err(e).context("could not join the tailnet"),
    }
}

impl Tunnel {
    /// Waits up to `limit` for the WireGuard session with the agent; false if none came
    /// (Coder waits for "reachable" likewise).
    pub async fn wait_session(&self, limit: Duration) -> bool {
        self.conn.wait_session(self.workspace.agent_id, limit).await
    }

    /// Runs `work` until it ends or the server ends this session (logged out, expired,
    /// revoked, the user suspended or deleted), which is an error naming the reason.
    pub async fn until_ended<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let r = tokio::select! {
            r = work => r,
            reason = self.conn.wait_session_ended() => {
                bail!("the server ended this session: {reason}")
            }
        };
        // The streams end when the session does (the reason is recorded before they
        // see it): say why rather than how.
        match (r, self.conn.session_ended()) {
            (Err(_), Some(reason)) => bail!("the server ended this session: {reason}"),
            (r, _) => r,
        }
    }

    /// Dials a TCP port of the agent.
    pub async fn dial(&self, port: u16) -> Result<TcpStream> {
        let agent = self.workspace.agent_id;
        self.conn.dial_agent(agent, port).await.with_context(|| {
            format!(
                "could not reach port {port} of workspace {}",
                self.workspace.name
            )
        })
    }
}

/// Copy buffer of `--stdio`, each way.
const STDIO_BUFFER: usize = 256 * 1024;

/// Stdin and stdout for `--stdio`: as non-blocking pipes when they are pipes (as under
/// OpenSSH's ProxyCommand), read and written by the runtime directly; else tokio's
/// stdin/stdout, which go through a blocking thread per call (a few hundred Mbit/s).
fn stdio_pipes() -> (
    Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map(std::fs::File::from);
    let stdin: Box<dyn tokio::io::AsyncRead + Unpin + Send> =
        match dup(std::io::stdin().as_fd()).and_then(pipe::Receiver::from_file) {
            Ok(p) => Box::new(p),
            Err(_) => Box::new(tokio::io::stdin()),
        };
    let stdout: Box<dyn tokio::io::AsyncWrite + Unpin + Send> =
        match dup(std::io::stdout().as_fd()).and_then(pipe::Sender::from_file) {
            Ok(p) => Box::new(p),
            Err(_) => Box::new(tokio::io::stdout()),
        };
    (stdin, stdout)
}

/// Runs `tether ssh`; returns the exit status to exit with.
pub async fn run(g: &Globals, args: SshArgs) -> Result<i32> {
    let name = args
        .workspace
        .strip_prefix(&args.ssh_host_prefix)
        .unwrap_or(&args.workspace)
        .to_string();
    let forward_agent = match (args.forward_agent, std::env::var_os("SSH_AUTH_SOCK")) {
        (false, _) => None,
        (true, Some(sock)) if !sock.is_empty() => Some(sock.into()),
        (true, _) => bail!("-A needs a local SSH agent, but SSH_AUTH_SOCK is not set"),
    };
    let tunnel = open_tunnel(g, &name).await?;
    let stream = tunnel.dial(22).await?;
    let session = async {
        Ok(if args.stdio {
            let (rd, mut wr) = tokio::io::split(stream);
            let (stdin, mut stdout) = stdio_pipes();
            let mut stdin = tokio::io::BufReader::with_capacity(STDIO_BUFFER, stdin);
            let mut rd = tokio::io::BufReader::with_capacity(STDIO_BUFFER, rd);
            let up = async {
                let _ = tokio::io::copy_buf(&mut stdin, &mut wr).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
            };
            let down = async {
                let r = tokio::io::copy_buf(&mut rd, &mut stdout).await;
                let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
                r
            };
            // The session is over when the agent's side closes; stdin may end first.
            tokio::pin!(up, down);
            let mut up_done = false;
            loop {
                tokio::select! {
                    () = &mut up, if !up_done => up_done = true,
                    r = &mut down => {
                        r.context("the SSH stream broke")?;
                        break;
                    }
                }
            }
            0
        } else {
            let env = args
                .env
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => Ok((k.to_string(), v.to_string())),
                    None => bail!("--env {kv:?} is not KEY=VALUE"),
                })
                .collect::<Result<Vec<_>>>()?;
            let command = remote_command(&args.command);
            let tty = args.tty || (command.is_none() && std::io::stdin().is_terminal());
            let user = std::env::var("USER").unwrap_or_else(|_| "tether".into());
            crate::sshclient::run(
                stream,
                crate::sshclient::SessionOpts {
                    command,
                    env,
                    tty,
                    user,
                    forward_agent,
                    remote_forwards: args.remote_forwards,
                },
            )
            .await?
        })
    };
    let code = tunnel.until_ended(session).await?;
    tunnel.conn.close().await;
    Ok(code)
}

/// The remote command line. One argument is passed as written (so `'echo $HOME'` expands
/// remotely); several are shell-quoted so `-- sh -c 'exit 3'` means what it says.
pub fn remote_command(args: &[String]) -> Option<String> {
    match args {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(
            many.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

fn shell_quote(a: &str) -> String {
    let safe = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::remote_command;

    #[test]
    fn quoting() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(remote_command(&v(&[])), None);
        assert_eq!(
            remote_command(&v(&["echo $HOME"])).as_deref(),
            Some("echo $HOME")
        );
        assert_eq!(
            remote_command(&v(&["sh", "-c", "exit 3"])).as_deref(),
            Some("sh -c 'exit 3'")
        );
        assert_eq!(
            remote_command(&v(&["echo", "it's"])).as_deref(),
            Some("echo 'it'\\''s'")
        );
    }
}
