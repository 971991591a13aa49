//! The one pipeline every upstream-bound request goes through: a single request or each element
//! of a batch, on both protocol generations, for every method that reaches an upstream.
//!
//! 1. **caller**: [`Caller::resolve`], once per HTTP request (the bearer token's claims, the
//!    person's groups, the conversation and how it can be prompted);
//! 2. **route and decide**: [`prepare`] finds the upstream and the target (tool, prompt,
//!    resource or resource template) and asks [`Policies::decide`] once. A denial, an unknown
//!    name, bad params or a step-up (RFC 9470) ends the request here, before any upstream;
//! 3. **credential**: for an upstream tied to a resource, the person's connection with the
//!    lifetimes the decision carries, or the connect prompt (`layer2.rs`);
//! 4. **upstream**: the request itself (`router.rs`, `upstream.rs`);
//! 5. **audit**: one record per request, written by [`Call::run`] or by whoever answers an
//!    [`Prepared::Answer`] or [`Prepared::StepUp`] (with [`record`]).
//!
//! List methods pass through the same steps: each listed tool, prompt and resource is kept only
//! when the decision for it allows the caller. Lists and `logging/setLevel` are not recorded
//! in the audit (they act on nothing); they are counted in the metrics.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

pub use super::caller::{CallRecord, Caller};
use super::{
    asks::state,
    jsonrpc::{Reply, RpcError, code},
    layer2,
    router::{ListKind, Naming, Router},
    upstream::{Outbound, SessionSlots, Upstream},
};
use crate::{
    audit::{AuditEvent, redact},
    policy::{Decision, Denial, Kind, Target},
    vault::Lifetime,
};

