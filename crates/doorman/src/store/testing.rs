//! Test support: a fresh database on every engine. PostgreSQL comes from
//! `DOORMAN_TEST_POSTGRES_URL` (`scripts/pg start` prints one); each call gets a database of its
//! own. Without the variable the PostgreSQL half fails loudly unless `DOORMAN_TEST_NO_POSTGRES=1`.

use sqlx::PgPool;

use super::Store;

/// A store on a fresh database per engine, each with a guard that keeps its directory alive.
pub async fn engines() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![(Store::open_sqlite_in(dir.path()).await.unwrap(), Some(dir))];
    match std::env::var("DOORMAN_TEST_POSTGRES_URL") {
        Ok(base) => stores.push((
            Store::open(&fresh_postgres(&base).await).await.unwrap(),
            None,
        )),
        Err(_) if std::env::var("DOORMAN_TEST_NO_POSTGRES").as_deref() == Ok("1") => {}
        Err(_) => panic!(
            "DOORMAN_TEST_POSTGRES_URL is not set: run `scripts/pg start` and export the URL it \
             prints (or set DOORMAN_TEST_NO_POSTGRES=1 to test SQLite only)"
        ),
    }
    stores
}

/// Creates an empty database on the server and returns its URL.
pub async fn fresh_postgres(base: &str) -> String {
    let admin = PgPool::connect(base)
        .await
        .expect("PostgreSQL must be reachable");
    let name = format!(
        "doorman_t_{}",
        crate::crypto::random_token(9)
            .to_lowercase()
            .replace('-', "_")
    );
    // The name is made of random url-safe characters only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("a database URL has a path");
    format!("{prefix}/{name}")
}

/// Inserts a bare local person `id` (tests of tables that reference `users`).
pub async fn insert_person(store: &Store, id: &str) {
    super::on_pool!(store, pool => sqlx::query(
        "INSERT INTO users (id, issuer, subject, username, created_at) VALUES ($1, 'local', $1, $1, 0)",
    )
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ()))
    .unwrap();
}
