//! Cross-node invalidation. A write that makes something another node holds in memory wrong
//! (a revoked grant or token, a changed or disabled person, a deleted connection, a completed
//! URL elicitation) is announced on PostgreSQL's `doorman_invalidate` channel (`NOTIFY`); every
//! node listens and drops or updates what it holds. The periodic poll stays: it catches what a
//! listener missed while its connection was down (`LISTEN` delivers nothing retroactively).
//! SQLite is a single node: there is nothing to announce.

use std::{sync::Arc, time::Duration};

use sqlx::postgres::PgListener;

use super::{Backend, Store};

/// The channel every node listens on.
pub const CHANNEL: &str = "doorman_invalidate";

/// One announced change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A grant was revoked: every token of it stops.
    Grant(String),
    /// One access token (its `jti`) was revoked.
    AccessToken(String),
    /// A person changed (disabled, enabled, groups, signed out everywhere): cached facts about
    /// them are stale.
    Person(String),
    /// A person's connections changed (deleted, revoked): opened credentials are stale.
    Connections(String),
    /// A URL elicitation completed on the node `origin`: the node holding the client's live
    /// session tells it (`notifications/elicitation/complete`).
    ElicitationComplete {
        origin: String,
        session: String,
        elicitation: String,
    },
}

impl Invalidation {
    /// The payload: a kind letter, `:`, then the fields (ids never contain `\n`).
    pub fn encode(&self) -> String {
        match self {
            Self::Grant(id) => format!("g:{id}"),
            Self::AccessToken(jti) => format!("t:{jti}"),
            Self::Person(id) => format!("p:{id}"),
            Self::Connections(user) => format!("c:{user}"),
            Self::ElicitationComplete {
                origin,
                session,
                elicitation,
            } => format!("e:{origin}\n{session}\n{elicitation}"),
        }
    }

    /// `None` for anything this version does not know (a newer node's message): ignored.
    pub fn decode(payload: &str) -> Option<Self> {
        let (kind, rest) = payload.split_once(':')?;
        if rest.is_empty() {
            return None;
        }
        Some(match kind {
            "g" => Self::Grant(rest.to_owned()),
            "t" => Self::AccessToken(rest.to_owned()),
            "p" => Self::Person(rest.to_owned()),
            "c" => Self::Connections(rest.to_owned()),
            "e" => {
                let mut parts = rest.splitn(3, '\n');
                let (origin, session, elicitation) = (parts.next()?, parts.next()?, parts.next()?);
                Self::ElicitationComplete {
                    origin: origin.to_owned(),
                    session: session.to_owned(),
                    elicitation: elicitation.to_owned(),
                }
            }
            _ => return None,
        })
    }

    /// The metric label of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Grant(_) => "grant",
            Self::AccessToken(_) => "access_token",
            Self::Person(_) => "person",
            Self::Connections(_) => "connections",
            Self::ElicitationComplete { .. } => "elicitation_complete",
        }
    }
}

/// What a listener hands its node.
#[derive(Debug)]
pub enum Heard {
    Change(Invalidation),
    /// Listening (again) after a start or a lost connection: whatever was announced meanwhile
    /// was missed, so the node catches up as its poll would.
    Subscribed,
}

/// How long a listener waits before reconnecting after its connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

impl Store {
    /// Announces changes to every node (PostgreSQL); a no-op on SQLite. A failure is logged,
    /// not returned: the write it follows has committed, and the other nodes' poll will see it.
    pub async fn announce(&self, changes: &[Invalidation]) {
        for c in changes {
            // No subscriber is no error.
            let _ = self.local.send(c.clone());
        }
        let Backend::Postgres(pool) = &self.backend else {
            return;
        };
        if changes.is_empty() {
            return;
        }
        let payloads: Vec<String> = changes.iter().map(Invalidation::encode).collect();
        let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, changes = payloads.len(), "cannot announce changes to other nodes; they see them at their next poll");
        }
    }

    /// The changes this process announces, as it announces them (on either engine).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Invalidation> {
        self.local.subscribe()
    }

    /// Listens on [`CHANNEL`] until the process ends, handing each change to `on` (PostgreSQL;
    /// returns false and does nothing on SQLite). A lost connection is re-established and
    /// re-subscribed, and `on` hears [`Heard::Subscribed`] each time.
    pub fn spawn_listener(&self, on: Arc<dyn Fn(Heard) + Send + Sync>) -> bool {
        let Backend::Postgres(pool) = &self.backend else {
            return false;
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                match PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(CHANNEL).await {
                            tracing::warn!(error = %e, "cannot listen for changes from other nodes");
                        } else {
                            tracing::debug!("listening for changes from other nodes");
                            on(Heard::Subscribed);
                            listen(&mut listener, on.as_ref()).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect the change listener; polling meanwhile")
                    }
                }
                crate::metrics::get().listener_reconnects.inc();
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        });
        true
    }
}

/// Hands notifications to `on` until the connection fails.
async fn listen(listener: &mut PgListener, on: &(dyn Fn(Heard) + Send + Sync)) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match Invalidation::decode(n.payload()) {
                Some(change) => on(Heard::Change(change)),
                None => tracing::debug!(payload = n.payload(), "ignored an unknown change"),
            },
            // The connection was lost; sqlx reconnects and re-subscribes on the next call, and
            // what was announced meanwhile is lost: catch up.
            Ok(None) => {
                tracing::warn!("the change listener lost its connection; reconnecting");
                crate::metrics::get().listener_reconnects.inc();
                on(Heard::Subscribed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the change listener failed; reconnecting");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Invalidation;

    #[test]
    fn every_change_survives_its_payload() {
        for c in [
            Invalidation::Grant("g1".into()),
            Invalidation::AccessToken("jti-2".into()),
            Invalidation::Person("u3".into()),
            Invalidation::Connections("u4".into()),
            Invalidation::ElicitationComplete {
                origin: "node-a".into(),
                session: "5e55".into(),
                elicitation: "el:6".into(),
            },
        ] {
            assert_eq!(Invalidation::decode(&c.encode()), Some(c));
        }
    }

    #[test]
    fn unknown_or_truncated_payloads_are_ignored() {
        for p in ["", "g:", "x:1", "nothing", "e:only-origin", "e:a\nb"] {
            assert_eq!(Invalidation::decode(p), None, "{p:?}");
        }
    }
}
