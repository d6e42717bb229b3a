//! Tokens and passwords: how they are made and what of them is stored.
//!
//! Session and agent tokens are 256 random bits shown once to their holder; the store
//! keeps only their SHA-256, which is enough because the input is already uniformly
//! random (a slow hash would add nothing). Passwords are low-entropy, so they get
//! argon2id with a random salt.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// Reusable argon2 working memory (19 MiB at the default parameters). A thread that
/// hashes many passwords keeps one and allocates it once: a fresh allocation per hash
/// left several of them behind in each allocator arena.
#[derive(Default)]
pub struct HashMemory(Vec<Block>);

impl std::fmt::Debug for HashMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashMemory({} blocks)", self.0.len())
    }
}

impl HashMemory {
    /// The first `n` blocks, grown to that if needed.
    fn blocks(&mut self, n: usize) -> &mut [Block] {
        if self.0.len() < n {
            self.0.resize(n, Block::default());
        }
        &mut self.0[..n]
    }
}

/// Hashes a password with argon2id (default parameters, random salt) into a PHC string.
///
/// This is deliberately slow (tens of milliseconds); async callers should run it on a
/// blocking thread.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    hash_password_with(password, &mut HashMemory::default())
}

/// [`hash_password`] in `memory`.
pub fn hash_password_with(password: &str, memory: &mut HashMemory) -> Result<String, StoreError> {
    let failed = |e: &dyn std::fmt::Display| StoreError::PasswordHash(e.to_string());
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| failed(&e))?;
    let params = Params::default();
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let (algorithm, version) = (Algorithm::Argon2id, Version::V0x13);
    let hash = Output::init_with(len, |out| {
        compute(
            password,
            algorithm,
            version,
            params.clone(),
            salt_bytes,
            out,
            memory,
        )
    })
    .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`; `false` for a malformed hash.
///
/// The parameters are read from `phc`, so hashes made with older settings still verify.
pub fn verify_password(password: &str, phc: &str) -> bool {
    verify_password_with(password, phc, &mut HashMemory::default())
}

/// [`verify_password`] in `memory`.
pub fn verify_password_with(password: &str, phc: &str, memory: &mut HashMemory) -> bool {
    let checked = (|| {
        let parsed = PasswordHash::new(phc)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(argon2::password_hash::Error::PhcStringField);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_buf)?;
        let computed = Output::init_with(expected.len(), |out| {
            compute(
                password, algorithm, version, params, salt_bytes, out, memory,
            )
        })?;
        // Output's equality is constant-time.
        Ok(computed == expected)
    })();
    checked.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "stored password hash is malformed");
        false
    })
}

fn compute(
    password: &str,
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: &[u8],
    out: &mut [u8],
    memory: &mut HashMemory,
) -> Result<(), argon2::password_hash::Error> {
    let blocks = memory.blocks(params.block_count());
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, blocks)
        .map_err(argon2::password_hash::Error::from)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_format_both_ways() {
        let theirs = Argon2::default()
            .hash_password(b"pw one", &SaltString::generate(&mut rand::rngs::OsRng))
            .expect("hash")
            .to_string();
        let mut memory = HashMemory::default();
        assert!(verify_password_with("pw one", &theirs, &mut memory));
        assert!(!verify_password_with("pw two", &theirs, &mut memory));
        let ours = hash_password_with("pw one", &mut memory).expect("hash");
        assert_eq!(
            ours.split('$').nth(3),
            theirs.split('$').nth(3),
            "parameters"
        );
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"pw one", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"pw two", &parsed)
                .is_err()
        );
    }

    #[test]
    fn memory_is_allocated_once_and_reused() {
        let mut memory = HashMemory::default();
        let phc = hash_password_with("pw", &mut memory).expect("hash");
        let (len, at) = (memory.0.len(), memory.0.as_ptr());
        assert_eq!(len, Params::default().block_count());
        assert!(verify_password_with("pw", &phc, &mut memory));
        assert_eq!((memory.0.len(), memory.0.as_ptr()), (len, at));
        // Older, cheaper parameters verify too, in the same memory.
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 3, 1, None).expect("params"),
        )
        .hash_password(b"pw", &SaltString::generate(&mut rand::rngs::OsRng))
        .expect("hash")
        .to_string();
        assert!(verify_password_with("pw", &old, &mut memory));
        assert_eq!(memory.0.as_ptr(), at);
    }
}
