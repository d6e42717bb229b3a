//! What the agent serves on its tailnet address, port by port, and the one accept loop
//! that serves all of it (after iroh's protocol router).
//!
//! A [`Services`] table maps tailnet TCP ports to [`Service`]s, plus a fallback for every
//! other TCP port and one for every UDP port; [`Services::serve`] listens on a [`Conn`] and
//! hands each accepted connection (or each UDP port's socket) to its service, in a task of
//! its own. [`Services::standard`] is what `tether agent` serves:
//!
//! | port | service |
//! |---|---|
//! | 22, 1 | SSH ([`SshServer`]) |
//! | 2 | the web terminal's reconnecting PTY ([`ReconnectingPty`]) |
//! | 3 | speedtest responder ([`Speedtest`]) |
//! | 4 | the agent's HTTP API: listening ports, netcheck ([`HttpApi`]) |
//! | any other TCP port | forward to `127.0.0.1:<port>` ([`TcpForward`]) |
//! | any UDP port | forward to `127.0.0.1:<port>` ([`UdpForward`]) |
//!
//! A new service is a type implementing [`Service<TcpStream>`] (keep its protocol generic
//! over the byte stream, as [`crate::speedtest::serve`] is, so tests can drive it without a
//! tailnet) and one `.tcp(PORT, service)` line in [`Services::standard`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddrV6;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tether_tailnet::{Conn, TailnetError, TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::forward::{ChannelDatagrams, forward_tcp, forward_udp};
use crate::http_api::{self, HttpApi};
use crate::reconnecting_pty::{self, ReconnectingPty};
use crate::speedtest;
use crate::ssh::SshServer;

/// SSH ports: 22, and 1 as Coder's agent also serves.
pub const SSH_PORTS: [u16; 2] = [22, 1];

/// How long a UDP flow may idle before [`UdpForward`] drops it (NAT-style expiry).
pub const UDP_FLOW_IDLE: Duration = Duration::from_secs(60);

/// Datagrams queued per UDP flow each way; a full queue drops, as a congested link would.
const UDP_FLOW_QUEUE: usize = 256;

/// Largest UDP datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// Something served on the tailnet: `S` is what it is handed, a [`TcpStream`] per
/// accepted connection or, for UDP, a [`UdpSocket`] per port.
pub trait Service<S>: Send + Sync + 'static {
    /// Serve `incoming` until it ends, and log how it ended (nobody else will).
    fn handle(&self, incoming: S) -> impl Future<Output = ()> + Send;
}

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// [`Service`] made object-safe, so one table holds services of different types.
trait DynService<S>: Send + Sync {
    fn handle_boxed(&self, incoming: S) -> BoxFuture<'_>;
}

impl<S: Send + 'static, T: Service<S>> DynService<S> for T {
    fn handle_boxed(&self, incoming: S) -> BoxFuture<'_> {
        Box::pin(self.handle(incoming))
    }
}

/// The agent's port → service table; see the [module docs](self).
#[derive(Default)]
pub struct Services {
    tcp: BTreeMap<u16, Arc<dyn DynService<TcpStream>>>,
    other_tcp: Option<Arc<dyn DynService<TcpStream>>>,
    other_udp: Option<Arc<dyn DynService<UdpSocket>>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("tcp", &self.tcp.keys().collect::<Vec<_>>())
            .field("other_tcp", &self.other_tcp.is_some())
            .field("other_udp", &self.other_udp.is_some())
            .finish()
    }
}

impl Services {
    /// An empty table: nothing is served.
    pub fn new() -> Self {
        Self::default()
    }

    /// What `tether agent` serves: SSH on [`SSH_PORTS`], the reconnecting PTY on
    /// [`reconnecting_pty::PORT`], the speedtest responder on [`speedtest::PORT`], the HTTP
    /// API on [`http_api::PORT`], and every other TCP and UDP port forwarded into the
    /// workspace. `ssh` and `terminals` live as long as the agent (host key, terminal
    /// sessions), `api` as long as its tailnet connection.
    pub fn standard(ssh: SshServer, terminals: ReconnectingPty, api: HttpApi) -> Self {
        let mut services = Self::new();
        for port in SSH_PORTS {
            services = services.tcp(port, ssh.clone());
        }
        services
            .tcp(reconnecting_pty::PORT, terminals)
            .tcp(speedtest::PORT, Speedtest)
            .tcp(http_api::PORT, api)
            .other_tcp(TcpForward)
            .other_udp(UdpForward::default())
    }

    /// Serve TCP `port` with `service` (replacing what served it before).
    #[must_use]
    pub fn tcp(mut self, port: u16, service: impl Service<TcpStream>) -> Self {
        self.tcp.insert(port, Arc::new(service));
        self
    }

