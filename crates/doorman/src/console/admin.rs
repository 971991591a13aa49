//! `GET /admin`: the administrators' index. People (disable, enable, reset TOTP), clients and
//! the sign-ins they hold (revoke), upstreams with their health as this node sees it, and
//! resources with the state of their authorization server's metadata. Right after the setup
//! link made the first administrator, and while no client has signed in, it starts with the
//! next steps and the MCP URL to give to clients.

use std::{collections::HashMap, sync::Arc};

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::Response,
};
use serde::Deserialize;

use super::{Console, FormRejection, form_fields, redirect_hosts, unavailable};
use crate::{
    audit::AuditEvent,
    gateway::upstream::Era,
    sign_in::clients::{Client, ClientKind, Clients},
    store::LOCAL_ISSUER,
    web::{
        Viewer,
        pages::{self, Nav, ago, human_duration, utc_time},
        with_cookie,
    },
};

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage<'a> {
    nav: Nav,
    csrf: &'a str,
    notice: Option<&'a str>,
    /// The next steps: shown after the first-run setup and while no client has signed in.
    welcome: bool,
    mcp_url: &'a str,
    me: &'a str,
    people: Vec<PersonLine>,
    clients: Vec<ClientLine>,
    grants: Vec<GrantLine>,
    upstreams: Vec<UpstreamLine>,
    resources: Vec<ResourceLine>,
    /// More rows exist than a table shows.
    grants_cut: bool,
}

struct PersonLine {
    id: String,
    name: String,
    email: String,
    /// `local`, or the SSO provider's host.
    source: String,
    admin: bool,
    disabled: bool,
    /// `None`: not a local account (TOTP is the provider's business).
    totp: Option<bool>,
    created: String,
}

struct ClientLine {
    id: String,
    name: String,
    kind: &'static str,
    hosts: String,
    last_used: String,
    sign_ins: usize,
    revoked: bool,
}

struct GrantLine {
    id: String,
    person: String,
    client: String,
    signed_in: String,
    last_used: String,
    expires: String,
}

struct UpstreamLine {
    name: String,
    url: String,
    revision: &'static str,
    authorization: String,
    /// `Some(true)`: it answered last; `Some(false)`: it failed last; `None`: not contacted yet.
    ok: Option<bool>,
    state: String,
    outages: u64,
}

struct ResourceLine {
    name: String,
    display_name: String,
    binding: &'static str,
    max_age: String,
    authorization: String,
    metadata: String,
}

/// An upstream's URL as the page shows it: without credentials or query (operators sometimes
/// put an API key there).
fn shown_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// At most this many sign-ins are listed (the CLI lists them all: `doorman grants list`).
const GRANTS_SHOWN: usize = 200;

#[cfg(test)]
mod tests {
    #[test]
    fn upstream_urls_are_shown_without_credentials() {
        let u = url::Url::parse("https://svc:s3cret@crm.example/mcp?api_key=k3y#x").unwrap();
        assert_eq!(super::shown_url(&u), "https://crm.example/mcp");
    }
}

#[derive(Deserialize, Default)]
pub(super) struct AdminQuery {
    welcome: Option<String>,
}

