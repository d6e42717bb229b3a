//! The SSH client side of `tether ssh`: one session over any byte stream (the tailnet
//! TCP connection to the agent's port 22), either a command or an interactive shell on a
//! PTY with the local terminal in raw mode and window resizes forwarded.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::sshforward::{Allowed, RemoteForward};

/// What to run.
pub struct SessionOpts {
    /// A command, or None for a login shell.
    pub command: Option<String>,
    /// Environment variables to send.
    pub env: Vec<(String, String)>,
    /// Request a PTY (default: when stdin is a terminal).
    pub tty: bool,
    /// Remote login name (the agent runs everything as its own user anyway).
    pub user: String,
    /// `-A`: the local agent socket to forward (`SSH_AUTH_SOCK`).
    pub forward_agent: Option<std::path::PathBuf>,
    /// `-R` forwards, requested before the session starts.
    pub remote_forwards: Vec<RemoteForward>,
}

/// Trusts the agent's host key (see below) and serves the channels it opens back for
/// `-A` and `-R`, refusing others.
struct Client {
    allowed: Allowed,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        self.allowed
            .forwarded_tcpip(channel.into_stream(), connected_port, reply);
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        self.allowed.agent(channel.into_stream(), reply);
        Ok(())
    }

    // The tailnet already authenticated the agent end to end (WireGuard keys from the
    // coordinator), so the SSH host key adds nothing; Coder skips the check too.
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Restores the terminal mode on drop, even on error paths.
struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    fn enable() -> Self {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(orig) = &saved {
            let mut raw = orig.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        }
        Self { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                orig,
            );
        }
    }
}

fn window_size() -> (u32, u32) {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(ws) if ws.ws_col > 0 && ws.ws_row > 0 => (u32::from(ws.ws_col), u32::from(ws.ws_row)),
        _ => (80, 24),
    }
}

/// Runs one session over `stream`; returns the remote exit status (128+n for a signal).
pub async fn run<S>(stream: S, opts: SessionOpts) -> Result<i32>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = Arc::new(russh::client::Config {
        // Large windows: russh's defaults cap throughput on fast paths.
        window_size: 64 * 1024 * 1024,
        maximum_packet_size: 65535,
        channel_buffer_size: 1024,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    });
    let allowed = Allowed {
        agent: opts.forward_agent.clone(),
        ..Allowed::default()
    };
    let client = Client {
        allowed: allowed.clone(),
    };
    let mut handle = russh::client::connect_stream(config, stream, client)
        .await
        .context("SSH handshake with the agent failed")?;
    let auth = handle
        .authenticate_none(opts.user.clone())
        .await
        .context("SSH authentication failed")?;
    if !auth.success() {
        return Err(anyhow!("the agent's SSH server refused the session"));
    }
    // Every forward is in place before the command starts, so it can use them at once.
    for f in &opts.remote_forwards {
        let port = handle
            .tcpip_forward(f.bind.clone(), u32::from(f.port))
            .await
            .map_err(|e| match e {
                russh::Error::RequestDenied => anyhow!(
                    "the agent refused the remote forward of port {} (is it in use in the workspace?)",
                    f.port
                ),
                e => anyhow!("could not set up the remote forward of port {}: {e}", f.port),
            })?;
        // The agent reports the port it chose for 0; else the one asked for.
        let port = if f.port == 0 { port } else { u32::from(f.port) };
        if f.port == 0 {
            eprintln!(
                "Allocated port {port} for remote forward to {}:{}",
                f.host, f.host_port
            );
        }
        allowed
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((port, f.clone()));
    }
    let channel = handle
        .channel_open_session()
        .await
        .context("could not open an SSH session")?;
    if opts.forward_agent.is_some() {
        channel.agent_forward(false).await?;
    }
    for (k, v) in &opts.env {
        channel.set_env(false, k.clone(), v.clone()).await?;
    }
    let _raw = if opts.tty {
        let (cols, rows) = window_size();
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        channel
            .request_pty(false, &term, cols, rows, 0, 0, &[])
            .await?;
        std::io::stdin().is_terminal().then(RawMode::enable)
    } else {
        None
    };
    match &opts.command {
        Some(cmd) => channel.exec(true, cmd.as_bytes()).await?,
        None => channel.request_shell(true).await?,
    }

    let (mut reader, writer) = channel.split();
    // stdin → channel; EOF on stdin sends EOF to the remote side.
    let writer = Arc::new(writer);
    let w = writer.clone();
    let stdin_task = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = w.eof().await;
                    break;
                }
                Ok(n) => {
                    if w.data_bytes(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    #[cfg(unix)]
    let mut winch =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut status: Option<i32> = None;
    loop {
        #[cfg(unix)]
        let resized = async {
            match winch.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let resized = std::future::pending::<Option<()>>();
        tokio::select! {
            msg = reader.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(i32::try_from(exit_status).unwrap_or(255)),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => status = Some(128 + signal_number(&signal_name)),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            Some(()) = resized => {
                let (cols, rows) = window_size();
                let _ = writer.window_change(cols, rows, 0, 0).await;
            }
        }
    }
    stdin_task.abort();
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    // The session task writes the disconnect and drops the stream (its FIN); the caller
    // leaves the tailnet only after that.
    let _ = tokio::time::timeout(Duration::from_secs(1), handle).await;
    status.ok_or_else(|| anyhow!("the SSH session ended without an exit status (connection lost?)"))
}

fn signal_number(sig: &russh::Sig) -> i32 {
    match sig {
        russh::Sig::HUP => 1,
        russh::Sig::INT => 2,
        russh::Sig::QUIT => 3,
        russh::Sig::ILL => 4,
        russh::Sig::ABRT => 6,
        russh::Sig::FPE => 8,
        russh::Sig::KILL => 9,
        russh::Sig::USR1 => 10,
        russh::Sig::SEGV => 11,
        russh::Sig::PIPE => 13,
        russh::Sig::ALRM => 14,
        russh::Sig::TERM => 15,
        russh::Sig::Custom(_) => 0,
    }
}
