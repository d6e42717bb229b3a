//! Accept loops for HTTP and HTTPS. Both serve the same axum app over HTTP/1.1 with
//! upgrades enabled, which `/derp` and the WebSockets need.
//!
//! Nothing here waits on a client without a bound: a request's head must arrive within
//! [`HEADER_TIMEOUT`] (which also closes idle connections), a request must be answered
//! within [`REQUEST_TIMEOUT`], and the connections are counted in a [`ConnTable`] whose
//! cap comes from the descriptor limit ([`nofile`]), so idle or trickling sockets can
//! neither exhaust descriptors nor crowd out upgraded and logged-in clients.
//!
//! Shutdown is graceful: when `stop` is cancelled a loop closes its listener, lets every
//! request under way finish (hyper's graceful shutdown, which also closes idle
//! keep-alive connections at once) and returns when its connections are done; the
//! caller bounds how long it waits.

pub mod nofile;
pub mod table;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

pub use table::{ConnHandle, ConnSlot, ConnTable};

use crate::api::error::ApiError;

/// Binds a TCP listener, turning "address in use" into one sentence naming the flag.
pub async fn bind(addr: SocketAddr, flag: &str, env: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "port {} is already in use ({flag} {addr}); stop the other process or choose another address with {flag} or {env}",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "not allowed to listen on {addr} ({flag}); ports below 1024 need privileges, choose another with {flag} or {env}"
        ),
        _ => format!("could not listen on {addr} ({flag}): {e}"),
    })
}

/// Loads a rustls server config from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert_bytes = std::fs::read(cert)
        .map_err(|e| format!("could not read --tls-cert-file {}: {e}", cert.display()))?;
    let key_bytes = std::fs::read(key)
        .map_err(|e| format!("could not read --tls-key-file {}: {e}", key.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert-file {} is not valid PEM: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert-file {} holds no certificate",
            cert.display()
        ));
    }
    let key_der = rustls_pemfile::private_key(&mut key_bytes.as_slice())
        .map_err(|e| format!("--tls-key-file {} is not valid PEM: {e}", key.display()))?
        .ok_or_else(|| format!("--tls-key-file {} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("the TLS certificate and key do not fit together: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Slowest a client may send a request's head; also how long a connection may idle
/// between requests. A socket that sends nothing, or a byte now and then, is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request may take from its head to its response (body, handler and all);
/// an upgraded connection is no longer a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a TLS handshake may take.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plain-HTTP client is told when there is no room for its connection.
const NO_ROOM: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The connection table for this process: raises the descriptor limit and sizes the
/// table from it (one table for every listener, as they share the descriptors).
pub fn conn_table() -> Arc<ConnTable> {
    let caps = nofile::raise();
    tracing::info!(
        descriptors = caps.nofile,
        connections = caps.cap,
        before_login = caps.cap - caps.reserve,
        "connection limits"
    );
    ConnTable::new(caps.cap, caps.reserve)
}

/// What tells accept loops ([`serve`]) to stop; each loop holds a clone.
#[derive(Debug, Clone)]
pub struct Stop {
    token: CancellationToken,
    /// Dropped by a loop once its listener is closed.
    listening: tokio::sync::mpsc::Sender<()>,
}

/// The other half of [`Stop`]: stops the loops and learns when they stopped accepting.
#[derive(Debug)]
pub struct Stopper {
    token: CancellationToken,
    closed: tokio::sync::mpsc::Receiver<()>,
}

/// A fresh stop signal (a loop given a [`Stop`] whose [`Stopper`] is dropped never stops).
pub fn stop_signal() -> (Stopper, Stop) {
    let token = CancellationToken::new();
    let (listening, closed) = tokio::sync::mpsc::channel(1);
    (
        Stopper {
            token: token.clone(),
            closed,
        },
        Stop { token, listening },
    )
}

impl Stopper {
    /// Tells every loop to stop; returns once each has closed its listener (so no new
    /// connection gets in), while their requests under way are still being answered.
    /// Drop every [`Stop`] not handed to a loop first, or this waits forever.
    pub async fn stop(&mut self) {
        self.token.cancel();
        let _ = self.closed.recv().await;
    }
}

/// Serves `app` on `listener` until `stop` says so, optionally behind TLS, with the
/// connections counted in `table`; then closes the listener and returns once the requests
/// under way are answered. The connections are tasks of this future: dropping (or
/// aborting) it closes them too, except those already handed off by an upgrade.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    table: Arc<ConnTable>,
    stop: Stop,
) {
    let Stop {
        token: stop,
        listening,
    } = stop;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut failing = false;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = stop.cancelled() => break,
        };
        let (stream, remote) = match accepted {
            Ok(x) => {
                failing = false;
                x
            }
            Err(e) => {
                // Out of descriptors: close an idle connection on probation to get one
                // back, then try again soon. Other errors concern one connection only.
                let exhausted = e.raw_os_error().is_some_and(is_out_of_descriptors);
                if !failing {
                    tracing::warn!(error = %e, "accept failed");
                }
                failing = true;
                if exhausted {
                    table.evict_one();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = table.admit() else {
            tracing::debug!(%remote, "no room for another connection; refused");
            if acceptor.is_none() {
                let _ = stream.try_write(NO_ROOM);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let evicted = slot.evicted();
            let conn = slot.handle();
            let io = Counted {
                io: stream,
                _slot: slot,
            };
            let served = async {
                match acceptor {
                    None => serve_connection(io, app, conn, remote, stop).await,
                    Some(acceptor) => match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(io))
                        .await
                    {
                        Ok(Ok(tls)) => serve_connection(tls, app, conn, remote, stop).await,
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    },
                }
            };
            tokio::select! {
                () = served => {}
                () = evicted.cancelled() => tracing::debug!(%remote, "closed to make room"),
            }
        });
    }
    drop(listener);
    drop(listening);
    while conns.join_next().await.is_some() {}
}

/// EMFILE (this process) or ENFILE (the system) on Linux and the BSDs.
fn is_out_of_descriptors(errno: i32) -> bool {
    errno == 24 || errno == 23
}

/// Serves HTTP/1.1 (with upgrades) on one connection: a request's head must arrive
/// within [`HEADER_TIMEOUT`], and the request be answered within [`REQUEST_TIMEOUT`].
/// Each request learns its peer's address (`ConnectInfo`) and its connection
/// ([`ConnHandle`]); a `101 Switching Protocols` establishes the connection. Once `stop`
/// is cancelled the request under way finishes and the connection closes.
async fn serve_connection<I>(
    io: I,
    app: Router,
    conn: ConnHandle,
    remote: SocketAddr,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        req.extensions_mut().insert(conn.clone());
        let busy = conn.busy();
        let conn = conn.clone();
        let mut app = app.clone();
        async move {
            let _busy = busy;
            let resp = match tokio::time::timeout(REQUEST_TIMEOUT, app.call(req)).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::debug!(%remote, "request timed out");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The request took too long.",
                    )
                    .into_response()
                }
            };
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                conn.establish();
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    // hyper's own HTTP/1 builder: the auto builder reads the first bytes to tell the
    // versions apart with no timeout, so a socket that sends nothing would stay.
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut served = std::pin::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        () = stop.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// A connection's socket with its place in the table: the place is given back when the
/// socket closes, also when an upgrade has handed the socket to another task.
struct Counted<S> {
    io: S,
    _slot: ConnSlot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
