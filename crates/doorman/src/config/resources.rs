//! `[[resources]]`: the services people connect their own accounts to (layer 2).
//!
//! This file holds what the operator writes; `crate::config::resolved` merges it with the
//! preset and checks it ([`ResolvedResource::resolve`](crate::config::resolved::ResolvedResource::resolve)),
//! so every rule lives in one place and a configuration that validates always resolves.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;
use url::Url;

use super::{Config, ConfigDuration, ConfigError};
use super::{
    presets::{Preset, TokenAuth},
    resolved::ResolvedResource,
};

/// `[[resources]]`: one resource people connect to, by OAuth (its own authorization server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Short id, used in URLs, logs and upstreams' `resource`: letters, digits, `_`, `-`.
    pub name: String,
    /// What pages and prompts call it. Default: the preset's, or the name.
    pub display_name: Option<String>,
    /// A well-known provider whose endpoints, scopes and quirks are filled in.
    pub preset: Option<Preset>,
    /// The authorization server's issuer: endpoints not given are discovered from its metadata
    /// (`/.well-known/openid-configuration` or `/.well-known/oauth-authorization-server`).
    pub issuer: Option<Url>,
    pub authorization_endpoint: Option<Url>,
    pub token_endpoint: Option<Url>,
    /// RFC 7009 revocation, used at disconnect and at the end of a binding.
    pub revocation_endpoint: Option<Url>,
    pub userinfo_endpoint: Option<Url>,
    /// Doorman's client at the resource. Required unless `binding = "shared"`.
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// How the client secret is presented at the token endpoint. Default: the preset's, or
    /// `client_secret_basic`.
    pub token_auth: Option<TokenAuth>,
    /// Scopes asked for. Default: the preset's, or none.
    pub scopes: Option<Vec<String>>,
    /// Extra authorization request parameters, over the preset's (key by key).
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// How Doorman learns which account was connected. Default: the preset's, or the userinfo
    /// `email` claim when a userinfo endpoint or an issuer is known.
    pub identity: Option<IdentityConfig>,
    #[serde(default)]
    pub binding: Binding,
    /// How a person is asked to connect it (`auto`, `elicitation`, `link`, `reauthorize`).
    #[serde(default)]
    pub prompt: PromptChoice,
    /// How long after the person authorized at the resource a connection may be used
    /// (silent refreshes included). Default: no limit.
    pub max_age: Option<ConfigDuration>,
    /// PKCE (RFC 7636, S256) towards the resource. Default: the preset's, or true.
    pub pkce: Option<bool>,
    /// The header upstreams receive the token in. Default: `Authorization` (`Bearer {token}`);
    /// any other header carries the bare token.
    pub token_header: Option<String>,
    /// `binding = "shared"`: the one credential used for everyone.
    pub shared_token_env: Option<String>,
    pub shared_token_file: Option<PathBuf>,
    /// `oauth` (the default: people authorize at the resource's authorization server) or
    /// `api_key` (people paste a personal key on Doorman's connect page; `[resources.api_key]`).
    #[serde(default)]
    pub kind: ResourceKind,
    /// `kind = "api_key"`: how the key is checked and sent.
    pub api_key: Option<ApiKeyConfig>,
    /// Enterprise-managed authorization towards this resource: its authorization server trusts
    /// the company's IdP, so Doorman gets an ID-JAG for the person from that IdP and redeems it
    /// there, and the person gets a connection with no prompt.
    pub id_jag: Option<ResourceIdJagConfig>,
}

/// `[resources.id_jag]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceIdJagConfig {
    /// The `[[sign_in.oidc]]` provider (by `name`) that issues ID-JAGs for the people who
    /// signed in through it.
    pub provider: String,
    /// The ID-JAG's `audience`: the resource's authorization server issuer. Default: `issuer`.
    pub audience: Option<String>,
    /// The RFC 8707 `resource` asked for at the IdP and at the resource. Default: none.
    pub resource: Option<String>,
}

/// How people connect a resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    #[default]
    Oauth,
    ApiKey,
}

