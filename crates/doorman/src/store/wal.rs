//! SQLite's write-ahead log, kept bounded.
//!
//! SQLite checkpoints the log on its own (after commits, once it holds 1,000 pages), but such a
//! checkpoint only copies pages back; the log starts again from its beginning only when no
//! reader is using it. On a busy node some reader always is (the request path reads on several
//! connections at once), so the log never restarts and grows by every commit: opening 100,000
//! sessions grew it to about 930 MiB against a 23 MiB database (`bench/README.md`, "One node at
//! scale"), and every read then searches a larger log index. So every few seconds, once the log
//! passes a size, a `wal_checkpoint(TRUNCATE)` waits (up to the pool's busy timeout) for the
//! readers of the moment to finish, copies the rest back and empties the log.

use std::{path::PathBuf, time::Duration};

use super::{Backend, Store};

/// How often the log's size is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// A log past this size is checkpointed and emptied (the automatic checkpoints keep a healthy
/// one near 4 MiB).
pub const LIMIT: u64 = 64 * 1024 * 1024;

impl Store {
    /// SQLite on a file: checks the write-ahead log's size every `every` and empties it past
    /// `limit` bytes, until the process ends. Returns false and does nothing elsewhere.
    pub fn spawn_wal_checkpoints(&self, every: Duration, limit: u64) -> bool {
        let Some(wal) = self.wal_path() else {
            return false;
        };
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let size = tokio::fs::metadata(&wal).await.map_or(0, |m| m.len());
                if size < limit {
                    continue;
                }
                match store.checkpoint_wal().await {
                    Ok(true) => tracing::debug!(bytes = size, "emptied SQLite's write-ahead log"),
                    // Readers held on past the busy timeout: the next tick tries again.
                    Ok(false) => tracing::debug!(
                        bytes = size,
                        "SQLite's write-ahead log could not be emptied yet (readers kept it)"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot checkpoint SQLite's write-ahead log")
                    }
                }
            }
        });
        true
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`: true when the log was copied back and emptied, false
    /// when readers still using it kept it (SQLite's `busy` column).
    pub async fn checkpoint_wal(&self) -> anyhow::Result<bool> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Ok(true);
        };
        let (busy, _log, _copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(pool)
                .await?;
        Ok(busy == 0)
    }

    /// The write-ahead log's file: the database's, with `-wal`.
    fn wal_path(&self) -> Option<PathBuf> {
        let db = self.sqlite_reader.as_ref()?.path();
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Some(PathBuf::from(wal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_size(store: &Store) -> u64 {
        std::fs::metadata(store.wal_path().unwrap()).map_or(0, |m| m.len())
    }

    /// A log past the limit is emptied by the periodic check, even while another connection
    /// keeps reading (the check waits for a moment between its reads).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_past_its_limit_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_in(dir.path()).await.unwrap();
        for n in 0..200 {
            store
                .insert_audit_events(&[crate::store::AuditEvent {
                    at: n,
                    kind: "call".into(),
                    event: "tools/call".into(),
                    detail: Some("x".repeat(2000)),
                    record_key: Some(format!("key-{n}")),
                    ..Default::default()
                }])
                .await
                .unwrap();
        }
        let grown = wal_size(&store);
        assert!(grown > 100_000, "the log holds the writes: {grown} bytes");
        // A reader taking turns with the checkpoint, as the request path does.
        let reading = {
            let store = store.clone();
            tokio::spawn(async move {
                let latest = crate::store::AuditFilter {
                    limit: 1,
                    ..Default::default()
                };
                loop {
                    let _ = store.audit_events(&latest).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        assert!(store.spawn_wal_checkpoints(Duration::from_millis(50), 4096));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while wal_size(&store) >= 4096 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log was not emptied: {} bytes",
                wal_size(&store)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reading.abort();
    }
}
