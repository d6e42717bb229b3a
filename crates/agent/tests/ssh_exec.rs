//! `ssh` against the agent's server: exec, exit status, stdin, stderr, env, PTY.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tether_testing::openssh::{run, setup, stderr, stdout};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_hi() {
    let env = setup().await;
    let out = run(env.ssh(&[], &["echo", "hi"]), None).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_propagates() {
    let env = setup().await;
    let out = run(env.ssh(&[], &["sh -c 'exit 3'"]), None).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_through_cat_and_stderr_separate() {
    let env = setup().await;
    let input = b"hello\nworld\n".repeat(1000);
    let out = run(env.ssh(&[], &["cat"]), Some(&input)).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, input);

    let out = run(env.ssh(&[], &["echo out; echo err >&2"]), None).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stdin_and_stdout_together() {
    // 8 MiB both ways at once through `cat`: exercises flow control without deadlock.
    let env = setup().await;
    let input: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let out = run(env.ssh(&[], &["cat"]), Some(&input)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_request_applied() {
    let env = setup().await;
    let out = run(env.ssh(&["-o", "SetEnv=FOO=bar"], &["echo $FOO"]), None).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "bar\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_by_signal_is_not_success() {
    let env = setup().await;
    let out = run(env.ssh(&[], &["kill -TERM $$"]), None).await;
    // OpenSSH maps an `exit-signal` to exit code 255.
    assert_eq!(out.status.code(), Some(255), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_exec_has_a_tty_and_term() {
    let env = setup().await;
    let out = run(env.ssh(&["-tt"], &["tty; echo TERM=$TERM"]), None).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    // With a PTY, output lines end in CRLF.
    assert!(text.contains("\r\n"), "{text:?}");
}

/// Read from the PTY until `needle` shows up (bounded).
async fn read_until(pty: &mut pty_process::Pty, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tokio::time::timeout_at(deadline, pty.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; screen so far: {seen:?}"))
            .unwrap();
        assert!(n > 0, "pty closed before {needle:?}: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_shell_size_and_window_change() {
    let env = setup().await;
    // Run the real ssh client inside a local PTY of a known size, as a terminal would.
    let (mut pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(30, 100)).unwrap();
    let cmd = pty_process::Command::new("ssh")
        .args(env.common_opts())
        .arg("-p")
        .arg(env.port.to_string())
        .arg("-tt")
        .arg("127.0.0.1")
        .env("TERM", "xterm-256color")
        .kill_on_drop(true);
    let mut child = cmd.spawn(pts).unwrap();
    let mut seen = String::new();

    pty.write_all(b"echo T=$TERM; stty size; tty\n")
        .await
        .unwrap();
    read_until(&mut pty, &mut seen, "30 100").await;
    read_until(&mut pty, &mut seen, "T=xterm-256color").await;
    read_until(&mut pty, &mut seen, "/dev/pts/").await;

    // The terminal grows: ssh gets SIGWINCH and sends `window-change`.
    pty.resize(pty_process::Size::new(40, 120)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen.clear();
    pty.write_all(b"stty size\n").await.unwrap();
    read_until(&mut pty, &mut seen, "40 120").await;

    pty.write_all(b"exit 7\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("ssh did not exit")
        .unwrap();
    assert_eq!(status.code(), Some(7));
}
