//! A 2026-07-28 client calling an upstream of the handshake revisions that asks something in the
//! middle of the call (elicitation, sampling, roots).
//!
//! The client takes no requests (MCP 2026-07-28 basic/patterns/mrtr): it is asked with an
//! `InputRequiredResult` and retries the call with the answers. The upstream asks on its open
//! call and waits. So Doorman runs the call in a task of its own; when the upstream asks, the
//! client's request is answered with an `InputRequiredResult` whose `inputRequests` are the
//! upstream's questions and whose `requestState` is Doorman's, sealed and bound to the person,
//! the client, the method and the name (`asks::state::seal_parked`), while the call stays
//! *parked* here. The retry's answers go to the waiting upstream and Doorman waits again: for
//! the result, or the next question. The call was decided once, on the first request, and is
//! recorded once, when it ends; each retry is checked against the same binding.
//!
//! Parked calls live in this node's memory: a retry must reach the node that parked its call
//! (as a stateful session's requests must), else it is refused as an unknown state. A call whose
//! client never comes back ends with the ask's timeout (`asks::ASK_TIMEOUT`), and is forgotten.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    asks::{ASK_TIMEOUT, Asks, state},
    jsonrpc::{Id, Reply, RpcError, code},
};
use crate::crypto::KeyRing;

/// At most this many calls of one person may be parked at once; the next call's question is
/// answered to the upstream with an error instead.
const MAX_PER_PERSON: usize = 32;

/// A call in flight whose questions the client answers through retries.
pub struct Waiting {
    pub binding: state::Binding,
    pub asks: Arc<Asks>,
    /// The upstream's questions, as requests for the client (`Sink::Park`).
    pub questions: mpsc::Receiver<Value>,
    /// The call's notifications (progress, log), for whichever response is open.
    pub events: mpsc::Receiver<Value>,
    pub work: JoinHandle<Result<Reply, RpcError>>,
    /// The ids of the questions the client was shown and has not answered.
    pending: Vec<u64>,
}

impl Waiting {
    pub fn new(
        binding: state::Binding,
        asks: Arc<Asks>,
        questions: mpsc::Receiver<Value>,
        events: mpsc::Receiver<Value>,
        work: JoinHandle<Result<Reply, RpcError>>,
    ) -> Self {
        Self {
            binding,
            asks,
            questions,
            events,
            work,
            pending: Vec::new(),
        }
    }
}

/// This node's parked calls, by id.
#[derive(Default)]
pub struct Parked {
    calls: Mutex<HashMap<String, (Instant, Waiting)>>,
}

impl Parked {
    /// Runs a call until it ends or asks the client something: its result, or the
    /// `InputRequiredResult` that asks. Its notifications go to `out` meanwhile.
    pub async fn wait(
        &self,
        ring: &KeyRing,
        mut w: Waiting,
        out: mpsc::Sender<Value>,
        now_ms: i64,
    ) -> Result<Reply, RpcError> {
        loop {
            tokio::select! {
                biased;
                Some(event) = w.events.recv() => {
                    let _ = out.send(event).await;
                }
                outcome = &mut w.work => {
                    while let Ok(event) = w.events.try_recv() {
                        let _ = out.send(event).await;
                    }
                    return outcome.unwrap_or_else(|_| {
                        Err(RpcError::new(code::INTERNAL_ERROR, "the call stopped"))
                    });
                }
                Some(first) = w.questions.recv() => {
                    let mut asked = vec![first];
                    asked.extend(std::iter::from_fn(|| w.questions.try_recv().ok()));
                    return self.park(ring, w, asked, now_ms).map(Reply::from);
                }
            }
        }
    }

