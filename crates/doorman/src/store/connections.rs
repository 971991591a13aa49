//! `connections` and `connection_leases`: layer 2's vault rows. Tokens arrive here sealed
//! (`vault::tokens`); the store never sees them in clear.

use super::{Backend, Invalidation, Store, on_pool};

/// One connection as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConnectionRow {
    pub id: String,
    pub user_id: String,
    pub resource: String,
    pub account: String,
    pub scopes: String,
    pub access_token_sealed: String,
    pub refresh_token_sealed: Option<String>,
    pub authorized_at: i64,
    pub expires_at: Option<i64>,
    pub binding: crate::config::Binding,
    pub binding_target: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When this account was last chosen (connected, or `doorman_use_account`): the newest is
    /// the active one.
    pub selected_at: i64,
    /// Last use, written at most every tenth of the idle window.
    pub last_used_at: i64,
}

const COLUMNS: &str = "id, user_id, resource, account, scopes, access_token_sealed, \
    refresh_token_sealed, authorized_at, expires_at, binding, binding_target, created_at, updated_at, \
    selected_at, last_used_at";

/// A person's connections to one resource, in the vault's order (the `connections_lookup` index).
pub(super) fn lookup_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM connections WHERE user_id = $1 AND resource = $2 ORDER BY selected_at DESC, created_at DESC, id"
    )
}

