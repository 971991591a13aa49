//! Fuzzing entry points. Each takes arbitrary bytes, drives Doorman's own code with them, and
//! panics when an invariant a client or an operator relies on breaks: no `500` for bad input,
//! errors in the shape their RFC gives, nothing accepted that the rules refuse.
//!
//! The libFuzzer targets in `fuzz/` (run by `scripts/fuzz`) are one line each around these;
//! the test `fuzz_corpus` replays the seed corpus (`fuzz/corpus/<target>/`) and every
//! regression input (`fuzz/regressions/<target>/`) through them on every `cargo test`.
//!
//! Inputs that are HTTP requests are written as raw HTTP/1.1 (request line, headers, blank
//! line, body), read with `httparse`, and sent in process through the same router `serve`
//! builds, in front of a small MCP upstream on loopback that this module runs.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use url::Url;

use crate::{
    clock::{Clock, ManualClock, SharedClock},
    config::Config,
    crypto::{self, KeyRing},
    gateway::Gateway,
    net::HttpClient,
    policy::Policies,
    sign_in::{
        AuthServer,
        cimd::ClientMetadataDocument,
        client_assertion::{AssertionError, AssertionVerifier},
    },
    store::Store,
    vault::Vault,
};

/// Where a fuzz input names the upstream's JSON-RPC id in an event stream (`sse` target).
const ID_MARK: &[u8] = b"$ID";
const START_MS: i64 = 1_800_000_000_000;

struct Harness {
    rt: tokio::runtime::Runtime,
    /// Local mode (no sign-in), one upstream `u`: the MCP endpoint as clients see it.
    local: crate::server::App,
    /// Accounts mode with the authorization server, layer 2 and the same upstream.
    accounts: crate::server::App,
    _dir: TempDir,
}

/// A directory removed when the harness is dropped (the process's end, for libFuzzer).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The event stream the upstream answers the next `tools/call` with (`sse` target); `None`
/// answers a well-formed result.
static NEXT_EVENTS: Mutex<Option<Vec<u8>>> = Mutex::new(None);

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = std::env::temp_dir().join(format!(
            "doorman-fuzz-{}-{}",
            std::process::id(),
            crypto::random_token(6)
        ));
        std::fs::create_dir_all(dir.join("local")).expect("a temporary directory");
        std::fs::create_dir_all(dir.join("accounts")).expect("a temporary directory");
        let (local, accounts) = rt.block_on(async {
            let upstream = serve_upstream().await;
            let upstreams =
                format!("[[upstreams]]\nname = \"u\"\nurl = \"http://{upstream}/mcp\"\n");
            let local = app(
                &format!("[sign_in]\nmode = \"local\"\n{upstreams}"),
                &dir.join("local"),
            )
            .await;
            let accounts = app(
                &format!(
                    "[server]\npublic_url = \"http://127.0.0.1:8421/\"\n\
                     [sign_in]\nmode = \"accounts\"\ndevelopment = true\n\
                     registrations_per_hour = 1000000000\n\
                     [[sign_in.clients]]\nclient_id = \"tester\"\nname = \"Tester\"\n\
                     redirect_uris = [\"http://127.0.0.1:9/cb\"]\n{upstreams}"
                ),
                &dir.join("accounts"),
            )
            .await;
            (local, accounts)
        });
        Harness {
            rt,
            local,
            accounts,
            _dir: TempDir(dir),
        }
    })
}

