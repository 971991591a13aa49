use super::*;

const EXAMPLE: &str = include_str!("../../../../doorman.example.toml");

fn error_of(text: &str) -> ConfigError {
    match Config::from_toml(text).and_then(|c| c.validate().map(|_| c)) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn the_example_file_parses_and_sets_every_key() {
    let config = Config::from_toml(EXAMPLE).expect("doorman.example.toml must parse");
    config
        .validate()
        .expect("doorman.example.toml must validate");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8421");
    assert_eq!(config.server.session_idle_timeout.to_string(), "30m");
    assert_eq!(config.upstreams.len(), 2);
    assert_eq!(
        config.upstreams[0].timeout.0,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(config.upstreams[0].resource, None);
    assert_eq!(config.upstreams[1].resource.as_deref(), Some("github"));
    // The example documents the defaults: parsing it must give the same server settings as none.
    let defaults = Config::default();
    assert_eq!(config.server.listen, defaults.server.listen);
    assert_eq!(config.server.data_dir, defaults.server.data_dir);
    assert_eq!(
        config.server.max_request_bytes,
        defaults.server.max_request_bytes
    );
    assert_eq!(
        config.server.session_idle_timeout,
        defaults.server.session_idle_timeout
    );
    assert_eq!(config.server.poll_interval, defaults.server.poll_interval);
    assert_eq!(
        config.server.header_read_timeout,
        defaults.server.header_read_timeout
    );
    assert_eq!(
        config.server.body_read_timeout,
        defaults.server.body_read_timeout
    );
    assert_eq!(
        config.server.max_sessions_per_person,
        defaults.server.max_sessions_per_person
    );
    assert_eq!(config.server.purge_interval, defaults.server.purge_interval);
    let (si, d) = (&config.sign_in, &defaults.sign_in);
    assert_eq!(si.mode, SignInMode::Accounts);
    assert_eq!(si.mode, d.mode);
    assert_eq!(si.development, d.development);
    assert_eq!(si.access_token_lifetime, d.access_token_lifetime);
    assert_eq!(si.sign_in_lifetime, d.sign_in_lifetime);
    assert_eq!(si.code_lifetime, d.code_lifetime);
    assert_eq!(si.registration_expiry, d.registration_expiry);
    assert_eq!(si.registrations_per_hour, d.registrations_per_hour);
    assert_eq!(si.max_failed_sign_ins, d.max_failed_sign_ins);
    assert_eq!(si.lockout, d.lockout);
    assert_eq!(si.local_accounts, d.local_accounts);
    assert_eq!(si.oidc.len(), 1);
    let corp = &si.oidc[0];
    assert_eq!(corp.claims.groups, "groups");
    assert_eq!(corp.recheck_interval, ConfigDuration::secs(3600));
    assert!(corp.authorization_params.is_empty());
    assert_eq!(si.clients.len(), 2);
    assert_eq!(
        si.clients[0].client_secret_env.as_deref(),
        Some("INTERNAL_AGENT_SECRET")
    );
    assert_eq!(si.clients[0].grant_types, default_client_grant_types());
    assert!(!si.clients[0].is_service() && si.clients[1].is_service());
    assert_eq!(config.policies[0].clients, ["ci-deploy"]);
    // Resources: a preset and a custom one; the values shown as defaults are the defaults.
    assert_eq!(config.resources.len(), 2);
    let (github, tracker) = (&config.resources[0], &config.resources[1]);
    assert_eq!(github.preset, Some(crate::config::presets::Preset::Github));
    assert_eq!(github.binding, Binding::default());
    assert_eq!(github.max_age, Some(ConfigDuration::secs(30 * 86_400)));
    assert_eq!(tracker.binding, Binding::User);
    assert!(tracker.issuer.is_none() && tracker.shared_token_env.is_none());
    let resolved = crate::config::resolved::resolve_all(&config).unwrap();
    let (github, tracker) = (&resolved[0], &resolved[1]);
    assert_eq!(github.display_name, "GitHub");
    assert!(github.oauth.as_ref().unwrap().pkce);
    let tracker_oauth = tracker.oauth.as_ref().unwrap();
    assert!(tracker_oauth.pkce, "pkce defaults to true");
    assert_eq!(
        tracker.quirks.token_auth,
        crate::config::presets::Quirks::STANDARD.token_auth
    );
    assert_eq!(
        tracker.token_header,
        crate::config::resolved::TokenHeader::default()
    );
}

#[test]
fn sign_in_settings_are_checked() {
    let e = error_of("[sign_in]\naccess_token_lifetime = \"0s\"\n");
    assert_eq!(e.path, "sign_in.access_token_lifetime");
    let e = error_of(
        "[[sign_in.clients]]\nclient_id = \"https://app.example/client.json\"\nredirect_uris = [\"https://app.example/cb\"]\n",
    );
    assert_eq!(e.path, "sign_in.clients[0].client_id");
    let e = error_of("[[sign_in.clients]]\nclient_id = \"a\"\nredirect_uris = []\n");
    assert_eq!(e.path, "sign_in.clients[0].redirect_uris");
    let e = error_of(
        "[[sign_in.clients]]\nclient_id = \"a\"\nredirect_uris = [\"https://a.example/cb\"]\nclient_secret_env = \"A\"\nclient_secret_file = \"/x\"\n",
    );
    assert_eq!(e.path, "sign_in.clients[0].client_secret_env");
    let e = error_of("[sign_in]\nmode = \"sometimes\"\n");
    assert_eq!(e.path, "sign_in.mode");
}

#[test]
fn no_config_means_loopback_and_embedded_sqlite() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.public_url().as_str(), "http://127.0.0.1:8421/");
    assert_eq!(config.database_url(), "sqlite://./doorman-data/doorman.db");
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let e = error_of("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n");
    assert_eq!(e.path, "server.listen_port");
    assert!(e.message.contains("unknown field"), "{e}");

    let e = error_of(
        "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\ntimeot = \"1s\"\n",
    );
    assert_eq!(e.path, "upstreams[0].timeot");
    assert!(e.message.contains("unknown field"), "{e}");

    let e = error_of("[surver]\n");
    assert!(e.message.contains("surver"), "{e}");
}

