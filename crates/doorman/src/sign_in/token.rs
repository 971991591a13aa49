//! `/oauth/token` (authorization_code, refresh_token and, for service clients,
//! client_credentials grants) and `/oauth/revoke` (RFC 7009).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    AuthServer,
    clients::{Client, Presented},
};
use crate::{
    crypto,
    store::{CodeUse, GrantRow, RefreshRow, RefreshUse},
};

/// The error codes of the token endpoint (RFC 6749 §5.2, RFC 8707 §2 `invalid_target`), each
/// with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    /// `401`: the client could not be authenticated.
    InvalidClient,
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    /// `500`: Doorman failed, not the client.
    ServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::ServerError => "server_error",
        }
    }

    /// RFC 6749 §5.2: `400`, except `invalid_client` (`401`) and Doorman's own failures.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidClient => StatusCode::UNAUTHORIZED,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
pub struct OAuthError {
    code: ErrorCode,
    description: String,
    /// RFC 6749 §5.2: a client that tried Basic gets `WWW-Authenticate` with its 401.
    basic_challenge: bool,
    /// A status other than the code's own: `413` for a body over the limit.
    status: Option<StatusCode>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            basic_challenge: false,
            status: None,
        }
    }

    /// A body that could not be read: over the size limit (`413`, RFC 9110 §15.5.14) or broken
    /// off. Answered as `invalid_request`, in the endpoint's JSON, like any other bad request.
    pub fn unreadable_body(rejection: &BytesRejection) -> Self {
        let status = rejection.status();
        let mut e = Self::new(
            ErrorCode::InvalidRequest,
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "the request body is too large"
            } else {
                "the request body could not be read"
            },
        );
        e.status = Some(status);
        e
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status.unwrap_or(self.code.status()),
            Json(json!({ "error": self.code.as_str(), "error_description": self.description })),
        )
            .into_response();
        no_store(r.headers_mut());
        if self.basic_challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"doorman\""),
            );
        }
        r
    }
}

/// RFC 6749 §5.1: token responses must not be cached.
pub(super) fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

pub(super) fn server_error(e: anyhow::Error) -> OAuthError {
    tracing::error!(error = %e, "token endpoint failed");
    OAuthError::new(ErrorCode::ServerError, "the request could not be completed")
}

/// Parses an `application/x-www-form-urlencoded` body, refusing repeated parameters (RFC 6749 §3.2).
/// The form of a token or revocation request; a body that could not be read is refused here.
fn parse_form(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<HashMap<String, String>, OAuthError> {
    let body = body.map_err(|e| OAuthError::unreadable_body(&e))?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut form = HashMap::new();
    for (k, v) in form_urlencoded::parse(&body) {
        if form.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                format!("the parameter {k} is repeated"),
            ));
        }
    }
    Ok(form)
}

async fn authenticate(
    s: &AuthServer,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Client, OAuthError> {
    let presented = Presented::read(headers, form).map_err(|e| {
        let mut err = OAuthError::new(ErrorCode::InvalidClient, e);
        err.basic_challenge = headers.contains_key(header::AUTHORIZATION);
        err
    })?;
    let token_endpoint = s.endpoint("/oauth/token");
    let audiences = [token_endpoint.as_str(), s.issuer.as_str()];
    s.clients
        .authenticate(&presented, &audiences)
        .await
        .map_err(|e| {
            tracing::info!(reason = %e, "client authentication failed");
            let mut err = OAuthError::new(ErrorCode::InvalidClient, e);
            err.basic_challenge = presented.via_basic;
            err
        })
}

pub(super) fn required<'a>(
    form: &'a HashMap<String, String>,
    key: &str,
) -> Result<&'a str, OAuthError> {
    form.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidRequest, format!("{key} is required")))
}

