//! Client ID Metadata Documents: a client identified by an `https://` URL whose document
//! (RFC 7591 client metadata) Doorman fetches, checks and caches.
//!
//! Sources: draft-ietf-oauth-client-id-metadata-document (-00 is the revision MCP 2025-11-25
//! cites; -02 keeps the rules and renumbers them, and adds the two this module also follows:
//! no redirects when fetching, §5, and no private key material, §4.1), MCP 2025-11-25
//! basic/authorization "Client ID Metadata Documents", and RFC 7591 §2 for the fields.
//!
//! A client identified by a URL has no shared secret, so it is either public (`none`) or
//! authenticates with `private_key_jwt` against the keys its document publishes
//! (`client_assertion.rs`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde_json::Value;
use url::{Host, Url};

use crate::clock::SharedClock;
use crate::net::guarded::{FetchError, GuardedFetcher};

/// How many documents the cache holds before evicting the oldest.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// Whether `client_id` is a Client ID Metadata Document URL (draft -00 §3 / -02 §3): an
/// `https` URL with a path other than `/`, without userinfo, fragment or dot segments. `http`
/// to a loopback host also counts, so that development setups are recognised; whether such a
/// URL may be fetched is the fetcher's policy.
pub fn is_metadata_client_id(client_id: &str) -> bool {
    check_client_id(client_id).is_ok()
}

/// The parsed URL of a metadata client id, or which rule it breaks.
fn check_client_id(client_id: &str) -> Result<Url, &'static str> {
    // RFC 3986 §2: a URI is made of these characters only; anything else (spaces, controls,
    // quotes, backslashes) would be silently rewritten by URL parsers, so the string compared
    // with the document's `client_id` would not be the URL fetched.
    if client_id.is_empty()
        || !client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b))
    {
        return Err("it contains characters not allowed in a URL");
    }
    let rest = if let Some(rest) = client_id.strip_prefix("https://") {
        rest
    } else if let Some(rest) = client_id.strip_prefix("http://") {
        rest
    } else {
        return Err("it is not an https URL");
    };
    // draft §3: MUST NOT contain a fragment component.
    if client_id.contains('#') {
        return Err("it has a fragment");
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    // draft §3: MUST NOT contain a username or password (an empty `@` included).
    if authority.contains('@') {
        return Err("it contains a user name or password");
    }
    let path = path_and_query.split('?').next().unwrap_or_default();
    // draft §3: MUST NOT contain single-dot or double-dot path segments, encoded or not
    // (URL parsers decode `%2e` and remove them, which would change the URL).
    let is_dot_segment = |segment: &str| {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    };
    if path.split('/').any(is_dot_segment) {
        return Err("it has a . or .. path segment");
    }
    let url = Url::parse(client_id).map_err(|_| "it is not a valid URL")?;
    // draft §3: MUST contain a path component; `/` alone would put the document at the root of
    // the site, which -02 §3 advises against and MCP's "https URL with a path" rules out.
    if url.path() == "/" || path.is_empty() {
        return Err("it has no path");
    }
    if url.scheme() == "http" && !is_loopback_host(&url) {
        return Err("it is not an https URL");
    }
    Ok(url)
}

/// `localhost`, `127.0.0.0/8` or `[::1]` (RFC 8252 §7.3 and §8.3).
fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A validated Client ID Metadata Document.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMetadataDocument {
    pub client_id: String,
    pub client_name: Option<String>,
    /// Kept only when it is an http(s) URL (draft -02 §8.6: only known schemes).
    pub client_uri: Option<Url>,
    /// Kept only when it is an http(s) URL.
    pub logo_uri: Option<Url>,
    pub redirect_uris: Vec<String>,
    /// `none` or `private_key_jwt`.
    pub token_endpoint_auth_method: String,
    pub jwks_uri: Option<Url>,
    pub jwks: Option<JwkSet>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub scope: Option<String>,
}

