//! `doorman connections list|add|revoke`: people's connections to resources (layer 2), and
//! the ones an operator makes for service clients.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use super::{table, utc};
use crate::{
    clock::{Clock, SystemClock},
    config::Config,
    vault::queue_revocations_of,
};

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Connections (all, or one person's and/or one resource's). Never shows tokens.
    List {
        /// A person: username, email or Doorman id.
        #[arg(long)]
        user: Option<String>,
        /// A resource name.
        #[arg(long)]
        resource: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make a connection for a service client (`grant_types = ["client_credentials"]`), which
    /// has no person to connect one: tokens the operator obtained at the resource, read from
    /// environment variables (never from the command line). Replaces the client's connection
    /// with the same account label. Sealed like every connection; refreshed by the server
    /// when it expires, if a refresh token is given.
    Add {
        /// The service client's client_id.
        #[arg(long)]
        client: String,
        /// A resource name (`[[resources]]`; not a shared one).
        #[arg(long)]
        resource: String,
        /// The environment variable that holds the access token.
        #[arg(long)]
        access_token_env: String,
        /// The environment variable that holds a refresh token, if there is one.
        #[arg(long)]
        refresh_token_env: Option<String>,
        /// Seconds until the access token expires (unknown: used until the resource refuses it).
        #[arg(long)]
        expires_in: Option<i64>,
        /// How the connection's account is shown (in the audit and `connections list`).
        #[arg(long, default_value = "operator")]
        account: String,
        /// The scopes the token carries, space-separated (default: the resource's).
        #[arg(long)]
        scopes: Option<String>,
    },
    /// Revoke connections: one by id, or every connection of a person and/or a resource. Each
    /// is revoked at its resource (RFC 7009) where it can be, and deleted here regardless.
    Revoke {
        connection_id: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        resource: Option<String>,
    },
}

