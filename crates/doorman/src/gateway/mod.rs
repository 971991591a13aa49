//! The gateway: the `/mcp` endpoint, sessions, routing, and the upstream clients.

pub mod asks;
pub mod call;
pub mod caller;
pub mod endpoint;
pub mod jsonrpc;
pub mod layer2;
pub mod listen;
pub mod parked;
pub mod router;
pub mod session;
pub mod transport;
pub mod upstream;

use std::{sync::Arc, time::Duration};

use serde_json::Value;

use router::Router;
use session::Sessions;
use upstream::{SessionSlots, Upstream};

use crate::{clock::SharedClock, config::Config, store::Store};

/// Everything the `/mcp` endpoint needs.
pub struct Gateway {
    pub router: Router,
    pub sessions: Sessions,
    /// Upstream sessions used for stateless (2026-07-28) clients of legacy upstreams, one set
    /// per person (keyed by person id; "" in local mode), so people never share upstream state.
    stateless: std::sync::RwLock<std::collections::HashMap<String, Arc<SessionSlots>>>,
    pub max_request_bytes: usize,
    /// `server.body_read_timeout`.
    pub body_read_timeout: Duration,
    /// `server.max_sessions_per_person` (0: no limit).
    pub max_sessions_per_person: u32,
    pub clock: SharedClock,
    pub store: Store,
    /// `{public_url}` without the trailing slash, for challenges.
    pub issuer: String,
    /// This process among the nodes: a random id, so a node ignores its own announcements
    /// where acting twice would show (a URL elicitation's completion).
    pub node: String,
    /// People whose lists changed, waiting out [`LISTS_SETTLE`] before their clients are told.
    lists_pending: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Calls of 2026-07-28 clients waiting for their answers to an upstream's questions.
    pub parked: parked::Parked,
    /// The people whose lists changed, as they are told: `subscriptions/listen` streams hear it.
    lists_tx: tokio::sync::broadcast::Sender<String>,
}

/// How long Doorman waits after a change to what a person may list before telling their
/// clients: the changes of one connect (a replaced connection, the announcement heard back
/// from the database) reach the client as one notification.
const LISTS_SETTLE: Duration = Duration::from_millis(200);

