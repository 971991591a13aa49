//! The only place that draws randomness, hashes secrets, seals data or makes signing keys
//! (aws-lc-rs underneath).

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, bail};
use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
    rand::{SecureRandom, SystemRandom},
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// Compares two secrets in time independent of where they differ (only their lengths, which
/// are not secret, may end it early).
///
/// Eight bytes at a time: `subtle` compares each element behind an optimization barrier, so a
/// comparison of 64-bit words costs an eighth of one of bytes (a bearer token of 700 bytes is
/// compared on every request).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if a.len() != b.len() {
        return false;
    }
    let ((a_words, a_rest), (b_words, b_rest)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    let mut equal = a_rest.ct_eq(b_rest);
    for (x, y) in a_words.iter().zip(b_words) {
        equal &= u64::from_ne_bytes(*x).ct_eq(&u64::from_ne_bytes(*y));
    }
    bool::from(equal)
}

/// A key ring for sealing data at rest: AES-256-GCM keys with ids; the newest key seals,
/// every key still opens what it sealed, so keys rotate without downtime. A running server
/// picks up keys added to its file ([`KeyRing::reload`]).
pub struct KeyRing {
    inner: std::sync::RwLock<Keys>,
}

struct Keys {
    keys: BTreeMap<String, LessSafeKey>,
    active: String,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = self.inner.read().expect("key ring lock");
        f.debug_struct("KeyRing")
            .field("key_ids", &k.keys.keys().collect::<Vec<_>>())
            .field("active", &k.active)
            .finish()
    }
}

/// The environment variable that holds the whole key ring (its file's text) instead of a file.
pub const KEY_RING_ENV: &str = "DOORMAN_KEY_RING";

/// Where a key ring comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRingSource {
    /// `DOORMAN_KEY_RING`: rotate by changing it and restarting.
    Env,
    /// A file (default `{data_dir}/keyring`), re-read by running servers.
    File(std::path::PathBuf),
}

impl KeyRing {
    /// The key ring of a deployment: `DOORMAN_KEY_RING` when set, else the file at `path`
    /// (created with one fresh key, mode 0600, when missing: `true` is returned then).
    pub fn load(path: &Path) -> anyhow::Result<(Self, KeyRingSource, bool)> {
        if let Ok(text) = std::env::var(KEY_RING_ENV) {
            let text = Zeroizing::new(text);
            let ring = Self::parse(&text).context(KEY_RING_ENV)?;
            return Ok((ring, KeyRingSource::Env, false));
        }
        let (ring, created) = Self::load_or_create(path)?;
        Ok((ring, KeyRingSource::File(path.to_owned()), created))
    }

