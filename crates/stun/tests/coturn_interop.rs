//! Interop: coturn's stock RFC 5389 client (`turnutils_stunclient`) against our server.
//!
//! Needs the `coturn` package (Debian/Ubuntu: `apt-get install coturn`), which CI
//! installs. A missing binary is a test failure, not a skip, so interop cannot silently
//! stop being tested.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use tether_stun::Server;
use tokio::process::Command;
use tokio::time::timeout;

const CLIENT: &str = "turnutils_stunclient";
const BOUND: Duration = Duration::from_secs(10);

/// Pulls every `IP:port` token out of the client's output, e.g. from
/// `UDP reflexive addr: 127.0.0.1:45678`.
fn socket_addrs_in(text: &str) -> Vec<SocketAddr> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter_map(|token| token.trim_end_matches('.').parse::<SocketAddr>().ok())
        .collect()
}

#[tokio::test]
async fn turnutils_stunclient_gets_reflexive_address() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .spawn();
    let port = server.local_addr().port();

    let child = Command::new(CLIENT)
        .arg("-p")
        .arg(port.to_string())
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // If the timeout below fires, dropping the future drops the child: kill it.
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{CLIENT}` not found: install coturn (`apt-get install -y coturn`) to run the STUN interop test"
        ),
        Err(err) => panic!("cannot run `{CLIENT}`: {err}"),
    };
    let output = timeout(BOUND, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`{CLIENT}` did not finish within {BOUND:?} (killed)"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{CLIENT} stdout:\n{stdout}\nstderr:\n{stderr}");

    assert!(
        output.status.success(),
        "`{CLIENT}` failed: {}",
        output.status
    );
    let reflexive: Vec<SocketAddr> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|line| line.contains("reflexive"))
        .flat_map(socket_addrs_in)
        .collect();
    assert!(
        !reflexive.is_empty(),
        "no reflexive address in the client's output"
    );
    for addr in &reflexive {
        assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{addr}");
        assert_ne!(addr.port(), 0, "{addr}");
        assert_ne!(
            addr.port(),
            port,
            "client reported the server's own port: {addr}"
        );
    }
    let stats = server.stats().snapshot();
    assert!(
        stats.answered >= 1,
        "server did not count the request: {stats:?}"
    );
    assert_eq!(
        stats.ignored, 0,
        "server rejected coturn's request: {stats:?}"
    );
    server.shutdown().await;
}
