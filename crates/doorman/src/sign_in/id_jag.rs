//! Enterprise-managed authorization in both directions. Doorman as a client of the IdP
//! ([`obtain`]): for a resource whose authorization server trusts the company's IdP
//! (`[resources.id_jag]`), an ID-JAG for the person, by RFC 8693 token exchange of the ID token
//! their sign-in brought (refreshed at the IdP when it has expired); `gateway/layer2.rs` redeems
//! it at the resource through the vault. Below, Doorman as the authorization server (the MCP extension
//! `io.modelcontextprotocol/enterprise-managed-authorization`): a client the company's IdP
//! vouches for presents an Identity Assertion JWT Authorization Grant (ID-JAG) at
//! `/oauth/token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1)
//! and gets an access token for the person it names, with no browser.
//!
//! The IdP is one of `[[sign_in.oidc]]` with `id_jag = true`: the same provider people sign in
//! through, so the person is the same `users` row whichever way they come, and the provider's
//! `allowed_email_domains` and `allowed_groups` apply. Every refusal is `invalid_grant` (RFC 7523
//! §3.1) with the reason; a client that cannot authenticate is `unauthorized_client`. Each grant
//! issues one access token and no refresh token: when it expires the client asks the IdP for a
//! new ID-JAG, so the IdP's policy is consulted again (and a person it stopped vouching for
//! gets no more tokens).

use super::{AuthServer, clients::Client, federation::upsert_person, oidc::Identity};
use crate::{crypto, store::GrantRow};

/// Why an ID-JAG was refused: the OAuth error code and its description.
#[derive(Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub description: String,
}

fn invalid_grant(description: impl Into<String>) -> Refusal {
    Refusal {
        code: "invalid_grant",
        description: description.into(),
    }
}

/// The issuer an assertion claims, read before any check only to choose the provider whose
/// keys check it.
fn claimed_issuer(assertion: &str) -> Option<String> {
    crypto::unverified_jwt_claims(assertion)?
        .get("iss")?
        .as_str()
        .map(|i| i.trim_end_matches('/').to_owned())
}

