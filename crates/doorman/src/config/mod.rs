//! The configuration file: one TOML document, every key documented in `doorman.example.toml`.
//!
//! Unknown keys are refused (`deny_unknown_fields` everywhere) and every error names the key's
//! path (`upstreams[1].timeout`), so an operator never wonders which line was wrong.
//! Environment variables (`DOORMAN_*`) override the `[server]` keys; secrets are never inline
//! but read from an environment variable or a file (`{ env = "VAR" }`, `{ file = "path" }`).

mod duration;
pub mod presets;
pub mod resolved;
mod resources;

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use url::Url;

pub use duration::ConfigDuration;
pub use resources::{
    ApiKeyConfig, Binding, CheckMethod, IdentityConfig, PromptChoice, ResourceConfig,
    ResourceIdJagConfig, ResourceKind,
};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub sign_in: SignInConfig,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Resources people connect their own accounts to (layer 2).
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    /// Per-tool rules, matched in order by tool name (the first match applies).
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// What happens to tools no policy matches.
    #[serde(default)]
    pub access: AccessConfig,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// `[access]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// `allow` (default): tools no policy matches may be called by everyone signed in;
    /// `deny`: only tools a policy allows.
    pub default: AccessDefault,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessDefault {
    #[default]
    Allow,
    Deny,
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How long audit records are kept. Default: 90 days.
    pub retention: ConfigDuration,
    /// Whether an answer to a request waits until its audit record is stored (group commit:
    /// concurrent requests share one write). `false`: records are written within about 50 ms
    /// of the answer, and a crash in that window loses them. Default: true.
    pub durable: bool,
    /// How long an answer waits for its record's write (the store down, or far behind) before
    /// it is released anyway; the record stays queued and is retried. Default: 10 s.
    pub durable_wait: ConfigDuration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention: ConfigDuration(std::time::Duration::from_secs(90 * 86_400)),
            durable: true,
            durable_wait: ConfigDuration::secs(10),
        }
    }
}

/// `[[policies]]`: what applies to the tools, prompts and resources whose names (as clients see
/// them: `{upstream}_{tool}`, `{upstream}_{prompt}`, `{upstream}+{uri}`) match one of `tools`,
/// `prompts` or `resources` (and, if given, whose upstream is in `upstreams`): who may use them,
/// how recent their sign-in must be, the connection lifetime of layer 2, and whether arguments
/// are audited. How the entry that decides is found is in `policy.rs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A name for errors and the audit. Default: `policies[i]`.
    pub name: Option<String>,
    /// Tool name globs: `*` matches any run of characters, `?` one character. An entry whose
    /// globs cover every tool of an upstream (`*`, `crm_*`) also decides that upstream's
    /// prompts, resources and completions that no entry names in `prompts`/`resources`.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Prompt name globs (`{upstream}_{prompt}`).
    #[serde(default)]
    pub prompts: Vec<String>,
    /// Resource URI globs (`{upstream}+{uri}`), for reads, subscriptions, templates and
    /// completions of resource templates.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Only tools of these upstreams. Default: any.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Groups allowed to call these tools (the person's groups from SSO, or a local account's).
    /// With none of `allow_groups`, `allow_people` and `clients`, every person not denied may.
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// People allowed (username, email or Doorman id).
    #[serde(default)]
    pub allow_people: Vec<String>,
    /// Groups refused, whatever else says.
    #[serde(default)]
    pub deny_groups: Vec<String>,
    /// People refused (username, email or Doorman id).
    #[serde(default)]
    pub deny_people: Vec<String>,
    /// The person's sign-in must be at most this old; older gets `401` with
    /// `insufficient_user_authentication` (RFC 9470) and the next sign-in is a fresh one.
    pub sign_in_max_age: Option<ConfigDuration>,
    /// Record these tools' arguments in the audit (secret-looking values redacted).
    #[serde(default)]
    pub log_arguments: bool,
    /// How long after the person authorized at the resource these tools may use the
    /// connection. Default: the resource's.
    pub max_age: Option<ConfigDuration>,
    /// What a connection made for these tools is bound to. Default: the resource's.
    pub binding: Option<Binding>,
    /// Service clients (`grant_types = ["client_credentials"]`, by `client_id`) allowed by this
    /// entry. A service client is allowed only by an entry that names it here: entries without
    /// it, and `[access] default`, are for people. Like `allow_people` and `allow_groups`, it
    /// makes the entry an allow list: with `clients` alone, no person may.
    #[serde(default)]
    pub clients: Vec<String>,
}

impl PolicyConfig {
    pub fn matches(&self, tool: &str) -> bool {
        self.tools.iter().any(|g| glob_matches(g, tool))
    }

    /// Whether this entry is scoped to `upstream` (no `upstreams`: every one).
    pub fn scoped_to(&self, upstream: &str) -> bool {
        self.upstreams.is_empty() || self.upstreams.iter().any(|u| u == upstream)
    }

    /// Whether one of the tool globs matches every tool of `upstream`: a glob ending in `*`
    /// that matches `{upstream}_` matches `{upstream}_` followed by anything.
    pub fn covers_upstream(&self, upstream: &str) -> bool {
        let namespace = format!("{upstream}_");
        self.scoped_to(upstream)
            && self
                .tools
                .iter()
                .any(|g| g.ends_with('*') && glob_matches(g, &namespace))
    }
}

