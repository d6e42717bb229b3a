//! Secrets never reach the log, whatever `TETHER_LOG` asks for: every log line is
//! written through [`Stderr`], which replaces each registered secret (session and agent
//! tokens, passwords, `--header` values) with `[redacted]`. Libraries log what they send
//! at TRACE (tungstenite prints the whole WebSocket upgrade request, token header
//! included), so filtering our own events would not be enough.

use std::io::Write;
use std::sync::RwLock;

/// What replaces a secret.
const MASK: &str = "[redacted]";
/// Shorter values are not treated as secrets: masking `1` would mangle every line.
const MIN_LEN: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers `value` as a secret, from now on masked in every log line.
pub fn secret(value: &str) {
    let value = value.trim();
    if value.len() < MIN_LEN {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|v| v == value) {
        s.push(value.to_string());
        // Longest first, so a secret containing another is masked whole.
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// `line` with every registered secret masked.
pub fn mask(line: &str) -> String {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = line.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// The log's writer: stderr, one event at a time, secrets masked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        Line(Vec::new())
    }
}

/// One event's text, written (masked) when dropped: a secret split across two writes is
/// still found.
#[derive(Debug)]
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().lock().write_all(mask(&text).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked_and_short_values_ignored() {
        secret("0b36a586198a21657ceb8bc879fa5caf");
        secret("0b36a586198a");
        secret("abc");
        let line = "tether-session-token: 0b36a586198a21657ceb8bc879fa5caf\r\nx: 0b36a586198a abc";
        assert_eq!(
            mask(line),
            "tether-session-token: [redacted]\r\nx: [redacted] abc"
        );
        let mut w = Line(Vec::new());
        w.write_all(b"half 0b36a586198a21").expect("write");
        w.write_all(b"657ceb8bc879fa5caf").expect("write");
        assert_eq!(mask(&String::from_utf8_lossy(&w.0)), "half [redacted]");
    }
}
