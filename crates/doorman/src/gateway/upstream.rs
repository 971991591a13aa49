//! Doorman as the client of one upstream MCP server (Streamable HTTP).
//!
//! Each upstream's protocol revision is negotiated on its own, whatever the downstream client
//! speaks: a `server/discover` probe at 2026-07-28 (MCP 2026-07-28 basic/versioning,
//! "Backward Compatibility"); a `DiscoverResult` naming that revision makes the upstream
//! *modern* (stateless: `_meta` and `Mcp-*` headers on every request), anything else makes it
//! *legacy* (`initialize` once per upstream session, then `Mcp-Session-Id`). The verdict is kept
//! until the upstream becomes unreachable, so a restarted or upgraded upstream is probed again.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::asks::ClientLink;
use super::jsonrpc::{
    LEGACY_VERSIONS, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL,
    META_PROTOCOL_VERSION, MODERN_VERSION, Passed, Reply, RpcError, code,
};
use crate::config::UpstreamConfig;
use crate::net::{HttpClient, auth_param, read_body};

const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const METHOD: HeaderName = HeaderName::from_static("mcp-method");
const NAME: HeaderName = HeaderName::from_static("mcp-name");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// How many times in a row an upstream's notification stream may fail to deliver anything
/// before Doorman stops reopening it.
const MAX_REOPENS: u32 = 5;

/// Largest upstream response body Doorman reads (a JSON body, or one SSE event).
const MAX_UPSTREAM_BODY: usize = 16 * 1024 * 1024;

/// How many times one request may come back `input_required` before Doorman gives up on it
/// (MCP 2026-07-28 basic/patterns/mrtr: a server may ask again; a loop must end somewhere).
const MAX_INPUT_ROUNDS: usize = 8;

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Which protocol generation an upstream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    Modern,
    Legacy,
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("is unreachable: {0}")]
    Unreachable(String),
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    #[error("sent an invalid response: {0}")]
    InvalidResponse(String),
    #[error("answered HTTP {0}")]
    Http(StatusCode),
    #[error("ended the session")]
    SessionGone,
    /// HTTP 401: the upstream wants (another) token (RFC 6750 §3.1).
    #[error("refused the credential (HTTP 401)")]
    Unauthorized { www_authenticate: Option<String> },
    /// HTTP 403 `insufficient_scope` (RFC 6750 §3.1): the scopes it asks for.
    #[error("needs more scopes (HTTP 403 insufficient_scope)")]
    InsufficientScope { scopes: Vec<String> },
    /// The upstream's own JSON-RPC error, passed on to the client unchanged.
    #[error("answered with error {}: {}", .0.code, .0.message)]
    Rpc(RpcError),
    /// The token Doorman sends it (`auth = "exchange"`) could not be made: nothing was sent.
    #[error("cannot be called: {0}")]
    NoCredential(String),
}

impl From<crate::net::HttpError> for UpstreamError {
    fn from(e: crate::net::HttpError) -> Self {
        match e {
            crate::net::HttpError::Unreachable(why) => Self::Unreachable(why),
            crate::net::HttpError::InvalidResponse(why) => Self::InvalidResponse(why),
        }
    }
}

impl UpstreamError {
    /// The JSON-RPC error a client receives, naming the upstream.
    pub fn to_rpc(&self, upstream: &str) -> RpcError {
        if let Self::Rpc(e) = self {
            return e.clone();
        }
        let reason = match self {
            Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::InvalidResponse(_) => "invalid_response",
            Self::Http(_) => "http_error",
            Self::SessionGone => "session_ended",
            Self::Unauthorized { .. } => "unauthorized",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::NoCredential(_) => "no_credential",
            Self::Rpc(_) => unreachable!("handled above"),
        };
        RpcError::new(
            code::UPSTREAM_FAILED,
            format!("upstream '{upstream}' {self}"),
        )
        .with_data(json!({ "upstream": upstream, "reason": reason }))
    }
}

/// One upstream session (legacy upstreams): the id it issued and the revision it negotiated.
#[derive(Debug)]
pub struct UpstreamSession {
    id: Option<String>,
    version: String,
    /// The upstream's outage count when the session was opened: a session opened before an
    /// outage died with the upstream process (not every server answers 404 for it afterwards).
    generation: u64,
}

/// One upstream's session slot in a conversation: empty until first used, locked while the
/// session is being opened so concurrent requests share it.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<UpstreamSession>>>>;

/// The upstream sessions of one downstream conversation, one slot per upstream.
#[derive(Default)]
pub struct SessionSlots(Mutex<HashMap<String, Slot>>);

impl SessionSlots {
    fn slot(&self, upstream: &str) -> Slot {
        let mut map = self.0.lock().expect("slots lock");
        map.entry(upstream.to_owned()).or_default().clone()
    }

    /// Takes every open upstream session out, to end them.
    pub fn drain(&self) -> Vec<(String, Arc<UpstreamSession>)> {
        let slots: Vec<_> = self.0.lock().expect("slots lock").drain().collect();
        slots
            .into_iter()
            .filter_map(|(name, slot)| slot.try_lock().ok()?.take().map(|s| (name, s)))
            .collect()
    }
}

/// What a request carries besides its method and params.
#[derive(Clone, Copy)]
pub struct Outbound<'a> {
    /// The downstream client's capabilities (forwarded to modern upstreams only when the
    /// downstream client is itself modern, so an upstream never asks a client for what it can't do).
    pub client_capabilities: Option<&'a Value>,
    /// Where the upstream's notifications for this request go (progress, log messages).
    pub events: Option<&'a mpsc::Sender<Value>>,
    /// `Mcp-Param-*` headers of the downstream request (MCP 2026-07-28 streamable-http,
    /// "Server Behavior for Custom Headers": intermediaries forward them).
    pub param_headers: &'a [(HeaderName, HeaderValue)],
    /// The log level a stateful session set with `logging/setLevel`, passed to modern upstreams
    /// as `io.modelcontextprotocol/logLevel` (they only log for requests that ask).
    pub log_level: Option<&'a str>,
    /// The person's resource credential, for an upstream tied to a resource (layer 2): sent on
    /// every request of this exchange, `initialize` included.
    pub credential: Option<&'a (HeaderName, HeaderValue)>,
    /// The signed-in caller (accounts mode), for layer 2 and the audit.
    pub caller: Option<&'a super::caller::Caller>,
    /// The request's id (W3C trace id), in the audit and sent upstream as `traceparent`.
    pub request_id: Option<&'a str>,
    /// A stateful client the upstream may ask things of (elicitation, sampling, roots): its
    /// capabilities are what the upstream session declares, and its requests are relayed.
    pub link: Option<&'a ClientLink>,
    /// Notified when the client cancels this request (`notifications/cancelled`).
    pub cancel: Option<&'a tokio::sync::Notify>,
}

