//! How many SSH connections and session channels the server has served and holds now,
//! for the agent's metrics: relaxed atomics, moved once per connection or channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counts of an [`SshServer`](super::SshServer) at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SshStats {
    /// Connections served since the start.
    pub connections_total: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Session channels (a shell, a command, a subsystem such as sftp) opened since the start.
    pub sessions_total: u64,
    /// Session channels open now.
    pub sessions_open: u64,
}

/// The shared counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    sessions_total: AtomicU64,
    sessions_open: AtomicU64,
}

/// Holds one open connection or session in the counts until dropped.
#[derive(Debug)]
pub(crate) struct Open {
    counters: Arc<Counters>,
    session: bool,
}

impl Drop for Open {
    fn drop(&mut self) {
        let open = if self.session {
            &self.counters.sessions_open
        } else {
            &self.counters.connections_open
        };
        open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counters {
    fn open(self: &Arc<Self>, session: bool) -> Open {
        let (total, open) = if session {
            (&self.sessions_total, &self.sessions_open)
        } else {
            (&self.connections_total, &self.connections_open)
        };
        total.fetch_add(1, Ordering::Relaxed);
        open.fetch_add(1, Ordering::Relaxed);
        Open {
            counters: Arc::clone(self),
            session,
        }
    }

    /// A connection starts.
    pub(crate) fn connection(self: &Arc<Self>) -> Open {
        self.open(false)
    }

    /// A session channel opens.
    pub(crate) fn session(self: &Arc<Self>) -> Open {
        self.open(true)
    }

    /// The counts now.
    pub(crate) fn read(&self) -> SshStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SshStats {
            connections_total: get(&self.connections_total),
            connections_open: get(&self.connections_open),
            sessions_total: get(&self.sessions_total),
            sessions_open: get(&self.sessions_open),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_counts_follow_the_guards() {
        let c = Arc::new(Counters::default());
        let conn = c.connection();
        let s1 = c.session();
        let s2 = c.session();
        let want = SshStats {
            connections_total: 1,
            connections_open: 1,
            sessions_total: 2,
            sessions_open: 2,
        };
        assert_eq!(c.read(), want);
        drop(s1);
        drop(conn);
        let want = SshStats {
            connections_open: 0,
            sessions_open: 1,
            ..want
        };
        assert_eq!(c.read(), want);
        drop(s2);
        assert_eq!(c.read().sessions_open, 0);
    }
}