#[test]
fn wrong_values_name_the_key() {
    let e = error_of(
        "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\n[[upstreams]]\nname = \"b\"\nurl = \"http://127.0.0.1:1/mcp\"\ntimeout = \"10x\"\n",
    );
    assert_eq!(e.path, "upstreams[1].timeout");
    assert!(e.message.contains("invalid duration \"10x\""), "{e}");

    let e = error_of("[server]\nsession_idle_timeout = 30\n");
    assert_eq!(e.path, "server.session_idle_timeout");

    let e = error_of("[server]\nlisten = \"nowhere\"\n");
    assert_eq!(e.path, "server.listen");

    let e = error_of("[server]\nlog_format = \"xml\"\n");
    assert_eq!(e.path, "server.log_format");

    let e = error_of("[sign_in]\nmode = \"sometimes\"\n");
    assert_eq!(e.path, "sign_in.mode");

    let e = error_of("[[upstreams]]\nname = \"a\"\nurl = \"ftp://127.0.0.1/mcp\"\n");
    assert_eq!(e.path, "upstreams[0].url");

    let e = error_of("[[upstreams]]\nname = \"a b\"\nurl = \"http://127.0.0.1/mcp\"\n");
    assert_eq!(e.path, "upstreams[0].name");

    let e = error_of(
        "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1/mcp\"\nheaders = { \"bad header\" = \"x\" }\n",
    );
    assert_eq!(e.path, "upstreams[0].headers.bad header");

    let e = error_of("[server]\nallowed_origins = [\"not an origin\"]\n");
    assert_eq!(e.path, "server.allowed_origins[0]");
}

#[test]
fn colliding_upstream_names_are_refused_naming_both() {
    let two = |a: &str, b: &str| {
        format!(
            "[[upstreams]]\nname = \"{a}\"\nurl = \"http://127.0.0.1:1/mcp\"\n[[upstreams]]\nname = \"{b}\"\nurl = \"http://127.0.0.1:2/mcp\"\n"
        )
    };
    let e = error_of(&two("git", "git_hub"));
    assert_eq!(e.path, "upstreams[1].name");
    assert!(
        e.message.contains("\"git\"") && e.message.contains("\"git_hub\""),
        "{e}"
    );

    let e = error_of(&two("docs", "docs"));
    assert!(e.message.contains("already uses"), "{e}");

    // Names that merely share a prefix without the separator are fine.
    let ok = Config::from_toml(&two("git", "github")).unwrap();
    ok.validate().unwrap();
}

#[test]
fn local_mode_refuses_a_non_loopback_address() {
    let e = error_of("[server]\nlisten = \"0.0.0.0:8421\"\n[sign_in]\nmode = \"local\"\n");
    assert_eq!(e.path, "sign_in.mode");
    assert!(e.message.contains("loopback"), "{e}");
    let ok = Config::from_toml("[server]\nlisten = \"[::1]:8421\"\n[sign_in]\nmode = \"local\"\n")
        .unwrap();
    ok.validate().unwrap();
    // Accounts mode (the default) signs people in, so any address is fine, behind https.
    let ok = Config::from_toml(
        "[server]\nlisten = \"0.0.0.0:8421\"\npublic_url = \"https://doorman.example.com\"\n",
    )
    .unwrap();
    ok.validate().unwrap();
    let e = error_of("[server]\nlisten = \"0.0.0.0:8421\"\n");
    assert_eq!(e.path, "server.public_url");
    assert!(e.message.contains("must be https"), "{e}");
}

