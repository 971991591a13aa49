//! The store's tests run on both engines. PostgreSQL comes from `DOORMAN_TEST_POSTGRES_URL`
//! (`scripts/pg start` prints one); each test gets a fresh database of its own.
//! Without the variable the PostgreSQL half fails loudly unless `DOORMAN_TEST_NO_POSTGRES=1`.

use super::*;

use super::testing::{engines, insert_person};

fn row(id: &str, last_seen_at: i64) -> SessionRow {
    SessionRow {
        user_id: Some("person-1".into()),
        id_hash: crate::crypto::sha256_hex(id),
        protocol_version: crate::protocol::Version::V2025_11_25,
        client_name: Some("test-client".into()),
        client_version: Some("1.0".into()),
        client_capabilities: r#"{"elicitation":{}}"#.into(),
        created_at: 1_000,
        last_seen_at,
    }
}

#[tokio::test]
async fn an_in_memory_database_is_read_through_its_pool_and_a_file_through_its_reader() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    assert!(store.sqlite_reader.is_none(), "no file to read");
    let a = row("in-memory", 1_000);
    store.insert_session(&a).await.unwrap();
    assert_eq!(store.session(&a.id_hash).await.unwrap(), Some(a));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite_in(dir.path()).await.unwrap();
    assert!(
        store.sqlite_reader.is_some(),
        "a file is read without the pool"
    );
}

/// Lookups read through a cached statement whose plan stays put once the database has been
/// analysed: no parsing and planning again for each person looked up.
#[tokio::test]
async fn the_connection_lookup_is_not_prepared_again_for_each_person_after_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite_in(dir.path()).await.unwrap();
    for p in 0..50 {
        let user = format!("person-{p}");
        insert_person(&store, &user).await;
        let mut c = connection(&format!("c{p}"), &user, None);
        c.binding = crate::config::Binding::User;
        store.insert_connection(&c).await.unwrap();
    }
    // Index samples (sqlite_stat4), as `ANALYZE` or `PRAGMA optimize` leaves them.
    on_pool!(store, pool => sqlx::query("ANALYZE").execute(pool).await.map(|_| ())).unwrap();
    let samples: i64 =
        on_pool!(store, pool => sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_stat4")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert!(samples > 0, "ANALYZE stored index samples");
    let reader = store
        .sqlite_reader
        .as_ref()
        .expect("a file is read by the reader");
    let sql = super::connections::lookup_sql();
    for p in 0..10 {
        let rows = reader
            .connections_of(&sql, &format!("person-{p}"), "notes")
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, format!("c{p}"));
    }
    assert_eq!(reader.reprepares(&sql).unwrap(), 0);
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

/// A rolling upgrade: a newer node migrated the database further than this binary knows; this
/// binary still starts on it (migrations only add).
#[tokio::test]
async fn a_database_migrated_by_a_newer_version_still_opens() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        on_pool!(store, pool => sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a newer doorman', TRUE, $1, 1)",
        )
        .bind(vec![0u8; 48])
        .execute(pool)
        .await
        .map(|_| ()))
        .unwrap();
        let url = match &store.backend {
            super::Backend::Sqlite(pool) => {
                format!(
                    "sqlite://{}",
                    pool.connect_options().get_filename().display()
                )
            }
            super::Backend::Postgres(pool) => {
                let o = pool.connect_options();
                format!(
                    "postgres://postgres@{}:{}/{}",
                    o.get_host(),
                    o.get_port(),
                    o.get_database().unwrap_or_default()
                )
            }
        };
        store.close().await;
        Store::open(&url)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e:#}"))
            .close()
            .await;
    }
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

fn grant(id: &str, user: &str) -> GrantRow {
    GrantRow {
        id: id.into(),
        user_id: user.into(),
        client_id: "client-a".into(),
        scope: "mcp".into(),
        resource: "http://127.0.0.1:8421/mcp".into(),
        auth_time: 1_000,
        amr: "[\"pwd\"]".into(),
        acr: Some("silver".into()),
        created_at: 1_000,
        expires_at: 10_000_000,
        last_used_at: 1_000,
        revoked_at: None,
        revoked_reason: None,
    }
}

