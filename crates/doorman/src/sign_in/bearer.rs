//! The bearer check in front of `/mcp` (MCP 2025-11-25 basic/authorization, "Access Token
//! Usage"; RFC 6750; RFC 9728 §5.1 for the challenge).

use std::sync::Arc;

use axum::{
    Json,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AuthServer, MCP_SCOPE, Person, tokens::TokenError};

/// The bearer check of a `/mcp` request (`server.rs::Mcp::admit`): the access token of every
/// request; the request comes back with the person in its extensions, or the refusal to send
/// (its body drained first). In local mode (`None`) there is nothing to check.
pub async fn admit(auth: Option<&Arc<AuthServer>>, mut req: Request) -> Result<Request, Response> {
    let Some(s) = auth else {
        return Ok(req);
    };
    match check(s, &mut req).await {
        Ok(()) => Ok(req),
        Err((reason, refusal)) => {
            crate::metrics::get()
                .auth_failures
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: reason.to_owned(),
                })
                .inc();
            Err(drain_then(req, refusal, s.settings.body_read_timeout).await)
        }
    }
}

/// Reads what is left of a refused request's body before answering, so the client can reuse the
/// connection (RFC 9112 §9.6); a body too large or too slow to drain gets `Connection: close`
/// instead.
async fn drain_then(req: Request, mut refusal: Response, within: std::time::Duration) -> Response {
    const DRAIN_LIMIT: usize = 1 << 20;
    let drained = tokio::time::timeout(within, axum::body::to_bytes(req.into_body(), DRAIN_LIMIT));
    if !matches!(drained.await, Ok(Ok(_))) {
        refusal
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    refusal
}

/// The bearer check itself: `Err` is the refusal to send.
async fn check(s: &Arc<AuthServer>, req: &mut Request) -> Result<(), (&'static str, Response)> {
    // MCP authorization, "Access Token Usage": tokens MUST NOT be in the URI query string.
    let in_query = req
        .uri()
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token"));
    if in_query {
        return Err((
            "token_in_query",
            challenge(
                s,
                StatusCode::BAD_REQUEST,
                Some((
                    "invalid_request",
                    "access tokens are accepted in the Authorization header only, never in the URL",
                )),
            ),
        ));
    }
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() {
        return Err((
            "duplicate_header",
            challenge(
                s,
                StatusCode::BAD_REQUEST,
                Some(("invalid_request", "more than one Authorization header")),
            ),
        ));
    }
    let Some(value) = first else {
        // RFC 6750 §3.1: no credentials at all gets a challenge without an error code.
        return Err((
            "missing_token",
            challenge(s, StatusCode::UNAUTHORIZED, None),
        ));
    };
    let parts = value
        .to_str()
        .ok()
        .map(|v| v.split_once(' ').unwrap_or((v, "")));
    // RFC 6750 §3.1: a request made with another authentication method (`Basic …`) lacks
    // bearer credentials: the challenge carries no error code, as for no header at all.
    if let Some((scheme, _)) = parts
        && !scheme.eq_ignore_ascii_case("bearer")
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b))
    {
        return Err(("other_scheme", challenge(s, StatusCode::UNAUTHORIZED, None)));
    }
    let token = parts
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err((
            "malformed_header",
            challenge(
                s,
                StatusCode::UNAUTHORIZED,
                Some((
                    "invalid_token",
                    "the Authorization header must be `Bearer <token>`",
                )),
            ),
        ));
    };
    let mut verified = s.tokens.verify(token);
    if verified == Err(TokenError::UnknownKey)
        && s.keys.reload_for_unknown_kid(s.clock.now_ms()).await
    {
        // Another node may have rotated the signing key since we last read the keys.
        verified = s.tokens.verify(token);
    }
    let claims = match verified {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = e.reason(), "access token refused");
            return Err((
                e.reason(),
                challenge(
                    s,
                    StatusCode::UNAUTHORIZED,
                    Some(("invalid_token", &e.to_string())),
                ),
            ));
        }
    };
    if !claims.scope.split(' ').any(|sc| sc == MCP_SCOPE) {
        // RFC 6750 §3.1 / MCP "Scope Challenge Handling".
        return Err((
            "insufficient_scope",
            challenge(
                s,
                StatusCode::FORBIDDEN,
                Some(("insufficient_scope", "the token lacks the mcp scope")),
            ),
        ));
    }
    req.extensions_mut().insert(Person(claims));
    Ok(())
}

/// A `401`/`400`/`403` with `WWW-Authenticate: Bearer resource_metadata=…, scope=…[, error=…]`
/// (RFC 9728 §5.1, MCP "Protected Resource Metadata Discovery Requirements").
pub fn challenge(s: &AuthServer, status: StatusCode, error: Option<(&str, &str)>) -> Response {
    let mut value = format!(
        "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\", scope=\"{MCP_SCOPE}\"",
        s.issuer
    );
    if let Some((code, description)) = error {
        value.push_str(&format!(
            ", error=\"{code}\", error_description=\"{}\"",
            description.replace('"', "'")
        ));
    }
    let body = match error {
        Some((code, description)) => json!({ "error": code, "error_description": description }),
        None => {
            json!({ "error": "unauthorized", "error_description": "sign in to Doorman: this endpoint needs an access token" })
        }
    };
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
