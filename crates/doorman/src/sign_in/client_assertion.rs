//! `private_key_jwt` client authentication: a client identified by a metadata document proves
//! itself with a JWT signed by a key its document publishes.
//!
//! Sources: RFC 7523 §2.2 (the `client_assertion` parameters) and §3 (the claims), RFC 7521
//! §4.2, OpenID Connect Core §9 (`private_key_jwt`: `jti` required) and §10.1.1 (key rotation:
//! an unknown `kid` means fetch the keys again), RFC 7515/7517/7518 for headers and keys, and
//! draft-ietf-oauth-client-id-metadata-document-02 §8.2 (keys come from the document).
//!
//! Time comes from the injected clock; jsonwebtoken only checks the signature.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{
        AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
    },
};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::cimd::ClientMetadataDocument;
use crate::{
    clock::SharedClock,
    net::guarded::{FetchError, GuardedFetcher},
};

/// RFC 7523 §2.2: the only `client_assertion_type` accepted.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The furthest ahead an assertion's `exp` may be: it bounds how long a `jti` is remembered
/// (RFC 7523 §3 item 4 lets a server refuse an `exp` unreasonably far in the future).
const MAX_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// Allowed clock difference for `exp`, `nbf` and `iat` (RFC 7523 §3 items 4–6).
const SKEW_MS: i64 = 60 * 1000;
/// How long fetched keys are kept when the response says nothing about caching.
const JWKS_DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// An unknown `kid` refetches a `jwks_uri` at most this often, so assertions with made-up key
/// ids cannot turn Doorman into a request amplifier.
const REFETCH_INTERVAL_MS: i64 = 30 * 1000;
/// How many `jwks_uri`s are remembered.
const MAX_JWKS_ENTRIES: usize = 10_000;
/// Assertions are small; anything bigger is not one.
const MAX_ASSERTION_BYTES: usize = 16 * 1024;
/// The longest `jti` remembered.
const MAX_JTI_BYTES: usize = 256;
/// How often the replay set drops expired `jti`s.
const PRUNE_INTERVAL_MS: i64 = 60 * 1000;

/// Why an assertion was refused, in words fit for `error_description`; never echoes it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AssertionError {
    #[error("client_assertion_type must be {JWT_BEARER}")]
    WrongType,
    #[error("this client is not registered for private_key_jwt")]
    NotRegistered,
    #[error("the client assertion is not a well-formed signed JWT")]
    Malformed,
    #[error(
        "the client assertion's alg {0} is not allowed: sign it with an asymmetric key (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)"
    )]
    AlgorithmNotAllowed(&'static str),
    #[error(
        "the client assertion's alg is not supported: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
    )]
    UnsupportedAlgorithm,
    #[error("the client assertion has critical header parameters that are not understood")]
    CriticalHeader,
    #[error("the client metadata document has neither jwks nor jwks_uri")]
    NoKeys,
    #[error("the client's jwks_uri could not be fetched: {0}")]
    KeyFetch(Box<FetchError>),
    #[error("the client's jwks_uri does not hold a valid JWK Set")]
    InvalidJwks,
    #[error("no key in the client's JWK Set has the client assertion's kid")]
    UnknownKey,
    #[error("no key in the client's JWK Set fits the client assertion's alg")]
    NoFittingKey,
    #[error("the client assertion has no kid and several of the client's keys fit its alg")]
    AmbiguousKey,
    #[error(
        "the key named by the client assertion's kid does not fit its alg (key type, curve or the key's alg differ)"
    )]
    KeyMismatch,
    #[error("the client's RSA key is shorter than 2048 bits")]
    WeakKey,
    #[error("the client's key is not usable")]
    InvalidKey,
    #[error("the client assertion's signature does not verify with the client's keys")]
    BadSignature,
    #[error("the client assertion's iss and sub must both be the client_id")]
    IssuerSubject,
    #[error("the client assertion's aud must include {expected}")]
    Audience { expected: String },
    #[error("the client assertion has no exp")]
    MissingExp,
    #[error("the client assertion has expired")]
    Expired,
    #[error("the client assertion's exp is more than 10 minutes ahead")]
    TooLong,
    #[error("the client assertion is not valid yet (nbf)")]
    NotYetValid,
    #[error("the client assertion's iat is in the future")]
    IssuedInFuture,
    #[error("the client assertion has no jti")]
    MissingJti,
    #[error("the client assertion's jti is longer than {MAX_JTI_BYTES} bytes")]
    JtiTooLong,
    #[error("the client assertion has already been used (jti seen before)")]
    Replayed,
}