#[tokio::test]
async fn codes_and_refresh_tokens_work_once_on_every_engine() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        insert_person(&store, "alice").await;
        let code = CodeRow {
            code_hash: "code-hash".into(),
            client_id: "client-a".into(),
            user_id: "alice".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "challenge".into(),
            resource: "http://127.0.0.1:8421/mcp".into(),
            scope: "mcp".into(),
            auth_time: 1_000,
            amr: "[]".into(),
            acr: None,
            created_at: 1_000,
            expires_at: 61_000,
            used_at: None,
            grant_id: None,
            continues_grant: None,
        };
        store.insert_code(&code).await.unwrap();
        assert!(
            matches!(store.use_code("code-hash", 2_000).await.unwrap(), CodeUse::Fresh(c) if c.user_id == "alice"),
            "{engine}"
        );
        store.insert_grant(&grant("g1", "alice")).await.unwrap();
        store.set_code_grant("code-hash", "g1").await.unwrap();
        // The second use finds the grant the first one created, so it can be revoked.
        assert!(
            matches!(store.use_code("code-hash", 3_000).await.unwrap(), CodeUse::Replayed(Some(g)) if g == "g1"),
            "{engine}"
        );
        assert!(
            matches!(
                store.use_code("nope", 3_000).await.unwrap(),
                CodeUse::Unknown
            ),
            "{engine}"
        );

        let refresh = RefreshRow {
            token_hash: "rt-1".into(),
            grant_id: "g1".into(),
            created_at: 1_000,
            expires_at: 10_000_000,
            used_at: None,
        };
        store.insert_refresh_token(&refresh).await.unwrap();
        assert!(
            matches!(store.use_refresh_token("rt-1", 4_000).await.unwrap(), RefreshUse::Fresh(r) if r.grant_id == "g1"),
            "{engine}"
        );
        assert!(
            matches!(store.use_refresh_token("rt-1", 5_000).await.unwrap(), RefreshUse::Reused(g) if g == "g1"),
            "{engine}"
        );
        assert_eq!(
            store.refresh_token_grant("rt-1").await.unwrap().as_deref(),
            Some("g1")
        );

        assert!(
            store.revoke_grant("g1", 6_000, "test").await.unwrap(),
            "{engine}"
        );
        assert!(
            !store.revoke_grant("g1", 7_000, "test").await.unwrap(),
            "{engine}"
        );
        let revoked = store.grants_revoked_since(5_000).await.unwrap();
        assert_eq!(revoked, vec![("g1".to_owned(), 6_000)], "{engine}");
        assert!(
            store.grants_revoked_since(6_001).await.unwrap().is_empty(),
            "{engine}"
        );
        let listed = store.grants(Some("alice")).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].revoked_reason.as_deref(), Some("test"));
        assert!(
            store.grants(Some("bob")).await.unwrap().is_empty(),
            "{engine}"
        );

        store
            .revoke_access_token("jti-1", 100_000, 8_000)
            .await
            .unwrap();
        store
            .revoke_access_token("jti-1", 100_000, 9_000)
            .await
            .unwrap();
        assert_eq!(
            store.access_tokens_revoked_since(0, 50_000).await.unwrap(),
            vec![("jti-1".to_owned(), 8_000)]
        );
        assert!(
            store
                .access_tokens_revoked_since(0, 100_000)
                .await
                .unwrap()
                .is_empty(),
            "expired entries do not matter"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn dynamic_clients_expire_unless_a_grant_is_live() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        insert_person(&store, "alice").await;
        for id in ["client-a", "client-b"] {
            store
                .upsert_client(&ClientRow {
                    client_id: id.into(),
                    kind: "dynamic".into(),
                    name: None,
                    redirect_uris: "[]".into(),
                    token_endpoint_auth_method: "none".into(),
                    secret_hash: None,
                    registration_token_hash: None,
                    metadata: "{}".into(),
                    registered_from: Some("127.0.0.1".into()),
                    created_at: 1_000,
                    last_used_at: 1_000,
                    revoked_at: None,
                })
                .await
                .unwrap();
        }
        assert_eq!(
            store
                .count_registrations_from("127.0.0.1", 0)
                .await
                .unwrap(),
            2
        );
        store.insert_grant(&grant("g1", "alice")).await.unwrap();
        // client-a holds a live grant; client-b is unused and goes.
        assert_eq!(
            store
                .delete_unused_dynamic_clients(5_000, 5_000)
                .await
                .unwrap(),
            1,
            "{engine}"
        );
        assert!(store.client("client-a").await.unwrap().is_some());
        assert!(store.client("client-b").await.unwrap().is_none());
        store.close().await;
    }
}

