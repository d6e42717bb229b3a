//! The speedtest responder `tether speedtest` talks to (the agent serves it on tailnet
//! TCP port [`PORT`], Coder's speedtest port), and the wire format both sides share.
//!
//! The protocol is ours and deliberately small. One TCP stream carries one test:
//!
//! 1. The client sends a 10-byte [`Header`]: the magic `b"TSPD"`, the version (`1`), the
//!    direction (`0` = download: the agent sends; `1` = upload: the client sends) and the
//!    test's duration in milliseconds as a big-endian `u32` (1 ms to [`MAX_DURATION`]).
//! 2. The agent answers with one status byte: `0` = accepted, or a [`Reject`] code, after
//!    which it closes the stream. Both clocks start at this byte.
//! 3. Download: the agent writes a reused 128 KiB buffer until the duration has passed on
//!    its clock, then shuts down its write side; the client counts bytes until EOF.
//!    Upload: the client writes for the duration and shuts down its write side; the agent
//!    counts bytes until EOF and answers with the total as a big-endian `u64`, so the
//!    client can report what actually arrived.
//!
//! A silent or stuck peer cannot hold the responder: the header must arrive within
//! [`Limits::header`], every read or write must make progress within [`Limits::io`], and
//! an upload ends at the latest [`Limits::upload_grace`] after its duration.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

/// The agent's tailnet TCP port for speedtests (Coder uses the same).
pub const PORT: u16 = 3;
/// First bytes of every request.
pub const MAGIC: [u8; 4] = *b"TSPD";
/// The protocol version this module speaks.
pub const VERSION: u8 = 1;
/// Length of the request header on the wire.
pub const HEADER_LEN: usize = 10;
/// Longest test the responder accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(5 * 60);
/// Size of the buffer written (download) or read into (upload) at a time.
pub const CHUNK: usize = 128 * 1024;

/// Status byte: the test is accepted and starts now.
const ACCEPTED: u8 = 0;

/// Which way the bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The agent sends, the client receives.
    Download,
    /// The client sends, the agent receives and confirms the total.
    Upload,
}

impl Direction {
    /// The word used in messages: `download` or `upload`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Upload => "upload",
        }
    }
}

/// One test request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which way the bytes flow.
    pub direction: Direction,
    /// How long the sender sends.
    pub duration: Duration,
}

/// Why the agent turned a request down; the nonzero status byte it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reject {
    /// The magic is not `TSPD`: this is not a speedtest client.
    BadMagic = 1,
    /// A protocol version this agent does not speak.
    UnsupportedVersion = 2,
    /// A direction byte other than 0 or 1.
    BadDirection = 3,
    /// A duration of 0 or more than [`MAX_DURATION`].
    BadDuration = 4,
}

impl Reject {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::BadMagic,
            2 => Self::UnsupportedVersion,
            3 => Self::BadDirection,
            4 => Self::BadDuration,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadMagic => "the request is not a tether speedtest",
            Self::UnsupportedVersion => "the agent speaks another speedtest protocol version",
            Self::BadDirection => "the direction is neither download nor upload",
            Self::BadDuration => "the duration must be between 1 ms and 5 minutes",
        })
    }
}

