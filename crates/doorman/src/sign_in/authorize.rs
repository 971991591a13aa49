//! `/oauth/authorize`, the sign-in page and the consent page: from a client's authorization
//! request to the code in its redirect (OAuth 2.1 §4.1, MCP 2025-11-25 basic/authorization).
//!
//! The validated request waits in the store under a random id, bound to the browser that
//! started it by the CSRF cookie; every form posts that cookie's value back (double submit,
//! plus the stored hash), so another site cannot drive a person's browser through consent.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use secrecy::SecretString;
use serde::Deserialize;

use super::{
    AuthServer, MCP_SCOPE, SCOPES,
    accounts::SignInError,
    clients::{Client, ClientError, ClientKind},
    request::{Pending, load_request, no_request},
};
use crate::{
    crypto,
    store::{AuthorizationRequestRow, BrowserSessionRow, CodeRow},
    web::{
        csrf_refused,
        pages::{self, CSRF_COOKIE, ConsentPage, SESSION_COOKIE, SignInPage},
        see_other, with_cookie,
    },
};

/// How long a person has between the client's redirect and answering the consent page.
const REQUEST_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// Appends the authorization response parameters to the redirect URI (keeping its own query)
/// and sends the browser there.
fn redirect_to_client(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
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
fn error_to_client(
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
    let mut repeated = None;
    for (k, v) in &pairs {
        if q.insert(k.as_str(), v.as_str()).is_some() {
            repeated = Some(k.clone());
        }
    }
    // RFC 6749 §4.1.2.1: problems with the client or the redirect URI are shown here, never
    // sent to an unverified redirect URI.
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
    let fail = |error: &str, description: &str| {
        error_to_client(&s, &redirect_uri, state.as_deref(), error, description)
    };
    if let Some(k) = repeated {
        return fail("invalid_request", &format!("the parameter {k} is repeated"));
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
    };
    let now = s.clock.now_ms();
    let mut signed_in = if pending.force_sign_in {
        None
    } else {
        s.browser.signed_in(&headers).await
    };
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
            return error_to_client(
                &s,
                &pending.redirect_uri,
                pending.state.as_deref(),
                "login_required",
                "the person is not signed in",
            );
        };
        if !consented(&s, user_id, &pending).await {
            return error_to_client(
                &s,
                &pending.redirect_uri,
                pending.state.as_deref(),
                "consent_required",
                "the person has not approved this client",
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

async fn consented(s: &AuthServer, user_id: &str, p: &Pending) -> bool {
    match s.store.consent(user_id, &p.client_id).await {
        Ok(Some(approved)) => {
            let approved: Vec<&str> = approved.split(' ').collect();
            p.scope.split(' ').all(|sc| approved.contains(&sc))
        }
        _ => false,
    }
}

#[derive(Deserialize)]
pub struct RequestQuery {
    request: Option<String>,
}

/// `GET /sign-in?request=…`.
pub async fn sign_in_page(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(q): Query<RequestQuery>,
) -> Response {
    let Some(id) = q.request else {
        return no_request();
    };
    let (row, pending) = match load_request(&s, &id, &headers).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    // One provider and no local accounts: nothing to choose, straight to the provider.
    if !s.local_accounts && s.providers.len() == 1 {
        return super::federation::redirect_to_provider(
            &s,
            &s.providers[0],
            &id,
            &row.browser_hash,
            pending.force_sign_in,
        )
        .await;
    }
    let csrf = s
        .browser
        .cookies
        .get(&headers, CSRF_COOKIE)
        .unwrap_or_default();
    let name = client_name(&s, &pending.client_id).await;
    let providers = provider_links(&s, &id);
    pages::render(
        StatusCode::OK,
        &SignInPage {
            csrf: &csrf,
            request: &id,
            username: "",
            client_name: name.as_deref(),
            error: None,
            ask_totp: false,
            providers: &providers,
            local: s.local_accounts,
        },
    )
}

fn provider_links(s: &AuthServer, request: &str) -> Vec<(String, String)> {
    s.providers
        .iter()
        .map(|p| {
            (
                format!("/sign-in/oidc/{}?request={request}", p.name()),
                p.display_name().to_owned(),
            )
        })
        .collect()
}

async fn client_name(s: &AuthServer, client_id: &str) -> Option<String> {
    s.clients
        .resolve(client_id)
        .await
        .ok()
        .map(|c| c.display_name().to_owned())
}

/// The request a form was posted for: the CSRF token checked, then the request loaded and checked
/// to belong to this browser.
async fn posted_request(
    s: &AuthServer,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(String, AuthorizationRequestRow, Pending), Response> {
    if !s.browser.csrf_ok(headers, form) {
        return Err(csrf_refused());
    }
    let Some(id) = form.get("request").cloned() else {
        return Err(no_request());
    };
    let (row, pending) = load_request(s, &id, headers).await?;
    Ok((id, row, pending))
}

/// `POST /sign-in`: fields `username`, `password`, `totp`, `csrf`, `request`.
pub async fn sign_in_submit(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (id, row, pending) = match posted_request(&s, &headers, &form).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let username = form.get("username").map(|u| u.trim()).unwrap_or("");
    let password = SecretString::from(form.get("password").cloned().unwrap_or_default());
    let totp = form.get("totp").map(|t| t.trim()).filter(|t| !t.is_empty());
    let csrf = form.get("csrf").cloned().unwrap_or_default();
    let name = client_name(&s, &pending.client_id).await;
    let providers = provider_links(&s, &id);
    let again = |status: StatusCode, error: &str, ask_totp: bool| {
        pages::render(
            status,
            &SignInPage {
                csrf: &csrf,
                request: &id,
                username,
                client_name: name.as_deref(),
                error: Some(error),
                ask_totp,
                providers: &providers,
                local: s.local_accounts,
            },
        )
    };
    if !s.local_accounts {
        return again(
            StatusCode::BAD_REQUEST,
            "Doorman accounts are turned off here; sign in with your company's provider.",
            false,
        );
    }
    let user = match s.accounts.sign_in(username, &password, totp).await {
        Ok(user) => user,
        Err(e) => {
            let status = match &e {
                SignInError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
                SignInError::TotpRequired => StatusCode::OK,
                SignInError::Unavailable(cause) => {
                    tracing::error!(error = %cause, "sign-in failed: the store is unavailable");
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::UNAUTHORIZED,
            };
            tracing::info!(reason = e.kind(), "sign-in refused");
            crate::audit::emit(crate::audit::AuditEvent {
                person: Some(username.to_owned()).filter(|u| !u.is_empty()),
                client_id: Some(pending.client_id.clone()),
                detail: Some(e.kind().to_owned()),
                ..crate::audit::AuditEvent::security("sign_in_failed", None)
            });
            let ask_totp = matches!(e, SignInError::TotpRequired | SignInError::TotpInvalid);
            return again(status, &e.to_string(), ask_totp);
        }
    };
    let now = s.clock.now_ms();
    let session_id = crypto::random_token(32);
    let amr = if totp.is_some() {
        r#"["pwd","otp","mfa"]"#
    } else {
        r#"["pwd"]"#
    };
    let session = BrowserSessionRow {
        id_hash: crypto::sha256_hex(&session_id),
        user_id: user.id.clone(),
        auth_time: now,
        amr: amr.into(),
        acr: None,
        created_at: now,
        expires_at: now + s.settings.sign_in_lifetime_ms,
    };
    if let Err(e) = async {
        s.store.insert_browser_session(&session).await?;
        s.store
            .set_authorization_request_user(&row.id_hash, &user.id)
            .await
    }
    .await
    {
        tracing::error!(error = %e, "cannot record a sign-in");
        return again(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong; try again.",
            false,
        );
    }
    tracing::info!(user = %user.id, client = %pending.client_id, "signed in");
    crate::audit::emit(crate::audit::AuditEvent {
        person: user.email.clone().or(user.username.clone()),
        client_id: Some(pending.client_id.clone()),
        detail: Some("local account".into()),
        ..crate::audit::AuditEvent::security("sign_in", Some(&user.id))
    });
    let cookie = s.browser.cookies.set(
        SESSION_COOKIE,
        &session_id,
        s.settings.sign_in_lifetime_ms / 1000,
    );
    with_cookie(see_other(&format!("/consent?request={id}")), Some(cookie))
}

/// `GET /consent?request=…`: asks once per (person, client); remembered afterwards.
pub async fn consent_page(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(q): Query<RequestQuery>,
) -> Response {
    let Some(id) = q.request else {
        return no_request();
    };
    let (row, pending) = match load_request(&s, &id, &headers).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let Some((session, user_id)) = s.browser.signed_in(&headers).await else {
        return see_other(&format!("/sign-in?request={id}"));
    };
    if pending.force_sign_in && fresh_sign_in_needed(session.auth_time, row.created_at) {
        return see_other(&format!("/sign-in?request={id}"));
    }
    let client = match s.clients.resolve(&pending.client_id).await {
        Ok(c) => c,
        Err(e) => return pages::message(StatusCode::BAD_REQUEST, "Unknown client", &e.to_string()),
    };
    if !pending.force_consent && consented(&s, &user_id, &pending).await {
        return finish(&s, &row, &pending, &client, &session).await;
    }
    let person = match s.store.user(&user_id).await {
        Ok(Some(u)) => u.email.or(u.username).or(u.name).unwrap_or(u.id),
        _ => return see_other(&format!("/sign-in?request={id}")),
    };
    let csrf = s
        .browser
        .cookies
        .get(&headers, CSRF_COOKIE)
        .unwrap_or_default();
    let redirect_host = url::Url::parse(&pending.redirect_uri)
        .ok()
        .map(|u| match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => u.scheme().to_owned(),
        })
        .unwrap_or_default();
    let scopes = pending
        .scope
        .split(' ')
        .map(|sc| {
            (
                sc,
                SCOPES
                    .iter()
                    .find(|(n, _)| *n == sc)
                    .map(|(_, d)| *d)
                    .unwrap_or(""),
            )
        })
        .collect();
    pages::render(
        StatusCode::OK,
        &ConsentPage {
            csrf: &csrf,
            request: &id,
            client_id: &client.id,
            client_name: client.display_name(),
            client_is_url: client.kind == ClientKind::Metadata,
            redirect_host: &redirect_host,
            person: &person,
            scopes,
        },
    )
}

/// `POST /consent`: `decision` = `allow` | `deny`, with `csrf`, `request`, `client_id`.
pub async fn consent_submit(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (id, row, pending) = match posted_request(&s, &headers, &form).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    // The page named one client; an answer naming another is not an answer to this request.
    if form.get("client_id") != Some(&pending.client_id) {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Consent does not match",
            "This answer names a different application than the request it was posted for.",
        );
    }
    let Some((session, user_id)) = s.browser.signed_in(&headers).await else {
        return see_other(&format!("/sign-in?request={id}"));
    };
    if pending.force_sign_in && fresh_sign_in_needed(session.auth_time, row.created_at) {
        return see_other(&format!("/sign-in?request={id}"));
    }
    let client = match s.clients.resolve(&pending.client_id).await {
        Ok(c) => c,
        Err(e) => return pages::message(StatusCode::BAD_REQUEST, "Unknown client", &e.to_string()),
    };
    match form.get("decision").map(String::as_str) {
        Some("allow") => {
            if let Err(e) = s
                .store
                .save_consent(&user_id, &client.id, &pending.scope, s.clock.now_ms())
                .await
            {
                tracing::error!(error = %e, "cannot save consent");
                return pages::message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Try again in a moment.",
                );
            }
            tracing::info!(user = %user_id, client = %client.id, "consent given");
            crate::audit::emit(crate::audit::AuditEvent {
                client_id: Some(client.id.clone()),
                ..crate::audit::AuditEvent::security("consent", Some(&user_id))
            });
            finish(&s, &row, &pending, &client, &session).await
        }
        Some("deny") => {
            let _ = s.store.take_authorization_request(&row.id_hash).await;
            error_to_client(
                &s,
                &pending.redirect_uri,
                pending.state.as_deref(),
                "access_denied",
                "the person declined",
            )
        }
        _ => pages::message(
            StatusCode::BAD_REQUEST,
            "Invalid answer",
            "The decision must be allow or deny.",
        ),
    }
}

/// Issues the code and sends the browser back to the client (RFC 6749 §4.1.2, RFC 9207 `iss`).
async fn finish(
    s: &AuthServer,
    row: &AuthorizationRequestRow,
    p: &Pending,
    client: &Client,
    session: &BrowserSessionRow,
) -> Response {
    // One request, one code: a second tab answering the same request gets nothing.
    match s.store.take_authorization_request(&row.id_hash).await {
        Ok(true) => {}
        Ok(false) => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Already answered",
                "This request was already answered. Start again from your application.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot finish an authorization request");
            return pages::message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Try again in a moment.",
            );
        }
    }
    let now = s.clock.now_ms();
    // The sign-in behind this code is what the pending step-up asked for (or met it already).
    if let Err(e) = s.store.clear_step_up(&session.user_id, &client.id).await {
        tracing::warn!(error = %e, "cannot clear a step-up");
    }
    let code = crypto::random_token(32);
    let stored = CodeRow {
        code_hash: crypto::sha256_hex(&code),
        client_id: client.id.clone(),
        user_id: session.user_id.clone(),
        redirect_uri: p.redirect_uri.clone(),
        code_challenge: p.code_challenge.clone(),
        resource: p.resource.clone(),
        scope: p.scope.clone(),
        auth_time: session.auth_time,
        amr: session.amr.clone(),
        acr: session.acr.clone(),
        created_at: now,
        expires_at: now + s.settings.code_lifetime_ms,
        used_at: None,
        grant_id: None,
    };
    if let Err(e) = s.store.insert_code(&stored).await {
        tracing::error!(error = %e, "cannot store an authorization code");
        return error_to_client(
            s,
            &p.redirect_uri,
            p.state.as_deref(),
            "server_error",
            "the code could not be stored",
        );
    }
    let mut params = vec![("code", code.as_str())];
    if let Some(st) = &p.state {
        params.push(("state", st));
    }
    params.push(("iss", s.issuer.as_str()));
    redirect_to_client(&p.redirect_uri, &params)
}

/// `prompt=login`: the sign-in must not predate the request. Compared in whole seconds, since
/// providers report `auth_time` in seconds (OpenID Connect Core §2).
fn fresh_sign_in_needed(auth_time_ms: i64, request_created_ms: i64) -> bool {
    auth_time_ms / 1000 < request_created_ms / 1000
}
