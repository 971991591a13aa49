//! The sign-in page of an authorization request: Doorman's own accounts (password, then TOTP
//! when the account has it) or a button per SSO provider; one provider and no local accounts
//! goes straight to the provider. A successful sign-in is remembered by a browser session and
//! continues to the consent page.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use secrecy::SecretString;

use super::{
    AuthServer,
    accounts::SignInError,
    request::{
        Pending, RequestQuery, client_name, load_request, local_path, next_after_sign_in,
        no_request, posted_request, seal_return_to,
    },
};
use crate::{
    crypto,
    store::{AuthorizationRequestRow, BrowserSessionRow},
    web::{
        pages::{self, CSRF_COOKIE, SESSION_COOKIE, SignInPage},
        see_other, with_cookie,
    },
};

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
    let name = match pending.client() {
        Some(c) => client_name(&s, c).await,
        None => None,
    };
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
    let name = match pending.client() {
        Some(c) => client_name(&s, c).await,
        None => None,
    };
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
                SignInError::Locked { .. } | SignInError::Busy { .. } => {
                    StatusCode::TOO_MANY_REQUESTS
                }
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
                client_id: pending.client().map(String::from),
                detail: Some(e.kind().to_owned()),
                ..crate::audit::AuditEvent::security("sign_in_failed", None)
            });
            let ask_totp = matches!(e, SignInError::TotpRequired | SignInError::TotpInvalid);
            let mut page = again(status, &e.to_string(), ask_totp);
            // RFC 6585 §4: when to come back.
            if let SignInError::Locked { retry_after } | SignInError::Busy { retry_after } = &e
                && let Ok(v) =
                    axum::http::HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
            {
                page.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
            return page;
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
        client_id: pending.client().map(String::from),
        detail: Some("local account".into()),
        ..crate::audit::AuditEvent::security("sign_in", Some(&user.id))
    });
    let cookie = s.browser.cookies.set(
        SESSION_COOKIE,
        &session_id,
        s.settings.sign_in_lifetime_ms / 1000,
    );
    let next = next_after_sign_in(&s, &id, &row.id_hash, &pending);
    with_cookie(see_other(&next), Some(cookie))
}

#[derive(serde::Deserialize)]
pub struct ReturnQuery {
    return_to: Option<String>,
}

/// `GET /sign-in/browser?return_to=/path`: signs this browser in to Doorman (the same sign-in
/// page, local accounts or SSO) and comes back to `return_to`, a path on Doorman. For pages a
/// person opens outside any client, such as a connect link.
pub async fn browser_sign_in(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(q): Query<ReturnQuery>,
) -> Response {
    let Some(path) = q.return_to.as_deref().and_then(local_path) else {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Nothing to sign in to",
            "This sign-in link does not say which Doorman page to return to.",
        );
    };
    if s.browser.signed_in(&headers).await.is_some() {
        return see_other(path);
    }
    let now = s.clock.now_ms();
    let (csrf, set_csrf) = s.browser.csrf_cookie(&headers);
    let id = crypto::random_token(24);
    let id_hash = crypto::sha256_hex(&id);
    let sealed = seal_return_to(&s, &id_hash, path);
    let row = AuthorizationRequestRow {
        id_hash,
        browser_hash: crypto::sha256_hex(&csrf),
        client_id: String::new(),
        params: serde_json::to_string(&Pending::browser_only(sealed))
            .expect("pending requests serialize"),
        user_id: None,
        created_at: now,
        expires_at: now + super::authorize::REQUEST_LIFETIME_MS,
    };
    if let Err(e) = s.store.insert_authorization_request(&row).await {
        tracing::error!(error = %e, "cannot store a browser sign-in");
        return pages::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong",
            "Try again in a moment.",
        );
    }
    with_cookie(see_other(&format!("/sign-in?request={id}")), set_csrf)
}
