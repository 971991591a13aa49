//! The `/mcp` endpoint (Streamable HTTP), serving both protocol generations.
//!
//! How a POST is read (MCP 2026-07-28 basic/versioning, "A dual-era server selects its behavior
//! from how the client opens"):
//! - `initialize`, or any request carrying `MCP-Session-Id`: the stateful revisions
//!   2025-03-26 to 2025-11-25 (MCP 2025-11-25 basic/transports);
//! - a request declaring 2026-07-28 (header or `_meta`): stateless, validated by the
//!   2026-07-28 ladder (`_meta` fields, then header/body agreement, then the version);
//! - anything else is told to initialize first (`400`), which is also what makes a dual-era
//!   client that probed with an older revision fall back.
//!
//! A request's answer is JSON, or an SSE stream when the upstream sends notifications for it
//! (progress, log messages) and the client accepts `text/event-stream`: the stream carries them,
//! then the response. A client closing the stream cancels the upstream request.

use std::sync::Arc;

use axum::{
    Extension,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Gateway,
    asks::{self, Asks, ClientLink, Sink, relayable, state},
    call::{self, Caller, Prepared, StepUp},
    caller::PromptForm,
    jsonrpc::{
        self, ALL_VERSIONS, Id, Incoming, META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION,
        RpcError, code,
    },
    parked::Waiting,
    session::Session,
    transport::{
        self, Accept, closing, error_reply, finish, json_reply, message_reply, param_headers,
        respond, server_info, sse_event, sse_reply, status_of, status_of_modern, trace_id_of,
    },
    upstream::{Outbound, SessionSlots, decode_header_value},
};
use crate::{protocol::Version, sign_in::Person};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// Which generation a request is served under.
enum Conversation {
    Stateful(Arc<Session>),
    Stateless {
        client_capabilities: Value,
        /// The signed-in person (None in local mode): their upstream sessions are their own.
        user: Option<String>,
    },
}

impl Conversation {
    fn is_modern(&self) -> bool {
        matches!(self, Self::Stateless { .. })
    }
}