/// `POST /oauth/token`.
pub async fn token(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match token_inner(&s, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn token_inner(
    s: &AuthServer,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = parse_form(headers, body)?;
    let grant_type = required(&form, "grant_type")?;
    let id_jag = grant_type == JWT_BEARER && s.providers.iter().any(|p| p.config.id_jag);
    if !(matches!(
        grant_type,
        "authorization_code" | "refresh_token" | "client_credentials"
    ) || id_jag)
    {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!(
                "grant_type {grant_type:?} is not supported (authorization_code, refresh_token, client_credentials{})",
                if s.providers.iter().any(|p| p.config.id_jag) {
                    ", urn:ietf:params:oauth:grant-type:jwt-bearer"
                } else {
                    ""
                }
            ),
        ));
    }
    let client = authenticate(s, headers, &form).await?;
    if id_jag {
        return exchange_id_jag(s, &client, &form).await;
    }
    // RFC 6749 §5.2 `unauthorized_client`: a service client acts as itself only, and a
    // people's client never does.
    if client.service != (grant_type == "client_credentials") {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            if client.service {
                "this is a service client: it gets tokens with grant_type=client_credentials only"
            } else {
                "client_credentials is for service clients the operator configured with grant_types = [\"client_credentials\"]"
            },
        ));
    }
    match grant_type {
        "authorization_code" => exchange_code(s, &client, &form).await,
        "refresh_token" => refresh(s, &client, &form).await,
        _ => client_credentials(s, &client, &form).await,
    }
}

/// An ID-JAG for an access token (`id_jag.rs` checks it and makes the grant): RFC 7523 §2.1,
/// and no refresh token.
async fn exchange_id_jag(
    s: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let assertion = required(form, "assertion")?;
    if let Some(resource) = form.get("resource")
        && resource != &s.resource
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            format!("the only resource is {}", s.resource),
        ));
    }
    let grant = super::id_jag::grant_for(
        s,
        client,
        assertion,
        form.get("scope").map(String::as_str),
    )
    .await
    .map_err(|e| match e {
        Ok(refusal) => {
            tracing::info!(client = %client.id, reason = %refusal.description, "ID-JAG refused");
            let code = match refusal.code {
                "unauthorized_client" => ErrorCode::UnauthorizedClient,
                "invalid_scope" => ErrorCode::InvalidScope,
                _ => ErrorCode::InvalidGrant,
            };
            OAuthError::new(code, refusal.description)
        }
        Err(e) => server_error(e),
    })?;
    access_only(s, &grant)
}

/// An access token with no refresh token (client credentials, ID-JAG).
fn access_only(s: &AuthServer, grant: &GrantRow) -> Result<Response, OAuthError> {
    let (access, claims) = s.tokens.issue(grant).map_err(server_error)?;
    let mut r = Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "scope": grant.scope,
    }))
    .into_response();
    no_store(r.headers_mut());
    Ok(r)
}

/// RFC 7523 §2.1: the JWT bearer authorization grant (here, with an ID-JAG).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// RFC 6749 §4.4 (and the MCP OAuth client credentials extension): a service client's own
/// access token, with no person. The client is its own principal: a `users` row under the
/// issuer `client` (`store::SERVICE_ISSUER`) with the client id as subject, made at its first token, so the
/// policies (`clients`), the audit and the vault see it as they see a person. Each token has a
/// grant of its own that ends with it; there is no refresh token (§4.4.3).
async fn client_credentials(
    s: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    // §4.4.2 `scope` is optional; Doorman has one scope.
    if let Some(scope) = form.get("scope")
        && scope
            .split(' ')
            .any(|sc| !sc.is_empty() && sc != super::MCP_SCOPE)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            format!("the only scope is {:?}", super::MCP_SCOPE),
        ));
    }
    // RFC 8707 §2: the one protected resource.
    if let Some(resource) = form.get("resource")
        && resource != &s.resource
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            format!("the only resource is {}", s.resource),
        ));
    }
    let now = s.clock.now_ms();
    let principal = service_principal(s, client, now).await?;
    // Expired tokens' grants of this client are of no more use: one row per live token.
    s.store
        .delete_expired_grants_of(&principal, now)
        .await
        .map_err(server_error)?;
    let grant = GrantRow {
        id: crypto::random_token(16),
        user_id: principal,
        client_id: client.id.clone(),
        scope: super::MCP_SCOPE.to_owned(),
        resource: s.resource.clone(),
        auth_time: now,
        amr: "[]".into(),
        acr: None,
        created_at: now,
        expires_at: now + s.tokens.lifetime_ms(),
        last_used_at: now,
        revoked_at: None,
        revoked_reason: None,
    };
    s.store.insert_grant(&grant).await.map_err(server_error)?;
    tracing::info!(client = %client.id, grant = %grant.id, "service client token issued");
    access_only(s, &grant)
}

