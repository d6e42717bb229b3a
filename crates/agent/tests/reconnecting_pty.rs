//! The reconnecting PTY over in-memory streams: sessions, attachments, repaints, flow
//! control, expiry and bad input, with real shells on real terminals.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_agent::pty::WindowSize;
use tether_agent::reconnecting_pty::wire::{Request, encode_init, encode_request};
use tether_agent::reconnecting_pty::{Config, Detached, ReconnectingPty, ServeError};
use tether_agent::user::User;
use tether_testing::checksum::sha256_hex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// Upper bound on every wait here.
const BOUND: Duration = Duration::from_secs(30);

/// Bytes the in-memory stream buffers each way (a socket's buffer, small).
const PIPE: usize = 64 * 1024;

/// A fixed `/bin/sh` user with an empty home, so prompts and startup files are known.
fn user(home: &Path) -> User {
    User {
        name: "tester".into(),
        home: home.to_path_buf(),
        shell: PathBuf::from("/bin/sh"),
    }
}

struct Env {
    dir: tempfile::TempDir,
    pty: ReconnectingPty,
}

fn env_with(config: Config) -> Env {
    tether_testing::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let pty = ReconnectingPty::new(user(dir.path()), config);
    Env { dir, pty }
}

fn env() -> Env {
    env_with(Config::default())
}

/// A dialer attached over an in-memory stream.
struct Client {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    seen: Vec<u8>,
    served: JoinHandle<Result<Detached, ServeError>>,
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Connect and send only `first` (no init, or a broken one).
    async fn connect_raw(&self, first: &[u8], pipe: usize) -> Client {
        let (near, far) = tokio::io::duplex(pipe);
        let pty = self.pty.clone();
        let served = tokio::spawn(async move { pty.serve(far).await });
        let (rd, mut wr) = tokio::io::split(near);
        wr.write_all(first).await.unwrap();
        Client {
            rd,
            wr,
            seen: Vec::new(),
            served,
        }
    }

    async fn connect(&self, id: Uuid, size: WindowSize, command: &str) -> Client {
        self.connect_raw(&encode_init(id, size, command), PIPE)
            .await
    }

