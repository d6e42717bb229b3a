//! `tether speedtest WS [-d] [-t 5s] [--direction up|down] [-o table|json]`, after
//! `coder speedtest`: prints the path to the workspace's agent and its latency (on stderr
//! with `-o json`, whose JSON has them as fields), then measures throughput through the
//! tailnet against the agent's speedtest responder on port 3 (protocol in
//! [`tether_agent::speedtest`]), one row per second of this side's clock and an overall row.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tether_agent::speedtest::{self, CHUNK, Direction, Header, MAX_DURATION, SpeedtestError};
use tether_proto::derpmap::DerpMap;
use tether_tailnet::{PathKind, Pong, TailnetError, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use crate::Globals;
use crate::cmd::ping::{parse_duration, relay_reasons};
use crate::cmd::ssh::{Tunnel, open_tunnel};
use crate::cmd::workspaces::Output;

/// `tether speedtest` flags.
#[derive(Debug, clap::Args)]
pub struct SpeedtestArgs {
    /// Workspace name.
    pub workspace: String,
    /// Wait for a direct (p2p) path before testing; fail if none comes within 30s.
    #[arg(short = 'd', long)]
    pub direct: bool,
    /// How long to send (e.g. `5s`, `500ms`, `1m`; at most 5m).
    #[arg(short = 't', long, default_value = "5s", value_parser = parse_test_time)]
    pub time: Duration,
    /// Which way to measure: `down` (the agent sends) or `up` (this side sends).
    #[arg(long, value_enum, default_value_t = Way::Down)]
    pub direction: Way,
    /// Output format; `json` prints only the JSON on stdout (with the latency and path as
    /// fields), the path line goes to stderr.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `--direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Way {
    /// The agent sends, this side receives.
    Down,
    /// This side sends, the agent receives and confirms the total.
    Up,
}

impl From<Way> for Direction {
    fn from(w: Way) -> Self {
        match w {
            Way::Down => Direction::Download,
            Way::Up => Direction::Upload,
        }
    }
}

/// How long to wait for the WireGuard session with the agent.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
/// How long the latency line waits for a pong, pinging again each [`PING_EACH`].
const PING_WAIT: Duration = Duration::from_secs(5);
/// How long each of those pings is waited for.
const PING_EACH: Duration = Duration::from_secs(1);
/// How long `-d` waits for a direct path.
const DIRECT_WAIT: Duration = Duration::from_secs(30);
/// How long the agent may take to accept the test, and any read or write to progress.
const IO_WAIT: Duration = Duration::from_secs(10);
/// How long past the test's end the agent may keep sending (its buffered bytes drain).
const OVERRUN: Duration = Duration::from_secs(30);
/// One table row per this much of the client's clock.
const STEP: Duration = Duration::from_secs(1);

/// `--time` within what the agent accepts (1 ms to 5 minutes).
fn parse_test_time(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) || d > MAX_DURATION {
        return Err(format!("{s:?} must be between 1ms and 5m"));
    }
    Ok(d)
}

/// Runs `tether speedtest`.
pub async fn run(g: &Globals, args: SpeedtestArgs) -> Result<()> {
    let tunnel = open_tunnel(g, &args.workspace).await?;
    let result = test(&tunnel, &args).await;
    tunnel.conn.close().await;
    result
}

