//! The reconnecting PTY's wire format (Coder's), sans-IO: bytes in, messages out.
//!
//! The dialer speaks first and only it sends messages:
//!
//! 1. an init message: a 2-byte little-endian length, then that many bytes of JSON
//!    `{"ID":"<uuid>","Height":R,"Width":C,"Command":"…"}` (an empty or absent command is
//!    the login shell; unknown fields are ignored);
//! 2. then any number of JSON objects, back to back with optional whitespace between them,
//!    each `{"data":"…"}` (keystrokes), `{"height":R,"width":C}` (a resize) or both; absent
//!    fields are empty, and a resize counts only when both numbers are non-zero.
//!
//! The agent answers with raw terminal output bytes (no framing).
//!
//! [`Decoder`] takes the bytes as they arrive and yields [`Message`]s; [`decode`] is the
//! same on one buffer, for fuzzing and tests. Field names match case-insensitively as Go's
//! `encoding/json` does for the ones that exist (`ID`/`id`, `data`/`Data`, …).

use serde::Deserialize;
use uuid::Uuid;

use crate::pty::WindowSize;

/// Longest input object accepted (a large paste arrives as one object).
pub const MAX_REQUEST_LEN: usize = 1 << 20;

/// The first message of a connection: which session, its size, what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    /// The session's id; the first connection with an id creates the session.
    pub id: Uuid,
    /// The dialer's terminal size; `None` unless both numbers are non-zero.
    pub size: Option<WindowSize>,
    /// What to run for a new session: empty for the login shell, else `$SHELL -c`.
    pub command: String,
}

/// One input object after the init message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Keystrokes for the program (may be empty).
    pub data: String,
    /// A new terminal size; `None` unless both numbers are non-zero.
    pub size: Option<WindowSize>,
}

/// What a [`Decoder`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The init message (always first, exactly once).
    Init(Init),
    /// An input object.
    Request(Request),
}

/// Why bytes were refused; the connection is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The init message's length prefix is zero.
    #[error("the init message is empty")]
    EmptyInit,
    /// The init message is not the JSON it should be.
    #[error("malformed init message: {0}")]
    BadInit(String),
    /// An input value is not a JSON object.
    #[error("input is not a JSON object (byte {0:#04x} where an object should start)")]
    NotAnObject(u8),
    /// An input object is longer than [`MAX_REQUEST_LEN`].
    #[error("an input object is longer than {MAX_REQUEST_LEN} bytes")]
    RequestTooLong,
    /// An input object is not the JSON it should be.
    #[error("malformed input object: {0}")]
    BadRequest(String),
    /// The bytes ended inside the init message ([`decode`] only).
    #[error("the bytes end inside the init message")]
    IncompleteInit,
}

#[derive(Deserialize)]
struct InitJson {
    #[serde(rename = "ID", alias = "id", alias = "Id")]
    id: Uuid,
    #[serde(rename = "Height", alias = "height", default)]
    height: u16,
    #[serde(rename = "Width", alias = "width", default)]
    width: u16,
    #[serde(rename = "Command", alias = "command", default)]
    command: Option<String>,
}

#[derive(Deserialize)]
struct RequestJson {
    #[serde(alias = "Data", default)]
    data: Option<String>,
    #[serde(alias = "Height", default)]
    height: u16,
    #[serde(alias = "Width", default)]
    width: u16,
}

fn size(rows: u16, cols: u16) -> Option<WindowSize> {
    (rows > 0 && cols > 0).then(|| WindowSize::new(cols, rows))
}

/// Parse the JSON of an init message (without its length prefix).
///
/// # Errors
/// [`WireError::EmptyInit`] or [`WireError::BadInit`].
pub fn parse_init(json: &[u8]) -> Result<Init, WireError> {
    if json.is_empty() {
        return Err(WireError::EmptyInit);
    }
    let init: InitJson =
        serde_json::from_slice(json).map_err(|e| WireError::BadInit(e.to_string()))?;
    Ok(Init {
        id: init.id,
        size: size(init.height, init.width),
        command: init.command.unwrap_or_default(),
    })
}

/// Parse one complete input object.
///
/// # Errors
/// [`WireError::BadRequest`].
pub fn parse_request(json: &[u8]) -> Result<Request, WireError> {
    let r: RequestJson =
        serde_json::from_slice(json).map_err(|e| WireError::BadRequest(e.to_string()))?;
    Ok(Request {
        data: r.data.unwrap_or_default(),
        size: size(r.height, r.width),
    })
}

