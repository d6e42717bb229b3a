//! One session: a program on a terminal, its screen model, and the connections attached
//! to it.
//!
//! One task per session reads the terminal's output, feeds the [`Screen`] model and hands
//! each chunk to every attachment's bounded queue. A full queue makes the reader wait
//! (so a slow client slows the program, as a slow terminal would) and nothing is dropped;
//! an attachment whose queue takes nothing for [`Limits::stall`] is detached instead,
//! so one stalled client does not freeze the others for ever (it may reattach and gets a
//! repaint, so what it shows is never silently wrong). Attaching takes the repaint and
//! joins the fan-out under the same lock as feeding the model, so every attachment sees
//! the repaint and then exactly the output after it.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use super::screen::{Screen, clamp_size};
use super::wire::Init;
use crate::pty::{self, PtyControl, PtyInput, PtyOutput, WindowSize};
use crate::signal;
use crate::user::{Program, User};

/// Largest chunk of output read from the terminal at once (and so queued as one item).
pub const READ_CHUNK: usize = 16 * 1024;

/// After the program exited, the session ends once the terminal has had nothing to read
/// this long (background jobs may keep it open), or this much later at the latest.
const EXIT_DRAIN: Duration = Duration::from_millis(500);
/// See [`EXIT_DRAIN`].
const EXIT_DRAIN_CAP: Duration = Duration::from_secs(5);

/// How long a program has to exit after `SIGHUP` when its session expires.
const HANG_UP_GRACE: Duration = Duration::from_secs(2);

/// The per-session bounds, from [`super::Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub idle: Duration,
    pub stall: Duration,
    pub queue_chunks: usize,
    pub max_attachments: usize,
    pub scrollback: usize,
}

/// When a session with nothing attached expires (sans-IO: time is passed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Idle {
    since: Option<Instant>,
}

impl Idle {
    /// Nothing attached since `now`.
    pub fn new(now: Instant) -> Self {
        Self { since: Some(now) }
    }

    /// Something attached.
    pub fn attached(&mut self) {
        self.since = None;
    }

    /// Something detached at `now`, leaving `remaining` attachments.
    pub fn detached(&mut self, now: Instant, remaining: usize) {
        if remaining == 0 && self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// When the session expires after `timeout` unattached; `None` while attached.
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.since.map(|s| s + timeout)
    }
}

/// Why attaching failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachError {
    /// The session has ended (its program exited or it expired).
    Ended,
    /// The session has its most attachments.
    Full,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Its program exited (or closed the terminal).
    Exited,
    /// Nothing was attached for the idle timeout.
    Expired,
}

/// What a session's numbers are now; see [`super::ReconnectingPty::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Connections attached now.
    pub attachments: usize,
    /// Output bytes queued for attachments now (all of them together).
    pub queued_bytes: usize,
    /// The most bytes ever queued for one attachment (its repaint included).
    pub peak_queued_bytes: usize,
    /// The program's process id.
    pub pid: Option<u32>,
    /// The terminal's size.
    pub size: WindowSize,
}

/// An attachment's place in the fan-out.
struct Slot {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    kick: Option<oneshot::Sender<()>>,
}

struct State {
    screen: Screen,
    slots: Vec<Slot>,
    idle: Idle,
    ended: bool,
    next_slot: u64,
}

/// A running session (see the [module docs](self)).
pub(crate) struct Session {
    pub id: Uuid,
    limits: Limits,
    state: Mutex<State>,
    input: tokio::sync::Mutex<PtyInput>,
    control: PtyControl,
    /// Wakes the session task when attachments change (the idle deadline moves).
    changed: Notify,
    peak_queued: AtomicUsize,
}

/// One connection's attachment: its output queue (the repaint first) and the signal that
/// it was detached for stalling. Dropping it detaches.
pub(crate) struct Attachment {
    session: Arc<Session>,
    slot: u64,
    /// Output for this connection, in order; closed when the session ends.
    output: mpsc::Receiver<Bytes>,
    /// Resolves with `Ok` when the session detached this attachment for stalling, with
    /// `Err` when the session ended.
    kicked: oneshot::Receiver<()>,
    queued: Arc<AtomicUsize>,
}

impl Attachment {
    /// The session this is attached to.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The output queue, the stall signal, and the count of queued bytes (to lower by
    /// what is taken from the queue), borrowed together.
    pub fn parts(
        &mut self,
    ) -> (
        &mut mpsc::Receiver<Bytes>,
        &mut oneshot::Receiver<()>,
        &AtomicUsize,
    ) {
        (&mut self.output, &mut self.kicked, &self.queued)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.session.remove_slot(self.slot);
    }
}

