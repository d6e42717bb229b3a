//! The tether control server: the only node with an inbound address. It serves the HTTP
//! API (users, sessions, workspaces), the coordinator's WebSockets, the built-in DERP
//! relay and the built-in STUN server, and health.
//!
//! What it deliberately lacks: no packet-level logic of its own (that is `tether-derp`,
//! `tether-stun` and the sans-IO `tether-coord`), no SQL (that is `tether-store`), and
//! no clap parsing beyond the [`Config`] struct the `tether` binary flattens in. The
//! binary calls [`run`].

pub mod api;
pub mod config;
pub mod coordinate;
pub mod derpmap;
pub mod listen;
pub mod passwords;
pub mod site;
pub mod state;

use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use config::Config;
use config::StunListen;
use state::{AppState, DerpMapStatus, StunInfo};
use tether_key::NodePrivate;
use tether_proto::derpmap::DerpMap;
use tether_store::Store;

/// Why the server could not start: always one sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration or environment problem.
    #[error("{0}")]
    Config(String),
    /// The DERP map could not be built.
    #[error(transparent)]
    DerpMap(#[from] derpmap::DerpMapError),
    /// The database could not be opened.
    #[error("could not open the database: {0}")]
    Store(#[from] tether_store::StoreError),
}

/// Key under which the relay's private key is kept in the store (shared by replicas).
const DERP_KEY_CONFIG: &str = "derp_server_private_key";

/// Starts everything and serves until Ctrl-C / SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Validate the DERP map inputs that need no I/O before touching anything, so a
    // misconfiguration is reported before any port is taken.
    if !config.derp_server_enable
        && config.derp_config_path.is_none()
        && config.derp_config_url.is_none()
    {
        return Err(derpmap::DerpMapError::NoRelay.into());
    }
    let stun_disabled_everywhere = config
        .derp_server_stun_addresses
        .iter()
        .any(|a| a == "disable");
    let stun_regions = derpmap::stun_regions(&config.derp_server_stun_addresses)?;

    let data_dir = config.effective_data_dir();
    // 0700: it holds the database with password hashes and the relay's private key.
    tether_store::private_dir(&data_dir).map_err(|e| {
        StartError::Config(format!(
            "could not create the data directory {} (--data-dir): {e}",
            data_dir.display()
        ))
    })?;
    let db_path = data_dir.join("tether.db");
    let store = Store::open_sqlite(&db_path).await?;

    let http = listen::bind(config.http_address, "--http-address", "TETHER_HTTP_ADDRESS")
        .await
        .map_err(StartError::Config)?;
    let http_addr = http
        .local_addr()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let tls = match (
        &config.tls_address,
        &config.tls_cert_file,
        &config.tls_key_file,
    ) {
        (Some(addr), Some(cert), Some(key)) => {
            let cfg = listen::tls_config(cert, key).map_err(StartError::Config)?;
            let l = listen::bind(*addr, "--tls-address", "TETHER_TLS_ADDRESS")
                .await
                .map_err(StartError::Config)?;
            let bound = l
                .local_addr()
                .map_err(|e| StartError::Config(e.to_string()))?;
            Some((l, cfg, bound))
        }
        _ => None,
    };
    let access_url = config.effective_access_url(http_addr);

    let stun_listen = config.stun_listen().map_err(StartError::Config)?;
    let stun = match stun_listen {
        StunListen::On(addr) if !stun_disabled_everywhere => {
            let server = tether_stun::server::Server::bind(addr).await.map_err(|e| {
                StartError::Config(if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!("UDP port {} is already in use (--stun-address {addr}); choose another with --stun-address or TETHER_STUN_ADDRESS, or `disable` it", addr.port())
                } else {
                    format!("could not start the STUN server on {addr} (--stun-address): {e}")
                })
            })?;
            let info = StunInfo {
                addr: server.local_addr(),
                stats: server.stats(),
            };
            tokio::spawn(server.run());
            Some(info)
        }
        _ => None,
    };

    let derp_key: NodePrivate = {
        let fresh = NodePrivate::generate().to_text();
        let stored = store
            .config_value_or_insert(DERP_KEY_CONFIG, &fresh)
            .await?;
        stored.parse().map_err(|e| {
            StartError::Config(format!("the stored DERP server key is corrupt: {e}"))
        })?
    };

    let inputs = derpmap::MapInputs {
        builtin: config.derp_server_enable.then(|| {
            derpmap::builtin_region(
                config.derp_server_region_id,
                &config.derp_server_region_code,
                &config.derp_server_region_name,
                &access_url,
                stun.as_ref().map(|s| s.addr.port()),
            )
        }),
        stun_regions,
    };
    let http_client = reqwest::Client::builder()
        .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StartError::Config(format!("could not build the HTTP client: {e}")))?;
    let external = match (&config.derp_config_path, &config.derp_config_url) {
        (Some(p), _) => Some(derpmap::read_path(p)?),
        (None, Some(u)) => Some(derpmap::fetch_url(&http_client, u).await?),
        (None, None) => None,
    };
    let derp_map = derpmap::merge(&inputs, external.as_ref())?;

    let admission = Arc::new(coordinate::CoordinatorAdmission::default());
    let derp = config
        .derp_server_enable
        .then(|| tether_derp::server::Server::new(derp_key, admission.clone()));
    let coord_config = tether_coord::Config {
        lost_after: config.coordinator_lost_after,
        heartbeat: (config.coordinator_lost_after / 3).max(Duration::from_millis(100)),
    };
    let hub = coordinate::Hub::new(coord_config, derp_map.clone(), derp.clone());
    let _ = admission.0.set(Arc::downgrade(&hub));
    for ws in store.all_workspaces().await? {
        hub.with(|c| c.set_agent_owner(ws.agent_id, ws.owner_id));
    }
    tokio::spawn(hub.clone().run_timers());

    let derp_map_status = Arc::new(RwLock::new(DerpMapStatus::default()));
    if let Some(url) = config.derp_config_url.clone() {
        tokio::spawn(refresh_derp_map(
            hub.clone(),
            http_client,
            url,
            config.derp_config_refresh,
            inputs,
            derp_map_status.clone(),
        ));
    }

    let state = AppState {
        store: store.clone(),
        hub,
        derp: derp.clone(),
        stun: stun.clone(),
        access_url: access_url.clone(),
        derp_force_websockets: config.derp_force_websockets,
        block_direct: config.block_direct_connections,
        derp_map_status,
        passwords: Arc::new(passwords::Passwords::new(
            passwords::PoolLimits::for_this_host(),
            passwords::throttle::Limits::default(),
        )),
    };
    let mut app = api::router(state).merge(site::router(&access_url));
    if let Some(derp) = &derp {
        app = app.merge(tether_derp::http::router(derp.clone()));
    }
    let app = app.layer(axum::middleware::from_fn(log_request));

    let has_users = store.user_count().await? > 0;
    let tls_addr = tls.as_ref().map(|(_, _, a)| *a);
    print_banner(
        &config,
        http_addr,
        tls_addr,
        &access_url,
        &db_path,
        stun.as_ref(),
        &derp_map,
        has_users,
    );

    let mut tasks = tokio::task::JoinSet::new();
    let conns = listen::conn_table();
    tasks.spawn(listen::serve(http, app.clone(), None, conns.clone()));
    if let Some((l, cfg, _)) = tls {
        tasks.spawn(listen::serve(l, app, Some(cfg), conns));
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    tasks.abort_all();
    Ok(())
}

