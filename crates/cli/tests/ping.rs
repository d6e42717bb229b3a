//! `tether ping` against a real server and agent on loopback: the path turns direct
//! (p2p) and the verdict says so; with `--block-direct-connections` every pong is
//! relayed and the verdict names the server as the reason.
#![allow(clippy::unwrap_used)]

use tether_testing::Tether;

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

fn pong_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("pong from dev "))
        .collect()
}

#[test]
fn ping_on_loopback_goes_p2p() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = TETHER.run(&cfg, &["ping", "dev", "-n", "5"]);
    println!("{}", out.stdout);
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let pongs = pong_lines(&out.stdout);
    assert_eq!(pongs.len(), 5, "{}", out.stdout);
    for p in &pongs {
        assert!(
            p.starts_with("pong from dev p2p via ")
                || p.starts_with("pong from dev proxied via DERP(tether embedded relay) in "),
            "{p}"
        );
    }
    assert!(
        pongs.iter().any(|p| p.contains(" p2p via ")),
        "no p2p pong: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("p2p connection established in ")),
        "{}",
        out.stdout
    );
    // The established line comes right before the first p2p pong.
    let lines: Vec<&str> = out.stdout.lines().collect();
    let first_p2p = lines.iter().position(|l| l.contains(" p2p via ")).unwrap();
    assert!(first_p2p > 0 && lines[first_p2p - 1].starts_with("p2p connection established in "));
    for want in [
        "✔ home DERP region: 999 (tether embedded relay), connected",
        "✔ sent our node to the coordinator",
        "✔ received the agent's node from the coordinator",
        "    endpoints: ",
        "✔ WireGuard handshake ",
        "✔ You are connected directly (p2p)",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("❗"), "{}", out.stdout);
}

#[test]
fn ping_with_direct_blocked_by_the_server_stays_on_derp_and_says_why() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&["--block-direct-connections"]);
    let out = TETHER.run(&cfg, &["ping", "dev", "-n", "3", "-t", "5s"]);
    println!("{}", out.stdout);
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let pongs = pong_lines(&out.stdout);
    assert_eq!(pongs.len(), 3, "{}", out.stdout);
    for p in &pongs {
        assert!(
            p.starts_with("pong from dev proxied via DERP(tether embedded relay) in "),
            "{p}"
        );
    }
    assert!(!out.stdout.contains("p2p connection established"));
    assert!(
        out.stdout
            .contains("❗ You are connected via a DERP relay, not directly (p2p)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "the server blocks direct connections (it runs with --block-direct-connections)"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn ping_with_direct_disabled_on_the_client_names_the_client() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = TETHER.run(
        &cfg,
        &[
            "ping",
            "dev",
            "-n",
            "2",
            "--disable-direct-connections",
            "-v",
        ],
    );
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(pong_lines(&out.stdout).len(), 2, "{}", out.stdout);
    assert!(out.stdout.contains("proxied via DERP("), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("direct connections are disabled on this client"),
        "{}",
        out.stdout
    );
    // -v is the tailnet's debug log, on stderr.
    assert!(out.stderr.contains("DEBUG"), "{}", out.stderr);
}

#[test]
fn ping_an_unknown_workspace_fails() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = TETHER.run(&cfg, &["ping", "nope", "-n", "1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
}
