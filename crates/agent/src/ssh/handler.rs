//! The per-connection russh [`Handler`]: authentication, session channels and forwarding.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Auth, ChannelOpenHandle, Handle, Handler, Msg, Response, Session};
use russh::server::{PublicKeyOffer, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, ChannelWriteHalf, Pty, Sig};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::SshError;
use super::pipe::{self, ChannelReader};
use super::process::{self, ChannelOut, PtyRequest, Running};
use crate::user::{Program, User};

/// How long a `direct-tcpip` target may take to accept.
const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// State of one `session` channel.
#[derive(Default)]
struct SessionChannel {
    stdin: Option<ChannelReader>,
    writer: Option<ChannelWriteHalf<Msg>>,
    env: Vec<(String, String)>,
    pty: Option<PtyRequest>,
    agent: bool,
    running: Option<Running>,
    /// Counts the channel as open while it exists.
    _open: Option<super::stats::Open>,
}

/// The forwarded agent socket of a connection (shared by its sessions).
struct AgentSocket {
    path: PathBuf,
    _dir: tempfile::TempDir,
    _accept: AbortOnDrop,
}

/// One SSH connection.
pub(crate) struct ConnHandler {
    user: Arc<User>,
    counters: Arc<super::stats::Counters>,
    sessions: HashMap<ChannelId, SessionChannel>,
    remote_forwards: HashMap<u32, AbortOnDrop>,
    agent: Option<AgentSocket>,
}

impl ConnHandler {
    pub(crate) fn new(user: Arc<User>, counters: Arc<super::stats::Counters>) -> Self {
        Self {
            user,
            counters,
            sessions: HashMap::new(),
            remote_forwards: HashMap::new(),
            agent: None,
        }
    }

    fn agent_socket(&mut self, handle: &Handle) -> std::io::Result<PathBuf> {
        if let Some(a) = &self.agent {
            return Ok(a.path.clone());
        }
        let dir = tempfile::Builder::new()
            .prefix("tether-ssh-agent-")
            .tempdir()?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        let handle = handle.clone();
        let task = tokio::spawn(
            async move {
                loop {
                    let conn = match listener.accept().await {
                        Ok((conn, _)) => conn,
                        Err(e) => {
                            tracing::warn!(error = %e, "agent socket accept failed");
                            return;
                        }
                    };
                    let handle = handle.clone();
                    tokio::spawn(
                        async move {
                            match handle.channel_open_agent().await {
                                Ok(ch) => pipe::bridge(ch, conn, "auth-agent").await,
                                Err(e) => {
                                    tracing::debug!(error = %e, "client refused agent channel");
                                }
                            }
                        }
                        .in_current_span(),
                    );
                }
            }
            .in_current_span(),
        );
        tracing::info!(path = %path.display(), "agent forwarding enabled");
        self.agent = Some(AgentSocket {
            path: path.clone(),
            _dir: dir,
            _accept: AbortOnDrop(task),
        });
        Ok(path)
    }

    /// Start something on a session channel and answer the request.
    fn start(&mut self, id: ChannelId, session: &mut Session, what: Start) -> Result<(), SshError> {
        let handle = session.handle();
        let agent_path = self.agent.as_ref().map(|a| a.path.clone());
        let user = Arc::clone(&self.user);
        let Some(ch) = self.sessions.get_mut(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        let (Some(stdin), Some(writer)) = (ch.stdin.take(), ch.writer.take()) else {
            tracing::debug!("second program requested on one channel; refused");
            session.channel_failure(id)?;
            return Ok(());
        };
        let out = ChannelOut { id, handle, writer };
        let agent = if ch.agent { agent_path } else { None };
        let running = match what {
            Start::Sftp => Ok(process::start_sftp(&user, stdin, out)),
            Start::Program(p) => process::start(
                &user,
                &p,
                &ch.env,
                ch.pty.as_ref(),
                agent.as_deref(),
                stdin,
                out,
            ),
        };
        match running {
            Ok(r) => {
                ch.running = Some(r);
                session.channel_success(id)?;
            }
            Err(e) => {
                tracing::warn!(error = %e, shell = %user.shell.display(), "cannot start program");
                session.channel_failure(id)?;
            }
        }
        Ok(())
    }
}

enum Start {
    Program(Program),
    Sftp,
}

impl Handler for ConnHandler {
    type Error = SshError;

