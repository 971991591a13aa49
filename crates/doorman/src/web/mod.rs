//! Web plumbing every server-rendered page shares: templates and security headers
//! ([`pages`]), cookies, the double-submit CSRF check, redirects, and the remembered browser
//! sign-in. Layer 1's sign-in and consent pages and layer 2's connect pages both build on it;
//! it knows nothing of either.

pub mod pages;

use std::collections::HashMap;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{
    clock::SharedClock,
    crypto,
    store::{BrowserSessionRow, Store, UserRow},
};
use pages::{CSRF_COOKIE, CookiePolicy, Nav, SESSION_COOKIE};

/// The person a browser is signed in as, with the browser sign-in.
pub struct Viewer {
    pub session: BrowserSessionRow,
    pub user: UserRow,
}

impl Viewer {
    /// How pages name the person: email, else username, else id.
    pub fn display_name(&self) -> &str {
        self.user
            .email
            .as_deref()
            .or(self.user.username.as_deref())
            .unwrap_or(&self.user.id)
    }

    /// The header navigation for this person, with `current` marked.
    pub fn nav(&self, csrf: &str, current: &'static str) -> Nav {
        Nav {
            person: self.display_name().to_owned(),
            admin: self.user.is_admin,
            csrf: csrf.to_owned(),
            current,
        }
    }
}

/// What a page handler needs to recognise a browser: the cookie policy, and where browser
/// sign-ins are kept.
pub struct Browser {
    pub cookies: CookiePolicy,
    pub store: Store,
    pub clock: SharedClock,
}

impl Browser {
    /// The browser's CSRF cookie, and the `Set-Cookie` to send when it is new.
    pub fn csrf_cookie(&self, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
        match self
            .cookies
            .get(headers, CSRF_COOKIE)
            .filter(|v| v.len() >= 32)
        {
            Some(v) => (v, None),
            None => {
                let v = crypto::random_token(32);
                let set = self.cookies.set(CSRF_COOKIE, &v, 24 * 3600);
                (v, Some(set))
            }
        }
    }

    /// Checks a posted form's CSRF token against the browser's cookie (double submit), in
    /// constant time.
    pub fn csrf_ok(&self, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
        match (self.cookies.get(headers, CSRF_COOKIE), form.get("csrf")) {
            // Doorman's own tokens are 43 characters; anything short was not made by it (an
            // empty cookie and an empty field would otherwise match).
            (Some(cookie), Some(posted)) if cookie.len() >= 32 => {
                crypto::constant_time_eq(cookie.as_bytes(), posted.as_bytes())
            }
            _ => false,
        }
    }

    /// Whether this is the browser a flow was started in: the SHA-256 of its CSRF cookie, as
    /// the flow stored it (`browser_hash`), compared in constant time.
    pub fn started(&self, headers: &HeaderMap, browser_hash: &str) -> bool {
        self.cookies.get(headers, CSRF_COOKIE).is_some_and(|c| {
            crypto::constant_time_eq(crypto::sha256_hex(&c).as_bytes(), browser_hash.as_bytes())
        })
    }

    /// The person this browser is signed in as, if any (and still allowed in): the browser
    /// session and the person's id. Anything unreadable is "not signed in".
    pub async fn signed_in(&self, headers: &HeaderMap) -> Option<(BrowserSessionRow, String)> {
        self.viewer(headers).await.map(|v| {
            let id = v.user.id.clone();
            (v.session, id)
        })
    }

    /// The person this browser is signed in as, with their row; `None` as in
    /// [`Browser::signed_in`].
    pub async fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let cookie = self.cookies.get(headers, SESSION_COOKIE)?;
        let session = self
            .store
            .browser_session(&crypto::sha256_hex(&cookie))
            .await
            .ok()??;
        if session.expires_at <= self.clock.now_ms() {
            return None;
        }
        let user = self.store.user(&session.user_id).await.ok()??;
        if user.disabled_at.is_some() {
            return None;
        }
        Some(Viewer { session, user })
    }

    /// Ends this browser's sign-in (its row and its cookie); the `Set-Cookie` that clears it.
    pub async fn sign_out(&self, headers: &HeaderMap) -> anyhow::Result<HeaderValue> {
        if let Some(cookie) = self.cookies.get(headers, SESSION_COOKIE) {
            self.store
                .delete_browser_session(&crypto::sha256_hex(&cookie))
                .await?;
        }
        Ok(self.cookies.set(SESSION_COOKIE, "", 0))
    }
}

/// `303 See Other` to `location`, with the pages' security headers.
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    pages::security_headers(r.headers_mut());
    r
}

/// A signed-out browser on a page that needs a person: signed in to Doorman
/// (`/sign-in/browser`, local accounts or SSO), then sent back to the same page.
pub fn sign_in_and_return(uri: &axum::http::Uri) -> Response {
    let back = uri.path_and_query().map_or("/", |p| p.as_str());
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", back)
        .finish();
    see_other(&format!("/sign-in/browser?{query}"))
}

/// Adds a `Set-Cookie`, when there is one.
pub fn with_cookie(mut r: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// The page for a form whose CSRF token does not match the browser's cookie.
pub fn csrf_refused() -> Response {
    pages::message(
        StatusCode::BAD_REQUEST,
        "Form expired",
        "This form could not be verified (missing or wrong CSRF token). Start again from your application.",
    )
}