/// An upstream's time limit for one request. Time a person spends answering what the upstream
/// asked of them does not count: after each answer the upstream has its whole timeout again.
struct Deadline {
    at: Mutex<tokio::time::Instant>,
    asking: AtomicUsize,
    timeout: Duration,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Self {
            at: Mutex::new(tokio::time::Instant::now() + timeout),
            asking: AtomicUsize::new(0),
            timeout,
        }
    }

    fn at(&self) -> tokio::time::Instant {
        *self.at.lock().expect("deadline lock")
    }

    fn rearm(&self) {
        *self.at.lock().expect("deadline lock") = tokio::time::Instant::now() + self.timeout;
    }

    fn pause(&self) {
        self.asking.fetch_add(1, Ordering::Relaxed);
    }

    fn resume(&self) {
        self.asking.fetch_sub(1, Ordering::Relaxed);
        self.rearm();
    }
}

/// What reading one exchange needs besides the response: where the upstream's own requests are
/// answered (its session, with the credential) and who answers them.
#[derive(Clone, Copy, Default)]
struct Exchange<'a> {
    session: Option<&'a UpstreamSession>,
    cred: Option<&'a (HeaderName, HeaderValue)>,
    link: Option<&'a ClientLink>,
    deadline: Option<&'a Deadline>,
    /// The response's result may pass through unparsed (`jsonrpc::Passed`): a `tools/call`.
    passes: bool,
}

/// One configured upstream MCP server.
pub struct Upstream {
    pub name: String,
    /// What people not connected to its resource yet see of it (`[upstreams.catalog]`).
    pub catalog: Catalog,
    /// The `[[resources]]` whose connection's token this upstream receives (layer 2).
    pub resource: Option<String>,
    /// Set once the upstream turned out to do MCP authorization itself (its resource is named
    /// after it).
    discovered: RwLock<bool>,
    pub url: url::Url,
    headers: HeaderMap,
    pub timeout: Duration,
    http: HttpClient,
    uri: http::Uri,
    era: RwLock<Option<Era>>,
    next_id: AtomicU64,
    /// How many times the upstream was found unreachable.
    outages: AtomicU64,
    /// When it last answered (ms since the epoch; 0: never since start).
    last_ok_at: AtomicI64,
    /// Its last failure that was its own (unreachable, timeout, HTTP error, garbage): when, and
    /// what happened. For the administrators' page.
    last_failure: Mutex<Option<(i64, String)>>,
    /// `auth = "exchange"`: the token's audience and scope, and (once the authorization server
    /// is up) what signs it.
    exchange: Option<(String, String)>,
    /// `exchange_provider`: the provider whose token exchange gives the token.
    exchange_provider: Option<String>,
    minter: std::sync::OnceLock<Arc<crate::sign_in::tokens::UpstreamTokens>>,
}

/// What a person who has not connected an upstream's resource sees of it in `tools/list`.
pub enum Catalog {
    /// The operator's declared tools, as the upstream would list them (unprefixed names).
    Declared(Vec<Value>),
    /// Listed with the operator's credential (an `Authorization` header), kept for `refresh`.
    Listed {
        authorization: (HeaderName, HeaderValue),
        refresh: Duration,
    },
    /// The upstream's own list when it gives one without a token, else one `connect` entry.
    ConnectEntry,
}

/// At most this many pages are read from one upstream list (a guard against cursor loops).
const MAX_PAGES: usize = 100;

/// What the administrators' page shows about an upstream (this node's view).
#[derive(Debug, Clone)]
pub struct Health {
    /// The revision it speaks, once probed.
    pub era: Option<Era>,
    pub last_ok_at: Option<i64>,
    pub last_failure: Option<(i64, String)>,
    pub outages: u64,
}

