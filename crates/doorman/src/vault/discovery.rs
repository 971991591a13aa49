//! Upstream MCP servers that do MCP authorization themselves become resources on first
//! contact (MCP 2025-11-25 basic/authorization, "Authorization Server Discovery"):
//!
//! 1. the upstream answers `401` with `WWW-Authenticate: Bearer resource_metadata="…"`;
//! 2. its protected resource metadata (RFC 9728) names the resource and its authorization
//!    servers; the `resource` must be the upstream's own URL (RFC 9728 §3.3);
//! 3. the authorization server's metadata (RFC 8414, or OpenID Connect Discovery);
//! 4. Doorman's client there: its Client ID Metadata Document (served at
//!    [`CLIENT_METADATA_PATH`], when the server supports it and Doorman is on https), or a
//!    dynamic registration (RFC 7591) as a public client, kept in the store for every node;
//! 5. from then on the upstream is like one tied to a `[[resources]]` entry: the person is
//!    prompted, authorizes with PKCE and `resource` (RFC 8707), and the token goes upstream.
//!
//! The resource is named after the upstream; its binding is `session` and `[[policies]]`
//! adjust lifetimes per tool, as for any resource.

use std::{collections::BTreeMap, sync::Arc};

use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;

use super::{
    Vault,
    oauth::{ResourceClient, ResourceError},
};
use crate::{
    config::{
        Binding,
        presets::Quirks,
        resolved::{Endpoints, OAuthClient, ResolvedResource, TokenHeader, redirect_uri_of},
    },
    net::auth_param,
    store::RegistrationRow,
};

/// Where Doorman serves its own Client ID Metadata Document.
pub const CLIENT_METADATA_PATH: &str = "/oauth/doorman-client.json";

