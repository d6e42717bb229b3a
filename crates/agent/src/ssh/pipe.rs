//! Byte-stream adapters over russh channels that never stall the SSH session loop.
//!
//! russh delivers incoming channel data by awaiting a bounded queue *inside* its session
//! loop. If the consumer of that queue waits on anything the session loop must do (send our
//! output, process a window adjust), the connection deadlocks. [`spawn_reader`] therefore
//! drains a channel's read half at once into a byte-bounded buffer ([`MAX_BUFFERED`]); only
//! when that much data is waiting unread does it stop draining and push back on the session.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Largest amount of received-but-unconsumed data kept per channel (32 MiB).
pub(crate) const MAX_BUFFERED: usize = 32 * 1024 * 1024;

type Chunk = (Bytes, OwnedSemaphorePermit);

/// The receiving side of a channel as an [`AsyncRead`]; end of stream is the client's EOF
/// (or the channel closing).
pub(crate) struct ChannelReader {
    rx: mpsc::UnboundedReceiver<Chunk>,
    current: Option<Chunk>,
}

/// Start draining `read` in a background task and return the reader of what it received.
pub(crate) fn spawn_reader(mut read: ChannelReadHalf) -> ChannelReader {
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    let budget = Arc::new(Semaphore::new(MAX_BUFFERED));
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let Some(sender) = tx.as_ref() else {
                        continue;
                    };
                    let want = u32::try_from(data.len().min(MAX_BUFFERED)).unwrap_or(u32::MAX);
                    let Ok(permit) = Arc::clone(&budget).acquire_many_owned(want).await else {
                        break;
                    };
                    if sender.send((data, permit)).is_err() {
                        // Nobody reads any more: keep draining so the session never blocks.
                        tx = None;
                    }
                }
                ChannelMsg::Eof | ChannelMsg::Close => tx = None,
                _ => {}
            }
        }
    });
    ChannelReader { rx, current: None }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some((data, _permit)) = self.current.as_mut() {
                if !data.is_empty() {
                    let n = data.len().min(buf.remaining());
                    buf.put_slice(data.get(..n).unwrap_or_default());
                    data.advance(n);
                    if data.is_empty() {
                        self.current = None;
                    }
                    return Poll::Ready(Ok(()));
                }
                self.current = None;
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => self.current = Some(chunk),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A whole channel as one bidirectional byte stream (for port and agent forwarding).
///
/// Shutting the write side down sends EOF; call [`ChannelIo::close`] when done.
pub(crate) struct ChannelIo {
    reader: ChannelReader,
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
    write_half: ChannelWriteHalf<Msg>,
}

impl ChannelIo {
    /// Wrap a channel.
    pub(crate) fn new(channel: russh::Channel<Msg>) -> Self {
        let (read, write_half) = channel.split();
        Self {
            reader: spawn_reader(read),
            writer: Box::pin(write_half.make_writer()),
            write_half,
        }
    }

    /// Send `SSH_MSG_CHANNEL_CLOSE`.
    pub(crate) async fn close(&self) {
        if self.write_half.close().await.is_err() {
            tracing::trace!("channel already gone at close");
        }
    }
}

impl AsyncRead for ChannelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChannelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

/// Copy both ways between a channel and a local stream, then close the channel.
pub(crate) async fn bridge<S>(channel: russh::Channel<Msg>, mut local: S, what: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = ChannelIo::new(channel);
    match tokio::io::copy_bidirectional(&mut io, &mut local).await {
        Ok((up, down)) => tracing::debug!(what, to_local = up, to_remote = down, "bridge done"),
        Err(e) => tracing::debug!(what, error = %e, "bridge ended with error"),
    }
    io.close().await;
}
