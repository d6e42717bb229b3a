//! The relay: accepts logged-in DERP connections over any byte stream and forwards
//! packets between them by node key.
//!
//! Each connection runs a reader (frames from the client) and a writer (drains the
//! client's bounded queues) in one task. Senders only ever push onto a destination's
//! queues under a short lock and never wait on its socket, so a slow reader loses its
//! own packets (head-drop) instead of stalling anyone else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tether_key::{NodePrivate, NodePublic};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, trace, warn};

use crate::frame::{
    self, BoxError, Frame, FrameDecoder, FrameError, FrameType, MAX_CLIENT_INFO_LEN,
    MIN_CLIENT_INFO_LEN, PeerGoneReason, ServerInfo,
};

/// Decides which node keys may use the relay.
pub trait Admission: Send + Sync + 'static {
    /// True if `key` may log in.
    fn admit(&self, key: &NodePublic) -> bool;
}

/// Admits every key (an open relay; tests and explicitly open deployments only).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Admission for AllowAll {
    fn admit(&self, _key: &NodePublic) -> bool {
        true
    }
}

impl<F> Admission for F
where
    F: Fn(&NodePublic) -> bool + Send + Sync + 'static,
{
    fn admit(&self, key: &NodePublic) -> bool {
        self(key)
    }
}

/// Tunables; the defaults are Tailscale's.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Base interval between KeepAlive frames.
    pub keepalive: Duration,
    /// Up to this much random delay is added to each keepalive interval.
    pub keepalive_jitter: Duration,
    /// A write to a client that takes longer than this closes that client.
    pub write_timeout: Duration,
    /// Deadline for each login step (ServerKey write, ClientInfo read).
    pub login_timeout: Duration,
    /// Packets queued per client, separately for data and for disco. Tailscale's 32
    /// drops packets of a single fast TCP stream through the relay (each drop a window
    /// cut, and the tailnet's TCP recovers slowly); 1024 holds a whole 1 MiB tailnet TCP
    /// window of full-size packets, and costs nothing for idle clients.
    pub queue_len: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            keepalive: frame::KEEPALIVE_INTERVAL,
            keepalive_jitter: frame::KEEPALIVE_JITTER,
            write_timeout: Duration::from_secs(2),
            login_timeout: frame::LOGIN_TIMEOUT,
            queue_len: 1024,
        }
    }
}

/// Counters for the health endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Distinct node keys connected now.
    pub clients: usize,
    /// Connections logged in now (a key may have several).
    pub connections: usize,
    /// Packets written to their destination.
    pub packets_forwarded: u64,
    /// Payload bytes written to their destination.
    pub bytes_forwarded: u64,
    /// Packets dropped (unknown destination, full queue, or destination left): the sum
    /// of [`ServerStats::dropped`].
    pub packets_dropped: u64,
    /// Packets dropped, by reason.
    pub dropped: DropStats,
    /// Logins refused by the admission check.
    pub refused_by_admission: u64,
    /// Logins accepted since start.
    pub accepted_total: u64,
}

/// Packets the relay dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropStats {
    /// The destination's queue was full; its oldest packet made room (head drop).
    pub queue_full: u64,
    /// No connection has the destination key.
    pub unknown_destination: u64,
    /// The destination left with packets still queued for it.
    pub destination_gone: u64,
    /// A write to the destination timed out with these packets in it.
    pub write_timeout: u64,
}

impl DropStats {
    /// Every drop, whatever the reason.
    pub fn total(&self) -> u64 {
        self.queue_full + self.unknown_destination + self.destination_gone + self.write_timeout
    }
}

/// Why the relay dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    QueueFull,
    UnknownDestination,
    DestinationGone,
    WriteTimeout,
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The underlying stream failed.
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A login step missed its deadline.
    #[error("client did not log in in time")]
    LoginTimeout,
    /// The client went away before logging in.
    #[error("client closed the connection during login")]
    ClosedDuringLogin,
    /// The first client frame was not ClientInfo.
    #[error("expected ClientInfo, got frame type {0:#04x}")]
    UnexpectedLoginFrame(u8),
    /// The ClientInfo frame was too short or too long.
    #[error("ClientInfo frame of {0} bytes is out of bounds")]
    ClientInfoLength(usize),
    /// The login box did not open or its JSON was bad.
    #[error("login box: {0}")]
    LoginBox(#[from] BoxError),
    /// The admission check refused this key.
    #[error("{0} is not allowed on this relay")]
    NotAdmitted(NodePublic),
    /// The client sent a malformed or oversize frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// A write to the client took longer than the write timeout.
    #[error("write to client timed out")]
    WriteTimeout,
    /// A non-mesh client sent a mesh-only frame.
    #[error("mesh-only frame {0:?} from a client that is not a mesh peer")]
    MeshNotAllowed(FrameType),
}