impl Upstream {
    /// Builds the client; static header secrets are read here, once.
    pub fn new(config: &UpstreamConfig, http: HttpClient) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let v = value
                .resolve()
                .map_err(|e| anyhow::anyhow!("upstreams.{}.headers.{name}: {e}", config.name))?;
            let mut v = HeaderValue::from_str(&v).map_err(|_| {
                anyhow::anyhow!(
                    "upstreams.{}.headers.{name}: not a valid header value",
                    config.name
                )
            })?;
            v.set_sensitive(true);
            headers.insert(HeaderName::from_bytes(name.as_bytes())?, v);
        }
        let catalog = match &config.catalog {
            c if !c.tools.is_empty() => Catalog::Declared(
                c.tools
                    .iter()
                    .map(|t| {
                        let mut tool = json!({
                            "name": t.name,
                            "description": t.description,
                            "inputSchema": t.input_schema.clone().unwrap_or_else(|| json!({ "type": "object" })),
                        });
                        if let Some(title) = &t.title {
                            tool["title"] = json!(title);
                        }
                        tool
                    })
                    .collect(),
            ),
            c => match &c.credential {
                Some(secret) => {
                    let token = secret.resolve().map_err(|e| {
                        anyhow::anyhow!("upstreams.{}.catalog.credential: {e}", config.name)
                    })?;
                    let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "upstreams.{}.catalog.credential: not a valid header value",
                                config.name
                            )
                        })?;
                    authorization.set_sensitive(true);
                    Catalog::Listed {
                        authorization: (header::AUTHORIZATION, authorization),
                        refresh: c.refresh.0,
                    }
                }
                None => Catalog::ConnectEntry,
            },
        };
        Ok(Self {
            catalog,
            name: config.name.clone(),
            resource: config.resource.clone(),
            discovered: RwLock::new(false),
            url: config.url.clone(),
            uri: config
                .url
                .as_str()
                .parse()
                .map_err(|_| anyhow::anyhow!("upstreams.{}.url: not a valid URI", config.name))?,
            headers,
            timeout: config.timeout.0,
            http,
            era: RwLock::new(None),
            next_id: AtomicU64::new(1),
            outages: AtomicU64::new(0),
            last_ok_at: AtomicI64::new(0),
            last_failure: Mutex::new(None),
            exchange: (config.auth == Some(crate::config::UpstreamAuth::Exchange)).then(|| {
                (
                    config.exchange_audience(),
                    config
                        .scopes
                        .as_ref()
                        .map(|s| s.join(" "))
                        .unwrap_or_else(|| "mcp".into()),
                )
            }),
            exchange_provider: config.exchange_provider.clone(),
            minter: std::sync::OnceLock::new(),
        })
    }

    /// Whether this upstream gets Doorman's exchanged token (`auth = "exchange"`).
    pub fn exchanges(&self) -> bool {
        self.exchange.is_some()
    }

    /// Gives an `auth = "exchange"` upstream what signs its tokens (accounts mode, at start).
    pub fn set_minter(&self, minter: Arc<crate::sign_in::tokens::UpstreamTokens>) {
        let _ = self.minter.set(minter);
    }

    /// The token for this request's person and client at an `auth = "exchange"` upstream. `Err`:
    /// it cannot be made, and nothing goes upstream without it.
    async fn exchanged(
        &self,
        out: &Outbound<'_>,
    ) -> Result<Option<(HeaderName, HeaderValue)>, UpstreamError> {
        let (Some((audience, scope)), None) = (&self.exchange, out.credential) else {
            return Ok(None);
        };
        let unavailable =
            |why: &str| UpstreamError::NoCredential(format!("no token for the upstream: {why}"));
        let (Some(minter), Some(caller)) = (self.minter.get(), out.caller) else {
            return Err(unavailable("no signed-in caller"));
        };
        let person = caller.person.as_ref().ok();
        let who = crate::sign_in::tokens::OnBehalfOf {
            user_id: &caller.user_id,
            client_id: &caller.client_id,
            email: person.and_then(|p| p.email.as_deref()),
            service: caller.service_client().is_some(),
        };
        let value = match &self.exchange_provider {
            None => minter
                .header(audience, scope, &who)
                .map_err(|e| unavailable(&e.to_string()))?,
            Some(provider) => minter
                .header_from_provider(provider, audience, scope, &who)
                .await
                .map_err(|e| unavailable(&e))?,
        };
        Ok(Some((http::header::AUTHORIZATION, value)))
    }

    /// The resource whose token this upstream receives: configured, or discovered.
    pub fn resource_name(&self) -> Option<String> {
        match &self.resource {
            Some(r) => Some(r.clone()),
            None if *self.discovered.read().expect("discovered lock") => Some(self.name.clone()),
            None => None,
        }
    }

    /// Records that the upstream does MCP authorization itself.
    pub fn mark_discovered(&self) {
        *self.discovered.write().expect("discovered lock") = true;
    }

    /// Every page of one list method (`key`: the result's array), merged; a downstream cursor
    /// is dropped, as Doorman answers with the whole list.
    pub async fn list_all(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: &Value,
        out: &Outbound<'_>,
        key: &str,
    ) -> Result<Vec<Value>, UpstreamError> {
        let mut items = Vec::new();
        let mut params = params.clone();
        if let Some(p) = params.as_object_mut() {
            p.remove("cursor");
        }
        for _ in 0..MAX_PAGES {
            let page = self
                .request(slots, method, params.clone(), out)
                .await?
                .into_value();
            if let Some(list) = page.get(key).and_then(Value::as_array) {
                items.extend(list.iter().cloned());
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(cursor) if !cursor.is_empty() => params["cursor"] = json!(cursor),
                _ => return Ok(items),
            }
        }
        tracing::warn!(upstream = %self.name, method, "list truncated after {MAX_PAGES} pages");
        Ok(items)
    }

    /// The era, once known.
    pub fn era(&self) -> Option<Era> {
        *self.era.read().expect("era lock")
    }

    /// Sends one request and waits for its result, within the upstream's timeout.
    pub async fn request(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
    ) -> Result<Reply, UpstreamError> {
        let deadline = Deadline::new(self.timeout);
        let inner = self.request_inner(slots, method, params, out, &deadline);
        tokio::pin!(inner);
        let result = loop {
            let at = deadline.at();
            tokio::select! {
                r = &mut inner => break r,
                () = tokio::time::sleep_until(at) => {
                    if deadline.asking.load(Ordering::Relaxed) > 0 {
                        deadline.rearm();
                    } else if deadline.at() <= at {
                        break Err(UpstreamError::Timeout(self.timeout));
                    }
                }
            }
        };
        match &result {
            Ok(_) | Err(UpstreamError::Rpc(_)) => {
                self.last_ok_at.store(epoch_ms(), Ordering::Relaxed);
            }
            Err(e) => {
                if let UpstreamError::Unreachable(_) = e {
                    // Probe again next time: the upstream may come back speaking another
                    // revision, and without the sessions it had.
                    *self.era.write().expect("era lock") = None;
                    self.outages.fetch_add(1, Ordering::Relaxed);
                }
                // A refused credential is the person's connection, not the upstream's health;
                // one Doorman could not make is Doorman's.
                if !matches!(
                    e,
                    UpstreamError::Unauthorized { .. }
                        | UpstreamError::InsufficientScope { .. }
                        | UpstreamError::NoCredential(_)
                ) {
                    *self.last_failure.lock().expect("failure lock") =
                        Some((epoch_ms(), e.to_string()));
                }
            }
        }
        result
    }

    /// How the upstream has been doing, as seen from this node.
    pub fn health(&self) -> Health {
        Health {
            era: self.era(),
            last_ok_at: Some(self.last_ok_at.load(Ordering::Relaxed)).filter(|t| *t > 0),
            last_failure: self.last_failure.lock().expect("failure lock").clone(),
            outages: self.outages.load(Ordering::Relaxed),
        }
    }

    async fn request_inner(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
        deadline: &Deadline,
    ) -> Result<Reply, UpstreamError> {
        let minted = self.exchanged(out).await?;
        let cred = out.credential.or(minted.as_ref());
        let ex = Exchange {
            session: None,
            cred,
            link: out.link,
            deadline: Some(deadline),
            passes: method == "tools/call",
        };
        // W3C Trace Context: the request's trace continues upstream, with a span of Doorman's.
        let trace = out.request_id.and_then(|t| {
            let span = crate::crypto::span_id();
            let mut v = String::with_capacity(t.len() + span.len() + 6);
            for part in ["00-", t, "-", &span, "-01"] {
                v.push_str(part);
            }
            HeaderValue::from_str(&v).ok()
        });
        let with_cred = |h: HeaderMap| {
            let mut h = with_credential(h, cred);
            if let Some(t) = &trace {
                h.insert(HeaderName::from_static("traceparent"), t.clone());
            }
            h
        };
        match self.negotiate(cred).await? {
            Era::Modern => {
                let caps = out
                    .client_capabilities
                    .or(out.link.map(|l| &*l.capabilities))
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                let mut params = with_modern_meta(params, caps);
                if let Some(level) = out.log_level {
                    params["_meta"]
                        .as_object_mut()
                        .expect("meta was just set")
                        .entry(META_LOG_LEVEL)
                        .or_insert_with(|| json!(level));
                }
                let headers = with_cred(self.modern_headers(method, &params, out.param_headers));
                // A stateful client cannot take an `InputRequiredResult`: Doorman asks it each
                // input request on its stream and retries with the answers (MCP 2026-07-28
                // basic/patterns/mrtr, "Client Requirements").
                // A 2026-07-28 client takes the `InputRequiredResult` itself.
                let Some(link) = out.link.filter(|l| !l.is_parked()) else {
                    return self
                        .exchange_reply(headers, method, &params, out.events, ex)
                        .await;
                };
                let mut result = self
                    .exchange_reply(headers.clone(), method, &params, out.events, ex)
                    .await?;
                for _ in 0..MAX_INPUT_ROUNDS {
                    if !result.is_input_required() {
                        return Ok(result);
                    }
                    let asked = result.value_mut();
                    let responses = self.answer_input_requests(link, asked, deadline).await?;
                    let mut retry = params.clone();
                    let obj = retry.as_object_mut().expect("params are an object");
                    obj.insert("inputResponses".into(), responses);
                    match asked.get("requestState").filter(|s| s.is_string()) {
                        Some(state) => obj.insert("requestState".into(), state.clone()),
                        None => obj.remove("requestState"),
                    };
                    result = self
                        .exchange_reply(headers.clone(), method, &retry, out.events, ex)
                        .await?;
                }
                if result.is_input_required() {
                    return Err(UpstreamError::InvalidResponse(format!(
                        "asked for input more than {MAX_INPUT_ROUNDS} times in one request"
                    )));
                }
                Ok(result)
            }
            Era::Legacy => {
                let params = without_modern_meta(params);
                let slot = slots.slot(&self.name);
                let caps = out.link.map(|l| &*l.capabilities);
                for attempt in 0..2 {
                    let session = self.session_in(&slot, cred, caps).await?;
                    let headers = with_cred(self.legacy_headers(&session));
                    let ex = Exchange {
                        session: Some(&session),
                        ..ex
                    };
                    match self
                        .exchange_reply(headers, method, &params, out.events, ex)
                        .await
                    {
                        // MCP 2025-11-25 transports, "Session Management" §4: a 404 for our
                        // session id means it ended; start a new one and send the request again.
                        Err(UpstreamError::SessionGone) if attempt == 0 => {
                            let mut guard = slot.lock().await;
                            if guard.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                                *guard = None;
                            }
                        }
                        other => return other,
                    }
                }
                Err(UpstreamError::SessionGone)
            }
        }
    }

    /// This conversation's session with the upstream, opened on first use (or again after an
    /// outage of the upstream).
    async fn session_in(
        &self,
        slot: &Slot,
        cred: Option<&(HeaderName, HeaderValue)>,
        capabilities: Option<&Value>,
    ) -> Result<Arc<UpstreamSession>, UpstreamError> {
        let mut guard = slot.lock().await;
        let current = self.outages.load(Ordering::Relaxed);
        match &*guard {
            Some(s) if s.generation == current => Ok(s.clone()),
            _ => {
                let s = Arc::new(self.initialize(cred, capabilities).await?);
                *guard = Some(s.clone());
                Ok(s)
            }
        }
    }

    /// Relays the server-initiated notifications of this conversation's upstream session (its
    /// GET stream, MCP 2025-11-25 basic/transports "Listening for Messages") to `on_notification`
    /// until the stream ends. Modern upstreams and upstreams that offer no stream (405) end at once.
    pub async fn relay_notifications(
        self: &Arc<Self>,
        slots: &SessionSlots,
        link: Option<ClientLink>,
        mut on_notification: impl FnMut(Value),
    ) -> Result<(), UpstreamError> {
        if self.negotiate(None).await? != Era::Legacy {
            return Ok(());
        }
        let caps = link.as_ref().map(|l| &*l.capabilities);
        let session = self.session_in(&slots.slot(&self.name), None, caps).await?;
        self.follow_get_stream(&session, None, link, &mut on_notification, false)
            .await
    }

    /// Reads a legacy upstream session's GET stream, handing its notifications to `on` and
    /// relaying its requests to the client (`link`). A stream that drops is opened again with
    /// `Last-Event-ID` (MCP 2025-11-25 basic/transports, "Resumability and Redelivery"), after
    /// the upstream's `retry` hint or a growing pause; it ends when the upstream ends the
    /// session (404), offers no stream (405, or not an event stream), or fails
    /// [`MAX_REOPENS`] times in a row without delivering anything. With `announce_open`, `on`
    /// first hears a `notifications/subscriptions/acknowledged` of Doorman's once the stream is
    /// open (what a modern upstream's own listen stream begins with).
    async fn follow_get_stream(
        self: &Arc<Self>,
        session: &Arc<UpstreamSession>,
        cred: Option<&(HeaderName, HeaderValue)>,
        link: Option<ClientLink>,
        on: &mut impl FnMut(Value),
        mut announce_open: bool,
    ) -> Result<(), UpstreamError> {
        if session.id.is_none() {
            return Ok(());
        }
        let mut last_event_id: Option<String> = None;
        let mut retry_hint: Option<Duration> = None;
        let mut failures = 0u32;
        loop {
            let mut headers = with_credential(self.legacy_headers(session), cred);
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.remove(header::CONTENT_TYPE);
            if let Some(v) = last_event_id
                .as_deref()
                .and_then(|id| HeaderValue::from_str(id).ok())
            {
                headers.insert(LAST_EVENT_ID, v);
            }
            let mut delivered = false;
            match self
                .http
                .send(Method::GET, &self.uri, headers, Bytes::new())
                .await
            {
                Err(e) => {
                    tracing::debug!(upstream = %self.name, error = %e, "the notification stream could not be opened");
                }
                Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                    tracing::debug!(upstream = %self.name, "the upstream ended the session: no more notifications");
                    return Ok(());
                }
                Ok(resp) => {
                    let is_sse = resp
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
                    if !resp.status().is_success() || !is_sse {
                        tracing::debug!(upstream = %self.name, status = %resp.status(), "the upstream offers no notification stream");
                        return Ok(());
                    }
                    if std::mem::take(&mut announce_open) {
                        on(json!({
                            "jsonrpc": "2.0",
                            "method": "notifications/subscriptions/acknowledged",
                            "params": {},
                        }));
                    }
                    let mut stream = sse_stream::SseStream::new(resp.into_body());
                    while let Some(Ok(event)) = stream.next().await {
                        if let Some(ms) = event.retry {
                            retry_hint = Some(Duration::from_millis(ms.clamp(100, 60_000)));
                        }
                        if let Some(id) = event.id.filter(|id| !id.is_empty()) {
                            last_event_id = Some(id);
                        }
                        let Some(msg) = event
                            .data
                            .filter(|d| d.len() <= MAX_UPSTREAM_BODY)
                            .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                        else {
                            continue;
                        };
                        delivered = true;
                        match (
                            msg.get("id").cloned(),
                            msg.get("method").is_some_and(Value::is_string),
                        ) {
                            (None, true) => on(msg),
                            // Answered on the side, so notifications keep flowing while a
                            // person answers.
                            (Some(rid), true) => {
                                let (up, session, link) =
                                    (self.clone(), session.clone(), link.clone());
                                tokio::spawn(async move {
                                    let ex = Exchange {
                                        session: Some(&session),
                                        link: link.as_ref(),
                                        ..Exchange::default()
                                    };
                                    up.answer_server_request(ex, rid, &msg).await;
                                });
                            }
                            _ => {}
                        }
                    }
                }
            }
            failures = if delivered { 0 } else { failures + 1 };
            if failures >= MAX_REOPENS {
                tracing::debug!(upstream = %self.name, "the notification stream keeps failing; not reopened");
                return Ok(());
            }
            let pause = retry_hint.unwrap_or_else(|| Duration::from_millis(500 << failures.min(6)));
            tracing::debug!(upstream = %self.name, resume_after = ?last_event_id, "the notification stream ended; reopening");
            tokio::time::sleep(pause).await;
        }
    }

    /// Listens to one upstream on behalf of a 2026-07-28 client's `subscriptions/listen`
    /// (MCP 2026-07-28 basic/patterns/subscriptions): `filter` is the upstream's share of the
    /// client's filter, in the upstream's own names. A modern upstream gets a
    /// `subscriptions/listen` of its own; a legacy one a session of its own for this stream
    /// (its GET stream, and `resources/subscribe` for each URI), ended when the stream ends.
    /// `on` hears `notifications/subscriptions/acknowledged` once the upstream listens.
    /// Returns when the upstream's stream ends.
    pub async fn listen(
        self: &Arc<Self>,
        filter: &Value,
        cred: Option<&(HeaderName, HeaderValue)>,
        mut on: impl FnMut(Value),
    ) -> Result<(), UpstreamError> {
        match self.negotiate(cred).await? {
            Era::Modern => {
                let params = with_modern_meta(json!({ "notifications": filter }), json!({}));
                let headers = with_credential(
                    self.modern_headers("subscriptions/listen", &params, &[]),
                    cred,
                );
                let (tx, mut rx) = mpsc::channel::<Value>(64);
                let ex = Exchange {
                    cred,
                    ..Exchange::default()
                };
                let exchange =
                    self.exchange(headers, "subscriptions/listen", &params, Some(&tx), ex);
                tokio::pin!(exchange);
                loop {
                    tokio::select! {
                        done = &mut exchange => {
                            while let Ok(msg) = rx.try_recv() {
                                on(msg);
                            }
                            return done.map(|_| ());
                        }
                        Some(msg) = rx.recv() => on(msg),
                    }
                }
            }
            Era::Legacy => {
                let slot = Slot::default();
                let session = self.session_in(&slot, cred, None).await?;
                // The session is this stream's alone: ended with it, however it ends.
                let _end = EndOnDrop(Some((self.clone(), session.clone())));
                let uris = filter
                    .get("resourceSubscriptions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for uri in uris {
                    let headers = with_credential(self.legacy_headers(&session), cred);
                    let ex = Exchange {
                        session: Some(&session),
                        cred,
                        ..Exchange::default()
                    };
                    let params = json!({ "uri": uri });
                    let subscribed = tokio::time::timeout(
                        self.timeout,
                        self.exchange(headers, "resources/subscribe", &params, None, ex),
                    )
                    .await;
                    if !matches!(subscribed, Ok(Ok(_))) {
                        tracing::debug!(upstream = %self.name, "a resource subscription was not taken");
                    }
                }
                self.follow_get_stream(&session, cred, None, &mut on, true)
                    .await
            }
        }
    }

    /// A request from the upstream (sampling, elicitation, roots, ping): `ping` is answered
    /// here; the others are asked of the client when it is a stateful client that declared the
    /// capability, else answered with the spec's error. The answer goes back to the upstream
    /// under the upstream's own id.
    async fn answer_server_request(&self, ex: Exchange<'_>, rid: Value, msg: &Value) {
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        let answer = match (method, ex.link) {
            ("ping", _) => Ok(json!({})),
            (_, Some(link)) => {
                if let Some(d) = ex.deadline {
                    d.pause();
                }
                let answer = link.ask(method, params).await;
                if let Some(d) = ex.deadline {
                    d.resume();
                }
                answer
            }
            (_, None) => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!(
                    "Method not found: Doorman relays {method} only to clients in a stateful session"
                ),
            )),
        };
        let Some(session) = ex.session else { return };
        let body = match answer {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": rid, "result": result }),
            Err(e) => {
                tracing::debug!(upstream = %self.name, method, error = %e.message, "answered an upstream's request with an error");
                json!({ "jsonrpc": "2.0", "id": rid, "error": e.to_json() })
            }
        };
        let headers = with_credential(self.legacy_headers(session), ex.cred);
        let post = self
            .http
            .send(Method::POST, &self.uri, headers, body.to_string().into());
        match tokio::time::timeout(self.timeout, post).await {
            Ok(Ok(resp)) if resp.status().is_success() => {}
            Ok(Ok(resp)) => {
                tracing::warn!(upstream = %self.name, method, status = %resp.status(), "the upstream refused the client's answer")
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.name, method, error = %e, "could not send the client's answer upstream")
            }
            Err(_) => {
                tracing::warn!(upstream = %self.name, method, "could not send the client's answer upstream: timeout")
            }
        }
    }

    /// Asks a stateful client each of an `InputRequiredResult`'s `inputRequests`, in order;
    /// the answers keyed as asked (MCP 2026-07-28 basic/patterns/mrtr, "InputResponses").
    async fn answer_input_requests(
        &self,
        link: &ClientLink,
        result: &Value,
        deadline: &Deadline,
    ) -> Result<Value, UpstreamError> {
        let mut responses = serde_json::Map::new();
        let requests = result
            .get("inputRequests")
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        for (key, request) in requests {
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
            deadline.pause();
            let answer = link.ask(method, params).await;
            deadline.resume();
            responses.insert(key.clone(), answer.map_err(UpstreamError::Rpc)?);
        }
        Ok(Value::Object(responses))
    }

    /// Learns the upstream's era, probing with `server/discover` when it is not known yet.
    async fn negotiate(
        &self,
        cred: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<Era, UpstreamError> {
        if let Some(era) = self.era() {
            return Ok(era);
        }
        let params = with_modern_meta(json!({}), json!({}));
        let headers = with_credential(self.modern_headers("server/discover", &params, &[]), cred);
        let era = match self
            .exchange(
                headers,
                "server/discover",
                &params,
                None,
                Exchange::default(),
            )
            .await
        {
            Ok(result) => {
                let speaks_modern = result
                    .get("supportedVersions")
                    .and_then(Value::as_array)
                    .is_some_and(|v| v.iter().any(|v| v == MODERN_VERSION));
                if speaks_modern {
                    Era::Modern
                } else {
                    Era::Legacy
                }
            }
            // A refusal of the credential says nothing about the era: learn it next time.
            Err(
                e @ (UpstreamError::Unreachable(_)
                | UpstreamError::Timeout(_)
                | UpstreamError::Unauthorized { .. }
                | UpstreamError::InsufficientScope { .. }),
            ) => return Err(e),
            // Any other answer is not evidence of a modern server: fall back to `initialize`.
            Err(_) => Era::Legacy,
        };
        tracing::info!(upstream = %self.name, era = ?era, "negotiated the upstream's protocol generation");
        *self.era.write().expect("era lock") = Some(era);
        Ok(era)
    }

    /// The `initialize` handshake (MCP 2025-11-25 basic/lifecycle, "Initialization").
    /// `capabilities`: the client's, as far as Doorman relays them ([`super::asks::relayable`]).
    async fn initialize(
        &self,
        cred: Option<&(HeaderName, HeaderValue)>,
        capabilities: Option<&Value>,
    ) -> Result<UpstreamSession, UpstreamError> {
        let latest = LEGACY_VERSIONS[LEGACY_VERSIONS.len() - 1];
        let params = json!({
            "protocolVersion": latest,
            "capabilities": capabilities.cloned().unwrap_or_else(|| json!({})),
            "clientInfo": { "name": "doorman", "version": env!("CARGO_PKG_VERSION") },
        });
        let mut headers = with_credential(self.base_headers(), cred);
        headers.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-11-25"),
        );
        let (result, session_id) = self
            .exchange_with_session(headers, "initialize", &params)
            .await?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .filter(|v| LEGACY_VERSIONS.contains(v))
            .ok_or_else(|| {
                UpstreamError::InvalidResponse(format!(
                    "initialize negotiated an unsupported protocol version: {}",
                    result.get("protocolVersion").unwrap_or(&Value::Null)
                ))
            })?
            .to_owned();
        let session = UpstreamSession {
            id: session_id,
            version,
            generation: self.outages.load(Ordering::Relaxed),
        };
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let resp = self
            .http
            .send(
                Method::POST,
                &self.uri,
                with_credential(self.legacy_headers(&session), cred),
                note.to_string().into(),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Http(resp.status()));
        }
        tracing::debug!(upstream = %self.name, version = %session.version, "opened an upstream session");
        Ok(session)
    }

    /// Ends an upstream session (best effort: the upstream also expires idle sessions).
    pub async fn end_session(&self, session: &UpstreamSession) {
        if session.id.is_none() {
            return;
        }
        let delete = self.http.send(
            Method::DELETE,
            &self.uri,
            self.legacy_headers(session),
            Bytes::new(),
        );
        match tokio::time::timeout(self.timeout, delete).await {
            Ok(Ok(_)) => tracing::debug!(upstream = %self.name, "ended an upstream session"),
            Ok(Err(e)) => {
                tracing::debug!(upstream = %self.name, error = %e, "could not end an upstream session")
            }
            Err(_) => {
                tracing::debug!(upstream = %self.name, "could not end an upstream session: timeout")
            }
        }
    }

    fn base_headers(&self) -> HeaderMap {
        let mut h = self.headers.clone();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    fn legacy_headers(&self, session: &UpstreamSession) -> HeaderMap {
        let mut h = self.base_headers();
        if let Ok(v) = HeaderValue::from_str(&session.version) {
            h.insert(PROTOCOL_VERSION, v);
        }
        if let Some(id) = session
            .id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            h.insert(SESSION_ID, id);
        }
        h
    }

    /// MCP 2026-07-28 streamable-http, "Request Metadata": the body's routing fields mirrored
    /// into headers.
    fn modern_headers(
        &self,
        method: &str,
        params: &Value,
        extra: &[(HeaderName, HeaderValue)],
    ) -> HeaderMap {
        let mut h = self.base_headers();
        h.insert(PROTOCOL_VERSION, HeaderValue::from_static(MODERN_VERSION));
        if let Ok(v) = HeaderValue::from_str(method) {
            h.insert(METHOD, v);
        }
        let name = match method {
            "tools/call" | "prompts/get" => params.get("name"),
            "resources/read" => params.get("uri"),
            _ => None,
        };
        if let Some(v) = name
            .and_then(Value::as_str)
            .and_then(|n| HeaderValue::from_str(&encode_header_value(n)).ok())
        {
            h.insert(NAME, v);
        }
        for (k, v) in extra {
            h.append(k.clone(), v.clone());
        }
        h
    }

    /// POSTs one request; returns its id (to match the answer) and the raw answer.
    async fn post(
        &self,
        headers: HeaderMap,
        method: &str,
        params: &Value,
    ) -> Result<(u64, Response<Incoming>), UpstreamError> {
        /// The request as sent: serialized straight from its parts.
        #[derive(serde::Serialize)]
        struct Envelope<'a> {
            jsonrpc: &'static str,
            id: u64,
            method: &'a str,
            params: &'a Value,
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&Envelope {
            jsonrpc: "2.0",
            id,
            method,
            params,
        })
        .expect("a JSON value always serializes");
        let resp = self
            .http
            .send(Method::POST, &self.uri, headers, body.into())
            .await?;
        Ok((id, resp))
    }

    /// `post`, keeping the session id the upstream issued with its answer.
    async fn exchange_with_session(
        &self,
        headers: HeaderMap,
        method: &str,
        params: &Value,
    ) -> Result<(Value, Option<String>), UpstreamError> {
        let (id, resp) = self.post(headers, method, params).await?;
        let session_id = resp
            .headers()
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let result = self
            .read_response(resp, id, None, Exchange::default())
            .await?
            .into_value();
        Ok((result, session_id))
    }

    /// POSTs one request and reads its result (JSON, or an SSE stream ending with it).
    async fn exchange(
        &self,
        headers: HeaderMap,
        method: &str,
        params: &Value,
        events: Option<&mpsc::Sender<Value>>,
        ex: Exchange<'_>,
    ) -> Result<Value, UpstreamError> {
        self.exchange_reply(headers, method, params, events, ex)
            .await
            .map(Reply::into_value)
    }

    /// [`Self::exchange`], the result passed through unparsed where `ex.passes` allows.
    async fn exchange_reply(
        &self,
        headers: HeaderMap,
        method: &str,
        params: &Value,
        events: Option<&mpsc::Sender<Value>>,
        ex: Exchange<'_>,
    ) -> Result<Reply, UpstreamError> {
        let (id, resp) = self.post(headers, method, params).await?;
        // Dropped before the answer (the client cancelled or went away): a legacy upstream is
        // told, as MCP 2025-11-25 basic/utilities/cancellation asks; a modern one learns it from
        // the closed stream (2026-07-28 basic/patterns/cancellation).
        let mut cancel = CancelOnDrop {
            up: self,
            id,
            ex,
            armed: ex.session.is_some_and(|s| s.id.is_some()),
        };
        let result = self.read_response(resp, id, events, ex).await;
        cancel.armed = false;
        result
    }

    async fn read_response(
        &self,
        resp: Response<Incoming>,
        id: u64,
        events: Option<&mpsc::Sender<Value>>,
        ex: Exchange<'_>,
    ) -> Result<Reply, UpstreamError> {
        let status = resp.status();
        if status == StatusCode::NOT_FOUND && ex.session.is_some_and(|s| s.id.is_some()) {
            return Err(UpstreamError::SessionGone);
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == StatusCode::UNAUTHORIZED {
            return Err(UpstreamError::Unauthorized {
                www_authenticate: challenge,
            });
        }
        if status == StatusCode::FORBIDDEN
            && let Some(c) = challenge.as_deref()
            && auth_param(c, "error").as_deref() == Some("insufficient_scope")
        {
            // RFC 6750 §3.1: `scope` names the scopes the request needs.
            let scopes = auth_param(c, "scope")
                .map(|s| {
                    s.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            return Err(UpstreamError::InsufficientScope { scopes });
        }
        if !status.is_success() {
            let body = read_body(resp.into_body(), MAX_UPSTREAM_BODY)
                .await
                .unwrap_or_default();
            // A JSON-RPC error body says more than the status: pass the upstream's error on.
            return match serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(RpcError::from_json))
            {
                Some(e) => Err(UpstreamError::Rpc(e)),
                None => Err(UpstreamError::Http(status)),
            };
        }
        if content_type.starts_with("text/event-stream") {
            let mut stream = sse_stream::SseStream::new(resp.into_body());
            while let Some(event) = stream.next().await {
                let event = event.map_err(|e| {
                    UpstreamError::InvalidResponse(format!("broken event stream: {e}"))
                })?;
                let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                    continue;
                };
                if data.len() > MAX_UPSTREAM_BODY {
                    return Err(UpstreamError::InvalidResponse("event too large".into()));
                }
                let data = Bytes::from(data);
                // Notifications (no `result`) are not read twice.
                if ex.passes
                    && memchr::memmem::find(&data, b"\"result\"").is_some()
                    && let Some(passed) = Passed::read(&data, id)
                {
                    return Ok(Reply::Passed(passed));
                }
                let msg: Value = serde_json::from_slice(&data)
                    .map_err(|_| UpstreamError::InvalidResponse("an event is not JSON".into()))?;
                if let Some(done) = self.on_message(msg, id, events, ex).await {
                    return done;
                }
            }
            return Err(UpstreamError::InvalidResponse(
                "the event stream ended before the response".into(),
            ));
        }
        if content_type.starts_with("application/json") {
            let body = read_body(resp.into_body(), MAX_UPSTREAM_BODY).await?;
            if ex.passes
                && let Some(passed) = Passed::read(&body, id)
            {
                return Ok(Reply::Passed(passed));
            }
            let msg: Value = serde_json::from_slice(&body)
                .map_err(|_| UpstreamError::InvalidResponse("the body is not JSON".into()))?;
            return match self.on_message(msg, id, None, ex).await {
                Some(done) => done,
                None => Err(UpstreamError::InvalidResponse(
                    "the body is not the response to the request".into(),
                )),
            };
        }
        Err(UpstreamError::InvalidResponse(format!(
            "unexpected content type {:?}",
            if content_type.is_empty() {
                "none"
            } else {
                &content_type
            }
        )))
    }

    /// Handles one message from the upstream; `Some` once the request's response arrived.
    async fn on_message(
        &self,
        msg: Value,
        id: u64,
        events: Option<&mpsc::Sender<Value>>,
        ex: Exchange<'_>,
    ) -> Option<Result<Reply, UpstreamError>> {
        let has_method = msg.get("method").is_some_and(Value::is_string);
        match (msg.get("id"), has_method) {
            (Some(rid), false) => {
                if rid.as_u64() != Some(id) {
                    return Some(Err(UpstreamError::InvalidResponse(
                        "a response with another id".into(),
                    )));
                }
                let Value::Object(mut fields) = msg else {
                    unreachable!("a message with an id is an object")
                };
                if let Some(result) = fields.remove("result") {
                    return Some(Ok(Reply::Value(result)));
                }
                Some(match fields.get("error").and_then(RpcError::from_json) {
                    Some(e) => Err(UpstreamError::Rpc(e)),
                    None => Err(UpstreamError::InvalidResponse(
                        "a response with neither result nor error".into(),
                    )),
                })
            }
            (None, true) => {
                if let Some(tx) = events {
                    let _ = tx.send(msg).await;
                }
                None
            }
            (Some(rid), true) => {
                self.answer_server_request(ex, rid.clone(), &msg).await;
                None
            }
            (None, false) => Some(Err(UpstreamError::InvalidResponse(
                "not a JSON-RPC message".into(),
            ))),
        }
    }
}