/// The schema a store has: `table.column (nullability)` and `index on table(columns)` lines,
/// engine-neutral (types differ by dialect on purpose; names, nullability and indexes must not).
async fn schema_of(store: &Store) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    match &store.backend {
        Backend::Sqlite(pool) => {
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for (t,) in tables {
                let cols: Vec<(i64, String, String, i64, Option<String>, i64)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("PRAGMA table_info({t})")))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                for (_, name, _, notnull, _, pk) in cols {
                    // A primary key column is never null, whatever SQLite reports.
                    let null = if notnull == 1 || pk > 0 {
                        "not null"
                    } else {
                        "null"
                    };
                    out.insert(format!("{t}.{name} ({null})"));
                }
            }
            let indexes: Vec<(String, String)> = sqlx::query_as(
                "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' \
                 AND name NOT LIKE 'sqlite_autoindex_%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for (name, t) in indexes {
                let cols: Vec<(i64, i64, String)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("PRAGMA index_info({name})")))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                let cols: Vec<String> = cols.into_iter().map(|(_, _, c)| c).collect();
                out.insert(format!("index {name} on {t}({})", cols.join(", ")));
            }
        }
        Backend::Postgres(pool) => {
            let cols: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT table_name::text, column_name::text, is_nullable::text \
                 FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for (t, name, nullable) in cols {
                let null = if nullable == "NO" { "not null" } else { "null" };
                out.insert(format!("{t}.{name} ({null})"));
            }
            // Indexes made by CREATE INDEX (not the ones behind PRIMARY KEY and UNIQUE).
            let indexes: Vec<(String, String, Vec<String>)> = sqlx::query_as(
                "SELECT i.relname::text, t.relname::text, \
                        ARRAY(SELECT a.attname::text FROM unnest(ix.indkey) WITH ORDINALITY k(n, o) \
                              JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n \
                              ORDER BY k.o) \
                 FROM pg_index ix \
                 JOIN pg_class i ON i.oid = ix.indexrelid \
                 JOIN pg_class t ON t.oid = ix.indrelid \
                 JOIN pg_namespace ns ON ns.oid = t.relnamespace \
                 WHERE ns.nspname = 'public' AND t.relname <> '_sqlx_migrations' \
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for (name, t, cols) in indexes {
                out.insert(format!("index {name} on {t}({})", cols.join(", ")));
            }
        }
    }
    out
}

/// One migration set per engine, kept in step: the same tables, columns, nullability and
/// indexes on SQLite and PostgreSQL.
#[tokio::test]
async fn both_engines_have_the_same_schema() {
    let stores = engines().await;
    let mut schemas = Vec::new();
    for (store, _guard) in &stores {
        schemas.push((store.engine(), schema_of(store).await));
    }
    let (first, a) = &schemas[0];
    assert!(
        a.iter().any(|l| l.starts_with("step_ups.")) && a.iter().any(|l| l.starts_with("index ")),
        "the schema was read: {a:?}"
    );
    for (engine, b) in &schemas[1..] {
        let only_a: Vec<&String> = a.difference(b).collect();
        let only_b: Vec<&String> = b.difference(a).collect();
        assert!(
            only_a.is_empty() && only_b.is_empty(),
            "schema drift: only on {first}: {only_a:#?}\nonly on {engine}: {only_b:#?}"
        );
    }
}

