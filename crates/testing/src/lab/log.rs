//! Reading the lab processes' logs: timestamps of tracing lines, and the time between
//! two events.

use std::time::{SystemTime, UNIX_EPOCH};

/// Removes ANSI escape sequences (in case the log is colored anyway).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since midnight of a tracing log line (`2026-01-02T03:04:05.678901Z  INFO …`).
pub fn timestamp(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The time and text of the first log line containing every one of `what`.
pub fn first(log: &str, what: &[&str]) -> Option<(f64, String)> {
    log.lines()
        .find(|l| what.iter().all(|w| l.contains(w)))
        .and_then(|l| Some((timestamp(l)?, l.to_string())))
}

/// Seconds from the first line matching `from` to the first matching `to`, and the
/// second line.
pub fn elapsed(log: &str, from: &[&str], to: &[&str]) -> Option<(f64, String)> {
    let (start, _) = first(log, from)?;
    let (end, line) = first(log, to)?;
    let mut took = end - start;
    if took < -43_200.0 {
        took += 86_400.0; // across midnight
    }
    Some((took, line))
}

/// Seconds since midnight UTC now, as [`timestamp`] reads log lines.
pub fn now_of_day() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 86_400.0
}

/// The first line at or after `since` (seconds of day) containing `what`, and how long
/// after `since` it was logged.
pub fn first_after(log: &str, since: f64, what: &str) -> Option<(f64, String)> {
    log.lines().filter(|l| l.contains(what)).find_map(|l| {
        let mut took = timestamp(l)? - since;
        if took < -43_200.0 {
            took += 86_400.0; // across midnight
        }
        (took >= 0.0).then(|| (took, l.to_string()))
    })
}