/// The parts of the JOSE header that matter here.
struct AssertionHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// Claims as sent; types are checked by hand so errors can say which rule broke.
#[derive(Deserialize)]
struct Claims {
    iss: Option<Value>,
    sub: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    jti: Option<Value>,
}

struct JwksEntry {
    keys: Arc<JwkSet>,
    expires_at_ms: i64,
    fetched_at_ms: i64,
}

#[derive(Default)]
struct ReplaySet {
    /// (client_id, jti) → until when it would still be accepted.
    seen: HashMap<(String, String), i64>,
    next_prune_ms: i64,
}

/// Verifies `private_key_jwt` client assertions.
pub struct AssertionVerifier {
    fetcher: GuardedFetcher,
    clock: SharedClock,
    jwks: Mutex<HashMap<String, JwksEntry>>,
    used: Mutex<ReplaySet>,
    /// Where used `jti`s are kept when several nodes must agree (`None`: this process only).
    store: Option<crate::store::Store>,
}

impl AssertionVerifier {
    /// `fetcher` fetches `jwks_uri`s; give it room for a JWK Set (e.g. 64 KiB).
    pub fn new(fetcher: GuardedFetcher, clock: SharedClock) -> Self {
        Self {
            fetcher,
            clock,
            jwks: Mutex::default(),
            used: Mutex::default(),
            store: None,
        }
    }

    /// Keeps used `jti`s in the store, so a replay is refused by every node, not just the one
    /// that saw the assertion first.
    pub fn with_store(mut self, store: crate::store::Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Checks a client assertion for the client `doc` describes. `audiences` are the values
    /// `aud` may name (the token endpoint URL and the issuer).
    pub async fn verify(
        &self,
        doc: &ClientMetadataDocument,
        client_assertion_type: &str,
        assertion: &str,
        audiences: &[&str],
    ) -> Result<(), AssertionError> {
        // RFC 7523 §2.2.
        if client_assertion_type != JWT_BEARER {
            return Err(AssertionError::WrongType);
        }
        // OpenID Connect Core §9: the method is the one the client registered.
        if doc.token_endpoint_auth_method != "private_key_jwt" {
            return Err(AssertionError::NotRegistered);
        }
        let header = read_header(assertion)?;
        let key = self.key_for(doc, &header).await?;

        // Only the signature is jsonwebtoken's to check: claims are checked below against the
        // injected clock.
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AssertionError::BadSignature,
                ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => AssertionError::InvalidKey,
                _ => AssertionError::Malformed,
            })?
            .claims;