    /// Serve every TCP port without a service of its own with `service`.
    #[must_use]
    pub fn other_tcp(mut self, service: impl Service<TcpStream>) -> Self {
        self.other_tcp = Some(Arc::new(service));
        self
    }

    /// Serve every UDP port with `service`, handed one socket per port as the first
    /// datagram to it arrives.
    #[must_use]
    pub fn other_udp(mut self, service: impl Service<UdpSocket>) -> Self {
        self.other_udp = Some(Arc::new(service));
        self
    }

    /// The TCP ports with a service of their own, in ascending order.
    pub fn tcp_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.tcp.keys().copied()
    }

    /// Serve the table on `conn` until the tailnet closes (at once for an empty table).
    ///
    /// Every port with a service of its own listens before the fallbacks start, so none
    /// of its connections reaches them.
    ///
    /// # Errors
    /// When a port cannot be listened on; a closed tailnet ends it with `Ok`.
    pub async fn serve(self, conn: Arc<Conn>) -> Result<(), TailnetError> {
        let mut tasks = JoinSet::new();
        for (port, service) in self.tcp {
            let listener = conn.listen_tcp(port).await?;
            tasks.spawn(accept_loop(Port(listener), service));
        }
        if let Some(service) = self.other_tcp {
            tasks.spawn(accept_loop(OtherTcp(Arc::clone(&conn)), service));
        }
        if let Some(service) = self.other_udp {
            tasks.spawn(accept_loop(OtherUdp(Arc::clone(&conn)), service));
        }
        // Every loop runs until the tailnet itself is closed.
        if let Some(Ok(e)) = tasks.join_next().await {
            tracing::warn!(error = %e, "tailnet listener ended");
        }
        tasks.abort_all();
        Ok(())
    }
}

/// Where a service's connections come from.
trait Accept: Send + 'static {
    type Item: Send + 'static;
    fn next(&self) -> impl Future<Output = Result<Self::Item, TailnetError>> + Send;
}

/// Connections to one TCP port.
struct Port(TcpListener);

impl Accept for Port {
    type Item = TcpStream;
    async fn next(&self) -> Result<TcpStream, TailnetError> {
        self.0.accept().await.map(|(stream, _)| stream)
    }
}

/// Connections to TCP ports nobody listens on.
struct OtherTcp(Arc<Conn>);

impl Accept for OtherTcp {
    type Item = TcpStream;
    async fn next(&self) -> Result<TcpStream, TailnetError> {
        self.0.accept_any_tcp().await.map(|(stream, _)| stream)
    }
}

/// UDP ports, one socket each, as their first datagram arrives.
struct OtherUdp(Arc<Conn>);

impl Accept for OtherUdp {
    type Item = UdpSocket;
    async fn next(&self) -> Result<UdpSocket, TailnetError> {
        self.0.accept_any_udp().await.map(|(socket, _)| socket)
    }
}

/// Hand everything `source` accepts to `service`, each in its own task, until `source`
/// fails; returns why it failed.
async fn accept_loop<A: Accept>(source: A, service: Arc<dyn DynService<A::Item>>) -> TailnetError {
    loop {
        match source.next().await {
            Ok(incoming) => {
                let service = Arc::clone(&service);
                tokio::spawn(async move { service.handle_boxed(incoming).await });
            }
            Err(e) => return e,
        }
    }
}

impl Service<TcpStream> for SshServer {
    async fn handle(&self, stream: TcpStream) {
        let from = stream.peer_addr();
        if let Err(e) = self.serve(stream).await {
            tracing::debug!(%from, error = %e, "ssh connection ended with an error");
        }
    }
}

impl Service<TcpStream> for ReconnectingPty {
    async fn handle(&self, stream: TcpStream) {
        let from = stream.peer_addr();
        match self.serve(stream).await {
            Ok(how) => tracing::debug!(%from, ?how, "web terminal connection ended"),
            Err(e) => tracing::info!(%from, error = %e, "web terminal connection closed"),
        }
    }
}

impl Service<TcpStream> for HttpApi {
    async fn handle(&self, stream: TcpStream) {
        let from = stream.peer_addr();
        if let Err(e) = self.serve(stream).await {
            tracing::debug!(%from, error = %e, "HTTP API connection ended with an error");
        }
    }
}

/// The speedtest responder ([`speedtest::serve`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Speedtest;

