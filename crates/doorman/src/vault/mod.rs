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
//! redirects back to `{public_url}/connect/callback`. Disconnecting revokes at the resource
//! (RFC 7009) where it can, retrying in the background when that fails; the local copy is
//! deleted regardless. Doorman's own tokens never go upstream: an upstream tied to a resource
//! receives the active connection's token and nothing else.
//!
//! See DESIGN.md §5 and `README.md` beside this file.

pub mod connect;
pub mod discovery;
pub mod oauth;
pub mod tokens;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::{
    clock::SharedClock,
    config::{Binding, Config},
    crypto::{self, KeyRing},
    net::HttpClient,
    store::{ConnectPromptRow, ConnectionRow, PendingRevocationRow, Store},
};
use oauth::{ResourceClient, TokenSet};
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
    /// Throttles `last_used_at` writes: connection id → last write.
    touched: Mutex<HashMap<String, i64>>,
    http: HttpClient,
    redirect_uri: String,
    /// One upstream discovery at a time ([`discovery`]).
    discovering: tokio::sync::Mutex<()>,
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
        Ok(Self {
            resources: std::sync::RwLock::new(resources),
            store,
            ring,
            clock,
            issuer: config.issuer(),
            holder: crypto::random_token(12),
            refreshing: Mutex::default(),
            idle_ms: config.server.session_idle_timeout.0.as_millis() as i64,
            touched: Mutex::default(),
            http,
            redirect_uri: redirect,
            discovering: tokio::sync::Mutex::new(()),
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

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether a stored connection belongs to this caller's conversation (by its own binding).
    fn serves(row: &ConnectionRow, caller: &Holder<'_>) -> bool {
        match row.binding.as_str() {
            "session" => row.binding_target.as_deref() == Some(&caller.conversation()),
            "user" | "call" => true,
            _ => false,
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
            self.touch(&hit.connection_id, now).await;
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
            .filter(|r| r.binding == binding.as_str() && Self::serves(r, caller))
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
            self.touch(&row.id, now).await;
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
            self.cache.write().expect("vault cache").insert(
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

    async fn touch(&self, id: &str, now: i64) {
        let due = {
            let mut t = self.touched.lock().expect("touched lock");
            let last = t.get(id).copied().unwrap_or(0);
            let due = now - last > (self.idle_ms / 10).max(1000);
            if due {
                t.insert(id.to_owned(), now);
            }
            due
        };
        if due && let Err(e) = self.store.touch_connection(id, now).await {
            tracing::warn!(error = %e, "cannot record a connection's use");
        }
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
            Err(e) => {
                tracing::warn!(resource = %rc.name(), user = %row.user_id, connection = %row.id, error = %e, "refresh at the resource failed; the person will be asked to authorize again");
                crate::metrics::Metrics::count(&crate::metrics::get().refreshes, "failure");
                Ok(Err(Need::Broken))
            }
        }
    }

    /// Makes a connect prompt for this caller and resource.
    pub async fn prompt(
        &self,
        caller: &Holder<'_>,
        rc: &ResourceClient,
        need: &Need,
        decided: Lifetime,
    ) -> anyhow::Result<Prompt> {
        let (binding, _) = Self::lifetime(rc, decided);
        let id = crypto::random_token(24);
        let id_hash = crypto::sha256_hex(&id);
        let now = self.clock.now_ms();
        let scopes = match need {
            Need::MoreScopes(s) => s.clone(),
            _ => rc.resource.scopes.clone(),
        };
        let target = match binding {
            Binding::Session => Some(caller.conversation()),
            Binding::Call => Some(format!("call:{id_hash}")),
            Binding::User | Binding::Shared => None,
        };
        let elicitation_id = crypto::random_token(16);
        self.store
            .insert_connect_prompt(&ConnectPromptRow {
                id_hash,
                user_id: caller.user_id.to_owned(),
                resource: rc.name().to_owned(),
                binding: binding.as_str().to_owned(),
                binding_target: target,
                scopes: scopes.join(" "),
                elicitation_id: Some(elicitation_id.clone()),
                session_hash: caller.session_hash.map(String::from),
                connection_id: None,
                created_at: now,
                expires_at: now + PROMPT_LIFETIME_MS,
            })
            .await?;
        let url = format!("{}/connect/{}?prompt={id}", self.issuer, rc.name());
        let display = &rc.resource.display_name;
        let message = match need {
            Need::Missing => format!("Connect your {display} account to continue: {url}"),
            Need::TooOld => format!(
                "Your {display} authorization is older than this tool allows; authorize again to continue: {url}"
            ),
            Need::Broken | Need::Rejected => format!(
                "Your {display} connection no longer works; connect it again to continue: {url}"
            ),
            Need::MoreScopes(_) => format!(
                "This needs more access to your {display} account; authorize it to continue: {url}"
            ),
        };
        Ok(Prompt {
            id,
            url,
            elicitation_id,
            message,
        })
    }

    /// A prompt to authorize a connection's resource again, for the same binding (the
    /// connections page's "reconnect").
    pub async fn reconnect_prompt(
        &self,
        row: &ConnectionRow,
        rc: &ResourceClient,
    ) -> anyhow::Result<ConnectPromptRow> {
        let id_hash = crypto::sha256_hex(&crypto::random_token(24));
        let now = self.clock.now_ms();
        let prompt = ConnectPromptRow {
            id_hash,
            user_id: row.user_id.clone(),
            resource: row.resource.clone(),
            binding: row.binding.clone(),
            binding_target: row.binding_target.clone(),
            scopes: if row.scopes.is_empty() {
                rc.resource.scopes.join(" ")
            } else {
                row.scopes.clone()
            },
            elicitation_id: None,
            session_hash: None,
            connection_id: None,
            created_at: now,
            expires_at: now + PROMPT_LIFETIME_MS,
        };
        self.store.insert_connect_prompt(&prompt).await?;
        Ok(prompt)
    }

    /// The prompt behind a link id, if it is still valid.
    pub async fn prompt_row(&self, id: &str) -> anyhow::Result<Option<ConnectPromptRow>> {
        let row = self.store.connect_prompt(&crypto::sha256_hex(id)).await?;
        Ok(row.filter(|p| p.expires_at > self.clock.now_ms()))
    }

    /// Stores what the resource gave: a new connection, or new tokens for the same account
    /// in the same binding (re-authorization replaces, it does not pile up).
    pub async fn store_connection(
        &self,
        prompt: &ConnectPromptRow,
        rc: &ResourceClient,
        set: &TokenSet,
        account: &str,
    ) -> anyhow::Result<String> {
        let now = self.clock.now_ms();
        let existing = self
            .store
            .connections_of(&prompt.user_id, &prompt.resource)
            .await?
            .into_iter()
            .find(|r| {
                r.account == account
                    && r.binding == prompt.binding
                    && r.binding_target == prompt.binding_target
            });
        let id = existing
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_else(|| crypto::random_token(16));
        let seal = |which, token: &str| {
            tokens::seal(
                &self.ring,
                which,
                &id,
                &prompt.user_id,
                &prompt.resource,
                token,
            )
        };
        let scopes = set.scope.clone().unwrap_or_else(|| prompt.scopes.clone());
        let row = ConnectionRow {
            id: id.clone(),
            user_id: prompt.user_id.clone(),
            resource: prompt.resource.clone(),
            account: account.to_owned(),
            scopes,
            access_token_sealed: seal(Which::Access, &set.access_token),
            refresh_token_sealed: set.refresh_token.as_ref().map(|t| seal(Which::Refresh, t)),
            authorized_at: now,
            expires_at: set.expires_in.map(|s| now + s * 1000),
            binding: prompt.binding.clone(),
            binding_target: prompt.binding_target.clone(),
            created_at: now,
            updated_at: now,
            selected_at: now,
            last_used_at: now,
        };
        self.forget(&prompt.user_id);
        if let Some(old) = existing {
            // Replaced in one step: delete then insert under the same id.
            self.store.delete_connection(&old.id).await?;
        }
        self.store.insert_connection(&row).await?;
        self.store
            .complete_connect_prompt(&prompt.id_hash, &id)
            .await?;
        tracing::info!(resource = %rc.name(), user = %prompt.user_id, connection = %id, binding = %prompt.binding, "connection made");
        crate::audit::emit(crate::audit::AuditEvent {
            resource: Some(rc.name().to_owned()),
            account: Some(account.to_owned()),
            detail: Some(format!("binding {}", prompt.binding)),
            ..crate::audit::AuditEvent::security("connection_made", Some(&prompt.user_id))
        });
        Ok(id)
    }

    /// The connections of a person, for `doorman_whoami` and the connections page.
    pub async fn views(
        &self,
        user_id: &str,
        caller: Option<&Holder<'_>>,
    ) -> anyhow::Result<Vec<ConnectionView>> {
        let now = self.clock.now_ms();
        let rows = self.store.list_connections(Some(user_id), None).await?;
        let mut active_seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for r in rows {
            let rc = self.resource(&r.resource);
            let mine = caller.is_some_and(|c| Self::serves(&r, c));
            let active = mine && !active_seen.contains(&r.resource);
            if active {
                active_seen.push(r.resource.clone());
            }
            out.push(ConnectionView {
                display_name: rc
                    .as_ref()
                    .map(|rc| rc.resource.display_name.clone())
                    .unwrap_or_else(|| r.resource.clone()),
                remaining_ms: rc
                    .as_ref()
                    .and_then(|rc| rc.resource.max_age)
                    .map(|m| (r.authorized_at + m.as_millis() as i64 - now).max(0)),
                id: r.id,
                resource: r.resource,
                account: r.account,
                binding: r.binding,
                scopes: r.scopes,
                authorized_at: r.authorized_at,
                expires_at: r.expires_at,
                active,
                for_this_conversation: mine,
            });
        }
        Ok(out)
    }

    /// Makes `account` the active one at `resource` for this caller; false when no such
    /// connection serves the conversation.
    pub async fn use_account(
        &self,
        caller: &Holder<'_>,
        rc: &ResourceClient,
        account: &str,
    ) -> anyhow::Result<bool> {
        let rows = self.store.connections_of(caller.user_id, rc.name()).await?;
        let Some(row) = rows
            .into_iter()
            .find(|r| r.account == account && Self::serves(r, caller))
        else {
            return Ok(false);
        };
        self.forget(caller.user_id);
        self.store
            .select_connection(&row.id, self.clock.now_ms())
            .await
    }

    /// Deletes connections and revokes their tokens at the resource.
    pub async fn discard(&self, rows: Vec<ConnectionRow>, why: &str) {
        for row in rows {
            self.forget(&row.user_id);
            tracing::info!(resource = %row.resource, user = %row.user_id, connection = %row.id, why, "connection ended");
            crate::audit::emit(crate::audit::AuditEvent {
                resource: Some(row.resource.clone()),
                account: Some(row.account.clone()),
                detail: Some(why.to_owned()),
                ..crate::audit::AuditEvent::security("connection_revoked", Some(&row.user_id))
            });
            self.revoke_row(&row).await;
        }
    }

    /// RFC 7009 at the resource for both tokens of a (deleted) row; failures are queued.
    async fn revoke_row(&self, row: &ConnectionRow) {
        let Some(rc) = self.resource(&row.resource) else {
            return;
        };
        // Revoking the refresh token ends the grant at most providers (RFC 7009 §2.1); the
        // access token is revoked as well for those that keep them apart.
        for (which, hint) in [
            (Which::Refresh, "refresh_token"),
            (Which::Access, "access_token"),
        ] {
            let Some(token) = tokens::open(&self.ring, which, row) else {
                continue;
            };
            if let Err(e) = rc.revoke(&token, hint).await {
                if e.is_unsupported_token_type() {
                    tracing::debug!(resource = %row.resource, hint, "the resource does not revoke this kind of token");
                    continue;
                }
                tracing::warn!(resource = %row.resource, connection = %row.id, error = %e, "revocation at the resource failed; it will be retried");
                let now = self.clock.now_ms();
                if let Err(e) = queue_revocation(
                    &self.store,
                    &self.ring,
                    &row.resource,
                    hint,
                    &token,
                    now + 30_000,
                    now,
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot queue a revocation");
                }
            }
        }
    }

    /// Retries queued revocations (backoff doubling from 30 s, given up after a day).
    pub async fn retry_revocations(&self) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        for p in self.store.due_revocations(now, 50).await? {
            let token = self
                .ring
                .open(&p.token_sealed, &revocation_aad(&p.id, &p.resource))
                .ok()
                .and_then(|b| String::from_utf8(b.to_vec()).ok().map(Zeroizing::new));
            let (Some(rc), Some(token)) = (self.resource(&p.resource), token) else {
                self.store.delete_pending_revocation(&p.id).await?;
                continue;
            };
            match rc.revoke(&token, &p.token_kind).await {
                Ok(_) => {
                    tracing::info!(resource = %p.resource, attempts = p.attempts + 1, "queued revocation done");
                    self.store.delete_pending_revocation(&p.id).await?;
                }
                Err(e) if e.is_unsupported_token_type() => {
                    self.store.delete_pending_revocation(&p.id).await?;
                }
                Err(e) if now - p.created_at > 24 * 3600 * 1000 => {
                    tracing::warn!(resource = %p.resource, error = %e, "giving up a revocation after a day");
                    self.store.delete_pending_revocation(&p.id).await?;
                }
                Err(e) => {
                    tracing::warn!(resource = %p.resource, error = %e, "queued revocation failed again");
                    let delay = 30_000i64 << p.attempts.clamp(0, 10);
                    self.store
                        .reschedule_revocation(&p.id, p.attempts + 1, now + delay)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// A conversation ended (`DELETE`, idle expiry): its connections go.
    pub async fn end_conversation(&self, session_hash: &str) {
        match self
            .store
            .delete_connections_bound_to(&format!("session:{session_hash}"))
            .await
        {
            Ok(rows) => self.discard(rows, "the conversation ended").await,
            Err(e) => tracing::warn!(error = %e, "cannot end a conversation's connections"),
        }
    }

    /// Re-seals stored connections under the key ring's active key (after `doorman keys
    /// add-sealing-key`), a batch at a time; returns how many were re-sealed.
    pub async fn reseal_batch(&self, limit: i64) -> anyhow::Result<usize> {
        let active = self.ring.active_id();
        let mut n = 0;
        for row in self.store.connections_sealed_before(&active, limit).await? {
            let access = tokens::open(&self.ring, Which::Access, &row);
            let refresh = tokens::open(&self.ring, Which::Refresh, &row);
            let Some(access) =
                access.filter(|_| refresh.is_some() == row.refresh_token_sealed.is_some())
            else {
                // Sealed for another row, or under a key no longer in the ring: it stays as it
                // is (it will never open; using it prompts the person to connect again).
                tracing::debug!(connection = %row.id, "a stored token does not open; not re-sealed");
                continue;
            };
            let seal = |which, t: &str| {
                tokens::seal(&self.ring, which, &row.id, &row.user_id, &row.resource, t)
            };
            let new_refresh = refresh.as_ref().map(|t| seal(Which::Refresh, t));
            if self
                .store
                .reseal_connection(
                    &row.id,
                    &row.access_token_sealed,
                    &seal(Which::Access, &access),
                    new_refresh.as_deref(),
                )
                .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Background upkeep: idle stateless conversations, queued revocations, expired prompts,
    /// and — with a key ring file — new keys, and re-sealing under them.
    pub fn spawn_maintenance(self: &Arc<Self>, ring_source: crypto::KeyRingSource) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                n += 1;
                let Some(v) = me.upgrade() else { return };
                let now = v.clock.now_ms();
                if let crypto::KeyRingSource::File(path) = &ring_source
                    && n.is_multiple_of(5)
                {
                    match v.ring.reload(path) {
                        Ok(true) => {
                            tracing::info!(active = %v.ring.active_id(), "key ring reloaded: a new key seals")
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot reload the key ring"),
                    }
                }
                match v.reseal_batch(200).await {
                    Ok(0) => {}
                    Ok(k) => tracing::info!(
                        connections = k,
                        "re-sealed connections under the active key"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot re-seal connections"),
                }
                match v.store.delete_idle_grant_connections(now - v.idle_ms).await {
                    Ok(rows) if !rows.is_empty() => {
                        v.discard(rows, "the conversation was idle").await
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot end idle connections"),
                }
                if let Err(e) = v.retry_revocations().await {
                    tracing::warn!(error = %e, "cannot retry revocations");
                }
                if let Err(e) = v.store.purge_connect_state(now).await {
                    tracing::warn!(error = %e, "cannot purge connect state");
                }
            }
        });
    }
}

/// Queues an RFC 7009 revocation for the server to make at `next_at` (the token sealed
/// meanwhile). Operator commands queue instead of calling resources themselves: they need no
/// client secrets, and the server retries.
pub async fn queue_revocation(
    store: &Store,
    ring: &KeyRing,
    resource: &str,
    hint: &str,
    token: &str,
    next_at: i64,
    now: i64,
) -> anyhow::Result<()> {
    let id = crypto::random_token(12);
    let pending = PendingRevocationRow {
        token_sealed: ring.seal(token.as_bytes(), &revocation_aad(&id, resource)),
        id,
        resource: resource.to_owned(),
        token_kind: hint.to_owned(),
        attempts: 0,
        next_at,
        created_at: now,
    };
    store.insert_pending_revocation(&pending).await
}

/// Queues the revocation of both tokens of deleted connections, due now.
pub async fn queue_revocations_of(
    store: &Store,
    ring: &KeyRing,
    rows: &[ConnectionRow],
    now: i64,
) -> anyhow::Result<usize> {
    let mut n = 0;
    for row in rows {
        for (which, hint) in [
            (Which::Refresh, "refresh_token"),
            (Which::Access, "access_token"),
        ] {
            if let Some(token) = tokens::open(ring, which, row) {
                queue_revocation(store, ring, &row.resource, hint, &token, now, now).await?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn revocation_aad(id: &str, resource: &str) -> String {
    format!("revocation:{id}|resource:{resource}")
}

fn expired(row: &ConnectionRow, now: i64) -> bool {
    row.expires_at.is_some_and(|e| e - EXPIRY_SKEW_MS <= now)
}

/// The header carrying a token to the upstream, marked sensitive (never logged).
fn header(rc: &ResourceClient, token: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let th = &rc.resource.token_header;
    let mut value = HeaderValue::from_str(&th.value(token))
        .map_err(|_| anyhow::anyhow!("the {} token is not header-safe", rc.name()))?;
    value.set_sensitive(true);
    Ok((th.name.clone(), value))
}

#[cfg(test)]
#[path = "vault_tests.rs"]
mod tests;
