//! Sans-IO codec for RFC 5389 Binding requests and success responses.
//!
//! Only what Tailscale-style NAT discovery needs: the 40-byte request Tailscale sends,
//! a parser that accepts any valid binding request, a response carrying one
//! XOR-MAPPED-ADDRESS, and a response parser that also understands the pre-RFC 0x8020
//! XOR-MAPPED-ADDRESS and the RFC 3489 MAPPED-ADDRESS. Nothing here does I/O or reads a
//! clock; every parser works on untrusted bytes without panicking.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::StunError;

/// Size of the fixed STUN header: type (2), length (2), cookie (4), transaction ID (12).
pub const HEADER_LEN: usize = 20;
/// The RFC 5389 magic cookie, as it appears on the wire at bytes 4..8.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Message type of a Binding request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Message type of a Binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// RFC 3489 MAPPED-ADDRESS (plain address; the fallback when no XOR form is present).
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// RFC 5389 XOR-MAPPED-ADDRESS.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// XOR-MAPPED-ADDRESS under the pre-RFC draft number some servers still send.
pub const ATTR_XOR_MAPPED_ADDRESS_ALT: u16 = 0x8020;
/// SOFTWARE (free-form agent name).
pub const ATTR_SOFTWARE: u16 = 0x8022;
/// FINGERPRINT (CRC-32 of the preceding message XOR [`FINGERPRINT_XOR`]).
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// Constant XORed into the CRC-32 of a FINGERPRINT attribute ("STUN" in ASCII).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// Length of the request produced by [`binding_request`].
pub const BINDING_REQUEST_LEN: usize = 40;

/// SOFTWARE value Tailscale puts in its requests; we send the same bytes so that
/// servers and middleboxes treat us exactly like a Tailscale node.
const SOFTWARE: [u8; 8] = *b"tailnode";
const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;
const ATTR_HEADER_LEN: usize = 4;

/// The 96-bit transaction ID that pairs a response with its request.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// A fresh, uniformly random transaction ID (RFC 5389 wants it unguessable).
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The raw 12 bytes.
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl From<[u8; 12]> for TransactionId {
    fn from(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransactionId({self})")
    }
}

/// Builds the 40-byte binding request Tailscale sends: header, SOFTWARE "tailnode",
/// FINGERPRINT.
pub fn binding_request(txid: TransactionId) -> [u8; BINDING_REQUEST_LEN] {
    let mut out = [0u8; BINDING_REQUEST_LEN];
    let body_len = (BINDING_REQUEST_LEN - HEADER_LEN) as u16;
    let mut w = Writer::new(&mut out);
    w.put(&BINDING_REQUEST.to_be_bytes());
    w.put(&body_len.to_be_bytes());
    w.put(&MAGIC_COOKIE);
    w.put(&txid.0);
    w.put(&ATTR_SOFTWARE.to_be_bytes());
    w.put(&(SOFTWARE.len() as u16).to_be_bytes());
    w.put(&SOFTWARE);
    // CRC over everything before the FINGERPRINT attribute, with the header length
    // already counting that attribute (RFC 5389 15.5).
    let crc = fingerprint(w.written());
    w.put(&ATTR_FINGERPRINT.to_be_bytes());
    w.put(&4u16.to_be_bytes());
    w.put(&crc.to_be_bytes());
    out
}

