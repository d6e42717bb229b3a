//! `tether ping`'s closing summary against a real server and agent on loopback: the
//! counts, loss, round trips and path after `-n N`, and the same summary after Ctrl-C.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tether_testing::Tether;

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// The summary block: the lines from `--- dev ping statistics ---` to `path: …`.
fn summary(stdout: &str) -> Vec<&str> {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "--- dev ping statistics ---")
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.starts_with("path: "))
            .unwrap_or_else(|| panic!("no path line in:\n{stdout}"));
    lines[start..=end].to_vec()
}

/// `a/b/c` of `round-trip min/avg/max = a/b/c ms`, checked to be ordered.
fn round_trips(line: &str) -> [f64; 3] {
    let nums = line
        .strip_prefix("round-trip min/avg/max = ")
        .and_then(|r| r.strip_suffix(" ms"))
        .unwrap_or_else(|| panic!("{line:?}"));
    let v: Vec<f64> = nums.split('/').map(|n| n.parse().unwrap()).collect();
    assert_eq!(v.len(), 3, "{line}");
    assert!(v[0] > 0.0 && v[0] <= v[1] && v[1] <= v[2], "{line}");
    [v[0], v[1], v[2]]
}

#[test]
fn ping_ends_with_counts_round_trips_and_the_path() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = TETHER.run(&cfg, &["ping", "dev", "-n", "4"]);
    println!("{}", out.stdout);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = summary(&out.stdout);
    assert_eq!(s.len(), 4, "{s:?}");
    assert_eq!(s[1], "4 pings sent, 4 pongs received, 0% loss");
    round_trips(s[2]);
    // Each path is listed with its count, and the counts add up to the pongs.
    let paths = s[3].strip_prefix("path: ").unwrap();
    let total: u32 = paths
        .split(", ")
        .map(|p| {
            assert!(
                p.starts_with("p2p via 127.0.0.1:")
                    || p.starts_with("DERP(tether embedded relay) ("),
                "{p}"
            );
            let n = p.rsplit_once(" (").unwrap().1;
            n.split(' ').next().unwrap().parse::<u32>().unwrap()
        })
        .sum();
    assert_eq!(total, 4, "{paths}");
    // The last pong's path, which the pong lines show, is among them.
    let last = out
        .stdout
        .lines()
        .rfind(|l| l.starts_with("pong from dev "))
        .unwrap();
    if last.contains(" p2p via ") {
        assert!(paths.contains("p2p via "), "{paths}");
    }
}

#[test]
fn relayed_pings_name_derp_as_the_path() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&["--block-direct-connections"]);
    let out = TETHER.run(&cfg, &["ping", "dev", "-n", "2"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = summary(&out.stdout);
    assert_eq!(s[1], "2 pings sent, 2 pongs received, 0% loss");
    round_trips(s[2]);
    assert_eq!(s[3], "path: DERP(tether embedded relay) (2 pongs)");
}

#[test]
fn ctrl_c_stops_the_pings_and_prints_the_summary() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let mut child = Command::new(TETHER.bin())
        .arg("--global-config")
        .arg(&cfg)
        .args(["ping", "dev", "-n", "1000"])
        .env_remove("TETHER_URL")
        .env_remove("TETHER_SESSION_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut pongs = 0;
    while pongs < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("fewer than 2 pongs in 30 s: {lines:?}"));
        if line.starts_with("pong from dev ") {
            pongs += 1;
        }
        lines.push(line);
    }
    let sigint = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sigint.success());
    // Everything after Ctrl-C arrives within a few seconds, then the process exits.
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("ping kept running after Ctrl-C: {lines:?}");
            }
        }
    }
    let status = child.wait().unwrap();
    let stdout = lines.join("\n");
    println!("{stdout}");
    assert_eq!(status.code(), Some(0), "{stdout}");
    let pongs = lines
        .iter()
        .filter(|l| l.starts_with("pong from dev "))
        .count();
    assert!((2..1000).contains(&pongs), "{stdout}");
    let s = summary(&stdout);
    assert_eq!(
        s[1],
        format!("{pongs} pings sent, {pongs} pongs received, 0% loss")
    );
    round_trips(s[2]);
    // The diagnostics still follow.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("✔ received the agent's node")),
        "{stdout}"
    );
}