/// Checks an ID-JAG presented by `client` and makes the grant its access token is issued
/// under. `Err(None)` is Doorman's own failure (logged), not the client's.
pub async fn grant_for(
    s: &AuthServer,
    client: &Client,
    assertion: &str,
    scope: Option<&str>,
) -> Result<GrantRow, Result<Refusal, anyhow::Error>> {
    // RFC 7523 §3: the client is authenticated as usual; a bearer grant in the hands of a client
    // that proves nothing about itself would be redeemable by anyone who saw it.
    if client.service || client.auth == super::clients::TokenAuth::None {
        return Err(Ok(Refusal {
            code: "unauthorized_client",
            description: "ID-JAGs are redeemed by confidential clients that authenticate (a client secret or private_key_jwt)".into(),
        }));
    }
    if let Some(scope) = scope
        && scope
            .split(' ')
            .any(|sc| !sc.is_empty() && sc != super::MCP_SCOPE)
    {
        return Err(Ok(Refusal {
            code: "invalid_scope",
            description: format!("the only scope is {:?}", super::MCP_SCOPE),
        }));
    }
    let issuer = claimed_issuer(assertion).ok_or_else(|| {
        Ok(invalid_grant(
            "the assertion is not a JWT with an iss claim",
        ))
    })?;
    let Some(provider) = s
        .providers
        .iter()
        .find(|p| p.config.id_jag && p.issuer() == issuer)
    else {
        return Err(Ok(invalid_grant(
            "the assertion was not issued by an identity provider this server accepts ID-JAGs from",
        )));
    };
    let jag = provider
        .validate_id_jag(assertion, &s.issuer, &s.resource)
        .await
        .map_err(|e| match e {
            super::oidc::OidcError::IdToken(why) => {
                Ok(invalid_grant(format!("the ID-JAG is not valid: {why}")))
            }
            // The provider's keys could not be read: nothing can be checked, so nothing is
            // issued; the grant is not spent, so the client may try it again (not
            // `invalid_grant`, after which clients drop it).
            other => Ok(Refusal {
                code: "server_error",
                description: format!("the ID-JAG cannot be checked now: {other}"),
            }),
        })?;
    // Draft §5.1 / RFC 7523 §3: the grant was issued to this very client.
    if !crypto::constant_time_eq(jag.client_id.as_bytes(), client.id.as_bytes()) {
        return Err(Ok(invalid_grant(
            "the ID-JAG was issued to another client (client_id)",
        )));
    }
    let now = s.clock.now_ms();
    // Everything that reads or decides comes before the `jti` is spent, and nothing is written
    // for a refusal.
    let who = vouched(s, provider, jag.identity).await.map_err(Err)?;
    if let Err(why) = provider.admits(&who) {
        crate::audit::emit(crate::audit::AuditEvent {
            detail: Some(format!("provider {} (ID-JAG): {why}", provider.name())),
            ..crate::audit::AuditEvent::security("sign_in_failed", None)
        });
        return Err(Ok(invalid_grant(format!(
            "the person may not sign in here: {why}"
        ))));
    }
    if let Some(id) = s
        .store
        .user_id_by_subject(&provider.issuer(), &who.subject)
        .await
        .map_err(Err)?
        && s.store
            .user(&id)
            .await
            .map_err(Err)?
            .is_some_and(|u| u.disabled_at.is_some())
    {
        return Err(Ok(invalid_grant(
            "the person's Doorman account is disabled",
        )));
    }
    // Single use across nodes, in the table client assertions use, under a name no client id
    // can have (`id-jag:` is refused as a configured client_id; the others are URLs or random).
    let spent = s
        .store
        .use_assertion_jti(
            &format!("id-jag:{issuer}"),
            &jag.jti,
            (jag.exp + 60) * 1000,
            now,
        )
        .await
        .map_err(Err)?;
    if !spent {
        return Err(Ok(invalid_grant("the ID-JAG was already used")));
    }
    let Some(user_id) = upsert_person(s, provider, &who, now).await.map_err(Err)? else {
        return Err(Ok(invalid_grant(
            "the person's Doorman account is disabled",
        )));
    };
    // Each ID-JAG makes a grant that ends with its one access token: the person's grants that
    // ended are of no more use.
    s.store
        .delete_expired_grants_of(&user_id, now)
        .await
        .map_err(Err)?;
    let grant = GrantRow {
        id: crypto::random_token(16),
        user_id: user_id.clone(),
        client_id: client.id.clone(),
        scope: super::MCP_SCOPE.to_owned(),
        resource: s.resource.clone(),
        auth_time: who.auth_time.map(|t| t * 1000).unwrap_or(now),
        amr: serde_json::to_string(&who.amr).unwrap_or_else(|_| "[]".into()),
        acr: who.acr.clone(),
        created_at: now,
        // One access token's life: the next one comes with a new ID-JAG.
        expires_at: now + s.tokens.lifetime_ms(),
        last_used_at: now,
        revoked_at: None,
        revoked_reason: None,
    };
    s.store.insert_grant(&grant).await.map_err(Err)?;
    tracing::info!(user = %user_id, client = %client.id, provider = provider.name(), "signed in with an ID-JAG");
    crate::audit::emit(crate::audit::AuditEvent {
        person: who.email.clone(),
        client_id: Some(client.id.clone()),
        detail: Some(format!(
            "provider {} (ID-JAG, enterprise-managed authorization)",
            provider.name()
        )),
        ..crate::audit::AuditEvent::security("sign_in", Some(&user_id))
    });
    Ok(grant)
}

/// The person the ID-JAG names, as policies will see them: what the ID-JAG says, as an ID
/// token would. Its groups are the `groups` claim (the provider's `claims.groups`) or none, so a
/// person the IdP took out of a group loses it here at once, whatever an older sign-in said; its
/// email counts only when the provider vouches for it (`email_verified`, or `trust_email`). Only
/// the display name, which decides nothing, is kept from before when the ID-JAG lacks one.
async fn vouched(
    s: &AuthServer,
    provider: &super::oidc::Provider,
    mut who: Identity,
) -> anyhow::Result<Identity> {
    if !(who.email_verified || provider.config.trust_email) {
        who.email = None;
    }
    // `trust_email`: the provider's address counts as verified, for its domain rules too.
    who.email_verified = who.email.is_some();
    if who.name.is_none()
        && let Some(id) = s
            .store
            .user_id_by_subject(&provider.issuer(), &who.subject)
            .await?
        && let Some(known) = s.store.user(&id).await?
    {
        who.name = known.name;
    }
    Ok(who)
}

