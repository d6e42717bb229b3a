//! The web terminal's two wire formats (Coder's).
//!
//! Browser ⇄ server, WebSocket: every frame from the page is the UTF-8 JSON of one
//! [`Input`] (`{"data":"…"}` keystrokes, `{"height":R,"width":C}` a resize, fields left
//! out when empty); the server sends raw terminal output bytes back.
//!
//! Server ⇄ agent, tailnet TCP to the agent's port 2: an init message ([`encode_init`]:
//! a 2-byte little-endian length, then the JSON `{"ID","Height","Width","Command"}`),
//! then [`Input`] objects back to back one way and raw output the other.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The agent's port for the reconnecting PTY.
pub const AGENT_PORT: u16 = 2;
/// Longest command an init message may carry (the init's length prefix is 16 bits).
pub const MAX_COMMAND_LEN: usize = 16 * 1024;

/// One input object: keystrokes, a resize, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Keystrokes for the program.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    /// New height in rows (a resize counts only when both numbers are non-zero).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub height: u16,
    /// New width in columns.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub width: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl Input {
    /// Reads one input object; anything but a JSON object of the three fields is refused
    /// (serde would also take an array of them).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err("an input frame must be a JSON object".into());
        }
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Whether it carries nothing the agent would act on.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && (self.height == 0 || self.width == 0)
    }
}

/// Why an init message cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The command is longer than [`MAX_COMMAND_LEN`].
    #[error("the command is longer than {MAX_COMMAND_LEN} bytes")]
    CommandTooLong,
}

/// The init message that attaches to (or starts) session `id` at `rows`×`cols`,
/// running `command` for a new session (empty: the login shell).
pub fn encode_init(id: Uuid, rows: u16, cols: u16, command: &str) -> Result<Vec<u8>, InitError> {
    if command.len() > MAX_COMMAND_LEN {
        return Err(InitError::CommandTooLong);
    }
    let json = serde_json::json!({
        "ID": id,
        "Height": rows,
        "Width": cols,
        "Command": command,
    })
    .to_string();
    // JSON escapes can make a command up to six times longer: check, do not assume.
    let len = u16::try_from(json.len()).map_err(|_| InitError::CommandTooLong)?;
    let mut out = Vec::with_capacity(2 + json.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_length_prefixed_json() {
        let id = Uuid::from_u128(7);
        let msg = encode_init(id, 24, 80, "").expect("init");
        let len = usize::from(u16::from_le_bytes([msg[0], msg[1]]));
        assert_eq!(len, msg.len() - 2);
        let v: serde_json::Value = serde_json::from_slice(&msg[2..]).expect("json");
        assert_eq!(v["ID"], id.to_string());
        assert_eq!(
            (v["Height"].as_u64(), v["Width"].as_u64()),
            (Some(24), Some(80))
        );
        assert_eq!(v["Command"], "");
        assert_eq!(
            encode_init(id, 1, 1, &"x".repeat(MAX_COMMAND_LEN + 1)),
            Err(InitError::CommandTooLong)
        );
        // Escapes that would overflow the 16-bit length are refused, not truncated.
        assert_eq!(
            encode_init(id, 1, 1, &"\u{1}".repeat(MAX_COMMAND_LEN)),
            Err(InitError::CommandTooLong)
        );
    }

    #[test]
    fn input_frames_as_the_page_sends_them() {
        let i: Input = serde_json::from_str(r#"{"data":"ls\r"}"#).expect("data");
        assert_eq!(i.data, "ls\r");
        assert!(!i.is_empty());
        let r: Input = serde_json::from_str(r#"{"height":24,"width":80}"#).expect("resize");
        assert_eq!((r.height, r.width), (24, 80));
        assert_eq!(
            serde_json::to_string(&r).expect("ser"),
            r#"{"height":24,"width":80}"#
        );
        assert!(
            serde_json::from_str::<Input>(r#"{"height":0,"width":80}"#)
                .expect("half")
                .is_empty()
        );
        for bad in [
            r#"[1]"#,
            r#"{"data":5}"#,
            r#"{"height":-1}"#,
            r#"{"height":70000}"#,
            r#"{"evil":1}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<Input>(bad).is_err(), "{bad}");
        }
    }
}
