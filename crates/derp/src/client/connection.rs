//! One logged-in DERP connection: [`Client`] connects and logs in, then splits into a
//! cloneable [`ClientSender`] and a [`ClientReceiver`] that answers pings itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tether_key::{NodePrivate, NodePublic};
use tether_proto::derpmap::DerpRegion;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::timeout;
use tracing::{debug, info, trace};
use url::Url;

use super::transport::{Transport, plain_upgrade, websocket};
use super::{BoxIo, ClientConfig, ClientError};
use crate::frame::{
    self, ClientInfo, Frame, FrameDecoder, FrameType, MAX_PACKET_SIZE, MAX_SERVER_KEY_LEN,
    PeerGoneReason,
};
use crate::server::reserve_read;

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