/// Why a speedtest (either side) failed.
#[derive(Debug, thiserror::Error)]
pub enum SpeedtestError {
    /// The header did not start with [`MAGIC`].
    #[error("not a speedtest request (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// The header's version is not [`VERSION`].
    #[error("unsupported speedtest protocol version {0} (this agent speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The header's direction byte is not 0 or 1.
    #[error("unknown speedtest direction {0}")]
    BadDirection(u8),
    /// The header's duration is 0 or above [`MAX_DURATION`].
    #[error("speedtest duration {0} ms is out of range (1 ms to 5 minutes)")]
    BadDuration(u32),
    /// The agent answered the header with a rejection.
    #[error("the agent rejected the speedtest: {0}")]
    Rejected(Reject),
    /// The agent answered with a status byte this side does not know.
    #[error("the agent answered the speedtest with unknown status {0}")]
    UnknownStatus(u8),
    /// The peer closed the stream before `what` arrived.
    #[error("the stream closed before {what} arrived")]
    Closed {
        /// What was expected.
        what: &'static str,
    },
    /// The peer made no progress for too long.
    #[error("{what} made no progress for {}s", .after.as_secs_f64())]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// The upload was still sending long after its duration.
    #[error("the upload was still sending {}s after its duration", .grace.as_secs_f64())]
    Overran {
        /// [`Limits::upload_grace`].
        grace: Duration,
    },
    /// Another I/O error on the stream.
    #[error("speedtest stream failed: {0}")]
    Io(#[from] io::Error),
}

impl SpeedtestError {
    /// The status byte that tells the client why its header was refused, if it was.
    fn reject(&self) -> Option<Reject> {
        match self {
            Self::BadMagic(_) => Some(Reject::BadMagic),
            Self::UnsupportedVersion(_) => Some(Reject::UnsupportedVersion),
            Self::BadDirection(_) => Some(Reject::BadDirection),
            Self::BadDuration(_) => Some(Reject::BadDuration),
            _ => None,
        }
    }
}

impl Header {
    /// The header's bytes on the wire; fails for a duration the agent would refuse.
    pub fn encode(&self) -> Result<[u8; HEADER_LEN], SpeedtestError> {
        let ms = u32::try_from(self.duration.as_millis()).unwrap_or(u32::MAX);
        check_duration(ms)?;
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = match self.direction {
            Direction::Download => 0,
            Direction::Upload => 1,
        };
        b[6..].copy_from_slice(&ms.to_be_bytes());
        Ok(b)
    }

    /// Parses and checks a header.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, SpeedtestError> {
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(SpeedtestError::BadMagic(magic));
        }
        if b[4] != VERSION {
            return Err(SpeedtestError::UnsupportedVersion(b[4]));
        }
        let direction = match b[5] {
            0 => Direction::Download,
            1 => Direction::Upload,
            d => return Err(SpeedtestError::BadDirection(d)),
        };
        let ms = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
        check_duration(ms)?;
        Ok(Self {
            direction,
            duration: Duration::from_millis(u64::from(ms)),
        })
    }
}

fn check_duration(ms: u32) -> Result<(), SpeedtestError> {
    if ms == 0 || u128::from(ms) > MAX_DURATION.as_millis() {
        return Err(SpeedtestError::BadDuration(ms));
    }
    Ok(())
}

/// How long the responder waits for a peer before it gives up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For the whole header to arrive after the stream opened.
    pub header: Duration,
    /// For any one read or write to make progress.
    pub io: Duration,
    /// How long after its duration an upload may still be sending before it is cut off.
    pub upload_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header: Duration::from_secs(10),
            io: Duration::from_secs(10),
            upload_grace: Duration::from_secs(30),
        }
    }
}

/// What a finished test moved, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The request.
    pub header: Header,
    /// Bytes sent (download) or received (upload).
    pub bytes: u64,
}

/// Serves one speedtest on `stream` with the default [`Limits`].
pub async fn serve<S>(stream: S) -> Result<Served, SpeedtestError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    serve_with(stream, Limits::default()).await
}

/// Serves one speedtest on `stream`: reads the header, answers it, then sends or counts.
/// A refused header is answered with its [`Reject`] code and returned as the error.
pub async fn serve_with<S>(mut stream: S, limits: Limits) -> Result<Served, SpeedtestError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut raw = [0u8; HEADER_LEN];
    read_exact_within(&mut stream, &mut raw, limits.header, "the speedtest header").await?;
    let header = match Header::decode(&raw) {
        Ok(h) => h,
        Err(e) => {
            if let Some(code) = e.reject() {
                // Best effort: the client learns why; the stream closes either way.
                let _ = timeout(limits.io, async {
                    stream.write_all(&[code as u8]).await?;
                    stream.shutdown().await
                })
                .await;
            }
            return Err(e);
        }
    };
    write_within(&mut stream, &[ACCEPTED], limits.io, "the speedtest answer").await?;
    let bytes = match header.direction {
        Direction::Download => send_for(&mut stream, header.duration, limits.io).await?,
        Direction::Upload => {
            let n = count_until_eof(&mut stream, header.duration, limits).await?;
            write_within(&mut stream, &n.to_be_bytes(), limits.io, "the upload total").await?;
            n
        }
    };
    // The peer reads to EOF; a stuck peer must not hold this task.
    let _ = timeout(limits.io, stream.shutdown()).await;
    Ok(Served { header, bytes })
}

