//! A byte-stream view of a WebSocket: DERP frames travel as a byte stream split
//! arbitrarily across binary messages, so the same relay and client code serve both
//! the plain upgrade and the WebSocket transport.
//!
//! The server bounds a message to [`MAX_MESSAGE`], the largest DERP frame that carries
//! a packet, so a client cannot make it buffer more before a frame decoder sees the bytes
//! (the WebSocket library's own default is 64 MiB, also for a message sent in
//! fragments); writes are cut to that size, so no legal writer is refused. The client
//! bounds what it takes to [`MAX_SERVER_MESSAGE`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tether_key::KEY_LEN;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::frame::{HEADER_LEN, MAX_PACKET_SIZE};

/// The most bytes one WebSocket message (or frame) may carry on a DERP connection: a
/// ForwardPacket frame's header, two keys and the largest packet.
pub(crate) const MAX_MESSAGE: usize = HEADER_LEN + 2 * KEY_LEN + MAX_PACKET_SIZE;

/// The most bytes one message from a DERP server may carry: more than [`MAX_MESSAGE`],
/// because older tether servers sent a whole batch of queued packets as one message.
pub(crate) const MAX_SERVER_MESSAGE: usize = 8 << 20;

/// The WebSocket client configuration of a DERP connection.
pub(crate) fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_SERVER_MESSAGE))
        .max_frame_size(Some(MAX_SERVER_MESSAGE))
}

/// What a received WebSocket message means for the byte stream.
pub(crate) enum Incoming {
    /// Stream bytes.
    Data(Bytes),
    /// The peer closed.
    Close,
    /// Control traffic (ping/pong); the WebSocket library answers pings itself.
    Skip,
    /// A text message, which DERP never uses.
    Text,
}

/// The message types of the WebSocket libraries we adapt.
pub(crate) trait WsMessage: Sized {
    fn binary(b: Bytes) -> Self;
    fn classify(self) -> Incoming;
}

impl WsMessage for axum::extract::ws::Message {
    fn binary(b: Bytes) -> Self {
        Self::Binary(b)
    }
    fn classify(self) -> Incoming {
        match self {
            Self::Binary(b) => Incoming::Data(b),
            Self::Close(_) => Incoming::Close,
            Self::Ping(_) | Self::Pong(_) => Incoming::Skip,
            Self::Text(_) => Incoming::Text,
        }
    }
}

impl WsMessage for tokio_tungstenite::tungstenite::Message {
    fn binary(b: Bytes) -> Self {
        Self::Binary(b)
    }
    fn classify(self) -> Incoming {
        match self {
            Self::Binary(b) => Incoming::Data(b),
            Self::Close(_) => Incoming::Close,
            Self::Ping(_) | Self::Pong(_) | Self::Frame(_) => Incoming::Skip,
            Self::Text(_) => Incoming::Text,
        }
    }
}

/// `AsyncRead + AsyncWrite` over a WebSocket message stream; each write is one
/// binary message.
pub(crate) struct WsIo<S> {
    inner: S,
    pending: Bytes,
    eof: bool,
}

impl<S> WsIo<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

impl<S, M, E> AsyncRead for WsIo<S>
where
    S: Stream<Item = Result<M, E>> + Unpin,
    M: WsMessage,
    E: std::error::Error + Send + Sync + 'static,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                None => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(m)) => match m.classify() {
                    Incoming::Data(b) => this.pending = b,
                    Incoming::Close => this.eof = true,
                    Incoming::Skip => {}
                    Incoming::Text => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "text WebSocket message on a DERP connection",
                        )));
                    }
                },
            }
        }
    }
}

impl WsIo<axum::extract::ws::WebSocket> {
    /// Says goodbye as the server shuts down: a close frame 1001 (going away) with a
    /// reason, so the client knows to reconnect (elsewhere, or later).
    pub(crate) async fn going_away(&mut self) {
        let frame = axum::extract::ws::CloseFrame {
            code: 1001,
            reason: "server shutting down".into(),
        };
        let close = self
            .inner
            .send(axum::extract::ws::Message::Close(Some(frame)));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), close).await;
    }
}

// The Stream bound only ties `M` to the socket's message type.
impl<S, M, E> AsyncWrite for WsIo<S>
where
    S: Sink<M> + Stream<Item = Result<M, E>> + Unpin,
    M: WsMessage,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(MAX_MESSAGE);
        let mut inner = Pin::new(&mut self.inner);
        ready!(inner.as_mut().poll_ready(cx)).map_err(io::Error::other)?;
        inner
            .start_send(M::binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::{Error, Message};

    use super::*;

    async fn pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        (
            WebSocketStream::from_raw_socket(a, Role::Server, Some(server)).await,
            WebSocketStream::from_raw_socket(b, Role::Client, Some(client_config())).await,
        )
    }

    #[tokio::test]
    async fn a_large_write_goes_out_as_messages_the_peer_accepts() {
        let (server, mut client) = pair().await;
        let data: Vec<u8> = (0..5 * MAX_MESSAGE + 17).map(|i| i as u8).collect();
        let mut io = WsIo::new(server);
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                io.write_all(&data).await.expect("write");
                io.flush().await.expect("flush");
                io
            })
        };
        let mut got = Vec::new();
        while got.len() < data.len() {
            match client.next().await.expect("message").expect("accepted") {
                Message::Binary(b) => {
                    assert!(b.len() <= MAX_MESSAGE, "{}", b.len());
                    got.extend_from_slice(&b);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, data);
        drop(writer.await.expect("join"));
    }

    /// `sender` sends one binary message of twice `limit` in eight fragments; what the
    /// reader of `receiver` got.
    async fn send_twice(
        mut sender: WebSocketStream<tokio::io::DuplexStream>,
        receiver: WebSocketStream<tokio::io::DuplexStream>,
        limit: usize,
    ) -> io::Result<usize> {
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            WsIo::new(receiver).read(&mut buf).await
        });
        for i in 0..8 {
            let opcode = OpCode::Data(if i == 0 { Data::Binary } else { Data::Continue });
            let frame = Frame::message(vec![0u8; limit / 4], opcode, i == 7);
            if sender.send(Message::Frame(frame)).await.is_err() {
                break;
            }
        }
        reader.await.expect("join")
    }

    fn is_capacity(err: io::Error) -> bool {
        let inner = err.into_inner().expect("inner").downcast::<Error>();
        matches!(inner.as_deref(), Ok(Error::Capacity(_)))
    }

    #[tokio::test]
    async fn an_oversize_fragmented_message_is_an_error_not_a_buffer() {
        // A client's, at the server.
        let (server, client) = pair().await;
        let err = send_twice(client, server, MAX_MESSAGE).await;
        assert!(is_capacity(err.expect_err("an oversize message was read")));
        // A server's, at the client, at the client's larger limit.
        let (server, client) = pair().await;
        let err = send_twice(server, client, MAX_SERVER_MESSAGE).await;
        assert!(is_capacity(err.expect_err("an oversize message was read")));
    }
}