#[test]
fn environment_overrides_server_keys() {
    let mut config = Config::default();
    config
        .apply_env(|k| match k {
            "DOORMAN_LISTEN" => Some("127.0.0.1:9999".into()),
            "DOORMAN_DATABASE_URL" => Some("postgres://db/doorman".into()),
            "DOORMAN_LOG_FORMAT" => Some("json".into()),
            "DOORMAN_SIGN_IN_MODE" => Some("local".into()),
            _ => None,
        })
        .unwrap();
    assert_eq!(config.server.listen.port(), 9999);
    assert_eq!(config.database_url(), "postgres://db/doorman");
    assert_eq!(config.sign_in.mode, SignInMode::Local);
    assert_eq!(config.server.log_format, LogFormat::Json);

    let err = Config::default()
        .apply_env(|k| (k == "DOORMAN_LOG_FORMAT").then(|| "yaml".into()))
        .unwrap_err();
    assert_eq!(err.path, "DOORMAN_LOG_FORMAT");
}

#[test]
fn secrets_come_from_env_or_file_and_errors_never_show_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "s3cret-value\n").unwrap();
    let from_file = SecretOrValue::File { file: file.clone() };
    assert_eq!(from_file.resolve().unwrap(), "s3cret-value");
    let missing = SecretOrValue::Env {
        env: "DOORMAN_TEST_SURELY_UNSET_VAR".into(),
    };
    let err = missing.resolve().unwrap_err();
    assert!(err.contains("DOORMAN_TEST_SURELY_UNSET_VAR"), "{err}");
}

#[test]
fn tool_names_follow_the_mcp_rule() {
    assert!(is_valid_tool_name("everything_echo"));
    assert!(is_valid_tool_name("a-b_C9"));
    assert!(!is_valid_tool_name(""));
    assert!(!is_valid_tool_name("has space"));
    assert!(!is_valid_tool_name("dotted.name"));
    assert!(!is_valid_tool_name(&"x".repeat(65)));
}

#[test]
fn oidc_providers_are_checked() {
    let provider = |extra: &str| {
        format!(
            "[[sign_in.oidc]]\nname = \"corp\"\nissuer = \"https://idp.example\"\nclient_id = \"d\"\nclient_secret_env = \"S\"\n{extra}"
        )
    };
    Config::from_toml(&provider(""))
        .unwrap()
        .validate()
        .unwrap();
    let e = error_of(&provider("scopes = [\"email\"]\n"));
    assert_eq!(e.path, "sign_in.oidc[0].scopes");
    let e = error_of(&provider("authorization_params = { nonce = \"x\" }\n"));
    assert_eq!(e.path, "sign_in.oidc[0].authorization_params.nonce");
    let e = error_of(&provider("claim = {}\n"));
    assert_eq!(e.path, "sign_in.oidc[0].claim");
    let e = error_of(&provider("").replace("https://idp.example", "http://idp.example"));
    assert_eq!(e.path, "sign_in.oidc[0].issuer");
    let e = error_of(&provider("").replace("client_secret_env = \"S\"\n", ""));
    assert_eq!(e.path, "sign_in.oidc[0].client_secret_env");
    let e = error_of(&format!("{}{}", provider(""), provider("")));
    assert_eq!(e.path, "sign_in.oidc[1].name");
    let e = error_of("[sign_in]\nlocal_accounts = false\n");
    assert_eq!(e.path, "sign_in.local_accounts");
}

/// A valid resource with explicit endpoints, plus `extra` keys.
fn resource(extra: &str) -> String {
    format!(
        "[[resources]]\nname = \"tracker\"\nauthorization_endpoint = \"https://auth.tracker.example/authorize\"\ntoken_endpoint = \"https://auth.tracker.example/token\"\nclient_id = \"doorman\"\nclient_secret_env = \"TRACKER_SECRET\"\n{extra}"
    )
}

#[test]
fn resources_parse_from_presets_and_explicit_endpoints() {
    let text = "[[resources]]\nname = \"github\"\npreset = \"github\"\nclient_id = \"x\"\nclient_secret_env = \"GH\"\n";
    let config = Config::from_toml(text).unwrap();
    config.validate().unwrap();
    assert_eq!(config.resources.len(), 1);
    assert_eq!(config.resources[0].binding, Binding::Session);
    let config = Config::from_toml(&resource("binding = \"call\"\nmax_age = \"1h\"\n")).unwrap();
    config.validate().unwrap();
    assert_eq!(config.resources[0].binding, Binding::Call);
    assert_eq!(
        config.resources[0].max_age,
        Some(ConfigDuration::secs(3600))
    );
}

