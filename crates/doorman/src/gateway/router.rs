//! Routes MCP methods to upstreams and merges what they list.
//!
//! Clients see each upstream's tools and prompts as `{upstream}_{name}` and its resources as
//! `{upstream}+{uri}`; the config refuses upstream names whose namespaces overlap, so every
//! exposed name belongs to at most one upstream and routing needs no lookup table.

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{Value, json};

use super::{
    jsonrpc::{RpcError, code},
    layer2::{self, CallRecord, Who},
    upstream::{Outbound, SessionSlots, Upstream, UpstreamError},
};
use crate::{
    audit::{AuditEvent, emit, redact},
    config::is_valid_tool_name,
    policy::{Decision, Policies},
    vault::Vault,
};

/// At most this many pages are read from one upstream list (a guard against cursor loops).
const MAX_PAGES: usize = 100;

/// The upstreams, in config order.
pub struct Router {
    upstreams: Vec<Arc<Upstream>>,
    /// Layer 2 (accounts mode): connections, prompts, built-in tools.
    vault: Option<Arc<Vault>>,
    /// Who may call what (accounts mode).
    policies: Option<Arc<Policies>>,
    /// The last list each resource-tied upstream gave a connected person, by (upstream, list):
    /// shown to people not connected yet.
    last_listed: std::sync::RwLock<std::collections::HashMap<(String, &'static str), Vec<Value>>>,
}

/// What gets merged for each list method: the result key and the field that carries the name.
struct ListKind {
    key: &'static str,
    field: &'static str,
    naming: Naming,
}

/// The list methods Doorman merges.
const LISTS: [(&str, ListKind); 4] = [
    (
        "tools/list",
        ListKind {
            key: "tools",
            field: "name",
            naming: Naming::Prefixed,
        },
    ),
    (
        "prompts/list",
        ListKind {
            key: "prompts",
            field: "name",
            naming: Naming::Prefixed,
        },
    ),
    (
        "resources/list",
        ListKind {
            key: "resources",
            field: "uri",
            naming: Naming::Uri,
        },
    ),
    (
        "resources/templates/list",
        ListKind {
            key: "resourceTemplates",
            field: "uriTemplate",
            naming: Naming::Uri,
        },
    ),
];

#[derive(Clone, Copy)]
enum Naming {
    /// `{upstream}_{name}`
    Prefixed,
    /// `{upstream}+{uri}`
    Uri,
}

impl Router {
    pub fn new(
        upstreams: Vec<Arc<Upstream>>,
        vault: Option<Arc<Vault>>,
        policies: Option<Arc<Policies>>,
    ) -> Self {
        Self {
            upstreams,
            vault,
            policies,
            last_listed: Default::default(),
        }
    }

    pub fn policies(&self) -> Option<&Arc<Policies>> {
        self.policies.as_ref()
    }

    pub fn vault(&self) -> Option<&Arc<Vault>> {
        self.vault.as_ref()
    }

    /// Sends a routed request: with the person's resource credential (or the connect prompt)
    /// when the upstream is tied to a resource, as is otherwise. An upstream that answers
    /// `401` with protected resource metadata becomes a resource on the spot.
    async fn send(
        &self,
        up: &Upstream,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
        rec: &mut CallRecord,
    ) -> Result<Value, RpcError> {
        let (Some(vault), Some(who)) = (&self.vault, &out.who) else {
            return forward(up, slots, method, params, out).await;
        };
        let rc = match up.resource_name() {
            Some(resource) => vault
                .resource(&resource)
                .expect("upstream resources are checked at start or discovered"),
            None => match up.request(slots, method, params.clone(), out).await {
                Err(UpstreamError::Unauthorized {
                    www_authenticate: Some(challenge),
                }) if challenge.contains("resource_metadata") => {
                    match vault.discover_upstream(&up.name, &up.url, &challenge).await {
                        Ok(rc) => {
                            up.mark_discovered();
                            rc
                        }
                        Err(e) => {
                            tracing::warn!(upstream = %up.name, error = %e, "the upstream asks for authorization, but it cannot be set up");
                            return Err(RpcError::new(
                                code::UPSTREAM_FAILED,
                                format!("upstream '{}' requires authorization that Doorman cannot set up: {e}", up.name),
                            )
                            .with_data(json!({ "upstream": up.name, "reason": "authorization_unavailable" })));
                        }
                    }
                }
                other => {
                    return other.map_err(|e| {
                        if !matches!(e, UpstreamError::Rpc(_)) {
                            tracing::warn!(upstream = %up.name, error = %e, method, "upstream request failed");
                        }
                        e.to_rpc(&up.name)
                    });
                }
            },
        };
        layer2::forward_with_connection(vault, &rc, up, slots, method, params, out, who, rec).await
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The upstream owning an exposed tool name.
    pub fn upstream_of_tool(&self, exposed: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| {
            exposed
                .strip_prefix(u.name.as_str())
                .and_then(|r| r.strip_prefix('_'))
                .is_some_and(|r| !r.is_empty())
        })
    }

    fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// A tool call, prompt get or resource read, with its audit record.
    async fn call_audited(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
    ) -> Result<Value, RpcError> {
        let started = std::time::Instant::now();
        let mut rec = CallRecord::default();
        let outcome = self.call(slots, method, params, out, &mut rec).await;
        let outcome_name = match &outcome {
            _ if rec.decision.is_some() => None,
            Ok(v) if v.get("isError").and_then(Value::as_bool) == Some(true) => Some("tool_error"),
            Ok(v) if v.get("resultType").and_then(Value::as_str) == Some("input_required") => None,
            Ok(_) => Some("success"),
            Err(e) if e.code == code::UPSTREAM_FAILED => Some("upstream_error"),
            Err(_) => Some("error"),
        };
        let elapsed = started.elapsed();
        crate::metrics::get().request(
            method,
            rec.upstream.as_deref().unwrap_or(""),
            elapsed.as_secs_f64(),
        );
        let who = out.who.as_ref();
        emit(AuditEvent {
            kind: "call".into(),
            event: method.into(),
            person_id: who.map(|w| w.caller.user_id.to_owned()),
            person: who.map(|w| w.person.label().to_owned()),
            client_id: who.map(|w| w.client_id.to_owned()),
            conversation: who.map(Who::conversation_label),
            upstream: rec.upstream,
            name: rec.name,
            resource: rec.resource,
            account: rec.account,
            decision: Some(rec.decision.unwrap_or("allowed").to_owned()),
            policy: rec.policy,
            outcome: outcome_name.map(String::from),
            latency_us: Some(elapsed.as_micros() as i64),
            request_id: out.request_id.map(String::from),
            arguments: rec.arguments,
            ..AuditEvent::default()
        });
        outcome
    }

    async fn call(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
        rec: &mut CallRecord,
    ) -> Result<Value, RpcError> {
        let (field, naming, kind) = match method {
            "tools/call" => ("name", Naming::Prefixed, "tool"),
            "prompts/get" => ("name", Naming::Prefixed, "prompt"),
            _ => ("uri", Naming::Uri, "resource"),
        };
        rec.name = params.get(field).and_then(Value::as_str).map(String::from);
        if method == "tools/call"
            && let (Some(vault), Some(who)) = (&self.vault, &out.who)
            && let Some(name) = params.get("name").and_then(Value::as_str)
            && layer2::is_builtin(name)
        {
            let args = params.get("arguments").cloned().unwrap_or(Value::Null);
            if let Some(outcome) = layer2::call_builtin(vault, who, name, &args).await {
                rec.upstream = Some("doorman".into());
                return outcome;
            }
        }
        // The call's own params go upstream, renamed: no copy of the arguments.
        let routed = self
            .resolve(&params, field, naming, kind)
            .map(|(up, original)| (up, Value::from(original)));
        let (up, original) = match routed {
            Ok(r) => r,
            // Like the SDK servers, an unknown tool is a tool error the model can read and
            // correct, not a protocol failure.
            Err(e)
                if method == "tools/call" && params.get("name").is_some_and(Value::is_string) =>
            {
                return Ok(
                    json!({ "content": [{ "type": "text", "text": e.message }], "isError": true }),
                );
            }
            Err(e) => return Err(e),
        };
        let mut params = params;
        params[field] = original;
        rec.upstream = Some(up.name.clone());
        if let (Some(policies), Some(who)) = (&self.policies, &out.who)
            && method != "resources/read"
        {
            let exposed = rec.name.clone().unwrap_or_default();
            match policies.decide(&exposed, &up.name, who.person) {
                Decision::Denied { policy } => {
                    rec.decision = Some("denied");
                    rec.policy = Some(policy.clone());
                    let text =
                        format!("Doorman policy {policy:?} does not allow you to call {exposed}.");
                    return if method == "tools/call" {
                        Ok(
                            json!({ "content": [{ "type": "text", "text": text }], "isError": true }),
                        )
                    } else {
                        Err(RpcError::new(code::FORBIDDEN, text)
                            .with_data(json!({ "policy": policy })))
                    };
                }
                Decision::Allowed {
                    policy,
                    log_arguments,
                    ..
                } => {
                    rec.policy = policy;
                    if log_arguments {
                        let args = params.get("arguments").cloned().unwrap_or(json!({}));
                        rec.arguments = Some(redact(&args).to_string());
                    }
                }
            }
        }
        let result = self.send(up, slots, method, params, out, rec).await?;
        Ok(if method == "resources/read" {
            expose_uris_in_contents(&up.name, result)
        } else {
            expose_uris_in_content(&up.name, result)
        })
    }

