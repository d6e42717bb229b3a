//! Our endpoints: the refresh task (a [`netcheck::stun_round`] from the shared UDP
//! socket every 20–26 s and whenever the core asks, then [`netinfo::after_round`]
//! decides endpoints, home region and what to publish), and the first home region at
//! join.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tether_derp::headers::ServerHeaders;
use tether_proto::derpmap::DerpMap;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::coordination::CoordCmd;
use super::derp_links::switch_home;
use super::driver::{Shared, StunReply, now};
use crate::error::TailnetError;
use crate::interfaces;
use crate::netcheck::{self, Family, Received, StunIo};
use crate::netinfo::{self, FirstHome, NetInfo};
use crate::udp::DirectSocket;

/// Our endpoints are re-STUNed this often (plus up to [`RESTUN_JITTER`]).
const RESTUN_INTERVAL: Duration = Duration::from_secs(20);
/// Random extra delay of a re-STUN.
const RESTUN_JITTER: Duration = Duration::from_secs(6);
/// Upper bound of the latency probe that picks the first home region among several.
const FIRST_HOME_PROBE: Duration = Duration::from_secs(2);

/// The shared socket as a [`StunIo`]: requests go out on it, answers come from the
/// data-plane driver, which reads every datagram of that socket.
struct SharedSocket<'a> {
    sock: &'a DirectSocket,
    answers: &'a mut mpsc::Receiver<StunReply>,
}

impl StunIo for SharedSocket<'_> {
    async fn send(&mut self, to: SocketAddr, packet: &[u8]) -> io::Result<()> {
        self.sock.send_to(packet, to).await.map(drop)
    }

    async fn recv(&mut self) -> Received {
        match self.answers.recv().await {
            Some((src, txid, mapped)) => Received::Answer { src, txid, mapped },
            None => Received::Failed(Family::V4, io::Error::other("the driver stopped")),
        }
    }
}

/// Keeps our endpoints fresh: a STUN round from the shared socket every 20–26 s and
/// whenever the core asks, plus our interface addresses; hands them to the core and,
/// when they change, to the coordinator.
pub(super) async fn refresh(
    shared: Arc<Shared>,
    mut answers: mpsc::Receiver<StunReply>,
    cmds: mpsc::Sender<CoordCmd>,
) {
    let Some(sock) = shared.udp.clone() else {
        return;
    };
    let Ok(local) = sock.local_addr() else {
        return;
    };
    let mut published: Option<NetInfo> = None;
    loop {
        let map = shared.derp_map().clone();
        // The shared socket is IPv4 only.
        let targets = netcheck::stun_targets(&map, true, false).await;
        let plan = netcheck::plan_stun_per_server(&targets);
        while answers.try_recv().is_ok() {}
        let mut io = SharedSocket {
            sock: &sock,
            answers: &mut answers,
        };
        let deadline = tokio::time::Instant::now() + netcheck::REFRESH_ROUND_TIMEOUT;
        let measured = netcheck::stun_round(&mut io, plan, deadline).await;
        let current = shared.lock().home_region();
        let r = netinfo::after_round(
            &map,
            current,
            targets.len(),
            &measured,
            interfaces::local_endpoints(local.port()),
        );
        *shared.stun_verdict() = r.verdict;
        if r.home != current {
            switch_home(&shared, current, r.home, &r.latency);
        }
        shared
            .lock()
            .set_local_endpoints(now(), r.endpoints.clone());
        shared.wake_driver();
        if r.info.differs_from(published.as_ref()) {
            info!(endpoints = ?r.endpoints, hard_nat = ?r.verdict.mapping_varies, home_region = r.home, "our UDP endpoints");
            if cmds
                .send(CoordCmd::SetNetInfo(r.info.clone()))
                .await
                .is_err()
            {
                return;
            }
            published = Some(r.info);
        }
        let jitter = rand::thread_rng().gen_range(0..=RESTUN_JITTER.as_millis() as u64);
        let wait = RESTUN_INTERVAL + Duration::from_millis(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.stun_kick.notified() => {}
        }
    }
}

/// The home region to start with: with one DERP region, that one; with several, the
/// lowest-latency one by a short netcheck (ties and failures: the lowest region ID).
pub(super) async fn first_home_region(
    map: &DerpMap,
    headers: &ServerHeaders,
) -> Result<u32, TailnetError> {
    let fallback = match netinfo::first_home_plan(map).ok_or(TailnetError::NoDerp)? {
        FirstHome::Only(region) => return Ok(region),
        FirstHome::Measure { fallback } => fallback,
    };
    let Ok(sock) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else {
        return Ok(fallback);
    };
    let opts = netcheck::Options {
        previous_home: None,
        stun_timeout: FIRST_HOME_PROBE / 2,
        report_timeout: FIRST_HOME_PROBE,
        server_headers: headers.clone(),
    };
    let report = netcheck::run(map, netcheck::Sockets::single(&sock), &opts).await;
    let home = netinfo::first_home(&report, fallback);
    debug!(home, latency = ?report.region_latency, "first home region by latency");
    Ok(home)
}