#[test]
fn resource_errors_name_the_key() {
    let cases: &[(&str, String)] = &[
        // The presets are a closed list.
        (
            "resources[0].preset",
            "[[resources]]\nname = \"gl\"\npreset = \"gitlab\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\n".into(),
        ),
        // Nowhere to authorize: no preset, no issuer, no endpoints.
        (
            "resources[0].authorization_endpoint",
            "[[resources]]\nname = \"r\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\n".into(),
        ),
        (
            "resources[0].token_endpoint",
            "[[resources]]\nname = \"r\"\nauthorization_endpoint = \"https://a.example/authorize\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\n".into(),
        ),
        (
            "resources[0].client_secret_env",
            resource("client_secret_file = \"/run/secrets/tracker\"\n"),
        ),
        ("resources[0].name", resource("").replace("\"tracker\"", "\"has space\"")),
        ("resources[0].name", resource("").replace("\"tracker\"", &format!("{:?}", "x".repeat(33)))),
        ("resources[1].name", format!("{}{}", resource(""), resource(""))),
        (
            "upstreams[0].resource",
            format!(
                "{}[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\nresource = \"trackr\"\n",
                resource("")
            ),
        ),
        // A shared binding needs the operator's credential.
        ("resources[0].binding", resource("binding = \"shared\"\n")),
        (
            "resources[0].shared_token_env",
            resource("binding = \"shared\"\nshared_token_env = \"A\"\nshared_token_file = \"/b\"\n"),
        ),
        ("resources[0].shared_token_env", resource("shared_token_env = \"A\"\n")),
        ("resources[0].max_age", resource("max_age = \"0s\"\n")),
        ("resources[0].max_age", resource("max_age = \"soon\"\n")),
        ("resources[0].binding", resource("binding = \"forever\"\n")),
        ("resources[0].client_id", resource("").replace("client_id = \"doorman\"\n", "")),
        ("resources[0].client_id", resource("").replace("\"doorman\"", "\"\"")),
        ("resources[0].scopes[1]", resource("scopes = [\"read\", \"write admin\"]\n")),
        ("resources[0].authorization_params.state", resource("authorization_params = { state = \"x\" }\n")),
        (
            "resources[0].token_endpoint",
            resource("").replace("https://auth.tracker.example/token", "http://auth.tracker.example/token"),
        ),
        ("resources[0].token_header", resource("token_header = \"bad header\"\n")),
        ("resources[0].token_header", resource("token_header = \"Mcp-Session-Id\"\n")),
        ("resources[0].token_auth", resource("token_auth = \"private_key_jwt\"\n")),
        (
            "resources[0].pkce",
            resource("pkce = false\n").replace("client_secret_env = \"TRACKER_SECRET\"\n", ""),
        ),
        ("resources[0].identity", resource("identity = {}\n")),
        (
            "resources[0].identity",
            resource("identity = { userinfo_claim = \"email\", token_field = \"user\" }\n"),
        ),
        ("resources[0].identity.field", resource("identity = { api = \"https://api.tracker.example/me\" }\n")),
        ("resources[0].identity.field", resource("identity = { token_field = \"a\", field = \"b\" }\n")),
        // No userinfo endpoint and no issuer to discover one.
        ("resources[0].identity.userinfo_claim", resource("identity = { userinfo_claim = \"email\" }\n")),
        ("resources[0].identity.colour", resource("identity = { colour = \"blue\" }\n")),
        ("resources[0].client_secret", resource("client_secret = \"inline\"\n")),
        // Slack refuses an authorization without scopes.
        (
            "resources[0].scopes",
            "[[resources]]\nname = \"slack\"\npreset = \"slack\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\n".into(),
        ),
        (
            "resources[0].authorization_params.user_scope",
            "[[resources]]\nname = \"slack\"\npreset = \"slack\"\nclient_id = \"x\"\nclient_secret_env = \"S\"\nscopes = [\"search:read\"]\nauthorization_params = { user_scope = \"x\" }\n".into(),
        ),
    ];
    for (path, text) in cases {
        let e = error_of(text);
        assert_eq!(&e.path, path, "{e}\n{text}");
    }
    let e = error_of(&format!("{}{}", resource(""), resource("")));
    assert!(e.message.contains("resources[0] already uses"), "{e}");
    let e = error_of(&resource("binding = \"shared\"\n"));
    assert!(e.message.contains("shared_token_env"), "{e}");
}