impl Service<TcpStream> for Speedtest {
    async fn handle(&self, stream: TcpStream) {
        let from = stream.peer_addr();
        match speedtest::serve(stream).await {
            Ok(done) => tracing::info!(
                %from,
                direction = done.header.direction.as_str(),
                seconds = done.header.duration.as_secs_f64(),
                bytes = done.bytes,
                "speedtest done"
            ),
            Err(e) => tracing::info!(%from, error = %e, "speedtest ended early"),
        }
    }
}

/// Forwards a TCP connection to `127.0.0.1:<the port it was made to>` ([`forward_tcp`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpForward;

impl Service<TcpStream> for TcpForward {
    async fn handle(&self, stream: TcpStream) {
        let port = stream.local_addr().port();
        if let Err(e) = forward_tcp(stream, port).await {
            tracing::info!(port, error = %e, "port forward failed");
        }
    }
}

/// Relays a tailnet UDP port to `127.0.0.1:<port>`: each tailnet source gets its own
/// flow ([`forward_udp`]), so replies go back to the right peer.
#[derive(Debug, Clone, Copy)]
pub struct UdpForward {
    /// How long a flow may idle before it is dropped.
    pub idle: Duration,
}

impl Default for UdpForward {
    fn default() -> Self {
        Self {
            idle: UDP_FLOW_IDLE,
        }
    }
}

impl Service<UdpSocket> for UdpForward {
    async fn handle(&self, socket: UdpSocket) {
        relay_udp_port(Arc::new(socket), self.idle).await;
    }
}

async fn relay_udp_port(socket: Arc<UdpSocket>, idle: Duration) {
    let port = socket.local_addr().port();
    let mut flows: HashMap<SocketAddrV6, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, src)) = socket.recv_from(&mut buf).await else {
            return;
        };
        flows.retain(|_, tx| !tx.is_closed());
        let tx = flows.entry(src).or_insert_with(|| {
            let (in_tx, in_rx) = mpsc::channel(UDP_FLOW_QUEUE);
            let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(UDP_FLOW_QUEUE);
            let pipe = ChannelDatagrams {
                incoming: in_rx,
                outgoing: out_tx,
            };
            tokio::spawn(async move {
                if let Err(e) = forward_udp(pipe, port, idle).await {
                    tracing::info!(port, error = %e, "UDP forward failed");
                }
            });
            let replies = Arc::clone(&socket);
            tokio::spawn(async move {
                while let Some(d) = out_rx.recv().await {
                    if replies.send_to(&d, src).await.is_err() {
                        break;
                    }
                }
            });
            in_tx
        });
        // A full flow queue drops the datagram, as a congested link would.
        let _ = tx.try_send(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::sync::Mutex;

    /// A source fed by a channel; closing the channel fails it as a closed tailnet would.
    struct Fed(Mutex<mpsc::Receiver<u32>>);

    impl Accept for Fed {
        type Item = u32;
        async fn next(&self) -> Result<u32, TailnetError> {
            self.0.lock().await.recv().await.ok_or(TailnetError::Closed)
        }
    }

    /// Reports every item it is handed; item 0 then never finishes.
    struct Record(mpsc::UnboundedSender<u32>);

    impl Service<u32> for Record {
        async fn handle(&self, item: u32) {
            let _ = self.0.send(item);
            if item == 0 {
                std::future::pending::<()>().await;
            }
        }
    }

    #[tokio::test]
    async fn accept_loop_serves_each_item_in_its_own_task_until_the_source_fails() {
        let (feed, rx) = mpsc::channel(4);
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let service: Arc<dyn DynService<u32>> = Arc::new(Record(seen_tx));
        let run = tokio::spawn(accept_loop(Fed(Mutex::new(rx)), service));
        for item in [0, 1, 2] {
            feed.send(item).await.unwrap();
        }
        let bound = Duration::from_secs(10);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(
                tokio::time::timeout(bound, seen.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        // Item 0 never finishes, yet 1 and 2 were served.
        assert_eq!(got, [0, 1, 2]);
        drop(feed);
        let ended = tokio::time::timeout(bound, run).await.unwrap().unwrap();
        assert!(matches!(ended, TailnetError::Closed), "{ended}");
    }

    struct NoNetcheck;

    impl http_api::Netcheck for NoNetcheck {
        fn report(&self) -> http_api::ReportFuture<'_> {
            Box::pin(async { Err(http_api::NetcheckError::Closed) })
        }
    }

    #[test]
    fn standard_table() {
        let services = Services::standard(
            SshServer::new().unwrap(),
            ReconnectingPty::new(crate::user::User::current(), Default::default()),
            HttpApi::new(NoNetcheck),
        );
        assert_eq!(services.tcp_ports().collect::<Vec<_>>(), [1, 2, 3, 4, 22]);
        assert!(services.other_tcp.is_some() && services.other_udp.is_some());
    }
}