impl Session {
    /// Start `init`'s program for `user` on a terminal of its size (80 × 24 without one),
    /// `TERM=xterm-256color`, attach the first connection, then start the task that runs
    /// the session (so not a byte of output misses that connection); `on_end` is called
    /// once when the session ends.
    pub fn start(
        init: &Init,
        user: &User,
        limits: Limits,
        on_end: impl FnOnce(&Arc<Session>, End) + Send + 'static,
    ) -> io::Result<(Arc<Session>, Attachment)> {
        let program = if init.command.is_empty() {
            Program::Shell
        } else {
            Program::Exec(init.command.clone().into())
        };
        let mut cmd = user.command(&program);
        cmd.env("TERM", "xterm-256color");
        let size = clamp_size(init.size.unwrap_or_default());
        let pty = pty::spawn(cmd, size)?;
        let session = Arc::new(Session {
            id: init.id,
            limits,
            state: Mutex::new(State {
                screen: Screen::new(size, limits.scrollback),
                slots: Vec::new(),
                idle: Idle::new(Instant::now()),
                ended: false,
                next_slot: 0,
            }),
            input: tokio::sync::Mutex::new(pty.input),
            control: pty.control,
            changed: Notify::new(),
            peak_queued: AtomicUsize::new(0),
        });
        tracing::info!(
            session = %init.id,
            pid = session.control.pid(),
            command = %init.command,
            cols = size.cols,
            rows = size.rows,
            "reconnecting PTY session started"
        );
        let first = session
            .attach(None)
            .map_err(|_| io::Error::other("a new session refused its first attachment"))?;
        let task = Arc::clone(&session);
        tokio::spawn(async move {
            let end = task.run(pty.output, pty.child).await;
            on_end(&task, end);
        });
        Ok((session, first))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every await-free step, so a poisoned lock (a
        // panic elsewhere) leaves nothing half-done: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attach a connection of `size` (resizing the terminal to it): its queue starts with
    /// the repaint of the screen as it is now.
    pub fn attach(self: &Arc<Self>, size: Option<WindowSize>) -> Result<Attachment, AttachError> {
        let mut st = self.lock();
        if st.ended {
            return Err(AttachError::Ended);
        }
        if st.slots.len() >= self.limits.max_attachments {
            return Err(AttachError::Full);
        }
        if let Some(size) = size {
            self.resize_locked(&mut st, size);
        }
        let repaint = Bytes::from(st.screen.repaint(self.limits.scrollback));
        let (tx, output) = mpsc::channel(self.limits.queue_chunks.max(1));
        let queued = Arc::new(AtomicUsize::new(repaint.len()));
        self.peak_queued.fetch_max(repaint.len(), Ordering::Relaxed);
        // A new channel has room for one item.
        let _ = tx.try_send(repaint);
        let (kick, kicked) = oneshot::channel();
        let slot = st.next_slot;
        st.next_slot += 1;
        st.slots.push(Slot {
            id: slot,
            tx,
            queued: Arc::clone(&queued),
            kick: Some(kick),
        });
        st.idle.attached();
        let attachments = st.slots.len();
        drop(st);
        self.changed.notify_one();
        tracing::debug!(session = %self.id, slot, attachments, "attached");
        Ok(Attachment {
            session: Arc::clone(self),
            slot,
            output,
            kicked,
            queued,
        })
    }

    fn remove_slot(&self, slot: u64) -> Option<Slot> {
        let mut st = self.lock();
        let at = st.slots.iter().position(|s| s.id == slot)?;
        let removed = st.slots.remove(at);
        let remaining = st.slots.len();
        st.idle.detached(Instant::now(), remaining);
        drop(st);
        self.changed.notify_one();
        tracing::debug!(session = %self.id, slot, remaining, "detached");
        Some(removed)
    }

    /// Resize the terminal (and the model) to `size`, clamped; a no-op at the same size.
    pub fn resize(&self, size: WindowSize) {
        let mut st = self.lock();
        self.resize_locked(&mut st, size);
    }

    fn resize_locked(&self, st: &mut State, size: WindowSize) {
        let size = clamp_size(size);
        if st.screen.size() == size {
            return;
        }
        if let Err(e) = self.control.resize(size) {
            tracing::debug!(session = %self.id, error = %e, "terminal resize failed");
        }
        st.screen.resize(size);
    }

    /// Type `data` into the program.
    ///
    /// # Errors
    /// When the terminal is gone.
    pub async fn write_input(&self, data: &[u8]) -> io::Result<()> {
        let mut input = self.input.lock().await;
        input.write_all(data).await?;
        input.flush().await
    }

    /// A copy of the screen model.
    pub fn screen(&self) -> vt100::Screen {
        self.lock().screen.screen().clone()
    }

    /// The session's numbers now.
    pub fn stats(&self) -> SessionStats {
        let st = self.lock();
        SessionStats {
            attachments: st.slots.len(),
            queued_bytes: st
                .slots
                .iter()
                .map(|s| s.queued.load(Ordering::Relaxed))
                .sum(),
            peak_queued_bytes: self.peak_queued.load(Ordering::Relaxed),
            pid: self.control.pid(),
            size: st.screen.size(),
        }
    }

    /// The session task: read output until the program is gone or the session expires.
    async fn run(&self, mut output: PtyOutput, mut child: Child) -> End {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut exited_at: Option<Instant> = None;
        let end = loop {
            let idle = self.lock().idle.deadline(self.limits.idle);
            let quiet = exited_at.map(|t| t + EXIT_DRAIN);
            let cap = exited_at.map(|t| t + EXIT_DRAIN_CAP);
            // Biased: expiry first (a program that never stops writing cannot keep an
            // unattached session alive), then output before the end-of-exit timer, so
            // that timer fires only once the terminal has nothing more to read.
            tokio::select! {
                biased;
                () = sleep_until(idle) => break End::Expired,
                () = sleep_until(cap) => break End::Exited,
                r = output.read(&mut buf) => match r {
                    Ok(0) => break End::Exited,
                    Ok(n) => self.distribute(Bytes::copy_from_slice(&buf[..n])).await,
                    Err(e) => {
                        tracing::debug!(session = %self.id, error = %e, "terminal read failed");
                        break End::Exited;
                    }
                },
                status = child.wait(), if exited_at.is_none() => {
                    tracing::debug!(session = %self.id, ?status, "program exited");
                    exited_at = Some(Instant::now());
                }
                () = sleep_until(quiet) => break End::Exited,
                () = self.changed.notified() => {}
            }
        };
        let slots = {
            let mut st = self.lock();
            st.ended = true;
            std::mem::take(&mut st.slots)
        };
        // Dropping the senders closes each queue after what it holds: attached
        // connections get the last output, then end of stream.
        drop(slots);
        tracing::info!(session = %self.id, reason = ?end, "reconnecting PTY session ended");
        if end == End::Expired {
            signal::hang_up(&mut child, HANG_UP_GRACE).await;
        }
        end
    }

    /// Feed `chunk` to the model and queue it for every attachment, waiting while a queue
    /// is full; detach an attachment whose queue takes nothing for [`Limits::stall`].
    async fn distribute(&self, chunk: Bytes) {
        let targets: Vec<(u64, mpsc::Sender<Bytes>, Arc<AtomicUsize>)> = {
            let mut st = self.lock();
            st.screen.feed(&chunk);
            st.slots
                .iter()
                .map(|s| (s.id, s.tx.clone(), Arc::clone(&s.queued)))
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let len = chunk.len();
        let stall = self.limits.stall;
        let sends = targets.into_iter().map(|(slot, tx, queued)| {
            let chunk = chunk.clone();
            async move {
                // Counted from the moment it waits for room: it is held for this
                // attachment either way.
                let now = queued.fetch_add(len, Ordering::Relaxed) + len;
                self.peak_queued.fetch_max(now, Ordering::Relaxed);
                match tx.send_timeout(chunk, stall).await {
                    Ok(()) => None,
                    Err(SendTimeoutError::Timeout(_)) => {
                        queued.fetch_sub(len, Ordering::Relaxed);
                        Some(slot)
                    }
                    Err(SendTimeoutError::Closed(_)) => {
                        queued.fetch_sub(len, Ordering::Relaxed);
                        None
                    }
                }
            }
        });
        for slot in join_all(sends).await.into_iter().flatten() {
            if let Some(mut s) = self.remove_slot(slot) {
                tracing::info!(
                    session = %self.id,
                    slot,
                    stall_secs = stall.as_secs_f64(),
                    "attachment detached: its output queue made no progress"
                );
                if let Some(kick) = s.kick.take() {
                    let _ = kick.send(());
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_follows_attachments() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(300);
        let mut idle = Idle::new(t0);
        assert_eq!(idle.deadline(timeout), Some(t0 + timeout));
        idle.attached();
        assert_eq!(idle.deadline(timeout), None);
        // One of two detaches: still attached.
        idle.detached(t0 + Duration::from_secs(10), 1);
        assert_eq!(idle.deadline(timeout), None);
        let t1 = t0 + Duration::from_secs(20);
        idle.detached(t1, 0);
        assert_eq!(idle.deadline(timeout), Some(t1 + timeout));
        // A later detach (a stalled one removed twice) does not move the deadline.
        idle.detached(t1 + Duration::from_secs(5), 0);
        assert_eq!(idle.deadline(timeout), Some(t1 + timeout));
        idle.attached();
        let t2 = t1 + Duration::from_secs(299);
        idle.detached(t2, 0);
        assert_eq!(idle.deadline(timeout), Some(t2 + timeout));
    }
}