pub async fn run(cmd: ConnectionsCommand, config: &Config) -> anyhow::Result<()> {
    super::with_store(config, async |store, ring| {
        match cmd {
            ConnectionsCommand::List {
                user,
                resource,
                json,
            } => {
                let who = match &user {
                    Some(u) => Some(super::grants::person_id(store, u).await?),
                    None => None,
                };
                let rows = store
                    .list_connections(who.as_deref(), resource.as_deref())
                    .await?;
                let mut out = Vec::new();
                for c in &rows {
                    let person = store.user(&c.user_id).await?;
                    let name = person
                        .as_ref()
                        .and_then(|p| p.username.clone().or(p.email.clone()))
                        .unwrap_or_else(|| c.user_id.clone());
                    out.push(json!({
                        "id": c.id, "user_id": c.user_id, "user": name, "resource": c.resource,
                        "account": c.account, "scopes": c.scopes, "binding": c.binding,
                        "authorized_at": utc(c.authorized_at), "expires_at": c.expires_at.map(utc),
                        "refreshable": c.refresh_token_sealed.is_some(),
                    }));
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    let cells = out
                        .iter()
                        .map(|r| {
                            ["id", "user", "resource", "account", "binding", "authorized_at"]
                                .map(|k| r[k].as_str().unwrap_or("-").to_owned())
                        })
                        .collect::<Vec<_>>();
                    print!(
                        "{}",
                        table(
                            ["CONNECTION", "PERSON", "RESOURCE", "ACCOUNT", "BINDING", "AUTHORIZED"],
                            &cells
                        )
                    );
                }
            }
            ConnectionsCommand::Add {
                client,
                resource,
                access_token_env,
                refresh_token_env,
                expires_in,
                account,
                scopes,
            } => {
                let Some(c) = config
                    .sign_in
                    .clients
                    .iter()
                    .find(|c| c.client_id == client && c.is_service())
                else {
                    bail!("no [[sign_in.clients]] entry with grant_types = [\"client_credentials\"] has client_id {client:?}");
                };
                let Some((i, r)) = config.resources.iter().enumerate().find(|(_, r)| r.name == resource) else {
                    bail!("no [[resources]] entry is named {resource:?}");
                };
                let r = crate::config::resolved::ResolvedResource::resolve(i, r, config.sign_in.development)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if r.binding == crate::config::Binding::Shared {
                    bail!("{resource:?} is shared: its one credential serves every caller already");
                }
                let read = |var: &str| -> anyhow::Result<zeroize::Zeroizing<String>> {
                    let v = std::env::var(var)
                        .map_err(|_| anyhow::anyhow!("the environment variable {var} is not set"))?;
                    anyhow::ensure!(!v.trim().is_empty(), "the environment variable {var} is empty");
                    Ok(zeroize::Zeroizing::new(v.trim().to_owned()))
                };
                let access = read(&access_token_env)?;
                let refresh = refresh_token_env.as_deref().map(read).transpose()?;
                anyhow::ensure!(
                    expires_in.is_none_or(|s| s > 0),
                    "--expires-in is a number of seconds, more than zero"
                );
                let now = SystemClock.now_ms();
                let principal = store
                    .service_principal(&c.client_id, c.name.as_deref(), now)
                    .await?;
                if principal.disabled_at.is_some() {
                    eprintln!(
                        "warning: service client {client} is disabled: it gets no tokens, so this connection serves nothing until it is enabled (doorman users enable client:{client})"
                    );
                }
                let existing = store
                    .connections_of(&principal.id, &resource)
                    .await?
                    .into_iter()
                    .find(|row| row.account == account && row.binding == crate::config::Binding::User);
                let id = existing
                    .as_ref()
                    .map(|row| row.id.clone())
                    .unwrap_or_else(|| crate::crypto::random_token(16));
                let seal = |which, token: &str| {
                    crate::vault::tokens::seal(ring, which, &id, &principal.id, &resource, token)
                };
                let row = crate::store::ConnectionRow {
                    id: id.clone(),
                    user_id: principal.id.clone(),
                    resource: resource.clone(),
                    account: account.clone(),
                    scopes: scopes.unwrap_or_else(|| r.scopes.join(" ")),
                    access_token_sealed: seal(crate::vault::tokens::Which::Access, &access),
                    refresh_token_sealed: refresh
                        .as_ref()
                        .map(|t| seal(crate::vault::tokens::Which::Refresh, t)),
                    authorized_at: now,
                    expires_at: expires_in.map(|s| now + s * 1000),
                    binding: crate::config::Binding::User,
                    binding_target: None,
                    created_at: now,
                    updated_at: now,
                    selected_at: now,
                    last_used_at: now,
                };
                if existing.is_some() {
                    store.delete_connection(&id).await?;
                }
                store.insert_connection(&row).await?;
                crate::audit::emit(crate::audit::AuditEvent {
                    resource: Some(resource.clone()),
                    account: Some(account.clone()),
                    detail: Some(format!("made by an operator for service client {client}")),
                    ..crate::audit::AuditEvent::security("connection_made", Some(&principal.id))
                });
                println!(
                    "{} connection {id} for service client {client} at {resource} (account {account:?})",
                    if existing.is_some() { "replaced" } else { "made" }
                );
            }
            ConnectionsCommand::Revoke {
                connection_id,
                user,
                resource,
            } => {
                let rows = match (connection_id, &user, &resource) {
                    (Some(id), None, None) => match store.connection(&id).await? {
                        Some(row) if store.delete_connection(&id).await? => vec![row],
                        _ => bail!("no such connection: {id}"),
                    },
                    (None, None, None) => {
                        bail!("give a connection id, or --user and/or --resource")
                    }
                    (None, _, _) => {
                        let who = match &user {
                            Some(u) => Some(super::grants::person_id(store, u).await?),
                            None => None,
                        };
                        store
                            .delete_connections_where(who.as_deref(), resource.as_deref())
                            .await?
                    }
                    (Some(_), _, _) => bail!("give a connection id or filters, not both"),
                };
                let n = rows.len();
                let now = SystemClock.now_ms();
                // The running server makes the revocations at the resources (it holds the
                // client credentials) within seconds, and retries them.
                let queued = queue_revocations_of(store, ring, &rows, now).await?;
                println!(
                    "revoked {n} connection(s); {queued} token revocation(s) queued for the resources (the server makes them within seconds)"
                );
            }
        }
        Ok(())
    })
    .await
}