#[test]
fn a_shared_resource_may_go_without_a_client_but_not_half_of_one() {
    let shared = "[[resources]]\nname = \"bot\"\nbinding = \"shared\"\nshared_token_file = \"/run/secrets/bot\"\n";
    Config::from_toml(shared).unwrap().validate().unwrap();
    let e = error_of(&format!("{shared}client_secret_env = \"S\"\n"));
    assert_eq!(e.path, "resources[0].client_secret_env");
    assert!(e.message.contains("needs client_id"), "{e}");
}

#[test]
fn plain_http_resources_only_in_development() {
    let text = resource("").replace("https://", "http://");
    let e = error_of(&text);
    assert_eq!(e.path, "resources[0].authorization_endpoint");
    let dev = format!("[sign_in]\ndevelopment = true\n{text}");
    Config::from_toml(&dev).unwrap().validate().unwrap();
}

#[test]
fn policies_match_tool_globs_and_are_checked() {
    assert!(glob_matches("notes_*", "notes_write_note"));
    assert!(glob_matches("*_delete_*", "github_delete_repo"));
    assert!(glob_matches("notes_?ead", "notes_read"));
    assert!(!glob_matches("notes_*", "wiki_notes_read"));
    assert!(!glob_matches("notes_read", "notes_read_all"));
    assert!(glob_matches("*", ""));
    let config = Config::from_toml(EXAMPLE).unwrap();
    let p = &config.policies[0];
    assert!(p.matches("github_delete_repo") && !p.matches("github_list_repos"));
    assert_eq!(p.binding, Some(Binding::Call));

    let e = error_of("[[policies]]\ntools = []\n");
    assert_eq!(e.path, "policies[0].tools");
    let e = error_of("[[policies]]\ntools = [\"a_*\"]\nmax_age = \"0s\"\n");
    assert_eq!(e.path, "policies[0].max_age");
    let e = error_of("[[policies]]\ntools = [\"a_*\"]\nbinding = \"shared\"\n");
    assert_eq!(e.path, "policies[0].binding");
    let e = error_of("[audit]\nretention = \"0s\"\n");
    assert_eq!(e.path, "audit.retention");
    let e = error_of("[access]\ndefault = \"maybe\"\n");
    assert!(e.to_string().contains("default"), "{e}");
    let e = error_of("[[policies]]\ntools = [\"a_*\"]\ngroups = [\"x\"]\n");
    assert!(e.to_string().contains("groups"), "{e}");
}

#[test]
fn resources_need_people_and_the_doorman_name_is_reserved() {
    let e = error_of(
        "[sign_in]\nmode = \"local\"\n[[resources]]\nname = \"r\"\nbinding = \"shared\"\nshared_token_env = \"X\"\n",
    );
    assert_eq!(e.path, "resources");
    let e = error_of("[[upstreams]]\nname = \"doorman\"\nurl = \"http://127.0.0.1:1/mcp\"\n");
    assert_eq!(e.path, "upstreams[0].name");
}

#[test]
fn maintenance_intervals_have_defaults_and_bounds() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(
        config.server.poll_interval.0,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(
        config.server.purge_interval.0,
        std::time::Duration::from_secs(60)
    );
    let config =
        Config::from_toml("[server]\npoll_interval = \"250ms\"\npurge_interval = \"1s\"\n")
            .unwrap();
    config.validate().unwrap();
    for (toml, path) in [
        (
            "[server]\npoll_interval = \"50ms\"\n",
            "server.poll_interval",
        ),
        ("[server]\npoll_interval = \"2h\"\n", "server.poll_interval"),
        (
            "[server]\npurge_interval = \"500ms\"\n",
            "server.purge_interval",
        ),
        (
            "[server]\npurge_interval = \"1d\"\n",
            "server.purge_interval",
        ),
    ] {
        assert_eq!(error_of(toml).path, path, "{toml}");
    }
}

