//! `subscriptions/listen` for 2026-07-28 clients (MCP 2026-07-28 basic/patterns/subscriptions):
//! one long-lived stream of the change notifications a client asked for.
//!
//! Doorman agrees to what it can honour and says so in the acknowledgment, the stream's first
//! message: the list changes (its own, when a person connects or disconnects a resource, and
//! every upstream's) and updates of the resources the client may read. Each upstream gets its
//! share of the filter in its own names (`upstream.rs::Upstream::listen`), with the person's
//! credential when it is tied to a resource; what comes back is renamed for the client, checked
//! against the filter (a server "MUST NOT send notification types the client has not
//! explicitly requested"), and stamped with the subscription's id. The stream, and every
//! upstream stream opened for it, ends when the client closes it.

use std::{sync::Arc, time::Duration};

use axum::response::Response;
use futures_util::stream;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::{
    Gateway,
    call::{self, CallRecord, Caller},
    jsonrpc::{Id, RpcError, code},
    router::Naming,
    transport::{error_reply, sse_event, sse_reply},
    upstream::Upstream,
};
use crate::policy::{Kind, Target};

/// Every notification on the stream carries the subscription's id here.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// How long the acknowledgment waits for the upstreams to listen: notifications sent after it
/// reach the client, from every upstream that was listening by then.
const READY_WAIT: Duration = Duration::from_secs(5);

/// How long Doorman waits before listening to an upstream again after its stream ended, at
/// first; doubled after each end that delivered nothing, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// What a client asked to hear (the `notifications` filter), in the names clients see.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filter {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
    /// `{upstream}+{uri}`
    pub uris: Vec<String>,
}

impl Filter {
    /// Reads the filter; fields that are absent or of another type are not subscribed to.
    pub fn parse(params: &Value) -> Result<Self, RpcError> {
        let n = match params.get("notifications") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(n)) => n,
            Some(_) => {
                return Err(RpcError::new(
                    code::INVALID_PARAMS,
                    "notifications must be an object",
                ));
            }
        };
        let flag = |k: &str| n.get(k).and_then(Value::as_bool).unwrap_or(false);
        let uris = match n.get("resourceSubscriptions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|u| u.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    RpcError::new(
                        code::INVALID_PARAMS,
                        "resourceSubscriptions must be an array of URIs",
                    )
                })?,
            Some(_) => {
                return Err(RpcError::new(
                    code::INVALID_PARAMS,
                    "resourceSubscriptions must be an array of URIs",
                ));
            }
        };
        Ok(Self {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris,
        })
    }

    fn lists(&self) -> bool {
        self.tools || self.prompts || self.resources
    }

    /// As the filter is written on the wire: only what is subscribed to.
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (key, on) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if on {
                m.insert(key.into(), json!(true));
            }
        }
        if !self.uris.is_empty() {
            m.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(m)
    }

    /// Whether a list-changed notification `method` was asked for.
    fn wants_list(&self, method: &str) -> bool {
        match method {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            _ => false,
        }
    }
}

/// One upstream's share of a filter: the list flags, and the URIs in its own names.
struct Share {
    up: Arc<Upstream>,
    /// (the upstream's URI, the URI the client knows)
    uris: Vec<(String, String)>,
}

/// The subset of `asked` Doorman honours for `caller`, and each upstream's share of it. A URI
/// that names no upstream, or that the caller may not read, is left out.
fn agree(gw: &Gateway, caller: Option<&Caller>, asked: &Filter) -> (Filter, Vec<Share>) {
    let router = &gw.router;
    let mut agreed = Filter {
        uris: Vec::new(),
        ..asked.clone()
    };
    let mut shares: Vec<Share> = Vec::new();
    for exposed in &asked.uris {
        let params = json!({ "uri": exposed });
        let Ok((up, original)) = router.resolve(&params, "uri", Naming::Uri, "resource") else {
            continue;
        };
        let target = Target {
            kind: Kind::Resource,
            name: exposed,
            upstream: &up.name,
        };
        if !call::shown(router, caller, target) || agreed.uris.contains(exposed) {
            continue;
        }
        agreed.uris.push(exposed.clone());
        let pair = (original.to_owned(), exposed.clone());
        match shares.iter_mut().find(|s| Arc::ptr_eq(&s.up, up)) {
            Some(s) => s.uris.push(pair),
            None => shares.push(Share {
                up: up.clone(),
                uris: vec![pair],
            }),
        }
    }
    if asked.lists() {
        for up in router.upstreams() {
            if !shares.iter().any(|s| Arc::ptr_eq(&s.up, up)) {
                shares.push(Share {
                    up: up.clone(),
                    uris: Vec::new(),
                });
            }
        }
    }
    (agreed, shares)
}

