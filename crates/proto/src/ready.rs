//! What `tether server --ready-file PATH` writes once every listener is bound: the
//! bound addresses, for the script or test that started the server and waits for it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The readiness file's JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The access URL (`--access-url`, else `http://` and the HTTP address).
    pub url: String,
    /// The bound HTTP address.
    pub http_address: SocketAddr,
    /// The bound HTTPS address, if HTTPS is on.
    pub tls_address: Option<SocketAddr>,
    /// The bound UDP address of the built-in STUN server, if it runs.
    pub stun_address: Option<SocketAddr>,
    /// The bound address of `/metrics`, if `--prometheus-address` is set.
    #[serde(default)]
    pub prometheus_address: Option<SocketAddr>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The server's process id.
    pub pid: u32,
    /// The server's version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn field_names_are_the_documented_ones() {
        let ready = Ready {
            url: "http://127.0.0.1:4000/".into(),
            http_address: "127.0.0.1:4000".parse().unwrap(),
            tls_address: None,
            stun_address: Some("127.0.0.1:4001".parse().unwrap()),
            prometheus_address: None,
            data_dir: "/var/lib/tether".into(),
            pid: 7,
            version: "0.1.0".into(),
        };
        let json = serde_json::to_value(&ready).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "url": "http://127.0.0.1:4000/",
                "http_address": "127.0.0.1:4000",
                "tls_address": null,
                "stun_address": "127.0.0.1:4001",
                "prometheus_address": null,
                "data_dir": "/var/lib/tether",
                "pid": 7,
                "version": "0.1.0",
            })
        );
        assert_eq!(serde_json::from_value::<Ready>(json).unwrap(), ready);
    }
}
