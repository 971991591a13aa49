//! Stateful MCP sessions (revisions 2025-03-26 to 2025-11-25).
//!
//! Doorman issues its own random `MCP-Session-Id`; the store keeps only its SHA-256, so another
//! node (PostgreSQL) or a restarted one can pick the session up, opening fresh upstream sessions.
//! Activity is kept in memory and written to the store at most every tenth of the idle timeout,
//! so a busy session costs no database write per request.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
};

use serde_json::Value;

use super::{
    asks::{Asks, ClientLink, Sink, relayable},
    jsonrpc::Id,
    upstream::SessionSlots,
};
use crate::{
    clock::SharedClock,
    crypto,
    protocol::Version,
    store::{SessionRow, Store},
};

/// One live session.
pub struct Session {
    /// The SHA-256 of its id, hex: also its key in the session table (one allocation for both;
    /// memory per idle session is a figure the benchmark reports).
    pub id_hash: Arc<str>,
    /// The person who opened it; only they may use it (None in local mode).
    pub user_id: Option<String>,
    pub protocol_version: Version,
    pub client_capabilities: Value,
    /// This conversation's upstream sessions.
    pub slots: SessionSlots,
    /// The level set by `logging/setLevel`; until then (`None`) every level, `debug`, as a
    /// stateful server would.
    log_level: std::sync::Mutex<Option<Box<str>>>,
    /// Server-initiated notifications from upstreams, for the client's GET stream. Made by the
    /// first GET: a channel holds its 256 slots from birth (about 16 KiB), which idle sessions
    /// that never open a stream should not pay for.
    notifications: std::sync::OnceLock<tokio::sync::broadcast::Sender<Value>>,
    /// The upstream relays feeding `notifications`: started by the first GET, stopped when the
    /// session ends.
    pub relays: std::sync::Mutex<Option<Vec<tokio::task::AbortHandle>>>,
    /// What its upstreams may ask the client, and the asks waiting for an answer (made on first
    /// use, `asks.rs`).
    link: std::sync::OnceLock<(Arc<Value>, Arc<Asks>)>,
    /// Its requests in flight, by the id the client gave them, for `notifications/cancelled`.
    inflight: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    last_seen_ms: AtomicI64,
    persisted_ms: AtomicI64,
}

/// The session table: memory in front of the store.
pub struct Sessions {
    live: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    store: Store,
    clock: SharedClock,
    idle_timeout_ms: i64,
}

impl Sessions {
    pub fn new(store: Store, clock: SharedClock, idle_timeout: std::time::Duration) -> Self {
        Self {
            live: RwLock::new(HashMap::new()),
            store,
            clock,
            idle_timeout_ms: idle_timeout.as_millis() as i64,
        }
    }

    /// How many live (not idle) sessions a person has, on every node.
    pub async fn count_of(&self, user_id: &str) -> anyhow::Result<i64> {
        let since = self.clock.now_ms() - self.idle_timeout_ms;
        self.store.count_sessions_of(user_id, since).await
    }

    /// Opens a session after `initialize`; returns the id to send to the client.
    pub async fn create(
        &self,
        protocol_version: Version,
        client_info: &Value,
        client_capabilities: Value,
        user_id: Option<&str>,
    ) -> anyhow::Result<(String, Arc<Session>)> {
        // MCP 2025-11-25 transports, "Session Management": globally unique and cryptographically
        // secure, visible ASCII only.
        let id = crypto::random_token(32);
        let now = self.clock.now_ms();
        let row = SessionRow {
            id_hash: crypto::sha256_hex(&id),
            protocol_version,
            client_name: client_info
                .get("name")
                .and_then(Value::as_str)
                .map(|s| truncate(s, 200)),
            client_version: client_info
                .get("version")
                .and_then(Value::as_str)
                .map(|s| truncate(s, 100)),
            client_capabilities: client_capabilities.to_string(),
            created_at: now,
            last_seen_at: now,
            user_id: user_id.map(String::from),
        };
        self.store.insert_session(&row).await?;
        let session = Arc::new(Session::from_row(&row));
        self.live
            .write()
            .expect("sessions lock")
            .insert(session.id_hash.clone(), session.clone());
        Ok((id, session))
    }