/// Control frames (PeerGone, Pong) queued per client; extra ones are dropped.
const CTRL_QUEUE_LEN: usize = 64;

#[derive(Default)]
struct Queues {
    ctrl: VecDeque<Frame>,
    disco: VecDeque<(NodePublic, Bytes)>,
    data: VecDeque<(NodePublic, Bytes)>,
}

/// One logged-in connection, as seen by senders.
struct Conn {
    id: u64,
    key: NodePublic,
    queues: Mutex<Queues>,
    wake: Notify,
    cancel: CancellationToken,
}

impl Conn {
    fn queues(&self) -> MutexGuard<'_, Queues> {
        // A poisoned queue only means another task panicked mid-push; the data is still valid.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a packet; returns how many packets were dropped to make room (0 or 1).
    fn enqueue_packet(&self, src: NodePublic, packet: Bytes, cap: usize) -> u64 {
        let disco = frame::is_disco(&packet);
        let mut dropped = 0;
        {
            let mut q = self.queues();
            let q = if disco { &mut q.disco } else { &mut q.data };
            // Head-drop: the oldest packet is the least useful one (it is the most stale).
            while q.len() >= cap.max(1) {
                q.pop_front();
                dropped += 1;
            }
            q.push_back((src, packet));
        }
        self.wake.notify_one();
        dropped
    }

    fn enqueue_ctrl(&self, f: Frame) {
        {
            let mut q = self.queues();
            if q.ctrl.len() >= CTRL_QUEUE_LEN {
                debug!(peer = %self.key, "control queue full, dropping frame");
                return;
            }
            q.ctrl.push_back(f);
        }
        self.wake.notify_one();
    }
}

#[derive(Default)]
struct ClientSet {
    conns: Vec<Arc<Conn>>,
    active: u64,
}

impl ClientSet {
    fn active(&self) -> Option<&Arc<Conn>> {
        self.conns
            .iter()
            .find(|c| c.id == self.active)
            .or_else(|| self.conns.last())
    }
}

#[derive(Default)]
struct State {
    clients: HashMap<NodePublic, ClientSet>,
    /// Sender → destinations it has sent to, for PeerGone(Disconnected) when it leaves.
    sent_to: HashMap<NodePublic, HashSet<NodePublic>>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    packets_forwarded: AtomicU64,
    bytes_forwarded: AtomicU64,
    /// Indexed by [`DropReason`].
    dropped: [AtomicU64; 4],
    refused: AtomicU64,
    accepted: AtomicU64,
}

/// A DERP relay server. Cheap to share: hand `Arc<Server>` to every transport.
pub struct Server {
    private: NodePrivate,
    public: NodePublic,
    admission: Arc<dyn Admission>,
    config: ServerConfig,
    state: Mutex<State>,
    next_id: AtomicU64,
    counters: Counters,
    /// Cancelled by [`Server::shut_down`]: every connection ends, also one still logging in.
    going_away: CancellationToken,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Allows 1 event per second with a burst of 3 (PeerGone(NotHere) replies).
struct NotHereLimiter {
    tokens: f64,
    last: Instant,
}

impl NotHereLimiter {
    const BURST: f64 = 3.0;

