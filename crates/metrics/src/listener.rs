//! The metrics listener: `GET /metrics` (and `HEAD`) in the Prometheus text format, and
//! nothing else. Every other path is 404 and every other method 405, so the address
//! can never serve the API, the relay or a login page by mistake.
//!
//! Waits are bounded as on the main listener: a request head must arrive within
//! [`HEADER_TIMEOUT`] (also the idle limit between requests), and at most
//! [`MAX_CONNECTIONS`] connections are served at once; more are closed at accept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The only path served.
pub const PATH: &str = "/metrics";
/// Longest a client may take to send a request head, or idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; a scraper needs one.
pub const MAX_CONNECTIONS: usize = 16;

/// Binds the metrics listener, with one sentence naming the flag when it cannot.
///
/// # Errors
/// The address is taken, not allowed, or not local.
pub async fn bind(addr: SocketAddr, flag: &str, env: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "port {} is already in use ({flag} {addr}); choose another address with {flag} or {env}",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "not allowed to listen on {addr} ({flag}); ports below 1024 need privileges, choose another with {flag} or {env}"
        ),
        _ => format!("could not listen on {addr} ({flag}): {e}"),
    })
}

/// Serves `registry` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%remote, "too many metrics connections; closed");
            continue;
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let registry = Arc::clone(&registry);
                async move { Ok::<_, Infallible>(answer(&req, &registry)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "metrics connection ended");
            }
        });
    }
}

/// The answer to one request.
pub fn answer<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    };
    if req.uri().path() != PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "404 not found: only /metrics is served here\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(crate::encode(registry))
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::CONTENT_TYPE),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn only_get_metrics_is_served() {
        let mut registry = Registry::with_prefix("t");
        let hits: Counter = Counter::default();
        registry.register("hits", "Hits.", hits.clone());
        hits.inc();
        let listener = bind("127.0.0.1:0".parse().unwrap(), "--x", "X")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, Arc::new(registry)));

        let ok = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        let body = &ok[ok.find("\r\n\r\n").unwrap() + 4..];
        let scrape = crate::text::parse(body).unwrap();
        assert_eq!(scrape.value("t_hits_total", &[]), Some(1.0));

        for path in [
            "/",
            "/healthz",
            "/api/v2/users/login",
            "/metrics/x",
            "/derp",
        ] {
            let r = get(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
        }
        let post = get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(post.contains("allow: GET, HEAD"), "{post}");
        let head = get(
            addr,
            "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        task.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_at_accept() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "--x", "X")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, Arc::new(Registry::default())));
        // Idle sockets hold every slot until their header timeout.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Let the accept loop take them all.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the extra connection is closed without an answer");
        drop(idle);
        // Slots come back once those sockets are gone.
        let ok = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let r = get(
                    addr,
                    "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                .await;
                if r.starts_with("HTTP/1.1 200") {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"));
        task.abort();
    }

    #[test]
    fn bind_errors_name_the_flag() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = taken.local_addr().unwrap();
            let e = bind(addr, "--prometheus-address", "TETHER_PROMETHEUS_ADDRESS")
                .await
                .unwrap_err();
            assert!(e.contains("already in use (--prometheus-address"), "{e}");
            assert!(e.contains("TETHER_PROMETHEUS_ADDRESS"), "{e}");
        });
    }
}