/// RFC 9470 §3: the sign-in behind the token is older than the decision allows. Answers `401`
/// with `insufficient_user_authentication` and `max_age`, writes the audit record, and
/// remembers the step-up for this person and client, so that the client's next authorization
/// forces a fresh sign-in even if it does not carry `max_age` (most clients simply run their
/// OAuth flow again after a `401`).
async fn step_up_reply(
    gw: &Gateway,
    caller: Option<&Caller>,
    method: &str,
    id: Option<&Id>,
    step: StepUp,
    trace_id: &str,
) -> Response {
    let max_age = step.max_age.as_secs();
    call::record(method, caller, Some(trace_id), step.record, None, None).await;
    if let Some(c) = caller {
        let now = gw.clock.now_ms();
        if let Err(e) = gw
            .store
            .require_step_up(
                &c.user_id,
                &c.client_id,
                max_age as i64,
                now,
                now + STEP_UP_MEMORY_MS,
            )
            .await
        {
            // The client still gets the challenge; its authorization request may carry max_age.
            tracing::warn!(error = %e, "cannot remember a step-up");
        }
    }
    let e = RpcError::new(
        code::FORBIDDEN,
        format!(
            "{} needs a sign-in within the last {max_age} seconds: sign in again",
            step.name
        ),
    )
    .with_data(json!({ "policy": step.policy, "max_age": max_age }));
    let mut r = error_reply(StatusCode::UNAUTHORIZED, id, &e);
    let challenge = format!(
        "Bearer error=\"insufficient_user_authentication\", error_description=\"A more recent sign-in is required\", max_age={max_age}, resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        gw.issuer
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// How long a step-up is remembered for the client's next authorization.
const STEP_UP_MEMORY_MS: i64 = 15 * 60 * 1000;

/// What a request carries on to upstreams.
struct Forwarded {
    /// `Mcp-Param-*` headers (2026-07-28).
    param_headers: Vec<(axum::http::HeaderName, HeaderValue)>,
    /// The W3C trace id: the client's (`traceparent`), or a new one. Also the request id.
    trace_id: String,
}

/// One JSON-RPC request's parts.
struct Rpc {
    id: Id,
    method: String,
    params: Value,
}

/// The signed-in caller of a request (accounts mode), built once per request.
async fn caller_of(
    gw: &Gateway,
    person: Option<&Person>,
    conversation: &Conversation,
) -> Option<Caller> {
    let claims = &person?.0;
    let (session_hash, form) = match conversation {
        Conversation::Stateful(s) => (
            Some(s.id_hash.to_string()),
            PromptForm::of(s.protocol_version, &s.client_capabilities),
        ),
        Conversation::Stateless {
            client_capabilities,
            ..
        } => (None, PromptForm::of(Version::MODERN, client_capabilities)),
    };
    Some(Caller::resolve(gw.policies().map(Arc::as_ref), claims, session_hash, form).await)
}

/// `POST /mcp`.
pub async fn post(
    State(gw): State<Arc<Gateway>>,
    person: Option<Extension<Person>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let person = person.map(|Extension(p)| p);
    let user_owned = person.as_ref().map(|p| p.0.sub.clone());
    let user = user_owned.as_deref();
    // The body is read before anything is refused, so the connection stays usable for the
    // client's next request; a body over the limit is not read further and the connection closes.
    let read = tokio::time::timeout(
        gw.body_read_timeout,
        axum::body::to_bytes(body, gw.max_request_bytes),
    );
    let bytes = match read.await {
        Ok(Ok(b)) => b,
        Err(_) => {
            // A client trickling its body: answered, and the connection closed.
            let e = RpcError::new(
                code::INVALID_REQUEST,
                format!(
                    "Request body not received within {} s (server.body_read_timeout)",
                    gw.body_read_timeout.as_secs()
                ),
            );
            return closing(error_reply(StatusCode::REQUEST_TIMEOUT, None, &e));
        }
        Ok(Err(_)) => {
            let e = RpcError::new(
                code::INVALID_REQUEST,
                format!("Request body larger than {} bytes", gw.max_request_bytes),
            );
            return closing(error_reply(StatusCode::PAYLOAD_TOO_LARGE, None, &e));
        }
    };
    let accept = Accept::from(&headers);
    if !accept.json && !accept.sse {
        return error_reply(
            StatusCode::NOT_ACCEPTABLE,
            None,
            &RpcError::new(
                code::BAD_REQUEST,
                "Not Acceptable: the Accept header must allow application/json or text/event-stream",
            ),
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return error_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            &RpcError::new(
                code::BAD_REQUEST,
                "Unsupported Media Type: the body must be application/json",
            ),
        );
    }
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            // JSON-RPC 2.0 §5.1: the id could not be read, so it is null.
            let e = RpcError::new(code::PARSE_ERROR, format!("Parse error: {e}"));
            return error_reply(StatusCode::BAD_REQUEST, None, &e);
        }
    };
    let session = match headers.get(SESSION_HEADER) {
        None => None,
        Some(v) => match v.to_str().ok().filter(|s| !s.is_empty()) {
            None => return not_found_session(),
            Some(id) => match owned_session(&gw, id, user).await {
                Ok(s) => Some(s),
                Err(refusal) => return refusal,
            },
        },
    };
    if let Value::Array(batch) = message {
        // Boxed: a batch's future is large, and every single request's would carry its size.
        return Box::pin(serve_batch(&gw, person, session, batch)).await;
    }
    // Read before the message is taken apart.
    let meta_declares_modern = message
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .is_some();
    let incoming = match jsonrpc::classify(message) {
        Ok(i) => i,
        Err((id, e)) => return error_reply(StatusCode::BAD_REQUEST, id.as_ref(), &e),
    };
    let header_version = headers
        .get(VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("").to_owned());

    // Stateful revisions: an existing session, or `initialize` to open one.
    if let Some(session) = session {
        if let Incoming::Request { method, id, .. } = &incoming
            && method == "initialize"
        {
            let e = RpcError::new(
                code::INVALID_REQUEST,
                "Invalid Request: this session is already initialized",
            );
            return error_reply(StatusCode::BAD_REQUEST, Some(id), &e);
        }
        if let Some(v) = &header_version {
            // MCP 2025-11-25 basic/transports, "Protocol Version Header": the version negotiated
            // for this session, or 400.
            if Version::parse(v) != Some(session.protocol_version) {
                let e = if Version::parse(v).is_some() {
                    RpcError::new(
                        code::BAD_REQUEST,
                        format!(
                            "Bad Request: MCP-Protocol-Version {v} does not match this session's version {}",
                            session.protocol_version
                        ),
                    )
                } else {
                    RpcError::unsupported_version(v)
                };
                return error_reply(StatusCode::BAD_REQUEST, request_id(&incoming), &e);
            }
        }
        return match incoming {
            Incoming::Request { id, method, params } => {
                // Boxed: the request's future stays small where it is moved (axum's layers).
                Box::pin(serve_request(
                    &gw,
                    person.clone(),
                    Conversation::Stateful(session),
                    accept,
                    Rpc { id, method, params },
                    Forwarded {
                        param_headers: Vec::new(),
                        trace_id: trace_id_of(&headers),
                    },
                ))
                .await
            }
            // The answer to a request an upstream asked of the client (`asks.rs`). One that
            // nothing waits for (unknown, repeated, or asked on another node) changes nothing.
            Incoming::Response { id, answer } => {
                if !session.answered(&id, answer) {
                    tracing::debug!("an answer from the client that no request waits for");
                }
                StatusCode::ACCEPTED.into_response()
            }
            // MCP 2025-11-25 basic/utilities/cancellation: the request it names stops, and its
            // upstream is told (`upstream.rs::CancelOnDrop`). Unknown ids are ignored.
            Incoming::Notification { method, params } if method == "notifications/cancelled" => {
                if let Some(request_id) = params.get("requestId") {
                    session.cancel(request_id);
                }
                StatusCode::ACCEPTED.into_response()
            }
            // `notifications/initialized`, `roots/list_changed`: accepted, nothing to relay.
            Incoming::Notification { .. } => StatusCode::ACCEPTED.into_response(),
        };
    }
    // The stateless revision: a request that declares it is served by it, `initialize` included
    // (which that revision answers with -32601).
    let declares_modern = header_version
        .as_deref()
        .is_some_and(|v| Version::parse(v).is_none_or(Version::is_modern))
        || meta_declares_modern;
    if let Incoming::Request { id, method, params } = &incoming
        && method == "initialize"
        && !declares_modern
    {
        return initialize(&gw, accept, id, params, user).await;
    }
    if declares_modern {
        return match incoming {
            Incoming::Request { id, method, params } => {
                match check_modern(&headers, &method, &params) {
                    Ok(client_capabilities) => {
                        let fwd = Forwarded {
                            param_headers: param_headers(&headers),
                            trace_id: trace_id_of(&headers),
                        };
                        Box::pin(serve_request(
                            &gw,
                            person.clone(),
                            Conversation::Stateless {
                                client_capabilities,
                                user: user.map(String::from),
                            },
                            accept,
                            Rpc { id, method, params },
                            fwd,
                        ))
                        .await
                    }
                    Err(e) => error_reply(status_of_modern(e.code), Some(&id), &e),
                }
            }
            // MCP 2026-07-28 streamable-http, "Sending Messages" §5: notifications get 202.
            Incoming::Notification { .. } => StatusCode::ACCEPTED.into_response(),
            Incoming::Response { .. } => {
                let e = RpcError::new(
                    code::INVALID_REQUEST,
                    "Invalid Request: clients send no responses in protocol 2026-07-28",
                );
                error_reply(StatusCode::BAD_REQUEST, None, &e)
            }
        };
    }
    // MCP 2025-11-25 basic/transports, "Session Management" §2: no session id, no service.
    let e = RpcError::new(
        code::BAD_REQUEST,
        "Bad Request: missing MCP-Session-Id; send initialize first, or use protocol 2026-07-28 with per-request _meta",
    );
    error_reply(StatusCode::BAD_REQUEST, request_id(&incoming), &e)
}