/// `[resources.api_key]`: a resource without OAuth, where each person gives a personal key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The test request a key must pass before it is stored: the resource's URL that answers
    /// 2xx for a good key (sent the way upstreams receive it: `token_header`, or `query`).
    pub check_url: Url,
    /// `GET` (default) or `POST` (an empty body).
    #[serde(default)]
    pub check_method: CheckMethod,
    /// A JSON pointer (RFC 6901) into the check's JSON answer that names the account
    /// (`/login`, `/user/email`). Default: the label the person gives, else "API key".
    pub account_pointer: Option<String>,
    /// Send the key as this query parameter (`?api_key=…`) instead of a header.
    pub query: Option<String>,
    /// Shown on the connect page: where to create a key, which permissions it needs.
    pub help: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum CheckMethod {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

/// `identity = { … }`: exactly one of `userinfo_claim`, `id_token_claim`, `api` (with `field`)
/// or `token_field`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A claim of the userinfo endpoint's answer (`"email"`).
    pub userinfo_claim: Option<String>,
    /// An API answering JSON about the token's account (`"https://api.github.com/user"`).
    pub api: Option<Url>,
    /// With `api`: the field holding the account's name, a dotted path (`"login"`).
    pub field: Option<String>,
    /// With `api`: call it with `POST {"query": graphql}` (GraphQL-only APIs).
    pub graphql: Option<String>,
    /// A field (dotted path) of the token response itself (`"owner.user.person.email"`).
    pub token_field: Option<String>,
    /// A claim of the ID token in the token response (ask for the `openid` scope). The token
    /// comes straight from the token endpoint over TLS, which OpenID Connect Core §3.1.3.7 (6)
    /// accepts in place of checking its signature.
    pub id_token_claim: Option<String>,
}

/// How a person is asked to connect a resource (README, "Which prompt a client shows").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptChoice {
    /// URL elicitation where the client declared it; else, for a client whose redirect URI is
    /// one of `sign_in.web_app_redirect_uris`, the re-authorization cascade; else the link.
    #[default]
    Auto,
    /// URL elicitation where the client declared it, else the link.
    Elicitation,
    /// Always the link, in a tool result the model can show.
    Link,
    /// Always the re-authorization cascade: `401`, and the client's next authorization at
    /// Doorman goes through the resource's own consent first.
    Reauthorize,
}

/// What a connection is bound to, and so how long it lives (`vault/README.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    /// One conversation: the MCP session, or an idle window per person and client grant.
    #[default]
    Session,
    /// The person, across conversations, up to `max_age`.
    User,
    /// One tool call, then destroyed.
    Call,
    /// One credential configured by the operator, used for everyone.
    Shared,
}

impl std::str::FromStr for Binding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "session" => Ok(Self::Session),
            "user" => Ok(Self::User),
            "call" => Ok(Self::Call),
            "shared" => Ok(Self::Shared),
            other => Err(format!("unknown binding {other:?}")),
        }
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::Session => "session",
            Binding::User => "user",
            Binding::Call => "call",
            Binding::Shared => "shared",
        }
    }
}

/// Checks every resource (by resolving it), the uniqueness of names, and the upstreams'
/// `resource` references.
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let development = config.sign_in.development;
    for (i, r) in config.resources.iter().enumerate() {
        ResolvedResource::resolve(i, r, development)?;
        if let Some(j) = &r.id_jag
            && !config.sign_in.oidc.iter().any(|p| p.name == j.provider)
        {
            return Err(ConfigError::new(
                format!("resources[{i}].id_jag.provider"),
                format!("no [[sign_in.oidc]] provider is named {:?}", j.provider),
            ));
        }
        if let Some(j) = config.resources[..i]
            .iter()
            .position(|other| other.name == r.name)
        {
            return Err(ConfigError::new(
                format!("resources[{i}].name"),
                format!("resources[{j}] already uses the name {:?}", r.name),
            ));
        }
    }
    if !config.resources.is_empty() && config.sign_in.mode == super::SignInMode::Local {
        return Err(ConfigError::new(
            "resources",
            "connections belong to people: [[resources]] need sign_in.mode = \"accounts\" (local mode has no one to connect)",
        ));
    }
    for (i, up) in config.upstreams.iter().enumerate() {
        // The built-in tools are `doorman_*`: an upstream named `doorman` would shadow them.
        if up.name == "doorman" {
            return Err(ConfigError::new(
                format!("upstreams[{i}].name"),
                "\"doorman\" is reserved for Doorman's built-in tools (doorman_whoami, …)",
            ));
        }
        if let Some(name) = &up.resource
            && !config.resources.iter().any(|r| &r.name == name)
        {
            return Err(ConfigError::new(
                format!("upstreams[{i}].resource"),
                format!("no [[resources]] table is named {name:?}"),
            ));
        }
    }
    Ok(())
}
