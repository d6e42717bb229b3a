//! `tether server` flags. Each flag also reads a `TETHER_*` environment variable, the way
//! Coder's `CODER_*` variables work, so a deployment can be configured either way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// Everything `tether server` can be told.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve HTTP on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "TETHER_HTTP_ADDRESS", default_value = "127.0.0.1:3000")]
    pub http_address: SocketAddr,

    /// URL that users and agents reach this server at; defaults to the HTTP address.
    #[arg(long, env = "TETHER_ACCESS_URL")]
    pub access_url: Option<Url>,

    /// Directory for the embedded SQLite database; defaults to the user's data dir.
    #[arg(long, env = "TETHER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to serve HTTPS on (needs --tls-cert-file and --tls-key-file).
    #[arg(long, env = "TETHER_TLS_ADDRESS", requires_all = ["tls_cert_file", "tls_key_file"])]
    pub tls_address: Option<SocketAddr>,

    /// PEM certificate chain for HTTPS.
    #[arg(long, env = "TETHER_TLS_CERT_FILE", requires = "tls_address")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key for HTTPS.
    #[arg(long, env = "TETHER_TLS_KEY_FILE", requires = "tls_address")]
    pub tls_key_file: Option<PathBuf>,

    /// Serve the built-in DERP relay at /derp.
    #[arg(long, env = "TETHER_DERP_SERVER_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub derp_server_enable: bool,

    /// Region ID of the built-in relay in the DERP map.
    #[arg(long, env = "TETHER_DERP_SERVER_REGION_ID", default_value_t = 999)]
    pub derp_server_region_id: u32,

    /// Region code of the built-in relay.
    #[arg(long, env = "TETHER_DERP_SERVER_REGION_CODE", default_value = "tether")]
    pub derp_server_region_code: String,

    /// Region name of the built-in relay.
    #[arg(
        long,
        env = "TETHER_DERP_SERVER_REGION_NAME",
        default_value = "tether embedded relay"
    )]
    pub derp_server_region_name: String,

    /// Extra STUN servers (host:port) advertised in the map, each as its own STUN-only
    /// region; `disable` advertises none, not even the built-in one.
    #[arg(long, env = "TETHER_DERP_SERVER_STUN_ADDRESSES", value_delimiter = ',')]
    pub derp_server_stun_addresses: Vec<String>,

    /// UDP address of the built-in STUN server (advertised in the built-in region);
    /// `disable` turns it off. Defaults to the HTTP address's IP, port 3478.
    #[arg(long, env = "TETHER_STUN_ADDRESS")]
    pub stun_address: Option<String>,

    /// A Tailscale-format DERP map file merged with the built-in region.
    #[arg(
        long,
        env = "TETHER_DERP_CONFIG_PATH",
        conflicts_with = "derp_config_url"
    )]
    pub derp_config_path: Option<PathBuf>,

    /// A URL serving a Tailscale-format DERP map, fetched at start and re-fetched periodically.
    #[arg(long, env = "TETHER_DERP_CONFIG_URL")]
    pub derp_config_url: Option<Url>,

    /// How often to re-fetch --derp-config-url.
    #[arg(long, env = "TETHER_DERP_CONFIG_REFRESH", default_value = "5m", value_parser = parse_duration, hide = true)]
    pub derp_config_refresh: Duration,

    /// Clients and agents reach DERP over WebSocket only (for proxies that mangle `Upgrade: derp`).
    #[arg(long, env = "TETHER_DERP_FORCE_WEBSOCKETS")]
    pub derp_force_websockets: bool,

    /// Relay every connection through DERP; no direct paths.
    #[arg(long, env = "TETHER_BLOCK_DIRECT")]
    pub block_direct_connections: bool,

    /// Allow only browser connections: users' tailnet connections (the CLI's ssh,
    /// port-forward, ping, speedtest) are refused with 409; the web terminal keeps working.
    #[arg(long, env = "TETHER_BROWSER_ONLY")]
    pub browser_only: bool,

    /// Turn path apps (`/@user/workspace/apps/slug/`) off: they share the dashboard's
    /// origin, so an app's scripts could act as whoever opens it. Requests get a 403 page.
    #[arg(long, env = "TETHER_DISABLE_PATH_APPS")]
    pub disable_path_apps: bool,

    /// Let path apps honour their share level (authenticated, public). Dangerous: a path
    /// app shares the dashboard's origin, so its scripts can call the API as the visitor.
    /// Without it path apps open for their workspace's owner only.
    #[arg(long, env = "TETHER_DANGEROUS_ALLOW_PATH_APP_SHARING")]
    pub dangerous_allow_path_app_sharing: bool,

    /// How long the server's own tailnet node keeps an unused tunnel to an agent.
    #[arg(long, env = "TETHER_SERVER_TAILNET_IDLE_AFTER", default_value = "30m", value_parser = parse_duration, hide = true)]
    pub server_tailnet_idle_after: Duration,

    /// Serve Prometheus metrics at http://ADDRESS/metrics, and nothing else there; off
    /// unless set. Keep it on a private address. Port 0 picks a free port (printed at start).
    #[arg(long, env = "TETHER_PROMETHEUS_ADDRESS")]
    pub prometheus_address: Option<SocketAddr>,

    /// How long a login session lasts; its coordinator connections end when it expires.
    #[arg(long, env = "TETHER_SESSION_DURATION", default_value = "720h", value_parser = parse_duration)]
    pub session_duration: Duration,

    /// Seconds of silence after which the coordinator reports a peer LOST.
    #[arg(long, env = "TETHER_COORDINATOR_LOST_AFTER", default_value = "15s", value_parser = parse_duration, hide = true)]
    pub coordinator_lost_after: Duration,

    /// Once every listener is bound, write the bound addresses as JSON to this file
    /// (atomically), for scripts that start the server and wait for it.
    #[arg(long, env = "TETHER_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

/// What `--stun-address` resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunListen {
    /// No built-in STUN server.
    Disabled,
    /// Listen on this UDP address.
    On(SocketAddr),
}

impl Config {
    /// The access URL, defaulting to `http://<http address>` with the bound port.
    pub fn effective_access_url(&self, bound_http: SocketAddr) -> Url {
        if let Some(u) = &self.access_url {
            return u.clone();
        }
        let host = match bound_http.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        Url::parse(&format!("http://{host}:{}/", bound_http.port()))
            .expect("a URL built from an IP and a port always parses")
    }

    /// The data directory, defaulting to `<user data dir>/tether`.
    pub fn effective_data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("tether")
        })
    }

    /// Where the built-in STUN server listens, if anywhere.
    pub fn stun_listen(&self) -> Result<StunListen, String> {
        match self.stun_address.as_deref() {
            Some("disable") | Some("") => Ok(StunListen::Disabled),
            Some(s) => s
                .parse()
                .map(StunListen::On)
                .map_err(|_| format!("--stun-address {s:?} is not an IP:port (or `disable`)")),
            None => Ok(StunListen::On(SocketAddr::new(
                self.http_address.ip(),
                3478,
            ))),
        }
    }
}

/// Parses `90s`, `5m`, `1h`, `250ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s or 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?} has an unknown unit (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
