//! Disco on the node: pings of [`Core::ping`], answering and reading disco messages, and
//! turning path selection's outputs into datagrams and events.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tracing::{debug, info, trace};
use uuid::Uuid;

use super::peer::note_udp_source;
use super::{Core, Event, Transmit, USER_PING_TTL};
use crate::disco::{self, Message, Ping, Pong, TxId};
use crate::path::{self, PathKind};
use crate::pathsel::{Output, Via};

/// Pings of [`Core::ping`] awaiting a pong, at most; the oldest is forgotten first.
const MAX_USER_PINGS: usize = 256;

/// A ping sent with [`Core::ping`], awaiting its pong.
#[derive(Debug, Clone, Copy)]
pub(super) struct UserPing {
    peer: Uuid,
    at: Instant,
    via: PathKind,
}

impl Core {
    /// Sends a disco ping to peer `id` on its primary path: the trusted direct address,
    /// else DERP (starting discovery, so later pings may go direct). The pong arrives
    /// as [`Event::Pong`] with the returned TxID; `None` when the peer is unknown or has
    /// no disco key. A ping without a pong is forgotten after [`USER_PING_TTL`] or
    /// with [`Core::cancel_ping`].
    pub fn ping(&mut self, now: Instant, id: Uuid) -> Option<TxId> {
        let me = self.public;
        let home = self.home_region;
        let peer = self.peers.get_mut(&id)?;
        let bx = peer.disco_box.as_ref()?;
        let (tx_id, to) = peer.pathsel.ping_primary(now);
        let via = match to {
            Some(addr) => PathKind::Direct { addr },
            None => PathKind::Derp {
                region: peer.region(home),
            },
        };
        let data = bx.seal_with_rng(
            &Message::Ping(Ping {
                tx_id,
                node_key: me,
                padding: 0,
            }),
            &mut self.nonces,
        );
        debug!(peer = %id, %via, "ping");
        self.transmits.push_back(Transmit {
            peer: id,
            dst: peer.cfg.key,
            path: via,
            data,
        });
        self.user_pings
            .retain(|_, u| now.saturating_duration_since(u.at) < USER_PING_TTL);
        if self.user_pings.len() >= MAX_USER_PINGS
            && let Some(oldest) = self
                .user_pings
                .iter()
                .min_by_key(|(_, u)| u.at)
                .map(|(t, _)| *t)
        {
            self.user_pings.remove(&oldest);
        }
        self.user_pings.insert(
            tx_id,
            UserPing {
                peer: id,
                at: now,
                via,
            },
        );
        self.drain_paths();
        Some(tx_id)
    }

    /// Forgets a ping of [`Core::ping`] (its pong, if it still comes, is not reported).
    pub fn cancel_ping(&mut self, tx_id: TxId) {
        self.user_pings.remove(&tx_id);
    }

