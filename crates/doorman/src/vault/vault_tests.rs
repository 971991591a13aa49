//! The vault against both store engines: re-sealing under a new key ring key.

use std::sync::Arc;

use super::*;
use crate::{
    clock::ManualClock,
    config::Config,
    store::testing::{engines, insert_person},
};

fn config() -> Config {
    Config::from_toml(
        r#"
[server]
public_url = "http://127.0.0.1:8421/"
[sign_in]
development = true
[[resources]]
name = "notes"
authorization_endpoint = "http://127.0.0.1:1/auth"
token_endpoint = "http://127.0.0.1:1/token"
client_id = "doorman"
binding = "user"
"#,
    )
    .unwrap()
}

fn row(ring: &KeyRing, id: &str, user: &str) -> ConnectionRow {
    ConnectionRow {
        id: id.into(),
        user_id: user.into(),
        resource: "notes".into(),
        account: format!("{user}@notes"),
        scopes: "notes:read".into(),
        access_token_sealed: tokens::seal(ring, Which::Access, id, user, "notes", "at-secret"),
        refresh_token_sealed: Some(tokens::seal(
            ring,
            Which::Refresh,
            id,
            user,
            "notes",
            "rt-secret",
        )),
        authorized_at: 0,
        expires_at: None,
        binding: crate::config::Binding::User,
        binding_target: None,
        created_at: 0,
        updated_at: 0,
        selected_at: 0,
        last_used_at: 0,
    }
}

#[tokio::test]
async fn a_new_sealing_key_reseals_stored_connections_and_old_ones_still_open() {
    for (store, _dir) in engines().await {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let (ring, _) = KeyRing::load_or_create(&path).unwrap();
        let ring = Arc::new(ring);
        let old_key = ring.active_id();
        insert_person(&store, "alice").await;
        store
            .insert_connection(&row(&ring, "c1", "alice"))
            .await
            .unwrap();
        let vault = Vault::new(
            &config(),
            store.clone(),
            ring.clone(),
            Arc::new(ManualClock::new(1_000)),
            HttpClient::new().unwrap(),
        )
        .unwrap();
        assert_eq!(
            vault.reseal_batch(100).await.unwrap(),
            0,
            "nothing to do yet"
        );

        let new_key = KeyRing::add_key_to_file(&path).unwrap();
        assert!(ring.reload(&path).unwrap(), "the new key is picked up");
        assert_eq!(ring.active_id(), new_key);
        assert_ne!(new_key, old_key);
        assert_eq!(vault.reseal_batch(100).await.unwrap(), 1);
        let stored = store.connection("c1").await.unwrap().unwrap();
        assert!(
            stored
                .access_token_sealed
                .starts_with(&format!("{new_key}."))
        );
        assert!(ring.is_current(stored.refresh_token_sealed.as_deref().unwrap()));
        assert_eq!(
            &*tokens::open(&ring, Which::Access, &stored).unwrap(),
            "at-secret"
        );
        assert_eq!(
            &*tokens::open(&ring, Which::Refresh, &stored).unwrap(),
            "rt-secret"
        );
        assert_eq!(vault.reseal_batch(100).await.unwrap(), 0, "done once");

        // A file that lost a key is refused: what that key sealed would never open again.
        std::fs::write(&path, format!("{new_key} {}\n", crypto::random_token(32))).unwrap();
        assert!(ring.reload(&path).is_err());
        assert_eq!(
            &*tokens::open(&ring, Which::Access, &stored).unwrap(),
            "at-secret"
        );
    }
}

/// A token endpoint on loopback that counts refreshes and answers slowly, so concurrent
/// requests overlap: (its URL, the count).
async fn counting_token_endpoint() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            async move {
                assert!(body.contains("grant_type=refresh_token"), "{body}");
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                axum::Json(serde_json::json!({
                    "access_token": format!("at-refreshed-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "refresh_token": format!("rt-refreshed-{n}"),
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count)
}

/// Refresh is single-flight: many requests on two nodes (two vaults, one store) for one
/// expired connection make exactly one refresh at the resource, and all get the new token.
#[tokio::test]
async fn concurrent_requests_on_two_nodes_refresh_a_connection_once() {
    use std::sync::atomic::Ordering;
    for (store, _dir) in engines().await {
        let (token_url, count) = counting_token_endpoint().await;
        let config = Config::from_toml(&format!(
            "[server]\npublic_url = \"http://127.0.0.1:8421/\"\n[sign_in]\ndevelopment = true\n\
             [[resources]]\nname = \"notes\"\nauthorization_endpoint = \"http://127.0.0.1:1/auth\"\n\
             token_endpoint = \"{token_url}\"\nclient_id = \"doorman\"\nbinding = \"user\"\n"
        ))
        .unwrap();
        let ring = Arc::new(KeyRing::parse(&format!("k1 {}\n", crypto::random_token(32))).unwrap());
        insert_person(&store, "alice").await;
        let mut expired = row(&ring, "c1", "alice");
        expired.expires_at = Some(500); // the clock says 1000
        store.insert_connection(&expired).await.unwrap();
        let node = || {
            Arc::new(
                Vault::new(
                    &config,
                    store.clone(),
                    ring.clone(),
                    Arc::new(ManualClock::new(1_000)),
                    HttpClient::new().unwrap(),
                )
                .unwrap(),
            )
        };
        let (a, b) = (node(), node());
        let calls = (0..8).map(|i| {
            let v = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let rc = v.resource("notes").unwrap();
                let holder = Holder {
                    user_id: "alice",
                    grant: "g1",
                    session_hash: None,
                };
                v.credential(&holder, &rc, None, Lifetime::default())
                    .await
                    .unwrap()
                    .map(|c| c.header.1.to_str().unwrap().to_owned())
            })
        });
        let headers: Vec<_> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap().expect("a credential"))
            .collect();
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "{}: one refresh",
            store.engine()
        );
        assert!(
            headers.iter().all(|h| h == "Bearer at-refreshed-1"),
            "{headers:?}"
        );
        let stored = store.connection("c1").await.unwrap().unwrap();
        assert_eq!(
            &*tokens::open(&ring, Which::Refresh, &stored).unwrap(),
            "rt-refreshed-1"
        );
    }
}

