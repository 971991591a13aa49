//! Layer 2 in the request path: the credential an upstream tied to a resource receives, the
//! connect prompt in the form the client understands, and Doorman's built-in tools.
//!
//! Prompt forms, chosen per request from the client's declared capabilities:
//! - 2025-11-25 session that declared `elicitation.url`: error `-32042` with the URL
//!   elicitation (MCP 2025-11-25 client/elicitation, "URL Elicitation Required Error"), and
//!   `notifications/elicitation/complete` on that session once the person connected;
//! - 2026-07-28 client that declared `elicitation.url`: an `InputRequiredResult` with the URL
//!   request and a sealed `requestState` (MCP 2026-07-28 basic/patterns/mrtr), checked on the
//!   retry for person, method, name and expiry;
//! - any other client: a tool result with `isError: true` whose text carries the link (for
//!   `prompts/get` and `resources/read`, which have no such result: error `-32011`);
//! - the re-authorization cascade, where the resource's `prompt` asks for it (`reauthorize`, or
//!   `auto` for a web app that declared no URL elicitation): HTTP `401` with an `invalid_token`
//!   challenge (RFC 6750 §3.1); the client's refresh is refused while the prompt waits
//!   (`sign_in/token.rs`), so it runs its authorization flow at Doorman, which takes the
//!   browser through the resource before it issues the code (`sign_in/consent.rs::finish`).
//!   Where the answer cannot be a `401` (an SSE stream already begun, a batch), the client gets
//!   error `-32011` with the link.

use serde_json::{Value, json};

use super::caller::PromptForm;
use super::{
    caller::{CallRecord, Caller},
    jsonrpc::{Reply, RpcError, code},
    upstream::{Outbound, SessionSlots, Upstream, UpstreamError},
};
use crate::{
    config::{Binding, PromptChoice},
    crypto::KeyRing,
    sign_in::AuthServer,
    vault::{Lifetime, Need, Prompt, Vault, oauth::ResourceClient},
};

/// The clients `prompt = "auto"` gives the re-authorization cascade: web apps, known by their
/// redirect URIs (`sign_in.web_app_redirect_uris`).
pub struct WebApps {
    pub auth: std::sync::Arc<AuthServer>,
    pub redirect_uris: Vec<url::Url>,
}

impl WebApps {
    async fn includes(&self, client_id: &str) -> bool {
        if self.redirect_uris.is_empty() {
            return false;
        }
        match self.auth.clients.resolve(client_id).await {
            Ok(c) => c
                .redirect_uris
                .iter()
                .any(|u| crate::config::is_web_app(&self.redirect_uris, u)),
            Err(_) => false,
        }
    }
}

/// The prompt form for this resource and client: the resource's `prompt`, then what the client
/// declared. Never the cascade for a connection bound to one call (the resource's binding or a
/// policy's): it comes back through the client's authorization, not with the call that asked.
async fn form_for(
    rc: &ResourceClient,
    who: &Caller,
    lifetime: Lifetime,
    web_apps: Option<&WebApps>,
) -> PromptForm {
    // A call-bound connection, or a key pasted on Doorman's own page, never comes back through
    // the client's authorization.
    let one_call =
        Vault::lifetime(rc, lifetime).0 == Binding::Call || rc.resource.api_key.is_some();
    match rc.resource.prompt {
        PromptChoice::Link => PromptForm::Text,
        PromptChoice::Reauthorize if !one_call => PromptForm::Reauthorize,
        PromptChoice::Reauthorize | PromptChoice::Elicitation => who.form,
        PromptChoice::Auto if who.form != PromptForm::Text || one_call => who.form,
        PromptChoice::Auto => match web_apps {
            Some(w) if w.includes(&who.client_id).await => PromptForm::Reauthorize,
            _ => PromptForm::Text,
        },
    }
}

