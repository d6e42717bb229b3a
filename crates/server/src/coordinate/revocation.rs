//! Revoking users' client connections: by session (logout), by user (suspended or
//! deleted) and by expiry (checked on the hub's timer, at least once a second). Other
//! connections opened with a session (the web terminal) wait on [`Hub::until_revoked`].
//!
//! Every revocation goes through [`tether_coord::Coordinator::revoke`]: the client is
//! told [`tether_proto::coord::Response::SessionEnded`] and closed (code 1008 with the
//! reason), and its agents are told to end its streams. The store change comes first
//! and the revocation after it, so a connection either is found here or, attaching
//! later, fails [`Hub::recheck`].

use chrono::{DateTime, Utc};
use tether_coord::ConnId;
use tether_store::Store;
use uuid::Uuid;

use super::{Hub, Inner};

/// Why a session ended, as the client is told.
pub const LOGGED_OUT: &str = "logged out";
/// See [`LOGGED_OUT`].
pub const EXPIRED: &str = "session expired";
/// See [`LOGGED_OUT`].
pub const SUSPENDED: &str = "user suspended";
/// See [`LOGGED_OUT`].
pub const DELETED: &str = "user deleted";
/// See [`LOGGED_OUT`]: the session was gone by the time its connection attached.
const GONE: &str = "session no longer valid";

/// The session a user's client connection was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTag {
    /// The user.
    pub user: Uuid,
    /// SHA-256 of the session token.
    pub token_hash: [u8; 32],
    /// When the session expires.
    pub expires_at: DateTime<Utc>,
}

/// A revocation, as told to [`Hub::until_revoked`] waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The session whose token hashes to this ended.
    Session([u8; 32], &'static str),
    /// Every session of this user ended.
    User(Uuid, &'static str),
}

impl Revoked {
    /// Why, if this revocation ends `tag`'s session.
    fn ends(&self, tag: &SessionTag) -> Option<&'static str> {
        match *self {
            Revoked::Session(hash, why) if hash == tag.token_hash => Some(why),
            Revoked::User(user, why) if user == tag.user => Some(why),
            _ => None,
        }
    }
}

/// A client connection's session and the store to check it against once attached.
#[derive(Clone)]
pub struct ClientSession {
    /// The session.
    pub tag: SessionTag,
    /// Where sessions live.
    pub store: Store,
}

impl Hub {
    /// Ends every connection opened with the session whose token hashes to
    /// `token_hash`; how many there were.
    pub fn end_session(&self, token_hash: [u8; 32], reason: &'static str) -> usize {
        let _ = self.revoked.send(Revoked::Session(token_hash, reason));
        self.end_where(|tag| tag.token_hash == token_hash, reason)
    }

    /// Ends every connection of `user`'s sessions; how many there were.
    pub fn end_user(&self, user: Uuid, reason: &'static str) -> usize {
        let _ = self.revoked.send(Revoked::User(user, reason));
        self.end_where(|tag| tag.user == user, reason)
    }

    /// Waits until `session` ends (revoked, expired, or gone already); why. For
    /// connections other than the coordinator's opened with a session.
    pub async fn until_revoked(&self, session: ClientSession) -> &'static str {
        let mut rx = self.revoked.subscribe();
        let tag = session.tag;
        // Subscribed first, so a revocation between the request's authentication and
        // here is caught by this check or heard below.
        if !still_valid(&session).await {
            return GONE;
        }
        let left = (tag.expires_at - Utc::now()).to_std().unwrap_or_default();
        let expiry = tokio::time::sleep(left);
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                () = &mut expiry => return EXPIRED,
                r = rx.recv() => match r {
                    Ok(revoked) => {
                        if let Some(why) = revoked.ends(&tag) {
                            return why;
                        }
                    }
                    // Some were missed: the store says whether one was ours.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if !still_valid(&session).await {
                            return GONE;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                },
            }
        }
    }

    fn end_where(&self, pred: impl Fn(&SessionTag) -> bool, reason: &str) -> usize {
        let mut inner = self.lock();
        let conns: Vec<ConnId> = inner
            .sessions
            .iter()
            .filter(|(_, tag)| pred(tag))
            .map(|(conn, _)| *conn)
            .collect();
        let ended = conns
            .into_iter()
            .filter(|conn| revoke(&mut inner, *conn, reason))
            .count();
        self.flush(&mut inner);
        if ended > 0 {
            tracing::info!(connections = ended, %reason, "coordinator connections revoked");
        }
        ended
    }

    /// Ends `conn` if its session is no longer valid (logged out, expired, its user
    /// suspended or deleted) or cannot be checked.
    pub(super) async fn recheck(&self, conn: ConnId, session: ClientSession) {
        if !still_valid(&session).await {
            let mut inner = self.lock();
            revoke(&mut inner, conn, GONE);
            self.flush(&mut inner);
        }
    }
}

/// Whether `session` still resolves (not logged out, expired, suspended or deleted); a
/// store that cannot answer counts as no.
async fn still_valid(session: &ClientSession) -> bool {
    match session
        .store
        .session(session.tag.token_hash, Utc::now())
        .await
    {
        Ok(found) => found.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "could not recheck a connection's session");
            false
        }
    }
}

/// Ends the connections whose session expired by `now`.
pub(super) fn end_expired(inner: &mut Inner, now: DateTime<Utc>) {
    let expired: Vec<ConnId> = inner
        .sessions
        .iter()
        .filter(|(_, tag)| tag.expires_at <= now)
        .map(|(conn, _)| *conn)
        .collect();
    for conn in expired {
        revoke(inner, conn, EXPIRED);
    }
}

/// Revokes `conn` in the coordinator (the caller flushes); whether it was live.
fn revoke(inner: &mut Inner, conn: ConnId, reason: &str) -> bool {
    inner.sessions.remove(&conn);
    if inner.coord.revoke(conn, reason) {
        inner.revoking.insert(conn);
        true
    } else {
        false
    }
}