/// Doorman's Client ID Metadata Document (draft-ietf-oauth-client-id-metadata-document): the
/// URL is the client id; a public client using PKCE. `redirect_uris` are the per-resource
/// redirect URIs of the upstreams that may become resources this way.
pub fn client_metadata(issuer: &str, redirect_uris: &[String]) -> Value {
    json!({
        "client_id": format!("{issuer}{CLIENT_METADATA_PATH}"),
        "client_name": "Doorman",
        "client_uri": issuer,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// Why an upstream could not be made a resource; shown to the client (no secrets in it).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("its 401 names no resource_metadata")]
    NoMetadata,
    #[error("{0}")]
    Resource(#[from] ResourceError),
    #[error("{0}")]
    Invalid(String),
}

impl Vault {
    /// Doorman's Client ID Metadata Document, naming the redirect URI of every upstream that
    /// may become a resource by discovery.
    pub fn client_metadata(&self) -> Value {
        let uris: Vec<String> = self
            .discoverable
            .iter()
            .map(|u| redirect_uri_of(&self.redirect_uri, u))
            .collect();
        client_metadata(&self.issuer, &uris)
    }

    /// Makes `upstream` (at `url`) a resource from its `401` challenge, once: later calls get
    /// the same resource.
    pub async fn discover_upstream(
        &self,
        upstream: &str,
        url: &Url,
        challenge: &str,
    ) -> Result<Arc<ResourceClient>, DiscoveryError> {
        let _one_at_a_time = self.discovering.lock().await;
        if let Some(rc) = self.resource(upstream) {
            return Ok(rc);
        }
        let metadata_url = auth_param(challenge, "resource_metadata")
            .and_then(|u| Url::parse(&u).ok())
            .ok_or(DiscoveryError::NoMetadata)?;
        if !matches!(metadata_url.scheme(), "https" | "http") {
            return Err(DiscoveryError::Invalid(
                "resource_metadata is not a web URL".into(),
            ));
        }
        let bootstrap = self.bootstrap_client(upstream, None);
        let prm = bootstrap.fetch_json(&metadata_url).await?;
        let (resource, issuer) = read_resource_metadata(&prm, url)?;
        // An upstream may not pass itself off as a resource the operator configured: its
        // authorization server would then receive flows meant for that resource.
        let same_issuer = |configured: &Url| {
            configured.as_str().trim_end_matches('/') == issuer.as_str().trim_end_matches('/')
        };
        if let Some(taken) = self.resources().iter().find(|r| {
            r.resource
                .oauth
                .as_ref()
                .and_then(|o| o.issuer.as_ref())
                .is_some_and(same_issuer)
        }) {
            return Err(DiscoveryError::Invalid(format!(
                "it names the authorization server of the configured resource {:?}; give the upstream `resource = \"{}\"` in the config instead",
                taken.name(),
                taken.name()
            )));
        }
        let as_meta = bootstrap.metadata_of(&issuer).await?;
        let endpoints = read_endpoints(&as_meta, &issuer)?;
        // Scope selection (MCP 2025-11-25 basic/authorization, "Scope Selection Strategy"):
        // the challenge's `scope`, else what the metadata says is supported.
        let scopes: Vec<String> = match auth_param(challenge, "scope") {
            Some(s) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => prm
                .get("scopes_supported")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        };
        let (client_id, secret) = self
            .client_at(upstream, &issuer, &as_meta, &bootstrap, &scopes)
            .await?;
        let display_name = prm
            .get("resource_name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(upstream)
            .to_owned();
        let mut authorization_params = BTreeMap::new();
        // RFC 8707 §2: the token is for this upstream only.
        authorization_params.insert("resource".to_owned(), resource.clone());
        let resolved = discovered_resource(
            upstream,
            display_name,
            OAuthClient {
                client_id,
                client_secret: None,
                // Kept, so each flow is bound to this issuer and its answers checked (RFC 9207).
                issuer: Some(issuer.clone()),
                endpoints,
                authorization_params,
                pkce: true,
            },
            scopes,
        );
        let rc = Arc::new(ResourceClient::discovered(
            resolved,
            self.http.clone(),
            self.clock.clone(),
            redirect_uri_of(&self.redirect_uri, upstream),
            secret,
            resource,
            self.guarded.clone(),
        ));
        self.resources
            .write()
            .expect("resources lock")
            .push(rc.clone());
        tracing::info!(upstream, issuer = %issuer, "the upstream does MCP authorization: it is now a resource people connect to");
        Ok(rc)
    }

    fn bootstrap_client(&self, upstream: &str, issuer: Option<Url>) -> ResourceClient {
        let resolved = discovered_resource(
            upstream,
            upstream.to_owned(),
            OAuthClient {
                client_id: String::new(),
                client_secret: None,
                issuer,
                endpoints: Endpoints::default(),
                authorization_params: BTreeMap::new(),
                pkce: true,
            },
            Vec::new(),
        );
        ResourceClient::discovered(
            resolved,
            self.http.clone(),
            self.clock.clone(),
            redirect_uri_of(&self.redirect_uri, upstream),
            None,
            String::new(),
            self.guarded.clone(),
        )
    }

    /// Doorman's client id at an authorization server: its metadata document's URL where the
    /// server accepts those (and Doorman is on https, as such client ids must be), else a
    /// dynamic registration, made once and kept in the store.
    async fn client_at(
        &self,
        upstream: &str,
        issuer: &Url,
        as_meta: &Value,
        bootstrap: &ResourceClient,
        scopes: &[String],
    ) -> Result<(String, Option<SecretString>), DiscoveryError> {
        let cimd = as_meta
            .get("client_id_metadata_document_supported")
            .and_then(Value::as_bool)
            == Some(true);
        if cimd && self.issuer.starts_with("https://") {
            return Ok((format!("{}{CLIENT_METADATA_PATH}", self.issuer), None));
        }
        let issuer_key = issuer.as_str().trim_end_matches('/');
        let open = |r: &RegistrationRow| {
            r.client_secret_sealed.as_ref().and_then(|s| {
                self.ring
                    .open(s, &registration_aad(upstream, issuer_key))
                    .ok()
                    .map(|b| SecretString::from(String::from_utf8_lossy(&b).into_owned()))
            })
        };
        let redirect_uri = redirect_uri_of(&self.redirect_uri, upstream);
        // A registration is reused only when it was made for this resource's redirect URI.
        if let Some(r) = self
            .store
            .registration(upstream, issuer_key)
            .await
            .map_err(|e| DiscoveryError::Invalid(format!("store: {e}")))?
            && r.redirect_uri.as_deref() == Some(redirect_uri.as_str())
        {
            return Ok((r.client_id.clone(), open(&r)));
        }
        let Some(endpoint) = as_meta
            .get("registration_endpoint")
            .and_then(Value::as_str)
            .and_then(|s| Url::parse(s).ok())
        else {
            return Err(DiscoveryError::Invalid(format!(
                "the authorization server {issuer} offers neither client metadata documents nor dynamic registration: add a [[resources]] entry with a client_id registered there, and set resource = \"…\" on the upstream"
            )));
        };
        // RFC 7591 §2: the one redirect URI this registration is for.
        let mut request = client_metadata(&self.issuer, std::slice::from_ref(&redirect_uri));
        let obj = request.as_object_mut().expect("an object");
        obj.remove("client_id");
        if !scopes.is_empty() {
            obj.insert("scope".into(), json!(scopes.join(" ")));
        }
        let answer = bootstrap.post_json(&endpoint, &request).await?;
        let client_id = answer
            .get("client_id")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                DiscoveryError::Invalid("the registration answer has no client_id".into())
            })?
            .to_owned();
        let secret = answer.get("client_secret").and_then(Value::as_str);
        let row = RegistrationRow {
            upstream: upstream.to_owned(),
            issuer: issuer_key.to_owned(),
            client_id,
            client_secret_sealed: secret.map(|s| {
                self.ring
                    .seal(s.as_bytes(), &registration_aad(upstream, issuer_key))
            }),
            created_at: self.clock.now_ms(),
            redirect_uri: Some(redirect_uri),
        };
        let kept = self
            .store
            .insert_registration(&row)
            .await
            .map_err(|e| DiscoveryError::Invalid(format!("store: {e}")))?;
        tracing::info!(upstream, issuer = %issuer, client_id = %kept.client_id, "registered at the upstream's authorization server");
        Ok((kept.client_id.clone(), open(&kept)))
    }
}

/// The resource and its first authorization server, from an upstream's protected resource
/// metadata (RFC 9728 §3.3: the metadata must be about the resource that was asked).
pub(crate) fn read_resource_metadata(
    prm: &Value,
    url: &Url,
) -> Result<(String, Url), DiscoveryError> {
    let resource = prm
        .get("resource")
        .and_then(Value::as_str)
        .ok_or_else(|| DiscoveryError::Invalid("its metadata names no resource".into()))?
        .to_owned();
    if resource.trim_end_matches('/') != url.as_str().trim_end_matches('/') {
        return Err(DiscoveryError::Invalid(format!(
            "its metadata is about {resource:?}, not {url}"
        )));
    }
    let issuer = prm
        .get("authorization_servers")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok())
        .ok_or_else(|| {
            DiscoveryError::Invalid("its metadata names no authorization server".into())
        })?;
    Ok((resource, issuer))
}

/// The endpoints an authorization server's metadata names (RFC 8414 §2); it must name an
/// authorization and a token endpoint.
pub(crate) fn read_endpoints(as_meta: &Value, issuer: &Url) -> Result<Endpoints, DiscoveryError> {
    let endpoint = |key: &str| -> Option<Url> {
        as_meta
            .get(key)
            .and_then(Value::as_str)
            .and_then(|s| Url::parse(s).ok())
    };
    let endpoints = Endpoints {
        issuer: None,
        iss_required: false,
        authorization: endpoint("authorization_endpoint"),
        token: endpoint("token_endpoint"),
        revocation: endpoint("revocation_endpoint"),
        userinfo: endpoint("userinfo_endpoint"),
    };
    if endpoints.authorization.is_none() || endpoints.token.is_none() {
        return Err(DiscoveryError::Invalid(format!(
            "the authorization server {issuer} publishes no authorization or token endpoint"
        )));
    }
    Ok(endpoints)
}

/// A resource learned from an upstream: named after it, `session`-bound, plain OAuth.
fn discovered_resource(
    upstream: &str,
    display_name: String,
    oauth: OAuthClient,
    scopes: Vec<String>,
) -> ResolvedResource {
    ResolvedResource {
        name: upstream.to_owned(),
        display_name,
        preset: None,
        docs: None,
        oauth: Some(oauth),
        scopes,
        identity: None,
        binding: Binding::Session,
        prompt: crate::config::PromptChoice::Auto,
        max_age: None,
        token_header: TokenHeader::default(),
        shared_token: None,
        quirks: Quirks::STANDARD,
        api_key: None,
        id_jag: None,
    }
}

fn registration_aad(upstream: &str, issuer: &str) -> String {
    format!("registration:{upstream}|issuer:{issuer}")
}
