//! A byte-stream view of a WebSocket: DERP frames travel as a byte stream split
//! arbitrarily across binary messages, so the same relay and client code serve both
//! the plain upgrade and the WebSocket transport.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        let mut inner = Pin::new(&mut self.inner);
        ready!(inner.as_mut().poll_ready(cx)).map_err(io::Error::other)?;
        inner
            .start_send(M::binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
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
