//! DERP client: dial (TCP, TLS for https), upgrade (`Upgrade: DERP`, falling back to
//! a WebSocket with subprotocol `derp` when the plain upgrade is refused), log in, then
//! send and receive packets by node key.
//!
//! [`Client`] is one connection; [`ReconnectingClient`] keeps one up in a background
//! task with exponential backoff and reports what happens as [`Event`]s.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tether_backoff::Backoff;
use tether_key::{NodePrivate, NodePublic};
use tether_proto::derpmap::DerpRegion;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{debug, info, trace};
use url::Url;

use crate::frame::{
    self, BoxError, ClientInfo, Frame, FrameDecoder, FrameError, FrameType, MAX_PACKET_SIZE,
    MAX_SERVER_KEY_LEN, PeerGoneReason,
};
use crate::headers::ServerHeaders;
use crate::server::reserve_read;
use crate::ws::WsIo;

/// How to reach one DERP server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http(s)://host:port/derp`.
    pub url: Url,
    /// The node's private key (its DERP identity).
    pub private: NodePrivate,
    /// Skip the plain upgrade and use WebSocket at once.
    pub force_websocket: bool,
    /// Accept any TLS certificate (tests and pinned self-signed setups only).
    pub insecure_tls: bool,
    /// Dial this address instead of resolving the URL's host (TLS still uses the host).
    pub connect_addr: Option<IpAddr>,
    /// Cap on the whole connect: DNS, TCP, TLS, upgrade and login.
    pub connect_timeout: Duration,
    /// Cap on each TCP connect attempt.
    pub dial_timeout: Duration,
    /// A connection with no frame for this long is considered dead.
    pub idle_timeout: Duration,
    /// A single write taking longer than this fails the connection.
    pub write_timeout: Duration,
    /// Extra headers for the upgrade request, sent to the tether server's origin only.
    pub headers: ServerHeaders,
}

impl ClientConfig {
    /// Defaults: plain upgrade first, verified TLS, 10 s connect cap, 120 s idle limit.
    pub fn new(url: Url, private: NodePrivate) -> Self {
        Self {
            url,
            private,
            force_websocket: false,
            insecure_tls: false,
            connect_addr: None,
            connect_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(10),
            idle_timeout: frame::CLIENT_IDLE_TIMEOUT,
            write_timeout: Duration::from_secs(10),
            headers: ServerHeaders::none(),
        }
    }
}

