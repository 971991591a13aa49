//! Access tokens: signed JWTs in the RFC 9068 profile, checked on every `/mcp` request.
//!
//! Verification costs one ECDSA check the first time a token is seen; after that a token is
//! found in a bounded cache until it expires: by a keyed hash of the token (SipHash with a key
//! random to this process, a few hundred instructions where SHA-256 cost tens of thousands),
//! then compared whole, in constant time, with the token the entry was verified for.
//! Revocation is checked on every request, cache or not, against in-memory sets of revoked
//! token ids and grants: filled at once by this process and, for revocations made elsewhere
//! (another node, the CLI), by [`Revocations::poll`] reading the store every few seconds.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, RwLock},
};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::SigningKeys;
use crate::{clock::SharedClock, crypto, store::Store};

/// The claims of a Doorman access token (RFC 9068 §2.2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The person's Doorman id.
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    /// When the person signed in (seconds), for step-up (RFC 9470).
    pub auth_time: i64,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The grant this token was issued under.
    pub sid: String,
    /// How the person authenticated (RFC 8176 values), when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The authentication context class the identity provider reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

/// Tokens Doorman signs for upstreams with `auth = "exchange"`: RFC 8693 on-behalf-of in the
/// RFC 9068 format, so the upstream checks them as any JWT access token (Doorman's JWKS at
/// `/oauth/jwks.json`, `iss` Doorman, `aud` the upstream alone, `typ` at+jwt). `sub` is the
/// person's Doorman id, `client_id` and `act.sub` the client acting for them (RFC 8693 §4.1);
/// a service client acts as itself (no `act`). Signed once per person, client and upstream,
/// then served from memory until a minute before it expires.
pub struct UpstreamTokens {
    keys: Arc<SigningKeys>,
    clock: SharedClock,
    issuer: String,
    cache: RwLock<HashMap<UpstreamTokenKey, (http::HeaderValue, i64)>>,
    /// For upstreams whose tokens come from a provider's exchange (`exchange_provider`).
    auth: std::sync::OnceLock<std::sync::Weak<super::AuthServer>>,
}

/// (audience, scope, person, client).
type UpstreamTokenKey = (String, String, String, String);

/// How long an exchanged token lives, and how close to its end it is no longer handed out.
const UPSTREAM_TOKEN_LIFETIME_S: i64 = 300;
const UPSTREAM_TOKEN_MARGIN_MS: i64 = 60_000;

/// Who a token for an upstream is about.
pub struct OnBehalfOf<'a> {
    pub user_id: &'a str,
    pub client_id: &'a str,
    pub email: Option<&'a str>,
    /// A service client: no person, so no actor distinct from the subject.
    pub service: bool,
}

impl UpstreamTokens {
    pub fn new(keys: Arc<SigningKeys>, clock: SharedClock, issuer: String) -> Self {
        Self {
            keys,
            clock,
            issuer,
            cache: RwLock::default(),
            auth: std::sync::OnceLock::new(),
        }
    }

    /// What asks providers for tokens (`exchange_provider` upstreams).
    pub fn with_auth(self, auth: &Arc<super::AuthServer>) -> Self {
        let _ = self.auth.set(Arc::downgrade(auth));
        self
    }

    fn cached(&self, key: &UpstreamTokenKey, now: i64) -> Option<http::HeaderValue> {
        match self.cache.read().expect("upstream tokens lock").get(key) {
            Some((h, until)) if *until > now => Some(h.clone()),
            _ => None,
        }
    }

