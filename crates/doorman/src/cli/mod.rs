//! Operator commands besides `serve`: people, clients, grants and keys.

pub mod users;

use std::sync::Arc;

use anyhow::Context;

use crate::{config::Config, crypto::KeyRing, store::Store};

/// What every operator command opens: the store and the key ring of the configured data directory.
pub async fn open(config: &Config) -> anyhow::Result<(Store, Arc<KeyRing>)> {
    let store = Store::open(&config.database_url()).await?;
    let (ring, _) = KeyRing::load_or_create(&config.key_ring_path())
        .with_context(|| "cannot load the key ring")?;
    Ok((store, Arc::new(ring)))
}