#[test]
fn an_upstream_catalog_is_checked_where_it_is_written() {
    let up = "[[upstreams]]\nname = \"gh\"\nurl = \"http://127.0.0.1:9/mcp\"\n";
    let ok = Config::from_toml(&format!(
        "{up}[[upstreams.catalog.tools]]\nname = \"create_issue\"\ndescription = \"Open an issue\"\ninput_schema = {{ type = \"object\", properties = {{ repo = {{ type = \"string\" }} }} }}\n"
    ))
    .unwrap();
    ok.validate().unwrap();
    let tool = &ok.upstreams[0].catalog.tools[0];
    assert_eq!(
        tool.input_schema.as_ref().unwrap()["properties"]["repo"]["type"],
        "string"
    );
    assert_eq!(
        ok.upstreams[0].catalog.refresh.0,
        std::time::Duration::from_secs(300)
    );

    let both = error_of(&format!(
        "{up}[upstreams.catalog]\ncredential = {{ env = \"X\" }}\n[[upstreams.catalog.tools]]\nname = \"a\"\n"
    ));
    assert_eq!(both.path, "upstreams[0].catalog");
    let bad_name = error_of(&format!(
        "{up}[[upstreams.catalog.tools]]\nname = \"no spaces\"\n"
    ));
    assert_eq!(bad_name.path, "upstreams[0].catalog.tools[0].name");
    let twice = error_of(&format!(
        "{up}[[upstreams.catalog.tools]]\nname = \"a\"\n[[upstreams.catalog.tools]]\nname = \"a\"\n"
    ));
    assert_eq!(twice.path, "upstreams[0].catalog.tools[1].name");
    let schema = error_of(&format!(
        "{up}[[upstreams.catalog.tools]]\nname = \"a\"\ninput_schema = {{ type = \"string\" }}\n"
    ));
    assert_eq!(schema.path, "upstreams[0].catalog.tools[0].input_schema");
    let zero = error_of(&format!("{up}[upstreams.catalog]\nrefresh = \"0s\"\n"));
    assert_eq!(zero.path, "upstreams[0].catalog.refresh");
    let unknown = error_of(&format!("{up}[upstreams.catalog]\nlist = []\n"));
    assert!(
        unknown.path.starts_with("upstreams[0].catalog"),
        "{unknown:?}"
    );
}

#[test]
fn the_prompt_form_is_chosen_per_resource_and_checked_against_the_binding() {
    let config = Config::from_toml(&resource("")).unwrap();
    config.validate().unwrap();
    assert_eq!(config.resources[0].prompt, PromptChoice::Auto);
    for (word, choice) in [
        ("elicitation", PromptChoice::Elicitation),
        ("link", PromptChoice::Link),
        ("reauthorize", PromptChoice::Reauthorize),
    ] {
        let config = Config::from_toml(&resource(&format!("prompt = \"{word}\"\n"))).unwrap();
        config.validate().unwrap();
        assert_eq!(config.resources[0].prompt, choice);
    }
    // The cascade cannot bring a one-call connection back to its call.
    let e = error_of(&resource("binding = \"call\"\nprompt = \"reauthorize\"\n"));
    assert_eq!(e.path, "resources[0].prompt");
    assert!(e.message.contains("\"elicitation\""), "{}", e.message);
    let config = Config::from_toml(&resource("binding = \"call\"\nprompt = \"link\"\n")).unwrap();
    config.validate().unwrap();
    // A shared resource asks nobody.
    let e = error_of(
        "[[resources]]\nname = \"s\"\nbinding = \"shared\"\nshared_token_env = \"T\"\nprompt = \"link\"\n",
    );
    assert_eq!(e.path, "resources[0].prompt");
    assert!(Config::from_toml(&resource("prompt = \"cascade\"\n")).is_err());
}

#[test]
fn web_apps_match_by_scheme_host_port_and_path_prefix() {
    let defaults = SignInConfig::default().web_app_redirect_uris;
    assert!(is_web_app(
        &defaults,
        "https://claude.ai/api/mcp/auth_callback"
    ));
    assert!(is_web_app(
        &defaults,
        "https://claude.com/api/mcp/auth_callback"
    ));
    assert!(!is_web_app(
        &defaults,
        "https://claude.ai.evil.example/api/mcp/auth_callback"
    ));
    assert!(!is_web_app(
        &defaults,
        "http://claude.ai/api/mcp/auth_callback"
    ));
    assert!(!is_web_app(
        &defaults,
        "https://claude.ai/api/mcp/auth_callbackx"
    ));
    assert!(!is_web_app(&defaults, "http://127.0.0.1:33418/callback"));
    assert!(!is_web_app(&defaults, "not a url"));
    let loopback = vec![Url::parse("http://127.0.0.1/callback").unwrap()];
    // No port in the entry: any port (loopback clients pick theirs).
    assert!(is_web_app(&loopback, "http://127.0.0.1:33418/callback"));
    assert!(is_web_app(&loopback, "http://127.0.0.1:33418/callback/x"));
    assert!(!is_web_app(&loopback, "http://127.0.0.1:33418/callbacks"));
    let ported = vec![Url::parse("http://127.0.0.1:9000/").unwrap()];
    assert!(is_web_app(&ported, "http://127.0.0.1:9000/anything"));
    assert!(!is_web_app(&ported, "http://127.0.0.1:9001/anything"));
    let config =
        Config::from_toml("[sign_in]\nweb_app_redirect_uris = [\"https://app.example/cb\"]\n")
            .unwrap();
    assert_eq!(config.sign_in.web_app_redirect_uris.len(), 1);
}

