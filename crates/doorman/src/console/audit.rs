//! `GET /activity` (a person's own calls) and `GET /admin/audit` (everyone's records), with
//! filters; clients named where Doorman knows their name.

use std::{collections::HashMap, sync::Arc};

use askama::Template;
use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::Response,
};
use serde::Deserialize;

use super::{Console, home::what, unavailable};
use crate::web::{
    Viewer,
    pages::{self, Nav, utc_time},
    with_cookie,
};

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    nav: Nav,
    title: &'a str,
    lede: &'a str,
    action: &'a str,
    admin: bool,
    f_user: &'a str,
    f_tool: &'a str,
    f_resource: &'a str,
    f_decision: &'a str,
    decisions: [&'a str; 5],
    filtered: bool,
    rows: Vec<AuditRow>,
}

struct AuditRow {
    time: String,
    person: String,
    what: String,
    account: String,
    decision: String,
    outcome: String,
    client: String,
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    user: Option<String>,
    tool: Option<String>,
    resource: Option<String>,
    decision: Option<String>,
}

/// `GET /activity`: "what did my assistant do?" — the signed-in person's own recent calls.
pub(super) async fn activity_page(
    State(c): State<Arc<Console>>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let viewer = match c.viewer(&uri, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let person = Some(viewer.user.id.clone());
    audit_page(&c, &headers, &viewer, q, person, false).await
}

/// `GET /admin/audit`: everyone's records, for administrators.
pub(super) async fn admin_audit_page(
    State(c): State<Arc<Console>>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let viewer = match c.admin(&uri, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let person = match q.user.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(u) => match c.auth.store.person_named(u).await {
            Ok(p) => Some(p.map_or_else(|| u.to_owned(), |p| p.id)),
            Err(e) => return unavailable(e),
        },
    };
    audit_page(&c, &headers, &viewer, q, person, true).await
}

async fn audit_page(
    c: &Console,
    headers: &HeaderMap,
    viewer: &Viewer,
    q: AuditQuery,
    person_id: Option<String>,
    admin: bool,
) -> Response {
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let filter = crate::audit::AuditFilter {
        person_id,
        name: nonempty(&q.tool),
        resource: nonempty(&q.resource),
        decision: nonempty(&q.decision),
        kind: if admin { None } else { Some("call".into()) },
        limit: 200,
        ..Default::default()
    };
    let events = match c.auth.store.audit_events(&filter).await {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".into());
    let mut rows = Vec::with_capacity(events.len());
    let mut names: HashMap<String, String> = HashMap::new();
    for e in &events {
        let client = match &e.client_id {
            Some(id) => match names.get(id) {
                Some(n) => n.clone(),
                None => {
                    let n = c.client_name(id).await;
                    names.insert(id.clone(), n.clone());
                    n
                }
            },
            None => "–".into(),
        };
        rows.push(AuditRow {
            time: utc_time(e.at),
            person: dash(&e.person),
            what: what(e),
            account: match (&e.resource, &e.account) {
                (Some(r), Some(a)) => format!("{r}: {a}"),
                (Some(r), None) => r.clone(),
                _ => "–".into(),
            },
            decision: match (&e.decision, &e.policy) {
                (Some(d), Some(p)) => format!("{d} ({p})"),
                (Some(d), None) => d.clone(),
                _ => "–".into(),
            },
            outcome: dash(&e.outcome),
            client,
        });
    }
    let filtered = filter.name.is_some()
        || filter.resource.is_some()
        || filter.decision.is_some()
        || (admin && filter.person_id.is_some());
    let (csrf, set_cookie) = c.browser().csrf_cookie(headers);
    let page = pages::render(
        StatusCode::OK,
        &AuditPage {
            nav: viewer.nav(&csrf, if admin { "audit" } else { "activity" }),
            title: if admin {
                "Audit"
            } else {
                "What your assistants did"
            },
            lede: if admin {
                "Every tool call, prompt and resource read through Doorman, and security events, newest first."
            } else {
                "The tool calls, prompts and resource reads made through Doorman as you, newest first."
            },
            action: if admin { "/admin/audit" } else { "/activity" },
            admin,
            f_user: q.user.as_deref().unwrap_or(""),
            f_tool: q.tool.as_deref().unwrap_or(""),
            f_resource: q.resource.as_deref().unwrap_or(""),
            f_decision: q.decision.as_deref().unwrap_or(""),
            decisions: [
                "",
                "allowed",
                "denied",
                "connection_required",
                "step_up_required",
            ],
            filtered,
            rows,
        },
    );
    with_cookie(page, set_cookie)
}
