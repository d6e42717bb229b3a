//! Ending a client's access: its session was logged out, expired or revoked, or its
//! user suspended or deleted. Unlike a peer that left, whatever it had open must end,
//! so its agents are told with [`PeerUpdate::revoked`].

use tether_proto::coord::{self as proto, PeerUpdate};
use tracing::info;

use super::{ConnId, Coordinator, Kind};

impl Coordinator {
    /// Ends the access of a user's client connection `conn`: it gets
    /// [`proto::Response::SessionEnded`] with `reason` and is closed; every agent it had
    /// a tunnel to gets DISCONNECTED with `revoked` set, so it ends the client's
    /// streams; its tunnels end. Returns whether `conn` was a live user's client
    /// (agents and the server's own node are not revoked this way).
    pub fn revoke(&mut self, conn: ConnId, reason: &str) -> bool {
        let Some(&id) = self.conns.get(&conn) else {
            return false;
        };
        if !matches!(
            self.peers.get(&id).map(|p| p.kind),
            Some(Kind::Client { .. })
        ) {
            return false;
        }
        info!(peer = %id, conn, %reason, "client's access revoked");
        self.send(
            conn,
            proto::Response::SessionEnded {
                reason: reason.to_owned(),
            },
        );
        self.drop_peer(id, PeerUpdate::revoked(id, reason), Some(reason));
        true
    }
}