    /// Keeps the call, and makes the `InputRequiredResult` that asks its questions.
    fn park(
        &self,
        ring: &KeyRing,
        mut w: Waiting,
        asked: Vec<Value>,
        now_ms: i64,
    ) -> Result<Value, RpcError> {
        let mut requests = Map::new();
        for q in asked {
            let Some(id) = q.get("id").and_then(Value::as_u64) else {
                continue;
            };
            w.pending.push(id);
            requests.insert(
                id.to_string(),
                json!({ "method": q["method"], "params": q.get("params").cloned().unwrap_or(json!({})) }),
            );
        }
        let call = crate::crypto::random_token(16);
        let state = state::seal_parked(ring, &w.binding, &call, now_ms);
        let mut calls = self.calls.lock().expect("parked lock");
        calls.retain(|_, (at, w)| {
            let keep =
                at.elapsed() < ASK_TIMEOUT + Duration::from_secs(60) && !w.work.is_finished();
            if !keep {
                w.work.abort();
            }
            keep
        });
        let person = w.binding.person.clone();
        if calls
            .values()
            .filter(|(_, c)| c.binding.person == person)
            .count()
            >= MAX_PER_PERSON
        {
            // Too many questions left unanswered: this one is refused to the upstream.
            tracing::warn!(person = %person, "too many calls wait for answers; refusing another");
            for id in w.pending.drain(..) {
                w.asks.answer(
                    &Id::Number(id.into()),
                    Err(RpcError::new(
                        code::INTERNAL_ERROR,
                        "the client has too many questions left unanswered",
                    )),
                );
            }
            return Err(RpcError::new(
                code::INTERNAL_ERROR,
                "Too many of your calls are waiting for answers; answer them first",
            ));
        }
        calls.insert(call, (Instant::now(), w));
        Ok(json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": state,
        }))
    }

    /// The retry of a parked call: its answers go to the upstream's questions, and the call is
    /// returned to wait on. `None` when the request's state is not a parked call's.
    pub fn resume(
        &self,
        ring: &KeyRing,
        params: &Value,
        expected: &state::Binding,
        now_ms: i64,
    ) -> Option<Result<Waiting, RpcError>> {
        let call = match state::open_parked(ring, params, expected, now_ms)? {
            Ok(call) => call,
            Err(e) => return Some(Err(e)),
        };
        let Some((_, mut w)) = self.calls.lock().expect("parked lock").remove(&call) else {
            return Some(Err(state::refused(
                "no such call here (answered already, expired, or parked on another node)",
            )));
        };
        let responses = params.get("inputResponses").and_then(Value::as_object);
        for id in w.pending.drain(..) {
            let answer = match responses.and_then(|r| r.get(&id.to_string())) {
                Some(v) => Ok(v.clone()),
                None => Err(RpcError::new(
                    code::INVALID_PARAMS,
                    "the client did not answer this request",
                )),
            };
            w.asks.answer(&Id::Number(id.into()), answer);
        }
        Some(Ok(w))
    }

    /// How many calls wait for their client here.
    pub fn count(&self) -> usize {
        self.calls.lock().expect("parked lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str) -> state::Binding {
        state::Binding {
            person: "alice".into(),
            client: "c1".into(),
            upstream: "old".into(),
            method: "tools/call".into(),
            name: name.into(),
        }
    }

    /// A call that asks one question through a `Park` sink and answers with what it was told.
    fn asking_call(name: &str) -> (Waiting, mpsc::Sender<Value>) {
        let asks = Arc::new(Asks::default());
        let (qtx, qrx) = mpsc::channel(8);
        let (etx, erx) = mpsc::channel(8);
        let link = super::super::asks::ClientLink {
            capabilities: Arc::new(json!({ "elicitation": {} })),
            asks: asks.clone(),
            sink: super::super::asks::Sink::Park(qtx),
        };
        let work = tokio::spawn(async move {
            let answer = link
                .ask(
                    "elicitation/create",
                    json!({ "message": "Your name?", "requestedSchema": {} }),
                )
                .await?;
            Ok(json!({ "said": answer["content"]["name"] }).into())
        });
        (Waiting::new(binding(name), asks, qrx, erx, work), etx)
    }

    #[tokio::test]
    async fn a_parked_call_asks_then_ends_with_the_answer_of_its_own_retry() {
        let ring = KeyRing::random();
        let parked = Parked::default();
        let (w, _events) = asking_call("old_greet");
        let (out, _rx) = mpsc::channel(8);
        let asked = parked
            .wait(&ring, w, out.clone(), 1_000)
            .await
            .unwrap()
            .into_value();
        assert_eq!(asked["resultType"], "input_required");
        let (key, request) = asked["inputRequests"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        assert_eq!(request["method"], "elicitation/create");
        let state = asked["requestState"].as_str().unwrap();
        assert!(state.starts_with(state::PARKED_PREFIX));
        assert_eq!(parked.count(), 1);

        let retry = |state: &str| json!({ "requestState": state, "inputResponses": { key.clone(): { "action": "accept", "content": { "name": "Ada" } } } });
        // Another tool, another person, an altered state: refused, and the call stays parked.
        assert!(
            parked
                .resume(&ring, &retry(state), &binding("old_other"), 2_000)
                .unwrap()
                .is_err()
        );
        let mut bob = binding("old_greet");
        bob.person = "bob".into();
        assert!(
            parked
                .resume(&ring, &retry(state), &bob, 2_000)
                .unwrap()
                .is_err()
        );
        // One character in the middle changed (the last may carry only padding bits).
        let mid = state.len() / 2;
        let swap = if &state[mid..=mid] == "A" { "B" } else { "A" };
        let altered = format!("{}{swap}{}", &state[..mid], &state[mid + 1..]);
        assert!(
            parked
                .resume(&ring, &retry(&altered), &binding("old_greet"), 2_000)
                .unwrap()
                .is_err()
        );
        assert!(
            parked
                .resume(
                    &ring,
                    &json!({ "requestState": "doorman2.x" }),
                    &binding("old_greet"),
                    2_000
                )
                .is_none()
        );
        assert_eq!(parked.count(), 1);

        let w = parked
            .resume(&ring, &retry(state), &binding("old_greet"), 2_000)
            .unwrap()
            .unwrap();
        let done = parked
            .wait(&ring, w, out, 2_000)
            .await
            .unwrap()
            .into_value();
        assert_eq!(done, json!({ "said": "Ada" }));
        // Used once: the same state again finds nothing.
        assert!(
            parked
                .resume(&ring, &retry(state), &binding("old_greet"), 2_000)
                .unwrap()
                .is_err()
        );
        assert_eq!(parked.count(), 0);
    }
}