/// `DELETE /mcp`: the client ends its session (MCP 2025-11-25 basic/transports, "Session Management" §5).
pub async fn delete(
    State(gw): State<Arc<Gateway>>,
    person: Option<Extension<Person>>,
    headers: HeaderMap,
) -> Response {
    let user = person.as_ref().map(|Extension(p)| p.0.sub.as_str());
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        let e = RpcError::new(
            code::BAD_REQUEST,
            "Bad Request: DELETE needs the MCP-Session-Id to end",
        );
        return error_reply(StatusCode::BAD_REQUEST, None, &e);
    };
    // Another person's session is, to this caller, a session that does not exist.
    if let Err(refusal) = owned_session(&gw, id, user).await {
        return refusal;
    }
    match gw.sessions.end(id).await {
        Ok(Some(session)) => {
            gw.close_upstream_sessions(vec![session]);
            StatusCode::OK.into_response()
        }
        Ok(None) => not_found_session(),
        Err(e) => store_failure(e),
    }
}

/// `GET /mcp`: a stateful session's stream of server-initiated notifications (resource
/// updates, list changes), relayed from its upstream sessions (MCP 2025-11-25 basic/transports,
/// "Listening for Messages"). Without a session (2026-07-28 has no GET stream) it is 405.
pub async fn get(
    State(gw): State<Arc<Gateway>>,
    person: Option<Extension<Person>>,
    headers: HeaderMap,
) -> Response {
    let user = person.as_ref().map(|Extension(p)| p.0.sub.as_str());
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
        return r;
    };
    let session = match owned_session(&gw, id, user).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    if !Accept::from(&headers).sse {
        let e = RpcError::new(
            code::BAD_REQUEST,
            "Not Acceptable: the GET stream is text/event-stream",
        );
        return error_reply(StatusCode::NOT_ACCEPTABLE, None, &e);
    }
    gw.start_relays(&session);
    let rx = session.notifications().subscribe();
    drop(session);
    let body = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(msg) => return Some((sse_event(&msg), rx)),
                // A client too slow for the stream misses notifications, as on any SSE stream.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    sse_reply(body)
}