async fn test(tunnel: &Tunnel, args: &SpeedtestArgs) -> Result<()> {
    let ws = args.workspace.as_str();
    let map = tunnel.conn.derp_map();
    if !tunnel.wait_session(HANDSHAKE_WAIT).await {
        bail!(
            "no WireGuard session with workspace {ws}'s agent after {}s (`tether ping {ws}` shows where it stops)",
            HANDSHAKE_WAIT.as_secs()
        );
    }
    let pong = if args.direct {
        wait_direct(tunnel, ws, &map).await?
    } else {
        ping(tunnel, ws).await?
    };
    // In JSON mode stdout carries only the JSON (which has the path as fields).
    match args.output {
        Output::Table => println!("{}", path_line(&pong, &map)),
        Output::Json => eprintln!("{}", path_line(&pong, &map)),
    }

    let direction = Direction::from(args.direction);
    eprintln!(
        "Starting a {} {} test...",
        fmt_duration(args.time),
        direction.as_str()
    );
    let mut stream = tunnel.dial(speedtest::PORT).await?;
    let header = Header {
        direction,
        duration: args.time,
    };
    speedtest::request(&mut stream, header, IO_WAIT)
        .await
        .map_err(|e| match e {
            SpeedtestError::Closed { .. } => anyhow::anyhow!(
                "workspace {ws}'s agent closed the speedtest port without answering (an older agent without the speedtest responder?)"
            ),
            e => anyhow::Error::new(e).context(format!("the speedtest with workspace {ws} did not start")),
        })?;
    let measured = match direction {
        Direction::Download => download(&mut stream, args.time).await,
        Direction::Upload => upload(&mut stream, args.time).await,
    }
    .with_context(|| format!("the {} test with workspace {ws} failed", direction.as_str()))?;
    let report = Report::new(&measured);
    match args.output {
        Output::Table => print!("{}", report.table()),
        Output::Json => {
            let json = JsonReport::new(report, &pong, &map);
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(())
}

/// A pong for the latency line: a disco ping a second, as `tether ping` sends them,
/// until one is answered or [`PING_WAIT`] has passed. One lost datagram on a lossy
/// path must not fail the test.
async fn ping(tunnel: &Tunnel, ws: &str) -> Result<Pong> {
    let agent = tunnel.workspace.agent_id;
    match first_answer(PING_WAIT, PING_EACH, |wait| tunnel.conn.ping(agent, wait)).await {
        Ok(p) => Ok(p),
        Err(TailnetError::Timeout { .. }) => bail!(
            "workspace {ws}'s agent answered none of the pings sent in {}s (`tether ping {ws}` shows why)",
            PING_WAIT.as_secs()
        ),
        Err(e) => Err(e).with_context(|| format!("could not ping workspace {ws}")),
    }
}

/// Calls `ping` with at most `each` to wait, again after each timeout, until it answers,
/// fails otherwise, or `total` has passed (then its last timeout).
async fn first_answer<F, Fut>(
    total: Duration,
    each: Duration,
    mut ping: F,
) -> Result<Pong, TailnetError>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<Pong, TailnetError>>,
{
    let give_up = Instant::now() + total;
    loop {
        let wait = each.min(give_up.saturating_duration_since(Instant::now()));
        match ping(wait).await {
            Err(TailnetError::Timeout { .. }) if Instant::now() < give_up => {}
            r => return r,
        }
    }
}

/// Pings once a second until a pong comes back over a direct path, for at most
/// [`DIRECT_WAIT`]; fails at once when direct paths are switched off.
async fn wait_direct(tunnel: &Tunnel, ws: &str, map: &DerpMap) -> Result<Pong> {
    let agent = tunnel.workspace.agent_id;
    let give_up = Instant::now() + DIRECT_WAIT;
    let mut said_waiting = false;
    loop {
        let pong = ping(tunnel, ws).await?;
        if matches!(pong.via, PathKind::Direct { .. }) {
            return Ok(pong);
        }
        let diag = tunnel.conn.diagnostics(agent);
        let via = via(&pong.via, map);
        let reasons = relay_reasons(&diag, map).join("; ");
        if diag.direct_disabled_by_server || diag.direct_disabled_locally {
            bail!("no direct path to {ws}: {reasons}; the connection is relayed via DERP ({via})");
        }
        if Instant::now() >= give_up {
            bail!(
                "no direct path to {ws} within {}s; the connection is relayed via DERP ({via}), likely because {reasons}",
                DIRECT_WAIT.as_secs()
            );
        }
        if !said_waiting {
            eprintln!(
                "Waiting for a direct connection... ({}ms via {via})",
                millis(pong.latency)
            );
            said_waiting = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `29ms via tether` (the DERP region's code) or `1ms via direct`.
fn path_line(pong: &Pong, map: &DerpMap) -> String {
    format!("{}ms via {}", millis(pong.latency), via(&pong.via, map))
}

/// `direct`, or the DERP region's code (`tether`), else its name, else `region N`.
fn via(path: &PathKind, map: &DerpMap) -> String {
    match path {
        PathKind::Direct { .. } => "direct".into(),
        PathKind::Derp { region } => match map.regions.get(region) {
            Some(r) if !r.region_code.is_empty() => r.region_code.clone(),
            Some(r) if !r.region_name.is_empty() => r.region_name.clone(),
            _ => format!("region {region}"),
        },
    }
}

/// Whole milliseconds, rounded.
fn millis(d: Duration) -> u128 {
    (d.as_micros() + 500) / 1000
}

/// `5s`, `1.5s` or `500ms`, for the "Starting a … test" line.
fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Bytes moved in one stretch of the client's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    start: Duration,
    end: Duration,
    bytes: u64,
}

/// What one test measured.
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    /// Per-second spans of what this side received (download) or wrote (upload).
    intervals: Vec<Span>,
    /// The whole test: for an upload, the bytes the agent confirmed and the time until
    /// its confirmation; for a download, everything received until EOF.
    overall: Span,
}

/// Cuts a stream of byte counts into spans of [`STEP`] on the client's clock.
#[derive(Debug)]
struct Meter {
    done: Vec<Span>,
    cut: Duration,
    next: Duration,
    pending: u64,
    total: u64,
}

impl Meter {
    fn new() -> Self {
        Self {
            done: Vec::new(),
            cut: Duration::ZERO,
            next: STEP,
            pending: 0,
            total: 0,
        }
    }

    /// `n` bytes moved, the last of them at `at` since the start.
    fn add(&mut self, n: usize, at: Duration) {
        self.pending += n as u64;
        self.total += n as u64;
        if at >= self.next {
            // A span ends at the real time of its last bytes, so a stall shows as a
            // longer span instead of being hidden.
            self.done.push(Span {
                start: self.cut,
                end: at,
                bytes: self.pending,
            });
            self.pending = 0;
            self.cut = at;
            let steps = u32::try_from(at.as_nanos() / STEP.as_nanos()).unwrap_or(u32::MAX);
            self.next = STEP * steps.saturating_add(1);
        }
    }

    /// The spans up to `end`; a remainder shorter than half a step joins the last span
    /// (a 0.03 s row would only show noise).
    fn finish(mut self, end: Duration) -> Vec<Span> {
        let tail = Span {
            start: self.cut,
            end: end.max(self.cut),
            bytes: self.pending,
        };
        match self.done.last_mut() {
            Some(last) if tail.end - tail.start < STEP / 2 => {
                last.end = tail.end;
                last.bytes += tail.bytes;
            }
            _ if tail.end > tail.start || tail.bytes > 0 => self.done.push(tail),
            _ => {}
        }
        self.done
    }
}

/// Receives until the agent closes its side.
async fn download(stream: &mut TcpStream, duration: Duration) -> Result<Measured> {
    let start = Instant::now();
    let give_up = start + duration + OVERRUN;
    let mut meter = Meter::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match timeout(IO_WAIT, stream.read(&mut buf)).await {
            Ok(r) => r.context("the stream broke")?,
            Err(_) => bail!("the agent sent nothing for {}s", IO_WAIT.as_secs()),
        };
        if n == 0 {
            break;
        }
        meter.add(n, start.elapsed());
        if Instant::now() > give_up {
            bail!(
                "the agent was still sending {}s after the test's end",
                OVERRUN.as_secs()
            );
        }
    }
    let end = start.elapsed();
    let total = meter.total;
    Ok(Measured {
        intervals: meter.finish(end),
        overall: Span {
            start: Duration::ZERO,
            end,
            bytes: total,
        },
    })
}

/// Sends for `duration`, closes this side and reads the agent's count.
async fn upload(stream: &mut TcpStream, duration: Duration) -> Result<Measured> {
    // Content does not matter: WireGuard encrypts it, nothing compresses it.
    let buf = vec![0x5a_u8; CHUNK];
    let start = Instant::now();
    let stop = start + duration;
    let mut meter = Meter::new();
    while Instant::now() < stop {
        let n = match timeout(IO_WAIT, stream.write(&buf)).await {
            Ok(r) => r.context("the stream broke")?,
            Err(_) => bail!("the agent took nothing for {}s", IO_WAIT.as_secs()),
        };
        if n == 0 {
            bail!("the agent closed the stream during the upload");
        }
        meter.add(n, start.elapsed());
    }
    let written_end = start.elapsed();
    let written = meter.total;
    stream
        .shutdown()
        .await
        .context("could not end the upload")?;
    // The agent answers once everything in flight has arrived.
    let confirmed = speedtest::read_upload_total(stream, OVERRUN)
        .await
        .context("the agent did not confirm the upload")?;
    let end = start.elapsed();
    if confirmed != written {
        eprintln!("note: the agent received {confirmed} of the {written} bytes sent");
    }
    Ok(Measured {
        intervals: meter.finish(written_end),
        overall: Span {
            start: Duration::ZERO,
            end,
            bytes: confirmed,
        },
    })
}

/// One row of output, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Row {
    start_time_seconds: f64,
    end_time_seconds: f64,
    throughput_mbits: f64,
    bytes: u64,
}

impl Row {
    fn new(s: &Span) -> Self {
        let secs = (s.end - s.start).as_secs_f64();
        Self {
            start_time_seconds: s.start.as_secs_f64(),
            end_time_seconds: s.end.as_secs_f64(),
            throughput_mbits: if secs > 0.0 {
                mbits(s.bytes) / secs
            } else {
                0.0
            },
            bytes: s.bytes,
        }
    }

    /// `0.00-1.00 sec`, `630.7840 MBits`, `630.7404 Mbits/sec`.
    fn cells(&self) -> [String; 3] {
        [
            format!(
                "{:.2}-{:.2} sec",
                self.start_time_seconds, self.end_time_seconds
            ),
            format!("{:.4} MBits", mbits(self.bytes)),
            format!("{:.4} Mbits/sec", self.throughput_mbits),
        ]
    }
}

/// Megabits (10^6 bits), as iperf and Coder count them.
fn mbits(bytes: u64) -> f64 {
    bytes as f64 * 8.0 / 1e6
}

/// The test's result, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Report {
    overall: Row,
    intervals: Vec<Row>,
}

/// What `-o json` prints: the report with the latency and path of the test.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct JsonReport {
    /// The pong's round trip before the test, in milliseconds.
    latency_ms: f64,
    /// `direct` or `derp`.
    path: &'static str,
    /// The DERP region's code (as in the path line) when relayed.
    derp_region: Option<String>,
    /// The peer's UDP address when direct.
    direct_addr: Option<std::net::SocketAddr>,
    #[serde(flatten)]
    report: Report,
}

