//! Layer 2: people connect their own accounts at resources, and Doorman keeps the tokens.
//!
//! A **resource** is configured once (`[[resources]]`: endpoints or an issuer to discover them,
//! client credentials, scopes, lifetime policy); presets fill in well-known providers (GitHub,
//! Google, Linear, Slack, Atlassian, Notion).
//!
//! A **connection** is one person's authorization of one account at one resource: sealed
//! access and refresh tokens, scopes, the account's identity at the resource, `authorized_at`,
//! expiry, and its **binding** — `session` (one conversation, the default), `user` (across
//! conversations), `call` (one tool call) or `shared` (one operator credential for everyone,
//! still recorded per person). `max_age` is measured from `authorized_at` on every call: inside
//! it an expired token is refreshed silently (single-flight across nodes by a lease in the
//! store), past it the person authorizes again. When a tool call needs a connection that is
//! missing, broken or too old, the person gets the connect prompt ([`Prompt`]); its
//! `/connect/…` page ([`connect`]) checks that the signed-in browser is the person the prompt
//! was made for, then sends it to the resource with PKCE and a single-use `state`; the resource
//! redirects back to `{public_url}/connect/callback` (`/connect/callback/{upstream}` for a resource
//! an upstream made known). Disconnecting revokes at the resource
//! (RFC 7009) where it can, retrying in the background when that fails; the local copy is
//! deleted regardless. Doorman's own tokens never go upstream: an upstream tied to a resource
//! receives the active connection's token and nothing else.
//!
//! This file holds the types and the hot path: finding, checking and refreshing the
//! credential for one request. Everything that makes, lists, ends or re-seals connections is
//! in `lifecycle.rs`. `README.md` beside this file has the states and every refusal.

pub mod api_key;
pub mod connect;
pub mod discovery;
mod lifecycle;
pub mod oauth;
pub mod tokens;
mod touches;

pub use lifecycle::{queue_revocation, queue_revocations_of};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderName, HeaderValue};
use secrecy::ExposeSecret;

use crate::{
    clock::SharedClock,
    config::{Binding, Config},
    crypto::{self, KeyRing},
    net::HttpClient,
    store::{ConnectionRow, Store},
};
use oauth::ResourceClient;
use tokens::Which;

/// How long a connect link stays usable.
pub const PROMPT_LIFETIME_MS: i64 = 60 * 60 * 1000;
/// How long one trip to the resource may take (the `state`'s lifetime).
pub const STATE_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// An access token this close to its expiry is refreshed first.
const EXPIRY_SKEW_MS: i64 = 30_000;
/// How long a node may hold a connection's refresh lease.
const LEASE_MS: i64 = 30_000;

/// Who is calling, and in which conversation.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    /// The person's Doorman id.
    pub user_id: &'a str,
    /// The client grant (the access token's `sid`): a stateless conversation's scope.
    pub grant: &'a str,
    /// The stateful MCP session (its id's hash), if any.
    pub session_hash: Option<&'a str>,
}

impl Holder<'_> {
    /// What a `session`-bound connection made now is bound to.
    fn conversation(&self) -> String {
        match self.session_hash {
            Some(h) => format!("session:{h}"),
            None => format!("grant:{}", self.grant),
        }
    }
}

/// What the request's policy decision says about connection lifetimes (`None`: the
/// resource's own), from [`crate::policy::Decision`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Lifetime {
    pub binding: Option<Binding>,
    pub max_age: Option<Duration>,
}

impl Lifetime {
    pub fn of(d: &crate::policy::Decision) -> Self {
        Self {
            binding: d.binding,
            max_age: d.max_age,
        }
    }
}

/// Why a connection cannot be used, and so what the prompt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// No connection for this conversation.
    Missing,
    /// The person authorized longer ago than `max_age` allows.
    TooOld,
    /// The resource refused the refresh, or the tokens no longer open.
    Broken,
    /// The upstream refused the token (401).
    Rejected,
    /// The upstream asked for more scopes (403 `insufficient_scope`): the union to ask for.
    MoreScopes(Vec<String>),
    /// The resource's authorization server could not renew the connection right now (it did
    /// not answer in time, reset, or answered garbage): not a refusal, so no prompt; the
    /// connection is kept and the next call tries again. Why, for the person.
    Unavailable(String),
}

