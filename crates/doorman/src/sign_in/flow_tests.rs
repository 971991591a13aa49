//! Layer 1's endpoints as state machines, driven in process through the authorization
//! server's own router: the token endpoint (codes single use, PKCE, rotation with reuse
//! detection) and the authorization endpoint's forced fresh sign-in after a step-up.
//! The browser side end to end, with real clients and an SSO provider, is in `tests/e2e`.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
};
use serde_json::Value;
use tower_service::Service;

use super::{AuthServer, tokens::TokenError};
use crate::{
    clock::{Clock, ManualClock},
    config::Config,
    crypto::{self, KeyRing},
    net::HttpClient,
    store::{BrowserSessionRow, CodeRow, Store, testing::insert_person},
};

const REDIRECT: &str = "http://127.0.0.1:9/cb";
const VERIFIER: &str = "a-verifier-of-forty-three-characters-or-more-0123";

struct Setup {
    auth: Arc<AuthServer>,
    router: axum::Router,
    clock: ManualClock,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite_in(dir.path()).await.unwrap();
    let config = Config::from_toml(&format!(
        "[server]\npublic_url = \"http://127.0.0.1:8421/\"\n\
         [sign_in]\nmode = \"accounts\"\ndevelopment = true\n\
         [[sign_in.clients]]\nclient_id = \"tester\"\nname = \"Tester\"\nredirect_uris = [\"{REDIRECT}\"]\n"
    ))
    .unwrap();
    config.validate().unwrap();
    let ring = Arc::new(KeyRing::parse(&format!("k1 {}\n", crypto::random_token(32))).unwrap());
    let clock = ManualClock::new(1_700_000_000_000);
    let auth = AuthServer::new(
        &config,
        store.clone(),
        Arc::new(clock.clone()),
        ring,
        HttpClient::new().unwrap(),
    )
    .await
    .unwrap()
    .expect("accounts mode");
    insert_person(&store, "alice").await;
    Setup {
        router: auth.router(),
        auth,
        clock,
        store,
        _dir: dir,
    }
}

impl Setup {
    async fn send(&mut self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let r = self.router.call(req).await.unwrap();
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    async fn token(&mut self, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = Request::post("/oauth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// A fresh authorization code for alice and the tester client, as `/consent` stores it.
    async fn code(&self, name: &str, expires_in_ms: i64) -> String {
        let now = self.clock.now_ms();
        self.store
            .insert_code(&CodeRow {
                code_hash: crypto::sha256_hex(name),
                client_id: "tester".into(),
                user_id: "alice".into(),
                redirect_uri: REDIRECT.into(),
                code_challenge: crypto::sha256_b64url(VERIFIER.as_bytes()),
                resource: self.auth.resource.clone(),
                scope: "mcp".into(),
                auth_time: now - 1_000,
                amr: r#"["pwd"]"#.into(),
                acr: None,
                created_at: now,
                expires_at: now + expires_in_ms,
                used_at: None,
                grant_id: None,
                continues_grant: None,
            })
            .await
            .unwrap();
        name.to_owned()
    }

    async fn exchange(
        &mut self,
        code: &str,
        verifier: &str,
        redirect: &str,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect),
                ("client_id", "tester"),
            ])
            .await;
        (status, body)
    }
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_code_is_exchanged_once_and_a_replay_revokes_what_it_issued() {
    let mut t = setup().await;
    let code = t.code("code-1", 60_000).await;
    let (status, headers, body) = t
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", REDIRECT),
            ("client_id", "tester"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // RFC 6749 §5.1: no caching of tokens.
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(t.auth.tokens.verify(&access).unwrap().sub, "alice");

    // OAuth 2.1 §4.1.3: the same code again is refused, and what it issued is revoked.
    let (status, body) = t.exchange(&code, VERIFIER, REDIRECT).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert_eq!(
        t.auth.tokens.verify(&access).unwrap_err(),
        TokenError::Revoked
    );
    let (status, _, body) = t
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "tester"),
        ])
        .await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
}

