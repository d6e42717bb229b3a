//! The web terminal's reconnecting PTY (tailnet port 2): terminal sessions that outlive
//! their connections, after Coder's.
//!
//! A connection sends an init message naming a session id (see [`wire`]); the first
//! connection with an id starts the session's program (the login shell, or `$SHELL -c`
//! with the init's command) and later ones attach to the same session, several at once:
//! all see the output, all may type and resize. A session ends when its program exits
//! (attached connections get the last output, then end of stream) or when nothing has
//! been attached to it for [`Config::idle_timeout`].
//!
//! Better than Coder's raw replay: each session keeps a [`screen`] model, and an attaching
//! connection first gets a repaint of exactly what is on screen (full-screen programs
//! included), then live output. Output is flow-controlled per session ([`session`]): a
//! slow connection slows the program instead of losing output, and one that takes nothing
//! for [`Config::stall_timeout`] is detached so it cannot freeze the others; memory per
//! session stays bounded.
//!
//! What the dialer sees at the end of the stream: an attach that is refused (malformed
//! init, too many sessions or attachments, the program cannot start) ends before any
//! byte, since a successful one always starts with the repaint (at least `ESC c`); a
//! session that ended sends all its output, then end of stream; a connection detached for
//! stalling or for a malformed input object just ends (the session lives on).
//!
//! [`ReconnectingPty::serve`] works over any byte stream; [`crate::services`] hands it the
//! tailnet's connections to port [`PORT`].

pub mod screen;
mod session;
pub mod wire;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use uuid::Uuid;

use session::{AttachError, Attachment, End, Limits, Session};
pub use session::{READ_CHUNK, SessionStats};
use wire::{Decoder, Init, Message, WireError};

use crate::user::User;

/// The tailnet port the reconnecting PTY is served on.
pub const PORT: u16 = 2;

/// Bytes read from a connection at once.
const CONN_READ: usize = 16 * 1024;

/// The reconnecting PTY's bounds and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// A session with nothing attached ends after this long.
    pub idle_timeout: Duration,
    /// A connection must send its init message within this long.
    pub attach_timeout: Duration,
    /// An attachment whose output queue takes nothing for this long is detached.
    pub stall_timeout: Duration,
    /// Most sessions at once; a new id beyond that is refused.
    pub max_sessions: usize,
    /// Most connections attached to one session at once.
    pub max_attachments: usize,
    /// Output chunks (each at most [`READ_CHUNK`] bytes) queued per attachment.
    pub queue_chunks: usize,
    /// Rows of history each session's model keeps and a repaint sends (also bounded to
    /// [`screen::MAX_HISTORY_BYTES`] of text).
    pub scrollback_rows: usize,
}

impl Default for Config {
    /// Coder's timeouts (5 min idle, 30 s to attach); 5 s stall; 64 sessions of at most
    /// 16 attachments; 16 queued chunks (256 KiB) per attachment; 1000 rows of history
    /// (xterm.js keeps as many).
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5 * 60),
            attach_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(5),
            max_sessions: 64,
            max_attachments: 16,
            queue_chunks: 16,
            scrollback_rows: 1000,
        }
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No init message within [`Config::attach_timeout`].
    #[error("no init message within {0:?}")]
    AttachTimeout(Duration),
    /// The connection closed before its init message was complete.
    #[error("the connection closed before its init message")]
    ClosedBeforeInit,
    /// The dialer sent something malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The session's program could not be started.
    #[error("could not start the session's program: {0}")]
    Spawn(io::Error),
    /// [`Config::max_sessions`] sessions exist already.
    #[error("too many sessions (at most {0})")]
    TooManySessions(usize),
    /// The session has [`Config::max_attachments`] connections already.
    #[error("too many connections to one session (at most {0})")]
    TooManyAttachments(usize),
    /// The connection took no output for [`Config::stall_timeout`].
    #[error("the connection took no output for {0:?}")]
    Stalled(Duration),
    /// Reading from or writing to the connection failed.
    #[error("connection I/O: {0}")]
    Io(#[from] io::Error),
}

/// How a connection ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// The dialer closed the connection (the session lives on).
    ClientClosed,
    /// The session ended (its program exited); the connection got everything first.
    SessionEnded,
}

struct Inner {
    user: User,
    config: Config,
    sessions: Mutex<HashMap<Uuid, Arc<Session>>>,
}

/// The reconnecting PTY service: every session of the agent. Cheap to clone (clones share
/// the sessions); keep one for the agent's life so sessions survive tailnet reconnects.
#[derive(Clone)]
pub struct ReconnectingPty {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReconnectingPty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingPty")
            .field("config", &self.inner.config)
            .field("sessions", &self.sessions().len())
            .finish()
    }
}

