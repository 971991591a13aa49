//! `/oauth/authorize`: a client's authorization request, validated (OAuth 2.1 §4.1, PKCE S256,
//! RFC 8707 `resource`, `prompt`, `max_age`, a remembered step-up), then stored and continued
//! on the sign-in page (`login.rs`) or, for a browser already signed in, the consent page
//! (`consent.rs`), which issues the code.
//!
//! The validated request waits in the store under a random id, bound to the browser that
//! started it by the CSRF cookie; every form posts that cookie's value back (double submit,
//! plus the stored hash), so another site cannot drive a person's browser through consent.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};

use super::{
    AuthServer, MCP_SCOPE, SCOPES,
    clients::{ClientError, ClientKind},
    request::Pending,
};
use crate::{
    crypto,
    store::AuthorizationRequestRow,
    web::{pages, see_other, with_cookie},
};

/// How long a person has between the client's redirect and answering the consent page.
pub(super) const REQUEST_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// Appends the authorization response parameters to the redirect URI (keeping its own query)
/// and sends the browser there.
pub(super) fn redirect_to_client(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Invalid redirect",
                "The client's redirect URI is not a valid URL.",
            );
        }
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    see_other(url.as_str())
}

/// An error sent back to the client: `error`, `error_description`, `state` and — always —
/// `iss` (RFC 9207 §2: also in error responses).
pub(super) fn error_to_client(
    s: &AuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(st) = state {
        params.push(("state", st));
    }
    params.push(("iss", s.issuer.as_str()));
    redirect_to_client(redirect_uri, &params)
}

