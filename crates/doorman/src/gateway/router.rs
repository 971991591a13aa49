//! Routes MCP methods to upstreams and merges what they list.
//!
//! Clients see each upstream's tools and prompts as `{upstream}_{name}` and its resources as
//! `{upstream}+{uri}`; the config refuses upstream names whose namespaces overlap, so every
//! exposed name belongs to at most one upstream and routing needs no lookup table.

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{Value, json};

use super::{
    caller::{CallRecord, Caller as CallerOf},
    jsonrpc::{Reply, RpcError, code},
    layer2,
    upstream::{Catalog, Outbound, SessionSlots, Upstream, UpstreamError},
};
use crate::{
    config::is_valid_tool_name,
    policy::{Kind, Policies, Target},
    vault::{Lifetime, Vault},
};

/// The upstreams, in config order.
pub struct Router {
    upstreams: Vec<Arc<Upstream>>,
    /// Seals what passes through clients (an upstream's `requestState`).
    ring: Arc<crate::crypto::KeyRing>,
    /// Layer 2 (accounts mode): connections, prompts, built-in tools.
    vault: Option<Arc<Vault>>,
    /// Who may call what (accounts mode).
    policies: Option<Arc<Policies>>,
    /// Lists made with an upstream's catalog credential, by (upstream, list): when, and what.
    /// Never a person's own list: one person's list is never shown to another.
    catalogs: std::sync::RwLock<std::collections::HashMap<(String, &'static str), Listed>>,
    /// The upstream sessions those lists are made on (apart from every person's).
    catalog_slots: SessionSlots,
    /// The clients `prompt = "auto"` gives the re-authorization cascade (accounts mode).
    pub web_apps: Option<layer2::WebApps>,
}

/// A list made with a catalog credential: when, and what.
type Listed = (std::time::Instant, Arc<Vec<Value>>);

/// What gets merged for each list method: the result key, the field that carries the name,
/// and what policies call the items.
pub(super) struct ListKind {
    key: &'static str,
    field: &'static str,
    naming: Naming,
    kind: Kind,
}

/// The list methods Doorman merges.
const LISTS: [(&str, ListKind); 4] = [
    (
        "tools/list",
        ListKind {
            key: "tools",
            kind: Kind::Tool,
            field: "name",
            naming: Naming::Prefixed,
        },
    ),
    (
        "prompts/list",
        ListKind {
            key: "prompts",
            kind: Kind::Prompt,
            field: "name",
            naming: Naming::Prefixed,
        },
    ),
    (
        "resources/list",
        ListKind {
            key: "resources",
            kind: Kind::Resource,
            field: "uri",
            naming: Naming::Uri,
        },
    ),
    (
        "resources/templates/list",
        ListKind {
            key: "resourceTemplates",
            kind: Kind::Resource,
            field: "uriTemplate",
            naming: Naming::Uri,
        },
    ),
];

#[derive(Clone, Copy)]
pub(super) enum Naming {
    /// `{upstream}_{name}`
    Prefixed,
    /// `{upstream}+{uri}`
    Uri,
}

impl Router {
    /// Gives the `auth = "exchange"` upstreams what signs their tokens (accounts mode).
    pub fn set_upstream_minter(&self, minter: Arc<crate::sign_in::tokens::UpstreamTokens>) {
        for up in self.upstreams.iter().filter(|u| u.exchanges()) {
            up.set_minter(minter.clone());
        }
    }

    /// The key ring for state that passes through clients.
    pub fn ring(&self) -> &crate::crypto::KeyRing {
        &self.ring
    }