    /// Re-reads the file; true when the keys changed. Keys are only ever added: a file that
    /// lost a key this ring had is refused (its ciphertexts would no longer open).
    pub fn reload(&self, path: &Path) -> anyhow::Result<bool> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read key ring {}", path.display()))?,
        );
        let fresh = Self::parse(&text)?.inner.into_inner().expect("fresh lock");
        let mut current = self.inner.write().expect("key ring lock");
        if let Some(lost) = current.keys.keys().find(|id| !fresh.keys.contains_key(*id)) {
            bail!(
                "key ring {} no longer has key {lost:?}; keeping the keys loaded",
                path.display()
            );
        }
        let changed = fresh.active != current.active || fresh.keys.len() != current.keys.len();
        *current = fresh;
        Ok(changed)
    }

    /// Appends a fresh key to the key ring file; it seals from now on. Returns its id.
    pub fn add_key_to_file(path: &Path) -> anyhow::Result<String> {
        use std::io::Write;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read key ring {}", path.display()))?,
        );
        Self::parse(&text)?;
        let id = random_token(6);
        let line = Zeroizing::new(format!("{id} {}\n", random_token(32)));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write key ring {}", path.display()))?;
        if !text.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        f.write_all(line.as_bytes())?;
        f.sync_all()?;
        Ok(id)
    }

    /// A ring with one fresh random key (tests and in-process harnesses).
    pub fn random() -> Self {
        Self::parse(&format!("k1 {}\n", random_token(32))).expect("a generated ring parses")
    }

    /// Parses `id base64url-key` lines (the last line is the active key); `#` starts a comment.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut keys = BTreeMap::new();
        let mut active = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((id, key)) = line.split_once(' ') else {
                bail!("key ring line {}: expected `id key`", n + 1);
            };
            let bytes = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(key.trim())
                    .with_context(|| format!("key ring line {}: key is not base64url", n + 1))?,
            );
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| anyhow::anyhow!("key ring line {}: a key is 32 bytes", n + 1))?;
            keys.insert(id.to_owned(), LessSafeKey::new(unbound));
            active = Some(id.to_owned());
        }
        let Some(active) = active else {
            bail!("the key ring has no key");
        };
        Ok(Self {
            inner: std::sync::RwLock::new(Keys { keys, active }),
        })
    }

    /// Reads the key ring file, creating it (mode 0600, one fresh key) when it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        if path.exists() {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read key ring {}", path.display()))?,
            );
            return Ok((Self::parse(&text)?, false));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = Zeroizing::new(format!(
            "# Doorman key ring: `id key` lines, the last one seals. Keep this file secret.\n{} {}\n",
            random_token(6),
            random_token(32)
        ));
        write_private_file(path, text.as_bytes())?;
        Ok((Self::parse(&text)?, true))
    }

    /// The id of the key that seals.
    pub fn active_id(&self) -> String {
        self.inner.read().expect("key ring lock").active.clone()
    }

    /// Whether `sealed` was sealed under the active key (else it is due for re-sealing).
    pub fn is_current(&self, sealed: &str) -> bool {
        let k = self.inner.read().expect("key ring lock");
        sealed.split_once('.').is_some_and(|(id, _)| id == k.active)
    }

    /// Seals `plaintext`; `aad` binds the ciphertext to its owner (it must be given again to open).
    /// Output: `{key id}.{base64url(nonce ‖ ciphertext ‖ tag)}`.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> String {
        let k = self.inner.read().expect("key ring lock");
        let key = &k.keys[&k.active];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random source must be available");
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut buf,
        )
        .expect("AES-GCM sealing cannot fail for inputs under 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        buf.iter_mut().for_each(|b| *b = 0);
        format!("{}.{}", k.active, URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens what [`KeyRing::seal`] produced with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let (id, data) = sealed.split_once('.').context("not a sealed value")?;
        let k = self.inner.read().expect("key ring lock");
        let key = k
            .keys
            .get(id)
            .with_context(|| format!("sealed with key {id:?}, which is not in the key ring"))?;
        let mut data = URL_SAFE_NO_PAD
            .decode(data)
            .context("sealed value is not base64url")?;
        if data.len() < NONCE_LEN {
            bail!("sealed value is too short");
        }
        let mut ct = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).context("bad nonce")?;
        let plain_len = key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut ct)
            .map_err(|_| anyhow::anyhow!("sealed value does not open (wrong key or owner)"))?
            .len();
        ct.truncate(plain_len);
        Ok(Zeroizing::new(ct))
    }
}

/// Writes a file readable by its owner only.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// A new ECDSA P-256 signing key: its PKCS#8 document and its public JWK coordinates.
pub struct NewSigningKey {
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// Base64url of the affine coordinates (RFC 7518 §6.2.1).
    pub x: String,
    pub y: String,
}

/// Generates an ES256 signing key.
pub fn generate_es256_key() -> NewSigningKey {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("P-256 key generation must succeed");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
        .expect("a freshly generated key parses");
    // Uncompressed point: 0x04 ‖ x ‖ y (SEC 1 §2.3.3).
    let point = pair.public_key().as_ref();
    NewSigningKey {
        pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
        x: URL_SAFE_NO_PAD.encode(&point[1..33]),
        y: URL_SAFE_NO_PAD.encode(&point[33..65]),
    }
}

/// A W3C trace id: 16 random bytes as 32 lowercase hex digits (W3C Trace Context §3.2.2.3).
///
/// Trace and span ids name a request in logs and audit records; they grant nothing and are no
/// secret, so they come from a fast per-thread generator (seeded from the operating system)
/// rather than the CSPRNG every token, code and key in Doorman comes from.
pub fn trace_id() -> String {
    // `hex` writes what `format!("{:032x}")` would, without the formatter (every request).
    hex::encode(fastrand::u128(1..).to_be_bytes())
}

/// A W3C span id: 8 random bytes as 16 lowercase hex digits, not all zeros (§3.2.2.4).
pub fn span_id() -> String {
    hex::encode(fastrand::u64(1..).to_be_bytes())
}

/// A fresh random token: `bytes` bytes from the system CSPRNG, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random source must be available");
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256, base64url without padding (PKCE S256, RFC 7636 §4.2).
/// The claims of a JWT, read WITHOUT checking anything: only to choose what checks it (which
/// client or provider it claims to come from) or to note what it says of itself (its `exp`)
/// once something else has checked it.
pub fn unverified_jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

