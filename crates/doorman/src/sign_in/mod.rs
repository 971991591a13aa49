//! Layer 1: Doorman is the MCP authorization server, and `/mcp` its protected resource.
//!
//! People sign in once (local accounts here; SSO federation builds on the same flow), approve a
//! client once, and the client holds short-lived signed access tokens and rotating refresh
//! tokens. See `README.md` beside this file for the endpoints, the flow's state and the errors.

pub mod accounts;
pub mod authorize;
pub mod bearer;
pub mod cimd;
pub mod client_assertion;
pub mod clients;
pub mod consent;
pub mod federation;
pub mod id_jag;
pub mod keys;
pub mod login;
pub mod metadata;
pub mod oidc;
pub mod register;
pub mod request;
pub mod setup;
pub mod token;
pub mod tokens;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};

use crate::{
    clock::SharedClock,
    config::{Config, SignInMode},
    crypto::KeyRing,
    store::Store,
    web::{Browser, pages::CookiePolicy},
};
use accounts::Accounts;
use clients::Clients;
use keys::SigningKeys;
use tokens::AccessTokens;

/// Scopes Doorman knows. `mcp` is what `/mcp` needs; `offline_access` is accepted for clients
/// that ask for it (refresh tokens are issued either way).
pub const SCOPES: &[(&str, &str)] = &[
    (
        "mcp",
        "use the tools, prompts and resources behind Doorman as you",
    ),
    ("offline_access", "stay signed in (refresh its access)"),
];
/// The scope `/mcp` requires.
pub const MCP_SCOPE: &str = "mcp";

/// The lifetimes and limits of layer 1, from `[sign_in]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub code_lifetime_ms: i64,
    pub sign_in_lifetime_ms: i64,
    pub registration_expiry_ms: i64,
    pub registrations_per_hour: u32,
    pub development: bool,
    /// `server.body_read_timeout`: how long a refused request's body is read before closing.
    pub body_read_timeout: Duration,
}

/// The authorization server and everything it keeps.
pub struct AuthServer {
    pub issuer: String,
    /// The protected resource: `{issuer}/mcp` (RFC 9728 `resource`, RFC 8707 audience).
    pub resource: String,
    pub store: Store,
    pub clock: SharedClock,
    pub ring: Arc<KeyRing>,
    pub keys: Arc<SigningKeys>,
    pub tokens: AccessTokens,
    pub accounts: Accounts,
    pub clients: Clients,
    /// Cookies, CSRF and the remembered browser sign-in (shared with layer 2's pages).
    pub browser: Arc<Browser>,
    pub settings: Settings,
    /// The OpenID Connect providers people may sign in through, in config order.
    pub providers: Vec<Arc<oidc::Provider>>,
    /// Whether the local account form is offered.
    pub local_accounts: bool,
}

/// A person signed in at `/mcp`: the verified claims of their access token.
#[derive(Clone, Debug)]
pub struct Person(pub Arc<tokens::AccessClaims>);