/// Builds a binding success response carrying `addr` in one XOR-MAPPED-ADDRESS.
///
/// IPv4-mapped IPv6 addresses (as a dual-stack socket reports IPv4 peers) are sent as
/// IPv4, since that is the address the client actually has.
pub fn binding_response(txid: TransactionId, addr: SocketAddr) -> Vec<u8> {
    let key = xor_key(&txid);
    let xport = addr.port() ^ u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
    let (family, xaddr): (u8, Vec<u8>) = match addr.ip().to_canonical() {
        IpAddr::V4(ip) => (
            FAMILY_IPV4,
            ip.octets().iter().zip(key).map(|(a, k)| a ^ k).collect(),
        ),
        IpAddr::V6(ip) => (
            FAMILY_IPV6,
            ip.octets().iter().zip(key).map(|(a, k)| a ^ k).collect(),
        ),
    };
    let value_len = 4 + xaddr.len();
    let body_len = ATTR_HEADER_LEN + value_len;
    let mut out = Vec::with_capacity(HEADER_LEN + body_len);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&(body_len as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(&txid.0);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.push(0);
    out.push(family);
    out.extend_from_slice(&xport.to_be_bytes());
    out.extend_from_slice(&xaddr);
    out
}

/// Parses any valid RFC 5389 binding request and returns its transaction ID.
///
/// Attributes other than FINGERPRINT are skipped; a FINGERPRINT, if present, must be
/// the last attribute and must match.
pub fn parse_binding_request(msg: &[u8]) -> Result<TransactionId, StunError> {
    parse_message(msg, BINDING_REQUEST, |_, _| Ok(()))
}

/// Parses a binding success response: its transaction ID and the mapped address.
///
/// XOR-MAPPED-ADDRESS (0x0020, or 0x8020) wins over MAPPED-ADDRESS (0x0001); the first
/// occurrence of each is used. A FINGERPRINT, if present, must match.
pub fn parse_binding_response(msg: &[u8]) -> Result<(TransactionId, SocketAddr), StunError> {
    let mut xor_mapped: Option<SocketAddr> = None;
    let mut mapped: Option<SocketAddr> = None;
    let txid = parse_message(msg, BINDING_SUCCESS, |attr_type, value| {
        match attr_type {
            ATTR_XOR_MAPPED_ADDRESS | ATTR_XOR_MAPPED_ADDRESS_ALT if xor_mapped.is_none() => {
                xor_mapped = Some(decode_address(attr_type, value, Some(msg))?);
            }
            ATTR_MAPPED_ADDRESS if mapped.is_none() => {
                mapped = Some(decode_address(attr_type, value, None)?);
            }
            _ => {}
        }
        Ok(())
    })?;
    xor_mapped
        .or(mapped)
        .map(|addr| (txid, addr))
        .ok_or(StunError::NoMappedAddress)
}

/// The cheap demultiplexing test magicsock applies before anything else: at least a
/// header, first two bits zero, the magic cookie at bytes 4..8 and byte 1 == 0x01
/// (binding method, request or success class).
pub fn is_stun_binding(packet: &[u8]) -> bool {
    match packet {
        [b0, 0x01, _, _, c0, c1, c2, c3, ..] if packet.len() >= HEADER_LEN => {
            b0 & 0xC0 == 0 && [*c0, *c1, *c2, *c3] == MAGIC_COOKIE
        }
        _ => false,
    }
}

/// [`is_stun_binding`] and the type is Binding request (0x0001). Does not validate the body.
pub fn is_request(packet: &[u8]) -> bool {
    is_stun_binding(packet) && packet.first() == Some(&0x00)
}

/// [`is_stun_binding`] and the type is Binding success response (0x0101). Does not
/// validate the body.
pub fn is_response(packet: &[u8]) -> bool {
    is_stun_binding(packet) && packet.first() == Some(&0x01)
}

/// CRC-32 (IEEE) of `bytes` XOR the STUN constant, as carried in FINGERPRINT.
fn fingerprint(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ FINGERPRINT_XOR
}

/// cookie ‖ transaction ID: the XOR mask for mapped addresses (IPv4 uses the first 4).
fn xor_key(txid: &TransactionId) -> [u8; 16] {
    let mut key = [0u8; 16];
    let mut w = Writer::new(&mut key);
    w.put(&MAGIC_COOKIE);
    w.put(&txid.0);
    key
}

/// Validates the header and walks the attributes, calling `on_attr` with each
/// attribute's type and unpadded value. Checks FINGERPRINT itself.
fn parse_message<F>(msg: &[u8], want_type: u16, mut on_attr: F) -> Result<TransactionId, StunError>
where
    F: FnMut(u16, &[u8]) -> Result<(), StunError>,
{
    let Some((header, body)) = msg.split_first_chunk::<HEADER_LEN>() else {
        return Err(StunError::Truncated {
            needed: HEADER_LEN,
            have: msg.len(),
        });
    };
    let [t0, t1, l0, l1, c0, c1, c2, c3, txid @ ..] = *header;
    if t0 & 0xC0 != 0 || [c0, c1, c2, c3] != MAGIC_COOKIE {
        return Err(StunError::NotStun);
    }
    let msg_type = u16::from_be_bytes([t0, t1]);
    if msg_type != want_type {
        return Err(StunError::UnexpectedType(msg_type));
    }
    let declared = usize::from(u16::from_be_bytes([l0, l1]));
    if body.len() < declared {
        return Err(StunError::Truncated {
            needed: HEADER_LEN + declared,
            have: msg.len(),
        });
    }
    // A UDP datagram carries exactly one message; trailing bytes or an unaligned length
    // mean this is not STUN (or is corrupt), so refuse rather than guess.
    if declared % 4 != 0 || body.len() != declared {
        return Err(StunError::BadLength {
            declared,
            actual: body.len(),
        });
    }

    let mut offset = 0usize;
    while offset < body.len() {
        let rest = body.get(offset..).unwrap_or_default();
        let Some((&[a0, a1, v0, v1], after)) = rest.split_first_chunk::<ATTR_HEADER_LEN>() else {
            // Cannot happen with a 4-aligned body, but never index on wire data.
            return Err(StunError::Truncated {
                needed: HEADER_LEN + offset + ATTR_HEADER_LEN,
                have: msg.len(),
            });
        };
        let attr_type = u16::from_be_bytes([a0, a1]);
        let value_len = usize::from(u16::from_be_bytes([v0, v1]));
        let padded_len = value_len.next_multiple_of(4);
        let (Some(value), true) = (after.get(..value_len), after.len() >= padded_len) else {
            return Err(StunError::AttributeOverrun { attr_type });
        };
        if attr_type == ATTR_FINGERPRINT {
            let is_last = offset + ATTR_HEADER_LEN + padded_len == body.len();
            let covered = msg.get(..HEADER_LEN + offset).unwrap_or_default();
            let expected = fingerprint(covered).to_be_bytes();
            if !is_last || value != expected.as_slice() {
                return Err(StunError::BadFingerprint);
            }
        } else {
            on_attr(attr_type, value)?;
        }
        offset += ATTR_HEADER_LEN + padded_len;
    }
    Ok(TransactionId(txid))
}

/// Decodes a (XOR-)MAPPED-ADDRESS value; `xor_msg` is the whole message when the value
/// is XORed (the mask comes from its cookie and transaction ID).
fn decode_address(
    attr_type: u16,
    value: &[u8],
    xor_msg: Option<&[u8]>,
) -> Result<SocketAddr, StunError> {
    let bad = StunError::BadAddress { attr_type };
    let Some((&[_reserved, family, p0, p1], raw)) = value.split_first_chunk::<4>() else {
        return Err(bad);
    };
    let mut mask = [0u8; 16];
    let mut port_mask = 0u16;
    if let Some(msg) = xor_msg {
        // Bytes 4..20 of the header are cookie ‖ transaction ID, exactly the XOR mask.
        let Some(header_mask) = msg
            .get(4..HEADER_LEN)
            .and_then(|m| <[u8; 16]>::try_from(m).ok())
        else {
            return Err(bad);
        };
        mask = header_mask;
        port_mask = u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
    }
    let port = u16::from_be_bytes([p0, p1]) ^ port_mask;
    let ip = match (family, raw.len()) {
        (FAMILY_IPV4, 4) => {
            let mut o = [0u8; 4];
            for (dst, (src, m)) in o.iter_mut().zip(raw.iter().zip(mask)) {
                *dst = src ^ m;
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (FAMILY_IPV6, 16) => {
            let mut o = [0u8; 16];
            for (dst, (src, m)) in o.iter_mut().zip(raw.iter().zip(mask)) {
                *dst = src ^ m;
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(bad),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Sequential writer into a fixed buffer; used only where sizes are compile-time known,
/// and silently stops at the end instead of panicking.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        let dst = self.buf.iter_mut().skip(self.pos);
        let mut n = 0;
        for (d, s) in dst.zip(bytes) {
            *d = *s;
            n += 1;
        }
        self.pos += n;
    }

    fn written(&self) -> &[u8] {
        self.buf.get(..self.pos).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TXID_SEQ: TransactionId = TransactionId([
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
    ]);
    /// Transaction ID of the RFC 5769 test vectors.
    const TXID_5769: TransactionId = TransactionId([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|c| match c {
                b'0'..=b'9' => c - b'0',
                _ => (c | 0x20) - b'a' + 10,
            })
            .collect();
        digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
    }

    /// RFC 5769 2.1: request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME (padded),
    /// MESSAGE-INTEGRITY and FINGERPRINT.
    fn rfc5769_request() -> Vec<u8> {
        hex("00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
             80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
             00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
             00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
             00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
             80 28 00 04 e5 7a 3b cf")
    }

    /// RFC 5769 2.2: IPv4 response, SOFTWARE of odd length (11, padded), FINGERPRINT.
    fn rfc5769_response_v4() -> Vec<u8> {
        hex("01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
             80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
             00 20 00 08 00 01 a1 47 e1 12 a6 43
             00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
             80 28 00 04 c0 7d 4c 96")
    }

    /// RFC 5769 2.3: IPv6 response.
    fn rfc5769_response_v6() -> Vec<u8> {
        hex("01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
             80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
             00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
             00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
             80 28 00 04 c8 fb 0b 4c")
    }

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Builds a message from a type and raw (already padded) attribute bytes.
    fn raw_message(msg_type: u16, txid: TransactionId, attrs: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&msg_type.to_be_bytes());
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE);
        out.extend_from_slice(&txid.0);
        out.extend_from_slice(attrs);
        out
    }

    #[test]
    fn request_exact_bytes() {
        // CRC-32 computed independently (Python zlib.crc32 of bytes 0..32) ^ 0x5354554E.
        let expected = hex("00 01 00 14 21 12 a4 42 01 02 03 04 05 06 07 08 09 0a 0b 0c
                            80 22 00 08 74 61 69 6c 6e 6f 64 65
                            80 28 00 04 b3 2c 37 0f");
        assert_eq!(binding_request(TXID_SEQ).as_slice(), expected.as_slice());
    }

    #[test]
    fn request_roundtrip_and_length_field() {
        let txid = TransactionId::random();
        let req = binding_request(txid);
        assert_eq!(
            usize::from(u16::from_be_bytes([req[2], req[3]])),
            req.len() - HEADER_LEN
        );
        assert_eq!(parse_binding_request(&req).unwrap(), txid);
        assert!(is_stun_binding(&req));
        assert!(is_request(&req));
        assert!(!is_response(&req));
    }

    #[test]
    fn response_ipv4_exact_bytes() {
        // port 32853 ^ 0x2112 = 0xa147; 192.0.2.1 ^ 21 12 a4 42 = e1 12 a6 43.
        let expected = hex("01 01 00 0c 21 12 a4 42 01 02 03 04 05 06 07 08 09 0a 0b 0c
                            00 20 00 08 00 01 a1 47 e1 12 a6 43");
        assert_eq!(binding_response(TXID_SEQ, v4("192.0.2.1:32853")), expected);
    }

    #[test]
    fn response_ipv6_exact_bytes() {
        // Same address as RFC 5769 2.3, so the XORed bytes match that vector.
        let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let expected = hex("01 01 00 18 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
                            00 20 00 14 00 02 a1 47
                            01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9");
        assert_eq!(binding_response(TXID_5769, addr), expected);
    }

    #[test]
    fn response_for_ipv4_mapped_source_is_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:32853".parse().unwrap();
        assert_eq!(
            binding_response(TXID_SEQ, mapped),
            binding_response(TXID_SEQ, v4("192.0.2.1:32853"))
        );
    }

    #[test]
    fn response_roundtrip_and_length_field() {
        for addr in [
            v4("127.0.0.1:1"),
            v4("203.0.113.7:65535"),
            "[::1]:3478".parse().unwrap(),
            "[fe80::1:2:3:4]:0".parse().unwrap(),
        ] {
            let txid = TransactionId::random();
            let resp = binding_response(txid, addr);
            assert_eq!(
                usize::from(u16::from_be_bytes([resp[2], resp[3]])),
                resp.len() - HEADER_LEN
            );
            assert!(is_response(&resp) && !is_request(&resp));
            assert_eq!(parse_binding_response(&resp).unwrap(), (txid, addr));
            // A response is not a request and vice versa.
            assert!(matches!(
                parse_binding_request(&resp),
                Err(StunError::UnexpectedType(0x0101))
            ));
        }
    }

    #[test]
    fn parses_rfc5769_vectors() {
        assert_eq!(
            parse_binding_request(&rfc5769_request()).unwrap(),
            TXID_5769
        );
        assert_eq!(
            parse_binding_response(&rfc5769_response_v4()).unwrap(),
            (TXID_5769, v4("192.0.2.1:32853"))
        );
        assert_eq!(
            parse_binding_response(&rfc5769_response_v6()).unwrap(),
            (
                TXID_5769,
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
    }

    #[test]
    fn accepts_bare_request_as_coturn_sends() {
        // turnutils_stunclient sends a 20-byte request with no attributes at all.
        let bare = raw_message(BINDING_REQUEST, TXID_SEQ, &[]);
        assert_eq!(parse_binding_request(&bare).unwrap(), TXID_SEQ);
    }

    #[test]
    fn request_fingerprint_must_match_and_be_last() {
        let mut bad = binding_request(TXID_SEQ);
        bad[39] ^= 0x01;
        assert!(matches!(
            parse_binding_request(&bad),
            Err(StunError::BadFingerprint)
        ));

        // FINGERPRINT followed by another attribute: rejected even with a correct CRC
        // over the bytes before it.
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&hex("80 28 00 04 00 00 00 00 80 22 00 04 61 62 63 64"));
        let mut msg = raw_message(BINDING_REQUEST, TXID_SEQ, &attrs);
        let crc = fingerprint(&msg[..HEADER_LEN]).to_be_bytes();
        msg[24..28].copy_from_slice(&crc);
        assert!(matches!(
            parse_binding_request(&msg),
            Err(StunError::BadFingerprint)
        ));
    }

    #[test]
    fn response_fallbacks_and_preference() {
        // MAPPED-ADDRESS only (no XOR): 10.1.2.3:4660 in the clear.
        let plain = hex("00 01 00 08 00 01 12 34 0a 01 02 03");
        let msg = raw_message(BINDING_SUCCESS, TXID_SEQ, &plain);
        assert_eq!(parse_binding_response(&msg).unwrap().1, v4("10.1.2.3:4660"));

        // The 0x8020 XOR-MAPPED-ADDRESS variant.
        let alt = hex("80 20 00 08 00 01 a1 47 e1 12 a6 43");
        let msg = raw_message(BINDING_SUCCESS, TXID_SEQ, &alt);
        assert_eq!(
            parse_binding_response(&msg).unwrap().1,
            v4("192.0.2.1:32853")
        );

        // Both present, MAPPED first: XOR still wins (NATs rewrite plain addresses).
        let both = [
            plain.as_slice(),
            hex("00 20 00 08 00 01 a1 47 e1 12 a6 43").as_slice(),
        ]
        .concat();
        let msg = raw_message(BINDING_SUCCESS, TXID_SEQ, &both);
        assert_eq!(
            parse_binding_response(&msg).unwrap().1,
            v4("192.0.2.1:32853")
        );

        // Neither.
        let software = hex("80 22 00 03 61 62 63 00");
        let msg = raw_message(BINDING_SUCCESS, TXID_SEQ, &software);
        assert!(matches!(
            parse_binding_response(&msg),
            Err(StunError::NoMappedAddress)
        ));
    }

    #[test]
    fn rejects_malformed() {
        let req = binding_request(TXID_SEQ);
        // Trailing byte after a valid message.
        let mut long = req.to_vec();
        long.push(0);
        assert!(matches!(
            parse_binding_request(&long),
            Err(StunError::BadLength { .. })
        ));
        // Attribute claiming more than the message holds.
        let msg = raw_message(
            BINDING_REQUEST,
            TXID_SEQ,
            &hex("80 22 00 09 61 62 63 64 65 66 67 68"),
        );
        assert!(matches!(
            parse_binding_request(&msg),
            Err(StunError::AttributeOverrun { attr_type: 0x8022 })
        ));
        // Wrong cookie / leading bits.
        let mut bad_cookie = req;
        bad_cookie[4] = 0;
        assert!(matches!(
            parse_binding_request(&bad_cookie),
            Err(StunError::NotStun)
        ));
        let mut bad_bits = req;
        bad_bits[0] |= 0x80;
        assert!(matches!(
            parse_binding_request(&bad_bits),
            Err(StunError::NotStun)
        ));
        // Address with unknown family or wrong size.
        let fam3 = raw_message(
            BINDING_SUCCESS,
            TXID_SEQ,
            &hex("00 20 00 08 00 03 a1 47 e1 12 a6 43"),
        );
        assert!(matches!(
            parse_binding_response(&fam3),
            Err(StunError::BadAddress { .. })
        ));
        let short6 = raw_message(
            BINDING_SUCCESS,
            TXID_SEQ,
            &hex("00 20 00 08 00 02 a1 47 e1 12 a6 43"),
        );
        assert!(matches!(
            parse_binding_response(&short6),
            Err(StunError::BadAddress { .. })
        ));
    }

    #[test]
    fn demux_test() {
        let error_response = raw_message(0x0111, TXID_SEQ, &[]);
        assert!(!is_stun_binding(&error_response));
        let disco = hex("54 53 f0 9f 92 ac").repeat(8);
        assert!(!is_stun_binding(&disco));
        let wireguard = hex("01 00 00 00").repeat(40);
        assert!(!is_stun_binding(&wireguard));
        // Header-only prefix is enough for the demux, 19 bytes is not.
        let req = binding_request(TXID_SEQ);
        assert!(is_stun_binding(&req[..HEADER_LEN]));
        assert!(!is_stun_binding(&req[..HEADER_LEN - 1]));
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)).to_canonical(), port)
            }),
        ]
    }

    proptest! {
        #[test]
        fn prop_response_roundtrip(txid in any::<[u8; 12]>(), addr in any_addr()) {
            let txid = TransactionId(txid);
            let resp = binding_response(txid, addr);
            prop_assert_eq!(usize::from(u16::from_be_bytes([resp[2], resp[3]])), resp.len() - HEADER_LEN);
            prop_assert_eq!(parse_binding_response(&resp).unwrap(), (txid, addr));
        }

        #[test]
        fn prop_truncated_never_parses(txid in any::<[u8; 12]>(), addr in any_addr(), cut in 0usize..64) {
            let txid = TransactionId(txid);
            let req = binding_request(txid);
            let resp = binding_response(txid, addr);
            let rl = cut % req.len();
            let pl = cut % resp.len();
            prop_assert!(parse_binding_request(&req[..rl]).is_err());
            prop_assert!(parse_binding_response(&resp[..pl]).is_err());
        }

        #[test]
        fn prop_bit_flip_in_fingerprinted_request_is_caught(txid in any::<[u8; 12]>(), bit in 0usize..(BINDING_REQUEST_LEN * 8)) {
            let mut req = binding_request(TransactionId(txid));
            req[bit / 8] ^= 1 << (bit % 8);
            let result = parse_binding_request(&req);
            // Flipping the FINGERPRINT attribute's type turns it into an unknown
            // attribute, which a request may legitimately carry; every other flip
            // must be rejected.
            if (32..34).contains(&(bit / 8)) {
                if let Ok(got) = result {
                    prop_assert_eq!(got, TransactionId(txid));
                }
            } else {
                prop_assert!(result.is_err(), "flip of bit {} accepted", bit);
            }
        }

        #[test]
        fn prop_bit_flip_in_response_never_panics(txid in any::<[u8; 12]>(), addr in any_addr(), bit in 0usize..(44 * 8)) {
            let mut resp = binding_response(TransactionId(txid), addr);
            let bit = bit % (resp.len() * 8);
            resp[bit / 8] ^= 1 << (bit % 8);
            let _ = parse_binding_response(&resp);
            let _ = parse_binding_request(&resp);
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let req = parse_binding_request(&bytes);
            let resp = parse_binding_response(&bytes);
            // Whatever parses must also pass the cheap demux check.
            prop_assert!(req.is_err() || is_request(&bytes));
            prop_assert!(resp.is_err() || is_response(&bytes));
        }

        #[test]
        fn prop_random_attributes_never_panic(
            txid in any::<[u8; 12]>(),
            request in any::<bool>(),
            attrs in proptest::collection::vec(any::<u8>(), 0..32).prop_map(|mut v| { v.truncate(v.len() / 4 * 4); v }),
            seeded in proptest::collection::vec((prop_oneof![Just(0x0001u16), Just(0x0020), Just(0x8020), Just(0x8028), any::<u16>()], 0u16..24), 0..4),
        ) {
            // Plausible attribute headers followed by random bytes reach deep into the walker.
            let mut body = Vec::new();
            for (t, l) in seeded {
                body.extend_from_slice(&t.to_be_bytes());
                body.extend_from_slice(&l.to_be_bytes());
                body.extend_from_slice(&vec![0xa5; usize::from(l).next_multiple_of(4)]);
            }
            body.extend_from_slice(&attrs);
            let msg_type = if request { BINDING_REQUEST } else { BINDING_SUCCESS };
            let msg = raw_message(msg_type, TransactionId(txid), &body);
            if request {
                if let Ok(got) = parse_binding_request(&msg) {
                    prop_assert_eq!(got, TransactionId(txid));
                }
            } else if let Ok((got, _)) = parse_binding_response(&msg) {
                prop_assert_eq!(got, TransactionId(txid));
            }
        }
    }
}