/// `GET /admin`.
pub(super) async fn page(
    State(c): State<Arc<Console>>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<AdminQuery>,
) -> Response {
    let viewer = match c.admin(&uri, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    render(&c, &headers, &viewer, None, q.welcome.is_some()).await
}

async fn render(
    c: &Console,
    headers: &HeaderMap,
    viewer: &Viewer,
    notice: Option<&str>,
    welcome: bool,
) -> Response {
    match gather(c, headers, viewer, notice, welcome).await {
        Ok(r) => r,
        Err(e) => unavailable(e),
    }
}

async fn gather(
    c: &Console,
    headers: &HeaderMap,
    viewer: &Viewer,
    notice: Option<&str>,
    welcome: bool,
) -> anyhow::Result<Response> {
    let store = &c.auth.store;
    let now = c.now_ms();
    let users = store.users().await?;
    let totp: std::collections::HashSet<String> =
        store.users_with_totp().await?.into_iter().collect();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut people = Vec::with_capacity(users.len());
    for u in &users {
        let service = u.issuer == crate::store::SERVICE_ISSUER;
        let name = if service {
            format!("client:{}", u.subject)
        } else {
            u.username
                .clone()
                .or(u.email.clone())
                .unwrap_or(u.id.clone())
        };
        names.insert(u.id.clone(), name.clone());
        let local = u.issuer == LOCAL_ISSUER;
        people.push(PersonLine {
            id: u.id.clone(),
            name,
            email: u.email.clone().unwrap_or_else(|| "–".into()),
            source: if local {
                "local account".into()
            } else if service {
                "service client (client credentials)".into()
            } else {
                let host = url::Url::parse(&u.issuer)
                    .ok()
                    .and_then(|i| i.host_str().map(str::to_owned))
                    .unwrap_or_else(|| u.issuer.clone());
                format!("SSO ({host})")
            },
            admin: u.is_admin,
            disabled: u.disabled_at.is_some(),
            totp: local.then(|| totp.contains(&u.id)),
            created: utc_time(u.created_at),
        });
    }

    // Clients: the configured ones, the stored ones (registrations, refused metadata
    // documents), and metadata document clients known only from their sign-ins.
    let counts: HashMap<String, i64> = store.live_grant_counts(now).await?.into_iter().collect();
    let mut described: Vec<(Client, Option<crate::store::ClientRow>)> = c
        .auth
        .clients
        .configured()
        .map(|k| (k.clone(), None))
        .collect();
    described.sort_by(|x, y| x.0.id.cmp(&y.0.id));
    for row in store.clients().await? {
        let mut k = Clients::from_row(row.clone());
        if k.kind == ClientKind::Metadata
            && let Some(doc) = c.auth.clients.known(&k.id).await
        {
            k = doc;
        }
        described.push((k, Some(row)));
    }
    for id in counts.keys() {
        if !described.iter().any(|(k, _)| k.id == *id)
            && let Some(k) = c.auth.clients.known(id).await
        {
            described.push((k, None));
        }
    }
    let mut client_names: HashMap<String, String> = HashMap::new();
    let mut clients = Vec::with_capacity(described.len());
    for (k, row) in described {
        let name = k.label();
        client_names.insert(k.id.clone(), name.clone());
        clients.push(ClientLine {
            name,
            kind: match k.kind {
                ClientKind::Configured => "configured",
                ClientKind::Dynamic => "registered",
                ClientKind::Metadata => "metadata document",
            },
            hosts: redirect_hosts(&k.redirect_uris),
            last_used: row
                .as_ref()
                .map_or_else(|| "–".into(), |r| ago(now, r.last_used_at)),
            sign_ins: counts.get(&k.id).copied().unwrap_or(0) as usize,
            revoked: row.as_ref().is_some_and(|r| r.revoked_at.is_some()),
            id: k.id,
        });
    }

    let live = store.live_grants(now, GRANTS_SHOWN as i64 + 1).await?;
    let grants_cut = live.len() > GRANTS_SHOWN;
    let mut grants = Vec::new();
    for g in live.into_iter().take(GRANTS_SHOWN) {
        let client = match client_names.get(&g.client_id) {
            Some(n) => n.clone(),
            None => c.client_name(&g.client_id).await,
        };
        grants.push(GrantLine {
            person: names
                .get(&g.user_id)
                .cloned()
                .unwrap_or_else(|| g.user_id.clone()),
            client,
            signed_in: utc_time(g.auth_time),
            last_used: ago(now, g.last_used_at),
            expires: format!("in {}", human_duration(g.expires_at - now)),
            id: g.id,
        });
    }

    let upstreams = c
        .gateway
        .router
        .upstreams()
        .iter()
        .map(|u| {
            let h = u.health();
            let (ok, state) = match (&h.last_failure, h.last_ok_at) {
                (Some((failed, why)), ok_at) if ok_at.is_none_or(|t| t < *failed) => {
                    (Some(false), format!("failed {}: {why}", ago(now, *failed)))
                }
                (_, Some(t)) => (Some(true), format!("answered {}", ago(now, t))),
                _ => (None, "not contacted since this node started".into()),
            };
            UpstreamLine {
                name: u.name.clone(),
                url: shown_url(&u.url),
                revision: match h.era {
                    Some(Era::Modern) => "2026-07-28 (stateless)",
                    Some(Era::Legacy) => "2025 revisions (sessions)",
                    None => "not probed yet",
                },
                authorization: match (&u.resource, u.resource_name()) {
                    (Some(r), _) => format!("resource {r}"),
                    (None, Some(_)) => "its own (MCP authorization, discovered)".into(),
                    (None, None) => "none".into(),
                },
                ok,
                state,
                outages: h.outages,
            }
        })
        .collect();

    let resources = c
        .vault()
        .map(|v| v.resources())
        .unwrap_or_default()
        .iter()
        .map(|rc| {
            let s = rc.status();
            let r = &rc.resource;
            ResourceLine {
                name: r.name.clone(),
                display_name: r.display_name.clone(),
                binding: r.binding.as_str(),
                max_age: r.max_age.map_or_else(
                    || "no limit".into(),
                    |m| human_duration(m.as_millis() as i64),
                ),
                authorization: match (&r.oauth, &s.issuer) {
                    (None, _) => "shared credential".into(),
                    (Some(_), Some(i)) if s.from_upstream => {
                        format!("{i} (an upstream pointed to it)")
                    }
                    (Some(_), Some(i)) => i.clone(),
                    (Some(_), None) => "configured endpoints".into(),
                },
                metadata: match (&s.issuer, s.metadata_read_at) {
                    (None, _) => "–".into(),
                    (Some(_), Some(at)) => format!("read {}", ago(now, at)),
                    (Some(_), None) => "not read yet (at the first connection)".into(),
                },
            }
        })
        .collect();

    let (csrf, set_cookie) = c.browser().csrf_cookie(headers);
    let page = pages::render(
        StatusCode::OK,
        &AdminPage {
            nav: viewer.nav(&csrf, "admin"),
            csrf: &csrf,
            notice,
            welcome: welcome || counts.is_empty(),
            mcp_url: &c.auth.resource,
            me: &viewer.user.id,
            people,
            clients,
            grants,
            upstreams,
            resources,
            grants_cut,
        },
    );
    Ok(with_cookie(page, set_cookie))
}

/// The administrator posting a form: CSRF checked, still an administrator.
async fn posted_admin(
    c: &Console,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Viewer, Response> {
    let viewer = c.posted(headers, form).await?;
    if viewer.user.is_admin {
        Ok(viewer)
    } else {
        Err(super::admins_only())
    }
}

/// Records an administrator's action on a person.
fn record(event: &str, subject: Option<&str>, admin: &Viewer, detail: String) {
    crate::audit::emit(AuditEvent {
        person: Some(admin.display_name().to_owned()),
        detail: Some(detail),
        ..AuditEvent::security(event, subject)
    });
}

/// `POST /admin/people` (`id`, `action` = `disable` | `enable` | `reset-totp`).
pub(super) async fn person_action(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let form = form_fields(form);
    let admin = match posted_admin(&c, &headers, &form).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = form.get("id").map(String::as_str).unwrap_or("");
    let action = form.get("action").map(String::as_str).unwrap_or("");
    let target = match c.auth.store.user(id).await {
        Ok(Some(u)) => u,
        Ok(None) => return render(&c, &headers, &admin, Some("No such person."), false).await,
        Err(e) => return unavailable(e),
    };
    let name = target
        .username
        .clone()
        .or(target.email.clone())
        .unwrap_or(target.id.clone());
    let by = format!("by administrator {}", admin.display_name());
    let note = match action {
        "disable" if target.id == admin.user.id => {
            "You cannot disable yourself: ask another administrator, or use `doorman users disable`.".to_owned()
        }
        "disable" => {
            if let Err(e) = c.auth.store.set_user_disabled(&target.id, Some(c.now_ms())).await {
                return unavailable(e);
            }
            // The store revoked the grants (and told the other nodes); this node stops
            // accepting their tokens now, whichever grants were live when it did.
            let grants = match c.auth.store.grants(Some(&target.id)).await {
                Ok(g) => g,
                Err(e) => return unavailable(e),
            };
            let now = c.now_ms();
            for g in grants.iter().filter(|g| g.revoked_at.is_some()) {
                c.auth.tokens.revocations.revoke_grant_locally(&g.id, now);
            }
            if let Some(v) = c.vault() {
                v.forget(&target.id);
            }
            if let Some(p) = c.gateway.policies() {
                p.forget(&target.id);
            }
            record("person_disabled", Some(&target.id), &admin, by);
            format!("Disabled {name}: their sign-ins at clients and in browsers ended.")
        }
        "enable" => match c.auth.store.set_user_disabled(&target.id, None).await {
            Ok(_) => {
                record("person_enabled", Some(&target.id), &admin, by);
                format!("Enabled {name}: they can sign in again.")
            }
            Err(e) => return unavailable(e),
        },
        "reset-totp" => match c.auth.accounts.disable_totp(&target.id).await {
            Ok(()) => {
                record("totp_reset", Some(&target.id), &admin, by);
                format!(
                    "Removed {name}'s authenticator app: they sign in with their password until TOTP is set up again."
                )
            }
            Err(e) => format!("Cannot reset TOTP for {name}: {e}"),
        },
        _ => "Unknown action.".to_owned(),
    };
    render(&c, &headers, &admin, Some(&note), false).await
}

/// `POST /admin/grants/revoke` (`id`): ends one sign-in of a person at a client.
pub(super) async fn revoke_grant(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let form = form_fields(form);
    let admin = match posted_admin(&c, &headers, &form).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = form.get("id").cloned().unwrap_or_default();
    let grant = match c.auth.store.grant(&id).await {
        Ok(g) => g,
        Err(e) => return unavailable(e),
    };
    let note = match grant {
        Some(g) if g.revoked_at.is_none() => {
            if let Err(e) = c.revoke_grants(&[id], "revoked by an administrator").await {
                return unavailable(e);
            }
            // The person approves the client again before it gets back in.
            if let Err(e) = c
                .auth
                .store
                .delete_consents(Some(&g.user_id), &g.client_id)
                .await
            {
                return unavailable(e);
            }
            crate::audit::emit(AuditEvent {
                person: Some(admin.display_name().to_owned()),
                client_id: Some(g.client_id.clone()),
                detail: Some(format!("by administrator {}", admin.display_name())),
                ..AuditEvent::security("grant_revoked", Some(&g.user_id))
            });
            format!(
                "Revoked that sign-in at {}.",
                c.client_name(&g.client_id).await
            )
        }
        _ => "That sign-in no longer exists.".to_owned(),
    };
    render(&c, &headers, &admin, Some(&note), false).await
}

/// `POST /admin/clients/revoke` (`client_id`): a registered client's registration ends and
/// every sign-in through it; a configured client keeps its entry (remove it from the config)
/// but loses its sign-ins.
pub(super) async fn revoke_client(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let form = form_fields(form);
    let admin = match posted_admin(&c, &headers, &form).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let Some(known) = c.auth.clients.known(&client_id).await else {
        return render(&c, &headers, &admin, Some("No such client."), false).await;
    };
    let now = c.now_ms();
    let name = known.label();
    let outcome = match known.kind {
        ClientKind::Configured => c
            .auth
            .store
            .revoke_grants_where_client(&client_id, now, "client revoked")
            .await
            .map(|g| {
                (
                    format!(
                        "Revoked {} sign-in(s) at {name}. It is in the config: remove it there to keep it out.",
                        g.len()
                    ),
                    g,
                )
            }),
        // No registration of its own: a revoked row refuses it from now on.
        ClientKind::Metadata => async {
            c.auth
                .store
                .block_client(&client_id, "metadata", known.name.as_deref(), now)
                .await?;
            c.auth
                .store
                .revoke_grants_where_client(&client_id, now, "client revoked")
                .await
        }
        .await
        .map(|g| (format!("Revoked {name} and its {} sign-in(s).", g.len()), g)),
        ClientKind::Dynamic => c
            .auth
            .store
            .revoke_client(&client_id, now)
            .await
            .map(|(_, g)| (format!("Revoked {name} and its {} sign-in(s).", g.len()), g)),
    };
    let (note, grants) = match outcome {
        Ok(o) => o,
        Err(e) => return unavailable(e),
    };
    if let Err(e) = c.auth.store.delete_consents(None, &client_id).await {
        return unavailable(e);
    }
    for g in &grants {
        c.auth.tokens.revocations.revoke_grant_locally(g, now);
    }
    crate::audit::emit(AuditEvent {
        person: Some(admin.display_name().to_owned()),
        client_id: Some(client_id.clone()),
        detail: Some(format!(
            "{} sign-in(s), by administrator {}",
            grants.len(),
            admin.display_name()
        )),
        ..AuditEvent::security("client_revoked", None)
    });
    render(&c, &headers, &admin, Some(&note), false).await
}
