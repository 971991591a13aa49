//! Point reads on SQLite on the calling thread, for the request path.
//!
//! sqlx runs every SQLite connection on a worker thread of its own and talks to it through
//! channels: a lookup costs several thread hand-offs (futex waits and wake-ups), which measured
//! at ten times the query itself (`bench/README.md`, "Vault lookups"). A query that reads a few
//! pages of a WAL database takes microseconds and never waits for the writer (readers see the
//! last committed state), so these run synchronously on the caller's thread, on a small set of
//! read-only connections kept here. Anything unexpected (the database busy past a short
//! timeout, an unreadable value) is an error, and the caller falls back to the sqlx path.

use std::{path::PathBuf, str::FromStr, sync::Mutex, time::Duration};

use rusqlite::{Connection, OpenFlags, types::Type};

use super::ConnectionRow;

/// Idle connections kept (the request path runs on a few worker threads).
const IDLE: usize = 4;
/// How long a read waits for a lock (only WAL recovery or a checkpoint's reset can hold one).
const BUSY: Duration = Duration::from_millis(100);

pub(super) struct SqliteReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteReader {
    /// For the database file at `path` (which the sqlx pool created and migrated).
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The database file.
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(BUSY)?;
        // Reads only, whatever a bug might try.
        c.pragma_update(None, "query_only", true)?;
        // The plan of a cached statement does not depend on the values bound to it. Otherwise,
        // once `ANALYZE` (or `PRAGMA optimize`) has stored index samples (`sqlite_stat4`), SQLite
        // prepares the statement again on every new binding of a parameter compared with an
        // indexed column (sqlite.org/c3ref/prepare.html): parsing and planning the query, which
        // measured at 60% of a lookup's time (`bench/README.md`). The index every lookup wants
        // is the same whoever is looked up.
        c.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        Ok(c)
    }

    /// Runs `f` on an idle connection (or a new one), then keeps the connection.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let taken = self.idle.lock().expect("sqlite reader lock").pop();
        let conn = match taken {
            Some(c) => c,
            None => self.open()?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().expect("sqlite reader lock");
        if idle.len() < IDLE {
            idle.push(conn);
        }
        out
    }

    /// `Store::connections_of`, the same query.
    pub(super) fn connections_of(
        &self,
        sql: &str,
        user_id: &str,
        resource: &str,
    ) -> rusqlite::Result<Vec<ConnectionRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(sql)?;
            let rows = st.query_map((user_id, resource), |r| {
                let binding: String = r.get(9)?;
                Ok(ConnectionRow {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    resource: r.get(2)?,
                    account: r.get(3)?,
                    scopes: r.get(4)?,
                    access_token_sealed: r.get(5)?,
                    refresh_token_sealed: r.get(6)?,
                    authorized_at: r.get(7)?,
                    expires_at: r.get(8)?,
                    binding: crate::config::Binding::from_str(&binding).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(9, Type::Text, e.into())
                    })?,
                    binding_target: r.get(10)?,
                    created_at: r.get(11)?,
                    updated_at: r.get(12)?,
                    selected_at: r.get(13)?,
                    last_used_at: r.get(14)?,
                })
            })?;
            rows.collect()
        })
    }

    /// How many times the cached statement `sql` was prepared again since it was first prepared
    /// (on the connection the next read would take).
    #[cfg(test)]
    pub(super) fn reprepares(&self, sql: &str) -> rusqlite::Result<i32> {
        self.with(|c| {
            Ok(c.prepare_cached(sql)?
                .get_status(rusqlite::StatementStatus::RePrepare))
        })
    }
}