/// A DERP client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be dialed.
    #[error("bad DERP URL: {0}")]
    BadUrl(String),
    /// Network or stream failure.
    #[error("DERP connection i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Connecting took longer than the configured cap.
    #[error("connecting to the DERP server timed out")]
    ConnectTimeout,
    /// The server answered the plain upgrade with another status.
    #[error("DERP server refused the upgrade with HTTP {0}")]
    UpgradeRefused(u16),
    /// HTTP-level failure during the plain upgrade.
    #[error("DERP upgrade: {0}")]
    Http(#[from] hyper::Error),
    /// WebSocket handshake or transport failure.
    #[error("DERP WebSocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The server sent a malformed frame.
    #[error("bad frame from DERP server: {0}")]
    Frame(#[from] FrameError),
    /// The login exchange went wrong.
    #[error("DERP login: {0}")]
    Login(String),
    /// The login box did not open.
    #[error("DERP login box: {0}")]
    LoginBox(#[from] BoxError),
    /// The server closed the connection.
    #[error("DERP server closed the connection")]
    Closed,
    /// No frame arrived within the idle limit.
    #[error("no frame from the DERP server for {0:?}; connection presumed dead")]
    IdleTimeout(Duration),
    /// A write took longer than the write timeout.
    #[error("write to the DERP server timed out")]
    WriteTimeout,
    /// The packet is larger than DERP carries.
    #[error("packet of {0} bytes exceeds the DERP limit of 65536")]
    PacketTooLarge(usize),
    /// [`ReconnectingClient`] has no live connection right now.
    #[error("not connected to the DERP server")]
    NotConnected,
    /// A region had no DERP node to dial.
    #[error("DERP region {0} has no dialable node")]
    NoNodes(u32),
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}

/// Which HTTP transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: DERP`, raw frames on the upgraded stream.
    Upgrade,
    /// WebSocket with subprotocol `derp`.
    WebSocket,
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A relayed packet.
    Packet {
        /// Sender.
        src: NodePublic,
        /// Packet bytes.
        data: Bytes,
    },
    /// A peer left, or a packet went to a peer that is not here.
    PeerGone {
        /// The peer.
        key: NodePublic,
        /// Why.
        reason: PeerGoneReason,
    },
    /// Server health text; empty means healthy again.
    Health(String),
    /// The server is restarting.
    Restarting {
        /// Reconnect after this long.
        reconnect_in: Duration,
        /// Keep trying this long.
        try_for: Duration,
    },
    /// Answer to our [`ClientSender::ping`].
    Pong([u8; 8]),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;

/// One logged-in DERP connection.
pub struct Client {
    io: BoxIo,
    decoder: FrameDecoder,
    server_key: NodePublic,
    transport: Transport,
    idle_timeout: Duration,
    write_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server_key", &self.server_key)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and logs in, within `cfg.connect_timeout`.
    pub async fn connect(cfg: &ClientConfig) -> Result<Client, ClientError> {
        timeout(cfg.connect_timeout, Self::connect_inner(cfg))
            .await
            .map_err(|_| ClientError::ConnectTimeout)?
    }

    /// Dials a region's nodes in order (skipping STUN-only ones), 1.5 s per TCP dial,
    /// 10 s in all; `base` supplies the key and transport options.
    pub async fn connect_region(
        region: &DerpRegion,
        base: &ClientConfig,
    ) -> Result<Client, ClientError> {
        let all = async {
            let mut last = ClientError::NoNodes(region.region_id);
            for node in region.nodes.iter().filter(|n| !n.stun_only) {
                let url = match Url::parse(&node.derp_url()) {
                    Ok(u) => u,
                    Err(e) => {
                        last = ClientError::BadUrl(e.to_string());
                        continue;
                    }
                };
                let mut cfg = base.clone();
                cfg.url = url;
                cfg.insecure_tls |= node.insecure_for_tests;
                cfg.dial_timeout = Duration::from_millis(1500);
                cfg.connect_addr = node
                    .ipv4
                    .parse::<std::net::Ipv4Addr>()
                    .map(IpAddr::V4)
                    .or_else(|_| node.ipv6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6))
                    .ok();
                match Self::connect_inner(&cfg).await {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        debug!(node = %node.name, error = %e, "DERP node unreachable, trying next");
                        last = e;
                    }
                }
            }
            Err(last)
        };
        timeout(base.connect_timeout, all)
            .await
            .map_err(|_| ClientError::ConnectTimeout)?
    }

    async fn connect_inner(cfg: &ClientConfig) -> Result<Client, ClientError> {
        let (io, transport) = if cfg.force_websocket {
            (websocket(cfg).await?, Transport::WebSocket)
        } else {
            match plain_upgrade(cfg).await {
                Ok(io) => (io, Transport::Upgrade),
                Err(e @ (ClientError::UpgradeRefused(_) | ClientError::Http(_))) => {
                    debug!(error = %e, "plain DERP upgrade refused; falling back to WebSocket");
                    (websocket(cfg).await?, Transport::WebSocket)
                }
                Err(e) => return Err(e),
            }
        };
        let mut c = Client {
            io,
            decoder: FrameDecoder::new(),
            server_key: NodePublic::from_bytes([0; 32]),
            transport,
            idle_timeout: cfg.idle_timeout,
            write_timeout: cfg.write_timeout,
        };
        c.login(&cfg.private).await?;
        info!(url = %cfg.url, server = %c.server_key, ?transport, "connected to DERP server");
        Ok(c)
    }

    async fn read_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            reserve_read(self.decoder.buffer_mut());
            if self.io.read_buf(self.decoder.buffer_mut()).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    async fn login(&mut self, private: &NodePrivate) -> Result<(), ClientError> {
        // Refuse an absurd ServerKey before buffering it.
        loop {
            if let Some((ty, len)) = self.decoder.peek_header()? {
                if ty != FrameType::ServerKey as u8 {
                    return Err(ClientError::Login(format!(
                        "expected ServerKey, got frame type {ty:#04x}"
                    )));
                }
                if len > MAX_SERVER_KEY_LEN {
                    return Err(ClientError::Login(format!(
                        "ServerKey frame of {len} bytes is too long"
                    )));
                }
                break;
            }
            reserve_read(self.decoder.buffer_mut());
            if self.io.read_buf(self.decoder.buffer_mut()).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
        let Frame::ServerKey { key } = self.read_frame().await? else {
            return Err(ClientError::Login("expected ServerKey".into()));
        };
        self.server_key = key;
        let info = ClientInfo {
            version: frame::PROTOCOL_VERSION,
            can_ack_pings: true,
            ..Default::default()
        };
        let hello = frame::seal_client_info(private, &key, &info)?.to_bytes();
        self.io.write_all(&hello).await?;
        self.io.flush().await?;
        let f = self.read_frame().await?;
        let Frame::ServerInfo { sealed } = f else {
            return Err(ClientError::Login(format!(
                "expected ServerInfo, got frame type {:#04x}",
                f.type_byte()
            )));
        };
        let si = frame::open_server_info(private, &key, &sealed)?;
        if si.version != frame::PROTOCOL_VERSION {
            debug!(
                version = si.version,
                "DERP server speaks another protocol version"
            );
        }
        Ok(())
    }

    /// The server's public key, learned at login.
    pub fn server_key(&self) -> NodePublic {
        self.server_key
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Splits into a cloneable sender and a receiver.
    pub fn split(self) -> (ClientSender, ClientReceiver) {
        let (r, w) = tokio::io::split(self.io);
        let sender = ClientSender {
            inner: Arc::new(tokio::sync::Mutex::new(Writer {
                w,
                buf: BytesMut::new(),
            })),
            write_timeout: self.write_timeout,
        };
        let receiver = ClientReceiver {
            r,
            decoder: self.decoder,
            sender: sender.clone(),
            idle_timeout: self.idle_timeout,
        };
        (sender, receiver)
    }
}

struct Writer {
    w: WriteHalf<BoxIo>,
    buf: BytesMut,
}

/// The sending half; clones share one connection.
#[derive(Clone)]
pub struct ClientSender {
    inner: Arc<tokio::sync::Mutex<Writer>>,
    write_timeout: Duration,
}

impl std::fmt::Debug for ClientSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSender").finish_non_exhaustive()
    }
}

