//! The authorization request between `/oauth/authorize` and the code: validated, stored under
//! a random id and bound to the browser that started it (by the hash of its CSRF cookie), so
//! every page that continues it (sign-in, a provider's callback, consent) loads it the same way.

use std::collections::HashMap;

use axum::{http::HeaderMap, http::StatusCode, response::Response};
use serde::{Deserialize, Serialize};

use super::AuthServer;
use crate::{
    crypto,
    store::AuthorizationRequestRow,
    web::{csrf_refused, pages},
};

/// An authorization request after validation, as stored between the pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    /// `prompt=login`: a sign-in newer than the request is needed.
    pub force_sign_in: bool,
    /// `prompt=consent`: ask again even when the person approved this client before.
    #[serde(default)]
    pub force_consent: bool,
    /// A sign-in to Doorman in this browser only, started by one of Doorman's own pages (a
    /// connect link opened while signed out): no client, never a code; once signed in, the
    /// browser goes back to that path. Sealed ([`seal_return_to`]): a connect link's prompt id
    /// is a secret, never stored in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to: Option<String>,
}

impl Pending {
    /// A browser-only sign-in that returns to a path sealed with [`seal_return_to`].
    pub fn browser_only(sealed_path: String) -> Self {
        Self {
            client_id: String::new(),
            redirect_uri: String::new(),
            scope: String::new(),
            state: None,
            code_challenge: String::new(),
            resource: String::new(),
            force_sign_in: false,
            force_consent: false,
            return_to: Some(sealed_path),
        }
    }

    /// The client, when the request is an authorization (not a browser-only sign-in).
    pub fn client(&self) -> Option<&str> {
        Some(self.client_id.as_str()).filter(|c| self.return_to.is_none() && !c.is_empty())
    }
}

/// `path` when it is a path on Doorman itself (`/connect/…?prompt=…`), never another origin:
/// one leading slash (`//host` and `/\host` are other hosts to a browser), visible ASCII only.
pub fn local_path(path: &str) -> Option<&str> {
    let b = path.as_bytes();
    let ok = b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && path.len() <= 2048
        && b.iter().all(|c| c.is_ascii_graphic());
    ok.then_some(path)
}

/// `path` sealed for the authorization request whose id hashes to `id_hash`.
pub(super) fn seal_return_to(s: &AuthServer, id_hash: &str, path: &str) -> String {
    s.ring
        .seal(path.as_bytes(), &format!("return-to:{id_hash}"))
}

/// Where a browser goes once signed in for the request whose id hashes to `id_hash`: back to
/// the page that sent it for a browser-only sign-in, else on to consent.
pub(super) fn next_after_sign_in(
    s: &AuthServer,
    id: &str,
    id_hash: &str,
    pending: &Pending,
) -> String {
    pending
        .return_to
        .as_deref()
        .and_then(|sealed| s.ring.open(sealed, &format!("return-to:{id_hash}")).ok())
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .filter(|p| local_path(p).is_some())
        .unwrap_or_else(|| format!("/consent?request={id}"))
}

/// [`next_after_sign_in`] for a request known by its id only (a provider's callback).
pub(super) async fn after_sign_in(s: &AuthServer, id: &str) -> String {
    let id_hash = crypto::sha256_hex(id);
    let pending = s
        .store
        .authorization_request(&id_hash)
        .await
        .ok()
        .flatten()
        .and_then(|row| serde_json::from_str::<Pending>(&row.params).ok());
    match pending {
        Some(p) => next_after_sign_in(s, id, &id_hash, &p),
        None => format!("/consent?request={id}"),
    }
}

/// The stored request behind a page, checked to belong to this browser.
pub async fn load_request(
    s: &AuthServer,
    id: &str,
    headers: &HeaderMap,
) -> Result<(AuthorizationRequestRow, Pending), Response> {
    let expired = || {
        pages::message(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "Start again from your application.",
        )
    };
    let row = match s.store.authorization_request(&crypto::sha256_hex(id)).await {
        Ok(Some(row)) if row.expires_at > s.clock.now_ms() => row,
        Ok(_) => return Err(expired()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read an authorization request");
            return Err(pages::message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Try again in a moment.",
            ));
        }
    };
    let browser_ok = s.browser.started(headers, &row.browser_hash);
    if !browser_ok {
        return Err(pages::message(
            StatusCode::BAD_REQUEST,
            "Wrong browser",
            "This sign-in was started in another browser. Start again from your application.",
        ));
    }
    let pending: Pending = serde_json::from_str(&row.params).map_err(|_| expired())?;
    Ok((row, pending))
}

pub fn no_request() -> Response {
    pages::message(
        StatusCode::BAD_REQUEST,
        "Nothing to sign in to",
        "Sign in from your MCP client: it opens this page for you.",
    )
}

#[derive(Deserialize)]
pub struct RequestQuery {
    pub request: Option<String>,
}

pub(super) async fn client_name(s: &AuthServer, client_id: &str) -> Option<String> {
    s.clients
        .resolve(client_id)
        .await
        .ok()
        .map(|c| c.display_name().to_owned())
}

/// The request a form was posted for: the CSRF token checked, then the request loaded and checked
/// to belong to this browser.
pub(super) async fn posted_request(
    s: &AuthServer,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(String, AuthorizationRequestRow, Pending), Response> {
    if !s.browser.csrf_ok(headers, form) {
        return Err(csrf_refused());
    }
    let Some(id) = form.get("request").cloned() else {
        return Err(no_request());
    };
    let (row, pending) = load_request(s, &id, headers).await?;
    Ok((id, row, pending))
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn a_browser_sign_in_returns_only_to_a_path_on_doorman() {
        for (path, ok) in [
            ("/connect/github?prompt=abc", true),
            ("/connections", true),
            ("/", true),
            ("//evil.example/x", false),
            ("/\\evil.example/x", false),
            ("https://evil.example/x", false),
            ("javascript:alert(1)", false),
            ("connections", false),
            ("", false),
            ("/x\r\nLocation: https://evil.example", false),
            ("/a b", false),
            ("/é", false),
        ] {
            assert_eq!(local_path(path).is_some(), ok, "{path:?}");
        }
    }
}
