//! Requests an upstream asks of the client: elicitation, sampling, roots (MCP 2025-11-25
//! client/elicitation, client/sampling, client/roots).
//!
//! A stateful session relays them: the upstream's request goes onto the client's stream (the
//! stream of the request it belongs to, else the session's GET stream) under an id Doorman
//! chose, and the client's answer, POSTed back with that id, is matched here and sent to the
//! upstream that asked, under the upstream's own id. An upstream on 2026-07-28 asks with an
//! `InputRequiredResult` instead (basic/patterns/mrtr); `upstream.rs` turns each of its
//! `inputRequests` into such a request for a stateful client and retries with the answers.
//!
//! Only what the client declared is asked of it; anything else is answered with the spec's
//! error without reaching the client. The pending answers live in this node's memory: with
//! several nodes, a session's answers must reach the node that asked (sticky sessions at the
//! balancer); an answer that reaches another node is accepted and dropped, and the upstream
//! gets an error once [`ASK_TIMEOUT`] passes.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::jsonrpc::{Id, RpcError, code};

/// How long a person may take to answer (an elicitation form, a sampling approval).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The client's answer to one request: its `result`, or its `error`.
pub type Answer = Result<Value, RpcError>;

/// The requests of one session waiting for the client's answer.
#[derive(Default)]
pub struct Asks {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
}

impl Asks {
    fn open(&self) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("asks lock").insert(id, tx);
        (id, rx)
    }

    fn forget(&self, id: u64) {
        self.pending.lock().expect("asks lock").remove(&id);
    }

    /// The client answered request `id`; false when nothing on this node waits for it (an
    /// unknown, repeated or late answer, which changes nothing).
    pub fn answer(&self, id: &Id, answer: Answer) -> bool {
        let Id::Number(n) = id else { return false };
        let Some(n) = n.as_u64() else { return false };
        let waiting = self.pending.lock().expect("asks lock").remove(&n);
        waiting.is_some_and(|tx| tx.send(answer).is_ok())
    }

    /// How many requests wait for an answer.
    pub fn waiting(&self) -> usize {
        self.pending.lock().expect("asks lock").len()
    }
}

/// Where a request for the client is written.
#[derive(Clone)]
pub enum Sink {
    /// The SSE stream of the client's request the upstream is working on.
    Stream(mpsc::Sender<Value>),
    /// The session's GET stream (requests not tied to one of the client's requests).
    Broadcast(broadcast::Sender<Value>),
    /// A 2026-07-28 client, which takes no requests: each becomes an entry of an
    /// `InputRequiredResult` while the upstream's call waits (`parked.rs`).
    Park(mpsc::Sender<Value>),
}

/// A stateful client, as the upstreams of its session may reach it.
#[derive(Clone)]
pub struct ClientLink {
    /// What Doorman declares to upstreams on the client's behalf: [`relayable`].
    pub capabilities: Arc<Value>,
    pub asks: Arc<Asks>,
    pub sink: Sink,
}

impl ClientLink {
    /// Whether the client is a 2026-07-28 client, asked through `InputRequiredResult`s.
    pub fn is_parked(&self) -> bool {
        matches!(self.sink, Sink::Park(_))
    }

    /// Sends `method` to the client and waits for its answer (at most [`ASK_TIMEOUT`]).
    pub async fn ask(&self, method: &str, params: Value) -> Answer {
        if let Some(e) = undeclared(&self.capabilities, method, &params) {
            return Err(e);
        }
        let (id, rx) = self.asks.open();
        let msg = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let sent = match &self.sink {
            Sink::Stream(tx) | Sink::Park(tx) => tx.send(msg).await.is_ok(),
            Sink::Broadcast(tx) => tx.send(msg).is_ok(),
        };
        if !sent {
            self.asks.forget(id);
            return Err(RpcError::new(
                code::INTERNAL_ERROR,
                format!("the client has no open stream to receive {method}"),
            ));
        }
        match tokio::time::timeout(ASK_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RpcError::new(
                code::INTERNAL_ERROR,
                format!("the client's session ended before it answered {method}"),
            )),
            Err(_) => {
                self.asks.forget(id);
                Err(RpcError::new(
                    code::INTERNAL_ERROR,
                    format!(
                        "the client did not answer {method} within {} minutes",
                        ASK_TIMEOUT.as_secs() / 60
                    ),
                ))
            }
        }
    }
}

