//! Tunnels: a client adds one to an agent it may reach, removes it, and asks for the
//! WireGuard handshake over it; the two maps (client → agents, agent → clients) mirror
//! each other.

use tether_proto::coord::PeerUpdate;
use tracing::{debug, info};
use uuid::Uuid;

use super::{ConnId, Coordinator, REASON_TUNNEL_REMOVED, no_such_agent};

impl Coordinator {
    pub(super) fn add_tunnel(&mut self, conn: ConnId, client: Uuid, agent: Uuid) {
        let Some(kind) = self
            .peers
            .get(&client)
            .map(|p| p.kind)
            .filter(|k| k.is_client())
        else {
            self.send_error(conn, "only clients may add tunnels".to_owned());
            return;
        };
        if !kind.may_reach(self.owners.get(&agent).copied()) {
            debug!(%client, ?kind, %agent, "refusing tunnel to an agent the peer may not reach");
            self.send_error(conn, no_such_agent(agent));
            return;
        }
        if !self.client_tunnels.entry(client).or_default().insert(agent) {
            return;
        }
        self.agent_tunnels.entry(agent).or_default().insert(client);
        info!(%client, %agent, "tunnel added");
        if let Some(node) = self.peers.get(&agent).and_then(|p| p.node.clone()) {
            self.send_updates(client, vec![PeerUpdate::node(node)]);
        }
        if let Some(node) = self.peers.get(&client).and_then(|p| p.node.clone()) {
            self.send_updates(agent, vec![PeerUpdate::node(node)]);
        }
    }

    pub(super) fn remove_tunnel(&mut self, conn: ConnId, client: Uuid, agent: Uuid) {
        if !self.peers.get(&client).is_some_and(|p| p.kind.is_client()) {
            self.send_error(conn, "only clients may remove tunnels".to_owned());
            return;
        }
        if self.remove_tunnel_entry(client, agent) {
            info!(%client, %agent, "tunnel removed");
            self.send_updates(
                agent,
                vec![PeerUpdate::disconnected(client, REASON_TUNNEL_REMOVED)],
            );
        }
    }

    pub(super) fn ready_for_handshake(&mut self, conn: ConnId, from: Uuid, to: Uuid) {
        if !self.has_tunnel(from, to) {
            self.send_error(conn, format!("no tunnel to peer {to}"));
            return;
        }
        if !self.peers.contains_key(&to) {
            debug!(%from, %to, "ready-for-handshake for a peer that is not connected");
            return;
        }
        self.send_updates(to, vec![PeerUpdate::ready_for_handshake(from)]);
    }

    /// Returns whether the tunnel existed.
    pub(super) fn remove_tunnel_entry(&mut self, client: Uuid, agent: Uuid) -> bool {
        let Some(agents) = self.client_tunnels.get_mut(&client) else {
            return false;
        };
        let existed = agents.remove(&agent);
        if agents.is_empty() {
            self.client_tunnels.remove(&client);
        }
        if let Some(clients) = self.agent_tunnels.get_mut(&agent) {
            clients.remove(&client);
            if clients.is_empty() {
                self.agent_tunnels.remove(&agent);
            }
        }
        existed
    }

    /// Peers sharing a tunnel with `id` (connected or not).
    pub(super) fn tunnel_peers(&self, id: Uuid) -> Vec<Uuid> {
        self.client_tunnels
            .get(&id)
            .or_else(|| self.agent_tunnels.get(&id))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}
