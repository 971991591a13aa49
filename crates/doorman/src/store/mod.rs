//! The store: one interface over SQLite (embedded default) and PostgreSQL (several nodes).
//!
//! Each backend has its own migrations (`migrations/{sqlite,postgres}`), applied at start.
//! Queries are written once in the dialect both engines accept (`$1` placeholders, `BIGINT`
//! milliseconds) and run on the concrete pool of the configured engine, so there is no `Any`
//! driver and no dynamic dispatch on the hot path. One file per entity.

mod audit;
mod clients;
mod connections;
mod federation;
mod flow;
mod grants;
mod invalidation;
mod pg_read;
mod sessions;
mod sqlite_audit;
mod sqlite_read;
mod types;
mod users;
mod wal;

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use audit::{AuditEvent, AuditFilter};
pub use clients::ClientRow;
pub use connections::{
    ConnectPromptRow, ConnectStateRow, ConnectionRow, PendingRevocationRow, RegistrationRow,
};
pub use federation::{FederatedIdentityRow, OidcStateRow};
pub use flow::{AuthorizationRequestRow, BrowserSessionRow, SigningKeyRow};
pub use grants::{CodeRow, CodeUse, GrantRow, RefreshRow, RefreshUse};
pub use invalidation::{CHANNEL as INVALIDATION_CHANNEL, Heard, Invalidation};
pub use sessions::SessionRow;
pub use sqlite_audit::SqliteAuditWriter;
pub use types::Groups;
pub use users::{
    LOCAL_ISSUER, LocalCredentialRow, MAX_USERNAME_LEN, SERVICE_ISSUER, SignInFailureRow, UserRow,
    normalize_username,
};
pub use wal::{CHECK_EVERY as WAL_CHECK_EVERY, LIMIT as WAL_LIMIT};

/// Which engine a store runs on.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    /// Every change this process announces, for its own subscribers (`Store::changes`): what
    /// other nodes hear through the database, this one hears here, on either engine.
    pub(crate) local: tokio::sync::broadcast::Sender<invalidation::Invalidation>,
    /// SQLite: point reads of the request path on the calling thread (`sqlite_read.rs`).
    sqlite_reader: Option<std::sync::Arc<sqlite_read::SqliteReader>>,
    /// PostgreSQL: point reads of the request path off the pool (`pg_read.rs`).
    pg_reader: Option<std::sync::Arc<pg_read::PgReader>>,
}

/// Runs the same query code on whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            crate::store::Backend::Sqlite($pool) => $body,
            crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// SQLite: writes a consistent copy of the database to `path` (`VACUUM INTO`).
    pub async fn backup_into(&self, path: &str) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query("VACUUM INTO $1")
                    .bind(path)
                    .execute(pool)
                    .await
                    .context("cannot write the backup")?;
                Ok(())
            }
            Backend::Postgres(_) => anyhow::bail!("PostgreSQL is backed up with pg_dump"),
        }
    }

    /// Opens the database named by `url` and applies its migrations.
    ///
    /// `sqlite:` URLs create the file (and its directory) when missing and use WAL, so readers
    /// never wait for the writer; `postgres://` URLs connect to a shared server.
    ///
    /// Migrations only ever add (tables, columns, indexes), so a database a newer Doorman
    /// migrated is accepted as it is (its extra migrations are not an error): during a rolling
    /// upgrade, nodes of the previous version keep starting.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let (mut sqlite_reader, mut pg_reader) = (None, None);
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .context("invalid PostgreSQL URL")?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await
                .context("cannot connect to PostgreSQL")?;
            pg_reader = Some(std::sync::Arc::new(pg_read::PgReader::new(options)));
            let mut migrator = sqlx::migrate!("migrations/postgres");
            migrator.set_ignore_missing(true);
            migrator
                .run(&pool)
                .await
                .context("cannot apply PostgreSQL migrations")?;
            Backend::Postgres(pool)
        } else {
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("invalid SQLite URL {url:?}"))?;
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create data directory {}", dir.display()))?;
            }
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options.clone())
                .await
                .with_context(|| format!("cannot open SQLite database {url:?}"))?;
            let mut migrator = sqlx::migrate!("migrations/sqlite");
            migrator.set_ignore_missing(true);
            migrator
                .run(&pool)
                .await
                .context("cannot apply SQLite migrations")?;
            // sqlx names an in-memory database (`sqlite::memory:`) `file:sqlx-in-memory-N`, not
            // `:memory:`: the URL says it. No file to read it through.
            let in_memory = options.get_filename() == Path::new(":memory:")
                || url.contains(":memory:")
                || url.contains("mode=memory");
            if !in_memory {
                sqlite_reader = Some(std::sync::Arc::new(sqlite_read::SqliteReader::new(
                    options.get_filename().to_owned(),
                )));
            }
            Backend::Sqlite(pool)
        };
        Ok(Self {
            backend,
            local: tokio::sync::broadcast::channel(256).0,
            sqlite_reader,
            pg_reader,
        })
    }

    /// Opens an SQLite database in `dir` (tests and the embedded default).
    pub async fn open_sqlite_in(dir: &Path) -> anyhow::Result<Self> {
        Self::open(&format!("sqlite://{}", dir.join("doorman.db").display())).await
    }

    /// The engine's name, for logs.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Closes every connection (the WAL is checkpointed on SQLite).
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