/// `requestState` values Doorman made start with this (others are an upstream's, passed on).
const STATE_PREFIX: &str = "doorman1.";
const STATE_AAD: &str = "doorman:request-state";
/// How long a `requestState` may be echoed back.
const STATE_LIFETIME_MS: i64 = 15 * 60 * 1000;
/// How long a retry whose person accepted waits for the connection to appear.
const ACCEPTED_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What Doorman's own `requestState` says.
#[derive(serde::Serialize, serde::Deserialize)]
struct RequestState {
    /// The person it was made for.
    u: String,
    /// The prompt's link id.
    p: String,
    r: String,
    m: String,
    n: String,
    /// Expiry (ms).
    x: i64,
}

fn seal_state(ring: &KeyRing, s: &RequestState) -> String {
    let json = serde_json::to_vec(s).expect("state serializes");
    format!("{STATE_PREFIX}{}", ring.seal(&json, STATE_AAD))
}

fn invalid_state(why: &str) -> RpcError {
    tracing::warn!(reason = why, "requestState refused");
    RpcError::new(code::INVALID_PARAMS, "Invalid or expired requestState")
        .with_data(json!({ "reason": "invalid_request_state" }))
}

/// What the retry of a connect prompt carried.
struct Retry {
    prompt_id: String,
    /// The person's answer to the elicitation: `accept`, `decline`, `cancel`.
    action: Option<String>,
}

/// Takes Doorman's `requestState` (and the answers to its input requests) out of the params,
/// checked (MCP 2026-07-28 basic/patterns/mrtr, "Server Requirements" 4 and 5).
fn take_retry(
    vault: &Vault,
    who: &Caller,
    method: &str,
    name: &str,
    resource: &str,
    params: &mut Value,
) -> Result<Option<Retry>, RpcError> {
    let Some(obj) = params.as_object_mut() else {
        return Ok(None);
    };
    let Some(state) = obj
        .get("requestState")
        .and_then(Value::as_str)
        .filter(|s| s.starts_with(STATE_PREFIX))
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    let responses = obj.remove("inputResponses");
    obj.remove("requestState");
    let sealed = &state[STATE_PREFIX.len()..];
    let plain = vault
        .ring
        .open(sealed, STATE_AAD)
        .map_err(|_| invalid_state("does not open (tampered, or another deployment's)"))?;
    let s: RequestState =
        serde_json::from_slice(&plain).map_err(|_| invalid_state("unreadable"))?;
    if s.u != who.user_id {
        return Err(invalid_state("made for another person"));
    }
    if s.x <= vault.now_ms() {
        return Err(invalid_state("expired"));
    }
    if s.m != method || s.n != name || s.r != resource {
        return Err(invalid_state("made for another request"));
    }
    let action = responses
        .as_ref()
        .and_then(|r| r.get("connect"))
        .and_then(|c| c.get("action"))
        .and_then(Value::as_str)
        .map(String::from);
    Ok(Some(Retry {
        prompt_id: s.p,
        action,
    }))
}

