//! `GET /api/v2/workspaceagents/{agent_id}/pty` (WebSocket): the web terminal. The page
//! speaks Coder's frames ([`tether_proto::pty`]); the server dials the agent's
//! reconnecting PTY (tailnet port 2) through its own node, sends the init message and
//! copies both ways: each page frame is checked and re-encoded for the agent, the
//! agent's output goes to the page as binary frames. A slow page slows the agent's
//! reader (a send is awaited before the next read).
//!
//! Authorised like SSH: only the workspace's owner; anyone else, and an unknown agent,
//! get the same 404. With the session cookie the `Origin` must be the dashboard's (the
//! [`Session`](super::auth::Session) extractor checks upgrades). Failures after the
//! upgrade arrive as a close frame with a reason: 1011 for the agent's side ("agent is not
//! connected", "dial workspace agent: …"), 1009 and 1007 for an oversize or malformed
//! frame (that socket only), 1000 "process exited" when the agent ends the session, 1001
//! "server shutting down" when the server stops (the session lives on in the agent).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tether_proto::pty::{self, Input, MAX_COMMAND_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::agent::owned_agent;
use super::auth::Session;
use super::error::ApiError;
use crate::coordinate::SHUTTING_DOWN;
use crate::coordinate::{ClientSession, SessionTag};
use crate::state::AppState;

/// Largest frame (and message) accepted from the page. The page sends pastes in pieces
/// of 8192 characters; re-encoded with JSON's worst escapes this stays under the agent's
/// 1 MiB bound on one input object.
pub const MAX_FRAME: usize = 128 * 1024;
/// The server pings the page this often and gives up when a ping is not answered by
/// the next one.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// Terminal size when the page gives none.
const DEFAULT_SIZE: u16 = 80;
/// Largest terminal side accepted.
const MAX_SIDE: u16 = 4096;
/// Bytes of agent output read (and sent as one frame) at once.
const READ_CHUNK: usize = 32 * 1024;
/// How long to reach the agent, tunnel and TCP connect included.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest close reason a close frame can carry (RFC 6455: 125 bytes with the code).
const MAX_REASON: usize = 123;
/// A send to the page that takes longer than this ends the session.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Close codes (RFC 6455).
mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const POLICY: u16 = 1008;
    pub const INVALID: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
}

/// What a terminal connection asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyParams {
    /// The session id (the page keeps it in its URL).
    pub reconnect: Uuid,
    /// Rows.
    pub height: u16,
    /// Columns.
    pub width: u16,
    /// What a new session runs (empty: the login shell).
    pub command: String,
}

fn side(q: &HashMap<String, String>, name: &str) -> Result<u16, ApiError> {
    let Some(v) = q.get(name).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_SIZE);
    };
    match v.parse::<u16>() {
        Ok(n) if (1..=MAX_SIDE).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be a whole number from 1 to {MAX_SIDE}."
        ))),
    }
}

/// Checks the query string.
pub fn params(q: &HashMap<String, String>) -> Result<PtyParams, ApiError> {
    let reconnect = q
        .get("reconnect")
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| ApiError::bad_request("reconnect must be a UUID naming the session."))?;
    let command = q.get("command").cloned().unwrap_or_default();
    if command.len() > MAX_COMMAND_LEN {
        return Err(ApiError::bad_request(format!(
            "The command is longer than {MAX_COMMAND_LEN} bytes."
        )));
    }
    Ok(PtyParams {
        reconnect,
        height: side(q, "height")?,
        width: side(q, "width")?,
        command,
    })
}

/// `GET /api/v2/workspaceagents/{agent_id}/pty?reconnect=&width=&height=[&command=]`.
pub async fn pty(
    State(state): State<AppState>,
    session: Session,
    Path(agent_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let user = &session.user;
    let agent = owned_agent(&state, user.id, &agent_id).await?;
    let p = params(&q)?;
    let init = pty::encode_init(p.reconnect, p.height, p.width, &p.command)
        .map_err(|e| ApiError::bad_request(format!("{e}.")))?;
    tracing::debug!(%agent, session = %p.reconnect, user = %user.username, "web terminal opening");
    let client = ClientSession {
        tag: SessionTag {
            user: user.id,
            token_hash: session.token_hash,
            expires_at: session.expires_at,
        },
        store: state.store.clone(),
    };
    Ok(ws
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            let (code, reason) = relay(socket, &state, agent, init, client).await;
            tracing::debug!(%agent, code, %reason, "web terminal closed");
        }))
}

/// `reason` cut to what a close frame carries, at a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

