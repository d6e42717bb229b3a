//! The NAT lab: real `tether` processes in network namespaces behind nftables NAT
//! (see `tether_testing::lab` for the topology). Needs root, `ip` (iproute2) and `nft` (nftables);
//! without them the tests fail and say what to install.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use tether_testing::Tether;
use tether_testing::lab::{HOST_A, HOST_B, Lab, Nat, elapsed, first_after, now_of_day, strip_ansi};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// How long the agent's path may take to become direct after it learned of the client
/// (the bound). Milliseconds in practice: whichever side's first ping is dropped
/// by the other's port-restricted NAT, the other side's ping gets through and is pinged
/// back at once (`pathsel::PING_BACK_INTERVAL`), and that ping back crosses.
const AGENT_DIRECT_WITHIN: Duration = Duration::from_secs(3);

/// The same for the client's path.
const CLIENT_DIRECT_WITHIN: Duration = Duration::from_secs(3);

/// How long the client's path may take to become direct when the agent is behind a full
/// cone: its first ping gets in, so there is no race (whatever NAT the client is behind).
const FULL_CONE_DIRECT_WITHIN: Duration = Duration::from_secs(3);

/// How long a client's direct path may stay in use after the path died: the next
/// heartbeat (every 3 s) and its retry go unanswered for 1 s (`BEST_PONG_DEADLINE`).
/// The test cuts right after a pong, the worst phase: 4.0 s expected.
const FALLBACK_WITHIN: Duration = Duration::from_secs(5);

/// How long the path may take to become direct again once UDP flows again: the next
/// heartbeat (every 3 s) still pings the old address, and its pong trusts it again.
/// Measured 1.0 s (the test's phase); 3 s at worst.
const RETURN_WITHIN: Duration = Duration::from_secs(5);

/// A command that keeps the session alive long enough for every ping round above.
const LONG_COMMAND: &[&str] = &["-v", "ssh", "dev", "--", "sh", "-c", "sleep 10; echo done"];

