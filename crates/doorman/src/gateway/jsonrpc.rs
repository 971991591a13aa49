//! JSON-RPC 2.0 messages as MCP uses them, the protocol's error codes and its versions.

use serde_json::{Value, json};

use crate::protocol::Version;

/// The stateful revisions, served with `initialize` and `MCP-Session-Id`, oldest first.
pub const LEGACY_VERSIONS: [&str; 3] = [
    Version::LEGACY[0].as_str(),
    Version::LEGACY[1].as_str(),
    Version::LEGACY[2].as_str(),
];
/// The stateless revision: per-request `_meta`, no sessions.
pub const MODERN_VERSION: &str = Version::MODERN.as_str();
/// Every revision Doorman serves, for `UnsupportedProtocolVersion` errors.
pub const ALL_VERSIONS: [&str; 4] = [
    Version::ALL[0].as_str(),
    Version::ALL[1].as_str(),
    Version::ALL[2].as_str(),
    Version::ALL[3].as_str(),
];

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// JSON-RPC 2.0 §5.1 and MCP 2026-07-28 basic/index "Error codes".
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Implementation-defined range (-32000..-32019): an upstream could not answer.
    pub const UPSTREAM_FAILED: i64 = -32010;
    /// Implementation-defined: the session is unknown or ended (stateful revisions).
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// Implementation-defined: the request is missing its session id, or is refused at the edge.
    pub const BAD_REQUEST: i64 = -32000;
    pub const HEADER_MISMATCH: i64 = -32020;
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// MCP 2025-11-25 client/elicitation, "URL Elicitation Required Error".
    pub const URL_ELICITATION_REQUIRED: i64 = -32042;
    /// Implementation-defined: a connection to a resource is needed first, and the client
    /// cannot be asked by elicitation (the message carries the link).
    pub const CONNECTION_REQUIRED: i64 = -32011;
    /// Implementation-defined: a policy does not allow this person to do this.
    pub const FORBIDDEN: i64 = -32012;
    /// Implementation-defined: the client cancelled the request (`notifications/cancelled`);
    /// clients ignore the answer to a request they cancelled (basic/utilities/cancellation).
    pub const REQUEST_CANCELLED: i64 = -32013;
}

/// A JSON-RPC request id: a string or an integer, never null (MCP basic/index "Requests").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Id {
    /// An integer (kept exactly as sent, so an answer echoes it back unchanged).
    Number(serde_json::Number),
    String(String),
}

impl Id {
    /// The id in a message, if it is one a request may carry.
    pub fn of(v: Value) -> Option<Self> {
        match v {
            Value::String(s) => Some(Self::String(s)),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(Self::Number(n)),
            _ => None,
        }
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Self::Number(n.into())
    }
}

/// A JSON-RPC error object, with the HTTP status it is sent with.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    /// A `WWW-Authenticate` challenge sent with HTTP `401` in place of the usual status (the
    /// re-authorization cascade, `layer2.rs`). Only Doorman sets it: never read from a peer's
    /// JSON, so no upstream can make a client re-authorize, or send it elsewhere.
    pub challenge: Option<String>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
            challenge: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }

    /// Reads an error object received from a peer.
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            code: v.get("code")?.as_i64()?,
            message: v.get("message")?.as_str()?.to_owned(),
            data: v.get("data").cloned(),
            challenge: None,
        })
    }

    pub fn unsupported_version(requested: &str) -> Self {
        Self::new(
            code::UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
        )
        .with_data(json!({ "supported": ALL_VERSIONS, "requested": requested }))
    }
}

/// A response message carrying `result`. The result is moved in, not serialized into a copy
/// as `json!` would: every answer passes here, and results can be large.
pub fn response(id: &Id, result: Value) -> Value {
    message(Some(id), "result", result)
}

/// A response message carrying `error`; `id` is null when the request's id is unknown.
pub fn error_response(id: Option<&Id>, error: &RpcError) -> Value {
    message(id, "error", error.to_json())
}

fn message(id: Option<&Id>, key: &str, value: Value) -> Value {
    let id = match id {
        Some(Id::Number(n)) => Value::Number(n.clone()),
        Some(Id::String(s)) => Value::String(s.clone()),
        None => Value::Null,
    };
    let mut m = serde_json::Map::new();
    m.insert("jsonrpc".into(), Value::String("2.0".into()));
    m.insert("id".into(), id);
    m.insert(key.into(), value);
    Value::Object(m)
}

