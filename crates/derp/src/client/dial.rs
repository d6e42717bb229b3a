//! Opening the byte stream to a DERP server: the URL's host and port, a TCP connect
//! per resolved address, and TLS on top for https.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use tokio::time::timeout;
use url::Url;

use super::tls::tls_config;
use super::{BoxIo, ClientConfig, ClientError};

pub(super) fn host_and_port(url: &Url) -> Result<(url::Host<String>, u16, bool), ClientError> {
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

pub(super) async fn dial(cfg: &ClientConfig) -> Result<(BoxIo, String), ClientError> {
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