impl ClientSender {
    async fn write(&self, fill: impl FnOnce(&mut BytesMut)) -> Result<(), ClientError> {
        let mut g = self.inner.lock().await;
        let Writer { w, buf } = &mut *g;
        buf.clear();
        fill(buf);
        timeout(self.write_timeout, async {
            w.write_all(buf).await?;
            w.flush().await
        })
        .await
        .map_err(|_| ClientError::WriteTimeout)??;
        Ok(())
    }

    /// Sends `packet` to `dst` through the relay.
    pub async fn send(&self, dst: NodePublic, packet: &[u8]) -> Result<(), ClientError> {
        if packet.len() > MAX_PACKET_SIZE {
            return Err(ClientError::PacketTooLarge(packet.len()));
        }
        trace!(dst = %dst, len = packet.len(), "derp send");
        self.write(|b| Frame::encode_send_packet(b, dst, packet))
            .await
    }

    /// Sends several packets in one write (one syscall instead of one per packet).
    /// Packets over [`MAX_PACKET_SIZE`] are skipped.
    pub async fn send_many(&self, packets: &[(NodePublic, Bytes)]) -> Result<(), ClientError> {
        self.write(|b| {
            for (dst, packet) in packets {
                if packet.len() <= MAX_PACKET_SIZE {
                    Frame::encode_send_packet(b, *dst, packet);
                }
            }
        })
        .await
    }

    /// Tells the server whether it is this node's home region.
    pub async fn note_preferred(&self, preferred: bool) -> Result<(), ClientError> {
        self.send_frame(&Frame::NotePreferred { preferred }).await
    }