async fn initialize(
    gw: &Arc<Gateway>,
    accept: Accept,
    id: &Id,
    params: &Value,
    user: Option<&str>,
) -> Response {
    let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
        let e = RpcError::new(
            code::INVALID_PARAMS,
            "initialize needs params.protocolVersion",
        );
        return error_reply(StatusCode::BAD_REQUEST, Some(id), &e);
    };
    // MCP 2025-11-25 basic/lifecycle, "Version Negotiation": the requested version when
    // supported, otherwise the latest the server supports.
    let version = Version::parse(requested)
        .filter(|v| !v.is_modern())
        .unwrap_or(Version::LATEST_LEGACY);
    let caps = params
        .get("capabilities")
        .filter(|c| c.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let client_info = params.get("clientInfo").cloned().unwrap_or(Value::Null);
    // Sessions hold memory on every node that serves them: one person gets a bounded number.
    if let Some(user) = user
        && gw.max_sessions_per_person > 0
    {
        match gw.sessions.count_of(user).await {
            Ok(n) if n >= i64::from(gw.max_sessions_per_person) => {
                let e = RpcError::new(
                    code::INVALID_REQUEST,
                    format!(
                        "Too many sessions: you have {n} open, the most this server allows (server.max_sessions_per_person); end one with DELETE /mcp, or wait for idle ones to end"
                    ),
                )
                .with_data(json!({ "reason": "too_many_sessions", "limit": gw.max_sessions_per_person }));
                return error_reply(StatusCode::TOO_MANY_REQUESTS, Some(id), &e);
            }
            Ok(_) => {}
            Err(e) => return store_failure(e),
        }
    }
    let (session_id, _) = match gw.sessions.create(version, &client_info, caps, user).await {
        Ok(s) => s,
        Err(e) => return store_failure(e),
    };
    let result = json!({
        "protocolVersion": version,
        "capabilities": server_capabilities(),
        "serverInfo": server_info(),
    });
    let mut r = message_reply(accept, StatusCode::OK, jsonrpc::response(id, result));
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

fn server_capabilities() -> Value {
    // listChanged: upstreams' list changes are relayed, and Doorman's own are sent when a
    // person connects or disconnects a resource (`Gateway::lists_changed`).
    json!({
        "tools": { "listChanged": true },
        "prompts": { "listChanged": true },
        "resources": { "subscribe": true, "listChanged": true },
        "logging": {},
        "completions": {},
    })
}

/// What a 2026-07-28 client is offered: list changes and resource updates on a
/// `subscriptions/listen` stream (`listen.rs`); logging is set per request there.
fn modern_capabilities() -> Value {
    json!({
        "tools": { "listChanged": true },
        "prompts": { "listChanged": true },
        "resources": { "subscribe": true, "listChanged": true },
        "completions": {},
    })
}

/// The 2026-07-28 validation ladder (basic/index "Per-request protocol fields", then
/// streamable-http "Server Validation", then basic/versioning); returns the client capabilities.
fn check_modern(headers: &HeaderMap, method: &str, params: &Value) -> Result<Value, RpcError> {
    let meta = params.get("_meta").and_then(Value::as_object);
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| meta.is_none_or(|m| !m.contains_key(*k)))
        .collect();
    if !missing.is_empty() {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            format!("Invalid params: _meta is missing {}", missing.join(", ")),
        ));
    }
    let meta = meta.expect("checked above");
    let version = &meta[META_PROTOCOL_VERSION];
    let header = |name: &str| headers.get(name).map(|v| v.to_str().map_err(|_| ()));
    let mismatch =
        |what: &str| RpcError::new(code::HEADER_MISMATCH, format!("Header mismatch: {what}"));
    match header(VERSION_HEADER) {
        Some(Ok(h)) if version.as_str() == Some(h) => {}
        Some(_) => {
            return Err(mismatch(
                "MCP-Protocol-Version does not match _meta's protocol version",
            ));
        }
        None => return Err(mismatch("the MCP-Protocol-Version header is missing")),
    }
    match header("mcp-method") {
        Some(Ok(h)) if h == method => {}
        Some(_) => {
            return Err(mismatch(&format!(
                "Mcp-Method does not match the body's method {method:?}"
            )));
        }
        None => return Err(mismatch("the Mcp-Method header is missing")),
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = name_field
        && let Some(body_value) = params.get(field).and_then(Value::as_str)
    {
        match header("mcp-name") {
            Some(Ok(h)) if decode_header_value(h).as_deref() == Some(body_value) => {}
            Some(_) => {
                return Err(mismatch(&format!(
                    "Mcp-Name does not match the body's {field}"
                )));
            }
            None => return Err(mismatch("the Mcp-Name header is missing")),
        }
    }
    let version = version.as_str().ok_or_else(|| {
        RpcError::new(
            code::INVALID_PARAMS,
            "Invalid params: the protocol version must be a string",
        )
    })?;
    if Version::parse(version) != Some(Version::MODERN) {
        return Err(RpcError::unsupported_version(version));
    }
    check_retry_fields(params)?;
    Ok(meta[META_CLIENT_CAPABILITIES].clone())
}

