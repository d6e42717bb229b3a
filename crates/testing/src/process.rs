//! Subprocesses with a time limit, and the small facts tests need about the machine.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tether_proto::ready::Ready;

/// What a finished command left.
#[derive(Debug)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Stdout, lossily decoded.
    pub stdout: String,
    /// Stderr, lossily decoded.
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` with `input` on stdin (then EOF), capturing its output; kills it and
/// panics if it has not finished within `limit`.
pub fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap().into(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

/// Runs `cmd` with `stdin` (or none) and captures its output; panics if it has not
/// finished within `limit` (the child is killed on drop, as `kill_on_drop` asks).
pub async fn run_async(
    mut cmd: tokio::process::Command,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Output {
    use tokio::io::AsyncWriteExt as _;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
            drop(w);
        });
    }
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {limit:?}"))
        .unwrap()
}

/// Waits until `path` holds the readiness JSON of `tether server --ready-file`;
/// panics when `child` exits first or after `limit`. Content that is not readiness JSON
/// (a file some earlier run left) is waited past: the server replaces it.
pub fn wait_ready_file(path: &Path, child: &mut Child, limit: Duration) -> Ready {
    let deadline = Instant::now() + limit;
    let mut seen = None;
    loop {
        // The server renames a complete file into place, so a read never sees half.
        if let Ok(bytes) = std::fs::read(path) {
            match serde_json::from_slice(&bytes) {
                Ok(ready) => return ready,
                Err(e) => seen = Some(format!("{e}: {}", String::from_utf8_lossy(&bytes))),
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited ({status}) before it was ready (see its stderr above)");
        }
        assert!(
            Instant::now() < deadline,
            "the server wrote no readiness JSON to {} within {limit:?} (it holds: {seen:?})",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `http://ADDR` for a bound HTTP address, as a test on this machine reaches it (a
/// wildcard address through loopback); this, not the access URL, is what tests dial.
pub(crate) fn http_url(addr: SocketAddr) -> String {
    let addr = match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new([127, 0, 0, 1].into(), addr.port()),
        _ => addr,
    };
    format!("http://{addr}")
}

/// A free TCP port on loopback (bound and released; a small race is accepted).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
