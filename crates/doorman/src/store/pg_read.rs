//! Point reads on PostgreSQL for the request path, on connections of their own.
//!
//! sqlx's pool pings a connection when it hands it out and again when it takes it back, so a
//! one-row lookup through it costs three round trips to the server. These connections sit
//! outside the pool: a lookup is one round trip on a prepared statement. A connection that
//! fails is dropped (it may be broken, the server restarted), and the caller falls back to the
//! pool for that read; the next read opens a new one.

use std::sync::Mutex;

use sqlx::{
    Connection, PgConnection,
    postgres::{PgConnectOptions, PgRow},
};

/// Idle connections kept, on top of the pool's.
const IDLE: usize = 4;
/// How long a direct read may take, connecting included, before the pool takes over (an
/// unreachable server would otherwise hold it for the system's TCP timeout).
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) struct PgReader {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReader").finish_non_exhaustive()
    }
}

impl PgReader {
    pub(super) fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Every row of `sql` with two text parameters.
    pub(super) async fn fetch_all<T>(&self, sql: &str, a: &str, b: &str) -> sqlx::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        tokio::time::timeout(PATIENCE, self.fetch_all_now(sql, a, b))
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    async fn fetch_all_now<T>(&self, sql: &str, a: &str, b: &str) -> sqlx::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let taken = self.idle.lock().expect("postgres reader lock").pop();
        let mut conn = match taken {
            Some(c) => c,
            None => PgConnection::connect_with(&self.options).await?,
        };
        let rows = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(a)
            .bind(b)
            .fetch_all(&mut conn)
            .await?;
        let mut idle = self.idle.lock().expect("postgres reader lock");
        if idle.len() < IDLE {
            idle.push(conn);
        }
        Ok(rows)
    }
}