/// The fields of a retry after an `InputRequiredResult` (MCP 2026-07-28 basic/patterns/mrtr):
/// `inputResponses` is a map of responses (objects), `requestState` a string. Anything else is
/// the client's protocol error, answered before any upstream sees it.
fn check_retry_fields(params: &Value) -> Result<(), RpcError> {
    let invalid = |what: &str| {
        RpcError::new(code::INVALID_PARAMS, format!("Invalid params: {what}"))
            .with_data(json!({ "reason": "invalid_input_responses" }))
    };
    match params.get("inputResponses") {
        None => {}
        Some(Value::Object(responses)) => {
            if let Some((key, _)) = responses.iter().find(|(_, v)| !v.is_object()) {
                return Err(invalid(&format!(
                    "inputResponses[{key:?}] must be the response object to that input request"
                )));
            }
        }
        Some(_) => {
            return Err(invalid(
                "inputResponses must be an object mapping each input request's key to its response",
            ));
        }
    }
    match params.get("requestState") {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid(
            "requestState must be the string the server returned",
        )),
    }
}

/// Serves one request: locally for the protocol's own methods, through the router otherwise.
async fn serve_request(
    gw: &Arc<Gateway>,
    person: Option<Person>,
    conversation: Conversation,
    accept: Accept,
    rpc: Rpc,
    fwd: Forwarded,
) -> Response {
    let Rpc { id, method, params } = rpc;
    let Forwarded {
        param_headers,
        trace_id,
    } = fwd;
    // The caller is resolved once (their groups come from a cache in front of the store).
    let caller = caller_of(gw, person.as_ref(), &conversation).await;
    let modern = conversation.is_modern();
    let local = match method.as_str() {
        "server/discover" => Some(Ok(json!({
            "supportedVersions": ALL_VERSIONS,
            "capabilities": if modern { modern_capabilities() } else { server_capabilities() },
            "serverInfo": server_info(),
            "ttlMs": 0,
            "cacheScope": "private",
        }))),
        // Removed from 2026-07-28 (changelog, major change 5).
        "ping" if !modern => Some(Ok(json!({}))),
        "initialize"
        | "ping"
        | "logging/setLevel"
        | "resources/subscribe"
        | "resources/unsubscribe"
            if modern =>
        {
            Some(Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("Method not found: {method} is not part of protocol 2026-07-28"),
            )))
        }
        _ => None,
    };
    if modern && method == "subscriptions/listen" {
        return super::listen::serve(gw, caller, id, &params, accept.sse, &trace_id).await;
    }
    if let Some(outcome) = local {
        let msg = finish(modern, &method, &id, outcome);
        let status = if modern {
            status_of(&msg)
        } else {
            StatusCode::OK
        };
        return message_reply(accept, status, msg);
    }

    // The name the client gave, for binding a call parked for its answers (`parked.rs`).
    let named = params
        .get(if method == "resources/read" {
            "uri"
        } else {
            "name"
        })
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let parks = modern
        && matches!(
            method.as_str(),
            "tools/call" | "prompts/get" | "resources/read"
        );
    if parks
        && params
            .get("requestState")
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with(state::PARKED_PREFIX))
    {
        return resume_parked(gw, caller.as_ref(), accept, method, id, &params, named).await;
    }
    let call = match call::prepare(
        &gw.router,
        caller.as_ref(),
        &method,
        params,
        gw.clock.now_ms() / 1000,
    ) {
        Prepared::Run(call) => call,
        Prepared::Answer { outcome, record } => {
            if let Some(rec) = record {
                let outcome_name = call::answered_outcome(&outcome, &rec);
                call::record(
                    &method,
                    caller.as_ref(),
                    Some(&trace_id),
                    rec,
                    outcome_name,
                    None,
                )
                .await;
            }
            let msg = finish(modern, &method, &id, outcome);
            let status = if modern {
                status_of(&msg)
            } else {
                StatusCode::OK
            };
            return message_reply(accept, status, msg);
        }
        Prepared::StepUp(step) => {
            return step_up_reply(gw, caller.as_ref(), &method, Some(&id), step, &trace_id).await;
        }
    };
    let (tx, rx) = mpsc::channel::<Value>(64);
    let gw2 = gw.clone();
    // A stateful client's upstreams may ask it things on this request's stream (or, when it
    // takes no stream, on its GET stream), and it may cancel this request. A 2026-07-28 client
    // that declared what it can answer is asked through `InputRequiredResult`s (`parked.rs`).
    let mut parking = None;
    let (link, inflight) = match &conversation {
        Conversation::Stateful(s) => {
            let sink = if accept.sse {
                Sink::Stream(tx.clone())
            } else {
                Sink::Broadcast(s.notifications().clone())
            };
            (Some(s.link(sink)), Some(s.begin(&id)))
        }
        Conversation::Stateless {
            client_capabilities,
            ..
        } => {
            let caps = relayable(client_capabilities);
            if parks && caps.as_object().is_some_and(|c| !c.is_empty()) {
                let (questions_tx, questions) = mpsc::channel::<Value>(8);
                let (events_tx, events) = mpsc::channel::<Value>(64);
                let asks = Arc::new(Asks::default());
                parking = Some((asks.clone(), questions, events, events_tx));
                let link = ClientLink {
                    capabilities: Arc::new(caps),
                    asks,
                    sink: Sink::Park(questions_tx),
                };
                (Some(link), None)
            } else {
                (None, None)
            }
        }
    };
    let binding = parking
        .is_some()
        .then(|| parked_binding(caller.as_ref(), &method, named));
    // Where the call's notifications go: this response, or (parked) whichever is open.
    let work_tx = match &parking {
        Some((_, _, _, events_tx)) => events_tx.clone(),
        None => tx.clone(),
    };
    let work = transport::work(async move {
        let per_person: Arc<SessionSlots>;
        let (slots, caps, log_level): (&SessionSlots, Option<Value>, Option<String>) =
            match &conversation {
                Conversation::Stateful(s) => {
                    if call.method() == "logging/setLevel"
                        && let Some(level) = call.params().get("level").and_then(Value::as_str)
                    {
                        s.set_log_level(level);
                    }
                    let level = s.log_level();
                    (&s.slots, None, Some(level))
                }
                Conversation::Stateless {
                    client_capabilities,
                    user,
                } => {
                    per_person = gw2
                        .stateless_slots(user.as_deref(), link.as_ref().map(|l| &*l.capabilities));
                    (&per_person, Some(client_capabilities.clone()), None)
                }
            };
        let events = accept.sse.then_some(&work_tx);
        let out = Outbound {
            client_capabilities: caps.as_ref(),
            events,
            param_headers: &param_headers,
            log_level: log_level.as_deref(),
            request_id: Some(&trace_id),
            credential: None,
            caller: caller.as_ref(),
            link: link.as_ref(),
            cancel: inflight.as_ref().map(|f| &*f.cancel),
        };
        call.run(&gw2.router, slots, &out).await
    });
    if let (Some((asks, questions, events, _)), Some(binding)) = (parking, binding) {
        let call = tokio::spawn(work);
        let waiting = Waiting::new(binding, asks, questions, events, call);
        let (gw, now_ms) = (gw.clone(), gw.clock.now_ms());
        let work =
            transport::work(
                async move { gw.parked.wait(gw.router.ring(), waiting, tx, now_ms).await },
            );
        return respond(accept, modern, method, id, work, rx).await;
    }
    drop(tx);
    respond(accept, modern, method, id, work, rx).await
}

