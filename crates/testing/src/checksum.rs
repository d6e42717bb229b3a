//! SHA-256 checksums, hex-encoded, for comparing what was sent with what arrived.

use std::path::Path;

use sha2::Digest as _;

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// SHA-256 of the file at `path`, lower-case hex; panics if it cannot be read.
pub fn sha256_file(path: &Path) -> String {
    let data =
        std::fs::read(path).unwrap_or_else(|e| panic!("could not read {}: {e}", path.display()));
    sha256_hex(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
