//! `tether port-forward WS --tcp 8080:80 --udp 5353:53`: local listeners whose traffic
//! goes through the tailnet to `127.0.0.1:<port>` inside the workspace.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Mutex;

use super::forward_spec::{self, Forward, Proto};
use super::ssh::{Tunnel, open_tunnel};
use crate::Globals;

/// `tether port-forward` flags.
#[derive(Debug, clap::Args)]
pub struct PortForwardArgs {
    /// Workspace name.
    pub workspace: String,
    /// TCP forwards: `8080`, `8080:80`, `127.0.0.1:8080:80`, `9990-9999` (repeatable, comma-separated).
    #[arg(
        short = 'p',
        long = "tcp",
        env = "TETHER_PORT_FORWARD_TCP",
        value_delimiter = ','
    )]
    pub tcp: Vec<String>,
    /// UDP forwards, same syntax.
    #[arg(long = "udp", env = "TETHER_PORT_FORWARD_UDP", value_delimiter = ',')]
    pub udp: Vec<String>,
}

/// A UDP flow with no traffic for this long is forgotten, like a NAT mapping.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// Runs until Ctrl-C.
pub async fn run(g: &Globals, args: PortForwardArgs) -> Result<()> {
    let mut forwards = Vec::new();
    for v in &args.tcp {
        forwards.extend(forward_spec::parse(Proto::Tcp, v).map_err(anyhow::Error::msg)?);
    }
    for v in &args.udp {
        forwards.extend(forward_spec::parse(Proto::Udp, v).map_err(anyhow::Error::msg)?);
    }
    if forwards.is_empty() {
        bail!("nothing to forward: give at least one --tcp or --udp spec, e.g. --tcp 8080:80");
    }
    let tunnel = Arc::new(open_tunnel(g, &args.workspace).await?);
    let mut tasks = tokio::task::JoinSet::new();
    for f in forwards {
        match f.proto {
            Proto::Tcp => {
                let l = TcpListener::bind(f.local)
                    .await
                    .with_context(|| bind_error(&f))?;
                tasks.spawn(serve_tcp(l, f, tunnel.clone()));
            }
            Proto::Udp => {
                let s = UdpSocket::bind(f.local)
                    .await
                    .with_context(|| bind_error(&f))?;
                tasks.spawn(serve_udp(Arc::new(s), f, tunnel.clone()));
            }
        }
        println!("{}", f.describe());
    }
    println!("Ready!");
    let serving = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            Some(r) = tasks.join_next() => match r {
                Ok(Err(e)) => Err(e),
                _ => Ok(()),
            },
        }
    };
    let r = tunnel.until_ended(serving).await;
    tasks.abort_all();
    r
}

fn bind_error(f: &Forward) -> String {
    format!(
        "could not listen on {}://{} (is the port in use?)",
        f.proto, f.local
    )
}

async fn serve_tcp(listener: TcpListener, f: Forward, tunnel: Arc<Tunnel>) -> Result<()> {
    loop {
        let (mut local, from) = listener.accept().await.context("accept failed")?;
        let tunnel = tunnel.clone();
        tokio::spawn(async move {
            let _ = local.set_nodelay(true);
            match tunnel.dial(f.remote_port).await {
                Ok(mut remote) => {
                    let sz = tether_agent::forward::COPY_BUFFER;
                    if let Err(e) =
                        tokio::io::copy_bidirectional_with_sizes(&mut local, &mut remote, sz, sz)
                            .await
                    {
                        tracing::debug!(%from, port = f.remote_port, error = %e, "forwarded connection ended");
                    }
                }
                Err(e) => eprintln!("port-forward {}: {e:#}", f.local),
            }
        });
    }
}

struct Flow {
    socket: Arc<tether_tailnet::UdpSocket>,
    last: Instant,
}

async fn serve_udp(local: Arc<UdpSocket>, f: Forward, tunnel: Arc<Tunnel>) -> Result<()> {
    let dst = SocketAddrV6::new(tunnel.agent_ip, f.remote_port, 0, 0);
    let flows: Arc<Mutex<HashMap<SocketAddr, Flow>>> = Arc::default();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, src) = local
            .recv_from(&mut buf)
            .await
            .context("UDP receive failed")?;
        let mut map = flows.lock().await;
        map.retain(|_, fl| fl.last.elapsed() < UDP_IDLE);
        if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(src) {
            let socket = Arc::new(tunnel.conn.bind_udp(0).await?);
            let (reply_sock, local2, flows2) = (socket.clone(), local.clone(), flows.clone());
            tokio::spawn(async move {
                let mut rbuf = vec![0u8; 65_535];
                loop {
                    let got = tokio::time::timeout(UDP_IDLE, reply_sock.recv_from(&mut rbuf)).await;
                    let Ok(Ok((m, _))) = got else { break };
                    if local2.send_to(&rbuf[..m], src).await.is_err() {
                        break;
                    }
                    if let Some(fl) = flows2.lock().await.get_mut(&src) {
                        fl.last = Instant::now();
                    }
                }
                flows2.lock().await.remove(&src);
            });
            slot.insert(Flow {
                socket,
                last: Instant::now(),
            });
        }
        if let Some(fl) = map.get_mut(&src) {
            fl.last = Instant::now();
            if let Err(e) = fl.socket.send_to(&buf[..n], dst).await {
                tracing::debug!(%src, error = %e, "UDP datagram not sent");
            }
        }
    }
}
