//! `grants`, `authorization_codes`, `refresh_tokens`, `revoked_access_tokens`: what a person's
//! sign-in at a client produced. Codes and refresh tokens are stored as SHA-256 hashes.

use super::{Invalidation, Store, on_pool};

/// One person's sign-in at one client.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GrantRow {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub resource: String,
    pub auth_time: i64,
    pub amr: String,
    pub acr: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// An authorization code as stored (hash only).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CodeRow {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: String,
    pub scope: String,
    pub auth_time: i64,
    pub amr: String,
    pub acr: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub grant_id: Option<String>,
    /// Issued at the end of a re-authorization cascade: the grant whose requests asked for it,
    /// which this code's tokens continue.
    pub continues_grant: Option<String>,
}

/// A refresh token as stored (hash only).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefreshRow {
    pub token_hash: String,
    pub grant_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What spending a code found.
pub enum CodeUse {
    /// First use: the code's row, now marked used.
    Fresh(Box<CodeRow>),
    /// Already used: the grant it created (to revoke), if any.
    Replayed(Option<String>),
    Unknown,
}

/// What spending a refresh token found.
pub enum RefreshUse {
    Fresh(RefreshRow),
    /// Already rotated: the grant to revoke (RFC 9700 §4.14.2).
    Reused(String),
    Unknown,
}

const GRANT_COLUMNS: &str = "id, user_id, client_id, scope, resource, auth_time, amr, acr, \
    created_at, expires_at, last_used_at, revoked_at, revoked_reason";

