//! `connections` and `connection_leases`: layer 2's vault rows. Tokens arrive here sealed
//! (`vault::tokens`); the store never sees them in clear.

use super::{Store, on_pool};

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
    pub binding: String,
    pub binding_target: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, user_id, resource, account, scopes, access_token_sealed, \
    refresh_token_sealed, authorized_at, expires_at, binding, binding_target, created_at, updated_at";

impl Store {
    pub async fn insert_connection(&self, c: &ConnectionRow) -> anyhow::Result<()> {
        let q = format!(
            "INSERT INTO connections ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
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
            .bind(&c.binding)
            .bind(&c.binding_target)
            .bind(c.created_at)
            .bind(c.updated_at)
            .execute(pool)
            .await
            .map(|_| ()))?;
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
        let q = format!(
            "SELECT {COLUMNS} FROM connections WHERE user_id = $1 AND resource = $2 ORDER BY updated_at DESC, id"
        );
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
        let n = on_pool!(self, pool => sqlx::query("DELETE FROM connections WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
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
}
