//! The web terminal and the other browser-path requests against the real `tether`
//! binary (server and agent on loopback), driven by a WebSocket client as the dashboard
//! drives it: `/api/v2/workspaceagents/{id}/pty` (resize, input, 10 MB of output with a
//! matching checksum, two clients on one session, reattach with the screen's repaint,
//! reattach after a minute away, expiry after the agent's idle timeout (2 s here), the
//! end of the process, bad frames, who may connect), listening ports, the server's path
//! in the workspace JSON, its idle tunnels, and `tether show`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tether_testing::{AgentProcess, TestServer, Tether, session_token};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

const PASSWORD: &str = "correct horse battery";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One web terminal connection and the output it received so far.
struct Term {
    ws: Ws,
    out: Vec<u8>,
}

/// Why a WebSocket was not accepted.
#[derive(Debug)]
struct Refused {
    status: u16,
    body: String,
}

fn pty_url(base: &str, agent: Uuid, session: Uuid, rows: u16, cols: u16) -> String {
    format!(
        "{}/api/v2/workspaceagents/{agent}/pty?reconnect={session}&width={cols}&height={rows}",
        base.replace("http://", "ws://")
    )
}

async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Refused> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("WebSocket connect timed out")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(Refused {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Err(e) => panic!("WebSocket connect failed: {e}"),
    }
}

impl Term {
    async fn open(base: &str, token: &str, agent: Uuid, session: Uuid) -> Self {
        Self::open_sized(base, token, agent, session, 24, 80).await
    }

    async fn open_sized(
        base: &str,
        token: &str,
        agent: Uuid,
        session: Uuid,
        rows: u16,
        cols: u16,
    ) -> Self {
        let ws = connect(
            &pty_url(base, agent, session, rows, cols),
            &[("Tether-Session-Token", token)],
        )
        .await
        .unwrap();
        Self {
            ws,
            out: Vec::new(),
        }
    }

    async fn send_json(&mut self, v: Value) {
        self.ws
            .send(Message::Binary(v.to_string().into_bytes().into()))
            .await
            .unwrap();
    }

    async fn type_line(&mut self, line: &str) {
        self.send_json(json!({ "data": format!("{line}\r") })).await;
    }

    async fn resize(&mut self, rows: u16, cols: u16) {
        self.send_json(json!({ "height": rows, "width": cols }))
            .await;
    }

