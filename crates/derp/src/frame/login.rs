//! The login exchange's sealed JSON: [`ClientInfo`] and [`ServerInfo`] and the NaCl
//! boxes (`nonce ‖ ciphertext`) that carry them inside ClientInfo/ServerInfo frames.

use bytes::{BufMut, Bytes, BytesMut};
use crypto_box::SalsaBox;
use crypto_box::aead::{Aead, AeadCore, OsRng};
use serde::{Deserialize, Serialize};
use tether_key::{NodePrivate, NodePublic};

use super::{Frame, MAX_INFO_LEN, NONCE_LEN, PROTOCOL_VERSION};

/// A NaCl box could not be sealed or opened, or its JSON was bad.
#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    /// The sealed bytes were shorter than a nonce plus tag.
    #[error("sealed box too short ({0} bytes)")]
    TooShort(usize),
    /// Authentication failed: wrong key or tampered data.
    #[error("box did not open (wrong key or corrupted)")]
    Open,
    /// Encryption failed (should not happen).
    #[error("box could not be sealed")]
    Seal,
    /// The opened JSON was too long.
    #[error("info JSON of {0} bytes is too long")]
    TooLong(usize),
    /// The opened JSON did not parse.
    #[error("bad info JSON: {0}")]
    Json(#[from] serde_json::Error),
}

const TAG_LEN: usize = 16;

/// Seals `plaintext` from `sender` to `recipient`: returns `nonce(24) ‖ ciphertext`.
pub fn seal(
    sender: &NodePrivate,
    recipient: &NodePublic,
    plaintext: &[u8],
) -> Result<Bytes, BoxError> {
    let b = SalsaBox::new(&recipient.to_box_key(), sender.secret());
    let nonce = SalsaBox::generate_nonce(&mut OsRng);
    let ct = b.encrypt(&nonce, plaintext).map_err(|_| BoxError::Seal)?;
    let mut out = BytesMut::with_capacity(NONCE_LEN + ct.len());
    out.put_slice(&nonce);
    out.put_slice(&ct);
    Ok(out.freeze())
}

/// Opens `nonce ‖ ciphertext` sent by `sender` to `recipient`.
pub fn open(
    recipient: &NodePrivate,
    sender: &NodePublic,
    sealed: &[u8],
) -> Result<Vec<u8>, BoxError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(BoxError::TooShort(sealed.len()));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let b = SalsaBox::new(&sender.to_box_key(), recipient.secret());
    b.decrypt(crypto_box::Nonce::from_slice(nonce), ct)
        .map_err(|_| BoxError::Open)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The client's login JSON (sealed inside the ClientInfo frame).
///
/// Accepts Go's spellings (`CanAckPings`; Go decodes case-insensitively) and ts_derp's
/// snake_case (`can_ack_pings`, `mesh_key`); unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientInfo {
    /// Mesh key as 64 hex digits; empty (or ts_derp's `"none"`) means not a mesh peer.
    #[serde(
        rename = "meshKey",
        alias = "MeshKey",
        alias = "meshkey",
        alias = "mesh_key",
        skip_serializing_if = "String::is_empty"
    )]
    pub mesh_key: String,
    /// Protocol version.
    #[serde(rename = "version", alias = "Version")]
    pub version: u32,
    /// The client answers server pings.
    #[serde(
        rename = "CanAckPings",
        alias = "canAckPings",
        alias = "canackpings",
        alias = "can_ack_pings"
    )]
    pub can_ack_pings: bool,
    /// The client is a prober.
    #[serde(
        rename = "IsProber",
        alias = "isProber",
        alias = "isprober",
        alias = "is_prober",
        skip_serializing_if = "is_false"
    )]
    pub is_prober: bool,
    /// Application name, for logs.
    #[serde(
        rename = "AppName",
        alias = "appName",
        alias = "appname",
        alias = "app_name",
        skip_serializing_if = "String::is_empty"
    )]
    pub app_name: String,
}

impl ClientInfo {
    /// The mesh key, if the client sent a real one (64 hex digits).
    pub fn mesh_key_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.mesh_key, &mut out).ok()?;
        Some(out)
    }
}

/// The server's login JSON (sealed inside the ServerInfo frame). Always has `"version"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Protocol version (always serialised; ts_derp requires `"version":2`).
    #[serde(rename = "version", alias = "Version", default)]
    pub version: u32,
    /// Client-side rate limit: bytes per second.
    #[serde(
        rename = "TokenBucketBytesPerSecond",
        alias = "tokenBucketBytesPerSecond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token_bucket_bytes_per_second: Option<u64>,
    /// Client-side rate limit: burst bytes.
    #[serde(
        rename = "TokenBucketBytesBurst",
        alias = "tokenBucketBytesBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token_bucket_bytes_burst: Option<u64>,
}

impl Default for ServerInfo {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            token_bucket_bytes_per_second: None,
            token_bucket_bytes_burst: None,
        }
    }
}

fn open_json<T: serde::de::DeserializeOwned>(
    recipient: &NodePrivate,
    sender: &NodePublic,
    sealed: &[u8],
) -> Result<T, BoxError> {
    if sealed.len() > NONCE_LEN + TAG_LEN + MAX_INFO_LEN {
        return Err(BoxError::TooLong(sealed.len()));
    }
    let json = open(recipient, sender, sealed)?;
    Ok(serde_json::from_slice(&json)?)
}

/// Builds the ClientInfo frame: `info` sealed with the client's private key to the server.
pub fn seal_client_info(
    client: &NodePrivate,
    server: &NodePublic,
    info: &ClientInfo,
) -> Result<Frame, BoxError> {
    let json = serde_json::to_vec(info)?;
    Ok(Frame::ClientInfo {
        key: client.public(),
        sealed: seal(client, server, &json)?,
    })
}

/// Opens a ClientInfo's sealed part with the server's private key.
pub fn open_client_info(
    server: &NodePrivate,
    client: &NodePublic,
    sealed: &[u8],
) -> Result<ClientInfo, BoxError> {
    open_json(server, client, sealed)
}

/// Builds the ServerInfo frame: `info` sealed with the server's private key to the client.
pub fn seal_server_info(
    server: &NodePrivate,
    client: &NodePublic,
    info: &ServerInfo,
) -> Result<Frame, BoxError> {
    let json = serde_json::to_vec(info)?;
    Ok(Frame::ServerInfo {
        sealed: seal(server, client, &json)?,
    })
}

/// Opens a ServerInfo's sealed part with the client's private key.
pub fn open_server_info(
    client: &NodePrivate,
    server: &NodePublic,
    sealed: &[u8],
) -> Result<ServerInfo, BoxError> {
    open_json(client, server, sealed)
}
