//! A connection's life outside the request path: connect prompts and the connections they
//! produce, listing them for pages and tools, choosing the active account, discarding and
//! revoking at the resource (retried in the background), ending a conversation's connections,
//! and re-sealing under a new key.

use std::{sync::Arc, time::Duration};

use zeroize::Zeroizing;

use super::{
    ConnectionView, Credential, Holder, Lifetime, Need, PROMPT_LIFETIME_MS, Prompt, Vault,
    oauth::{ResourceClient, TokenSet},
    tokens::{self, Which},
};
use crate::{
    config::Binding,
    crypto::{self, KeyRing},
    store::{ConnectPromptRow, ConnectionRow, PendingRevocationRow, Store},
};

impl Vault {
    /// Makes a connect prompt for this caller and resource.
    pub async fn prompt(
        &self,
        caller: &Holder<'_>,
        rc: &ResourceClient,
        need: &Need,
        decided: Lifetime,
    ) -> anyhow::Result<Prompt> {
        let (prompt, row) = self.new_prompt(caller, rc, need, decided, None);
        self.store.insert_connect_prompt(&row).await?;
        Ok(prompt)
    }

    /// A prompt of the re-authorization cascade: it waits on `client_id`'s next authorization
    /// and names this caller's grant (whose refresh is refused meanwhile). One already waiting
    /// for the same person, client, resource and conversation is renewed instead (its trip to
    /// the resource may be under way): then `None`, no new link.
    pub async fn cascade_prompt(
        &self,
        caller: &Holder<'_>,
        client_id: &str,
        rc: &ResourceClient,
        need: &Need,
        decided: Lifetime,
    ) -> anyhow::Result<Option<Prompt>> {
        let (prompt, row) = self.new_prompt(caller, rc, need, decided, Some(client_id));
        if self.store.renew_cascade_prompt(&row).await? {
            return Ok(None);
        }
        self.store.insert_connect_prompt(&row).await?;
        Ok(Some(prompt))
    }

    fn new_prompt(
        &self,
        caller: &Holder<'_>,
        rc: &ResourceClient,
        need: &Need,
        decided: Lifetime,
        cascade_client: Option<&str>,
    ) -> (Prompt, ConnectPromptRow) {
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
        let row = ConnectPromptRow {
            id_hash,
            user_id: caller.user_id.to_owned(),
            resource: rc.name().to_owned(),
            binding,
            binding_target: target,
            scopes: scopes.join(" "),
            // A cascade is no elicitation: nothing to tell the client when it completes.
            elicitation_id: cascade_client.is_none().then(|| elicitation_id.clone()),
            session_hash: caller.session_hash.map(String::from),
            connection_id: None,
            created_at: now,
            expires_at: now + PROMPT_LIFETIME_MS,
            cascade_client: cascade_client.map(String::from),
            cascade_grant: cascade_client.map(|_| caller.grant.to_owned()),
            declined_at: None,
        };
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
            Need::Unavailable(_) => format!(
                "{display} cannot be reached right now; if it keeps failing, connect again: {url}"
            ),
        };
        (
            Prompt {
                id,
                url,
                elicitation_id,
                message,
            },
            row,
        )
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
            binding: row.binding,
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
            cascade_client: None,
            cascade_grant: None,
            declined_at: None,
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
        self.store_connection_how(prompt, rc, set, account, "")
            .await
    }

    async fn store_connection_how(
        &self,
        prompt: &ConnectPromptRow,
        rc: &ResourceClient,
        set: &TokenSet,
        account: &str,
        how: &str,
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
            binding: prompt.binding,
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
        // A prompt made for the occasion (an ID-JAG's connection) was never stored.
        if !prompt.id_hash.is_empty() {
            self.store
                .complete_connect_prompt(&prompt.id_hash, &id)
                .await?;
        }
        if prompt.cascade_client.is_some() {
            self.store.complete_cascade_prompts(prompt, &id).await?;
        }
        tracing::info!(resource = %rc.name(), user = %prompt.user_id, connection = %id, binding = %prompt.binding, "connection made");
        crate::audit::emit(crate::audit::AuditEvent {
            resource: Some(rc.name().to_owned()),
            account: Some(account.to_owned()),
            detail: Some(format!("binding {}{how}", prompt.binding)),
            ..crate::audit::AuditEvent::security("connection_made", Some(&prompt.user_id))
        });
        Ok(id)
    }

    /// A connection from an ID-JAG of the company's IdP (`[resources.id_jag]`), with no
    /// prompt: redeemed at the resource (RFC 7523 jwt-bearer), stored in this caller's binding
    /// as a prompt's would be, then served as any credential.
    pub async fn connect_with_id_jag(
        &self,
        caller: &Holder<'_>,
        rc: &ResourceClient,
        decided: Lifetime,
        id_jag: &str,
    ) -> Result<Credential, String> {
        let set = rc
            .redeem_id_jag(
                id_jag,
                rc.resource
                    .id_jag
                    .as_ref()
                    .and_then(|j| j.resource.as_deref()),
            )
            .await
            .map_err(|e| format!("{} refused the ID-JAG: {e}", rc.resource.display_name))?;
        let account = match rc.identity(&set).await {
            Ok(Some(a)) => a,
            _ => "account".to_owned(),
        };
        let (_, mut row) = self.new_prompt(caller, rc, &Need::Missing, decided, None);
        // Not a stored prompt: nothing to complete, nobody to tell.
        row.id_hash = String::new();
        row.elicitation_id = None;
        let id = self
            .store_connection_how(&row, rc, &set, &account, " (ID-JAG)")
            .await
            .map_err(|e| format!("the connection could not be stored: {e}"))?;
        match self.credential(caller, rc, Some(&id), decided).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(need)) => Err(format!(
                "the new connection cannot serve this call ({need:?})"
            )),
            Err(e) => Err(format!("the vault could not be read: {e}")),
        }
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
                binding: r.binding.as_str().to_owned(),
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
        // A pasted API key has no authorization server to revoke it at: deleting it here is
        // all Doorman can do (the person revokes it at the service).
        if rc.resource.oauth.is_none() {
            return;
        }
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
    /// Runs every `poll` (`server.poll_interval`); the key ring file is re-read every fifth time.
    pub fn spawn_maintenance(self: &Arc<Self>, ring_source: crypto::KeyRingSource, poll: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
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