    /// Sends a Ping; the answer arrives as [`Received::Pong`].
    pub async fn ping(&self, data: [u8; 8]) -> Result<(), ClientError> {
        self.send_frame(&Frame::Ping { data }).await
    }

    /// Sends any frame as is.
    pub async fn send_frame(&self, f: &Frame) -> Result<(), ClientError> {
        self.write(|b| f.encode(b)).await
    }

    /// Closes the sending side (the server then ends the connection).
    pub async fn close(&self) -> Result<(), ClientError> {
        let mut g = self.inner.lock().await;
        timeout(self.write_timeout, g.w.shutdown())
            .await
            .map_err(|_| ClientError::WriteTimeout)??;
        Ok(())
    }
}

/// The receiving half. Server pings are answered and keepalives absorbed inside
/// [`ClientReceiver::recv`], so keep calling it.
pub struct ClientReceiver {
    r: ReadHalf<BoxIo>,
    decoder: FrameDecoder,
    sender: ClientSender,
    idle_timeout: Duration,
}

impl std::fmt::Debug for ClientReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientReceiver").finish_non_exhaustive()
    }
}

impl ClientReceiver {
    /// The next event from the server. Cancel-safe between frames.
    pub async fn recv(&mut self) -> Result<Received, ClientError> {
        loop {
            while let Some(f) = self.decoder.next_frame()? {
                match f {
                    Frame::RecvPacket { src, packet } => {
                        return Ok(Received::Packet { src, data: packet });
                    }
                    Frame::PeerGone { key, reason } => {
                        return Ok(Received::PeerGone { key, reason });
                    }
                    Frame::Health { problem } => return Ok(Received::Health(problem)),
                    Frame::Restarting {
                        reconnect_in_ms,
                        try_for_ms,
                    } => {
                        return Ok(Received::Restarting {
                            reconnect_in: Duration::from_millis(reconnect_in_ms.into()),
                            try_for: Duration::from_millis(try_for_ms.into()),
                        });
                    }
                    Frame::Pong { data } => return Ok(Received::Pong(data)),
                    Frame::Ping { data } => self.sender.send_frame(&Frame::Pong { data }).await?,
                    Frame::KeepAlive => trace!("keepalive"),
                    other => debug!(
                        ty = other.type_byte(),
                        "ignoring unexpected frame from DERP server"
                    ),
                }
            }
            reserve_read(self.decoder.buffer_mut());
            match timeout(
                self.idle_timeout,
                self.r.read_buf(self.decoder.buffer_mut()),
            )
            .await
            {
                Err(_) => return Err(ClientError::IdleTimeout(self.idle_timeout)),
                Ok(Ok(0)) => return Err(ClientError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// A sender for the same connection.
    pub fn sender(&self) -> ClientSender {
        self.sender.clone()
    }
}

fn host_and_port(url: &Url) -> Result<(url::Host<String>, u16, bool), ClientError> {
    let tls = match url.scheme() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        s => return Err(ClientError::BadUrl(format!("unsupported scheme {s:?}"))),
    };
    let host = url
        .host()
        .ok_or_else(|| ClientError::BadUrl("no host".into()))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ClientError::BadUrl("no port".into()))?;
    Ok((host, port, tls))
}

async fn dial_tcp(
    cfg: &ClientConfig,
    host: &url::Host<String>,
    port: u16,
) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = match (cfg.connect_addr, host) {
        (Some(ip), _) => vec![SocketAddr::new(ip, port)],
        (None, url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
        (None, url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
        (None, url::Host::Domain(d)) => {
            tokio::net::lookup_host((d.as_str(), port)).await?.collect()
        }
    };
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "host resolved to no addresses",
    );
    for a in addrs {
        match timeout(cfg.dial_timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                // Small frames (pings, disco) must not wait for Nagle.
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("TCP connect to {a} timed out"),
                )
            }
        }
    }
    Err(last.into())
}

