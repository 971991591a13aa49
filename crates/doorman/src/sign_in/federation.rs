//! The browser's trip to an OpenID Connect provider and back: `/sign-in/oidc/{provider}` and
//! `/sign-in/callback` (the redirect URI registered at every provider), and the periodic
//! re-check at the provider when a client refreshes (deprovisioning reaches Doorman).

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;

use super::{
    AuthServer,
    oidc::{Identity, OidcError, Provider},
    request::{load_request, no_request},
};
use crate::{
    crypto,
    store::{BrowserSessionRow, FederatedIdentityRow, OidcStateRow, UserRow},
    web::{
        pages::{self, SESSION_COOKIE},
        see_other, with_cookie,
    },
};

/// How long a person may take at the provider.
const STATE_LIFETIME_MS: i64 = 10 * 60 * 1000;

fn provider_page(p: &Provider, e: &OidcError) -> Response {
    // One log line with the detail; the person gets the gist and what to do.
    tracing::warn!(provider = p.name(), error = %e, "sign-in through a provider failed");
    pages::message(
        StatusCode::BAD_GATEWAY,
        "Sign-in is not available right now",
        &format!(
            "Doorman could not complete the sign-in with {}: {e}. Try again later, or tell your administrator.",
            p.display_name()
        ),
    )
}

#[derive(Deserialize)]
pub struct StartQuery {
    request: Option<String>,
}

/// `GET /sign-in/oidc/{provider}?request=…`: off to the provider.
pub async fn start(
    State(s): State<Arc<AuthServer>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some(id) = q.request else {
        return no_request();
    };
    let Some(provider) = s.providers.iter().find(|p| p.name() == name).cloned() else {
        return pages::message(
            StatusCode::NOT_FOUND,
            "Unknown provider",
            "This sign-in option does not exist.",
        );
    };
    let (row, pending) = match load_request(&s, &id, &headers).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    redirect_to_provider(&s, &provider, &id, &row.browser_hash, pending.force_sign_in).await
}

/// Stores the trip's state and sends the browser to the provider.
pub async fn redirect_to_provider(
    s: &AuthServer,
    provider: &Provider,
    request_id: &str,
    browser_hash: &str,
    force_login: bool,
) -> Response {
    let state = crypto::random_token(24);
    let nonce = crypto::random_token(24);
    let verifier = crypto::random_token(48);
    let challenge = crypto::sha256_b64url(verifier.as_bytes());
    let url = match provider
        .authorization_url(&state, &nonce, &challenge, force_login)
        .await
    {
        Ok(u) => u,
        Err(e) => return provider_page(provider, &e),
    };
    let now = s.clock.now_ms();
    let state_hash = crypto::sha256_hex(&state);
    let row = OidcStateRow {
        state_hash: state_hash.clone(),
        provider: provider.name().to_owned(),
        browser_hash: browser_hash.to_owned(),
        request_sealed: s
            .ring
            .seal(request_id.as_bytes(), &format!("oidc-request:{state_hash}")),
        nonce_hash: crypto::sha256_hex(&nonce),
        verifier_sealed: s
            .ring
            .seal(verifier.as_bytes(), &format!("oidc-verifier:{state_hash}")),
        created_at: now,
        expires_at: now + STATE_LIFETIME_MS,
    };
    if let Err(e) = s.store.insert_oidc_state(&row).await {
        tracing::error!(error = %e, "cannot store a sign-in state");
        return pages::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Try again in a moment.",
        );
    }
    see_other(&url)
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// RFC 9207 §2: the issuer of the server that answered.
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn refused(title: &str, message: &str) -> Response {
    pages::message(StatusCode::BAD_REQUEST, title, message)
}

