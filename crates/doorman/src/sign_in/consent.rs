//! The consent page: asked once per person and client (remembered, unless the client asks
//! again with `prompt=consent`), then the code is issued and the browser sent back to the
//! client (RFC 6749 §4.1.2, RFC 9207 `iss`). A request that needs a fresh sign-in
//! (`prompt=login`, `max_age`, or a step-up Doorman asked for) is sent back to sign in first.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};

use super::{
    AuthServer, SCOPES,
    authorize::{consented, error_to_client, redirect_to_client},
    clients::{Client, ClientKind},
    request::{Pending, RequestQuery, load_request, no_request, posted_request},
};
use crate::{
    crypto,
    store::{AuthorizationRequestRow, BrowserSessionRow, CodeRow},
    web::{
        pages::{self, CSRF_COOKIE, ConsentPage},
        see_other,
    },
};

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
        // A browser-only sign-in has no client to consent to, and never gives a code.
        Ok((_, p)) if p.client().is_none() => return no_request(),
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
        return finish(&s, &id, &row, &pending, &client, &session).await;
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
        Ok((_, _, p)) if p.client().is_none() => return no_request(),
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
            finish(&s, &id, &row, &pending, &client, &session).await
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
///
/// The re-authorization cascade comes first: while a resource this client's requests need waits
/// for the person (`prompt = "reauthorize"`), the browser goes to that resource's authorization
/// (`/connect/cascade`, which returns here); a refusal there ends this request with
/// `access_denied`; once none waits, the code continues the grant that asked.
async fn finish(
    s: &AuthServer,
    id: &str,
    row: &AuthorizationRequestRow,
    p: &Pending,
    client: &Client,
    session: &BrowserSessionRow,
) -> Response {
    let now = s.clock.now_ms();
    let cascade = match s
        .store
        .cascade_prompts(&session.user_id, &client.id, now)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the re-authorization cascade");
            return pages::message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Try again in a moment.",
            );
        }
    };
    let read: Vec<String> = cascade.iter().map(|c| c.id_hash.clone()).collect();
    if let Some(refused) = cascade.iter().find(|c| c.declined_at.is_some()) {
        let _ = s.store.take_authorization_request(&row.id_hash).await;
        if let Err(e) = s.store.end_cascade(&read).await {
            tracing::warn!(error = %e, "cannot end a re-authorization cascade");
        }
        tracing::info!(user = %session.user_id, client = %client.id, resource = %refused.resource, "authorization refused at a resource: the client gets access_denied");
        return error_to_client(
            s,
            &p.redirect_uri,
            p.state.as_deref(),
            "access_denied",
            &format!("{} was not authorized", refused.resource),
        );
    }
    if cascade.iter().any(crate::store::ConnectPromptRow::waiting) {
        return see_other(&format!("/connect/cascade?request={id}"));
    }
    // The newest grant whose requests asked (a person may run one client on two devices).
    let continues_grant = cascade.iter().rev().find_map(|c| c.cascade_grant.clone());
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
    if !cascade.is_empty()
        && let Err(e) = s.store.end_cascade(&read).await
    {
        tracing::warn!(error = %e, "cannot end a re-authorization cascade");
    }
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
        continues_grant,
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