async fn dial(cfg: &ClientConfig) -> Result<(BoxIo, String), ClientError> {
    let (host, port, tls) = host_and_port(&cfg.url)?;
    let tcp = dial_tcp(cfg, &host, port).await?;
    let authority = match &host {
        url::Host::Ipv6(ip) => format!("[{ip}]:{port}"),
        h => format!("{h}:{port}"),
    };
    if !tls {
        return Ok((Box::new(tcp), authority));
    }
    let name = match &host {
        url::Host::Domain(d) => rustls::pki_types::ServerName::try_from(d.clone())
            .map_err(|e| ClientError::BadUrl(format!("invalid TLS name: {e}")))?,
        url::Host::Ipv4(ip) => rustls::pki_types::ServerName::IpAddress(IpAddr::V4(*ip).into()),
        url::Host::Ipv6(ip) => rustls::pki_types::ServerName::IpAddress(IpAddr::V6(*ip).into()),
    };
    let connector = tokio_rustls::TlsConnector::from(tls_config(cfg.insecure_tls)?);
    let stream = connector.connect(name, tcp).await?;
    Ok((Box::new(stream), authority))
}

fn tls_config(insecure: bool) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::BadUrl(format!("TLS setup: {e}")))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(insecure::AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

mod insecure {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Accepts any certificate but still checks handshake signatures.
    #[derive(Debug)]
    pub(super) struct AcceptAny(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

fn request_path(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

async fn plain_upgrade(cfg: &ClientConfig) -> Result<BoxIo, ClientError> {
    let (io, authority) = dial(cfg).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            trace!(error = %e, "DERP upgrade connection ended");
        }
    });
    let mut req = http::Request::get(request_path(&cfg.url))
        .header(http::header::HOST, authority)
        .header(http::header::UPGRADE, "DERP")
        .header(http::header::CONNECTION, "Upgrade")
        .header(
            http::header::USER_AGENT,
            concat!("tether-derp/", env!("CARGO_PKG_VERSION")),
        )
        .body(String::new())
        .map_err(|e| ClientError::BadUrl(e.to_string()))?;
    cfg.headers.apply(&cfg.url, req.headers_mut());
    let resp = sender.send_request(req).await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(ClientError::UpgradeRefused(resp.status().as_u16()));
    }
    let upgraded = hyper::upgrade::on(resp).await?;
    Ok(Box::new(hyper_util::rt::TokioIo::new(upgraded)))
}

async fn websocket(cfg: &ClientConfig) -> Result<BoxIo, ClientError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut ws_url = cfg.url.clone();
    let scheme = if matches!(cfg.url.scheme(), "https" | "wss") {
        "wss"
    } else {
        "ws"
    };
    ws_url
        .set_scheme(scheme)
        .map_err(|()| ClientError::BadUrl("cannot build WebSocket URL".into()))?;
    let mut req = ws_url.as_str().into_client_request()?;
    req.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(crate::http::WS_PROTOCOL),
    );
    cfg.headers.apply(&cfg.url, req.headers_mut());
    let (io, _) = dial(cfg).await?;
    let config = Some(crate::ws::client_config());
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(req, io, config).await?;
    Ok(Box::new(WsIo::new(ws)))
}

/// What a [`ReconnectingClient`] reports.
#[derive(Debug)]
pub enum Event {
    /// A connection is up (again).
    Connected {
        /// The server's key.
        server_key: NodePublic,
    },
    /// The connection was lost; a reconnect follows after a backoff.
    Disconnected {
        /// Why.
        error: ClientError,
    },
    /// A relayed packet.
    Packet {
        /// Sender.
        src: NodePublic,
        /// Packet bytes.
        data: Bytes,
    },
    /// A peer left, or is not on this server.
    PeerGone {
        /// The peer.
        key: NodePublic,
        /// Why.
        reason: PeerGoneReason,
    },
    /// Server health text; empty means healthy.
    Health(String),
}

enum Target {
    Url(ClientConfig),
    Region(DerpRegion, ClientConfig),
}

impl Target {
    async fn connect(&self) -> Result<Client, ClientError> {
        match self {
            Self::Url(c) => Client::connect(c).await,
            Self::Region(r, c) => Client::connect_region(r, c).await,
        }
    }
}

