//! Starting and supervising what a session channel runs: a shell or command (with or
//! without a PTY) or the SFTP subsystem, and reporting how it ended.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use russh::server::{Handle, Msg};
use russh::{ChannelId, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::pipe::ChannelReader;
use super::sftp::FsSftp;

/// How long a hung-up child may take to exit before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// How long PTY output is still drained after the shell exited (background jobs may
/// hold the terminal open for ever).
const PTY_DRAIN: Duration = Duration::from_secs(2);

/// The account the agent runs as.
#[derive(Debug, Clone)]
pub(crate) struct UserInfo {
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl UserInfo {
    /// The agent's own user: `$SHELL`, else the login shell from `/etc/passwd`, else `/bin/sh`.
    pub(crate) fn current() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let entry = passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 7 && f.get(2)?.parse::<u32>().ok()? == uid)
                .then(|| (f[0].to_string(), f[5].to_string(), f[6].to_string()))
        });
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let name = entry
            .as_ref()
            .map(|e| e.0.clone())
            .or_else(|| env("USER"))
            .unwrap_or_else(|| uid.to_string());
        let home = entry
            .as_ref()
            .map(|e| e.1.clone())
            .filter(|h| !h.is_empty() && Path::new(h).is_dir())
            .or_else(|| env("HOME"))
            .unwrap_or_else(|| "/".to_string());
        let shell = env("SHELL")
            .or_else(|| {
                entry
                    .as_ref()
                    .map(|e| e.2.clone())
                    .filter(|s| !s.is_empty())
            })
            .filter(|s| Path::new(s).exists())
            .unwrap_or_else(|| "/bin/sh".to_string());
        Self {
            name,
            home: PathBuf::from(home),
            shell: PathBuf::from(shell),
        }
    }
}

/// A `pty-req`.
#[derive(Debug, Clone)]
pub(crate) struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub px_width: u32,
    pub px_height: u32,
}

/// What to run.
#[derive(Debug)]
pub(crate) enum Program {
    /// An interactive login shell.
    Shell,
    /// `$SHELL -c <command>`.
    Exec(OsString),
}

/// A started channel program; dropping it hangs the program up.
pub(crate) struct Running {
    /// Process id, for `signal` requests.
    pub pid: Option<u32>,
    /// A handle on the PTY master, for `window-change`.
    pub pty: Option<OwnedFd>,
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

/// Apply a window size to a PTY master.
pub(crate) fn resize(pty: &OwnedFd, cols: u32, rows: u32, px_w: u32, px_h: u32) -> io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: clamp16(rows),
        ws_col: clamp16(cols),
        ws_xpixel: clamp16(px_w),
        ws_ypixel: clamp16(px_h),
    };
    rustix::termios::tcsetwinsize(pty, size).map_err(io::Error::from)
}

fn build_command(
    user: &UserInfo,
    program: &Program,
    env: &[(String, String)],
    pty: Option<&PtyRequest>,
    agent_sock: Option<&Path>,
) -> Command {
    let mut cmd = Command::new(&user.shell);
    match program {
        Program::Shell => {
            let base = user
                .shell
                .file_name()
                .map_or_else(|| "sh".into(), |b| b.to_string_lossy().into_owned());
            cmd.arg0(format!("-{base}"));
        }
        Program::Exec(command) => {
            cmd.arg("-c").arg(command);
        }
    }
    cmd.env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .env("HOME", &user.home)
        .env("SHELL", &user.shell);
    if user.home.is_dir() {
        cmd.current_dir(&user.home);
    }
    if let Some(p) = pty {
        cmd.env("TERM", &p.term);
    }
    if let Some(sock) = agent_sock {
        cmd.env("SSH_AUTH_SOCK", sock);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Start `program` for a session channel.
pub(crate) fn start(
    user: &UserInfo,
    program: &Program,
    env: &[(String, String)],
    pty: Option<&PtyRequest>,
    agent_sock: Option<&Path>,
    stdin: ChannelReader,
    out: ChannelOut,
) -> io::Result<Running> {
    let mut cmd = build_command(user, program, env, pty, agent_sock);
    let (stop_tx, stop_rx) = oneshot::channel();
    let span = tracing::debug_span!("channel", id = %out.id);
    match pty {
        Some(p) => {
            let (master, pts) = pty_process::open().map_err(pty_err)?;
            master
                .resize(pty_process::Size::new_with_pixel(
                    clamp16(p.rows),
                    clamp16(p.cols),
                    clamp16(p.px_width),
                    clamp16(p.px_height),
                ))
                .map_err(pty_err)?;
            let child = pty_process::Command::from(cmd)
                .spawn(pts)
                .map_err(pty_err)?;
            let pid = child.id();
            let resize_fd = master.as_fd().try_clone_to_owned()?;
            let (read, write) = master.into_split();
            tracing::debug!(?pid, ?program, term = %p.term, "started with pty");
            tokio::spawn(
                supervise(
                    child,
                    stdin,
                    write,
                    vec![(Box::new(read), None)],
                    Some(PTY_DRAIN),
                    out,
                    stop_rx,
                )
                .instrument(span),
            );
            Ok(Running {
                pid,
                pty: Some(resize_fd),
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

fn pty_err(e: pty_process::Error) -> io::Error {
    match e {
        pty_process::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Start the in-process SFTP server on a session channel.
///
/// The server reads the channel and writes to it directly: every request already
/// crosses the SSH session, the tunnel and the filesystem task, and a pipe with a pump
/// task at each end added a copy and two task hops to each (scp in the NAT lab: a few
/// percent faster without).
pub(crate) fn start_sftp(user: &UserInfo, stdin: ChannelReader, out: ChannelOut) -> Running {
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
            hang_up(&mut child).await;
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

async fn hang_up(child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::HUP);
    }
    if tokio::time::timeout(HANGUP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
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

/// Deliver a `signal` request to a process.
pub(crate) fn send_signal(pid: u32, sig: &Sig) -> io::Result<()> {
    use rustix::process::Signal;
    let signal = match sig {
        Sig::ABRT => Signal::ABORT,
        Sig::ALRM => Signal::ALARM,
        Sig::FPE => Signal::FPE,
        Sig::HUP => Signal::HUP,
        Sig::ILL => Signal::ILL,
        Sig::INT => Signal::INT,
        Sig::KILL => Signal::KILL,
        Sig::PIPE => Signal::PIPE,
        Sig::QUIT => Signal::QUIT,
        Sig::SEGV => Signal::SEGV,
        Sig::TERM => Signal::TERM,
        Sig::USR1 => Signal::USR1,
        Sig::Custom(name) => match name.trim_start_matches("SIG") {
            "USR2" => Signal::USR2,
            "CONT" => Signal::CONT,
            "STOP" => Signal::STOP,
            "TSTP" => Signal::TSTP,
            "WINCH" => Signal::WINCH,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unsupported signal {name}"),
                ));
            }
        },
    };
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad pid"))?;
    rustix::process::kill_process(pid, signal).map_err(io::Error::from)
}
