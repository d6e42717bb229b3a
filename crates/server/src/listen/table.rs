//! The connection table: how many connections the server holds, and which one goes when
//! there is no room. A connection starts on probation; it becomes established once it is
//! upgraded (a coordinator or DERP WebSocket, a DERP upgrade) or authenticated. Probation
//! connections may fill the table only up to its cap less a reserve, so clients that
//! are already in keep their room; when a new connection finds no room, the oldest
//! probation connection with no request under way is closed for it, so sockets that
//! idle or trickle cannot lock everyone else out. With no such connection to close, the
//! new one is refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// What one connection shares with the table and its requests.
#[derive(Debug)]
struct ConnState {
    id: u64,
    in_flight: AtomicUsize,
    /// Asked to leave probation (so later requests skip the lock).
    establishing: AtomicBool,
    /// Counted among the established (changed only under the table's lock).
    established: AtomicBool,
    evict: CancellationToken,
}

#[derive(Debug, Default)]
struct Inner {
    probation: BTreeMap<u64, Arc<ConnState>>,
    established: usize,
    next: u64,
    refused: u64,
    evicted: u64,
}

/// The server's connection table (one for all listeners: they share the descriptors).
#[derive(Debug)]
pub struct ConnTable {
    cap: usize,
    probation_cap: usize,
    inner: Mutex<Inner>,
}

/// Counts of a [`ConnTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Connections on probation.
    pub probation: usize,
    /// Established connections.
    pub established: usize,
    /// New connections refused for want of room.
    pub refused: u64,
    /// Probation connections closed to make room.
    pub evicted: u64,
}

impl ConnTable {
    /// A table of `cap` connections, `reserve` of them for established ones only.
    pub fn new(cap: usize, reserve: usize) -> Arc<Self> {
        let cap = cap.max(2);
        Arc::new(Self {
            cap,
            probation_cap: cap.saturating_sub(reserve).max(1),
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cap and the part of it open to probation connections.
    pub fn caps(&self) -> (usize, usize) {
        (self.cap, self.probation_cap)
    }

    /// Current counts.
    pub fn stats(&self) -> TableStats {
        let inner = self.lock();
        TableStats {
            probation: inner.probation.len(),
            established: inner.established,
            refused: inner.refused,
            evicted: inner.evicted,
        }
    }

    /// Connections open now (probation and established; not those closed to make room,
    /// which are on their way out).
    pub fn open(&self) -> usize {
        let inner = self.lock();
        inner.probation.len() + inner.established
    }

    /// Takes a place for a new connection, closing the oldest idle probation connection
    /// if there is no room; `None` when there is none to close either.
    pub fn admit(self: &Arc<Self>) -> Option<ConnSlot> {
        let mut inner = self.lock();
        let full = inner.probation.len() >= self.probation_cap
            || inner.probation.len() + inner.established >= self.cap;
        if full && !evict_oldest_idle(&mut inner) {
            inner.refused += 1;
            return None;
        }
        let id = inner.next;
        inner.next += 1;
        let state = Arc::new(ConnState {
            id,
            in_flight: AtomicUsize::new(0),
            establishing: AtomicBool::new(false),
            established: AtomicBool::new(false),
            evict: CancellationToken::new(),
        });
        inner.probation.insert(id, state.clone());
        Some(ConnSlot {
            table: self.clone(),
            state,
        })
    }

    /// Closes the oldest idle probation connection, if any (to free a descriptor when
    /// accepting failed for want of one).
    pub fn evict_one(&self) -> bool {
        evict_oldest_idle(&mut self.lock())
    }

    fn establish(&self, state: &ConnState) {
        if state.establishing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut inner = self.lock();
        // A connection already closed to make room stays out of the count.
        if inner.probation.remove(&state.id).is_some() {
            inner.established += 1;
            state.established.store(true, Ordering::Release);
        }
    }

    fn release(&self, state: &ConnState) {
        let mut inner = self.lock();
        if inner.probation.remove(&state.id).is_none() && state.established.load(Ordering::Acquire)
        {
            inner.established = inner.established.saturating_sub(1);
        }
    }
}

fn evict_oldest_idle(inner: &mut Inner) -> bool {
    let victim = inner
        .probation
        .values()
        .find(|c| c.in_flight.load(Ordering::Acquire) == 0)
        .cloned();
    let Some(victim) = victim else {
        return false;
    };
    inner.probation.remove(&victim.id);
    inner.evicted += 1;
    victim.evict.cancel();
    true
}

/// A connection's place in the table, given back when dropped. It lives in the
/// connection's I/O object, so it is held as long as the socket is, also after an upgrade
/// hands the socket to another task.
#[derive(Debug)]
pub struct ConnSlot {
    table: Arc<ConnTable>,
    state: Arc<ConnState>,
}

impl ConnSlot {
    /// Cancelled when the table closes this connection to make room.
    pub fn evicted(&self) -> CancellationToken {
        self.state.evict.clone()
    }

    /// A handle for the connection's requests.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            table: Arc::downgrade(&self.table),
            state: self.state.clone(),
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.table.release(&self.state);
    }
}

/// What a request knows of its connection (a request extension): it can establish it
/// and mark a request under way.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    table: std::sync::Weak<ConnTable>,
    state: Arc<ConnState>,
}

impl ConnHandle {
    /// The connection is upgraded or authenticated: it leaves probation.
    pub fn establish(&self) {
        if let Some(table) = self.table.upgrade() {
            table.establish(&self.state);
        }
    }