    /// Reads until the output (since `from`) holds `needle`; the index after it.
    async fn wait_for(&mut self, needle: &str, from: usize, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        // Only the bytes not searched yet (and a needle's length before them) are looked at.
        let mut start = from.min(self.out.len());
        loop {
            if let Some(i) = find(&self.out[start..], needle.as_bytes()) {
                return start + i + needle.len();
            }
            start = self.out.len().saturating_sub(needle.len()).max(start);
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {needle:?} within {limit:?}; got {:?}",
                        String::from_utf8_lossy(&self.out[self.out.len().saturating_sub(2000)..])
                    )
                });
            match msg {
                Some(Ok(Message::Binary(b))) => self.out.extend_from_slice(&b),
                Some(Ok(Message::Close(c))) => panic!("closed while waiting for {needle:?}: {c:?}"),
                Some(Ok(_)) => {}
                other => panic!("socket ended while waiting for {needle:?}: {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame (10 s cap).
    async fn close_frame(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no close frame within 20 s"),
                Ok(Some(Ok(Message::Close(c)))) => return c,
                Ok(Some(Ok(Message::Binary(b)))) => self.out.extend_from_slice(&b),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("socket ended without a close frame: {other:?}"),
            }
        }
    }

    async fn leave(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The server, alice's config dir and token, her workspace `dev`'s agent id and agent.
struct Fixture {
    srv: TestServer,
    cfg: std::path::PathBuf,
    token: String,
    agent_id: Uuid,
    agent: Option<AgentProcess>,
}

fn workspace_json(cfg: &std::path::Path, name: &str) -> Value {
    let out = TETHER.run(cfg, &["list", "-o", "json"]);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .cloned()
        .unwrap()
}

fn fixture(extra: &[&str]) -> Fixture {
    let (srv, cfg, agent) = TETHER.dev_workspace(extra);
    fixture_of(srv, cfg, agent)
}

/// Like [`fixture`], with `agent_flags` on the agent's command line.
fn fixture_with_agent(agent_flags: &[&str]) -> Fixture {
    let srv = TestServer::start(&[]);
    let cfg = TETHER.first_user(&srv);
    let agent_token = TETHER.create_workspace(&cfg, "dev");
    let agent = TETHER.agent_with(&srv.url, &agent_token, agent_flags);
    TETHER.wait_connected(&cfg, "dev", Duration::from_secs(20));
    fixture_of(srv, cfg, agent)
}

fn fixture_of(srv: TestServer, cfg: std::path::PathBuf, agent: AgentProcess) -> Fixture {
    let token = session_token(&cfg);
    let agent_id = workspace_json(&cfg, "dev")["agent_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    Fixture {
        srv,
        cfg,
        token,
        agent_id,
        agent: Some(agent),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_input_two_clients_reattach_and_exit() {
    let f = fixture(&[]);
    let session = Uuid::new_v4();
    let mut a = Term::open(&f.srv.url, &f.token, f.agent_id, session).await;
    a.resize(40, 120).await;
    a.type_line("stty size; export MARK=x1; echo hello-$((6*7))")
        .await;
    let at = a.wait_for("40 120", 0, Duration::from_secs(30)).await;
    a.wait_for("hello-42", at, Duration::from_secs(10)).await;

    // A second client on the same session gets the screen, then sees what either types.
    let mut b = Term::open_sized(&f.srv.url, &f.token, f.agent_id, session, 40, 120).await;
    b.wait_for("hello-42", 0, Duration::from_secs(10)).await;
    let (a_from, b_from) = (a.out.len(), b.out.len());
    b.type_line("echo from-$((1+1))-b").await;
    a.wait_for("from-2-b", a_from, Duration::from_secs(10))
        .await;
    b.wait_for("from-2-b", b_from, Duration::from_secs(10))
        .await;

    // Both leave; the session lives on. A later attach gets the repaint of the screen
    // and the same shell.
    a.leave().await;
    b.leave().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut c = Term::open_sized(&f.srv.url, &f.token, f.agent_id, session, 40, 120).await;
    c.wait_for("from-2-b", 0, Duration::from_secs(10)).await;
    let from = c.out.len();
    c.type_line("echo mark-is-$MARK").await;
    c.wait_for("mark-is-x1", from, Duration::from_secs(10))
        .await;

    // Another session id is another shell.
    let mut other = Term::open(&f.srv.url, &f.token, f.agent_id, Uuid::new_v4()).await;
    other.type_line("echo other-mark-is-[$MARK]").await;
    other
        .wait_for("other-mark-is-[]", 0, Duration::from_secs(20))
        .await;
    other.leave().await;

    // The shell exits: the page gets 1000 "process exited".
    c.type_line("exit").await;
    let frame = c.close_frame().await.expect("a close frame with a reason");
    assert_eq!(u16::from(frame.code), 1000);
    assert_eq!(frame.reason.as_str(), "process exited");
    drop(f.agent);
}

/// The shell's pid, from `echo` of `$$` between two markers (`tag` keeps it apart from
/// the echoed command line).
async fn shell_pid(t: &mut Term, tag: &str) -> u32 {
    let from = t.out.len();
    t.type_line(&format!("echo {tag}-pid=$$=")).await;
    let needle = format!("{tag}-pid=");
    // The echoed command line holds `$$`, the output the digits.
    let mut at = from;
    loop {
        at = t.wait_for(&needle, at, Duration::from_secs(20)).await;
        t.wait_for("=", at, Duration::from_secs(20)).await;
        let rest = String::from_utf8_lossy(&t.out[at..]).into_owned();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && rest[digits.len()..].starts_with('=') {
            return digits.parse().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_left_for_a_minute_reattaches_to_the_same_shell() {
    let f = fixture(&[]);
    let session = Uuid::new_v4();
    let mut a = Term::open(&f.srv.url, &f.token, f.agent_id, session).await;
    a.type_line("export MARK=x1; echo before-$((20+1))").await;
    a.wait_for("before-21", 0, Duration::from_secs(30)).await;
    let pid = shell_pid(&mut a, "a").await;
    a.leave().await;

    // The browser is gone for a minute (the agent keeps the session 5).
    tokio::time::sleep(Duration::from_secs(61)).await;

    let mut b = Term::open(&f.srv.url, &f.token, f.agent_id, session).await;
    // The repaint holds what was on screen a minute ago.
    b.wait_for("before-21", 0, Duration::from_secs(20)).await;
    let from = b.out.len();
    b.type_line("echo mark-is-$MARK").await;
    b.wait_for("mark-is-x1", from, Duration::from_secs(20))
        .await;
    assert_eq!(shell_pid(&mut b, "b").await, pid, "another shell");
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_left_for_the_idle_timeout_ends_and_its_id_starts_afresh() {
    let f = fixture_with_agent(&["--terminal-idle-timeout", "2s"]);
    let session = Uuid::new_v4();
    let mut a = Term::open(&f.srv.url, &f.token, f.agent_id, session).await;
    a.type_line("export MARK=x1; echo before-$((20+1))").await;
    a.wait_for("before-21", 0, Duration::from_secs(30)).await;
    let pid = shell_pid(&mut a, "a").await;

    // Attached, the session outlives its idle timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = a.out.len();
    a.type_line("echo still-$((1+1))").await;
    a.wait_for("still-2", from, Duration::from_secs(20)).await;
    a.leave().await;

    // Left alone, it ends: the agent hangs up its shell (the agent runs here, so the
    // shell's pid is visible).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the shell {pid} outlived the idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The same id now starts a new shell: no old screen, no MARK.
    let mut b = Term::open(&f.srv.url, &f.token, f.agent_id, session).await;
    b.type_line("echo mark-is-[$MARK]").await;
    b.wait_for("mark-is-[]", 0, Duration::from_secs(30)).await;
    assert!(
        find(&b.out, b"before-21").is_none(),
        "the old screen came back: {:?}",
        String::from_utf8_lossy(&b.out)
    );
    assert_ne!(shell_pid(&mut b, "b").await, pid);
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_of_output_arrive_intact() {
    let f = fixture(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.txt");
    // 10 MB of hex lines from a fixed seed, and its checksum.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut text = String::with_capacity(10_300_000);
    let mut line = [0u8; 38];
    while text.len() < 10_000_000 {
        for b in &mut line {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        text.push_str(&hex::encode(line));
        text.push('\n');
    }
    assert!(text.len() >= 10_000_000);
    std::fs::write(&file, &text).unwrap();
    let want = hex::encode(Sha256::digest(text.as_bytes()));

    let mut t = Term::open(&f.srv.url, &f.token, f.agent_id, Uuid::new_v4()).await;
    // Raw output (no \n → \r\n), no echo; the markers are split so the echoed command
    // line does not contain them.
    t.type_line(&format!(
        "stty -opost -echo; printf 'BEGIN''MARK\\n'; cat {}; printf 'END''MARK\\n'",
        file.display()
    ))
    .await;
    let started = Instant::now();
    let begin = t.wait_for("BEGINMARK\n", 0, Duration::from_secs(30)).await;
    let end = t
        .wait_for("ENDMARK\n", begin, Duration::from_secs(120))
        .await;
    let elapsed = started.elapsed();
    let body = &t.out[begin..end - "ENDMARK\n".len()];
    assert_eq!(body.len(), text.len());
    assert_eq!(hex::encode(Sha256::digest(body)), want);
    eprintln!(
        "10 MB through the web terminal in {:.2}s ({:.1} MB/s)",
        elapsed.as_secs_f64(),
        text.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );
    t.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_connect_and_bad_requests() {
    let f = fixture(&[]);
    let url = f.srv.url.clone();
    let client = http();
    // The dashboard's cookie.
    let r = client
        .post(format!("{url}/api/v2/users/login"))
        .header("Origin", &url)
        .json(&json!({"username": "alice", "password": PASSWORD, "set_cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let pty = pty_url(&url, f.agent_id, Uuid::new_v4(), 24, 80);
    for origin in [Some("http://evil.example"), None] {
        let mut headers = vec![("Cookie", cookie.as_str())];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        let refused = connect(&pty, &headers).await.unwrap_err();
        assert_eq!(refused.status, 403, "origin {origin:?}: {}", refused.body);
        assert!(refused.body.contains("Cross-site"), "{}", refused.body);
    }
    // The dashboard's own origin with the cookie works.
    let ws = connect(
        &pty,
        &[("Cookie", cookie.as_str()), ("Origin", url.as_str())],
    )
    .await
    .unwrap();
    let mut t = Term { ws, out: vec![] };
    t.type_line("echo cookie-$((2*3))").await;
    t.wait_for("cookie-6", 0, Duration::from_secs(30)).await;
    t.leave().await;

    // Bob (created by admin alice) may not reach alice's agent: 404, as for no agent.
    let r = client
        .post(format!("{url}/api/v2/users"))
        .header("Tether-Session-Token", &f.token)
        .json(&json!({"username": "bob", "email": "bob@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r: Value = client
        .post(format!("{url}/api/v2/users/login"))
        .json(&json!({"username": "bob", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob = r["session_token"].as_str().unwrap().to_string();
    let as_bob = [("Tether-Session-Token", bob.as_str())];
    let refused = connect(&pty, &as_bob).await.unwrap_err();
    assert_eq!(refused.status, 404, "{}", refused.body);
    let stranger = Uuid::new_v4();
    let unknown = connect(
        &pty_url(&url, stranger, Uuid::new_v4(), 24, 80),
        &[("Tether-Session-Token", f.token.as_str())],
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.status, 404);
    // The same sentence for both, naming only the id asked for.
    let bob_body: Value = serde_json::from_str(&refused.body).unwrap();
    let unknown_body: Value = serde_json::from_str(&unknown.body).unwrap();
    assert_eq!(
        bob_body["message"]
            .as_str()
            .unwrap()
            .replace(&f.agent_id.to_string(), "X"),
        unknown_body["message"]
            .as_str()
            .unwrap()
            .replace(&stranger.to_string(), "X")
    );
    let ports = format!(
        "{url}/api/v2/workspaceagents/{}/listening-ports",
        f.agent_id
    );
    let r = client
        .get(&ports)
        .header("Tether-Session-Token", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Not logged in at all.
    assert_eq!(connect(&pty, &[]).await.unwrap_err().status, 401);
    // Bad query strings are refused before the upgrade.
    let ws_base = url.replace("http://", "ws://");
    let token = [("Tether-Session-Token", f.token.as_str())];
    for query in [
        "".to_string(),
        "?reconnect=not-a-uuid".into(),
        format!("?reconnect={}&width=0", Uuid::new_v4()),
        format!("?reconnect={}&height=lots", Uuid::new_v4()),
    ] {
        let u = format!("{ws_base}/api/v2/workspaceagents/{}/pty{query}", f.agent_id);
        let r = connect(&u, &token).await.unwrap_err();
        assert_eq!(r.status, 400, "{query}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_socket() {
    let f = fixture(&[]);
    let session = Uuid::new_v4();
    let mut good = Term::open(&f.srv.url, &f.token, f.agent_id, session).await;
    good.type_line("echo ready-$((3*3))").await;
    good.wait_for("ready-9", 0, Duration::from_secs(30)).await;

    // Oversize: 1009.
    let mut big = Term::open(&f.srv.url, &f.token, f.agent_id, session).await;
    let huge = json!({ "data": "x".repeat(300 * 1024) }).to_string();
    let _ = big.ws.send(Message::Binary(huge.into_bytes().into())).await;
    let frame = big.close_frame().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
    // Malformed: not an input object, 1007.
    for bad in [
        &b"[1]"[..],
        b"{\"data\": 5}",
        b"\xff\xfe",
        b"{\"evil\":true}",
    ] {
        let mut t = Term::open(&f.srv.url, &f.token, f.agent_id, session).await;
        t.ws.send(Message::Binary(bad.to_vec().into()))
            .await
            .unwrap();
        let frame = t.close_frame().await.expect("close frame");
        assert_eq!(u16::from(frame.code), 1007, "{bad:?}: {frame:?}");
        assert!(frame.reason.contains("malformed"), "{frame:?}");
    }
    // The first socket and its session are unharmed.
    let from = good.out.len();
    good.type_line("echo still-$((4*4))").await;
    good.wait_for("still-16", from, Duration::from_secs(10))
        .await;
    good.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_agent_is_named_in_the_close_frame_and_ports_answer_400() {
    let mut f = fixture(&[]);
    f.agent.take().unwrap().kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while workspace_json(&f.cfg, "dev")["status"] != "disconnected" {
        assert!(
            Instant::now() < deadline,
            "the agent never showed disconnected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut t = Term::open(&f.srv.url, &f.token, f.agent_id, Uuid::new_v4()).await;
    let frame = t.close_frame().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1011);
    assert_eq!(frame.reason.as_str(), "agent is not connected");
    let r = http()
        .get(format!(
            "{}/api/v2/workspaceagents/{}/listening-ports",
            f.srv.url, f.agent_id
        ))
        .header("Tether-Session-Token", &f.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("not connected"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_ports_server_path_and_show() {
    let f = fixture(&[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = http()
        .get(format!(
            "{}/api/v2/workspaceagents/{}/listening-ports",
            f.srv.url, f.agent_id
        ))
        .header("Tether-Session-Token", &f.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let ours = body["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("port {port} not listed: {body}"));
    assert_eq!(ours["network"], "tcp");
    assert!(
        ours["process_name"]
            .as_str()
            .unwrap()
            .starts_with("web_terminal"),
        "{ours}"
    );

    // The server now has a tunnel: the workspace shows how it reaches the agent, and the
    // agent's version.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ws = loop {
        let ws: Value = http()
            .get(format!("{}/api/v2/workspaces/dev", f.srv.url))
            .header("Tether-Session-Token", &f.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ws["server_path"]["latency_ms"].is_number() {
            break ws;
        }
        assert!(
            Instant::now() < deadline,
            "no server path with a latency: {ws}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let kind = ws["server_path"]["kind"].as_str().unwrap();
    assert!(kind == "direct" || kind == "derp", "{ws}");
    assert_eq!(ws["agent_version"], env!("CARGO_PKG_VERSION"));
    let health: Value = http()
        .get(format!("{}/api/v2/debug/health", f.srv.url))
        .header("Tether-Session-Token", &f.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let node = &health["server_tailnet"];
    assert_eq!(node["severity"], "ok", "{node}");
    let agents = node["details"]["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "{node}");
    assert_eq!(agents[0]["agent_id"], f.agent_id.to_string());
    assert!(
        agents[0]["path"] == "p2p" || agents[0]["path"] == "DERP",
        "{node}"
    );
    assert_eq!(health["browser_only"], false);

    // `tether show`: status, the path from here, the ports.
    let cfg = f.cfg.clone();
    let out = tokio::task::spawn_blocking(move || TETHER.run(&cfg, &["show", "dev"]))
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Agent:            connected, version"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Path from here:   "), "{}", out.stdout);
    assert!(
        out.stdout.contains("p2p via") || out.stdout.contains("DERP ("),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{port} "))),
        "{}",
        out.stdout
    );
    let cfg = f.cfg.clone();
    let out = tokio::task::spawn_blocking(move || TETHER.run(&cfg, &["show", "dev", "-o", "json"]))
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shown: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(shown["workspace"]["name"], "dev");
    assert!(shown["path"]["latency_ms"].is_number(), "{shown}");
    assert!(
        shown["listening_ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == port),
        "{shown}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnels_are_dropped_and_open_terminals_hold_theirs() {
    let f = fixture(&["--server-tailnet-idle-after", "2s"]);
    let health = || async {
        http()
            .get(format!("{}/api/v2/debug/health", f.srv.url))
            .header("Tether-Session-Token", &f.token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let tunnels = |h: &Value| {
        h["server_tailnet"]["details"]["agents"]
            .as_array()
            .unwrap()
            .len()
    };
    let mut t = Term::open(&f.srv.url, &f.token, f.agent_id, Uuid::new_v4()).await;
    t.type_line("echo held").await;
    t.wait_for("held", 0, Duration::from_secs(30)).await;
    // Held well past the idle time while the terminal is open.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let h = health().await;
    assert_eq!(tunnels(&h), 1, "{h}");
    assert_eq!(h["coordinator"]["details"]["tunnels"], 1, "{h}");
    t.leave().await;
    // Released: gone within the idle time plus a sweep.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = health().await;
        if tunnels(&h) == 0 && h["coordinator"]["details"]["tunnels"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the idle tunnel stayed: {h}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Used again: a new tunnel, and the terminal works.
    let mut t = Term::open(&f.srv.url, &f.token, f.agent_id, Uuid::new_v4()).await;
    t.type_line("echo again-$((5*5))").await;
    t.wait_for("again-25", 0, Duration::from_secs(30)).await;
    t.leave().await;
}