impl Gateway {
    pub fn new(
        config: &Config,
        store: Store,
        clock: SharedClock,
        http: crate::net::HttpClient,
        vault: Option<Arc<crate::vault::Vault>>,
        policies: Option<Arc<crate::policy::Policies>>,
        ring: Arc<crate::crypto::KeyRing>,
    ) -> anyhow::Result<Self> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::new(u, http.clone()).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            router: Router::new(upstreams, vault, policies, ring),
            sessions: Sessions::new(
                store.clone(),
                clock.clone(),
                config.server.session_idle_timeout.0,
            ),
            store,
            clock,
            issuer: config.issuer(),
            node: crate::crypto::random_token(12),
            stateless: Default::default(),
            lists_pending: Default::default(),
            parked: Default::default(),
            lists_tx: tokio::sync::broadcast::channel(64).0,
            max_request_bytes: config.server.max_request_bytes,
            max_sessions_per_person: config.server.max_sessions_per_person,
            body_read_timeout: config.server.body_read_timeout.0,
        })
    }

    /// The policies (accounts mode).
    pub fn policies(&self) -> Option<&Arc<crate::policy::Policies>> {
        self.router.policies()
    }

    /// The upstream sessions that serve one person's stateless requests: one set per person and
    /// per set of capabilities their clients declared (an upstream session declares them once,
    /// at `initialize`, so clients that can answer different things never share one).
    pub fn stateless_slots(&self, user: Option<&str>, asks: Option<&Value>) -> Arc<SessionSlots> {
        let key = match asks {
            Some(caps) => format!("{}\n{caps}", user.unwrap_or("")),
            None => user.unwrap_or("").to_owned(),
        };
        if let Some(s) = self
            .stateless
            .read()
            .expect("stateless slots lock")
            .get(&key)
        {
            return s.clone();
        }
        self.stateless
            .write()
            .expect("stateless slots lock")
            .entry(key)
            .or_default()
            .clone()
    }

    /// Ends the upstream sessions of conversations that ended, and the connections bound to
    /// them (revoked at their resources).
    pub fn close_upstream_sessions(self: &Arc<Self>, ended: Vec<Arc<session::Session>>) {
        if let Some(vault) = self.router.vault() {
            let hashes: Vec<String> = ended.iter().map(|s| s.id_hash.to_string()).collect();
            let vault = vault.clone();
            tokio::spawn(async move {
                for h in hashes {
                    vault.end_conversation(&h).await;
                }
            });
        }
        for s in ended {
            s.stop_relays();
            for (name, up_session) in s.slots.drain() {
                if let Some(up) = self
                    .router
                    .upstreams()
                    .iter()
                    .find(|u| u.name == name)
                    .cloned()
                {
                    tokio::spawn(async move { up.end_session(&up_session).await });
                }
            }
        }
    }

    /// Starts relaying each upstream's server-initiated notifications into the session's
    /// broadcast, once per session (the first GET stream).
    pub fn start_relays(self: &Arc<Self>, session: &Arc<session::Session>) {
        let mut relays = session.relays.lock().expect("relays lock");
        if relays.is_some() {
            return;
        }
        let handles = self
            .router
            .upstreams()
            .iter()
            .map(|up| {
                let (up, session) = (up.clone(), session.clone());
                tokio::spawn(async move {
                    let tx = session.notifications().clone();
                    let name = up.name.clone();
                    let link = session.link(asks::Sink::Broadcast(tx.clone()));
                    let relayed = up.relay_notifications(&session.slots, Some(link), |msg| {
                        let _ = tx.send(router::expose_notification(&name, msg));
                    });
                    if let Err(e) = relayed.await {
                        tracing::debug!(upstream = %up.name, error = %e, "notification relay ended");
                    }
                })
                .abort_handle()
            })
            .collect();
        *relays = Some(handles);
    }

    /// A URL elicitation completed here: its session hears it if it is live on this node, and
    /// the other nodes are told (the session may be live on one of them).
    pub fn elicitation_completed_here(self: &Arc<Self>, session_hash: &str, elicitation_id: &str) {
        self.elicitation_complete(session_hash, elicitation_id);
        let change = crate::store::Invalidation::ElicitationComplete {
            origin: self.node.clone(),
            session: session_hash.to_owned(),
            elicitation: elicitation_id.to_owned(),
        };
        let store = self.store.clone();
        tokio::spawn(async move { store.announce(&[change]).await });
    }

    /// Tells the client of a live session that a URL elicitation completed (MCP 2025-11-25
    /// client/elicitation, "Completion Notifications"): only that session hears it.
    pub fn elicitation_complete(&self, session_hash: &str, elicitation_id: &str) {
        if let Some(s) = self.sessions.live(session_hash) {
            let note = serde_json::json!({
                "jsonrpc": "2.0",
                "method": "notifications/elicitation/complete",
                "params": { "elicitationId": elicitation_id },
            });
            let _ = s.notifications().send(note);
        }
    }

    /// What a person may list changed (they connected or disconnected a resource, their groups
    /// changed): once the changes settle, every session of theirs live on this node that
    /// listens hears `notifications/{tools,prompts,resources}/list_changed` (MCP 2025-11-25
    /// server/tools, "List Changed Notification"), and so does each of their 2026-07-28
    /// `subscriptions/listen` streams that asked for it (`listen.rs`). Nobody else hears it.
    pub fn lists_changed(self: &Arc<Self>, user_id: &str) {
        if !self
            .lists_pending
            .lock()
            .expect("lists pending")
            .insert(user_id.to_owned())
        {
            return;
        }
        let (gw, user) = (Arc::downgrade(self), user_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(LISTS_SETTLE).await;
            let Some(gw) = gw.upgrade() else { return };
            gw.lists_pending
                .lock()
                .expect("lists pending")
                .remove(&user);
            let _ = gw.lists_tx.send(user.clone());
            let sessions = gw.sessions.live_of(&user);
            tracing::debug!(user = %user, sessions = sessions.len(), "lists changed");
            for s in sessions {
                for list in ["tools", "prompts", "resources"] {
                    s.notify(serde_json::json!({
                        "jsonrpc": "2.0",
                        "method": format!("notifications/{list}/list_changed"),
                    }));
                }
            }
        });
    }

    /// Hears whose lists changed (for `subscriptions/listen` streams).
    pub fn lists_heard(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.lists_tx.subscribe()
    }

    /// Follows the changes this process announces: a person's connections or facts changed
    /// here, so their lists did (other nodes' changes come through `server::on_change`).
    pub fn spawn_list_watch(self: &Arc<Self>) {
        let mut changes = self.store.changes();
        let gw = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let change = match changes.recv().await {
                    Ok(c) => c,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "list watch fell behind");
                        continue;
                    }
                    Err(_) => return,
                };
                let Some(gw) = gw.upgrade() else { return };
                if let crate::store::Invalidation::Connections(user)
                | crate::store::Invalidation::Person(user) = change
                {
                    gw.lists_changed(&user);
                }
            }
        });
    }

    /// Ends idle sessions every `every`, until the process stops.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let gw = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gw) = gw.upgrade() else { return };
                match gw.sessions.sweep().await {
                    Ok(ended) if !ended.is_empty() => {
                        tracing::info!(count = ended.len(), "ended idle sessions");
                        gw.close_upstream_sessions(ended);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not end idle sessions"),
                }
            }
        });
    }
}