/// `*` (any run) and `?` (one character) globs over tool names.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    // Classic two-pointer wildcard match with backtracking to the last `*`.
    let (mut gi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == n[ni]) {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some(gi);
            mark = ni;
            gi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

/// `[server]`: where Doorman listens, keeps its data, and what it accepts at the edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: Option<Url>,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    /// Peers (addresses or CIDR ranges) whose `Forwarded`, `X-Forwarded-For` and
    /// `X-Forwarded-Proto` headers are believed: the load balancers in front of Doorman. From
    /// any other peer those headers are ignored and the peer's own address is the client's.
    pub trusted_proxies: Vec<String>,
    /// Which header the trusted proxies set: only that one is read (a client's own copy of the
    /// other would pass through a proxy untouched).
    pub forwarded_header: ForwardedHeader,
    pub max_request_bytes: usize,
    pub session_idle_timeout: ConfigDuration,
    /// A request's headers must all arrive within this; an idle keep-alive connection is
    /// closed after it too.
    pub header_read_timeout: ConfigDuration,
    /// A request's body must all arrive within this (`408` otherwise).
    pub body_read_timeout: ConfigDuration,
    /// The environment variable holding a bearer token that `/metrics` then requires
    /// (`None`: `/metrics` is open, for a scraper on a trusted network).
    pub metrics_token_env: Option<String>,
    /// The most stateful sessions one person may have open at once (0: no limit).
    pub max_sessions_per_person: u32,
    /// How often each node re-reads what other nodes changed (revoked tokens, signing keys, the
    /// key ring file) and does layer-2 upkeep (queued revocations, idle conversations).
    pub poll_interval: ConfigDuration,
    /// How often expired records are deleted (audit records past retention, finished sign-in
    /// state, unused dynamic registrations).
    pub purge_interval: ConfigDuration,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl ServerConfig {
    /// `trusted_proxies` as networks (a bare address is a network of one).
    pub fn trusted_proxy_nets(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| parse_proxy(p))
            .collect()
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address.
fn parse_proxy(p: &str) -> Option<ipnet::IpNet> {
    let p = p.trim();
    p.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| p.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8421)),
            public_url: None,
            data_dir: PathBuf::from("./doorman-data"),
            database_url: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            max_request_bytes: 4 * 1024 * 1024,
            session_idle_timeout: ConfigDuration::secs(30 * 60),
            header_read_timeout: ConfigDuration::secs(30),
            body_read_timeout: ConfigDuration::secs(30),
            max_sessions_per_person: 100,
            metrics_token_env: None,
            poll_interval: ConfigDuration::secs(2),
            purge_interval: ConfigDuration::secs(60),
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

/// `server.forwarded_header`: the header the load balancers in `trusted_proxies` set.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`, most load balancers).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[sign_in]`: how people sign in to Doorman (layer 1) and how long that lasts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInConfig {
    pub mode: SignInMode,
    /// Development conveniences: Client ID Metadata Documents over plain http on loopback.
    pub development: bool,
    pub access_token_lifetime: ConfigDuration,
    /// How long a sign-in lasts at a client (its refresh tokens), from the moment of sign-in.
    pub sign_in_lifetime: ConfigDuration,
    pub code_lifetime: ConfigDuration,
    /// Dynamically registered clients unused this long are deleted.
    pub registration_expiry: ConfigDuration,
    /// Dynamic registrations accepted per client address per hour.
    pub registrations_per_hour: u32,
    /// Failed sign-ins for one name before it is locked for `lockout`.
    pub max_failed_sign_ins: u32,
    pub lockout: ConfigDuration,
    pub clients: Vec<ClientConfig>,
    /// Whether people may sign in with Doorman's own accounts (the local form).
    pub local_accounts: bool,
    /// OpenID Connect providers people sign in through (the company's SSO).
    pub oidc: Vec<OidcProviderConfig>,
    /// Redirect URIs of web apps that answer a `401` by running their OAuth flow again but
    /// cannot follow a URL elicitation (Claude's web and desktop apps): a resource with
    /// `prompt = "auto"` asks their people through the re-authorization cascade. Each entry is
    /// a URL; a client's redirect URI matches when scheme and host are equal, the port too if
    /// the entry names one, and its path starts with the entry's.
    pub web_app_redirect_uris: Vec<url::Url>,
}

/// The web apps `prompt = "auto"` gives the re-authorization cascade, unless configured.
pub const DEFAULT_WEB_APPS: [&str; 2] = [
    "https://claude.ai/api/mcp/auth_callback",
    "https://claude.com/api/mcp/auth_callback",
];

/// Whether `redirect_uri` is one of the web apps `web_app_redirect_uris` names: same scheme
/// and host, the same port if the entry names one, a path under the entry's.
pub fn is_web_app(web_apps: &[Url], redirect_uri: &str) -> bool {
    let Ok(uri) = Url::parse(redirect_uri) else {
        return false;
    };
    web_apps.iter().any(|app| {
        app.scheme() == uri.scheme()
            && app.host_str().is_some()
            && app.host_str() == uri.host_str()
            && app.port().is_none_or(|p| Some(p) == uri.port())
            && (app.path() == "/"
                || uri.path() == app.path()
                || uri
                    .path()
                    .strip_prefix(app.path())
                    .is_some_and(|rest| app.path().ends_with('/') || rest.starts_with('/')))
    })
}