#[test]
fn service_clients_must_authenticate_act_alone_and_be_named_right_in_policies() {
    let head = "[sign_in]\nmode = \"accounts\"\n";
    for (toml, key) in [
        (
            "[[sign_in.clients]]\nclient_id = \"bot\"\ngrant_types = [\"client_credentials\"]\n",
            "sign_in.clients[0].client_secret_env",
        ),
        (
            "[[sign_in.clients]]\nclient_id = \"bot\"\ngrant_types = [\"client_credentials\", \"authorization_code\"]\nclient_secret_env = \"X\"\n",
            "sign_in.clients[0].grant_types",
        ),
        (
            "[[sign_in.clients]]\nclient_id = \"bot\"\ngrant_types = [\"client_credentials\"]\nclient_secret_env = \"X\"\nredirect_uris = [\"http://127.0.0.1/cb\"]\n",
            "sign_in.clients[0].redirect_uris",
        ),
        (
            "[[sign_in.clients]]\nclient_id = \"bot\"\ngrant_types = [\"password\"]\nredirect_uris = [\"http://127.0.0.1/cb\"]\n",
            "sign_in.clients[0].grant_types",
        ),
        (
            "[[sign_in.clients]]\nclient_id = \"bot\"\ngrant_types = [\"client_credentials\"]\nclient_secret_env = \"X\"\njwks_uri = \"https://bot.example/jwks\"\n",
            "sign_in.clients[0].jwks_file",
        ),
        (
            "[[sign_in.clients]]\nclient_id = \"app\"\nredirect_uris = [\"http://127.0.0.1/cb\"]\n[[policies]]\ntools = [\"*\"]\nclients = [\"app\"]\n",
            "policies[0].clients[0]",
        ),
        (
            "[[policies]]\ntools = [\"*\"]\nclients = [\"nobody\"]\n",
            "policies[0].clients[0]",
        ),
        (
            "[[policies]]\ntools = [\"*\"]\ndeny_people = [\"bob\", \"client:bot\"]\n",
            "policies[0].deny_people[1]",
        ),
        (
            "[[sign_in.clients]]\nclient_id = \"app\"\nredirect_uris = [\"http://127.0.0.1/cb\"]\ngrant_types = [\"authorization_code\"]\n",
            "sign_in.clients[0].grant_types",
        ),
        (
            "[[sign_in.clients]]\nclient_id = \"id-jag:x\"\nredirect_uris = [\"http://127.0.0.1/cb\"]\n",
            "sign_in.clients[0].client_id",
        ),
    ] {
        assert_eq!(error_of(&format!("{head}{toml}")).path, key, "{toml}");
    }
    let ok = Config::from_toml(&format!(
        "{head}[[sign_in.clients]]\nclient_id = \"bot\"\ngrant_types = [\"client_credentials\"]\njwks_uri = \"https://bot.example/jwks\"\n[[policies]]\ntools = [\"*\"]\nclients = [\"bot\"]\n"
    ))
    .unwrap();
    ok.validate().unwrap();
    assert!(ok.sign_in.clients[0].is_service());
}

#[test]
fn an_exchange_upstream_needs_accounts_and_no_other_credential() {
    let up =
        "[[upstreams]]\nname = \"wiki\"\nurl = \"http://127.0.0.1:9/mcp\"\nauth = \"exchange\"\n";
    let accounts = "[sign_in]\nmode = \"accounts\"\n";
    for (toml, key) in [
        (
            format!("[sign_in]\nmode = \"local\"\n{up}"),
            "upstreams[0].auth",
        ),
        (
            format!("{accounts}{up}resource = \"notes\"\n"),
            "upstreams[0].auth",
        ),
        (
            format!("{accounts}{up}headers = {{ Authorization = \"Bearer x\" }}\n"),
            "upstreams[0].headers",
        ),
        (
            format!("{accounts}{up}audience = \"http://127.0.0.1:8421/mcp\"\n"),
            "upstreams[0].audience",
        ),
        (
            format!("{accounts}{up}scopes = [\"wiki read\"]\n"),
            "upstreams[0].scopes",
        ),
        (
            format!(
                "{accounts}[server]\npublic_url = \"http://127.0.0.1:9\"\n[[upstreams]]\nname = \"loop\"\nurl = \"http://127.0.0.1:9/mcp\"\nauth = \"exchange\"\n"
            ),
            "upstreams[0].audience",
        ),
        (
            format!(
                "{accounts}{up}[[upstreams]]\nname = \"wiki2\"\nurl = \"http://127.0.0.1:8/mcp\"\nauth = \"exchange\"\naudience = \"http://127.0.0.1:9/mcp\"\n"
            ),
            "upstreams[1].audience",
        ),
        (
            format!(
                "{accounts}[[upstreams]]\nname = \"wiki\"\nurl = \"http://127.0.0.1:9/mcp\"\naudience = \"x\"\n"
            ),
            "upstreams[0].audience",
        ),
    ] {
        assert_eq!(error_of(&toml).path, key, "{toml}");
    }
    let ok = Config::from_toml(&format!(
        "{accounts}{up}audience = \"https://wiki.internal\"\nscopes = [\"wiki:read\"]\n"
    ))
    .unwrap();
    ok.validate().unwrap();
    assert_eq!(ok.upstreams[0].auth, Some(UpstreamAuth::Exchange));
}