impl Store {
    pub async fn insert_connection(&self, c: &ConnectionRow) -> anyhow::Result<()> {
        let q = format!(
            "INSERT INTO connections ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        on_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(q.clone()))
            .bind(&c.id)
            .bind(&c.user_id)
            .bind(&c.resource)
            .bind(&c.account)
            .bind(&c.scopes)
            .bind(&c.access_token_sealed)
            .bind(&c.refresh_token_sealed)
            .bind(c.authorized_at)
            .bind(c.expires_at)
            .bind(c.binding)
            .bind(&c.binding_target)
            .bind(c.created_at)
            .bind(c.updated_at)
            .bind(c.selected_at)
            .bind(c.last_used_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        // What the person may list changed (their own list replaces the catalog).
        self.announce(&[Invalidation::Connections(c.user_id.clone())])
            .await;
        Ok(())
    }

    pub async fn connection(&self, id: &str) -> anyhow::Result<Option<ConnectionRow>> {
        let q = format!("SELECT {COLUMNS} FROM connections WHERE id = $1");
        let row = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    /// A person's connections to one resource, newest first.
    pub async fn connections_of(
        &self,
        user_id: &str,
        resource: &str,
    ) -> anyhow::Result<Vec<ConnectionRow>> {
        let q = lookup_sql();
        if let Some(reader) = &self.sqlite_reader {
            match reader.connections_of(&q, user_id, resource) {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    tracing::debug!(error = %e, "a direct SQLite read failed; read through the pool")
                }
            }
        }
        if let Some(reader) = &self.pg_reader {
            match reader.fetch_all(&q, user_id, resource).await {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    tracing::debug!(error = %e, "a direct PostgreSQL read failed; read through the pool")
                }
            }
        }
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(user_id)
            .bind(resource)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// Stores refreshed tokens; only the lease holder calls this.
    pub async fn update_connection_tokens(
        &self,
        id: &str,
        access_sealed: &str,
        refresh_sealed: Option<&str>,
        expires_at: Option<i64>,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE connections SET access_token_sealed = $2, \
             refresh_token_sealed = COALESCE($3, refresh_token_sealed), expires_at = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(access_sealed)
        .bind(refresh_sealed)
        .bind(expires_at)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    pub async fn delete_connection(&self, id: &str) -> anyhow::Result<bool> {
        let user: Option<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "DELETE FROM connections WHERE id = $1 RETURNING user_id",
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?;
        if let Some((user,)) = &user {
            self.announce(&[Invalidation::Connections(user.clone())])
                .await;
        }
        Ok(user.is_some())
    }

    /// Tells every node that these people's connections changed.
    async fn announce_connections_of(&self, rows: &[ConnectionRow]) {
        let mut users: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let changes: Vec<Invalidation> = users
            .into_iter()
            .map(|u| Invalidation::Connections(u.to_owned()))
            .collect();
        self.announce(&changes).await;
    }

    /// Deletes the connections bound to something that ended (a conversation, a grant); returns
    /// them, so their tokens can be revoked at the resource.
    pub async fn delete_connections_bound_to(
        &self,
        target: &str,
    ) -> anyhow::Result<Vec<ConnectionRow>> {
        let q = format!("DELETE FROM connections WHERE binding_target = $1 RETURNING {COLUMNS}");
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(target)
            .fetch_all(pool)
            .await)?;
        self.announce_connections_of(&rows).await;
        Ok(rows)
    }

    /// Takes the refresh lease of a connection for `ttl_ms` unless another holder has an
    /// unexpired one; true when `holder` has it now.
    pub async fn acquire_connection_lease(
        &self,
        id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "INSERT INTO connection_leases (connection_id, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (connection_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE connection_leases.expires_at <= $4 OR connection_leases.holder = excluded.holder",
        )
        .bind(id)
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    pub async fn release_connection_lease(&self, id: &str, holder: &str) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM connection_leases WHERE connection_id = $1 AND holder = $2",
        )
        .bind(id)
        .bind(holder)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Connections, optionally of one person and/or one resource: by person, resource, then
    /// newest choice first (the first of a person's at a resource is the active one).
    pub async fn list_connections(
        &self,
        user_id: Option<&str>,
        resource: Option<&str>,
    ) -> anyhow::Result<Vec<ConnectionRow>> {
        let q = format!(
            "SELECT {COLUMNS} FROM connections WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR resource = $2) \
             ORDER BY user_id, resource, selected_at DESC, created_at DESC, id"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(user_id)
            .bind(resource)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// Makes a connection the active account of its person at its resource.
    pub async fn select_connection(&self, id: &str, now_ms: i64) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query("UPDATE connections SET selected_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Records when connections were last used: one statement, so one commit for all of them.
    /// A time earlier than the stored one changes nothing (writes may arrive out of order).
    pub async fn touch_connections(&self, used: &[(String, i64)]) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Postgres(pool) => {
                let (ids, times): (Vec<&str>, Vec<i64>) =
                    used.iter().map(|(i, t)| (i.as_str(), *t)).unzip();
                sqlx::query(
                    "UPDATE connections c SET last_used_at = u.at \
                     FROM UNNEST($1::text[], $2::bigint[]) AS u(id, at) \
                     WHERE c.id = u.id AND c.last_used_at < u.at",
                )
                .bind(&ids)
                .bind(&times)
                .execute(pool)
                .await?;
            }
            // SQLite binds no arrays: the pairs go as one JSON array of `[id, at]`, read by
            // `json_each`.
            Backend::Sqlite(pool) => {
                let pairs = serde_json::to_string(used)?;
                sqlx::query(
                    "UPDATE connections SET last_used_at = u.at \
                     FROM (SELECT value ->> 0 AS id, value ->> 1 AS at FROM json_each($1)) AS u \
                     WHERE connections.id = u.id AND connections.last_used_at < u.at",
                )
                .bind(pairs)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Deletes one connection if it is this person's; returns it (its tokens are revoked next).
    pub async fn delete_connection_of(
        &self,
        id: &str,
        user_id: &str,
    ) -> anyhow::Result<Option<ConnectionRow>> {
        let q =
            format!("DELETE FROM connections WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}");
        let row = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(id)
            .bind(user_id)
            .fetch_optional(pool)
            .await)?;
        if let Some(r) = &row {
            self.announce_connections_of(std::slice::from_ref(r)).await;
        }
        Ok(row)
    }

    /// Deletes connections of one person and/or resource (at least one given); returns them.
    pub async fn delete_connections_where(
        &self,
        user_id: Option<&str>,
        resource: Option<&str>,
    ) -> anyhow::Result<Vec<ConnectionRow>> {
        anyhow::ensure!(
            user_id.is_some() || resource.is_some(),
            "refusing to delete every connection without a filter"
        );
        let q = format!(
            "DELETE FROM connections WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR resource = $2) RETURNING {COLUMNS}"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(user_id)
            .bind(resource)
            .fetch_all(pool)
            .await)?;
        self.announce_connections_of(&rows).await;
        Ok(rows)
    }

    /// Deletes session-bound connections of stateless conversations (`grant:` targets) unused
    /// since `idle_before`; returns them.
    pub async fn delete_idle_grant_connections(
        &self,
        idle_before: i64,
    ) -> anyhow::Result<Vec<ConnectionRow>> {
        let q = format!(
            "DELETE FROM connections WHERE binding = 'session' AND binding_target LIKE 'grant:%' \
             AND last_used_at < $1 RETURNING {COLUMNS}"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(idle_before)
            .fetch_all(pool)
            .await)?;
        self.announce_connections_of(&rows).await;
        Ok(rows)
    }

    pub async fn insert_connect_prompt(&self, p: &ConnectPromptRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO connect_prompts (id_hash, user_id, resource, binding, binding_target, scopes, \
             elicitation_id, session_hash, connection_id, created_at, expires_at, cascade_client, \
             cascade_grant, declined_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&p.id_hash)
        .bind(&p.user_id)
        .bind(&p.resource)
        .bind(p.binding)
        .bind(&p.binding_target)
        .bind(&p.scopes)
        .bind(&p.elicitation_id)
        .bind(&p.session_hash)
        .bind(&p.connection_id)
        .bind(p.created_at)
        .bind(p.expires_at)
        .bind(&p.cascade_client)
        .bind(&p.cascade_grant)
        .bind(p.declined_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn connect_prompt(&self, id_hash: &str) -> anyhow::Result<Option<ConnectPromptRow>> {
        let sql = format!("SELECT {PROMPT_COLUMNS} FROM connect_prompts WHERE id_hash = $1");
        let row = on_pool!(self, pool => sqlx::query_as::<_, ConnectPromptRow>(sqlx::AssertSqlSafe(sql.clone()))
        .bind(id_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Renews a cascade prompt still waiting for the same person, client, resource and
    /// conversation as `p` (the grant that asks now, a new expiry); `false` when none waits.
    /// The waiting prompt keeps its id: a trip to the resource it started still completes it.
    pub async fn renew_cascade_prompt(&self, p: &ConnectPromptRow) -> anyhow::Result<bool> {
        anyhow::ensure!(p.cascade_client.is_some(), "not a cascade prompt");
        let n = on_pool!(self, pool => sqlx::query(
            sqlx::AssertSqlSafe(format!(
                "UPDATE connect_prompts SET cascade_grant = $5, expires_at = $6 WHERE {SAME_TRIP} \
                 AND expires_at > $7"
            )),
        )
        .bind(&p.user_id)
        .bind(&p.cascade_client)
        .bind(&p.resource)
        .bind(&p.binding_target)
        .bind(&p.cascade_grant)
        .bind(p.expires_at)
        .bind(p.created_at)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// The cascade prompts of a person and client still valid, oldest first (waiting, done, or
    /// refused).
    pub async fn cascade_prompts(
        &self,
        user_id: &str,
        client_id: &str,
        now_ms: i64,
    ) -> anyhow::Result<Vec<ConnectPromptRow>> {
        let sql = format!(
            "SELECT {PROMPT_COLUMNS} FROM connect_prompts WHERE user_id = $1 AND cascade_client = $2 \
             AND expires_at > $3 ORDER BY created_at, id_hash"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ConnectPromptRow>(sqlx::AssertSqlSafe(sql.clone()))
            .bind(user_id)
            .bind(client_id)
            .bind(now_ms)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// Whether a cascade prompt made for requests of this grant still waits for the person.
    pub async fn cascade_waiting(&self, grant_id: &str, now_ms: i64) -> anyhow::Result<bool> {
        let n: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM connect_prompts WHERE cascade_grant = $1 AND connection_id IS NULL \
             AND declined_at IS NULL AND expires_at > $2",
        )
        .bind(grant_id)
        .bind(now_ms)
        .fetch_one(pool)
        .await)?;
        Ok(n.0 > 0)
    }

    /// The person refused (or the resource failed) a cascade prompt's authorization: it, and
    /// any other waiting for the same person, client, resource and conversation (two requests
    /// that asked at once), are refused.
    pub async fn decline_cascade_prompt(
        &self,
        p: &ConnectPromptRow,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let sql = format!("UPDATE connect_prompts SET declined_at = $5 WHERE {SAME_TRIP}");
        on_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&p.user_id)
            .bind(&p.cascade_client)
            .bind(&p.resource)
            .bind(&p.binding_target)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// A cascade prompt produced a connection: so did any other waiting for the same person,
    /// client, resource and conversation (one trip serves them all).
    pub async fn complete_cascade_prompts(
        &self,
        p: &ConnectPromptRow,
        connection_id: &str,
    ) -> anyhow::Result<()> {
        let sql = format!("UPDATE connect_prompts SET connection_id = $5 WHERE {SAME_TRIP}");
        on_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&p.user_id)
            .bind(&p.cascade_client)
            .bind(&p.resource)
            .bind(&p.binding_target)
            .bind(connection_id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Ends a cascade: the prompts `finish` read (and answered with a code or a refusal).
    /// Prompts made since, or of another trip, stay.
    pub async fn end_cascade(&self, id_hashes: &[String]) -> anyhow::Result<()> {
        for id in id_hashes {
            on_pool!(self, pool => sqlx::query("DELETE FROM connect_prompts WHERE id_hash = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ()))?;
        }
        Ok(())
    }

    /// Records the connection a prompt produced.
    pub async fn complete_connect_prompt(
        &self,
        id_hash: &str,
        connection_id: &str,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("UPDATE connect_prompts SET connection_id = $2 WHERE id_hash = $1")
            .bind(id_hash)
            .bind(connection_id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_connect_state(&self, s: &ConnectStateRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO connect_states (state_hash, prompt_hash, user_id, verifier_sealed, created_at, expires_at, issuer, \
             resume_sealed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.state_hash)
        .bind(&s.prompt_hash)
        .bind(&s.user_id)
        .bind(&s.verifier_sealed)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(&s.issuer)
        .bind(&s.resume_sealed)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Spends a `state`: it is deleted whether or not it is still valid, so it works once.
    pub async fn take_connect_state(
        &self,
        state_hash: &str,
    ) -> anyhow::Result<Option<ConnectStateRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, ConnectStateRow>(
            "DELETE FROM connect_states WHERE state_hash = $1 \
             RETURNING state_hash, prompt_hash, user_id, verifier_sealed, created_at, expires_at, issuer, \
             resume_sealed",
        )
        .bind(state_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Forgets expired prompts and states.
    pub async fn purge_connect_state(&self, now_ms: i64) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM connect_states WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|_| ()))?;
        on_pool!(self, pool => sqlx::query("DELETE FROM connect_prompts WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_pending_revocation(&self, r: &PendingRevocationRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO pending_revocations (id, resource, token_sealed, token_kind, attempts, next_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.id)
        .bind(&r.resource)
        .bind(&r.token_sealed)
        .bind(&r.token_kind)
        .bind(r.attempts)
        .bind(r.next_at)
        .bind(r.created_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Revocations due for another attempt.
    pub async fn due_revocations(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<PendingRevocationRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as::<_, PendingRevocationRow>(
            "SELECT id, resource, token_sealed, token_kind, attempts, next_at, created_at \
             FROM pending_revocations WHERE next_at <= $1 ORDER BY next_at LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    pub async fn delete_pending_revocation(&self, id: &str) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM pending_revocations WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn reschedule_revocation(
        &self,
        id: &str,
        attempts: i64,
        next_at: i64,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("UPDATE pending_revocations SET attempts = $2, next_at = $3 WHERE id = $1")
            .bind(id)
            .bind(attempts)
            .bind(next_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Connections with a token not sealed under key `active` (due for re-sealing).
    pub async fn connections_sealed_before(
        &self,
        active: &str,
        limit: i64,
    ) -> anyhow::Result<Vec<ConnectionRow>> {
        let prefix = format!("{active}.%");
        let q = format!(
            "SELECT {COLUMNS} FROM connections WHERE access_token_sealed NOT LIKE $1 \
             OR (refresh_token_sealed IS NOT NULL AND refresh_token_sealed NOT LIKE $1) LIMIT $2"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(&prefix)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// Replaces a connection's sealed tokens if they are still the ones read (a refresh in
    /// between wins: its values are already under the new key).
    pub async fn reseal_connection(
        &self,
        id: &str,
        old_access: &str,
        access: &str,
        refresh: Option<&str>,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE connections SET access_token_sealed = $3, refresh_token_sealed = $4 \
             WHERE id = $1 AND access_token_sealed = $2",
        )
        .bind(id)
        .bind(old_access)
        .bind(access)
        .bind(refresh)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }
}

/// Doorman's registration at a discovered resource's authorization server.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RegistrationRow {
    pub upstream: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_sealed: Option<String>,
    pub created_at: i64,
    /// The redirect URI registered (`None`: made by a version that registered the shared one).
    pub redirect_uri: Option<String>,
}

impl Store {
    pub async fn registration(
        &self,
        upstream: &str,
        issuer: &str,
    ) -> anyhow::Result<Option<RegistrationRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, RegistrationRow>(
            "SELECT upstream, issuer, client_id, client_secret_sealed, created_at, redirect_uri \
             FROM resource_registrations WHERE upstream = $1 AND issuer = $2",
        )
        .bind(upstream)
        .bind(issuer)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Keeps the first registration when two nodes registered at once, and replaces one made
    /// with another redirect URI; returns the kept one.
    pub async fn insert_registration(
        &self,
        r: &RegistrationRow,
    ) -> anyhow::Result<RegistrationRow> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO resource_registrations \
             (upstream, issuer, client_id, client_secret_sealed, created_at, redirect_uri) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (upstream, issuer) DO UPDATE SET \
             client_id = excluded.client_id, client_secret_sealed = excluded.client_secret_sealed, \
             created_at = excluded.created_at, redirect_uri = excluded.redirect_uri \
             WHERE resource_registrations.redirect_uri IS NULL \
             OR resource_registrations.redirect_uri <> excluded.redirect_uri",
        )
        .bind(&r.upstream)
        .bind(&r.issuer)
        .bind(&r.client_id)
        .bind(&r.client_secret_sealed)
        .bind(r.created_at)
        .bind(&r.redirect_uri)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(self
            .registration(&r.upstream, &r.issuer)
            .await?
            .unwrap_or_else(|| r.clone()))
    }
}

/// A connect prompt (`connect_prompts`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConnectPromptRow {
    pub id_hash: String,
    pub user_id: String,
    pub resource: String,
    pub binding: crate::config::Binding,
    pub binding_target: Option<String>,
    pub scopes: String,
    pub elicitation_id: Option<String>,
    pub session_hash: Option<String>,
    pub connection_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The re-authorization cascade: the client whose next authorization goes through the
    /// resource first, and the grant whose requests asked.
    pub cascade_client: Option<String>,
    pub cascade_grant: Option<String>,
    /// When the person refused at the resource (a cascade prompt only).
    pub declined_at: Option<i64>,
}

impl ConnectPromptRow {
    /// Still waiting for the person: neither connected nor refused (`SAME_TRIP` in SQL).
    pub fn waiting(&self) -> bool {
        self.connection_id.is_none() && self.declined_at.is_none()
    }
}

/// Cascade prompts still waiting for one trip: person ($1), client ($2), resource ($3),
/// conversation ($4).
const SAME_TRIP: &str = "user_id = $1 AND cascade_client = $2 AND resource = $3 \
    AND binding_target IS NOT DISTINCT FROM $4 AND connection_id IS NULL AND declined_at IS NULL";

const PROMPT_COLUMNS: &str = "id_hash, user_id, resource, binding, binding_target, scopes, \
    elicitation_id, session_hash, connection_id, created_at, expires_at, cascade_client, \
    cascade_grant, declined_at";

/// One trip to a resource's authorization endpoint (`connect_states`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConnectStateRow {
    pub state_hash: String,
    pub prompt_hash: String,
    pub user_id: String,
    pub verifier_sealed: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The issuer the flow was sent to (RFC 9207), when the resource's metadata names one.
    pub issuer: Option<String>,
    /// Inside a client's authorization (the cascade): its request id, sealed, to return to.
    pub resume_sealed: Option<String>,
}

/// A revocation at a resource still to be made (`pending_revocations`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingRevocationRow {
    pub id: String,
    pub resource: String,
    pub token_sealed: String,
    pub token_kind: String,
    pub attempts: i64,
    pub next_at: i64,
    pub created_at: i64,
}
