//! The audit trail: one record per tool call, prompt get and resource read, and per security
//! event (sign-ins, failed sign-ins, consent, connections made, refreshed and revoked, key
//! rotations). Each record is a JSON log line (target `doorman::audit`) and a row in
//! `audit_events`, and purged after `[audit] retention`.
//!
//! One writer stores every record. With `[audit] durable` (the default) the answer to a
//! request waits until its record is stored: records that arrive while a write runs share the
//! next one (group commit), so many concurrent requests cost one transaction. A failed write is
//! retried (backing off to 5 s) until it succeeds; a full queue makes senders wait rather than
//! drop anything; a record is lost only if the writer is gone, and then
//! `doorman_audit_records_lost_total` and an error line say how many. Without `durable`,
//! records are gathered for about 50 ms and a crash in that window loses them.
//!
//! Recording goes through [`emit`], a process-wide sink set up by `doorman serve`
//! ([`Audit::start`]); without it (tests of single modules, operator commands) records are
//! only logged.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicUsize, Ordering},
};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use crate::store::{AuditEvent, AuditFilter};
use crate::{clock::SharedClock, store::Store};

impl AuditEvent {
    /// A security event about a person.
    pub fn security(event: &str, person_id: Option<&str>) -> Self {
        Self {
            kind: "security".into(),
            event: event.into(),
            person_id: person_id.map(String::from),
            ..Self::default()
        }
    }
}

/// One record on its way to the store, and who waits for it to be stored.
struct Queued {
    event: AuditEvent,
    stored: Option<oneshot::Sender<()>>,
}

struct Sink {
    tx: mpsc::Sender<Queued>,
    clock: SharedClock,
    /// `audit.durable`: answers wait for their record (at most this long).
    durable: Option<std::time::Duration>,
    /// Records queued or being written, not yet stored.
    pending: Arc<AtomicUsize>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// How many records the queue holds before senders wait (back-pressure).
const QUEUE: usize = 10_000;
/// The most records one statement stores.
const BATCH: usize = 1024;
/// Without `audit.durable`, how long the writer gathers records before a write.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);
/// Retries of a failed write: from this delay, doubling, up to `RETRY_MAX`.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Fills in what a record can take from where it is made: the time (when zero) and the
/// client's address (from the request this task serves).
fn stamp(e: &mut AuditEvent) {
    if e.client_address.is_none() {
        e.client_address = crate::net::ClientAddress::current().map(|c| c.ip.to_string());
    }
    if e.at == 0 {
        e.at = SINK.get().map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            },
            |s| s.clock.now_ms(),
        );
    }
    if e.record_key.is_none() {
        e.record_key = Some(record_key(e.at));
    }
}

/// A record's unique key: its time (so new keys go to the end of the unique index, one page
/// for a whole batch, however large the table grows) and 96 random bits, unique across nodes.
/// A key names a record and grants nothing, so the bits come from the fast per-thread
/// generator trace ids use, not the CSPRNG.
fn record_key(at: i64) -> String {
    let (at, random) = (at.max(0) as u64, fastrand::u128(..) >> 32);
    if at >= 1 << 48 {
        // After the year 10889: more than 12 digits, as `format!` writes them.
        return format!("{at:012x}{random:024x}");
    }
    // The same digits as `format!("{:012x}{:024x}")`, without the formatter (every record).
    let mut key = [0u8; 18];
    key[..6].copy_from_slice(&at.to_be_bytes()[2..]);
    key[6..].copy_from_slice(&random.to_be_bytes()[4..]);
    hex::encode(key)
}

/// Records an event, without waiting: a JSON log line and a row soon. When the queue is full
/// the record waits for room on a task of its own (nothing is dropped); it is lost only if the
/// writer is gone, which a metric and a log line say.
pub fn emit(mut e: AuditEvent) {
    stamp(&mut e);
    let Some(s) = SINK.get() else {
        log(&e);
        return;
    };
    s.pending.fetch_add(1, Ordering::AcqRel);
    let q = Queued {
        event: e,
        stored: None,
    };
    match s.tx.try_send(q) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(q)) => {
            let tx = s.tx.clone();
            tokio::spawn(async move {
                if tx.send(q).await.is_err() {
                    lost(1);
                }
            });
        }
        Err(mpsc::error::TrySendError::Closed(_)) => lost(1),
    }
}

