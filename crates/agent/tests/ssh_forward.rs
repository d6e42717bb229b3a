//! Port and agent forwarding through the agent's SSH server with OpenSSH's client.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use tether_testing::openssh::{echo_roundtrip, echo_server, run, setup, stderr, stdout};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_port_zero() {
    let env = setup().await;
    let echo = echo_server().await;
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(env.opts_with_log_level("INFO"))
        .args([
            "-p",
            &env.port.to_string(),
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
        ])
        .args(["-R", &format!("0:127.0.0.1:{echo}"), "127.0.0.1"])
        .kill_on_drop(true);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // "Allocated port 41234 for remote forward to 127.0.0.1:5555"
            if let Some(rest) = line.strip_prefix("Allocated port ") {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("ssh exited without allocating a port");
    })
    .await
    .expect("no 'Allocated port' line from ssh");
    assert_ne!(port, 0);
    for i in 0..3 {
        let msg = format!("ping {i} through -R");
        assert_eq!(echo_roundtrip(port, msg.as_bytes()).await, msg.as_bytes());
    }
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    assert!(echo_roundtrip(port, &big).await == big);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward() {
    let env = setup().await;
    let echo = echo_server().await;
    let local = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = env.ssh(
        &[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &format!("127.0.0.1:{local}:127.0.0.1:{echo}"),
        ],
        &[],
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Wait for ssh to listen (bounded).
    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ssh -L never listened");
    let msg = b"hello through -L";
    assert_eq!(echo_roundtrip(local, msg).await, msg);
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    assert!(echo_roundtrip(local, &big).await == big);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forwarding_lists_test_key() {
    let env = setup().await;
    let sock = env.path("agent.sock");
    let mut agent = tokio::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut add = tokio::process::Command::new("ssh-add");
    add.arg(&env.key).env("SSH_AUTH_SOCK", &sock);
    let added = run(add, None).await;
    assert!(added.status.success(), "ssh-add: {}", stderr(&added));
    let mut fp = tokio::process::Command::new("ssh-keygen");
    fp.arg("-lf").arg(env.key.with_extension("pub"));
    let fp = stdout(&run(fp, None).await);
    let fingerprint = fp.split_whitespace().nth(1).unwrap().to_string();

    let mut cmd = env.ssh(&["-A"], &["echo SOCK=$SSH_AUTH_SOCK; ssh-add -l"]);
    cmd.env("SSH_AUTH_SOCK", &sock);
    let out = run(cmd, None).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&fingerprint), "{text}");
    let remote_sock = text.lines().next().unwrap().trim_start_matches("SOCK=");
    assert!(!remote_sock.is_empty());
    assert_ne!(
        remote_sock,
        sock.to_str().unwrap(),
        "must be the forwarded socket"
    );

    // Without -A there is no agent in the session.
    let out = run(env.ssh(&[], &["echo SOCK=$SSH_AUTH_SOCK"]), None).await;
    assert_eq!(stdout(&out), "SOCK=\n");
    agent.kill().await.unwrap();
}