/// Bindings and groups are types at the store boundary: they round-trip on both engines, and
/// text that does not parse fails the read instead of becoming a default.
#[tokio::test]
async fn typed_columns_round_trip_and_refuse_what_does_not_parse() {
    use crate::config::Binding;
    for (store, _guard) in engines().await {
        let engine = store.engine();
        insert_person(&store, "p1").await;
        for (i, binding) in [Binding::Session, Binding::User, Binding::Call]
            .into_iter()
            .enumerate()
        {
            let row = ConnectionRow {
                id: format!("c{i}"),
                user_id: "p1".into(),
                resource: "notes".into(),
                account: "a@example".into(),
                scopes: "read".into(),
                access_token_sealed: "sealed".into(),
                refresh_token_sealed: None,
                authorized_at: 1,
                expires_at: None,
                binding,
                binding_target: None,
                created_at: 1,
                updated_at: 1,
                selected_at: 1,
                last_used_at: 1,
            };
            store.insert_connection(&row).await.unwrap();
            let back = store.connection(&row.id).await.unwrap().unwrap();
            assert_eq!(back.binding, binding, "{engine}");
        }
        let mut user = store.user("p1").await.unwrap().unwrap();
        assert_eq!(user.groups, Groups::default(), "{engine}");
        user.groups = Groups(vec!["sales".into(), "eng \"core\"".into()]);
        store
            .update_federated_user("p1", None, None, &user.groups)
            .await
            .unwrap();
        assert_eq!(
            store.user("p1").await.unwrap().unwrap().groups,
            user.groups,
            "{engine}"
        );

        on_pool!(store, pool => sqlx::query("UPDATE connections SET binding = 'forever' WHERE id = 'c0'")
            .execute(pool)
            .await
            .map(|_| ()))
        .unwrap();
        let e = format!("{:#}", store.connection("c0").await.unwrap_err());
        assert!(e.contains("unknown binding \"forever\""), "{engine}: {e}");
        on_pool!(store, pool => sqlx::query("UPDATE users SET groups = '{\"a\": 1}' WHERE id = 'p1'")
            .execute(pool)
            .await
            .map(|_| ()))
        .unwrap();
        let e = format!("{:#}", store.user("p1").await.unwrap_err());
        assert!(e.contains("groups are not a JSON list"), "{engine}: {e}");
    }
}

/// The registration quota is taken atomically: concurrent takes each get their own count, and
/// a new hour starts afresh.
#[tokio::test]
async fn registration_quota_counts_concurrent_takes_one_by_one() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        let takes = (0..20).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .take_registration_quota("203.0.113.7", 7_200_000)
                    .await
            })
        });
        let mut got: Vec<i64> = futures_util::future::join_all(takes)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (1..=20).collect::<Vec<_>>(), "{engine}");
        assert_eq!(
            store
                .take_registration_quota("198.51.100.1", 7_200_000)
                .await
                .unwrap(),
            1,
            "{engine}"
        );
        assert_eq!(
            store
                .take_registration_quota("203.0.113.7", 10_800_000)
                .await
                .unwrap(),
            1,
            "{engine}: next hour"
        );
    }
}

/// A registration at an upstream's authorization server is kept when two nodes register at
/// once, and made again when it was registered with another redirect URI (earlier versions
/// registered the shared one; each discovered resource now has its own).
#[tokio::test]
async fn a_registration_is_kept_unless_its_redirect_uri_changed() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        let reg = |client_id: &str, redirect: Option<&str>| crate::store::RegistrationRow {
            upstream: "wiki".into(),
            issuer: "https://as.example".into(),
            client_id: client_id.into(),
            client_secret_sealed: None,
            created_at: 1,
            redirect_uri: redirect.map(String::from),
        };
        let per_resource = "https://d.example/connect/callback/wiki";
        // Made by an earlier version: no redirect URI recorded.
        let old = store.insert_registration(&reg("old", None)).await.unwrap();
        assert_eq!(old.client_id, "old", "{engine}");
        let new = store
            .insert_registration(&reg("new", Some(per_resource)))
            .await
            .unwrap();
        assert_eq!(new.client_id, "new", "{engine}: replaced");
        assert_eq!(new.redirect_uri.as_deref(), Some(per_resource), "{engine}");
        let raced = store
            .insert_registration(&reg("raced", Some(per_resource)))
            .await
            .unwrap();
        assert_eq!(
            raced.client_id, "new",
            "{engine}: the first of a race is kept"
        );
    }
}

fn connection(id: &str, user: &str, target: Option<&str>) -> ConnectionRow {
    ConnectionRow {
        id: id.into(),
        user_id: user.into(),
        resource: "notes".into(),
        account: format!("{user}@work.example"),
        scopes: "notes:read".into(),
        access_token_sealed: "sealed".into(),
        refresh_token_sealed: None,
        authorized_at: 1_000,
        expires_at: None,
        binding: crate::config::Binding::Session,
        binding_target: target.map(String::from),
        created_at: 1_000,
        updated_at: 1_000,
        selected_at: 1_000,
        last_used_at: 1_000,
    }
}