impl Default for SignInConfig {
    fn default() -> Self {
        Self {
            mode: SignInMode::default(),
            development: false,
            access_token_lifetime: ConfigDuration::secs(3600),
            sign_in_lifetime: ConfigDuration::secs(30 * 86_400),
            code_lifetime: ConfigDuration::secs(60),
            registration_expiry: ConfigDuration::secs(30 * 86_400),
            registrations_per_hour: 30,
            max_failed_sign_ins: 5,
            lockout: ConfigDuration::secs(15 * 60),
            clients: Vec::new(),
            local_accounts: true,
            oidc: Vec::new(),
            web_app_redirect_uris: DEFAULT_WEB_APPS
                .iter()
                .map(|u| url::Url::parse(u).expect("a valid default"))
                .collect(),
        }
    }
}

/// Sign-in modes. `accounts` (default): people sign in with Doorman's accounts before using
/// `/mcp`. `local`: one person on one machine, no sign-in (loopback only).
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignInMode {
    #[default]
    Accounts,
    Local,
}

/// `[[sign_in.oidc]]`: an OpenID Connect provider (Okta, Entra ID, Google Workspace, Keycloak…).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Short id, used in URLs and logs: letters, digits, `_`, `-`.
    pub name: String,
    /// What the sign-in button says. Default: the name.
    pub display_name: Option<String>,
    /// The provider's issuer; discovery is `{issuer}/.well-known/openid-configuration`.
    pub issuer: Url,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: OidcClaims,
    /// Extra parameters for the provider's authorization request (Google needs
    /// `access_type = "offline"` for a refresh token).
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// Count the provider's email even when it does not say `email_verified` (a provider that
    /// only ever issues addresses it owns). Default: false.
    #[serde(default)]
    pub trust_email: bool,
    /// Only people whose (verified) email is in one of these domains. Empty: any.
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// Only people in at least one of these groups. Empty: any.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// How old the last check at the provider may be when a client refreshes its tokens;
    /// older, and Doorman asks the provider again (deprovisioning reaches Doorman).
    #[serde(default = "default_recheck_interval")]
    pub recheck_interval: ConfigDuration,
    /// Enterprise-managed authorization (the MCP extension): accept at `/oauth/token` the
    /// Identity Assertion JWT Authorization Grants (ID-JAG) this provider issues for Doorman,
    /// so a client the company's IdP vouches for gets tokens with no browser. Default: false.
    #[serde(default)]
    pub id_jag: bool,
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_recheck_interval() -> ConfigDuration {
    ConfigDuration::secs(3600)
}

/// Which ID token claims hold what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcClaims {
    pub subject: String,
    pub email: String,
    pub name: String,
    pub groups: String,
}

impl Default for OidcClaims {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            email: "email".into(),
            name: "name".into(),
            groups: "groups".into(),
        }
    }
}

impl OidcProviderConfig {
    /// The client secret at the provider.
    pub fn secret(&self) -> Result<String, ConfigError> {
        let source = match (&self.client_secret_env, &self.client_secret_file) {
            (Some(env), None) => SecretOrValue::Env { env: env.clone() },
            (None, Some(file)) => SecretOrValue::File { file: file.clone() },
            _ => {
                return Err(ConfigError::new(
                    "client_secret_env",
                    "give exactly one of client_secret_env or client_secret_file",
                ));
            }
        };
        source
            .resolve()
            .map_err(|e| ConfigError::new("client_secret", e))
    }
}

/// `[[sign_in.clients]]`: an OAuth client registered by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    pub name: Option<String>,
    /// Where people's authorizations return to; none for a service client.
    #[serde(default)]
    pub redirect_uris: Vec<Url>,
    /// Confidential clients: the secret, from an environment variable or a file.
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// `private_key_jwt` (RFC 7523 §2.2): the client's public keys, a JWK Set in a file...
    pub jwks_file: Option<PathBuf>,
    /// ...or at a URL (fetched as a client's `jwks_uri` is: public addresses only, cached).
    pub jwks_uri: Option<Url>,
    /// `["authorization_code", "refresh_token"]` (the default): a client people sign in to.
    /// `["client_credentials"]`: a service client that acts as itself, with no person (RFC 6749
    /// §4.4; the MCP OAuth client credentials extension); it must be confidential.
    #[serde(default = "default_client_grant_types")]
    pub grant_types: Vec<String>,
}

fn default_client_grant_types() -> Vec<String> {
    vec!["authorization_code".into(), "refresh_token".into()]
}

impl ClientConfig {
    /// Whether this is a service client (the client credentials grant).
    pub fn is_service(&self) -> bool {
        self.grant_types.iter().any(|g| g == "client_credentials")
    }

