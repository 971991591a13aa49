//! Sealing a connection's tokens. The associated data names the connection, the person and the
//! resource, so a sealed token copied into another row — another person's, or
//! another resource's — does not open. Plaintext tokens live only in [`Zeroizing`] buffers.

use zeroize::Zeroizing;

use crate::{crypto::KeyRing, store::ConnectionRow};

/// Which token of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Access,
    Refresh,
}

/// The associated data binding a sealed token to its owner.
fn aad(which: Which, connection: &str, user: &str, resource: &str) -> String {
    let kind = match which {
        Which::Access => "access",
        Which::Refresh => "refresh",
    };
    format!("connection:{connection}|user:{user}|resource:{resource}|{kind}")
}

/// Seals one token of the connection (`connection`, `user`, `resource`).
pub fn seal(
    ring: &KeyRing,
    which: Which,
    connection: &str,
    user: &str,
    resource: &str,
    token: &str,
) -> String {
    ring.seal(token.as_bytes(), &aad(which, connection, user, resource))
}

/// Opens one token of a stored connection; `None` when it is absent, or does not open for this
/// row (sealed for another owner, or under a key no longer in the ring).
pub fn open(ring: &KeyRing, which: Which, row: &ConnectionRow) -> Option<Zeroizing<String>> {
    let sealed = match which {
        Which::Access => Some(row.access_token_sealed.as_str()),
        Which::Refresh => row.refresh_token_sealed.as_deref(),
    }?;
    let bytes = ring
        .open(sealed, &aad(which, &row.id, &row.user_id, &row.resource))
        .ok()?;
    std::str::from_utf8(&bytes)
        .ok()
        .map(|s| Zeroizing::new(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crypto::random_token,
        store::testing::{engines, insert_person as person},
    };

    fn ring() -> KeyRing {
        KeyRing::parse(&format!("k1 {}\n", random_token(32))).unwrap()
    }

    fn row(
        ring: &KeyRing,
        id: &str,
        user: &str,
        resource: &str,
        target: Option<&str>,
    ) -> ConnectionRow {
        ConnectionRow {
            id: id.into(),
            user_id: user.into(),
            resource: resource.into(),
            account: format!("{user}@github"),
            scopes: "repo read:user".into(),
            access_token_sealed: seal(
                ring,
                Which::Access,
                id,
                user,
                resource,
                &format!("gho_{id}_access"),
            ),
            refresh_token_sealed: Some(seal(
                ring,
                Which::Refresh,
                id,
                user,
                resource,
                &format!("ghr_{id}_refresh"),
            )),
            authorized_at: 1_000,
            expires_at: Some(3_601_000),
            binding: crate::config::Binding::Session,
            binding_target: target.map(String::from),
            created_at: 1_000,
            updated_at: 1_000,
            selected_at: 1_000,
            last_used_at: 1_000,
        }
    }

    #[test]
    fn a_token_opens_only_in_its_own_row() {
        let ring = ring();
        let alice = row(&ring, "c1", "alice", "github", None);
        assert_eq!(
            &*open(&ring, Which::Access, &alice).unwrap(),
            "gho_c1_access"
        );
        assert_eq!(
            &*open(&ring, Which::Refresh, &alice).unwrap(),
            "ghr_c1_refresh"
        );
        assert!(
            !alice.access_token_sealed.contains("gho_"),
            "sealed, not encoded"
        );
        // The same ciphertexts moved to another person, resource or connection id do not open.
        for moved in [
            ConnectionRow {
                user_id: "mallory".into(),
                ..alice.clone()
            },
            ConnectionRow {
                resource: "linear".into(),
                ..alice.clone()
            },
            ConnectionRow {
                id: "c2".into(),
                ..alice.clone()
            },
        ] {
            assert!(open(&ring, Which::Access, &moved).is_none());
            assert!(open(&ring, Which::Refresh, &moved).is_none());
        }
        // Nor does an access token swapped into the refresh token's place.
        let swapped = ConnectionRow {
            refresh_token_sealed: Some(alice.access_token_sealed.clone()),
            ..alice.clone()
        };
        assert!(open(&ring, Which::Refresh, &swapped).is_none());
    }

    #[tokio::test]
    async fn connections_round_trip_and_end_with_their_binding_on_every_engine() {
        let ring = ring();
        for (store, _guard) in engines().await {
            let engine = store.engine();
            person(&store, "alice").await;
            person(&store, "bob").await;
            store
                .insert_connection(&row(&ring, "c1", "alice", "github", Some("session-a")))
                .await
                .unwrap();
            store
                .insert_connection(&row(&ring, "c2", "alice", "github", Some("session-b")))
                .await
                .unwrap();
            store
                .insert_connection(&row(&ring, "c3", "bob", "github", Some("session-a")))
                .await
                .unwrap();
            let mine = store.connections_of("alice", "github").await.unwrap();
            assert_eq!(mine.len(), 2, "{engine}");
            assert!(mine.iter().all(|c| c.user_id == "alice"));
            let stored = store.connection("c1").await.unwrap().unwrap();
            assert_eq!(
                &*open(&ring, Which::Access, &stored).unwrap(),
                "gho_c1_access",
                "{engine}"
            );
            // Refreshed tokens replace the old ones; a missing new refresh token keeps the old.
            let fresh = seal(&ring, Which::Access, "c1", "alice", "github", "gho_new");
            assert!(
                store
                    .update_connection_tokens("c1", &fresh, None, Some(9_000_000), 2_000)
                    .await
                    .unwrap()
            );
            let stored = store.connection("c1").await.unwrap().unwrap();
            assert_eq!(&*open(&ring, Which::Access, &stored).unwrap(), "gho_new");
            assert_eq!(
                &*open(&ring, Which::Refresh, &stored).unwrap(),
                "ghr_c1_refresh"
            );
            // A conversation ending takes exactly its connections with it.
            let ended = store
                .delete_connections_bound_to("session-a")
                .await
                .unwrap();
            let mut ids: Vec<_> = ended.iter().map(|c| c.id.as_str()).collect();
            ids.sort();
            assert_eq!(ids, ["c1", "c3"], "{engine}");
            assert!(store.connection("c2").await.unwrap().is_some());
            assert!(store.delete_connection("c2").await.unwrap());
            assert!(!store.delete_connection("c2").await.unwrap());
            store.close().await;
        }
    }

    #[tokio::test]
    async fn one_refresh_lease_holder_at_a_time_on_every_engine() {
        let ring = ring();
        for (store, _guard) in engines().await {
            let engine = store.engine();
            person(&store, "alice").await;
            store
                .insert_connection(&row(&ring, "c1", "alice", "github", None))
                .await
                .unwrap();
            assert!(
                store
                    .acquire_connection_lease("c1", "node-a", 1_000, 30_000)
                    .await
                    .unwrap(),
                "{engine}"
            );
            assert!(
                !store
                    .acquire_connection_lease("c1", "node-b", 2_000, 30_000)
                    .await
                    .unwrap(),
                "{engine}"
            );
            // The holder may extend its own lease.
            assert!(
                store
                    .acquire_connection_lease("c1", "node-a", 3_000, 30_000)
                    .await
                    .unwrap()
            );
            // An expired lease (its holder died mid-refresh) passes to the next node.
            assert!(
                store
                    .acquire_connection_lease("c1", "node-b", 40_000, 30_000)
                    .await
                    .unwrap(),
                "{engine}"
            );
            store
                .release_connection_lease("c1", "node-a")
                .await
                .unwrap();
            assert!(
                !store
                    .acquire_connection_lease("c1", "node-a", 41_000, 30_000)
                    .await
                    .unwrap(),
                "not released by a non-holder"
            );
            store
                .release_connection_lease("c1", "node-b")
                .await
                .unwrap();
            assert!(
                store
                    .acquire_connection_lease("c1", "node-a", 42_000, 30_000)
                    .await
                    .unwrap(),
                "{engine}"
            );
            store.close().await;
        }
    }
}
