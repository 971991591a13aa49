//! The browser side of layer 2: the connect link, the resource's callback, and "my connections".
//!
//! `GET /connect/{resource}?prompt=…` — the link of a connect prompt. The browser must be
//! signed in to Doorman as the person the prompt was made for (MCP 2025-11-25
//! client/elicitation, "Phishing": the server verifies that the person completing the flow is
//! the one who started it); then a random single-use `state` (10 minutes, only its SHA-256
//! stored) and a PKCE verifier (RFC 7636, sealed) are made and the browser goes to the
//! resource. `GET /connect/callback` spends the `state`, checks the browser is still that
//! person, exchanges the code, learns the account, stores the connection and tells the client
//! (`notifications/elicitation/complete`). `GET /connections` lists the person's connections
//! with reconnect, disconnect and "disconnect everything" (POST, CSRF double-submit).

use std::{collections::HashMap, sync::Arc};

use askama::Template;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::Vault;
use crate::{
    crypto,
    store::{ConnectPromptRow, ConnectStateRow},
    web::{
        Browser, csrf_refused,
        pages::{self, Nav, ago, human_duration},
        see_other, sign_in_and_return, with_cookie,
    },
};

/// Tells a stateful client that the URL elicitation it showed is done: (session hash,
/// elicitation id).
pub type OnComplete = Box<dyn Fn(&str, &str) + Send + Sync>;

/// What the connect routes need.
pub struct ConnectApp {
    pub vault: Arc<Vault>,
    /// Cookies, CSRF and the remembered sign-in of Doorman's own pages.
    pub browser: Arc<Browser>,
    pub on_complete: OnComplete,
}

impl ConnectApp {
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/connect/callback", get(shared_callback))
            .route("/connect/callback/{resource}", get(resource_callback))
            .route("/connect/cascade", get(cascade))
            .route("/connect/{resource}", get(start).post(submit_key))
            .route("/connections", get(connections_page))
            .route("/connections/disconnect", post(disconnect))
            .route("/connections/disconnect-all", post(disconnect_all))
            .route("/connections/reconnect", post(reconnect))
            .route(super::discovery::CLIENT_METADATA_PATH, get(client_metadata))
            .with_state(self)
    }
}

/// Doorman's Client ID Metadata Document, for authorization servers of upstreams that do MCP
/// authorization themselves.
async fn client_metadata(State(app): State<Arc<ConnectApp>>) -> Response {
    let mut r = axum::Json(app.vault.client_metadata()).into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ConnectionsPage<'a> {
    nav: Nav,
    person: &'a str,
    csrf: &'a str,
    rows: Vec<Row>,
    notice: Option<&'a str>,
}

/// One connection as the pages list it (`connection_rows.html`).
pub struct Row {
    pub id: String,
    pub display_name: String,
    pub account: String,
    pub binding: String,
    pub age: String,
    pub remaining: String,
    pub active: bool,
}

/// A person's connections as rows; the first of each resource is the active one.
pub fn rows(views: Vec<super::ConnectionView>, now_ms: i64) -> Vec<Row> {
    let mut seen: Vec<String> = Vec::new();
    views
        .into_iter()
        .map(|v| {
            let active = !seen.contains(&v.resource);
            seen.push(v.resource.clone());
            Row {
                id: v.id,
                display_name: v.display_name,
                account: v.account,
                binding: v.binding,
                age: ago(now_ms, v.authorized_at),
                remaining: v.remaining_ms.map_or("no limit".into(), human_duration),
                active,
            }
        })
        .collect()
}

fn not_signed_in() -> Response {
    pages::message(
        StatusCode::UNAUTHORIZED,
        "Sign in to Doorman first",
        "This page needs you signed in to Doorman in this browser. Sign in from your MCP client (it opens Doorman's sign-in page), then open this link again.",
    )
}

fn expired_link() -> Response {
    pages::message(
        StatusCode::BAD_REQUEST,
        "This link has expired",
        "This connect link is no longer valid (it expired, or was already used). Ask your assistant to try again: it gives you a new link.",
    )
}

#[derive(Deserialize)]
pub struct StartQuery {
    prompt: Option<String>,
}

