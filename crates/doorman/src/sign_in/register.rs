//! `/oauth/register`: dynamic client registration (RFC 7591), with the read and delete parts of
//! RFC 7592 at `registration_client_uri`. Kept for clients that predate Client ID Metadata
//! Documents (MCP 2025-11-25 basic/authorization, "Dynamic Client Registration").
//!
//! Claude registers anew on every fresh connect, so registrations unused for
//! `sign_in.registration_expiry` are deleted, and each address may register only
//! `sign_in.registrations_per_hour` times an hour.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::rejection::BytesRejection,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{AuthServer, clients::TokenAuth};
use crate::{crypto, store::ClientRow};

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Schemes a native app may not use for its redirect (RFC 8252 §7.1 allows private-use schemes;
/// these are not that).
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "ftp",
    "ws",
    "wss",
];

/// Client metadata fields that RFC 7591 §2 defines as strings (and that Doorman keeps or echoes).
const STRING_FIELDS: &[&str] = &[
    "client_name",
    "client_uri",
    "logo_uri",
    "scope",
    "tos_uri",
    "policy_uri",
    "software_id",
    "software_version",
    "token_endpoint_auth_method",
];

/// Checks one redirect URI of a registration (RFC 7591 §2, RFC 8252 §7, OAuth 2.1 §2.3.1).
fn redirect_uri_ok(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URL"))?;
    if url.fragment().is_some() {
        return Err(format!("{uri:?} has a fragment"));
    }
    // RFC 9700 §2.1: complete URIs compared exactly; a pattern is not a redirect URI.
    if uri.contains('*') {
        return Err(format!("{uri:?}: a redirect URI cannot be a pattern"));
    }
    match url.scheme() {
        "https" => Ok(()),
        // RFC 8252 §7.3 / §8.3: plain http only towards the loopback interface.
        "http" if super::clients::is_loopback_host(url.host_str()) => Ok(()),
        "http" => Err(format!(
            "{uri:?}: http redirect URIs are only allowed on loopback"
        )),
        s if FORBIDDEN_SCHEMES.contains(&s) => {
            Err(format!("{uri:?}: the {s} scheme cannot be a redirect"))
        }
        _ => Ok(()),
    }
}

