//! Tests of token and password helpers.

use tether_store::secret::{hash_password, hash_token, new_token, verify_password};

#[test]
fn new_token_is_64_lowercase_hex_chars() {
    let token = new_token();
    assert_eq!(token.len(), 64);
    assert!(
        token.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "unexpected character in {token}"
    );
}

#[test]
fn new_tokens_differ() {
    assert_ne!(new_token(), new_token());
}

#[test]
fn hash_token_is_sha256_of_the_token_text() {
    // FIPS 180-2 test vector for "abc".
    let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(hex::encode(hash_token("abc")), expected);
    assert_ne!(hash_token("abc"), hash_token("abd"));
}

#[test]
fn password_hash_is_argon2id_and_verifies() {
    let phc = hash_password("correct horse").expect("hash");
    assert!(
        phc.starts_with("$argon2id$"),
        "not an argon2id PHC string: {phc}"
    );
    assert!(!phc.contains("correct horse"));
    assert!(verify_password("correct horse", &phc));
    assert!(!verify_password("correct horsE", &phc));
    assert!(!verify_password("", &phc));
}

#[test]
fn same_password_gets_a_fresh_salt_each_time() {
    let a = hash_password("pw").expect("hash");
    let b = hash_password("pw").expect("hash");
    assert_ne!(a, b);
    assert!(verify_password("pw", &a) && verify_password("pw", &b));
}

#[test]
fn verify_password_is_false_on_a_malformed_hash() {
    assert!(!verify_password("pw", ""));
    assert!(!verify_password("pw", "not a phc string"));
    assert!(!verify_password(
        "pw",
        "$argon2id$v=19$m=19456,t=2,p=1$garbage"
    ));
}