/// Records the event of a request that is about to be answered. With `audit.durable` (the
/// default) this returns once the record is stored, sharing the write with whatever else is
/// queued (group commit); when the queue is full it waits for room (back-pressure). After
/// `audit.durable_wait` without a stored record the answer goes on: the record stays queued
/// and is retried, and `doorman_audit_released_unstored_total` counts it.
pub async fn record(mut e: AuditEvent) {
    let durable = SINK.get().and_then(|s| s.durable);
    let (Some(s), Some(wait)) = (SINK.get(), durable) else {
        emit(e);
        return;
    };
    stamp(&mut e);
    let (done, stored) = oneshot::channel();
    s.pending.fetch_add(1, Ordering::AcqRel);
    let q = Queued {
        event: e,
        stored: Some(done),
    };
    let waited = tokio::time::timeout(wait, async {
        if s.tx.send(q).await.is_err() {
            lost(1);
            return;
        }
        let _ = stored.await;
    })
    .await;
    if waited.is_err() {
        crate::metrics::get().audit_released_unstored.inc();
        tracing::warn!(
            "an answer waited {wait:?} for its audit record to be stored and was released; the record stays queued"
        );
    }
}

fn lost(n: u64) {
    crate::metrics::get().audit_lost.inc_by(n);
    if let Some(s) = SINK.get() {
        s.pending.fetch_sub(n as usize, Ordering::AcqRel);
    }
    tracing::error!(
        records = n,
        "audit records were lost: the audit writer is gone"
    );
}

/// The record as one log line (a JSON object with `log_format = "json"`).
fn log(e: &AuditEvent) {
    tracing::info!(
        target: "doorman::audit",
        kind = %e.kind,
        event = %e.event,
        person_id = e.person_id.as_deref(),
        person = e.person.as_deref(),
        client_id = e.client_id.as_deref(),
        conversation = e.conversation.as_deref(),
        upstream = e.upstream.as_deref(),
        name = e.name.as_deref(),
        resource = e.resource.as_deref(),
        account = e.account.as_deref(),
        decision = e.decision.as_deref(),
        policy = e.policy.as_deref(),
        outcome = e.outcome.as_deref(),
        latency_us = e.latency_us,
        request_id = e.request_id.as_deref(),
        arguments = e.arguments.as_deref(),
        detail = e.detail.as_deref(),
        client_address = e.client_address.as_deref(),
        "audit"
    );
}

/// The background writer and its retention purge.
pub struct Audit;

/// How the writer runs (`[audit]`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub retention: std::time::Duration,
    /// How often records past `retention` are deleted (`server.purge_interval`).
    pub purge_every: std::time::Duration,
    /// `audit.durable`: answers wait for their record, at most `audit.durable_wait`.
    pub durable: Option<std::time::Duration>,
}

