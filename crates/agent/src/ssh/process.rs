//! Starting and supervising what a session channel runs: a shell or command (with or
//! without a PTY) or the SFTP subsystem, and reporting how it ended.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use russh::server::{Handle, Msg};
use russh::{ChannelId, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::pipe::ChannelReader;
use super::sftp::FsSftp;
use crate::pty::{self, Pty, PtyControl, WindowSize};
use crate::signal::{self, Signal};
use crate::user::{Program, User};

/// How long a hung-up child may take to exit before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// How long PTY output is still drained after the shell exited (background jobs may
/// hold the terminal open for ever).
const PTY_DRAIN: Duration = Duration::from_secs(2);

/// A `pty-req`.
#[derive(Debug, Clone)]
pub(crate) struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub px_width: u32,
    pub px_height: u32,
}

/// A started channel program; dropping it hangs the program up.
pub(crate) struct Running {
    /// Process id, for `signal` requests.
    pub pid: Option<u32>,
    /// The terminal, for `window-change`.
    pub pty: Option<PtyControl>,
    _stop: oneshot::Sender<()>,
}

/// Where a channel program reports to.
pub(crate) struct ChannelOut {
    pub id: ChannelId,
    pub handle: Handle,
    pub writer: ChannelWriteHalf<Msg>,
}

fn clamp16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// An SSH window size (cells and pixels as `u32`) as a terminal's.
pub(crate) fn window_size(cols: u32, rows: u32, px_width: u32, px_height: u32) -> WindowSize {
    WindowSize {
        cols: clamp16(cols),
        rows: clamp16(rows),
        px_width: clamp16(px_width),
        px_height: clamp16(px_height),
    }
}

/// Start `program` for a session channel.
pub(crate) fn start(
    user: &User,
    program: &Program,
    env: &[(String, String)],
    pty_req: Option<&PtyRequest>,
    agent_sock: Option<&Path>,
    stdin: ChannelReader,
    out: ChannelOut,
) -> io::Result<Running> {
    let mut cmd = user.command(program);
    if let Some(p) = pty_req {
        cmd.env("TERM", &p.term);
    }
    if let Some(sock) = agent_sock {
        cmd.env("SSH_AUTH_SOCK", sock);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    let span = tracing::debug_span!("channel", id = %out.id);
    match pty_req {
        Some(p) => {
            let size = window_size(p.cols, p.rows, p.px_width, p.px_height);
            let Pty {
                child,
                output,
                input,
                control,
            } = pty::spawn(cmd, size)?;
            let pid = control.pid();
            tracing::debug!(?pid, ?program, term = %p.term, "started with pty");
            tokio::spawn(
                supervise(
                    child,
                    stdin,
                    input,
                    vec![(Box::new(output), None)],
                    Some(PTY_DRAIN),
                    out,
                    stop_rx,
                )
                .instrument(span),
            );
            Ok(Running {
                pid,
                pty: Some(control),
                _stop: stop_tx,
            })
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn()?;
            let pid = child.id();
            let (Some(child_in), Some(child_out), Some(child_err)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(io::Error::other("child pipes missing"));
            };
            tracing::debug!(?pid, ?program, "started");
            let outputs: Vec<(Box<dyn AsyncRead + Send + Unpin>, Option<u32>)> =
                vec![(Box::new(child_out), None), (Box::new(child_err), Some(1))];
            tokio::spawn(
                supervise(child, stdin, child_in, outputs, None, out, stop_rx).instrument(span),
            );
            Ok(Running {
                pid,
                pty: None,
                _stop: stop_tx,
            })
        }
    }
}

/// Start the in-process SFTP server on a session channel.
///
/// The server reads the channel and writes to it directly: every request already
/// crosses the SSH session, the tunnel and the filesystem task, and a pipe with a pump
/// task at each end added a copy and two task hops to each (scp in the NAT lab: a few
/// percent faster without).
pub(crate) fn start_sftp(user: &User, stdin: ChannelReader, out: ChannelOut) -> Running {
    let (ended_tx, ended_rx) = oneshot::channel::<()>();
    let sftp = FsSftp::new(user.home.clone(), ended_tx);
    let stream = tokio::io::join(stdin, Box::pin(out.writer.make_writer()));
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let span = tracing::debug_span!("sftp", id = %out.id);
    tokio::spawn(
        async move {
            // Spawns the SFTP server task on the channel and returns at once; the task
            // drops the handler (closing `ended_rx`) when the client's end of file or an
            // error ends it.
            russh_sftp::server::run(stream, sftp).await;
            tracing::debug!("sftp subsystem started");
            tokio::select! {
                _ = ended_rx => report(&out, None, true).await,
                _ = &mut stop_rx => {}
            }
            tracing::debug!("sftp subsystem ended");
        }
        .instrument(span),
    );
    Running {
        pid: None,
        pty: None,
        _stop: stop_tx,
    }
}

async fn pump_stdin<R, W>(mut from: R, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy(&mut from, &mut to).await {
        tracing::debug!(error = %e, "stdin copy ended");
    }
    // EOF from the client: close the program's stdin (a no-op for a PTY master half).
    let _ = to.shutdown().await;
}

async fn copy_out<R, W>(mut from: R, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // A PTY master reports EIO once the terminal is gone: that is its end of file.
    if let Err(e) = tokio::io::copy(&mut from, &mut to).await {
        tracing::trace!(error = %e, "output copy ended");
    }
}

#[allow(clippy::too_many_arguments)]
async fn supervise<W>(
    mut child: Child,
    stdin: ChannelReader,
    child_in: W,
    outputs: Vec<(Box<dyn AsyncRead + Send + Unpin>, Option<u32>)>,
    drain_limit: Option<Duration>,
    out: ChannelOut,
    mut stop: oneshot::Receiver<()>,
) where
    W: AsyncWrite + Send + Unpin + 'static,
{
    let pump_in = tokio::spawn(pump_stdin(stdin, child_in));
    let copies: Vec<_> = outputs
        .into_iter()
        .map(|(r, ext)| tokio::spawn(copy_out(r, out.writer.make_writer_ext(ext))))
        .collect();
    let aborts: Vec<_> = copies
        .iter()
        .map(tokio::task::JoinHandle::abort_handle)
        .collect();
    let status = tokio::select! {
        s = child.wait() => s,
        _ = &mut stop => {
            tracing::debug!("channel closed by client, hanging up");
            signal::hang_up(&mut child, HANGUP_GRACE).await;
            pump_in.abort();
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
            return;
        }
    };
    let drained = async {
        for c in copies {
            let _ = c.await;
        }
    };
    tokio::select! {
        () = async {
            match drain_limit {
                Some(limit) => {
                    if tokio::time::timeout(limit, drained).await.is_err() {
                        tracing::debug!("terminal still held open after exit; not waiting");
                    }
                }
                None => drained.await,
            }
        } => {}
        _ = &mut stop => {
            pump_in.abort();
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
            return;
        }
    }
    pump_in.abort();
    aborts.iter().for_each(tokio::task::AbortHandle::abort);
    match status {
        Ok(st) => {
            tracing::debug!(status = %st, "program exited");
            report(&out, Some(st), true).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "waiting for the program failed");
            report(&out, None, true).await;
        }
    }
}

