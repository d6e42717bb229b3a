//! A built server: [`Server::build`] validates the configuration, opens the store and
//! binds every listener (HTTP, HTTPS, STUN) without serving anything yet, so a caller
//! knows the bound addresses before the first request; [`Server::serve`] then runs
//! everything until a shutdown future completes. The `tether server` command and the
//! in-process test server are both this pair.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tether_key::NodePrivate;
use tether_proto::derpmap::DerpMap;
use tether_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{Config, StunListen};
use crate::state::{AppState, DerpMapStatus, StunInfo};
use crate::{
    StartError, allowed_hosts, api, coordinate, derpmap, listen, metrics, node, passwords, site,
};

/// Key under which the relay's private key is kept in the store (shared by replicas).
const DERP_KEY_CONFIG: &str = "derp_server_private_key";

/// Longest a shutdown waits for requests under way and for WebSockets to say goodbye.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Every listener bound and every piece wired, nothing served yet.
pub struct Server {
    config: Config,
    data_dir: PathBuf,
    db_path: PathBuf,
    access_url: Url,
    http: TcpListener,
    http_addr: SocketAddr,
    tls: Option<(TcpListener, Arc<rustls::ServerConfig>, SocketAddr)>,
    stun: Option<tether_stun::server::Server>,
    stun_addr: Option<SocketAddr>,
    derp: Option<Arc<tether_derp::server::Server>>,
    hub: Arc<coordinate::Hub>,
    node: Arc<node::ServerNode>,
    derp_map: DerpMap,
    refresh: Option<Refresh>,
    app: axum::Router,
    conns: Arc<listen::ConnTable>,
    prometheus: Option<(metrics::Prometheus, metrics::Sources)>,
    has_users: bool,
    shutdown: CancellationToken,
}

/// What the DERP map refresh task needs; present with `--derp-config-url`.
struct Refresh {
    client: reqwest::Client,
    url: Url,
    every: Duration,
    inputs: derpmap::MapInputs,
    status: Arc<RwLock<DerpMapStatus>>,
}

impl Server {
    /// Validates `config`, opens the database and binds every listener. Spawns nothing:
    /// dropping the result releases the ports.
    pub async fn build(config: Config) -> Result<Self, StartError> {
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
        let prometheus = match config.prometheus_address {
            Some(addr) => Some(metrics::Prometheus::bind(addr).await?),
            None => None,
        };

        let stun_listen = config.stun_listen().map_err(StartError::Config)?;
        let stun = match stun_listen {
            StunListen::On(addr) if !stun_disabled_everywhere => {
                Some(tether_stun::server::Server::bind(addr).await.map_err(|e| {
                    StartError::Config(if e.kind() == std::io::ErrorKind::AddrInUse {
                        format!("UDP port {} is already in use (--stun-address {addr}); choose another with --stun-address or TETHER_STUN_ADDRESS, or `disable` it", addr.port())
                    } else {
                        format!("could not start the STUN server on {addr} (--stun-address): {e}")
                    })
                })?)
            }
            _ => None,
        };
        let stun_info = stun.as_ref().map(|s| StunInfo {
            addr: s.local_addr(),
            stats: s.stats(),
        });

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
                    stun_info.as_ref().map(|s| s.addr.port()),
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
        let shutdown = CancellationToken::new();
        let hub = coordinate::Hub::new(
            coord_config,
            derp_map.clone(),
            derp.clone(),
            shutdown.clone(),
        );
        let _ = admission.0.set(Arc::downgrade(&hub));
        for ws in store.all_workspaces().await? {
            hub.with(|c| c.set_agent_owner(ws.agent_id, ws.owner_id));
        }

        let derp_map_status = Arc::new(RwLock::new(DerpMapStatus::default()));
        let refresh = config.derp_config_url.clone().map(|url| Refresh {
            client: http_client,
            url,
            every: config.derp_config_refresh,
            inputs,
            status: derp_map_status.clone(),
        });

        let node = node::ServerNode::new(
            hub.clone(),
            node::NodeConfig {
                http_listener: http_addr,
                builtin_region: config
                    .derp_server_enable
                    .then_some(config.derp_server_region_id),
                derp_force_websockets: config.derp_force_websockets,
                block_direct: config.block_direct_connections,
                idle_after: config.server_tailnet_idle_after,
            },
        );
        let state = AppState {
            store: store.clone(),
            hub: hub.clone(),
            derp: derp.clone(),
            stun: stun_info.clone(),
            access_url: access_url.clone(),
            derp_force_websockets: config.derp_force_websockets,
            block_direct: config.block_direct_connections,
            derp_map_status,
            passwords: Arc::new(passwords::Passwords::new(
                passwords::PoolLimits::for_this_host(),
                passwords::throttle::Limits::default(),
            )),
            node: node.clone(),
            browser_only: config.browser_only,
            session_duration: config.session_duration,
            apps: crate::state::AppsPolicy {
                disable_path_apps: config.disable_path_apps,
                allow_path_app_sharing: config.dangerous_allow_path_app_sharing,
            },
            agent_versions: Default::default(),
            shutdown: shutdown.clone(),
        };
        let conns = listen::conn_table();
        let sources = metrics::Sources::new(&state, conns.clone());
        let mut app = api::router(state).merge(site::router(&access_url));
        if let Some(derp) = &derp {
            app = app.merge(tether_derp::http::router(derp.clone()));
        }
        let hosts = Arc::new(allowed_hosts::AllowedHosts::new(&access_url));
        let mut app = app
            .layer(axum::middleware::from_fn_with_state(
                hosts,
                allowed_hosts::check,
            ))
            .layer(axum::middleware::from_fn(log_request));
        if let Some(p) = &prometheus {
            app = p.instrument(app);
        }
        let prometheus = prometheus.map(|p| (p, sources));
        let has_users = store.user_count().await? > 0;

        Ok(Self {
            config,
            data_dir,
            db_path,
            access_url,
            http,
            http_addr,
            tls,
            stun_addr: stun_info.map(|s| s.addr),
            stun,
            derp,
            hub,
            node,
            derp_map,
            refresh,
            app,
            conns,
            prometheus,
            has_users,
            shutdown,
        })
    }

