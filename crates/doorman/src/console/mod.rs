//! The web console: `/`, a person's home (their connections, the clients they approved, what
//! their assistants did lately); `/activity`, all of the latter; `/admin`, the administrators'
//! index (people, clients and sign-ins, upstreams and resources with their health) and
//! `/admin/audit`; and signing out.
//!
//! Pages that need a person send a signed-out browser through `/sign-in/browser` and back.
//! Every form is a POST with the double-submit CSRF check; an administrator's action is
//! checked against the person's admin flag as stored at the time of the request, and
//! recorded in the audit.

mod admin;
mod audit;
mod home;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form, Router,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, StatusCode, Uri},
    response::Response,
    routing::{get, post},
};

use crate::{
    gateway::Gateway,
    sign_in::AuthServer,
    vault::Vault,
    web::{Browser, Viewer, csrf_refused, pages, see_other, sign_in_and_return, with_cookie},
};

/// What the console's pages need.
pub struct Console {
    pub auth: Arc<AuthServer>,
    pub gateway: Arc<Gateway>,
}

impl Console {
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(home::page))
            .route("/grants/revoke", post(home::revoke_client))
            .route("/sign-out", post(sign_out))
            .route("/activity", get(audit::activity_page))
            .route("/admin", get(admin::page))
            .route("/admin/people", post(admin::person_action))
            .route("/admin/grants/revoke", post(admin::revoke_grant))
            .route("/admin/clients/revoke", post(admin::revoke_client))
            .route("/admin/audit", get(audit::admin_audit_page))
            .with_state(self)
    }

    fn browser(&self) -> &Browser {
        &self.auth.browser
    }

    fn vault(&self) -> Option<&Arc<Vault>> {
        self.gateway.router.vault()
    }

    fn now_ms(&self) -> i64 {
        self.auth.clock.now_ms()
    }

    /// The signed-in person, or the answer that signs this browser in and returns here.
    async fn viewer(&self, uri: &Uri, headers: &HeaderMap) -> Result<Viewer, Response> {
        self.browser()
            .viewer(headers)
            .await
            .ok_or_else(|| sign_in_and_return(uri))
    }

    /// The signed-in administrator; a signed-out browser signs in first, anyone else is
    /// refused.
    async fn admin(&self, uri: &Uri, headers: &HeaderMap) -> Result<Viewer, Response> {
        let viewer = self.viewer(uri, headers).await?;
        if viewer.user.is_admin {
            Ok(viewer)
        } else {
            Err(admins_only())
        }
    }

    /// The person posting a form, after the CSRF check.
    async fn posted(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<Viewer, Response> {
        if !self.browser().csrf_ok(headers, form) || !self.same_origin(headers) {
            return Err(csrf_refused());
        }
        self.browser()
            .viewer(headers)
            .await
            .ok_or_else(not_signed_in)
    }

    /// Revokes grants: in the store, and at once in this node's bearer checks (other nodes
    /// read revocations on their next poll). Returns how many were live.
    async fn revoke_grants(&self, ids: &[String], reason: &str) -> anyhow::Result<usize> {
        let now = self.now_ms();
        let mut n = 0;
        for id in ids {
            if self.auth.store.revoke_grant(id, now, reason).await? {
                n += 1;
            }
            self.auth.tokens.revocations.revoke_grant_locally(id, now);
        }
        Ok(n)
    }

    /// How pages name a client: its name with what vouches for it (`Client::label`), else its id.
    async fn client_name(&self, client_id: &str) -> String {
        self.auth
            .clients
            .known(client_id)
            .await
            .map_or_else(|| client_id.to_owned(), |c| c.label())
    }

    /// Whether a form was posted from one of Doorman's own pages, as far as the browser says:
    /// a second line behind the CSRF token (it matters in development setups on plain-http
    /// loopback, where cookies are shared across ports). `Sec-Fetch-Site` (Fetch Metadata),
    /// when sent, must be `same-origin`; otherwise an `Origin`, when sent and not `null` (what
    /// browsers send under the pages' `Referrer-Policy: no-referrer`), must be Doorman's.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        if let Some(site) = headers.get("sec-fetch-site") {
            return site.as_bytes() == b"same-origin";
        }
        let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
            return true;
        };
        if origin.as_bytes() == b"null" {
            return true;
        }
        let ours = url::Url::parse(&self.auth.issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        origin.to_str().is_ok_and(|o| o == ours)
    }
}

/// `POST /sign-out`: ends this browser's sign-in at Doorman (clients keep their own grants;
/// those are revoked from the home page).
async fn sign_out(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let form = form_fields(form);
    if !c.browser().csrf_ok(&headers, &form) || !c.same_origin(&headers) {
        return csrf_refused();
    }
    let who = c.browser().viewer(&headers).await;
    match c.browser().sign_out(&headers).await {
        Ok(cookie) => {
            if let Some(v) = who {
                crate::audit::emit(crate::audit::AuditEvent {
                    person: Some(v.display_name().to_owned()),
                    ..crate::audit::AuditEvent::security("sign_out", Some(&v.user.id))
                });
            }
            with_cookie(see_other("/"), Some(cookie))
        }
        Err(e) => unavailable(e),
    }
}

/// A posted form's fields; an unreadable body (wrong type, not form-encoded) counts as an
/// empty form, which the CSRF check then refuses with a page rather than a bare status.
fn form_fields(
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> HashMap<String, String> {
    form.map(|Form(f)| f).unwrap_or_default()
}

fn not_signed_in() -> Response {
    pages::message(
        StatusCode::UNAUTHORIZED,
        "Sign in to Doorman first",
        "Your sign-in in this browser ended. Open Doorman's home page and sign in again.",
    )
}

fn admins_only() -> Response {
    pages::message(
        StatusCode::FORBIDDEN,
        "Administrators only",
        "This page is for Doorman administrators. Your own connections and activity are on your home page.",
    )
}

fn unavailable(e: anyhow::Error) -> Response {
    tracing::error!(error = format!("{e:#}"), "a console page failed");
    pages::message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Something went wrong",
        "Doorman could not read or change its store. Try again in a moment.",
    )
}

/// The host part of each redirect URI, without repeats, for "where this client lives".
fn redirect_hosts(uris: &[String]) -> String {
    let mut hosts: Vec<String> = Vec::new();
    for u in uris {
        let host = url::Url::parse(u)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "–".into());
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        "–".into()
    } else {
        hosts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::redirect_hosts;

    #[test]
    fn redirect_hosts_are_listed_once_each() {
        let uris = [
            "http://127.0.0.1:33418/callback".to_owned(),
            "http://127.0.0.1/other".to_owned(),
            "https://claude.ai/api/mcp/auth_callback".to_owned(),
            "cursor://anysphere.cursor-mcp/oauth/callback".to_owned(),
        ];
        assert_eq!(
            redirect_hosts(&uris),
            "127.0.0.1, claude.ai, anysphere.cursor-mcp"
        );
        assert_eq!(redirect_hosts(&[]), "–");
        assert_eq!(redirect_hosts(&["not a url".to_owned()]), "–");
    }
}