/// `GET /connect/{resource}?prompt=…`.
async fn start(
    State(app): State<Arc<ConnectApp>>,
    Path(resource): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some(prompt_id) = q.prompt.filter(|p| !p.is_empty() && p.len() <= 128) else {
        return expired_link();
    };
    let prompt = match live_prompt(&app, &prompt_id, &resource).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some((_, user_id)) = app.browser.signed_in(&headers).await else {
        return sign_in_and_return(&uri);
    };
    if let Some(r) = not_its_person(&prompt, &user_id) {
        return r;
    }
    if app
        .vault
        .resource(&resource)
        .is_some_and(|rc| rc.resource.api_key.is_some())
    {
        return key_form(&app, &headers, &prompt_id, &resource, "", None);
    }
    redirect_to_resource(&app, &prompt, None).await
}

#[derive(Template)]
#[template(path = "connect_api_key.html")]
struct ApiKeyPage<'a> {
    display: &'a str,
    resource: &'a str,
    prompt: &'a str,
    csrf: &'a str,
    help: Option<&'a str>,
    label: &'a str,
    error: Option<&'a str>,
}

/// The page that takes a personal API key (`kind = "api_key"`); the key is never put back in
/// it, even after a refusal.
fn key_form(
    app: &ConnectApp,
    headers: &HeaderMap,
    prompt: &str,
    resource: &str,
    label: &str,
    error: Option<(StatusCode, &str)>,
) -> Response {
    let Some(rc) = app.vault.resource(resource) else {
        return expired_link();
    };
    let (csrf, set_cookie) = app.browser.csrf_cookie(headers);
    with_cookie(
        pages::render(
            error.map_or(StatusCode::OK, |(s, _)| s),
            &ApiKeyPage {
                display: &rc.resource.display_name,
                resource,
                prompt,
                csrf: &csrf,
                help: rc.resource.api_key.as_ref().and_then(|a| a.help.as_deref()),
                label,
                error: error.map(|(_, e)| e),
            },
        ),
        set_cookie,
    )
}

/// `POST /connect/{resource}` (`prompt`, `key`, `label`, `csrf`): a personal API key for a
/// `kind = "api_key"` resource. The same checks as the OAuth trip (the prompt is live and
/// this browser is its person's), then the resource's test request, then the connection.
async fn submit_key(
    State(app): State<Arc<ConnectApp>>,
    Path(resource): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let user_id = match posted(&app, &headers, &form).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let prompt_id = form.get("prompt").map(String::as_str).unwrap_or("");
    let prompt = match live_prompt(&app, prompt_id, &resource).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(r) = not_its_person(&prompt, &user_id) {
        return r;
    }
    let Some(rc) = app
        .vault
        .resource(&resource)
        .filter(|rc| rc.resource.api_key.is_some())
    else {
        return expired_link();
    };
    let label = form
        .get("label")
        .and_then(|l| super::api_key::clean_label(l))
        .unwrap_or_default();
    let Some(key) = form.get("key").and_then(|k| super::api_key::clean_key(k)) else {
        return key_form(
            &app,
            &headers,
            prompt_id,
            &resource,
            &label,
            Some((
                StatusCode::BAD_REQUEST,
                "Paste the key: it is empty or has characters no key has.",
            )),
        );
    };
    let display = rc.resource.display_name.clone();
    let again = |status: StatusCode, text: &str| {
        key_form(
            &app,
            &headers,
            prompt_id,
            &resource,
            &label,
            Some((status, text)),
        )
    };
    let account = match app.vault.check_api_key(&rc, key).await {
        super::api_key::KeyCheck::Accepted(named) => named
            .or_else(|| (!label.is_empty()).then(|| label.clone()))
            .unwrap_or_else(|| "API key".to_owned()),
        super::api_key::KeyCheck::Refused(why) => {
            tracing::info!(resource = %resource, reason = %why, "an API key was refused by its resource");
            return again(
                StatusCode::BAD_REQUEST,
                &format!("{display} did not accept this key: {why}. Check it and paste it again."),
            );
        }
        super::api_key::KeyCheck::Unavailable(why) => {
            tracing::warn!(resource = %resource, reason = %why, "an API key could not be checked");
            return again(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "Doorman could not check the key with {display} ({why}). Nothing was stored; try again in a moment."
                ),
            );
        }
    };
    let set = super::oauth::TokenSet {
        access_token: zeroize::Zeroizing::new(key.to_owned()),
        refresh_token: None,
        expires_in: None,
        scope: Some(String::new()),
        identity: None,
    };
    if let Err(r) = store_and_tell(&app, &prompt, &rc, &set, &account).await {
        return r;
    }
    connected_page(&display, &account)
}

