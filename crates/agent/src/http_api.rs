//! The agent's HTTP API (tailnet port 4), an HTTP/1.1 server (hyper) for the control
//! server to ask the workspace about itself:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v0/listening-ports` | `{"ports":[{"process_name":"python3","network":"tcp","port":8000}]}` ([`listening_ports`]) |
//! | `GET /api/v0/netcheck` | the agent's netcheck report ([`Report`], Tailscale's field names) |
//! | anything else | 404 (405 for another method on a known path), `{"message": …}` |
//!
//! A netcheck report takes seconds of STUN and HTTP probes, so one is made at a time and
//! reused for [`NETCHECK_MAX_AGE`]. [`HttpApi::serve`] works over any byte stream.

pub mod listening_ports;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tether_tailnet::Conn;
use tether_tailnet::netcheck::{self, Options, Report, Sockets};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The tailnet port the HTTP API is served on.
pub const PORT: u16 = 4;

/// How long a netcheck report is reused.
pub const NETCHECK_MAX_AGE: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const LISTENING_PORTS: &str = "/api/v0/listening-ports";
const NETCHECK: &str = "/api/v0/netcheck";

/// Why no netcheck report could be made.
#[derive(Debug, thiserror::Error)]
pub enum NetcheckError {
    /// The agent's tailnet connection is gone.
    #[error("the agent's tailnet connection is closed")]
    Closed,
    /// No UDP socket to probe from.
    #[error("could not bind a UDP socket: {0}")]
    Bind(io::Error),
}

/// A netcheck report on its way.
pub type ReportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Report, NetcheckError>> + Send + 'a>>;

/// Where netcheck reports come from: the agent's tailnet connection
/// ([`ConnNetcheck`]), or a stand-in in tests.
pub trait Netcheck: Send + Sync + 'static {
    /// Make a fresh report.
    fn report(&self) -> ReportFuture<'_>;
}

/// Netcheck reports against the DERP map of the agent's [`Conn`], from fresh UDP
/// sockets (as `tether netcheck` makes them). Holds the connection weakly: the API does
/// not keep a closed tailnet alive.
#[derive(Debug, Clone)]
pub struct ConnNetcheck {
    conn: Weak<Conn>,
}

impl ConnNetcheck {
    /// Reports for `conn`.
    pub fn new(conn: &Arc<Conn>) -> Self {
        Self {
            conn: Arc::downgrade(conn),
        }
    }
}

impl Netcheck for ConnNetcheck {
    fn report(&self) -> ReportFuture<'_> {
        Box::pin(async move {
            let conn = self.conn.upgrade().ok_or(NetcheckError::Closed)?;
            let (map, server_headers) = (conn.derp_map(), conn.server_headers());
            drop(conn);
            let v4 = tokio::net::UdpSocket::bind("0.0.0.0:0")
                .await
                .map_err(NetcheckError::Bind)?;
            // IPv6 is optional: a host without it still gets an IPv4 report.
            let v6 = tokio::net::UdpSocket::bind("[::]:0").await.ok();
            let sockets = Sockets {
                v4: Some(&v4),
                v6: v6.as_ref(),
            };
            let opts = Options {
                server_headers,
                ..Options::default()
            };
            Ok(netcheck::run(&map, sockets, &opts).await)
        })
    }
}

/// The HTTP API service; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct HttpApi {
    netcheck: Arc<dyn Netcheck>,
    /// The last report's JSON and when it was made.
    last_report: Arc<tokio::sync::Mutex<Option<(Instant, Bytes)>>>,
}

impl std::fmt::Debug for HttpApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApi").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
}

impl HttpApi {
    /// The API with netcheck reports from `netcheck`, ports from `/proc`.
    pub fn new(netcheck: impl Netcheck) -> Self {
        Self {
            netcheck: Arc::new(netcheck),
            last_report: Arc::default(),
        }
    }

    /// Serve HTTP/1.1 requests on one connection until the client closes it.
    ///
    /// # Errors
    /// hyper's, when the connection breaks or the client sends no valid HTTP.
    pub async fn serve<S>(&self, stream: S) -> Result<(), hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let api = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        });
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            .await
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let known = matches!(path, LISTENING_PORTS | NETCHECK);
        if known && req.method() != Method::GET {
            let mut res = error(StatusCode::METHOD_NOT_ALLOWED, "Only GET is allowed here.");
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return res;
        }
        match path {
            LISTENING_PORTS => self.listening_ports().await,
            NETCHECK => self.netcheck().await,
            _ => error(StatusCode::NOT_FOUND, "No such route."),
        }
    }

    async fn listening_ports(&self) -> Response<Full<Bytes>> {
        match tokio::task::spawn_blocking(|| listening_ports::scan(Path::new("/proc"))).await {
            Ok(ports) => json(StatusCode::OK, &ports),
            Err(e) => {
                tracing::warn!(error = %e, "listening ports scan failed");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The listening ports could not be read.",
                )
            }
        }
    }

    async fn netcheck(&self) -> Response<Full<Bytes>> {
        // Held while a report is made: concurrent requests wait for it and share it.
        let mut last = self.last_report.lock().await;
        if let Some((at, body)) = last.as_ref()
            && at.elapsed() < NETCHECK_MAX_AGE
        {
            return json_bytes(StatusCode::OK, body.clone());
        }
        match self.netcheck.report().await {
            Ok(report) => {
                let body = Bytes::from(serde_json::to_vec(&report).unwrap_or_default());
                *last = Some((Instant::now(), body.clone()));
                json_bytes(StatusCode::OK, body)
            }
            Err(e) => {
                tracing::info!(error = %e, "netcheck failed");
                error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
            }
        }
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    json_bytes(
        status,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    )
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &ErrorBody { message })
}