/// The notification a client hears for `msg` from an upstream, or `None` when it did not ask
/// for it: list changes as asked, and updates of the URIs it subscribed to, renamed.
fn for_client(agreed: &Filter, share: &Share, mut msg: Value) -> Option<Value> {
    let method = msg.get("method")?.as_str()?.to_owned();
    if agreed.wants_list(&method) {
        return Some(json!({ "jsonrpc": "2.0", "method": method }));
    }
    if method != "notifications/resources/updated" {
        return None;
    }
    let uri = msg.pointer("/params/uri")?.as_str()?;
    let (_, exposed) = share.uris.iter().find(|(original, _)| original == uri)?;
    msg["params"]["uri"] = json!(exposed);
    if let Some(p) = msg["params"].as_object_mut() {
        p.remove("_meta");
    }
    Some(msg)
}

/// Puts the subscription's id on a message.
fn stamped(mut msg: Value, id: &Value) -> Value {
    if !msg.get("params").is_some_and(Value::is_object) {
        msg["params"] = json!({});
    }
    msg["params"]["_meta"] = json!({ META_SUBSCRIPTION_ID: id });
    msg
}

/// Aborts what feeds a stream when the stream is dropped (the client closed it).
struct Feeders(Vec<tokio::task::AbortHandle>);

impl Drop for Feeders {
    fn drop(&mut self) {
        for f in &self.0 {
            f.abort();
        }
    }
}