    /// Finds a live session by the id a client sent, recording activity; `None` when unknown,
    /// ended or idle past the timeout.
    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Arc<Session>>> {
        let id_hash = crypto::sha256_hex(id);
        let now = self.clock.now_ms();
        let cached = self
            .live
            .read()
            .expect("sessions lock")
            .get(id_hash.as_str())
            .cloned();
        let session = match cached {
            Some(s) => s,
            None => match self.store.session(&id_hash).await? {
                // Opened on another node, or before a restart.
                Some(row) => {
                    let s = Arc::new(Session::from_row(&row));
                    self.live
                        .write()
                        .expect("sessions lock")
                        .entry(s.id_hash.clone())
                        .or_insert(s)
                        .clone()
                }
                None => return Ok(None),
            },
        };
        if now - session.last_seen_ms.load(Ordering::Relaxed) > self.idle_timeout_ms {
            // Ended already; the sweeper removes it and closes what it opened upstream.
            return Ok(None);
        }
        session.last_seen_ms.fetch_max(now, Ordering::Relaxed);
        let persisted = session.persisted_ms.load(Ordering::Relaxed);
        if now - persisted > self.idle_timeout_ms / 10 {
            session.persisted_ms.store(now, Ordering::Relaxed);
            if !self.store.touch_session(&id_hash, now).await? {
                // Ended elsewhere (another node's DELETE or expiry): stop what it holds open here;
                // its upstream sessions expire at the upstreams.
                self.live
                    .write()
                    .expect("sessions lock")
                    .remove(id_hash.as_str());
                session.stop_relays();
                return Ok(None);
            }
        }
        Ok(Some(session))
    }

    /// Ends a session (`DELETE`); returns it so its upstream sessions can be closed.
    pub async fn end(&self, id: &str) -> anyhow::Result<Option<Arc<Session>>> {
        self.end_hashed(&crypto::sha256_hex(id)).await
    }

    async fn end_hashed(&self, id_hash: &str) -> anyhow::Result<Option<Arc<Session>>> {
        let in_memory = self.live.write().expect("sessions lock").remove(id_hash);
        let in_store = self.store.delete_session(id_hash).await?;
        Ok(in_memory.or_else(|| in_store.then(|| Arc::new(Session::orphan(id_hash)))))
    }

    /// Ends every session idle past the timeout; returns those that were live here.
    pub async fn sweep(&self) -> anyhow::Result<Vec<Arc<Session>>> {
        let now = self.clock.now_ms();
        let cutoff = now - self.idle_timeout_ms;
        let idle: Vec<String> = self
            .live
            .read()
            .expect("sessions lock")
            .iter()
            .filter(|(_, s)| s.last_seen_ms.load(Ordering::Relaxed) < cutoff)
            .map(|(h, _)| h.to_string())
            .collect();
        let mut ended = Vec::new();
        for hash in idle {
            // Activity not yet written to the store must not let the store outvote memory.
            if let Some(s) = self.end_hashed(&hash).await? {
                ended.push(s);
            }
        }
        // Sessions written by any node and idle everywhere.
        for hash in self.store.delete_idle_sessions(cutoff).await? {
            let live = self
                .live
                .write()
                .expect("sessions lock")
                .remove(hash.as_str());
            // Sessions that lived on another node end here too (their connections go).
            ended.push(live.unwrap_or_else(|| Arc::new(Session::orphan(&hash))));
        }
        Ok(ended)
    }

    /// The store behind the sessions.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A session live on this node, by its id's hash.
    pub fn live(&self, id_hash: &str) -> Option<Arc<Session>> {
        self.live
            .read()
            .expect("sessions lock")
            .get(id_hash)
            .cloned()
    }

    /// Live sessions on this node.
    /// The sessions of one person live on this node.
    pub fn live_of(&self, user_id: &str) -> Vec<Arc<Session>> {
        self.live
            .read()
            .expect("sessions lock")
            .values()
            .filter(|s| s.user_id.as_deref() == Some(user_id))
            .cloned()
            .collect()
    }

    pub fn live_count(&self) -> usize {
        self.live.read().expect("sessions lock").len()
    }
}

impl Session {
    fn from_row(row: &SessionRow) -> Self {
        Self {
            id_hash: row.id_hash.as_str().into(),
            user_id: row.user_id.clone(),
            protocol_version: row.protocol_version,
            client_capabilities: serde_json::from_str(&row.client_capabilities)
                .unwrap_or(Value::Null),
            slots: SessionSlots::default(),
            log_level: std::sync::Mutex::new(None),
            notifications: std::sync::OnceLock::new(),
            relays: std::sync::Mutex::new(None),
            link: std::sync::OnceLock::new(),
            inflight: Default::default(),
            last_seen_ms: AtomicI64::new(row.last_seen_at),
            persisted_ms: AtomicI64::new(row.last_seen_at),
        }
    }

