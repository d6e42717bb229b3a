//! The one error type of this crate.

use std::io;
use std::time::Duration;

/// Why a STUN message could not be parsed or a binding could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum StunError {
    /// Fewer bytes than a STUN header (20) or than the header's length field claims.
    #[error("STUN message truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the header or an attribute says are needed.
        needed: usize,
        /// Bytes actually present.
        have: usize,
    },
    /// The leading two bits are not zero or the magic cookie is wrong.
    #[error("not a STUN message (bad leading bits or magic cookie)")]
    NotStun,
    /// A well-formed STUN message, but not the message type the caller asked for.
    #[error("unexpected STUN message type {0:#06x}")]
    UnexpectedType(u16),
    /// The header's length field is not a multiple of 4 or disagrees with the datagram size.
    #[error("STUN length field {declared} does not match {actual} bytes of attributes")]
    BadLength {
        /// Value of the header's length field.
        declared: usize,
        /// Bytes of attributes actually present after the header.
        actual: usize,
    },
    /// An attribute's declared length runs past the end of the message.
    #[error("STUN attribute {attr_type:#06x} overruns the message")]
    AttributeOverrun {
        /// Type of the offending attribute.
        attr_type: u16,
    },
    /// A FINGERPRINT attribute is present but wrong, malformed or not last.
    #[error("STUN FINGERPRINT does not match the message")]
    BadFingerprint,
    /// An address attribute has a bad family or length.
    #[error("malformed STUN address attribute {attr_type:#06x}")]
    BadAddress {
        /// Type of the offending attribute.
        attr_type: u16,
    },
    /// A binding response carried neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS.
    #[error("STUN binding response has no mapped address")]
    NoMappedAddress,
    /// No matching binding response arrived in time.
    #[error("no STUN binding response from {server} within {timeout:?} ({tries} tries)")]
    Timeout {
        /// The STUN server that was asked.
        server: std::net::SocketAddr,
        /// The overall time limit.
        timeout: Duration,
        /// How many requests were sent.
        tries: u32,
    },
    /// The socket failed in a way that retrying cannot fix.
    #[error("STUN socket error: {0}")]
    Io(#[from] io::Error),
}