    /// The URL users and agents reach this server at.
    pub fn access_url(&self) -> &Url {
        &self.access_url
    }

    /// The bound HTTP address.
    pub fn http_address(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound HTTPS address, when HTTPS is configured.
    pub fn tls_address(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(_, _, a)| *a)
    }

    /// The bound UDP address of the built-in STUN server, when it runs.
    pub fn stun_address(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// The bound address of `/metrics`, when `--prometheus-address` is set.
    pub fn prometheus_address(&self) -> Option<SocketAddr> {
        self.prometheus.as_ref().map(|(p, _)| p.local_addr())
    }

    /// The data directory (holding the SQLite database).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> &Path {
        &self.db_path
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The DERP map it starts with.
    pub fn derp_map(&self) -> &DerpMap {
        &self.derp_map
    }

    /// Whether the database held a user when the server was built.
    pub fn has_users(&self) -> bool {
        self.has_users
    }

    /// Serves HTTP(S), STUN, metrics, the coordinator's timers and the DERP map refresh
    /// until `shutdown` completes; then shuts down gracefully: the listeners close,
    /// requests under way are answered, every WebSocket (coordinator, `/pty`, DERP) gets
    /// a close frame 1001 "server shutting down" and every DERP client is dropped, all
    /// within [`SHUTDOWN_GRACE`]; whatever is still open then is closed with the runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(stun) = self.stun {
            tasks.spawn(stun.run());
        }
        tasks.spawn(self.hub.clone().run_timers());
        if let Some(r) = self.refresh {
            tasks.spawn(refresh_derp_map(
                self.hub.clone(),
                r.client,
                r.url,
                r.every,
                r.inputs,
                r.status,
            ));
        }
        if let Some((p, sources)) = self.prometheus {
            tasks.spawn(p.serve(sources));
        }
        let conns = self.conns;
        let (mut stopper, stop) = listen::stop_signal();
        let mut http = tokio::task::JoinSet::new();
        http.spawn(listen::serve(
            self.http,
            self.app.clone(),
            None,
            conns.clone(),
            stop.clone(),
        ));
        if let Some((l, cfg, _)) = self.tls {
            http.spawn(listen::serve(l, self.app, Some(cfg), conns.clone(), stop));
        } else {
            drop(stop);
        }
        // The node's DERP goes through the HTTP listener, which serves now.
        let node_tasks = self.node.spawn();
        shutdown.await;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        tracing::info!(open = conns.open(), "shutting down");
        // No new connection from here on (so no reconnect either), then goodbyes.
        let _ = tokio::time::timeout_at(deadline, stopper.stop()).await;
        for t in node_tasks {
            t.abort();
        }
        self.shutdown.cancel();
        if let Some(derp) = &self.derp {
            derp.shut_down();
        }
        let drained = tokio::time::timeout_at(deadline, async {
            while http.join_next().await.is_some() {}
            while conns.open() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        match drained {
            Ok(()) => tracing::info!("shut down"),
            Err(_) => tracing::warn!(
                open = conns.open(),
                "connections still open after {} s; closing them",
                SHUTDOWN_GRACE.as_secs()
            ),
        }
        http.abort_all();
        tasks.abort_all();
    }
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

async fn refresh_derp_map(
    hub: Arc<coordinate::Hub>,
    client: reqwest::Client,
    url: Url,
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
