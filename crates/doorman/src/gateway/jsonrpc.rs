//! JSON-RPC 2.0 messages as MCP uses them, the protocol's error codes and its versions.

use std::{borrow::Cow, ops::Range};

use serde_json::{Value, json, value::RawValue};

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

/// A request's result on its way to the client: a `Value` (built by Doorman, or parsed because
/// Doorman reads or changes it), or an upstream's `tools/call` result kept as the upstream wrote
/// it ([`Passed`]), which spares parsing it into a tree, dropping the tree and serializing it
/// again.
#[derive(Debug)]
pub enum Reply {
    Value(Value),
    Passed(Passed),
}

impl From<Value> for Reply {
    fn from(v: Value) -> Self {
        Self::Value(v)
    }
}

impl Reply {
    /// The result as a `Value`, parsed now if it was passed through.
    pub fn into_value(self) -> Value {
        match self {
            Self::Value(v) => v,
            Self::Passed(p) => p.into_value(),
        }
    }

    /// The result as a `Value` to read or change (a passed-through result is parsed first).
    pub fn value_mut(&mut self) -> &mut Value {
        if let Self::Passed(_) = self
            && let Self::Passed(p) = std::mem::replace(self, Self::Value(Value::Null))
        {
            *self = Self::Value(p.into_value());
        }
        match self {
            Self::Value(v) => v,
            Self::Passed(_) => unreachable!("parsed just above"),
        }
    }

    /// Whether it is an `InputRequiredResult` (MCP 2026-07-28 basic/patterns/mrtr). A passed
    /// result's `resultType`, if it has one, is `complete`.
    pub fn is_input_required(&self) -> bool {
        match self {
            Self::Value(v) => v.get("resultType").and_then(Value::as_str) == Some("input_required"),
            Self::Passed(_) => false,
        }
    }

    /// Whether it is a tool's error (`isError: true`, MCP basic/server/tools "Error Handling").
    pub fn is_tool_error(&self) -> bool {
        match self {
            Self::Value(v) => v.get("isError").and_then(Value::as_bool) == Some(true),
            Self::Passed(p) => p.is_error,
        }
    }
}

/// A `tools/call` result as the upstream wrote it: its message's text, and where each of the
/// result's fields (name, value) lies in it. Checked when read ([`Passed::read`]) to hold
/// nothing Doorman must rewrite or look into except what this keeps: `isError`, and the keys
/// each protocol generation shapes (`resultType`, which must be `"complete"`; `_meta`; `ttlMs`,
/// `cacheScope`), which [`Passed::response`] shapes as `transport::shape_result` does.
#[derive(Debug)]
pub struct Passed {
    text: bytes::Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
    is_error: bool,
}

/// A key that was there, whatever its value (`null` included: `Option` would take a `null`
/// for a missing key).
#[derive(Default)]
struct Seen(bool);

impl<'de> serde::Deserialize<'de> for Seen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Seen(true))
    }
}

/// An object's fields, names and values borrowed from the text, in order. A name written with
/// an escape cannot be borrowed: reading fails, and the message goes the parsed way.
struct Fields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(name) = map.next_key::<&'de str>()? {
                    fields.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A JSON value checked as serde_json's `Value` parser checks it, and kept nowhere: numbers in
/// range (`1e400` is refused), escapes that make characters (a lone surrogate is refused),
/// nesting within the parser's recursion limit. A raw value alone is only checked for syntax.
struct Valid;

impl<'de> serde::Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Valid)
    }
}

impl<'de> serde::de::Visitor<'de> for Valid {
    type Value = Valid;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
}

/// More fields than this and a result is parsed: names are compared pairwise for duplicates.
const MAX_PASSED_FIELDS: usize = 32;