        let now = self.clock.now_ms();
        let (jti, exp_ms) = check_claims(&claims, &doc.client_id, audiences, now)?;
        self.consume(&doc.client_id, jti, exp_ms, now).await
    }

    /// The key the assertion names, from inline `jwks` or from `jwks_uri`.
    async fn key_for(
        &self,
        doc: &ClientMetadataDocument,
        header: &AssertionHeader,
    ) -> Result<DecodingKey, AssertionError> {
        if let Some(set) = &doc.jwks {
            return select_key(set, header);
        }
        let Some(uri) = &doc.jwks_uri else {
            return Err(AssertionError::NoKeys);
        };
        let set = self.cached_or_fetched(uri).await?;
        match select_key(&set, header) {
            // OpenID Connect Core §10.1.1: a new kid is how a client announces a rotated key,
            // so fetch the set again, at most once per REFETCH_INTERVAL_MS per URI.
            Err(AssertionError::UnknownKey) => match self.refetched(uri).await? {
                Some(set) => select_key(&set, header),
                None => Err(AssertionError::UnknownKey),
            },
            other => other,
        }
    }

    async fn cached_or_fetched(&self, uri: &Url) -> Result<Arc<JwkSet>, AssertionError> {
        let now = self.clock.now_ms();
        {
            let jwks = self.jwks.lock().expect("jwks cache lock");
            if let Some(entry) = jwks.get(uri.as_str())
                && now < entry.expires_at_ms
            {
                return Ok(entry.keys.clone());
            }
        }
        self.fetch(uri).await
    }

    /// A fresh copy of the set, or `None` when it was fetched too recently to fetch again.
    async fn refetched(&self, uri: &Url) -> Result<Option<Arc<JwkSet>>, AssertionError> {
        let now = self.clock.now_ms();
        {
            let jwks = self.jwks.lock().expect("jwks cache lock");
            if jwks
                .get(uri.as_str())
                .is_some_and(|e| now - e.fetched_at_ms < REFETCH_INTERVAL_MS)
            {
                return Ok(None);
            }
        }
        self.fetch(uri).await.map(Some)
    }

    async fn fetch(&self, uri: &Url) -> Result<Arc<JwkSet>, AssertionError> {
        // draft-ietf-oauth-client-id-metadata-document-02 §8.6: URLs inside the document are
        // fetched under the same SSRF rules as the document.
        let fetched = self
            .fetcher
            .get_json(uri)
            .await
            .map_err(|e| AssertionError::KeyFetch(Box::new(e)))?;
        let keys: JwkSet =
            serde_json::from_value(fetched.body).map_err(|_| AssertionError::InvalidJwks)?;
        let keys = Arc::new(keys);
        let now = self.clock.now_ms();
        let ttl = fetched.max_age.unwrap_or(JWKS_DEFAULT_TTL);
        let mut jwks = self.jwks.lock().expect("jwks cache lock");
        if jwks.len() >= MAX_JWKS_ENTRIES && !jwks.contains_key(uri.as_str()) {
            let oldest = jwks
                .iter()
                .min_by_key(|(_, e)| e.fetched_at_ms)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                jwks.remove(&oldest);
            }
        }
        jwks.insert(
            uri.as_str().to_owned(),
            JwksEntry {
                keys: keys.clone(),
                expires_at_ms: now.saturating_add(ttl.as_millis() as i64),
                fetched_at_ms: now,
            },
        );
        Ok(keys)
    }

    /// RFC 7523 §3 item 7: a `jti` is accepted once for as long as its assertion is valid.
    async fn consume(
        &self,
        client_id: &str,
        jti: &str,
        exp_ms: i64,
        now: i64,
    ) -> Result<(), AssertionError> {
        if let Some(store) = &self.store {
            return match store
                .use_assertion_jti(client_id, jti, exp_ms + SKEW_MS, now)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(AssertionError::Replayed),
                // What cannot be checked is refused.
                Err(e) => {
                    tracing::error!(error = %e, "cannot record a client assertion's jti");
                    Err(AssertionError::Replayed)
                }
            };
        }
        let mut used = self.used.lock().expect("replay set lock");
        if now >= used.next_prune_ms {
            used.seen.retain(|_, until| *until > now);
            used.next_prune_ms = now + PRUNE_INTERVAL_MS;
        }
        let key = (client_id.to_owned(), jti.to_owned());
        if used.seen.get(&key).is_some_and(|until| *until > now) {
            return Err(AssertionError::Replayed);
        }
        used.seen.insert(key, exp_ms + SKEW_MS);
        Ok(())
    }
}

