//! A `[[resources]]` table merged with its preset, and the authorization request that sends a
//! person to the resource (RFC 6749 §4.1.1, RFC 7636 §4.3).
//!
//! Resolution is also the validation: [`ResolvedResource::resolve`] refuses what cannot work
//! and names the key's path, and `Config::validate` calls it, so a configuration that validates
//! always resolves. Explicit keys win over the preset; endpoints still missing come from the
//! issuer's metadata, fetched later (the authorization URL needs the authorization endpoint).

use std::{collections::BTreeMap, time::Duration};

use http::{HeaderName, header};
use url::Url;
use zeroize::Zeroizing;

use super::presets::{Preset, PresetIdentity, Quirks};
use crate::config::{Binding, Config, ConfigError, IdentityConfig, ResourceConfig, SecretOrValue};

/// The path of the redirect URI Doorman registers at every resource.
pub const CALLBACK_PATH: &str = "/connect/callback";

/// The redirect URI Doorman registers at every configured resource:
/// `{public_url}/connect/callback`.
pub fn redirect_uri(config: &Config) -> String {
    format!("{}{CALLBACK_PATH}", config.issuer())
}

/// The redirect URI of one resource: `{shared}/{name}` (`shared` is [`redirect_uri`]). A
/// resource an upstream made known gets its own, so an answer meant for one authorization
/// server can never be taken for another's (RFC 9700 §4.4.2, per-AS redirect URIs).
pub fn redirect_uri_of(shared: &str, name: &str) -> String {
    let segment: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!("{shared}/{segment}")
}

/// Every configured resource, resolved (validated by `Config::validate` already, so an error
/// here is unexpected but still named).
pub fn resolve_all(config: &Config) -> Result<Vec<ResolvedResource>, ConfigError> {
    config
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| ResolvedResource::resolve(i, r, config.sign_in.development))
        .collect()
}

/// A resource ready to use: preset and explicit keys merged, everything checked.
#[derive(Debug, Clone)]
pub struct ResolvedResource {
    pub name: String,
    pub display_name: String,
    pub preset: Option<Preset>,
    /// The provider's documentation (presets only).
    pub docs: Option<&'static str>,
    /// How people authorize at the resource. `None` only for a `shared` resource configured
    /// without a client: its one credential comes from the operator.
    pub oauth: Option<OAuthClient>,
    /// Scopes asked for at authorization.
    pub scopes: Vec<String>,
    /// How the account's identity is learned; `None`: it is not (the connection is unnamed).
    pub identity: Option<Identity>,
    pub binding: Binding,
    /// How a person is asked to connect it.
    pub prompt: super::PromptChoice,
    pub max_age: Option<Duration>,
    pub token_header: TokenHeader,
    /// `binding = "shared"`: where the operator's credential is read from.
    pub shared_token: Option<SecretOrValue>,
    /// Provider quirks (with `token_auth` as configured).
    pub quirks: Quirks,
    /// `kind = "api_key"`: people give a personal key, checked before it is stored.
    pub api_key: Option<ApiKey>,
    /// `[resources.id_jag]`: connections made from an ID-JAG of the company's IdP.
    pub id_jag: Option<ResourceIdJag>,
}

/// Where the ID-JAG for a resource comes from, and what it is for.
#[derive(Debug, Clone)]
pub struct ResourceIdJag {
    /// The `[[sign_in.oidc]]` provider's name.
    pub provider: String,
    /// The resource authorization server's issuer.
    pub audience: String,
    pub resource: Option<String>,
}

/// A resource whose people connect with a personal API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub check_url: Url,
    pub check_method: super::CheckMethod,
    pub account_pointer: Option<String>,
    pub help: Option<String>,
}

/// Doorman as an OAuth client of the resource.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    /// `None`: a public client (then PKCE is on).
    pub client_secret: Option<SecretOrValue>,
    /// Where endpoints not configured are discovered (not fetched here).
    pub issuer: Option<Url>,
    pub endpoints: Endpoints,
    /// Extra authorization request parameters: the preset's, overridden key by key.
    pub authorization_params: BTreeMap<String, String>,
    pub pkce: bool,
}