/// A usable credential for one upstream request.
pub struct Credential {
    /// The connection it came from (`None` for a shared credential).
    pub connection_id: Option<String>,
    pub account: String,
    pub header: (HeaderName, HeaderValue),
    /// `binding = "call"`: the connection was taken for this call; revoke it afterwards.
    pub spent: Option<ConnectionRow>,
    /// The scopes the connection holds.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("connection_id", &self.connection_id)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A connect prompt made for a person: the link to give them.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The random handle in the link (not a credential: the page wants the person signed in).
    pub id: String,
    pub url: String,
    pub elicitation_id: String,
    /// A sentence a person (or a model relaying it) understands.
    pub message: String,
}

/// One line of `doorman_whoami` and of the connections page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionView {
    pub id: String,
    pub resource: String,
    pub display_name: String,
    pub account: String,
    pub binding: String,
    pub scopes: String,
    pub authorized_at: i64,
    pub expires_at: Option<i64>,
    /// Milliseconds left before `max_age` ends it (`None`: no limit).
    pub remaining_ms: Option<i64>,
    pub active: bool,
    pub for_this_conversation: bool,
}

/// How long an opened credential is served from memory. Bounds how long a change made on
/// another node (a disconnect, a refresh) takes to reach this one.
const CACHE_TTL_MS: i64 = 5_000;
/// At most this many opened credentials are held in memory.
const CACHE_LIMIT: usize = 50_000;

/// Inserts into a cache that holds at most `limit` entries: when full, the entries no longer
/// `fresh` go; if that is not enough (a burst of distinct keys), all of them do. A miss only
/// costs a store read, so forgetting is always safe.
fn insert_bounded<V>(
    map: &mut HashMap<String, V>,
    limit: usize,
    fresh: impl Fn(&V) -> bool,
    key: String,
    value: V,
) {
    if map.len() >= limit && !map.contains_key(&key) {
        map.retain(|_, v| fresh(v));
        if map.len() >= limit {
            map.clear();
        }
    }
    map.insert(key, value);
}

/// A credential served from memory.
#[derive(Clone)]
struct Cached {
    connection_id: String,
    user_id: String,
    account: String,
    header: (HeaderName, HeaderValue),
    scopes: Vec<String>,
    authorized_at: i64,
    expires_at: Option<i64>,
    until: i64,
}

fn cache_key(caller: &Holder<'_>, resource: &str, binding: Binding) -> String {
    let scope = match binding {
        Binding::Session => caller.conversation(),
        _ => String::new(),
    };
    format!(
        "{}\u{0}{resource}\u{0}{}\u{0}{scope}",
        caller.user_id,
        binding.as_str()
    )
}

/// The vault: resources, connections, prompts.
pub struct Vault {
    /// Configured resources, then those discovered from upstreams (MCP authorization).
    resources: std::sync::RwLock<Vec<Arc<ResourceClient>>>,
    pub store: Store,
    pub(crate) ring: Arc<KeyRing>,
    clock: SharedClock,
    pub(crate) issuer: String,
    /// This process's name in refresh leases.
    holder: String,
    /// Single-flight refresh inside this process (the lease covers the others).
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Idle window of stateless conversations' connections.
    idle_ms: i64,
    /// `last_used_at` writes: throttled, gathered, off the request path.
    touches: Arc<touches::Touches>,
    http: HttpClient,
    /// The shared redirect URI of configured resources; discovered ones add their name.
    redirect_uri: String,
    /// Upstreams with no configured resource: each may become a resource by discovery, with
    /// its own redirect URI.
    discoverable: Vec<String>,
    /// One upstream discovery at a time ([`discovery`]).
    discovering: tokio::sync::Mutex<()>,
    /// Fetches metadata whose URLs an upstream gave (discovery).
    guarded: Arc<crate::net::guarded::GuardedFetcher>,
    /// Opened credentials, briefly ([`CACHE_TTL_MS`]).
    cache: std::sync::RwLock<HashMap<String, Cached>>,
}