/// What a parked call is bound to: the person, the client, the method and the name.
fn parked_binding(caller: Option<&Caller>, method: &str, name: String) -> state::Binding {
    state::Binding {
        person: caller.map(|c| c.user_id.clone()).unwrap_or_default(),
        client: caller.map(|c| c.client_id.clone()).unwrap_or_default(),
        upstream: String::new(),
        method: method.to_owned(),
        name,
    }
}

/// The retry of a parked call (`parked.rs`): checked against its binding, and against the
/// policies again (the person may have lost access meanwhile), then its answers go upstream.
async fn resume_parked(
    gw: &Arc<Gateway>,
    caller: Option<&Caller>,
    accept: Accept,
    method: String,
    id: Id,
    params: &Value,
    named: String,
) -> Response {
    let now_ms = gw.clock.now_ms();
    let binding = parked_binding(caller, &method, named.clone());
    let refused = |e: RpcError| {
        let msg = jsonrpc::error_response(Some(&id), &e);
        message_reply(accept, status_of(&msg), msg)
    };
    let waiting = match gw.parked.resume(gw.router.ring(), params, &binding, now_ms) {
        Some(Ok(w)) => w,
        Some(Err(e)) => return refused(e),
        None => return refused(asks::state::refused("not a parked call's")),
    };
    if !call::still_allowed(&gw.router, caller, &method, &named) {
        waiting.work.abort();
        let e = RpcError::new(
            code::FORBIDDEN,
            format!("Doorman policy no longer allows you to use {named}."),
        );
        return refused(e);
    }
    let (tx, rx) = mpsc::channel::<Value>(64);
    let gw = gw.clone();
    let work =
        transport::work(async move { gw.parked.wait(gw.router.ring(), waiting, tx, now_ms).await });
    respond(accept, true, method, id, work, rx).await
}

