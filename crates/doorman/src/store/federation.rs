//! `federated_identities` and `oidc_states`: sign-in through OpenID Connect providers.

use super::{Invalidation, Store, on_pool};

/// A trip to a provider awaiting its callback.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OidcStateRow {
    pub state_hash: String,
    pub provider: String,
    pub browser_hash: String,
    pub request_sealed: String,
    pub nonce_hash: String,
    pub verifier_sealed: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A person's standing at their provider.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FederatedIdentityRow {
    pub user_id: String,
    pub provider: String,
    pub refresh_token_sealed: Option<String>,
    pub checked_at: i64,
    /// The last ID token the provider gave (sealed), and when it expires (ms).
    pub id_token_sealed: Option<String>,
    pub id_token_expires_at: Option<i64>,
}

impl Store {
    pub async fn insert_oidc_state(&self, r: &OidcStateRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO oidc_states (state_hash, provider, browser_hash, request_sealed, nonce_hash, \
             verifier_sealed, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&r.state_hash)
        .bind(&r.provider)
        .bind(&r.browser_hash)
        .bind(&r.request_sealed)
        .bind(&r.nonce_hash)
        .bind(&r.verifier_sealed)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Takes a state (single use): exactly one caller gets the row.
    pub async fn take_oidc_state(&self, state_hash: &str) -> anyhow::Result<Option<OidcStateRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, OidcStateRow>(
            "DELETE FROM oidc_states WHERE state_hash = $1 RETURNING state_hash, provider, \
             browser_hash, request_sealed, nonce_hash, verifier_sealed, created_at, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    pub async fn federated_identity(
        &self,
        user_id: &str,
    ) -> anyhow::Result<Option<FederatedIdentityRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, FederatedIdentityRow>(
            "SELECT user_id, provider, refresh_token_sealed, checked_at, id_token_sealed, \
             id_token_expires_at FROM federated_identities WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    pub async fn save_federated_identity(&self, r: &FederatedIdentityRow) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO federated_identities (user_id, provider, refresh_token_sealed, checked_at, \
             id_token_sealed, id_token_expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET provider = excluded.provider, \
             refresh_token_sealed = COALESCE(excluded.refresh_token_sealed, federated_identities.refresh_token_sealed), \
             checked_at = excluded.checked_at, \
             id_token_sealed = COALESCE(excluded.id_token_sealed, federated_identities.id_token_sealed), \
             id_token_expires_at = COALESCE(excluded.id_token_expires_at, federated_identities.id_token_expires_at)",
        )
        .bind(&r.user_id)
        .bind(&r.provider)
        .bind(&r.refresh_token_sealed)
        .bind(r.checked_at)
        .bind(&r.id_token_sealed)
        .bind(r.id_token_expires_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Takes the right to refresh a person's sign-in at their provider for `ttl_ms`; `false`
    /// while another holder has it (one refresh at a time across nodes).
    pub async fn acquire_federated_refresh(
        &self,
        user_id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> anyhow::Result<bool> {
        let n = on_pool!(self, pool => sqlx::query(
            "INSERT INTO federated_refresh_leases (user_id, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE federated_refresh_leases.expires_at <= $4",
        )
        .bind(user_id)
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    pub async fn release_federated_refresh(
        &self,
        user_id: &str,
        holder: &str,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "DELETE FROM federated_refresh_leases WHERE user_id = $1 AND holder = $2",
        )
        .bind(user_id)
        .bind(holder)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Updates a person from their provider's claims (at every sign-in and re-check).
    pub async fn update_federated_user(
        &self,
        user_id: &str,
        email: Option<&str>,
        name: Option<&str>,
        groups: &super::Groups,
    ) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE users SET email = $2, name = $3, groups = $4 WHERE id = $1",
        )
        .bind(user_id)
        .bind(email)
        .bind(name)
        .bind(groups)
        .execute(pool)
        .await
        .map(|_| ()))?;
        // Their groups may have changed: every node's policy facts about them are stale.
        self.announce(&[Invalidation::Person(user_id.to_owned())])
            .await;
        Ok(())
    }

    /// The person with this (issuer, subject), if any.
    pub async fn user_id_by_subject(
        &self,
        issuer: &str,
        subject: &str,
    ) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id FROM users WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(id,)| id))
    }
}
