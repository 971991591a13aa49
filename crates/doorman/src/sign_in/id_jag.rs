//! Enterprise-managed authorization, Doorman as the authorization server (the MCP extension
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
    use base64::Engine;
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?
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
            // The provider's keys could not be read: nothing can be checked, so nothing is issued.
            other => Ok(invalid_grant(format!(
                "the ID-JAG cannot be checked now: {other}"
            ))),
        })?;
    // Draft §5.1 / RFC 7523 §3: the grant was issued to this very client.
    if !crypto::constant_time_eq(jag.client_id.as_bytes(), client.id.as_bytes()) {
        return Err(Ok(invalid_grant(
            "the ID-JAG was issued to another client (client_id)",
        )));
    }
    let now = s.clock.now_ms();
    // Single use across nodes: the same store table as client assertions, under the issuer.
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
    let Some(user_id) = upsert_person(s, provider, &who, now).await.map_err(Err)? else {
        return Err(Ok(invalid_grant(
            "the person's Doorman account is disabled",
        )));
    };
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

/// The person the ID-JAG names, as policies will see them. An ID-JAG carries few claims (often
/// no groups, no name): what it lacks, a person already known keeps from their last sign-in
/// rather than losing it. Its email counts only when the provider vouches for it
/// (`email_verified`, or `trust_email`).
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
    if let Some(id) = s
        .store
        .user_id_by_subject(&provider.issuer(), &who.subject)
        .await?
        && let Some(known) = s.store.user(&id).await?
    {
        if who.groups.is_empty() {
            who.groups = known.groups.0;
        }
        if who.email.is_none() {
            who.email = known.email;
            who.email_verified = who.email.is_some();
        }
        if who.name.is_none() {
            who.name = known.name;
        }
    }
    Ok(who)
}