impl Vault {
    pub fn new(
        config: &Config,
        store: Store,
        ring: Arc<KeyRing>,
        clock: SharedClock,
        http: HttpClient,
    ) -> anyhow::Result<Self> {
        let redirect = crate::config::resolved::redirect_uri(config);
        let resources = crate::config::resolved::resolve_all(config)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .into_iter()
            .map(|r| {
                ResourceClient::new(r, http.clone(), clock.clone(), redirect.clone()).map(Arc::new)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let idle_ms = config.server.session_idle_timeout.0.as_millis() as i64;
        Ok(Self {
            touches: Arc::new(touches::Touches::new(store.clone(), idle_ms)),
            resources: std::sync::RwLock::new(resources),
            store,
            ring,
            clock,
            issuer: config.issuer(),
            holder: crypto::random_token(12),
            refreshing: Mutex::default(),
            idle_ms,
            http,
            redirect_uri: redirect,
            discoverable: config
                .upstreams
                .iter()
                .filter(|u| u.resource.is_none())
                .map(|u| u.name.clone())
                .collect(),
            discovering: tokio::sync::Mutex::new(()),
            guarded: Arc::new(crate::net::guarded::GuardedFetcher::new(
                crate::net::guarded::FetchPolicy {
                    allow_http_loopback: config.sign_in.development,
                    max_bytes: 64 * 1024,
                    ..crate::net::guarded::FetchPolicy::default()
                },
            )?),
            cache: std::sync::RwLock::default(),
        })
    }

    pub fn resource(&self, name: &str) -> Option<Arc<ResourceClient>> {
        self.resources
            .read()
            .expect("resources lock")
            .iter()
            .find(|r| r.name() == name)
            .cloned()
    }

    pub fn resources(&self) -> Vec<Arc<ResourceClient>> {
        self.resources.read().expect("resources lock").clone()
    }

    /// The redirect URI configured resources share (`{public_url}/connect/callback`).
    pub fn shared_redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether a stored connection belongs to this caller's conversation (by its own binding).
    fn serves(row: &ConnectionRow, caller: &Holder<'_>) -> bool {
        match row.binding {
            Binding::Session => row.binding_target.as_deref() == Some(&caller.conversation()),
            Binding::User | Binding::Call => true,
            // Never stored: a shared resource has one operator credential and no connections.
            Binding::Shared => false,
        }
    }

    /// The binding and `max_age` that apply at `rc`: the request's decision overrides the
    /// resource's (a shared resource has one credential, whatever the decision says).
    pub fn lifetime(rc: &ResourceClient, decided: Lifetime) -> (Binding, Option<Duration>) {
        let binding = rc.resource.binding;
        if binding == Binding::Shared {
            return (binding, None);
        }
        (
            decided.binding.unwrap_or(binding),
            decided.max_age.or(rc.resource.max_age),
        )
    }

    /// The credential for one request to an upstream tied to `rc`: the active connection of
    /// this conversation, refreshed if needed; or what the person must do first.
    /// `preferred`: the connection a prompt produced (the retry after connecting uses it).
    pub async fn credential(
        &self,
        caller: &Holder<'_>,
        rc: &ResourceClient,
        preferred: Option<&str>,
        decided: Lifetime,
    ) -> anyhow::Result<Result<Credential, Need>> {
        let (binding, max_age) = Self::lifetime(rc, decided);
        if binding == Binding::Shared {
            let token = rc
                .shared_token
                .as_ref()
                .expect("a shared resource has its credential (checked at start)");
            // Recorded per person even though the credential is everyone's.
            tracing::info!(resource = %rc.name(), user = %caller.user_id, "shared credential used");
            return Ok(Ok(Credential {
                connection_id: None,
                account: "shared".into(),
                header: header(rc, token.expose_secret())?,
                spent: None,
                scopes: rc.resource.scopes.clone(),
            }));
        }
        let now = self.clock.now_ms();
        let key = cache_key(caller, rc.name(), binding);
        if preferred.is_none()
            && binding != Binding::Call
            && let Some(hit) = self.cached(&key, now, max_age)
        {
            crate::metrics::Metrics::count(&crate::metrics::get().vault_lookups, "hit");
            self.touches.note(&hit.connection_id, None, now);
            return Ok(Ok(Credential {
                connection_id: Some(hit.connection_id.clone()),
                account: hit.account.clone(),
                header: hit.header.clone(),
                spent: None,
                scopes: hit.scopes.clone(),
            }));
        }
        crate::metrics::Metrics::count(&crate::metrics::get().vault_lookups, "miss");
        let rows = self.store.connections_of(caller.user_id, rc.name()).await?;
        let mut candidates: Vec<ConnectionRow> = rows
            .into_iter()
            .filter(|r| r.binding == binding && Self::serves(r, caller))
            .collect();
        if let Some(p) = preferred
            && let Some(i) = candidates.iter().position(|r| r.id == p)
        {
            let row = candidates.remove(i);
            candidates.insert(0, row);
        }
        let Some(row) = candidates.into_iter().next() else {
            return Ok(Err(Need::Missing));
        };
        // Measured from when the person last authenticated at the resource, on every call.
        if let Some(max_age) = max_age
            && now - row.authorized_at > max_age.as_millis() as i64
        {
            return Ok(Err(Need::TooOld));
        }
        let row = if expired(&row, now) {
            match self.refresh(rc, row).await? {
                Ok(r) => r,
                Err(need) => return Ok(Err(need)),
            }
        } else {
            row
        };
        let Some(token) = tokens::open(&self.ring, Which::Access, &row) else {
            tracing::warn!(resource = %rc.name(), connection = %row.id, "a stored token does not open (wrong key or moved row)");
            return Ok(Err(Need::Broken));
        };
        let spent = if binding == Binding::Call {
            // One call, then destroyed: taken now so no second call can use it.
            if !self.store.delete_connection(&row.id).await? {
                return Ok(Err(Need::Missing));
            }
            Some(row.clone())
        } else {
            self.touches.note(&row.id, Some(row.last_used_at), now);
            None
        };
        let header = header(rc, &token)?;
        let scopes: Vec<String> = row
            .scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if spent.is_none() {
            insert_bounded(
                &mut self.cache.write().expect("vault cache"),
                CACHE_LIMIT,
                |c: &Cached| c.until > now,
                key,
                Cached {
                    connection_id: row.id.clone(),
                    user_id: row.user_id.clone(),
                    account: row.account.clone(),
                    header: header.clone(),
                    scopes: scopes.clone(),
                    authorized_at: row.authorized_at,
                    expires_at: row.expires_at,
                    until: now + CACHE_TTL_MS,
                },
            );
        }
        Ok(Ok(Credential {
            connection_id: Some(row.id.clone()),
            account: row.account.clone(),
            header,
            spent,
            scopes,
        }))
    }

    /// A credential for listing an upstream's tools, never prompting and never spending a
    /// `call` connection.
    pub async fn listing_credential(
        &self,
        caller: &Holder<'_>,
        rc: &ResourceClient,
        decided: Lifetime,
    ) -> Option<Credential> {
        if Self::lifetime(rc, decided).0 == Binding::Call {
            return None;
        }
        match self.credential(caller, rc, None, decided).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(_)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a connection for listing");
                None
            }
        }
    }