    pub(super) fn handle_disco(
        &mut self,
        now: Instant,
        id: Uuid,
        via: Via,
        region: u32,
        data: &[u8],
    ) {
        let blocked = self.direct_blocked;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(opened) = peer.disco_box.as_ref().map(|bx| bx.open(data)) else {
            trace!(peer = %id, "dropping disco from a peer without a disco key");
            return;
        };
        let msg = match opened {
            Ok(m) => m,
            Err(e) => {
                debug!(peer = %id, ?via, error = %e, "dropping a disco packet");
                return;
            }
        };
        let pong_path = |src: Option<SocketAddr>| match src {
            Some(addr) => PathKind::Direct { addr },
            None => PathKind::Derp { region },
        };
        match msg {
            Message::Ping(ping) => {
                if ping.node_key != peer.cfg.key {
                    debug!(peer = %id, "dropping a disco ping naming another node key");
                    return;
                }
                if blocked && matches!(via, Via::Udp(_)) {
                    trace!(peer = %id, "direct paths blocked; ignoring a UDP ping");
                    return;
                }
                let src = match via {
                    Via::Udp(a) => Some(a),
                    Via::Derp => None,
                };
                if let Some(a) = src {
                    note_udp_source(&mut self.by_udp, peer, a);
                }
                peer.pathsel.handle_ping(now, via);
                // The pong reports the source we saw (for DERP, none: unspecified).
                let seen = src.unwrap_or(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
                let Some(bx) = &peer.disco_box else { return };
                let pong = bx.seal_with_rng(
                    &Message::Pong(Pong {
                        tx_id: ping.tx_id,
                        src: seen,
                    }),
                    &mut self.nonces,
                );
                trace!(peer = %id, ?via, "answering a disco ping");
                self.transmits.push_back(Transmit {
                    peer: id,
                    dst: peer.cfg.key,
                    path: pong_path(src),
                    data: pong,
                });
            }
            Message::Pong(pong) => {
                if let Via::Udp(a) = via {
                    note_udp_source(&mut self.by_udp, peer, a);
                }
                let outcome = peer.pathsel.handle_pong(now, pong.tx_id, via);
                trace!(peer = %id, ?via, ?outcome, "disco pong");
                if let Some(u) = self.user_pings.get(&pong.tx_id)
                    && u.peer == id
                {
                    let latency = now.saturating_duration_since(u.at);
                    let via = u.via;
                    self.user_pings.remove(&pong.tx_id);
                    debug!(peer = %id, %via, ?latency, "pong");
                    self.events.push_back(Event::Pong {
                        peer: id,
                        tx_id: pong.tx_id,
                        pong: path::Pong { latency, via },
                    });
                }
            }
            Message::CallMeMaybe(cmm) => {
                if via != Via::Derp {
                    debug!(peer = %id, ?via, "dropping a CallMeMaybe that did not come over DERP");
                    return;
                }
                debug!(peer = %id, endpoints = cmm.endpoints.len(), "CallMeMaybe");
                peer.pathsel.handle_call_me_maybe(now, cmm.endpoints);
            }
        }
    }

    /// Turns every peer's path-selection outputs into transmits, events and logs.
    pub(super) fn drain_paths(&mut self) {
        let me = self.public;
        let home = self.home_region;
        for peer in self.peers.values_mut() {
            while let Some(out) = peer.pathsel.poll_output() {
                match out {
                    Output::SendPing { addr, txid } => {
                        let Some(bx) = &peer.disco_box else { continue };
                        let data = bx.seal_with_rng(
                            &Message::Ping(Ping {
                                tx_id: txid,
                                node_key: me,
                                padding: 0,
                            }),
                            &mut self.nonces,
                        );
                        trace!(peer = %peer.cfg.id, %addr, "disco ping");
                        self.transmits.push_back(Transmit {
                            peer: peer.cfg.id,
                            dst: peer.cfg.key,
                            path: PathKind::Direct { addr },
                            data,
                        });
                    }
                    Output::SendCallMeMaybe { endpoints } => {
                        let Some(bx) = &peer.disco_box else { continue };
                        debug!(peer = %peer.cfg.id, endpoints = endpoints.len(), "sending CallMeMaybe over DERP");
                        let data = bx.seal_with_rng(
                            &Message::CallMeMaybe(disco::CallMeMaybe { endpoints }),
                            &mut self.nonces,
                        );
                        self.transmits.push_back(Transmit {
                            peer: peer.cfg.id,
                            dst: peer.cfg.key,
                            path: PathKind::Derp {
                                region: peer.region(home),
                            },
                            data,
                        });
                    }
                    Output::NeedFreshEndpoints => {
                        if !self.need_endpoints {
                            self.need_endpoints = true;
                            self.events.push_back(Event::NeedFreshEndpoints);
                        }
                    }
                    Output::PathChanged { direct } => {
                        peer.direct = direct;
                        let path = peer.path(home);
                        match direct {
                            Some(addr) => info!(peer = %peer.cfg.id, "path now direct via {addr}"),
                            None => {
                                info!(peer = %peer.cfg.id, "path now DERP({})", peer.region(home))
                            }
                        }
                        self.events.push_back(Event::PathChanged {
                            peer: peer.cfg.id,
                            path,
                        });
                    }
                }
            }
        }
    }
}
