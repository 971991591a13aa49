//! First run: with no accounts yet, `doorman serve` prints a one-time link (valid 1 hour) to a
//! page that creates the first administrator, signs them in in that browser and lands them on
//! `/admin` with the next steps.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use secrecy::SecretString;
use serde::Deserialize;

use super::AuthServer;
use crate::{
    crypto,
    store::BrowserSessionRow,
    web::{
        pages::{self, SESSION_COOKIE, SetupPage},
        see_other, with_cookie,
    },
};

const LINK_LIFETIME_MS: i64 = 3_600_000;

/// Creates a setup link when there are no people yet; returns the URL to print.
pub async fn first_run_link(s: &AuthServer) -> anyhow::Result<Option<String>> {
    if s.store.count_users().await? > 0 {
        return Ok(None);
    }
    let token = crypto::random_token(32);
    let now = s.clock.now_ms();
    s.store
        .insert_setup_link(&crypto::sha256_hex(&token), now, now + LINK_LIFETIME_MS)
        .await?;
    Ok(Some(format!("{}/setup?token={token}", s.issuer)))
}

#[derive(Deserialize)]
pub struct SetupQuery {
    token: Option<String>,
}

fn invalid_link() -> Response {
    // A restart prints a new link only while no administrator exists; the command always works.
    pages::message_with_command(
        StatusCode::NOT_FOUND,
        "This setup link is not valid",
        "It was used already or is older than an hour. An administrator can add another one on the Doorman machine, with the same configuration file Doorman runs with (it asks for the password on standard input); if no account exists yet, restarting Doorman also prints a new setup link.",
        "doorman users add NAME --admin --password-stdin --config /path/to/doorman.toml",
    )
}

/// `GET /setup?token=…`.
pub async fn page(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(q): Query<SetupQuery>,
) -> Response {
    let Some(token) = q.token else {
        return invalid_link();
    };
    if !link_usable(&s, &crypto::sha256_hex(&token)).await {
        return invalid_link();
    }
    let (csrf, set) = s.browser.csrf_cookie(&headers);
    let mut r = pages::render(
        StatusCode::OK,
        &SetupPage {
            csrf: &csrf,
            token: &token,
            username: "",
            email: "",
            error: None,
        },
    );
    if let Some(set) = set {
        r.headers_mut().append(header::SET_COOKIE, set);
    }
    r
}

/// `POST /setup`: `username`, `email`, `password`, `csrf`, `token`.
pub async fn submit(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !s.browser.csrf_ok(&headers, &form) {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Form expired",
            "This form could not be verified. Open the setup link again.",
        );
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let token_hash = crypto::sha256_hex(&token);
    let now = s.clock.now_ms();
    if !link_usable(&s, &token_hash).await {
        return invalid_link();
    }
    let username = form.get("username").map(|u| u.trim()).unwrap_or("");
    let email = form
        .get("email")
        .map(|e| e.trim())
        .filter(|e| !e.is_empty());
    let password = SecretString::from(form.get("password").cloned().unwrap_or_default());
    let csrf = form.get("csrf").cloned().unwrap_or_default();
    // Spent before the account is made, atomically, so concurrent posts make one administrator;
    // given back when the form was wrong, so a typo does not burn the link.
    if !s
        .store
        .use_setup_link(&token_hash, now)
        .await
        .unwrap_or(false)
    {
        return invalid_link();
    }
    match s
        .accounts
        .create_local_user(username, &password, email, true)
        .await
    {
        Ok(user) => {
            tracing::info!(user = %user.id, "first administrator created through the setup link");
            crate::audit::emit(crate::audit::AuditEvent {
                person: user.username.clone(),
                detail: Some("first administrator, through the setup link".into()),
                ..crate::audit::AuditEvent::security("sign_in", Some(&user.id))
            });
            // They just chose the password in this browser: signed in here, as after the
            // sign-in page, and on to the administrators' page.
            let session_id = crypto::random_token(32);
            let session = BrowserSessionRow {
                id_hash: crypto::sha256_hex(&session_id),
                user_id: user.id.clone(),
                auth_time: now,
                amr: r#"["pwd"]"#.into(),
                acr: None,
                created_at: now,
                expires_at: now + s.settings.sign_in_lifetime_ms,
            };
            if let Err(e) = s.store.insert_browser_session(&session).await {
                tracing::error!(error = %e, "cannot record the first administrator's sign-in");
                return pages::message(
                    StatusCode::OK,
                    "Doorman is ready",
                    &format!(
                        "The administrator {} was created. Sign in at {}/admin.",
                        user.username.as_deref().unwrap_or(username),
                        s.issuer
                    ),
                );
            }
            let cookie = s.browser.cookies.set(
                SESSION_COOKIE,
                &session_id,
                s.settings.sign_in_lifetime_ms / 1000,
            );
            with_cookie(see_other("/admin?welcome=1"), Some(cookie))
        }
        Err(e) => {
            if let Err(e) = s.store.restore_setup_link(&token_hash).await {
                tracing::error!(error = %e, "cannot give the setup link back");
            }
            pages::render(
                StatusCode::BAD_REQUEST,
                &SetupPage {
                    csrf: &csrf,
                    token: &token,
                    username,
                    email: email.unwrap_or(""),
                    error: Some(&e.to_string()),
                },
            )
        }
    }
}

/// A setup link works while it is unspent, unexpired, and nobody has an account yet (it is for
/// the *first* administrator; once `doorman users add` made one, the link is void).
async fn link_usable(s: &AuthServer, token_hash: &str) -> bool {
    let valid = s
        .store
        .setup_link_valid(token_hash, s.clock.now_ms())
        .await
        .unwrap_or(false);
    valid && s.store.count_users().await.is_ok_and(|n| n == 0)
}
