//! Sign-in through the company's OpenID Connect providers (OpenID Connect Core 1.0).
//!
//! Towards each provider Doorman is a confidential client using the authorization code flow
//! with PKCE, `state` and `nonce`. Discovery and the JWKS are fetched and cached; a `kid` the
//! cached JWKS lacks makes one refetch (key rotation), at most every 30 s. The ID token is fully
//! validated (§3.1.3.7): signature with an algorithm the provider advertises (never `none` or a
//! MAC), `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`. People are keyed by (issuer, subject).

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    clock::SharedClock,
    config::OidcProviderConfig,
    crypto,
    net::{HttpClient, read_body},
};

/// How long discovery and the JWKS are kept before being fetched again.
const METADATA_TTL_MS: i64 = 3_600_000;
/// Unknown `kid`s refetch the JWKS at most this often.
const JWKS_REFETCH_MS: i64 = 30_000;
/// Clock skew tolerated on `exp` and `iat`.
const SKEW_S: i64 = 60;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 256 * 1024;

/// What went wrong with a provider: shown on the error page in general terms, logged in full.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the provider's answer is not usable: {0}")]
    Invalid(String),
    #[error("the provider refused: {0}")]
    Refused(String),
    #[error("the ID token is not valid: {0}")]
    IdToken(String),
}

/// Why a provider-signed JWT was refused: the provider unreachable, or the token itself.
enum Signed {
    Fetch(OidcError),
    Bad(String),
}

/// RFC 8693 token type of an ID-JAG (draft §9.x).
pub const ID_JAG_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// The longest an ID-JAG may claim to live, in seconds.
const ID_JAG_MAX_LIFETIME_S: i64 = 3600;

/// The `typ` of an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3.1).
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";

/// What Doorman takes from a checked ID-JAG.
#[derive(Debug, Clone)]
pub struct IdJag {
    pub jti: String,
    /// The client the IdP issued it to, as Doorman knows that client.
    pub client_id: String,
    /// Seconds.
    pub exp: i64,
    pub scope: Option<String>,
    pub identity: Identity,
}

/// The parts of the provider's discovery document Doorman uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// RFC 9207 §3: every authorization response carries `iss`.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// OpenID Connect Core §5.3: where the claims the ID token leaves out are read.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// A token endpoint answer (OpenID Connect Core §3.1.3.3).
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    /// For the UserInfo endpoint only; never kept.
    pub access_token: Option<SecretString>,
}

/// What Doorman keeps of a validated ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// Seconds, when the provider says when the person authenticated.
    pub auth_time: Option<i64>,
    pub acr: Option<String>,
    pub amr: Vec<String>,
}

struct Cached<T> {
    value: Arc<T>,
    fetched_at: i64,
}

/// One configured provider and its cached metadata.
pub struct Provider {
    pub config: OidcProviderConfig,
    secret: SecretString,
    http: HttpClient,
    clock: SharedClock,
    redirect_uri: String,
    discovery: RwLock<Option<Cached<Discovery>>>,
    jwks: RwLock<Option<Cached<JwkSet>>>,
}

