//! A STUN binding client over a caller-owned UDP socket.
//!
//! The request goes out from the socket the caller passes in, so the mapping learned is
//! that socket's own (magicsock passes its WireGuard socket). While waiting, this reads
//! from the socket and drops everything that is not the matching response, so the
//! caller must not have another reader on the socket during the call.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::error::StunError;
use crate::message::{TransactionId, binding_request, parse_binding_response};

/// Buffer for responses; a binding response is well under 200 bytes.
const RECV_BUF_LEN: usize = 1500;

/// Asks `server` for `sock`'s reflexive address.
///
/// Sends up to `tries` copies of one request (one transaction ID, as RFC 5389
/// retransmissions do), spread evenly over `timeout`, and returns the first matching
/// response's mapped address. The whole call never takes much longer than `timeout`.
/// `tries == 0` is treated as 1. A send error on the first request is returned at once
/// (e.g. no route for that address family); later send errors are retried.
pub async fn binding(
    sock: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
    tries: u32,
) -> Result<SocketAddr, StunError> {
    let tries = tries.max(1);
    let txid = TransactionId::random();
    let request = binding_request(txid);
    let start = Instant::now();
    let deadline = start + timeout;
    let interval = timeout / tries;
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let mut sent = 0u32;

    while sent < tries {
        match sock.send_to(&request, server).await {
            Ok(_) => trace!(%server, %txid, attempt = sent + 1, "sent STUN binding request"),
            Err(err) if sent == 0 => return Err(StunError::Io(err)),
            Err(err) => debug!(%server, %err, "STUN retransmission failed"),
        }
        sent += 1;
        let wake = if sent < tries {
            start + interval * sent
        } else {
            deadline
        };
        if let Ok(result) = tokio::time::timeout_at(wake, recv_matching(sock, &mut buf, txid)).await
        {
            return result;
        }
    }
    debug!(%server, ?timeout, tries, "STUN binding timed out");
    Err(StunError::Timeout {
        server,
        timeout,
        tries,
    })
}

/// Reads until a binding response with `txid` arrives. Cancel-safe (only `recv_from`
/// is awaited), so the caller can bound it with a timeout and call it again.
async fn recv_matching(
    sock: &UdpSocket,
    buf: &mut [u8],
    txid: TransactionId,
) -> Result<SocketAddr, StunError> {
    loop {
        let (len, src) = match sock.recv_from(buf).await {
            Ok(received) => received,
            // ICMP unreachable surfaces here on connected sockets (and on Windows);
            // the server may still answer a retransmission, so keep waiting.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                debug!(%err, "transient receive error while waiting for STUN response");
                continue;
            }
            Err(err) => return Err(StunError::Io(err)),
        };
        let packet = buf.get(..len).unwrap_or_default();
        match parse_binding_response(packet) {
            Ok((got, addr)) if got == txid => {
                trace!(%src, %addr, "STUN binding response");
                return Ok(addr);
            }
            Ok((got, _)) => trace!(%src, %got, "ignoring STUN response for another transaction"),
            Err(err) => trace!(%src, len, %err, "ignoring unrelated datagram"),
        }
    }
}
