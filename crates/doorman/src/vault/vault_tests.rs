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