/// `tether ssh dev -- echo hi` from site A works.
fn ssh_echo_works(lab: &Lab, cfg: &Path) {
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
fn long_session(lab: &Lab, cfg: &Path) -> String {
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

/// Asserts that `log` has a "path now direct via `via`…" line at most `limit` after its
/// first line matching `from`; returns the time taken.
fn assert_direct_within(log: &str, from: &[&str], via: &str, limit: Duration, who: &str) -> f64 {
    let (took, line) = elapsed(log, from, &["path now direct via "])
        .unwrap_or_else(|| panic!("the {who}'s path never became direct:\n{log}"));
    assert!(
        line.contains(&format!("path now direct via {via}")),
        "the {who} went direct, but not via {via}: {line}\n{log}"
    );
    eprintln!("{who}: path direct {took:.3} s after it learned of its peer: {line}");
    assert!(
        took <= limit.as_secs_f64(),
        "the {who}'s path became direct only after {took:.3} s (limit {limit:?}):\n{log}"
    );
    took
}

/// Runs `tether ping dev -n 5` from site A, prints its output under a header naming
/// `scenario` (see it with `--no-capture`), asserts some pong came back, returns it.
fn ping_report(lab: &Lab, cfg: &Path, scenario: &str) -> String {
    let out = lab.run(
        HOST_A,
        cfg,
        &["ping", "dev", "-n", "5"],
        Duration::from_secs(90),
    );
    eprintln!(
        "==== {scenario}: tether ping dev -n 5 (exit {}) ====\n{}{}==== end of {scenario} ====",
        out.code, out.stdout, out.stderr
    );
    assert_eq!(out.code, 0, "tether ping got no pong ({scenario})");
    out.stdout
}

/// Asserts what `tether netcheck` in host `role` says about its NAT: whether the
/// mapping varies by destination IP (two STUN servers are in the map, see
/// `Lab::start_server`).
fn assert_mapping_varies(lab: &Lab, role: &str, cfg: &Path, varies: bool) {
    let out = lab.run(
        role,
        cfg,
        &["netcheck", "--format", "json"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "netcheck in {role} failed: {}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("netcheck printed no JSON ({e}): {}", out.stdout));
    eprintln!(
        "netcheck in {role}: MappingVariesByDestIP={} GlobalV4={}",
        report["MappingVariesByDestIP"], report["GlobalV4"]
    );
    assert_eq!(
        report["MappingVariesByDestIP"],
        serde_json::Value::Bool(varies),
        "netcheck in {role}:\n{}",
        out.stdout
    );
}

/// Hard NAT on site A (against `site_b`) keeps the session relayed, and it works.
/// `tether ping` names the side(s) behind a hard NAT.
fn hard_nat_stays_relayed(tag: &str, site_b: Nat, scenario: &str) {
    let mut lab = Lab::new(TETHER, tag, Nat::Symmetric, site_b);
    let cfg = lab.workspace(&[]);
    ssh_echo_works(&lab, &cfg);
    let log = long_session(&lab, &cfg);
    assert_relayed_only(&lab, &log);
    let ping = ping_report(&lab, &cfg, scenario);
    assert!(
        ping.contains("❗ You are connected via a DERP relay"),
        "tether ping does not say the connection is relayed:\n{ping}"
    );
    let agent_hard = matches!(site_b, Nat::Symmetric);
    for (side, hard) in [("this client", true), ("the agent", agent_hard)] {
        assert_eq!(
            ping.contains(&format!("{side} is behind a hard NAT")),
            hard,
            "tether ping is wrong about whether {side} is behind a hard NAT:\n{ping}"
        );
    }
}

#[test]
fn both_port_restricted_cone_goes_direct() {
    let mut lab = Lab::new(
        TETHER,
        "cone",
        Nat::PortRestrictedCone,
        Nat::PortRestrictedCone,
    );
    let cfg = lab.workspace(&[]);
    assert_mapping_varies(&lab, HOST_A, &cfg, false);
    ssh_echo_works(&lab, &cfg);
    let log = long_session(&lab, &cfg);
    let agent = lab.log("agent");
    // The client: direct to site B's public (NATed) address, the only one it can reach.
    assert_direct_within(
        &log,
        &["peer added"],
        "198.18.2.2:",
        CLIENT_DIRECT_WITHIN,
        "client",
    );
    // The agent, towards this session's client: direct to site A's public address.
    let id = client_id(&log).unwrap_or_else(|| panic!("no client id in the -v log:\n{log}"));
    let about_client: Vec<&str> = agent.lines().filter(|l| l.contains(&id)).collect();
    assert_direct_within(
        &about_client.join("\n"),
        &["peer added"],
        "198.18.1.2:",
        AGENT_DIRECT_WITHIN,
        "agent",
    );
    ping_report(&lab, &cfg, "both port-restricted cone");
}

#[test]
fn udp_dropped_at_site_a_stays_relayed() {
    let mut lab = Lab::new(TETHER, "noudp", Nat::UdpDropped, Nat::PortRestrictedCone);
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
    let ping = ping_report(&lab, &cfg, "UDP dropped at site A");
    assert!(
        ping.contains("no STUN server answered this client over UDP"),
        "ping did not say that UDP is blocked on the client's side:\n{ping}"
    );
}

#[test]
fn server_blocking_direct_connections_stays_relayed() {
    let mut lab = Lab::new(
        TETHER,
        "block",
        Nat::PortRestrictedCone,
        Nat::PortRestrictedCone,
    );
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
    ping_report(&lab, &cfg, "server blocks direct connections");
}

/// The lab's NAT kinds are what they claim, as netcheck sees them with two STUN servers:
/// behind the symmetric NAT each STUN server sees another port, behind the full cone
/// both see the same. (The port-restricted cone: `both_port_restricted_cone_goes_direct`.)
#[test]
fn netcheck_tells_symmetric_from_cone() {
    let mut lab = Lab::new(TETHER, "kinds", Nat::Symmetric, Nat::FullCone);
    let url = lab.start_server(&[]);
    let cfg = lab.login(&url);
    assert_mapping_varies(&lab, HOST_A, &cfg, true);
    // The login lives in a file, so site B's host can use it too.
    assert_mapping_varies(&lab, HOST_B, &cfg, false);
}

#[test]
fn symmetric_to_full_cone_goes_direct() {
    let mut lab = Lab::new(TETHER, "symfull", Nat::Symmetric, Nat::FullCone);
    let cfg = lab.workspace(&[]);
    ssh_echo_works(&lab, &cfg);
    let log = long_session(&lab, &cfg);
    // The client pings the agent's public address from a fresh port of its symmetric
    // NAT; the full cone lets that in, and the pong goes back the same way.
    assert_direct_within(
        &log,
        &["peer added"],
        "198.18.2.2:",
        FULL_CONE_DIRECT_WITHIN,
        "client",
    );
    ping_report(&lab, &cfg, "symmetric (A) to full cone (B)");
}

#[test]
fn both_symmetric_stays_relayed() {
    hard_nat_stays_relayed("symsym", Nat::Symmetric, "both symmetric");
}

#[test]
fn symmetric_to_port_restricted_cone_stays_relayed() {
    hard_nat_stays_relayed(
        "symcone",
        Nat::PortRestrictedCone,
        "symmetric (A) to port-restricted cone (B)",
    );
}

/// How many numbered lines the cut test's session prints, one every ~20 ms (~25 s).
const CUT_LINES: usize = 1250;

/// How long site B's router drops UDP in the middle of the session.
const CUT_FOR: Duration = Duration::from_secs(8);

/// A direct path that dies mid-session (site B's firewall starts dropping UDP) falls
/// back to DERP without losing a byte of the session, and goes direct again once UDP
/// flows again.
#[test]
fn direct_path_cut_mid_session_falls_back_and_returns() {
    let mut lab = Lab::new(
        TETHER,
        "cut",
        Nat::PortRestrictedCone,
        Nat::PortRestrictedCone,
    );
    let cfg = lab.workspace(&[]);
    let count =
        format!("i=1; while [ $i -le {CUT_LINES} ]; do echo $i; i=$((i+1)); sleep 0.02; done");
    lab.spawn(
        "session",
        HOST_A,
        &cfg,
        &["-v", "ssh", "dev", "--", "sh", "-c", &count],
        "debug",
    );
    assert!(
        lab.wait_for_log(
            "session",
            "path now direct via",
            CLIENT_DIRECT_WITHIN + Duration::from_secs(10)
        ),
        "the session's path never became direct:\n{}",
        lab.log("session")
    );
    let cut_at = now_of_day();
    lab.cut_udp("rb");
    std::thread::sleep(CUT_FOR);
    let restored_at = now_of_day();
    lab.restore_udp("rb");
    let code = lab.wait("session", Duration::from_secs(90));
    let log = strip_ansi(&lab.log("session"));
    let agent = lab.log("agent");
    assert_eq!(code, 0, "the session failed:\n{log}\nagent log:\n{agent}");

    let (fallback, line) = first_after(&log, cut_at, "path now DERP(").unwrap_or_else(|| {
        panic!("the client never left the dead direct path:\n{log}\nagent log:\n{agent}")
    });
    eprintln!("client: fell back {fallback:.3} s after UDP was cut: {line}");
    if let Some((took, _)) = first_after(&agent, cut_at, "path now DERP(") {
        eprintln!("agent: fell back {took:.3} s after UDP was cut (not asserted)");
    }
    assert!(
        fallback <= FALLBACK_WITHIN.as_secs_f64(),
        "the client fell back to DERP only {fallback:.3} s after the cut (limit {FALLBACK_WITHIN:?}):\n{log}"
    );
    let (back, line) = first_after(&log, restored_at, "path now direct via ").unwrap_or_else(|| {
        panic!("the client never went direct again after UDP was restored:\n{log}\nagent log:\n{agent}")
    });
    eprintln!("client: direct again {back:.3} s after UDP was restored: {line}");
    assert!(
        line.contains("path now direct via 198.18.2.2:"),
        "direct again, but not via site B's router: {line}"
    );
    assert!(
        back <= RETURN_WITHIN.as_secs_f64(),
        "the client went direct again only {back:.3} s after UDP was restored (limit {RETURN_WITHIN:?}):\n{log}"
    );

    // Every line arrived once, in order: nothing lost or repeated across both switches.
    let out = lab.output("session");
    let numbers: Vec<usize> = out.lines().map(|l| l.trim().parse().unwrap_or(0)).collect();
    let expected: Vec<usize> = (1..=CUT_LINES).collect();
    if numbers != expected {
        let bad = numbers
            .iter()
            .zip(1..)
            .find(|(n, i)| **n != *i)
            .map_or(numbers.len() + 1, |(_, i)| i);
        panic!(
            "the session's output is not 1..={CUT_LINES} ({} lines; first wrong at line {bad}):\n{log}",
            numbers.len()
        );
    }
    ping_report(&lab, &cfg, "direct path cut mid-session");
}

/// An offline deployment (no STUN anywhere) with client and agent on one LAN: they
/// find each other through their interface addresses.
#[test]
fn same_lan_without_stun_goes_direct() {
    let mut lab = Lab::same_lan(TETHER, "lan");
    let cfg = lab.workspace(&[
        "--stun-address",
        "disable",
        "--derp-server-stun-addresses",
        "disable",
    ]);
    ssh_echo_works(&lab, &cfg);
    let log = long_session(&lab, &cfg);
    assert!(
        !log.lines()
            .any(|l| l.contains("our UDP endpoints") && l.contains("198.18.")),
        "the client learned a public endpoint although there is no STUN server:\n{log}"
    );
    assert_direct_within(
        &log,
        &["peer added"],
        "10.1.0.3:",
        CLIENT_DIRECT_WITHIN,
        "client",
    );
    ping_report(&lab, &cfg, "same LAN, no STUN");
}

/// Asks for workspace `dev` from site A with `tether show -o json` (which also makes the
/// server open its own path to the agent) until `done` holds for its `server_path`, at
/// most `limit`; returns that last JSON.
fn server_path_until(
    lab: &Lab,
    cfg: &Path,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let out = lab.run(
            HOST_A,
            cfg,
            &["show", "dev", "-o", "json"],
            Duration::from_secs(60),
        );
        assert_eq!(out.code, 0, "tether show failed: {}", out.stderr);
        let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let path = shown["workspace"]["server_path"].clone();
        if done(&path) || std::time::Instant::now() >= deadline {
            eprintln!("server ⇄ agent: {path}");
            return path;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The server is public and the agent behind a port-restricted cone: the server's own
/// node (the web terminal's path) reaches the agent directly, at site B's public address.
#[test]
fn server_reaches_an_agent_behind_a_cone_directly() {
    let mut lab = Lab::new(
        TETHER,
        "srvcone",
        Nat::PortRestrictedCone,
        Nat::PortRestrictedCone,
    );
    let cfg = lab.workspace(&[]);
    let path = server_path_until(&lab, &cfg, Duration::from_secs(30), |p| {
        p["kind"] == "direct" && p["latency_ms"].is_number()
    });
    assert_eq!(
        path["kind"],
        "direct",
        "{path}\nagent log:\n{}",
        lab.log("agent")
    );
    assert!(
        path["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("198.18.2.2:"),
        "direct, but not to site B's router: {path}"
    );
    assert!(path["reason"].is_null(), "{path}");
}

/// UDP dropped at the agent's site: the server's node reaches the agent through DERP,
/// says so, and says why.
#[test]
fn server_relays_to_an_agent_without_udp() {
    let mut lab = Lab::new(TETHER, "srvnoudp", Nat::PortRestrictedCone, Nat::UdpDropped);
    let cfg = lab.workspace(&[]);
    server_path_until(&lab, &cfg, Duration::from_secs(30), |p| {
        p["latency_ms"].is_number()
    });
    // Give discovery time to (wrongly) find a direct path before judging.
    std::thread::sleep(Duration::from_secs(5));
    let path = server_path_until(&lab, &cfg, Duration::ZERO, |_| true);
    assert_eq!(path["kind"], "derp", "{path}");
    assert_eq!(path["derp_region"], "tether embedded relay", "{path}");
    assert!(path["latency_ms"].is_number(), "{path}");
    assert!(
        !path["reason"].as_str().unwrap_or_default().is_empty(),
        "a relayed path without a reason: {path}"
    );
    let agent = lab.log("agent");
    assert!(
        !agent.contains("path now direct"),
        "the agent went direct although its UDP is dropped:\n{agent}"
    );
}