/// Doorman's application for `toml`, assembled as `server::serve` assembles it, with a clock
/// that stands still.
async fn app(toml: &str, dir: &std::path::Path) -> crate::server::App {
    let config = Config::from_toml(toml).expect("the harness config parses");
    config.validate().expect("the harness config is valid");
    let store = Store::open_sqlite_in(dir).await.expect("a store");
    let clock: SharedClock = Arc::new(ManualClock::new(START_MS));
    let ring = Arc::new(KeyRing::parse(&format!("k1 {}\n", crypto::random_token(32))).unwrap());
    let http = HttpClient::new().expect("an HTTP client");
    let auth = AuthServer::new(
        &config,
        store.clone(),
        clock.clone(),
        ring.clone(),
        http.clone(),
    )
    .await
    .expect("the authorization server");
    let vault = auth.as_ref().map(|a| {
        Arc::new(
            Vault::new(
                &config,
                store.clone(),
                a.ring.clone(),
                clock.clone(),
                http.clone(),
            )
            .expect("the vault"),
        )
    });
    let policies = auth
        .as_ref()
        .map(|_| Arc::new(Policies::new(&config, store.clone())));
    let gateway =
        Gateway::new(&config, store, clock, http, vault, policies, ring).expect("a gateway");
    crate::server::app(&config, Arc::new(gateway), auth, None)
}

/// A small legacy (2025-11-25) MCP server with one tool, `echo`, on loopback.
async fn serve_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/mcp",
        post(upstream).get(|| async { StatusCode::METHOD_NOT_ALLOWED }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn upstream(body: Bytes) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let result = |result: Value| {
        axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
    };
    match msg["method"].as_str().unwrap_or("") {
        "initialize" => {
            let mut r = result(json!({
                "protocolVersion": "2025-11-25",
                "capabilities": { "tools": {} },
                "serverInfo": { "name": "fuzz-upstream", "version": "1" }
            }));
            r.headers_mut()
                .insert("mcp-session-id", "fuzz-session".parse().unwrap());
            r
        }
        "tools/list" => result(json!({ "tools": [{
            "name": "echo", "inputSchema": { "type": "object" }
        }]})),
        "tools/call" => {
            let events = NEXT_EVENTS.lock().unwrap().take();
            let id_text = id.to_string();
            let body = match events {
                Some(events) => replace(&events, ID_MARK, id_text.as_bytes()),
                None => format!(
                    "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id_text},\"result\":{{\"content\":[]}}}}\n\n"
                )
                .into_bytes(),
            };
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        _ => axum::Json(json!({ "jsonrpc": "2.0", "id": id, "error": {
            "code": -32601, "message": "Method not found" }}))
        .into_response(),
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// A raw HTTP/1.1 request; `None` when `httparse` does not read one.
fn request_of(data: &[u8]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = req.parse(data).ok()? else {
        return None;
    };
    let mut b = Request::builder().method(req.method?).uri(req.path?);
    for h in req.headers.iter() {
        b = b.header(h.name, h.value);
    }
    let mut r = b.body(Body::from(data[head..].to_vec())).ok()?;
    r.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    Some(r)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

fn send(app: &crate::server::App, req: Request<Body>) -> Answer {
    harness().rt.block_on(async {
        let r = app.handle(req).await;
        let (parts, body) = r.into_parts();
        let body = axum::body::to_bytes(body, 16 << 20)
            .await
            .expect("a response body");
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
}

fn content_type(a: &Answer) -> String {
    a.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// JSON-RPC 2.0 §5: a response has `jsonrpc: "2.0"`, an `id`, and exactly one of `result` and
/// `error`; an error has an integer `code` and a string `message`.
fn check_rpc_response(v: &Value) {
    assert_eq!(v["jsonrpc"], "2.0", "a response says jsonrpc 2.0: {v}");
    assert!(v.get("id").is_some(), "a response has an id: {v}");
    assert!(
        v.get("result").is_some() != v.get("error").is_some(),
        "a response has exactly one of result and error: {v}"
    );
    if let Some(e) = v.get("error") {
        assert!(e["code"].is_i64(), "an error code is an integer: {v}");
        assert!(e["message"].is_string(), "an error has a message: {v}");
    }
}

/// Every JSON-RPC message in an answer from `/mcp` (a JSON body or an event stream).
fn rpc_messages(a: &Answer) -> Vec<Value> {
    let ct = content_type(a);
    if ct.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&a.body)
            .unwrap_or_else(|e| panic!("a JSON answer parses ({e}): {:?}", a.body));
        return match v {
            Value::Array(items) => items,
            v => vec![v],
        };
    }
    if ct.starts_with("text/event-stream") {
        let body = a.body.clone();
        return harness().rt.block_on(async move {
            let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(
                hyper::body::Frame::data(body),
            )]);
            let mut events = sse_stream::SseStream::new(http_body_util::StreamBody::new(stream));
            let mut out = Vec::new();
            while let Some(event) = events.next().await {
                let event = event.expect("Doorman's event stream is well formed");
                if let Some(data) = event.data.filter(|d| !d.is_empty()) {
                    out.push(
                        serde_json::from_str(&data)
                            .unwrap_or_else(|e| panic!("an event is JSON ({e}): {data}")),
                    );
                }
            }
            out
        });
    }
    Vec::new()
}

/// `POST`/`GET`/`DELETE /mcp` in local mode: framing, batches, both protocol generations,
/// sessions, headers. Never a `5xx`; every answer is well-formed JSON-RPC.
pub fn mcp(data: &[u8]) {
    let Some(req) = request_of(data) else { return };
    let a = send(&harness().local, req);
    assert!(
        !a.status.is_server_error(),
        "{} for a client's input: {:?}",
        a.status,
        a.body
    );
    for m in rpc_messages(&a) {
        if m.get("method").is_none() {
            check_rpc_response(&m);
        }
    }
}

/// The upstream's event stream for a `tools/call` is `data` (with `$ID` standing for the
/// request's id): whatever the upstream sends, the client gets one well-formed answer to its
/// request, and Doorman does not fail.
pub fn sse(data: &[u8]) {
    *NEXT_EVENTS.lock().unwrap() = Some(data.to_vec());
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "u_echo", "arguments": {},
                    "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                               "io.modelcontextprotocol/clientCapabilities": {} } }
    });
    let req = Request::post("/mcp")
        .header(header::HOST, "127.0.0.1:8421")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "u_echo")
        .body(Body::from(body.to_string()))
        .unwrap();
    let a = send(&harness().local, req);
    *NEXT_EVENTS.lock().unwrap() = None;
    assert!(
        !a.status.is_server_error() || a.status == StatusCode::BAD_GATEWAY,
        "{} for an upstream's answer: {:?}",
        a.status,
        a.body
    );
    let answers: Vec<Value> = rpc_messages(&a)
        .into_iter()
        .filter(|m| m.get("method").is_none())
        .collect();
    assert_eq!(answers.len(), 1, "one answer to the call: {answers:?}");
    check_rpc_response(&answers[0]);
    assert_eq!(answers[0]["id"], 7, "the answer is to the client's request");
}