    /// A cached credential still good for `max_age`, its token unexpired and the entry fresh.
    fn cached(&self, key: &str, now: i64, max_age: Option<Duration>) -> Option<Cached> {
        let cache = self.cache.read().expect("vault cache");
        let hit = cache.get(key)?;
        let fresh = hit.until > now
            && hit.expires_at.is_none_or(|e| e - EXPIRY_SKEW_MS > now)
            && max_age.is_none_or(|m| now - hit.authorized_at <= m.as_millis() as i64);
        fresh.then(|| hit.clone())
    }

    /// Forgets cached credentials of a person (after any change to their connections here;
    /// other nodes' caches expire within [`CACHE_TTL_MS`]).
    pub fn forget(&self, user_id: &str) {
        self.cache
            .write()
            .expect("vault cache")
            .retain(|_, c| c.user_id != user_id);
    }

    /// Refreshes an expired access token, once across every process: the in-process lock
    /// makes concurrent callers here wait, the store's lease makes other nodes wait; whoever
    /// waited reads the refreshed row instead of refreshing again (a rotated refresh token is
    /// never replayed, RFC 9700 §4.14.2).
    async fn refresh(
        &self,
        rc: &ResourceClient,
        row: ConnectionRow,
    ) -> anyhow::Result<Result<ConnectionRow, Need>> {
        let lock = self
            .refreshing
            .lock()
            .expect("refresh locks")
            .entry(row.id.clone())
            .or_default()
            .clone();
        let _one_here = lock.lock().await;
        let mut waited = 0;
        loop {
            let Some(current) = self.store.connection(&row.id).await? else {
                return Ok(Err(Need::Missing));
            };
            let now = self.clock.now_ms();
            if !expired(&current, now) {
                return Ok(Ok(current));
            }
            if self
                .store
                .acquire_connection_lease(&row.id, &self.holder, now, LEASE_MS)
                .await?
            {
                break;
            }
            // Another node is refreshing: wait for its result (at most the lease's length).
            waited += 1;
            if waited > 150 {
                return Ok(Err(Need::Broken));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let outcome = self.refresh_holding_lease(rc, &row.id).await;
        if let Err(e) = self
            .store
            .release_connection_lease(&row.id, &self.holder)
            .await
        {
            tracing::warn!(error = %e, "cannot release a refresh lease");
        }
        outcome
    }

    async fn refresh_holding_lease(
        &self,
        rc: &ResourceClient,
        id: &str,
    ) -> anyhow::Result<Result<ConnectionRow, Need>> {
        // Read again under the lease: another node may have finished just before.
        let Some(row) = self.store.connection(id).await? else {
            return Ok(Err(Need::Missing));
        };
        let now = self.clock.now_ms();
        if !expired(&row, now) {
            return Ok(Ok(row));
        }
        let Some(refresh_token) = tokens::open(&self.ring, Which::Refresh, &row) else {
            // No refresh token (the resource issued none): the person authorizes again.
            return Ok(Err(Need::Broken));
        };
        match rc.refresh(&refresh_token).await {
            Ok(set) => {
                let access = tokens::seal(
                    &self.ring,
                    Which::Access,
                    &row.id,
                    &row.user_id,
                    &row.resource,
                    &set.access_token,
                );
                let refresh = set.refresh_token.as_ref().map(|t| {
                    tokens::seal(
                        &self.ring,
                        Which::Refresh,
                        &row.id,
                        &row.user_id,
                        &row.resource,
                        t,
                    )
                });
                let expires_at = set.expires_in.map(|s| now + s * 1000);
                self.forget(&row.user_id);
                self.store
                    .update_connection_tokens(&row.id, &access, refresh.as_deref(), expires_at, now)
                    .await?;
                tracing::info!(resource = %rc.name(), user = %row.user_id, connection = %row.id, "connection refreshed");
                crate::metrics::Metrics::count(&crate::metrics::get().refreshes, "success");
                crate::audit::emit(crate::audit::AuditEvent {
                    resource: Some(rc.name().to_owned()),
                    account: Some(row.account.clone()),
                    ..crate::audit::AuditEvent::security("connection_refreshed", Some(&row.user_id))
                });
                Ok(self.store.connection(id).await?.ok_or(Need::Missing))
            }
            // A refusal (RFC 6749 §5.2, e.g. `invalid_grant`): only authorizing again helps.
            Err(e @ oauth::ResourceError::Refused { .. }) => {
                tracing::warn!(resource = %rc.name(), user = %row.user_id, connection = %row.id, error = %e, "the resource refused the refresh; the person will be asked to authorize again");
                crate::metrics::Metrics::count(&crate::metrics::get().refreshes, "failure");
                Ok(Err(Need::Broken))
            }
            // Down, slow, or answering garbage: a prompt would send the person to the same
            // server for nothing, and the connection is likely fine. Try again next call.
            Err(e) => {
                tracing::warn!(resource = %rc.name(), user = %row.user_id, connection = %row.id, error = %e, "the resource's authorization server could not renew the connection; kept, tried again at the next call");
                crate::metrics::Metrics::count(&crate::metrics::get().refreshes, "unavailable");
                Ok(Err(Need::Unavailable(e.to_string())))
            }
        }
    }
}

fn expired(row: &ConnectionRow, now: i64) -> bool {
    row.expires_at.is_some_and(|e| e - EXPIRY_SKEW_MS <= now)
}

/// The header carrying a token to the upstream, marked sensitive (never logged).
pub fn header(rc: &ResourceClient, token: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let th = &rc.resource.token_header;
    if let Some(param) = &th.query {
        // An API key the upstream takes in its URL: `send` moves it there.
        let pair = zeroize::Zeroizing::new(
            form_urlencoded::Serializer::new(String::new())
                .append_pair(param, token)
                .finish(),
        );
        let mut value = HeaderValue::from_str(&pair)
            .map_err(|_| anyhow::anyhow!("the {} key is not URI-safe", rc.name()))?;
        value.set_sensitive(true);
        return Ok((crate::net::http::QUERY_CREDENTIAL, value));
    }
    let mut value = HeaderValue::from_str(&th.value(token))
        .map_err(|_| anyhow::anyhow!("the {} token is not header-safe", rc.name()))?;
    value.set_sensitive(true);
    Ok((th.name.clone(), value))
}

#[cfg(test)]
#[path = "vault_tests.rs"]
mod tests;
