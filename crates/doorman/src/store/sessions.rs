//! `sessions`: stateful MCP sessions, keyed by the SHA-256 of their id.

use super::{Store, on_pool};

/// One stateful MCP session as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: String,
    pub protocol_version: crate::protocol::Version,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    /// The client's declared capabilities, as JSON text.
    pub client_capabilities: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The person who opened the session (None in local mode).
    pub user_id: Option<String>,
}

impl Store {
    pub async fn insert_session(&self, row: &SessionRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO sessions (id_hash, protocol_version, client_name, client_version, \
             client_capabilities, created_at, last_seen_at, user_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&row.id_hash)
        .bind(row.protocol_version)
        .bind(&row.client_name)
        .bind(&row.client_version)
        .bind(&row.client_capabilities)
        .bind(row.created_at)
        .bind(row.last_seen_at)
        .bind(&row.user_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn session(&self, id_hash: &str) -> anyhow::Result<Option<SessionRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, SessionRow>(
            "SELECT id_hash, protocol_version, client_name, client_version, client_capabilities, \
             created_at, last_seen_at, user_id FROM sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Records activity; returns false when the session no longer exists.
    /// How many sessions a person has that were used since `active_since` (the idle cutoff).
    pub async fn count_sessions_of(&self, user_id: &str, active_since: i64) -> anyhow::Result<i64> {
        let (n,): (i64,) = on_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND last_seen_at > $2",
        )
        .bind(user_id)
        .bind(active_since)
        .fetch_one(pool)
        .await)?;
        Ok(n)
    }

    pub async fn touch_session(&self, id_hash: &str, now_ms: i64) -> anyhow::Result<bool> {
        let done = on_pool!(self, pool => sqlx::query(
            "UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2",
        )
        .bind(id_hash)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        if done > 0 {
            return Ok(true);
        }
        Ok(self.session(id_hash).await?.is_some())
    }

    /// Deletes a session; returns whether it existed.
    pub async fn delete_session(&self, id_hash: &str) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Deletes every session last seen before `idle_before_ms`; returns their hashes.
    pub async fn delete_idle_sessions(&self, idle_before_ms: i64) -> anyhow::Result<Vec<String>> {
        let gone: Vec<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "DELETE FROM sessions WHERE last_seen_at < $1 RETURNING id_hash",
        )
        .bind(idle_before_ms)
        .fetch_all(pool)
        .await)?;
        Ok(gone.into_iter().map(|(h,)| h).collect())
    }

    pub async fn count_sessions(&self) -> anyhow::Result<i64> {
        let (n,): (i64,) = on_pool!(self, pool => sqlx::query_as("SELECT COUNT(*) FROM sessions")
            .fetch_one(pool)
            .await)?;
        Ok(n)
    }
}