/// What one POSTed JSON value is, after the JSON-RPC 2.0 §4 shape checks.
#[derive(Debug)]
pub enum Incoming {
    Request {
        id: Id,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// A client's answer to a request Doorman relayed to it (stateful revisions only): its
    /// `result`, or its `error` (an unreadable error object is an internal error).
    Response {
        id: Id,
        answer: Result<Value, RpcError>,
    },
}

/// Classifies one message, taking it apart (its params are moved, not copied); the error is the
/// `-32600` to send (with the id when one was readable).
pub fn classify(msg: Value) -> Result<Incoming, (Option<Id>, RpcError)> {
    let invalid = |id: Option<Id>, why: &str| {
        Err((
            id,
            RpcError::new(code::INVALID_REQUEST, format!("Invalid Request: {why}")),
        ))
    };
    let Value::Object(mut obj) = msg else {
        return invalid(None, "a JSON-RPC message must be an object");
    };
    let id = obj.remove("id");
    let has_id = id.is_some();
    let usable_id = id.and_then(Id::of);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(usable_id, "\"jsonrpc\" must be \"2.0\"");
    }
    // MCP basic/index "Requests": the id MUST be a string or integer, and MUST NOT be null.
    if has_id && usable_id.is_none() {
        return invalid(None, "\"id\" must be a string or an integer");
    }
    match obj.remove("method") {
        Some(Value::String(method)) => {
            let params = obj.remove("params").unwrap_or(Value::Null);
            if !(params.is_null() || params.is_object()) {
                return invalid(usable_id, "\"params\" must be an object");
            }
            let params = if params.is_null() { json!({}) } else { params };
            Ok(match usable_id {
                Some(id) => Incoming::Request { id, method, params },
                None => Incoming::Notification { method, params },
            })
        }
        Some(_) => invalid(usable_id, "\"method\" must be a string"),
        None if usable_id.is_some()
            && (obj.contains_key("result") || obj.contains_key("error")) =>
        {
            let id = usable_id.expect("checked above");
            let answer = match obj.remove("result") {
                Some(result) => Ok(result),
                None => Err(obj
                    .get("error")
                    .and_then(RpcError::from_json)
                    .unwrap_or_else(|| {
                        RpcError::new(code::INTERNAL_ERROR, "the client sent an unreadable error")
                    })),
            };
            Ok(Incoming::Response { id, answer })
        }
        None => invalid(usable_id, "missing \"method\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(v: Value) -> (Option<Id>, RpcError) {
        classify(v).unwrap_err()
    }

    #[test]
    fn requests_notifications_and_responses() {
        let r = classify(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap();
        assert!(
            matches!(r, Incoming::Request { ref method, ref params, .. } if method == "ping" && params == &json!({}))
        );
        let n = classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
        assert!(matches!(n, Incoming::Notification { .. }));
        let resp = classify(json!({"jsonrpc":"2.0","id":"a","result":{"x":1}})).unwrap();
        assert!(
            matches!(resp, Incoming::Response { ref id, answer: Ok(ref r) } if *id == Id::String("a".into()) && r["x"] == 1)
        );
        let resp =
            classify(json!({"jsonrpc":"2.0","id":7,"error":{"code":-1,"message":"no"}})).unwrap();
        assert!(
            matches!(resp, Incoming::Response { answer: Err(ref e), .. } if e.code == -1 && e.message == "no")
        );
        // Ids come back exactly as sent: strings, and integers beyond i64.
        let big = classify(json!({"jsonrpc":"2.0","id":18446744073709551615u64,"method":"ping"}))
            .unwrap();
        let Incoming::Request { id, .. } = big else {
            panic!("a request")
        };
        assert_eq!(
            response(&id, json!({}))["id"],
            json!(18446744073709551615u64)
        );
        let (id, _) = err_of(json!({"jsonrpc":"2.0","id":1.5,"method":"ping"}));
        assert_eq!(id, None, "a fractional id is not an id");
        assert_eq!(
            error_response(None, &RpcError::new(1, "x"))["id"],
            Value::Null
        );
    }

    #[test]
    fn answers_carry_the_id_as_sent_and_the_result_or_error_whole() {
        let result = json!({"content": [{"type": "text", "text": "hi"}], "n": 1.5});
        assert_eq!(
            response(&Id::String("abc".into()), result.clone()),
            json!({"jsonrpc": "2.0", "id": "abc", "result": result})
        );
        assert_eq!(
            response(&Id::from(-4), json!({})).to_string(),
            r#"{"id":-4,"jsonrpc":"2.0","result":{}}"#
        );
        let e = RpcError::new(code::INVALID_PARAMS, "bad").with_data(json!({"why": "x"}));
        assert_eq!(
            error_response(Some(&Id::from(9)), &e),
            json!({"jsonrpc": "2.0", "id": 9, "error": {"code": code::INVALID_PARAMS, "message": "bad", "data": {"why": "x"}}})
        );
    }

    #[test]
    fn shape_errors_are_invalid_request_with_the_id_when_usable() {
        let (id, e) = err_of(json!({"id":1,"method":"ping"}));
        assert_eq!((id, e.code), (Some(Id::from(1)), code::INVALID_REQUEST));
        let (id, e) = err_of(json!({"jsonrpc":"2.0","id":null,"method":"ping"}));
        assert_eq!((id, e.code), (None, code::INVALID_REQUEST));
        let (id, e) = err_of(json!({"jsonrpc":"2.0","id":{"x":1},"method":"ping"}));
        assert_eq!((id, e.code), (None, code::INVALID_REQUEST));
        let (_, e) = err_of(json!({"jsonrpc":"2.0","id":2,"method":7}));
        assert_eq!(e.code, code::INVALID_REQUEST);
        let (_, e) = err_of(json!({"jsonrpc":"2.0","id":2,"method":"x","params":[1]}));
        assert_eq!(e.code, code::INVALID_REQUEST);
        let (_, e) = err_of(json!("just a string"));
        assert_eq!(e.code, code::INVALID_REQUEST);
        let (_, e) = err_of(json!({"jsonrpc":"2.0","id":3}));
        assert!(e.message.contains("missing \"method\""));
    }
}
