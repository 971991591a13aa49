use std::collections::BTreeMap;

use super::*;
use crate::config::presets::{RequestBody, TokenAuth};

const REDIRECT: &str = "https://doorman.example.com/connect/callback";
const STATE: &str = "st4te-value";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn resolve_toml(text: &str) -> Vec<ResolvedResource> {
    let config = Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
    resolve_all(&config).unwrap()
}

/// The snippet an operator writes for a preset.
fn preset_snippet(preset: &str, extra: &str) -> String {
    format!(
        "[[resources]]\nname = \"{preset}\"\npreset = \"{preset}\"\nclient_id = \"x\"\nclient_secret_env = \"GH\"\n{extra}"
    )
}

/// The query of a URL as a map; a parameter given twice fails the test.
fn query(url: &Url) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        assert!(
            map.insert(k.to_string(), v.to_string()).is_none(),
            "{k} twice in {url}"
        );
    }
    map
}

struct Expected {
    preset: &'static str,
    /// Keys added to the snippet (Slack has no default scopes).
    extra: &'static str,
    host: &'static str,
    path: &'static str,
    /// The scope parameter's name and value, if any.
    scope: Option<(&'static str, &'static str)>,
    pkce: bool,
    params: &'static [(&'static str, &'static str)],
}

const EXPECTED: &[Expected] = &[
    Expected {
        preset: "github",
        extra: "",
        host: "github.com",
        path: "/login/oauth/authorize",
        scope: Some(("scope", "read:user")),
        pkce: true,
        params: &[],
    },
    Expected {
        preset: "google",
        extra: "scopes = [\"openid\", \"email\", \"https://www.googleapis.com/auth/drive.readonly\"]\n",
        host: "accounts.google.com",
        path: "/o/oauth2/v2/auth",
        scope: Some((
            "scope",
            "openid email https://www.googleapis.com/auth/drive.readonly",
        )),
        pkce: true,
        params: &[("access_type", "offline"), ("prompt", "consent")],
    },
    Expected {
        preset: "linear",
        extra: "scopes = [\"read\", \"write\"]\n",
        host: "linear.app",
        path: "/oauth/authorize",
        scope: Some(("scope", "read,write")),
        pkce: true,
        params: &[],
    },
    Expected {
        preset: "slack",
        extra: "scopes = [\"search:read\", \"channels:history\"]\n",
        host: "slack.com",
        path: "/oauth/v2/authorize",
        scope: Some(("user_scope", "search:read,channels:history")),
        pkce: false,
        params: &[],
    },
    Expected {
        preset: "atlassian",
        extra: "",
        host: "auth.atlassian.com",
        path: "/authorize",
        scope: Some(("scope", "read:me offline_access")),
        pkce: false,
        params: &[("audience", "api.atlassian.com"), ("prompt", "consent")],
    },
    Expected {
        preset: "notion",
        extra: "",
        host: "api.notion.com",
        path: "/v1/oauth/authorize",
        scope: None,
        pkce: false,
        params: &[("owner", "user")],
    },
];