/// The principal of a service client: found, or made at its first token. A principal an
/// administrator disabled gets no token.
async fn service_principal(
    s: &AuthServer,
    client: &Client,
    now: i64,
) -> Result<String, OAuthError> {
    let u = s
        .store
        .service_principal(&client.id, client.name.as_deref(), now)
        .await
        .map_err(server_error)?;
    if u.disabled_at.is_some() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this service client has been disabled by an administrator",
        ));
    }
    Ok(u.id)
}

/// RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6) and resource indicators (RFC 8707 §2.2).
async fn exchange_code(
    s: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let code = required(form, "code")?;
    let redirect_uri = required(form, "redirect_uri")?;
    let verifier = required(form, "code_verifier")?;
    let now = s.clock.now_ms();
    let code_hash = crypto::sha256_hex(code);
    let row = match s
        .store
        .use_code(&code_hash, now)
        .await
        .map_err(server_error)?
    {
        CodeUse::Fresh(row) => row,
        CodeUse::Replayed(grant) => {
            // OAuth 2.1 §4.1.3 / RFC 6749 §4.1.2: a code used twice revokes what it issued.
            if let Some(g) = grant {
                s.store
                    .revoke_grant(&g, now, "authorization code replayed")
                    .await
                    .map_err(server_error)?;
                s.tokens.revocations.revoke_grant_locally(&g, now);
                tracing::warn!(grant = %g, client = %client.id, "authorization code replayed; grant revoked");
            }
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the authorization code was already used",
            ));
        }
        CodeUse::Unknown => {
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the authorization code is not valid",
            ));
        }
    };
    if row.client_id != client.id {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the authorization code was issued to another client",
        ));
    }
    if row.expires_at <= now {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the authorization code has expired",
        ));
    }
    if row.redirect_uri != redirect_uri {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "redirect_uri differs from the authorization request",
        ));
    }
    // RFC 7636 §4.1: 43-128 unreserved characters; §4.6: S256 comparison.
    let verifier_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !verifier_ok
        || !crypto::constant_time_eq(
            crypto::sha256_b64url(verifier.as_bytes()).as_bytes(),
            row.code_challenge.as_bytes(),
        )
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "code_verifier does not match the code_challenge",
        ));
    }
    if let Some(resource) = form.get("resource")
        && resource != &row.resource
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            format!("the code was issued for {}", row.resource),
        ));
    }
    active_user(s, &row.user_id).await?;
    // The end of a re-authorization cascade: the client's conversation goes on under the grant
    // that asked (its connections are bound to it), with this sign-in's facts.
    if let Some(continued) = &row.continues_grant
        && s.store
            .continue_grant(continued, &row, now, now + s.settings.sign_in_lifetime_ms)
            .await
            .map_err(server_error)?
        && let Some(grant) = s.store.grant(continued).await.map_err(server_error)?
    {
        // One refresh chain per grant: the one this code starts. A refresh token issued before
        // (the one refused while the resource waited) works no more.
        s.store
            .drop_unspent_refresh_tokens(&grant.id)
            .await
            .map_err(server_error)?;
        s.store
            .set_code_grant(&code_hash, &grant.id)
            .await
            .map_err(server_error)?;
        tracing::info!(user = %grant.user_id, client = %client.id, grant = %grant.id, "tokens issued (grant continued after re-authorization)");
        return issue(s, &grant, now).await;
    }
    let grant = GrantRow {
        id: crypto::random_token(16),
        user_id: row.user_id.clone(),
        client_id: client.id.clone(),
        scope: row.scope.clone(),
        resource: row.resource.clone(),
        auth_time: row.auth_time,
        amr: row.amr.clone(),
        acr: row.acr.clone(),
        created_at: now,
        expires_at: now + s.settings.sign_in_lifetime_ms,
        last_used_at: now,
        revoked_at: None,
        revoked_reason: None,
    };
    s.store.insert_grant(&grant).await.map_err(server_error)?;
    s.store
        .set_code_grant(&code_hash, &grant.id)
        .await
        .map_err(server_error)?;
    tracing::info!(user = %grant.user_id, client = %client.id, grant = %grant.id, "tokens issued");
    issue(s, &grant, now).await
}