/// `POST /oauth/register`.
pub async fn register(
    State(s): State<Arc<AuthServer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // RFC 7591 has no size limit; a registration is a few hundred bytes, so 16 KiB is generous.
    // A body beyond the server's limit (or one that breaks off) gets the same JSON answer.
    let Some(body) = body.ok().filter(|b| b.len() <= 16 * 1024) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "the registration body could not be read, or is larger than 16 KiB",
        );
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    let Some(meta) = is_json
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
        .filter(Value::is_object)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "the body must be a JSON object of client metadata",
        );
    };
    let now = s.clock.now_ms();
    // The client's address: behind a load balancer, the one it forwarded (server.trusted_proxies).
    let address = crate::net::ClientAddress::current()
        .map_or(peer.ip(), |c| c.ip)
        .to_string();
    // Taken before the registration is made: concurrent requests each take one.
    match s.store.take_registration_quota(&address, now).await {
        Ok(n) if n > i64::from(s.settings.registrations_per_hour) => {
            tracing::warn!(%address, "dynamic registration rate limit reached");
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request",
                "too many registrations from this address; try again later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
            return r;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot count registrations: refused");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "registration failed",
            );
        }
    }
    let uris: Vec<String> = match meta.get("redirect_uris").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            let mut out = Vec::new();
            for u in list {
                let Some(u) = u.as_str() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_redirect_uri",
                        "redirect_uris must be strings",
                    );
                };
                if let Err(why) = redirect_uri_ok(u) {
                    return error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", &why);
                }
                out.push(u.to_owned());
            }
            out
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_redirect_uri",
                "redirect_uris is required",
            );
        }
    };
    // RFC 7591 §2 gives each field its type; a value of another type is invalid metadata.
    if let Some(key) = STRING_FIELDS
        .iter()
        .find(|k| meta.get(**k).is_some_and(|v| !v.is_string()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            &format!("{key} must be a string"),
        );
    }
    if meta
        .get("contacts")
        .is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "contacts must be an array of strings",
        );
    }
    let method = meta
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .unwrap_or("client_secret_basic");
    // RFC 7591 §2: the default is client_secret_basic; a public client says "none".
    let auth = match TokenAuth::parse(method) {
        Some(
            a @ (TokenAuth::None | TokenAuth::ClientSecretBasic | TokenAuth::ClientSecretPost),
        ) => a,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &format!(
                    "token_endpoint_auth_method {method:?} is not supported here (none, client_secret_basic, client_secret_post)"
                ),
            );
        }
    };
    // The error is the message; the response is made once, below.
    let list = |key: &str, default: &[&str]| -> Result<Vec<String>, String> {
        let wrong = || format!("{key} must be an array of strings");
        match meta.get(key) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(wrong),
            Some(_) => Err(wrong()),
        }
    };
    let grant_types = match list("grant_types", &["authorization_code", "refresh_token"]) {
        Ok(g) => g,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_client_metadata", &why),
    };
    if let Some(g) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            &format!("grant type {g:?} is not supported"),
        );
    }
    let response_types = match list("response_types", &["code"]) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_client_metadata", &why),
    };
    if response_types.iter().any(|r| r != "code") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "only the code response type is supported",
        );
    }
    let name = meta
        .get("client_name")
        .and_then(Value::as_str)
        .map(|n| n.chars().take(200).collect::<String>());
    let client_id = crypto::random_token(18);
    let secret = (auth != TokenAuth::None).then(|| crypto::random_token(32));
    let registration_token = crypto::random_token(32);
    let row = ClientRow {
        client_id: client_id.clone(),
        kind: "dynamic".into(),
        name: name.clone(),
        redirect_uris: serde_json::to_string(&uris).expect("strings serialize"),
        token_endpoint_auth_method: auth.as_str().into(),
        secret_hash: secret.as_deref().map(crypto::sha256_hex),
        registration_token_hash: Some(crypto::sha256_hex(&registration_token)),
        metadata: meta.to_string(),
        registered_from: Some(address.clone()),
        created_at: now,
        last_used_at: now,
        revoked_at: None,
    };
    if let Err(e) = s.store.upsert_client(&row).await {
        tracing::error!(error = %e, "cannot store a registration");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "registration failed",
        );
    }
    tracing::info!(client = %client_id, name = ?name, %address, "client registered");
    let mut body = json!({
        "client_id": client_id,
        "client_id_issued_at": now / 1000,
        "redirect_uris": uris,
        "grant_types": grant_types,
        "response_types": response_types,
        "token_endpoint_auth_method": auth.as_str(),
        "registration_client_uri": s.endpoint(&format!("/oauth/register/{client_id}")),
        "registration_access_token": registration_token,
    });
    for key in [
        "client_name",
        "client_uri",
        "logo_uri",
        "scope",
        "contacts",
        "tos_uri",
        "policy_uri",
        "software_id",
        "software_version",
    ] {
        if let Some(v) = meta.get(key) {
            body[key] = v.clone();
        }
    }
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
        // RFC 7591 §3.2.1: 0 means the secret does not expire.
        body["client_secret_expires_at"] = json!(0);
    }
    let mut r = (StatusCode::CREATED, Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// RFC 7592 §2: the registration access token authorizes reading and deleting a registration.
async fn registered(
    s: &AuthServer,
    client_id: &str,
    headers: &HeaderMap,
) -> Result<ClientRow, Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let row = s
        .store
        .client(client_id)
        .await
        .ok()
        .flatten()
        .filter(|r| r.kind == "dynamic" && r.revoked_at.is_none());
    match (row, presented) {
        (Some(row), Some(token))
            if row.registration_token_hash.as_deref().is_some_and(|h| {
                crypto::constant_time_eq(h.as_bytes(), crypto::sha256_hex(token).as_bytes())
            }) =>
        {
            Ok(row)
        }
        // RFC 6750 §3.1: a request without a bearer token gets a challenge with no error code.
        (_, None) => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "error_description": "the registration access token is required (Authorization: Bearer …)"
                })),
            )
                .into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(r)
        }
        // RFC 7592 §2.1: an unknown client or a wrong token are both 401.
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "unknown client or wrong registration access token",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            Err(r)
        }
    }
}

/// `GET /oauth/register/{client_id}` (RFC 7592 §2.1).
pub async fn read(
    State(s): State<Arc<AuthServer>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match registered(&s, &client_id, &headers).await {
        Ok(row) => {
            let mut body: Value = serde_json::from_str(&row.metadata).unwrap_or_else(|_| json!({}));
            body["client_id"] = json!(row.client_id);
            body["client_id_issued_at"] = json!(row.created_at / 1000);
            body["redirect_uris"] = serde_json::from_str(&row.redirect_uris).unwrap_or(json!([]));
            body["token_endpoint_auth_method"] = json!(row.token_endpoint_auth_method);
            body["registration_client_uri"] =
                json!(s.endpoint(&format!("/oauth/register/{}", row.client_id)));
            let mut r = Json(body).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(r) => r,
    }
}

/// `DELETE /oauth/register/{client_id}` (RFC 7592 §2.3): the client and its grants end.
pub async fn delete(
    State(s): State<Arc<AuthServer>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match registered(&s, &client_id, &headers).await {
        Ok(row) => match s
            .store
            .revoke_client(&row.client_id, s.clock.now_ms())
            .await
        {
            Ok((_, grants)) => {
                // This process stops accepting the client's tokens at once; others within a poll.
                let now = s.clock.now_ms();
                for g in &grants {
                    s.tokens.revocations.revoke_grant_locally(g, now);
                }
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot delete a registration");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "deletion failed",
                )
            }
        },
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::redirect_uri_ok;

    #[test]
    fn redirect_uris_of_registrations() {
        for (uri, ok) in [
            ("https://claude.ai/api/mcp/auth_callback", true),
            ("http://127.0.0.1:33418/", true),
            ("http://localhost:6274/oauth/callback", true),
            ("cursor://anysphere.cursor-retrieval/oauth/callback", true),
            ("http://evil.example/cb", false),
            ("javascript:alert(1)", false),
            ("https://app.example/cb#frag", false),
            ("/relative", false),
        ] {
            assert_eq!(redirect_uri_ok(uri).is_ok(), ok, "{uri}");
        }
    }
}