impl ReconnectingPty {
    /// Sessions that run programs as `user`, within `config`.
    pub fn new(user: User, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                user,
                config,
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The bounds in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Session>>> {
        lock_map(&self.inner)
    }

    /// The ids of the live sessions.
    pub fn sessions(&self) -> Vec<Uuid> {
        self.map().keys().copied().collect()
    }

    /// A live session's numbers.
    pub fn stats(&self, id: Uuid) -> Option<SessionStats> {
        let session = self.map().get(&id).cloned()?;
        Some(session.stats())
    }

    /// A copy of a live session's screen model (what a repaint would reproduce).
    pub fn screen(&self, id: Uuid) -> Option<vt100::Screen> {
        let session = self.map().get(&id).cloned()?;
        Some(session.screen())
    }

    /// Serve one connection: read its init message, attach it to its session (starting
    /// the session if it is new), then copy input to the session and output (the repaint
    /// first) to the connection until either side ends.
    ///
    /// # Errors
    /// Why the connection was closed early ([`ServeError`]); the session lives on unless
    /// its program exited.
    pub async fn serve<S>(&self, stream: S) -> Result<Detached, ServeError>
    where
        S: AsyncRead + AsyncWrite + Send,
    {
        let cfg = self.inner.config;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; CONN_READ];
        let deadline = Instant::now() + cfg.attach_timeout;
        let init = loop {
            if let Some(Message::Init(init)) = decoder.next_message()? {
                break init;
            }
            let n = tokio::time::timeout_at(deadline, rd.read(&mut buf))
                .await
                .map_err(|_| ServeError::AttachTimeout(cfg.attach_timeout))??;
            if n == 0 {
                return Err(ServeError::ClosedBeforeInit);
            }
            decoder.feed(&buf[..n]);
        };
        let mut attachment = self.attach(&init)?;
        let session = Arc::clone(attachment.session());

        let (output, kicked, queued) = attachment.parts();
        let writer = async {
            while let Some(chunk) = output.recv().await {
                queued.fetch_sub(chunk.len(), Ordering::Relaxed);
                wr.write_all(&chunk).await?;
                if output.is_empty() {
                    wr.flush().await?;
                }
            }
            let _ = wr.shutdown().await;
            Ok::<_, io::Error>(())
        };
        let reader = async {
            loop {
                while let Some(message) = decoder.next_message()? {
                    let Message::Request(request) = message else {
                        continue;
                    };
                    if !request.data.is_empty()
                        && let Err(e) = session.write_input(request.data.as_bytes()).await
                    {
                        // The terminal is gone: the session is ending, and the writer
                        // delivers its last output and closes.
                        tracing::debug!(session = %session.id, error = %e, "input not delivered");
                        std::future::pending::<()>().await;
                    }
                    if let Some(size) = request.size {
                        session.resize(size);
                    }
                }
                let n = rd.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, ServeError>(Detached::ClientClosed);
                }
                decoder.feed(&buf[..n]);
            }
        };
        tokio::pin!(writer, reader);
        let mut watch_kick = true;
        loop {
            tokio::select! {
                r = &mut writer => return r.map(|()| Detached::SessionEnded).map_err(ServeError::Io),
                r = &mut reader => return r,
                k = &mut *kicked, if watch_kick => match k {
                    Ok(()) => return Err(ServeError::Stalled(cfg.stall_timeout)),
                    // The session ended: let the writer finish.
                    Err(_) => watch_kick = false,
                },
            }
        }
    }

    /// Attach to `init`'s session, starting it if it does not exist (or has just ended).
    fn attach(&self, init: &Init) -> Result<Attachment, ServeError> {
        let cfg = self.inner.config;
        let mut map = self.map();
        if let Some(session) = map.get(&init.id) {
            match session.attach(init.size) {
                Ok(a) => return Ok(a),
                Err(AttachError::Full) => {
                    return Err(ServeError::TooManyAttachments(cfg.max_attachments));
                }
                // It ended but has not been forgotten yet: start anew under its id.
                Err(AttachError::Ended) => {
                    map.remove(&init.id);
                }
            }
        }
        if map.len() >= cfg.max_sessions {
            return Err(ServeError::TooManySessions(cfg.max_sessions));
        }
        let limits = Limits {
            idle: cfg.idle_timeout,
            stall: cfg.stall_timeout,
            queue_chunks: cfg.queue_chunks,
            max_attachments: cfg.max_attachments,
            scrollback: cfg.scrollback_rows,
        };
        let registry: Weak<Inner> = Arc::downgrade(&self.inner);
        let (session, attachment) =
            Session::start(init, &self.inner.user, limits, move |s, _: End| {
                if let Some(inner) = registry.upgrade() {
                    forget(&inner, s);
                }
            })
            .map_err(ServeError::Spawn)?;
        map.insert(init.id, session);
        Ok(attachment)
    }
}

fn lock_map(inner: &Inner) -> MutexGuard<'_, HashMap<Uuid, Arc<Session>>> {
    // Every step under this lock is a single map operation: a poisoned lock holds a
    // consistent map.
    inner
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remove `session` from the registry if it is still the one under its id.
fn forget(inner: &Inner, session: &Arc<Session>) {
    let mut map = lock_map(inner);
    if map
        .get(&session.id)
        .is_some_and(|s| Arc::ptr_eq(s, session))
    {
        map.remove(&session.id);
    }
}