/// Forwards one request to an upstream tied to a resource, with the person's credential; or
/// answers with the connect prompt.
#[allow(clippy::too_many_arguments)]
pub async fn forward_with_connection(
    vault: &Vault,
    rc: &ResourceClient,
    up: &Upstream,
    slots: &SessionSlots,
    method: &str,
    mut params: Value,
    out: &Outbound<'_>,
    who: &Caller,
    rec: &mut CallRecord,
    mut lifetime: Lifetime,
    web_apps: Option<&WebApps>,
) -> Result<Reply, RpcError> {
    rec.resource = Some(rc.name().to_owned());
    let service = who.service_client();
    if service.is_some() {
        // A service client has no conversation to bind to and no person to ask: it uses the
        // resource's shared credential, or the connection an operator made for it
        // (`doorman connections add --client`), which is bound to it as a person's would be.
        lifetime.binding = Some(crate::config::Binding::User);
    }
    let name_field = if method == "resources/read" {
        "uri"
    } else {
        "name"
    };
    let name = params
        .get(name_field)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let failed = |e: anyhow::Error| {
        tracing::error!(error = %e, "layer 2 store failure");
        RpcError::new(
            code::INTERNAL_ERROR,
            "Doorman could not read its vault; try again",
        )
    };
    let retry = take_retry(vault, who, method, &name, rc.name(), &mut params)?;
    let mut preferred = None;
    if let Some(r) = &retry {
        if matches!(r.action.as_deref(), Some("decline" | "cancel")) {
            return declined(method, rc).map(Reply::from);
        }
        preferred = connection_of_prompt(vault, &r.prompt_id, r.action.is_some())
            .await
            .map_err(failed)?;
    }
    let got = vault
        .credential(&who.holder(), rc, preferred.as_deref(), lifetime)
        .await
        .map_err(failed)?;
    let got = match got {
        // Enterprise-managed authorization: the company's IdP vouches for the person at the
        // resource, so the connection is made without asking them. Any failure is audited and
        // the person gets the prompt as usual.
        Err(Need::Missing | Need::TooOld | Need::Broken) if service.is_none() => {
            match id_jag_connection(vault, rc, who, lifetime, web_apps).await {
                Some(Ok(cred)) => Ok(cred),
                Some(Err(why)) => {
                    tracing::info!(resource = %rc.name(), user = %who.user_id, reason = %why, "no connection from an ID-JAG; the person is asked");
                    rec.detail = Some(format!("ID-JAG: {why}"));
                    got
                }
                None => got,
            }
        }
        other => other,
    };
    let need = match got {
        Ok(cred) => {
            rec.account = Some(cred.account.clone());
            let with = Outbound {
                credential: Some(&cred.header),
                ..*out
            };
            if method == "tools/call"
                && name == CONNECT_ENTRY
                && let Some(done) = connected(rc, up, slots, &with, &cred.account).await
            {
                return Ok(done.into());
            }
            let outcome = up.request(slots, method, params.clone(), &with).await;
            if let Some(spent) = cred.spent {
                // `binding = "call"`: used once, now revoked at the resource.
                vault.discard(vec![spent], "one call made").await;
            }
            match outcome {
                Ok(v) => return Ok(v),
                Err(UpstreamError::Unauthorized { .. }) => {
                    tracing::info!(upstream = %up.name, resource = %rc.name(), account = %cred.account, "the upstream refused the connection's token");
                    Need::Rejected
                }
                Err(UpstreamError::InsufficientScope { scopes }) => {
                    // Ask for the union: what the connection has, what the resource wants,
                    // and what the upstream now asks for.
                    let mut all = cred.scopes.clone();
                    for s in rc.resource.scopes.iter().chain(scopes.iter()) {
                        if !all.contains(s) {
                            all.push(s.clone());
                        }
                    }
                    Need::MoreScopes(all)
                }
                Err(e) => {
                    if !matches!(e, UpstreamError::Rpc(_)) {
                        tracing::warn!(upstream = %up.name, error = %e, method, "upstream request failed");
                    }
                    return Err(e.to_rpc(&up.name));
                }
            }
        }
        Err(Need::Unavailable(why)) => {
            // Not the person's to fix: an error now, the same connection at the next call.
            rec.detail = Some(format!("authorization server unavailable: {why}"));
            return Err(RpcError::new(
                code::UPSTREAM_FAILED,
                format!(
                    "{} could not renew your connection right now ({why}); try again in a moment. Your connection is kept.",
                    rc.resource.display_name
                ),
            )
            .with_data(serde_json::json!({
                "resource": rc.name(),
                "reason": "authorization_server_unavailable",
            })));
        }
        Err(need) => need,
    };
    if let Some(client) = service {
        rec.decision = Some("connection_required");
        rec.detail = Some(format!(
            "service client has no usable connection ({need:?})"
        ));
        return Err(RpcError::new(
            code::CONNECTION_REQUIRED,
            format!(
                "The service client {client:?} has no usable {} connection, and no person can be asked to connect one. An operator makes one with `doorman connections add --client {client} --resource {}`.",
                rc.resource.display_name,
                rc.name()
            ),
        )
        .with_data(json!({ "resource": rc.name(), "reason": "service_client_connection_missing" })));
    }
    let form = form_for(rc, who, lifetime, web_apps).await;
    let prompt = if form == PromptForm::Reauthorize {
        vault
            .cascade_prompt(&who.holder(), &who.client_id, rc, &need, lifetime)
            .await
    } else {
        vault
            .prompt(&who.holder(), rc, &need, lifetime)
            .await
            .map(Some)
    }
    .map_err(failed)?;
    tracing::info!(
        resource = %rc.name(),
        user = %who.user_id,
        reason = ?need,
        form = form.name(),
        method,
        "connect prompt"
    );
    rec.decision = Some("connection_required");
    crate::metrics::get()
        .connect_prompts
        .get_or_create(&crate::metrics::PromptLabels {
            form: form.name().to_owned(),
            resource: rc.name().to_owned(),
        })
        .inc();
    match prompt {
        Some(p) => prompt_answer(vault, rc, who, form, method, &name, &p).map(Reply::from),
        None => Err(reauthorize(vault, rc, None)),
    }
}