    /// Wait until `check` holds for the session's screen model.
    async fn wait_screen(&self, id: Uuid, what: &str, check: impl Fn(&vt100::Screen) -> bool) {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(s) = self.pty.screen(id)
                && check(&s)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {what}: {:?}",
                self.pty.screen(id).map(|s| s.contents())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_attachments(&self, id: Uuid, n: usize) {
        let deadline = Instant::now() + BOUND;
        while self.pty.stats(id).map(|s| s.attachments) != Some(n) {
            assert!(Instant::now() < deadline, "never {n} attachments");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Client {
    async fn send(&mut self, data: &str) {
        let frame = encode_request(&Request {
            data: data.into(),
            size: None,
        });
        self.wr.write_all(&frame).await.unwrap();
    }

    async fn resize(&mut self, cols: u16, rows: u16) {
        let frame = encode_request(&Request {
            data: String::new(),
            size: Some(WindowSize::new(cols, rows)),
        });
        self.wr.write_all(&frame).await.unwrap();
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Read until the output so far contains `needle`.
    async fn read_until(&mut self, needle: &str) {
        let deadline = Instant::now() + BOUND;
        let mut buf = vec![0u8; 64 * 1024];
        while !self.text().contains(needle) {
            let n = tokio::time::timeout_at(deadline, self.rd.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", self.text()))
                .unwrap();
            assert!(n > 0, "end of stream before {needle:?}: {:?}", self.text());
            self.seen.extend_from_slice(&buf[..n]);
        }
    }

    /// Read until nothing arrives for `quiet`; returns what arrived.
    async fn read_quiet(&mut self, quiet: Duration) -> Vec<u8> {
        let start = self.seen.len();
        let deadline = Instant::now() + BOUND;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            assert!(Instant::now() < deadline, "output never paused");
            match tokio::time::timeout(quiet, self.rd.read(&mut buf)).await {
                Err(_) => return self.seen[start..].to_vec(),
                Ok(Ok(0)) => panic!("end of stream: {:?}", self.text()),
                Ok(n) => self.seen.extend_from_slice(&buf[..n.unwrap()]),
            }
        }
    }

    /// Read to end of stream (panics after [`BOUND`]).
    async fn read_to_end(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, self.rd.read_to_end(&mut rest))
            .await
            .expect("no end of stream")
            .unwrap();
        self.seen.extend(rest);
    }

    async fn outcome(self) -> Result<Detached, ServeError> {
        let Client { rd, wr, served, .. } = self;
        drop((rd, wr));
        tokio::time::timeout(BOUND, served)
            .await
            .expect("serve did not return")
            .unwrap()
    }

    /// How `serve` ended, with the client's side still open (so it ended by itself).
    async fn outcome_open(&mut self) -> Result<Detached, ServeError> {
        tokio::time::timeout(BOUND, &mut self.served)
            .await
            .expect("serve did not return")
            .unwrap()
    }
}

/// A fresh parser of `size` fed `bytes`.
fn replay(size: WindowSize, bytes: &[u8]) -> vt100::Parser {
    let rows = std::num::NonZeroU16::new(size.rows).unwrap();
    let cols = std::num::NonZeroU16::new(size.cols).unwrap();
    let mut p = vt100::Parser::new(rows, cols, 1000);
    p.process(bytes);
    p
}

fn assert_same_screen(model: &vt100::Screen, got: &vt100::Screen) {
    assert_eq!(got.contents(), model.contents());
    assert_eq!(got.contents_formatted(), model.contents_formatted());
    assert_eq!(got.cursor_position(), model.cursor_position());
    assert_eq!(got.alternate_screen(), model.alternate_screen());
    assert_eq!(got.input_mode_formatted(), model.input_mode_formatted());
}

#[tokio::test]
async fn input_reaches_the_shell_and_resize_is_seen_by_stty() {
    let env = env();
    let id = Uuid::new_v4();
    let mut c = env.connect(id, WindowSize::new(80, 24), "").await;
    c.send("echo hello-$((6*7))\r").await;
    c.read_until("hello-42").await;
    c.send("stty size\r").await;
    c.read_until("24 80").await;
    c.resize(132, 43).await;
    c.send("stty size\r").await;
    c.read_until("43 132").await;
    assert_eq!(env.pty.stats(id).unwrap().size, WindowSize::new(132, 43));
    assert_eq!(env.pty.sessions(), [id]);
}

#[tokio::test]
async fn ten_megabytes_arrive_complete() {
    let env = env();
    let len = 10 * 1024 * 1024;
    // Deterministic printable bytes with line breaks, as `base64` would print.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..len)
        .map(|i| {
            if i % 77 == 76 {
                return b'\n';
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(x % 64) as usize]
        })
        .collect();
    let file = env.path("big.txt");
    std::fs::write(&file, &data).unwrap();
    let want = sha256_hex(&data);
    // Raw output (no "\n" → "\r\n"), no echo: the terminal passes the bytes unchanged.
    let cmd = format!("stty raw -echo; cat {}", file.display());
    let mut c = env
        .connect(Uuid::new_v4(), WindowSize::new(80, 24), &cmd)
        .await;
    c.read_to_end().await;
    let start = c
        .seen
        .windows(64)
        .position(|w| w == &data[..64])
        .expect("the file's first bytes never arrived");
    let got = &c.seen[start..];
    assert_eq!(got.len(), len, "bytes after the repaint");
    assert_eq!(sha256_hex(got), want);
    assert!(matches!(c.outcome().await, Ok(Detached::SessionEnded)));
}

#[tokio::test]
async fn two_clients_share_one_session_both_see_and_both_type() {
    let env = env();
    let id = Uuid::new_v4();
    let size = WindowSize::new(80, 24);
    let mut a = env.connect(id, size, "").await;
    a.send("echo ready-$((1+1))\r").await;
    a.read_until("ready-2").await;
    let mut b = env.connect(id, size, "").await;
    env.wait_attachments(id, 2).await;
    a.send("echo from-a-$((2*3))\r").await;
    a.read_until("from-a-6").await;
    b.read_until("from-a-6").await;
    b.send("echo from-b-$((3*3))\r").await;
    a.read_until("from-b-9").await;
    b.read_until("from-b-9").await;
    assert_eq!(env.pty.sessions().len(), 1);
}

#[tokio::test]
async fn reattach_gets_the_same_shell_and_a_repaint_of_what_was_there() {
    let env = env();
    let id = Uuid::new_v4();
    let size = WindowSize::new(80, 24);
    let mut a = env.connect(id, size, "").await;
    a.send("export MARK=x1; echo before-$((40+2))\r").await;
    a.read_until("before-42").await;
    a.read_quiet(Duration::from_millis(200)).await;
    assert!(matches!(a.outcome().await, Ok(Detached::ClientClosed)));
    env.wait_attachments(id, 0).await;

    let mut b = env.connect(id, size, "").await;
    let repaint = b.read_quiet(Duration::from_millis(300)).await;
    let shown = replay(size, &repaint);
    assert!(
        shown.screen().contents().contains("before-42"),
        "{:?}",
        shown.screen().contents()
    );
    assert_same_screen(&env.pty.screen(id).unwrap(), shown.screen());
    b.send("echo mark=$MARK\r").await;
    b.read_until("mark=x1").await;
}

/// Run `program` (typed into the shell) until the model is on the alternate screen and
/// shows `marker`, then reattach and check that the repaint reproduces the model, and
/// that leaving the program shows the shell again in both.
async fn full_screen_repaint(program: &str, marker: &str, quit: &str) {
    let env = env();
    let id = Uuid::new_v4();
    let size = WindowSize::new(90, 20);
    let file = env.path("notes.txt");
    let text: String = (1..=60).map(|i| format!("{marker} {i}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let mut a = env.connect(id, size, "").await;
    a.send("echo shell-before\r").await;
    a.read_until("shell-before").await;
    a.send(&format!("{program} {}\r", file.display())).await;
    env.wait_screen(id, "the program", |s| {
        s.alternate_screen() && s.contents().contains(&format!("{marker} 3"))
    })
    .await;
    a.read_quiet(Duration::from_millis(300)).await;
    drop(a);
    env.wait_attachments(id, 0).await;

    let mut b = env.connect(id, size, "").await;
    let repaint = b.read_quiet(Duration::from_millis(300)).await;
    let mut shown = replay(size, &repaint);
    let model = env.pty.screen(id).unwrap();
    assert!(model.alternate_screen());
    assert_same_screen(&model, shown.screen());

    // Quit: the program's own exit sequences must bring back the shell's screen.
    b.send(quit).await;
    env.wait_screen(id, "the shell again", |s| !s.alternate_screen())
        .await;
    let after = b.read_quiet(Duration::from_millis(300)).await;
    shown.process(&after);
    let model = env.pty.screen(id).unwrap();
    assert!(!shown.screen().alternate_screen());
    assert!(shown.screen().contents().contains("shell-before"));
    assert_eq!(shown.screen().contents(), model.contents());
}

#[tokio::test]
async fn less_is_repainted_exactly() {
    full_screen_repaint("less", "less-line", "q").await;
}

#[tokio::test]
async fn vi_is_repainted_exactly() {
    // vim (Debian's `vi`) is installed by .ci/run.
    full_screen_repaint("vi -u NONE -N -n", "vi-line", "\x1b:q!\r").await;
}

#[tokio::test]
async fn a_session_with_nothing_attached_expires_after_the_idle_timeout() {
    let env = env_with(Config {
        idle_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let id = Uuid::new_v4();
    let mut c = env.connect(id, WindowSize::default(), "").await;
    let pid = shell_pid(&mut c).await;
    // Attached for well over the timeout: it lives.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(env.pty.sessions(), [id]);
    c.send("echo still-$((5*5))\r").await;
    c.read_until("still-25").await;
    drop(c);
    let deadline = Instant::now() + BOUND;
    while !env.pty.sessions().is_empty() {
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its shell is gone too (hung up, then reaped).
    let deadline = Instant::now() + BOUND;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the shell {pid} outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same id now starts a new shell.
    let mut again = env.connect(id, WindowSize::default(), "").await;
    assert_ne!(shell_pid(&mut again).await, pid);
}

/// The process id of the client's shell.
async fn shell_pid(c: &mut Client) -> u32 {
    // "$$" is in the echoed command line, the number only in the output.
    c.send("echo pid=$$.$((1+1))\r").await;
    c.read_until(".2\r\n").await;
    let text = c.text();
    text.split("pid=")
        .find_map(|s| s.strip_suffix_once_digits())
        .unwrap_or_else(|| panic!("no pid in {text:?}"))
}

trait Digits {
    fn strip_suffix_once_digits(&self) -> Option<u32>;
}

impl Digits for str {
    /// The number at the start of `self` when it is followed by ".2".
    fn strip_suffix_once_digits(&self) -> Option<u32> {
        let end = self.find(|c: char| !c.is_ascii_digit())?;
        self[end..]
            .starts_with(".2")
            .then(|| self[..end].parse().ok())?
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn exit_closes_every_attached_connection() {
    let env = env();
    let id = Uuid::new_v4();
    let size = WindowSize::default();
    let mut a = env.connect(id, size, "").await;
    a.send("echo up\r").await;
    a.read_until("up").await;
    let mut b = env.connect(id, size, "").await;
    env.wait_attachments(id, 2).await;
    a.send("echo bye-$((7*7)); exit\r").await;
    a.read_to_end().await;
    b.read_to_end().await;
    assert!(a.text().contains("bye-49"));
    assert!(b.text().contains("bye-49"));
    assert!(matches!(a.outcome_open().await, Ok(Detached::SessionEnded)));
    assert!(matches!(b.outcome_open().await, Ok(Detached::SessionEnded)));
    assert!(env.pty.sessions().is_empty());
}

#[tokio::test]
async fn malformed_init_and_silence_close_that_connection_only() {
    let env = env_with(Config {
        attach_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let id = Uuid::new_v4();
    let mut good = env.connect(id, WindowSize::default(), "").await;
    good.send("echo alive-1\r").await;
    good.read_until("alive-1").await;

    // Broken JSON, a bad id, and an empty message.
    for first in [
        b"\x05\x00{nope".to_vec(),
        {
            let json = br#"{"ID":"not-a-uuid"}"#;
            let mut v = (json.len() as u16).to_le_bytes().to_vec();
            v.extend_from_slice(json);
            v
        },
        b"\x00\x00".to_vec(),
    ] {
        let mut c = env.connect_raw(&first, PIPE).await;
        let err = c.outcome_open().await.unwrap_err();
        assert!(matches!(err, ServeError::Wire(_)), "{err}");
        c.read_to_end().await;
        assert!(c.seen.is_empty(), "answered a bad init: {:?}", c.text());
    }
    // Half an init, then nothing: dropped at the attach timeout.
    let mut silent = env.connect_raw(b"\x40\x00{\"ID\"", PIPE).await;
    let started = Instant::now();
    let err = silent.outcome_open().await.unwrap_err();
    assert!(matches!(err, ServeError::AttachTimeout(_)), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Closed before the init was complete.
    let c = env.connect_raw(b"\x40", PIPE).await;
    let err = c.outcome().await.unwrap_err();
    assert!(matches!(err, ServeError::ClosedBeforeInit), "{err}");

    good.send("echo alive-2\r").await;
    good.read_until("alive-2").await;
    assert_eq!(env.pty.sessions(), [id]);
}

#[tokio::test]
async fn malformed_frames_close_that_connection_only() {
    let env = env();
    let id = Uuid::new_v4();
    let size = WindowSize::default();
    let mut good = env.connect(id, size, "").await;
    good.send("echo alive-1\r").await;
    good.read_until("alive-1").await;
    for bad in [
        b"not json".to_vec(),
        b"{\"data\":42}".to_vec(),
        b"[\"data\"]".to_vec(),
        {
            // An object that never ends, past the bound.
            let mut v = b"{\"data\":\"".to_vec();
            v.resize(v.len() + 2 * 1024 * 1024, b'a');
            v
        },
    ] {
        let mut c = env.connect(id, size, "").await;
        c.read_quiet(Duration::from_millis(100)).await;
        let write = c.wr.write_all(&bad).await;
        let err = c.outcome_open().await.unwrap_err();
        assert!(matches!(err, ServeError::Wire(_)), "{err}");
        // Its stream is closed (the long one may have been cut off mid-write).
        let _ = write;
        c.read_to_end().await;
    }
    env.wait_attachments(id, 1).await;
    good.send("echo alive-2\r").await;
    good.read_until("alive-2").await;
}

/// Bytes queued per attachment at most: its queue of chunks, the one chunk waiting for
/// room, and the repaint.
fn queue_bound(config: &Config, repaint: usize) -> usize {
    (config.queue_chunks + 1) * tether_agent::reconnecting_pty::READ_CHUNK + repaint
}

#[tokio::test]
async fn a_slow_reader_slows_the_program_and_memory_stays_bounded() {
    let config = Config {
        // Never detached here: this reader is slow, not stalled.
        stall_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let env = env_with(config);
    let id = Uuid::new_v4();
    let done = env.path("done");
    let total = 8 * 1024 * 1024;
    let cmd = format!(
        "stty raw -echo; head -c {total} /dev/zero | tr '\\0' x; touch {}; sleep 60",
        done.display()
    );
    let mut c = env
        .connect_raw(&encode_init(id, WindowSize::new(80, 24), &cmd), 16 * 1024)
        .await;
    // Not reading at all for a while: the program must be held up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !done.exists(),
        "the program finished while nobody read its output"
    );
    let stats = env.pty.stats(id).unwrap();
    let bound = queue_bound(&config, 4096);
    assert!(stats.queued_bytes <= bound, "{stats:?} over {bound}");
    // Now read slowly, sampling the queue: it stays under the bound all along.
    let mut buf = vec![0u8; 32 * 1024];
    let mut got = 0usize;
    let mut samples = 0usize;
    let deadline = Instant::now() + BOUND;
    while got < total {
        assert!(
            Instant::now() < deadline,
            "only {got} of {total} bytes arrived"
        );
        let n = c.rd.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got += buf[..n].iter().filter(|&&b| b == b'x').count();
        samples += 1;
        if samples.is_multiple_of(16) {
            let q = env.pty.stats(id).unwrap().queued_bytes;
            assert!(q <= bound, "{q} bytes queued, bound {bound}");
        }
        // Slower than the program writes.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(got, total);
    let deadline = Instant::now() + BOUND;
    while !done.exists() {
        assert!(Instant::now() < deadline, "the program never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = env.pty.stats(id).unwrap();
    println!(
        "slow reader: peak queued {} bytes (bound {bound}) for {total} bytes of output",
        stats.peak_queued_bytes
    );
    assert!(stats.peak_queued_bytes <= bound, "{stats:?}");
    assert!(stats.peak_queued_bytes > 0);
}

#[tokio::test]
async fn a_stalled_reader_is_detached_and_the_others_go_on() {
    let config = Config {
        stall_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let env = env_with(config);
    let id = Uuid::new_v4();
    let size = WindowSize::new(80, 24);
    let mut fast = env.connect(id, size, "").await;
    fast.send("echo ready\r").await;
    fast.read_until("ready").await;
    // Attached but never reading, through a small pipe.
    let mut stalled = env.connect_raw(&encode_init(id, size, ""), 4 * 1024).await;
    env.wait_attachments(id, 2).await;
    fast.send("head -c 3000000 /dev/zero | tr '\\0' y; echo; echo end-$((8*8))\r")
        .await;
    // The reader keeps going: the stalled one is dropped after its bound.
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail = Vec::new();
    let deadline = Instant::now() + BOUND;
    loop {
        let n = tokio::time::timeout_at(deadline, fast.rd.read(&mut buf))
            .await
            .expect("the fast reader was held up")
            .unwrap();
        assert!(n > 0);
        tail.extend_from_slice(&buf[..n]);
        if tail.windows(6).any(|w| w == b"end-64") {
            break;
        }
        let keep = tail.len().saturating_sub(16);
        tail.drain(..keep);
    }
    let err = stalled.outcome_open().await.unwrap_err();
    assert!(matches!(err, ServeError::Stalled(_)), "{err}");
    assert_eq!(env.pty.stats(id).unwrap().attachments, 1);
    // It can come back, and its repaint shows the screen as it is.
    let mut back = env.connect(id, size, "").await;
    let repaint = back.read_quiet(Duration::from_millis(300)).await;
    let shown = replay(size, &repaint);
    assert!(shown.screen().contents().contains("end-64"));
}

#[tokio::test]
async fn sessions_are_bounded() {
    let env = env_with(Config {
        max_sessions: 2,
        ..Config::default()
    });
    let mut a = env.connect(Uuid::new_v4(), WindowSize::default(), "").await;
    let mut b = env.connect(Uuid::new_v4(), WindowSize::default(), "").await;
    a.send("echo a-ok\r").await;
    a.read_until("a-ok").await;
    b.send("echo b-ok\r").await;
    b.read_until("b-ok").await;
    let mut c = env.connect(Uuid::new_v4(), WindowSize::default(), "").await;
    let err = c.outcome_open().await.unwrap_err();
    assert!(matches!(err, ServeError::TooManySessions(2)), "{err}");
    assert_eq!(env.pty.sessions().len(), 2);
}