impl Store {
    pub async fn insert_code(&self, c: &CodeRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri, \
             code_challenge, resource, scope, auth_time, amr, acr, created_at, expires_at, continues_grant) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&c.code_hash)
        .bind(&c.client_id)
        .bind(&c.user_id)
        .bind(&c.redirect_uri)
        .bind(&c.code_challenge)
        .bind(&c.resource)
        .bind(&c.scope)
        .bind(c.auth_time)
        .bind(&c.amr)
        .bind(&c.acr)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(&c.continues_grant)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Spends a code atomically: exactly one caller ever sees `Fresh` for a given code.
    pub async fn use_code(&self, code_hash: &str, now_ms: i64) -> anyhow::Result<CodeUse> {
        let fresh = on_pool!(self, pool => sqlx::query_as::<_, CodeRow>(
            "UPDATE authorization_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL \
             RETURNING code_hash, client_id, user_id, redirect_uri, code_challenge, resource, scope, \
             auth_time, amr, acr, created_at, expires_at, used_at, grant_id, continues_grant",
        )
        .bind(code_hash)
        .bind(now_ms)
        .fetch_optional(pool)
        .await)?;
        if let Some(row) = fresh {
            return Ok(CodeUse::Fresh(Box::new(row)));
        }
        let used: Option<(Option<String>,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT grant_id FROM authorization_codes WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(match used {
            Some((grant,)) => CodeUse::Replayed(grant),
            None => CodeUse::Unknown,
        })
    }

    /// Records which grant a code produced (so a replay can revoke it).
    pub async fn set_code_grant(&self, code_hash: &str, grant_id: &str) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE authorization_codes SET grant_id = $2 WHERE code_hash = $1",
        )
        .bind(code_hash)
        .bind(grant_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_grant(&self, g: &GrantRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO grants (id, user_id, client_id, scope, resource, auth_time, amr, acr, \
             created_at, expires_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&g.id)
        .bind(&g.user_id)
        .bind(&g.client_id)
        .bind(&g.scope)
        .bind(&g.resource)
        .bind(g.auth_time)
        .bind(&g.amr)
        .bind(&g.acr)
        .bind(g.created_at)
        .bind(g.expires_at)
        .bind(g.last_used_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// A fresh authorization of the same person and client continues a live grant: the new
    /// sign-in's facts, a new expiry. `false` (nothing changed) when the grant is not that
    /// person's and client's, or no longer alive.
    pub async fn continue_grant(
        &self,
        id: &str,
        code: &CodeRow,
        now_ms: i64,
        expires_at: i64,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE grants SET scope = $5, auth_time = $6, amr = $7, acr = $8, expires_at = $9, \
             last_used_at = $10 WHERE id = $1 AND user_id = $2 AND client_id = $3 AND resource = $4 \
             AND revoked_at IS NULL AND expires_at > $10",
        )
        .bind(id)
        .bind(&code.user_id)
        .bind(&code.client_id)
        .bind(&code.resource)
        .bind(&code.scope)
        .bind(code.auth_time)
        .bind(&code.amr)
        .bind(&code.acr)
        .bind(expires_at)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Forgets a grant's refresh tokens not yet used (spent ones stay, so a replay of one is
    /// still caught).
    pub async fn drop_unspent_refresh_tokens(&self, grant_id: &str) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM refresh_tokens WHERE grant_id = $1 AND used_at IS NULL",
        )
        .bind(grant_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn grant(&self, id: &str) -> anyhow::Result<Option<GrantRow>> {
        let q = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1");
        let row = on_pool!(self, pool => sqlx::query_as::<_, GrantRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    /// Grants, newest first; only one person's when `user_id` is given.
    pub async fn grants(&self, user_id: Option<&str>) -> anyhow::Result<Vec<GrantRow>> {
        let q = format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE ($1 IS NULL OR user_id = $1) ORDER BY created_at DESC"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, GrantRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(user_id)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// Live grants (not revoked, not expired at `now_ms`), most recently used first, at most
    /// `limit`.
    pub async fn live_grants(&self, now_ms: i64, limit: i64) -> anyhow::Result<Vec<GrantRow>> {
        let q = format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE revoked_at IS NULL AND expires_at > $1 \
             ORDER BY last_used_at DESC, id LIMIT $2"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, GrantRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// How many live grants each client holds (clients holding none are left out).
    pub async fn live_grant_counts(&self, now_ms: i64) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = on_pool!(self, pool => sqlx::query_as(
            "SELECT client_id, COUNT(*) FROM grants WHERE revoked_at IS NULL AND expires_at > $1 \
             GROUP BY client_id ORDER BY client_id",
        )
        .bind(now_ms)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Revokes one grant; returns whether it was live.
    pub async fn revoke_grant(&self, id: &str, now_ms: i64, reason: &str) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE grants SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .bind(reason)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        if n > 0 {
            self.announce(&[Invalidation::Grant(id.to_owned())]).await;
        }
        Ok(n > 0)
    }

    /// Revokes every live grant of a person and ends their browser sign-ins ("sign out
    /// everywhere"); returns how many grants were live.
    pub async fn sign_out_everywhere(
        &self,
        user_id: &str,
        now_ms: i64,
        reason: &str,
    ) -> anyhow::Result<u64> {
        let ids: Vec<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "UPDATE grants SET revoked_at = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL \
             RETURNING id",
        )
        .bind(user_id)
        .bind(now_ms)
        .bind(reason)
        .fetch_all(pool)
        .await)?;
        on_pool!(self, pool => sqlx::query("DELETE FROM browser_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        let mut changes: Vec<Invalidation> = ids
            .iter()
            .map(|(id,)| Invalidation::Grant(id.clone()))
            .collect();
        changes.push(Invalidation::Person(user_id.to_owned()));
        self.announce(&changes).await;
        Ok(ids.len() as u64)
    }

    /// Revokes every live grant of a client; returns their ids.
    pub async fn revoke_grants_where_client(
        &self,
        client_id: &str,
        now_ms: i64,
        reason: &str,
    ) -> anyhow::Result<Vec<String>> {
        let ids: Vec<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "UPDATE grants SET revoked_at = $2, revoked_reason = $3 WHERE client_id = $1 \
             AND revoked_at IS NULL RETURNING id",
        )
        .bind(client_id)
        .bind(now_ms)
        .bind(reason)
        .fetch_all(pool)
        .await)?;
        let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
        let changes: Vec<Invalidation> = ids.iter().cloned().map(Invalidation::Grant).collect();
        self.announce(&changes).await;
        Ok(ids)
    }

    /// Grant ids revoked at or after `since_ms` (other nodes pick revocations up from here).
    pub async fn grants_revoked_since(&self, since_ms: i64) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, revoked_at FROM grants WHERE revoked_at IS NOT NULL AND revoked_at >= $1",
        )
        .bind(since_ms)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    pub async fn insert_refresh_token(&self, r: &RefreshRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&r.token_hash)
        .bind(&r.grant_id)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Spends a refresh token atomically (rotation: each one works once).
    pub async fn use_refresh_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> anyhow::Result<RefreshUse> {
        let fresh = on_pool!(self, pool => sqlx::query_as::<_, RefreshRow>(
            "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL \
             RETURNING token_hash, grant_id, created_at, expires_at, used_at",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(pool)
        .await)?;
        if let Some(row) = fresh {
            return Ok(RefreshUse::Fresh(row));
        }
        let used: Option<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT grant_id FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(match used {
            Some((grant,)) => RefreshUse::Reused(grant),
            None => RefreshUse::Unknown,
        })
    }

    /// A refresh token's row, without spending it: the token endpoint checks everything first.
    pub async fn refresh_token(&self, token_hash: &str) -> anyhow::Result<Option<RefreshRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, RefreshRow>(
            "SELECT token_hash, grant_id, created_at, expires_at, used_at FROM refresh_tokens \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await)?)
    }

    /// The grant a refresh token belongs to, without spending it (revocation, RFC 7009).
    pub async fn refresh_token_grant(&self, token_hash: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT grant_id FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(g,)| g))
    }

    pub async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: i64,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        self.announce(&[Invalidation::AccessToken(jti.to_owned())])
            .await;
        Ok(())
    }

    /// Access tokens revoked at or after `since_ms` and not yet expired at `now_ms`.
    pub async fn access_tokens_revoked_since(
        &self,
        since_ms: i64,
        now_ms: i64,
    ) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = on_pool!(self, pool => sqlx::query_as(
            "SELECT jti, revoked_at FROM revoked_access_tokens WHERE revoked_at >= $1 AND expires_at > $2",
        )
        .bind(since_ms)
        .bind(now_ms)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Deletes what can no longer be used: expired codes, refresh tokens and revocation entries.
    /// Records a client assertion's `jti` as used until `until`; `false` when it already is
    /// (a replay). One atomic statement, so two nodes racing with the same assertion cannot
    /// both accept it; an entry past its time is taken over.
    pub async fn use_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        until: i64,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let done = on_pool!(self, pool => sqlx::query(
            "INSERT INTO used_assertions (client_id, jti, until) VALUES ($1, $2, $3) \
             ON CONFLICT (client_id, jti) DO UPDATE SET until = excluded.until \
             WHERE used_assertions.until <= $4",
        )
        .bind(client_id)
        .bind(jti)
        .bind(until)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Deletes a person's (a service principal's) grants that ended more than a minute ago.
    pub async fn delete_expired_grants_of(&self, user_id: &str, now_ms: i64) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM grants WHERE user_id = $1 AND expires_at < $2 - 60000",
        )
        .bind(user_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn purge_expired_sign_in_state(&self, now_ms: i64) -> anyhow::Result<()> {
        for q in [
            "DELETE FROM authorization_codes WHERE expires_at < $1 - 86400000",
            "DELETE FROM refresh_tokens WHERE expires_at < $1",
            "DELETE FROM revoked_access_tokens WHERE expires_at < $1",
            "DELETE FROM authorization_requests WHERE expires_at < $1",
            "DELETE FROM browser_sessions WHERE expires_at < $1",
            "DELETE FROM oidc_states WHERE expires_at < $1",
            "DELETE FROM used_assertions WHERE until < $1",
            // A day without failures forgets a name's count (lockouts last far less).
            "DELETE FROM sign_in_failures WHERE last_failure_at < $1 - 86400000 \
             AND (locked_until IS NULL OR locked_until < $1)",
        ] {
            on_pool!(self, pool => sqlx::query(q).bind(now_ms).execute(pool).await.map(|_| ()))?;
        }
        Ok(())
    }
}