/// The resource's endpoints; with an issuer, those still `None` come from its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// The authorization server's issuer identifier, exactly as its metadata states it (RFC
    /// 8414 §2); `None` when the endpoints are configured without an issuer.
    pub issuer: Option<String>,
    /// RFC 9207 §3: the server says it puts `iss` in every authorization response.
    pub iss_required: bool,
    pub authorization: Option<Url>,
    pub token: Option<Url>,
    pub revocation: Option<Url>,
    pub userinfo: Option<Url>,
}

/// How the identity of the connected account is learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A claim of the userinfo endpoint's answer.
    UserinfoClaim(String),
    /// A field (dotted path) of an API's JSON answer, called with the access token; with
    /// `graphql`, by `POST {"query": graphql}`.
    Api {
        url: Url,
        field: String,
        graphql: Option<String>,
    },
    /// A field (dotted path) of the token response.
    TokenResponse { field: String },
    /// A claim of the ID token in the token response.
    IdTokenClaim(String),
}

/// The header an upstream receives the connection's access token in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub name: HeaderName,
    /// `Authorization: Bearer {token}`; otherwise the header carries the bare token.
    pub bearer: bool,
    /// An API key sent as this query parameter instead (`[resources.api_key] query`).
    pub query: Option<String>,
}

impl Default for TokenHeader {
    fn default() -> Self {
        Self {
            name: header::AUTHORIZATION,
            bearer: true,
            query: None,
        }
    }
}

impl TokenHeader {
    /// The header's value for a token.
    pub fn value(&self, token: &str) -> Zeroizing<String> {
        Zeroizing::new(if self.bearer {
            format!("Bearer {token}")
        } else {
            token.to_owned()
        })
    }
}

/// Parameters of the authorization request that Doorman sets itself.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// Headers Doorman manages on upstream requests, never replaced by a token.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "content-type",
    "transfer-encoding",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

