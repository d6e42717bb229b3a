//! Tokens and passwords: how they are made and what of them is stored.
//!
//! Session and agent tokens are 256 random bits shown once to their holder; the store
//! keeps only their SHA-256, which is enough because the input is already uniformly
//! random (a slow hash would add nothing). Passwords are low-entropy, so they get
//! argon2id with a random salt.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::StoreError;

/// A fresh bearer token: 256 bits from the OS RNG as 64 lowercase hex characters.
///
/// Panics only if the operating system cannot supply randomness at all, in which case
/// no secret could be made safely anyway.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The SHA-256 of a token: the only form in which tokens are stored or looked up.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Hashes a password with argon2id (default parameters, random salt) into a PHC string.
///
/// This is deliberately slow (tens of milliseconds); async callers should run it on a
/// blocking thread.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| StoreError::PasswordHash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`; `false` for a malformed hash.
///
/// The parameters are read from `phc`, so hashes made with older settings still verify.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            tracing::debug!(error = %e, "stored password hash is malformed");
            false
        }
    }
}
