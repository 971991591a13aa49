//! The authorization server's signing keys: ES256, kept in the store with the private half
//! sealed by the key ring. The newest unretired key signs; retired keys stay in the JWKS (and
//! keep verifying) until every token they signed has expired, so `doorman keys rotate` never
//! signs anyone out.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use anyhow::Context;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Value, json};

use crate::{
    crypto::{self, KeyRing},
    store::{SigningKeyRow, Store},
};

/// The key that signs, and every key that still verifies.
pub struct SigningKeys {
    store: Store,
    ring: Arc<KeyRing>,
    state: RwLock<KeySet>,
    /// When an unknown `kid` last made us re-read the store (at most every few seconds, so
    /// forged key ids cannot turn into a query per request).
    last_forced_reload: std::sync::atomic::AtomicI64,
}

struct KeySet {
    active_kid: String,
    encoding: Arc<EncodingKey>,
    decoding: HashMap<String, Arc<DecodingKey>>,
    /// The public JWKs published at `/oauth/jwks.json`, with their retirement time.
    published: Vec<(Value, Option<i64>)>,
}

fn aad(kid: &str) -> String {
    format!("signing-key:{kid}")
}

impl SigningKeys {
    /// Loads the keys from the store, creating the first one on a new installation.
    pub async fn load(store: Store, ring: Arc<KeyRing>, now_ms: i64) -> anyhow::Result<Self> {
        if store.signing_keys().await?.is_empty() {
            add_key(&store, &ring, now_ms).await?;
        }
        let state = Self::read(&store, &ring).await?;
        Ok(Self {
            store,
            ring,
            state: RwLock::new(state),
            last_forced_reload: std::sync::atomic::AtomicI64::new(0),
        })
    }

    async fn read(store: &Store, ring: &KeyRing) -> anyhow::Result<KeySet> {
        let rows = store.signing_keys().await?;
        let mut decoding = HashMap::new();
        let mut published = Vec::new();
        let mut active = None;
        for row in &rows {
            let jwk: Value = serde_json::from_str(&row.public_jwk)
                .with_context(|| format!("signing key {} has a malformed public JWK", row.kid))?;
            let x = jwk["x"].as_str().unwrap_or_default();
            let y = jwk["y"].as_str().unwrap_or_default();
            decoding.insert(
                row.kid.clone(),
                Arc::new(DecodingKey::from_ec_components(x, y).with_context(|| {
                    format!("signing key {} has a malformed public JWK", row.kid)
                })?),
            );
            published.push((jwk, row.retired_at));
            if row.retired_at.is_none() {
                active = Some(row);
            }
        }
        let active = active.context("no active signing key (run `doorman keys rotate`)")?;
        let pkcs8 = ring
            .open(&active.private_key_sealed, &aad(&active.kid))
            .with_context(|| {
                format!(
                    "cannot open signing key {} with this key ring (was the keyring file replaced?)",
                    active.kid
                )
            })?;
        Ok(KeySet {
            active_kid: active.kid.clone(),
            encoding: Arc::new(EncodingKey::from_ec_der(&pkcs8)),
            decoding,
            published,
        })
    }

    /// Re-reads the keys (another process rotated them).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let fresh = Self::read(&self.store, &self.ring).await?;
        *self.state.write().expect("signing keys lock") = fresh;
        Ok(())
    }

    /// Re-reads the keys after an unknown `kid`, unless that happened less than 5 s ago;
    /// returns whether it did.
    pub async fn reload_for_unknown_kid(&self, now_ms: i64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last_forced_reload.load(Ordering::Relaxed);
        if now_ms - last < 5_000
            || self
                .last_forced_reload
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.reload().await.is_ok()
    }

    /// The key that signs now.
    pub fn signer(&self) -> (String, Arc<EncodingKey>) {
        let s = self.state.read().expect("signing keys lock");
        (s.active_kid.clone(), s.encoding.clone())
    }

    /// The verification key for `kid`, if it is one of ours.
    pub fn verifier(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.state
            .read()
            .expect("signing keys lock")
            .decoding
            .get(kid)
            .cloned()
    }

    /// The JWKS (RFC 7517 §5): keys that are active or retired less than `keep_ms` ago.
    pub fn jwks(&self, now_ms: i64, keep_ms: i64) -> Value {
        let s = self.state.read().expect("signing keys lock");
        let keys: Vec<&Value> = s
            .published
            .iter()
            .filter(|(_, retired)| retired.is_none_or(|at| at + keep_ms > now_ms))
            .map(|(jwk, _)| jwk)
            .collect();
        json!({ "keys": keys })
    }
}

/// Adds a new signing key and retires the others (`doorman keys rotate`); returns its kid.
pub async fn add_key(store: &Store, ring: &KeyRing, now_ms: i64) -> anyhow::Result<String> {
    let key = crypto::generate_es256_key();
    let kid = crypto::random_token(12);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "x": key.x, "y": key.y,
        "kid": kid, "use": "sig", "alg": "ES256",
    });
    store
        .insert_signing_key(&SigningKeyRow {
            kid: kid.clone(),
            alg: "ES256".into(),
            private_key_sealed: ring.seal(&key.pkcs8, &aad(&kid)),
            public_jwk: jwk.to_string(),
            created_at: now_ms,
            retired_at: None,
        })
        .await?;
    store.retire_signing_keys_except(&kid, now_ms).await?;
    Ok(kid)
}