/// Client side: sends `header` and waits (up to `wait`) for the agent to accept it.
/// The test starts when this returns.
pub async fn request<S>(
    stream: &mut S,
    header: Header,
    wait: Duration,
) -> Result<(), SpeedtestError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let raw = header.encode()?;
    write_within(stream, &raw, wait, "the speedtest header").await?;
    let mut status = [0u8; 1];
    read_exact_within(stream, &mut status, wait, "the agent's answer").await?;
    match status[0] {
        ACCEPTED => Ok(()),
        b => {
            Err(Reject::from_byte(b)
                .map_or(SpeedtestError::UnknownStatus(b), SpeedtestError::Rejected))
        }
    }
}

/// Client side of an upload, once the client has shut down its write side: the agent's
/// count of the bytes it received.
pub async fn read_upload_total<S>(stream: &mut S, wait: Duration) -> Result<u64, SpeedtestError>
where
    S: AsyncRead + Unpin,
{
    let mut b = [0u8; 8];
    read_exact_within(stream, &mut b, wait, "the agent's upload total").await?;
    Ok(u64::from_be_bytes(b))
}

/// Writes the same buffer until `duration` has passed; returns the bytes written.
async fn send_for<S>(
    stream: &mut S,
    duration: Duration,
    io: Duration,
) -> Result<u64, SpeedtestError>
where
    S: AsyncWrite + Unpin,
{
    // Content does not matter: WireGuard encrypts it, nothing compresses it.
    let buf = vec![0x5a_u8; CHUNK];
    let end = Instant::now() + duration;
    let mut sent = 0u64;
    while Instant::now() < end {
        write_within(stream, &buf, io, "the download").await?;
        sent += CHUNK as u64;
    }
    Ok(sent)
}

/// Reads and discards until EOF; returns the bytes read.
async fn count_until_eof<S>(
    stream: &mut S,
    duration: Duration,
    limits: Limits,
) -> Result<u64, SpeedtestError>
where
    S: AsyncRead + Unpin,
{
    let deadline = Instant::now() + duration + limits.upload_grace;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let idle_by = Instant::now() + limits.io;
        match timeout_at(deadline.min(idle_by), stream.read(&mut buf)).await {
            Ok(Ok(0)) => return Ok(total),
            Ok(Ok(n)) => total += n as u64,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) if deadline < idle_by => {
                return Err(SpeedtestError::Overran {
                    grace: limits.upload_grace,
                });
            }
            Err(_) => {
                return Err(SpeedtestError::Timeout {
                    what: "the upload",
                    after: limits.io,
                });
            }
        }
    }
}

async fn read_exact_within<S>(
    stream: &mut S,
    buf: &mut [u8],
    wait: Duration,
    what: &'static str,
) -> Result<(), SpeedtestError>
where
    S: AsyncRead + Unpin,
{
    match timeout(wait, stream.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(SpeedtestError::Closed { what })
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(SpeedtestError::Timeout { what, after: wait }),
    }
}