/// Reads the JOSE header by hand, so `none` and HMAC are refused by name before any key is
/// looked at (RFC 8725 §3.1: the algorithm must be one the verifier expects).
fn read_header(assertion: &str) -> Result<AssertionHeader, AssertionError> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(AssertionError::Malformed);
    }
    // RFC 7515 §7.1: JWS compact serialisation, three parts (an encrypted JWT has five).
    let parts: Vec<&str> = assertion.split('.').collect();
    let [encoded_header, _, _] = parts.as_slice() else {
        return Err(AssertionError::Malformed);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(encoded_header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(Value::is_object)
        .ok_or(AssertionError::Malformed)?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        None => return Err(AssertionError::Malformed),
        // RFC 7518 §3.6 (unsecured) and §3.2 (HMAC: the "key" would be public).
        Some("none") => return Err(AssertionError::AlgorithmNotAllowed("none")),
        Some("HS256") => return Err(AssertionError::AlgorithmNotAllowed("HS256")),
        Some("HS384") => return Err(AssertionError::AlgorithmNotAllowed("HS384")),
        Some("HS512") => return Err(AssertionError::AlgorithmNotAllowed("HS512")),
        Some("RS256") => Algorithm::RS256,
        Some("RS384") => Algorithm::RS384,
        Some("RS512") => Algorithm::RS512,
        Some("PS256") => Algorithm::PS256,
        Some("PS384") => Algorithm::PS384,
        Some("PS512") => Algorithm::PS512,
        Some("ES256") => Algorithm::ES256,
        Some("ES384") => Algorithm::ES384,
        Some("EdDSA") => Algorithm::EdDSA,
        Some(_) => return Err(AssertionError::UnsupportedAlgorithm),
    };
    // RFC 7515 §4.1.11: a recipient that does not understand a critical parameter must refuse.
    if header.get("crit").is_some() {
        return Err(AssertionError::CriticalHeader);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AssertionError::Malformed),
    };
    Ok(AssertionHeader { alg, kid })
}

/// Picks the verification key: by `kid` when the header has one, else the single key that fits
/// (OpenID Connect Core §10.1: with several keys, `kid` is required).
fn select_key(set: &JwkSet, header: &AssertionHeader) -> Result<DecodingKey, AssertionError> {
    let jwk = match &header.kid {
        Some(kid) => {
            let mut named = set
                .keys
                .iter()
                .filter(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
                .peekable();
            if named.peek().is_none() {
                return Err(AssertionError::UnknownKey);
            }
            named
                .find(|k| key_fits(k, header.alg))
                .ok_or(AssertionError::KeyMismatch)?
        }
        None => {
            let mut fitting = set.keys.iter().filter(|k| key_fits(k, header.alg));
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => only,
                (None, _) => return Err(AssertionError::NoFittingKey),
                (Some(_), Some(_)) => return Err(AssertionError::AmbiguousKey),
            }
        }
    };
    // RFC 7518 §3.3: RSA keys of 2048 bits or more.
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        let modulus = URL_SAFE_NO_PAD
            .decode(&rsa.n)
            .map_err(|_| AssertionError::InvalidKey)?;
        let significant = modulus.iter().skip_while(|b| **b == 0).count();
        if significant < 256 {
            return Err(AssertionError::WeakKey);
        }
    }
    DecodingKey::from_jwk(jwk).map_err(|_| AssertionError::InvalidKey)
}

/// Whether a JWK may verify a signature made with `alg`.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    // RFC 7517 §4.2 and §4.3: a key meant for something else is not a verification key.
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return false;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return false;
    }
    // RFC 7517 §4.4: a key that names its algorithm is used with that algorithm only.
    if let Some(key_alg) = jwk.common.key_algorithm
        && !same_algorithm(key_alg, alg)
    {
        return false;
    }
    // RFC 7518 §3.1: the key type (and curve) belongs to the algorithm; HMAC (`oct`) keys never
    // fit, since every algorithm accepted here is asymmetric.
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

