//! Operator commands besides `serve`: people, clients, grants, connections and keys.

pub mod audit;
pub mod connections;
pub mod grants;
pub mod users;

use std::sync::Arc;

use anyhow::Context;

use crate::{config::Config, crypto::KeyRing, store::Store};

/// What every operator command opens: the store and the key ring of the configured data directory.
pub async fn open(config: &Config) -> anyhow::Result<(Store, Arc<KeyRing>)> {
    let store = Store::open(&config.database_url()).await?;
    let (ring, _, _) =
        KeyRing::load(&config.key_ring_path()).with_context(|| "cannot load the key ring")?;
    Ok((store, Arc::new(ring)))
}

pub(crate) use crate::clock::utc;

/// Runs an operator command against the store (closed afterwards, whatever the outcome).
pub async fn with_store<T>(
    config: &Config,
    command: impl AsyncFnOnce(&Store, &Arc<KeyRing>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (store, ring) = open(config).await?;
    let outcome = command(&store, &ring).await;
    store.close().await;
    outcome
}

/// `doorman backup FILE`: a consistent copy of the SQLite database, taken while Doorman runs
/// (SQLite's `VACUUM INTO`: one read transaction, so the copy is one moment of the store).
/// PostgreSQL is backed up with its own tools.
pub async fn backup(config: &Config, to: &std::path::Path) -> anyhow::Result<()> {
    let url = config.database_url();
    anyhow::ensure!(
        url.starts_with("sqlite:"),
        "this Doorman stores its data in PostgreSQL: back it up with pg_dump (docs/DEPLOY.md)"
    );
    anyhow::ensure!(
        !to.exists(),
        "{} exists already: give a new file",
        to.display()
    );
    let target = to
        .to_str()
        .context("the backup's path must be valid UTF-8")?
        .to_owned();
    let store = Store::open(&url).await?;
    let done = store.backup_into(&target).await;
    store.close().await;
    done?;
    println!(
        "backed up {} to {} (the key ring is not in it: keep a copy of it apart)",
        url,
        to.display()
    );
    Ok(())
}

/// A plain-text table: a header row and left-aligned columns two spaces apart.
pub(crate) fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(String::from);
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