#[tokio::test]
async fn a_code_needs_its_verifier_redirect_client_and_lifetime() {
    let mut t = setup().await;
    // RFC 7636 §4.6: the verifier must hash to the challenge.
    let c = t.code("code-a", 60_000).await;
    let other_verifier = "another-verifier-of-forty-three-characters-xyz";
    let (status, body) = t.exchange(&c, other_verifier, REDIRECT).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    let (status, body) = t.exchange(&c, VERIFIER, REDIRECT).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant"),
        "a code tried once is spent, even with the wrong verifier"
    );
    // RFC 6749 §4.1.3: the redirect URI of the authorization request.
    let c = t.code("code-b", 60_000).await;
    let (status, body) = t.exchange(&c, VERIFIER, "http://127.0.0.1:9/other").await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    // Expired.
    let c = t.code("code-c", 1_000).await;
    t.clock.advance(std::time::Duration::from_secs(2));
    let (status, body) = t.exchange(&c, VERIFIER, REDIRECT).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    // Unknown code, unknown client, unknown grant type, missing parameters.
    let (status, body) = t.exchange("never-issued", VERIFIER, REDIRECT).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    let c = t.code("code-d", 60_000).await;
    let (status, _, body) = t
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("code_verifier", VERIFIER),
            ("redirect_uri", REDIRECT),
            ("client_id", "someone-else"),
        ])
        .await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let (status, _, body) = t
        .token(&[("grant_type", "password"), ("client_id", "tester")])
        .await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "unsupported_grant_type")
    );
    let (status, _, body) = t.token(&[("client_id", "tester")]).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    // The untouched code still works: failures elsewhere spent nothing of it.
    let (status, body) = t.exchange(&c, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_grant() {
    let mut t = setup().await;
    let c = t.code("code-r", 60_000).await;
    let (_, body) = t.exchange(&c, VERIFIER, REDIRECT).await;
    let r1 = body["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| {
        [
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", token),
            ("client_id", "tester".to_owned()),
        ]
    };
    let form = refresh(r1.clone());
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, body) = t.token(&pairs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r2 = body["refresh_token"].as_str().unwrap().to_owned();
    let a2 = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotated (OAuth 2.1 §4.3.1)");
    assert!(t.auth.tokens.verify(&a2).is_ok());

    // The old one again: a stolen token in use. The whole grant goes.
    let (status, _, body) = t.token(&pairs).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert_eq!(t.auth.tokens.verify(&a2).unwrap_err(), TokenError::Revoked);
    let form = refresh(r2);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, body) = t.token(&pairs).await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
}

/// RFC 9470 §3: after Doorman asked a client for a fresh sign-in, that client's next
/// authorization for the person forces one, with or without `max_age`; once met, it doesn't.
#[tokio::test]
async fn a_remembered_step_up_forces_a_fresh_sign_in_at_the_next_authorization() {
    let mut t = setup().await;
    let now = t.clock.now_ms();
    let browser = |t: &Setup, id: &str, signed_in_ago_ms: i64| {
        let row = BrowserSessionRow {
            id_hash: crypto::sha256_hex(id),
            user_id: "alice".into(),
            auth_time: now - signed_in_ago_ms,
            amr: r#"["pwd"]"#.into(),
            acr: None,
            created_at: now - signed_in_ago_ms,
            expires_at: now + 86_400_000,
        };
        let store = t.store.clone();
        async move { store.insert_browser_session(&row).await.unwrap() }
    };
    browser(&t, "old-sign-in", 600_000).await;
    browser(&t, "fresh-sign-in", 10_000).await;
    let challenge = crypto::sha256_b64url(VERIFIER.as_bytes());
    let authorize = |cookie: &str, extra: &str| {
        Request::get(format!(
            "/oauth/authorize?response_type=code&client_id=tester&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&state=s{extra}",
            form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
        ))
        .header(header::COOKIE, format!("doorman_session={cookie}"))
        .body(Body::empty())
        .unwrap()
    };
    let next_page = |headers: &HeaderMap| {
        let loc = headers[header::LOCATION].to_str().unwrap().to_owned();
        loc.split('?').next().unwrap().to_owned()
    };

    // Signed in ten minutes ago, nothing asked: straight to consent.
    let (status, h, _) = t.send(authorize("old-sign-in", "")).await;
    assert_eq!(
        (status, next_page(&h).as_str()),
        (StatusCode::SEE_OTHER, "/consent")
    );

    // Doorman answered a call with a 5-minute step-up: now the same request must sign in.
    t.store
        .require_step_up("alice", "tester", 300, now, now + 900_000)
        .await
        .unwrap();
    let (_, h, _) = t.send(authorize("old-sign-in", "")).await;
    assert_eq!(next_page(&h), "/sign-in", "forced without max_age");
    let (_, h, _) = t.send(authorize("old-sign-in", "&max_age=3600")).await;
    assert_eq!(next_page(&h), "/sign-in", "the stricter of the two wins");
    // A sign-in that meets it is not forced again.
    let (_, h, _) = t.send(authorize("fresh-sign-in", "")).await;
    assert_eq!(next_page(&h), "/consent");
    // A stricter step-up asked later replaces a looser one; a looser one never relaxes it.
    t.store
        .require_step_up("alice", "tester", 5, now, now + 900_000)
        .await
        .unwrap();
    let (_, h, _) = t.send(authorize("fresh-sign-in", "")).await;
    assert_eq!(next_page(&h), "/sign-in");
    t.store
        .require_step_up("alice", "tester", 3600, now, now + 900_000)
        .await
        .unwrap();
    let (_, h, _) = t.send(authorize("fresh-sign-in", "")).await;
    assert_eq!(next_page(&h), "/sign-in", "still 5 s");
    // Cleared when a code is issued; and it expires on its own.
    t.store.clear_step_up("alice", "tester").await.unwrap();
    let (_, h, _) = t.send(authorize("old-sign-in", "")).await;
    assert_eq!(next_page(&h), "/consent");
    t.store
        .require_step_up("alice", "tester", 300, now, now + 900_000)
        .await
        .unwrap();
    t.clock.advance(std::time::Duration::from_secs(901));
    let (_, h, _) = t.send(authorize("old-sign-in", "")).await;
    assert_eq!(
        next_page(&h),
        "/consent",
        "a step-up is remembered for 15 minutes"
    );
}