pub(crate) fn is_valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ResolvedResource {
    /// Merges `resources[index]` with its preset and checks it; errors name the key's path.
    pub fn resolve(
        index: usize,
        r: &ResourceConfig,
        development: bool,
    ) -> Result<Self, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            path: format!("resources[{index}].{key}"),
            message,
        };
        if !is_valid_name(&r.name) {
            return Err(err(
                "name",
                format!("{:?} must be 1-32 letters, digits, `_` or `-`", r.name),
            ));
        }
        let spec = r.preset.map(Preset::spec);
        if r.display_name.as_ref().is_some_and(|d| d.trim().is_empty()) {
            return Err(err("display_name", "must not be empty".into()));
        }
        let check_url = |key: &str, url: &Url| -> Result<(), ConfigError> {
            let web = matches!(url.scheme(), "https" | "http") && url.host_str().is_some();
            if !web {
                return Err(err(key, "must be an https URL".into()));
            }
            if url.scheme() == "http" && !development {
                return Err(err(
                    key,
                    "must be https (plain http only with sign_in.development = true)".into(),
                ));
            }
            Ok(())
        };
        for (key, url) in [
            ("issuer", &r.issuer),
            ("authorization_endpoint", &r.authorization_endpoint),
            ("token_endpoint", &r.token_endpoint),
            ("revocation_endpoint", &r.revocation_endpoint),
            ("userinfo_endpoint", &r.userinfo_endpoint),
        ] {
            if let Some(url) = url {
                check_url(key, url)?;
            }
        }

        use super::PromptChoice;
        match (r.prompt, r.binding) {
            (PromptChoice::Auto, _) => {}
            (_, Binding::Shared) => {
                return Err(err(
                    "prompt",
                    "binding = \"shared\" serves the operator's credential and never asks anyone to connect: remove prompt".into(),
                ));
            }
            // The cascade brings the person back through the client's authorization, not
            // through the call that asked, so a connection made for that one call would have
            // no call to serve.
            (PromptChoice::Reauthorize, Binding::Call) => {
                return Err(err(
                    "prompt",
                    "prompt = \"reauthorize\" cannot serve binding = \"call\" (a connection for one call must come back with that call): use \"elicitation\" or \"link\"".into(),
                ));
            }
            _ => {}
        }
        let client_secret =
            one_source(&r.client_secret_env, &r.client_secret_file, "client_secret")
                .map_err(|m| err("client_secret_env", m))?;
        let shared_token = one_source(&r.shared_token_env, &r.shared_token_file, "shared_token")
            .map_err(|m| err("shared_token_env", m))?;
        match (r.binding, &shared_token) {
            (Binding::Shared, None) => {
                return Err(err(
                    "binding",
                    "binding = \"shared\" uses one credential for everyone: give it with shared_token_env or shared_token_file".into(),
                ));
            }
            (b, Some(_)) if b != Binding::Shared => {
                let key = if r.shared_token_env.is_some() {
                    "shared_token_env"
                } else {
                    "shared_token_file"
                };
                return Err(err(
                    key,
                    format!(
                        "only for binding = \"shared\" (this resource's binding is {:?})",
                        b.as_str()
                    ),
                ));
            }
            _ => {}
        }
        if r.max_age.is_some_and(|d| d.0.is_zero()) {
            return Err(err("max_age", "must be longer than zero".into()));
        }

        let mut quirks = spec.map_or(Quirks::STANDARD, |s| s.quirks);
        if let Some(auth) = r.token_auth {
            quirks.token_auth = auth;
        }
        let scopes: Vec<String> = match &r.scopes {
            Some(s) => s.clone(),
            None => spec
                .map(|s| s.scopes.iter().map(|&s| s.to_owned()).collect())
                .unwrap_or_default(),
        };
        for (j, s) in scopes.iter().enumerate() {
            if s.is_empty() || s.contains(char::is_whitespace) || s.contains(quirks.scope_separator)
            {
                return Err(err(
                    &format!("scopes[{j}]"),
                    format!("{s:?} is not one scope: give each scope as its own string"),
                ));
            }
        }

        if r.kind == super::ResourceKind::ApiKey {
            let oauth_only = [
                ("preset", r.preset.is_some()),
                ("issuer", r.issuer.is_some()),
                ("client_id", r.client_id.is_some()),
                ("scopes", r.scopes.is_some()),
                ("identity", r.identity.is_some()),
                ("authorization_params", !r.authorization_params.is_empty()),
                ("client_secret_env", r.client_secret_env.is_some()),
                ("client_secret_file", r.client_secret_file.is_some()),
                ("token_auth", r.token_auth.is_some()),
                ("authorization_endpoint", r.authorization_endpoint.is_some()),
                ("token_endpoint", r.token_endpoint.is_some()),
                ("revocation_endpoint", r.revocation_endpoint.is_some()),
                ("userinfo_endpoint", r.userinfo_endpoint.is_some()),
                ("pkce", r.pkce.is_some()),
            ];
            if let Some((key, _)) = oauth_only.iter().find(|(_, set)| *set) {
                return Err(err(
                    key,
                    "is for OAuth resources: a kind = \"api_key\" resource has people paste a key"
                        .into(),
                ));
            }
            if r.binding == Binding::Shared {
                return Err(err(
                    "binding",
                    "a shared key is an ordinary shared resource (shared_token_env); kind = \"api_key\" is for people's own keys".into(),
                ));
            }
            if r.prompt == PromptChoice::Reauthorize {
                return Err(err(
                    "prompt",
                    "a key is pasted on Doorman's connect page, not through the client's authorization: use \"elicitation\" or \"link\"".into(),
                ));
            }
        }
        let oauth = match &r.client_id {
            None if r.kind == super::ResourceKind::ApiKey => None,
            None => {
                if r.binding != Binding::Shared {
                    return Err(err(
                        "client_id",
                        "is required (only a resource with binding = \"shared\" may go without a client)".into(),
                    ));
                }
                let client_only = [
                    ("client_secret_env", r.client_secret_env.is_some()),
                    ("client_secret_file", r.client_secret_file.is_some()),
                    ("token_auth", r.token_auth.is_some()),
                    ("authorization_endpoint", r.authorization_endpoint.is_some()),
                    ("token_endpoint", r.token_endpoint.is_some()),
                    ("pkce", r.pkce.is_some()),
                ];
                if let Some((key, _)) = client_only.iter().find(|(_, set)| *set) {
                    return Err(err(key, "needs client_id".into()));
                }
                None
            }
            Some(client_id) => {
                if client_id.is_empty() {
                    return Err(err("client_id", "must not be empty".into()));
                }
                let preset_url = |u: Option<&'static str>| {
                    u.map(|u| Url::parse(u).expect("preset URLs are valid"))
                };
                let endpoints = Endpoints {
                    issuer: None,
                    iss_required: false,
                    authorization: r
                        .authorization_endpoint
                        .clone()
                        .or_else(|| preset_url(spec.map(|s| s.authorization_endpoint))),
                    token: r
                        .token_endpoint
                        .clone()
                        .or_else(|| preset_url(spec.map(|s| s.token_endpoint))),
                    revocation: r
                        .revocation_endpoint
                        .clone()
                        .or_else(|| preset_url(spec.and_then(|s| s.revocation_endpoint))),
                    userinfo: r
                        .userinfo_endpoint
                        .clone()
                        .or_else(|| preset_url(spec.and_then(|s| s.userinfo_endpoint))),
                };
                if r.issuer.is_none() {
                    match (&endpoints.authorization, &endpoints.token) {
                        (None, None) => {
                            return Err(err(
                                "authorization_endpoint",
                                "no endpoints: give a preset, an issuer (its endpoints are discovered), or authorization_endpoint and token_endpoint".into(),
                            ));
                        }
                        (None, Some(_)) => {
                            return Err(err(
                                "authorization_endpoint",
                                "is required without an issuer or a preset".into(),
                            ));
                        }
                        (Some(_), None) => {
                            return Err(err(
                                "token_endpoint",
                                "is required without an issuer or a preset".into(),
                            ));
                        }
                        (Some(_), Some(_)) => {}
                    }
                }
                if client_secret.is_none() && r.token_auth.is_some() {
                    return Err(err(
                        "token_auth",
                        "needs a client secret (client_secret_env or client_secret_file)".into(),
                    ));
                }
                let pkce = r.pkce.or(spec.map(|s| s.pkce)).unwrap_or(true);
                if client_secret.is_none() && !pkce {
                    return Err(err(
                        "pkce",
                        "a client without a secret (a public client) must use PKCE".into(),
                    ));
                }
                if let Some(k) = r.authorization_params.keys().find(|k| {
                    RESERVED_PARAMS.contains(&k.as_str()) || k.as_str() == quirks.scope_param
                }) {
                    return Err(err(
                        &format!("authorization_params.{k}"),
                        "is set by Doorman itself".into(),
                    ));
                }
                let mut authorization_params: BTreeMap<String, String> = spec
                    .map(|s| s.authorization_params)
                    .unwrap_or_default()
                    .iter()
                    .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                authorization_params.extend(r.authorization_params.clone());
                Some(OAuthClient {
                    client_id: client_id.clone(),
                    client_secret,
                    issuer: r.issuer.clone(),
                    endpoints,
                    authorization_params,
                    pkce,
                })
            }
        };
        if quirks.scopes_required && scopes.is_empty() && oauth.is_some() {
            return Err(err(
                "scopes",
                format!(
                    "{} refuses an authorization without scopes: list the scopes the upstream needs",
                    spec.map_or("this resource", |s| s.display_name)
                ),
            ));
        }

        // Whether a userinfo endpoint is known, or may be discovered from the issuer.
        let userinfo_known = oauth
            .as_ref()
            .is_some_and(|o| o.endpoints.userinfo.is_some() || o.issuer.is_some());
        let identity = match &r.identity {
            Some(c) => Some(resolve_identity(
                c,
                &err,
                &check_url,
                userinfo_known,
                oauth.is_some(),
            )?),
            None => match spec {
                Some(s) => Some(match s.identity {
                    PresetIdentity::UserinfoClaim(c) => Identity::UserinfoClaim(c.into()),
                    PresetIdentity::Api {
                        url,
                        field,
                        graphql,
                    } => Identity::Api {
                        url: Url::parse(url).expect("preset URLs are valid"),
                        field: field.into(),
                        graphql: graphql.map(String::from),
                    },
                    PresetIdentity::TokenResponse(f) => Identity::TokenResponse { field: f.into() },
                }),
                None => userinfo_known.then(|| Identity::UserinfoClaim("email".into())),
            },
        };

        let token_header = match &r.token_header {
            None => TokenHeader::default(),
            Some(h) => {
                let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    err(
                        "token_header",
                        format!("{h:?} is not a valid HTTP header name"),
                    )
                })?;
                if RESERVED_HEADERS.contains(&name.as_str()) {
                    return Err(err(
                        "token_header",
                        format!("{h:?} is managed by Doorman and cannot carry the token"),
                    ));
                }
                TokenHeader {
                    bearer: name == header::AUTHORIZATION,
                    name,
                    query: None,
                }
            }
        };
        let api_key = resolve_api_key(r, &err, &check_url)?;
        let id_jag = match &r.id_jag {
            None => None,
            Some(j) => {
                let Some(o) = &oauth else {
                    return Err(err(
                        "id_jag",
                        "needs an OAuth resource with client_id (Doorman redeems the ID-JAG as that client)".into(),
                    ));
                };
                if r.binding == Binding::Shared {
                    return Err(err(
                        "id_jag",
                        "a shared resource has one credential for everyone".into(),
                    ));
                }
                let audience = match (&j.audience, &o.issuer) {
                    (Some(a), _) => a.clone(),
                    (None, Some(i)) => i.as_str().trim_end_matches('/').to_owned(),
                    (None, None) => {
                        return Err(err(
                            "id_jag.audience",
                            "give the resource authorization server's issuer (or set issuer)"
                                .into(),
                        ));
                    }
                };
                Some(ResourceIdJag {
                    provider: j.provider.clone(),
                    audience,
                    resource: j.resource.clone(),
                })
            }
        };
        let mut token_header = token_header;
        if let Some(q) = r.api_key.as_ref().and_then(|a| a.query.clone()) {
            if r.token_header.is_some() {
                return Err(err(
                    "api_key.query",
                    "the key goes in a header (token_header) or the query (api_key.query), not both".into(),
                ));
            }
            if q.is_empty()
                || !q
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(err(
                    "api_key.query",
                    format!("{q:?} must be a parameter name of letters, digits, `-`, `_` or `.`"),
                ));
            }
            token_header.query = Some(q);
        }

        Ok(Self {
            name: r.name.clone(),
            display_name: r
                .display_name
                .clone()
                .or_else(|| spec.map(|s| s.display_name.to_owned()))
                .unwrap_or_else(|| r.name.clone()),
            preset: r.preset,
            docs: spec.map(|s| s.docs),
            oauth,
            scopes,
            identity,
            binding: r.binding,
            prompt: r.prompt,
            max_age: r.max_age.map(|d| d.0),
            token_header,
            shared_token,
            quirks,
            api_key,
            id_jag,
        })
    }
}

