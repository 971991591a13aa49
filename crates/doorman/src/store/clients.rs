//! `oauth_clients`: clients that registered dynamically (RFC 7591) or were identified by a
//! Client ID Metadata Document. Pre-registered clients live in the config, not here.

use super::{Store, on_pool};

/// One stored client.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClientRow {
    pub client_id: String,
    /// `dynamic` or `metadata`.
    pub kind: String,
    pub name: Option<String>,
    /// JSON array of redirect URIs.
    pub redirect_uris: String,
    pub token_endpoint_auth_method: String,
    pub secret_hash: Option<String>,
    pub registration_token_hash: Option<String>,
    /// The registration request or metadata document as JSON.
    pub metadata: String,
    pub registered_from: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "client_id, kind, name, redirect_uris, token_endpoint_auth_method, \
    secret_hash, registration_token_hash, metadata, registered_from, created_at, last_used_at, \
    revoked_at";

impl Store {
    /// Inserts or refreshes a client (metadata documents are re-read when their cache expires).
    pub async fn upsert_client(&self, c: &ClientRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO oauth_clients (client_id, kind, name, redirect_uris, \
             token_endpoint_auth_method, secret_hash, registration_token_hash, metadata, \
             registered_from, created_at, last_used_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL) \
             ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, \
             redirect_uris = excluded.redirect_uris, \
             token_endpoint_auth_method = excluded.token_endpoint_auth_method, \
             metadata = excluded.metadata, last_used_at = excluded.last_used_at",
        )
        .bind(&c.client_id)
        .bind(&c.kind)
        .bind(&c.name)
        .bind(&c.redirect_uris)
        .bind(&c.token_endpoint_auth_method)
        .bind(&c.secret_hash)
        .bind(&c.registration_token_hash)
        .bind(&c.metadata)
        .bind(&c.registered_from)
        .bind(c.created_at)
        .bind(c.last_used_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn client(&self, client_id: &str) -> anyhow::Result<Option<ClientRow>> {
        let q = format!("SELECT {COLUMNS} FROM oauth_clients WHERE client_id = $1");
        let row = on_pool!(self, pool => sqlx::query_as::<_, ClientRow>(sqlx::AssertSqlSafe(q.clone()))
            .bind(client_id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    pub async fn clients(&self) -> anyhow::Result<Vec<ClientRow>> {
        let q = format!("SELECT {COLUMNS} FROM oauth_clients ORDER BY created_at");
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ClientRow>(sqlx::AssertSqlSafe(q.clone()))
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// Records use, at most once a minute per client (the column drives expiry of unused ones).
    pub async fn touch_client(&self, client_id: &str, now_ms: i64) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE oauth_clients SET last_used_at = $2 WHERE client_id = $1 AND last_used_at < $2 - 60000",
        )
        .bind(client_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Revokes a client and every grant it holds; returns whether it was live, and the grants
    /// that were revoked.
    pub async fn revoke_client(
        &self,
        client_id: &str,
        now_ms: i64,
    ) -> anyhow::Result<(bool, Vec<String>)> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE oauth_clients SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL",
        )
        .bind(client_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        let grants = self
            .revoke_grants_where_client(client_id, now_ms, "client revoked")
            .await?;
        Ok((n > 0, grants))
    }

    /// Refuses a client Doorman has no registration of (one that identifies itself with a
    /// metadata document): a revoked row is kept for it, which `Clients::resolve` checks.
    pub async fn block_client(
        &self,
        client_id: &str,
        kind: &str,
        name: Option<&str>,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO oauth_clients (client_id, kind, name, redirect_uris, \
             token_endpoint_auth_method, metadata, created_at, last_used_at, revoked_at) \
             VALUES ($1, $2, $3, '[]', 'none', '{}', $4, $4, $4) \
             ON CONFLICT (client_id) DO UPDATE SET revoked_at = $4",
        )
        .bind(client_id)
        .bind(kind)
        .bind(name)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes dynamically registered clients unused since `before_ms` that hold no live grant.
    pub async fn delete_unused_dynamic_clients(
        &self,
        before_ms: i64,
        now_ms: i64,
    ) -> anyhow::Result<u64> {
        let n = on_pool!(self, pool => sqlx::query(
            "DELETE FROM oauth_clients WHERE kind = 'dynamic' AND last_used_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM grants g WHERE g.client_id = oauth_clients.client_id \
              AND g.revoked_at IS NULL AND g.expires_at > $2)",
        )
        .bind(before_ms)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n)
    }

    /// Dynamic registrations from one address since `since_ms` (the rate limit).
    /// Takes one registration from `address`'s quota for the hour of `now_ms` and returns how
    /// many it has used, this one included (one atomic upsert, so concurrent requests count
    /// one by one); older hours are forgotten on the way.
    pub async fn take_registration_quota(&self, address: &str, now_ms: i64) -> anyhow::Result<i64> {
        let hour = now_ms.div_euclid(3_600_000);
        let (used,): (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO registration_quota (address, hour, used) VALUES ($1, $2, 1) \
             ON CONFLICT (address, hour) DO UPDATE SET used = registration_quota.used + 1 \
             RETURNING used",
        )
        .bind(address)
        .bind(hour)
        .fetch_one(pool)
        .await)?;
        on_pool!(self, pool => sqlx::query("DELETE FROM registration_quota WHERE hour < $1")
            .bind(hour - 1)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(used)
    }

    pub async fn count_registrations_from(
        &self,
        address: &str,
        since_ms: i64,
    ) -> anyhow::Result<i64> {
        let (n,): (i64,) = on_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM oauth_clients WHERE kind = 'dynamic' AND registered_from = $1 \
             AND created_at >= $2",
        )
        .bind(address)
        .bind(since_ms)
        .fetch_one(pool)
        .await)?;
        Ok(n)
    }
}