    fn orphan(id_hash: &str) -> Self {
        Self {
            id_hash: id_hash.into(),
            user_id: None,
            protocol_version: Version::LATEST_LEGACY,
            client_capabilities: Value::Null,
            slots: SessionSlots::default(),
            log_level: std::sync::Mutex::new(None),
            notifications: std::sync::OnceLock::new(),
            relays: std::sync::Mutex::new(None),
            link: std::sync::OnceLock::new(),
            inflight: Default::default(),
            last_seen_ms: AtomicI64::new(0),
            persisted_ms: AtomicI64::new(0),
        }
    }
}

impl Session {
    /// Stops the upstream relays (the session ended).
    /// The channel of server-initiated notifications (created on first use).
    pub fn notifications(&self) -> &tokio::sync::broadcast::Sender<Value> {
        self.notifications
            .get_or_init(|| tokio::sync::broadcast::channel(256).0)
    }

    /// Sends a server-initiated notification to the client's GET stream, if one was ever
    /// opened (a session that never listened gets nothing, and no channel is made for it).
    pub fn notify(&self, msg: Value) {
        if let Some(tx) = self.notifications.get() {
            let _ = tx.send(msg);
        }
    }

    /// How this session's upstreams reach its client, writing to `sink`.
    pub fn link(&self, sink: Sink) -> ClientLink {
        let (caps, asks) = self.link.get_or_init(|| {
            (
                Arc::new(relayable(&self.client_capabilities)),
                Arc::new(Asks::default()),
            )
        });
        ClientLink {
            capabilities: caps.clone(),
            asks: asks.clone(),
            sink,
        }
    }

    /// The client answered one of the requests relayed to it; false when none waits here.
    pub fn answered(&self, id: &Id, answer: super::asks::Answer) -> bool {
        self.link
            .get()
            .is_some_and(|(_, asks)| asks.answer(id, answer))
    }

    /// Registers a request in flight; the guard removes it when the request ends.
    pub fn begin(self: &Arc<Self>, id: &Id) -> InFlight {
        let key = id_key(id);
        let cancel = Arc::new(tokio::sync::Notify::new());
        self.inflight
            .lock()
            .expect("inflight lock")
            .insert(key.clone(), cancel.clone());
        InFlight {
            session: self.clone(),
            key,
            cancel,
        }
    }

    /// `notifications/cancelled` from the client (MCP 2025-11-25 basic/utilities/cancellation):
    /// the request it names stops; false when no such request is in flight here.
    pub fn cancel(&self, request_id: &Value) -> bool {
        let Some(id) = Id::of(request_id.clone()) else {
            return false;
        };
        let found = self
            .inflight
            .lock()
            .expect("inflight lock")
            .remove(&id_key(&id));
        found.inspect(|n| n.notify_one()).is_some()
    }

    /// Sets the level of the log messages the client wants (`logging/setLevel`).
    pub fn set_log_level(&self, level: &str) {
        *self.log_level.lock().expect("log level lock") = Some(level.into());
    }

    /// The level of the log messages the client wants: `debug` until it sets one.
    pub fn log_level(&self) -> String {
        self.log_level
            .lock()
            .expect("log level lock")
            .as_deref()
            .unwrap_or("debug")
            .to_owned()
    }

    pub fn stop_relays(&self) {
        for relay in self
            .relays
            .lock()
            .expect("relays lock")
            .take()
            .unwrap_or_default()
        {
            relay.abort();
        }
    }
}

/// One request of a session in flight: cancelled through [`Session::cancel`], forgotten on drop.
pub struct InFlight {
    session: Arc<Session>,
    key: String,
    pub cancel: Arc<tokio::sync::Notify>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.session.inflight.lock().expect("inflight lock");
        if map
            .get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.cancel))
        {
            map.remove(&self.key);
        }
    }
}

