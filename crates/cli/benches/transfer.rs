//! Throughput: 1 GB over `tether port-forward` and over `tether ssh`, direct and relayed,
//! beside the same transfer over plain loopback TCP in the same run, so the figures are
//! compared as ratios. Run with `cargo bench -p tether-cli --bench transfer`
//! (`TETHER_BENCH_BYTES` overrides the size, `TETHER_BENCH_PATHS=direct` or `relayed`
//! runs one kind). Starts a real server and agent on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tether_testing::{ServerProcess, Tether};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// A sink that counts bytes until EOF, then answers with the count.
fn sink() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n: u64 = 0;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes());
            });
        }
    });
    (port, h)
}

fn push(port: u16, bytes: u64) -> Duration {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let buf = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    let took = start.elapsed();
    assert_eq!(
        u64::from_be_bytes(n),
        bytes,
        "the sink got a different byte count"
    );
    took
}

fn main() {
    let bytes: u64 = std::env::var("TETHER_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000_000);
    // A process of its own, as in production: the relayed legs run through its relay.
    let mut server_cmd = Command::new(TETHER.bin());
    server_cmd.env("TETHER_LOG", "warn").stderr(Stdio::null());
    let server = ServerProcess::spawn(tempfile::tempdir().unwrap(), server_cmd, &[]);
    let url = server.url.clone();
    let cfg = server.config_dir("bench");
    let run = |args: &[&str]| {
        let o = Command::new(TETHER.bin())
            .arg("--global-config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&[
        "login",
        &url,
        "--first-user-username",
        "bench",
        "--first-user-email",
        "b@example.com",
        "--first-user-password",
        "benchbench",
    ]);
    let created = run(&["create", "dev"]);
    let token = created
        .split("TETHER_AGENT_TOKEN=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let _agent = Proc(
        Command::new(TETHER.bin())
            .args(["agent", "--url", &url, "--token", &token])
            .env("TETHER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&["list"]).contains("connected ") {
        assert!(Instant::now() < deadline, "agent never connected");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (sink_port, _) = sink();
    let plain = push(sink_port, bytes);

    let mut rows = vec![("plain loopback TCP".to_string(), plain)];
    // Each tether figure twice: the direct path (loopback hole punching succeeds at once)
    // and relayed through the built-in DERP server (--disable-direct-connections).
    for (label, extra) in [
        ("direct", None),
        ("relayed", Some("--disable-direct-connections")),
    ] {
        // `TETHER_BENCH_PATHS=direct` (or `relayed`) runs one kind only, e.g. to profile it.
        if std::env::var("TETHER_BENCH_PATHS").is_ok_and(|p| !p.contains(label)) {
            continue;
        }
        let local = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pf = Command::new(TETHER.bin());
        pf.arg("--global-config").arg(&cfg).args(extra);
        let mut pf = pf
            .args([
                "port-forward",
                "dev",
                "--tcp",
                &format!("{local}:{sink_port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pf_out = BufReader::new(pf.stdout.take().unwrap());
        let pf = Proc(pf);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in pf_out.lines().map_while(Result::ok) {
                if line == "Ready!" {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("port-forward never said Ready!");
        // A first small push lets the path settle (direct needs one disco round trip).
        push(local, 1_000_000);
        rows.push((format!("tether port-forward ({label})"), push(local, bytes)));
        drop(pf);

        // ssh: stream the bytes into `cat > /dev/null` on the agent, session setup included.
        let mut ssh = Command::new(TETHER.bin());
        ssh.arg("--global-config").arg(&cfg).args(extra);
        let mut ssh = ssh
            .args(["ssh", "dev", "--", "cat > /dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = ssh.stdin.take().unwrap();
        let buf = vec![0x5au8; 256 * 1024];
        let start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            stdin.write_all(&buf[..k]).unwrap();
            left -= k as u64;
        }
        drop(stdin);
        assert!(ssh.wait().unwrap().success());
        rows.push((
            format!("tether ssh, cat > /dev/null ({label})"),
            start.elapsed(),
        ));
    }
    drop(server);

    let mbit = |d: Duration| bytes as f64 * 8.0 / d.as_secs_f64() / 1e6;
    println!(
        "\n{:.0} MB per row over loopback (tether: WireGuard end to end), one run:\n",
        bytes as f64 / 1e6
    );
    println!(
        "{:<42} {:>9} {:>12} {:>10}",
        "path", "seconds", "Mbit/s", "vs plain"
    );
    for (name, d) in &rows {
        println!(
            "{:<42} {:>9.2} {:>12.0} {:>9.3}x",
            name,
            d.as_secs_f64(),
            mbit(*d),
            plain.as_secs_f64() / d.as_secs_f64()
        );
    }
}
