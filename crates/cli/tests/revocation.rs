//! Revocation through the real server binary, a real agent and real `tether ssh`:
//! logging out, a user suspended or deleted, and a session expiring end that user's
//! live coordinator connections and the SSH sessions they carried, on the client (which
//! says why) and on the agent (whose program is hung up); a suspended user cannot log
//! in until activated. Each test prints the seconds from the revocation to the end.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tether_key::NodePrivate;
use tether_proto::coord::{PeerUpdateKind, Request, Response};
use tether_testing::{
    AgentProcess, CoordConn, Deployment, ServerProcess, Tether, node_for, session_token, welcome,
};
use uuid::Uuid;

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// A generous cap for a session to end after its access was revoked; the time it took
/// (the stated bound is 2 s) is printed, not asserted.
const END_CAP: Duration = Duration::from_secs(20);

const BOB_PASSWORD: &str = "bob's long password";

/// A running `tether ssh` whose stdout and stderr lines arrive on a channel.
struct Ssh {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Ssh {
    /// `tether [extra] ssh dev -- CMD` with config dir `cfg`, info logs on stderr.
    fn start(cfg: &Path, extra: &[&str], cmd: &str) -> Self {
        let mut child = TETHER
            .command(cfg)
            .args(extra)
            .args(["ssh", "dev", "--", cmd])
            .env("TETHER_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((true, l));
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send((false, l));
            }
        });
        Self {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn take(&mut self, (out, l): (bool, String)) {
        if out {
            self.stdout.push(l);
        } else {
            self.stderr.push(l);
        }
    }

    /// Waits (up to `limit`) for a stdout (`out`) or stderr line containing `what`.
    fn wait_line(&mut self, out: bool, limit: Duration, what: &str) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let seen = if out { &self.stdout } else { &self.stderr };
            if seen.iter().any(|l| l.contains(what)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(_) => return false,
            }
        }
    }

    /// Waits up to `limit` for the process to exit: its exit code, or None.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
                    self.take(line);
                }
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            while let Ok(line) = self.lines.try_recv() {
                self.take(line);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A remote program that appends a tick to `file` (and prints it) every 100 ms.
fn ticker(file: &Path) -> String {
    format!(
        "i=0; while true; do echo tick $i; echo $i >> {}; i=$((i+1)); sleep 0.1; done",
        file.display()
    )
}

/// A ticking `tether ssh` to `dev` (direct or relayed), once it ticks (and, direct,
/// once its path is direct).
fn ticking(cfg: &Path, direct: bool, file: &Path) -> Ssh {
    let extra: &[&str] = if direct {
        &[]
    } else {
        &["--disable-direct-connections"]
    };
    let mut ssh = Ssh::start(cfg, extra, &ticker(file));
    assert!(
        ssh.wait_line(true, Duration::from_secs(30), "tick"),
        "the session never started: {:?}",
        ssh.stderr
    );
    if direct {
        assert!(
            ssh.wait_line(false, Duration::from_secs(30), "path now direct"),
            "the session never went direct: {:?}",
            ssh.stderr
        );
    }
    ssh
}

/// After `revoked`: the ssh exits within [`END_CAP`], not as a success, saying the
/// server ended the session for `why`; and the workspace's program stops (its tick
/// file stops growing), which the agent's side did. Returns how long the ssh took.
fn expect_ssh_ended(
    ssh: &mut Ssh,
    revoked: Instant,
    why: &str,
    file: &Path,
    what: &str,
) -> Duration {
    let code = ssh.wait_exit(END_CAP);
    let took = revoked.elapsed();
    assert!(
        code.is_some(),
        "{what}: tether ssh was still running {END_CAP:?} after the revocation"
    );
    eprintln!("{what}: revocation to the end of tether ssh: {took:?}");
    assert_ne!(
        code,
        Some(0),
        "{what}: a revoked session must not exit as a success"
    );
    let said = ssh.stderr.join("\n");
    assert!(
        said.contains(&format!("the server ended this session: {why}")),
        "{what}: the user is not told why the session ended: {said}"
    );
    // The program in the workspace is hung up (2 s grace) once the agent drops the peer.
    let size = |f: &Path| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
    let deadline = revoked + END_CAP;
    loop {
        let before = size(file);
        std::thread::sleep(Duration::from_secs(1));
        if size(file) == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the workspace's program still ran {END_CAP:?} after the revocation"
        );
    }
    eprintln!(
        "{what}: revocation to the workspace program's end: under {:?}",
        revoked.elapsed()
    );
    took
}