    /// Handles one request that is not about the session itself; `Err` is the client's error.
    pub async fn handle(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
    ) -> Result<Value, RpcError> {
        if matches!(method, "tools/call" | "prompts/get" | "resources/read") {
            // Timed and audited with their upstream.
            return self.call_audited(slots, method, params, out).await;
        }
        let started = std::time::Instant::now();
        let outcome = self.dispatch(slots, method, params, out).await;
        crate::metrics::get().request(method, "", started.elapsed().as_secs_f64());
        outcome
    }

    async fn dispatch(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
    ) -> Result<Value, RpcError> {
        if let Some((_, kind)) = LISTS.iter().find(|(m, _)| *m == method) {
            return self.list(slots, method, params, out, kind).await;
        }
        match method {
            "tools/call" | "prompts/get" | "resources/read" => {
                self.call_audited(slots, method, params, out).await
            }
            "resources/subscribe" | "resources/unsubscribe"
                if self
                    .route_by(&params, "uri", Naming::Uri, "resource")
                    .is_err() =>
            {
                self.subscribe_everywhere(slots, method, params, out).await
            }
            "resources/subscribe" | "resources/unsubscribe" => {
                let (up, params) = self.route_by(&params, "uri", Naming::Uri, "resource")?;
                let cred = self.listing_credential(up, out).await;
                let out = Outbound {
                    credential: cred.as_ref().map(|c| &c.header),
                    ..*out
                };
                let result = forward(up, slots, method, params, &out).await?;
                Ok(expose_uris_in_contents(&up.name, result))
            }
            "completion/complete" => {
                let reference = params.get("ref").cloned().unwrap_or(Value::Null);
                let (field, naming, kind) = match reference.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => ("name", Naming::Prefixed, "prompt"),
                    Some("ref/resource") => ("uri", Naming::Uri, "resource"),
                    _ => {
                        return Err(RpcError::new(
                            code::INVALID_PARAMS,
                            "completion/complete needs a ref/prompt or ref/resource",
                        ));
                    }
                };
                let (up, inner) = self.route_by(&reference, field, naming, kind)?;
                let mut params = params;
                params["ref"] = inner;
                let cred = self.listing_credential(up, out).await;
                let out = Outbound {
                    credential: cred.as_ref().map(|c| &c.header),
                    ..*out
                };
                forward(up, slots, method, params, &out).await
            }
            "logging/setLevel" => {
                // Every upstream gets the level; one that fails does not fail the others.
                let calls = self
                    .upstreams
                    .iter()
                    .map(|u| u.request(slots, method, params.clone(), out));
                for (u, r) in self.upstreams.iter().zip(join_all(calls).await) {
                    if let Err(e) = r {
                        tracing::debug!(upstream = %u.name, error = %e, "logging/setLevel not applied");
                    }
                }
                Ok(json!({}))
            }
            _ => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            )),
        }
    }

    /// The person's credential for `up` when it is tied to a resource and a usable connection
    /// exists (lists, completions and subscriptions never prompt).
    async fn listing_credential(
        &self,
        up: &Upstream,
        out: &Outbound<'_>,
    ) -> Option<crate::vault::Credential> {
        match (up.resource_name(), &self.vault, &out.who) {
            (Some(r), Some(vault), Some(who)) => {
                vault
                    .listing_credential(&who.caller, vault.resource(&r)?.as_ref())
                    .await
            }
            _ => None,
        }
    }

    /// A subscription to a URI without an upstream prefix (known to the client from elsewhere)
    /// goes to every upstream; it holds when at least one accepts it.
    async fn subscribe_everywhere(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
    ) -> Result<Value, RpcError> {
        if !params.get("uri").is_some_and(Value::is_string) {
            return Err(RpcError::new(code::INVALID_PARAMS, "missing \"uri\""));
        }
        let calls = self
            .upstreams
            .iter()
            .map(|u| u.request(slots, method, params.clone(), out));
        let mut last_error = None;
        let mut accepted = false;
        for (u, r) in self.upstreams.iter().zip(join_all(calls).await) {
            match r {
                Ok(_) => accepted = true,
                Err(e) => last_error = Some(e.to_rpc(&u.name)),
            }
        }
        match (accepted, last_error) {
            (true, _) => Ok(json!({})),
            (false, Some(e)) => Err(e),
            (false, None) => Err(RpcError::new(
                code::INVALID_PARAMS,
                "Unknown resource: no upstream is configured",
            )),
        }
    }

    /// Finds the upstream owning `params[field]` and rewrites it to the upstream's own name.
    fn route_by<'a>(
        &'a self,
        params: &Value,
        field: &str,
        naming: Naming,
        kind: &str,
    ) -> Result<(&'a Arc<Upstream>, Value), RpcError> {
        let (up, original) = self.resolve(params, field, naming, kind)?;
        let mut params = params.clone();
        params[field] = json!(original);
        Ok((up, params))
    }

    /// The upstream an exposed name or URI (`params[field]`) belongs to, and the upstream's own
    /// name for it.
    fn resolve<'a, 'p>(
        &'a self,
        params: &'p Value,
        field: &str,
        naming: Naming,
        kind: &str,
    ) -> Result<(&'a Arc<Upstream>, &'p str), RpcError> {
        let exposed = params
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::new(code::INVALID_PARAMS, format!("missing \"{field}\"")))?;
        let unknown = || RpcError::new(code::INVALID_PARAMS, format!("Unknown {kind}: {exposed}"));
        let (up_name, original) = match naming {
            Naming::Prefixed => self
                .upstreams
                .iter()
                .find_map(|u| {
                    exposed
                        .strip_prefix(u.name.as_str())?
                        .strip_prefix('_')
                        .map(|rest| (u.name.as_str(), rest))
                })
                .ok_or_else(unknown)?,
            Naming::Uri => exposed.split_once('+').ok_or_else(unknown)?,
        };
        let up = self.upstream(up_name).ok_or_else(unknown)?;
        if original.is_empty() {
            return Err(unknown());
        }
        Ok((up, original))
    }

    /// Merges one list method over every upstream, reading every page of each.
    async fn list(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
        kind: &ListKind,
    ) -> Result<Value, RpcError> {
        let params = &params;
        let fetches = self.upstreams.iter().map(|u| async move {
            let cred = self.listing_credential(u, out).await;
            let out = Outbound {
                credential: cred.as_ref().map(|c| &c.header),
                ..*out
            };
            let listed = list_all(u, slots, method, params, &out, kind.key).await;
            // An upstream tied to a resource refuses a person who has not connected yet; they
            // still see its tools (as last listed for anyone), so calling one can prompt them.
            match listed {
                Ok(items) if cred.is_some() => {
                    self.last_listed
                        .write()
                        .expect("last listed")
                        .insert((u.name.clone(), kind.key), items.clone());
                    Ok(items)
                }
                Err(UpstreamError::Unauthorized { .. }) if u.resource_name().is_some() => {
                    match self
                        .last_listed
                        .read()
                        .expect("last listed")
                        .get(&(u.name.clone(), kind.key))
                    {
                        Some(items) => Ok(items.clone()),
                        None => Err(UpstreamError::Unauthorized {
                            www_authenticate: None,
                        }),
                    }
                }
                other => other,
            }
        });
        let mut merged = Vec::new();
        let mut unavailable = Vec::new();
        for (up, outcome) in self.upstreams.iter().zip(join_all(fetches).await) {
            match outcome {
                Ok(items) => {
                    let mut seen = std::collections::HashSet::new();
                    for mut item in items {
                        let Some(original) = item
                            .get(kind.field)
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                        else {
                            continue;
                        };
                        let exposed = match kind.naming {
                            Naming::Prefixed => format!("{}_{original}", up.name),
                            Naming::Uri => format!("{}+{original}", up.name),
                        };
                        if kind.key == "tools" && !is_valid_tool_name(&exposed) {
                            tracing::warn!(upstream = %up.name, tool = %original, "tool skipped: its name through Doorman would not be a valid MCP tool name");
                            continue;
                        }
                        // Each person sees only the tools they may call.
                        if kind.key == "tools"
                            && let (Some(policies), Some(who)) = (&self.policies, &out.who)
                            && !policies.decide(&exposed, &up.name, who.person).is_allowed()
                        {
                            continue;
                        }
                        if !seen.insert(exposed.clone()) {
                            tracing::warn!(upstream = %up.name, name = %original, "duplicate skipped: the upstream listed it twice");
                            continue;
                        }
                        item[kind.field] = json!(exposed);
                        merged.push(item);
                    }
                }
                Err(e) => {
                    // One upstream down must not take the whole list down (issue: "never a
                    // failure of the whole endpoint"); the client is told which one is missing.
                    tracing::warn!(upstream = %up.name, error = %e, method, "upstream left out of the list");
                    unavailable
                        .push(json!({ "upstream": up.name, "error": e.to_rpc(&up.name).message }));
                }
            }
        }
        if kind.key == "tools"
            && let (Some(vault), Some(_)) = (&self.vault, &out.who)
        {
            merged.extend(layer2::builtin_tools(vault));
        }
        let mut result = json!({ kind.key: merged });
        if !unavailable.is_empty() {
            result["_meta"] = json!({ "dev.doorman/unavailableUpstreams": unavailable });
        }
        Ok(result)
    }
}

