//! Doorman as an OAuth client of one resource: discovery of its endpoints, the code exchange
//! (RFC 6749 §4.1.3, RFC 7636 §4.5), refresh (§6), revocation (RFC 7009) and learning which
//! account was connected. Provider quirks come from the resource's [`Quirks`] as data.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use crate::config::presets::{RequestBody, TokenAuth};
use crate::config::resolved::{Endpoints, Identity, ResolvedResource};
use crate::{
    clock::SharedClock,
    net::{HttpClient, read_body},
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 256 * 1024;
/// Discovered metadata is fetched again after this long.
const METADATA_TTL_MS: i64 = 3_600_000;

/// Why a call to the resource failed. Messages name the endpoint and the OAuth error code,
/// never a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{0}")]
    Unreachable(String),
    /// The resource answered with an OAuth error (RFC 6749 §5.2).
    #[error("{what} refused: {code}")]
    Refused { what: &'static str, code: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotConfigured(String),
}

impl ResourceError {
    /// RFC 7009 §2.2.1: the resource does not revoke this kind of token (JWT access tokens at
    /// many servers); retrying cannot help.
    pub fn is_unsupported_token_type(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "unsupported_token_type")
    }

    /// The grant is gone at the resource: the person must authorize again.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "invalid_grant")
    }
}

/// Tokens from a token response. Plaintext only in zeroized buffers.
pub struct TokenSet {
    pub access_token: Zeroizing<String>,
    pub refresh_token: Option<Zeroizing<String>>,
    /// Seconds, as the resource said (`expires_in`).
    pub expires_in: Option<i64>,
    /// The scopes granted, when the resource says (RFC 6749 §5.1).
    pub scope: Option<String>,
    /// The account's identity, when the resource's identity lives in the token response.
    pub identity: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// See [`ResourceClient::status`].
#[derive(Debug, Clone)]
pub struct ResourceStatus {
    pub issuer: Option<String>,
    pub metadata_read_at: Option<i64>,
    pub from_upstream: bool,
}

/// One configured resource, ready to talk to.
pub struct ResourceClient {
    pub resource: ResolvedResource,
    http: HttpClient,
    clock: SharedClock,
    secret: Option<SecretString>,
    /// `binding = "shared"`: the operator's credential.
    pub shared_token: Option<SecretString>,
    redirect_uri: String,
    discovered: RwLock<Option<(Endpoints, i64)>>,
    /// RFC 8707 `resource`, sent in token requests (resources discovered from upstreams that
    /// do MCP authorization: their tokens must be bound to them).
    resource_indicator: Option<String>,
    /// For resources an upstream told Doorman about: their metadata URLs came from outside
    /// the config, so they are fetched through the SSRF guard (public addresses only, size and
    /// time limits).
    guarded: Option<Arc<crate::net::guarded::GuardedFetcher>>,
}

impl ResourceClient {
    pub fn new(
        resource: ResolvedResource,
        http: HttpClient,
        clock: SharedClock,
        redirect_uri: String,
    ) -> anyhow::Result<Self> {
        let name = resource.name.clone();
        let secret = match resource
            .oauth
            .as_ref()
            .and_then(|o| o.client_secret.as_ref())
        {
            Some(s) => Some(SecretString::from(s.resolve().map_err(|e| {
                anyhow::anyhow!("resources {name:?}: client secret: {e}")
            })?)),
            None => None,
        };
        let shared_token = match &resource.shared_token {
            Some(s) => Some(SecretString::from(s.resolve().map_err(|e| {
                anyhow::anyhow!("resources {name:?}: shared token: {e}")
            })?)),
            None => None,
        };
        Ok(Self {
            resource,
            http,
            clock,
            secret,
            shared_token,
            redirect_uri,
            discovered: RwLock::new(None),
            resource_indicator: None,
            guarded: None,
        })
    }