    fn new() -> Self {
        Self {
            tokens: Self::BURST,
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Server {
    /// A server with the default [`ServerConfig`].
    pub fn new(private: NodePrivate, admission: Arc<dyn Admission>) -> Arc<Self> {
        Self::with_config(private, admission, ServerConfig::default())
    }

    /// A server with explicit tunables.
    pub fn with_config(
        private: NodePrivate,
        admission: Arc<dyn Admission>,
        config: ServerConfig,
    ) -> Arc<Self> {
        let public = private.public();
        Arc::new(Self {
            private,
            public,
            admission,
            config,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            going_away: CancellationToken::new(),
        })
    }

    /// The server's public key (sent in ServerKey and the `Derp-Public-Key` header).
    pub fn public_key(&self) -> NodePublic {
        self.public
    }

    /// Current counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.counters;
        let drops = |d: DropReason| c.dropped[d as usize].load(Ordering::Relaxed);
        let dropped = DropStats {
            queue_full: drops(DropReason::QueueFull),
            unknown_destination: drops(DropReason::UnknownDestination),
            destination_gone: drops(DropReason::DestinationGone),
            write_timeout: drops(DropReason::WriteTimeout),
        };
        ServerStats {
            clients: self.state().clients.len(),
            connections: c.connections.load(Ordering::Relaxed),
            packets_forwarded: c.packets_forwarded.load(Ordering::Relaxed),
            bytes_forwarded: c.bytes_forwarded.load(Ordering::Relaxed),
            packets_dropped: dropped.total(),
            dropped,
            refused_by_admission: c.refused.load(Ordering::Relaxed),
            accepted_total: c.accepted.load(Ordering::Relaxed),
        }
    }

    /// Whether `key` has at least one connection now.
    pub fn is_connected(&self, key: &NodePublic) -> bool {
        self.state().clients.contains_key(key)
    }

    /// Closes every connection of `key` (e.g. when the coordinator forgets it).
    /// Returns how many connections were told to close.
    pub fn disconnect(&self, key: &NodePublic) -> usize {
        let st = self.state();
        let Some(set) = st.clients.get(key) else {
            return 0;
        };
        for c in &set.conns {
            c.cancel.cancel();
        }
        info!(peer = %key, n = set.conns.len(), "disconnecting client on request");
        set.conns.len()
    }

    /// Closes every connection (server shutdown). Returns how many were told to close.
    pub fn disconnect_all(&self) -> usize {
        let st = self.state();
        let mut n = 0;
        for c in st.clients.values().flat_map(|s| s.conns.iter()) {
            c.cancel.cancel();
            n += 1;
        }
        info!(n, "disconnecting all clients");
        n
    }

    /// Server shutdown: closes every connection, also those still logging in, and
    /// ends every connection accepted from now on at once. Returns how many logged-in
    /// connections were told to close.
    pub fn shut_down(&self) -> usize {
        self.going_away.cancel();
        self.disconnect_all()
    }

    /// Whether [`Server::shut_down`] was called (a transport then says goodbye in its
    /// own way, e.g. a WebSocket close frame 1001).
    pub fn is_shutting_down(&self) -> bool {
        self.going_away.is_cancelled()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_packets(&self, why: DropReason, n: u64) {
        if n > 0 {
            self.counters.dropped[why as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Runs one client connection to its end: login, then relaying until either side
    /// closes, the client misbehaves, or [`Server::disconnect`] is called for its key.
    pub async fn accept<S>(
        self: &Arc<Self>,
        stream: S,
        remote: Option<SocketAddr>,
    ) -> Result<(), ServeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let span =
            tracing::debug_span!("derp_conn", remote = ?remote, peer = tracing::field::Empty);
        self.accept_inner(stream, span.clone())
            .instrument(span)
            .await
    }

    async fn accept_inner<S>(
        self: &Arc<Self>,
        mut stream: S,
        span: tracing::Span,
    ) -> Result<(), ServeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut decoder = FrameDecoder::new();
        let login = tokio::select! {
            login = self.login(&mut stream, &mut decoder) => login,
            () = self.going_away.cancelled() => return Ok(()),
        };
        let (key, info) = match login {
            Ok(v) => v,
            Err(e) => {
                debug!(error = %e, "login failed");
                return Err(e);
            }
        };
        span.record("peer", tracing::field::display(key));
        if info.mesh_key_bytes().is_some() {
            // No mesh configured: a mesh key grants nothing, the peer is a plain client.
            debug!("client offered a mesh key; mesh is not enabled, treating it as a plain client");
        }

        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key,
            queues: Mutex::new(Queues::default()),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
        });
        self.register(&conn);
        info!(version = info.version, app = %info.app_name, "client connected");

        let (r, w) = tokio::io::split(stream);
        let res = tokio::select! {
            r = self.read_loop(&conn, r, decoder) => r,
            w = self.write_loop(&conn, w) => w,
            () = conn.cancel.cancelled() => Ok(()),
            () = self.going_away.cancelled() => Ok(()),
        };
        conn.cancel.cancel();
        self.unregister(&conn);
        match &res {
            Ok(()) => info!("client disconnected"),
            Err(e) => info!(error = %e, "client connection closed"),
        }
        res
    }

    async fn login<S>(
        &self,
        stream: &mut S,
        decoder: &mut FrameDecoder,
    ) -> Result<(NodePublic, frame::ClientInfo), ServeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let deadline = self.config.login_timeout;
        let hello = Frame::ServerKey { key: self.public }.to_bytes();
        timeout(deadline, async {
            stream.write_all(&hello).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| ServeError::LoginTimeout)??;

        let first = timeout(deadline, async {
            loop {
                // Check the declared length before reading the body so a huge or
                // out-of-bounds ClientInfo is refused without buffering it.
                if let Some((ty, len)) = decoder.peek_header()? {
                    if ty != FrameType::ClientInfo as u8 {
                        return Err(ServeError::UnexpectedLoginFrame(ty));
                    }
                    if !(MIN_CLIENT_INFO_LEN..=MAX_CLIENT_INFO_LEN).contains(&len) {
                        return Err(ServeError::ClientInfoLength(len));
                    }
                }
                if let Some(f) = decoder.next_frame()? {
                    return Ok(f);
                }
                reserve_read(decoder.buffer_mut());
                if stream.read_buf(decoder.buffer_mut()).await? == 0 {
                    return Err(ServeError::ClosedDuringLogin);
                }
            }
        })
        .await
        .map_err(|_| ServeError::LoginTimeout)??;

        let Frame::ClientInfo { key, sealed } = first else {
            return Err(ServeError::UnexpectedLoginFrame(first.type_byte()));
        };
        let info = frame::open_client_info(&self.private, &key, &sealed)?;
        if !self.admission.admit(&key) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            info!(peer = %key, "login refused by admission check");
            return Err(ServeError::NotAdmitted(key));
        }
        let reply =
            frame::seal_server_info(&self.private, &key, &ServerInfo::default())?.to_bytes();
        timeout(deadline, async {
            stream.write_all(&reply).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| ServeError::LoginTimeout)??;
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        Ok((key, info))
    }

    fn register(&self, conn: &Arc<Conn>) {
        let mut st = self.state();
        let set = st.clients.entry(conn.key).or_default();
        if !set.conns.is_empty() {
            debug!(peer = %conn.key, n = set.conns.len() + 1, "duplicate connection for key; newest is active");
        }
        set.conns.push(conn.clone());
        set.active = conn.id;
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
    }

    fn unregister(&self, conn: &Arc<Conn>) {
        let mut st = self.state();
        self.counters.connections.fetch_sub(1, Ordering::Relaxed);
        let mut last = false;
        if let Some(set) = st.clients.get_mut(&conn.key) {
            set.conns.retain(|c| c.id != conn.id);
            if set.conns.is_empty() {
                last = true;
            } else if set.active == conn.id {
                set.active = set.conns.last().map_or(0, |c| c.id);
            }
        }
        // Packets still queued for this connection will never be written.
        let stranded = {
            let q = conn.queues();
            (q.data.len() + q.disco.len()) as u64
        };
        self.drop_packets(DropReason::DestinationGone, stranded);
        if !last {
            return;
        }
        st.clients.remove(&conn.key);
        let Some(peers) = st.sent_to.remove(&conn.key) else {
            return;
        };
        for p in peers {
            if let Some(set) = st.clients.get(&p) {
                for c in &set.conns {
                    c.enqueue_ctrl(Frame::PeerGone {
                        key: conn.key,
                        reason: PeerGoneReason::Disconnected,
                    });
                }
            }
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        conn: &Arc<Conn>,
        mut r: R,
        mut decoder: FrameDecoder,
    ) -> Result<(), ServeError> {
        let mut limiter = NotHereLimiter::new();
        loop {
            while let Some(f) = decoder.next_frame()? {
                self.handle_frame(conn, f, &mut limiter)?;
            }
            reserve_read(decoder.buffer_mut());
            if r.read_buf(decoder.buffer_mut()).await? == 0 {
                return Ok(());
            }
        }
    }

    fn handle_frame(
        &self,
        conn: &Arc<Conn>,
        f: Frame,
        limiter: &mut NotHereLimiter,
    ) -> Result<(), ServeError> {
        match f {
            Frame::SendPacket { dst, packet } => self.handle_send(conn, dst, packet, limiter),
            Frame::Ping { data } => conn.enqueue_ctrl(Frame::Pong { data }),
            Frame::NotePreferred { preferred } => trace!(preferred, "note preferred"),
            Frame::WatchConns | Frame::ClosePeer { .. } | Frame::ForwardPacket { .. } => {
                let ty = f.frame_type().unwrap_or(FrameType::WatchConns);
                warn!(frame = ?ty, "mesh frame from a non-mesh client; closing");
                return Err(ServeError::MeshNotAllowed(ty));
            }
            other => trace!(ty = other.type_byte(), "ignoring frame from client"),
        }
        Ok(())
    }

    fn handle_send(
        &self,
        conn: &Arc<Conn>,
        dst: NodePublic,
        packet: Bytes,
        limiter: &mut NotHereLimiter,
    ) {
        let target = {
            let mut st = self.state();
            if let Some(set) = st.clients.get_mut(&conn.key)
                && set.conns.len() > 1
                && set.active != conn.id
            {
                debug!(peer = %conn.key, "duplicate connection became active by sending");
                set.active = conn.id;
            }
            let t = st.clients.get(&dst).and_then(|s| s.active()).cloned();
            if t.is_some() {
                st.sent_to.entry(conn.key).or_default().insert(dst);
            }
            t
        };
        match target {
            Some(t) => {
                trace!(dst = %dst, len = packet.len(), "relay packet");
                let dropped = t.enqueue_packet(conn.key, packet, self.config.queue_len);
                if dropped > 0 {
                    debug!(dst = %dst, dropped, "destination queue full, dropped oldest");
                }
                self.drop_packets(DropReason::QueueFull, dropped);
            }
            None => {
                self.drop_packets(DropReason::UnknownDestination, 1);
                trace!(dst = %dst, "packet for unknown destination dropped");
                if frame::is_disco(&packet) && limiter.allow() {
                    conn.enqueue_ctrl(Frame::PeerGone {
                        key: dst,
                        reason: PeerGoneReason::NotHere,
                    });
                }
            }
        }
    }

    fn keepalive_delay(&self) -> Duration {
        let j = self.config.keepalive_jitter.as_millis() as u64;
        let extra = if j == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=j)
        };
        self.config.keepalive + Duration::from_millis(extra)
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        &self,
        conn: &Arc<Conn>,
        mut w: W,
    ) -> Result<(), ServeError> {
        let mut buf = BytesMut::new();
        let mut next_keepalive = Instant::now() + self.keepalive_delay();
        let mut ctrl = VecDeque::new();
        let mut disco = VecDeque::new();
        let mut data = VecDeque::new();
        loop {
            tokio::select! {
                () = conn.wake.notified() => {}
                () = sleep_until(next_keepalive) => {
                    Frame::KeepAlive.encode(&mut buf);
                    next_keepalive = Instant::now() + self.keepalive_delay();
                }
            }
            {
                let mut q = conn.queues();
                std::mem::swap(&mut q.ctrl, &mut ctrl);
                std::mem::swap(&mut q.disco, &mut disco);
                std::mem::swap(&mut q.data, &mut data);
            }
            let mut packets = 0u64;
            let mut bytes = 0u64;
            for f in ctrl.drain(..) {
                f.encode(&mut buf);
            }
            for (src, packet) in disco.drain(..).chain(data.drain(..)) {
                packets += 1;
                bytes += packet.len() as u64;
                Frame::RecvPacket { src, packet }.encode(&mut buf);
            }
            if buf.is_empty() {
                continue;
            }
            timeout(self.config.write_timeout, async {
                w.write_all(&buf).await?;
                w.flush().await
            })
            .await
            .map_err(|_| {
                self.drop_packets(DropReason::WriteTimeout, packets);
                ServeError::WriteTimeout
            })??;
            buf.clear();
            // Don't keep a burst-sized buffer around for an idle client.
            if buf.capacity() > 256 << 10 {
                buf = BytesMut::new();
            }
            self.counters
                .packets_forwarded
                .fetch_add(packets, Ordering::Relaxed);
            self.counters
                .bytes_forwarded
                .fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// Makes sure a read has room to land without tiny reads; keeps idle buffers small.
pub(crate) fn reserve_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(if buf.is_empty() { 4096 } else { 16 << 10 });
    }
}
