//! Accept loops for HTTP and HTTPS. Both serve the same axum app through hyper-util's
//! auto builder with upgrades enabled, which `/derp` and the WebSockets need.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

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

/// Serves `app` on `listener` forever, optionally behind TLS. The connections are tasks
/// of this future: dropping (or aborting) it closes them too, except those already
/// handed off by an upgrade.
pub async fn serve(listener: TcpListener, app: Router, tls: Option<Arc<rustls::ServerConfig>>) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends are transient; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let svc = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
}
