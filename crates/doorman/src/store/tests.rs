//! The store's tests run on both engines. PostgreSQL comes from `DOORMAN_TEST_POSTGRES_URL`
//! (`scripts/pg start` prints one); each test gets a fresh database of its own.
//! Without the variable the PostgreSQL half fails loudly unless `DOORMAN_TEST_NO_POSTGRES=1`.

use super::*;

/// A store on a fresh database, and a guard that keeps its directory alive.
async fn engines() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = vec![(Store::open_sqlite_in(dir.path()).await.unwrap(), Some(dir))];
    match std::env::var("DOORMAN_TEST_POSTGRES_URL") {
        Ok(base) => stores.push((fresh_postgres(&base).await, None)),
        Err(_) if std::env::var("DOORMAN_TEST_NO_POSTGRES").as_deref() == Ok("1") => {}
        Err(_) => panic!(
            "DOORMAN_TEST_POSTGRES_URL is not set: run `scripts/pg start` and export the URL it \
             prints (or set DOORMAN_TEST_NO_POSTGRES=1 to test SQLite only)"
        ),
    }
    stores
}

async fn fresh_postgres(base: &str) -> Store {
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
    Store::open(&format!("{prefix}/{name}")).await.unwrap()
}

fn row(id: &str, last_seen_at: i64) -> SessionRow {
    SessionRow {
        id_hash: crate::crypto::sha256_hex(id),
        protocol_version: "2025-11-25".into(),
        client_name: Some("test-client".into()),
        client_version: Some("1.0".into()),
        client_capabilities: r#"{"elicitation":{}}"#.into(),
        created_at: 1_000,
        last_seen_at,
    }
}

#[tokio::test]
async fn sessions_round_trip_on_every_engine() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        store.ping().await.unwrap();
        let a = row("session-a", 1_000);
        store.insert_session(&a).await.unwrap();
        assert_eq!(
            store.session(&a.id_hash).await.unwrap().as_ref(),
            Some(&a),
            "{engine}"
        );
        assert_eq!(store.session("unknown").await.unwrap(), None, "{engine}");

        // The same id twice is refused: ids are unique.
        assert!(store.insert_session(&a).await.is_err(), "{engine}");

        let last_seen = |s: &Store| {
            let s = s.clone();
            let hash = a.id_hash.clone();
            async move { s.session(&hash).await.unwrap().unwrap().last_seen_at }
        };
        assert!(
            store.touch_session(&a.id_hash, 5_000).await.unwrap(),
            "{engine}"
        );
        assert_eq!(last_seen(&store).await, 5_000, "{engine}");
        // Touching with an older time never moves last_seen backwards.
        assert!(
            store.touch_session(&a.id_hash, 4_000).await.unwrap(),
            "{engine}"
        );
        assert_eq!(last_seen(&store).await, 5_000, "{engine}");
        assert!(
            !store.touch_session("gone", 6_000).await.unwrap(),
            "{engine}"
        );

        assert!(store.delete_session(&a.id_hash).await.unwrap(), "{engine}");
        assert!(!store.delete_session(&a.id_hash).await.unwrap(), "{engine}");
        assert_eq!(store.session(&a.id_hash).await.unwrap(), None, "{engine}");
        store.close().await;
    }
}

#[tokio::test]
async fn idle_sessions_are_deleted_and_reported() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        for (id, seen) in [("old-1", 100), ("old-2", 200), ("fresh", 10_000)] {
            store.insert_session(&row(id, seen)).await.unwrap();
        }
        let mut gone = store.delete_idle_sessions(1_000).await.unwrap();
        gone.sort();
        let mut expected = vec![
            crate::crypto::sha256_hex("old-1"),
            crate::crypto::sha256_hex("old-2"),
        ];
        expected.sort();
        assert_eq!(gone, expected, "{engine}");
        assert_eq!(store.count_sessions().await.unwrap(), 1, "{engine}");
        store.close().await;
    }
}

#[tokio::test]
async fn migrations_apply_once_and_the_data_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite_in(dir.path()).await.unwrap();
    store.insert_session(&row("kept", 1)).await.unwrap();
    store.close().await;
    let again = Store::open_sqlite_in(dir.path()).await.unwrap();
    assert_eq!(again.count_sessions().await.unwrap(), 1);
    // WAL mode is what the embedded default promises.
    let mode: (String,) =
        on_pool!(again, pool => sqlx::query_as("PRAGMA journal_mode").fetch_one(pool).await)
            .unwrap();
    assert_eq!(mode.0, "wal");
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error() {
    let err = Store::open("postgres://nobody@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot connect to PostgreSQL"),
        "{err:#}"
    );
}
