//! Who a `client_id` is, and whether a request really comes from it.
//!
//! Three kinds of clients (MCP 2025-11-25 basic/authorization, "Client Registration
//! Approaches"): pre-registered in the config, registered dynamically (RFC 7591, kept in the
//! store), and identified by the URL of a Client ID Metadata Document (fetched, never stored as
//! trusted input beyond its cache lifetime).

use std::{collections::HashMap, sync::Arc};

use axum::http::{HeaderMap, header};
use base64::{Engine, engine::general_purpose::STANDARD};

use super::{
    cimd::{ClientMetadataCache, ClientMetadataDocument, is_metadata_client_id, parse_public_jwks},
    client_assertion::AssertionVerifier,
};
use crate::{config::ClientConfig, crypto, store::Store};

/// How a client authenticates at the token endpoint (RFC 7591 §2 `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    /// Either Basic or post (pre-registered confidential clients accept both).
    ClientSecret,
    PrivateKeyJwt,
}

impl TokenAuth {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "client_secret_basic" => Self::ClientSecretBasic,
            "client_secret_post" => Self::ClientSecretPost,
            "private_key_jwt" => Self::PrivateKeyJwt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic | Self::ClientSecret => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// Where a client came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Configured,
    Dynamic,
    Metadata,
}

/// A resolved client.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub name: Option<String>,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    pub auth: TokenAuth,
    /// SHA-256 (hex) of the client secret, for confidential clients.
    pub secret_hash: Option<String>,
    pub document: Option<Arc<ClientMetadataDocument>>,
    /// A service client (configured with `grant_types = ["client_credentials"]`): it acts as
    /// itself, never for a person.
    pub service: bool,
}

impl Client {
    /// How pages that list clients name it, with what vouches for the name: a configured
    /// client's name is the operator's; a metadata document's comes from its URL's host (shown);
    /// a registered client chose its own (said so).
    pub fn label(&self) -> String {
        match (self.kind, &self.name) {
            (ClientKind::Configured, Some(n)) => n.clone(),
            (ClientKind::Metadata, name) => {
                let host = url::Url::parse(&self.id)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_else(|| self.id.clone());
                match name {
                    Some(n) => format!("{n} ({host})"),
                    None => host,
                }
            }
            (ClientKind::Dynamic, Some(n)) => format!("{n} (self-registered)"),
            (_, None) => self.id.clone(),
        }
    }

    /// What the consent page calls the client.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// Whether `uri` is one of the client's redirect URIs: exact string match (OAuth 2.1 §2.3.1,
    /// MCP security best practices), except that a loopback `http` redirect may use any port
    /// (RFC 8252 §7.3: native apps get an ephemeral port).
    pub fn redirect_allowed(&self, uri: &str) -> bool {
        if self.redirect_uris.iter().any(|r| r == uri) {
            return true;
        }
        let Ok(asked) = url::Url::parse(uri) else {
            return false;
        };
        if asked.scheme() != "http" || !is_loopback_host(asked.host_str()) {
            return false;
        }
        // The registered URI with the asked port put in must be the asked string itself, so
        // that nothing but the port differs: no userinfo (`http://evil@127.0.0.1:1/cb`), no
        // spelling the parser would normalise (`/./cb`, `%63b`), no fragment.
        self.redirect_uris.iter().any(|r| {
            url::Url::parse(r).is_ok_and(|mut reg| {
                reg.scheme() == "http"
                    && reg.host_str() == asked.host_str()
                    && reg.fragment().is_none()
                    && reg.set_port(asked.port()).is_ok()
                    && (reg.as_str() == uri
                        // Port 80 written out: the parser drops the scheme's default port.
                        || asked.port().is_none()
                            && reg.host_str().is_some_and(|h| {
                                let at = "http://".len() + h.len();
                                reg.as_str().get(at..).is_some_and(|rest| {
                                    uri == format!("http://{h}:80{rest}")
                                })
                            }))
            })
        })
    }
}

pub fn is_loopback_host(host: Option<&str>) -> bool {
    matches!(host, Some("127.0.0.1" | "[::1]" | "localhost"))
}

/// Why a client could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unknown client_id")]
    Unknown,
    #[error("this client has been revoked")]
    Revoked,
    #[error("the client's metadata document cannot be used: {0}")]
    Metadata(String),
}

