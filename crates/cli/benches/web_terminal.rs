//! The web terminal against `tether ssh`, on loopback with a real server and agent:
//! keystroke echo round trips (one byte to `cat` in raw mode and back; the web terminal's
//! WebSocket and `tether ssh -t` interleaved, round by round, medians), the throughput of
//! a large `cat` through the terminal WebSocket (and through `tether ssh` in the same run),
//! and the agent's resident memory with 20 idle sessions. Run with
//! `cargo bench -p tether-cli --bench web_terminal` (`TETHER_BENCH_BYTES` sets the `cat`
//! size, default 100 MB; `TETHER_BENCH_ROUNDS` the echo rounds, default 200).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether_testing::{ServerProcess, Tether};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

fn bin() -> &'static str {
    TETHER.bin()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Term {
    ws: Ws,
    out: Vec<u8>,
}

impl Term {
    async fn open(url: &str, token: &str, agent: &str) -> Self {
        let u = format!(
            "{}/api/v2/workspaceagents/{agent}/pty?reconnect={}&width=120&height=40",
            url.replace("http://", "ws://"),
            Uuid::new_v4()
        );
        let mut req = u.into_client_request().unwrap();
        req.headers_mut()
            .insert("Tether-Session-Token", token.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        Self {
            ws,
            out: Vec::new(),
        }
    }

    async fn send(&mut self, data: &str) {
        let frame = serde_json::json!({ "data": data }).to_string();
        self.ws
            .send(Message::Binary(frame.into_bytes().into()))
            .await
            .unwrap();
    }

    /// Reads until `needle` appears after `from`; the index after it.
    async fn wait_for(&mut self, needle: &[u8], from: usize) -> usize {
        let mut start = from.min(self.out.len());
        loop {
            if let Some(i) = self.out[start..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                return start + i + needle.len();
            }
            start = self.out.len().saturating_sub(needle.len()).max(start);
            match tokio::time::timeout(Duration::from_secs(60), self.ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => self.out.extend_from_slice(&b),
                Ok(Some(Ok(_))) => {}
                other => panic!("terminal ended waiting for {needle:?}: {other:?}"),
            }
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn main() {
    let bytes: usize = std::env::var("TETHER_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000);
    let rounds: usize = std::env::var("TETHER_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let mut server_cmd = Command::new(bin());
    server_cmd.env("TETHER_LOG", "warn").stderr(Stdio::null());
    let _server = ServerProcess::spawn(tempfile::tempdir().unwrap(), server_cmd, &[]);
    let url = _server.url.clone();
    let run = |args: &[&str]| {
        let o = Command::new(bin())
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
    let token = created.split("--token ").nth(1).unwrap().trim().to_string();
    let agent = Proc(
        Command::new(bin())
            .args(["agent", "--url", &url, "--token", &token])
            .env("TETHER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent_pid = agent.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&["list"]).contains("connected ") {
        assert!(Instant::now() < deadline, "agent never connected");
        std::thread::sleep(Duration::from_millis(100));
    }
    let list: serde_json::Value = serde_json::from_str(&run(&["list", "-o", "json"])).unwrap();
    let agent_id = list[0]["agent_id"].as_str().unwrap().to_string();
    let session = std::fs::read_to_string(cfg.join("session"))
        .unwrap()
        .trim()
        .to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The agent before any terminal session.
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_kib(agent_pid);

    // ---- keystroke echo: web terminal vs tether ssh -t, interleaved ----
    let mut term = rt.block_on(Term::open(&url, &session, &agent_id));
    rt.block_on(async {
        term.send("stty raw -echo; printf 'READY''MARK'; exec cat\r")
            .await;
        let at = term.wait_for(b"READYMARK", 0).await;
        term.send("S").await;
        term.wait_for(b"S", at).await;
    });
    let mut ssh = Command::new(bin())
        .arg("--global-config")
        .arg(&cfg)
        .args([
            "ssh",
            "-t",
            "dev",
            "--",
            "stty raw -echo; printf 'READY''MARK'; exec cat",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ssh_in = ssh.stdin.take().unwrap();
    let mut ssh_out = ssh.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(9).any(|w| w == b"READYMARK") {
        let n = ssh_out.read(&mut buf).unwrap();
        assert!(n > 0, "tether ssh ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let _ssh = Proc(ssh);
    let mut ssh_key = |c: u8| {
        let start = Instant::now();
        ssh_in.write_all(&[c]).unwrap();
        ssh_in.flush().unwrap();
        loop {
            let n = ssh_out.read(&mut buf).unwrap();
            assert!(n > 0, "tether ssh ended");
            if buf[..n].contains(&c) {
                return start.elapsed();
            }
        }
    };
    let (mut web, mut via_ssh) = (Vec::new(), Vec::new());
    for i in 0..rounds + 10 {
        let c = b'a' + (i % 26) as u8;
        let w = rt.block_on(async {
            let from = term.out.len();
            let start = Instant::now();
            term.send(std::str::from_utf8(&[c]).unwrap()).await;
            term.wait_for(&[c], from).await;
            start.elapsed()
        });
        let s = ssh_key(c);
        // The first rounds warm both paths (direct path, caches) and are not counted.
        if i >= 10 {
            web.push(w);
            via_ssh.push(s);
        }
    }
    let (web_p50, ssh_p50) = (median(&mut web), median(&mut via_ssh));
    let p90 = |v: &[Duration]| v[v.len() * 9 / 10];
    let (web_p90, ssh_p90) = (p90(&web), p90(&via_ssh));

    // ---- a large cat: web terminal vs tether ssh ----
    let file = dir.path().join("big.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut line = [0u8; 38];
        let mut written = 0;
        while written < bytes {
            for b in &mut line {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let l = format!("{}\n", hex::encode(line));
            f.write_all(l.as_bytes()).unwrap();
            written += l.len();
        }
    }
    let size = std::fs::metadata(&file).unwrap().len() as f64;
    let web_cat = rt.block_on(async {
        let mut t = Term::open(&url, &session, &agent_id).await;
        t.send(&format!(
            "stty -opost -echo; printf 'BEGIN''MARK\\n'; cat {}; printf 'END''MARK\\n'\r",
            file.display()
        ))
        .await;
        let begin = t.wait_for(b"BEGINMARK\n", 0).await;
        let start = Instant::now();
        let end = t.wait_for(b"ENDMARK\n", begin).await;
        let took = start.elapsed();
        assert_eq!((end - begin - 8) as f64, size, "the cat lost bytes");
        took
    });
    let ssh_cat = {
        let start = Instant::now();
        let o = Command::new(bin())
            .arg("--global-config")
            .arg(&cfg)
            .args(["ssh", "dev", "--", "cat", file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.stdout.len() as f64, size);
        start.elapsed()
    };

    // ---- agent memory with 20 idle sessions ----
    drop(term);
    std::thread::sleep(Duration::from_secs(1));
    let rss_base = rss_kib(agent_pid);
    let terms = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..20 {
            let mut t = Term::open(&url, &session, &agent_id).await;
            t.send(&format!("echo idle-{i}-$((1+1))\r")).await;
            t.wait_for(format!("idle-{i}-2").as_bytes(), 0).await;
            v.push(t);
        }
        v
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss_attached = rss_kib(agent_pid);
    rt.block_on(async {
        for mut t in terms {
            let _ = t.ws.close(None).await;
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss_detached = rss_kib(agent_pid);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "\nweb terminal vs tether ssh on loopback, one run ({rounds} echo rounds, interleaved):\n"
    );
    println!("{:<48} {:>12} {:>12}", "", "web terminal", "tether ssh");
    println!(
        "{:<48} {:>9.3} ms {:>9.3} ms",
        "keystroke echo round trip, median",
        ms(web_p50),
        ms(ssh_p50)
    );
    println!(
        "{:<48} {:>9.3} ms {:>9.3} ms",
        "keystroke echo round trip, 90th percentile",
        ms(web_p90),
        ms(ssh_p90)
    );
    println!(
        "{:<48} {:>7.1} MB/s {:>7.1} MB/s",
        format!("cat of {:.0} MB", size / 1e6),
        size / 1e6 / web_cat.as_secs_f64(),
        size / 1e6 / ssh_cat.as_secs_f64()
    );
    println!("\nagent resident memory (VmRSS; the shells are processes of their own):\n");
    println!(
        "{:<48} {:>9} KiB",
        "before any terminal session", rss_before
    );
    println!(
        "{:<48} {:>9} KiB",
        "after the echo and cat sessions", rss_base
    );
    println!(
        "{:<48} {:>9} KiB",
        "20 more sessions, attached and idle", rss_attached
    );
    println!(
        "{:<48} {:>9} KiB",
        "the same 20, detached (alive, 5 min expiry)", rss_detached
    );
    println!(
        "{:<48} {:>9.0} KiB",
        "per idle session (attached)",
        (rss_attached as f64 - rss_base as f64) / 20.0
    );
}