/// Why a metadata client could not be resolved, in words fit for `error_description`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CimdError {
    #[error("client_id is not a Client ID Metadata Document URL: {0}")]
    NotMetadataUrl(&'static str),
    #[error("the client metadata document could not be fetched: {0}")]
    Fetch(Box<FetchError>),
    #[error("the client metadata document is not a JSON object")]
    NotAnObject,
    #[error("the client metadata document is invalid: {field} has the wrong type")]
    WrongType { field: String },
    #[error("the client metadata document has no client_id")]
    MissingClientId,
    #[error("the client metadata document's client_id does not match the URL it was fetched from")]
    ClientIdMismatch,
    #[error("the client metadata document has no redirect_uris")]
    NoRedirectUris,
    #[error("redirect_uris[{index}] {problem}")]
    BadRedirectUri { index: usize, problem: &'static str },
    #[error(
        "client_secret must not appear in a client metadata document: a client identified by a URL has no shared secret"
    )]
    SharedSecret,
    #[error(
        "token_endpoint_auth_method {0} relies on a shared secret, which a client identified by a URL cannot have; use none or private_key_jwt"
    )]
    SharedSecretMethod(&'static str),
    #[error("token_endpoint_auth_method must be none or private_key_jwt")]
    UnsupportedAuthMethod,
    #[error("token_endpoint_auth_method private_key_jwt needs jwks_uri or jwks")]
    MissingKeys,
    #[error("jwks_uri and jwks must not both be present")]
    BothKeySources,
    #[error("jwks_uri is not an https URL")]
    InvalidJwksUri,
    #[error("jwks is not a valid JWK Set")]
    InvalidJwks,
    #[error("jwks must hold public keys only; it contains private or symmetric key material")]
    PrivateKeyMaterial,
}

/// The document as sent: lenient about unknown fields, strict about the types of known ones.
#[derive(Deserialize)]
struct RawDocument {
    client_id: Option<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    jwks_uri: Option<String>,
    jwks: Option<Value>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    scope: Option<String>,
    client_secret: Option<Value>,
    client_secret_expires_at: Option<Value>,
}

/// JWK members that only private or symmetric keys have (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

impl ClientMetadataDocument {
    /// Validates a fetched document for `client_id`.
    pub fn parse(client_id: &str, body: Value) -> Result<Self, CimdError> {
        if !body.is_object() {
            return Err(CimdError::NotAnObject);
        }
        let raw: RawDocument = serde_path_to_error::deserialize(body).map_err(|e| {
            // The path names only fields of `RawDocument` and indexes: nothing the client wrote.
            CimdError::WrongType {
                field: e.path().to_string(),
            }
        })?;

        // draft -00 §4.1 / -02 §4: client_id MUST match the URL by simple string comparison
        // (RFC 3986 §6.2.1).
        match raw.client_id.as_deref() {
            None => return Err(CimdError::MissingClientId),
            Some(id) if id != client_id => return Err(CimdError::ClientIdMismatch),
            Some(_) => {}
        }

        // draft -00 §4.1 / -02 §4.1: no shared secrets in any form.
        if raw.client_secret.is_some_and(|v| !v.is_null())
            || raw.client_secret_expires_at.is_some_and(|v| !v.is_null())
        {
            return Err(CimdError::SharedSecret);
        }
        // RFC 7591 §2: the default method is client_secret_basic, but a URL-identified client
        // cannot have a secret, so an absent method means a public client (MCP: CIMD clients
        // are public unless they publish keys).
        let method = raw
            .token_endpoint_auth_method
            .unwrap_or_else(|| "none".to_owned());
        match method.as_str() {
            "none" | "private_key_jwt" => {}
            "client_secret_basic" => {
                return Err(CimdError::SharedSecretMethod("client_secret_basic"));
            }
            "client_secret_post" => {
                return Err(CimdError::SharedSecretMethod("client_secret_post"));
            }
            "client_secret_jwt" => return Err(CimdError::SharedSecretMethod("client_secret_jwt")),
            _ => return Err(CimdError::UnsupportedAuthMethod),
        }

        let redirect_uris = raw.redirect_uris.unwrap_or_default();
        if redirect_uris.is_empty() {
            // MCP 2025-11-25 "Client ID Metadata Documents": redirect_uris is required.
            return Err(CimdError::NoRedirectUris);
        }
        for (index, uri) in redirect_uris.iter().enumerate() {
            check_redirect_uri(uri)
                .map_err(|problem| CimdError::BadRedirectUri { index, problem })?;
        }

        // RFC 7591 §2: jwks_uri and jwks MUST NOT both be present.
        if raw.jwks_uri.is_some() && raw.jwks.is_some() {
            return Err(CimdError::BothKeySources);
        }
        let jwks_uri = match raw.jwks_uri {
            None => None,
            // draft -02 §8.6: only known schemes; the fetcher applies the SSRF rules.
            Some(s) => match Url::parse(&s) {
                Ok(u) if matches!(u.scheme(), "https" | "http") => Some(u),
                _ => return Err(CimdError::InvalidJwksUri),
            },
        };
        let jwks = match raw.jwks {
            None => None,
            Some(value) => Some(parse_public_jwks(value)?),
        };
        // draft -02 §8.2: private_key_jwt authenticates with the key from the document
        // (RFC 7523 §2.2), so there must be one.
        if method == "private_key_jwt" && jwks_uri.is_none() && jwks.is_none() {
            return Err(CimdError::MissingKeys);
        }

        let web_url = |s: Option<String>| {
            s.and_then(|s| Url::parse(&s).ok())
                .filter(|u| matches!(u.scheme(), "https" | "http"))
        };
        Ok(Self {
            client_id: client_id.to_owned(),
            client_name: raw
                .client_name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty()),
            client_uri: web_url(raw.client_uri),
            logo_uri: web_url(raw.logo_uri),
            redirect_uris,
            token_endpoint_auth_method: method,
            jwks_uri,
            jwks,
            // RFC 7591 §2: the defaults when omitted.
            grant_types: raw
                .grant_types
                .unwrap_or_else(|| vec!["authorization_code".to_owned()]),
            response_types: raw
                .response_types
                .unwrap_or_else(|| vec!["code".to_owned()]),
            scope: raw.scope,
        })
    }
}