fn same_algorithm(key_alg: KeyAlgorithm, alg: Algorithm) -> bool {
    matches!(
        (key_alg, alg),
        (KeyAlgorithm::RS256, Algorithm::RS256)
            | (KeyAlgorithm::RS384, Algorithm::RS384)
            | (KeyAlgorithm::RS512, Algorithm::RS512)
            | (KeyAlgorithm::PS256, Algorithm::PS256)
            | (KeyAlgorithm::PS384, Algorithm::PS384)
            | (KeyAlgorithm::PS512, Algorithm::PS512)
            | (KeyAlgorithm::ES256, Algorithm::ES256)
            | (KeyAlgorithm::ES384, Algorithm::ES384)
            | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
    )
}

/// RFC 7519 §2 NumericDate (seconds, possibly fractional) in milliseconds.
fn numeric_date_ms(value: &Value) -> Option<i64> {
    let seconds = value.as_f64()?;
    (seconds.is_finite() && seconds.abs() < 1e12).then_some((seconds * 1000.0) as i64)
}

/// RFC 7523 §3 claim rules; returns the `jti` and `exp` to remember.
fn check_claims<'c>(
    claims: &'c Claims,
    client_id: &str,
    audiences: &[&str],
    now: i64,
) -> Result<(&'c str, i64), AssertionError> {
    // §3 items 1–2 and §2.2: iss and sub are both the client_id.
    let is_client = |v: &Option<Value>| v.as_ref().and_then(Value::as_str) == Some(client_id);
    if !is_client(&claims.iss) || !is_client(&claims.sub) {
        return Err(AssertionError::IssuerSubject);
    }
    // §3 item 3: aud, a string or an array, identifies this server.
    let names_us = |v: &Value| v.as_str().is_some_and(|a| audiences.contains(&a));
    let aud_ok = match &claims.aud {
        Some(Value::Array(values)) => values.iter().any(names_us),
        Some(v) => names_us(v),
        None => false,
    };
    if !aud_ok {
        return Err(AssertionError::Audience {
            expected: audiences.first().copied().unwrap_or_default().to_owned(),
        });
    }
    // §3 item 4: exp required and not passed; and not unreasonably far ahead.
    let exp_ms = claims
        .exp
        .as_ref()
        .and_then(numeric_date_ms)
        .ok_or(AssertionError::MissingExp)?;
    if exp_ms <= now - SKEW_MS {
        return Err(AssertionError::Expired);
    }
    if exp_ms > now + MAX_LIFETIME_MS + SKEW_MS {
        return Err(AssertionError::TooLong);
    }
    // §3 item 5: not before nbf.
    if let Some(nbf) = &claims.nbf {
        let nbf_ms = numeric_date_ms(nbf).ok_or(AssertionError::Malformed)?;
        if nbf_ms > now + SKEW_MS {
            return Err(AssertionError::NotYetValid);
        }
    }
    // §3 item 6: iat, when present, is not in the future.
    if let Some(iat) = &claims.iat {
        let iat_ms = numeric_date_ms(iat).ok_or(AssertionError::Malformed)?;
        if iat_ms > now + SKEW_MS {
            return Err(AssertionError::IssuedInFuture);
        }
    }
    // §3 item 7 and OpenID Connect Core §9: jti is required here.
    let jti = match claims.jti.as_ref().and_then(Value::as_str) {
        Some(jti) if !jti.is_empty() => jti,
        _ => return Err(AssertionError::MissingJti),
    };
    if jti.len() > MAX_JTI_BYTES {
        return Err(AssertionError::JtiTooLong);
    }
    Ok((jti, exp_ms))
}

#[cfg(test)]
#[path = "client_assertion_tests.rs"]
mod tests;