/// The init message for `init`, as a dialer sends it (for clients and tests).
pub fn encode_init(id: Uuid, size: WindowSize, command: &str) -> Vec<u8> {
    let json = serde_json::json!({
        "ID": id,
        "Height": size.rows,
        "Width": size.cols,
        "Command": command,
    })
    .to_string();
    let mut out = Vec::with_capacity(2 + json.len());
    // A JSON of three small fields and a command is far below 64 KiB unless the command
    // is that long; truncating would corrupt it, so the length saturates and the agent
    // refuses the message instead.
    let len = u16::try_from(json.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// An input object as a dialer sends it (for clients and tests).
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    if !request.data.is_empty() {
        map.insert("data".into(), request.data.clone().into());
    }
    if let Some(s) = request.size {
        map.insert("height".into(), s.rows.into());
        map.insert("width".into(), s.cols.into());
    }
    serde_json::Value::Object(map).to_string().into_bytes()
}

/// Where the scanner of input objects is.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Offset of the current object's `{` in the buffer, once seen.
    start: Option<usize>,
    /// Bytes of the buffer already looked at.
    pos: usize,
    /// Open `{` and `[` not yet closed.
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// Turns the dialer's bytes into [`Message`]s as they arrive: feed bytes with
/// [`Decoder::feed`], then take messages with [`Decoder::next_message`] until it gives
/// `Ok(None)`. Each byte is scanned once; memory is bounded by [`MAX_REQUEST_LEN`] plus
/// one read.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already consumed.
    consumed: usize,
    init_done: bool,
    scan: Scan,
    failed: Option<WireError>,
}

impl Decoder {
    /// A decoder expecting the init message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the init message has been decoded.
    pub fn has_init(&self) -> bool {
        self.init_done
    }

    /// Append bytes received from the dialer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed == self.buf.len() {
            self.buf.clear();
            self.consumed = 0;
            self.scan = Scan::default();
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet part of a message (an incomplete one, or whitespace).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// The first [`WireError`]; it is final (every later call returns it again).
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let got = if self.init_done {
            self.next_request().map(|r| r.map(Message::Request))
        } else {
            self.next_init().map(|i| i.map(Message::Init))
        };
        if let Err(e) = &got {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            self.consumed = 0;
        }
        self.compact();
        got
    }

    fn next_init(&mut self) -> Result<Option<Init>, WireError> {
        let rest = &self.buf[self.consumed..];
        let Some((len, body)) = rest.split_first_chunk::<2>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_le_bytes(*len));
        let Some(json) = body.get(..len) else {
            return Ok(None);
        };
        let init = parse_init(json)?;
        self.consumed += 2 + len;
        self.init_done = true;
        self.scan = Scan {
            pos: self.consumed,
            ..Scan::default()
        };
        Ok(Some(init))
    }

    fn next_request(&mut self) -> Result<Option<Request>, WireError> {
        let s = &mut self.scan;
        s.pos = s.pos.max(self.consumed);
        while let Some(&b) = self.buf.get(s.pos) {
            let at = s.pos;
            s.pos += 1;
            let Some(start) = s.start else {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        self.consumed = s.pos;
                        continue;
                    }
                    b'{' => {
                        s.start = Some(at);
                        s.depth = 1;
                        continue;
                    }
                    other => return Err(WireError::NotAnObject(other)),
                }
            };
            if s.in_string {
                match b {
                    _ if s.escaped => s.escaped = false,
                    b'\\' => s.escaped = true,
                    b'"' => s.in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => s.in_string = true,
                    b'{' | b'[' => s.depth += 1,
                    b'}' | b']' => s.depth = s.depth.saturating_sub(1),
                    _ => {}
                }
            }
            if s.pos - start > MAX_REQUEST_LEN {
                return Err(WireError::RequestTooLong);
            }
            if s.depth == 0 {
                let end = s.pos;
                *s = Scan {
                    pos: end,
                    ..Scan::default()
                };
                self.consumed = end;
                return parse_request(&self.buf[start..end]).map(Some);
            }
        }
        if let Some(start) = s.start
            && s.pos - start > MAX_REQUEST_LEN
        {
            return Err(WireError::RequestTooLong);
        }
        Ok(None)
    }

    /// Drop consumed bytes once they are most of the buffer, so it does not grow with
    /// the stream yet is not shifted for every small object.
    fn compact(&mut self) {
        if self.consumed > 0 && self.consumed * 2 >= self.buf.len() {
            self.buf.drain(..self.consumed);
            let shift = self.consumed;
            self.consumed = 0;
            self.scan.pos -= shift.min(self.scan.pos);
            if let Some(start) = self.scan.start.as_mut() {
                *start -= shift.min(*start);
            }
        }
    }
}