/// A connection from an ID-JAG, for a resource with `[resources.id_jag]` (`None`: it has none):
/// the IdP gives Doorman an ID-JAG for the person (`sign_in::id_jag::obtain`), the resource's
/// authorization server redeems it (`Vault::connect_with_id_jag`).
async fn id_jag_connection(
    vault: &Vault,
    rc: &ResourceClient,
    who: &Caller,
    lifetime: Lifetime,
    web_apps: Option<&WebApps>,
) -> Option<Result<crate::vault::Credential, String>> {
    let j = rc.resource.id_jag.as_ref()?;
    let auth = &web_apps?.auth;
    let scope = rc.resource.scopes.join(" ");
    let jag = match crate::sign_in::id_jag::obtain(
        auth,
        &who.user_id,
        &j.provider,
        &j.audience,
        j.resource.as_deref(),
        Some(&scope),
    )
    .await
    {
        Ok(jag) => jag,
        Err(why) => return Some(Err(why)),
    };
    use secrecy::ExposeSecret;
    Some(
        vault
            .connect_with_id_jag(&who.holder(), rc, lifetime, jag.expose_secret())
            .await,
    )
}

/// The re-authorization cascade's answer: `-32011` with a `401` challenge (`transport.rs`)
/// naming Doorman's protected resource metadata (RFC 9728 §5.1), which makes the client run
/// its authorization flow again (RFC 6750 §3.1 `invalid_token`). The link of a new prompt comes
/// too, for a person reading it; a prompt renewed for the same trip has none.
fn reauthorize(vault: &Vault, rc: &ResourceClient, prompt: Option<&Prompt>) -> RpcError {
    let display = &rc.resource.display_name;
    let mut message = format!(
        "{display} must be authorized: sign in to this application again, and Doorman takes you to {display} on the way"
    );
    let mut data = json!({ "resource": rc.name() });
    if let Some(p) = prompt {
        message.push_str(&format!(", or open {}", p.url));
        data["url"] = json!(p.url);
    }
    let mut e = RpcError::new(code::CONNECTION_REQUIRED, message).with_data(data);
    e.challenge = Some(format!(
        "Bearer error=\"invalid_token\", error_description=\"{} must be authorized: authorize again\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        rc.name(),
        vault.issuer
    ));
    e
}

/// The answer to `{upstream}_connect` once the person is connected: which tools they now have.
/// `None` when the upstream has a `connect` tool of its own (then the call is its).
async fn connected(
    rc: &ResourceClient,
    up: &Upstream,
    slots: &SessionSlots,
    out: &Outbound<'_>,
    account: &str,
) -> Option<Value> {
    let tools = up
        .list_all(slots, "tools/list", &json!({}), out, "tools")
        .await
        .ok()?;
    let names: Vec<String> = tools
        .iter()
        .filter_map(|t| t.get("name")?.as_str())
        .map(|n| format!("{}_{n}", up.name))
        .collect();
    if names
        .iter()
        .any(|n| n[up.name.len() + 1..] == *CONNECT_ENTRY)
    {
        return None;
    }
    let listed = if names.is_empty() {
        "none are listed for you yet".to_owned()
    } else {
        names.join(", ")
    };
    Some(json!({
        "content": [{ "type": "text", "text": format!(
            "Your {} account {account} is connected. The {} tools in your tool list now: {listed}.",
            rc.resource.display_name, up.name
        ) }],
        "isError": false,
    }))
}

