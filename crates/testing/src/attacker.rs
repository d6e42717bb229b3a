//! An attacker's tools against a server on loopback, for the CLI's hardening tests and
//! its probe benchmark: raw sockets that trickle or send nothing, raw WebSocket frames,
//! the server's resident set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The server's resident set in bytes (`VmRSS`).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Waits until the peer closes `s`, writing one byte of `trickle` a second if given;
/// returns how long that took, or `None` if it stayed open for `limit`.
pub fn time_until_closed(
    s: &mut TcpStream,
    trickle: Option<&[u8]>,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut next = 0;
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        if let Some(t) = trickle
            && start.elapsed() >= Duration::from_secs(next as u64)
        {
            if s.write_all(&t[next % t.len()..][..1]).is_err() {
                return Some(start.elapsed());
            }
            next += 1;
        }
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// `GET path` on a fresh connection; the status and body, or the error.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A client WebSocket handshake on `path` with raw frames after it.
pub fn ws_handshake(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A masked client frame (mask zero: the payload goes out as is).
pub fn ws_frame(fin: bool, opcode: u8, payload_len: usize) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload_len {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0; 4]);
    f
}

/// Sends one message of `total` bytes in 1 MiB fragments: how many bytes went out before
/// the server closed the socket, or `None` if it took the whole message.
pub fn send_fragmented(s: &mut TcpStream, opcode: u8, total: usize) -> Option<usize> {
    const PART: usize = 1 << 20;
    let spaces = vec![b' '; PART];
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sent = 0;
    while sent < total {
        let n = PART.min(total - sent);
        let header = ws_frame(sent + n == total, if sent == 0 { opcode } else { 0 }, n);
        if s.write_all(&header)
            .and_then(|()| s.write_all(&spaces[..n]))
            .is_err()
        {
            return Some(sent);
        }
        sent += n;
    }
    None
}

/// Reads server frames (unmasked, short) until one with `opcode`, for up to 5 s.
pub fn ws_wait_for(s: &mut TcpStream, opcode: u8) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 2];
    loop {
        if s.read_exact(&mut head).is_err() {
            return false;
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).unwrap();
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).unwrap();
        if head[0] & 0x0f == opcode {
            return true;
        }
    }
}