/// `GET /sign-in/callback`: the provider sends the browser back here.
pub async fn callback(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(state) = q.state.filter(|v| !v.is_empty()) else {
        return refused(
            "Sign-in failed",
            "The provider's answer has no state. Start again from your application.",
        );
    };
    let state_hash = crypto::sha256_hex(&state);
    // Single use: whatever happens next, this state is spent.
    let row = match s.store.take_oidc_state(&state_hash).await {
        Ok(Some(row)) if row.expires_at > s.clock.now_ms() => row,
        Ok(_) => {
            return refused(
                "Sign-in failed",
                "This sign-in is unknown, used or expired (state mismatch). Start again from your application.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a sign-in state");
            return pages::message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Try again in a moment.",
            );
        }
    };
    // The browser that left for the provider is the one that came back (login CSRF).
    let same_browser = s.browser.started(&headers, &row.browser_hash);
    if !same_browser {
        return refused(
            "Wrong browser",
            "This sign-in was started in another browser. Start again from your application.",
        );
    }
    let Some(provider) = s
        .providers
        .iter()
        .find(|p| p.name() == row.provider)
        .cloned()
    else {
        return refused("Sign-in failed", "This provider is no longer configured.");
    };
    // RFC 9207 §2.4: the answer comes from the provider this sign-in was sent to (a mix-up
    // defence when several providers share this callback); checked before it is believed.
    let required = match provider.discovery().await {
        Ok(d) => d.authorization_response_iss_parameter_supported,
        Err(e) => {
            tracing::warn!(provider = provider.name(), error = %e, "cannot read the provider's metadata");
            return refused(
                "Sign-in failed",
                "The provider could not be reached to check its answer. Try again in a moment.",
            );
        }
    };
    let mixed_up = match q.iss.as_deref() {
        Some(iss) => iss.trim_end_matches('/') != provider.issuer(),
        None => required,
    };
    if mixed_up {
        tracing::warn!(provider = provider.name(), got = ?q.iss, "a sign-in answer came from another issuer than the provider asked; refused (RFC 9207)");
        return refused(
            "Sign-in failed",
            "The answer did not come from the provider this sign-in was sent to (its issuer does not match). Start again from your application.",
        );
    }
    if let Some(error) = q.error {
        tracing::info!(provider = provider.name(), error = %error, description = ?q.error_description, "the provider refused the sign-in");
        return refused(
            "Sign-in refused",
            &format!(
                "{} refused the sign-in ({error}). Start again from your application.",
                provider.display_name()
            ),
        );
    }
    let Some(code) = q.code else {
        return refused("Sign-in failed", "The provider's answer has no code.");
    };
    let open = |sealed: &str, what: &str| {
        s.ring
            .open(sealed, &format!("{what}:{state_hash}"))
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
    };
    let (Some(request_id), Some(verifier)) = (
        open(&row.request_sealed, "oidc-request"),
        open(&row.verifier_sealed, "oidc-verifier"),
    ) else {
        return pages::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "This sign-in cannot be read back (was the key ring replaced?).",
        );
    };
    let answer = match provider.exchange_code(&code, &verifier).await {
        Ok(a) => a,
        Err(e) => return provider_page(&provider, &e),
    };
    let Some(id_token) = answer.id_token else {
        return provider_page(
            &provider,
            &OidcError::Invalid("no id_token in the token answer".into()),
        );
    };
    let validated = match provider
        .validate_id_token(&id_token, Some(&row.nonce_hash))
        .await
    {
        Ok(w) => {
            provider
                .complete_identity(w, answer.access_token.as_ref())
                .await
        }
        Err(e) => Err(e),
    };
    let who = match validated {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(provider = provider.name(), error = %e, "ID token refused");
            return refused(
                "Sign-in failed",
                &format!(
                    "The answer from {} could not be verified: {e}.",
                    provider.display_name()
                ),
            );
        }
    };
    if let Err(why) = provider.admits(&who) {
        tracing::info!(provider = provider.name(), subject = %who.subject, reason = %why, "sign-in not allowed");
        crate::audit::emit(crate::audit::AuditEvent {
            detail: Some(format!("provider {}: {why}", provider.name())),
            ..crate::audit::AuditEvent::security("sign_in_failed", None)
        });
        return pages::message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!("You signed in at {}, but {why}.", provider.display_name()),
        );
    }
    let now = s.clock.now_ms();
    let user_id = match upsert_person(&s, &provider, &who, now).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return pages::message(
                StatusCode::FORBIDDEN,
                "Account disabled",
                "Your Doorman account is disabled. Ask your administrator.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record a person");
            return pages::message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Try again in a moment.",
            );
        }
    };
    let sealed_refresh = answer
        .refresh_token
        .as_deref()
        .map(|rt| s.ring.seal(rt.as_bytes(), &format!("federated:{user_id}")));
    let session_id = crypto::random_token(32);
    let auth_time = who.auth_time.map(|t| t * 1000).unwrap_or(now);
    let session = BrowserSessionRow {
        id_hash: crypto::sha256_hex(&session_id),
        user_id: user_id.clone(),
        auth_time,
        amr: serde_json::to_string(&who.amr).unwrap_or_else(|_| "[]".into()),
        acr: who.acr.clone(),
        created_at: now,
        expires_at: now + s.settings.sign_in_lifetime_ms,
    };
    let (id_token_sealed, id_token_expires_at) = sealed_id_token(&s, &user_id, &id_token);
    let saved = async {
        s.store
            .save_federated_identity(&FederatedIdentityRow {
                user_id: user_id.clone(),
                provider: provider.name().to_owned(),
                refresh_token_sealed: sealed_refresh,
                checked_at: now,
                id_token_sealed,
                id_token_expires_at,
            })
            .await?;
        s.store.insert_browser_session(&session).await?;
        s.store
            .set_authorization_request_user(&crypto::sha256_hex(&request_id), &user_id)
            .await
    };
    if let Err(e) = saved.await {
        tracing::error!(error = %e, "cannot record a sign-in");
        return pages::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Try again in a moment.",
        );
    }
    tracing::info!(user = %user_id, provider = provider.name(), "signed in through a provider");
    crate::audit::emit(crate::audit::AuditEvent {
        person: who.email.clone(),
        detail: Some(format!("provider {}", provider.name())),
        ..crate::audit::AuditEvent::security("sign_in", Some(&user_id))
    });
    let cookie = s.browser.cookies.set(
        SESSION_COOKIE,
        &session_id,
        s.settings.sign_in_lifetime_ms / 1000,
    );
    let next = super::request::after_sign_in(s.as_ref(), &request_id).await;
    with_cookie(see_other(&next), Some(cookie))
}