    /// A resource learned from an upstream's protected resource metadata: a public client (or
    /// one with the secret the authorization server issued at registration), tokens bound to
    /// `indicator` (RFC 8707).
    pub fn discovered(
        resource: ResolvedResource,
        http: HttpClient,
        clock: SharedClock,
        redirect_uri: String,
        secret: Option<SecretString>,
        indicator: String,
        guarded: Arc<crate::net::guarded::GuardedFetcher>,
    ) -> Self {
        Self {
            resource,
            http,
            clock,
            secret,
            shared_token: None,
            redirect_uri,
            discovered: RwLock::new(None),
            resource_indicator: Some(indicator),
            guarded: Some(guarded),
        }
    }

    /// GETs a JSON document through the SSRF guard.
    async fn guarded_json(
        g: &crate::net::guarded::GuardedFetcher,
        url: &Url,
    ) -> Result<Value, ResourceError> {
        use crate::net::guarded::FetchError;
        g.get_json(url).await.map(|f| f.body).map_err(|e| match e {
            FetchError::Status { .. }
            | FetchError::NotJson { .. }
            | FetchError::InvalidJson { .. }
            | FetchError::TooLarge { .. } => ResourceError::Invalid(e.to_string()),
            _ => ResourceError::Unreachable(e.to_string()),
        })
    }

    /// The authorization server metadata of `issuer` (RFC 8414 §3, then OpenID Connect
    /// Discovery §4), checked to name that issuer.
    pub async fn metadata_of(&self, issuer: &Url) -> Result<Value, ResourceError> {
        self.discover(issuer).await
    }

    /// GETs a JSON document (protected resource metadata).
    pub async fn fetch_json(&self, url: &Url) -> Result<Value, ResourceError> {
        if let Some(g) = &self.guarded {
            return Self::guarded_json(g, url).await;
        }
        self.call(
            Method::GET,
            url,
            "metadata",
            self.provider_headers(),
            Bytes::new(),
        )
        .await
    }

    /// POSTs a JSON document (RFC 7591 registration); answers 201 with JSON.
    pub async fn post_json(&self, url: &Url, body: &Value) -> Result<Value, ResourceError> {
        let mut headers = self.provider_headers();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.call(
            Method::POST,
            url,
            "registration endpoint",
            headers,
            Bytes::from(body.to_string()),
        )
        .await
    }

    pub fn name(&self) -> &str {
        &self.resource.name
    }

    /// What the administrators' page says about the resource's authorization server: where
    /// its metadata is read from, when this node last read it, and whether an upstream pointed
    /// Doorman to it (MCP authorization discovery) rather than the config.
    pub fn status(&self) -> ResourceStatus {
        ResourceStatus {
            issuer: self
                .resource
                .oauth
                .as_ref()
                .and_then(|o| o.issuer.as_ref().map(|u| u.to_string())),
            metadata_read_at: self
                .discovered
                .read()
                .expect("discovery lock")
                .as_ref()
                .map(|(_, at)| *at),
            from_upstream: self.resource_indicator.is_some(),
        }
    }

    /// The redirect URI this resource's flows are sent with.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The endpoints: configured ones, the rest from the issuer's metadata (RFC 8414 §3, then
    /// OpenID Connect Discovery §4), cached for an hour.
    pub async fn endpoints(&self) -> Result<Endpoints, ResourceError> {
        let oauth = self.resource.oauth.as_ref().ok_or_else(|| {
            ResourceError::NotConfigured(format!(
                "resource {:?} has no OAuth client (a shared credential only)",
                self.name()
            ))
        })?;
        let configured = oauth.endpoints.clone();
        let Some(issuer) = &oauth.issuer else {
            return Ok(configured);
        };
        let now = self.clock.now_ms();
        if let Some((e, at)) = &*self.discovered.read().expect("discovery lock")
            && now - at < METADATA_TTL_MS
        {
            return Ok(e.clone());
        }
        let doc = self.discover(issuer).await?;
        let url = |key: &str| -> Result<Option<Url>, ResourceError> {
            match doc.get(key).and_then(Value::as_str) {
                None => Ok(None),
                Some(s) => Url::parse(s).map(Some).map_err(|_| {
                    ResourceError::Invalid(format!("metadata of {issuer}: {key} is not a URL"))
                }),
            }
        };
        let merged = Endpoints {
            issuer: doc.get("issuer").and_then(Value::as_str).map(String::from),
            iss_required: doc
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                == Some(true),
            authorization: configured
                .authorization
                .clone()
                .or(url("authorization_endpoint")?),
            token: configured.token.clone().or(url("token_endpoint")?),
            revocation: configured
                .revocation
                .clone()
                .or(url("revocation_endpoint")?),
            userinfo: configured.userinfo.clone().or(url("userinfo_endpoint")?),
        };
        if merged.authorization.is_none() || merged.token.is_none() {
            return Err(ResourceError::Invalid(format!(
                "metadata of {issuer} names no authorization or token endpoint"
            )));
        }
        *self.discovered.write().expect("discovery lock") = Some((merged.clone(), now));
        Ok(merged)
    }