/// Everything [`decode`] found in one buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The init message.
    pub init: Init,
    /// The complete input objects after it, in order.
    pub requests: Vec<Request>,
    /// Bytes at the end that do not complete an object yet.
    pub pending: usize,
}

/// Decode a whole connection's bytes at once: the pure form of [`Decoder`], for fuzz
/// targets and tests.
///
/// # Errors
/// [`WireError::IncompleteInit`] when the bytes end inside the init message, else the
/// first error [`Decoder`] would report.
pub fn decode(bytes: &[u8]) -> Result<Decoded, WireError> {
    let mut d = Decoder::new();
    d.feed(bytes);
    let init = match d.next_message()? {
        Some(Message::Init(init)) => init,
        _ => return Err(WireError::IncompleteInit),
    };
    let mut requests = Vec::new();
    while let Some(m) = d.next_message()? {
        if let Message::Request(r) = m {
            requests.push(r);
        }
    }
    Ok(Decoded {
        init,
        requests,
        pending: d.pending(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ID: &str = "7b1c0e5e-3f5a-4c5e-9d1a-2b3c4d5e6f70";

    fn init_bytes(json: &str) -> Vec<u8> {
        let mut v = u16::try_from(json.len()).unwrap().to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v
    }

    fn id() -> Uuid {
        ID.parse().unwrap()
    }

    #[test]
    fn init_then_requests() {
        let mut bytes = init_bytes(&format!(
            r#"{{"ID":"{ID}","Height":24,"Width":80,"Command":""}}"#
        ));
        bytes.extend_from_slice(br#"{"data":"ls\r"} {"height":50,"width":120}"#);
        bytes.extend_from_slice(b"\n{\"data\":\"x\",\"height\":0,\"width\":9}{\"da");
        let d = decode(&bytes).unwrap();
        assert_eq!(
            d.init,
            Init {
                id: id(),
                size: Some(WindowSize::new(80, 24)),
                command: String::new()
            }
        );
        assert_eq!(
            d.requests,
            [
                Request {
                    data: "ls\r".into(),
                    size: None
                },
                Request {
                    data: String::new(),
                    size: Some(WindowSize::new(120, 50))
                },
                // A resize with a zero is no resize.
                Request {
                    data: "x".into(),
                    size: None
                },
            ]
        );
        assert_eq!(d.pending, 4);
    }

    #[test]
    fn go_style_field_names_and_unknown_fields() {
        let json = format!(
            r#"{{"id":"{ID}","height":3,"width":4,"command":"top","Container":"","BackendType":"buffered"}}"#
        );
        let mut bytes = init_bytes(&json);
        bytes.extend_from_slice(br#"{"Data":"q","extra":[1,{"a":"}"}]}"#);
        let d = decode(&bytes).unwrap();
        assert_eq!(d.init.command, "top");
        assert_eq!(d.init.size, Some(WindowSize::new(4, 3)));
        assert_eq!(d.requests[0].data, "q");
    }

    #[test]
    fn braces_and_escapes_inside_strings_do_not_end_an_object() {
        let mut bytes = init_bytes(&format!(r#"{{"ID":"{ID}"}}"#));
        bytes.extend_from_slice(br#"{"data":"}\"{\\"}{"data":"\u00e9"}"#);
        let d = decode(&bytes).unwrap();
        assert_eq!(d.init.size, None);
        assert_eq!(d.requests.len(), 2);
        assert_eq!(d.requests[0].data, "}\"{\\");
        assert_eq!(d.requests[1].data, "é");
        assert_eq!(d.pending, 0);
    }

    #[test]
    fn byte_at_a_time_matches_all_at_once() {
        let mut bytes = encode_init(id(), WindowSize::new(100, 30), "echo hi");
        for i in 0..50 {
            bytes.extend(encode_request(&Request {
                data: format!("line {i} {{}}\"\n"),
                size: (i % 7 == 0).then(|| WindowSize::new(80 + i, 20)),
            }));
            bytes.push(b' ');
        }
        let whole = decode(&bytes).unwrap();
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b));
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 51);
        assert_eq!(got[0], Message::Init(whole.init.clone()));
        let requests: Vec<Request> = got[1..]
            .iter()
            .map(|m| match m {
                Message::Request(r) => r.clone(),
                Message::Init(_) => panic!("second init"),
            })
            .collect();
        assert_eq!(requests, whole.requests);
        assert_eq!(requests[7].size, Some(WindowSize::new(87, 20)));
        assert!(d.buf.len() < 200, "buffer kept {} bytes", d.buf.len());
    }

    #[test]
    fn malformed_init() {
        assert_eq!(decode(&[0, 0]), Err(WireError::EmptyInit));
        assert_eq!(decode(&[5, 0, b'{']), Err(WireError::IncompleteInit));
        assert_eq!(decode(&[1]), Err(WireError::IncompleteInit));
        for json in [
            "not json",
            r#"{"Height":1}"#,
            r#"{"ID":"not-a-uuid"}"#,
            r#"{"ID":"7b1c0e5e-3f5a-4c5e-9d1a-2b3c4d5e6f70","Height":70000}"#,
            r#"{"ID":"7b1c0e5e-3f5a-4c5e-9d1a-2b3c4d5e6f70","Command":5}"#,
        ] {
            let err = decode(&init_bytes(json)).unwrap_err();
            assert!(matches!(err, WireError::BadInit(_)), "{json}: {err}");
        }
    }

    #[test]
    fn malformed_requests() {
        let init = init_bytes(&format!(r#"{{"ID":"{ID}"}}"#));
        type Check = fn(&WireError) -> bool;
        let cases: [(&[u8], Check); 5] = [
            (b"[1,2]", |e| matches!(e, WireError::NotAnObject(b'['))),
            (b"\"str\"", |e| matches!(e, WireError::NotAnObject(b'"'))),
            (b"{\"data\":5}", |e| matches!(e, WireError::BadRequest(_))),
            (b"{\"data\" \"x\"}", |e| {
                matches!(e, WireError::BadRequest(_))
            }),
            (b"{\"height\":-1}", |e| {
                matches!(e, WireError::BadRequest(_))
            }),
        ];
        for (input, check) in cases {
            let mut bytes = init.clone();
            bytes.extend_from_slice(input);
            let err = decode(&bytes).unwrap_err();
            assert!(check(&err), "{:?}: {err}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn an_error_is_final() {
        let mut d = Decoder::new();
        d.feed(&init_bytes(&format!(r#"{{"ID":"{ID}"}}"#)));
        assert!(matches!(d.next_message(), Ok(Some(Message::Init(_)))));
        d.feed(b"x{\"data\":\"a\"}");
        assert_eq!(d.next_message(), Err(WireError::NotAnObject(b'x')));
        d.feed(b"{\"data\":\"a\"}");
        assert_eq!(d.next_message(), Err(WireError::NotAnObject(b'x')));
    }

    #[test]
    fn an_endless_object_is_refused_at_the_bound() {
        let mut d = Decoder::new();
        d.feed(&init_bytes(&format!(r#"{{"ID":"{ID}"}}"#)));
        d.next_message().unwrap();
        d.feed(b"{\"data\":\"");
        let chunk = vec![b'a'; 64 * 1024];
        let mut fed = 0;
        let err = loop {
            d.feed(&chunk);
            fed += chunk.len();
            match d.next_message() {
                Ok(None) => assert!(fed <= MAX_REQUEST_LEN, "accepted {fed} bytes"),
                Ok(Some(m)) => panic!("{m:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, WireError::RequestTooLong);
        assert!(fed <= MAX_REQUEST_LEN + chunk.len());
    }

    #[test]
    fn a_long_paste_within_the_bound_is_fine() {
        let data = "y".repeat(MAX_REQUEST_LEN - 100);
        let mut bytes = encode_init(id(), WindowSize::default(), "");
        bytes.extend(encode_request(&Request {
            data: data.clone(),
            size: None,
        }));
        assert_eq!(decode(&bytes).unwrap().requests[0].data, data);
    }

    #[test]
    fn encode_init_round_trips() {
        let bytes = encode_init(id(), WindowSize::new(132, 43), "vi x");
        let d = decode(&bytes).unwrap();
        assert_eq!(d.init.id, id());
        assert_eq!(d.init.size, Some(WindowSize::new(132, 43)));
        assert_eq!(d.init.command, "vi x");
        assert_eq!(d.pending, 0);
        assert_eq!(
            encode_request(&Request::default()),
            b"{}",
            "empty fields are omitted"
        );
    }
}
