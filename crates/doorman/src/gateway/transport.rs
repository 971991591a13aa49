//! How Doorman frames its answers on `/mcp` (MCP 2025-11-25 basic/transports, 2026-07-28
//! streamable-http): what the client's `Accept` allows, JSON or SSE replies (a request's
//! notifications, then its response), results shaped for each protocol generation, the HTTP
//! status of each protocol error, and the trace id and `Mcp-Param-*` headers carried on.

use std::{collections::VecDeque, convert::Infallible, future::Future, pin::Pin};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::jsonrpc::{self, Id, META_SERVER_INFO, Passed, Reply, RpcError, code};

/// What the client's `Accept` header allows.
#[derive(Clone, Copy)]
pub(super) struct Accept {
    pub(super) json: bool,
    pub(super) sse: bool,
}

impl Accept {
    pub(super) fn from(headers: &HeaderMap) -> Self {
        let mut a = Self {
            json: false,
            sse: false,
        };
        let values: Vec<&str> = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return Self {
                json: true,
                sse: false,
            };
        }
        for item in values.iter().flat_map(|v| v.split(',')) {
            match item
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
                .as_str()
            {
                "application/json" | "application/*" => a.json = true,
                "text/event-stream" | "text/*" => a.sse = true,
                "*/*" => {
                    a.json = true;
                    a.sse = true;
                }
                _ => {}
            }
        }
        a
    }
}

/// The trace id of an incoming `traceparent` (W3C Trace Context §3.2: `00-{32 hex}-{16 hex}-{2
/// hex}`, not all zeros), or a fresh random one.
pub(super) fn trace_id_of(headers: &HeaderMap) -> String {
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut parts = v.split('-');
            let (version, trace, span, flags) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let hex = |s: &str, n: usize| {
                s.len() == n
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            };
            (version == "00"
                && hex(trace, 32)
                && hex(span, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0'))
            .then(|| trace.to_owned())
        });
    incoming.unwrap_or_else(crate::crypto::trace_id)
}

pub(super) fn server_info() -> Value {
    json!({ "name": "doorman", "title": "Doorman MCP gateway", "version": env!("CARGO_PKG_VERSION") })
}