async fn forward(
    up: &Upstream,
    slots: &SessionSlots,
    method: &str,
    params: Value,
    out: &Outbound<'_>,
) -> Result<Value, RpcError> {
    up.request(slots, method, params, out).await.map_err(|e| {
        if !matches!(e, UpstreamError::Rpc(_)) {
            tracing::warn!(upstream = %up.name, error = %e, method, "upstream request failed");
        }
        e.to_rpc(&up.name)
    })
}

async fn list_all(
    up: &Upstream,
    slots: &SessionSlots,
    method: &str,
    params: &Value,
    out: &Outbound<'_>,
    key: &str,
) -> Result<Vec<Value>, UpstreamError> {
    let mut items = Vec::new();
    let mut params = params.clone();
    if let Some(p) = params.as_object_mut() {
        // A downstream cursor means nothing upstream: Doorman returns the whole merged list.
        p.remove("cursor");
    }
    for _ in 0..MAX_PAGES {
        let page = up.request(slots, method, params.clone(), out).await?;
        if let Some(list) = page.get(key).and_then(Value::as_array) {
            items.extend(list.iter().cloned());
        }
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(cursor) if !cursor.is_empty() => params["cursor"] = json!(cursor),
            _ => return Ok(items),
        }
    }
    tracing::warn!(upstream = %up.name, method, "list truncated after {MAX_PAGES} pages");
    Ok(items)
}