/// `kind = "api_key"` and its `[resources.api_key]` table: none of the OAuth keys, a check URL,
/// a binding and prompt a pasted key can serve.
fn resolve_api_key(
    r: &ResourceConfig,
    err: &dyn Fn(&str, String) -> ConfigError,
    check_url: &dyn Fn(&str, &Url) -> Result<(), ConfigError>,
) -> Result<Option<ApiKey>, ConfigError> {
    use super::ResourceKind;
    let Some(c) = &r.api_key else {
        if r.kind == ResourceKind::ApiKey {
            return Err(err(
                "api_key",
                "kind = \"api_key\" needs [resources.api_key] with check_url: the request a key must pass before it is stored".into(),
            ));
        }
        return Ok(None);
    };
    if r.kind != ResourceKind::ApiKey {
        return Err(err("api_key", "is for kind = \"api_key\" resources".into()));
    }
    Ok(Some(ApiKey {
        check_url: {
            check_url("api_key.check_url", &c.check_url)?;
            c.check_url.clone()
        },
        check_method: c.check_method,
        account_pointer: match &c.account_pointer {
            Some(p) if !p.starts_with('/') => {
                return Err(err(
                    "api_key.account_pointer",
                    format!("{p:?} is not a JSON pointer (RFC 6901): it starts with `/`"),
                ));
            }
            p => p.clone(),
        },
        help: c.help.clone(),
    }))
}