    /// Marks a request under way until the guard is dropped; such a connection is not
    /// closed to make room.
    pub fn busy(&self) -> Busy {
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.state.clone())
    }
}

/// A request under way (see [`ConnHandle::busy`]).
#[derive(Debug)]
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probation_is_capped_below_the_reserve_and_the_oldest_idle_goes() {
        let t = ConnTable::new(10, 4);
        let slots: Vec<ConnSlot> = (0..6).map(|_| t.admit().expect("room")).collect();
        assert_eq!(t.stats().probation, 6);
        // The seventh makes the oldest go.
        let seventh = t.admit().expect("made room");
        assert!(slots[0].evicted().is_cancelled());
        assert!(!slots[1].evicted().is_cancelled());
        assert_eq!(t.stats().probation, 6);
        assert_eq!(t.stats().evicted, 1);
        drop(seventh);
        assert_eq!(t.stats().probation, 5);
    }

    #[test]
    fn a_connection_with_a_request_under_way_is_not_closed() {
        let t = ConnTable::new(3, 1);
        let a = t.admit().expect("a");
        let b = t.admit().expect("b");
        let _a_busy = a.handle().busy();
        let c = t.admit().expect("b makes room");
        assert!(!a.evicted().is_cancelled());
        assert!(b.evicted().is_cancelled());
        let c_busy = c.handle().busy();
        assert!(t.admit().is_none(), "no idle connection to close");
        assert!(!a.evicted().is_cancelled() && !c.evicted().is_cancelled());
        drop(c_busy);
        assert!(t.admit().is_some());
        assert!(c.evicted().is_cancelled());
    }

    #[test]
    fn an_evicted_connection_that_authenticates_is_not_counted() {
        let t = ConnTable::new(2, 1);
        let a = t.admit().expect("a");
        let _b = t.admit().expect("a makes room");
        assert!(a.evicted().is_cancelled());
        a.handle().establish();
        drop(a);
        assert_eq!(t.stats().established, 0);
        assert_eq!(t.stats().probation, 1);
    }

    #[test]
    fn established_connections_use_the_reserve_and_are_never_closed() {
        let t = ConnTable::new(4, 2);
        let est: Vec<ConnSlot> = (0..3)
            .map(|_| {
                let s = t.admit().expect("room");
                s.handle().establish();
                s
            })
            .collect();
        assert_eq!(t.stats().established, 3);
        let p = t.admit().expect("the last place");
        // Full: a new one closes the probation connection, never an established one.
        let _q = t.admit().expect("p goes");
        assert!(p.evicted().is_cancelled());
        assert!(est.iter().all(|s| !s.evicted().is_cancelled()));
        // With only established and busy ones, a new one is refused.
        let _busy = _q.handle().busy();
        assert!(t.admit().is_none());
        assert_eq!(t.stats().refused, 1);
        drop(est);
        assert_eq!(t.stats().established, 0);
        assert!(t.admit().is_some());
    }

    #[test]
    fn establishing_twice_or_after_release_counts_once() {
        let t = ConnTable::new(4, 1);
        let s = t.admit().expect("room");
        let h = s.handle();
        h.establish();
        h.establish();
        assert_eq!(t.stats().established, 1);
        drop(s);
        h.establish();
        assert_eq!(
            t.stats(),
            TableStats {
                probation: 0,
                established: 0,
                refused: 0,
                evicted: 0
            }
        );
    }
}