/// RFC 6750 and RFC 9728 §5.1 in front of `/mcp`: every way a request can arrive without a
/// usable token gets the challenge that tells the client what to do, and nothing reaches the
/// endpoint.
#[tokio::test]
async fn the_bearer_check_refuses_everything_but_a_valid_token_with_the_mcp_scope() {
    use axum::{Extension, middleware, routing::post};
    let t = setup().await;
    let grant = |scope: &str| crate::store::GrantRow {
        id: format!("grant-{scope}"),
        user_id: "alice".into(),
        client_id: "tester".into(),
        scope: scope.into(),
        resource: t.auth.resource.clone(),
        auth_time: 0,
        amr: "[]".into(),
        acr: None,
        created_at: 0,
        expires_at: i64::MAX,
        last_used_at: 0,
        revoked_at: None,
        revoked_reason: None,
    };
    let (good, claims) = t.auth.tokens.issue(&grant("mcp")).unwrap();
    let (no_mcp, _) = t.auth.tokens.issue(&grant("openid")).unwrap();
    let (revoked, revoked_claims) = t.auth.tokens.issue(&grant("mcp")).unwrap();
    t.auth
        .tokens
        .revocations
        .revoke_token_locally(&revoked_claims.jti, t.clock.now_ms());
    let mut mcp = axum::Router::new()
        .route(
            "/mcp",
            post(|Extension(p): Extension<super::Person>| async move { p.0.sub.clone() }),
        )
        .layer(middleware::from_fn_with_state(
            t.auth.clone(),
            |axum::extract::State(auth): axum::extract::State<Arc<AuthServer>>,
             req: Request<Body>,
             next: middleware::Next| async move {
                match super::bearer::admit(Some(&auth), req).await {
                    Ok(req) => next.run(req).await,
                    Err(refused) => refused,
                }
            },
        ));
    let mut call = async |uri: &str, auth: &[&str]| {
        let mut req = Request::post(uri);
        for a in auth {
            req = req.header(header::AUTHORIZATION, *a);
        }
        let r = mcp.call(req.body(Body::from("{}")).unwrap()).await.unwrap();
        let challenge = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (String::from_utf8_lossy(&body).into_owned(), challenge)
    };
    let metadata =
        "resource_metadata=\"http://127.0.0.1:8421/.well-known/oauth-protected-resource/mcp\"";
    let bearer = |t: &str| format!("Bearer {t}");

    let (body, challenge) = call("/mcp", &[&bearer(&good)]).await;
    assert_eq!(
        (body.as_str(), challenge.as_str()),
        (claims.sub.as_str(), "")
    );

    // No bearer credentials, or another scheme's: a challenge without an error code (RFC 6750
    // §3.1), so the client starts its authorization rather than report a bad token.
    for auth in [&[][..], &["Basic YWxpY2U6cHc="], &["Token abc"]] {
        let (body, challenge) = call("/mcp", auth).await;
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(metadata),
            "{challenge}"
        );
        assert!(!challenge.contains("error="), "{auth:?}: {challenge}");
        assert_ne!(body, "alice", "{auth:?} reached the endpoint");
    }
    for (uri, auth, want) in [
        // No credentials: a challenge without an error code (RFC 6750 §3.1).
        ("/mcp", vec![], "scope=\"mcp\""),
        (
            "/mcp",
            vec!["Bearer ".to_owned()],
            "error=\"invalid_token\"",
        ),
        (
            "/mcp",
            vec![bearer("forged.token.here")],
            "error=\"invalid_token\"",
        ),
        (
            "/mcp",
            vec![bearer(&revoked)],
            "the access token has been revoked",
        ),
        (
            "/mcp",
            vec![bearer(&no_mcp)],
            "error=\"insufficient_scope\"",
        ),
        (
            "/mcp",
            vec![bearer(&good), bearer(&good)],
            "more than one Authorization header",
        ),
        (
            &format!("/mcp?access_token={good}") as &str,
            vec![],
            "never in the URL",
        ),
    ] {
        let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
        let (body, challenge) = call(uri, &headers).await;
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(metadata),
            "{challenge}"
        );
        assert!(challenge.contains(want), "{auth:?}: {challenge}");
        assert_ne!(body, "alice", "{auth:?} reached the endpoint");
    }
}
