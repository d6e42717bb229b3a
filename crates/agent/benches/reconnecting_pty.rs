//! Memory and throughput of the reconnecting PTY, in one agent-like process (the
//! service and its in-memory clients; the shells are processes of their own):
//!
//! - RSS with 20 idle (detached) sessions, fresh and with full history;
//! - the output queued for a stalled reader and for a slow one under
//!   `cat /dev/urandom | base64`, and what that costs in RSS;
//! - output throughput through one attachment (screen model included).
//!
//! `cargo bench -p tether-agent --bench reconnecting_pty [-- <filter>]` runs the cases
//! whose table (`idle`, `flood`, `throughput`) contains the filter; add `--profile dev` to
//! skip a release build (figures are then for unoptimised code). Throughput is given in
//! wall time and per second of this process's CPU time, since the machine may be shared.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tether_agent::pty::WindowSize;
use tether_agent::reconnecting_pty::screen::Screen;
use tether_agent::reconnecting_pty::wire::{Request, encode_init, encode_request};
use tether_agent::reconnecting_pty::{Config, ReconnectingPty};
use tether_agent::user::User;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use uuid::Uuid;

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz on
    // Linux); the command name in field 2 may hold spaces, so count after its ')'.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Resident set size of process `pid` ("self" for this one), in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn service(config: Config, home: &std::path::Path) -> ReconnectingPty {
    let user = User {
        name: "bench".into(),
        home: home.to_path_buf(),
        shell: PathBuf::from("/bin/sh"),
    };
    ReconnectingPty::new(user, config)
}

async fn connect(pty: &ReconnectingPty, id: Uuid, command: &str, pipe: usize) -> DuplexStream {
    let (mut near, far) = tokio::io::duplex(pipe);
    let pty = pty.clone();
    tokio::spawn(async move { pty.serve(far).await });
    near.write_all(&encode_init(id, WindowSize::new(80, 24), command))
        .await
        .unwrap();
    near
}

async fn read_until(s: &mut DuplexStream, needle: &[u8]) {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(needle.len()).any(|w| w == needle) {
            return;
        }
        // Keep only what could be the start of a needle split across reads.
        let keep = seen.len().saturating_sub(needle.len());
        seen.drain(..keep);
    }
}

async fn type_line(s: &mut DuplexStream, line: &str) {
    let frame = encode_request(&Request {
        data: format!("{line}\r"),
        size: None,
    });
    s.write_all(&frame).await.unwrap();
}

/// 20 sessions, each running `setup` and then detached; RSS of this process and of the
/// shells.
async fn idle_sessions(label: &str, setup: &str) {
    let home = tempfile::tempdir().unwrap();
    let pty = service(Config::default(), home.path());
    let before = rss_kib("self");
    for _ in 0..20 {
        let mut s = connect(&pty, Uuid::new_v4(), "", 64 * 1024).await;
        type_line(&mut s, &format!("{setup}; echo done-$((2+3))")).await;
        read_until(&mut s, b"done-5").await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = pty.sessions();
    assert_eq!(ids.len(), 20);
    assert!(
        ids.iter()
            .all(|id| pty.stats(*id).unwrap().attachments == 0)
    );
    let after = rss_kib("self");
    let shells: u64 = ids
        .iter()
        .filter_map(|id| pty.stats(*id)?.pid)
        .map(|pid| rss_kib(&pid.to_string()))
        .sum();
    println!(
        "| 20 idle sessions, {label} | {:.1} MiB | {:.1} MiB | {:.0} KiB | {:.1} MiB |",
        mib(before),
        mib(after),
        (after.saturating_sub(before)) as f64 / 20.0,
        mib(shells),
    );
}

/// `cat /dev/urandom | base64` for `secs` with one attachment that reads `per_ms` bytes
/// a millisecond (0: never reads).
async fn flood(label: &str, per_ms: usize, secs: u64) {
    let home = tempfile::tempdir().unwrap();
    let config = Config {
        stall_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let pty = service(config, home.path());
    let id = Uuid::new_v4();
    let before = rss_kib("self");
    let mut s = connect(&pty, id, "cat /dev/urandom | base64", 64 * 1024).await;
    let start = Instant::now();
    let mut read = 0usize;
    let mut buf = vec![0u8; per_ms.max(1)];
    let mut peak_rss = before;
    while start.elapsed() < Duration::from_secs(secs) {
        if per_ms > 0 {
            read += s.read(&mut buf).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        peak_rss = peak_rss.max(rss_kib("self"));
    }
    let stats = pty.stats(id).unwrap();
    println!(
        "| {label} | {:.1} MiB/s read | peak queued {} KiB | RSS +{:.1} MiB (peak) |",
        read as f64 / 1048576.0 / start.elapsed().as_secs_f64(),
        stats.peak_queued_bytes / 1024,
        mib(peak_rss.saturating_sub(before)),
    );
}

/// `total` bytes of output through one attachment, read as fast as possible.
async fn throughput(total: usize) {
    let home = tempfile::tempdir().unwrap();
    let pty = service(Config::default(), home.path());
    let cmd = format!("stty raw -echo; head -c {total} /dev/zero | tr '\\0' x");
    let mut s = connect(&pty, Uuid::new_v4(), &cmd, 256 * 1024).await;
    let start = Instant::now();
    let cpu = cpu_time();
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += buf[..n].iter().filter(|&&b| b == b'x').count();
    }
    assert_eq!(got, total);
    let mb = total as f64 / 1048576.0;
    println!(
        "| {} MiB of output, one attachment (and the client) | {:.0} MiB/s | {:.0} MiB/s |",
        total / 1048576,
        mb / start.elapsed().as_secs_f64(),
        mb / (cpu_time() - cpu).as_secs_f64().max(1e-3),
    );
}

/// The screen model alone: `total` bytes of 80-column text lines.
fn model_only(total: usize) {
    let mut screen = Screen::new(WindowSize::new(80, 24), 1000);
    let line = format!("{}\r\n", "x".repeat(78));
    let chunk: Vec<u8> = line.as_bytes().repeat(4096 / line.len());
    let start = Instant::now();
    let cpu = cpu_time();
    let mut fed = 0;
    while fed < total {
        screen.feed(&chunk);
        fed += chunk.len();
    }
    let mb = fed as f64 / 1048576.0;
    println!(
        "| screen model alone, 80-column lines | {:.0} MiB/s | {:.0} MiB/s |",
        mb / start.elapsed().as_secs_f64(),
        mb / (cpu_time() - cpu).as_secs_f64().max(1e-3),
    );
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let run = |table: &str| table.contains(filter.as_str());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if run("idle") {
            println!("| case | RSS before | RSS after | per session | shells' RSS |");
            println!("|---|---|---|---|---|");
            idle_sessions("a prompt each", "true").await;
            idle_sessions("1000 rows of history each", "seq 1 5000").await;
            println!();
        }
        if run("flood") {
            println!("| case | reader | queue | memory |");
            println!("|---|---|---|---|");
            flood("stalled reader, 3 s of base64", 0, 3).await;
            flood("slow reader (16 KiB/ms), 3 s", 16 * 1024, 3).await;
            println!();
        }
        if run("throughput") {
            println!("| case | wall | per CPU second |");
            println!("|---|---|---|");
            model_only(50 * 1024 * 1024);
            throughput(100 * 1024 * 1024).await;
        }
    });
}