async fn active_user(s: &AuthServer, user_id: &str) -> Result<(), OAuthError> {
    match s.store.user(user_id).await.map_err(server_error)? {
        Some(u) if u.disabled_at.is_none() => Ok(()),
        _ => Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the person's account is disabled",
        )),
    }
}

/// RFC 6749 §6, with rotation: every refresh token works once (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2).
async fn refresh(
    s: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let token = required(form, "refresh_token")?;
    let now = s.clock.now_ms();
    let hash = crypto::sha256_hex(token);
    let not_valid = || OAuthError::new(ErrorCode::InvalidGrant, "the refresh token is not valid");
    // Every check runs before the token is spent, so a refused request changes nothing: a
    // client that asked for the wrong scope keeps its refresh token.
    let row = s
        .store
        .refresh_token(&hash)
        .await
        .map_err(server_error)?
        .ok_or_else(not_valid)?;
    let grant = s
        .store
        .grant(&row.grant_id)
        .await
        .map_err(server_error)?
        .ok_or_else(not_valid)?;
    // RFC 6749 §6: the refresh token is bound to the client it was issued to. Another client
    // presenting it learns nothing and spends nothing.
    if grant.client_id != client.id {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the refresh token was issued to another client",
        ));
    }
    if row.used_at.is_some() {
        return Err(reused(s, &grant.id, client, now).await);
    }
    if grant.revoked_at.is_some() {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "this sign-in was revoked; sign in again",
        ));
    }
    if grant.expires_at <= now || row.expires_at <= now {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "this sign-in has expired; sign in again",
        ));
    }
    if let Some(scope) = form.get("scope") {
        let granted: Vec<&str> = grant.scope.split(' ').collect();
        if let Some(extra) = scope
            .split(' ')
            .find(|sc| !sc.is_empty() && !granted.contains(sc))
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("scope {extra:?} was not granted"),
            ));
        }
    }
    if let Some(resource) = form.get("resource")
        && resource != &grant.resource
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            format!("this sign-in is for {}", grant.resource),
        ));
    }
    active_user(s, &grant.user_id).await?;
    // The re-authorization cascade: a resource this grant's requests need waits for the person,
    // which only a new authorization can bring them to. Refused before the token is spent, so
    // the client runs its authorization flow (RFC 6749 §5.2 invalid_grant).
    if s.store
        .cascade_waiting(&grant.id, now)
        .await
        .map_err(server_error)?
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "a resource must be authorized first: authorize this application again",
        ));
    }
    // Spent atomically: of two concurrent requests with one token, one wins and the other is
    // a reuse.
    match s
        .store
        .use_refresh_token(&hash, now)
        .await
        .map_err(server_error)?
    {
        RefreshUse::Fresh(_) => {}
        RefreshUse::Reused(g) => return Err(reused(s, &g, client, now).await),
        RefreshUse::Unknown => return Err(not_valid()),
    }
    // A person who signed in through a provider is re-checked there now and then, so one
    // disabled at the provider loses Doorman too. Only the request that spent the token asks
    // the provider: two asking at once would present the provider's refresh token twice, which
    // providers that detect reuse answer by ending the person's sign-in there. A person the
    // provider refuses has every grant revoked, so the token spent here is no loss.
    if let Err(super::federation::Deprovisioned(why)) =
        super::federation::recheck(s, &grant.user_id).await
    {
        return Err(OAuthError::new(ErrorCode::InvalidGrant, why));
    }
    issue(s, &grant, now).await
}