#[derive(Deserialize)]
pub struct CascadeQuery {
    request: Option<String>,
}

/// `GET /connect/cascade?request=…`: the re-authorization cascade, inside a client's
/// authorization (`sign_in/consent.rs::finish` sends the browser here before it issues the
/// code). The next resource waiting for this person and client; its callback returns to
/// `/consent?request=…`, which comes back here until none waits.
async fn cascade(
    State(app): State<Arc<ConnectApp>>,
    headers: HeaderMap,
    Query(q): Query<CascadeQuery>,
) -> Response {
    let Some(id) = q.request.filter(|r| !r.is_empty() && r.len() <= 128) else {
        return expired_link();
    };
    let now = app.vault.now_ms();
    let row = match app
        .vault
        .store
        .authorization_request(&crypto::sha256_hex(&id))
        .await
    {
        Ok(Some(r)) if r.expires_at > now => r,
        Ok(_) => return expired_link(),
        Err(e) => return unavailable(e),
    };
    let Some((_, user_id)) = app.browser.signed_in(&headers).await else {
        return not_signed_in();
    };
    // The browser that started the authorization (as `sign_in/request.rs::load_request`
    // checks), signed in as the person it is for.
    let same_browser = app.browser.started(&headers, &row.browser_hash);
    let same_person = row
        .user_id
        .as_deref()
        .is_none_or(|u| crypto::constant_time_eq(u.as_bytes(), user_id.as_bytes()));
    if !same_browser || !same_person {
        tracing::warn!(
            "a cascade step was opened outside the authorization it belongs to; refused"
        );
        return pages::message(
            StatusCode::FORBIDDEN,
            "This authorization is not for you",
            "This step belongs to an authorization started in another browser or by another Doorman user. Nothing was connected; start again from your application.",
        );
    }
    let waiting = match app
        .vault
        .store
        .cascade_prompts(&user_id, &row.client_id, now)
        .await
    {
        Ok(p) => p.into_iter().find(ConnectPromptRow::waiting),
        Err(e) => return unavailable(e),
    };
    match waiting {
        Some(prompt) => redirect_to_resource(&app, &prompt, Some(&id)).await,
        None => see_other(&format!("/consent?request={id}")),
    }
}