/// Finds or creates the person (issuer, subject) and refreshes their email, name and groups;
/// `None` when the person is disabled in Doorman.
pub(super) async fn upsert_person(
    s: &AuthServer,
    p: &Provider,
    who: &Identity,
    now: i64,
) -> anyhow::Result<Option<String>> {
    let issuer = p.issuer();
    let groups = crate::store::Groups(who.groups.clone());
    let id = match s.store.user_id_by_subject(&issuer, &who.subject).await? {
        Some(id) => id,
        None => {
            let row = UserRow {
                id: crypto::random_token(16),
                issuer: issuer.clone(),
                subject: who.subject.clone(),
                username: None,
                email: who.email.clone(),
                name: who.name.clone(),
                groups: groups.clone(),
                is_admin: false,
                disabled_at: None,
                created_at: now,
            };
            if !s.store.insert_user(&row).await? {
                // Created concurrently by another sign-in of the same person.
                s.store
                    .user_id_by_subject(&issuer, &who.subject)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("person vanished while being created"))?
            } else {
                row.id
            }
        }
    };
    s.store
        .update_federated_user(&id, who.email.as_deref(), who.name.as_deref(), &groups)
        .await?;
    let user = s.store.user(&id).await?;
    Ok(user.filter(|u| u.disabled_at.is_none()).map(|u| u.id))
}

/// A validated ID token sealed for the person (associated data `federated-id-token:{user}`),
/// and its `exp` in ms: the subject of a later ID-JAG exchange (`id_jag::obtain`).
pub(super) fn sealed_id_token(
    s: &AuthServer,
    user_id: &str,
    id_token: &str,
) -> (Option<String>, Option<i64>) {
    let exp = crypto::unverified_jwt_claims(id_token)
        .and_then(|v| v.get("exp").and_then(serde_json::Value::as_i64));
    match exp {
        Some(exp) => (
            Some(s.ring.seal(id_token.as_bytes(), &id_token_aad(user_id))),
            Some(exp * 1000),
        ),
        None => (None, None),
    }
}

pub(super) fn id_token_aad(user_id: &str) -> String {
    format!("federated-id-token:{user_id}")
}

/// Why a refresh was refused after asking the provider.
pub struct Deprovisioned(pub String);