async fn write_within<S>(
    stream: &mut S,
    buf: &[u8],
    wait: Duration,
    what: &'static str,
) -> Result<(), SpeedtestError>
where
    S: AsyncWrite + Unpin,
{
    match timeout(wait, stream.write_all(buf)).await {
        Ok(r) => r.map_err(SpeedtestError::from),
        Err(_) => Err(SpeedtestError::Timeout { what, after: wait }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{DuplexStream, duplex};

    fn quick() -> Limits {
        Limits {
            header: Duration::from_millis(300),
            io: Duration::from_millis(300),
            upload_grace: Duration::from_secs(2),
        }
    }

    /// Runs the responder on one end of an in-memory pipe; returns the other end.
    fn responder(
        limits: Limits,
    ) -> (
        DuplexStream,
        tokio::task::JoinHandle<Result<Served, SpeedtestError>>,
    ) {
        let (client, agent) = duplex(256 * 1024);
        (client, tokio::spawn(serve_with(agent, limits)))
    }

    fn raw(direction: u8, ms: u32) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(b"TSPD");
        b[4] = 1;
        b[5] = direction;
        b[6..].copy_from_slice(&ms.to_be_bytes());
        b
    }

    /// Waits (bounded) for the responder to end, and checks it ended waiting for `what`.
    async fn ends_by_timeout(
        task: tokio::task::JoinHandle<Result<Served, SpeedtestError>>,
        what: &str,
    ) {
        let r = timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(&r, Err(SpeedtestError::Timeout { what: w, .. }) if *w == what),
            "{r:?}"
        );
    }

    /// Sends raw header bytes; returns the status byte (None if the stream closed first)
    /// and the responder's result.
    async fn send_raw(b: &[u8]) -> (Option<u8>, Result<Served, SpeedtestError>) {
        let (mut c, task) = responder(quick());
        c.write_all(b).await.unwrap();
        c.shutdown().await.unwrap();
        let mut rest = Vec::new();
        timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let result = timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        (rest.first().copied(), result)
    }

    #[test]
    fn header_round_trips_and_checks_duration() {
        for direction in [Direction::Download, Direction::Upload] {
            let h = Header {
                direction,
                duration: Duration::from_millis(2500),
            };
            assert_eq!(Header::decode(&h.encode().unwrap()).unwrap(), h);
        }
        assert_eq!(
            &raw(1, 2500),
            &Header {
                direction: Direction::Upload,
                duration: Duration::from_millis(2500)
            }
            .encode()
            .unwrap()
        );
        let too_long = Header {
            direction: Direction::Download,
            duration: MAX_DURATION + Duration::from_millis(1),
        };
        assert!(matches!(
            too_long.encode(),
            Err(SpeedtestError::BadDuration(300_001))
        ));
        let max = Header {
            direction: Direction::Download,
            duration: MAX_DURATION,
        };
        assert!(max.encode().is_ok());
        let zero = Header {
            direction: Direction::Download,
            duration: Duration::from_micros(999),
        };
        assert!(matches!(zero.encode(), Err(SpeedtestError::BadDuration(0))));
    }

    #[tokio::test]
    async fn malformed_headers_are_rejected_with_their_code() {
        let mut bad_magic = raw(0, 1000);
        bad_magic[..4].copy_from_slice(b"SSH-");
        let (status, r) = send_raw(&bad_magic).await;
        assert_eq!(status, Some(Reject::BadMagic as u8));
        assert!(
            matches!(r, Err(SpeedtestError::BadMagic(m)) if &m == b"SSH-"),
            "{r:?}"
        );

        let mut bad_version = raw(0, 1000);
        bad_version[4] = 2;
        let (status, r) = send_raw(&bad_version).await;
        assert_eq!(status, Some(Reject::UnsupportedVersion as u8));
        assert!(
            matches!(r, Err(SpeedtestError::UnsupportedVersion(2))),
            "{r:?}"
        );

        let (status, r) = send_raw(&raw(7, 1000)).await;
        assert_eq!(status, Some(Reject::BadDirection as u8));
        assert!(matches!(r, Err(SpeedtestError::BadDirection(7))), "{r:?}");

        for ms in [0, 300_001, u32::MAX] {
            let (status, r) = send_raw(&raw(0, ms)).await;
            assert_eq!(status, Some(Reject::BadDuration as u8));
            assert!(
                matches!(r, Err(SpeedtestError::BadDuration(m)) if m == ms),
                "{r:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_client_learns_why_it_was_rejected() {
        // A client that asks for more than the agent allows, bypassing `encode`'s check.
        let (mut c, task) = responder(quick());
        c.write_all(&raw(0, 0)).await.unwrap();
        let mut status = [0u8; 1];
        c.read_exact(&mut status).await.unwrap();
        let e = SpeedtestError::Rejected(Reject::from_byte(status[0]).unwrap());
        assert_eq!(
            e.to_string(),
            "the agent rejected the speedtest: the duration must be between 1 ms and 5 minutes"
        );
        assert!(task.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn short_or_silent_clients_end_without_holding_the_task() {
        // Half a header, then EOF.
        let (status, r) = send_raw(b"TSPD\x01").await;
        assert_eq!(status, None);
        assert!(matches!(r, Err(SpeedtestError::Closed { .. })), "{r:?}");

        // Nothing at all, stream kept open: the header timeout ends it.
        let (_c, task) = responder(quick());
        ends_by_timeout(task, "the speedtest header").await;

        // An upload that goes silent without closing.
        let (mut c, task) = responder(quick());
        let h = Header {
            direction: Direction::Upload,
            duration: Duration::from_millis(100),
        };
        request(&mut c, h, Duration::from_secs(5)).await.unwrap();
        c.write_all(&[1u8; 1000]).await.unwrap();
        ends_by_timeout(task, "the upload").await;

        // A download whose client stops reading: the write timeout ends it.
        let (mut c, task) = responder(quick());
        let h = Header {
            direction: Direction::Download,
            duration: Duration::from_secs(60),
        };
        request(&mut c, h, Duration::from_secs(5)).await.unwrap();
        ends_by_timeout(task, "the download").await;
    }

    #[tokio::test]
    async fn an_upload_that_never_ends_is_cut_off() {
        let limits = Limits {
            upload_grace: Duration::from_millis(200),
            ..quick()
        };
        let (mut c, task) = responder(limits);
        let h = Header {
            direction: Direction::Upload,
            duration: Duration::from_millis(100),
        };
        request(&mut c, h, Duration::from_secs(5)).await.unwrap();
        let trickle = async {
            // Always within the idle limit, never done.
            while c.write_all(&[1u8; 10]).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        // The trickle ends when the responder drops its end.
        let (r, ()) = timeout(Duration::from_secs(5), async {
            tokio::join!(task, trickle)
        })
        .await
        .unwrap();
        let r = r.unwrap();
        assert!(matches!(r, Err(SpeedtestError::Overran { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn upload_total_is_returned_exactly() {
        let (mut c, task) = responder(quick());
        let h = Header {
            direction: Direction::Upload,
            duration: Duration::from_millis(200),
        };
        request(&mut c, h, Duration::from_secs(5)).await.unwrap();
        // An odd total, in uneven writes.
        let mut sent = 0u64;
        for n in [1usize, 7, 65_536, 131_071, 3] {
            c.write_all(&vec![0xa5; n]).await.unwrap();
            sent += n as u64;
        }
        c.shutdown().await.unwrap();
        let total = read_upload_total(&mut c, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(total, sent);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let served = task.await.unwrap().unwrap();
        assert_eq!(
            served,
            Served {
                header: h,
                bytes: sent
            }
        );
    }

    #[tokio::test]
    async fn download_stops_after_the_duration() {
        let (mut c, task) = responder(quick());
        let duration = Duration::from_millis(300);
        let h = Header {
            direction: Direction::Download,
            duration,
        };
        let start = std::time::Instant::now();
        request(&mut c, h, Duration::from_secs(5)).await.unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        let read_all = async {
            loop {
                match c.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => got += n as u64,
                }
            }
        };
        timeout(Duration::from_secs(5), read_all).await.unwrap();
        let took = start.elapsed();
        assert!(took >= duration, "EOF after {took:?}");
        assert!(
            took < duration + Duration::from_secs(2),
            "EOF only after {took:?}"
        );
        assert!(got > 0);
        let served = task.await.unwrap().unwrap();
        assert_eq!(served.bytes, got);
        assert_eq!(served.header, h);
    }
}
