//! `audit_events`: the audit trail (see `crate::audit`).

use super::{Store, on_pool};
use serde::Serialize;

const COLUMNS: &str = "id, at, kind, event, person_id, person, client_id, conversation, upstream, \
    name, resource, account, decision, policy, outcome, latency_us, request_id, arguments, detail, \
    client_address";

/// Rows per `INSERT` (19 columns each: well under both engines' bound-parameter limits).
const AUDIT_ROWS_PER_STATEMENT: usize = 50;

/// `INSERT … VALUES (…), (…) ON CONFLICT (record_key) DO NOTHING` for `$events`, for either
/// engine (the builder writes the placeholders in the engine's own syntax; the engine is the
/// one of the pool the query runs on).
macro_rules! insert_audit_rows {
    ($events:expr) => {{
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO audit_events (at, kind, event, person_id, person, client_id, conversation, \
             upstream, name, resource, account, decision, policy, outcome, latency_us, request_id, \
             arguments, detail, client_address, record_key) ",
        );
        q.push_values($events, |mut b, e: &AuditEvent| {
            b.push_bind(e.at)
                .push_bind(&e.kind)
                .push_bind(&e.event)
                .push_bind(&e.person_id)
                .push_bind(&e.person)
                .push_bind(&e.client_id)
                .push_bind(&e.conversation)
                .push_bind(&e.upstream)
                .push_bind(&e.name)
                .push_bind(&e.resource)
                .push_bind(&e.account)
                .push_bind(&e.decision)
                .push_bind(&e.policy)
                .push_bind(&e.outcome)
                .push_bind(e.latency_us)
                .push_bind(&e.request_id)
                .push_bind(&e.arguments)
                .push_bind(&e.detail)
                .push_bind(&e.client_address)
                .push_bind(&e.record_key);
        });
        q.push(" ON CONFLICT (record_key) DO NOTHING");
        q
    }};
}

/// One audit record.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Milliseconds since the epoch.
    pub at: i64,
    pub kind: String,
    pub event: String,
    pub person_id: Option<String>,
    pub person: Option<String>,
    pub client_id: Option<String>,
    pub conversation: Option<String>,
    pub upstream: Option<String>,
    pub name: Option<String>,
    pub resource: Option<String>,
    pub account: Option<String>,
    pub decision: Option<String>,
    pub policy: Option<String>,
    pub outcome: Option<String>,
    pub latency_us: Option<i64>,
    pub request_id: Option<String>,
    pub arguments: Option<String>,
    pub detail: Option<String>,
    /// The client's address (`server.trusted_proxies` says whose forwarding is believed).
    pub client_address: Option<String>,
    /// Random, unique: a retried write stores the record once.
    #[serde(skip)]
    #[sqlx(default)]
    pub record_key: Option<String>,
}

/// Filters of the audit queries (CLI, pages).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub person_id: Option<String>,
    pub name: Option<String>,
    pub resource: Option<String>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Stores a batch of records in one transaction: a multi-row INSERT per 50 records (19
    /// parameters each, far under either engine's limit; the same statement text each time, so
    /// it is prepared once per connection), and one commit, so a busy gateway writes the pages a
    /// batch touches once (SQLite's WAL) and waits for one commit.
    pub async fn insert_audit_events(&self, events: &[AuditEvent]) -> anyhow::Result<()> {
        // One statement is atomic on its own: a batch that fits in one needs no transaction
        // (two round trips fewer, which is most of the cost of a small batch).
        if events.len() <= AUDIT_ROWS_PER_STATEMENT {
            on_pool!(self, pool => insert_audit_rows!(events).build().execute(pool).await.map(|_| ()))?;
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in events.chunks(AUDIT_ROWS_PER_STATEMENT) {
                insert_audit_rows!(chunk).build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// SQLite on a file: a connection of its own for the audit writer's thread
    /// (`sqlite_audit.rs`); `None` elsewhere (PostgreSQL, in-memory SQLite), where records go
    /// through [`Store::insert_audit_events`].
    pub fn audit_writer(&self) -> Option<anyhow::Result<super::SqliteAuditWriter>> {
        let reader = self.sqlite_reader.as_ref()?;
        Some(
            super::SqliteAuditWriter::open(reader.path())
                .map_err(|e| anyhow::anyhow!("cannot open the audit writer's connection: {e}")),
        )
    }

    /// Deletes records older than `before`; returns how many.
    pub async fn purge_audit(&self, before: i64) -> anyhow::Result<u64> {
        let n = on_pool!(self, pool => sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n)
    }

    /// Records matching `f`, newest first.
    pub async fn audit_events(&self, f: &AuditFilter) -> anyhow::Result<Vec<AuditEvent>> {
        let q = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE \
             ($1 IS NULL OR person_id = $1) AND ($2 IS NULL OR name LIKE $2) AND \
             ($3 IS NULL OR resource = $3) AND ($4 IS NULL OR decision = $4) AND \
             ($5 IS NULL OR kind = $5) AND ($6 IS NULL OR at >= $6) AND ($7 IS NULL OR at < $7) \
             ORDER BY at DESC, id DESC LIMIT $8"
        );
        // `--tool` takes a glob: `*` becomes SQL's `%` (and `_` is literal).
        let name = f.name.as_ref().map(|n| {
            n.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('*', "%")
        });
        let q = q.replace("name LIKE $2", "name LIKE $2 ESCAPE '\\'");
        let rows = on_pool!(self, pool => sqlx::query_as::<_, AuditEvent>(sqlx::AssertSqlSafe(q.clone()))
            .bind(&f.person_id)
            .bind(&name)
            .bind(&f.resource)
            .bind(&f.decision)
            .bind(&f.kind)
            .bind(f.since)
            .bind(f.until)
            .bind(if f.limit > 0 { f.limit } else { 1000 })
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }
}
