//! Programs on pseudo-terminals, for whoever needs a terminal: the SSH server's `pty-req`
//! today, the web terminal's reconnecting PTY next.
//!
//! [`spawn`] starts a command on a new terminal of a given size and hands back its parts
//! ([`Pty`]): the child to wait for, the terminal's output and input as byte streams, and a
//! [`PtyControl`] to resize the terminal or signal the program from anywhere. Building the
//! command (program, arguments, environment, working directory) is the caller's:
//! [`crate::user::User::command`] makes the one for the agent's user and login shell.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, Command};

use crate::signal::Signal;

/// A terminal's size in character cells (and pixels, which most programs ignore).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// Width in pixels; 0 when unknown.
    pub px_width: u16,
    /// Height in pixels; 0 when unknown.
    pub px_height: u16,
}

impl WindowSize {
    /// `cols` × `rows` cells, pixel size unknown.
    pub const fn new(cols: u16, rows: u16) -> Self {
        Self {
            cols,
            rows,
            px_width: 0,
            px_height: 0,
        }
    }

    fn to_winsize(self) -> rustix::termios::Winsize {
        rustix::termios::Winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: self.px_width,
            ws_ypixel: self.px_height,
        }
    }
}

impl Default for WindowSize {
    /// 80 × 24, the classic terminal.
    fn default() -> Self {
        Self::new(80, 24)
    }
}

/// A program running on its own pseudo-terminal, in parts that can go to different tasks.
#[derive(Debug)]
pub struct Pty {
    /// The program; [`Child::wait`] gives its exit status. It is killed when dropped.
    pub child: Child,
    /// What the program writes to the terminal.
    pub output: PtyOutput,
    /// What the program reads from the terminal (keystrokes).
    pub input: PtyInput,
    /// Resizes the terminal and signals the program; clone it freely.
    pub control: PtyControl,
}

/// Start `command` on a new pseudo-terminal of `size`, as the leader of a new session
/// with that terminal as its controlling terminal and as its stdin, stdout and stderr.
///
/// The command's program, arguments, environment and working directory are used as
/// given; its stdio settings are replaced by the terminal, and it is made to be killed
/// when [`Pty::child`] is dropped.
///
/// # Errors
/// When no terminal can be allocated or the program cannot be started (not found, not
/// executable, bad working directory).
pub fn spawn(mut command: Command, size: WindowSize) -> io::Result<Pty> {
    command.kill_on_drop(true);
    let (master, pts) = pty_process::open().map_err(pty_error)?;
    rustix::termios::tcsetwinsize(&master, size.to_winsize())?;
    let child = pty_process::Command::from(command)
        .spawn(pts)
        .map_err(pty_error)?;
    let control = PtyControl {
        fd: Arc::new(master.as_fd().try_clone_to_owned()?),
        pid: child.id(),
    };
    let (read, write) = master.into_split();
    Ok(Pty {
        child,
        output: PtyOutput(read),
        input: PtyInput(write),
        control,
    })
}

fn pty_error(e: pty_process::Error) -> io::Error {
    match e {
        pty_process::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// The terminal's output as a byte stream. It ends (reads return 0) once the program
/// and everything else that had the terminal open (background jobs) have closed it.
#[derive(Debug)]
pub struct PtyOutput(pty_process::OwnedReadPty);

impl AsyncRead for PtyOutput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            // Linux reports a terminal nobody holds any more as EIO: that is its end of file.
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

/// The terminal's input as a byte sink. Shutting it down does nothing: a terminal has no
/// half-close (write Ctrl-D, `0x04`, for the program's end of input).
#[derive(Debug)]
pub struct PtyInput(pty_process::OwnedWritePty);

impl AsyncWrite for PtyInput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Resizes a [`Pty`]'s terminal and signals its program. Holding one keeps the terminal
/// itself allocated (not the program running).
#[derive(Debug, Clone)]
pub struct PtyControl {
    fd: Arc<OwnedFd>,
    pid: Option<u32>,
}

impl PtyControl {
    /// The program's process id (`None` if it had already been reaped at spawn).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Set the terminal's size; the kernel sends `SIGWINCH` to its foreground programs.
    ///
    /// # Errors
    /// The OS error of `TIOCSWINSZ`.
    pub fn resize(&self, size: WindowSize) -> io::Result<()> {
        rustix::termios::tcsetwinsize(&*self.fd, size.to_winsize()).map_err(io::Error::from)
    }

    /// The terminal's current size.
    ///
    /// # Errors
    /// The OS error of `TIOCGWINSZ`.
    pub fn size(&self) -> io::Result<WindowSize> {
        let w = rustix::termios::tcgetwinsize(&*self.fd)?;
        Ok(WindowSize {
            cols: w.ws_col,
            rows: w.ws_row,
            px_width: w.ws_xpixel,
            px_height: w.ws_ypixel,
        })
    }

    /// Deliver `signal` to the program.
    ///
    /// # Errors
    /// `NotFound` without a pid; otherwise as [`Signal::send`].
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        let pid = self
            .pid
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "program has no pid"))?;
        signal.send(pid)
    }
}
