//! The agent's web terminal (tailnet port 2) and HTTP API (port 4) through the real
//! server, agent and tailnet: `tether port-forward` carries local TCP ports to them.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tether_agent::pty::WindowSize;
use tether_agent::reconnecting_pty::wire::{Request, encode_init, encode_request};
use tether_testing::{Tether, free_tcp_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));
const BOUND: Duration = Duration::from_secs(30);

/// `tether port-forward dev --tcp L:R…` until it says Ready; killed on drop.
struct Forward(Child);

impl Forward {
    fn start(cfg: &std::path::Path, pairs: &[(u16, u16)]) -> Self {
        let mut cmd = std::process::Command::new(TETHER.bin());
        cmd.arg("--global-config")
            .arg(cfg)
            .env_remove("TETHER_URL")
            .env_remove("TETHER_SESSION_TOKEN")
            .args(["port-forward", "dev"]);
        for (l, r) in pairs {
            cmd.arg("--tcp").arg(format!("{l}:{r}"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = std::thread::spawn(move || {
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l == "Ready!")
        });
        let deadline = Instant::now() + BOUND;
        while !ready.is_finished() {
            assert!(Instant::now() < deadline, "port-forward never said Ready!");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ready.join().unwrap(), "port-forward ended before Ready!");
        Self(child)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn read_until(s: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut buf = vec![0u8; 16 * 1024];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(seen)))
            .unwrap();
        assert!(n > 0, "closed before {needle:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

async fn type_line(s: &mut TcpStream, line: &str) {
    let frame = encode_request(&Request {
        data: format!("{line}\r"),
        size: None,
    });
    s.write_all(&frame).await.unwrap();
}

#[test]
fn web_terminal_and_http_api_through_the_tailnet() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let (pty_port, api_port) = (free_tcp_port(), free_tcp_port());
    let _fwd = Forward::start(&cfg, &[(pty_port, 2), (api_port, 4)]);
    // Something listening in the "workspace" (the agent runs on this host).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listening = listener.local_addr().unwrap().port();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("http://127.0.0.1:{api_port}");
        let ports: serde_json::Value = reqwest::get(format!("{base}/api/v0/listening-ports"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            ports["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == listening && p["network"] == "tcp"),
            "{ports}"
        );
        let res = reqwest::get(format!("{base}/api/v0/netcheck"))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let report: serde_json::Value = res.json().await.unwrap();
        assert!(report.get("PreferredDERP").is_some(), "{report}");
        let res = reqwest::get(format!("{base}/api/v0/nope")).await.unwrap();
        assert_eq!(res.status(), 404);

        // A session, then the same one again from a new connection.
        let id = Uuid::new_v4();
        let size = WindowSize::new(100, 30);
        let mut a = TcpStream::connect(("127.0.0.1", pty_port)).await.unwrap();
        a.write_all(&encode_init(id, size, "")).await.unwrap();
        let mut seen = Vec::new();
        type_line(&mut a, "export MARK=e2e; echo first-$((6*7)); stty size").await;
        read_until(&mut a, &mut seen, "first-42").await;
        read_until(&mut a, &mut seen, "30 100").await;
        drop(a);

        let mut b = TcpStream::connect(("127.0.0.1", pty_port)).await.unwrap();
        b.write_all(&encode_init(id, size, "")).await.unwrap();
        let mut seen = Vec::new();
        // The repaint shows the earlier output, and it is the same shell.
        read_until(&mut b, &mut seen, "first-42").await;
        type_line(&mut b, "echo mark=$MARK; exit").await;
        read_until(&mut b, &mut seen, "mark=e2e").await;
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, b.read_to_end(&mut rest))
            .await
            .expect("exit did not close the connection")
            .unwrap();
    });
    drop(listener);
}
