//! Discovery documents: protected resource metadata (RFC 9728), authorization server metadata
//! (RFC 8414; also served at the OpenID Connect discovery path, which MCP clients try too), and
//! the JWKS.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{AuthServer, MCP_SCOPE, SCOPES};

fn cacheable(body: Value, max_age_s: u32) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={max_age_s}")).expect("ascii"),
    );
    r
}

/// `GET /.well-known/oauth-protected-resource[/mcp]` (RFC 9728 §3). `resource` is exactly the
/// URL clients connect to, path included (RFC 9728 §3.3; what Claude checks).
pub async fn protected_resource(State(s): State<Arc<AuthServer>>) -> Response {
    cacheable(
        json!({
            "resource": s.resource,
            "authorization_servers": [s.issuer],
            "scopes_supported": [MCP_SCOPE],
            "bearer_methods_supported": ["header"],
            "resource_name": "Doorman",
        }),
        300,
    )
}

/// The authorization server metadata document (RFC 8414 §2).
pub fn document(s: &AuthServer) -> Value {
    let auth_methods = [
        "none",
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    let assertion_algs = [
        "ES256", "ES384", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    ];
    let mut grant_types = vec!["authorization_code", "refresh_token"];
    // RFC 6749 §4.4, for the service clients the operator configured.
    if s.clients.configured().any(|c| c.service) {
        grant_types.push("client_credentials");
    }
    let id_jag = s.providers.iter().any(|p| p.config.id_jag);
    if id_jag {
        // RFC 7523 §2.1, with ID-JAGs (the MCP enterprise-managed authorization extension).
        grant_types.push(super::token::JWT_BEARER);
    }
    let mut doc = json!({
        // RFC 8414 §3.3: identical to the issuer the document was requested for.
        "issuer": s.issuer,
        "authorization_endpoint": s.endpoint("/oauth/authorize"),
        "token_endpoint": s.endpoint("/oauth/token"),
        "registration_endpoint": s.endpoint("/oauth/register"),
        "revocation_endpoint": s.endpoint("/oauth/revoke"),
        "jwks_uri": s.endpoint("/oauth/jwks.json"),
        "scopes_supported": SCOPES.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        // MCP authorization: PKCE S256 only.
        "code_challenge_methods_supported": ["S256"],
        // draft-ietf-oauth-client-id-metadata-document §4.
        "client_id_metadata_document_supported": true,
        // RFC 9207 §3.
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
    });
    if id_jag {
        // draft-ietf-oauth-identity-assertion-authz-grant §6.
        doc["authorization_grant_profiles_supported"] =
            json!(["urn:ietf:params:oauth:grant-profile:id-jag"]);
    }
    doc
}

/// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
pub async fn authorization_server(State(s): State<Arc<AuthServer>>) -> Response {
    cacheable(document(&s), 300)
}

/// `GET /oauth/jwks.json`: active keys and retired keys whose tokens may still be live.
pub async fn jwks(State(s): State<Arc<AuthServer>>) -> Response {
    let keep = s.tokens.lifetime_ms() + 60_000;
    cacheable(s.keys.jwks(s.clock.now_ms(), keep), 60)
}