/// At most one of an `*_env` and a `*_file` key.
fn one_source(
    env: &Option<String>,
    file: &Option<std::path::PathBuf>,
    what: &str,
) -> Result<Option<SecretOrValue>, String> {
    match (env, file) {
        (None, None) => Ok(None),
        (Some(env), None) => Ok(Some(SecretOrValue::Env { env: env.clone() })),
        (None, Some(file)) => Ok(Some(SecretOrValue::File { file: file.clone() })),
        (Some(_), Some(_)) => Err(format!("give {what}_env or {what}_file, not both")),
    }
}

fn resolve_identity(
    c: &IdentityConfig,
    err: &impl Fn(&str, String) -> ConfigError,
    check_url: &impl Fn(&str, &Url) -> Result<(), ConfigError>,
    userinfo_known: bool,
    has_client: bool,
) -> Result<Identity, ConfigError> {
    let modes = [
        c.userinfo_claim.is_some(),
        c.api.is_some(),
        c.token_field.is_some(),
        c.id_token_claim.is_some(),
    ];
    if modes.iter().filter(|&&m| m).count() != 1 {
        return Err(err(
            "identity",
            "give exactly one of userinfo_claim, id_token_claim, api (with field) or token_field"
                .into(),
        ));
    }
    if c.api.is_none() {
        for (key, set) in [
            ("field", c.field.is_some()),
            ("graphql", c.graphql.is_some()),
        ] {
            if set {
                return Err(err(&format!("identity.{key}"), "only with api".into()));
            }
        }
    }
    let non_empty = |key: &str, value: &str| {
        if value.is_empty() {
            Err(err(&format!("identity.{key}"), "must not be empty".into()))
        } else {
            Ok(value.to_owned())
        }
    };
    if let Some(claim) = &c.userinfo_claim {
        if !userinfo_known {
            return Err(err(
                "identity.userinfo_claim",
                "needs a userinfo_endpoint or an issuer (or a preset that has one)".into(),
            ));
        }
        return Ok(Identity::UserinfoClaim(non_empty("userinfo_claim", claim)?));
    }
    if let Some(url) = &c.api {
        check_url("identity.api", url)?;
        let field = c
            .field
            .as_deref()
            .ok_or_else(|| err("identity.field", "is required with api".into()))?;
        return Ok(Identity::Api {
            url: url.clone(),
            field: non_empty("field", field)?,
            graphql: c.graphql.clone(),
        });
    }
    if let Some(claim) = &c.id_token_claim {
        if !has_client {
            return Err(err(
                "identity.id_token_claim",
                "a shared credential has no token response: use api".into(),
            ));
        }
        return Ok(Identity::IdTokenClaim(non_empty("id_token_claim", claim)?));
    }
    let field = c.token_field.as_deref().unwrap_or_default();
    if !has_client {
        return Err(err(
            "identity.token_field",
            "a shared credential has no token response: use api".into(),
        ));
    }
    Ok(Identity::TokenResponse {
        field: non_empty("token_field", field)?,
    })
}

