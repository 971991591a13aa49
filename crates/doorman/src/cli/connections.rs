//! `doorman connections list|revoke`: people's connections to resources (layer 2).

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