/// `GET /oauth/authorize`.
pub async fn authorize(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    // RFC 6749 §3.1: request parameters must not be repeated.
    let mut q: HashMap<&str, &str> = HashMap::new();
    let mut repeated: Vec<&str> = Vec::new();
    for (k, v) in &pairs {
        if q.insert(k.as_str(), v.as_str()).is_some() {
            repeated.push(k.as_str());
        }
    }
    // RFC 6749 §4.1.2.1: problems with the client or the redirect URI are shown here, never
    // sent to an unverified redirect URI. A repeated client_id or redirect_uri is such a
    // problem whichever value comes last: the sender chose the order.
    if let Some(k) = repeated
        .iter()
        .find(|k| matches!(**k, "client_id" | "redirect_uri"))
    {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            &format!("The {k} parameter is repeated."),
        );
    }
    let Some(client_id) = q.get("client_id").copied() else {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The client_id parameter is missing.",
        );
    };
    let client = match s.clients.resolve(client_id).await {
        Ok(c) => c,
        Err(ClientError::Metadata(why)) => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Unknown client",
                &format!("The client's metadata document cannot be used: {why}"),
            );
        }
        Err(e) => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Unknown client",
                &format!("This application cannot sign in here: {e}."),
            );
        }
    };
    if client.service {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Not a sign-in client",
            "This is a service client: it gets its own tokens (client credentials) and signs nobody in.",
        );
    }
    let redirect_uri = match q.get("redirect_uri") {
        Some(r) if client.redirect_allowed(r) => (*r).to_owned(),
        Some(_) => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Invalid redirect",
                "The redirect_uri is not registered for this client.",
            );
        }
        // RFC 6749 §3.1.2.3: may be omitted only when exactly one is registered (and fixed).
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "The redirect_uri parameter is missing.",
            );
        }
    };
    let state = q.get("state").map(|s| (*s).to_owned());
    // RFC 9700 §4.11.2: an error goes back to the redirect URI only when that URI is trusted —
    // an operator-configured client, or one the person in this browser has already approved.
    // Anyone can register a redirect URI dynamically (or publish one in a metadata document),
    // so for those this endpoint would otherwise be an open redirector; they get a page.
    let browser = s.browser.signed_in(&headers).await;
    let trusted = client.kind == ClientKind::Configured
        || match &browser {
            Some((_, user_id)) => matches!(s.store.consent(user_id, &client.id).await, Ok(Some(_))),
            None => false,
        };
    let fail = |error: &str, description: &str| {
        if trusted {
            error_to_client(&s, &redirect_uri, state.as_deref(), error, description)
        } else {
            refused_here(error, description)
        }
    };
    // RFC 8707 §2: several `resource` values are allowed by the protocol; Doorman serves one,
    // so more than one is `invalid_target`.
    if repeated.contains(&"resource") {
        return fail(
            "invalid_target",
            &format!("one resource only: {}", s.resource),
        );
    }
    if let Some(k) = repeated.first() {
        return fail("invalid_request", &format!("the parameter {k} is repeated"));
    }
    // RFC 6749 §4.1.2.1: a missing parameter is `invalid_request`; a value other than `code`
    // is `unsupported_response_type`.
    if q.get("response_type").is_none_or(|t| t.is_empty()) {
        return fail("invalid_request", "response_type=code is required");
    }
    if q.get("response_type") != Some(&"code") {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    // MCP authorization, "Authorization Code Protection": PKCE with S256 is required.
    let Some(challenge) = q.get("code_challenge").copied() else {
        return fail(
            "invalid_request",
            "code_challenge is required (PKCE with S256)",
        );
    };
    if q.get("code_challenge_method") != Some(&"S256") {
        return fail(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not accepted)",
        );
    }
    // RFC 7636 §4.2: BASE64URL(SHA256(verifier)) is 43 characters.
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail(
            "invalid_request",
            "code_challenge is not a base64url SHA-256 value",
        );
    }
    // RFC 8707 §2: the resource must be ours; tokens are only ever issued for /mcp.
    let resource = match q.get("resource") {
        None => s.resource.clone(),
        Some(r) if *r == s.resource => s.resource.clone(),
        Some(_) => {
            return fail(
                "invalid_target",
                &format!("the only resource here is {}", s.resource),
            );
        }
    };
    let scope = match granted_scope(q.get("scope").copied()) {
        Ok(scope) => scope,
        Err(unknown) => return fail("invalid_scope", &format!("unknown scope {unknown:?}")),
    };
    let prompt = q.get("prompt").copied().unwrap_or("");
    // OpenID Connect Core §3.1.2.1 / RFC 9470 §4: `max_age` (seconds) asks for a sign-in at
    // most that old (a step-up after `insufficient_user_authentication`).
    let max_age_s = match q.get("max_age").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return fail("invalid_request", "max_age must be a number of seconds"),
    };
    let mut pending = Pending {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.clone(),
        scope,
        state: state.clone(),
        code_challenge: challenge.to_owned(),
        resource,
        force_sign_in: prompt.split(' ').any(|p| p == "login"),
        force_consent: prompt.split(' ').any(|p| p == "consent"),
        return_to: None,
    };
    let now = s.clock.now_ms();
    let mut signed_in = if pending.force_sign_in { None } else { browser };
    // A step-up Doorman asked this client for (RFC 9470 §3) applies even when the client's
    // new authorization request does not carry `max_age`; what cannot be read forces it.
    let remembered = match &signed_in {
        Some((_, user_id)) => match s.store.pending_step_up(user_id, &client.id, now).await {
            Ok(m) => m.map(|m| m.max(0) as u64),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read pending step-ups: a fresh sign-in is asked");
                Some(0)
            }
        },
        None => None,
    };
    let max_age_s = match (max_age_s, remembered) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let (Some(max), Some((session, _))) = (max_age_s, &signed_in)
        && now - session.auth_time > (max as i64).saturating_mul(1000)
    {
        pending.force_sign_in = true;
        signed_in = None;
    }
    if prompt.split(' ').any(|p| p == "none") {
        // OpenID Connect Core §3.1.2.1 semantics, which OAuth clients use too.
        let Some((_, user_id)) = &signed_in else {
            return fail("login_required", "the person is not signed in");
        };
        if !consented(&s, user_id, &pending).await {
            return fail(
                "consent_required",
                "the person has not approved this client",
            );
        }
        // The re-authorization cascade needs the person at a resource's pages.
        let waiting = match s.store.cascade_prompts(user_id, &client.id, now).await {
            Ok(c) => c.iter().any(crate::store::ConnectPromptRow::waiting),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the re-authorization cascade");
                true
            }
        };
        if waiting {
            return fail(
                "interaction_required",
                "a resource must be authorized in the browser first",
            );
        }
    }
    let (csrf, set_csrf) = s.browser.csrf_cookie(&headers);
    let id = crypto::random_token(24);
    let row = AuthorizationRequestRow {
        id_hash: crypto::sha256_hex(&id),
        browser_hash: crypto::sha256_hex(&csrf),
        client_id: client.id.clone(),
        params: serde_json::to_string(&pending).expect("pending requests serialize"),
        user_id: signed_in.as_ref().map(|(_, u)| u.clone()),
        created_at: now,
        expires_at: now + REQUEST_LIFETIME_MS,
    };
    if let Err(e) = s.store.insert_authorization_request(&row).await {
        tracing::error!(error = %e, "cannot store an authorization request");
        return fail(
            "server_error",
            "the authorization request could not be stored",
        );
    }
    let next = match signed_in {
        Some(_) => format!("/consent?request={id}"),
        None => format!("/sign-in?request={id}"),
    };
    with_cookie(see_other(&next), set_csrf)
}

/// The page for an invalid request from a client whose redirect URI is not trusted with errors
/// (RFC 9700 §4.11.2): it says what was wrong, and sends the browser nowhere.
fn refused_here(error: &str, description: &str) -> Response {
    pages::message(
        StatusCode::BAD_REQUEST,
        "This sign-in cannot continue",
        &format!(
            "The application's request was refused ({error}: {description}). Return to the application and try again."
        ),
    )
}

/// The scopes granted for a request: the known ones asked for, always including `mcp`.
fn granted_scope(asked: Option<&str>) -> Result<String, String> {
    let mut granted = vec![MCP_SCOPE];
    for scope in asked.unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
        match SCOPES.iter().find(|(name, _)| *name == scope) {
            Some((name, _)) if !granted.contains(name) => granted.push(name),
            Some(_) => {}
            None => return Err(scope.to_owned()),
        }
    }
    Ok(granted.join(" "))
}

pub(super) async fn consented(s: &AuthServer, user_id: &str, p: &Pending) -> bool {
    match s.store.consent(user_id, &p.client_id).await {
        Ok(Some(approved)) => {
            let approved: Vec<&str> = approved.split(' ').collect();
            p.scope.split(' ').all(|sc| approved.contains(&sc))
        }
        _ => false,
    }
}