/// The client capabilities Doorman can relay, as the client declared them: `elicitation`,
/// `sampling` and `roots`. Others (`experimental`, `tasks`, extensions) are not declared to
/// upstreams, since Doorman would not carry what they need.
pub fn relayable(declared: &Value) -> Value {
    let mut caps = serde_json::Map::new();
    for key in ["elicitation", "sampling", "roots"] {
        if let Some(v) = declared.get(key).filter(|v| v.is_object()) {
            caps.insert(key.into(), v.clone());
        }
    }
    Value::Object(caps)
}

/// The error for a request the client did not declare it can answer; `None` when it did.
pub fn undeclared(caps: &Value, method: &str, params: &Value) -> Option<RpcError> {
    let not_declared = |what: &str| {
        Some(
            RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("Method not found: the client did not declare the {what} capability"),
            )
            .with_data(json!({ "reason": "capability_not_declared", "capability": what })),
        )
    };
    match method {
        "elicitation/create" => {
            let Some(e) = caps.get("elicitation").filter(|v| v.is_object()) else {
                return not_declared("elicitation");
            };
            let mode = params.get("mode").and_then(Value::as_str).unwrap_or("form");
            // MCP 2025-11-25 client/elicitation, "Capabilities": an empty object means form
            // only; "Error Handling": a mode the client did not declare is -32602.
            let declared = match mode {
                "form" => e.get("form").is_some() || e.as_object().is_some_and(|o| o.is_empty()),
                "url" => e.get("url").is_some(),
                _ => false,
            };
            (!declared).then(|| {
                RpcError::new(
                    code::INVALID_PARAMS,
                    format!("Invalid params: the client did not declare elicitation mode {mode:?}"),
                )
                .with_data(json!({ "reason": "capability_not_declared", "capability": format!("elicitation.{mode}") }))
            })
        }
        "sampling/createMessage" => {
            let Some(s) = caps.get("sampling").filter(|v| v.is_object()) else {
                return not_declared("sampling");
            };
            // client/sampling, "Tool Use": tools only to clients that declared `sampling.tools`.
            let wants_tools = params.get("tools").is_some() || params.get("toolChoice").is_some();
            if wants_tools && s.get("tools").is_none() {
                return not_declared("sampling.tools");
            }
            None
        }
        "roots/list" => caps
            .get("roots")
            .filter(|v| v.is_object())
            .is_none()
            .then(|| not_declared("roots"))
            .flatten(),
        _ => Some(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("Method not found: Doorman does not relay {method} to clients"),
        )),
    }
}

/// An upstream's `requestState`, as a 2026-07-28 client sees it: sealed inside Doorman's own
/// (MCP 2026-07-28 basic/patterns/mrtr, "Server Requirements" 4 and 5), so the client can
/// neither read nor alter it, and bound to the person, the client, the upstream, the method, the
/// name and a deadline, so it is good only for the retry of the request it came with.
pub mod state {
    use serde_json::{Value, json};

    use crate::{
        crypto::KeyRing,
        gateway::jsonrpc::{RpcError, code},
    };

    /// Upstream states sealed by Doorman start with this (`doorman1.` is layer 2's own).
    pub const PREFIX: &str = "doorman2.";
    const AAD: &str = "doorman:upstream-request-state";
    /// How long a retry may come after the `InputRequiredResult`.
    pub const LIFETIME_MS: i64 = 15 * 60 * 1000;

    /// What a sealed state binds.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Binding {
        /// The person (empty in local mode) and the client.
        pub person: String,
        pub client: String,
        pub upstream: String,
        pub method: String,
        /// The tool or prompt name, or resource URI, as the client named it.
        pub name: String,
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Sealed {
        b: Binding,
        /// Expiry (ms since the epoch).
        x: i64,
        /// The upstream's own state.
        s: String,
    }

    /// Replaces the upstream's `requestState` in an `InputRequiredResult` with Doorman's.
    pub fn seal(ring: &KeyRing, result: &mut Value, binding: Binding, now_ms: i64) {
        // Layer 2's own prompt carries a state Doorman made already.
        let Some(inner) = result
            .get("requestState")
            .and_then(Value::as_str)
            .filter(|s| !s.starts_with("doorman1."))
        else {
            return;
        };
        let sealed = Sealed {
            b: binding,
            x: now_ms + LIFETIME_MS,
            s: inner.to_owned(),
        };
        let plain = serde_json::to_vec(&sealed).expect("state serializes");
        result["requestState"] = json!(format!("{PREFIX}{}", ring.seal(&plain, AAD)));
    }

    /// States of calls Doorman holds open for a 2026-07-28 client (`parked.rs`) start with this.
    pub const PARKED_PREFIX: &str = "doorman3.";
    const PARKED_AAD: &str = "doorman:parked-call";