#[test]
fn an_api_key_resource_has_a_check_and_none_of_the_oauth_keys() {
    let head = "[sign_in]\nmode = \"accounts\"\ndevelopment = true\n[[resources]]\nname = \"ledger\"\nkind = \"api_key\"\n";
    let check = "[resources.api_key]\ncheck_url = \"https://ledger.example/me\"\n";
    for (toml, key) in [
        (head.to_owned(), "resources[0].api_key"),
        (
            format!("{head}client_id = \"x\"\n{check}"),
            "resources[0].client_id",
        ),
        (
            format!("{head}binding = \"shared\"\nshared_token_env = \"K\"\n{check}"),
            "resources[0].binding",
        ),
        (
            format!("{head}prompt = \"reauthorize\"\n{check}"),
            "resources[0].prompt",
        ),
        (
            format!("{head}token_header = \"X-Key\"\n{check}query = \"key\"\n"),
            "resources[0].api_key.query",
        ),
        (
            format!("{head}{check}query = \"a key\"\n"),
            "resources[0].api_key.query",
        ),
        (
            format!("{head}{check}account_pointer = \"user.login\"\n"),
            "resources[0].api_key.account_pointer",
        ),
        (
            format!(
                "[sign_in]\nmode = \"accounts\"\n[[resources]]\nname = \"ledger\"\nclient_id = \"c\"\nissuer = \"https://as.example\"\n{check}"
            ),
            "resources[0].api_key",
        ),
    ] {
        assert_eq!(error_of(&toml).path, key, "{toml}");
    }
    let ok = Config::from_toml(&format!(
        "{head}token_header = \"X-Api-Key\"\n{check}account_pointer = \"/user/login\"\n"
    ))
    .unwrap();
    ok.validate().unwrap();
    let r = crate::config::resolved::ResolvedResource::resolve(0, &ok.resources[0], true).unwrap();
    assert!(r.oauth.is_none() && r.api_key.is_some());
    assert_eq!(r.token_header.name.as_str(), "x-api-key");
}

#[test]
fn a_resource_trusting_the_idp_names_a_provider_and_has_an_oauth_client() {
    let base = "[sign_in]\nmode = \"accounts\"\n[[sign_in.oidc]]\nname = \"corp\"\nissuer = \"https://corp.example\"\nclient_id = \"d\"\nclient_secret_env = \"S\"\n[[resources]]\nname = \"notes\"\n";
    let oauth = "issuer = \"https://as.example\"\nclient_id = \"c\"\n";
    for (toml, key) in [
        (
            format!("{base}{oauth}[resources.id_jag]\nprovider = \"other\"\n"),
            "resources[0].id_jag.provider",
        ),
        (
            format!(
                "{base}authorization_endpoint = \"https://as.example/a\"\ntoken_endpoint = \"https://as.example/t\"\nclient_id = \"c\"\n[resources.id_jag]\nprovider = \"corp\"\n"
            ),
            "resources[0].id_jag.audience",
        ),
        (
            format!(
                "{base}binding = \"shared\"\nshared_token_env = \"T\"\n[resources.id_jag]\nprovider = \"corp\"\n"
            ),
            "resources[0].id_jag",
        ),
    ] {
        assert_eq!(error_of(&toml).path, key, "{toml}");
    }
    let ok = Config::from_toml(&format!(
        "{base}{oauth}[resources.id_jag]\nprovider = \"corp\"\n"
    ))
    .unwrap();
    ok.validate().unwrap();
    let r = crate::config::resolved::ResolvedResource::resolve(0, &ok.resources[0], false).unwrap();
    assert_eq!(r.id_jag.unwrap().audience, "https://as.example");
}