/// Keeps one DERP connection up in a background task; stops when dropped.
pub struct ReconnectingClient {
    current: Arc<StdMutex<Option<ClientSender>>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Events buffered before the reconnect task waits for the consumer.
const EVENT_QUEUE: usize = 256;

impl ReconnectingClient {
    /// Starts keeping a connection to `cfg.url` up. Events arrive on the receiver.
    pub fn spawn(cfg: ClientConfig) -> (Self, mpsc::Receiver<Event>) {
        Self::start(Target::Url(cfg))
    }

    /// Like [`ReconnectingClient::spawn`], dialing a DERP map region's nodes in order.
    pub fn spawn_region(region: DerpRegion, cfg: ClientConfig) -> (Self, mpsc::Receiver<Event>) {
        Self::start(Target::Region(region, cfg))
    }

    fn start(target: Target) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let current = Arc::new(StdMutex::new(None));
        let task = tokio::spawn(run(target, current.clone(), tx));
        (Self { current, task }, rx)
    }

    fn sender(&self) -> Option<ClientSender> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.sender().is_some()
    }

    /// Sends through the current connection; [`ClientError::NotConnected`] if none.
    pub async fn send(&self, dst: NodePublic, packet: &[u8]) -> Result<(), ClientError> {
        self.sender()
            .ok_or(ClientError::NotConnected)?
            .send(dst, packet)
            .await
    }

    /// Sends several packets in one write through the current connection.
    pub async fn send_many(&self, packets: &[(NodePublic, Bytes)]) -> Result<(), ClientError> {
        self.sender()
            .ok_or(ClientError::NotConnected)?
            .send_many(packets)
            .await
    }

    /// Tells the current server whether it is the home region.
    pub async fn note_preferred(&self, preferred: bool) -> Result<(), ClientError> {
        self.sender()
            .ok_or(ClientError::NotConnected)?
            .note_preferred(preferred)
            .await
    }
}

impl Drop for ReconnectingClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    target: Target,
    current: Arc<StdMutex<Option<ClientSender>>>,
    events: mpsc::Sender<Event>,
) {
    let set = |s: Option<ClientSender>| *current.lock().unwrap_or_else(|e| e.into_inner()) = s;
    let mut backoff =
        Backoff::with_random_seed(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let mut retry_in = None;
        match target.connect().await {
            Ok(client) => {
                backoff.reset();
                let server_key = client.server_key();
                let (tx, mut rx) = client.split();
                set(Some(tx.clone()));
                if events.send(Event::Connected { server_key }).await.is_err() {
                    return;
                }
                let error = loop {
                    let ev = match rx.recv().await {
                        Ok(Received::Packet { src, data }) => Event::Packet { src, data },
                        Ok(Received::PeerGone { key, reason }) => Event::PeerGone { key, reason },
                        Ok(Received::Health(h)) => Event::Health(h),
                        Ok(Received::Restarting { reconnect_in, .. }) => {
                            info!(?reconnect_in, "DERP server is restarting");
                            retry_in = Some(reconnect_in);
                            continue;
                        }
                        Ok(Received::Pong(_)) => continue,
                        Err(e) => break e,
                    };
                    if events.send(ev).await.is_err() {
                        set(None);
                        return;
                    }
                };
                set(None);
                info!(error = %error, "lost DERP connection; reconnecting");
                if events.send(Event::Disconnected { error }).await.is_err() {
                    return;
                }
            }
            Err(e) => debug!(error = %e, "DERP connect failed; will retry"),
        }
        let delay = retry_in
            .unwrap_or_else(|| backoff.next_delay())
            .min(Duration::from_secs(10));
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts() {
        let u = Url::parse("https://[::1]/derp").expect("url");
        let (h, p, tls) = host_and_port(&u).expect("parts");
        assert_eq!((h.to_string(), p, tls), ("[::1]".to_string(), 443, true));
        assert!(host_and_port(&Url::parse("ftp://x/derp").expect("url")).is_err());
        assert_eq!(
            request_path(&Url::parse("http://h:1/derp?x=1").expect("url")),
            "/derp?x=1"
        );
    }
}