/// Client credentials as presented at the token or revocation endpoint.
#[derive(Debug, Default)]
pub struct Presented {
    pub client_id: Option<String>,
    pub secret: Option<String>,
    pub via_basic: bool,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
}

impl Presented {
    /// Reads RFC 6749 §2.3.1 Basic credentials (form-urlencoded inside), `client_secret` in the
    /// body, or an RFC 7523 client assertion.
    pub fn read(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<Self, &'static str> {
        let mut p = Self {
            client_id: form.get("client_id").cloned(),
            secret: form.get("client_secret").cloned(),
            via_basic: false,
            assertion_type: form.get("client_assertion_type").cloned(),
            assertion: form.get("client_assertion").cloned(),
        };
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let value = auth
                .to_str()
                .map_err(|_| "malformed Authorization header")?;
            let Some(encoded) = value
                .strip_prefix("Basic ")
                .or_else(|| value.strip_prefix("basic "))
            else {
                return Err("the token endpoint accepts Basic client authentication only");
            };
            let decoded = STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or("malformed Basic credentials")?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or("malformed Basic credentials")?;
            let id = form_decode(id);
            let secret = form_decode(secret);
            if p.client_id.as_ref().is_some_and(|c| c != &id) {
                return Err("client_id in the body differs from the Basic credentials");
            }
            if p.secret.is_some() {
                // RFC 6749 §2.3: one authentication method per request.
                return Err("client credentials given twice (Basic and client_secret)");
            }
            p.client_id = Some(id);
            p.secret = Some(secret);
            p.via_basic = true;
        }
        if p.assertion.is_some() && p.secret.is_some() {
            return Err("client credentials given twice (secret and client_assertion)");
        }
        Ok(p)
    }
}