    async fn discover(&self, issuer: &Url) -> Result<Value, ResourceError> {
        let base = issuer.as_str().trim_end_matches('/');
        let path = issuer.path().trim_end_matches('/');
        let origin = issuer.origin().ascii_serialization();
        // RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
        let candidates = [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{base}/.well-known/openid-configuration"),
        ];
        let mut last = None;
        for url in candidates {
            match self.get_json(&url).await {
                Ok(doc) => {
                    // RFC 8414 §3.3: the issuer in the document must be the one configured.
                    let said = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
                    if said.trim_end_matches('/') != base {
                        return Err(ResourceError::Invalid(format!(
                            "metadata at {url} names issuer {said:?}, expected {base:?}"
                        )));
                    }
                    return Ok(doc);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("two candidates were tried"))
    }

    /// Where to send the person (RFC 6749 §4.1.1), with the discovered endpoint.
    pub async fn authorization_url(
        &self,
        state: &str,
        challenge: Option<&str>,
        scopes: &[String],
    ) -> Result<Url, ResourceError> {
        let endpoints = self.endpoints().await?;
        let mut resource = self.resource.clone();
        if let Some(o) = resource.oauth.as_mut() {
            o.endpoints = endpoints;
        }
        crate::config::resolved::authorization_url(
            &resource,
            &self.redirect_uri,
            state,
            challenge,
            scopes,
        )
        .ok_or_else(|| ResourceError::NotConfigured("no authorization endpoint".into()))
    }

    /// Whether PKCE is used towards this resource.
    pub fn pkce(&self) -> bool {
        self.resource.oauth.as_ref().is_some_and(|o| o.pkce)
    }

    /// RFC 6749 §4.1.3: the code from the callback, for tokens.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: Option<&str>,
    ) -> Result<TokenSet, ResourceError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        if let Some(r) = &self.resource_indicator {
            form.push(("resource", r));
        }
        self.token_grant(&form).await
    }

    /// A token request at the resource's token endpoint, as Doorman's client there.
    async fn token_grant(&self, form: &[(&str, &str)]) -> Result<TokenSet, ResourceError> {
        let token = self
            .endpoints()
            .await?
            .token
            .ok_or_else(|| ResourceError::NotConfigured("no token endpoint".into()))?;
        let answer = self.client_request(&token, "token endpoint", form).await?;
        self.token_set(answer)
    }

    /// RFC 7523 §2.1: tokens for an ID-JAG of the company's IdP (enterprise-managed
    /// authorization), asking for the resource's scopes.
    pub async fn redeem_id_jag(
        &self,
        id_jag: &str,
        resource: Option<&str>,
    ) -> Result<TokenSet, ResourceError> {
        let scope = self
            .resource
            .scopes
            .join(self.resource.quirks.scope_separator);
        let mut form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", id_jag),
        ];
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        if let Some(r) = resource.or(self.resource_indicator.as_deref()) {
            form.push(("resource", r));
        }
        self.token_grant(&form).await
    }