/// Error codes each endpoint may answer with.
const TOKEN_ERRORS: &[&str] = &[
    // RFC 6749 §5.2, RFC 8707 §2.
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
];
const REVOKE_ERRORS: &[&str] = &[
    // RFC 7009 §2.2.1 adds one to RFC 6749 §5.2.
    "invalid_request",
    "invalid_client",
    "unsupported_token_type",
];
const REGISTER_ERRORS: &[&str] = &[
    // RFC 7591 §3.2.2.
    "invalid_redirect_uri",
    "invalid_client_metadata",
    "invalid_software_statement",
    "unapproved_software_statement",
];

/// Layer 1's endpoints in accounts mode: `/oauth/authorize`, `/oauth/token`,
/// `/oauth/revoke`, `/oauth/register` (and RFC 7592 reads), the metadata documents, the
/// bearer check on `/mcp`, and the connect pages. Never a `5xx`; OAuth errors are JSON with
/// a code their RFC defines; token answers are never cached.
pub fn oauth(data: &[u8]) {
    let Some(req) = request_of(data) else { return };
    let path = req.uri().path().to_owned();
    // Password checks cost an argon2 run each: fuzzed elsewhere (accounts_tests), not here.
    if req.method() == axum::http::Method::POST
        && (path.starts_with("/sign-in") || path.starts_with("/setup"))
    {
        return;
    }
    let a = send(&harness().accounts, req);
    assert!(
        !a.status.is_server_error(),
        "{} for a client's input at {path}: {:?}",
        a.status,
        a.body
    );
    let allowed = match path.as_str() {
        "/oauth/token" => TOKEN_ERRORS,
        "/oauth/revoke" => REVOKE_ERRORS,
        "/oauth/register" => REGISTER_ERRORS,
        _ => return,
    };
    if path == "/oauth/token" && a.status != StatusCode::METHOD_NOT_ALLOWED {
        // RFC 6749 §5.1, §5.2.
        let cache = a
            .headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(cache.contains("no-store"), "token answers are not cached");
    }
    if a.status.is_client_error()
        && a.status != StatusCode::METHOD_NOT_ALLOWED
        && a.status != StatusCode::TOO_MANY_REQUESTS
        && a.status != StatusCode::PAYLOAD_TOO_LARGE
    {
        let v: Value = serde_json::from_slice(&a.body)
            .unwrap_or_else(|e| panic!("an OAuth error is JSON ({e}): {:?}", a.body));
        let code = v["error"].as_str().unwrap_or("");
        assert!(
            allowed.contains(&code),
            "{path} answered error {code:?}, which its RFC does not define"
        );
    }
}