/// Ends an upstream session made for one stream when the stream ends (or is dropped).
struct EndOnDrop(Option<(Arc<Upstream>, Arc<UpstreamSession>)>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some((up, session)) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move { up.end_session(&session).await });
        }
    }
}

/// Sends `notifications/cancelled` for a request to a legacy upstream when its exchange is
/// dropped before the answer arrived.
struct CancelOnDrop<'a> {
    up: &'a Upstream,
    id: u64,
    ex: Exchange<'a>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        let Some(session) = self.ex.session.filter(|_| self.armed) else {
            return;
        };
        let note = json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": self.id, "reason": "the client cancelled the request" },
        });
        let headers = with_credential(self.up.legacy_headers(session), self.ex.cred);
        let (http, uri, name, timeout) = (
            self.up.http.clone(),
            self.up.uri.clone(),
            self.up.name.clone(),
            self.up.timeout,
        );
        tokio::spawn(async move {
            let sent = http.send(Method::POST, &uri, headers, note.to_string().into());
            match tokio::time::timeout(timeout, sent).await {
                Ok(Ok(_)) => {
                    tracing::debug!(upstream = %name, "told the upstream a request was cancelled")
                }
                _ => {
                    tracing::debug!(upstream = %name, "could not tell the upstream a request was cancelled")
                }
            }
        });
    }
}

