//! Curve25519 key types shared by every tether crate: node keys (WireGuard and DERP
//! identity), disco keys (path discovery) and their private halves.
//!
//! Public keys print and parse in Tailscale's text form (`nodekey:<64 hex>`,
//! `discokey:<64 hex>`) and serialise to JSON that way. Private keys never implement
//! `Debug` with their bytes, so they cannot leak into logs. No I/O here.

use std::fmt;
use std::str::FromStr;

use crypto_box::aead::OsRng;

/// Length in bytes of every key in this crate.
pub const KEY_LEN: usize = 32;

/// A key string could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseKeyError {
    /// The text lacked the expected `prefix:`.
    #[error("key must start with {0:?}")]
    MissingPrefix(&'static str),
    /// The hex part was not 64 hex digits.
    #[error("key must be 64 hex digits after the prefix")]
    BadHex,
}

macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// Text prefix, as Tailscale writes it.
            pub const PREFIX: &'static str = $prefix;

            /// Wraps raw key bytes.
            pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// The raw key bytes.
            pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }

            /// Lowercase hex of the raw bytes, without prefix.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses 64 hex digits without prefix.
            pub fn from_hex(s: &str) -> Result<Self, ParseKeyError> {
                let mut out = [0u8; KEY_LEN];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseKeyError::BadHex)?;
                Ok(Self(out))
            }

            /// A short form for logs: the first 5 hex digits, like Tailscale's `ShortString`.
            pub fn short(&self) -> String {
                format!("[{}]", &self.to_hex()[..5])
            }
        }

        impl From<[u8; KEY_LEN]> for $name {
            fn from(b: [u8; KEY_LEN]) -> Self {
                Self(b)
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = ParseKeyError;
            fn try_from(b: &[u8]) -> Result<Self, ParseKeyError> {
                let arr: [u8; KEY_LEN] = b.try_into().map_err(|_| ParseKeyError::BadHex)?;
                Ok(Self(arr))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseKeyError;
            fn from_str(s: &str) -> Result<Self, ParseKeyError> {
                let hex = s.strip_prefix($prefix).ok_or(ParseKeyError::MissingPrefix($prefix))?;
                Self::from_hex(hex)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

macro_rules! private_key {
    ($(#[$doc:meta])* $name:ident, $public:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(crypto_box::SecretKey);

        impl $name {
            /// Text prefix of the serialised form.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random key from the OS RNG.
            pub fn generate() -> Self {
                Self(crypto_box::SecretKey::generate(&mut OsRng))
            }

            /// Wraps raw private key bytes.
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(crypto_box::SecretKey::from_bytes(bytes))
            }

            /// The raw private key bytes. Handle with care.
            pub fn to_bytes(&self) -> [u8; KEY_LEN] {
                self.0.to_bytes()
            }

            /// The matching public key.
            pub fn public(&self) -> $public {
                $public(*self.0.public_key().as_bytes())
            }

            /// The `crypto_box` secret key, for NaCl boxes.
            pub fn secret(&self) -> &crypto_box::SecretKey {
                &self.0
            }

            /// `prefix:<hex>` text form, for key files.
            pub fn to_text(&self) -> String {
                format!("{}{}", $prefix, hex::encode(self.to_bytes()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(public {:?})", stringify!($name), self.public())
            }
        }

        impl FromStr for $name {
            type Err = ParseKeyError;
            fn from_str(s: &str) -> Result<Self, ParseKeyError> {
                let hex = s.trim().strip_prefix($prefix).ok_or(ParseKeyError::MissingPrefix($prefix))?;
                let mut out = [0u8; KEY_LEN];
                hex::decode_to_slice(hex, &mut out).map_err(|_| ParseKeyError::BadHex)?;
                Ok(Self::from_bytes(out))
            }
        }
    };
}

public_key!(
    /// A node's public key: its WireGuard key and its identity on DERP.
    NodePublic,
    "nodekey:"
);
public_key!(
    /// A node's disco public key, used only for path discovery messages.
    DiscoPublic,
    "discokey:"
);
private_key!(
    /// A node's private key (WireGuard static key and DERP login key).
    NodePrivate,
    NodePublic,
    "privkey:"
);
private_key!(
    /// A node's disco private key.
    DiscoPrivate,
    DiscoPublic,
    "discoprivkey:"
);

impl NodePublic {
    /// The `crypto_box` public key, for NaCl boxes.
    pub fn to_box_key(&self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from(self.0)
    }
}

impl DiscoPublic {
    /// The `crypto_box` public key, for NaCl boxes.
    pub fn to_box_key(&self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_roundtrip_and_prefix() {
        let k = NodePrivate::generate();
        let p = k.public();
        let s = p.to_string();
        assert!(s.starts_with("nodekey:"));
        assert_eq!(s.len(), 8 + 64);
        assert_eq!(s.parse::<NodePublic>(), Ok(p));
        assert_eq!(
            "discokey:00".parse::<NodePublic>(),
            Err(ParseKeyError::MissingPrefix("nodekey:"))
        );
        assert_eq!(
            "nodekey:zz".parse::<NodePublic>(),
            Err(ParseKeyError::BadHex)
        );
        let again: NodePrivate = k.to_text().parse().expect("parse private");
        assert_eq!(again.public(), p);
    }

    #[test]
    fn json_is_text_form() {
        let p = DiscoPublic::from_bytes([7; 32]);
        let j = serde_json::to_string(&p).expect("ser");
        assert_eq!(j, format!("\"discokey:{}\"", "07".repeat(32)));
        let back: DiscoPublic = serde_json::from_str(&j).expect("de");
        assert_eq!(back, p);
    }

    #[test]
    fn debug_never_prints_private_bytes() {
        let k = NodePrivate::from_bytes([0xab; 32]);
        let d = format!("{k:?}");
        assert!(!d.contains("abababab"), "{d}");
    }
}
