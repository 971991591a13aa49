//! The only place that draws randomness or hashes secrets (aws-lc-rs underneath).

use aws_lc_rs::{digest, rand::SecureRandom, rand::SystemRandom};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// A fresh random token: `bytes` bytes from the system CSPRNG, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random source must be available");
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of a secret, hex-encoded: what the store keeps instead of the secret itself.
pub fn sha256_hex(secret: &str) -> String {
    let d = digest::digest(&digest::SHA256, secret.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = random_token(32);
        let b = random_token(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn hashes_are_stable_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