/// Documents that come from outside: a Client ID Metadata Document (first line: the URL it
/// was fetched from), an upstream's protected resource metadata (first line: the upstream's
/// URL) or its authorization server's metadata, an OpenID provider's discovery document and
/// JWK Set, and a `WWW-Authenticate` challenge. The first byte picks which.
pub fn documents(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
    let json = || serde_json::from_str::<Value>(body).ok();
    match kind % 5 {
        0 => {
            let Some(doc) = json() else { return };
            if let Ok(d) = ClientMetadataDocument::parse(first, doc) {
                // draft-ietf-oauth-client-id-metadata-document §4: the id is the URL, by
                // simple string comparison; a usable client has somewhere to send codes.
                assert_eq!(d.client_id, first);
                assert!(crate::sign_in::cimd::is_metadata_client_id(first));
                assert!(!d.redirect_uris.is_empty());
                for uri in &d.redirect_uris {
                    let u = Url::parse(uri).expect("an accepted redirect URI parses");
                    assert!(u.fragment().is_none(), "RFC 6749 §3.1.2: no fragment");
                }
                assert!(matches!(
                    d.token_endpoint_auth_method.as_str(),
                    "none" | "private_key_jwt"
                ));
            }
        }
        1 => {
            let (Some(doc), Ok(url)) = (json(), Url::parse(first)) else {
                return;
            };
            if let Ok((resource, _issuer)) =
                crate::vault::discovery::read_resource_metadata(&doc, &url)
            {
                // RFC 9728 §3.3: about the resource that was asked, and nothing else.
                assert_eq!(
                    resource.trim_end_matches('/'),
                    url.as_str().trim_end_matches('/')
                );
            }
        }
        2 => {
            let (Some(doc), Ok(issuer)) = (json(), Url::parse(first)) else {
                return;
            };
            if let Ok(e) = crate::vault::discovery::read_endpoints(&doc, &issuer) {
                assert!(e.authorization.is_some() && e.token.is_some());
            }
        }
        3 => {
            let Some(doc) = json() else { return };
            let _ = serde_json::from_value::<crate::sign_in::oidc::Discovery>(doc.clone());
            let _ = serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(doc);
        }
        _ => {
            for name in ["resource_metadata", "scope", "error"] {
                if let Some(v) = crate::net::auth_param(&text, name) {
                    assert!(
                        v.len() <= text.len(),
                        "a parameter is part of the challenge"
                    );
                }
            }
        }
    }
}

struct AssertionHarness {
    key: jsonwebtoken::EncodingKey,
    doc: ClientMetadataDocument,
    verifier: AssertionVerifier,
    clock: ManualClock,
}