/// The connection a prompt produced; on an accepted retry, waits for the person to finish.
async fn connection_of_prompt(
    vault: &Vault,
    prompt_id: &str,
    answered: bool,
) -> anyhow::Result<Option<String>> {
    let deadline = tokio::time::Instant::now() + ACCEPTED_WAIT;
    loop {
        let Some(p) = vault.prompt_row(prompt_id).await? else {
            return Ok(None);
        };
        if p.connection_id.is_some() || !answered || tokio::time::Instant::now() >= deadline {
            return Ok(p.connection_id);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

fn declined(method: &str, rc: &ResourceClient) -> Result<Value, RpcError> {
    let text = format!(
        "The {} account was not connected (declined), so this could not run.",
        rc.resource.display_name
    );
    if method == "tools/call" {
        Ok(json!({ "content": [{ "type": "text", "text": text }], "isError": true }))
    } else {
        Err(RpcError::new(code::CONNECTION_REQUIRED, text))
    }
}

fn prompt_answer(
    vault: &Vault,
    rc: &ResourceClient,
    who: &Caller,
    form: PromptForm,
    method: &str,
    name: &str,
    prompt: &Prompt,
) -> Result<Value, RpcError> {
    match form {
        PromptForm::UrlElicitationError => Err(RpcError::new(
            code::URL_ELICITATION_REQUIRED,
            prompt.message.clone(),
        )
        .with_data(json!({
            "elicitations": [{
                "mode": "url",
                "elicitationId": prompt.elicitation_id,
                "url": prompt.url,
                "message": prompt.message,
            }]
        }))),
        PromptForm::InputRequired => {
            let state = seal_state(
                &vault.ring,
                &RequestState {
                    u: who.user_id.to_owned(),
                    p: prompt.id.clone(),
                    r: rc.name().to_owned(),
                    m: method.to_owned(),
                    n: name.to_owned(),
                    x: vault.now_ms() + STATE_LIFETIME_MS,
                },
            );
            Ok(json!({
                "resultType": "input_required",
                "inputRequests": {
                    "connect": {
                        "method": "elicitation/create",
                        "params": { "mode": "url", "url": prompt.url, "message": prompt.message },
                    }
                },
                "requestState": state,
            }))
        }
        PromptForm::Text if method == "tools/call" => Ok(json!({
            "content": [{ "type": "text", "text": prompt.message }],
            "isError": true,
        })),
        PromptForm::Text => Err(
            RpcError::new(code::CONNECTION_REQUIRED, prompt.message.clone())
                .with_data(json!({ "resource": rc.name(), "url": prompt.url })),
        ),
        PromptForm::Reauthorize => Err(reauthorize(vault, rc, Some(prompt))),
    }
}

/// The tool shown for an upstream whose tools a person sees only once connected (as clients see
/// it: `{upstream}_connect`).
pub const CONNECT_ENTRY: &str = "connect";

/// The built-in tools' names.
pub const WHOAMI: &str = "doorman_whoami";
pub const CONNECT: &str = "doorman_connect";
pub const DISCONNECT: &str = "doorman_disconnect";
pub const USE_ACCOUNT: &str = "doorman_use_account";

/// The built-in tools, as `tools/list` shows them.
pub fn builtin_tools(vault: &Vault) -> Vec<Value> {
    let names: Vec<String> = vault
        .resources()
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    let resource =
        json!({ "type": "string", "enum": names, "description": "The resource, by name" });
    vec![
        json!({
            "name": WHOAMI,
            "title": "Who am I",
            "description": "Who you are signed in to Doorman as, and for each resource whether an account is connected, which one is active, and how long its authorization remains valid.",
            "inputSchema": { "type": "object", "properties": {} },
            "annotations": { "readOnlyHint": true, "openWorldHint": false },
        }),
        json!({
            "name": CONNECT,
            "title": "Connect an account",
            "description": "Get a link for the person to connect (another) account at a resource. Give the link to the person; they open it in their browser.",
            "inputSchema": { "type": "object", "properties": { "resource": resource }, "required": ["resource"] },
            "annotations": { "readOnlyHint": false, "openWorldHint": false },
        }),
        json!({
            "name": DISCONNECT,
            "title": "Disconnect an account",
            "description": "Disconnect an account at a resource (revoked at the resource where possible). Without `account`, the active one.",
            "inputSchema": { "type": "object", "properties": {
                "resource": resource,
                "account": { "type": "string", "description": "The account to disconnect (default: the active one)" },
            }, "required": ["resource"] },
            "annotations": { "readOnlyHint": false, "destructiveHint": true, "openWorldHint": false },
        }),
        json!({
            "name": USE_ACCOUNT,
            "title": "Use another connected account",
            "description": "Choose which of the connected accounts at a resource this conversation uses.",
            "inputSchema": { "type": "object", "properties": {
                "resource": resource,
                "account": { "type": "string", "description": "The account to use, as doorman_whoami shows it" },
            }, "required": ["resource", "account"] },
            "annotations": { "readOnlyHint": false, "openWorldHint": false },
        }),
    ]
}

fn text(t: impl Into<String>, is_error: bool) -> Value {
    json!({ "content": [{ "type": "text", "text": t.into() }], "isError": is_error })
}

/// Whether `name` is one of Doorman's own tools.
pub fn is_builtin(name: &str) -> bool {
    [WHOAMI, CONNECT, DISCONNECT, USE_ACCOUNT].contains(&name)
}

/// Runs a built-in tool; `None` when `name` is not one.
pub async fn call_builtin(
    vault: &Vault,
    who: &Caller,
    name: &str,
    args: &Value,
) -> Option<Result<Value, RpcError>> {
    if !is_builtin(name) {
        return None;
    }
    let failed = |e: anyhow::Error| {
        tracing::error!(error = %e, "built-in tool failed");
        RpcError::new(
            code::INTERNAL_ERROR,
            "Doorman could not read its vault; try again",
        )
    };
    let arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    let resource = match name {
        WHOAMI => None,
        _ => {
            let Some(r) = arg("resource") else {
                return Some(Ok(text("`resource` is required.", true)));
            };
            match vault.resource(&r) {
                Some(rc) => Some(rc.clone()),
                None => {
                    let known: Vec<String> = vault
                        .resources()
                        .iter()
                        .map(|r| r.name().to_owned())
                        .collect();
                    return Some(Ok(text(
                        format!("Unknown resource {r:?}; known: {}.", known.join(", ")),
                        true,
                    )));
                }
            }
        }
    };
    if let Some(client) = who.service_client()
        && name != WHOAMI
    {
        return Some(Ok(text(
            format!(
                "{name} is for people: the service client {client:?} has its connections made by an operator (`doorman connections add --client`)."
            ),
            true,
        )));
    }
    let outcome = async {
        match name {
            WHOAMI => whoami(vault, who).await,
            CONNECT => {
                let rc = resource.expect("checked above");
                let p = vault
                    .prompt(&who.holder(), &rc, &Need::Missing, Lifetime::default())
                    .await?;
                Ok(text(
                    format!(
                        "Open this link in your browser to connect a {} account: {}",
                        rc.resource.display_name, p.url
                    ),
                    false,
                ))
            }
            DISCONNECT => {
                let rc = resource.expect("checked above");
                let views = vault.views(&who.user_id, Some(&who.holder())).await?;
                let wanted = arg("account");
                let target = views.iter().find(|v| {
                    v.resource == rc.name()
                        && v.for_this_conversation
                        && match &wanted {
                            Some(a) => &v.account == a,
                            None => v.active,
                        }
                });
                let Some(v) = target else {
                    return Ok(text(
                        format!(
                            "No such {} connection in this conversation.",
                            rc.resource.display_name
                        ),
                        true,
                    ));
                };
                if let Some(row) = vault
                    .store
                    .delete_connection_of(&v.id, &who.user_id)
                    .await?
                {
                    vault.discard(vec![row], "disconnected by its person").await;
                }
                Ok(text(
                    format!(
                        "Disconnected {} account {}.",
                        rc.resource.display_name, v.account
                    ),
                    false,
                ))
            }
            USE_ACCOUNT => {
                let rc = resource.expect("checked above");
                let Some(account) = arg("account") else {
                    return Ok(text("`account` is required.", true));
                };
                if vault.use_account(&who.holder(), &rc, &account).await? {
                    Ok(text(
                        format!("Now using {} account {account}.", rc.resource.display_name),
                        false,
                    ))
                } else {
                    Ok(text(
                        format!(
                            "No {} account {account:?} is connected in this conversation; doorman_whoami lists them.",
                            rc.resource.display_name
                        ),
                        true,
                    ))
                }
            }
            _ => unreachable!("names checked above"),
        }
    };
    Some(outcome.await.map_err(failed))
}

async fn whoami(vault: &Vault, who: &Caller) -> anyhow::Result<Value> {
    let person = vault.store.user(&who.user_id).await?;
    let person_label = person
        .as_ref()
        .and_then(|u| u.email.clone().or(u.username.clone()))
        .unwrap_or_else(|| who.user_id.to_owned());
    let person_label = person_label.as_str();
    let views = vault.views(&who.user_id, Some(&who.holder())).await?;
    let now = vault.now_ms();
    let mut resources = Vec::new();
    let mut lines = vec![format!("Signed in to Doorman as {person_label}.")];
    for rc in vault.resources() {
        let mine: Vec<_> = views
            .iter()
            .filter(|v| v.resource == rc.name() && v.for_this_conversation)
            .collect();
        let shared = rc.resource.binding == crate::config::Binding::Shared;
        let status = if shared {
            "shared"
        } else if mine.is_empty() {
            "not connected"
        } else {
            "connected"
        };
        let accounts: Vec<Value> = mine
            .iter()
            .map(|v| {
                json!({
                    "account": v.account,
                    "active": v.active,
                    "binding": v.binding,
                    "scopes": v.scopes,
                    "authorizedSecondsAgo": (now - v.authorized_at) / 1000,
                    "remainingSeconds": v.remaining_ms.map(|m| m / 1000),
                })
            })
            .collect();
        let line = match (shared, mine.iter().find(|v| v.active)) {
            (true, _) => format!(
                "{}: a shared credential (set by the operator).",
                rc.resource.display_name
            ),
            (false, Some(a)) => format!(
                "{}: connected as {}{}{}.",
                rc.resource.display_name,
                a.account,
                a.remaining_ms
                    .map(|m| format!(", valid for {} more minutes", m / 60_000))
                    .unwrap_or_default(),
                if mine.len() > 1 {
                    format!(" ({} accounts connected)", mine.len())
                } else {
                    String::new()
                }
            ),
            (false, None) => format!("{}: not connected.", rc.resource.display_name),
        };
        lines.push(line);
        resources.push(json!({
            "resource": rc.name(),
            "displayName": rc.resource.display_name,
            "status": status,
            "binding": rc.resource.binding.as_str(),
            "accounts": accounts,
        }));
    }
    let structured = json!({ "person": person_label, "resources": resources });
    Ok(json!({
        "content": [{ "type": "text", "text": lines.join("\n") }],
        "structuredContent": structured,
        "isError": false,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{clock::ManualClock, config::Config, crypto::random_token, net::HttpClient};

    async fn vault(now_ms: i64) -> (Vault, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open_sqlite_in(dir.path())
            .await
            .unwrap();
        let config = Config::from_toml(
            "[server]\npublic_url = \"http://127.0.0.1:8421/\"\n[sign_in]\ndevelopment = true\n",
        )
        .unwrap();
        let ring = Arc::new(KeyRing::parse(&format!("k1 {}\n", random_token(32))).unwrap());
        let v = Vault::new(
            &config,
            store,
            ring,
            Arc::new(ManualClock::new(now_ms)),
            HttpClient::new().unwrap(),
        )
        .unwrap();
        (v, dir)
    }

    fn caller(user: &str) -> Caller {
        Caller {
            user_id: user.into(),
            grant: "g".into(),
            session_hash: None,
            form: PromptForm::InputRequired,
            person: Err("not needed".into()),
            client_id: "c".into(),
            auth_time: 0,
        }
    }

    fn state(v: &Vault, user: &str, expires: i64) -> String {
        seal_state(
            &v.ring,
            &RequestState {
                u: user.into(),
                p: "prompt-1".into(),
                r: "notes".into(),
                m: "tools/call".into(),
                n: "whoami".into(),
                x: expires,
            },
        )
    }

    /// MCP 2026-07-28 basic/patterns/mrtr, "Server Requirements" 4 and 5: Doorman's own
    /// `requestState` is sealed, bound to the person, the request and a deadline, and taken out
    /// of the params before they go upstream; anyone else's passes through untouched.
    #[tokio::test]
    async fn request_state_is_accepted_only_for_its_person_request_and_lifetime() {
        let (v, _dir) = vault(1_000_000).await;
        let alice = caller("alice");
        let take = |params: &mut Value, who: &Caller, method: &str, name: &str| {
            take_retry(&v, who, method, name, "notes", params)
        };
        let mut params = json!({
            "name": "whoami",
            "requestState": state(&v, "alice", 2_000_000),
            "inputResponses": { "connect": { "action": "accept" } },
        });
        let retry = take(&mut params, &alice, "tools/call", "whoami")
            .unwrap()
            .expect("Doorman's own state");
        assert_eq!(
            (retry.prompt_id.as_str(), retry.action.as_deref()),
            ("prompt-1", Some("accept"))
        );
        assert_eq!(
            params,
            json!({ "name": "whoami" }),
            "nothing of it goes upstream"
        );

        let refused = |mut params: Value, who: &Caller, method: &str, name: &str| {
            let e = take(&mut params, who, method, name).err().expect("refused");
            assert_eq!(e.code, code::INVALID_PARAMS);
            assert_eq!(e.data.unwrap()["reason"], "invalid_request_state");
        };
        let with = |s: String| json!({ "name": "whoami", "requestState": s });
        refused(
            with(state(&v, "alice", 2_000_000)),
            &caller("bob"),
            "tools/call",
            "whoami",
        );
        refused(
            with(state(&v, "alice", 999_999)),
            &alice,
            "tools/call",
            "whoami",
        );
        refused(
            with(state(&v, "alice", 2_000_000)),
            &alice,
            "prompts/get",
            "whoami",
        );
        refused(
            with(state(&v, "alice", 2_000_000)),
            &alice,
            "tools/call",
            "other",
        );
        // Tampered with, or sealed by another deployment's keys.
        let mut t = state(&v, "alice", 2_000_000);
        let last = t.pop().unwrap();
        t.push(if last == 'A' { 'B' } else { 'A' });
        refused(with(t), &alice, "tools/call", "whoami");
        let (other, _dir2) = vault(1_000_000).await;
        refused(
            with(state(&other, "alice", 2_000_000)),
            &alice,
            "tools/call",
            "whoami",
        );

        // An upstream's own state is not Doorman's: left in place for the upstream.
        let mut theirs = json!({ "name": "whoami", "requestState": "upstream-opaque" });
        assert!(
            take(&mut theirs, &alice, "tools/call", "whoami")
                .unwrap()
                .is_none()
        );
        assert_eq!(theirs["requestState"], "upstream-opaque");
    }
}