/// Where an allowed request goes.
enum Route {
    /// One upstream (params already carry the upstream's own name).
    One(Arc<Upstream>),
    /// One of Doorman's own tools (`doorman_*`).
    Builtin,
    /// A subscription to a URI no upstream prefix names: every upstream that allows it.
    Everywhere(Vec<Arc<Upstream>>),
    /// A list merged over every upstream, filtered by the decision for each item.
    List(&'static ListKind),
    /// `logging/setLevel`: every upstream.
    Broadcast,
}

/// A request that was routed and allowed: steps 3 to 5.
pub struct Call {
    method: String,
    params: Value,
    route: Route,
    decision: Decision,
    rec: CallRecord,
    /// Whether this request gets an audit record.
    recorded: bool,
    /// When the request came (ms): an upstream's `requestState` in its result expires from then.
    now_ms: i64,
}

/// RFC 9470: what a too-old sign-in must be replaced with.
#[derive(Debug)]
pub struct StepUp {
    pub max_age: Duration,
    pub policy: Option<String>,
    /// The tool, prompt or resource, as the client named it.
    pub name: String,
    pub record: CallRecord,
}

/// The outcome of steps 1 and 2.
pub enum Prepared {
    /// Allowed: [`Call::run`] does the rest.
    Run(Call),
    /// Answered here, without an upstream; `record` is the audit record to write, if any.
    Answer {
        outcome: Result<Value, RpcError>,
        record: Option<CallRecord>,
    },
    /// The decision wants a more recent sign-in than the token's.
    StepUp(StepUp),
}

/// The decision for `target`: the policies' in accounts mode, everything allowed in local mode.
fn decide(router: &Router, caller: Option<&Caller>, target: Target<'_>) -> Decision {
    match (router.policies(), caller) {
        (Some(p), Some(c)) => p.decide(&target, c.person.as_deref().map_err(String::as_str)),
        _ => Decision::allow_all(),
    }
}

/// Whether a listed item (`kind` of `upstream`, as clients see it) is shown to the caller.
pub(super) fn shown(router: &Router, caller: Option<&Caller>, target: Target<'_>) -> bool {
    decide(router, caller, target).is_allowed()
}

/// Whether the caller may still use what a call in flight names (its retry re-checks).
pub fn still_allowed(
    router: &Router,
    caller: Option<&Caller>,
    method: &str,
    exposed: &str,
) -> bool {
    let (kind, field, naming) = match method {
        "tools/call" => (Kind::Tool, "name", Naming::Prefixed),
        "prompts/get" => (Kind::Prompt, "name", Naming::Prefixed),
        "resources/read" => (Kind::Resource, "uri", Naming::Uri),
        _ => return false,
    };
    let params = json!({ field: exposed });
    match router.resolve(&params, field, naming, kind.as_str()) {
        Ok((up, _)) => shown(
            router,
            caller,
            Target {
                kind,
                name: exposed,
                upstream: &up.name,
            },
        ),
        Err(_) => false,
    }
}

fn answer(outcome: Result<Value, RpcError>, record: Option<CallRecord>) -> Prepared {
    Prepared::Answer { outcome, record }
}

fn tool_error(text: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": text.into() }], "isError": true })
}

/// What an upstream's `requestState` is bound to, for the methods that may answer
/// `input_required` (MCP 2026-07-28 basic/patterns/mrtr, "Supported Requests").
fn state_binding(
    caller: Option<&Caller>,
    upstream: &str,
    method: &str,
    name: &str,
) -> Option<state::Binding> {
    matches!(method, "tools/call" | "prompts/get" | "resources/read").then(|| state::Binding {
        person: caller.map(|c| c.user_id.clone()).unwrap_or_default(),
        client: caller.map(|c| c.client_id.clone()).unwrap_or_default(),
        upstream: upstream.to_owned(),
        method: method.to_owned(),
        name: name.to_owned(),
    })
}

/// Steps 1 and 2 for one request: where it goes, and whether the caller may.
pub fn prepare(
    router: &Router,
    caller: Option<&Caller>,
    method: &str,
    mut params: Value,
    now_s: i64,
) -> Prepared {
    if let Some(kind) = router.list_kind(method) {
        return Prepared::Run(Call {
            method: method.to_owned(),
            params,
            route: Route::List(kind),
            decision: Decision::allow_all(),
            rec: CallRecord::default(),
            recorded: false,
            now_ms: now_s * 1000,
        });
    }
    let (kind, field, naming, in_ref) = match method {
        "logging/setLevel" => {
            return Prepared::Run(Call {
                method: method.to_owned(),
                params,
                route: Route::Broadcast,
                decision: Decision::allow_all(),
                rec: CallRecord::default(),
                recorded: false,
                now_ms: now_s * 1000,
            });
        }
        "tools/call" => (Kind::Tool, "name", Naming::Prefixed, false),
        "prompts/get" => (Kind::Prompt, "name", Naming::Prefixed, false),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            (Kind::Resource, "uri", Naming::Uri, false)
        }
        "completion/complete" => match params.pointer("/ref/type").and_then(Value::as_str) {
            Some("ref/prompt") => (Kind::Prompt, "name", Naming::Prefixed, true),
            Some("ref/resource") => (Kind::Resource, "uri", Naming::Uri, true),
            _ => {
                let e = RpcError::new(
                    code::INVALID_PARAMS,
                    "completion/complete needs a ref/prompt or ref/resource",
                );
                return answer(Err(e), None);
            }
        },
        _ => {
            let e = RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            );
            return answer(Err(e), None);
        }
    };
    let container = if in_ref {
        params.get("ref").cloned().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let holder = if in_ref { &container } else { &params };
    let Some(exposed) = holder.get(field).and_then(Value::as_str).map(str::to_owned) else {
        let e = RpcError::new(code::INVALID_PARAMS, format!("missing \"{field}\""));
        return answer(Err(e), None);
    };
    let mut rec = CallRecord {
        name: Some(exposed.clone()),
        ..CallRecord::default()
    };
    if method == "tools/call"
        && layer2::is_builtin(&exposed)
        && router.vault().is_some()
        && caller.is_some()
    {
        rec.upstream = Some("doorman".into());
        return Prepared::Run(Call {
            method: method.to_owned(),
            params,
            route: Route::Builtin,
            decision: Decision::allow_all(),
            rec,
            recorded: true,
            now_ms: now_s * 1000,
        });
    }
    let (up, original) = match router.resolve(holder, field, naming, kind.as_str()) {
        Ok((up, original)) => (up.clone(), original.to_owned()),
        Err(_) if matches!(method, "resources/subscribe" | "resources/unsubscribe") => {
            // A URI known to the client from elsewhere: every upstream that allows it.
            let ups: Vec<Arc<Upstream>> = router
                .upstreams()
                .iter()
                .filter(|u| {
                    let name = format!("{}+{exposed}", u.name);
                    shown(
                        router,
                        caller,
                        Target {
                            kind,
                            name: &name,
                            upstream: &u.name,
                        },
                    )
                })
                .cloned()
                .collect();
            return Prepared::Run(Call {
                method: method.to_owned(),
                params,
                route: Route::Everywhere(ups),
                decision: Decision::allow_all(),
                rec,
                recorded: true,
                now_ms: now_s * 1000,
            });
        }
        // Like the SDK servers, an unknown tool is a tool error the model can read and
        // correct, not a protocol failure.
        Err(e) if method == "tools/call" => return answer(Ok(tool_error(e.message)), Some(rec)),
        Err(e) => return answer(Err(e), Some(rec)),
    };
    rec.upstream = Some(up.name.clone());
    let target = Target {
        kind,
        name: &exposed,
        upstream: &up.name,
    };
    let decision = decide(router, caller, target);
    rec.policy = decision.policy.clone();
    if let Err(denial) = &decision.verdict {
        rec.decision = Some("denied");
        let text = match denial {
            Denial::Undetermined(why) => {
                rec.detail = Some(why.clone());
                let e = RpcError::new(
                    code::FORBIDDEN,
                    format!("Doorman could not check whether you may use {exposed} ({why}), so it refused; try again shortly."),
                )
                .with_data(json!({ "reason": "access_undetermined" }));
                return answer(Err(e), Some(rec));
            }
            Denial::PeopleOnly => {
                let client = caller
                    .and_then(|c| c.person.as_ref().ok())
                    .and_then(|p| p.service_client().map(str::to_owned))
                    .unwrap_or_default();
                rec.detail = Some("service client not named in the policy's clients".into());
                match decision.policy.as_deref() {
                    Some("default") | None => format!(
                        "{exposed} is for people: no Doorman policy names the service client {client:?} in `clients` for it."
                    ),
                    Some(policy) => format!(
                        "{exposed} is for people: Doorman policy {policy:?} does not name the service client {client:?} in `clients`."
                    ),
                }
            }
            Denial::Policy | Denial::Default => {
                let policy = decision.policy.as_deref().unwrap_or("default");
                let verb = if kind == Kind::Tool { "call" } else { "use" };
                format!("Doorman policy {policy:?} does not allow you to {verb} {exposed}.")
            }
        };
        return if method == "tools/call" {
            answer(Ok(tool_error(text)), Some(rec))
        } else {
            let e = RpcError::new(code::FORBIDDEN, text)
                .with_data(json!({ "policy": decision.policy }));
            answer(Err(e), Some(rec))
        };
    }
    if let Some(c) = caller
        && let Some(max_age) = decision.needs_step_up(c.auth_time, now_s)
    {
        rec.decision = Some("step_up_required");
        return Prepared::StepUp(StepUp {
            max_age,
            policy: decision.policy.clone(),
            name: exposed,
            record: rec,
        });
    }
    if decision.log_arguments {
        let key = if method == "completion/complete" {
            "argument"
        } else {
            "arguments"
        };
        let args = params.get(key).cloned().unwrap_or(json!({}));
        rec.arguments = Some(redact(&args).to_string());
    }
    // MCP 2026-07-28 basic/patterns/mrtr: the retry of an `input_required` answer carries the
    // upstream's state sealed by Doorman; it goes upstream only after every check.
    if params.get("requestState").is_some()
        && let Some(b) = state_binding(caller, &up.name, method, &exposed)
        && let Err(e) = state::open(router.ring(), &mut params, &b, now_s * 1000)
    {
        return answer(Err(e), Some(rec));
    }
    // The call's own params go upstream, renamed.
    if in_ref {
        params["ref"][field] = Value::from(original);
    } else {
        params[field] = Value::from(original);
    }
    Prepared::Run(Call {
        method: method.to_owned(),
        params,
        route: Route::One(up),
        decision,
        rec,
        recorded: true,
        now_ms: now_s * 1000,
    })
}