/// Doorman as the IdP's client: an ID-JAG for `user_id`, who signed in through the provider
/// named `provider`, for the authorization server `audience`. `Err` says why not (the person
/// signed in some other way, the IdP refused, the IdP is down), for the audit; the caller falls
/// back to the connect prompt.
pub async fn obtain(
    s: &AuthServer,
    user_id: &str,
    provider: &str,
    audience: &str,
    resource: Option<&str>,
    scope: Option<&str>,
) -> Result<secrecy::SecretString, String> {
    let (p, subject) = subject_id_token(s, user_id, provider).await?;
    p.id_jag_for(&subject, audience, resource, scope)
        .await
        .map_err(|e| format!("{} gave no ID-JAG: {e}", p.display_name()))
}

/// The person's ID token from `provider`, as the subject of a token exchange there: the one
/// their sign-in brought while it has a minute left, else a fresh one from a refresh.
pub async fn subject_id_token<'a>(
    s: &'a AuthServer,
    user_id: &str,
    provider: &str,
) -> Result<(&'a super::oidc::Provider, String), String> {
    let Some(p) = s.providers.iter().find(|p| p.name() == provider) else {
        return Err(format!("no provider {provider:?} is configured"));
    };
    let fed = s
        .store
        .federated_identity(user_id)
        .await
        .map_err(|e| format!("the store could not be read: {e}"))?
        .filter(|f| f.provider == provider)
        .ok_or_else(|| format!("the person did not sign in through {provider}"))?;
    let now = s.clock.now_ms();
    let stored = match (&fed.id_token_sealed, fed.id_token_expires_at) {
        (Some(sealed), Some(exp)) if exp > now + 60_000 => s
            .ring
            .open(sealed, &super::federation::id_token_aad(user_id))
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok()),
        _ => None,
    };
    let subject = match stored {
        Some(t) => t,
        None => refreshed_id_token(s, p, user_id, &fed).await?,
    };
    Ok((p, subject))
}

/// A fresh ID token for the person from a refresh at their provider, under the one-refresh-at-a-
/// time lease; the rotated refresh token and the new ID token are kept. A node that finds the
/// lease taken waits for the holder's ID token instead of refreshing the same token again.
async fn refreshed_id_token(
    s: &AuthServer,
    p: &super::oidc::Provider,
    user_id: &str,
    fed: &crate::store::FederatedIdentityRow,
) -> Result<String, String> {
    let holder = crypto::random_token(12);
    let now = s.clock.now_ms();
    let store_failed = |e: anyhow::Error| format!("the store could not be read: {e}");
    if !s
        .store
        .acquire_federated_refresh(user_id, &holder, now, 30_000)
        .await
        .map_err(store_failed)?
    {
        for _ in 0..30 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = s.clock.now_ms();
            if let Some(f) = s
                .store
                .federated_identity(user_id)
                .await
                .map_err(store_failed)?
                && let (Some(sealed), Some(exp)) = (&f.id_token_sealed, f.id_token_expires_at)
                && exp > now + 60_000
                && let Ok(b) = s
                    .ring
                    .open(sealed, &super::federation::id_token_aad(user_id))
                && let Ok(t) = String::from_utf8(b.to_vec())
            {
                return Ok(t);
            }
        }
        return Err("another node is refreshing the person's sign-in at the provider".into());
    }
    let refreshed = async {
        let aad = format!("federated:{user_id}");
        let refresh = fed
            .refresh_token_sealed
            .as_deref()
            .and_then(|sealed| s.ring.open(sealed, &aad).ok())
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .ok_or("the person's sign-in has expired and the provider gave no refresh token")?;
        let answer = p
            .refresh(&refresh)
            .await
            .map_err(|e| format!("the provider refused to refresh the sign-in: {e}"))?;
        let id_token = answer
            .id_token
            .ok_or("the provider's refresh brought no ID token")?;
        p.validate_id_token(&id_token, None)
            .await
            .map_err(|e| format!("the refreshed ID token is not valid: {e}"))?;
        let (id_token_sealed, id_token_expires_at) =
            super::federation::sealed_id_token(s, user_id, &id_token);
        s.store
            .save_federated_identity(&crate::store::FederatedIdentityRow {
                user_id: user_id.to_owned(),
                provider: p.name().to_owned(),
                refresh_token_sealed: answer
                    .refresh_token
                    .as_deref()
                    .map(|rt| s.ring.seal(rt.as_bytes(), &aad)),
                checked_at: s.clock.now_ms(),
                id_token_sealed,
                id_token_expires_at,
            })
            .await
            .map_err(|e| format!("the store could not be written: {e}"))?;
        Ok::<_, String>(id_token)
    }
    .await;
    let _ = s.store.release_federated_refresh(user_id, &holder).await;
    refreshed
}