fn form_decode(s: &str) -> String {
    form_urlencoded::parse(format!("a={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Resolves and authenticates clients.
pub struct Clients {
    configured: HashMap<String, Client>,
    store: Store,
    metadata: ClientMetadataCache,
    assertions: AssertionVerifier,
}

impl Clients {
    pub fn new(
        configured: &[ClientConfig],
        store: Store,
        metadata: ClientMetadataCache,
        assertions: AssertionVerifier,
    ) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for c in configured {
            let secret = c
                .secret()
                .map_err(|e| anyhow::anyhow!("sign_in.clients {:?}: {e}", c.client_id))?;
            let document = Self::keys_of(c)
                .map_err(|e| anyhow::anyhow!("sign_in.clients {:?}: {e}", c.client_id))?;
            map.insert(
                c.client_id.clone(),
                Client {
                    id: c.client_id.clone(),
                    name: c.name.clone(),
                    kind: ClientKind::Configured,
                    redirect_uris: c.redirect_uris.iter().map(|u| u.to_string()).collect(),
                    auth: if document.is_some() {
                        TokenAuth::PrivateKeyJwt
                    } else if secret.is_some() {
                        TokenAuth::ClientSecret
                    } else {
                        TokenAuth::None
                    },
                    secret_hash: secret.map(|s| crypto::sha256_hex(&s)),
                    document,
                    service: c.is_service(),
                },
            );
        }
        Ok(Self {
            configured: map,
            store,
            metadata,
            assertions,
        })
    }

    /// A configured `private_key_jwt` client's keys (`jwks_file` read now, or `jwks_uri`), in
    /// the form the assertion check reads a metadata document's.
    fn keys_of(c: &ClientConfig) -> anyhow::Result<Option<Arc<ClientMetadataDocument>>> {
        let jwks = match &c.jwks_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("jwks_file {}: {e}", path.display()))?;
                let value = serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("jwks_file {} is not JSON: {e}", path.display())
                })?;
                Some(
                    parse_public_jwks(value)
                        .map_err(|e| anyhow::anyhow!("jwks_file {}: {e}", path.display()))?,
                )
            }
            None if c.jwks_uri.is_some() => None,
            None => return Ok(None),
        };
        Ok(Some(Arc::new(ClientMetadataDocument {
            client_id: c.client_id.clone(),
            client_name: c.name.clone(),
            client_uri: None,
            logo_uri: None,
            redirect_uris: c.redirect_uris.iter().map(|u| u.to_string()).collect(),
            token_endpoint_auth_method: "private_key_jwt".into(),
            jwks_uri: c.jwks_uri.clone(),
            jwks,
            grant_types: c.grant_types.clone(),
            response_types: Vec::new(),
            scope: None,
        })))
    }

    /// What Doorman already knows of a client, without fetching anything: the configured one,
    /// the stored registration (revoked ones included), or a metadata document client as far
    /// as its cached document tells (its id is its URL, so it is known by that at least). For
    /// pages that list clients.
    pub async fn known(&self, client_id: &str) -> Option<Client> {
        if let Some(c) = self.configured.get(client_id) {
            return Some(c.clone());
        }
        let row = self.store.client(client_id).await.ok().flatten();
        if is_metadata_client_id(client_id) {
            let doc = self.metadata.cached(client_id);
            return Some(Client {
                id: client_id.to_owned(),
                name: doc
                    .as_ref()
                    .and_then(|d| d.client_name.clone())
                    .or(row.and_then(|r| r.name)),
                kind: ClientKind::Metadata,
                redirect_uris: doc
                    .as_ref()
                    .map(|d| d.redirect_uris.clone())
                    .unwrap_or_default(),
                auth: TokenAuth::None,
                secret_hash: None,
                document: doc,
                service: false,
            });
        }
        row.map(Self::from_row)
    }

    /// A stored client as pages describe it (no secret).
    pub fn from_row(row: crate::store::ClientRow) -> Client {
        Client {
            kind: if row.kind == "metadata" {
                ClientKind::Metadata
            } else {
                ClientKind::Dynamic
            },
            redirect_uris: serde_json::from_str(&row.redirect_uris).unwrap_or_default(),
            auth: TokenAuth::parse(&row.token_endpoint_auth_method).unwrap_or(TokenAuth::None),
            id: row.client_id,
            name: row.name,
            secret_hash: None,
            document: None,
            service: false,
        }
    }

    /// The clients in the config, in no particular order.
    pub fn configured(&self) -> impl Iterator<Item = &Client> {
        self.configured.values()
    }

    /// Finds a client by id: configuration first, then a metadata document URL, then the store.
    pub async fn resolve(&self, client_id: &str) -> Result<Client, ClientError> {
        if let Some(c) = self.configured.get(client_id) {
            return Ok(c.clone());
        }
        if is_metadata_client_id(client_id) {
            // An administrator may have refused it: a revoked row is kept for it.
            match self.store.client(client_id).await {
                Ok(Some(row)) if row.revoked_at.is_some() => return Err(ClientError::Revoked),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot read clients");
                    return Err(ClientError::Unknown);
                }
            }
            let doc = self
                .metadata
                .resolve(client_id)
                .await
                .map_err(|e| ClientError::Metadata(e.to_string()))?;
            return Ok(Client {
                id: client_id.to_owned(),
                name: doc.client_name.clone(),
                kind: ClientKind::Metadata,
                redirect_uris: doc.redirect_uris.clone(),
                auth: TokenAuth::parse(&doc.token_endpoint_auth_method).unwrap_or(TokenAuth::None),
                secret_hash: None,
                document: Some(doc),
                service: false,
            });
        }
        let row = match self.store.client(client_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return Err(ClientError::Unknown),
            Err(e) => {
                tracing::error!(error = %e, "cannot read clients");
                return Err(ClientError::Unknown);
            }
        };
        if row.revoked_at.is_some() {
            return Err(ClientError::Revoked);
        }
        Ok(Client {
            id: row.client_id,
            name: row.name,
            kind: ClientKind::Dynamic,
            redirect_uris: serde_json::from_str(&row.redirect_uris).unwrap_or_default(),
            auth: TokenAuth::parse(&row.token_endpoint_auth_method).unwrap_or(TokenAuth::None),
            secret_hash: row.secret_hash,
            document: None,
            service: false,
        })
    }

    /// Authenticates the client of a token or revocation request (RFC 6749 §2.3, §3.2.1).
    /// `audiences` are what a client assertion's `aud` may name (token endpoint, issuer).
    pub async fn authenticate(
        &self,
        presented: &Presented,
        audiences: &[&str],
    ) -> Result<Client, String> {
        let assertion_subject = presented.assertion.as_deref().and_then(assertion_subject);
        let client_id = presented
            .client_id
            .clone()
            .or(assertion_subject)
            .ok_or_else(|| "client authentication is required (client_id missing)".to_owned())?;
        let client = self.resolve(&client_id).await.map_err(|e| e.to_string())?;
        match client.auth {
            TokenAuth::None => {
                if presented.secret.is_some() || presented.assertion.is_some() {
                    return Err("this client is public: it has no credentials to present".into());
                }
            }
            TokenAuth::ClientSecret
            | TokenAuth::ClientSecretBasic
            | TokenAuth::ClientSecretPost => {
                let Some(secret) = &presented.secret else {
                    return Err("client authentication failed: the client secret is missing".into());
                };
                let method_ok = match client.auth {
                    TokenAuth::ClientSecretBasic => presented.via_basic,
                    TokenAuth::ClientSecretPost => !presented.via_basic,
                    _ => true,
                };
                let expected = client.secret_hash.as_deref().unwrap_or("");
                let matches = crypto::constant_time_eq(
                    crypto::sha256_hex(secret).as_bytes(),
                    expected.as_bytes(),
                );
                if !(matches && method_ok) {
                    return Err("client authentication failed".into());
                }
            }
            TokenAuth::PrivateKeyJwt => {
                let (Some(kind), Some(assertion)) =
                    (&presented.assertion_type, &presented.assertion)
                else {
                    return Err("this client authenticates with private_key_jwt: client_assertion is missing".into());
                };
                let doc = client
                    .document
                    .as_ref()
                    .ok_or("client has no metadata document")?;
                self.assertions
                    .verify(doc, kind, assertion, audiences)
                    .await
                    .map_err(|e| format!("client assertion refused: {e}"))?;
            }
        }
        Ok(client)
    }
}