/// To the resource's authorization endpoint; `resume`: the client authorization (request id)
/// this trip is part of, returned to afterwards.
async fn redirect_to_resource(
    app: &ConnectApp,
    prompt: &ConnectPromptRow,
    resume: Option<&str>,
) -> Response {
    let Some(rc) = app.vault.resource(&prompt.resource) else {
        if let Some(request) = resume {
            return cascade_ended(
                app,
                Some(prompt),
                request,
                StatusCode::BAD_REQUEST,
                "This resource is gone",
                "The resource this step was for is no longer configured. Nothing was connected.",
            )
            .await;
        }
        return expired_link();
    };
    let state = crypto::random_token(32);
    let now = app.vault.now_ms();
    let (verifier, challenge) = if rc.pkce() {
        let v = crypto::random_token(48);
        let c = crypto::sha256_b64url(v.as_bytes());
        (Some(v), Some(c))
    } else {
        (None, None)
    };
    let state_hash = crypto::sha256_hex(&state);
    let mut row = ConnectStateRow {
        verifier_sealed: verifier.as_ref().map(|v| {
            app.vault
                .ring
                .seal(v.as_bytes(), &verifier_aad(&state_hash))
        }),
        state_hash,
        prompt_hash: prompt.id_hash.clone(),
        user_id: prompt.user_id.clone(),
        created_at: now,
        expires_at: now + super::STATE_LIFETIME_MS,
        issuer: None,
        resume_sealed: None,
    };
    row.resume_sealed = resume.map(|r| {
        app.vault
            .ring
            .seal(r.as_bytes(), &resume_aad(&row.state_hash))
    });
    let scopes: Vec<String> = prompt
        .scopes
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let url = match rc
        .authorization_url(&state, challenge.as_deref(), &scopes)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(resource = %rc.name(), error = %e, "cannot build the authorization request");
            let text = format!(
                "Doorman could not reach {} to start the authorization. Try again in a moment.",
                rc.resource.display_name
            );
            if let Some(request) = resume {
                return cascade_ended(
                    app,
                    Some(prompt),
                    request,
                    StatusCode::BAD_GATEWAY,
                    "The resource is unavailable",
                    &text,
                )
                .await;
            }
            return pages::message(
                StatusCode::BAD_GATEWAY,
                "The resource is unavailable",
                &text,
            );
        }
    };
    // RFC 9207 / RFC 9700 §4.4: the flow is bound to the issuer it was sent to (the endpoints
    // were just read for the URL, so this is their cached copy).
    row.issuer = rc.endpoints().await.ok().and_then(|e| e.issuer);
    if let Err(e) = app.vault.store.insert_connect_state(&row).await {
        return unavailable(e);
    }
    see_other(url.as_str())
}

fn verifier_aad(state_hash: &str) -> String {
    format!("connect-state:{state_hash}|pkce")
}

fn resume_aad(state_hash: &str) -> String {
    format!("connect-state:{state_hash}|resume")
}

/// A trip inside a client's authorization that ended without a connection. The page says what
/// happened, and its link takes the browser back to the authorization. With its prompt the trip
/// counts as refused, and the authorization ends with `access_denied` for the client
/// (`sign_in/consent.rs::finish`): never a dead end that leaves the client waiting and its
/// refresh refused. Without (the prompt expired meanwhile), the authorization goes on.
async fn cascade_ended(
    app: &ConnectApp,
    prompt: Option<&ConnectPromptRow>,
    request: &str,
    status: StatusCode,
    title: &str,
    text: &str,
) -> Response {
    let next = match prompt {
        Some(p) => {
            if let Err(e) = app
                .vault
                .store
                .decline_cascade_prompt(p, app.vault.now_ms())
                .await
            {
                return unavailable(e);
            }
            "Your application's sign-in ends here: it is told that access was denied, and can ask again."
        }
        None => "Your application's sign-in goes on without it.",
    };
    pages::message_with_link(
        status,
        title,
        &format!("{text} {next}"),
        "Return to your application",
        &format!("/consent?request={request}"),
    )
}

