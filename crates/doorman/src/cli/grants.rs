//! `doorman clients …`, `doorman grants …` and `doorman keys rotate`: the authorization
//! server's clients, people's sign-ins at them, and its signing keys.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use super::{table, utc};
use crate::{
    clock::{Clock, SystemClock},
    config::Config,
    sign_in::keys,
    store::Store,
};

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Clients that registered dynamically or signed in with a metadata document, and those in the config.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client: its registration ends and every sign-in through it is revoked.
    Revoke { client_id: String },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// People's sign-ins at clients (all, or one person's with --user).
    List {
        /// A person: username, email or Doorman id.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke one sign-in (by grant id), or every sign-in of a person with --user.
    Revoke {
        grant_id: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key for access tokens; the old one keeps verifying until its tokens expire.
    Rotate,
    /// Add a new key to the key ring that seals secrets at rest (resource tokens, signing
    /// keys, TOTP seeds). It seals from now on; older keys still open what they sealed, and
    /// running servers re-seal stored connections under the new key in the background.
    AddSealingKey,
}

pub(super) async fn person_id(store: &Store, who: &str) -> anyhow::Result<String> {
    match store.person_named(who).await? {
        Some(u) => Ok(u.id),
        None => bail!("no such person: {who:?}"),
    }
}

pub async fn clients(cmd: ClientsCommand, config: &Config) -> anyhow::Result<()> {
    super::with_store(config, async |store, _ring| {
    let now = SystemClock.now_ms();
        match cmd {
            ClientsCommand::List { json } => {
                let mut rows: Vec<serde_json::Value> = config
                    .sign_in
                    .clients
                    .iter()
                    .map(|c| {
                        json!({
                            "client_id": c.client_id, "kind": "configured", "name": c.name,
                            "confidential": c.client_secret_env.is_some() || c.client_secret_file.is_some(),
                            "created_at": null, "last_used_at": null, "revoked": false,
                        })
                    })
                    .collect();
                for c in store.clients().await? {
                    rows.push(json!({
                        "client_id": c.client_id, "kind": c.kind, "name": c.name,
                        "confidential": c.secret_hash.is_some(),
                        "created_at": utc(c.created_at), "last_used_at": utc(c.last_used_at),
                        "revoked": c.revoked_at.is_some(),
                    }));
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    let cells = rows
                        .iter()
                        .map(|r| {
                            ["client_id", "kind", "name", "last_used_at", "revoked"]
                                .map(|k| match &r[k] {
                                    serde_json::Value::String(s) => s.clone(),
                                    serde_json::Value::Null => "-".into(),
                                    v => v.to_string(),
                                })
                        })
                        .collect::<Vec<_>>();
                    print!("{}", table(["CLIENT_ID", "KIND", "NAME", "LAST USED", "REVOKED"], &cells));
                }
            }
            ClientsCommand::Revoke { client_id } => {
                if config.sign_in.clients.iter().any(|c| c.client_id == client_id) {
                    let n = store
                        .revoke_grants_where_client(&client_id, now, "client revoked")
                        .await?
                        .len();
                    println!(
                        "revoked {n} sign-in(s) of {client_id}; it is in the config, so remove it there to keep it out"
                    );
                } else if store.revoke_client(&client_id, now).await?.0 {
                    println!("revoked client {client_id} and its sign-ins");
                } else {
                    bail!("no such client (or already revoked): {client_id}");
                }
            }
        }
        Ok(())
    })
    .await
}

pub async fn grants(cmd: GrantsCommand, config: &Config) -> anyhow::Result<()> {
    super::with_store(config, async |store, _ring| {
        let now = SystemClock.now_ms();
        match cmd {
            GrantsCommand::List { user, json } => {
                let who = match &user {
                    Some(u) => Some(person_id(store, u).await?),
                    None => None,
                };
                let grants = store.grants(who.as_deref()).await?;
                let mut rows = Vec::new();
                for g in &grants {
                    let person = store.user(&g.user_id).await?;
                    let name = person
                        .as_ref()
                        .and_then(|p| p.username.clone().or(p.email.clone()))
                        .unwrap_or_else(|| g.user_id.clone());
                    let state = if g.revoked_at.is_some() {
                        "revoked"
                    } else if g.expires_at <= now {
                        "expired"
                    } else {
                        "active"
                    };
                    rows.push(json!({
                        "id": g.id, "user_id": g.user_id, "user": name, "client_id": g.client_id,
                        "scope": g.scope, "state": state, "signed_in_at": utc(g.auth_time),
                        "created_at": utc(g.created_at), "expires_at": utc(g.expires_at),
                        "revoked_reason": g.revoked_reason,
                    }));
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    let cells = rows
                        .iter()
                        .map(|r| {
                            ["id", "user", "client_id", "state", "expires_at"]
                                .map(|k| r[k].as_str().unwrap_or("-").to_owned())
                        })
                        .collect::<Vec<_>>();
                    print!(
                        "{}",
                        table(["GRANT", "PERSON", "CLIENT", "STATE", "EXPIRES"], &cells)
                    );
                }
            }
            GrantsCommand::Revoke { grant_id, user } => match (grant_id, user) {
                (Some(id), None) => {
                    if !store
                        .revoke_grant(&id, now, "revoked by an operator")
                        .await?
                    {
                        bail!("no such active grant: {id}");
                    }
                    println!("revoked grant {id}");
                }
                (None, Some(u)) => {
                    let who = person_id(store, &u).await?;
                    let n = store
                        .sign_out_everywhere(&who, now, "revoked by an operator")
                        .await?;
                    println!("revoked {n} grant(s) of {u} and ended their browser sign-ins");
                }
                _ => bail!("give a grant id or --user, not both"),
            },
        }
        Ok(())
    })
    .await
}

/// Key rotations go to the audit from here (the operator's command, no server involved).
async fn record(store: &Store, detail: String) -> anyhow::Result<()> {
    let e = crate::audit::AuditEvent {
        at: SystemClock.now_ms(),
        detail: Some(detail),
        person: Some("operator (CLI)".into()),
        ..crate::audit::AuditEvent::security("key_rotated", None)
    };
    store.insert_audit_events(&[e]).await
}

pub async fn keys(cmd: KeysCommand, config: &Config) -> anyhow::Result<()> {
    super::with_store(config, async |store, ring| {
        match cmd {
            KeysCommand::Rotate => {
                let kid = keys::add_key(store, ring, SystemClock.now_ms()).await?;
                record(store, format!("signing key {kid}")).await?;
                println!(
                    "new signing key {kid}; the previous one verifies until its tokens expire (running servers pick the new key up within 10 s)"
                );
            }
            KeysCommand::AddSealingKey => {
                if std::env::var(crate::crypto::KEY_RING_ENV).is_ok() {
                    bail!(
                        "the key ring comes from {}: add a line `id key` (32 random bytes, base64url) at its end and restart the servers",
                        crate::crypto::KEY_RING_ENV
                    );
                }
                let id = crate::crypto::KeyRing::add_key_to_file(&config.key_ring_path())?;
                record(store, format!("sealing key {id}")).await?;
                println!(
                    "new sealing key {id} in {}; running servers load it within 10 s and re-seal stored connections with it; copy the file to every node",
                    config.key_ring_path().display()
                );
            }
        }
        Ok(())
    })
    .await
}