/// MCP 2026-07-28: the HTTP status that goes with each protocol error.
pub(super) fn status_of_modern(code: i64) -> StatusCode {
    match code {
        code::PARSE_ERROR
        | code::INVALID_REQUEST
        | code::INVALID_PARAMS
        | code::HEADER_MISMATCH
        | code::UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

pub(super) fn param_headers(headers: &HeaderMap) -> Vec<(axum::http::HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("mcp-param-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A request's work: polled by the handler until it answers or notifies, then by the SSE body.
/// Dropping it (the client went away) drops the upstream request with it. Boxed where it is
/// made ([`work`]): a call's future is several kilobytes, copied whole each time it moves.
pub(super) type Work = Pin<Box<dyn Future<Output = Result<Reply, RpcError>> + Send>>;

/// `work` as a request's [`Work`]. It may finish while the event stream is sent, outside the
/// handler: it stays the request's client's (audit records name the client address).
pub(super) fn work(work: impl Future<Output = Result<Reply, RpcError>> + Send + 'static) -> Work {
    // Boxed before it is wrapped: the wrapper moves a pointer, not the call's future again.
    let work: Work = Box::pin(work);
    Box::pin(crate::net::ClientAddress::keep(work))
}

pub(super) async fn respond(
    accept: Accept,
    modern: bool,
    method: String,
    id: Id,
    mut work: Work,
    mut events: mpsc::Receiver<Value>,
) -> Response {
    let first_event = tokio::select! {
        biased;
        Some(event) = events.recv() => event,
        outcome = &mut work => {
            // Notifications sent in the same instant as the result still go first.
            let mut queue: Vec<Value> = std::iter::from_fn(|| events.try_recv().ok()).collect();
            // As JSON only: an SSE event gets the compact text a parsed result serializes to,
            // whatever blanks and line breaks the upstream wrote.
            if queue.is_empty()
                && accept.json
                && method == "tools/call"
                && let Ok(Reply::Passed(passed)) = &outcome
            {
                return passed_reply(modern, &id, passed);
            }
            let challenge = outcome.as_ref().err().and_then(|e| e.challenge.clone());
            let msg = finish(modern, &method, &id, outcome);
            if queue.is_empty() || !accept.sse {
                if let Some(challenge) = challenge
                    && let Some(r) = challenged(&msg, &challenge)
                {
                    return r;
                }
                let status = if modern { status_of(&msg) } else { StatusCode::OK };
                return message_reply(accept, status, msg);
            }
            queue.push(msg);
            let frames: Vec<_> = queue.iter().map(sse_event).collect();
            return sse_reply(stream::iter(frames));
        }
    };
    // Notifications arrived before the response: stream them, then the response.
    struct Streaming {
        events: mpsc::Receiver<Value>,
        work: Option<Work>,
        queue: VecDeque<Value>,
        meta: (bool, String, Id),
    }
    let state = Streaming {
        events,
        work: Some(work),
        queue: VecDeque::from([first_event]),
        meta: (modern, method, id),
    };
    let body = stream::unfold(state, |mut s| async move {
        if let Some(next) = s.queue.pop_front() {
            return Some((sse_event(&next), s));
        }
        let work = s.work.as_mut()?;
        tokio::select! {
            biased;
            Some(event) = s.events.recv() => Some((sse_event(&event), s)),
            outcome = work => {
                s.work = None;
                let (modern, method, id) = &s.meta;
                let msg = finish(*modern, method, id, outcome);
                s.queue.extend(std::iter::from_fn(|| s.events.try_recv().ok()));
                s.queue.push_back(msg);
                let next = s.queue.pop_front().expect("the response was just queued");
                Some((sse_event(&next), s))
            }
        }
    });
    sse_reply(body)
}

/// An error Doorman attached a challenge to (the re-authorization cascade, `layer2.rs`): sent
/// with HTTP `401` and that `WWW-Authenticate` (RFC 6750 §3.1), so the client runs its
/// authorization flow again. The body is the JSON-RPC error, with the link, for clients that
/// read it. Inside an SSE stream already begun (or a batch) the status is spent: the error
/// goes as it is.
pub(super) fn challenged(msg: &Value, challenge: &str) -> Option<Response> {
    let value = HeaderValue::from_str(challenge).ok()?;
    let mut r = json_reply(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut()
        .insert(axum::http::header::WWW_AUTHENTICATE, value);
    Some(r)
}

/// The response message, with the result shaped for the client's revision.
pub(super) fn finish(
    modern: bool,
    method: &str,
    id: &Id,
    outcome: Result<impl Into<Reply>, RpcError>,
) -> Value {
    match outcome {
        Ok(result) => {
            jsonrpc::response(id, shape_result(modern, method, result.into().into_value()))
        }
        Err(e) => jsonrpc::error_response(Some(id), &e),
    }
}

/// The JSON answer to a `tools/call` whose result passed through (`jsonrpc::Passed`): the
/// message [`finish`] and [`message_reply`] would make of it, written around the upstream's text.
fn passed_reply(modern: bool, id: &Id, passed: &Passed) -> Response {
    static SERVER_INFO: std::sync::LazyLock<Value> = std::sync::LazyLock::new(server_info);
    bytes_reply(StatusCode::OK, passed.response(id, modern, &SERVER_INFO))
}

/// MCP 2026-07-28 requires `resultType` on every result (changelog, major change 8) and
/// `ttlMs`/`cacheScope` on cacheable ones (minor change 5); the stateful revisions have neither.
pub(super) fn shape_result(modern: bool, method: &str, mut result: Value) -> Value {
    let Some(obj) = result.as_object_mut() else {
        return result;
    };
    if modern {
        obj.entry("resultType").or_insert_with(|| json!("complete"));
        if matches!(
            method,
            "tools/list"
                | "prompts/list"
                | "resources/list"
                | "resources/read"
                | "resources/templates/list"
        ) {
            obj.entry("ttlMs").or_insert_with(|| json!(0));
            // Lists depend on who asks once policies apply: never shared between people.
            obj.entry("cacheScope").or_insert_with(|| json!("private"));
        }
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(META_SERVER_INFO.into(), server_info());
        }
    } else {
        for key in ["resultType", "ttlMs", "cacheScope"] {
            obj.remove(key);
        }
    }
    result
}

pub(super) fn status_of(msg: &Value) -> StatusCode {
    // `get` rather than `pointer`, which allocates each step of its path: every answer passes.
    msg.get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64)
        .map_or(StatusCode::OK, status_of_modern)
}

/// Asks the client to open a new connection for its next request (its body was left unread).
pub fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// An error as a JSON body (edge and transport errors are never streamed).
pub fn error_reply(status: StatusCode, id: Option<&Id>, e: &RpcError) -> Response {
    json_reply(status, &jsonrpc::error_response(id, e))
}

pub(super) fn json_reply(status: StatusCode, msg: &Value) -> Response {
    // Straight into bytes (no formatter in between): every answer passes here.
    bytes_reply(
        status,
        serde_json::to_vec(msg).expect("a JSON value always serializes"),
    )
}

/// A JSON body already serialized.
fn bytes_reply(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, Bytes::from(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// One message, as JSON when allowed, else as a one-event SSE stream.
pub(super) fn message_reply(accept: Accept, status: StatusCode, msg: Value) -> Response {
    if accept.json || status != StatusCode::OK {
        return json_reply(status, &msg);
    }
    sse_reply(stream::iter([sse_event(&msg)]))
}

pub(super) fn sse_event(msg: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().event("message").data(msg.to_string()))
}

pub(super) fn sse_reply(
    body: impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    let mut r = Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response();
    // MCP 2026-07-28 streamable-http, "Receiving Messages": keep proxies from buffering.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// The bytes written around a passed-through result are the message `finish` makes of the
    /// same result parsed, for both generations, whatever the id.
    #[test]
    fn a_passed_result_is_answered_with_the_message_a_parsed_one_gets() {
        let results = [
            r#"{"content":[{"type":"text","text":"caf\u00e9 \"quoted\"\n"}],"isError":false}"#,
            r#"{ "content" : [ ] , "structuredContent" : { "n" : 1.5e3, "deep": [{"a": null}] } }"#,
            r#"{"isError":true,"content":[{"type":"image","data":"AAAA","mimeType":"image/png"}]}"#,
            // What a 2026-07-28 upstream sends: its own resultType and serverInfo.
            r#"{"content":[],"resultType":"complete","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up"},"progressToken":"p","x":{"y":[1]}}}"#,
            r#"{"_meta":"not an object","ttlMs":5,"cacheScope":"public","content":[]}"#,
            r#"{"_meta":null}"#,
            r#"{"resultType":"complete"}"#,
            "{}",
            " { } ",
        ];
        let ids = [
            Id::from(7),
            Id::String("a \"b\"".into()),
            Id::Number(u64::MAX.into()),
        ];
        for result in results {
            for id in &ids {
                let message = format!(r#"{{"jsonrpc":"2.0","id":3,"result":{result}}}"#);
                let passed = Passed::read(&message.into(), 3).expect("passes");
                for modern in [true, false] {
                    let parsed: Value = serde_json::from_str(result).unwrap();
                    let expected = finish(modern, "tools/call", id, Ok(parsed));
                    let body = passed.response(id, modern, &server_info());
                    let written: Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(written, expected, "{result} {id:?} modern={modern}");
                }
            }
        }
    }

    /// A passed result answered as JSON, as one SSE event, and after notifications: the same
    /// message each way, and the stream's events compact.
    #[tokio::test]
    async fn a_passed_result_is_answered_in_every_form_the_client_accepts() {
        let upstream =
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\n  \"content\": [],\n  \"x\": 1.5e3\n}}";
        let expected = json!({"jsonrpc": "2.0", "id": 9, "result": {
            "content": [], "x": 1500.0, "resultType": "complete",
            "_meta": { META_SERVER_INFO: server_info() },
        }});
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
        let run = |accept: Accept, notify: bool| {
            let (progress, expected) = (progress.clone(), expected.clone());
            async move {
                let passed = Passed::read(&upstream.into(), 3).expect("passes");
                let (tx, rx) = mpsc::channel(4);
                if notify {
                    tx.send(progress.clone()).await.unwrap();
                }
                let w = work(async move { Ok(Reply::Passed(passed)) });
                let r = respond(accept, true, "tools/call".into(), Id::from(9), w, rx).await;
                assert_eq!(r.status(), StatusCode::OK);
                let kind = r.headers()[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let body = axum::body::to_bytes(r.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let text = String::from_utf8(body.to_vec()).unwrap();
                if kind.starts_with("application/json") {
                    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
                    return "json";
                }
                let data: Vec<Value> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .map(|d| serde_json::from_str(d).expect("one line per event"))
                    .collect();
                let mut want = vec![expected];
                if notify {
                    want.insert(0, progress);
                }
                assert_eq!(data, want, "{text}");
                "sse"
            }
        };
        let both = Accept {
            json: true,
            sse: true,
        };
        let json_only = Accept {
            json: true,
            sse: false,
        };
        let sse_only = Accept {
            json: false,
            sse: true,
        };
        assert_eq!(run(both, false).await, "json");
        assert_eq!(run(json_only, false).await, "json");
        assert_eq!(run(sse_only, false).await, "sse");
        assert_eq!(run(both, true).await, "sse");
    }

    #[test]
    fn results_are_shaped_for_each_generation() {
        let modern = shape_result(true, "tools/list", json!({"tools": []}));
        assert_eq!(modern["resultType"], "complete");
        assert_eq!(modern["ttlMs"], 0);
        assert_eq!(modern["cacheScope"], "private");
        assert_eq!(modern["_meta"][META_SERVER_INFO]["name"], "doorman");
        let call = shape_result(
            true,
            "tools/call",
            json!({"content": [], "resultType": "input_required"}),
        );
        assert_eq!(call["resultType"], "input_required");
        assert!(call.get("ttlMs").is_none());
        let legacy = shape_result(
            false,
            "tools/list",
            json!({"tools": [], "resultType": "complete", "ttlMs": 5}),
        );
        assert_eq!(legacy, json!({"tools": []}));
    }

    #[test]
    fn accept_headers_are_read_leniently_but_exactly() {
        let a = Accept::from(&headers(&[(
            "accept",
            "application/json, text/event-stream",
        )]));
        assert!(a.json && a.sse);
        let a = Accept::from(&headers(&[("accept", "text/event-stream;q=1")]));
        assert!(!a.json && a.sse);
        let a = Accept::from(&headers(&[("accept", "text/html")]));
        assert!(!a.json && !a.sse);
        let a = Accept::from(&HeaderMap::new());
        assert!(a.json);
    }
}