    /// RFC 6749 §6: new tokens for a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, ResourceError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(r) = &self.resource_indicator {
            form.push(("resource", r));
        }
        self.token_grant(&form).await
    }

    /// RFC 7009 §2.1: revokes a token. `Ok(false)` when the resource has no revocation
    /// endpoint (nothing to do).
    pub async fn revoke(&self, token: &str, hint: &str) -> Result<bool, ResourceError> {
        let Some(endpoint) = self.endpoints().await?.revocation else {
            return Ok(false);
        };
        let form = [("token", token), ("token_type_hint", hint)];
        self.client_request(&endpoint, "revocation endpoint", &form)
            .await
            .map(|_| true)
    }

    /// The account's identity at the resource, by the resource's configured way.
    pub async fn identity(&self, tokens: &TokenSet) -> Result<Option<String>, ResourceError> {
        match &self.resource.identity {
            None => Ok(None),
            Some(Identity::TokenResponse { .. } | Identity::IdTokenClaim(_)) => {
                Ok(tokens.identity.clone())
            }
            Some(Identity::UserinfoClaim(claim)) => {
                let endpoint =
                    self.endpoints().await?.userinfo.ok_or_else(|| {
                        ResourceError::NotConfigured("no userinfo endpoint".into())
                    })?;
                let doc = self
                    .bearer_call(&endpoint, &tokens.access_token, None)
                    .await?;
                Ok(field(&doc, claim))
            }
            Some(Identity::Api {
                url,
                field: path,
                graphql,
            }) => {
                let doc = self
                    .bearer_call(url, &tokens.access_token, graphql.as_deref())
                    .await?;
                Ok(field(&doc, path))
            }
        }
    }

    fn token_set(&self, answer: Value) -> Result<TokenSet, ResourceError> {
        let root = match self.resource.quirks.token_response_root {
            Some(path) => lookup(&answer, path).cloned().unwrap_or(Value::Null),
            None => answer.clone(),
        };
        let access = root
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ResourceError::Invalid("the token response has no access_token".into())
            })?;
        let identity = match &self.resource.identity {
            Some(Identity::TokenResponse { field: path }) => field(&answer, path),
            // OpenID Connect Core §3.1.3.7 (6): received directly from the token endpoint over
            // TLS, the ID token's origin is the resource's server; its claims are read as such.
            Some(Identity::IdTokenClaim(claim)) => answer
                .get("id_token")
                .and_then(Value::as_str)
                .and_then(|t| jsonwebtoken::dangerous::insecure_decode_claims::<Value>(t).ok())
                .and_then(|claims| field(&claims, claim)),
            _ => None,
        };
        Ok(TokenSet {
            access_token: Zeroizing::new(access.to_owned()),
            refresh_token: root
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(|t| Zeroizing::new(t.to_owned())),
            expires_in: root.get("expires_in").and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            }),
            scope: root
                .get("scope")
                .and_then(Value::as_str)
                .map(|s| s.replace(self.resource.quirks.scope_separator, " ")),
            identity,
        })
    }

    /// A request authenticated as Doorman's client (RFC 6749 §2.3.1), form or JSON encoded.
    async fn client_request(
        &self,
        endpoint: &Url,
        what: &'static str,
        params: &[(&str, &str)],
    ) -> Result<Value, ResourceError> {
        let oauth =
            self.resource.oauth.as_ref().ok_or_else(|| {
                ResourceError::NotConfigured("resource has no OAuth client".into())
            })?;
        let quirks = &self.resource.quirks;
        let mut headers = self.provider_headers();
        let mut params: Vec<(&str, &str)> = params.to_vec();
        match (&self.secret, quirks.token_auth) {
            (Some(secret), TokenAuth::ClientSecretBasic) => {
                // RFC 6749 §2.3.1: both parts form-encoded before joining.
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let basic = Zeroizing::new(STANDARD.encode(format!(
                    "{}:{}",
                    enc(&oauth.client_id),
                    enc(secret.expose_secret())
                )));
                let mut value =
                    HeaderValue::from_str(&format!("Basic {}", &*basic)).map_err(|_| {
                        ResourceError::Invalid("client credentials are not header-safe".into())
                    })?;
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
            }
            (Some(secret), TokenAuth::ClientSecretPost) => {
                params.push(("client_id", &oauth.client_id));
                params.push(("client_secret", secret.expose_secret()));
            }
            // A public client identifies itself in the body (RFC 6749 §3.2.1).
            (None, _) => params.push(("client_id", &oauth.client_id)),
        }
        let body = match quirks.request_body {
            RequestBody::Form => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                Zeroizing::new(
                    form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&params)
                        .finish(),
                )
            }
            RequestBody::Json => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let map: serde_json::Map<String, Value> = params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                    .collect();
                Zeroizing::new(Value::Object(map).to_string())
            }
        };
        self.call(
            Method::POST,
            endpoint,
            what,
            headers,
            Bytes::from(body.as_bytes().to_vec()),
        )
        .await
    }

    async fn bearer_call(
        &self,
        url: &Url,
        token: &str,
        graphql: Option<&str>,
    ) -> Result<Value, ResourceError> {
        let mut headers = self.provider_headers();
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ResourceError::Invalid("the access token is not header-safe".into()))?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
        let (method, body) = match graphql {
            Some(q) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                (
                    Method::POST,
                    Bytes::from(serde_json::json!({ "query": q }).to_string()),
                )
            }
            None => (Method::GET, Bytes::new()),
        };
        self.call(method, url, "identity endpoint", headers, body)
            .await
    }

    fn provider_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        for (k, v) in self.resource.quirks.request_headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        headers
    }

    async fn get_json(&self, url: &str) -> Result<Value, ResourceError> {
        let url = Url::parse(url)
            .map_err(|_| ResourceError::Invalid(format!("{url} is not a valid URL")))?;
        if let Some(g) = &self.guarded {
            return Self::guarded_json(g, &url).await;
        }
        self.call(
            Method::GET,
            &url,
            "metadata",
            self.provider_headers(),
            Bytes::new(),
        )
        .await
    }

    async fn call(
        &self,
        method: Method,
        url: &Url,
        what: &'static str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Value, ResourceError> {
        let shown = format!(
            "{} {}{}",
            self.name(),
            url.origin().ascii_serialization(),
            url.path()
        );
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|_| ResourceError::Invalid(format!("{shown} is not a valid URL")))?;
        let timed_out = || {
            ResourceError::Unreachable(format!("{shown} did not answer within {REQUEST_TIMEOUT:?}"))
        };
        let response = match &self.guarded {
            // An endpoint an upstream's metadata named: the SSRF guard's rules, no redirects.
            Some(g) => {
                let response =
                    tokio::time::timeout(REQUEST_TIMEOUT, g.request(method, url, headers, body))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| ResourceError::Unreachable(e.to_string()))?;
                if response.status().is_redirection() {
                    return Err(ResourceError::Invalid(format!(
                        "{shown} answered with a redirect, which Doorman does not follow here"
                    )));
                }
                response
            }
            None => {
                tokio::time::timeout(REQUEST_TIMEOUT, self.http.send(method, &uri, headers, body))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| ResourceError::Unreachable(format!("{shown} {e}")))?
            }
        };
        let status = response.status();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, read_body(response.into_body(), MAX_BODY))
            .await
            .map_err(|_| ResourceError::Unreachable(format!("{shown} did not finish its answer")))?
            .map_err(|e| ResourceError::Invalid(format!("{shown} {e}")))?;
        // RFC 7009 §2.2: a revocation answers 200 with any (often empty) body.
        if status.is_success() && what == "revocation endpoint" {
            return Ok(Value::Null);
        }
        let json: Option<Value> = serde_json::from_slice(&body).ok().or_else(|| {
            // Some providers answer form-encoded (GitHub without Accept: application/json).
            std::str::from_utf8(&body).ok().and_then(|s| {
                s.contains('=').then(|| {
                    Value::Object(
                        form_urlencoded::parse(s.as_bytes())
                            .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
                            .collect(),
                    )
                })
            })
        });
        if !status.is_success() {
            // RFC 6749 §5.2: the error code is safe to show; never the whole body.
            let code = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .unwrap_or(status.as_str())
                .to_owned();
            return Err(ResourceError::Refused { what, code });
        }
        // Some providers answer 200 with an OAuth error (GitHub's token endpoint).
        if let Some(code) = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            && what != "identity endpoint"
        {
            return Err(ResourceError::Refused {
                what,
                code: code.to_owned(),
            });
        }
        json.ok_or_else(|| ResourceError::Invalid(format!("{shown} answered without JSON")))
    }
}

/// A dotted path into JSON (`"owner.user.person.email"`).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

/// A dotted path's value as a string (numbers too: some APIs name accounts by number).
fn field(v: &Value, path: &str) -> Option<String> {
    match lookup(v, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
