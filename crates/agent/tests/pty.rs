//! The `pty` module on its own: programs on a terminal, without SSH.
#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use tether_agent::pty::{self, Pty, PtyOutput, WindowSize};
use tether_agent::signal::{self, Signal};
use tether_agent::user::{Program, User};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Upper bound on every wait here.
const BOUND: Duration = Duration::from_secs(20);

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    cmd
}

/// Read until `needle` shows up; panics (with what was seen) after [`BOUND`] or at EOF.
async fn read_until(output: &mut PtyOutput, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tokio::time::timeout_at(deadline, output.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; seen: {seen:?}"))
            .unwrap();
        assert!(n > 0, "terminal closed before {needle:?}: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Everything up to end of file.
async fn read_to_eof(output: &mut PtyOutput) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(BOUND, output.read_to_end(&mut all))
        .await
        .expect("no end of file")
        .unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

async fn wait(pty: &mut Pty) -> ExitStatus {
    tokio::time::timeout(BOUND, pty.child.wait())
        .await
        .expect("program did not exit")
        .unwrap()
}

#[tokio::test]
async fn output_then_end_of_file_and_exit_status() {
    let mut pty = pty::spawn(sh("tty; echo hello; exit 3"), WindowSize::default()).unwrap();
    let text = read_to_eof(&mut pty.output).await;
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    // A terminal turns "\n" into "\r\n".
    assert!(text.contains("hello\r\n"), "{text:?}");
    assert_eq!(wait(&mut pty).await.code(), Some(3));
}

#[tokio::test]
async fn env_and_working_directory_come_from_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sh("echo \"V=$TETHER_PTY_TEST\"; pwd");
    cmd.env("TETHER_PTY_TEST", "forty-two")
        .current_dir(dir.path());
    let mut pty = pty::spawn(cmd, WindowSize::default()).unwrap();
    let text = read_to_eof(&mut pty.output).await;
    assert!(text.contains("V=forty-two"), "{text:?}");
    let cwd = dir.path().canonicalize().unwrap();
    assert!(text.contains(&*cwd.to_string_lossy()), "{text:?}");
    assert!(wait(&mut pty).await.success());
}

#[tokio::test]
async fn input_reaches_the_program() {
    let mut pty = pty::spawn(sh("read line; echo \"got<$line>\""), WindowSize::default()).unwrap();
    pty.input.write_all(b"typed words\n").await.unwrap();
    let mut seen = String::new();
    read_until(&mut pty.output, &mut seen, "got<typed words>").await;
    assert!(wait(&mut pty).await.success());
}

#[tokio::test]
async fn size_at_spawn_and_after_resize_as_stty_sees_it() {
    let mut pty = pty::spawn(
        sh("stty size; read go; stty size"),
        WindowSize::new(100, 30),
    )
    .unwrap();
    let mut seen = String::new();
    read_until(&mut pty.output, &mut seen, "30 100").await;
    let bigger = WindowSize {
        cols: 132,
        rows: 43,
        px_width: 1320,
        px_height: 860,
    };
    pty.control.resize(bigger).unwrap();
    assert_eq!(pty.control.size().unwrap(), bigger);
    pty.input.write_all(b"\n").await.unwrap();
    seen.clear();
    read_until(&mut pty.output, &mut seen, "43 132").await;
    assert!(wait(&mut pty).await.success());
}

#[tokio::test]
async fn a_signal_reaches_the_program() {
    let script = "trap 'echo caught-usr1; exit 5' USR1; echo ready; while :; do sleep 0.05; done";
    let mut pty = pty::spawn(sh(script), WindowSize::default()).unwrap();
    let mut seen = String::new();
    read_until(&mut pty.output, &mut seen, "ready").await;
    pty.control.signal(Signal::Usr1).unwrap();
    read_until(&mut pty.output, &mut seen, "caught-usr1").await;
    assert_eq!(wait(&mut pty).await.code(), Some(5));
}

#[tokio::test]
async fn killed_by_a_signal_reports_it() {
    let mut pty = pty::spawn(sh("echo ready; exec sleep 30"), WindowSize::default()).unwrap();
    let mut seen = String::new();
    read_until(&mut pty.output, &mut seen, "ready").await;
    pty.control.signal(Signal::Term).unwrap();
    let status = wait(&mut pty).await;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    // The program held the only other end of the terminal: its output ends too.
    read_to_eof(&mut pty.output).await;
}

#[tokio::test]
async fn hang_up_ends_a_program_that_ignores_its_input() {
    let mut pty = pty::spawn(sh("echo ready; exec sleep 30"), WindowSize::default()).unwrap();
    let mut seen = String::new();
    read_until(&mut pty.output, &mut seen, "ready").await;
    tokio::time::timeout(
        BOUND,
        signal::hang_up(&mut pty.child, Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let status = wait(&mut pty).await;
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status:?}");
}

#[tokio::test]
async fn a_missing_program_is_an_error_not_a_panic() {
    let err = pty::spawn(
        Command::new("/nonexistent/tether-pty-test"),
        WindowSize::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn the_users_login_shell_on_a_terminal() {
    let user = User::current();
    let mut cmd = user.command(&Program::Shell);
    // Keep profile scripts from printing prompts of their own into the check.
    cmd.env("PS1", "$ ");
    let mut pty = pty::spawn(cmd, WindowSize::new(90, 20)).unwrap();
    pty.input
        .write_all(b"echo \"arg0=$0 home=$HOME\"; stty size; exit 4\n")
        .await
        .unwrap();
    let mut seen = String::new();
    let base = user
        .shell
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    read_until(&mut pty.output, &mut seen, &format!("arg0=-{base} home=")).await;
    read_until(&mut pty.output, &mut seen, "20 90").await;
    assert_eq!(wait(&mut pty).await.code(), Some(4));
}

#[tokio::test]
async fn exec_runs_in_the_users_home_with_their_variables() {
    let user = User::current();
    let cmd = user.command(&Program::Exec("echo \"u=$USER h=$HOME\"; pwd".into()));
    let mut pty = pty::spawn(cmd, WindowSize::default()).unwrap();
    let text = read_to_eof(&mut pty.output).await;
    let home = user.home.display().to_string();
    assert!(
        text.contains(&format!("u={} h={home}", user.name)),
        "{text:?}"
    );
    if user.home.is_dir() {
        let cwd = user.home.canonicalize().unwrap();
        assert!(text.contains(&*cwd.to_string_lossy()), "{text:?}");
    }
    assert!(wait(&mut pty).await.success());
}
