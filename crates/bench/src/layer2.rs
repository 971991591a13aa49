//! The layer-2 side: the signed-in person's connection to the bench resource, stored the way
//! Doorman stores one after a person connects (tokens sealed under Doorman's key ring, bound to
//! the connection, the person and the resource), so every call to an upstream tied to the
//! resource goes through the vault lookup, the decryption (or the vault's short cache) and the
//! token injection. The resource itself is never contacted: the access token has no expiry, so
//! nothing is ever refreshed.

use std::time::{SystemTime, UNIX_EPOCH};

use doorman::{
    config::Config,
    crypto::KeyRing,
    store::{ConnectionRow, Store},
    vault::tokens::{self, Which},
};

use crate::procs::{RESOURCE, Running};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Stores `username`'s connection to [`RESOURCE`] holding `token`, in the running Doorman's
/// store (the database and key ring its configuration names, formed as Doorman forms them).
pub async fn connect(doorman: &Running, username: &str, token: &str) -> anyhow::Result<()> {
    let config = Config::load(Some(&doorman.config_path()?)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::open(&config.database_url()).await?;
    let (ring, _, _) = KeyRing::load(&config.key_ring_path())?;
    let person = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no person {username:?} in Doorman's store"))?;
    let id = doorman::crypto::random_token(16);
    let now = now_ms();
    store
        .insert_connection(&ConnectionRow {
            access_token_sealed: tokens::seal(
                &ring,
                Which::Access,
                &id,
                &person.id,
                RESOURCE,
                token,
            ),
            id,
            user_id: person.id,
            resource: RESOURCE.into(),
            account: format!("{username}@{RESOURCE}"),
            scopes: String::new(),
            refresh_token_sealed: None,
            authorized_at: now,
            expires_at: None,
            binding: doorman::config::Binding::User,
            binding_target: None,
            created_at: now,
            updated_at: now,
            selected_at: now,
            last_used_at: now,
        })
        .await?;
    store.close().await;
    Ok(())
}

/// Doorman's `doorman_vault_lookups_total` by outcome (`GET /metrics`): `{"hit": n, "miss": m}`.
pub async fn vault_lookups(doorman: &Running) -> anyhow::Result<serde_json::Value> {
    let text = reqwest::get(format!("{}/metrics", doorman.base_url()))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = serde_json::Map::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("doorman_vault_lookups_total{outcome=\"") else {
            continue;
        };
        let Some((outcome, value)) = rest.split_once("\"}") else {
            continue;
        };
        let n: f64 = value.trim().parse()?;
        out.insert(outcome.to_owned(), (n as u64).into());
    }
    Ok(out.into())
}
