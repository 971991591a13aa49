//! Server-rendered pages (askama templates in `templates/`), their security headers and the
//! cookies of the browser side of layer 1.

use askama::Template;
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// The header navigation of the pages of a signed-in person (`nav.html`).
pub struct Nav {
    /// How the person is named in the header.
    pub person: String,
    pub admin: bool,
    /// The browser's CSRF token, for the sign-out form.
    pub csrf: String,
    /// The entry of the current page: `home`, `connections`, `activity`, `admin` or `audit`.
    pub current: &'static str,
}

/// A duration as people say it ("3 minutes", "2 hours").
pub fn human_duration(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    let (n, unit) = match s {
        0..60 => (s, "second"),
        60..3600 => (s / 60, "minute"),
        3600..86_400 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// How long ago `at_ms` was, from `now_ms` ("just now", "5 minutes ago").
pub fn ago(now_ms: i64, at_ms: i64) -> String {
    match now_ms - at_ms {
        ..60_000 => "just now".into(),
        ms => format!("{} ago", human_duration(ms)),
    }
}

/// A time as the pages print it: UTC, to the second, without the `T` and `Z`.
pub fn utc_time(at_ms: i64) -> String {
    crate::clock::utc(at_ms)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub struct SignInPage<'a> {
    pub csrf: &'a str,
    pub request: &'a str,
    pub username: &'a str,
    pub client_name: Option<&'a str>,
    pub error: Option<&'a str>,
    pub ask_totp: bool,
    /// One button per SSO provider: (link, label).
    pub providers: &'a [(String, String)],
    /// Whether the local account form is shown.
    pub local: bool,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub csrf: &'a str,
    pub request: &'a str,
    pub client_id: &'a str,
    pub client_name: &'a str,
    pub client_is_url: bool,
    pub redirect_host: &'a str,
    pub person: &'a str,
    pub scopes: Vec<(&'a str, &'a str)>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// A command to run, shown as code under the message.
    pub command: Option<&'a str>,
    /// A way on: (its text, a same-site path).
    pub link: Option<(&'a str, &'a str)>,
}

#[derive(Template)]
#[template(path = "setup.html")]
pub struct SetupPage<'a> {
    pub csrf: &'a str,
    pub token: &'a str,
    pub username: &'a str,
    pub email: &'a str,
    pub error: Option<&'a str>,
}

/// Headers every page carries: no framing (clickjacking of the consent button), no caching, no
/// referrer (the URL may carry a request id), no scripts at all.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Renders a template as an HTML response with the page security headers.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => html_response(status, html),
        Err(e) => {
            tracing::error!(error = %e, "page template failed");
            html_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Doorman</title><p>Something went wrong.</p>".into(),
            )
        }
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    security_headers(r.headers_mut());
    r
}

/// A page that explains a problem and goes nowhere (RFC 6749 §4.1.2.1: errors about the client
/// or its redirect URI are shown to the person, never redirected).
pub fn message(status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        &MessagePage {
            title,
            message,
            command: None,
            link: None,
        },
    )
}

/// A message page with one link on (a path on Doorman).
pub fn message_with_link(
    status: StatusCode,
    title: &str,
    message: &str,
    link_text: &str,
    path: &str,
) -> Response {
    render(
        status,
        &MessagePage {
            title,
            message,
            command: None,
            link: Some((link_text, path)),
        },
    )
}

/// A message page with a command to run, shown as code.
pub fn message_with_command(
    status: StatusCode,
    title: &str,
    message: &str,
    command: &str,
) -> Response {
    render(
        status,
        &MessagePage {
            title,
            message,
            command: Some(command),
            link: None,
        },
    )
}

/// How the browser cookies are named and flagged for this deployment.
#[derive(Clone, Debug)]
pub struct CookiePolicy {
    /// `Secure` and the `__Host-` prefix (everything but a plain-http loopback development setup).
    pub secure: bool,
}

impl CookiePolicy {
    pub fn name(&self, base: &str) -> String {
        if self.secure {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/ (required by `__Host-`).
    pub fn set(&self, base: &str, value: &str, max_age_s: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}",
            self.name(base)
        ))
        .expect("cookie values are base64url")
    }

    /// Reads a cookie of ours from the request.
    pub fn get(&self, headers: &HeaderMap, base: &str) -> Option<String> {
        let name = self.name(base);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }
}

pub const CSRF_COOKIE: &str = "doorman_csrf";
pub const SESSION_COOKIE: &str = "doorman_session";
