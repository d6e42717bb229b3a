//! The DERP region links: per region a [`ReconnectingClient`], a sender task that
//! writes queued datagrams in batches, and a task that forwards what the region
//! delivers to the data-plane driver and tracks whether the region admitted us. The
//! home region's admission is [`Shared::home_ready`], which `join` waits for.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tether_derp::client::{Event as DerpEvent, ReconnectingClient};
use tether_key::NodePublic;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use super::driver::{Shared, now};

/// Datagrams queued per DERP region before new ones are dropped.
const DERP_SEND_QUEUE: usize = 1024;
/// Datagrams written to a DERP server in one write, at most.
const DERP_SEND_BATCH: usize = 64;

/// One DERP region: a reconnecting client and its sender queue.
pub(super) struct RegionLink {
    pub(super) queue: mpsc::Sender<(NodePublic, Bytes)>,
    /// Whether the region's server has admitted us (now).
    pub(super) connected: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RegionLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RegionLink {
    fn spawn(shared: &Arc<Shared>, region: u32) -> Option<Self> {
        let map_region = shared.derp_map().regions.get(&region).cloned();
        let Some(map_region) = map_region else {
            warn!(
                region,
                "no such DERP region in the DERP map; cannot reach peers homed there"
            );
            return None;
        };
        let home = shared.lock().home_region();
        let (client, mut events) = match shared.derp_region_urls.get(&region) {
            Some(url) => {
                info!(region, home = region == home, %url, "connecting to DERP region at its given URL");
                let mut cfg = shared.derp_base.clone();
                cfg.url = url.clone();
                ReconnectingClient::spawn(cfg)
            }
            None => {
                info!(region, home = region == home, "connecting to DERP region");
                ReconnectingClient::spawn_region(map_region, shared.derp_base.clone())
            }
        };
        let client = Arc::new(client);
        let (queue, mut rx) = mpsc::channel::<(NodePublic, Bytes)>(DERP_SEND_QUEUE);
        let sender_client = client.clone();
        let sender = tokio::spawn(async move {
            // What queued up while the last write ran goes out in one write.
            let mut batch = Vec::with_capacity(DERP_SEND_BATCH);
            while rx.recv_many(&mut batch, DERP_SEND_BATCH).await > 0 {
                if let Err(e) = sender_client.send_many(&batch).await {
                    trace!(region, datagrams = batch.len(), error = %e, "DERP send failed; dropping datagrams");
                }
                batch.clear();
            }
        });
        let weak = Arc::downgrade(shared);
        let connected = Arc::new(AtomicBool::new(false));
        let up = connected.clone();
        let forward = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Some(shared) = weak.upgrade() else { return };
                match ev {
                    DerpEvent::Packet { src, data } => {
                        if shared.inbound.try_send((region, src, data)).is_err() {
                            trace!(region, "driver busy; dropping received datagram");
                        }
                    }
                    DerpEvent::Connected { .. } => {
                        up.store(true, Ordering::Release);
                        let home = shared.lock().home_region() == region;
                        info!(region, home, "DERP connected");
                        if home {
                            if let Err(e) = client.note_preferred(true).await {
                                debug!(region, error = %e, "could not mark DERP region preferred");
                            }
                            shared.home_ready.send_replace(true);
                            shared.lock().retry_handshakes(now());
                            shared.wake_driver();
                        }
                    }
                    DerpEvent::Disconnected { error } => {
                        up.store(false, Ordering::Release);
                        info!(region, %error, "DERP disconnected; reconnecting");
                        if shared.lock().home_region() == region {
                            shared.home_ready.send_replace(false);
                        }
                    }
                    DerpEvent::PeerGone { key, reason } => {
                        debug!(region, peer = %key.short(), ?reason, "DERP peer gone");
                    }
                    DerpEvent::Health(h) => {
                        if !h.is_empty() {
                            warn!(region, health = %h, "DERP server reports a problem");
                        }
                    }
                }
            }
        });
        Some(Self {
            queue,
            connected,
            tasks: vec![sender, forward],
        })
    }
}

/// The link to DERP `region`, connecting to it first if there is none (and the node is
/// not closing).
pub(super) fn link_to<'a>(
    shared: &Arc<Shared>,
    links: &'a mut HashMap<u32, RegionLink>,
    region: u32,
) -> Option<&'a mut RegionLink> {
    match links.entry(region) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) => {
            if shared.is_closed() {
                return None;
            }
            RegionLink::spawn(shared, region).map(|l| e.insert(l))
        }
    }
}

/// Makes `to` our home DERP region (lower latency than `from`): peers learn it from our
/// node; the link to `from` stays, for peers homed there and packets still in flight.
pub(super) fn switch_home(
    shared: &Arc<Shared>,
    from: u32,
    to: u32,
    latency: &BTreeMap<u32, Duration>,
) {
    info!(from, to, latency = ?latency.get(&to), "moving home DERP region (lower latency)");
    shared.lock().set_home_region(to);
    let mut links = shared.links();
    let up = link_to(shared, &mut links, to).is_some_and(|l| l.connected.load(Ordering::Acquire));
    shared.home_ready.send_replace(up);
}