const CLIENT: &str = "https://client.example/c.json";
const AUDIENCE: &str = "https://doorman.example/oauth/token";

fn assertion_harness() -> &'static AssertionHarness {
    static A: OnceLock<AssertionHarness> = OnceLock::new();
    A.get_or_init(|| {
        let key = crypto::generate_es256_key();
        let doc = ClientMetadataDocument::parse(
            CLIENT,
            json!({
                "client_id": CLIENT,
                "redirect_uris": ["https://client.example/cb"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": { "keys": [{ "kty": "EC", "crv": "P-256", "x": key.x, "y": key.y,
                                     "kid": "k1", "alg": "ES256", "use": "sig" }] }
            }),
        )
        .expect("the harness client document is valid");
        let clock = ManualClock::new(START_MS);
        let fetcher =
            crate::net::guarded::GuardedFetcher::new(Default::default()).expect("a fetcher");
        AssertionHarness {
            key: jsonwebtoken::EncodingKey::from_ec_der(&key.pkcs8),
            doc,
            verifier: AssertionVerifier::new(fetcher, Arc::new(clock.clone())),
            clock,
        }
    })
}

/// RFC 7523 client assertions. The input is a JOSE header and a claims set, one per line,
/// signed with the client's real key (so the claim rules are what is fuzzed), or with a first
/// line of `raw` an assertion as sent. An accepted assertion must satisfy RFC 7523 §3 and is
/// refused when replayed.
pub fn client_assertion(data: &[u8]) {
    let h = assertion_harness();
    let text = String::from_utf8_lossy(data);
    let assertion = match text.split_once('\n') {
        Some(("raw", raw)) => raw.to_owned(),
        Some((head, claims)) => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let signing_input = format!("{}.{}", b64.encode(head), b64.encode(claims));
            let Ok(sig) = jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &h.key,
                jsonwebtoken::Algorithm::ES256,
            ) else {
                return;
            };
            format!("{signing_input}.{sig}")
        }
        None => return,
    };
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let verify = |a: &str| {
        harness()
            .rt
            .block_on(h.verifier.verify(&h.doc, jwt_bearer, a, &[AUDIENCE]))
    };
    if verify(&assertion).is_ok() {
        // RFC 7523 §3: iss and sub are the client, aud names Doorman, exp is in the future.
        let payload = assertion.split('.').nth(1).unwrap_or("");
        use base64::Engine;
        let claims: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .expect("accepted claims are JSON");
        assert_eq!(claims["iss"], CLIENT);
        assert_eq!(claims["sub"], CLIENT);
        let aud_ok = claims["aud"] == AUDIENCE
            || claims["aud"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == AUDIENCE));
        assert!(aud_ok, "aud names Doorman: {claims}");
        // Item 4: not expired, allowing one minute of clock skew; at most ten minutes ahead.
        let now = h.clock.now_ms() as f64;
        let exp = claims["exp"].as_f64().expect("exp is a number") * 1000.0;
        assert!(exp > now - 60_000.0, "exp has not passed: {claims}");
        assert!(exp <= now + 660_000.0, "exp is not far ahead: {claims}");
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_f64().expect("nbf is a number") * 1000.0;
            assert!(nbf <= now + 60_000.0, "item 5: not before nbf: {claims}");
        }
        assert!(
            claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
            "item 7: a jti: {claims}"
        );
        assert!(
            matches!(verify(&assertion), Err(AssertionError::Replayed)),
            "RFC 7523 §3 item 7: a jti is used once"
        );
    }
}

/// A config file: read, checked, and resolved as `doorman check-config` does. A config the
/// checks accept resolves without panicking.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    if config.validate().is_ok() {
        let _ = crate::config::resolved::resolve_all(&config);
        let _ = (
            config.issuer(),
            config.mcp_resource(),
            config.database_url(),
        );
    }
}