/// A 2025-03-26 session may send a JSON-RPC batch; every later revision refuses them
/// (MCP 2025-06-18 changelog: "Remove support for JSON-RPC batching").
async fn serve_batch(
    gw: &Arc<Gateway>,
    person: Option<Person>,
    session: Option<Arc<Session>>,
    batch: Vec<Value>,
) -> Response {
    let Some(session) = session.filter(|s| s.protocol_version.allows_batches()) else {
        let e = RpcError::new(
            code::INVALID_REQUEST,
            "Invalid Request: JSON-RPC batches are only accepted in protocol 2025-03-26 sessions",
        );
        return error_reply(StatusCode::BAD_REQUEST, None, &e);
    };
    if batch.is_empty() {
        return error_reply(
            StatusCode::BAD_REQUEST,
            None,
            &RpcError::new(code::INVALID_REQUEST, "Invalid Request: empty batch"),
        );
    }
    // Every element is decided before any is run: a batch holding a request that needs a
    // fresh sign-in is answered `401` as a whole, and nothing in it reaches an upstream.
    let conversation = Conversation::Stateful(session.clone());
    let caller = caller_of(gw, person.as_ref(), &conversation).await;
    let trace_id = crate::crypto::trace_id();
    let now_s = gw.clock.now_ms() / 1000;
    enum Slot {
        Reply(Value),
        Run(Id, String, call::Call),
        Answer(
            Id,
            String,
            Result<Value, RpcError>,
            Option<call::CallRecord>,
        ),
    }
    let mut slots = Vec::new();
    let mut step_ups = Vec::new();
    for message in batch {
        match jsonrpc::classify(message) {
            Ok(Incoming::Request { id, method, params }) => match method.as_str() {
                "ping" => slots.push(Slot::Reply(finish(false, &method, &id, Ok(json!({}))))),
                "initialize" => {
                    let e = RpcError::new(
                        code::INVALID_REQUEST,
                        "Invalid Request: initialize cannot be batched",
                    );
                    slots.push(Slot::Reply(jsonrpc::error_response(Some(&id), &e)));
                }
                _ => match call::prepare(&gw.router, caller.as_ref(), &method, params, now_s) {
                    Prepared::Run(c) => slots.push(Slot::Run(id, method, c)),
                    Prepared::Answer { outcome, record } => {
                        slots.push(Slot::Answer(id, method, outcome, record))
                    }
                    Prepared::StepUp(step) => step_ups.push((id, method, step)),
                },
            },
            Ok(_) => {}
            Err((id, e)) => slots.push(Slot::Reply(jsonrpc::error_response(id.as_ref(), &e))),
        }
    }
    if !step_ups.is_empty() {
        let mut first = None;
        for (id, method, step) in step_ups {
            match first {
                None => first = Some((id, method, step)),
                Some(_) => {
                    call::record(
                        &method,
                        caller.as_ref(),
                        Some(&trace_id),
                        step.record,
                        None,
                        None,
                    )
                    .await
                }
            }
        }
        let (id, method, step) = first.expect("one step-up at least");
        return step_up_reply(gw, caller.as_ref(), &method, Some(&id), step, &trace_id).await;
    }
    let mut replies = Vec::new();
    for slot in slots {
        match slot {
            Slot::Reply(msg) => replies.push(msg),
            Slot::Answer(id, method, outcome, record) => {
                if let Some(rec) = record {
                    let outcome_name = call::answered_outcome(&outcome, &rec);
                    call::record(
                        &method,
                        caller.as_ref(),
                        Some(&trace_id),
                        rec,
                        outcome_name,
                        None,
                    )
                    .await;
                }
                replies.push(finish(false, &method, &id, outcome));
            }
            Slot::Run(id, method, c) => {
                let link = session.link(Sink::Broadcast(session.notifications().clone()));
                let out = Outbound {
                    client_capabilities: None,
                    events: None,
                    param_headers: &[],
                    log_level: None,
                    request_id: Some(&trace_id),
                    credential: None,
                    caller: caller.as_ref(),
                    link: Some(&link),
                    cancel: None,
                };
                let outcome = c.run(&gw.router, &session.slots, &out).await;
                replies.push(finish(false, &method, &id, outcome));
            }
        }
    }
    if replies.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    json_reply(StatusCode::OK, &Value::Array(replies))
}