/// Sets Doorman's own per-request fields (MCP 2026-07-28 basic/index, "Per-request protocol fields").
fn with_modern_meta(mut params: Value, capabilities: Value) -> Value {
    let params_obj = params.as_object_mut().expect("params are an object");
    let meta = params_obj.entry("_meta").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    let meta = meta.as_object_mut().expect("just made an object");
    meta.insert(META_PROTOCOL_VERSION.into(), json!(MODERN_VERSION));
    meta.insert(
        META_CLIENT_INFO.into(),
        json!({ "name": "doorman", "version": env!("CARGO_PKG_VERSION") }),
    );
    meta.insert(META_CLIENT_CAPABILITIES.into(), capabilities);
    params
}

/// Removes the 2026-07-28 envelope keys before a request goes to a legacy upstream.
fn without_modern_meta(mut params: Value) -> Value {
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            params
                .as_object_mut()
                .expect("params are an object")
                .remove("_meta");
        }
    }
    params
}

/// MCP 2026-07-28 streamable-http, "Value Encoding": plain when header-safe, else the base64
/// sentinel form.
/// Adds the resource credential to an upstream request's headers.
fn with_credential(mut h: HeaderMap, cred: Option<&(HeaderName, HeaderValue)>) -> HeaderMap {
    if let Some((name, value)) = cred {
        h.insert(name.clone(), value.clone());
    }
    h
}