/// Tool and prompt results may carry resource links and embedded resources: their URIs are
/// rewritten so a client can read them through Doorman.
fn expose_uris_in_content(upstream: &str, mut result: Value) -> Value {
    let lists = ["content", "messages"];
    for list in lists {
        if let Some(items) = result.get_mut(list).and_then(Value::as_array_mut) {
            for item in items {
                // prompts/get messages wrap their content one level deeper.
                if list == "messages" {
                    if let Some(inner) = item.get_mut("content") {
                        expose_uri_of(upstream, inner);
                    }
                } else {
                    expose_uri_of(upstream, item);
                }
            }
        }
    }
    result
}

fn expose_uri_of(upstream: &str, item: &mut Value) {
    match item.get("type").and_then(Value::as_str) {
        Some("resource_link") => prefix_uri(upstream, item),
        Some("resource") => {
            if let Some(r) = item.get_mut("resource") {
                prefix_uri(upstream, r);
            }
        }
        _ => {}
    }
}

fn expose_uris_in_contents(upstream: &str, mut result: Value) -> Value {
    if let Some(items) = result.get_mut("contents").and_then(Value::as_array_mut) {
        for item in items {
            prefix_uri(upstream, item);
        }
    }
    result
}

/// A server-initiated notification as the client must see it: resource URIs through Doorman.
pub fn expose_notification(upstream: &str, mut msg: Value) -> Value {
    if msg["method"] == "notifications/resources/updated"
        && let Some(params) = msg.get_mut("params")
    {
        prefix_uri(upstream, params);
    }
    msg
}