fn unavailable(e: anyhow::Error) -> Response {
    tracing::error!(error = %e, "connect page failed");
    pages::message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Doorman is unavailable",
        "Something went wrong on Doorman's side. Try again in a moment.",
    )
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    /// RFC 9207 §2: the issuer of the authorization server that answered.
    iss: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /connect/callback` (RFC 6749 §4.1.2).
/// `GET /connect/callback`: where configured resources send their answers.
async fn shared_callback(
    State(app): State<Arc<ConnectApp>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    callback(app, headers, q, None).await
}

/// `GET /connect/callback/{resource}`: where a resource with its own redirect URI (every one
/// an upstream made known) sends its answers.
async fn resource_callback(
    State(app): State<Arc<ConnectApp>>,
    Path(resource): Path<String>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    callback(app, headers, q, Some(resource)).await
}

/// The answer of a resource's authorization server; `arrived_for` is the resource named by
/// the path it arrived at (`None`: the shared path).
async fn callback(
    app: Arc<ConnectApp>,
    headers: HeaderMap,
    q: CallbackQuery,
    arrived_for: Option<String>,
) -> Response {
    let Some(state) = q.state.filter(|s| !s.is_empty() && s.len() <= 256) else {
        return invalid_state();
    };
    // Spent before anything else: a state works once, whatever happens next.
    let row = match app
        .vault
        .store
        .take_connect_state(&crypto::sha256_hex(&state))
        .await
    {
        Ok(Some(r)) if r.expires_at > app.vault.now_ms() => r,
        Ok(_) => return invalid_state(),
        Err(e) => return unavailable(e),
    };
    let Some((_, user_id)) = app.browser.signed_in(&headers).await else {
        return not_signed_in();
    };
    if !crypto::constant_time_eq(user_id.as_bytes(), row.user_id.as_bytes()) {
        tracing::warn!("a connect callback arrived in another person's browser; refused");
        return pages::message(
            StatusCode::FORBIDDEN,
            "This authorization is not for you",
            "This authorization was started by another Doorman user. Nothing was connected.",
        );
    }
    // Inside a client's authorization (the cascade): where to return, whatever happens next.
    let resume = match &row.resume_sealed {
        Some(sealed) => match app.vault.ring.open(sealed, &resume_aad(&row.state_hash)) {
            Ok(v) => Some(String::from_utf8_lossy(&v).into_owned()),
            Err(_) => return invalid_state(),
        },
        None => None,
    };
    let prompt = match app.vault.store.connect_prompt(&row.prompt_hash).await {
        Ok(Some(p)) if p.expires_at > app.vault.now_ms() => p,
        Ok(_) => {
            return match &resume {
                Some(request) => {
                    cascade_ended(
                        &app,
                        None,
                        request,
                        StatusCode::BAD_REQUEST,
                        "Nothing was connected",
                        "This step expired before the answer came back.",
                    )
                    .await
                }
                None => expired_link(),
            };
        }
        Err(e) => return unavailable(e),
    };
    // A page for a trip that ended here without a connection.
    let ended = async |status: StatusCode, title: &str, text: &str| -> Response {
        match &resume {
            Some(request) => cascade_ended(&app, Some(&prompt), request, status, title, text).await,
            None => pages::message(status, title, text),
        }
    };
    let Some(rc) = app.vault.resource(&prompt.resource) else {
        return ended(
            StatusCode::BAD_REQUEST,
            "This resource is gone",
            "The resource this step was for is no longer configured. Nothing was connected.",
        )
        .await;
    };
    let display = rc.resource.display_name.clone();
    // RFC 9700 §4.4.2: an answer counts only at the redirect URI its flow was sent with. One
    // that arrives at another resource's path (or at the shared one, for a resource with its
    // own) was meant for another authorization server, or was steered.
    let arrived_at = match &arrived_for {
        None => app.vault.shared_redirect_uri().to_owned(),
        Some(name) => {
            crate::config::resolved::redirect_uri_of(app.vault.shared_redirect_uri(), name)
        }
    };
    if arrived_at != rc.redirect_uri() {
        tracing::warn!(resource = %rc.name(), arrived_for = ?arrived_for, "a connect answer arrived at another resource's redirect URI; refused (RFC 9700 §4.4)");
        return ended(
            StatusCode::BAD_REQUEST,
            &format!("{display} was not connected"),
            "This answer arrived at the address of another connection, so it was refused. Nothing was connected; start again from your assistant.",
        )
        .await;
    }
    // RFC 9207 §2.4 (mix-up, RFC 9700 §4.4): the answer must come from the server the flow was
    // sent to. Checked before anything in the answer is believed, error or code.
    if let Some(expected) = &row.issuer {
        let required = match rc.endpoints().await {
            Ok(e) => e.iss_required,
            Err(e) => return unavailable(anyhow::anyhow!("{e}")),
        };
        let mixed_up = match q.iss.as_deref() {
            Some(iss) => iss != expected,
            None => required,
        };
        if mixed_up {
            tracing::warn!(resource = %rc.name(), expected = %expected, got = ?q.iss, "a connect callback came from another authorization server than the one asked; refused (RFC 9207)");
            return ended(
                StatusCode::BAD_REQUEST,
                &format!("{display} was not connected"),
                "The answer did not come from the authorization server this connection was started with (its issuer does not match), so it was refused. Nothing was connected; start again from your assistant.",
            )
            .await;
        }
    }
    if let Some(error) = q.error {
        // RFC 6749 §4.1.2.1: the resource refused (the person denied, or it failed).
        tracing::info!(resource = %rc.name(), error = %error, "the resource answered the authorization with an error");
        let (title, text) = if error == "access_denied" {
            (
                format!("{display} was not connected"),
                format!(
                    "You declined at {display}. Nothing was connected; your assistant can ask again."
                ),
            )
        } else {
            let detail = q.error_description.unwrap_or_default();
            let detail: String = detail
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            (
                format!("{display} was not connected"),
                format!(
                    "{display} answered with an error ({error}{}{detail}). Nothing was connected.",
                    if detail.is_empty() { "" } else { ": " }
                ),
            )
        };
        return ended(StatusCode::BAD_REQUEST, &title, &text).await;
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        return ended(
            StatusCode::BAD_REQUEST,
            &format!("{display} was not connected"),
            "The answer from the resource had no authorization code. Nothing was connected.",
        )
        .await;
    };
    let verifier = match &row.verifier_sealed {
        Some(sealed) => match app.vault.ring.open(sealed, &verifier_aad(&row.state_hash)) {
            Ok(v) => Some(String::from_utf8_lossy(&v).into_owned()),
            Err(_) => return invalid_state(),
        },
        None => None,
    };
    let set = match rc.exchange_code(&code, verifier.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(resource = %rc.name(), error = %e, "code exchange at the resource failed");
            return ended(
                StatusCode::BAD_GATEWAY,
                &format!("{display} was not connected"),
                &format!(
                    "Doorman could not complete the authorization with {display}: {e}. Nothing was connected."
                ),
            )
            .await;
        }
    };
    let account = match rc.identity(&set).await {
        Ok(Some(a)) => a,
        Ok(None) => "account".to_owned(),
        Err(e) => {
            tracing::warn!(resource = %rc.name(), error = %e, "cannot learn the connected account; stored unnamed");
            "account".to_owned()
        }
    };
    if let Err(r) = store_and_tell(&app, &prompt, &rc, &set, &account).await {
        return r;
    }
    if let Some(request) = resume {
        // Back into the client's authorization: the next resource waiting, or the code.
        return see_other(&format!("/consent?request={request}"));
    }
    connected_page(&display, &account)
}

/// Stores what the resource (or the person's pasted key) gave, and tells a stateful client
/// whose URL elicitation it was that it is done.
async fn store_and_tell(
    app: &ConnectApp,
    prompt: &ConnectPromptRow,
    rc: &super::oauth::ResourceClient,
    set: &super::oauth::TokenSet,
    account: &str,
) -> Result<(), Response> {
    app.vault
        .store_connection(prompt, rc, set, account)
        .await
        .map_err(unavailable)?;
    if let (Some(session), Some(elicitation)) = (&prompt.session_hash, &prompt.elicitation_id) {
        (app.on_complete)(session, elicitation);
    }
    Ok(())
}

fn connected_page(display: &str, account: &str) -> Response {
    pages::message(
        StatusCode::OK,
        &format!("{display} is connected"),
        &format!(
            "Your {display} account {account} is connected. You can close this tab and go back to your assistant."
        ),
    )
}

/// The prompt behind a connect link, while it is for `resource` and still waits.
async fn live_prompt(
    app: &ConnectApp,
    prompt_id: &str,
    resource: &str,
) -> Result<ConnectPromptRow, Response> {
    match app.vault.prompt_row(prompt_id).await {
        Ok(Some(p)) if p.resource == resource && p.connection_id.is_none() => Ok(p),
        Ok(_) => Err(expired_link()),
        Err(e) => Err(unavailable(e)),
    }
}

/// The anti-phishing rule (MCP client/elicitation, "Phishing"): a link made for one person
/// cannot connect another person's account to it. Nothing is stored. `Some`: the refusal.
fn not_its_person(prompt: &ConnectPromptRow, user_id: &str) -> Option<Response> {
    if crypto::constant_time_eq(user_id.as_bytes(), prompt.user_id.as_bytes()) {
        return None;
    }
    tracing::warn!(resource = %prompt.resource, "a connect link was used by another person than the one it was made for; refused");
    Some(pages::message(
        StatusCode::FORBIDDEN,
        "This link is not for you",
        "This connect link was made for another Doorman user. If someone sent it to you, do not use it: they could gain access to your account. Nothing was connected.",
    ))
}

fn display(app: &ConnectApp, resource: &str) -> String {
    app.vault
        .resource(resource)
        .map_or_else(|| resource.to_owned(), |r| r.resource.display_name.clone())
}

fn invalid_state() -> Response {
    pages::message(
        StatusCode::BAD_REQUEST,
        "This authorization cannot be completed",
        "The answer from the resource does not match an authorization in progress (it expired, or was already used). Nothing was connected; ask your assistant to try again.",
    )
}

/// `GET /connections`.
async fn connections_page(
    State(app): State<Arc<ConnectApp>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if app.browser.signed_in(&headers).await.is_none() {
        return sign_in_and_return(&uri);
    }
    render_connections(&app, &headers, None).await
}

async fn render_connections(
    app: &ConnectApp,
    headers: &HeaderMap,
    notice: Option<&str>,
) -> Response {
    let Some(viewer) = app.browser.viewer(headers).await else {
        return not_signed_in();
    };
    let views = match app.vault.views(&viewer.user.id, None).await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let rows = rows(views, app.vault.now_ms());
    let (csrf, set_cookie) = app.browser.csrf_cookie(headers);
    with_cookie(
        pages::render(
            StatusCode::OK,
            &ConnectionsPage {
                nav: viewer.nav(&csrf, "connections"),
                person: viewer.display_name(),
                csrf: &csrf,
                rows,
                notice,
            },
        ),
        set_cookie,
    )
}

/// The signed-in person and a checked CSRF token, for the POST forms.
async fn posted(
    app: &ConnectApp,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<String, Response> {
    if !app.browser.csrf_ok(headers, form) {
        return Err(csrf_refused());
    }
    app.browser
        .signed_in(headers)
        .await
        .map(|(_, u)| u)
        .ok_or_else(not_signed_in)
}

/// `POST /connections/disconnect` (`id`).
async fn disconnect(
    State(app): State<Arc<ConnectApp>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let user_id = match posted(&app, &headers, &form).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let id = form.get("id").map(String::as_str).unwrap_or("");
    match app.vault.store.delete_connection_of(id, &user_id).await {
        Ok(Some(row)) => {
            let note = format!(
                "Disconnected your {} account {}.",
                display(&app, &row.resource),
                row.account
            );
            app.vault
                .discard(vec![row], "disconnected by its person")
                .await;
            render_connections(&app, &headers, Some(&note)).await
        }
        // Another person's id, or already gone: the same answer, nothing changed.
        Ok(None) => {
            render_connections(&app, &headers, Some("That connection no longer exists.")).await
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /connections/disconnect-all`: the kill switch.
async fn disconnect_all(
    State(app): State<Arc<ConnectApp>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let user_id = match posted(&app, &headers, &form).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    match app
        .vault
        .store
        .delete_connections_where(Some(&user_id), None)
        .await
    {
        Ok(rows) => {
            let n = rows.len();
            app.vault.discard(rows, "disconnect everything").await;
            let note = format!(
                "Disconnected {n} connection{}.",
                if n == 1 { "" } else { "s" }
            );
            render_connections(&app, &headers, Some(&note)).await
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /connections/reconnect` (`id`): authorize the same resource again, for the same
/// binding.
async fn reconnect(
    State(app): State<Arc<ConnectApp>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let user_id = match posted(&app, &headers, &form).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let id = form.get("id").map(String::as_str).unwrap_or("");
    let row = match app.vault.store.connection(id).await {
        Ok(Some(r)) if r.user_id == user_id => r,
        Ok(_) => {
            return render_connections(&app, &headers, Some("That connection no longer exists."))
                .await;
        }
        Err(e) => return unavailable(e),
    };
    let Some(rc) = app.vault.resource(&row.resource) else {
        return expired_link();
    };
    match app.vault.reconnect_prompt(&row, &rc).await {
        Ok(prompt) => redirect_to_resource(&app, &prompt, None).await,
        Err(e) => unavailable(e),
    }
}