    // The tailnet already authenticated the peer (as in Coder): every method succeeds.
    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        tracing::debug!(user, "auth none accepted");
        Ok(Auth::Accept)
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        tracing::debug!(user, "auth password accepted");
        Ok(Auth::Accept)
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        tracing::debug!(user, "auth publickey accepted");
        Ok(Auth::Accept)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        _response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        tracing::debug!(user, "auth keyboard-interactive accepted");
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let id = channel.id();
        let (read, write) = channel.split();
        self.sessions.insert(
            id,
            SessionChannel {
                stdin: Some(pipe::spawn_reader(read)),
                writer: Some(write),
                _open: Some(self.counters.session()),
                ..SessionChannel::default()
            },
        );
        tracing::debug!(%id, "session channel opened");
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the state hangs up whatever still runs there.
        self.sessions.remove(&channel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.sessions.get_mut(&channel) {
            Some(ch) if ch.running.is_none() => {
                ch.pty = Some(PtyRequest {
                    term: if term.is_empty() {
                        "xterm".into()
                    } else {
                        term.into()
                    },
                    cols: col_width,
                    rows: row_height,
                    px_width: pix_width,
                    px_height: pix_height,
                });
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.sessions.get_mut(&channel) {
            Some(ch) if !variable_name.is_empty() && !variable_name.contains(['=', '\0']) => {
                ch.env.push((variable_name.into(), variable_value.into()));
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, session, Start::Program(Program::Shell))
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = OsStr::from_bytes(data).to_os_string();
        self.start(channel, session, Start::Program(Program::Exec(command)))
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            self.start(channel, session, Start::Sftp)
        } else {
            tracing::debug!(name, "unknown subsystem");
            session.channel_failure(channel)?;
            Ok(())
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ch) = self.sessions.get_mut(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        if let Some(pty) = ch.running.as_ref().and_then(|r| r.pty.as_ref()) {
            let size = process::window_size(col_width, row_height, pix_width, pix_height);
            match pty.resize(size) {
                Ok(()) => session.channel_success(channel)?,
                Err(e) => {
                    tracing::debug!(error = %e, "resize failed");
                    session.channel_failure(channel)?;
                }
            }
        } else if let Some(p) = ch.pty.as_mut() {
            (p.cols, p.rows, p.px_width, p.px_height) =
                (col_width, row_height, pix_width, pix_height);
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(pid) = self
            .sessions
            .get(&channel)
            .and_then(|c| c.running.as_ref())
            .and_then(|r| r.pid)
        {
            let delivered = match process::signal_from_ssh(&signal) {
                Some(sig) => sig.send(pid),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("unsupported signal {signal:?}"),
                )),
            };
            match delivered {
                Ok(()) => tracing::debug!(pid, ?signal, "signal delivered"),
                Err(e) => tracing::debug!(pid, ?signal, error = %e, "signal not delivered"),
            }
        }
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if !self.sessions.contains_key(&channel) {
            return Ok(false);
        }
        match self.agent_socket(&session.handle()) {
            Ok(_) => {
                if let Some(ch) = self.sessions.get_mut(&channel) {
                    ch.agent = true;
                }
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create agent socket");
                Ok(false)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let host = host_to_connect.to_string();
        let Ok(port) = u16::try_from(port_to_connect) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        tracing::debug!(%host, port, originator_address, originator_port, "direct-tcpip");
        // Connect off the session loop, then accept or refuse the channel.
        tokio::spawn(
            async move {
                let connect = TcpStream::connect((host.as_str(), port));
                match tokio::time::timeout(DIRECT_CONNECT_TIMEOUT, connect).await {
                    Ok(Ok(tcp)) => {
                        let _ = tcp.set_nodelay(true);
                        reply.accept().await;
                        pipe::bridge(channel, tcp, "direct-tcpip").await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%host, port, error = %e, "direct-tcpip connect failed");
                        reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    }
                    Err(_) => {
                        tracing::debug!(%host, port, "direct-tcpip connect timed out");
                        reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    }
                }
            }
            .in_current_span(),
        );
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(requested) = u16::try_from(*port) else {
            return Ok(false);
        };
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, requested)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::info!(port = requested, error = %e, "remote forward refused");
                return Ok(false);
            }
        };
        let bound = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(_) => return Ok(false),
        };
        *port = u32::from(bound);
        let handle = session.handle();
        let address = address.to_string();
        tracing::info!(%address, port = bound, "remote forward listening on 127.0.0.1");
        let task = tokio::spawn(
            async move {
                loop {
                    let (tcp, peer): (TcpStream, SocketAddr) = match listener.accept().await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "remote forward accept failed");
                            return;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let handle = handle.clone();
                    let address = address.clone();
                    tokio::spawn(
                        async move {
                            let open = handle.channel_open_forwarded_tcpip(
                                address,
                                u32::from(bound),
                                peer.ip().to_string(),
                                u32::from(peer.port()),
                            );
                            match open.await {
                                Ok(ch) => pipe::bridge(ch, tcp, "forwarded-tcpip").await,
                                Err(e) => {
                                    tracing::debug!(error = %e, "client refused forwarded-tcpip")
                                }
                            }
                        }
                        .in_current_span(),
                    );
                }
            }
            .in_current_span(),
        );
        self.remote_forwards
            .insert(u32::from(bound), AbortOnDrop(task));
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let found = self.remote_forwards.remove(&port).is_some();
        tracing::info!(address, port, found, "remote forward cancelled");
        Ok(found)
    }
}
