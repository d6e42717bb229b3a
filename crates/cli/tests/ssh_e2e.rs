//! End to end on loopback: the server (in the test process), `tether agent` and the
//! CLI (`tether ssh`, `config-ssh` + OpenSSH's ssh/scp/sftp, `port-forward`) as real
//! processes, through the built-in relay with WireGuard between the CLI and the agent.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tether_testing::checksum::sha256_file;
use tether_testing::{AgentProcess, TestServer, Tether, free_tcp_port, run_with_input};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

fn setup() -> (TestServer, std::path::PathBuf, String, AgentProcess) {
    let srv = TestServer::start(&[]);
    let cfg = TETHER.first_user(&srv);
    let token = TETHER.create_workspace(&cfg, "dev");
    let agent = TETHER.agent(&srv.url, &token);
    TETHER.wait_connected(&cfg, "dev", Duration::from_secs(20));
    (srv, cfg, token, agent)
}

#[test]
fn ssh_commands_exit_status_and_stdin() {
    let (_srv, cfg, _token, _agent) = setup();
    let out = TETHER.run(&cfg, &["ssh", "dev", "--", "echo", "hi"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hi\n"),
        "{}",
        out.stderr
    );
    let out = TETHER.run(&cfg, &["ssh", "dev", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let mut c = TETHER.command(&cfg);
    c.args(["ssh", "dev", "--", "cat"]);
    let out = run_with_input(c, b"data\n", Duration::from_secs(60));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "data\n"),
        "{}",
        out.stderr
    );
    // stdout and stderr stay apart; env reaches the command.
    let out = TETHER.run(
        &cfg,
        &[
            "ssh",
            "-e",
            "GREETING=hello",
            "dev",
            "--",
            "sh",
            "-c",
            "echo $GREETING; echo oops >&2",
        ],
    );
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("hello\n", "oops\n")
    );
}

#[test]
fn openssh_via_config_ssh_scp_and_sftp() {
    let (srv, cfg, _token, _agent) = setup();
    let ssh_config = srv.dir.path().join("ssh_config");
    std::fs::write(&ssh_config, "Host other\n\tUser nobody\n").unwrap();
    let out = TETHER.run(
        &cfg,
        &[
            "config-ssh",
            "-y",
            "--ssh-config-file",
            ssh_config.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("ssh tether.dev"), "{}", out.stdout);
    let written = std::fs::read_to_string(&ssh_config).unwrap();
    assert!(
        written.starts_with("Host other\n\tUser nobody\n"),
        "{written}"
    );
    // Idempotent.
    TETHER.run(
        &cfg,
        &[
            "config-ssh",
            "-y",
            "--ssh-config-file",
            ssh_config.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&ssh_config).unwrap(), written);

    let ssh = |args: &[&str], limit: u64| {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg(&ssh_config)
            .args(["-o", "BatchMode=yes"])
            .args(args);
        run_with_input(c, b"", Duration::from_secs(limit))
    };
    let out = ssh(&["tether.dev", "echo", "ok"], 60);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "ok\n"),
        "{}",
        out.stderr
    );

    // 100 MB both ways with scp (OpenSSH's scp speaks SFTP to the agent).
    let dir = srv.dir.path();
    let up_src = dir.join("up.bin");
    let mut data = vec![0u8; 100 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&up_src, &data).unwrap();
    drop(data);
    let remote = dir.join("remote.bin");
    let scp = |from: String, to: String| {
        let mut c = Command::new("scp");
        c.arg("-F")
            .arg(&ssh_config)
            .args(["-o", "BatchMode=yes", "-q", &from, &to]);
        run_with_input(c, b"", Duration::from_secs(240))
    };
    let out = scp(
        up_src.display().to_string(),
        format!("tether.dev:{}", remote.display()),
    );
    assert_eq!(out.code, 0, "scp up: {}", out.stderr);
    assert_eq!(sha256_file(&remote), sha256_file(&up_src));
    let down = dir.join("down.bin");
    let out = scp(
        format!("tether.dev:{}", remote.display()),
        down.display().to_string(),
    );
    assert_eq!(out.code, 0, "scp down: {}", out.stderr);
    assert_eq!(sha256_file(&down), sha256_file(&up_src));

    // An sftp batch.
    let work = dir.join("sftp-work");
    let batch = dir.join("batch");
    std::fs::write(dir.join("note.txt"), "sftp works\n").unwrap();
    std::fs::write(
        &batch,
        format!(
            "mkdir {w}\nput {n} {w}/note.txt\nls {w}\nget {w}/note.txt {g}\nrm {w}/note.txt\nrmdir {w}\n",
            w = work.display(),
            n = dir.join("note.txt").display(),
            g = dir.join("got.txt").display()
        ),
    )
    .unwrap();
    let mut c = Command::new("sftp");
    c.arg("-F")
        .arg(&ssh_config)
        .args(["-o", "BatchMode=yes", "-b"])
        .arg(&batch)
        .arg("tether.dev");
    let out = run_with_input(c, b"", Duration::from_secs(60));
    assert_eq!(out.code, 0, "sftp: {} {}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.join("got.txt")).unwrap(),
        "sftp works\n"
    );
    assert!(!work.exists());
}