fn prefix_uri(upstream: &str, v: &mut Value) {
    if let Some(uri) = v.get("uri").and_then(Value::as_str) {
        v["uri"] = json!(format!("{upstream}+{uri}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn router(names: &[&str]) -> Router {
        let mut toml = String::new();
        for n in names {
            toml.push_str(&format!(
                "[[upstreams]]\nname = \"{n}\"\nurl = \"http://127.0.0.1:9/mcp\"\n"
            ));
        }
        let config = Config::from_toml(&toml).unwrap();
        let http = crate::gateway::upstream_http::HttpClient::new().unwrap();
        Router::new(
            config
                .upstreams
                .iter()
                .map(|u| Arc::new(Upstream::new(u, http.clone()).unwrap()))
                .collect(),
            None,
            None,
        )
    }

    #[test]
    fn names_route_to_their_upstream_with_the_original_name() {
        let r = router(&["everything", "py-fixture", "git"]);
        let cases = [
            (
                json!({"name": "py-fixture_add", "arguments": {}}),
                "name",
                Naming::Prefixed,
                "py-fixture",
                "add",
            ),
            (
                json!({"name": "git_log_search"}),
                "name",
                Naming::Prefixed,
                "git",
                "log_search",
            ),
            (
                json!({"uri": "everything+demo://resource/1"}),
                "uri",
                Naming::Uri,
                "everything",
                "demo://resource/1",
            ),
        ];
        for (params, field, naming, upstream, original) in cases {
            let (up, p) = r.route_by(&params, field, naming, "tool").unwrap();
            assert_eq!(
                (up.name.as_str(), p[field].as_str()),
                (upstream, Some(original)),
                "{params}"
            );
        }
    }

    #[test]
    fn unknown_names_are_invalid_params() {
        let r = router(&["everything"]);
        for (params, field, naming) in [
            (json!({"name": "nobody_echo"}), "name", Naming::Prefixed),
            (json!({"name": "everything_"}), "name", Naming::Prefixed),
            (json!({"name": "everythingecho"}), "name", Naming::Prefixed),
            (json!({"uri": "file:///etc/passwd"}), "uri", Naming::Uri),
            (json!({"uri": "other+file:///x"}), "uri", Naming::Uri),
            (json!({}), "name", Naming::Prefixed),
        ] {
            let Err(e) = r.route_by(&params, field, naming, "tool") else {
                panic!("{params} routed")
            };
            assert_eq!(e.code, code::INVALID_PARAMS, "{params}");
        }
    }

    #[test]
    fn resource_links_in_results_point_back_through_doorman() {
        let result = json!({"content": [
            {"type": "text", "text": "hi"},
            {"type": "resource_link", "uri": "demo://r/1", "name": "r1"},
            {"type": "resource", "resource": {"uri": "demo://r/2", "text": "x"}}
        ]});
        let out = expose_uris_in_content("everything", result);
        assert_eq!(out["content"][1]["uri"], "everything+demo://r/1");
        assert_eq!(
            out["content"][2]["resource"]["uri"],
            "everything+demo://r/2"
        );
        let read = expose_uris_in_contents(
            "everything",
            json!({"contents": [{"uri": "demo://r/1", "text": "x"}]}),
        );
        assert_eq!(read["contents"][0]["uri"], "everything+demo://r/1");
    }
}
