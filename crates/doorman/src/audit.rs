//! The audit trail: one record per tool call, prompt get and resource read, and per security
//! event (sign-ins, failed sign-ins, consent, connections made, refreshed and revoked, key
//! rotations). Each record is a JSON log line (target `doorman::audit`) and a row in
//! `audit_events`, written in the background in batches so requests never wait for it, and
//! purged after `[audit] retention`.
//!
//! Recording goes through [`emit`], a process-wide sink set up by `doorman serve`
//! ([`Audit::start`]); without it (tests of single modules, operator commands) records are
//! only logged.

use std::sync::OnceLock;

use serde_json::Value;
use tokio::sync::mpsc;

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

struct Sink {
    tx: mpsc::Sender<AuditEvent>,
    clock: SharedClock,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Records an event: a JSON log line now, a row soon. `at` is filled in when zero, the client
/// address from the request this task serves when not given.
pub fn emit(mut e: AuditEvent) {
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
    match SINK.get() {
        // Logged by the writer, after naming the person.
        Some(s) => {
            if s.tx.try_send(e).is_err() {
                tracing::warn!("the audit writer is behind: a record was dropped");
            }
        }
        None => log(&e),
    }
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

impl Audit {
    /// Starts the writer (once per process) and the hourly purge of records older than
    /// `retention`.
    /// `purge_every`: how often records past `retention` are deleted (`server.purge_interval`).
    pub fn start(
        store: Store,
        clock: SharedClock,
        retention: std::time::Duration,
        purge_every: std::time::Duration,
    ) {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(10_000);
        if SINK
            .set(Sink {
                tx,
                clock: clock.clone(),
            })
            .is_err()
        {
            return;
        }
        let writer_store = store.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            let mut names: std::collections::HashMap<String, Option<String>> = Default::default();
            while rx.recv_many(&mut batch, 1024).await > 0 {
                // Gather for a moment: under load one statement stores hundreds of records,
                // and senders find the writer asleep instead of waking it for every record.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                while batch.len() < 1024 {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                // Records made where only the person's id was at hand get their name here.
                for e in batch.iter_mut() {
                    if e.person.is_none()
                        && let Some(id) = &e.person_id
                    {
                        if !names.contains_key(id) {
                            if names.len() > 10_000 {
                                names.clear();
                            }
                            let label = writer_store
                                .user(id)
                                .await
                                .ok()
                                .flatten()
                                .and_then(|u| u.email.or(u.username));
                            names.insert(id.clone(), label);
                        }
                        e.person = names[id].clone();
                    }
                }
                // One write for the whole batch's log lines.
                crate::log_batch::batched(|| batch.iter().for_each(log));
                if let Err(e) = writer_store.insert_audit_events(&batch).await {
                    tracing::error!(error = %e, count = batch.len(), "cannot store audit records");
                }
                batch.clear();
            }
        });
        let retention_ms = retention.as_millis() as i64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(purge_every);
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