/// Send EOF, the exit status or signal, and close the channel.
async fn report(out: &ChannelOut, status: Option<ExitStatus>, eof: bool) {
    if eof && out.writer.eof().await.is_err() {
        return;
    }
    match status {
        Some(st) => {
            if let Some(code) = st.code() {
                let _ = out
                    .writer
                    .exit_status(u32::try_from(code).unwrap_or(255))
                    .await;
            } else if let Some(sig) = st.signal() {
                let _ = out
                    .handle
                    .exit_signal_request(
                        out.id,
                        sig_from_number(sig),
                        st.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
        }
        None => {
            let _ = out.writer.exit_status(0).await;
        }
    }
    let _ = out.writer.close().await;
}

fn sig_from_number(n: i32) -> Sig {
    match n {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        libc::SIGUSR2 => Sig::Custom("USR2".into()),
        other => Sig::Custom(format!("SIG{other}")),
    }
}

/// The signal an SSH `signal` request names, if the agent delivers it.
pub(crate) fn signal_from_ssh(sig: &Sig) -> Option<Signal> {
    Some(match sig {
        Sig::ABRT => Signal::Abort,
        Sig::ALRM => Signal::Alarm,
        Sig::FPE => Signal::Fpe,
        Sig::HUP => Signal::Hup,
        Sig::ILL => Signal::Ill,
        Sig::INT => Signal::Int,
        Sig::KILL => Signal::Kill,
        Sig::PIPE => Signal::Pipe,
        Sig::QUIT => Signal::Quit,
        Sig::SEGV => Signal::Segv,
        Sig::TERM => Signal::Term,
        Sig::USR1 => Signal::Usr1,
        Sig::Custom(name) => return Signal::from_name(name),
    })
}