fn tmux(sock: &Path, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(sock)
        .args(args)
        .output()
        .expect("tmux must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_pane(sock: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let screen = tmux(sock, &["capture-pane", "-p", "-t", "t"]);
        if pred(&screen) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}; screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn interactive_pty_resize_and_ctrl_d() {
    let (srv, cfg, _token, _agent) = setup();
    let sock = srv.dir.path().join("tmux.sock");
    let script = srv.dir.path().join("run.sh");
    let status = srv.dir.path().join("status");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport PS1='$ '\n'{}' --global-config '{}' ssh dev\necho $? > '{}'\nsleep 30\n",
            TETHER.bin(),
            cfg.display(),
            status.display()
        ),
    )
    .unwrap();
    tmux(
        &sock,
        &[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "100",
            "-y",
            "30",
            "sh",
            script.to_str().unwrap(),
        ],
    );
    let _cleanup = KillTmux(sock.clone());
    // A prompt from the remote shell; make it predictable first.
    std::thread::sleep(Duration::from_millis(500));
    tmux(
        &sock,
        &["send-keys", "-t", "t", "export PS1='remote$ '", "Enter"],
    );
    wait_pane(&sock, "the remote prompt", |s| s.contains("remote$"));
    tmux(&sock, &["send-keys", "-t", "t", "tty", "Enter"]);
    wait_pane(&sock, "a /dev/pts path", |s| s.contains("/dev/pts/"));
    tmux(&sock, &["send-keys", "-t", "t", "stty size", "Enter"]);
    wait_pane(&sock, "30 100", |s| s.contains("30 100"));
    tmux(
        &sock,
        &["resize-window", "-t", "t", "-x", "120", "-y", "40"],
    );
    std::thread::sleep(Duration::from_millis(500));
    tmux(
        &sock,
        &["send-keys", "-t", "t", "clear; stty size", "Enter"],
    );
    wait_pane(&sock, "40 120 after the resize", |s| s.contains("40 120"));
    // Ctrl-D only once the shell waits at its prompt again: typed ahead while the shell
    // switches terminal modes, it can be flushed away.
    wait_pane(&sock, "the prompt after stty", |s| {
        s.lines().map(str::trim_end).rfind(|l| !l.is_empty()) == Some("remote$")
    });
    std::thread::sleep(Duration::from_millis(200));
    tmux(&sock, &["send-keys", "-t", "t", "C-d"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status.exists() {
        assert!(Instant::now() < deadline, "Ctrl-D did not end the session");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "0");
}

struct KillTmux(std::path::PathBuf);
impl Drop for KillTmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.0)
            .arg("kill-server")
            .output();
    }
}

#[test]
fn port_forward_http_server() {
    let (srv, cfg, _token, _agent) = setup();
    let www = srv.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "served from the workspace\n").unwrap();
    let ws_port = free_tcp_port();
    let mut http = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &ws_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let local = free_tcp_port();
    let mut pf = TETHER
        .command(&cfg)
        .args([
            "port-forward",
            "dev",
            "--tcp",
            &format!("{local}:{ws_port}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = pf.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(2)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.is_finished() {
        assert!(Instant::now() < deadline, "port-forward never said Ready!");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = lines.join().unwrap();
    assert_eq!(
        lines,
        [
            format!(
                "Forwarding 'tcp://127.0.0.1:{local}' locally to 'tcp://127.0.0.1:{ws_port}' in the workspace"
            ),
            "Ready!".into()
        ]
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // python's server may still be starting.
            match reqwest::get(format!("http://127.0.0.1:{local}/hello.txt")).await {
                Ok(r) if r.status() == 200 => return r.text().await.unwrap(),
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "no answer through the forward: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    assert_eq!(body, "served from the workspace\n");
    let _ = pf.kill();
    let _ = pf.wait();
    let _ = http.kill();
    let _ = http.wait();
}

#[test]
fn agent_restart_and_server_gone() {
    let (mut srv, cfg, token, agent) = setup();
    assert_eq!(
        TETHER
            .run(&cfg, &["ssh", "dev", "--", "echo", "one"])
            .stdout,
        "one\n"
    );
    agent.kill();
    // While it is gone, ssh says so promptly.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = TETHER.run(&cfg, &["ssh", "dev", "--", "true"]);
        if out.stderr.contains("agent is not connected; last seen") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reported the agent gone: {}",
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _agent = TETHER.agent(&srv.url, &token);
    let restarted = Instant::now();
    loop {
        let out = TETHER.run(&cfg, &["ssh", "dev", "--", "echo", "two"]);
        if out.code == 0 && out.stdout == "two\n" {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "ssh did not work again within 10 s: {}",
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "ssh worked again {:?} after the agent restarted",
        restarted.elapsed()
    );
    srv.stop();
    let start = Instant::now();
    let out = TETHER.run(&cfg, &["ssh", "dev", "--", "true"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("could not reach the tether server"),
        "{}",
        out.stderr
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn port_forward_udp_echo() {
    let (_srv, cfg, _token, _agent) = setup();
    // A UDP echo server inside the "workspace".
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let local = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut pf = TETHER
        .command(&cfg)
        .args([
            "port-forward",
            "dev",
            "--udp",
            &format!("{local}:{echo_port}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = pf.stdout.take().unwrap();
    let ready = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == "Ready!")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.is_finished() {
        assert!(Instant::now() < deadline, "port-forward never said Ready!");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready.join().unwrap());
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = None;
    // UDP may be lost while the tunnel warms up: resend, bounded.
    for i in 0..20 {
        let msg = format!("ping {i}");
        client
            .send_to(msg.as_bytes(), ("127.0.0.1", local))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            got = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            break;
        }
    }
    let got = got.expect("no UDP echo through the forward within 10 s");
    assert!(got.starts_with("ping "), "{got}");
    let _ = pf.kill();
    let _ = pf.wait();
}