/// The `sub` of an unverified client assertion, only to find which client it claims to be.
fn assertion_subject(assertion: &str) -> Option<String> {
    crypto::unverified_jwt_claims(assertion)?
        .get("sub")?
        .as_str()
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(uris: &[&str]) -> Client {
        Client {
            id: "c".into(),
            name: None,
            kind: ClientKind::Configured,
            redirect_uris: uris.iter().map(|s| s.to_string()).collect(),
            auth: TokenAuth::None,
            secret_hash: None,
            document: None,
            service: false,
        }
    }

    #[test]
    fn redirect_uris_match_exactly_except_loopback_ports() {
        let c = client(&["https://app.example/cb", "http://127.0.0.1/callback"]);
        for (uri, ok) in [
            ("https://app.example/cb", true),
            ("https://app.example/cb/", false),
            ("https://app.example/cb?x=1", false),
            ("https://APP.example/cb", false),
            ("https://app.example:8443/cb", false),
            ("http://127.0.0.1/callback", true),
            ("http://127.0.0.1:53121/callback", true),
            ("http://127.0.0.1:53121/other", false),
            ("http://localhost:53121/callback", false),
            ("https://127.0.0.1:53121/callback", false),
            ("http://127.0.0.1:53121/callback#x", false),
            ("http://evil.example@127.0.0.1:53121/callback", false),
            ("http://u:p@127.0.0.1:53121/callback", false),
            ("http://127.0.0.1:53121@evil.example/callback", false),
            ("http://127.0.0.1:53121/./callback", false),
            ("http://127.0.0.1:53121/%63allback", false),
            ("http://127.0.0.1:053121/callback", false),
            ("http://127.0.0.1:53121/callback?", false),
        ] {
            assert_eq!(c.redirect_allowed(uri), ok, "{uri}");
        }
    }

    mod redirect_properties {
        use super::client;
        use proptest::prelude::*;

        /// One edit (insert, delete or replace a character) of `s` at `at`.
        fn edit(s: &str, at: usize, op: u8, c: char) -> String {
            let mut chars: Vec<char> = s.chars().collect();
            let at = at % (chars.len() + 1);
            match op % 3 {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
            chars.into_iter().collect()
        }

        fn web_uri() -> impl Strategy<Value = String> {
            (
                "[a-z]{1,8}",
                "(/[a-zA-Z0-9._~-]{0,8}){0,3}",
                "(\\?[a-z]=[a-z0-9]{1,4})?",
            )
                .prop_map(|(host, path, query)| format!("https://{host}.example{path}{query}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// OAuth 2.1 §2.3.1: a web redirect URI matches by exact string comparison, so
            /// any edit of a registered one is refused.
            #[test]
            fn a_web_redirect_uri_matches_only_itself(
                registered in web_uri(),
                at in any::<usize>(),
                op in any::<u8>(),
                c in prop::sample::select(vec!['/', '.', '@', ':', '#', '?', '%', 'a', 'A', '\\', ' ', '\u{0}']),
            ) {
                let cl = client(&[&registered]);
                prop_assert!(cl.redirect_allowed(&registered));
                let asked = edit(&registered, at, op, c);
                prop_assert_eq!(cl.redirect_allowed(&asked), asked == registered, "{}", asked);
            }

            /// RFC 8252 §7.3: a loopback redirect may use any port, and nothing else may
            /// differ: not the path, not the query, not the host's spelling, no fragment.
            #[test]
            fn a_loopback_redirect_may_change_only_its_port(
                host in prop::sample::select(vec!["127.0.0.1", "[::1]", "localhost"]),
                path in "(/[a-z0-9]{1,6}){1,3}",
                port in 1u16..,
                at in any::<usize>(),
                op in any::<u8>(),
                c in prop::sample::select(vec!['/', '.', '@', ':', '#', '?', '%', 'a', 'A']),
            ) {
                let registered = format!("http://{host}{path}");
                let cl = client(&[&registered]);
                let with_port = format!("http://{host}:{port}{path}");
                prop_assert!(cl.redirect_allowed(&with_port), "{}", with_port);
                let with_fragment = format!("{with_port}#f");
                let https = format!("https://{host}:{port}{path}");
                prop_assert!(!cl.redirect_allowed(&with_fragment));
                prop_assert!(!cl.redirect_allowed(&https));
                let asked = edit(&with_port, at, op, c);
                if cl.redirect_allowed(&asked) {
                    // Whatever passes is the registered URI on some port.
                    let u = url::Url::parse(&asked).unwrap();
                    prop_assert_eq!(u.scheme(), "http");
                    prop_assert_eq!(u.host_str(), Some(host));
                    prop_assert_eq!(u.path(), path.as_str());
                    prop_assert_eq!(u.query(), None);
                    prop_assert_eq!(u.fragment(), None);
                }
            }
        }
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let creds = STANDARD.encode("my%20client:s%3Acret");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {creds}").parse().unwrap(),
        );
        let p = Presented::read(&headers, &HashMap::new()).unwrap();
        assert_eq!(p.client_id.as_deref(), Some("my client"));
        assert_eq!(p.secret.as_deref(), Some("s:cret"));
        assert!(p.via_basic);
        let mut form = HashMap::new();
        form.insert("client_secret".to_owned(), "x".to_owned());
        assert!(Presented::read(&headers, &form).is_err());
    }
}

#[cfg(test)]
mod label_tests {
    use super::{Client, ClientKind, TokenAuth};

    fn client(id: &str, name: Option<&str>, kind: ClientKind) -> Client {
        Client {
            id: id.into(),
            name: name.map(String::from),
            kind,
            redirect_uris: vec![],
            auth: TokenAuth::None,
            secret_hash: None,
            document: None,
            service: false,
        }
    }

    #[test]
    fn a_label_says_what_vouches_for_the_name() {
        let cases = [
            (
                client("ops", Some("Ops App"), ClientKind::Configured),
                "Ops App",
            ),
            (client("ops", None, ClientKind::Configured), "ops"),
            (
                client(
                    "https://claude.ai/oauth/client.json",
                    Some("Claude"),
                    ClientKind::Metadata,
                ),
                "Claude (claude.ai)",
            ),
            (
                client(
                    "https://claude.ai/oauth/client.json",
                    None,
                    ClientKind::Metadata,
                ),
                "claude.ai",
            ),
            (
                client("k3Xq", Some("Claude"), ClientKind::Dynamic),
                "Claude (self-registered)",
            ),
            (client("k3Xq", None, ClientKind::Dynamic), "k3Xq"),
        ];
        for (c, want) in cases {
            assert_eq!(c.label(), want);
        }
    }
}
