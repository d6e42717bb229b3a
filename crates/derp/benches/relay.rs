//! Relay benchmark: throughput between two clients over loopback, and the relay
//! process's resident memory with 0, 1,000 and 10,000 idle clients.
//!
//! The relay runs in a child process (this binary re-executed with
//! `TETHER_DERP_BENCH_ROLE=server`) so its RSS is measured alone. Run with
//! `cargo bench -p tether-derp`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_derp::client::{Client, ClientConfig, ClientReceiver, ClientSender, Received};
use tether_derp::server::{AllowAll, Server};
use tether_key::{NodePrivate, NodePublic};
use tokio::task::JoinSet;
use tokio::time::timeout;

const ROLE_ENV: &str = "TETHER_DERP_BENCH_ROLE";
/// No single phase may take longer than this.
const PHASE_CAP: Duration = Duration::from_secs(120);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn raise_nofile() {
    match rlimit::increase_nofile_limit(30_000) {
        Ok(n) => eprintln!("RLIMIT_NOFILE now {n}"),
        Err(e) => eprintln!("could not raise RLIMIT_NOFILE: {e}"),
    }
}

fn main() -> Result<(), BoxError> {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::var(ROLE_ENV).as_deref() == Ok("server") {
        return rt.block_on(run_server());
    }
    // `cargo bench` passes `--bench`; anything else (e.g. a test run) is a no-op.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    rt.block_on(run_bench())
}

/// Child role: serve DERP on 127.0.0.1:0, print the address, exit when stdin closes.
async fn run_server() -> Result<(), BoxError> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let derp = Server::new(NodePrivate::generate(), Arc::new(AllowAll));
    let app = tether_derp::http::router(derp);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("ADDR {}", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let svc = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    // The parent closes our stdin when it is done (or dies).
    tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        while std::io::stdin()
            .read_line(&mut s)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await?;
    Ok(())
}

struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Relay {
    fn spawn() -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or("no child stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("ADDR ")
            .ok_or("child did not print its address")?
            .parse()?;
        Ok(Self { child, addr })
    }

    fn rss_kib(&self) -> Result<u64, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .ok_or("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
    }

    fn cfg(&self, key: &NodePrivate) -> Result<ClientConfig, BoxError> {
        Ok(ClientConfig::new(
            url::Url::parse(&format!("http://{}/derp", self.addr))?,
            key.clone(),
        ))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

async fn next_packet(rx: &mut ClientReceiver) -> Result<bytes::Bytes, BoxError> {
    loop {
        if let Received::Packet { data, .. } = timeout(Duration::from_secs(10), rx.recv()).await?? {
            return Ok(data);
        }
    }
}

/// Sends `count` packets of `size` bytes A→B with a 24-packet window (B acks every 8
/// packets), so nothing is dropped by the relay's 32-packet queue. Returns elapsed time.
async fn throughput(relay: &Relay, size: usize, count: u32) -> Result<Duration, BoxError> {
    let (ka, kb) = (NodePrivate::generate(), NodePrivate::generate());
    let (a_tx, mut a_rx) = Client::connect(&relay.cfg(&ka)?).await?.split();
    let (b_tx, mut b_rx) = Client::connect(&relay.cfg(&kb)?).await?.split();
    let (a_pub, b_pub): (NodePublic, NodePublic) = (ka.public(), kb.public());
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut got = 0u32;
        while got < count {
            let d = next_packet(&mut b_rx).await?;
            if d.len() != size {
                return Err::<(), BoxError>("wrong size".into());
            }
            got += 1;
            if got.is_multiple_of(8) || got == count {
                b_tx.send(a_pub, &got.to_be_bytes()).await?;
            }
        }
        Ok(())
    });
    let packet = vec![0xa5u8; size];
    let mut acked = 0u32;
    let ack = |d: bytes::Bytes| -> Result<u32, BoxError> {
        Ok(u32::from_be_bytes(
            d.get(..4).ok_or("short ack")?.try_into()?,
        ))
    };
    for seq in 0..count {
        while seq - acked >= 24 {
            acked = ack(next_packet(&mut a_rx).await?)?;
        }
        a_tx.send(b_pub, &packet).await?;
    }
    while acked < count {
        acked = ack(next_packet(&mut a_rx).await?)?;
    }
    receiver.await??;
    Ok(start.elapsed())
}

async fn connect_idle(
    relay: &Relay,
    n: usize,
    keep: &mut Vec<(ClientSender, ClientReceiver)>,
) -> Result<(), BoxError> {
    let mut set = JoinSet::new();
    let mut started = 0;
    while keep.len() < n {
        while started < n && set.len() < 64 {
            let cfg = relay.cfg(&NodePrivate::generate())?;
            set.spawn(async move { Client::connect(&cfg).await });
            started += 1;
        }
        let Some(r) = set.join_next().await else {
            break;
        };
        keep.push(r??.split());
    }
    Ok(())
}

async fn run_bench() -> Result<(), BoxError> {
    let relay = Relay::spawn()?;
    println!(
        "tether-derp relay benchmark (loopback, relay in child pid {})",
        relay.child.id()
    );
    println!();
    println!("| test                         | packets | seconds | Mbit/s  | packets/s |");
    println!("|------------------------------|--------:|--------:|--------:|----------:|");
    for (size, count) in [(1200usize, 50_000u32), (64 << 10, 4_000)] {
        let took = timeout(PHASE_CAP, throughput(&relay, size, count)).await??;
        let secs = took.as_secs_f64();
        let mbit = (size as f64 * f64::from(count) * 8.0) / secs / 1e6;
        let pps = f64::from(count) / secs;
        println!(
            "| relay A→B, {size:>6}-byte pkts | {count:>7} | {secs:>7.2} | {mbit:>7.0} | {pps:>9.0} |"
        );
    }
    println!();
    println!("| idle clients | relay VmRSS (MiB) | per client (KiB) |");
    println!("|-------------:|------------------:|-----------------:|");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = relay.rss_kib()?;
    println!(
        "| {:>12} | {:>17.1} | {:>16} |",
        0,
        base as f64 / 1024.0,
        "-"
    );
    let mut keep = Vec::new();
    for n in [1_000usize, 10_000] {
        timeout(PHASE_CAP, connect_idle(&relay, n, &mut keep)).await??;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = relay.rss_kib()?;
        let per = (rss.saturating_sub(base)) as f64 / n as f64;
        println!(
            "| {:>12} | {:>17.1} | {:>16.1} |",
            n,
            rss as f64 / 1024.0,
            per
        );
    }
    Ok(())
}