/// Ids as map keys: `1` and `"1"` are different requests.
fn id_key(id: &Id) -> String {
    match id {
        Id::Number(n) => n.to_string(),
        Id::String(s) => format!("\"{s}"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;

    async fn table(clock: &ManualClock, dir: &std::path::Path) -> Sessions {
        let store = Store::open_sqlite_in(dir).await.unwrap();
        Sessions::new(store, Arc::new(clock.clone()), Duration::from_secs(600))
    }

    /// A 2025-11-25 session of no one in particular.
    async fn open(sessions: &Sessions) -> (String, Arc<Session>) {
        sessions
            .create(Version::V2025_11_25, &json!({"name":"c"}), json!({}), None)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_session_is_found_by_its_id_and_wants_every_log_level_until_it_sets_one() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let sessions = table(&clock, dir.path()).await;
        let (id, s) = open(&sessions).await;
        assert_eq!(&*s.id_hash, crypto::sha256_hex(&id));
        let found = sessions.get(&id).await.unwrap().expect("live");
        assert!(Arc::ptr_eq(&found, &s), "the same session, from memory");
        assert!(sessions.live(&crypto::sha256_hex(&id)).is_some());
        assert!(sessions.get("not-an-id").await.unwrap().is_none());
        assert_eq!(s.log_level(), "debug");
        s.set_log_level("warning");
        assert_eq!(found.log_level(), "warning");
        assert!(sessions.end(&id).await.unwrap().is_some());
        assert!(sessions.live(&crypto::sha256_hex(&id)).is_none());
    }

    #[tokio::test]
    async fn a_session_lives_while_used_and_ends_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let sessions = table(&clock, dir.path()).await;
        let (id, s) = open(&sessions).await;
        assert_eq!(s.protocol_version, Version::V2025_11_25);
        clock.advance(Duration::from_secs(599));
        assert!(
            sessions.get(&id).await.unwrap().is_some(),
            "used within the window"
        );
        clock.advance(Duration::from_secs(599));
        assert!(
            sessions.get(&id).await.unwrap().is_some(),
            "each use restarts the window"
        );
        clock.advance(Duration::from_secs(601));
        assert!(
            sessions.get(&id).await.unwrap().is_none(),
            "idle past the timeout"
        );
        assert!(
            sessions.get(&id).await.unwrap().is_none(),
            "and stays ended"
        );
    }

    #[tokio::test]
    async fn sweep_ends_idle_sessions_only() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let sessions = table(&clock, dir.path()).await;
        let (idle, _) = sessions
            .create(Version::V2025_11_25, &json!({}), json!({}), None)
            .await
            .unwrap();
        clock.advance(Duration::from_secs(300));
        let (busy, _) = sessions
            .create(Version::V2025_06_18, &json!({}), json!({}), None)
            .await
            .unwrap();
        clock.advance(Duration::from_secs(301));
        let ended = sessions.sweep().await.unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(&*ended[0].id_hash, crypto::sha256_hex(&idle));
        assert!(sessions.get(&busy).await.unwrap().is_some());
        assert_eq!(sessions.live_count(), 1);
    }

    #[tokio::test]
    async fn ended_and_unknown_ids_are_not_found_and_ids_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(5);
        let sessions = table(&clock, dir.path()).await;
        let (id, _) = sessions
            .create(Version::V2025_11_25, &json!({}), json!({}), None)
            .await
            .unwrap();
        assert!(sessions.get("made-up").await.unwrap().is_none());
        assert!(sessions.end(&id).await.unwrap().is_some());
        assert!(sessions.end(&id).await.unwrap().is_none());
        assert!(sessions.get(&id).await.unwrap().is_none());
        // The raw id never reaches the database file.
        sessions.store.close().await;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(id.len()).any(|w| w == id.as_bytes()));
        }
    }

    #[tokio::test]
    async fn another_node_picks_the_session_up_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(5);
        let node_a = table(&clock, dir.path()).await;
        let node_b = table(&clock, dir.path()).await;
        let (id, _) = node_a
            .create(Version::V2025_06_18, &json!({}), json!({"roots":{}}), None)
            .await
            .unwrap();
        let on_b = node_b
            .get(&id)
            .await
            .unwrap()
            .expect("visible on the other node");
        assert_eq!(on_b.protocol_version, Version::V2025_06_18);
        assert_eq!(on_b.client_capabilities, json!({"roots":{}}));
        node_b.end(&id).await.unwrap();
        clock.advance(Duration::from_secs(61));
        assert!(
            node_a.get(&id).await.unwrap().is_none(),
            "an end on one node reaches the other"
        );
    }
}