/// RFC 9700 §4.14.2: a rotated refresh token came back. It leaked, or a client misbehaves;
/// either way the whole grant ends, so a thief's copy and the client's both stop working.
async fn reused(s: &AuthServer, grant: &str, client: &Client, now: i64) -> OAuthError {
    if let Err(e) = s
        .store
        .revoke_grant(grant, now, "refresh token reused")
        .await
    {
        return server_error(e);
    }
    s.tokens.revocations.revoke_grant_locally(grant, now);
    tracing::warn!(grant = %grant, client = %client.id, "refresh token reused; grant revoked");
    OAuthError::new(
        ErrorCode::InvalidGrant,
        "the refresh token was already used; sign in again",
    )
}

/// A new access token and refresh token for a grant (RFC 6749 §5.1).
async fn issue(s: &AuthServer, grant: &GrantRow, now: i64) -> Result<Response, OAuthError> {
    let (access, claims) = s.tokens.issue(grant).map_err(server_error)?;
    let refresh = crypto::random_token(32);
    s.store
        .insert_refresh_token(&RefreshRow {
            token_hash: crypto::sha256_hex(&refresh),
            grant_id: grant.id.clone(),
            created_at: now,
            expires_at: grant.expires_at,
            used_at: None,
        })
        .await
        .map_err(server_error)?;
    let mut r = Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        // RFC 6749 §5.1: the token's lifetime, exactly as signed.
        "expires_in": claims.exp - claims.iat,
        "refresh_token": refresh,
        "scope": grant.scope,
    }))
    .into_response();
    no_store(r.headers_mut());
    Ok(r)
}

/// `POST /oauth/revoke` (RFC 7009 §2). Answers 200 for unknown tokens too (§2.2), so it tells a
/// caller nothing about tokens it does not hold.
pub async fn revoke(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match revoke_inner(&s, &headers, body).await {
        Ok(()) => {
            let mut r = StatusCode::OK.into_response();
            no_store(r.headers_mut());
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn revoke_inner(
    s: &AuthServer,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), OAuthError> {
    let form = parse_form(headers, body)?;
    let client = authenticate(s, headers, &form).await?;
    let token = required(&form, "token")?;
    let now = s.clock.now_ms();
    if token.split('.').count() == 3 {
        // An access token: revoke it by `jti` if this client holds it.
        if let Ok(claims) = s.tokens.verify_signature_only(token)
            && claims.client_id == client.id
        {
            s.store
                .revoke_access_token(&claims.jti, claims.exp * 1000, now)
                .await
                .map_err(server_error)?;
            s.tokens.revocations.revoke_token_locally(&claims.jti, now);
            tracing::info!(client = %client.id, "access token revoked");
        }
        return Ok(());
    }
    // A refresh token: RFC 7009 §2.1 — revoking it ends the grant and its access tokens.
    if let Some(grant_id) = s
        .store
        .refresh_token_grant(&crypto::sha256_hex(token))
        .await
        .map_err(server_error)?
        && let Some(grant) = s.store.grant(&grant_id).await.map_err(server_error)?
        && grant.client_id == client.id
    {
        s.store
            .revoke_grant(&grant_id, now, "revoked by the client")
            .await
            .map_err(server_error)?;
        s.tokens.revocations.revoke_grant_locally(&grant_id, now);
        tracing::info!(client = %client.id, grant = %grant_id, "grant revoked by the client");
    }
    Ok(())
}