impl Provider {
    pub fn new(
        config: OidcProviderConfig,
        http: HttpClient,
        clock: SharedClock,
        redirect_uri: String,
    ) -> anyhow::Result<Self> {
        let secret = config
            .secret()
            .map_err(|e| anyhow::anyhow!("sign_in.oidc {:?}: {e}", config.name))?;
        Ok(Self {
            config,
            secret: SecretString::from(secret),
            http,
            clock,
            redirect_uri,
            discovery: RwLock::new(None),
            jwks: RwLock::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn display_name(&self) -> &str {
        self.config
            .display_name
            .as_deref()
            .unwrap_or(&self.config.name)
    }

    /// The issuer as configured, without a trailing slash (as it appears in tokens).
    pub fn issuer(&self) -> String {
        self.config.issuer.as_str().trim_end_matches('/').to_owned()
    }

    async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        self.call(Method::GET, url, HeaderMap::new(), Bytes::new())
            .await
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Value, OidcError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| OidcError::Invalid(format!("{url} is not a valid URL")))?;
        let send = self.http.send(method, &uri, headers, body);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .map_err(|_| {
                OidcError::Unreachable(format!("{url} did not answer within {REQUEST_TIMEOUT:?}"))
            })?
            .map_err(|e| OidcError::Unreachable(format!("{url} {e}")))?;
        let status = response.status();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, read_body(response.into_body(), MAX_BODY))
            .await
            .map_err(|_| OidcError::Unreachable(format!("{url} did not finish its answer")))?
            .map_err(|e| OidcError::Invalid(format!("{url} {e}")))?;
        let json: Value = serde_json::from_slice(&body).map_err(|_| {
            OidcError::Invalid(format!("{url} answered HTTP {status} without JSON"))
        })?;
        if !status.is_success() {
            // RFC 6749 §5.2: the error code is safe to show; never the whole body.
            let code = json
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error");
            return Err(OidcError::Refused(format!(
                "{url} answered HTTP {status} ({code})"
            )));
        }
        Ok(json)
    }