async fn close(socket: &mut (impl SinkExt<Message> + Unpin), code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: close_reason(reason).into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

/// A page frame as the agent gets it: checked, re-encoded, `None` when it asks nothing.
fn for_agent(frame: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let input = Input::from_json(frame).map_err(|e| format!("malformed input frame: {e}"))?;
    if input.is_empty() {
        return Ok(None);
    }
    serde_json::to_vec(&input)
        .map(Some)
        .map_err(|e| format!("input frame: {e}"))
}

/// Runs one terminal connection to its end (at the latest when `session` is revoked or
/// expires); returns how it was closed.
async fn relay(
    socket: WebSocket,
    state: &AppState,
    agent: Uuid,
    init: Vec<u8>,
    session: ClientSession,
) -> (u16, String) {
    let (mut tx, mut rx) = socket.split();
    if state.hub.read(|c| c.agent_status(agent).is_none()) {
        let reason = "agent is not connected".to_string();
        close(&mut tx, code::INTERNAL, &reason).await;
        return (code::INTERNAL, reason);
    }
    let _lease = state.node.lease(agent);
    let dial = tokio::time::timeout(DIAL_TIMEOUT, state.node.dial(agent, pty::AGENT_PORT));
    let dialed = tokio::select! {
        dialed = dial => dialed,
        () = state.shutdown.cancelled() => {
            close(&mut tx, code::GOING_AWAY, SHUTTING_DOWN).await;
            return (code::GOING_AWAY, SHUTTING_DOWN.into());
        }
    };
    let stream = match dialed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = format!("dial workspace agent: {e}");
            close(&mut tx, code::INTERNAL, &reason).await;
            return (code::INTERNAL, reason);
        }
        Err(_) => {
            let reason = format!(
                "dial workspace agent: no answer within {}s",
                DIAL_TIMEOUT.as_secs()
            );
            close(&mut tx, code::INTERNAL, &reason).await;
            return (code::INTERNAL, reason);
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    if let Err(e) = wr.write_all(&init).await {
        let reason = format!("dial workspace agent: {e}");
        close(&mut tx, code::INTERNAL, &reason).await;
        return (code::INTERNAL, reason);
    }
    let mut buf = vec![0u8; READ_CHUNK];
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    let revoked = state.hub.until_revoked(session);
    tokio::pin!(revoked);
    let (code, reason) = loop {
        tokio::select! {
            // The terminal session on the agent lives on, for a reattach with a valid one.
            why = &mut revoked => break (code::POLICY, why.to_string()),
            n = rd.read(&mut buf) => match n {
                Ok(0) => break (code::NORMAL, "process exited".to_string()),
                Ok(n) => {
                    let frame = Message::Binary(buf[..n].to_vec().into());
                    match tokio::time::timeout(SEND_TIMEOUT, tx.send(frame)).await {
                        Ok(Ok(())) => {}
                        // The page is gone; the session lives on.
                        Ok(Err(_)) => return (code::GOING_AWAY, "page gone".into()),
                        Err(_) => break (code::INTERNAL, "the page stopped taking output".into()),
                    }
                }
                Err(e) => break (code::INTERNAL, format!("workspace agent: {e}")),
            },
            msg = rx.next() => match msg {
                // The page closed (or vanished): the session lives on for a reattach.
                None | Some(Ok(Message::Close(_))) => return (code::NORMAL, "page closed".into()),
                Some(Err(e)) => {
                    let e = e.to_string();
                    break if e.contains("too long") {
                        (code::TOO_BIG, format!("frame too big (at most {MAX_FRAME} bytes)"))
                    } else {
                        (code::PROTOCOL, format!("bad WebSocket frame: {e}"))
                    };
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Binary(b))) => match for_agent(&b) {
                    Ok(None) => {}
                    Ok(Some(json)) => {
                        if let Err(e) = wr.write_all(&json).await {
                            break (code::INTERNAL, format!("workspace agent: {e}"));
                        }
                    }
                    Err(e) => break (code::INVALID, e),
                },
                // The page sends binary frames; a text frame carries the same JSON.
                Some(Ok(Message::Text(t))) => match for_agent(t.as_bytes()) {
                    Ok(None) => {}
                    Ok(Some(json)) => {
                        if let Err(e) = wr.write_all(&json).await {
                            break (code::INTERNAL, format!("workspace agent: {e}"));
                        }
                    }
                    Err(e) => break (code::INVALID, e),
                },
            },
            () = state.shutdown.cancelled() => break (code::GOING_AWAY, SHUTTING_DOWN.into()),
            _ = ping.tick() => {
                if awaiting_pong {
                    // No pong for a whole interval: the page is unreachable.
                    return (code::GOING_AWAY, "ping timeout".into());
                }
                awaiting_pong = true;
                let sent = tokio::time::timeout(Duration::from_secs(10), tx.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return (code::GOING_AWAY, "ping failed".into());
                }
            }
        }
    };
    close(&mut tx, code, &reason).await;
    (code, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_strings() {
        let id = "2b1f3c2e-0d3a-4f5e-9a7b-1c2d3e4f5a6b";
        let p = params(&q(&[("reconnect", id)])).expect("defaults");
        assert_eq!((p.height, p.width, p.command.as_str()), (80, 80, ""));
        let p = params(&q(&[
            ("reconnect", id),
            ("width", "120"),
            ("height", "40"),
            ("command", "htop"),
        ]))
        .expect("full");
        assert_eq!((p.height, p.width, p.command.as_str()), (40, 120, "htop"));
        for bad in [
            q(&[]),
            q(&[("reconnect", "nope")]),
            q(&[("reconnect", id), ("width", "0")]),
            q(&[("reconnect", id), ("height", "-3")]),
            q(&[("reconnect", id), ("height", "99999")]),
        ] {
            assert!(params(&bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(MAX_COMMAND_LEN + 1);
        assert!(params(&q(&[("reconnect", id), ("command", &long)])).is_err());
    }

    #[test]
    fn page_frames_are_checked_and_re_encoded() {
        assert_eq!(
            for_agent(br#"{"data":"ls\r"}"#).expect("data").as_deref(),
            Some(&br#"{"data":"ls\r"}"#[..])
        );
        assert_eq!(
            for_agent(br#"{ "width" : 80, "height": 24 }"#)
                .expect("resize")
                .as_deref(),
            Some(&br#"{"height":24,"width":80}"#[..])
        );
        assert_eq!(for_agent(b"{}").expect("empty"), None);
        for bad in [
            &b"[]"[..],
            b"{\"data\":1}",
            b"\xff",
            b"{\"data\":\"a\"}{",
            b"",
        ] {
            assert!(for_agent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("process exited"), "process exited");
        let long = "é".repeat(100);
        let r = close_reason(&long);
        assert!(r.len() <= MAX_REASON && long.starts_with(&r) && !r.is_empty());
    }
}