#[test]
fn the_credential_cache_is_bounded() {
    let mut map = HashMap::new();
    let fresh = |until: &i64| *until > 100;
    for (k, until) in [("a", 50), ("b", 200), ("c", 300)] {
        insert_bounded(&mut map, 3, fresh, k.into(), until);
    }
    assert_eq!(map.len(), 3);
    // Full: the stale entry goes, the fresh ones stay.
    insert_bounded(&mut map, 3, fresh, "d".into(), 400);
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    assert_eq!(keys, ["b", "c", "d"]);
    // Full of fresh entries: all go, so memory never grows past the limit.
    insert_bounded(&mut map, 3, fresh, "e".into(), 500);
    assert_eq!(map.len(), 1);
    // Replacing a key never evicts.
    insert_bounded(&mut map, 1, fresh, "e".into(), 600);
    assert_eq!(map.get("e"), Some(&600));
}

/// The stored `last_used_at` of each connection, in order.
async fn last_used(store: &Store, ids: &[&str]) -> Vec<i64> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.connection(id).await.unwrap().unwrap().last_used_at);
    }
    out
}

/// Waits (bounded) until the connections' stored uses are `want`.
async fn until_last_used(store: &Store, ids: &[&str], want: &[i64]) {
    for _ in 0..200 {
        if last_used(store, ids).await == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(last_used(store, ids).await, want, "{}", store.engine());
}

#[tokio::test]
async fn uses_of_many_connections_are_stored_in_one_statement_and_never_move_back() {
    for (store, _dir) in engines().await {
        let ring = KeyRing::parse(&format!("k1 {}\n", crypto::random_token(32))).unwrap();
        insert_person(&store, "alice").await;
        for id in ["c1", "c2", "c3"] {
            store
                .insert_connection(&row(&ring, id, "alice"))
                .await
                .unwrap();
        }
        store
            .touch_connections(&[
                ("c1".into(), 5_000),
                ("c2".into(), 6_000),
                ("gone".into(), 1),
            ])
            .await
            .unwrap();
        assert_eq!(
            last_used(&store, &["c1", "c2", "c3"]).await,
            [5_000, 6_000, 0]
        );
        // A write that arrives late (an earlier use) leaves the later one.
        store
            .touch_connections(&[("c1".into(), 4_000), ("c3".into(), 7_000)])
            .await
            .unwrap();
        assert_eq!(
            last_used(&store, &["c1", "c2", "c3"]).await,
            [5_000, 6_000, 7_000]
        );
    }
}

#[tokio::test]
async fn uses_are_written_once_per_tenth_of_the_idle_window_and_gathered_while_a_write_runs() {
    for (store, _dir) in engines().await {
        let ring = KeyRing::parse(&format!("k1 {}\n", crypto::random_token(32))).unwrap();
        insert_person(&store, "alice").await;
        for id in ["c1", "c2", "c3", "c4"] {
            store
                .insert_connection(&row(&ring, id, "alice"))
                .await
                .unwrap();
        }
        // A 100 s idle window: a connection's use is written at most every 10 s.
        let t = Arc::new(touches::Touches::new(store.clone(), 100_000));
        // The test's runtime runs the writer only when the test waits: the first use starts
        // it, the two noted before it runs join its first statement.
        assert!(
            t.note("c1", Some(0), 50_000),
            "{}: a writer starts",
            store.engine()
        );
        assert!(!t.note("c2", Some(0), 50_001));
        assert!(!t.note("c3", Some(0), 50_002));
        until_last_used(&store, &["c1", "c2", "c3"], &[50_000, 50_001, 50_002]).await;

        // Within 10 s of the last write: nothing is written.
        assert!(!t.note("c1", None, 59_000));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(last_used(&store, &["c1"]).await, [50_000]);
        // Past it: written again.
        assert!(t.note("c1", None, 60_001));
        until_last_used(&store, &["c1"], &[60_001]).await;

        // A row read with a recent use (written by another node) is not written again, here
        // or on the next use.
        assert!(!t.note("c4", Some(55_000), 60_000));
        assert!(!t.note("c4", None, 64_000));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(last_used(&store, &["c4"]).await, [0]);
        assert!(t.note("c4", None, 65_001));
        until_last_used(&store, &["c4"], &[65_001]).await;
    }
}