/// Every write that makes another node's memory wrong is announced on PostgreSQL, once, with
/// what changed; reads announce nothing (a lookup that notified every node would flood them).
#[tokio::test]
async fn writes_that_invalidate_other_nodes_are_announced_and_reads_are_not() {
    use super::{INVALIDATION_CHANNEL, Invalidation};
    for (store, _guard) in engines().await {
        let super::Backend::Postgres(pool) = &store.backend else {
            // SQLite is one node: announcing is a no-op and must not fail.
            store.announce(&[Invalidation::Grant("g".into())]).await;
            continue;
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool)
            .await
            .unwrap();
        listener.listen(INVALIDATION_CHANNEL).await.unwrap();
        let mut heard = async || -> Vec<Invalidation> {
            // Everything announced so far has been delivered once this marker arrives.
            sqlx::query("SELECT pg_notify($1, 'p:marker')")
                .bind(INVALIDATION_CHANNEL)
                .execute(pool)
                .await
                .unwrap();
            let mut out = Vec::new();
            loop {
                let n = listener.recv().await.unwrap();
                match Invalidation::decode(n.payload()).unwrap() {
                    Invalidation::Person(p) if p == "marker" => return out,
                    other => out.push(other),
                }
            }
        };
        for who in ["alice", "bob"] {
            insert_person(&store, who).await;
        }
        for (id, user) in [("g1", "alice"), ("g2", "alice"), ("g3", "bob")] {
            store.insert_grant(&grant(id, user)).await.unwrap();
        }
        for c in [
            connection("c1", "alice", Some("session:s1")),
            connection("c2", "alice", None),
            connection("c3", "bob", None),
            connection("c4", "bob", None),
        ] {
            store.insert_connection(&c).await.unwrap();
        }
        // A new connection changes what its person may list (their own list, not the catalog).
        assert_eq!(
            heard().await,
            ["alice", "alice", "bob", "bob"]
                .map(|u| Invalidation::Connections(u.into()))
                .to_vec(),
            "a new connection is announced for its person"
        );

        // Reads.
        store.connections_of("alice", "notes").await.unwrap();
        store.connection("c1").await.unwrap();
        store.grants(Some("alice")).await.unwrap();
        store.user("alice").await.unwrap();
        assert_eq!(heard().await, vec![], "reads announce nothing");

        assert!(store.revoke_grant("g1", 2_000, "test").await.unwrap());
        assert!(!store.revoke_grant("g1", 2_000, "test").await.unwrap());
        store
            .revoke_access_token("jti-1", 9_000, 2_000)
            .await
            .unwrap();
        assert_eq!(
            heard().await,
            vec![
                Invalidation::Grant("g1".into()),
                Invalidation::AccessToken("jti-1".into())
            ],
            "a grant revoked twice is announced once"
        );

        assert!(store.set_user_disabled("alice", Some(3_000)).await.unwrap());
        assert_eq!(
            heard().await,
            vec![
                Invalidation::Grant("g2".into()),
                Invalidation::Person("alice".into())
            ]
        );
        store
            .sign_out_everywhere("bob", 3_000, "test")
            .await
            .unwrap();
        assert_eq!(
            heard().await,
            vec![
                Invalidation::Grant("g3".into()),
                Invalidation::Person("bob".into())
            ]
        );
        store
            .update_federated_user("bob", None, None, &super::Groups(vec!["eng".into()]))
            .await
            .unwrap();
        assert_eq!(heard().await, vec![Invalidation::Person("bob".into())]);

        store
            .delete_connections_bound_to("session:s1")
            .await
            .unwrap();
        store.delete_connection_of("c2", "bob").await.unwrap(); // not bob's: nothing
        store.delete_connection_of("c2", "alice").await.unwrap();
        store.delete_connection("c3").await.unwrap();
        store
            .delete_connections_where(Some("bob"), None)
            .await
            .unwrap();
        store
            .delete_connections_where(Some("bob"), None)
            .await
            .unwrap(); // none left
        assert_eq!(
            heard().await,
            vec![
                Invalidation::Connections("alice".into()),
                Invalidation::Connections("alice".into()),
                Invalidation::Connections("bob".into()),
                Invalidation::Connections("bob".into()),
            ]
        );
    }
}

