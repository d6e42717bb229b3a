//! `tether ssh -A` and `-R` against a real server and agent on loopback: `ssh-add -l` in
//! the workspace lists a key loaded into a test ssh-agent on this side, and a program in
//! the workspace reaches a listener on this side through `-R`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tether_testing::{Tether, free_tcp_port, run_with_input};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// An `ssh-agent -D` on a socket of its own, killed on drop.
struct SshAgent {
    child: Child,
    sock: std::path::PathBuf,
}

impl SshAgent {
    fn start(dir: &std::path::Path) -> Self {
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "ssh-agent made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, sock }
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn agent_forwarding_lists_the_local_agents_key() {
    let (srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let dir = srv.dir.path();
    let agent = SshAgent::start(dir);
    let key = dir.join("id_test");
    let keygen = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "tether-forwarded-key",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let add = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent.sock)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(add.success());
    let sock = agent.sock.to_str().unwrap();

    let out = TETHER.run_env(
        &cfg,
        &["ssh", "-A", "dev", "--", "ssh-add", "-l"],
        &[("SSH_AUTH_SOCK", sock)],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("tether-forwarded-key (ED25519)"),
        "{}",
        out.stdout
    );

    // Without -A the workspace does not see it.
    let out = TETHER.run_env(
        &cfg,
        &["ssh", "dev", "--", "ssh-add", "-l"],
        &[("SSH_AUTH_SOCK", sock)],
    );
    assert!(
        !out.stdout.contains("tether-forwarded-key"),
        "{}",
        out.stdout
    );

    // -A without a local agent is one sentence, before connecting.
    let mut cmd = Command::new(TETHER.bin());
    cmd.arg("--global-config")
        .arg(&cfg)
        .args(["ssh", "-A", "dev", "--", "true"])
        .env_remove("SSH_AUTH_SOCK");
    let out = run_with_input(cmd, b"", Duration::from_secs(30));
    assert_ne!(out.code, 0);
    assert_eq!(
        out.stderr.trim(),
        "error: -A needs a local SSH agent, but SSH_AUTH_SOCK is not set"
    );
}

/// A listener on this side answering each line with `from the laptop: LINE`.
fn laptop_service() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(w, "from the laptop: {line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn remote_forward_reaches_a_listener_on_this_side() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let laptop = laptop_service();
    let remote = free_tcp_port();
    let spec = format!("{remote}:127.0.0.1:{laptop}");
    // The program in the workspace connects to the forwarded port (bash's /dev/tcp).
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{remote}; echo hello >&3; head -n1 <&3");
    let out = TETHER.run(
        &cfg,
        &["ssh", "-R", &spec, "dev", "--", "bash", "-c", &script],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.trim(), "from the laptop: hello");

    // Port 0: the agent chooses and the CLI says which.
    let out = TETHER.run(
        &cfg,
        &[
            "ssh",
            "--remote-forward",
            &format!("0:127.0.0.1:{laptop}"),
            "dev",
            "--",
            "true",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("for remote forward to 127.0.0.1:{laptop}")),
        "{}",
        out.stderr
    );

    // A bad spec is refused before connecting.
    let out = TETHER.run(&cfg, &["ssh", "-R", "8080:80", "dev", "--", "true"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("is not [bind_address:]port:host:hostport"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_remote_forward_to_a_port_in_use_in_the_workspace_fails_clearly() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    // Agent and test share loopback: a port the test holds is in use "in the workspace".
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = TETHER.run(
        &cfg,
        &[
            "ssh",
            "-R",
            &format!("{port}:127.0.0.1:1"),
            "dev",
            "--",
            "true",
        ],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(&format!(
            "the agent refused the remote forward of port {port}"
        )),
        "{}",
        out.stderr
    );
}