    /// The client's secret, if it is confidential.
    pub fn secret(&self) -> Result<Option<String>, ConfigError> {
        let source = match (&self.client_secret_env, &self.client_secret_file) {
            (None, None) => return Ok(None),
            (Some(env), None) => SecretOrValue::Env { env: env.clone() },
            (None, Some(file)) => SecretOrValue::File { file: file.clone() },
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "client_secret_env",
                    "give client_secret_env or client_secret_file, not both",
                ));
            }
        };
        source
            .resolve()
            .map(Some)
            .map_err(|e| ConfigError::new("client_secret", e))
    }
}

/// `[[upstreams]]`: one Streamable HTTP MCP server behind Doorman.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: Url,
    #[serde(default)]
    pub headers: BTreeMap<String, SecretOrValue>,
    #[serde(default = "default_upstream_timeout")]
    pub timeout: ConfigDuration,
    /// The `[[resources]]` whose connection's access token this upstream receives.
    pub resource: Option<String>,
    /// What people who have not connected the upstream's resource yet see of it.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// `"exchange"`: every request carries a short-lived token Doorman signs for this upstream
    /// alone, on behalf of the person (RFC 8693 on-behalf-of: `sub` the person, `act` the
    /// client; RFC 9068 format), verifiable at Doorman's JWKS. Never the client's own token.
    pub auth: Option<UpstreamAuth>,
    /// With `auth = "exchange"`: the token's `aud`. Default: the upstream's URL.
    pub audience: Option<String>,
    /// With `auth = "exchange"`: the token's `scope`. Default: ["mcp"].
    pub scopes: Option<Vec<String>>,
    /// With `auth = "exchange"`: get the token from this `[[sign_in.oidc]]` provider's token
    /// exchange (RFC 8693, the person's ID token as subject) instead of signing it. Only people
    /// who signed in through that provider can then use the upstream. Default: Doorman signs.
    pub exchange_provider: Option<String>,
}

impl UpstreamConfig {
    /// The `aud` of the tokens an `auth = "exchange"` upstream receives.
    pub fn exchange_audience(&self) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| self.url.to_string())
    }
}

/// `upstreams[].auth`: how Doorman authenticates to an upstream on a person's behalf, besides
/// a layer-2 resource's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamAuth {
    /// A token Doorman signs for the upstream, for the person and client of each request.
    Exchange,
}

/// `[upstreams.catalog]`: the tools shown, before they connect, to people whom an upstream tied
/// to a resource will not list anything without their token. With neither key, they see one
/// entry, `{upstream}_connect`, which prompts them to connect; once connected, everyone sees
/// the upstream's own list for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// The operator's declared tool list (`[[upstreams.catalog.tools]]`).
    #[serde(default)]
    pub tools: Vec<CatalogTool>,
    /// A bearer token the upstream accepts for listing (a service account's): Doorman lists
    /// with it and shows that list, kept for `refresh`.
    pub credential: Option<SecretOrValue>,
    /// How long a list made with `credential` is kept. Default: "5m".
    #[serde(default = "default_catalog_refresh")]
    pub refresh: ConfigDuration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            tools: Vec::new(),
            credential: None,
            refresh: default_catalog_refresh(),
        }
    }
}

fn default_catalog_refresh() -> ConfigDuration {
    ConfigDuration::secs(300)
}

/// One declared tool: as `tools/list` shows it (the name without the upstream prefix).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogTool {
    pub name: String,
    pub title: Option<String>,
    #[serde(default)]
    pub description: String,
    /// The JSON Schema of the arguments. Default: an object with no declared properties.
    pub input_schema: Option<serde_json::Value>,
}

fn default_upstream_timeout() -> ConfigDuration {
    ConfigDuration::secs(60)
}

/// A value written inline, or read from an environment variable or a file (for secrets).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretOrValue {
    Value(String),
    Env { env: String },
    File { file: PathBuf },
}

impl SecretOrValue {
    /// Reads the value; the error names the variable or file but never a value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Self::Value(v) => Ok(v.clone()),
            Self::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))
            }
            Self::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
        }
    }
}

