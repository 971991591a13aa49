//! `audit_events`: the audit trail (see `crate::audit`).

use super::{Store, on_pool};
use crate::audit::{AuditEvent, AuditFilter};

const COLUMNS: &str = "id, at, kind, event, person_id, person, client_id, conversation, upstream, \
    name, resource, account, decision, policy, outcome, latency_us, request_id, arguments, detail";

impl Store {
    /// Stores a batch of records in one transaction.
    pub async fn insert_audit_events(&self, events: &[AuditEvent]) -> anyhow::Result<()> {
        let q = "INSERT INTO audit_events (at, kind, event, person_id, person, client_id, conversation, \
                 upstream, name, resource, account, decision, policy, outcome, latency_us, request_id, \
                 arguments, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                 $15, $16, $17, $18)";
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            for e in events {
                sqlx::query(q)
                    .bind(e.at)
                    .bind(&e.kind)
                    .bind(&e.event)
                    .bind(&e.person_id)
                    .bind(&e.person)
                    .bind(&e.client_id)
                    .bind(&e.conversation)
                    .bind(&e.upstream)
                    .bind(&e.name)
                    .bind(&e.resource)
                    .bind(&e.account)
                    .bind(&e.decision)
                    .bind(&e.policy)
                    .bind(&e.outcome)
                    .bind(e.latency_us)
                    .bind(&e.request_id)
                    .bind(&e.arguments)
                    .bind(&e.detail)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }.await)?;
        Ok(())
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
