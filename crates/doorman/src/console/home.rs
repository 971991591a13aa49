//! `GET /`: a person's home. Signed in: their connections (reconnect, disconnect), the
//! clients they approved (name, where it redirects, last use; revoke) and their recent
//! activity. A visitor: what Doorman is and a sign-in button.

use std::{collections::HashMap, sync::Arc};

use askama::Template;
use axum::{
    Form,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};

use super::{Console, FormRejection, form_fields, redirect_hosts, unavailable};
use crate::{
    audit::{AuditEvent, AuditFilter},
    vault::connect::{Row, rows},
    web::{
        Viewer,
        pages::{self, Nav, ago, utc_time},
        with_cookie,
    },
};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    nav: Nav,
    person: &'a str,
    csrf: &'a str,
    notice: Option<&'a str>,
    /// Whether layer 2 runs (resources are configured): the connections section.
    layer2: bool,
    rows: Vec<Row>,
    clients: Vec<ClientLine>,
    activity: Vec<ActivityLine>,
    mcp_url: &'a str,
}

#[derive(Template)]
#[template(path = "visitor.html")]
struct VisitorPage<'a> {
    mcp_url: &'a str,
}

/// One client the person approved: their live grants at it, together.
pub(super) struct ClientLine {
    pub id: String,
    pub name: String,
    pub hosts: String,
    pub signed_in: String,
    pub last_used: String,
}

pub(super) struct ActivityLine {
    pub time: String,
    pub what: String,
    pub decision: String,
    pub client: String,
}

/// How many recent records the home page shows (the rest are on `/activity`).
const RECENT: i64 = 10;

/// `GET /`.
pub(super) async fn page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.browser().viewer(&headers).await {
        Some(viewer) => render(&c, &headers, &viewer, None).await,
        None => pages::render(
            StatusCode::OK,
            &VisitorPage {
                mcp_url: &c.auth.resource,
            },
        ),
    }
}

async fn render(
    c: &Console,
    headers: &HeaderMap,
    viewer: &Viewer,
    notice: Option<&str>,
) -> Response {
    let user_id = &viewer.user.id;
    let now = c.now_ms();
    let connections = match c.vault() {
        Some(v) => match v.views(user_id, None).await {
            Ok(views) => rows(views, now),
            Err(e) => return unavailable(e),
        },
        None => Vec::new(),
    };
    let clients = match approved_clients(c, user_id, now).await {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let filter = AuditFilter {
        person_id: Some(user_id.clone()),
        kind: Some("call".into()),
        limit: RECENT,
        ..Default::default()
    };
    let events = match c.auth.store.audit_events(&filter).await {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    let mut activity = Vec::new();
    for e in &events {
        activity.push(ActivityLine {
            time: ago(now, e.at),
            what: what(e),
            decision: e.decision.clone().unwrap_or_else(|| "–".into()),
            client: match &e.client_id {
                Some(id) => c.client_name(id).await,
                None => "–".into(),
            },
        });
    }
    let (csrf, set_cookie) = c.browser().csrf_cookie(headers);
    with_cookie(
        pages::render(
            StatusCode::OK,
            &HomePage {
                nav: viewer.nav(&csrf, "home"),
                person: viewer.display_name(),
                csrf: &csrf,
                notice,
                layer2: c.vault().is_some(),
                rows: connections,
                clients,
                activity,
                mcp_url: &c.auth.resource,
            },
        ),
        set_cookie,
    )
}

/// What a record was about: "tools/call github_create_issue".
pub(super) fn what(e: &AuditEvent) -> String {
    match &e.name {
        Some(n) => format!("{} {n}", e.event),
        None => e.event.clone(),
    }
}

/// The clients a person holds live grants at, most recently used first.
async fn approved_clients(c: &Console, user_id: &str, now: i64) -> anyhow::Result<Vec<ClientLine>> {
    let mut by_client: Vec<(String, i64, i64)> = Vec::new();
    for g in c.auth.store.grants(Some(user_id)).await? {
        if g.revoked_at.is_some() || g.expires_at <= now {
            continue;
        }
        match by_client.iter_mut().find(|(id, _, _)| *id == g.client_id) {
            Some(entry) => {
                entry.1 = entry.1.min(g.auth_time);
                entry.2 = entry.2.max(g.last_used_at);
            }
            None => by_client.push((g.client_id, g.auth_time, g.last_used_at)),
        }
    }
    by_client.sort_by_key(|(_, _, used)| std::cmp::Reverse(*used));
    let mut out = Vec::new();
    for (id, signed_in, used) in by_client {
        let known = c.auth.clients.known(&id).await;
        out.push(ClientLine {
            name: known.as_ref().map_or_else(|| id.clone(), |k| k.label()),
            hosts: known
                .as_ref()
                .map_or_else(|| "–".into(), |k| redirect_hosts(&k.redirect_uris)),
            signed_in: utc_time(signed_in),
            last_used: ago(now, used),
            id,
        });
    }
    Ok(out)
}

/// `POST /grants/revoke` (`client_id`): ends every sign-in of this person at that client; its
/// access and refresh tokens stop working. Another person's client id revokes nothing.
pub(super) async fn revoke_client(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let form = form_fields(form);
    let viewer = match c.posted(&headers, &form).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let client_id = form.get("client_id").map(String::as_str).unwrap_or("");
    let now = c.now_ms();
    let ids: Vec<String> = match c.auth.store.grants(Some(&viewer.user.id)).await {
        Ok(grants) => grants
            .into_iter()
            .filter(|g| g.client_id == client_id && g.revoked_at.is_none() && g.expires_at > now)
            .map(|g| g.id)
            .collect(),
        Err(e) => return unavailable(e),
    };
    if ids.is_empty() {
        return render(
            &c,
            &headers,
            &viewer,
            Some("That client no longer has access."),
        )
        .await;
    }
    let n = match c.revoke_grants(&ids, "revoked by its person").await {
        Ok(n) => n,
        Err(e) => return unavailable(e),
    };
    // Its approval goes too: signing in from it again asks the person again, rather than
    // handing the client a code because the browser is still signed in.
    if let Err(e) = c
        .auth
        .store
        .delete_consents(Some(&viewer.user.id), client_id)
        .await
    {
        return unavailable(e);
    }
    let name = c.client_name(client_id).await;
    crate::audit::emit(AuditEvent {
        person: Some(viewer.display_name().to_owned()),
        client_id: Some(client_id.to_owned()),
        detail: Some(format!("{n} sign-in(s) revoked by their person")),
        ..AuditEvent::security("grant_revoked", Some(&viewer.user.id))
    });
    let note = format!("{name} no longer has access: sign in from it again to use it.");
    render(&c, &headers, &viewer, Some(&note)).await
}