/// A configuration error: the key's path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Tool names seen by clients must match this (MCP tools, "Tool names").
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
    /// Parses TOML text: unknown keys and wrong types are errors naming the key's path.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("", format!("not valid TOML: {}", describe(&e, text))))?;
        serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigError::new(path, describe(e.inner(), text))
        })
    }

    /// Reads a file, applies `DOORMAN_*` environment overrides and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError::new("", format!("cannot read {}: {e}", p.display()))
                })?;
                Self::from_toml(&text)?
            }
            None => Self::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Environment overrides for `[server]`, documented beside each key in the example file.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let s = &mut self.server;
        if let Some(v) = var("DOORMAN_LISTEN") {
            s.listen = v
                .parse()
                .map_err(|e| ConfigError::new("DOORMAN_LISTEN", format!("{e}")))?;
        }
        if let Some(v) = var("DOORMAN_PUBLIC_URL") {
            s.public_url = Some(
                v.parse()
                    .map_err(|e| ConfigError::new("DOORMAN_PUBLIC_URL", format!("{e}")))?,
            );
        }
        if let Some(v) = var("DOORMAN_DATA_DIR") {
            s.data_dir = v.into();
        }
        if let Some(v) = var("DOORMAN_DATABASE_URL") {
            s.database_url = Some(v);
        }
        if let Some(v) = var("DOORMAN_LOG_FORMAT") {
            s.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::new(
                        "DOORMAN_LOG_FORMAT",
                        "expected `text` or `json`",
                    ));
                }
            };
        }
        if let Some(v) = var("DOORMAN_SIGN_IN_MODE") {
            self.sign_in.mode = match v.as_str() {
                "accounts" => SignInMode::Accounts,
                "local" => SignInMode::Local,
                _ => {
                    return Err(ConfigError::new(
                        "DOORMAN_SIGN_IN_MODE",
                        "expected `accounts` or `local`",
                    ));
                }
            };
        }
        let s = &mut self.server;
        if let Some(v) = var("DOORMAN_LOG") {
            s.log_level = v;
        }
        Ok(())
    }

    /// Checks what the types alone cannot: names, URLs, overlaps, and safe combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if let Some(url) = &s.public_url
            && (!matches!(url.scheme(), "http" | "https") || url.host_str().is_none())
        {
            return Err(ConfigError::new(
                "server.public_url",
                "must be an http(s) URL with a host",
            ));
        }
        if s.max_request_bytes < 1024 {
            return Err(ConfigError::new(
                "server.max_request_bytes",
                "must be at least 1024",
            ));
        }
        if let Some(env) = &s.metrics_token_env {
            match std::env::var(env) {
                Ok(t) if t.len() >= 16 => {}
                Ok(_) => {
                    return Err(ConfigError::new(
                        "server.metrics_token_env",
                        format!("the token in {env} must be at least 16 characters"),
                    ));
                }
                Err(_) => {
                    return Err(ConfigError::new(
                        "server.metrics_token_env",
                        format!("the environment variable {env} is not set"),
                    ));
                }
            }
        }
        if s.session_idle_timeout.0.is_zero() {
            return Err(ConfigError::new(
                "server.session_idle_timeout",
                "must be longer than zero",
            ));
        }
        for (key, d, min) in [
            ("server.poll_interval", s.poll_interval.0, "100ms"),
            ("server.purge_interval", s.purge_interval.0, "1s"),
            ("server.header_read_timeout", s.header_read_timeout.0, "1s"),
            ("server.body_read_timeout", s.body_read_timeout.0, "1s"),
        ] {
            let floor = min.parse::<ConfigDuration>().expect("a valid floor").0;
            if d < floor {
                return Err(ConfigError::new(key, format!("must be at least {min}")));
            }
            if d > std::time::Duration::from_secs(3600) {
                return Err(ConfigError::new(key, "must be at most 1h"));
            }
        }
        if s.log_level
            .parse::<tracing_subscriber::filter::Targets>()
            .is_err()
        {
            return Err(ConfigError::new(
                "server.log_level",
                "expected a level such as `info` or `info,doorman=debug`",
            ));
        }
        if let Some(url) = &s.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "server.database_url",
                "expected a sqlite: or postgres:// URL",
            ));
        }
        for (i, origin) in s.allowed_origins.iter().enumerate() {
            match Url::parse(origin) {
                Ok(u) if u.host_str().is_some() && u.path() == "/" => {}
                _ => {
                    return Err(ConfigError::new(
                        format!("server.allowed_origins[{i}]"),
                        format!("{origin:?} is not an origin such as \"https://app.example.com\""),
                    ));
                }
            }
        }
        for (i, p) in s.trusted_proxies.iter().enumerate() {
            if parse_proxy(p).is_none() {
                return Err(ConfigError::new(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{p:?} is not an address or a CIDR range such as \"10.0.0.0/8\""),
                ));
            }
        }
        // Local mode has no sign-in: anyone who can reach the port acts as the one person.
        if self.sign_in.mode == SignInMode::Local && !s.listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "sign_in.mode",
                format!(
                    "local mode has no sign-in, so it only listens on loopback; {} is not a loopback address",
                    s.listen
                ),
            ));
        }
        self.validate_sign_in()?;
        self.validate_upstreams()?;
        resources::validate(self)?;
        self.validate_policies()
    }

    fn validate_policies(&self) -> Result<(), ConfigError> {
        if self.audit.retention.0 < std::time::Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "audit.retention",
                "must be at least one hour (records older than it are deleted every server.purge_interval)",
            ));
        }
        let wait = self.audit.durable_wait.0;
        if wait < std::time::Duration::from_millis(100)
            || wait > std::time::Duration::from_secs(300)
        {
            return Err(ConfigError::new(
                "audit.durable_wait",
                "must be between 100ms and 5m",
            ));
        }
        for (i, p) in self.policies.iter().enumerate() {
            if p.tools.is_empty() && p.prompts.is_empty() && p.resources.is_empty() {
                return Err(ConfigError::new(
                    format!("policies[{i}].tools"),
                    "list one or more tool name globs (`notes_*`, `*_delete_*`), or prompt or resource globs in `prompts`/`resources`",
                ));
            }
            for (key, globs) in [
                ("tools", &p.tools),
                ("prompts", &p.prompts),
                ("resources", &p.resources),
            ] {
                if let Some(j) = globs.iter().position(|g| g.trim().is_empty()) {
                    return Err(ConfigError::new(
                        format!("policies[{i}].{key}[{j}]"),
                        "an empty glob matches nothing; remove it",
                    ));
                }
            }
            if p.max_age.is_some_and(|d| d.0.is_zero()) {
                return Err(ConfigError::new(
                    format!("policies[{i}].max_age"),
                    "must be longer than zero",
                ));
            }
            if p.sign_in_max_age.is_some_and(|d| d.0.as_secs() == 0) {
                return Err(ConfigError::new(
                    format!("policies[{i}].sign_in_max_age"),
                    "must be at least one second",
                ));
            }
            for (j, u) in p.upstreams.iter().enumerate() {
                if !self.upstreams.iter().any(|up| &up.name == u) {
                    return Err(ConfigError::new(
                        format!("policies[{i}].upstreams[{j}]"),
                        format!("no [[upstreams]] table is named {u:?}"),
                    ));
                }
            }
            for (key, list) in [
                ("allow_people", &p.allow_people),
                ("deny_people", &p.deny_people),
            ] {
                if let Some(j) = list.iter().position(|w| w.starts_with("client:")) {
                    return Err(ConfigError::new(
                        format!("policies[{i}].{key}[{j}]"),
                        "service clients are named in `clients` (by client_id), not among people",
                    ));
                }
            }
            for (j, c) in p.clients.iter().enumerate() {
                if !self
                    .sign_in
                    .clients
                    .iter()
                    .any(|k| &k.client_id == c && k.is_service())
                {
                    return Err(ConfigError::new(
                        format!("policies[{i}].clients[{j}]"),
                        format!(
                            "no [[sign_in.clients]] entry with grant_types = [\"client_credentials\"] has client_id {c:?}"
                        ),
                    ));
                }
            }
            if p.binding == Some(Binding::Shared) {
                return Err(ConfigError::new(
                    format!("policies[{i}].binding"),
                    "\"shared\" is a property of the resource (its one credential), not of a tool",
                ));
            }
        }
        Ok(())
    }

    fn validate_sign_in(&self) -> Result<(), ConfigError> {
        let si = &self.sign_in;
        // OAuth 2.1 §1.5: tokens and credentials only over TLS, loopback excepted.
        let public = self.public_url();
        let loopback = match public.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if si.mode == SignInMode::Accounts
            && public.scheme() != "https"
            && !loopback
            && !si.development
        {
            return Err(ConfigError::new(
                "server.public_url",
                format!(
                    "people sign in over this URL, so it must be https (TLS may end at a proxy in front of Doorman); {public} is not (set server.public_url, or sign_in.development = true for a test setup)"
                ),
            ));
        }
        for (key, d) in [
            ("access_token_lifetime", si.access_token_lifetime),
            ("sign_in_lifetime", si.sign_in_lifetime),
            ("code_lifetime", si.code_lifetime),
            ("registration_expiry", si.registration_expiry),
            ("lockout", si.lockout),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::new(
                    format!("sign_in.{key}"),
                    "must be longer than zero",
                ));
            }
        }
        if si.max_failed_sign_ins == 0 {
            return Err(ConfigError::new(
                "sign_in.max_failed_sign_ins",
                "must be at least 1",
            ));
        }
        for (i, p) in si.oidc.iter().enumerate() {
            let path = |key: &str| format!("sign_in.oidc[{i}].{key}");
            let valid_name = (1..=32).contains(&p.name.len())
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(ConfigError::new(
                    path("name"),
                    format!("{:?} must be 1-32 letters, digits, `_` or `-`", p.name),
                ));
            }
            if si.oidc[..i].iter().any(|o| o.name == p.name) {
                return Err(ConfigError::new(
                    path("name"),
                    format!("another provider is already named {:?}", p.name),
                ));
            }
            if !matches!(p.issuer.scheme(), "https" | "http") || p.issuer.host_str().is_none() {
                return Err(ConfigError::new(path("issuer"), "must be an https URL"));
            }
            if p.issuer.scheme() == "http" && !si.development {
                return Err(ConfigError::new(
                    path("issuer"),
                    "must be https (plain http only with sign_in.development = true)",
                ));
            }
            if p.client_id.is_empty() {
                return Err(ConfigError::new(path("client_id"), "must not be empty"));
            }
            if p.client_secret_env.is_some() == p.client_secret_file.is_some() {
                return Err(ConfigError::new(
                    path("client_secret_env"),
                    "give exactly one of client_secret_env or client_secret_file",
                ));
            }
            const RESERVED: &[&str] = &[
                "response_type",
                "client_id",
                "redirect_uri",
                "scope",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
                "max_age",
            ];
            if let Some(k) = p
                .authorization_params
                .keys()
                .find(|k| RESERVED.contains(&k.as_str()))
            {
                return Err(ConfigError::new(
                    format!("sign_in.oidc[{i}].authorization_params.{k}"),
                    "is set by Doorman itself",
                ));
            }
            if !p.scopes.iter().any(|s| s == "openid") {
                return Err(ConfigError::new(path("scopes"), "must include \"openid\""));
            }
            if p.recheck_interval.0.is_zero() {
                return Err(ConfigError::new(
                    path("recheck_interval"),
                    "must be longer than zero",
                ));
            }
        }
        if !si.local_accounts && si.oidc.is_empty() && si.mode == SignInMode::Accounts {
            return Err(ConfigError::new(
                "sign_in.local_accounts",
                "with local accounts off, at least one [[sign_in.oidc]] provider is needed, or nobody can sign in",
            ));
        }
        for (i, c) in si.clients.iter().enumerate() {
            let path = |key: &str| format!("sign_in.clients[{i}].{key}");
            if c.client_id.is_empty() || c.client_id.starts_with("https://") {
                return Err(ConfigError::new(
                    path("client_id"),
                    "must be non-empty and not an https URL (URLs identify metadata documents)",
                ));
            }
            if let Some(g) = c.grant_types.iter().find(|g| {
                !matches!(
                    g.as_str(),
                    "authorization_code" | "refresh_token" | "client_credentials"
                )
            }) {
                return Err(ConfigError::new(
                    path("grant_types"),
                    format!(
                        "{g:?} is not a grant type Doorman issues (authorization_code, refresh_token, client_credentials)"
                    ),
                ));
            }
            if c.client_id.starts_with("id-jag:") {
                return Err(ConfigError::new(
                    path("client_id"),
                    "`id-jag:` starts the names Doorman keeps spent ID-JAGs under: choose another client_id",
                ));
            }
            if !c.is_service() {
                // People's clients get a code and a refresh token: there is nothing to choose.
                let mut g = c.grant_types.clone();
                g.sort();
                if g != ["authorization_code", "refresh_token"] {
                    return Err(ConfigError::new(
                        path("grant_types"),
                        "a client people sign in through uses [\"authorization_code\", \"refresh_token\"] (the default; omit the key); a service client uses [\"client_credentials\"]",
                    ));
                }
            }
            let secret = c.client_secret_env.is_some() || c.client_secret_file.is_some();
            let keys = c.jwks_file.is_some() || c.jwks_uri.is_some();
            if c.is_service() {
                // A service client acts as itself: people do not sign in through it.
                if c.grant_types.len() != 1 {
                    return Err(ConfigError::new(
                        path("grant_types"),
                        "a service client has [\"client_credentials\"] alone; give the people's client its own entry",
                    ));
                }
                if !c.redirect_uris.is_empty() {
                    return Err(ConfigError::new(
                        path("redirect_uris"),
                        "a service client (client_credentials) has no redirect URIs: no person signs in through it",
                    ));
                }
                // RFC 6749 §4.4: the client credentials grant is for confidential clients only.
                if !secret && !keys {
                    return Err(ConfigError::new(
                        path("client_secret_env"),
                        "a service client must authenticate: give jwks_file or jwks_uri (private_key_jwt, preferred), or client_secret_env or client_secret_file",
                    ));
                }
            } else if c.redirect_uris.is_empty() {
                return Err(ConfigError::new(
                    path("redirect_uris"),
                    "at least one redirect URI is needed",
                ));
            }
            if c.client_secret_env.is_some() && c.client_secret_file.is_some() {
                return Err(ConfigError::new(
                    path("client_secret_env"),
                    "give client_secret_env or client_secret_file, not both",
                ));
            }
            if c.jwks_file.is_some() && c.jwks_uri.is_some() {
                return Err(ConfigError::new(
                    path("jwks_file"),
                    "give jwks_file or jwks_uri, not both",
                ));
            }
            if secret && keys {
                return Err(ConfigError::new(
                    path("jwks_file"),
                    "a client authenticates one way: a secret or keys (private_key_jwt), not both",
                ));
            }
            for (j, other) in si.clients.iter().enumerate().take(i) {
                if other.client_id == c.client_id {
                    return Err(ConfigError::new(
                        path("client_id"),
                        format!("sign_in.clients[{j}] already uses {:?}", c.client_id),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_upstreams(&self) -> Result<(), ConfigError> {
        for (i, up) in self.upstreams.iter().enumerate() {
            let path = |key: &str| format!("upstreams[{i}].{key}");
            let valid_name = (1..=32).contains(&up.name.len())
                && up
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(ConfigError::new(
                    path("name"),
                    format!(
                        "{:?} must be 1-32 characters of letters, digits, `_` and `-`",
                        up.name
                    ),
                ));
            }
            if !matches!(up.url.scheme(), "http" | "https") {
                return Err(ConfigError::new(
                    path("url"),
                    "must be an http:// or https:// URL",
                ));
            }
            if up.timeout.0.is_zero() {
                return Err(ConfigError::new(
                    path("timeout"),
                    "must be longer than zero",
                ));
            }
            let catalog = &up.catalog;
            if !catalog.tools.is_empty() && catalog.credential.is_some() {
                return Err(ConfigError::new(
                    path("catalog"),
                    "give either `tools` (a declared list) or `credential` (list with it), not both",
                ));
            }
            if catalog.refresh.0.is_zero() {
                return Err(ConfigError::new(
                    path("catalog.refresh"),
                    "must be longer than zero",
                ));
            }
            for (j, tool) in catalog.tools.iter().enumerate() {
                let at = |key: &str| format!("upstreams[{i}].catalog.tools[{j}].{key}");
                let exposed = format!("{}_{}", up.name, tool.name);
                if tool.name.is_empty() || !is_valid_tool_name(&exposed) {
                    return Err(ConfigError::new(
                        at("name"),
                        format!(
                            "{exposed:?} (as clients see it) must be 1-64 characters of letters, digits, `_` and `-`"
                        ),
                    ));
                }
                if catalog.tools[..j].iter().any(|t| t.name == tool.name) {
                    return Err(ConfigError::new(
                        at("name"),
                        format!("{:?} is declared twice", tool.name),
                    ));
                }
                if let Some(schema) = &tool.input_schema
                    && schema.get("type").and_then(serde_json::Value::as_str) != Some("object")
                {
                    return Err(ConfigError::new(
                        at("input_schema"),
                        "must be a JSON Schema with type = \"object\" (MCP tools take an object of arguments)",
                    ));
                }
            }
            if up.auth == Some(UpstreamAuth::Exchange) {
                if self.sign_in.mode != SignInMode::Accounts {
                    return Err(ConfigError::new(
                        path("auth"),
                        "\"exchange\" needs sign_in.mode = \"accounts\": a token on a person's behalf needs a person",
                    ));
                }
                if up.resource.is_some() {
                    return Err(ConfigError::new(
                        path("auth"),
                        "an upstream gets either its resource's connection token (`resource`) or Doorman's exchanged token (`auth = \"exchange\"`), not both",
                    ));
                }
                if up
                    .headers
                    .keys()
                    .any(|h| h.eq_ignore_ascii_case("authorization"))
                {
                    return Err(ConfigError::new(
                        path("headers"),
                        "an Authorization header would replace the exchanged token; remove it",
                    ));
                }
                // The token must never be one Doorman itself would accept, nor one another
                // upstream would: its audience is this upstream's alone.
                let audience = up.exchange_audience();
                if audience.trim_end_matches('/') == self.mcp_resource() {
                    return Err(ConfigError::new(
                        path("audience"),
                        "must not be Doorman's own /mcp (the default is the upstream's url): the exchanged token is for the upstream alone",
                    ));
                }
                if let Some(j) = self.upstreams[..i].iter().position(|o| {
                    o.auth == Some(UpstreamAuth::Exchange)
                        && o.exchange_audience().trim_end_matches('/')
                            == audience.trim_end_matches('/')
                }) {
                    return Err(ConfigError::new(
                        path("audience"),
                        format!(
                            "upstreams[{j}] gets tokens for the same audience {audience:?}: one could replay what it receives to the other; give each its own"
                        ),
                    ));
                }
                if let Some(scopes) = &up.scopes
                    && scopes
                        .iter()
                        .any(|sc| sc.is_empty() || sc.contains(char::is_whitespace))
                {
                    return Err(ConfigError::new(
                        path("scopes"),
                        "each scope is one non-empty word",
                    ));
                }
                if let Some(p) = &up.exchange_provider
                    && !self.sign_in.oidc.iter().any(|o| &o.name == p)
                {
                    return Err(ConfigError::new(
                        path("exchange_provider"),
                        format!("no [[sign_in.oidc]] provider is named {p:?}"),
                    ));
                }
            } else if up.audience.is_some() || up.scopes.is_some() || up.exchange_provider.is_some()
            {
                return Err(ConfigError::new(
                    path("audience"),
                    "audience, scopes and exchange_provider are for auth = \"exchange\"",
                ));
            }
            for name in up.headers.keys() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(ConfigError::new(
                        format!("upstreams[{i}].headers.{name}"),
                        "is not a valid HTTP header name",
                    ));
                }
            }
            for (j, other) in self.upstreams.iter().enumerate().take(i) {
                if other.name == up.name {
                    return Err(ConfigError::new(
                        path("name"),
                        format!("upstreams[{j}] already uses the name {:?}", up.name),
                    ));
                }
                // Clients see `{upstream}_{tool}`: with upstreams `a` and `a_b`, the tool `a_b_c`
                // could belong to either, so names whose namespaces overlap are refused.
                let (short, long) = if other.name.len() < up.name.len() {
                    (&other.name, &up.name)
                } else {
                    (&up.name, &other.name)
                };
                if long.starts_with(&format!("{short}_")) {
                    return Err(ConfigError::new(
                        path("name"),
                        format!(
                            "upstreams {:?} and {:?} would give colliding tool names ({short}_… is ambiguous)",
                            other.name, up.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Doorman's issuer identifier: the public URL without a trailing slash.
    pub fn issuer(&self) -> String {
        self.public_url().as_str().trim_end_matches('/').to_owned()
    }

    /// The canonical URL of the MCP endpoint: the protected resource (RFC 9728, RFC 8707).
    pub fn mcp_resource(&self) -> String {
        format!("{}/mcp", self.issuer())
    }

    /// The URL clients use to reach Doorman (defaults to `http://{listen}`).
    pub fn public_url(&self) -> Url {
        self.server.public_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("http://{}", self.server.listen))
                .expect("a socket address forms a URL")
        })
    }

    /// The key ring that seals secrets at rest (signing keys, TOTP seeds; later resource tokens).
    pub fn key_ring_path(&self) -> PathBuf {
        self.server.data_dir.join("keyring")
    }

    /// The database URL (defaults to SQLite inside the data directory).
    pub fn database_url(&self) -> String {
        self.server.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.server.data_dir.join("doorman.db").display()
            )
        })
    }
}

/// The parser's message on one line, with the line number it points at.
fn describe(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests;