/// A fuzz target: arbitrary bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/` and the corpus replay know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("mcp", mcp),
    ("sse", sse),
    ("oauth", oauth),
    ("documents", documents),
    ("client_assertion", client_assertion),
    ("config", config),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../fuzz/corpus/{target}/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The harness reaches what it means to fuzz: a call goes through to the upstream and
    /// back, and layer 1 answers as it does to real clients.
    #[test]
    fn the_harness_reaches_the_upstream_and_the_authorization_server() {
        let a = send(
            &harness().local,
            request_of(&seed("mcp", "modern-tools-call")).unwrap(),
        );
        let answers = rpc_messages(&a);
        assert_eq!(answers.len(), 1, "{:?}", a.body);
        assert_eq!(answers[0]["result"]["content"], json!([]), "{answers:?}");

        *NEXT_EVENTS.lock().unwrap() = Some(seed("sse", "result"));
        let a = send(
            &harness().local,
            request_of(&seed("mcp", "modern-tools-call")).unwrap(),
        );
        *NEXT_EVENTS.lock().unwrap() = None;
        assert_eq!(rpc_messages(&a)[0]["result"]["content"][0]["text"], "hi");

        let a = send(
            &harness().accounts,
            request_of(&seed("oauth", "register")).unwrap(),
        );
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        let a = send(
            &harness().accounts,
            request_of(&seed("oauth", "token-code")).unwrap(),
        );
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.body);
        assert_eq!(
            serde_json::from_slice::<Value>(&a.body).unwrap()["error"],
            "invalid_grant"
        );
    }

    fn mcp_post(host: &str, authorization: Option<&str>) -> Request<Body> {
        let mut b = Request::builder()
            .method("POST")
            .uri("/mcp")
            .header("host", host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list");
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        let mut r = b
            .body(Body::from(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
                    "io.modelcontextprotocol/protocolVersion":"2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            ))
            .unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        r
    }

    /// `POST /mcp` bypasses the router (`server::App`) but not its checks: the edge refuses
    /// other hosts, the bearer check refuses missing and forged tokens, as on every other
    /// method of `/mcp`.
    #[test]
    fn the_direct_path_of_post_makes_the_router_s_checks() {
        let a = send(&harness().local, mcp_post("evil.example.com", None));
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.body);
        assert!(String::from_utf8_lossy(&a.body).contains("this Host is not allowed"));
        let a = send(&harness().local, mcp_post("127.0.0.1:8421", None));
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert!(
            rpc_messages(&a)[0]["result"]["tools"].is_array(),
            "{:?}",
            a.body
        );

        let a = send(&harness().accounts, mcp_post("evil.example.com", None));
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.body);
        let a = send(&harness().accounts, mcp_post("127.0.0.1:8421", None));
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{:?}", a.body);
        let challenge = a.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains("resource_metadata="), "{challenge}");
        let a = send(
            &harness().accounts,
            mcp_post("127.0.0.1:8421", Some("Bearer not.a.token")),
        );
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{:?}", a.body);
        let challenge = a.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }

    #[test]
    fn a_valid_assertion_passes_once() {
        let valid = seed("client_assertion", "valid");
        let text = String::from_utf8(valid).unwrap();
        let (head, claims) = text.split_once('\n').unwrap();
        // The same claims with a fresh jti, so the replay set of other runs does not matter.
        let mut claims: Value = serde_json::from_str(claims).unwrap();
        claims["jti"] = json!(crypto::random_token(8));
        let input = format!("{head}\n{claims}");
        client_assertion(input.as_bytes());
        // Run again: the replay is what the target asserts is refused.
        let h = assertion_harness();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!("{}.{}", b64.encode(head), b64.encode(claims.to_string()));
        let sig = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &h.key,
            jsonwebtoken::Algorithm::ES256,
        )
        .unwrap();
        let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
        let again = harness().rt.block_on(h.verifier.verify(
            &h.doc,
            jwt_bearer,
            &format!("{signing_input}.{sig}"),
            &[AUDIENCE],
        ));
        assert!(matches!(again, Err(AssertionError::Replayed)), "{again:?}");
    }
}
