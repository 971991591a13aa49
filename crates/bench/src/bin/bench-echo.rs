//! A fast upstream MCP server for the benchmark: one `echo` tool, nothing else.
//!
//! `--mode stateless` speaks only 2026-07-28 (`server/discover`, per-request `_meta`);
//! `--mode stateful` speaks only 2025-11-25 (`initialize`, `MCP-Session-Id`). It does the least
//! work a real server must, so what the benchmark measures is the path, not the tool.
//!
//! It also counts the `Authorization` headers it receives (`GET /stats`): with
//! `--resource-token T`, how many requests carried `Bearer T` (the token a layer-2 connection
//! holds, injected by Doorman) and how many carried anything else (which must be none: Doorman's
//! own tokens never go upstream).

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    Stateless,
    Stateful,
}

#[derive(Parser)]
struct Args {
    #[arg(long)]
    port: u16,
    #[arg(long, value_enum)]
    mode: Mode,
    /// The resource token whose `Authorization: Bearer` requests are counted.
    #[arg(long)]
    resource_token: Option<String>,
}

static SESSIONS: AtomicU64 = AtomicU64::new(0);
/// `Bearer {resource token}`, as it arrives.
static EXPECTED: OnceLock<Vec<u8>> = OnceLock::new();
static WITH_RESOURCE_TOKEN: AtomicU64 = AtomicU64::new(0);
static WITH_OTHER_AUTHORIZATION: AtomicU64 = AtomicU64::new(0);
static WITHOUT_AUTHORIZATION: AtomicU64 = AtomicU64::new(0);

fn count_authorization(headers: &HeaderMap) {
    let counter = match headers.get(header::AUTHORIZATION) {
        None => &WITHOUT_AUTHORIZATION,
        Some(v) if EXPECTED.get().is_some_and(|e| v.as_bytes() == e.as_slice()) => {
            &WITH_RESOURCE_TOKEN
        }
        Some(_) => &WITH_OTHER_AUTHORIZATION,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn stats() -> Response {
    json_reply(
        StatusCode::OK,
        json!({
            "with_resource_token": WITH_RESOURCE_TOKEN.load(Ordering::Relaxed),
            "with_other_authorization": WITH_OTHER_AUTHORIZATION.load(Ordering::Relaxed),
            "without_authorization": WITHOUT_AUTHORIZATION.load(Ordering::Relaxed),
        }),
    )
}

fn json_reply(status: StatusCode, v: Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn mcp(mode: Mode, headers: HeaderMap, body: Bytes) -> Response {
    count_authorization(&headers);
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}),
        );
    };
    let id = msg.get("id").cloned();
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    let Some(id) = id else {
        return StatusCode::ACCEPTED.into_response();
    };
    let modern = headers
        .get("mcp-protocol-version")
        .is_some_and(|v| v == "2026-07-28");
    let result = match (mode, method) {
        (Mode::Stateless, _) if !modern => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32022,"message":"Unsupported protocol version","data":{"supported":["2026-07-28"]}}}),
            );
        }
        (Mode::Stateful, _) if modern => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32000,"message":"Bad Request: initialize first"}}),
            );
        }
        (Mode::Stateless, "server/discover") => json!({
            "resultType": "complete", "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "bench-echo", "version": "1"}}
        }),
        (Mode::Stateful, "initialize") => {
            let sid = format!("bench-{}", SESSIONS.fetch_add(1, Ordering::Relaxed));
            let mut r = json_reply(
                StatusCode::OK,
                json!({"jsonrpc":"2.0","id":id,"result":{
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "bench-echo", "version": "1"}}}),
            );
            r.headers_mut().insert(
                "mcp-session-id",
                HeaderValue::from_str(&sid).expect("ascii"),
            );
            return r;
        }
        (_, "tools/list") => {
            json!({"tools": [{"name": "echo", "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}}}]})
        }
        (_, "tools/call") => {
            let text = msg
                .pointer("/params/arguments/message")
                .cloned()
                .unwrap_or(json!(""));
            json!({"content": [{"type": "text", "text": text}]})
        }
        (_, "ping") => json!({}),
        _ => {
            return json_reply(
                StatusCode::OK,
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"Method not found"}}),
            );
        }
    };
    let mut result = result;
    if modern {
        result["resultType"] = json!("complete");
        // MCP 2026-07-28: a list result says how long it may be cached, and by whom (peer
        // gateways built on the SDK refuse a list without them).
        if method == "tools/list" {
            result["ttlMs"] = json!(0);
            result["cacheScope"] = json!("public");
        }
    }
    json_reply(
        StatusCode::OK,
        json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mode = args.mode;
    if let Some(token) = args.resource_token {
        EXPECTED.get_or_init(|| format!("Bearer {token}").into_bytes());
    }
    let app = Router::new()
        .route(
            "/mcp",
            post(move |h: HeaderMap, b: Bytes| mcp(mode, h, b)).delete(|| async { StatusCode::OK }),
        )
        .route("/stats", get(stats));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
