//! The audit writer's own SQLite connection: batches of records stored on the writer's thread.
//!
//! Through sqlx, every write is handed to a connection's worker thread and its answer handed
//! back (two thread wake-ups per batch, on top of the writer's own), which on a busy gateway
//! cost more than the insert. The audit writer already runs on a thread of its own
//! (`crate::audit`), so on SQLite it writes directly: one `BEGIN IMMEDIATE … COMMIT` per
//! batch, one single-row `INSERT` executed per record, every statement prepared once. The
//! pool's connections and this one share the database file; SQLite's own locking orders their
//! writes (a busy database is waited for, up to the pool's timeout, and beyond that the write
//! fails and is retried).

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags};

use super::AuditEvent;

/// The same wait for the write lock the pool's connections have.
const BUSY: Duration = Duration::from_secs(5);

const INSERT: &str = "INSERT INTO audit_events (at, kind, event, person_id, person, client_id, \
    conversation, upstream, name, resource, account, decision, policy, outcome, latency_us, \
    request_id, arguments, detail, client_address, record_key) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) \
    ON CONFLICT (record_key) DO NOTHING";

pub struct SqliteAuditWriter {
    conn: Connection,
}

impl std::fmt::Debug for SqliteAuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAuditWriter").finish_non_exhaustive()
    }
}

impl SqliteAuditWriter {
    /// For the database file at `path` (which the sqlx pool created and migrated).
    pub(super) fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY)?;
        // Per connection, as the pool's: a commit reaches the WAL without an fsync of its own
        // (the WAL is synced at checkpoints), durable across a crash of the process.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Self { conn })
    }

    /// Stores `events` in one transaction; a record already stored (its `record_key`) is
    /// skipped, so a retried batch stores nothing twice.
    pub fn insert(&mut self, events: &[AuditEvent]) -> rusqlite::Result<()> {
        // `BEGIN`/`COMMIT` as cached statements too: parsing them again for every batch (what
        // `Connection::transaction` does) cost as much as the inserts of a small batch.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let inserted = self.insert_all(events).and_then(|()| {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        });
        if inserted.is_err() && !self.conn.is_autocommit() {
            // Nothing half-stored: the whole batch is retried.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        inserted
    }

    fn insert_all(&self, events: &[AuditEvent]) -> rusqlite::Result<()> {
        let mut st = self.conn.prepare_cached(INSERT)?;
        for e in events {
            st.execute(rusqlite::params![
                e.at,
                e.kind,
                e.event,
                e.person_id,
                e.person,
                e.client_id,
                e.conversation,
                e.upstream,
                e.name,
                e.resource,
                e.account,
                e.decision,
                e.policy,
                e.outcome,
                e.latency_us,
                e.request_id,
                e.arguments,
                e.detail,
                e.client_address,
                e.record_key,
            ])?;
        }
        Ok(())
    }
}