    /// The state of a parked call: which one, for whom, until when.
    pub fn seal_parked(ring: &KeyRing, binding: &Binding, call: &str, now_ms: i64) -> String {
        let sealed = Sealed {
            b: binding.clone(),
            x: now_ms + LIFETIME_MS,
            s: call.to_owned(),
        };
        let plain = serde_json::to_vec(&sealed).expect("state serializes");
        format!("{PARKED_PREFIX}{}", ring.seal(&plain, PARKED_AAD))
    }

    /// On a retry: the parked call a state names, after the same checks as [`open`]. `None`
    /// when the state is not a parked call's.
    pub fn open_parked(
        ring: &KeyRing,
        params: &Value,
        expected: &Binding,
        now_ms: i64,
    ) -> Option<Result<String, RpcError>> {
        let sealed = params
            .get("requestState")?
            .as_str()?
            .strip_prefix(PARKED_PREFIX)?;
        Some(unseal(ring, sealed, PARKED_AAD, expected, now_ms))
    }

    /// What a sealed state carries, once it opens and its binding and expiry are checked.
    fn unseal(
        ring: &KeyRing,
        sealed: &str,
        aad: &str,
        expected: &Binding,
        now_ms: i64,
    ) -> Result<String, RpcError> {
        let plain = ring
            .open(sealed, aad)
            .map_err(|_| refused("does not open (tampered, or another deployment's)"))?;
        let s: Sealed = serde_json::from_slice(&plain).map_err(|_| refused("unreadable"))?;
        if s.b.person != expected.person || s.b.client != expected.client {
            return Err(refused("made for another person or client"));
        }
        if s.x <= now_ms {
            return Err(refused("expired"));
        }
        if s.b != *expected {
            return Err(refused("made for another request"));
        }
        Ok(s.s)
    }

    pub(crate) fn refused(why: &str) -> RpcError {
        tracing::warn!(reason = why, "requestState refused");
        RpcError::new(code::INVALID_PARAMS, "Invalid or expired requestState")
            .with_data(json!({ "reason": "invalid_request_state" }))
    }