impl Passed {
    /// An upstream's message, if it is the response to request `id` and its result can pass
    /// through. `None` for anything else: the caller then parses the message whole and handles
    /// it as before (errors, requests, notifications, and results Doorman must look into).
    ///
    /// A result passes when it is an object whose field names are all distinct (as a parsed
    /// object, which keeps only the last, would have them), with no `messages` or `contents`
    /// (prompts and resources), no `content` item of type `resource` or `resource_link` (their
    /// URIs are exposed through Doorman: `router::expose_uris_in_content`), and no `resultType`
    /// but `"complete"` (an `InputRequiredResult` is Doorman's to handle).
    pub fn read(text: &bytes::Bytes, id: u64) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(default)]
            id: Option<u64>,
            #[serde(default)]
            method: Seen,
            #[serde(default)]
            error: Seen,
            #[serde(borrow, default)]
            result: Option<Fields<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Item<'a> {
            #[serde(rename = "type", borrow, default)]
            kind: Option<Cow<'a, str>>,
        }
        let message = std::str::from_utf8(text).ok()?;
        // What the parsed way refuses is refused here too (and then answered with its error),
        // and what passes can always be parsed later (`into_value`, `_meta`).
        serde_json::from_str::<Valid>(message).ok()?;
        let envelope: Envelope = serde_json::from_str(message).ok()?;
        if envelope.id != Some(id) || envelope.method.0 || envelope.error.0 {
            return None;
        }
        let Fields(fields) = envelope.result?;
        if fields.len() > MAX_PASSED_FIELDS {
            return None;
        }
        let mut is_error = false;
        for (i, (name, value)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(other, _)| other == name) {
                return None;
            }
            match *name {
                "content" => {
                    let items: Vec<Item> = serde_json::from_str(value.get()).ok()?;
                    if items
                        .iter()
                        .any(|i| matches!(i.kind.as_deref(), Some("resource" | "resource_link")))
                    {
                        return None;
                    }
                }
                "messages" | "contents" => return None,
                "resultType" => {
                    let kind: Cow<str> = serde_json::from_str(value.get()).ok()?;
                    if kind != "complete" {
                        return None;
                    }
                }
                "isError" => is_error = value.get() == "true",
                _ => {}
            }
        }
        let at = |s: &str| {
            let start = s.as_ptr() as usize - message.as_ptr() as usize;
            start..start + s.len()
        };
        Some(Self {
            fields: fields
                .iter()
                .map(|(name, value)| (at(name), at(value.get())))
                .collect(),
            text: text.clone(),
            is_error,
        })
    }

    fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        // UTF-8 checked and the ranges taken from it in `read`.
        let text = std::str::from_utf8(&self.text).expect("read as UTF-8");
        self.fields
            .iter()
            .map(move |(name, value)| (&text[name.clone()], &text[value.clone()]))
    }

    pub fn into_value(self) -> Value {
        Value::Object(
            self.fields()
                .map(|(name, value)| {
                    let value = serde_json::from_str(value).expect("read as JSON");
                    (name.to_owned(), value)
                })
                .collect(),
        )
    }

    /// The response message that carries it, serialized, with the result shaped as
    /// `transport::shape_result` shapes a parsed one: for a 2026-07-28 client, `resultType`
    /// when missing and `server_info` in `_meta`; for the stateful revisions, without
    /// `resultType`, `ttlMs` and `cacheScope`.
    pub fn response(&self, id: &Id, modern: bool, server_info: &Value) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 192);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        serde_json::to_writer(&mut out, id).expect("an id always serializes");
        out.extend_from_slice(br#","result":{"#);
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, name: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            // A borrowed name had no escapes in the upstream's text: written back as it was.
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        let mut meta = false;
        let mut result_type = false;
        for (name, value) in self.fields() {
            match name {
                "resultType" | "ttlMs" | "cacheScope" if !modern => continue,
                "resultType" => result_type = true,
                "_meta" if modern => {
                    meta = true;
                    field(&mut out, name);
                    match serde_json::from_str::<serde_json::Map<String, Value>>(value) {
                        Ok(mut m) => {
                            m.insert(META_SERVER_INFO.into(), server_info.clone());
                            serde_json::to_writer(&mut out, &m).expect("a map always serializes");
                        }
                        // Not an object: left as it is, as `shape_result` leaves it.
                        Err(_) => out.extend_from_slice(value.as_bytes()),
                    }
                    continue;
                }
                _ => {}
            }
            field(&mut out, name);
            out.extend_from_slice(value.as_bytes());
        }
        if modern && !result_type {
            field(&mut out, "resultType");
            out.extend_from_slice(br#""complete""#);
        }
        if modern && !meta {
            field(&mut out, "_meta");
            out.extend_from_slice(br#"{""#);
            out.extend_from_slice(META_SERVER_INFO.as_bytes());
            out.extend_from_slice(br#"":"#);
            serde_json::to_writer(&mut out, server_info).expect("a value always serializes");
            out.push(b'}');
        }
        out.extend_from_slice(b"}}");
        out
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

    fn passed(result: &str) -> Option<Passed> {
        let message = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#);
        Passed::read(&message.into(), 7)
    }

    fn fields(p: &Passed) -> Vec<(&str, &str)> {
        p.fields().collect()
    }

    #[test]
    fn a_tool_result_passes_through_only_when_doorman_has_nothing_to_change_in_it() {
        let p = passed(r#"{"content":[{"type":"text","text":"hi"}],"isError":true}"#).unwrap();
        assert!(p.is_error);
        assert_eq!(
            fields(&p),
            [
                ("content", r#"[{"type":"text","text":"hi"}]"#),
                ("isError", "true")
            ]
        );
        let p = passed(
            r#"{ "content": [], "structuredContent": {"_meta": 1, "uri": "x"}, "isError": 1 }"#,
        )
        .unwrap();
        assert!(
            !p.is_error,
            "only `true` is an error, as `Value::as_bool` reads it"
        );
        assert_eq!(
            fields(&p)[1],
            ("structuredContent", r#"{"_meta": 1, "uri": "x"}"#)
        );
        // What each generation shapes passes, to be shaped when written.
        for result in [
            r#"{"content":[],"_meta":{"a":1}}"#,
            r#"{"content":[],"_meta":null}"#,
            r#"{"content":[],"resultType":"complete","ttlMs":5,"cacheScope":"public"}"#,
            "{}",
            "{ \n }",
        ] {
            assert!(passed(result).is_some(), "{result}");
        }

        for (why, result) in [
            (
                "a resource link is exposed",
                r#"{"content":[{"type":"resource_link","uri":"file:///a"}]}"#,
            ),
            (
                "an embedded resource is exposed",
                r#"{"content":[{"type":"text","text":"a"},{"type":"resource","resource":{"uri":"file:///a"}}]}"#,
            ),
            (
                "an escaped type is still read",
                r#"{"content":[{"\u0074ype":"resource_link","uri":"f"}]}"#,
            ),
            (
                "an escaped name is not borrowed",
                r#"{"\u005fmeta":{},"content":[]}"#,
            ),
            ("prompt messages are exposed", r#"{"messages":[]}"#),
            ("resource contents are exposed", r#"{"contents":[]}"#),
            (
                "an InputRequiredResult is Doorman's",
                r#"{"resultType":"input_required","inputRequests":{}}"#,
            ),
            (
                "a resultType not understood",
                r#"{"content":[],"resultType":7}"#,
            ),
            ("not an object", "[1]"),
            ("not an object either", r#""text""#),
            ("a null result", "null"),
            (
                "content twice: the parsed way keeps the last",
                r#"{"content":[],"content":[{"type":"resource_link","uri":"a"}]}"#,
            ),
            ("any name twice", r#"{"a":1,"content":[],"a":2}"#),
            (
                "a type twice",
                r#"{"content":[{"type":"text","type":"resource_link","uri":"a"}]}"#,
            ),
            ("an item that is not an object", r#"{"content":["text"]}"#),
            (
                "content that is not a list",
                r#"{"content":{"type":"resource_link"}}"#,
            ),
            // What the parsed way refuses as "not JSON" is not passed on either.
            (
                "an escaped type value is read as its text",
                r#"{"content":[{"type":"resource\u005flink","uri":"f"}]}"#,
            ),
            (
                "a number out of range",
                r#"{"content":[],"structuredContent":{"x":1e400}}"#,
            ),
            ("a negative one", r#"{"content":[],"x":-1e400}"#),
            (
                "a lone leading surrogate",
                r#"{"content":[{"type":"text","text":"\ud800"}]}"#,
            ),
            (
                "a lone trailing surrogate",
                r#"{"content":[{"type":"text","text":"\udc00"}]}"#,
            ),
            (
                "a surrogate in a name",
                r#"{"content":[],"structuredContent":{"\ud800":1}}"#,
            ),
            (
                "a _meta no map can hold",
                r#"{"content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up"},"pad":1e400}}"#,
            ),
        ] {
            assert!(passed(result).is_none(), "{why}: {result}");
        }
        let deep = format!(
            r#"{{"content":[],"x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(
            passed(&deep).is_none(),
            "nested deeper than the parser's limit"
        );
        let shallow = format!(
            r#"{{"content":[],"x":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(passed(&shallow).is_some(), "nested within it");
        assert!(
            Passed::read(
                &r#"{"jsonrpc":1e400,"id":7,"result":{"content":[]}}"#.into(),
                7
            )
            .is_none(),
            "a message is checked whole, the fields Doorman ignores included"
        );
        let many: Vec<String> = (0..=MAX_PASSED_FIELDS)
            .map(|i| format!(r#""f{i}":{i}"#))
            .collect();
        assert!(
            passed(&format!("{{{}}}", many.join(","))).is_none(),
            "too many to compare"
        );

        let ok = r#"{"content":[]}"#;
        for (why, message) in [
            (
                "another id",
                format!(r#"{{"jsonrpc":"2.0","id":8,"result":{ok}}}"#),
            ),
            (
                "an id as a string",
                format!(r#"{{"jsonrpc":"2.0","id":"7","result":{ok}}}"#),
            ),
            ("no id", format!(r#"{{"jsonrpc":"2.0","result":{ok}}}"#)),
            (
                "a request",
                format!(r#"{{"jsonrpc":"2.0","id":7,"method":"x","result":{ok}}}"#),
            ),
            (
                "an error too",
                format!(r#"{{"jsonrpc":"2.0","id":7,"error":{{}},"result":{ok}}}"#),
            ),
            (
                "the result twice",
                format!(r#"{{"jsonrpc":"2.0","id":7,"result":{ok},"result":{ok}}}"#),
            ),
            ("no result", r#"{"jsonrpc":"2.0","id":7}"#.to_owned()),
            (
                "not JSON",
                format!(r#"{{"jsonrpc":"2.0","id":7,"result":{ok}"#),
            ),
            (
                "more after the message",
                format!(r#"{{"jsonrpc":"2.0","id":7,"result":{ok}}} {{}}"#),
            ),
        ] {
            assert!(
                Passed::read(&message.clone().into(), 7).is_none(),
                "{why}: {message}"
            );
        }
        assert!(
            Passed::read(
                &bytes::Bytes::from_static(b"{\"id\":7,\"result\":{\"a\":\"\xff\"}}"),
                7
            )
            .is_none(),
            "not UTF-8"
        );
    }

    #[test]
    fn a_passed_result_is_parsed_when_it_must_be_read_or_changed() {
        let mut r = Reply::Passed(passed(r#"{"content":[],"isError":true}"#).unwrap());
        assert!(r.is_tool_error());
        assert!(!r.is_input_required());
        r.value_mut()["extra"] = json!(1);
        assert!(matches!(r, Reply::Value(_)));
        assert_eq!(
            r.into_value(),
            json!({"content": [], "isError": true, "extra": 1})
        );
        let asks = Reply::from(json!({"resultType": "input_required"}));
        assert!(asks.is_input_required() && !asks.is_tool_error());
    }
}