impl Audit {
    /// Starts the writer (once per process) and the purge of records older than `retention`.
    pub fn start(store: Store, clock: SharedClock, settings: Settings) {
        let (tx, rx) = mpsc::channel::<Queued>(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        if SINK
            .set(Sink {
                tx,
                clock: clock.clone(),
                durable: settings.durable,
                pending: pending.clone(),
            })
            .is_err()
        {
            return;
        }
        let writer = Writer {
            store: store.clone(),
            runtime: tokio::runtime::Handle::current(),
            durable: settings.durable.is_some(),
            pending,
        };
        std::thread::Builder::new()
            .name("doorman-audit".into())
            .spawn(move || writer.run(rx))
            .expect("cannot start the audit writer's thread");
        let retention_ms = settings.retention.as_millis() as i64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(settings.purge_every);
            loop {
                tick.tick().await;
                match store.purge_audit(clock.now_ms() - retention_ms).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(records = n, "purged audit records past their retention")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot purge audit records"),
                }
            }
        });
    }

    /// Waits until every record queued so far is stored, at most `within` (at shutdown);
    /// returns how many are still waiting.
    pub async fn flush(within: std::time::Duration) -> usize {
        let Some(s) = SINK.get() else { return 0 };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let n = s.pending.load(Ordering::Acquire);
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// The writer, on a thread of its own: takes everything queued (up to `BATCH`), names people,
/// logs, stores it in one transaction, retrying a failed write until it succeeds, then tells
/// whoever waits. On SQLite it writes through a connection of its own, on this thread; on
/// PostgreSQL through the pool.
struct Writer {
    store: Store,
    runtime: tokio::runtime::Handle,
    durable: bool,
    pending: Arc<AtomicUsize>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Queued>) {
        let mut direct = match self.store.audit_writer() {
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "audit records go through the pool instead");
                None
            }
            None => None,
        };
        let mut batch: Vec<Queued> = Vec::with_capacity(256);
        let mut names: std::collections::HashMap<String, Option<String>> = Default::default();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            if !self.durable {
                // Gather for a moment: under load one transaction stores hundreds of records,
                // and senders find the writer asleep instead of waking it for every record.
                std::thread::sleep(GATHER);
            }
            // Group commit: whatever queued while the last write ran goes into this one.
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let mut events: Vec<AuditEvent> = batch
                .iter_mut()
                .map(|q| std::mem::take(&mut q.event))
                .collect();
            // Records made where only the person's id was at hand get their name here.
            for e in events.iter_mut() {
                if e.person.is_none()
                    && let Some(id) = &e.person_id
                {
                    if !names.contains_key(id) {
                        if names.len() > 10_000 {
                            names.clear();
                        }
                        let label = self
                            .runtime
                            .block_on(self.store.user(id))
                            .ok()
                            .flatten()
                            .and_then(|u| u.email.or(u.username));
                        names.insert(id.clone(), label);
                    }
                    e.person = names[id].clone();
                }
            }
            // One write for the whole batch's log lines.
            crate::log_batch::batched(|| events.iter().for_each(log));
            let mut delay = RETRY_FIRST;
            let mut failures = 0u32;
            loop {
                let stored = match direct.as_mut() {
                    Some(w) => w.insert(&events).map_err(anyhow::Error::from),
                    None => self
                        .runtime
                        .block_on(self.store.insert_audit_events(&events)),
                };
                let Err(e) = stored else { break };
                failures += 1;
                crate::metrics::get().audit_write_failures.inc();
                // Said once, then every 20th try: a long outage does not flood the log.
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::error!(error = %e, count = events.len(), attempt = failures, "cannot store audit records; retrying");
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(RETRY_MAX);
            }
            if failures > 0 {
                tracing::info!(
                    count = events.len(),
                    attempts = failures + 1,
                    "stored audit records after retrying"
                );
            }
            self.pending.fetch_sub(batch.len(), Ordering::AcqRel);
            for q in batch.drain(..) {
                if let Some(done) = q.stored {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Key names whose values are never recorded.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "authorization",
    "auth",
    "credential",
    "private",
    "session",
    "cookie",
    "key",
];

/// Arguments as recorded: values under secret-looking keys, and values that look like
/// credentials themselves (JWTs, provider tokens, long random strings), become `"[redacted]"`.
pub fn redact(args: &Value) -> Value {
    match args {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase().replace('-', "_");
                    let secret_key = SECRET_KEYS.iter().any(|s| lower.contains(s));
                    // Everything under a secret-named key goes, lists and objects included.
                    let v = if secret_key && !v.is_null() {
                        Value::from("[redacted]")
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(s) if looks_secret(s) => Value::from("[redacted]"),
        other => other.clone(),
    }
}

fn looks_secret(s: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "eyJ",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "xoxb-",
        "xoxp-",
        "xoxa-",
        "sk-",
        "sk_live_",
        "rk_live_",
        "AKIA",
        "ya29.",
        "lin_api_",
        "secret_",
        "ntn_",
        "Bearer ",
    ];
    if PREFIXES.iter().any(|p| s.starts_with(p)) && s.len() >= 12 {
        return true;
    }
    // A long run of token characters with letters and digits mixed: a key, not prose (UUIDs,
    // which name things, are kept).
    !is_uuid(s)
        && s.len() >= 32
        && !s.contains(' ')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.=+/".contains(c))
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            at: 1_000 + n as i64,
            kind: "call".into(),
            event: "tools/call".into(),
            name: Some(format!("tool_{n}")),
            record_key: Some(record_key(1_000 + n as i64)),
            ..AuditEvent::default()
        }
    }

    async fn stored(store: &Store) -> usize {
        store
            .audit_events(&AuditFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }

    /// The store refuses writes for a while: nothing is dropped, nobody is told "stored" before
    /// it is, and once the store takes writes again every record is stored, once.
    #[tokio::test]
    async fn a_failing_store_is_retried_until_every_record_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_in(dir.path()).await.unwrap();
        let exec = |sql: &'static str| {
            let store = store.clone();
            async move {
                crate::store::on_pool!(store, pool => sqlx::query(sql).execute(pool).await.map(|_| ()))
                    .unwrap()
            }
        };
        exec("ALTER TABLE audit_events RENAME TO audit_events_away").await;
        let (tx, rx) = mpsc::channel(16);
        let pending = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            store: store.clone(),
            runtime: tokio::runtime::Handle::current(),
            durable: true,
            pending: pending.clone(),
        };
        std::thread::spawn(move || writer.run(rx));
        let mut waiting = Vec::new();
        for n in 0..3 {
            let (done, stored_rx) = oneshot::channel();
            pending.fetch_add(1, Ordering::AcqRel);
            tx.send(Queued {
                event: event(n),
                stored: Some(done),
            })
            .await
            .unwrap();
            waiting.push(stored_rx);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for w in waiting.iter_mut() {
            assert!(w.try_recv().is_err(), "told stored while the store refused");
        }
        assert_eq!(pending.load(Ordering::Acquire), 3);
        exec("ALTER TABLE audit_events_away RENAME TO audit_events").await;
        for w in waiting {
            tokio::time::timeout(std::time::Duration::from_secs(10), w)
                .await
                .expect("stored after the store came back")
                .unwrap();
        }
        assert_eq!(pending.load(Ordering::Acquire), 0);
        assert_eq!(stored(&store).await, 3);
    }

    /// A write retried after a commit that did happen stores nothing twice.
    #[tokio::test]
    async fn a_record_written_twice_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_in(dir.path()).await.unwrap();
        let batch = vec![event(1), event(2)];
        store.insert_audit_events(&batch).await.unwrap();
        store.insert_audit_events(&batch).await.unwrap();
        assert_eq!(stored(&store).await, 2);
    }

    /// The writer's own SQLite connection stores a batch in one go and, retried after a
    /// commit that did happen, stores nothing twice; a batch it cannot store leaves nothing.
    #[tokio::test]
    async fn the_direct_sqlite_writer_stores_a_batch_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_in(dir.path()).await.unwrap();
        let mut writer = store.audit_writer().expect("SQLite on a file").unwrap();
        let batch: Vec<AuditEvent> = (0..5).map(event).collect();
        writer.insert(&batch).unwrap();
        writer.insert(&batch).unwrap();
        assert_eq!(stored(&store).await, 5);
        // The schema refuses nothing the writer sends, so a trigger makes the second record of
        // a batch fail: the first must not be kept either.
        let mut broken = vec![event(10), event(11)];
        broken[1].kind = String::new();
        crate::store::on_pool!(store, pool => sqlx::query(
            "CREATE TRIGGER no_empty_kind BEFORE INSERT ON audit_events WHEN NEW.kind = '' \
             BEGIN SELECT RAISE(ABORT, 'empty kind'); END"
        ).execute(pool).await.map(|_| ()))
        .unwrap();
        assert!(writer.insert(&broken).is_err());
        assert_eq!(stored(&store).await, 5, "nothing of a failed batch is kept");
        // The connection is usable after the failure.
        writer.insert(&[event(12)]).unwrap();
        assert_eq!(stored(&store).await, 6);
        assert!(store.audit_writer().is_some());
    }

    /// Keys sort by the time of their record (new keys go to the end of the unique index),
    /// and two records of one millisecond still differ.
    #[test]
    fn record_keys_sort_by_time_and_never_repeat() {
        let (a, b, c) = (record_key(1_000), record_key(1_000), record_key(1_001));
        assert_ne!(a, b);
        assert!(a < c && b < c, "{a} {b} {c}");
        assert!(record_key(0x0fff_ffff_ffff) > record_key(0xff));
        // Twelve digits of time, then 24 random ones, lowercase: as `format!` wrote them.
        for at in [0, 1_000, 1_765_000_000_000, (1 << 48) - 1] {
            let key = record_key(at);
            assert_eq!(key.len(), 36, "{key}");
            assert_eq!(key[..12], format!("{at:012x}"), "{key}");
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        assert_eq!(record_key(-5)[..12], *"000000000000");
        assert_eq!(record_key(1 << 48)[..13], *"1000000000000");
    }

    #[test]
    fn secret_looking_arguments_are_redacted_and_the_rest_kept() {
        let args = json!({
            "title": "Quarterly report",
            "api_key": "abc",
            "nested": { "Authorization": "Bearer x", "count": 3, "note": "ghp_0123456789abcdefABCDEF" },
            "list": ["plain words here", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.sig"],
            "id": "4f9c2d1e-7b3a-4c5d-9e8f-0a1b2c3d4e5f",
            "hash": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0"
        });
        let r = redact(&args);
        assert_eq!(r["title"], "Quarterly report");
        assert_eq!(r["api_key"], "[redacted]");
        assert_eq!(r["nested"]["Authorization"], "[redacted]");
        assert_eq!(r["nested"]["count"], 3);
        assert_eq!(r["nested"]["note"], "[redacted]");
        assert_eq!(r["list"][0], "plain words here");
        assert_eq!(r["list"][1], "[redacted]");
        assert_eq!(
            r["id"], "4f9c2d1e-7b3a-4c5d-9e8f-0a1b2c3d4e5f",
            "a UUID is kept"
        );
        assert_eq!(
            r["hash"], "[redacted]",
            "long random-looking strings are not kept"
        );
        // Lists and objects under a secret-named key go whole, whatever their values look like.
        let r = redact(&json!({
            "passwords": ["hunter2", "letmein"],
            "credentials": { "user": "bob", "pin": 1234 },
            "session": null,
        }));
        assert_eq!(r["passwords"], "[redacted]");
        assert_eq!(r["credentials"], "[redacted]");
        assert_eq!(r["session"], Value::Null, "nothing to hide");
    }
}