async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

/// Prints a banner line; a closed stdout (the operator piped us into `head`) must not
/// take the server down, so write errors are ignored.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

#[allow(clippy::too_many_arguments)]
fn print_banner(
    config: &Config,
    http_addr: std::net::SocketAddr,
    tls_addr: Option<std::net::SocketAddr>,
    access_url: &url::Url,
    db_path: &std::path::Path,
    stun: Option<&StunInfo>,
    map: &DerpMap,
    has_users: bool,
) {
    let base = access_url.as_str().trim_end_matches('/');
    say!("tether server listening on http://{http_addr}");
    if let Some(addr) = tls_addr {
        say!("tether server listening on https://{addr}");
    }
    say!("  access URL:  {base}");
    say!("  database:    {} (SQLite)", db_path.display());
    if config.derp_server_enable {
        say!(
            "  DERP relay:  built in, region {} {:?} at {base}/derp",
            config.derp_server_region_id,
            config.derp_server_region_name
        );
    }
    match stun {
        Some(s) => say!("  STUN:        built in, udp {}", s.addr),
        None => say!("  STUN:        built-in server off"),
    }
    say!("  DERP map:    {} region(s)", map.regions.len());
    if !has_users {
        say!("\nNext, create the first user (in another terminal):\n\n  tether login {base}\n");
    } else {
        say!("\nLog in from a client with:\n\n  tether login {base}\n");
    }
}

async fn refresh_derp_map(
    hub: Arc<coordinate::Hub>,
    client: reqwest::Client,
    url: url::Url,
    every: Duration,
    inputs: derpmap::MapInputs,
    status: Arc<RwLock<DerpMapStatus>>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let result = derpmap::fetch_url(&client, &url)
            .await
            .and_then(|m| derpmap::merge(&inputs, Some(&m)));
        let error = match result {
            Ok(map) => {
                let changed = hub.with(|c| {
                    let changed = *c.derp_map() != map;
                    c.set_derp_map(map);
                    changed
                });
                if changed {
                    tracing::info!(%url, "DERP map changed; pushed to peers");
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "refreshing the DERP map failed; keeping the last good one");
                Some(e.to_string())
            }
        };
        if let Ok(mut s) = status.write() {
            s.last_refresh_error = error;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