fn cascade_prompt(id: &str, resource: &str, grant: &str, created_at: i64) -> ConnectPromptRow {
    ConnectPromptRow {
        id_hash: id.into(),
        user_id: "alice".into(),
        resource: resource.into(),
        binding: crate::config::Binding::Session,
        binding_target: Some(format!("grant:{grant}")),
        scopes: "read".into(),
        elicitation_id: None,
        session_hash: None,
        connection_id: None,
        created_at,
        expires_at: created_at + 3_600_000,
        cascade_client: Some("client-a".into()),
        cascade_grant: Some(grant.into()),
        declined_at: None,
    }
}

#[tokio::test]
async fn the_reauthorization_cascade_waits_renews_settles_and_ends_on_every_engine() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        insert_person(&store, "alice").await;
        store.insert_grant(&grant("g1", "alice")).await.unwrap();
        // A plain prompt is no cascade: it never holds a refresh back.
        let mut plain = cascade_prompt("p0", "notes", "g1", 1_000);
        (plain.cascade_client, plain.cascade_grant) = (None, None);
        store.insert_connect_prompt(&plain).await.unwrap();
        assert!(
            !store.cascade_waiting("g1", 2_000).await.unwrap(),
            "{engine}"
        );
        assert!(
            store.renew_cascade_prompt(&plain).await.is_err(),
            "{engine}"
        );

        // Nothing waits yet: nothing to renew.
        assert!(
            !store
                .renew_cascade_prompt(&cascade_prompt("p1", "notes", "g1", 1_000))
                .await
                .unwrap(),
            "{engine}"
        );
        store
            .insert_connect_prompt(&cascade_prompt("p1", "notes", "g1", 1_000))
            .await
            .unwrap();
        store
            .insert_connect_prompt(&cascade_prompt("p2", "tracker", "g1", 1_500))
            .await
            .unwrap();
        // Asked again for notes in the same conversation (a stateful session outlives a grant):
        // the waiting prompt is renewed (same id, the grant asking now, a later expiry).
        let mut again = cascade_prompt("p3", "notes", "g2", 2_000);
        again.binding_target = Some("grant:g1".into());
        assert!(
            store.renew_cascade_prompt(&again).await.unwrap(),
            "{engine}"
        );
        let rows = store
            .cascade_prompts("alice", "client-a", 2_500)
            .await
            .unwrap();
        let ids: Vec<_> = rows.iter().map(|r| r.id_hash.as_str()).collect();
        assert_eq!(ids, ["p1", "p2"], "{engine}");
        assert_eq!(
            (rows[0].cascade_grant.as_deref(), rows[0].expires_at),
            (Some("g2"), again.expires_at),
            "{engine}"
        );
        assert!(
            store.cascade_waiting("g2", 2_500).await.unwrap(),
            "{engine}"
        );
        assert!(
            store.cascade_waiting("g1", 2_500).await.unwrap(),
            "{engine}: tracker still waits on g1"
        );
        assert!(
            store
                .cascade_prompts("alice", "client-b", 2_500)
                .await
                .unwrap()
                .is_empty(),
            "{engine}"
        );
        // Another conversation of the same client waits on its own prompt.
        let mut other = cascade_prompt("p4", "notes", "g1", 2_000);
        other.binding_target = Some("session:s2".into());
        assert!(
            !store.renew_cascade_prompt(&other).await.unwrap(),
            "{engine}"
        );
        // Expired prompts wait for nobody, and are not renewed.
        assert!(
            !store
                .cascade_waiting("g1", 1_500 + 3_600_000 + 500)
                .await
                .unwrap(),
            "{engine}"
        );

        // Two requests that asked at once made two prompts: one trip settles both.
        let mut p5 = cascade_prompt("p5", "notes", "g2", 2_100);
        p5.binding_target = Some("grant:g1".into());
        store.insert_connect_prompt(&p5).await.unwrap();
        store.complete_connect_prompt("p1", "conn-1").await.unwrap();
        store
            .complete_cascade_prompts(&rows[0], "conn-1")
            .await
            .unwrap();
        let p5 = store.connect_prompt("p5").await.unwrap().unwrap();
        assert_eq!(p5.connection_id.as_deref(), Some("conn-1"), "{engine}");
        assert!(
            !store.cascade_waiting("g2", 3_000).await.unwrap(),
            "{engine}"
        );
        // A refusal settles its trip, and a done prompt stays done.
        store.decline_cascade_prompt(&rows[1], 3_000).await.unwrap();
        let rows = store
            .cascade_prompts("alice", "client-a", 3_500)
            .await
            .unwrap();
        let settled: Vec<_> = rows
            .iter()
            .map(|r| (r.id_hash.as_str(), r.connection_id.is_some(), r.declined_at))
            .collect();
        assert_eq!(
            settled,
            [
                ("p1", true, None),
                ("p2", false, Some(3_000)),
                ("p5", true, None)
            ],
            "{engine}"
        );
        assert!(
            !store.cascade_waiting("g1", 3_500).await.unwrap(),
            "{engine}"
        );

        // Ending removes what was read, nothing else.
        store
            .end_cascade(&["p1".into(), "p2".into()])
            .await
            .unwrap();
        let left: Vec<_> = store
            .cascade_prompts("alice", "client-a", 3_500)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id_hash)
            .collect();
        assert_eq!(left, ["p5"], "{engine}");
        assert!(
            store.connect_prompt("p0").await.unwrap().is_some(),
            "{engine}: a plain prompt stays"
        );
    }
}