    fn keep(&self, key: UpstreamTokenKey, value: &http::HeaderValue, until: i64, now: i64) {
        let mut cache = self.cache.write().expect("upstream tokens lock");
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, (value.clone(), until));
    }

    /// `Authorization: Bearer …` for `audience` from `provider`'s token exchange (RFC 8693
    /// §2.1), on behalf of a person who signed in through it; kept until a minute before the
    /// provider says it ends (five minutes when it does not say).
    pub async fn header_from_provider(
        &self,
        provider: &str,
        audience: &str,
        scope: &str,
        who: &OnBehalfOf<'_>,
    ) -> Result<http::HeaderValue, String> {
        if who.service {
            return Err("a service client has no sign-in at the provider to exchange".into());
        }
        let now = self.clock.now_ms();
        let key = (
            format!("{provider}|{audience}"),
            scope.to_owned(),
            who.user_id.to_owned(),
            who.client_id.to_owned(),
        );
        if let Some(h) = self.cached(&key, now) {
            return Ok(h);
        }
        let auth = self
            .auth
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or("the authorization server is not running")?;
        let (p, subject) = super::id_jag::subject_id_token(&auth, who.user_id, provider).await?;
        let (token, expires_in) = p
            .access_token_for(&subject, audience, Some(scope))
            .await
            .map_err(|e| format!("{} gave no token: {e}", p.display_name()))?;
        use secrecy::ExposeSecret;
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| "the provider's token is not header-safe".to_owned())?;
        value.set_sensitive(true);
        let lifetime_ms = expires_in.unwrap_or(UPSTREAM_TOKEN_LIFETIME_S) * 1000;
        self.keep(
            key,
            &value,
            now + lifetime_ms - UPSTREAM_TOKEN_MARGIN_MS,
            now,
        );
        Ok(value)
    }

    /// `Authorization: Bearer …` for `audience`, on behalf of `who`.
    pub fn header(
        &self,
        audience: &str,
        scope: &str,
        who: &OnBehalfOf<'_>,
    ) -> anyhow::Result<http::HeaderValue> {
        let now = self.clock.now_ms();
        let key = (
            audience.to_owned(),
            scope.to_owned(),
            who.user_id.to_owned(),
            who.client_id.to_owned(),
        );
        if let Some(h) = self.cached(&key, now) {
            return Ok(h);
        }
        let iat = now / 1000;
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "sub": who.user_id,
            "aud": audience,
            "client_id": who.client_id,
            "scope": scope,
            "iat": iat,
            "exp": iat + UPSTREAM_TOKEN_LIFETIME_S,
            "jti": crypto::random_token(16),
        });
        if !who.service {
            claims["act"] = serde_json::json!({ "sub": who.client_id });
        }
        if let Some(email) = who.email {
            claims["email"] = email.into();
        }
        let (kid, signer) = self.keys.signer();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, &signer)?;
        let mut value = http::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        self.keep(
            key,
            &value,
            now + UPSTREAM_TOKEN_LIFETIME_S * 1000 - UPSTREAM_TOKEN_MARGIN_MS,
            now,
        );
        Ok(value)
    }
}

/// Why a bearer token was refused (RFC 6750 §3.1 `invalid_token` for all; the reason is logged).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the access token is malformed")]
    Malformed,
    #[error("the access token was not signed by this server")]
    Signature,
    /// Signed with a key id this process does not know (yet: another node may have rotated).
    #[error("the access token was not signed by this server")]
    UnknownKey,
    #[error("the access token is not of type at+jwt")]
    Type,
    #[error("the access token was issued by another server")]
    Issuer,
    #[error("the access token is meant for another resource")]
    Audience,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token has been revoked")]
    Revoked,
}

impl TokenError {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Signature | Self::UnknownKey => "signature",
            Self::Type => "type",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// Issues and checks access tokens.
pub struct AccessTokens {
    keys: Arc<SigningKeys>,
    clock: SharedClock,
    issuer: String,
    audience: String,
    lifetime_ms: i64,
    cache: RwLock<HashMap<u64, Verified>>,
    /// The key of the cache's token hash: random per process, so nobody outside can aim
    /// tokens at one entry.
    cache_key: RandomState,
    pub revocations: Revocations,
}

/// A token whose signature, issuer and audience checked out, and its claims.
struct Verified {
    token: Box<str>,
    claims: Arc<AccessClaims>,
}

/// Bound on cached verified tokens; the cache is cleared of expired entries when full.
const CACHE_LIMIT: usize = 100_000;

impl AccessTokens {
    pub fn new(
        keys: Arc<SigningKeys>,
        clock: SharedClock,
        issuer: String,
        audience: String,
        lifetime_ms: i64,
        store: Store,
    ) -> Self {
        Self {
            keys,
            clock,
            issuer,
            audience,
            lifetime_ms,
            cache: RwLock::new(HashMap::new()),
            cache_key: RandomState::new(),
            revocations: Revocations::new(store),
        }
    }