/// Before a client refreshes: when the person signed in through a provider and was last checked
/// there longer ago than its `recheck_interval`, asks the provider again with its refresh token.
/// A refusal revokes every sign-in of the person; an unreachable provider is logged and the
/// check retried at the next refresh (Doorman keeps serving while a provider is down).
pub async fn recheck(s: &AuthServer, user_id: &str) -> Result<(), Deprovisioned> {
    let Ok(Some(fed)) = s.store.federated_identity(user_id).await else {
        return Ok(());
    };
    let Some(provider) = s
        .providers
        .iter()
        .find(|p| p.name() == fed.provider)
        .cloned()
    else {
        return Ok(());
    };
    let now = s.clock.now_ms();
    if now - fed.checked_at < provider.config.recheck_interval.0.as_millis() as i64 {
        return Ok(());
    }
    let aad = format!("federated:{user_id}");
    let Some(refresh_token) = fed
        .refresh_token_sealed
        .as_deref()
        .and_then(|sealed| s.ring.open(sealed, &aad).ok())
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
    else {
        // No way to ask the provider: the person must sign in there again.
        return Err(deprovision(
            s,
            user_id,
            provider.name(),
            "no refresh token from the provider to re-check with",
            now,
        )
        .await);
    };
    // One refresh per person at a time across nodes (the provider rotates refresh tokens): a
    // node that finds another refreshing leaves the re-check to it.
    let holder = crypto::random_token(12);
    match s
        .store
        .acquire_federated_refresh(user_id, &holder, now, 30_000)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the re-check lease; re-checking later");
            return Ok(());
        }
    }
    let outcome = recheck_with(s, user_id, &provider, &refresh_token, &aad, now).await;
    let _ = s.store.release_federated_refresh(user_id, &holder).await;
    outcome
}

/// The re-check itself, under the lease.
async fn recheck_with(
    s: &AuthServer,
    user_id: &str,
    provider: &Provider,
    refresh_token: &str,
    aad: &str,
    now: i64,
) -> Result<(), Deprovisioned> {
    match provider.refresh(refresh_token).await {
        Ok(answer) => {
            if let Some(id_token) = &answer.id_token {
                let validated = match provider.validate_id_token(id_token, None).await {
                    Ok(w) => {
                        provider
                            .complete_identity(w, answer.access_token.as_ref())
                            .await
                    }
                    Err(e) => Err(e),
                };
                match validated {
                    Ok(who) => {
                        if let Err(why) = provider.admits(&who) {
                            return Err(deprovision(s, user_id, provider.name(), &why, now).await);
                        }
                        let groups = crate::store::Groups(who.groups.clone());
                        let _ = s
                            .store
                            .update_federated_user(
                                user_id,
                                who.email.as_deref(),
                                who.name.as_deref(),
                                &groups,
                            )
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(provider = provider.name(), error = %e, "ID token from a refresh refused")
                    }
                }
            }
            let sealed = answer
                .refresh_token
                .as_deref()
                .map(|rt| s.ring.seal(rt.as_bytes(), aad));
            let (id_token_sealed, id_token_expires_at) = match &answer.id_token {
                Some(t) => sealed_id_token(s, user_id, t),
                None => (None, None),
            };
            let _ = s
                .store
                .save_federated_identity(&FederatedIdentityRow {
                    user_id: user_id.to_owned(),
                    provider: provider.name().to_owned(),
                    refresh_token_sealed: sealed,
                    checked_at: now,
                    id_token_sealed,
                    id_token_expires_at,
                })
                .await;
            Ok(())
        }
        Err(OidcError::Refused(why)) => {
            Err(deprovision(s, user_id, provider.name(), &why, now).await)
        }
        Err(e) => {
            tracing::warn!(provider = provider.name(), error = %e, "cannot re-check a person at the provider; will retry");
            Ok(())
        }
    }
}

async fn deprovision(
    s: &AuthServer,
    user_id: &str,
    provider: &str,
    why: &str,
    now: i64,
) -> Deprovisioned {
    tracing::warn!(user = %user_id, provider, reason = why, "the provider no longer vouches for this person; their sign-ins are revoked");
    if let Ok(grants) = s.store.grants(Some(user_id)).await {
        for g in grants.iter().filter(|g| g.revoked_at.is_none()) {
            s.tokens.revocations.revoke_grant_locally(&g.id, now);
        }
    }
    if let Err(e) = s
        .store
        .sign_out_everywhere(user_id, now, "refused by the identity provider")
        .await
    {
        tracing::error!(error = %e, "cannot revoke the person's sign-ins");
    }
    Deprovisioned(format!(
        "your sign-in at {provider} has ended; sign in again"
    ))
}