#[tokio::test]
async fn a_code_continues_only_a_live_grant_of_its_own_person_and_client() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        insert_person(&store, "alice").await;
        insert_person(&store, "bob").await;
        store.insert_grant(&grant("g1", "alice")).await.unwrap();
        store.insert_grant(&grant("gb", "bob")).await.unwrap();
        let code = |user: &str, client: &str| CodeRow {
            code_hash: "c".into(),
            client_id: client.into(),
            user_id: user.into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "x".into(),
            resource: "http://127.0.0.1:8421/mcp".into(),
            scope: "mcp offline_access".into(),
            auth_time: 5_000,
            amr: "[\"pwd\"]".into(),
            acr: None,
            created_at: 5_000,
            expires_at: 65_000,
            used_at: None,
            grant_id: None,
            continues_grant: Some("g1".into()),
        };
        assert!(
            !store
                .continue_grant("g1", &code("bob", "client-a"), 6_000, 9_000_000)
                .await
                .unwrap(),
            "{engine}"
        );
        assert!(
            !store
                .continue_grant("g1", &code("alice", "client-b"), 6_000, 9_000_000)
                .await
                .unwrap(),
            "{engine}"
        );
        assert!(
            store
                .continue_grant("g1", &code("alice", "client-a"), 6_000, 9_000_000)
                .await
                .unwrap(),
            "{engine}"
        );
        let g = store.grant("g1").await.unwrap().unwrap();
        assert_eq!(
            (g.auth_time, g.expires_at, g.scope.as_str(), g.acr),
            (5_000, 9_000_000, "mcp offline_access", None),
            "{engine}"
        );
        store.revoke_grant("g1", 7_000, "test").await.unwrap();
        assert!(
            !store
                .continue_grant("g1", &code("alice", "client-a"), 8_000, 9_000_000)
                .await
                .unwrap(),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn one_refresh_at_the_provider_per_person_and_the_id_token_kept() {
    for (store, _guard) in engines().await {
        let engine = store.engine();
        insert_person(&store, "p1").await;
        // One holder at a time; another gets it once the first lets go or its time is up.
        assert!(
            store
                .acquire_federated_refresh("p1", "node-a", 1_000, 30_000)
                .await
                .unwrap(),
            "{engine}"
        );
        assert!(
            !store
                .acquire_federated_refresh("p1", "node-b", 2_000, 30_000)
                .await
                .unwrap(),
            "{engine}"
        );
        assert!(
            store
                .acquire_federated_refresh("p1", "node-b", 31_000, 30_000)
                .await
                .unwrap(),
            "{engine}"
        );
        store
            .release_federated_refresh("p1", "node-a")
            .await
            .unwrap();
        assert!(
            !store
                .acquire_federated_refresh("p1", "node-c", 32_000, 30_000)
                .await
                .unwrap(),
            "{engine}"
        );
        store
            .release_federated_refresh("p1", "node-b")
            .await
            .unwrap();
        assert!(
            store
                .acquire_federated_refresh("p1", "node-c", 32_000, 30_000)
                .await
                .unwrap(),
            "{engine}"
        );

        // A refresh without an ID token keeps the last one.
        let row = |sealed: Option<&str>, exp: Option<i64>| FederatedIdentityRow {
            user_id: "p1".into(),
            provider: "corp".into(),
            refresh_token_sealed: Some("rt".into()),
            checked_at: 1,
            id_token_sealed: sealed.map(String::from),
            id_token_expires_at: exp,
        };
        store
            .save_federated_identity(&row(Some("id-1"), Some(9_000)))
            .await
            .unwrap();
        store
            .save_federated_identity(&row(None, None))
            .await
            .unwrap();
        let got = store.federated_identity("p1").await.unwrap().unwrap();
        assert_eq!(
            (got.id_token_sealed.as_deref(), got.id_token_expires_at),
            (Some("id-1"), Some(9_000)),
            "{engine}"
        );
        store
            .save_federated_identity(&row(Some("id-2"), Some(12_000)))
            .await
            .unwrap();
        let got = store.federated_identity("p1").await.unwrap().unwrap();
        assert_eq!(got.id_token_sealed.as_deref(), Some("id-2"), "{engine}");
    }
}

/// Migration 0019 rebuilds SQLite's audit table without AUTOINCREMENT: the records of a
/// database from before it keep their ids and contents, later ids still grow past them, and an
/// insert no longer keeps a row in `sqlite_sequence` (read and rewritten by every insert
/// before: one more page in each commit's WAL).
#[tokio::test]
async fn the_audit_table_loses_autoincrement_and_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("doorman.db").display());
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let mut before = sqlx::migrate!("migrations/sqlite");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 19)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.unwrap();
    for (at, name) in [(1_000, "a_one"), (2_000, "a_two"), (3_000, "a_three")] {
        sqlx::query(
            "INSERT INTO audit_events (at, kind, event, name, record_key) \
             VALUES ($1, 'call', 'tools/call', $2, $2)",
        )
        .bind(at)
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM audit_events WHERE name = 'a_three'")
        .execute(&pool)
        .await
        .unwrap();
    let sequence = "SELECT count(*) FROM sqlite_sequence WHERE name = 'audit_events'";
    let (kept,): (i64,) = sqlx::query_as(sequence).fetch_one(&pool).await.unwrap();
    assert_eq!(kept, 1, "before 0019 every insert keeps the sequence row");
    pool.close().await;

    let store = Store::open(&url).await.unwrap();
    store
        .insert_audit_events(&[AuditEvent {
            at: 4_000,
            kind: "call".into(),
            event: "tools/call".into(),
            name: Some("a_four".into()),
            record_key: Some("a_four".into()),
            ..Default::default()
        }])
        .await
        .unwrap();
    let rows = store.audit_events(&AuditFilter::default()).await.unwrap();
    let got: Vec<(Option<i64>, i64, Option<&str>)> = rows
        .iter()
        .map(|e| (e.id, e.at, e.name.as_deref()))
        .collect();
    // Newest first. AUTOINCREMENT would have given 4 too (3 was used); a plain rowid takes
    // the largest id plus one, 3: ids still grow past every record kept.
    assert_eq!(
        got,
        [
            (Some(3), 4_000, Some("a_four")),
            (Some(2), 2_000, Some("a_two")),
            (Some(1), 1_000, Some("a_one")),
        ]
    );
    on_pool!(store, pool => {
        let (sequenced,): (i64,) = sqlx::query_as(sequence).fetch_one(pool).await.unwrap();
        assert_eq!(sequenced, 0, "no sequence row is kept any more");
        let (sql,): (String,) = sqlx::query_as(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(!sql.contains("AUTOINCREMENT"), "{sql}");
        // A retried write still stores a record once: the unique key came along.
        let again = AuditEvent {
            at: 5_000,
            kind: "call".into(),
            event: "tools/call".into(),
            record_key: Some("a_four".into()),
            ..Default::default()
        };
        store.insert_audit_events(&[again]).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 3);
    });
    store.close().await;
}
