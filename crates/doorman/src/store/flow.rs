//! The browser side of layer 1: `authorization_requests` (between `/oauth/authorize` and the
//! code), `browser_sessions` (the remembered sign-in), `consents`, `setup_links`, and the
//! `signing_keys` of the authorization server. Ids and tokens are stored as SHA-256 hashes.

use super::{Store, on_pool};

/// A validated authorization request waiting for sign-in and consent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuthorizationRequestRow {
    pub id_hash: String,
    /// SHA-256 of the CSRF cookie of the browser that started the flow.
    pub browser_hash: String,
    pub client_id: String,
    /// The validated parameters, as JSON.
    pub params: String,
    /// Set once the browser has signed in.
    pub user_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A browser's sign-in.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BrowserSessionRow {
    pub id_hash: String,
    pub user_id: String,
    pub auth_time: i64,
    pub amr: String,
    /// The provider's authentication context class, for SSO sign-ins.
    pub acr: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One signing key of the authorization server.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub private_key_sealed: String,
    pub public_jwk: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl Store {
    /// Remembers that `user_id` must sign in again (at most `max_age_s` old) before `client_id`
    /// gets another code; the strictest pending requirement wins.
    pub async fn require_step_up(
        &self,
        user_id: &str,
        client_id: &str,
        max_age_s: i64,
        now: i64,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO step_ups (user_id, client_id, max_age, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET \
             max_age = CASE WHEN step_ups.expires_at > $5 AND step_ups.max_age < excluded.max_age \
                 THEN step_ups.max_age ELSE excluded.max_age END, \
             expires_at = excluded.expires_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(max_age_s)
        .bind(expires_at)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The `max_age` (seconds) of a step-up pending for this person and client, if any.
    pub async fn pending_step_up(
        &self,
        user_id: &str,
        client_id: &str,
        now: i64,
    ) -> anyhow::Result<Option<i64>> {
        let max: Option<(i64,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT max_age FROM step_ups WHERE user_id = $1 AND client_id = $2 AND expires_at > $3",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(max.map(|(m,)| m))
    }

    /// Forgets a step-up once a code was issued after it.
    pub async fn clear_step_up(&self, user_id: &str, client_id: &str) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM step_ups WHERE user_id = $1 AND client_id = $2")
            .bind(user_id)
            .bind(client_id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_authorization_request(
        &self,
        r: &AuthorizationRequestRow,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO authorization_requests (id_hash, browser_hash, client_id, params, user_id, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.id_hash)
        .bind(&r.browser_hash)
        .bind(&r.client_id)
        .bind(&r.params)
        .bind(&r.user_id)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn authorization_request(
        &self,
        id_hash: &str,
    ) -> anyhow::Result<Option<AuthorizationRequestRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, AuthorizationRequestRow>(
            "SELECT id_hash, browser_hash, client_id, params, user_id, created_at, expires_at \
             FROM authorization_requests WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    pub async fn set_authorization_request_user(
        &self,
        id_hash: &str,
        user_id: &str,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE authorization_requests SET user_id = $2 WHERE id_hash = $1",
        )
        .bind(id_hash)
        .bind(user_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes a request; true for exactly one caller (a request ends in one response).
    pub async fn take_authorization_request(&self, id_hash: &str) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query("DELETE FROM authorization_requests WHERE id_hash = $1")
            .bind(id_hash)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    pub async fn insert_browser_session(&self, s: &BrowserSessionRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO browser_sessions (id_hash, user_id, auth_time, amr, acr, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(s.auth_time)
        .bind(&s.amr)
        .bind(&s.acr)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn browser_session(
        &self,
        id_hash: &str,
    ) -> anyhow::Result<Option<BrowserSessionRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, BrowserSessionRow>(
            "SELECT id_hash, user_id, auth_time, amr, acr, created_at, expires_at FROM browser_sessions \
             WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    pub async fn delete_browser_session(&self, id_hash: &str) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM browser_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The scopes a person approved for a client, if they did.
    pub async fn consent(&self, user_id: &str, client_id: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(s,)| s))
    }

    /// Forgets a person's approval of a client (one person, or everyone's with `None`): their
    /// next authorization there asks again.
    pub async fn delete_consents(
        &self,
        user_id: Option<&str>,
        client_id: &str,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM consents WHERE client_id = $2 AND ($1 IS NULL OR user_id = $1)",
        )
        .bind(user_id)
        .bind(client_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(scope)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_setup_link(
        &self,
        token_hash: &str,
        now_ms: i64,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO setup_links (token_hash, created_at, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(now_ms)
        .bind(expires_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Whether a setup link is valid now (unused, unexpired).
    pub async fn setup_link_valid(&self, token_hash: &str, now_ms: i64) -> anyhow::Result<bool> {
        let row: Option<(i64,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT expires_at FROM setup_links WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(pool)
        .await)?;
        Ok(row.is_some())
    }

    /// Spends a setup link; true for exactly one caller.
    pub async fn use_setup_link(&self, token_hash: &str, now_ms: i64) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "UPDATE setup_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Un-spends a setup link whose form was refused.
    pub async fn restore_setup_link(&self, token_hash: &str) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("UPDATE setup_links SET used_at = NULL WHERE token_hash = $1")
            .bind(token_hash)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_signing_key(&self, k: &SigningKeyRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key_sealed, public_jwk, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.private_key_sealed)
        .bind(&k.public_jwk)
        .bind(k.created_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Every signing key, oldest first.
    pub async fn signing_keys(&self) -> anyhow::Result<Vec<SigningKeyRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as::<_, SigningKeyRow>(
            "SELECT kid, alg, private_key_sealed, public_jwk, created_at, retired_at FROM signing_keys \
             ORDER BY created_at, kid",
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Retires every key but `keep` (they still verify until their tokens expire).
    pub async fn retire_signing_keys_except(&self, keep: &str, now_ms: i64) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE signing_keys SET retired_at = $2 WHERE kid <> $1 AND retired_at IS NULL",
        )
        .bind(keep)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes keys retired before `before_ms` (no unexpired token can carry them).
    pub async fn delete_signing_keys_retired_before(&self, before_ms: i64) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1",
        )
        .bind(before_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
