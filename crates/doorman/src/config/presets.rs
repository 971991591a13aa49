//! Presets for well-known resources: endpoints, default scopes and quirks, as data.
//!
//! Each preset was written from the provider's public documentation (its `docs` link) and is
//! only a set of defaults: every key written in a `[[resources]]` table overrides the preset's
//! value. The ways a provider departs from plain OAuth 2.0 (RFC 6749) are recorded in
//! [`Quirks`], so the code that talks to resources reads them instead of testing which provider
//! it is talking to.
//!
//! Those hosts cannot be reached from the test environment: the tests check that each preset
//! parses and produces the authorization URL its documentation describes.

use serde::Deserialize;

/// The name of a preset, as written in `preset = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Github,
    Google,
    Linear,
    Slack,
    Atlassian,
    Notion,
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::Github,
        Preset::Google,
        Preset::Linear,
        Preset::Slack,
        Preset::Atlassian,
        Preset::Notion,
    ];

    /// What the preset fills in.
    pub fn spec(self) -> &'static PresetSpec {
        match self {
            Preset::Github => &GITHUB,
            Preset::Google => &GOOGLE,
            Preset::Linear => &LINEAR,
            Preset::Slack => &SLACK,
            Preset::Atlassian => &ATLASSIAN,
            Preset::Notion => &NOTION,
        }
    }

    /// The name written in the config (`"github"`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

/// How Doorman authenticates as a client at the token endpoint (RFC 7591 §2 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// HTTP Basic with the form-encoded client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
}

/// How the body of token and revocation requests is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// `application/x-www-form-urlencoded`, as RFC 6749 §4.1.3 and RFC 7009 §2.1 say.
    Form,
    /// A JSON object with the same parameter names (the provider's documentation shows JSON).
    Json,
}

/// How a provider departs from plain OAuth 2.0: everything provider-specific beyond endpoints,
/// scopes and extra authorization parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// The authorization request parameter that carries the scopes.
    pub scope_param: &'static str,
    /// What joins the scopes in that parameter (RFC 6749 §3.3: a space).
    pub scope_separator: &'static str,
    /// How Doorman authenticates at the token endpoint, unless the resource says `token_auth`.
    pub token_auth: TokenAuth,
    /// The encoding of token and revocation request bodies.
    pub request_body: RequestBody,
    /// Send `Accept: application/json` to the token endpoint (GitHub answers form-encoded
    /// without it).
    pub accept_json: bool,
    /// Where the token response keeps the person's tokens: a dotted path to the object holding
    /// `access_token`, `refresh_token` and `expires_in`. `None`: the top level (RFC 6749 §5.1).
    pub token_response_root: Option<&'static str>,
    /// Headers sent with every request to the provider (token, revocation, identity).
    pub request_headers: &'static [(&'static str, &'static str)],
    /// The provider refuses an authorization request without scopes.
    pub scopes_required: bool,
}

impl Quirks {
    /// Plain OAuth 2.0: what a resource without a preset gets.
    pub const STANDARD: Quirks = Quirks {
        scope_param: "scope",
        scope_separator: " ",
        token_auth: TokenAuth::ClientSecretBasic,
        request_body: RequestBody::Form,
        accept_json: false,
        token_response_root: None,
        request_headers: &[],
        scopes_required: false,
    };
}

/// How a preset learns the identity of the account at the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetIdentity {
    /// A claim of the userinfo endpoint's answer.
    UserinfoClaim(&'static str),
    /// A field (dotted path) of an API's JSON answer; with `graphql`, the API is called with
    /// `POST {"query": graphql}`.
    Api {
        url: &'static str,
        field: &'static str,
        graphql: Option<&'static str>,
    },
    /// A field (dotted path) of the token response itself.
    TokenResponse(&'static str),
}

/// Everything a preset fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresetSpec {
    pub name: &'static str,
    pub display_name: &'static str,
    /// The provider's documentation of the flow this preset follows.
    pub docs: &'static str,
    pub authorization_endpoint: &'static str,
    pub token_endpoint: &'static str,
    /// Only an endpoint that takes `token=` revocation requests (RFC 7009-like); providers
    /// with another revocation API have none here.
    pub revocation_endpoint: Option<&'static str>,
    pub userinfo_endpoint: Option<&'static str>,
    /// Scopes asked for when the resource does not say `scopes`.
    pub scopes: &'static [&'static str],
    /// Extra authorization request parameters; the resource's `authorization_params` override
    /// them key by key.
    pub authorization_params: &'static [(&'static str, &'static str)],
    pub identity: PresetIdentity,
    /// Whether PKCE (RFC 7636, S256) is used unless the resource says `pkce`: on where the
    /// provider documents it.
    pub pkce: bool,
    pub quirks: Quirks,
}

