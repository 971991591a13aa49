//! When connections were last used (`last_used_at`): what ends a stateless conversation's
//! connections after `server.session_idle_timeout` without use (`lifecycle.rs`).
//!
//! The idle window is minutes long, so a use is written at most once per tenth of it per
//! connection (at least a second apart), and never when the stored time is already that recent
//! (another node wrote it). Writes are off the request path: one writer task at a time takes
//! every use noted since its last write and stores them in one statement, so a burst of lookups
//! of different connections costs one commit, not one each. Nothing waits on purpose: a use
//! noted while no write is running is written at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::store::Store;

/// Uses remembered for throttling, at most.
const REMEMBERED_LIMIT: usize = 100_000;

pub(super) struct Touches {
    store: Store,
    /// How far apart two writes of one connection's use are, at least.
    every_ms: i64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connection id → the last use written or being written.
    written: HashMap<String, i64>,
    /// Uses waiting for the writer.
    pending: HashMap<String, i64>,
    /// A writer task is running (it takes `pending` until it finds it empty).
    writing: bool,
}

impl Touches {
    pub(super) fn new(store: Store, idle_ms: i64) -> Self {
        Self {
            store,
            every_ms: (idle_ms / 10).max(1000),
            state: Mutex::default(),
        }
    }

    /// Notes a use of connection `id` at `now`; `stored` is its `last_used_at` when the caller
    /// just read the row. Returns whether a writer task was started (none was running).
    pub(super) fn note(self: &Arc<Self>, id: &str, stored: Option<i64>, now: i64) -> bool {
        let mut s = self.state.lock().expect("touches lock");
        let last = s.written.get(id).copied().max(stored).unwrap_or(0);
        if now - last <= self.every_ms {
            if stored == Some(last) {
                // Written recently, perhaps by another node: the next uses here skip it too.
                self.remember(&mut s.written, now, id, last);
            }
            return false;
        }
        self.remember(&mut s.written, now, id, now);
        s.pending.insert(id.to_owned(), now);
        if s.writing {
            return false;
        }
        s.writing = true;
        drop(s);
        let this = self.clone();
        tokio::spawn(async move { this.write_all().await });
        true
    }

    /// The writer: stores what is waiting, one statement per round, until nothing is.
    async fn write_all(&self) {
        loop {
            let uses = self.take();
            if uses.is_empty() {
                return;
            }
            if let Err(e) = self.store.touch_connections(&uses).await {
                tracing::warn!(error = %e, connections = uses.len(), "cannot record connections' use");
                // Forgotten, so that their next use tries again.
                let mut s = self.state.lock().expect("touches lock");
                for (id, at) in &uses {
                    if s.written.get(id) == Some(at) {
                        s.written.remove(id);
                    }
                }
            }
        }
    }

    /// Remembers a use for throttling, at most [`REMEMBERED_LIMIT`] of them: past it those
    /// outside the throttle's window go (then all: a forgotten use costs one more write).
    fn remember(&self, written: &mut HashMap<String, i64>, now: i64, id: &str, at: i64) {
        let every_ms = self.every_ms;
        super::insert_bounded(
            written,
            REMEMBERED_LIMIT,
            |t| now - *t <= every_ms,
            id.to_owned(),
            at,
        );
    }

    /// Takes the uses waiting, or marks the writer stopped when there are none (under the same
    /// lock as [`Touches::note`], so no use is left behind without a writer).
    fn take(&self) -> Vec<(String, i64)> {
        let mut s = self.state.lock().expect("touches lock");
        if s.pending.is_empty() {
            s.writing = false;
        }
        s.pending.drain().collect()
    }
}