    pub fn lifetime_ms(&self) -> i64 {
        self.lifetime_ms
    }

    /// Signs a new access token for a grant.
    pub fn issue(&self, grant: &crate::store::GrantRow) -> anyhow::Result<(String, AccessClaims)> {
        let (user_id, client_id, scope, auth_time_ms, grant_id) = (
            grant.user_id.as_str(),
            grant.client_id.as_str(),
            grant.scope.as_str(),
            grant.auth_time,
            grant.id.as_str(),
        );
        let now = self.clock.now_ms();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: user_id.to_owned(),
            aud: self.audience.clone(),
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            auth_time: auth_time_ms / 1000,
            iat: now / 1000,
            // A token never outlives the grant it was issued under (the sign-in's lifetime).
            exp: (now + self.lifetime_ms).min(grant.expires_at) / 1000,
            jti: crypto::random_token(16),
            sid: grant_id.to_owned(),
            amr: serde_json::from_str(&grant.amr).unwrap_or_default(),
            acr: grant.acr.clone(),
        };
        let (kid, key) = self.keys.signer();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        // RFC 9068 §2.1: the `typ` header is `at+jwt`.
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, &key)?;
        Ok((token, claims))
    }

    /// Checks a bearer token: signature, type, issuer, audience, expiry, revocation.
    pub fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        let now_s = self.clock.now_ms() / 1000;
        let key = self.cache_key.hash_one(token);
        // A hash is not a proof: the entry counts only for the very token it was verified for
        // (compared in constant time, so a near-miss forgery learns nothing from the timing).
        let cached = self
            .cache
            .read()
            .expect("token cache lock")
            .get(&key)
            .filter(|v| crypto::constant_time_eq(v.token.as_bytes(), token.as_bytes()))
            .map(|v| v.claims.clone());
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.verify_signed(token)?);
                let mut cache = self.cache.write().expect("token cache lock");
                if cache.len() >= CACHE_LIMIT {
                    cache.retain(|_, v| v.claims.exp > now_s);
                    if cache.len() >= CACHE_LIMIT {
                        cache.clear();
                    }
                }
                // Two tokens with one hash (2^-64) take turns in the entry: each still verified.
                cache.insert(
                    key,
                    Verified {
                        token: token.into(),
                        claims: c.clone(),
                    },
                );
                c
            }
        };
        // RFC 9068 §4: the token must not be expired (no leeway: we issued it with our clock).
        if claims.exp <= now_s {
            return Err(TokenError::Expired);
        }
        if self.revocations.is_revoked(&claims.jti, &claims.sid) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Checks signature, type, issuer and audience only (revocation of an expired token is moot
    /// but harmless).
    pub fn verify_signature_only(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.verify_signed(token)
    }

    fn verify_signed(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // RFC 9068 §4: reject tokens whose `typ` is not `at+jwt`; RFC 8725 §3.1: only the
        // algorithm we sign with (no `none`, no HMAC with a public key).
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Signature);
        }
        if !header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        }) {
            return Err(TokenError::Type);
        }
        let kid = header.kid.ok_or(TokenError::Signature)?;
        let key = self.keys.verifier(&kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        // Expiry is checked against Doorman's clock by the caller; issuer and audience below.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .into_iter()
            .map(String::from)
            .collect();
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                _ => TokenError::Malformed,
            },
        )?;
        let claims = data.claims;
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err(TokenError::Issuer);
        }
        // RFC 8707 §2 and MCP authorization "Token Audience Binding": the token must have been
        // issued for this resource and no other.
        let aud_ok = match &claims["aud"] {
            serde_json::Value::String(a) => a == &self.audience,
            serde_json::Value::Array(list) => {
                list.len() == 1 && list[0].as_str() == Some(self.audience.as_str())
            }
            _ => false,
        };
        if !aud_ok {
            return Err(TokenError::Audience);
        }
        serde_json::from_value(claims).map_err(|_| TokenError::Malformed)
    }
}

/// Revoked token ids and grants, as far as they can still matter (until their tokens expire).
pub struct Revocations {
    store: Store,
    state: RwLock<RevokedSets>,
}

/// Id → when it was revoked; pruned once no token it could cover is still unexpired.
#[derive(Default)]
struct RevokedSets {
    jtis: HashMap<String, i64>,
    grants: HashMap<String, i64>,
}