impl Call {
    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn params(&self) -> &Value {
        &self.params
    }

    /// Steps 3 to 5: the credential, the upstream, the audit record.
    pub async fn run(
        self,
        router: &Router,
        slots: &SessionSlots,
        out: &Outbound<'_>,
    ) -> Result<Reply, RpcError> {
        let Call {
            method,
            params,
            route,
            decision,
            mut rec,
            recorded,
            now_ms,
        } = self;
        let started = std::time::Instant::now();
        let upstream = match &route {
            Route::One(up) => Some(up.clone()),
            _ => None,
        };
        let work = async {
            match route {
                Route::One(up) => {
                    let lifetime = Lifetime::of(&decision);
                    router
                        .send_one(&up, slots, &method, params, out, &mut rec, lifetime)
                        .await
                }
                Route::Builtin => {
                    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                    let args = params.get("arguments").cloned().unwrap_or(Value::Null);
                    match (router.vault(), out.caller) {
                        (Some(vault), Some(caller)) => {
                            layer2::call_builtin(vault, caller, name, &args)
                                .await
                                .unwrap_or_else(|| Ok(tool_error(format!("Unknown tool: {name}"))))
                        }
                        _ => Ok(tool_error(format!("Unknown tool: {name}"))),
                    }
                    .map(Reply::from)
                }
                Route::Everywhere(ups) => router
                    .send_everywhere(&ups, slots, &method, params, out)
                    .await
                    .map(Reply::from),
                Route::List(kind) => {
                    let filter = |target: Target<'_>| shown(router, out.caller, target);
                    router
                        .list(slots, &method, params, out, kind, &filter)
                        .await
                        .map(Reply::from)
                }
                Route::Broadcast => router
                    .broadcast(slots, &method, params, out)
                    .await
                    .map(Reply::from),
            }
        };
        // A request the client cancels stops here: what it was waiting for (the upstream, a
        // refresh, a person's answer) is dropped, and the audit records it as cancelled.
        let (mut outcome, cancelled) = match out.cancel {
            None => (work.await, false),
            Some(cancel) => tokio::select! {
                outcome = work => (outcome, false),
                () = cancel.notified() => (Err(RpcError::new(code::REQUEST_CANCELLED, "Request cancelled by the client")), true),
            },
        };
        if let (Ok(result), Some(up), Some(name)) = (&mut outcome, &upstream, &rec.name)
            && result.is_input_required()
            && let Some(b) = state_binding(out.caller, &up.name, &method, name)
        {
            state::seal(router.ring(), result.value_mut(), b, now_ms);
        }
        let elapsed = started.elapsed();
        crate::metrics::get().request(
            &method,
            rec.upstream.as_deref().unwrap_or(""),
            elapsed.as_secs_f64(),
        );
        if recorded {
            let outcome_name = match &outcome {
                _ if cancelled => Some("cancelled"),
                _ if rec.decision.is_some() => None,
                Ok(v) if v.is_tool_error() => Some("tool_error"),
                Ok(v) if v.is_input_required() => None,
                Ok(_) => Some("success"),
                Err(e) if e.code == code::UPSTREAM_FAILED => Some("upstream_error"),
                Err(_) => Some("error"),
            };
            record(
                &method,
                out.caller,
                out.request_id,
                rec,
                outcome_name,
                Some(elapsed),
            )
            .await;
        }
        outcome
    }
}