/// The binary as a server with `flags`, alice (admin) logged in, her workspace `dev`
/// with its agent connected.
fn deployment(flags: &[&str]) -> (ServerProcess, PathBuf, AgentProcess) {
    let srv = TETHER.server_process(flags);
    let cfg = TETHER.first_user(&srv);
    let token = TETHER.create_workspace(&cfg, "dev");
    let agent = TETHER.agent(srv.url(), &token);
    TETHER.wait_connected(&cfg, "dev", Duration::from_secs(30));
    (srv, cfg, agent)
}

fn logout_ends_ssh(direct: bool) {
    let (srv, cfg, _agent) = deployment(&[]);
    let file = srv.dir().join(if direct {
        "direct.ticks"
    } else {
        "relayed.ticks"
    });
    let mut ssh = ticking(&cfg, direct, &file);
    let logged_out = Instant::now();
    let out = TETHER.run(&cfg, &["logout"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let what = if direct { "direct" } else { "relayed" };
    expect_ssh_ended(&mut ssh, logged_out, "logged out", &file, what);
    if !direct {
        assert!(!ssh.stderr.join("\n").contains("path now direct"));
    }
}

#[test]
fn logout_ends_a_relayed_ssh_session() {
    logout_ends_ssh(false);
}

#[test]
fn logout_ends_a_direct_ssh_session() {
    logout_ends_ssh(true);
}

/// Bob, a member, logged in; his config dir.
fn bob(srv: &ServerProcess, alice: &Path) -> PathBuf {
    let out = TETHER.run(
        alice,
        &[
            "users",
            "create",
            "-u",
            "bob",
            "-e",
            "bob@example.com",
            "-p",
            BOB_PASSWORD,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cfg = srv.config_dir("bob");
    let out = login_bob(srv, &cfg);
    assert_eq!(out.code, 0, "{}", out.stderr);
    cfg
}

fn login_bob(srv: &ServerProcess, cfg: &Path) -> tether_testing::Out {
    TETHER.run(
        cfg,
        &[
            "login",
            srv.url(),
            "--username",
            "bob",
            "--password",
            BOB_PASSWORD,
        ],
    )
}

#[test]
fn suspend_ends_the_users_sessions_and_blocks_login_until_activated() {
    let srv = TETHER.server_process(&[]);
    let alice = TETHER.first_user(&srv);
    let bob_cfg = bob(&srv, &alice);
    let token = TETHER.create_workspace(&bob_cfg, "dev");
    let _agent = TETHER.agent(srv.url(), &token);
    TETHER.wait_connected(&bob_cfg, "dev", Duration::from_secs(30));
    let file = srv.dir().join("bob.ticks");
    let mut ssh = ticking(&bob_cfg, false, &file);

    let suspended = Instant::now();
    let out = TETHER.run(&alice, &["users", "suspend", "bob"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("suspended"), "{}", out.stdout);
    expect_ssh_ended(&mut ssh, suspended, "user suspended", &file, "suspend");

    // His token no longer works and he cannot log in again.
    let out = TETHER.run(&bob_cfg, &["list"]);
    assert_ne!(
        out.code, 0,
        "a suspended user's token still works: {}",
        out.stdout
    );
    let out = login_bob(&srv, &srv.config_dir("bob2"));
    assert_ne!(out.code, 0, "a suspended user logged in");
    assert!(out.stderr.contains("suspended"), "{}", out.stderr);
    let out = TETHER.run(&alice, &["users", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = out.stdout.lines().find(|l| l.starts_with("bob")).unwrap();
    assert!(
        row.contains("suspended") && row.contains("member"),
        "{}",
        out.stdout
    );
    // An admin cannot suspend themselves, nor can a member suspend anyone.
    let out = TETHER.run(&alice, &["users", "suspend", "alice"]);
    assert_ne!(out.code, 0, "{}", out.stdout);

    // Activated, his session works again and he can log in and reach his workspace.
    let out = TETHER.run(&alice, &["users", "activate", "bob"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = TETHER.run(&bob_cfg, &["list"]);
    assert_eq!(
        out.code, 0,
        "an activated user's token does not work: {}",
        out.stderr
    );
    let out = login_bob(&srv, &srv.config_dir("bob2"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = TETHER.run(
        &srv.config_dir("bob2"),
        &["ssh", "dev", "--", "echo", "back"],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "back\n"),
        "{}",
        out.stderr
    );
    let out = TETHER.run(&bob_cfg, &["users", "suspend", "alice"]);
    assert_ne!(out.code, 0, "a member suspended an admin: {}", out.stdout);
}

#[test]
fn delete_is_refused_while_the_user_owns_workspaces_then_ends_their_sessions() {
    let srv = TETHER.server_process(&[]);
    let alice = TETHER.first_user(&srv);
    let bob_cfg = bob(&srv, &alice);
    TETHER.create_workspace(&bob_cfg, "dev");
    let out = TETHER.run(&alice, &["users", "delete", "bob"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("owns 1 workspace"), "{}", out.stderr);
    let out = TETHER.run(&bob_cfg, &["delete", "dev", "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // His coordinator connection ends with the deletion.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = CoordConn::client(srv.url(), &session_token(&bob_cfg))
            .await
            .unwrap();
        welcome(&mut c).await;
        let out = TETHER.run(&alice, &["users", "delete", "bob"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        expect_ended(&mut c, "user deleted", Instant::now()).await;
    });
    let out = TETHER.run(&alice, &["users", "list", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("\"bob\""), "{}", out.stdout);
    let out = TETHER.run(&bob_cfg, &["list"]);
    assert_ne!(out.code, 0, "a deleted user's token still works");
}

fn is_update(r: &Response, id: Uuid, kind: PeerUpdateKind) -> bool {
    matches!(r, Response::PeerUpdates { updates } if updates.iter().any(|u| u.id == id && u.kind == kind))
}

/// A raw agent connection for workspace `ws` of `cfg`, its node sent; and its id.
async fn agent_conn(srv: &ServerProcess, cfg: &Path, ws: &str) -> (CoordConn, Uuid) {
    let token = TETHER.create_workspace(cfg, ws);
    let mut agent = CoordConn::agent(srv.url(), &token).await.unwrap();
    let id = welcome(&mut agent).await;
    let node = node_for(id, &NodePrivate::generate(), 999);
    agent.send(&Request::UpdateSelf { node }).await;
    (agent, id)
}

/// A raw client connection with `token`, its node sent and a tunnel to `agent`, once
/// the agent's node arrived; and its id.
async fn client_conn(srv: &ServerProcess, token: &str, agent: Uuid) -> (CoordConn, Uuid) {
    let mut c = CoordConn::client(srv.url(), token).await.unwrap();
    let id = welcome(&mut c).await;
    c.send(&Request::UpdateSelf {
        node: node_for(id, &NodePrivate::generate(), 999),
    })
    .await;
    c.send(&Request::AddTunnel { id: agent }).await;
    c.expect("the agent's node", |r| {
        is_update(r, agent, PeerUpdateKind::Node)
    })
    .await;
    (c, id)
}

/// What a client connection sees after its access was taken away: the coordinator
/// says the session ended (with `why`), closes, and sends no peer update after that.
async fn expect_ended(c: &mut CoordConn, why: &str, since: Instant) {
    let deadline = tokio::time::Instant::now() + END_CAP;
    let mut ended = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_recv(left).await {
            Some(Response::SessionEnded { reason }) => ended = Some(reason),
            Some(Response::PeerUpdates { updates }) if ended.is_some() => {
                panic!("a peer update after the session ended: {updates:?}")
            }
            Some(_) => {}
            None => break,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection stayed open {END_CAP:?} after the session was revoked"
        );
    }
    let reason = ended.expect("closed without saying the session ended");
    assert!(reason.contains(why), "{reason:?} does not say {why:?}");
    eprintln!(
        "{why}: the coordinator connection closed {:?} after",
        since.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logged_out_coordinator_connection_is_closed_and_gets_no_more_agent_nodes() {
    let srv = TETHER.server_process(&[]);
    let alice = TETHER.first_user(&srv);
    let (mut agent, agent_id) = agent_conn(&srv, &alice, "dev").await;
    let token = session_token(&alice);
    let (mut client, client_id) = client_conn(&srv, &token, agent_id).await;

    let logged_out = Instant::now();
    let out = TETHER.run(&alice, &["logout"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The agent's node changes after the logout: the revoked client must not learn it.
    let mut moved = node_for(agent_id, &NodePrivate::generate(), 999);
    moved.endpoints = vec!["192.0.2.1:41641".into()];
    agent.send(&Request::UpdateSelf { node: moved }).await;
    expect_ended(&mut client, "logged out", logged_out).await;
    // The agent is told to end the client's streams.
    let r = agent
        .expect("DISCONNECTED (revoked)", |r| {
            is_update(r, client_id, PeerUpdateKind::Disconnected)
        })
        .await;
    let Response::PeerUpdates { updates } = r else {
        unreachable!()
    };
    let u = updates.iter().find(|u| u.id == client_id).unwrap();
    assert!(
        u.revoked,
        "the agent was not told to end the peer's streams: {u:?}"
    );
    // The revoked token cannot open another connection.
    let again = CoordConn::client(srv.url(), &token).await;
    assert_eq!(again.err().map(|e| e.status), Some(401));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_sessions_coordinator_connection_is_closed() {
    let srv = TETHER.server_process(&["--session-duration", "4s"]);
    let alice = TETHER.first_user(&srv);
    let logged_in = Instant::now();
    let (_agent, agent_id) = agent_conn(&srv, &alice, "dev").await;
    let (mut client, _) = client_conn(&srv, &session_token(&alice), agent_id).await;
    expect_ended(&mut client, "session expired", logged_in).await;
    assert!(
        logged_in.elapsed() >= Duration::from_secs(3),
        "closed before the session expired"
    );
}

/// The web terminal's WebSocket for `agent` with `token`, once the shell printed `ready`.
async fn web_terminal(
    srv: &ServerProcess,
    token: &str,
    agent: Uuid,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/api/v2/workspaceagents/{agent}/pty?reconnect={}&width=80&height=24",
        srv.url().replace("http://", "ws://"),
        Uuid::new_v4()
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Tether-Session-Token", token.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let line = serde_json::json!({ "data": "echo rea''dy\r" }).to_string();
    ws.send(Message::Binary(line.into_bytes().into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&out).contains("ready") {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => out.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!("the web terminal never answered: {other:?}"),
        }
    }
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_closes_the_web_terminal_with_the_reason() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let (srv, cfg, _agent) = deployment(&[]);
    let out = TETHER.run(&cfg, &["list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let agent: Uuid = list[0]["agent_id"].as_str().unwrap().parse().unwrap();
    let mut ws = web_terminal(&srv, &session_token(&cfg), agent).await;
    let logged_out = Instant::now();
    let out = TETHER.run(&cfg, &["logout"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deadline = tokio::time::Instant::now() + END_CAP;
    let frame = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("the web terminal was not closed after the logout: {other:?}"),
        }
    };
    eprintln!(
        "web terminal: logout to its close frame: {:?}",
        logged_out.elapsed()
    );
    let frame = frame.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "logged out");
}
