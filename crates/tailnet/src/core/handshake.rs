//! WireGuard handshakes on the time passed in: starting them, retrying unanswered
//! initiations, giving up, noticing sessions, and servicing gotatun's own timers.

use std::collections::VecDeque;
use std::time::Instant;

use gotatun::noise::errors::WireGuardError;
use tracing::{debug, info, trace};
use uuid::Uuid;

use super::peer::{Peer, push_transmit};
use super::{Core, Event, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, WG_TICK};

impl Core {
    /// Starts a WireGuard handshake with `id` now (the peer said it is ready: it has just
    /// added us), unless one is in flight, and repeats discovery the peer may have
    /// dropped. Also with a session up: a peer that re-added us (say we rejoined under a
    /// new id) has a fresh tunnel and rejects that session.
    pub fn initiate_handshake(&mut self, id: Uuid, now: Instant) {
        let home = self.home_region;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.pathsel.on_peer_ready(now);
        if p.init_sent.is_none()
            && let Some(init) = p.tunn.format_handshake_initiation(false)
        {
            push_transmit(&mut self.transmits, p, home, init.into(), now);
        }
        self.drain_paths();
    }

    /// Our home DERP link just came (back) up: a handshake initiation sent while it was
    /// down, or while the relay did not admit us yet, was lost. Starts one now with every
    /// peer that has no session, instead of waiting for the retry timer (5 s).
    pub fn retry_handshakes(&mut self, now: Instant) {
        let home = self.home_region;
        for p in self.peers.values_mut() {
            if p.tunn.has_active_session() {
                continue;
            }
            if let Some(init) = p.tunn.format_handshake_initiation(true) {
                push_transmit(&mut self.transmits, p, home, init.into(), now);
            }
        }
        self.drain_paths();
    }

    pub(super) fn note_session(events: &mut VecDeque<Event>, peer: &mut Peer) {
        if !peer.session_up && peer.tunn.has_active_session() {
            peer.session_up = true;
            peer.init_sent = None;
            peer.init_started = None;
            info!(peer = %peer.cfg.id, "WireGuard session up");
            events.push_back(Event::SessionUp { peer: peer.cfg.id });
        } else if peer.session_up && peer.tunn.time_since_last_handshake().is_none() {
            peer.session_up = false;
            debug!(peer = %peer.cfg.id, "WireGuard session gone");
        }
    }

    pub(super) fn run_timers(&mut self, now: Instant) {
        let home = self.home_region;
        let wg_tick = now >= self.next_wg_tick;
        if wg_tick {
            self.next_wg_tick = now + WG_TICK;
        }
        for peer in self.peers.values_mut() {
            if peer.pathsel.poll_timeout().is_some_and(|t| t <= now) {
                peer.pathsel.handle_timeout(now);
            }
            Self::note_session(&mut self.events, peer);
            if let (Some(sent), Some(started)) = (peer.init_sent, peer.init_started) {
                if now.saturating_duration_since(started) >= REKEY_ATTEMPT_TIME {
                    debug!(peer = %peer.cfg.id, "giving up on the handshake");
                    peer.init_sent = None;
                    peer.init_started = None;
                    self.events
                        .push_back(Event::HandshakeGaveUp { peer: peer.cfg.id });
                } else if now.saturating_duration_since(sent) >= REKEY_TIMEOUT {
                    debug!(peer = %peer.cfg.id, "handshake unanswered; retrying");
                    if let Some(init) = peer.tunn.format_handshake_initiation(true) {
                        push_transmit(&mut self.transmits, peer, home, init.into(), now);
                    }
                }
            }
            if wg_tick {
                match peer.tunn.update_timers() {
                    Ok(Some(kind)) => push_transmit(&mut self.transmits, peer, home, kind, now),
                    Ok(None) => {}
                    Err(WireGuardError::ConnectionExpired) => {
                        if peer.session_up {
                            debug!(peer = %peer.cfg.id, "WireGuard session expired");
                            peer.session_up = false;
                        }
                    }
                    Err(e) => trace!(peer = %peer.cfg.id, error = ?e, "WireGuard timer error"),
                }
            }
        }
    }
}