/// One registered redirect URI.
fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    // RFC 6749 §3.1.2: an absolute URI without a fragment.
    if uri.contains('#') {
        return Err("has a fragment");
    }
    let url = Url::parse(uri).map_err(|_| "is not an absolute URL")?;
    match url.scheme() {
        // draft -02 §8.6: schemes such as javascript: are an attack vector; none of these can
        // receive an authorization response.
        "javascript" | "data" | "vbscript" | "file" | "blob" | "about" => {
            Err("uses a scheme that cannot receive an authorization response")
        }
        // RFC 6749 §3.1.2.1 and RFC 9700 §2.6: codes travel over TLS; plain http only to
        // loopback for native apps (RFC 8252 §7.3).
        "http" if !is_loopback_host(&url) => Err("uses plain http to a host other than loopback"),
        _ => Ok(()),
    }
}

/// Parses inline `jwks`, refusing private or symmetric keys (draft -02 §4.1: only public keys;
/// draft -00 §4.1: nothing based on a shared symmetric secret).
pub(crate) fn parse_public_jwks(value: Value) -> Result<JwkSet, CimdError> {
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(CimdError::InvalidJwks)?;
    for key in keys {
        let key = key.as_object().ok_or(CimdError::InvalidJwks)?;
        if PRIVATE_JWK_MEMBERS.iter().any(|m| key.contains_key(*m))
            || key.get("kty").and_then(Value::as_str) == Some("oct")
        {
            return Err(CimdError::PrivateKeyMaterial);
        }
    }
    serde_json::from_value(value).map_err(|_| CimdError::InvalidJwks)
}

type Resolution = Shared<BoxFuture<'static, Result<Arc<ClientMetadataDocument>, CimdError>>>;

struct CacheEntry {
    doc: Arc<ClientMetadataDocument>,
    expires_at_ms: i64,
    seq: u64,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<String, CacheEntry>,
    /// Insertion order, oldest first, for eviction.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    /// Fetches under way, so concurrent resolutions of one id share a single fetch.
    inflight: HashMap<String, Resolution>,
}

impl CacheState {
    fn insert(
        &mut self,
        key: String,
        doc: Arc<ClientMetadataDocument>,
        expires_at_ms: i64,
        max: usize,
    ) {
        if let Some(old) = self.entries.remove(&key) {
            self.order.remove(&old.seq);
        }
        while self.entries.len() >= max.max(1) {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.entries.insert(
            key,
            CacheEntry {
                doc,
                expires_at_ms,
                seq,
            },
        );
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.order.remove(&old.seq);
        }
    }
}