/// GitHub OAuth apps.
const GITHUB: PresetSpec = PresetSpec {
    name: "github",
    display_name: "GitHub",
    docs: "https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps",
    authorization_endpoint: "https://github.com/login/oauth/authorize",
    token_endpoint: "https://github.com/login/oauth/access_token",
    // GitHub revokes with `DELETE https://api.github.com/applications/{client_id}/token`
    // (Basic auth, JSON body `{"access_token": …}`), not an RFC 7009 endpoint.
    revocation_endpoint: None,
    userinfo_endpoint: None,
    // Space-delimited. `read:user` is enough to read the profile; operators add what their
    // upstream needs (`repo`, `read:org`, …).
    scopes: &["read:user"],
    authorization_params: &[],
    // The REST API wants a `User-Agent` header on every request.
    identity: PresetIdentity::Api {
        url: "https://api.github.com/user",
        field: "login",
        graphql: None,
    },
    // GitHub does not require PKCE but accepts S256 (announced for OAuth and GitHub Apps in 2025).
    pkce: true,
    quirks: Quirks {
        token_auth: TokenAuth::ClientSecretPost,
        // Without it the token endpoint answers application/x-www-form-urlencoded.
        accept_json: true,
        ..Quirks::STANDARD
    },
};

/// Google OAuth 2.0 for web server applications.
const GOOGLE: PresetSpec = PresetSpec {
    name: "google",
    display_name: "Google",
    docs: "https://developers.google.com/identity/protocols/oauth2/web-server",
    authorization_endpoint: "https://accounts.google.com/o/oauth2/v2/auth",
    token_endpoint: "https://oauth2.googleapis.com/token",
    revocation_endpoint: Some("https://oauth2.googleapis.com/revoke"),
    userinfo_endpoint: Some("https://openidconnect.googleapis.com/v1/userinfo"),
    // Enough for the identity; operators add the API scopes (Drive, Gmail, Calendar…).
    scopes: &["openid", "email"],
    // A refresh token is only issued with access_type=offline, and only on the first consent
    // unless prompt=consent asks again.
    authorization_params: &[("access_type", "offline"), ("prompt", "consent")],
    identity: PresetIdentity::UserinfoClaim("email"),
    pkce: true,
    quirks: Quirks {
        // Google accepts both; its documentation shows the secret in the body.
        token_auth: TokenAuth::ClientSecretPost,
        ..Quirks::STANDARD
    },
};

/// Linear OAuth 2.0 applications.
const LINEAR: PresetSpec = PresetSpec {
    name: "linear",
    display_name: "Linear",
    docs: "https://linear.app/developers/oauth-2-0-authentication",
    authorization_endpoint: "https://linear.app/oauth/authorize",
    token_endpoint: "https://api.linear.app/oauth/token",
    // Takes the token to revoke; whether as `token=` or as a bearer header is not certain from
    // memory: check the documentation before relying on revocation here.
    revocation_endpoint: Some("https://api.linear.app/oauth/revoke"),
    userinfo_endpoint: None,
    // Linear's documentation: `scope` is a *comma-separated* list; `read` is always granted.
    scopes: &["read"],
    authorization_params: &[],
    // Linear has only a GraphQL API: the viewer is the account that authorized.
    identity: PresetIdentity::Api {
        url: "https://api.linear.app/graphql",
        field: "data.viewer.email",
        graphql: Some("{ viewer { email } }"),
    },
    // Linear documents PKCE (S256) for its OAuth applications.
    pkce: true,
    quirks: Quirks {
        scope_separator: ",",
        token_auth: TokenAuth::ClientSecretPost,
        ..Quirks::STANDARD
    },
};

