//! The NAT lab: real `tether` processes in network namespaces behind nftables NAT
//! (see `lab/mod.rs` for the topology). Needs root, `ip` (iproute2) and `nft` (nftables);
//! without them the tests fail and say what to install.
#![allow(clippy::unwrap_used)]

mod lab;

use std::time::Duration;

use lab::{HOST_A, Lab, Nat};

/// How long the agent's path may take to become direct after it learned of the client.
/// Usually milliseconds (its pings answer the client's CallMeMaybe, punching both NATs
/// at once), but the same race as below can hit the agent's side when its first ping
/// reaches site A's router before the client has sent anything there (seen in CI: 5.0 s).
/// Tighten both limits to 3 s once a ping from a new address is answered with a ping.
const AGENT_DIRECT_WITHIN: Duration = Duration::from_millis(7500);

/// How long the client's path may take to become direct after it learned of the agent.
/// Its first ping usually reaches site B's router before the agent has sent anything to
/// site A, so that router drops it (port-restricted cone). Answering the agent's ping
/// does not make the client ping back; while the session is idle its next ping goes out
/// with the first heartbeat (every 3 s) at least `DISCO_PING_INTERVAL` (5 s) after the
/// first, i.e. after ~6 s. Tighten this to 3 s once the client pings back sooner.
const CLIENT_DIRECT_WITHIN: Duration = Duration::from_millis(7500);

/// A command that keeps the session alive long enough for every ping round above.
const LONG_COMMAND: &[&str] = &["-v", "ssh", "dev", "--", "sh", "-c", "sleep 10; echo done"];

/// Removes ANSI escape sequences (in case the log is colored anyway).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since midnight of a tracing log line (`2026-01-02T03:04:05.678901Z  INFO …`).
fn timestamp(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The time and text of the first log line containing every one of `what`.
fn first(log: &str, what: &[&str]) -> Option<(f64, String)> {
    log.lines()
        .find(|l| what.iter().all(|w| l.contains(w)))
        .and_then(|l| Some((timestamp(l)?, l.to_string())))
}

/// Seconds from the first line matching `from` to the first matching `to`, and the
/// second line.
fn elapsed(log: &str, from: &[&str], to: &[&str]) -> Option<(f64, String)> {
    let (start, _) = first(log, from)?;
    let (end, line) = first(log, to)?;
    let mut took = end - start;
    if took < -43_200.0 {
        took += 86_400.0; // across midnight
    }
    Some((took, line))
}

/// `tether ssh dev -- echo hi` from site A works.
fn ssh_echo_works(lab: &Lab, cfg: &std::path::Path) {
    let out = lab.run(
        HOST_A,
        cfg,
        &["ssh", "dev", "--", "echo", "hi"],
        Duration::from_secs(60),
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hi\n"),
        "ssh from site A failed: {}\nagent log:\n{}",
        out.stderr,
        lab.log("agent")
    );
}

/// Runs [`LONG_COMMAND`] from site A and returns its (ANSI-free) stderr log.
fn long_session(lab: &Lab, cfg: &std::path::Path) -> String {
    let out = lab.run(HOST_A, cfg, LONG_COMMAND, Duration::from_secs(60));
    let log = strip_ansi(&out.stderr);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "done\n"),
        "the long ssh session failed:\n{log}\nagent log:\n{}",
        lab.log("agent")
    );
    log
}

/// Asserts nothing ever went direct, on either side, and the session used DERP.
fn assert_relayed_only(lab: &Lab, log: &str) {
    assert!(
        !log.contains("path now direct"),
        "the client went direct although it must not:\n{log}"
    );
    assert!(
        log.contains("DERP connected"),
        "the client never connected to DERP:\n{log}"
    );
    let agent = lab.log("agent");
    assert!(
        !agent.contains("path now direct"),
        "the agent went direct although it must not:\n{agent}"
    );
}

/// The id a `-v` CLI log says it joined the coordinator with.
fn client_id(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains("joined the coordinator id="))?;
    let id = line.split("joined the coordinator id=").nth(1)?;
    Some(id.split_whitespace().next()?.to_string())
}

#[test]
fn both_port_restricted_cone_goes_direct() {
    let mut lab = Lab::new("cone", Nat::PortRestrictedCone, Nat::PortRestrictedCone);
    let cfg = lab.workspace(&[]);
    ssh_echo_works(&lab, &cfg);
    let log = long_session(&lab, &cfg);
    let agent = lab.log("agent");
    // The client: direct to site B's public (NATed) address, the only one it can reach.
    let (took, line) =
        elapsed(&log, &["peer added"], &["path now direct via "]).unwrap_or_else(|| {
            panic!("the client's path never became direct:\n{log}\nagent log:\n{agent}")
        });
    assert!(
        line.contains("path now direct via 198.18.2.2:"),
        "direct, but not via site B's router: {line}\n{log}"
    );
    eprintln!("client: path direct {took:.3} s after it learned of the agent");
    assert!(
        took <= CLIENT_DIRECT_WITHIN.as_secs_f64(),
        "the client's path became direct only after {took:.3} s (limit {CLIENT_DIRECT_WITHIN:?}):\n{log}"
    );
    // The agent, towards this session's client: direct to site A's public address.
    let id = client_id(&log).unwrap_or_else(|| panic!("no client id in the -v log:\n{log}"));
    let (took, line) = elapsed(
        &agent,
        &["peer added", &id],
        &["path now direct via 198.18.1.2:", &id],
    )
    .unwrap_or_else(|| panic!("the agent's path to client {id} never became direct:\n{agent}"));
    eprintln!("agent: path direct {took:.3} s after it learned of the client: {line}");
    assert!(
        took <= AGENT_DIRECT_WITHIN.as_secs_f64(),
        "the agent's path became direct only after {took:.3} s (limit {AGENT_DIRECT_WITHIN:?}):\n{agent}"
    );
}

#[test]
fn udp_dropped_at_site_a_stays_relayed() {
    let mut lab = Lab::new("noudp", Nat::UdpDropped, Nat::PortRestrictedCone);
    let cfg = lab.workspace(&[]);
    ssh_echo_works(&lab, &cfg);
    let log = long_session(&lab, &cfg);
    assert_relayed_only(&lab, &log);
    // The drop really bites: STUN from site A got no answer, so no public endpoint.
    assert!(
        !log.lines()
            .any(|l| l.contains("our UDP endpoints") && l.contains("198.18.")),
        "site A learned a public UDP endpoint although its UDP is dropped:\n{log}"
    );
}

#[test]
fn server_blocking_direct_connections_stays_relayed() {
    let mut lab = Lab::new("block", Nat::PortRestrictedCone, Nat::PortRestrictedCone);
    let cfg = lab.workspace(&["--block-direct-connections"]);
    ssh_echo_works(&lab, &cfg);
    let log = long_session(&lab, &cfg);
    assert_relayed_only(&lab, &log);
    // Both sides got the server's word (not just an unlucky network).
    for (who, log) in [("client", log), ("agent", lab.log("agent"))] {
        assert!(
            log.lines()
                .any(|l| l.contains("direct connections disabled; DERP only")
                    && l.contains("by_server=true")),
            "the {who} never heard that the server blocks direct connections:\n{log}"
        );
    }
}
