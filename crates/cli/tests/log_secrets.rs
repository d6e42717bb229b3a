//! No token reaches a log, even at `TETHER_LOG=trace`: the agent, `tether ssh` and
//! `tether ping`, `list` and `login` run on loopback with everything logged, and neither the agent token,
//! the session token, the password nor a `--header` value appears; where a library
//! logged them (tungstenite prints the WebSocket upgrade request) `[redacted]` stands.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use tether_testing::{TestServer, Tether, session_token};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

const HEADER_SECRET: &str = "proxy-credential-93a1f";

#[test]
fn trace_logs_hold_no_secrets() {
    let srv = TestServer::start(&[]);
    let cfg = TETHER.first_user(&srv);
    let agent_token = TETHER.create_workspace(&cfg, "dev");
    let session = session_token(&cfg);
    let header = format!("X-Proxy-Auth={HEADER_SECRET}");

    let agent_log = srv.dir.path().join("agent.log");
    let mut agent = Command::new(TETHER.bin())
        .args(["--header", &header, "agent", "--url", &srv.url])
        .env("TETHER_AGENT_TOKEN", &agent_token)
        .env("TETHER_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();
    TETHER.wait_connected(&cfg, "dev", Duration::from_secs(20));

    let trace = [("TETHER_LOG", "trace")];
    let ssh = TETHER.run_env(
        &cfg,
        &["--header", &header, "ssh", "dev", "--", "echo", "ok"],
        &trace,
    );
    assert_eq!(ssh.code, 0, "{}", ssh.stderr);
    assert_eq!(ssh.stdout.trim(), "ok");
    let ping = TETHER.run_env(&cfg, &["ping", "dev", "-n", "1"], &trace);
    assert_eq!(ping.code, 0, "{}", ping.stderr);
    let list = TETHER.run_env(&cfg, &["list"], &trace);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let login = TETHER.run_env(
        &srv.config_dir("again"),
        &[
            "login",
            &srv.url,
            "--username",
            "alice",
            "--password",
            "correct horse battery",
        ],
        &trace,
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    let _ = agent.kill();
    let _ = agent.wait();
    let agent_stderr = std::fs::read_to_string(&agent_log).unwrap();

    for (name, log) in [
        ("agent", agent_stderr.as_str()),
        ("ssh", ssh.stderr.as_str()),
        ("ping", ping.stderr.as_str()),
        ("list", list.stderr.as_str()),
        ("login", login.stderr.as_str()),
    ] {
        // Really at trace.
        assert!(log.contains("TRACE"), "{name} logged no TRACE lines");
        for (what, secret) in [
            ("the agent token", agent_token.as_str()),
            ("the session token", session.as_str()),
            ("the --header value", HEADER_SECRET),
            ("the password", "correct horse battery"),
        ] {
            let leak = log.lines().find(|l| l.contains(secret));
            assert!(leak.is_none(), "{name}'s log shows {what}: {leak:?}");
        }
    }
    // Where the upgrade request was logged, the token header is masked.
    assert!(
        agent_stderr.contains("tether-agent-token: [redacted]"),
        "the agent's trace log no longer shows the upgrade request"
    );
    assert!(
        ssh.stderr.contains("tether-session-token: [redacted]"),
        "ssh's trace log no longer shows the upgrade request"
    );
    assert!(
        ssh.stderr.contains("x-proxy-auth: [redacted]"),
        "ssh's trace log no longer shows the header"
    );
}