impl JsonReport {
    fn new(report: Report, pong: &Pong, map: &DerpMap) -> Self {
        let (path, derp_region, direct_addr) = match pong.via {
            PathKind::Direct { addr } => ("direct", None, Some(addr)),
            PathKind::Derp { .. } => ("derp", Some(via(&pong.via, map)), None),
        };
        Self {
            latency_ms: pong.latency.as_secs_f64() * 1000.0,
            path,
            derp_region,
            direct_addr,
            report,
        }
    }
}

impl Report {
    fn new(m: &Measured) -> Self {
        Self {
            overall: Row::new(&m.overall),
            intervals: m.intervals.iter().map(Row::new).collect(),
        }
    }

    /// The header, one row per interval, a rule and the overall row, in aligned columns.
    fn table(&self) -> String {
        let header = ["INTERVAL", "TRANSFER", "BANDWIDTH"].map(String::from);
        let rows: Vec<[String; 3]> = self.intervals.iter().map(Row::cells).collect();
        let overall = self.overall.cells();
        let mut widths = header.clone().map(|h| h.len());
        for r in rows.iter().chain([&overall]) {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |r: &[String; 3]| {
            let cells: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        };
        let mut out = line(&header);
        for r in &rows {
            out.push_str(&line(r));
        }
        let width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        out.push_str(&"-".repeat(width));
        out.push('\n');
        out.push_str(&line(&overall));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timed_out(after: Duration) -> TailnetError {
        TailnetError::Timeout {
            what: "a pong".into(),
            after,
        }
    }

    /// Pings answered after `lost` unanswered ones (each times out after its wait), sent
    /// for at most `total`, each waited for 100 ms.
    async fn ping_losing(
        lost: usize,
        total: Duration,
    ) -> (Result<Pong, TailnetError>, Vec<Duration>) {
        let mut waits = Vec::new();
        let got = first_answer(total, ms(100), |wait| {
            waits.push(wait);
            let answered = waits.len() > lost;
            async move {
                if answered {
                    Ok(Pong {
                        latency: ms(3),
                        via: PathKind::Derp { region: 1 },
                    })
                } else {
                    tokio::time::sleep(wait).await;
                    Err(timed_out(wait))
                }
            }
        })
        .await;
        (got, waits)
    }

    #[tokio::test]
    async fn a_lost_ping_is_sent_again_until_the_wait_is_over() {
        let (got, waits) = ping_losing(2, ms(5000)).await;
        let pong = got.expect("the third ping is answered");
        assert_eq!(pong.latency, ms(3));
        assert_eq!(waits, vec![ms(100); 3]);
    }

    #[tokio::test]
    async fn pings_stop_when_the_wait_is_over() {
        let (got, waits) = ping_losing(usize::MAX, ms(250)).await;
        assert!(matches!(got, Err(TailnetError::Timeout { .. })), "{got:?}");
        // Two whole waits, then what is left of the 250 ms (less what the calls took).
        assert_eq!(waits.len(), 3, "{waits:?}");
        assert_eq!(waits[..2], [ms(100), ms(100)]);
        assert!(waits[2] <= ms(50) && waits[2] > Duration::ZERO, "{waits:?}");
    }

    #[tokio::test]
    async fn other_ping_errors_are_not_retried() {
        let mut calls = 0;
        let got = first_answer(Duration::from_secs(5), Duration::from_secs(1), |_| {
            calls += 1;
            async { Err(TailnetError::Closed) }
        })
        .await;
        assert!(matches!(got, Err(TailnetError::Closed)));
        assert_eq!(calls, 1);
    }

    #[test]
    fn meter_cuts_per_second_and_folds_a_short_tail() {
        let mut m = Meter::new();
        m.add(100, ms(400));
        m.add(100, ms(1001));
        m.add(50, ms(1500));
        m.add(50, ms(2002));
        m.add(10, ms(2030));
        let spans = m.finish(ms(2040));
        assert_eq!(
            spans,
            vec![
                Span {
                    start: ms(0),
                    end: ms(1001),
                    bytes: 200
                },
                Span {
                    start: ms(1001),
                    end: ms(2040),
                    bytes: 110
                },
            ]
        );
    }

    #[test]
    fn meter_shows_a_stall_and_keeps_a_long_tail() {
        let mut m = Meter::new();
        m.add(10, ms(500));
        // Nothing for 2.5 s: one long span, then cuts resume on whole seconds.
        m.add(10, ms(3000));
        m.add(10, ms(3500));
        m.add(10, ms(4001));
        m.add(10, ms(4700));
        let spans = m.finish(ms(4800));
        assert_eq!(
            spans,
            vec![
                Span {
                    start: ms(0),
                    end: ms(3000),
                    bytes: 20
                },
                Span {
                    start: ms(3000),
                    end: ms(4001),
                    bytes: 20
                },
                Span {
                    start: ms(4001),
                    end: ms(4800),
                    bytes: 10
                },
            ]
        );
        // A test shorter than half a step still has one row.
        let mut m = Meter::new();
        m.add(10, ms(100));
        assert_eq!(
            m.finish(ms(200)),
            vec![Span {
                start: ms(0),
                end: ms(200),
                bytes: 10
            }]
        );
    }

    #[test]
    fn table_and_json_rows() {
        let m = Measured {
            intervals: vec![
                Span {
                    start: ms(0),
                    end: ms(1000),
                    bytes: 78_848_000,
                },
                Span {
                    start: ms(1000),
                    end: ms(2000),
                    bytes: 78_750_000,
                },
            ],
            overall: Span {
                start: ms(0),
                end: ms(2000),
                bytes: 157_598_000,
            },
        };
        let r = Report::new(&m);
        assert_eq!(
            r.table(),
            "INTERVAL       TRANSFER         BANDWIDTH\n\
             0.00-1.00 sec  630.7840 MBits   630.7840 Mbits/sec\n\
             1.00-2.00 sec  630.0000 MBits   630.0000 Mbits/sec\n\
             --------------------------------------------------\n\
             0.00-2.00 sec  1260.7840 MBits  630.3920 Mbits/sec\n"
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["overall"]["start_time_seconds"], 0.0);
        assert_eq!(json["overall"]["end_time_seconds"], 2.0);
        assert_eq!(json["intervals"][1]["throughput_mbits"], 630.0);
        assert_eq!(json["intervals"][1]["bytes"], 78_750_000);
    }

    #[test]
    fn json_has_the_path_and_latency() {
        let map: DerpMap = serde_json::from_str(
            r#"{"Regions":{"999":{"RegionID":999,"RegionCode":"tether","RegionName":"x","Nodes":[]}}}"#,
        )
        .expect("DERP map");
        let span = Span {
            start: ms(0),
            end: ms(1000),
            bytes: 1000,
        };
        let report = Report::new(&Measured {
            intervals: vec![span],
            overall: span,
        });
        let relayed = Pong {
            latency: Duration::from_micros(28_600),
            via: PathKind::Derp { region: 999 },
        };
        let json =
            serde_json::to_value(JsonReport::new(report.clone(), &relayed, &map)).expect("json");
        assert_eq!(json["path"], "derp");
        assert_eq!(json["derp_region"], "tether");
        assert_eq!(json["direct_addr"], serde_json::Value::Null);
        assert!((json["latency_ms"].as_f64().expect("latency") - 28.6).abs() < 1e-9);
        assert_eq!(json["overall"]["bytes"], 1000);
        assert_eq!(json["intervals"][0]["bytes"], 1000);
        let direct = Pong {
            latency: Duration::from_micros(300),
            via: PathKind::Direct {
                addr: "127.0.0.1:41641".parse().expect("addr"),
            },
        };
        let json = serde_json::to_value(JsonReport::new(report, &direct, &map)).expect("json");
        assert_eq!(json["path"], "direct");
        assert_eq!(json["direct_addr"], "127.0.0.1:41641");
        assert_eq!(json["derp_region"], serde_json::Value::Null);
    }

    #[test]
    fn lines_people_read() {
        let map: DerpMap = serde_json::from_str(
            r#"{"Regions":{"999":{"RegionID":999,"RegionCode":"tether","RegionName":"tether embedded relay","Nodes":[]}}}"#,
        )
        .expect("DERP map");
        let relayed = Pong {
            latency: Duration::from_micros(28_600),
            via: PathKind::Derp { region: 999 },
        };
        assert_eq!(path_line(&relayed, &map), "29ms via tether");
        let direct = Pong {
            latency: Duration::from_micros(300),
            via: PathKind::Direct {
                addr: "127.0.0.1:41641".parse().expect("addr"),
            },
        };
        assert_eq!(path_line(&direct, &map), "0ms via direct");
        assert_eq!(via(&PathKind::Derp { region: 7 }, &map), "region 7");
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(ms(1500)), "1.5s");
        assert_eq!(fmt_duration(ms(500)), "500ms");
        assert_eq!(parse_test_time("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_test_time("5m").is_ok());
        assert!(parse_test_time("6m").is_err());
        assert!(parse_test_time("0.1ms").is_err());
    }
}