pub fn encode_header_value(v: &str) -> String {
    let safe = !v.is_empty()
        && v.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !v.starts_with(' ')
        && !v.ends_with(' ')
        && (!v.starts_with("=?base64?") || !v.ends_with("?="));
    if safe {
        v.to_owned()
    } else {
        format!("=?base64?{}?=", STANDARD.encode(v))
    }
}

/// Decodes a header value that may use the base64 sentinel form.
pub fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => String::from_utf8(STANDARD.decode(b64).ok()?).ok(),
        None => Some(v.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_use_the_sentinel_only_when_needed() {
        assert_eq!(encode_header_value("get_weather"), "get_weather");
        assert_eq!(
            encode_header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(encode_header_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(
            encode_header_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
        for v in [
            "get_weather",
            "Hello, 世界",
            " padded ",
            "line1\nline2",
            "=?base64?literal?=",
        ] {
            assert_eq!(
                decode_header_value(&encode_header_value(v)).as_deref(),
                Some(v)
            );
        }
        assert_eq!(decode_header_value("=?base64?!!!?="), None);
    }

    #[test]
    fn envelope_keys_are_set_for_modern_and_removed_for_legacy() {
        let p = with_modern_meta(
            json!({"name":"x","_meta":{"progressToken":7}}),
            json!({"elicitation":{}}),
        );
        assert_eq!(p["_meta"][META_PROTOCOL_VERSION], MODERN_VERSION);
        assert_eq!(p["_meta"]["progressToken"], 7);
        assert_eq!(
            p["_meta"][META_CLIENT_CAPABILITIES],
            json!({"elicitation":{}})
        );
        let legacy = without_modern_meta(p);
        assert_eq!(legacy["_meta"], json!({"progressToken":7}));
        let bare = without_modern_meta(with_modern_meta(json!({}), json!({})));
        assert_eq!(bare, json!({}));
    }

    #[test]
    fn upstream_failures_name_the_upstream() {
        let e = UpstreamError::Timeout(Duration::from_secs(2)).to_rpc("slowpoke");
        assert_eq!(e.code, code::UPSTREAM_FAILED);
        assert!(
            e.message
                .contains("upstream 'slowpoke' did not answer within 2s"),
            "{}",
            e.message
        );
        assert_eq!(e.data.unwrap()["reason"], "timeout");
        let passthrough = UpstreamError::Rpc(RpcError::new(-32602, "bad")).to_rpc("x");
        assert_eq!(passthrough, RpcError::new(-32602, "bad"));
    }
}