impl Revocations {
    fn new(store: Store) -> Self {
        Self {
            store,
            state: RwLock::new(RevokedSets::default()),
        }
    }

    pub fn is_revoked(&self, jti: &str, grant: &str) -> bool {
        let s = self.state.read().expect("revocations lock");
        (!s.jtis.is_empty() && s.jtis.contains_key(jti))
            || (!s.grants.is_empty() && s.grants.contains_key(grant))
    }

    pub fn revoke_grant_locally(&self, grant: &str, now_ms: i64) {
        self.state
            .write()
            .expect("revocations lock")
            .grants
            .insert(grant.to_owned(), now_ms);
    }

    pub fn revoke_token_locally(&self, jti: &str, now_ms: i64) {
        self.state
            .write()
            .expect("revocations lock")
            .jtis
            .insert(jti.to_owned(), now_ms);
    }

    /// Reads the revocations of the last `horizon_ms` (an access token's lifetime: anything
    /// older cannot matter), by any process. The whole window each time, not "since the last
    /// poll": a writer whose clock is behind ours still gets its revocations seen.
    pub async fn poll(&self, now_ms: i64, horizon_ms: i64) -> anyhow::Result<()> {
        let since = now_ms - horizon_ms - 60_000;
        let grants = self.store.grants_revoked_since(since).await?;
        let jtis = self
            .store
            .access_tokens_revoked_since(since, now_ms)
            .await?;
        let mut s = self.state.write().expect("revocations lock");
        s.grants.extend(grants);
        s.jtis.extend(jtis);
        // A token lives at most `horizon_ms`, so one revoked longer ago than that has expired.
        let oldest = now_ms - horizon_ms;
        s.grants.retain(|_, at| *at >= oldest);
        s.jtis.retain(|_, at| *at >= oldest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
    use serde_json::json;

    use super::*;
    use crate::{
        clock::{Clock, ManualClock},
        crypto::KeyRing,
        store::GrantRow,
    };

    const ISSUER: &str = "https://doorman.example";
    const AUDIENCE: &str = "https://doorman.example/mcp";

    struct Setup {
        tokens: AccessTokens,
        keys: Arc<SigningKeys>,
        clock: ManualClock,
        store: Store,
        _dir: tempfile::TempDir,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_in(dir.path()).await.unwrap();
        let ring = Arc::new(KeyRing::parse(&format!("k1 {}\n", crypto::random_token(32))).unwrap());
        let clock = ManualClock::new(1_700_000_000_000);
        let keys = Arc::new(
            SigningKeys::load(store.clone(), ring, clock.now_ms())
                .await
                .unwrap(),
        );
        let tokens = with(&keys, &clock, &store, ISSUER, AUDIENCE);
        Setup {
            tokens,
            keys,
            clock,
            store,
            _dir: dir,
        }
    }

    fn with(
        keys: &Arc<SigningKeys>,
        clock: &ManualClock,
        store: &Store,
        iss: &str,
        aud: &str,
    ) -> AccessTokens {
        AccessTokens::new(
            keys.clone(),
            Arc::new(clock.clone()),
            iss.into(),
            aud.into(),
            3_600_000,
            store.clone(),
        )
    }

    fn grant() -> GrantRow {
        GrantRow {
            id: "grant-1".into(),
            user_id: "alice".into(),
            client_id: "client-1".into(),
            scope: "mcp".into(),
            resource: AUDIENCE.into(),
            auth_time: 1_699_999_000_000,
            amr: r#"["pwd","otp"]"#.into(),
            acr: None,
            created_at: 0,
            expires_at: i64::MAX,
            last_used_at: 0,
            revoked_at: None,
            revoked_reason: None,
        }
    }

    /// A JWT with the given header and claims, signed (or not) with `signature`.
    fn raw(header: serde_json::Value, claims: &serde_json::Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    }

    #[tokio::test]
    async fn an_issued_token_verifies_until_it_expires_or_is_revoked() {
        let s = setup().await;
        let (token, claims) = s.tokens.issue(&grant()).unwrap();
        let got = s.tokens.verify(&token).unwrap();
        assert_eq!(*got, claims);
        assert_eq!((got.sub.as_str(), got.sid.as_str()), ("alice", "grant-1"));
        assert_eq!(got.auth_time, 1_699_999_000, "seconds, for RFC 9470");
        assert_eq!(got.amr, ["pwd", "otp"]);
        assert_eq!(got.exp - got.iat, 3600);

        // RFC 9068 §4: expired at `exp` exactly (our own clock, no leeway), cached or not.
        s.clock.advance(std::time::Duration::from_secs(3599));
        assert!(s.tokens.verify(&token).is_ok());
        s.clock.advance(std::time::Duration::from_secs(1));
        assert_eq!(s.tokens.verify(&token).unwrap_err(), TokenError::Expired);

        // Revocation holds on every request, cache or not: by token, and by grant.
        let (t2, c2) = s.tokens.issue(&grant()).unwrap();
        assert!(s.tokens.verify(&t2).is_ok());
        s.tokens
            .revocations
            .revoke_token_locally(&c2.jti, s.clock.now_ms());
        assert_eq!(s.tokens.verify(&t2).unwrap_err(), TokenError::Revoked);
        let (t3, _) = s.tokens.issue(&grant()).unwrap();
        s.tokens
            .revocations
            .revoke_grant_locally("grant-1", s.clock.now_ms());
        assert_eq!(s.tokens.verify(&t3).unwrap_err(), TokenError::Revoked);
        let _ = &s.store;

        // Issued near the end of its grant, a token ends with the grant.
        let mut ending = grant();
        ending.id = "grant-2".into();
        ending.expires_at = s.clock.now_ms() + 600_000;
        let (short, c) = s.tokens.issue(&ending).unwrap();
        assert_eq!(c.exp - c.iat, 600);
        assert!(s.tokens.verify(&short).is_ok());
        s.clock.advance(std::time::Duration::from_secs(600));
        assert_eq!(s.tokens.verify(&short).unwrap_err(), TokenError::Expired);
    }

    /// The cache finds an entry by a hash of the token, but only the very token verified for
    /// that entry is served from it: a forgery landing on the entry (made here by planting a
    /// verified token's claims under the forgery's hash) is checked in full and refused.
    #[tokio::test]
    async fn a_cache_entry_serves_only_the_token_it_was_verified_for() {
        let s = setup().await;
        let (token, _) = s.tokens.issue(&grant()).unwrap();
        let verified = s.tokens.verify(&token).unwrap();
        let (h, p, _) = {
            let parts: Vec<&str> = token.split('.').collect();
            (parts[0], parts[1], parts[2])
        };
        let forged = format!("{h}.{p}.{}", B64.encode([7u8; 64]));
        let forged_key = s.tokens.cache_key.hash_one(forged.as_str());
        s.tokens.cache.write().unwrap().insert(
            forged_key,
            Verified {
                token: token.as_str().into(),
                claims: verified.clone(),
            },
        );
        assert_eq!(s.tokens.verify(&forged).unwrap_err(), TokenError::Signature);
        // The real token still verifies, from its own entry.
        assert_eq!(s.tokens.verify(&token).unwrap(), verified);
    }

    #[tokio::test]
    async fn forged_foreign_and_malformed_tokens_are_refused() {
        let s = setup().await;
        let (token, claims) = s.tokens.issue(&grant()).unwrap();
        let claims = serde_json::to_value(&claims).unwrap();
        let kid = s.keys.signer().0;
        let [h, p, sig]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();

        // Issued by us for another resource, or by another issuer with the same keys.
        let other_aud = with(
            &s.keys,
            &s.clock,
            &s.store,
            ISSUER,
            "https://other.example/mcp",
        );
        assert_eq!(other_aud.verify(&token).unwrap_err(), TokenError::Audience);
        let other_iss = with(
            &s.keys,
            &s.clock,
            &s.store,
            "https://other.example",
            AUDIENCE,
        );
        assert_eq!(other_iss.verify(&token).unwrap_err(), TokenError::Issuer);

        let mut admin = claims.clone();
        admin["sub"] = json!("root");
        let cases = [
            // The claims changed under a valid signature.
            (
                format!("{h}.{}.{sig}", B64.encode(admin.to_string())),
                TokenError::Signature,
            ),
            // RFC 8725 §3.1: `none`, and HMAC keyed with anything, are not our algorithm.
            // (`none` is not even an algorithm the JWT library reads.)
            (
                raw(
                    json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
                    &claims,
                    "",
                ),
                TokenError::Malformed,
            ),
            (
                raw(
                    json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}),
                    &claims,
                    sig,
                ),
                TokenError::Signature,
            ),
            // RFC 9068 §4: an ID token or any other JWT is not an access token.
            (
                raw(
                    json!({"alg": "ES256", "typ": "JWT", "kid": kid}),
                    &claims,
                    sig,
                ),
                TokenError::Type,
            ),
            (
                raw(json!({"alg": "ES256", "kid": kid}), &claims, sig),
                TokenError::Type,
            ),
            // A key this server never had.
            (
                raw(
                    json!({"alg": "ES256", "typ": "at+jwt", "kid": "nope"}),
                    &claims,
                    sig,
                ),
                TokenError::UnknownKey,
            ),
            (
                raw(json!({"alg": "ES256", "typ": "at+jwt"}), &claims, sig),
                TokenError::Signature,
            ),
            ("not a token".to_owned(), TokenError::Malformed),
            (format!("{h}.{p}"), TokenError::Malformed),
        ];
        for (forged, want) in cases {
            assert_eq!(s.tokens.verify(&forged).unwrap_err(), want, "{forged}");
        }
        // Two audiences, ours among them, is not "for this resource and no other".
        let other = with(&s.keys, &s.clock, &s.store, ISSUER, AUDIENCE);
        let (k, key) = s.keys.signer();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(k);
        header.typ = Some("at+jwt".into());
        let mut two = claims.clone();
        two["aud"] = json!([AUDIENCE, "https://other.example/mcp"]);
        let t = jsonwebtoken::encode(&header, &two, &key).unwrap();
        assert_eq!(other.verify(&t).unwrap_err(), TokenError::Audience);
    }