#[test]
fn every_preset_parses_and_builds_the_documented_authorization_url() {
    assert_eq!(EXPECTED.len(), Preset::ALL.len());
    for e in EXPECTED {
        let r = resolve_toml(&preset_snippet(e.preset, e.extra)).remove(0);
        let preset = r.preset.expect("preset recorded");
        assert_eq!(preset.name(), e.preset);
        assert_eq!(r.display_name, preset.spec().display_name);
        assert_eq!(r.binding, Binding::Session);
        let oauth = r.oauth.as_ref().expect("a client");
        assert_eq!(oauth.pkce, e.pkce, "{}", e.preset);
        let challenge = oauth.pkce.then_some(CHALLENGE);
        let url = authorization_url(&r, REDIRECT, STATE, challenge, &r.scopes)
            .unwrap_or_else(|| panic!("{}: no authorization URL", e.preset));
        assert_eq!(url.scheme(), "https", "{url}");
        assert_eq!(url.host_str(), Some(e.host), "{url}");
        assert_eq!(url.path(), e.path, "{url}");

        let mut want: BTreeMap<String, String> = [
            ("response_type", "code"),
            ("client_id", "x"),
            ("redirect_uri", REDIRECT),
            ("state", STATE),
        ]
        .into_iter()
        .chain(e.scope)
        .chain(e.params.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if e.pkce {
            want.insert("code_challenge".into(), CHALLENGE.into());
            want.insert("code_challenge_method".into(), "S256".into());
        }
        assert_eq!(query(&url), want, "{}: {url}", e.preset);
    }
}

#[test]
fn presets_carry_their_documentation_and_quirks() {
    for preset in Preset::ALL {
        let spec = preset.spec();
        let docs = Url::parse(spec.docs).unwrap();
        assert_eq!(docs.scheme(), "https", "{}", spec.name);
        for url in [Some(spec.authorization_endpoint), Some(spec.token_endpoint)]
            .into_iter()
            .chain([spec.revocation_endpoint, spec.userinfo_endpoint])
            .flatten()
        {
            assert!(url.starts_with("https://"), "{}: {url}", spec.name);
            Url::parse(url).unwrap();
        }
        // Every preset's defaults validate on their own (Slack needs scopes).
        let extra = if spec.quirks.scopes_required {
            "scopes = [\"search:read\"]\n"
        } else {
            ""
        };
        let r = resolve_toml(&preset_snippet(spec.name, extra)).remove(0);
        assert_eq!(r.docs, Some(spec.docs));
        assert!(r.identity.is_some(), "{}: identity", spec.name);
    }
    let github = Preset::Github.spec();
    assert!(github.quirks.accept_json);
    assert_eq!(github.quirks.token_auth, TokenAuth::ClientSecretPost);
    let slack = Preset::Slack.spec();
    assert_eq!(slack.quirks.token_response_root, Some("authed_user"));
    assert_eq!(slack.quirks.token_auth, TokenAuth::ClientSecretBasic);
    let notion = Preset::Notion.spec();
    assert_eq!(notion.quirks.token_auth, TokenAuth::ClientSecretBasic);
    assert_eq!(notion.quirks.request_body, RequestBody::Json);
    assert_eq!(
        Preset::Atlassian.spec().quirks.request_body,
        RequestBody::Json
    );
    assert_eq!(Preset::Linear.spec().quirks.scope_separator, ",");

    let r = resolve_toml(&preset_snippet("github", "")).remove(0);
    assert_eq!(
        r.identity,
        Some(Identity::Api {
            url: Url::parse("https://api.github.com/user").unwrap(),
            field: "login".into(),
            graphql: None,
        })
    );
    let r = resolve_toml(&preset_snippet("google", "")).remove(0);
    assert_eq!(r.identity, Some(Identity::UserinfoClaim("email".into())));
    let oauth = r.oauth.unwrap();
    assert_eq!(
        oauth.endpoints.revocation.unwrap().as_str(),
        "https://oauth2.googleapis.com/revoke"
    );
    assert_eq!(
        oauth.endpoints.token.unwrap().as_str(),
        "https://oauth2.googleapis.com/token"
    );
}

#[test]
fn explicit_keys_override_the_preset() {
    let r = resolve_toml(&preset_snippet(
        "google",
        r#"display_name = "Google Drive"
scopes = ["openid", "email", "https://www.googleapis.com/auth/drive.file"]
authorization_params = { prompt = "select_account consent", hd = "corp.example" }
token_endpoint = "https://oauth2.example.com/token"
token_auth = "client_secret_basic"
pkce = false
identity = { userinfo_claim = "sub" }
binding = "user"
max_age = "7d"
token_header = "X-Goog-Token"
"#,
    ))
    .remove(0);
    assert_eq!(r.display_name, "Google Drive");
    assert_eq!(r.scopes.len(), 3);
    assert_eq!(r.binding, Binding::User);
    assert_eq!(r.max_age, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(r.quirks.token_auth, TokenAuth::ClientSecretBasic);
    assert_eq!(r.identity, Some(Identity::UserinfoClaim("sub".into())));
    assert_eq!(r.token_header.name.as_str(), "x-goog-token");
    assert_eq!(&*r.token_header.value("t0k"), "t0k");
    let oauth = r.oauth.as_ref().unwrap();
    assert!(!oauth.pkce);
    assert_eq!(
        oauth.endpoints.token.as_ref().unwrap().as_str(),
        "https://oauth2.example.com/token"
    );
    // The preset's authorization endpoint is kept.
    assert_eq!(
        oauth.endpoints.authorization.as_ref().unwrap().as_str(),
        "https://accounts.google.com/o/oauth2/v2/auth"
    );
    let url = authorization_url(&r, REDIRECT, STATE, None, &r.scopes).unwrap();
    let q = query(&url);
    assert_eq!(q["prompt"], "select_account consent");
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["hd"], "corp.example");
    assert!(!q.contains_key("code_challenge"));
}

#[test]
fn a_custom_resource_with_explicit_endpoints() {
    let r = resolve_toml(
        r#"[[resources]]
name = "tracker"
authorization_endpoint = "https://auth.tracker.example/oauth/authorize?tenant=acme"
token_endpoint = "https://auth.tracker.example/oauth/token"
revocation_endpoint = "https://auth.tracker.example/oauth/revoke"
userinfo_endpoint = "https://auth.tracker.example/userinfo"
client_id = "doorman"
client_secret_file = "/run/secrets/tracker"
scopes = ["issues:read", "issues:write"]
"#,
    )
    .remove(0);
    assert_eq!(r.display_name, "tracker");
    assert_eq!(r.docs, None);
    assert_eq!(r.quirks, Quirks::STANDARD);
    assert_eq!(r.identity, Some(Identity::UserinfoClaim("email".into())));
    assert_eq!(r.token_header, TokenHeader::default());
    assert_eq!(&*r.token_header.value("t0k"), "Bearer t0k");
    let oauth = r.oauth.as_ref().unwrap();
    assert!(oauth.pkce, "PKCE is on by default");
    assert!(matches!(
        oauth.client_secret,
        Some(SecretOrValue::File { .. })
    ));
    let url = authorization_url(&r, REDIRECT, STATE, Some(CHALLENGE), &r.scopes).unwrap();
    assert_eq!(url.path(), "/oauth/authorize");
    let q = query(&url);
    // The endpoint's own query is kept; scopes are space-separated by default.
    assert_eq!(q["tenant"], "acme");
    assert_eq!(q["scope"], "issues:read issues:write");
    assert_eq!(q["code_challenge_method"], "S256");
    // A wider set of scopes (after insufficient_scope) is what the caller passes.
    let more = vec!["issues:read".to_owned(), "admin".to_owned()];
    let url = authorization_url(&r, REDIRECT, STATE, Some(CHALLENGE), &more).unwrap();
    assert_eq!(query(&url)["scope"], "issues:read admin");
}

#[test]
fn an_issuer_is_recorded_and_its_endpoints_come_later() {
    let r = resolve_toml(
        r#"[[resources]]
name = "idp"
issuer = "https://login.example.com"
client_id = "doorman"
client_secret_env = "IDP_SECRET"
identity = { api = "https://api.example.com/graphql", field = "data.viewer.email", graphql = "{ viewer { email } }" }
"#,
    )
    .remove(0);
    let oauth = r.oauth.as_ref().unwrap();
    assert_eq!(
        oauth.issuer.as_ref().unwrap().as_str(),
        "https://login.example.com/"
    );
    assert_eq!(oauth.endpoints, Endpoints::default());
    assert!(authorization_url(&r, REDIRECT, STATE, None, &[]).is_none());
    assert!(matches!(
        r.identity,
        Some(Identity::Api {
            graphql: Some(_),
            ..
        })
    ));
}

#[test]
fn a_shared_resource_needs_no_client() {
    let rs = resolve_toml(
        r#"[[resources]]
name = "gh-bot"
preset = "github"
binding = "shared"
shared_token_env = "GH_BOT_TOKEN"

[[upstreams]]
name = "github"
url = "https://api.githubcopilot.com/mcp/"
resource = "gh-bot"
"#,
    );
    let r = &rs[0];
    assert_eq!(r.binding, Binding::Shared);
    assert!(r.oauth.is_none());
    assert!(matches!(r.shared_token, Some(SecretOrValue::Env { .. })));
    assert!(authorization_url(r, REDIRECT, STATE, None, &r.scopes).is_none());
}

#[test]
fn the_redirect_uri_is_the_connect_callback() {
    let config =
        Config::from_toml("[server]\npublic_url = \"https://doorman.example.com/\"\n").unwrap();
    assert_eq!(redirect_uri(&config), REDIRECT);
}