    pub fn new(
        upstreams: Vec<Arc<Upstream>>,
        vault: Option<Arc<Vault>>,
        policies: Option<Arc<Policies>>,
        ring: Arc<crate::crypto::KeyRing>,
    ) -> Self {
        Self {
            ring,
            upstreams,
            vault,
            policies,
            catalogs: Default::default(),
            catalog_slots: SessionSlots::default(),
            web_apps: None,
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
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        up: &Upstream,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
        rec: &mut CallRecord,
        lifetime: Lifetime,
    ) -> Result<Reply, RpcError> {
        let (Some(vault), Some(caller)) = (&self.vault, out.caller) else {
            return forward(up, slots, method, params, out).await;
        };
        let rc = match up.resource_name() {
            Some(resource) => vault
                .resource(&resource)
                .expect("upstream resources are checked at start or discovered"),
            None => match up.request(slots, method, params.clone(), out).await {
                // An upstream given Doorman's exchanged token is not a layer-2 resource.
                Err(UpstreamError::Unauthorized {
                    www_authenticate: Some(challenge),
                }) if challenge.contains("resource_metadata") && !up.exchanges() => {
                    match vault.discover_upstream(&up.name, &up.url, &challenge).await {
                        Ok(rc) => {
                            up.mark_discovered();
                            rc
                        }
                        Err(e) => {
                            tracing::warn!(upstream = %up.name, error = %e, "the upstream asks for authorization, but it cannot be set up");
                            // The detail (URLs, addresses) is for the log: the client is
                            // told what happened, not where.
                            return Err(RpcError::new(
                                code::UPSTREAM_FAILED,
                                format!("upstream '{}' requires authorization that Doorman cannot set up; the operator can find why in Doorman's log", up.name),
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
        layer2::forward_with_connection(
            vault,
            &rc,
            up,
            slots,
            method,
            params,
            out,
            caller,
            rec,
            lifetime,
            self.web_apps.as_ref(),
        )
        .await
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The list `method` merges, if it is a list method.
    pub(super) fn list_kind(&self, method: &str) -> Option<&'static ListKind> {
        LISTS.iter().find(|(m, _)| *m == method).map(|(_, k)| k)
    }

    /// Sends a request routed to one upstream and decided (`call.rs`), and exposes the URIs in
    /// its result. Tool calls, prompt gets and resource reads may prompt for a connection;
    /// subscriptions and completions use a connection only when one is there.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_one(
        &self,
        up: &Upstream,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
        rec: &mut CallRecord,
        lifetime: Lifetime,
    ) -> Result<Reply, RpcError> {
        match method {
            "tools/call" | "prompts/get" => {
                let result = self
                    .send(up, slots, method, params, out, rec, lifetime)
                    .await?;
                Ok(match result {
                    // Read with no resource in its content (`jsonrpc::Passed::read`).
                    Reply::Passed(_) => result,
                    Reply::Value(v) => expose_uris_in_content(&up.name, v).into(),
                })
            }
            "resources/read" => {
                let result = self
                    .send(up, slots, method, params, out, rec, lifetime)
                    .await?;
                Ok(expose_uris_in_contents(&up.name, result.into_value()).into())
            }
            _ => {
                let cred = self.listing_credential(up, out, lifetime).await;
                let out = Outbound {
                    credential: cred.as_ref().map(|c| &c.header).or(out.credential),
                    ..*out
                };
                let result = forward(up, slots, method, params, &out).await?;
                Ok(expose_uris_in_contents(&up.name, result.into_value()).into())
            }
        }
    }

    /// `logging/setLevel`: every upstream gets the level; one that fails does not fail the others.
    pub(super) async fn broadcast(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
    ) -> Result<Value, RpcError> {
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

    /// The person's credential for `up` when it is tied to a resource and a usable connection
    /// exists (lists, completions and subscriptions never prompt).
    async fn listing_credential(
        &self,
        up: &Upstream,
        out: &Outbound<'_>,
        lifetime: Lifetime,
    ) -> Option<crate::vault::Credential> {
        self.credential_with(up, out.caller, lifetime).await
    }

    /// The caller's credential for `up` when it is tied to a resource and they have a usable
    /// connection (for a `subscriptions/listen` stream, which never prompts).
    pub(super) async fn credential_for(
        &self,
        up: &Upstream,
        caller: Option<&CallerOf>,
    ) -> Option<crate::vault::Credential> {
        self.credential_with(up, caller, Lifetime::default()).await
    }

    async fn credential_with(
        &self,
        up: &Upstream,
        caller: Option<&CallerOf>,
        lifetime: Lifetime,
    ) -> Option<crate::vault::Credential> {
        match (up.resource_name(), &self.vault, caller) {
            (Some(r), Some(vault), Some(caller)) => {
                vault
                    .listing_credential(&caller.holder(), vault.resource(&r)?.as_ref(), lifetime)
                    .await
            }
            _ => None,
        }
    }

    /// A subscription to a URI without an upstream prefix (known to the client from elsewhere)
    /// goes to every upstream the caller may use it on (`ups`); it holds when at least one
    /// accepts it.
    pub(super) async fn send_everywhere(
        &self,
        ups: &[Arc<Upstream>],
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
    ) -> Result<Value, RpcError> {
        let calls = ups
            .iter()
            .map(|u| u.request(slots, method, params.clone(), out));
        let mut last_error = None;
        let mut accepted = false;
        for (u, r) in ups.iter().zip(join_all(calls).await) {
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
                "Unknown resource: no upstream you may use serves it",
            )),
        }
    }

    /// Finds the upstream owning `params[field]` and rewrites it to the upstream's own name.
    #[cfg(test)]
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
    pub(super) fn resolve<'a, 'p>(
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
    /// Each item is kept only when `shown` (the caller's decision for it) allows it.
    pub(super) async fn list(
        &self,
        slots: &SessionSlots,
        method: &str,
        params: Value,
        out: &Outbound<'_>,
        kind: &ListKind,
        shown: &(dyn Fn(Target<'_>) -> bool + Sync),
    ) -> Result<Value, RpcError> {
        let params = &params;
        let fetches = self
            .upstreams
            .iter()
            .map(|u| self.listed(u, slots, method, params, out, kind));
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
                        // Each person sees only what they may use.
                        if !shown(Target {
                            kind: kind.kind,
                            name: &exposed,
                            upstream: &up.name,
                        }) {
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
            && let (Some(vault), Some(caller)) = (&self.vault, out.caller)
        {
            // A service client's connections are the operator's to make: it sees whoami only.
            let service = caller.service_client().is_some();
            merged.extend(
                layer2::builtin_tools(vault)
                    .into_iter()
                    .filter(|t| !service || t["name"] == layer2::WHOAMI),
            );
        }
        let mut result = json!({ kind.key: merged });
        if !unavailable.is_empty() {
            result["_meta"] = json!({ "dev.doorman/unavailableUpstreams": unavailable });
        }
        Ok(result)
    }
}

impl Router {
    /// What one upstream lists for the caller. A person connected to the upstream's resource
    /// gets the upstream's own list for them; a person who is not (or whose token the upstream
    /// refuses) gets its catalog. An upstream met without a `resource` that turns out to do
    /// MCP authorization itself becomes a resource here, as on a call.
    async fn listed(
        &self,
        up: &Arc<Upstream>,
        slots: &SessionSlots,
        method: &str,
        params: &Value,
        out: &Outbound<'_>,
        kind: &ListKind,
    ) -> Result<Vec<Value>, UpstreamError> {
        let person = self.vault.is_some() && out.caller.is_some();
        if let Some(cred) = self.listing_credential(up, out, Lifetime::default()).await {
            let with = Outbound {
                credential: Some(&cred.header),
                ..*out
            };
            return match up.list_all(slots, method, params, &with, kind.key).await {
                Err(UpstreamError::Unauthorized { .. }) => {
                    tracing::info!(upstream = %up.name, account = %cred.account, "the upstream refused the connection's token for a list; showing its catalog");
                    self.catalog(up, slots, method, params, out, kind).await
                }
                other => other,
            };
        }
        if person && up.resource_name().is_some() {
            return self.catalog(up, slots, method, params, out, kind).await;
        }
        match up.list_all(slots, method, params, out, kind.key).await {
            Err(UpstreamError::Unauthorized {
                www_authenticate: Some(challenge),
            }) if person && challenge.contains("resource_metadata") => {
                let vault = self.vault.as_ref().expect("person implies a vault");
                match vault.discover_upstream(&up.name, &up.url, &challenge).await {
                    Ok(_) => {
                        up.mark_discovered();
                        self.catalog(up, slots, method, params, out, kind).await
                    }
                    Err(e) => {
                        tracing::warn!(upstream = %up.name, error = %e, "the upstream asks for authorization, but it cannot be set up");
                        Err(UpstreamError::Unauthorized {
                            www_authenticate: None,
                        })
                    }
                }
            }
            other => other,
        }
    }

    /// What a person not connected to `up`'s resource sees of it: the declared tools, the list
    /// made with the catalog credential, or the upstream's list without a token when it gives
    /// one, else one `connect` entry (tools) and nothing (prompts, resources).
    async fn catalog(
        &self,
        up: &Arc<Upstream>,
        slots: &SessionSlots,
        method: &str,
        params: &Value,
        out: &Outbound<'_>,
        kind: &ListKind,
    ) -> Result<Vec<Value>, UpstreamError> {
        match &up.catalog {
            Catalog::Declared(tools) => Ok(if kind.key == "tools" {
                tools.clone()
            } else {
                Vec::new()
            }),
            Catalog::Listed {
                authorization,
                refresh,
            } => {
                let key = (up.name.clone(), kind.key);
                if let Some((at, items)) = self.catalogs.read().expect("catalogs").get(&key)
                    && at.elapsed() < *refresh
                {
                    return Ok(items.as_ref().clone());
                }
                let with = Outbound {
                    credential: Some(authorization),
                    caller: None,
                    link: None,
                    events: None,
                    cancel: None,
                    ..*out
                };
                let items = up
                    .list_all(&self.catalog_slots, method, params, &with, kind.key)
                    .await
                    .inspect_err(|e| tracing::warn!(upstream = %up.name, error = %e, method, "the catalog credential could not list"))?;
                self.catalogs
                    .write()
                    .expect("catalogs")
                    .insert(key, (std::time::Instant::now(), Arc::new(items.clone())));
                Ok(items)
            }
            Catalog::ConnectEntry => {
                match up.list_all(slots, method, params, out, kind.key).await {
                    Err(UpstreamError::Unauthorized { .. }) if kind.key == "tools" => {
                        Ok(vec![self.connect_entry(up)])
                    }
                    Err(UpstreamError::Unauthorized { .. }) => Ok(Vec::new()),
                    other => other,
                }
            }
        }
    }

    /// The one tool shown for an upstream whose tools nobody may list before connecting.
    fn connect_entry(&self, up: &Upstream) -> Value {
        let display = up
            .resource_name()
            .and_then(|r| self.vault.as_ref()?.resource(&r))
            .map(|rc| rc.resource.display_name.clone())
            .unwrap_or_else(|| up.name.clone());
        json!({
            "name": layer2::CONNECT_ENTRY,
            "title": format!("Connect {display}"),
            "description": format!(
                "Connect your {display} account so that the {name} tools can act as you. {display} shows its tools only to people who connected: call this to connect, and the {name} tools then appear in your tool list.",
                name = up.name
            ),
            "inputSchema": { "type": "object", "properties": {} },
            "annotations": { "readOnlyHint": true, "openWorldHint": false },
        })
    }
}

async fn forward(
    up: &Upstream,
    slots: &SessionSlots,
    method: &str,
    params: Value,
    out: &Outbound<'_>,
) -> Result<Reply, RpcError> {
    up.request(slots, method, params, out).await.map_err(|e| {
        if !matches!(e, UpstreamError::Rpc(_)) {
            tracing::warn!(upstream = %up.name, error = %e, method, "upstream request failed");
        }
        e.to_rpc(&up.name)
    })
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
        let http = crate::net::HttpClient::new().unwrap();
        Router::new(
            config
                .upstreams
                .iter()
                .map(|u| Arc::new(Upstream::new(u, http.clone()).unwrap()))
                .collect(),
            None,
            None,
            Arc::new(crate::crypto::KeyRing::random()),
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