/// Serves one `subscriptions/listen`: the acknowledgment, then the notifications, until the
/// client closes the stream.
pub async fn serve(
    gw: &Arc<Gateway>,
    caller: Option<Caller>,
    id: Id,
    params: &Value,
    sse: bool,
    trace_id: &str,
) -> Response {
    if !sse {
        // MCP 2026-07-28 basic/patterns/subscriptions: the answer is a stream.
        let e = RpcError::new(
            code::INVALID_REQUEST,
            "subscriptions/listen answers with an event stream: the Accept header must allow text/event-stream",
        );
        return error_reply(axum::http::StatusCode::NOT_ACCEPTABLE, Some(&id), &e);
    }
    let asked = match Filter::parse(params) {
        Ok(f) => f,
        Err(e) => return error_reply(axum::http::StatusCode::BAD_REQUEST, Some(&id), &e),
    };
    let (agreed, shares) = agree(gw, caller.as_ref(), &asked);
    let sub_id = serde_json::to_value(&id).expect("an id serializes");
    // One record for the stream: what it subscribed to, decided above.
    let rec = CallRecord {
        detail: Some(format!("listening for {}", agreed.to_json())),
        ..CallRecord::default()
    };
    call::record(
        "subscriptions/listen",
        caller.as_ref(),
        Some(trace_id),
        rec,
        Some("success"),
        None,
    )
    .await;

    let (tx, rx) = mpsc::channel::<Value>(64);
    let ack = stamped(
        json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": { "notifications": agreed.to_json() },
        }),
        &sub_id,
    );
    let _ = tx.try_send(ack);
    let agreed = Arc::new(agreed);
    let mut feeders = Vec::new();
    // Doorman's own list changes for this person (`Gateway::lists_changed`).
    if agreed.lists()
        && let Some(user) = caller.as_ref().map(|c| c.user_id.clone())
    {
        let mut changes = gw.lists_heard();
        let (tx, agreed, sub_id) = (tx.clone(), agreed.clone(), sub_id.clone());
        feeders.push(
            tokio::spawn(async move {
                loop {
                    match changes.recv().await {
                        Ok(who) if who == user => {
                            for method in [
                                "notifications/tools/list_changed",
                                "notifications/prompts/list_changed",
                                "notifications/resources/list_changed",
                            ] {
                                if agreed.wants_list(method) {
                                    let msg = json!({ "jsonrpc": "2.0", "method": method });
                                    if tx.send(stamped(msg, &sub_id)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    }
                }
            })
            .abort_handle(),
        );
    }
    let mut ready = Vec::new();
    for share in shares {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(ready_rx);
        let filter = Filter {
            uris: share.uris.iter().map(|(o, _)| o.clone()).collect(),
            ..(*agreed).clone()
        }
        .to_json();
        let (tx, agreed, sub_id, gw) = (tx.clone(), agreed.clone(), sub_id.clone(), gw.clone());
        let caller = caller.clone();
        feeders.push(
            tokio::spawn(async move {
                let share = share;
                let mut pause = FIRST_PAUSE;
                let mut ready = Some(ready_tx);
                loop {
                    let cred = gw.router.credential_for(&share.up, caller.as_ref()).await;
                    let mut delivered = false;
                    let outcome = share
                        .up
                        .listen(&filter, cred.as_ref().map(|c| &c.header), |msg| {
                            if msg.get("method").and_then(Value::as_str)
                                == Some("notifications/subscriptions/acknowledged")
                            {
                                if let Some(r) = ready.take() {
                                    let _ = r.send(());
                                }
                                return;
                            }
                            if let Some(m) = for_client(&agreed, &share, msg) {
                                delivered = true;
                                // A client too slow for its stream misses notifications.
                                let _ = tx.try_send(stamped(m, &sub_id));
                            }
                        })
                        .await;
                    if tx.is_closed() {
                        return;
                    }
                    if let Err(e) = outcome {
                        tracing::debug!(upstream = %share.up.name, error = %e, "listening to the upstream failed");
                    }
                    // Not listening now: the acknowledgment waits for it no longer.
                    ready.take();
                    pause = if delivered {
                        FIRST_PAUSE
                    } else {
                        (pause * 2).min(MAX_PAUSE)
                    };
                    tokio::time::sleep(pause).await;
                }
            })
            .abort_handle(),
        );
    }
    let feeders = Feeders(feeders);
    // Each upstream listens (or failed to) before the client's stream starts, within a bound.
    let _ = tokio::time::timeout(READY_WAIT, futures_util::future::join_all(ready)).await;
    let body = stream::unfold((rx, feeders), |(mut rx, feeders)| async move {
        let msg = rx.recv().await?;
        Some((sse_event(&msg), (rx, feeders)))
    });
    sse_reply(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_reads_what_is_asked_and_writes_only_that() {
        let f = Filter::parse(&json!({ "notifications": {
            "toolsListChanged": true, "promptsListChanged": false,
            "resourceSubscriptions": ["a+file:///x"],
        }}))
        .unwrap();
        assert!(f.tools && !f.prompts && !f.resources);
        assert_eq!(
            f.to_json(),
            json!({ "toolsListChanged": true, "resourceSubscriptions": ["a+file:///x"] })
        );
        assert_eq!(Filter::parse(&json!({})).unwrap(), Filter::default());
        for bad in [
            json!({ "notifications": [] }),
            json!({ "notifications": { "resourceSubscriptions": "a+x" } }),
            json!({ "notifications": { "resourceSubscriptions": [1] } }),
        ] {
            assert_eq!(Filter::parse(&bad).unwrap_err().code, code::INVALID_PARAMS);
        }
    }

    #[test]
    fn a_client_hears_only_what_it_asked_for_renamed() {
        let config = crate::config::Config::from_toml(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
        )
        .unwrap();
        let up = Arc::new(
            Upstream::new(&config.upstreams[0], crate::net::HttpClient::new().unwrap()).unwrap(),
        );
        let share = Share {
            up,
            uris: vec![("file:///x".into(), "a+file:///x".into())],
        };
        let agreed = Filter {
            tools: true,
            uris: vec!["a+file:///x".into()],
            ..Filter::default()
        };
        let note = |method: &str, uri: &str| json!({ "jsonrpc": "2.0", "method": method, "params": { "uri": uri } });
        assert_eq!(
            for_client(
                &agreed,
                &share,
                note("notifications/tools/list_changed", "")
            ),
            Some(json!({ "jsonrpc": "2.0", "method": "notifications/tools/list_changed" }))
        );
        // Not asked for: prompts, another URI, anything else an upstream sends.
        for (method, uri) in [
            ("notifications/prompts/list_changed", ""),
            ("notifications/resources/updated", "file:///y"),
            ("notifications/message", ""),
            ("notifications/subscriptions/acknowledged", ""),
        ] {
            assert_eq!(
                for_client(&agreed, &share, note(method, uri)),
                None,
                "{method}"
            );
        }
        let updated = for_client(
            &agreed,
            &share,
            note("notifications/resources/updated", "file:///x"),
        )
        .unwrap();
        assert_eq!(updated["params"]["uri"], "a+file:///x");
        let stamped = stamped(updated, &json!(7));
        assert_eq!(stamped["params"]["_meta"][META_SUBSCRIPTION_ID], 7);
    }
}