    /// On a retry: the upstream's own state back in place of Doorman's, after every check.
    /// Layer 2's states (`doorman1.`) are left for it; a state Doorman did not make is refused,
    /// since an upstream must never receive one the client wrote.
    pub fn open(
        ring: &KeyRing,
        params: &mut Value,
        expected: &Binding,
        now_ms: i64,
    ) -> Result<(), RpcError> {
        let Some(state) = params.get("requestState") else {
            return Ok(());
        };
        let Some(state) = state.as_str() else {
            return Err(refused("not a string"));
        };
        if state.starts_with("doorman1.") {
            return Ok(());
        }
        let Some(sealed) = state.strip_prefix(PREFIX) else {
            return Err(refused("not made by Doorman"));
        };
        let inner = unseal(ring, sealed, AAD, expected, now_ms)?;
        params["requestState"] = json!(inner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_state_is_sealed_and_good_only_for_its_own_retry() {
        use state::{Binding, PREFIX, open, seal};
        let ring = crate::crypto::KeyRing::random();
        let binding = Binding {
            person: "alice".into(),
            client: "c1".into(),
            upstream: "py".into(),
            method: "tools/call".into(),
            name: "py_confirm".into(),
        };
        let mut result = json!({"resultType": "input_required", "requestState": "upstream-secret"});
        seal(&ring, &mut result, binding.clone(), 1_000);
        let sealed = result["requestState"].as_str().unwrap().to_owned();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("upstream-secret"));
        let retry = |state: &str| json!({"name": "confirm", "requestState": state});

        let mut ok = retry(&sealed);
        open(&ring, &mut ok, &binding, 2_000).unwrap();
        assert_eq!(ok["requestState"], "upstream-secret");

        let other = |f: fn(&mut Binding)| {
            let mut b = binding.clone();
            f(&mut b);
            open(&ring, &mut retry(&sealed), &b, 2_000).unwrap_err()
        };
        other(|b| b.person = "mallory".into());
        other(|b| b.client = "c2".into());
        other(|b| b.upstream = "crm".into());
        other(|b| b.method = "prompts/get".into());
        other(|b| b.name = "py_other".into());
        let late = open(
            &ring,
            &mut retry(&sealed),
            &binding,
            1_000 + state::LIFETIME_MS,
        );
        assert_eq!(
            late.unwrap_err().data.unwrap()["reason"],
            "invalid_request_state"
        );
        // Altered, forged by the client, or not a string: refused.
        let mut altered = sealed.clone();
        altered.insert(sealed.len() - 2, 'A');
        assert!(open(&ring, &mut retry(&altered), &binding, 2_000).is_err());
        assert!(open(&ring, &mut retry("upstream-secret"), &binding, 2_000).is_err());
        assert!(open(&ring, &mut json!({"requestState": 7}), &binding, 2_000).is_err());
        // Layer 2's own, and none at all, pass untouched.
        let mut l2 = retry("doorman1.x");
        open(&ring, &mut l2, &binding, 2_000).unwrap();
        assert_eq!(l2["requestState"], "doorman1.x");
        open(&ring, &mut json!({"name": "x"}), &binding, 2_000).unwrap();
        let mut own = json!({"resultType": "input_required", "requestState": "doorman1.y"});
        seal(&ring, &mut own, binding.clone(), 1_000);
        assert_eq!(
            own["requestState"], "doorman1.y",
            "layer 2's state is sealed once"
        );
        // A result without a state gets none.
        let mut none = json!({"resultType": "input_required", "inputRequests": {}});
        seal(&ring, &mut none, binding, 1_000);
        assert!(none.get("requestState").is_none());
    }

    #[test]
    fn only_what_the_client_declared_is_asked() {
        let caps =
            json!({"elicitation": {}, "roots": {"listChanged": true}, "experimental": {"x": {}}});
        assert_eq!(
            relayable(&caps),
            json!({"elicitation": {}, "roots": {"listChanged": true}})
        );
        assert!(undeclared(&caps, "elicitation/create", &json!({"message": "?"})).is_none());
        let url = undeclared(&caps, "elicitation/create", &json!({"mode": "url"})).unwrap();
        assert_eq!(
            url.code,
            code::INVALID_PARAMS,
            "a mode not declared is -32602"
        );
        assert!(undeclared(&caps, "roots/list", &json!({})).is_none());
        let sampling = undeclared(&caps, "sampling/createMessage", &json!({})).unwrap();
        assert_eq!(sampling.code, code::METHOD_NOT_FOUND);
        assert_eq!(sampling.data.unwrap()["capability"], "sampling");

        let both = json!({"elicitation": {"url": {}}, "sampling": {}});
        assert!(undeclared(&both, "elicitation/create", &json!({"mode": "url"})).is_none());
        assert!(
            undeclared(&both, "elicitation/create", &json!({})).is_some(),
            "url alone does not mean form"
        );
        assert!(undeclared(&both, "sampling/createMessage", &json!({"messages": []})).is_none());
        assert!(
            undeclared(&both, "sampling/createMessage", &json!({"tools": []})).is_some(),
            "tool use needs sampling.tools"
        );
        assert!(undeclared(&both, "tasks/get", &json!({})).is_some());
        assert!(
            undeclared(
                &json!({"elicitation": true}),
                "elicitation/create",
                &json!({})
            )
            .is_some()
        );
    }

    #[tokio::test]
    async fn the_answer_reaches_the_request_that_asked_and_only_once() {
        let (tx, mut rx) = mpsc::channel(4);
        let link = ClientLink {
            capabilities: Arc::new(json!({"roots": {}})),
            asks: Arc::new(Asks::default()),
            sink: Sink::Stream(tx),
        };
        let asks = link.asks.clone();
        let asking = tokio::spawn({
            let link = link.clone();
            async move { link.ask("roots/list", json!({})).await }
        });
        let sent = rx.recv().await.unwrap();
        assert_eq!(sent["method"], "roots/list");
        let id = Id::of(sent["id"].clone()).unwrap();
        assert!(
            !asks.answer(&Id::from(999), Ok(json!({}))),
            "an unknown id waits for nothing"
        );
        assert!(!asks.answer(&Id::String("1".into()), Ok(json!({}))));
        assert!(asks.answer(&id, Ok(json!({"roots": []}))));
        assert!(
            !asks.answer(&id, Ok(json!({"roots": ["again"]}))),
            "answered once"
        );
        assert_eq!(asking.await.unwrap().unwrap(), json!({"roots": []}));
        assert_eq!(asks.waiting(), 0);

        // A request the client did not declare never reaches it.
        let e = link
            .ask("sampling/createMessage", json!({}))
            .await
            .unwrap_err();
        assert_eq!(e.code, code::METHOD_NOT_FOUND);
        assert!(rx.try_recv().is_err());
        // A closed stream is an error at once, and leaves nothing waiting.
        drop(rx);
        assert!(link.ask("roots/list", json!({})).await.is_err());
        assert_eq!(asks.waiting(), 0);
    }
}