/// Where to send the person's browser to authorize at the resource (RFC 6749 §4.1.1).
///
/// `challenge` is the S256 PKCE challenge (RFC 7636 §4.3): pass one exactly when
/// `resource.oauth.pkce`. `scopes` are the scopes to ask for (the resource's, or more after an
/// `insufficient_scope` answer); none leaves the parameter out. `None` when the resource has
/// no authorization endpoint yet (an issuer whose metadata was not fetched) or no client (a
/// `shared` resource).
pub fn authorization_url(
    resource: &ResolvedResource,
    redirect_uri: &str,
    state: &str,
    challenge: Option<&str>,
    scopes: &[String],
) -> Option<Url> {
    let oauth = resource.oauth.as_ref()?;
    let mut url = oauth.endpoints.authorization.clone()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &oauth.client_id)
            .append_pair("redirect_uri", redirect_uri);
        if !scopes.is_empty() {
            q.append_pair(
                resource.quirks.scope_param,
                &scopes.join(resource.quirks.scope_separator),
            );
        }
        q.append_pair("state", state);
        if let Some(challenge) = challenge {
            q.append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
        }
        for (k, v) in &oauth.authorization_params {
            q.append_pair(k, v);
        }
    }
    Some(url)
}

#[cfg(test)]
#[path = "resolved_tests.rs"]
mod tests;