    #[tokio::test]
    async fn an_upstream_token_names_the_person_and_client_for_that_upstream_only() {
        let t = setup().await;
        let minter = UpstreamTokens::new(t.keys.clone(), Arc::new(t.clock.clone()), ISSUER.into());
        let wiki = "https://wiki.internal/mcp";
        let alice = OnBehalfOf {
            user_id: "alice",
            client_id: "client-1",
            email: Some("alice@corp.example"),
            service: false,
        };
        let header = minter.header(wiki, "wiki:read", &alice).unwrap();
        let token = header
            .to_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[wiki]);
        v.set_issuer(&[ISSUER]);
        // The test clock is in the past: the lifetime is checked below instead.
        v.validate_exp = false;
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(&token, &t.keys.verifier(&kid).unwrap(), &v)
                .unwrap()
                .claims;
        assert_eq!(
            (
                &claims["sub"],
                &claims["client_id"],
                &claims["act"],
                &claims["scope"],
                &claims["email"]
            ),
            (
                &json!("alice"),
                &json!("client-1"),
                &json!({"sub": "client-1"}),
                &json!("wiki:read"),
                &json!("alice@corp.example")
            )
        );
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            UPSTREAM_TOKEN_LIFETIME_S
        );
        // Doorman itself never accepts it: it is for the upstream (aud).
        assert_eq!(t.tokens.verify(&token).unwrap_err(), TokenError::Audience);
        // The same while fresh; a new one a minute before it ends; another per upstream.
        assert_eq!(minter.header(wiki, "wiki:read", &alice).unwrap(), header);
        assert_ne!(
            minter
                .header("https://crm.internal/mcp", "mcp", &alice)
                .unwrap(),
            header
        );
        t.clock.advance(std::time::Duration::from_secs(
            UPSTREAM_TOKEN_LIFETIME_S as u64 - 59,
        ));
        assert_ne!(minter.header(wiki, "wiki:read", &alice).unwrap(), header);
        // A service client acts as itself: no actor.
        let bot = OnBehalfOf {
            user_id: "principal-bot",
            client_id: "bot",
            email: None,
            service: true,
        };
        let bot_token = minter.header(wiki, "mcp", &bot).unwrap();
        let payload = bot_token
            .to_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        let bot_claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        assert!(bot_claims.get("act").is_none() && bot_claims.get("email").is_none());
    }
}