/// Writes the one audit record of a request; with `audit.durable`, returns once it is stored
/// (`audit::record`), so the answer that follows is never one the audit could miss.
pub async fn record(
    method: &str,
    caller: Option<&Caller>,
    request_id: Option<&str>,
    rec: CallRecord,
    outcome: Option<&str>,
    elapsed: Option<std::time::Duration>,
) {
    crate::audit::record(AuditEvent {
        kind: "call".into(),
        event: method.into(),
        person_id: caller.map(|c| c.user_id.clone()),
        person: caller.map(|c| c.label().to_owned()),
        client_id: caller.map(|c| c.client_id.clone()),
        conversation: caller.map(Caller::conversation_label),
        upstream: rec.upstream,
        name: rec.name,
        resource: rec.resource,
        account: rec.account,
        decision: Some(rec.decision.unwrap_or("allowed").to_owned()),
        policy: rec.policy,
        outcome: outcome.map(String::from),
        latency_us: elapsed.map(|e| e.as_micros() as i64),
        request_id: request_id.map(String::from),
        arguments: rec.arguments,
        detail: rec.detail,
        ..AuditEvent::default()
    })
    .await;
}

/// The audit outcome of an answer given before any upstream.
pub fn answered_outcome(
    outcome: &Result<Value, RpcError>,
    rec: &CallRecord,
) -> Option<&'static str> {
    match outcome {
        _ if rec.decision.is_some() => None,
        Ok(_) => Some("tool_error"),
        Err(_) => Some("error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        gateway::caller::PromptForm,
        policy::{PersonInfo, Policies},
        store::Store,
    };

    const CONFIG: &str = r#"
[[upstreams]]
name = "crm"
url = "http://127.0.0.1:9/mcp"
[[upstreams]]
name = "py"
url = "http://127.0.0.1:9/mcp"
[[upstreams]]
name = "wiki"
url = "http://127.0.0.1:9/mcp"
[[policies]]
name = "crm-sales"
tools = ["*"]
upstreams = ["crm"]
allow_groups = ["sales"]
[[policies]]
name = "crm-docs"
resources = ["crm+docs://*"]
[[policies]]
name = "fresh-greeting"
prompts = ["py_greet"]
sign_in_max_age = "5m"
[[policies]]
name = "fresh-progress"
tools = ["py_progress"]
sign_in_max_age = "5m"
log_arguments = true
[access]
default = "deny"
[[policies]]
name = "py-open"
tools = ["py_*"]
"#;

    /// Now, in seconds; callers signed in at 0 are 1000 s old, past every 5-minute step-up.
    const NOW: i64 = 1_000;

    async fn router() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_in(dir.path()).await.unwrap();
        let config = Config::from_toml(CONFIG).unwrap();
        config.validate().unwrap();
        let http = crate::net::HttpClient::new().unwrap();
        let ups = config
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u, http.clone()).unwrap()))
            .collect();
        let policies = Arc::new(Policies::new(&config, store));
        (
            Router::new(
                ups,
                None,
                Some(policies),
                Arc::new(crate::crypto::KeyRing::random()),
            ),
            dir,
        )
    }

    fn caller(groups: &[&str], auth_time: i64) -> Caller {
        Caller {
            user_id: "u1".into(),
            grant: "g1".into(),
            session_hash: None,
            form: PromptForm::Text,
            person: Ok(Arc::new(PersonInfo {
                id: "u1".into(),
                username: Some("pat".into()),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..PersonInfo::default()
            })),
            client_id: "c1".into(),
            auth_time,
        }
    }

    /// What `prepare` decided, in a line a table can hold.
    fn summary(p: Prepared) -> String {
        match p {
            Prepared::Run(c) => {
                let target = c
                    .params
                    .get("name")
                    .or_else(|| c.params.get("uri"))
                    .or_else(|| c.params.pointer("/ref/name"))
                    .or_else(|| c.params.pointer("/ref/uri"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                match c.route {
                    Route::One(up) => format!("run {} {target}", up.name),
                    Route::Builtin => "builtin".into(),
                    Route::Everywhere(ups) => {
                        let names: Vec<&str> = ups.iter().map(|u| u.name.as_str()).collect();
                        format!("everywhere {}", names.join(","))
                    }
                    Route::List(_) => "list".into(),
                    Route::Broadcast => "broadcast".into(),
                }
            }
            Prepared::Answer {
                outcome: Ok(v),
                record,
            } => format!(
                "tool error {} ({})",
                v["content"][0]["text"].as_str().unwrap_or(""),
                record.and_then(|r| r.decision).unwrap_or("recorded")
            ),
            Prepared::Answer {
                outcome: Err(e),
                record,
            } => format!(
                "error {} {} ({})",
                e.code,
                e.data
                    .as_ref()
                    .and_then(|d| d.get("policy").or(d.get("reason")))
                    .and_then(Value::as_str)
                    .unwrap_or("-"),
                record.map_or("not recorded", |r| r.decision.unwrap_or("recorded"))
            ),
            Prepared::StepUp(s) => format!(
                "step-up {} {}",
                s.max_age.as_secs(),
                s.policy.unwrap_or_default()
            ),
        }
    }

    #[tokio::test]
    async fn every_method_is_routed_and_decided_once_by_the_same_rules() {
        let (r, _dir) = router().await;
        let sales_fresh = caller(&["sales"], NOW - 10);
        let sales_old = caller(&["sales"], 0);
        let eng = caller(&["engineering"], NOW - 10);
        let tool = |name: &str| json!({ "name": name, "arguments": { "x": 1 } });
        let cases: Vec<(&Caller, &str, Value, &str)> = vec![
            // An upstream denied to a group: every method.
            (
                &eng,
                "tools/call",
                tool("crm_add_lead"),
                "tool error Doorman policy \"crm-sales\" does not allow you to call crm_add_lead. (denied)",
            ),
            (
                &eng,
                "prompts/get",
                json!({"name": "crm_pipeline"}),
                "error -32012 crm-sales (denied)",
            ),
            (
                &eng,
                "resources/read",
                json!({"uri": "crm+db://leads"}),
                "error -32012 crm-sales (denied)",
            ),
            (
                &eng,
                "resources/subscribe",
                json!({"uri": "crm+db://leads"}),
                "error -32012 crm-sales (denied)",
            ),
            (
                &eng,
                "resources/unsubscribe",
                json!({"uri": "crm+db://leads"}),
                "error -32012 crm-sales (denied)",
            ),
            (
                &eng,
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "crm_pipeline"}, "argument": {"name": "a", "value": "b"}}),
                "error -32012 crm-sales (denied)",
            ),
            (
                &eng,
                "completion/complete",
                json!({"ref": {"type": "ref/resource", "uri": "crm+db://leads/{id}"}, "argument": {"name": "id", "value": "1"}}),
                "error -32012 crm-sales (denied)",
            ),
            // ... unless an entry written for them says otherwise.
            (
                &eng,
                "resources/read",
                json!({"uri": "crm+docs://faq"}),
                "run crm docs://faq",
            ),
            // The group it is allowed to: everything, renamed for the upstream.
            (
                &sales_fresh,
                "tools/call",
                tool("crm_add_lead"),
                "run crm add_lead",
            ),
            (
                &sales_fresh,
                "prompts/get",
                json!({"name": "crm_pipeline"}),
                "run crm pipeline",
            ),
            (
                &sales_fresh,
                "completion/complete",
                json!({"ref": {"type": "ref/resource", "uri": "crm+db://leads/{id}"}, "argument": {"name": "id", "value": "1"}}),
                "run crm db://leads/{id}",
            ),
            (
                &sales_fresh,
                "resources/subscribe",
                json!({"uri": "crm+db://leads"}),
                "run crm db://leads",
            ),
            // A bare URI: every upstream that allows it (py is open, crm is not for eng).
            (
                &eng,
                "resources/subscribe",
                json!({"uri": "db://leads"}),
                "everywhere py",
            ),
            (
                &sales_fresh,
                "resources/unsubscribe",
                json!({"uri": "db://leads"}),
                "everywhere crm,py",
            ),
            (
                &sales_fresh,
                "resources/subscribe",
                json!({"uri": "db://leads"}),
                "everywhere crm,py",
            ),
            // Step-up, for tools and prompts alike.
            (
                &sales_old,
                "tools/call",
                tool("py_progress"),
                "step-up 300 fresh-progress",
            ),
            (
                &sales_old,
                "prompts/get",
                json!({"name": "py_greet"}),
                "step-up 300 fresh-greeting",
            ),
            (
                &sales_fresh,
                "prompts/get",
                json!({"name": "py_greet"}),
                "run py greet",
            ),
            (&sales_old, "tools/call", tool("py_add"), "run py add"),
            // `py_*` covers py: its resources follow it.
            (
                &eng,
                "resources/read",
                json!({"uri": "py+fixture://readme"}),
                "run py fixture://readme",
            ),
            // Deny by default: what no entry matches.
            (
                &eng,
                "resources/read",
                json!({"uri": "wiki+page://1"}),
                "error -32012 default (denied)",
            ),
            (
                &eng,
                "tools/call",
                tool("wiki_search"),
                "tool error Doorman policy \"default\" does not allow you to call wiki_search. (denied)",
            ),
            // Names that route nowhere, and malformed requests: answered, never forwarded.
            (
                &eng,
                "tools/call",
                tool("nobody_echo"),
                "tool error Unknown tool: nobody_echo (recorded)",
            ),
            (
                &eng,
                "prompts/get",
                json!({"name": "nobody_x"}),
                "error -32602 - (recorded)",
            ),
            (
                &eng,
                "prompts/get",
                json!({}),
                "error -32602 - (not recorded)",
            ),
            (
                &eng,
                "completion/complete",
                json!({"ref": {"type": "ref/other"}}),
                "error -32602 - (not recorded)",
            ),
            (
                &eng,
                "sampling/createMessage",
                json!({}),
                "error -32601 - (not recorded)",
            ),
            // Lists and logging go everywhere (lists are filtered item by item).
            (&eng, "tools/list", json!({}), "list"),
            (&eng, "resources/templates/list", json!({}), "list"),
            (
                &eng,
                "logging/setLevel",
                json!({"level": "info"}),
                "broadcast",
            ),
        ];
        for (who, method, params, want) in cases {
            let got = summary(prepare(&r, Some(who), method, params.clone(), NOW));
            assert_eq!(got, want, "{method} {params}");
        }
    }

    #[tokio::test]
    async fn a_caller_who_cannot_be_determined_is_refused_everywhere_and_sees_nothing() {
        let (r, _dir) = router().await;
        let mut unknown = caller(&[], NOW);
        unknown.person = Err("the person's groups could not be read".into());
        for (method, params) in [
            ("tools/call", json!({"name": "py_add"})),
            ("prompts/get", json!({"name": "py_greet"})),
            ("resources/read", json!({"uri": "crm+docs://faq"})),
        ] {
            let got = summary(prepare(&r, Some(&unknown), method, params, NOW));
            assert_eq!(got, "error -32012 access_undetermined (denied)", "{method}");
        }
        for name in ["py_add", "crm_add_lead"] {
            let t = Target {
                kind: Kind::Tool,
                name,
                upstream: &name[..name.find('_').unwrap()],
            };
            assert!(!shown(&r, Some(&unknown), t), "{name} is hidden");
        }
        // Local mode (no caller, no policies): everything is allowed, nothing steps up.
        let local = Router::new(
            r.upstreams().to_vec(),
            None,
            None,
            Arc::new(crate::crypto::KeyRing::random()),
        );
        let got = summary(prepare(
            &local,
            None,
            "prompts/get",
            json!({"name": "py_greet"}),
            NOW,
        ));
        assert_eq!(got, "run py greet");
    }

    #[tokio::test]
    async fn the_record_names_the_decision_and_logs_arguments_only_where_asked() {
        let (r, _dir) = router().await;
        let fresh = caller(&["sales"], NOW);
        let Prepared::Run(c) = prepare(
            &r,
            Some(&fresh),
            "tools/call",
            json!({"name": "py_progress", "arguments": {"steps": 2, "token": "secret-value"}}),
            NOW,
        ) else {
            panic!("allowed")
        };
        assert_eq!(c.rec.policy.as_deref(), Some("fresh-progress"));
        assert_eq!(c.rec.upstream.as_deref(), Some("py"));
        let args = c.rec.arguments.as_deref().unwrap();
        assert!(
            args.contains("\"steps\":2") && !args.contains("secret-value"),
            "{args}"
        );
        let Prepared::Run(c) = prepare(
            &r,
            Some(&fresh),
            "tools/call",
            json!({"name": "py_add", "arguments": {"a": 1}}),
            NOW,
        ) else {
            panic!("allowed")
        };
        assert_eq!(
            (c.rec.policy.as_deref(), c.rec.arguments),
            (Some("py-open"), None)
        );
    }
}