fn request_id(incoming: &Incoming) -> Option<&Id> {
    match incoming {
        Incoming::Request { id, .. } => Some(id),
        _ => None,
    }
}

/// A stateful session belongs to the person who opened it (MCP 2025-11-25 security best
/// practices, "Session Hijacking": sessions are bound to user information, and a session id
/// never authenticates by itself). Someone else's session id is answered like an unknown one.
async fn owned_session(
    gw: &Gateway,
    id: &str,
    user: Option<&str>,
) -> Result<Arc<Session>, Response> {
    match gw.sessions.get(id).await {
        Ok(Some(s)) if s.user_id.as_deref() == user => Ok(s),
        Ok(_) => Err(not_found_session()),
        Err(e) => Err(store_failure(e)),
    }
}

fn not_found_session() -> Response {
    // MCP 2025-11-25 basic/transports, "Session Management" §3: 404 for an unknown or ended session.
    let e = RpcError::new(
        code::SESSION_NOT_FOUND,
        "Session not found: it ended or never existed; initialize a new one",
    );
    error_reply(StatusCode::NOT_FOUND, None, &e)
}

fn store_failure(e: anyhow::Error) -> Response {
    tracing::error!(error = %e, "the store failed");
    let e = RpcError::new(
        code::INTERNAL_ERROR,
        "Internal error: the session store is unavailable",
    );
    error_reply(StatusCode::SERVICE_UNAVAILABLE, None, &e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::jsonrpc::MODERN_VERSION;

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

    fn modern_params(version: &str) -> Value {
        json!({"name": "everything_echo", "_meta": {META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: {}}})
    }

    #[test]
    fn malformed_retry_fields_are_the_clients_protocol_error() {
        for bad in [
            json!({ "inputResponses": 3 }),
            json!({ "inputResponses": null }),
            json!({ "inputResponses": { "k": "yes" } }),
            json!({ "requestState": { "s": 1 } }),
        ] {
            assert_eq!(
                check_retry_fields(&bad).unwrap_err().code,
                code::INVALID_PARAMS,
                "{bad}"
            );
        }
        assert!(
            check_retry_fields(
                &json!({ "inputResponses": { "k": { "action": "accept" } }, "requestState": "s" })
            )
            .is_ok()
        );
        assert!(check_retry_fields(&json!({ "name": "x" })).is_ok());
    }

    #[test]
    fn the_modern_ladder_checks_meta_then_headers_then_version() {
        let good = headers(&[
            ("mcp-protocol-version", MODERN_VERSION),
            ("mcp-method", "tools/call"),
            ("mcp-name", "everything_echo"),
        ]);
        assert!(check_modern(&good, "tools/call", &modern_params(MODERN_VERSION)).is_ok());

        let e = check_modern(&good, "tools/call", &json!({"name": "x"})).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);

        let wrong_name = headers(&[
            ("mcp-protocol-version", MODERN_VERSION),
            ("mcp-method", "tools/call"),
            ("mcp-name", "other"),
        ]);
        assert_eq!(
            check_modern(&wrong_name, "tools/call", &modern_params(MODERN_VERSION))
                .unwrap_err()
                .code,
            code::HEADER_MISMATCH
        );

        let no_method = headers(&[
            ("mcp-protocol-version", MODERN_VERSION),
            ("mcp-name", "everything_echo"),
        ]);
        assert_eq!(
            check_modern(&no_method, "tools/call", &modern_params(MODERN_VERSION))
                .unwrap_err()
                .code,
            code::HEADER_MISMATCH
        );

        let encoded = headers(&[
            ("mcp-protocol-version", MODERN_VERSION),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZXZlcnl0aGluZ19lY2hv?="),
        ]);
        assert!(check_modern(&encoded, "tools/call", &modern_params(MODERN_VERSION)).is_ok());

        let future = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "everything_echo"),
        ]);
        let e = check_modern(&future, "tools/call", &modern_params("2099-01-01")).unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(e.data.unwrap()["supported"], json!(ALL_VERSIONS));
    }
}
