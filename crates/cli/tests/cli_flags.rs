//! Coder's CLI details against a real server on loopback: `tether list -c` choosing
//! columns (an unknown one named with the valid ones), `config-ssh -o` options in the Host
//! block that OpenSSH then uses, and the agent token kept off the agent's command line
//! (`TETHER_AGENT_TOKEN`, `--token-file`); a bad `--terminal-idle-timeout` is refused.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use tether_testing::{TestServer, Tether, run_with_input};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

#[test]
fn list_shows_the_columns_asked_for_in_that_order() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = TETHER.run(
        &cfg,
        &["list", "-c", "relay,name", "--column", "owner,LAST SEEN"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines,
        [
            vec!["RELAY", "NAME", "OWNER", "LAST SEEN"],
            vec!["tether", "dev", "alice", "now"]
        ],
        "{}",
        out.stdout
    );
    // The default stays what it was.
    let out = TETHER.run(&cfg, &["list"]);
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "STATUS", "LAST", "SEEN", "RELAY"]);

    let out = TETHER.run(&cfg, &["list", "-c", "name,template"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(
            "there is no column \"template\"; the valid columns are name, owner, status, last-seen, relay, created-at"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn config_ssh_options_land_in_the_host_block_and_ssh_uses_them() {
    let (srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let ssh_config = srv.dir.path().join("ssh_config");
    let file = ssh_config.to_str().unwrap();
    let out = TETHER.run(
        &cfg,
        &[
            "config-ssh",
            "-y",
            "--ssh-config-file",
            file,
            "-o",
            "SetEnv TETHER_TEST_OPTION=from-config-ssh",
            "--ssh-option",
            "LogLevel=QUIET",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let written = std::fs::read_to_string(&ssh_config).unwrap();
    assert!(
        written.contains("\tSetEnv TETHER_TEST_OPTION=from-config-ssh\n\tLogLevel QUIET\n"),
        "{written}"
    );
    assert!(!written.contains("LogLevel ERROR"), "{written}");
    // OpenSSH reads the option: the variable arrives in the workspace.
    let mut ssh = Command::new("ssh");
    ssh.args([
        "-F",
        file,
        "-o",
        "BatchMode=yes",
        "tether.dev",
        "echo",
        "$TETHER_TEST_OPTION",
    ]);
    let out = run_with_input(ssh, b"", Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "from-config-ssh");

    let out = TETHER.run(
        &cfg,
        &[
            "config-ssh",
            "-y",
            "--ssh-config-file",
            file,
            "-o",
            "Bad-Key yes",
        ],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("\"Bad-Key\" is not an SSH option keyword"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&ssh_config).unwrap(), written);
}

/// The agent's command line as `ps` shows it.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_agent_takes_its_token_from_the_environment_or_a_file() {
    let srv = TestServer::start(&[]);
    let cfg = TETHER.first_user(&srv);
    for (name, by_file) in [("by-env", false), ("by-file", true)] {
        let token = TETHER.create_workspace(&cfg, name);
        let mut cmd = Command::new(TETHER.bin());
        cmd.args(["agent", "--url", &srv.url])
            .env_remove("TETHER_AGENT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if by_file {
            let path = srv.dir.path().join("agent-token");
            std::fs::write(&path, format!("{token}\n")).unwrap();
            cmd.arg("--token-file").arg(&path);
        } else {
            cmd.env("TETHER_AGENT_TOKEN", &token);
        }
        let mut child = cmd.spawn().unwrap();
        TETHER.wait_connected(&cfg, name, Duration::from_secs(20));
        // Read once it runs (before its exec the child still shows the test's arguments).
        let line = cmdline(child.id());
        assert!(line.contains(" agent --url "), "{line}");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            !line.contains(&token),
            "the token is on the command line: {line}"
        );
    }

    // Neither: a sentence, not a hang.
    let mut cmd = Command::new(TETHER.bin());
    cmd.args(["agent", "--url", &srv.url])
        .env_remove("TETHER_AGENT_TOKEN")
        .env_remove("TETHER_AGENT_TOKEN_FILE");
    let out = run_with_input(cmd, b"", Duration::from_secs(10));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--token"), "{}", out.stderr);
    // An empty or missing token file.
    let empty = srv.dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    for (path, want) in [
        (empty.clone(), "is empty"),
        (
            srv.dir.path().join("no-such-file"),
            "could not read the agent token from",
        ),
    ] {
        let mut cmd = Command::new(TETHER.bin());
        cmd.args(["agent", "--url", &srv.url, "--token-file"])
            .arg(&path)
            .env_remove("TETHER_AGENT_TOKEN");
        let out = run_with_input(cmd, b"", Duration::from_secs(10));
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains(want), "{}", out.stderr);
    }
}

#[test]
fn a_bad_terminal_idle_timeout_is_a_sentence() {
    for (value, want) in [
        ("soon", "is not a duration like 5s or 500ms"),
        ("0s", "must be more than 0"),
    ] {
        let mut cmd = Command::new(TETHER.bin());
        cmd.args([
            "agent",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "t",
            "--terminal-idle-timeout",
            value,
        ]);
        let out = run_with_input(cmd, b"", Duration::from_secs(10));
        assert_ne!(out.code, 0, "{value}");
        assert!(out.stderr.contains(want), "{value}: {}", out.stderr);
        assert!(
            out.stderr.contains("--terminal-idle-timeout"),
            "{}",
            out.stderr
        );
    }
}