/// Slack OAuth v2, user tokens (the person's own access, not a bot installed in a workspace).
const SLACK: PresetSpec = PresetSpec {
    name: "slack",
    display_name: "Slack",
    docs: "https://api.slack.com/authentication/oauth-v2",
    authorization_endpoint: "https://slack.com/oauth/v2/authorize",
    token_endpoint: "https://slack.com/api/oauth.v2.access",
    // Slack's `auth.revoke` is called *with* the token being revoked as its credential, not an
    // RFC 7009 endpoint.
    revocation_endpoint: None,
    userinfo_endpoint: None,
    // User scopes depend entirely on the upstream (`search:read`, `channels:history`, …):
    // there is no sensible default, and Slack refuses a request without any.
    scopes: &[],
    authorization_params: &[],
    // `auth.test` needs no scope; note that Slack answers errors with HTTP 200 and `"ok": false`.
    identity: PresetIdentity::Api {
        url: "https://slack.com/api/auth.test",
        field: "user",
        graphql: None,
    },
    // PKCE is documented for `oauth.v2.user.access`, not for `oauth.v2.access` used here.
    pkce: false,
    quirks: Quirks {
        // User scopes go in `user_scope` (`scope` is for bot scopes), comma-separated.
        scope_param: "user_scope",
        scope_separator: ",",
        // Slack asks for HTTP Basic rather than the secret in the body.
        token_auth: TokenAuth::ClientSecretBasic,
        // The top-level `access_token` is the bot's; the person's token is in `authed_user`.
        token_response_root: Some("authed_user"),
        scopes_required: true,
        ..Quirks::STANDARD
    },
};

/// Atlassian Cloud (Jira, Confluence) OAuth 2.0 three-legged authorization (3LO).
const ATLASSIAN: PresetSpec = PresetSpec {
    name: "atlassian",
    display_name: "Atlassian",
    docs: "https://developer.atlassian.com/cloud/oauth/getting-started/implementing-oauth-3lo",
    authorization_endpoint: "https://auth.atlassian.com/authorize",
    token_endpoint: "https://auth.atlassian.com/oauth/token",
    // No revocation endpoint is documented for 3LO apps.
    revocation_endpoint: None,
    userinfo_endpoint: None,
    // Space-separated. `read:me` lets Doorman read the account; `offline_access` gets a
    // (rotating) refresh token. Operators add the product scopes (`read:jira-work`, …).
    scopes: &["read:me", "offline_access"],
    authorization_params: &[("audience", "api.atlassian.com"), ("prompt", "consent")],
    identity: PresetIdentity::Api {
        url: "https://api.atlassian.com/me",
        field: "email",
        graphql: None,
    },
    // PKCE is not part of Atlassian's 3LO documentation.
    pkce: false,
    quirks: Quirks {
        token_auth: TokenAuth::ClientSecretPost,
        // The documentation's token requests are JSON bodies.
        request_body: RequestBody::Json,
        ..Quirks::STANDARD
    },
};

/// Notion public integrations (OAuth).
const NOTION: PresetSpec = PresetSpec {
    name: "notion",
    display_name: "Notion",
    docs: "https://developers.notion.com/docs/authorization",
    authorization_endpoint: "https://api.notion.com/v1/oauth/authorize",
    token_endpoint: "https://api.notion.com/v1/oauth/token",
    // HTTP Basic, JSON body `{"token": …}` (like the token endpoint).
    revocation_endpoint: Some("https://api.notion.com/v1/oauth/revoke"),
    userinfo_endpoint: None,
    // Notion has no scopes: what the integration may do is set in its capabilities, and what
    // it may see is chosen by the person on Notion's consent page.
    scopes: &[],
    authorization_params: &[("owner", "user")],
    // The token response names the person who authorized; the email is there only if the
    // integration has the "read user information including email addresses" capability.
    identity: PresetIdentity::TokenResponse("owner.user.person.email"),
    // PKCE is not part of Notion's documentation.
    pkce: false,
    quirks: Quirks {
        token_auth: TokenAuth::ClientSecretBasic,
        request_body: RequestBody::Json,
        // Every Notion API request names the API version it was written against.
        request_headers: &[("Notion-Version", "2022-06-28")],
        ..Quirks::STANDARD
    },
};