pub fn sha256_b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha256(bytes))
}

/// SHA-256 of a secret, hex-encoded: what the store keeps instead of the secret itself.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_and_digests_are_lowercase_hex_of_their_width() {
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        for _ in 0..100 {
            let (t, s) = (super::trace_id(), super::span_id());
            assert!(t.len() == 32 && hex(&t) && t != "0".repeat(32), "{t}");
            assert!(s.len() == 16 && hex(&s) && s != "0".repeat(16), "{s}");
        }
        assert_eq!(
            super::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_tells_equal_from_different_anywhere() {
        use super::constant_time_eq;
        let a: Vec<u8> = (0..=255u8).cycle().take(701).collect();
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(constant_time_eq(b"", b""));
        // A difference in any byte: in a word, in the tail past the last whole word.
        for at in [0, 7, 8, 350, 695, 696, 700] {
            let mut b = a.clone();
            b[at] ^= 1;
            assert!(!constant_time_eq(&a, &b), "difference at {at}");
        }
        assert!(!constant_time_eq(&a, &a[..700]), "a prefix is not equal");
        assert!(!constant_time_eq(b"abc", b"abd"));
    }

    use super::*;
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::parse(&format!("k1 {}\n", random_token(32))).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever is sealed opens to itself with the same owner, and to nothing with any
        /// other owner.
        #[test]
        fn sealing_round_trips_and_binds_the_owner(
            plain in proptest::collection::vec(any::<u8>(), 0..2048),
            aad in ".{0,64}",
            other in ".{0,64}",
        ) {
            let ring = ring();
            let sealed = ring.seal(&plain, &aad);
            prop_assert_eq!(&ring.open(&sealed, &aad).unwrap()[..], &plain[..]);
            prop_assert!(ring.is_current(&sealed));
            if other != aad {
                prop_assert!(ring.open(&sealed, &other).is_err());
            }
            // A fresh nonce each time: the same secret never seals to the same text.
            prop_assert_ne!(ring.seal(&plain, &aad), sealed);
        }

        /// AES-GCM's tag: changing any bit of a sealed value makes it not open.
        #[test]
        fn a_sealed_value_changed_anywhere_does_not_open(
            plain in proptest::collection::vec(any::<u8>(), 0..256),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let ring = ring();
            let sealed = ring.seal(&plain, "owner");
            let (id, data) = sealed.split_once('.').unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(data).unwrap();
            let i = at.index(raw.len());
            raw[i] ^= 1 << bit;
            let tampered = format!("{id}.{}", URL_SAFE_NO_PAD.encode(&raw));
            prop_assert!(ring.open(&tampered, "owner").is_err());
        }

        /// Text that was never sealed does not open, and opening it does not panic.
        #[test]
        fn arbitrary_text_does_not_open(text in "\\PC{0,200}") {
            let _ = ring().open(&text, "owner").map(|_| panic!("{text:?} opened"));
        }
    }

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
    fn sealed_values_open_only_with_their_owner() {
        let ring = KeyRing::parse(&format!(
            "k1 {}\nk2 {}\n",
            random_token(32),
            random_token(32)
        ))
        .unwrap();
        assert_eq!(ring.active_id(), "k2");
        let sealed = ring.seal(b"refresh-token", "connection:1|user:a");
        assert!(sealed.starts_with("k2."));
        assert!(!sealed.contains("refresh-token"));
        assert_eq!(
            &ring.open(&sealed, "connection:1|user:a").unwrap()[..],
            b"refresh-token"
        );
        assert!(ring.open(&sealed, "connection:1|user:b").is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            ring.open(
                std::str::from_utf8(&tampered).unwrap(),
                "connection:1|user:a"
            )
            .is_err()
        );
    }

    #[test]
    fn old_keys_still_open_after_rotation() {
        let k1 = format!("k1 {}\n", random_token(32));
        let old = KeyRing::parse(&k1).unwrap();
        let sealed = old.seal(b"x", "aad");
        let rotated = KeyRing::parse(&format!("{k1}k2 {}\n", random_token(32))).unwrap();
        assert_eq!(&rotated.open(&sealed, "aad").unwrap()[..], b"x");
        assert!(rotated.seal(b"x", "aad").starts_with("k2."));
    }

    #[test]
    fn hashes_are_stable_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