    /// The discovery document (cached; OpenID Connect Discovery §4).
    pub async fn discovery(&self) -> Result<Arc<Discovery>, OidcError> {
        let now = self.clock.now_ms();
        if let Some(c) = &*self.discovery.read().expect("discovery lock")
            && now - c.fetched_at < METADATA_TTL_MS
        {
            return Ok(c.value.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        let doc: Discovery = serde_json::from_value(self.get_json(&url).await?)
            .map_err(|e| OidcError::Invalid(format!("discovery document: {e}")))?;
        // Discovery §4.3: the issuer in the document must be the one configured.
        if doc.issuer.trim_end_matches('/') != self.issuer() {
            return Err(OidcError::Invalid(format!(
                "discovery says issuer {:?}, expected {:?}",
                doc.issuer,
                self.issuer()
            )));
        }
        let doc = Arc::new(doc);
        *self.discovery.write().expect("discovery lock") = Some(Cached {
            value: doc.clone(),
            fetched_at: now,
        });
        Ok(doc)
    }

    async fn jwks(&self, refresh: bool) -> Result<Arc<JwkSet>, OidcError> {
        let now = self.clock.now_ms();
        if let Some(c) = &*self.jwks.read().expect("jwks lock") {
            let fresh = now - c.fetched_at < METADATA_TTL_MS;
            let may_refetch = now - c.fetched_at >= JWKS_REFETCH_MS;
            if (fresh && !refresh) || (refresh && !may_refetch) {
                return Ok(c.value.clone());
            }
        }
        let discovery = self.discovery().await?;
        let set: JwkSet = serde_json::from_value(self.get_json(&discovery.jwks_uri).await?)
            .map_err(|e| OidcError::Invalid(format!("JWKS: {e}")))?;
        let set = Arc::new(set);
        *self.jwks.write().expect("jwks lock") = Some(Cached {
            value: set.clone(),
            fetched_at: now,
        });
        Ok(set)
    }

    /// Where to send the browser (OpenID Connect Core §3.1.2.1, RFC 7636 §4.3). `max_age`
    /// and `prompt=login` demand a fresh authentication at the provider (step-up).
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        challenge: &str,
        force_login: bool,
    ) -> Result<String, OidcError> {
        let d = self.discovery().await?;
        let mut url = url::Url::parse(&d.authorization_endpoint)
            .map_err(|_| OidcError::Invalid("authorization_endpoint is not a URL".into()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("scope", &self.config.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("nonce", nonce)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
            // OpenID Connect Core §11: asking for offline_access (a refresh token, which the
            // re-check of deprovisioning needs) requires prompt=consent.
            let offline = self.config.scopes.iter().any(|s| s == "offline_access");
            let mut prompt: Vec<&str> = Vec::new();
            if force_login {
                prompt.push("login");
            }
            if offline {
                prompt.push("consent");
            }
            for (k, v) in &self.config.authorization_params {
                if k == "prompt" {
                    prompt.extend(v.split(' ').filter(|p| !p.is_empty()));
                } else {
                    q.append_pair(k, v);
                }
            }
            prompt.dedup();
            if !prompt.is_empty() {
                q.append_pair("prompt", &prompt.join(" "));
            }
            if force_login {
                q.append_pair("max_age", "0");
            }
        }
        Ok(url.into())
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, OidcError> {
        let json = self.token_call(form).await?;
        serde_json::from_value(json).map_err(|e| OidcError::Invalid(format!("token answer: {e}")))
    }

    /// An ID-JAG for the person whose ID token is `subject`, for the authorization server
    /// `audience` (draft-ietf-oauth-identity-assertion-authz-grant §4.3: RFC 8693 token
    /// exchange at the provider, Doorman authenticating as its client there).
    pub async fn id_jag_for(
        &self,
        subject: &str,
        audience: &str,
        resource: Option<&str>,
        scope: Option<&str>,
    ) -> Result<SecretString, OidcError> {
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("requested_token_type", ID_JAG_TOKEN_TYPE),
            ("subject_token", subject),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("audience", audience),
        ];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        if let Some(sc) = scope.filter(|s| !s.is_empty()) {
            form.push(("scope", sc));
        }
        let answer = self.token_call(&form).await?;
        // RFC 8693 §2.2.1: what was issued is what was asked for.
        if answer.get("issued_token_type").and_then(Value::as_str) != Some(ID_JAG_TOKEN_TYPE) {
            return Err(OidcError::Invalid(
                "the exchange issued something other than an ID-JAG".into(),
            ));
        }
        answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_owned()))
            .ok_or_else(|| OidcError::Invalid("the exchange answer has no access_token".into()))
    }

    /// An access token for the API `audience`, on behalf of the person whose ID token is
    /// `subject` (RFC 8693 §2.1 delegation, Doorman authenticating as its client at the
    /// provider): the token and its lifetime in seconds, when the provider says.
    pub async fn access_token_for(
        &self,
        subject: &str,
        audience: &str,
        scope: Option<&str>,
    ) -> Result<(SecretString, Option<i64>), OidcError> {
        const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("requested_token_type", ACCESS_TOKEN),
            ("subject_token", subject),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("audience", audience),
        ];
        if let Some(sc) = scope.filter(|s| !s.is_empty()) {
            form.push(("scope", sc));
        }
        let answer = self.token_call(&form).await?;
        if answer.get("issued_token_type").and_then(Value::as_str) != Some(ACCESS_TOKEN) {
            return Err(OidcError::Invalid(
                "the exchange issued something other than an access token".into(),
            ));
        }
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OidcError::Invalid("the exchange answer has no access_token".into()))?;
        Ok((
            SecretString::from(token.to_owned()),
            answer.get("expires_in").and_then(Value::as_i64),
        ))
    }

    /// A request to the provider's token endpoint as Doorman's client there; the JSON answer.
    async fn token_call(&self, form: &[(&str, &str)]) -> Result<Value, OidcError> {
        let d = self.discovery().await?;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        // RFC 6749 §2.3.1: client_secret_basic, with both parts form-encoded first.
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = STANDARD.encode(format!(
            "{}:{}",
            enc(&self.config.client_id),
            enc(self.secret.expose_secret())
        ));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}"))
                .map_err(|_| OidcError::Invalid("client credentials are not header-safe".into()))?,
        );
        self.call(Method::POST, &d.token_endpoint, headers, Bytes::from(body))
            .await
    }

    /// Exchanges the code from the callback (OpenID Connect Core §3.1.3.1).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<TokenAnswer, OidcError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Refreshes at the provider (OpenID Connect Core §12): a refusal means the person lost
    /// access there.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenAnswer, OidcError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Validates an ID token (OpenID Connect Core §3.1.3.7) and maps its claims.
    /// `nonce_hash`: the SHA-256 (hex) of the nonce sent, when one was (not on refresh, §12.2).
    pub async fn validate_id_token(
        &self,
        id_token: &str,
        nonce_hash: Option<&str>,
    ) -> Result<Identity, OidcError> {
        let (header, claims) = self
            .provider_signed(id_token, &["iss", "sub", "aud", "exp", "iat"])
            .await
            .map_err(|e| match e {
                Signed::Fetch(e) => e,
                Signed::Bad(why) => OidcError::IdToken(why),
            })?;
        // RFC 8725 §3.11: a token typed as something else (an ID-JAG, an access token) is not
        // an ID token, whatever its claims.
        if header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ID_JAG_TYP) || t.eq_ignore_ascii_case("at+jwt"))
        {
            return Err(OidcError::IdToken("it is not an ID token (typ)".into()));
        }
        self.check_claims(&claims, nonce_hash)?;
        Ok(self.identity(&claims))
    }

    /// Checks an Identity Assertion JWT Authorization Grant (ID-JAG) this provider issued for
    /// Doorman (the MCP enterprise-managed authorization extension;
    /// draft-ietf-oauth-identity-assertion-authz-grant §5): explicitly typed, signed with a key
    /// the provider publishes, `iss` the provider, `aud` Doorman's issuer, unexpired,
    /// `resource` (when present) Doorman's `/mcp`, and carrying `sub`, `jti` and `client_id`.
    /// The caller checks `client_id` against the authenticated client and spends the `jti`.
    pub async fn validate_id_jag(
        &self,
        assertion: &str,
        audience: &str,
        resource: &str,
    ) -> Result<IdJag, OidcError> {
        let bad = |why: &str| OidcError::IdToken(why.to_owned());
        let (header, c) = self
            .provider_signed(assertion, &["iss", "sub", "aud", "exp", "iat", "jti"])
            .await
            .map_err(|e| match e {
                Signed::Fetch(e) => e,
                Signed::Bad(why) => OidcError::IdToken(why),
            })?;
        // §3.1: the `typ` header tells an ID-JAG from an ID token or an access token of the
        // same provider (RFC 8725 §3.11), which must never be accepted in its place.
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ID_JAG_TYP))
        {
            return Err(bad("it is not typed oauth-id-jag+jwt"));
        }
        if c["iss"].as_str().map(|i| i.trim_end_matches('/')) != Some(self.issuer().as_str()) {
            return Err(bad("issued by another provider"));
        }
        // §5.1: `aud` is the authorization server's issuer identifier, here Doorman's.
        let aud_ok = match &c["aud"] {
            Value::String(a) => a.trim_end_matches('/') == audience,
            Value::Array(list) => {
                list.len() == 1
                    && list[0].as_str().map(|a| a.trim_end_matches('/')) == Some(audience)
            }
            _ => false,
        };
        if !aud_ok {
            return Err(bad("meant for another authorization server (aud)"));
        }
        let now = self.clock.now_ms() / 1000;
        let exp = c["exp"]
            .as_i64()
            .ok_or_else(|| bad("exp is not a number"))?;
        if exp + SKEW_S <= now {
            return Err(bad("expired"));
        }
        if c["iat"].as_i64().is_none_or(|iat| iat > now + SKEW_S) {
            return Err(bad("issued in the future"));
        }
        if c.get("nbf")
            .is_some_and(|nbf| nbf.as_i64().is_none_or(|nbf| nbf > now + SKEW_S))
        {
            return Err(bad("not valid yet (nbf)"));
        }
        // A grant meant to be redeemed at once (the draft suggests minutes): one that claims to
        // live longer than an hour is refused, which also bounds how long its `jti` is kept.
        if exp > now + ID_JAG_MAX_LIFETIME_S {
            return Err(bad("it lives longer than an hour"));
        }
        // A key-bound grant (`cnf`, RFC 7800) needs proof of possession Doorman does not take.
        if c.get("cnf").is_some() {
            return Err(bad(
                "it is bound to a key (cnf), which this server does not support",
            ));
        }
        let resource_ok = match c.get("resource") {
            None => true,
            Some(Value::String(r)) => r == resource,
            Some(Value::Array(list)) => list.iter().any(|r| r.as_str() == Some(resource)),
            Some(_) => false,
        };
        if !resource_ok {
            return Err(bad("meant for another resource"));
        }
        let text = |k: &str| c.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let (Some(jti), Some(client_id)) = (text("jti"), text("client_id")) else {
            return Err(bad("jti or client_id is missing"));
        };
        if jti.len() > 256 || client_id.len() > 512 {
            return Err(bad("jti or client_id is too long"));
        }
        let identity = self.identity(&c);
        if identity.subject.is_empty() {
            return Err(bad("the sub claim is missing"));
        }
        Ok(IdJag {
            jti: jti.to_owned(),
            client_id: client_id.to_owned(),
            exp,
            scope: text("scope").map(str::to_owned),
            identity,
        })
    }

    /// A JWT this provider signed: the algorithm one it advertises (asymmetric only), the key
    /// one it publishes (fetched again once for an unknown `kid`), `required` claims present.
    /// Claims other than these are the caller's to check.
    async fn provider_signed(
        &self,
        token: &str,
        required: &[&str],
    ) -> Result<(jsonwebtoken::Header, Value), Signed> {
        let bad = |why: &str| Signed::Bad(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed"))?;
        let discovery = self.discovery().await.map_err(Signed::Fetch)?;
        // §3.1.3.7 step 6-7: only asymmetric algorithms the provider advertises (RS256 by
        // default); `none` and MACs never, since Doorman holds no shared key for signatures.
        let alg_name = serde_json::to_value(header.alg)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let advertised = if discovery.id_token_signing_alg_values_supported.is_empty() {
            vec!["RS256".to_owned()]
        } else {
            discovery.id_token_signing_alg_values_supported.clone()
        };
        let asymmetric = !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        if !asymmetric || !advertised.contains(&alg_name) {
            return Err(bad(&format!(
                "signed with {alg_name}, which the provider does not advertise"
            )));
        }
        let mut set = self.jwks(false).await.map_err(Signed::Fetch)?;
        let find = |set: &JwkSet| -> Option<jsonwebtoken::jwk::Jwk> {
            match &header.kid {
                Some(kid) => set.find(kid).cloned(),
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            }
        };
        let jwk = match find(&set) {
            Some(k) => k,
            None => {
                // Key rotation at the provider: fetch the JWKS once more.
                set = self.jwks(true).await.map_err(Signed::Fetch)?;
                find(&set).ok_or_else(|| bad("signed with a key the provider does not publish"))?
            }
        };
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|_| bad("the provider's key is not usable"))?;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims = required.iter().map(|c| c.to_string()).collect();
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    bad("the signature does not verify")
                }
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c) => {
                    bad(&format!("the {c} claim is missing"))
                }
                _ => bad("malformed"),
            })?
            .claims;
        Ok((header, claims))
    }

    fn check_claims(&self, c: &Value, nonce_hash: Option<&str>) -> Result<(), OidcError> {
        let bad = |why: String| OidcError::IdToken(why);
        let now = self.clock.now_ms() / 1000;
        // Step 2: the issuer exactly.
        if c["iss"].as_str().map(|s| s.trim_end_matches('/')) != Some(self.issuer().as_str()) {
            return Err(bad("issued by another provider".into()));
        }
        // Step 3: our client_id among the audiences; step 4-5: `azp` is us when present, and
        // present when there are several audiences.
        let client_id = self.config.client_id.as_str();
        let audiences: Vec<&str> = match &c["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !audiences.contains(&client_id) {
            return Err(bad("meant for another client (aud)".into()));
        }
        match c.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != client_id => {
                return Err(bad("meant for another client (azp)".into()));
            }
            None if audiences.len() > 1 => return Err(bad("several audiences and no azp".into())),
            _ => {}
        }
        // Step 9-10: not expired, not issued in the future.
        let exp = c["exp"]
            .as_i64()
            .ok_or_else(|| bad("exp is not a number".into()))?;
        if exp + SKEW_S <= now {
            return Err(bad("expired".into()));
        }
        if c["iat"].as_i64().is_some_and(|iat| iat > now + SKEW_S) {
            return Err(bad("issued in the future".into()));
        }
        // Step 11: the nonce sent with this very sign-in, compared as hashes in constant time.
        if let Some(expected) = nonce_hash {
            let got = c
                .get("nonce")
                .and_then(Value::as_str)
                .map(crypto::sha256_hex);
            if !got.is_some_and(|g| crypto::constant_time_eq(g.as_bytes(), expected.as_bytes())) {
                return Err(bad("the nonce does not match this sign-in".into()));
            }
        }
        Ok(())
    }

    fn identity(&self, c: &Value) -> Identity {
        let claims = &self.config.claims;
        let text = |name: &str| c.get(name).and_then(Value::as_str).map(String::from);
        let groups = match c.get(&claims.groups) {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => vec![],
        };
        Identity {
            subject: text(&claims.subject).unwrap_or_default(),
            email: text(&claims.email),
            // A provider that does not say is not vouching for the address.
            email_verified: c
                .get("email_verified")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            name: text(&claims.name),
            groups,
            auth_time: c.get("auth_time").and_then(Value::as_i64),
            acr: text("acr"),
            amr: match c.get("amr") {
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
                _ => vec![],
            },
        }
    }

    /// Completes an ID token's identity from the UserInfo endpoint (OpenID Connect Core
    /// §5.3–5.4) when it lacks the email, name or groups: a provider at its standard defaults
    /// (`conformIdTokenClaims`) returns scope claims only there. §5.3.2: the answer must be about
    /// the same `sub`, or it is refused. Then the email is kept only when the provider verified
    /// it (`email_verified`), or the provider is trusted for email (`trust_email`): an
    /// unverified address must not match `allow_people`, find a person or decide a policy.
    pub async fn complete_identity(
        &self,
        mut who: Identity,
        access_token: Option<&SecretString>,
    ) -> Result<Identity, OidcError> {
        let missing = who.email.is_none() || who.name.is_none() || who.groups.is_empty();
        let endpoint = self.discovery().await?.userinfo_endpoint.clone();
        if let (true, Some(endpoint), Some(token)) = (missing, endpoint, access_token) {
            let mut headers = HeaderMap::new();
            let bearer = format!("Bearer {}", token.expose_secret());
            let mut value = http::HeaderValue::from_str(&bearer)
                .map_err(|_| OidcError::Invalid("the access token is not header-safe".into()))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
            let info = self
                .call(Method::GET, &endpoint, headers, Bytes::new())
                .await?;
            if info.get("sub").and_then(Value::as_str) != Some(who.subject.as_str()) {
                return Err(OidcError::Invalid(
                    "the UserInfo answer is about another subject (OpenID Connect Core §5.3.2)"
                        .into(),
                ));
            }
            let from_info = self.identity(&info);
            if who.email.is_none() {
                who.email = from_info.email;
                who.email_verified = from_info.email_verified;
            }
            if who.name.is_none() {
                who.name = from_info.name;
            }
            if who.groups.is_empty() {
                who.groups = from_info.groups;
            }
        }
        if !(who.email_verified || self.config.trust_email) {
            who.email = None;
        }
        Ok(who)
    }

    /// Whether this person may sign in here: allowed email domains and groups (either list
    /// empty means any). Returns the reason when not.
    pub fn admits(&self, who: &Identity) -> Result<(), String> {
        if who.subject.is_empty() {
            return Err("the provider sent no subject".into());
        }
        let c = &self.config;
        if !c.allowed_email_domains.is_empty() {
            let domain = who
                .email
                .as_deref()
                .filter(|_| who.email_verified)
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase());
            let ok = domain.is_some_and(|d| {
                c.allowed_email_domains
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&d))
            });
            if !ok {
                return Err("your email domain is not allowed to sign in here".into());
            }
        }
        if !c.allowed_groups.is_empty() && !who.groups.iter().any(|g| c.allowed_groups.contains(g))
        {
            return Err("you are not in a group that may sign in here".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "oidc_tests.rs"]
mod tests;