impl AuthServer {
    /// Builds the authorization server for accounts mode (`None` in local mode).
    pub async fn new(
        config: &Config,
        store: Store,
        clock: SharedClock,
        ring: Arc<KeyRing>,
        http: crate::net::HttpClient,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if config.sign_in.mode == SignInMode::Local {
            return Ok(None);
        }
        let si = &config.sign_in;
        let issuer = config.issuer();
        let resource = config.mcp_resource();
        let keys = Arc::new(SigningKeys::load(store.clone(), ring.clone(), clock.now_ms()).await?);
        let tokens = AccessTokens::new(
            keys.clone(),
            clock.clone(),
            issuer.clone(),
            resource.clone(),
            si.access_token_lifetime.0.as_millis() as i64,
            store.clone(),
        );
        let document_policy = crate::net::guarded::FetchPolicy {
            allow_http_loopback: si.development,
            ..crate::net::guarded::FetchPolicy::default()
        };
        let jwks_policy = crate::net::guarded::FetchPolicy {
            allow_http_loopback: si.development,
            max_bytes: 64 * 1024,
            ..crate::net::guarded::FetchPolicy::default()
        };
        let metadata = cimd::ClientMetadataCache::new(
            crate::net::guarded::GuardedFetcher::new(document_policy)?,
            clock.clone(),
            Duration::from_secs(300),
        );
        let assertions = client_assertion::AssertionVerifier::new(
            crate::net::guarded::GuardedFetcher::new(jwks_policy)?,
            clock.clone(),
        )
        .with_store(store.clone());
        let clients = Clients::new(&si.clients, store.clone(), metadata, assertions)?;
        let providers = si
            .oidc
            .iter()
            .map(|p| {
                oidc::Provider::new(
                    p.clone(),
                    http.clone(),
                    clock.clone(),
                    format!("{issuer}/sign-in/callback"),
                )
                .map(Arc::new)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let public = config.public_url();
        // `__Host-` cookies need `Secure`, which a browser only honours over https; a plain-http
        // public URL is only sensible on loopback during development.
        let cookies = CookiePolicy {
            secure: public.scheme() == "https",
        };
        let browser = Arc::new(Browser {
            cookies,
            store: store.clone(),
            clock: clock.clone(),
        });
        let server = Arc::new(Self {
            issuer,
            resource,
            accounts: Accounts::new(store.clone(), clock.clone(), ring.clone(), si),
            store,
            clock,
            ring,
            keys,
            tokens,
            clients,
            browser,
            settings: Settings {
                code_lifetime_ms: si.code_lifetime.0.as_millis() as i64,
                sign_in_lifetime_ms: si.sign_in_lifetime.0.as_millis() as i64,
                registration_expiry_ms: si.registration_expiry.0.as_millis() as i64,
                registrations_per_hour: si.registrations_per_hour,
                development: si.development,
                body_read_timeout: config.server.body_read_timeout.0,
            },
            providers,
            local_accounts: si.local_accounts,
        });
        server
            .tokens
            .revocations
            .poll(server.clock.now_ms(), server.tokens.lifetime_ms())
            .await?;
        Ok(Some(server))
    }

    /// The routes of the authorization server and its pages.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/.well-known/oauth-protected-resource",
                get(metadata::protected_resource),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                get(metadata::protected_resource),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                get(metadata::authorization_server),
            )
            .route(
                "/.well-known/openid-configuration",
                get(metadata::authorization_server),
            )
            .route("/oauth/jwks.json", get(metadata::jwks))
            .route("/oauth/authorize", get(authorize::authorize))
            .route("/oauth/token", post(token::token))
            .route("/oauth/revoke", post(token::revoke))
            .route("/oauth/register", post(register::register))
            .route(
                "/oauth/register/{client_id}",
                get(register::read).delete(register::delete),
            )
            .route(
                "/sign-in",
                get(login::sign_in_page).post(login::sign_in_submit),
            )
            .route(
                "/consent",
                get(consent::consent_page).post(consent::consent_submit),
            )
            .route("/setup", get(setup::page).post(setup::submit))
            .route("/sign-in/browser", get(login::browser_sign_in))
            .route("/sign-in/oidc/{provider}", get(federation::start))
            .route("/sign-in/callback", get(federation::callback))
            .with_state(self.clone())
    }

    /// Background upkeep: revocations and key rotations made by other processes, and purging
    /// what expired. Every `poll` (`server.poll_interval`) revocations are re-read and, every fifth time,
    /// signing keys; every `purge` (`server.purge_interval`) expired state is deleted.
    pub fn spawn_maintenance(self: &Arc<Self>, poll: Duration, purge: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            let mut n: u64 = 0;
            let mut last_purge = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(s) = me.upgrade() else { return };
                let now = s.clock.now_ms();
                if let Err(e) = s.tokens.revocations.poll(now, s.tokens.lifetime_ms()).await {
                    tracing::warn!(error = %e, "cannot read revocations");
                }
                if n.is_multiple_of(5)
                    && let Err(e) = s.keys.reload().await
                {
                    tracing::warn!(error = %e, "cannot reload signing keys");
                }
                if n == 0 || last_purge.elapsed() >= purge {
                    last_purge = tokio::time::Instant::now();
                    let expiry = now - s.settings.registration_expiry_ms;
                    let purged = async {
                        s.store.purge_expired_sign_in_state(now).await?;
                        s.store
                            .delete_signing_keys_retired_before(
                                now - s.tokens.lifetime_ms() - 60_000,
                            )
                            .await?;
                        s.store.delete_unused_dynamic_clients(expiry, now).await
                    };
                    match purged.await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(clients = n, "deleted unused dynamic registrations")
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot purge expired sign-in state"),
                    }
                }
                n += 1;
            }
        });
    }

    /// RFC 6749 §5.1-style JSON with `Cache-Control: no-store`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod flow_tests;