/// Resolves metadata client ids to validated documents, caching them by their HTTP cache
/// lifetime (draft -00 §4.4 / -02 §5.2).
pub struct ClientMetadataCache {
    fetcher: GuardedFetcher,
    clock: SharedClock,
    default_ttl: Duration,
    max_entries: usize,
    state: Arc<Mutex<CacheState>>,
}

impl ClientMetadataCache {
    /// `default_ttl` applies when a response says nothing about caching.
    pub fn new(fetcher: GuardedFetcher, clock: SharedClock, default_ttl: Duration) -> Self {
        Self {
            fetcher,
            clock,
            default_ttl,
            max_entries: DEFAULT_MAX_ENTRIES,
            state: Arc::default(),
        }
    }

    /// Changes how many documents are kept (default [`DEFAULT_MAX_ENTRIES`]).
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The document held for `client_id`, expired or not, without fetching (for pages that
    /// name clients).
    pub fn cached(&self, client_id: &str) -> Option<Arc<ClientMetadataDocument>> {
        let state = self.state.lock().expect("metadata cache lock");
        state.entries.get(client_id).map(|e| e.doc.clone())
    }

    /// The validated document for `client_id`, from the cache or freshly fetched.
    pub async fn resolve(&self, client_id: &str) -> Result<Arc<ClientMetadataDocument>, CimdError> {
        let url = check_client_id(client_id).map_err(CimdError::NotMetadataUrl)?;
        let (resolution, started) = {
            let mut state = self.state.lock().expect("metadata cache lock");
            let now = self.clock.now_ms();
            match state.entries.get(client_id) {
                Some(entry) if now < entry.expires_at_ms => return Ok(entry.doc.clone()),
                Some(_) => state.remove(client_id),
                None => {}
            }
            match state.inflight.get(client_id) {
                Some(resolution) => (resolution.clone(), false),
                None => {
                    let resolution = self.fetch_once(client_id, url);
                    state
                        .inflight
                        .insert(client_id.to_owned(), resolution.clone());
                    (resolution, true)
                }
            }
        };
        if started {
            // On its own task, so the fetch finishes (and is cached, and leaves the in-flight
            // table) even when every caller waiting for it goes away.
            tokio::spawn(resolution.clone());
        }
        resolution.await
    }

    /// One fetch of `client_id`, shareable by every caller waiting for it.
    fn fetch_once(&self, client_id: &str, url: Url) -> Resolution {
        let fetcher = self.fetcher.clone();
        let clock = self.clock.clone();
        let state = self.state.clone();
        let default_ttl = self.default_ttl;
        let max_entries = self.max_entries;
        let client_id = client_id.to_owned();
        async move {
            let result = fetch_document(&fetcher, &client_id, &url).await;
            let mut state = state.lock().expect("metadata cache lock");
            state.inflight.remove(&client_id);
            // draft -00 §4.4 / -02 §5.2: errors and invalid documents are never cached.
            let (doc, max_age) = result?;
            let ttl = max_age.unwrap_or(default_ttl);
            if !ttl.is_zero() {
                let expires_at_ms = clock.now_ms().saturating_add(ttl.as_millis() as i64);
                state.insert(client_id, doc.clone(), expires_at_ms, max_entries);
            }
            Ok(doc)
        }
        .boxed()
        .shared()
    }
}

async fn fetch_document(
    fetcher: &GuardedFetcher,
    client_id: &str,
    url: &Url,
) -> Result<(Arc<ClientMetadataDocument>, Option<Duration>), CimdError> {
    // draft -02 §5: the document is served at the client id itself, redirects are not followed.
    let fetched = fetcher
        .get_json_without_redirects(url)
        .await
        .map_err(|e| CimdError::Fetch(Box::new(e)))?;
    let doc = ClientMetadataDocument::parse(client_id, fetched.body)?;
    Ok((Arc::new(doc), fetched.max_age))
}

#[cfg(test)]
#[path = "cimd_tests.rs"]
mod tests;
