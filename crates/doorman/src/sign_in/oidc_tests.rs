//! Tests of `oidc.rs`: ID token validation against a provider whose every answer the test
//! controls. These are the faults a real provider cannot be made to show (a wrong nonce, a
//! foreign audience, a tampered signature…); the happy path runs against `oidc-provider` in the
//! end-to-end tests.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::{Json, Router, extract::State, routing::get};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::{clock::ManualClock, config::OidcClaims};

const NOW_S: i64 = 1_800_000_000;

struct Key {
    kid: String,
    pkcs8: Vec<u8>,
    jwk: Value,
}

fn key(kid: &str) -> Key {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    Key {
        kid: kid.into(),
        pkcs8: doc.as_ref().to_vec(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
    }
}

/// The provider's published keys; tests swap them to simulate rotation.
type Published = Arc<Mutex<Vec<Value>>>;

async fn provider_at(published: Published) -> (SocketAddr, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}");
    let discovery = json!({
        "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks"),
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
    });
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route(
            "/jwks",
            get(|State(keys): State<Published>| async move {
                Json(json!({ "keys": keys.lock().unwrap().clone() }))
            }),
        )
        .with_state(published);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, issuer)
}

fn provider(issuer: &str, clock: &ManualClock) -> Provider {
    // SAFETY of the env var: each test uses its own variable name.
    let var = format!(
        "DOORMAN_TEST_OIDC_SECRET_{}",
        crypto::random_token(6).replace('-', "_")
    );
    unsafe { std::env::set_var(&var, "provider-secret") };
    let config = OidcProviderConfig {
        name: "corp".into(),
        display_name: Some("Corp SSO".into()),
        issuer: issuer.parse().unwrap(),
        client_id: "doorman".into(),
        client_secret_env: Some(var),
        client_secret_file: None,
        scopes: vec!["openid".into(), "email".into()],
        claims: OidcClaims::default(),
        authorization_params: [("access_type".to_owned(), "offline".to_owned())].into(),
        allowed_email_domains: vec!["example.com".into()],
        trust_email: false,
        allowed_groups: vec![],
        recheck_interval: crate::config::ConfigDuration::secs(3600),
        id_jag: true,
    };
    Provider::new(
        config,
        HttpClient::new().unwrap(),
        Arc::new(clock.clone()),
        "http://127.0.0.1:8421/sign-in/callback".into(),
    )
    .unwrap()
}

fn claims(issuer: &str, nonce: &str) -> Value {
    json!({
        "iss": issuer, "sub": "person-1", "aud": "doorman", "exp": NOW_S + 300, "iat": NOW_S,
        "nonce": nonce, "email": "ada@example.com", "email_verified": true, "name": "Ada",
        "groups": ["engineering", "admins"], "auth_time": NOW_S - 10, "acr": "urn:mace:incommon:iap:silver",
        "amr": ["pwd", "mfa"],
    })
}

fn sign(k: &Key, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(k.kid.clone());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&k.pkcs8)).unwrap()
}

struct Setup {
    p: Provider,
    issuer: String,
    k1: Key,
    published: Published,
    clock: ManualClock,
}

async fn setup() -> Setup {
    let k1 = key("k1");
    let published: Published = Arc::new(Mutex::new(vec![k1.jwk.clone()]));
    let (_, issuer) = provider_at(published.clone()).await;
    let clock = ManualClock::new(NOW_S * 1000);
    Setup {
        p: provider(&issuer, &clock),
        issuer,
        k1,
        published,
        clock,
    }
}

#[tokio::test]
async fn a_valid_id_token_gives_the_person_and_their_groups() {
    let t = setup().await;
    let token = sign(&t.k1, &claims(&t.issuer, "n-1"));
    let who =
        t.p.validate_id_token(&token, Some(&crypto::sha256_hex("n-1")))
            .await
            .unwrap();
    assert_eq!(who.subject, "person-1");
    assert_eq!(who.email.as_deref(), Some("ada@example.com"));
    assert_eq!(who.groups, vec!["engineering", "admins"]);
    assert_eq!(who.auth_time, Some(NOW_S - 10));
    assert_eq!(who.acr.as_deref(), Some("urn:mace:incommon:iap:silver"));
    assert_eq!(who.amr, vec!["pwd", "mfa"]);
    assert!(t.p.admits(&who).is_ok());
}

#[tokio::test]
async fn forged_and_foreign_id_tokens_are_refused() {
    let t = setup().await;
    let nonce = Some(crypto::sha256_hex("n-1"));
    let refused = |c: Value| sign(&t.k1, &c);
    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push(("nonce", refused(claims(&t.issuer, "another-nonce"))));
    let mut c = claims(&t.issuer, "n-1");
    c["aud"] = json!("someone-else");
    cases.push(("aud", refused(c)));
    let mut c = claims(&t.issuer, "n-1");
    c["aud"] = json!(["doorman", "other"]);
    cases.push(("azp", refused(c)));
    let mut c = claims(&t.issuer, "n-1");
    c["aud"] = json!(["doorman", "other"]);
    c["azp"] = json!("other");
    cases.push(("azp", refused(c)));
    let mut c = claims(&t.issuer, "n-1");
    c["exp"] = json!(NOW_S - 120);
    cases.push(("expired", refused(c)));
    let mut c = claims(&t.issuer, "n-1");
    c["iss"] = json!("https://evil.example");
    cases.push(("another provider", refused(c)));
    let mut c = claims(&t.issuer, "n-1");
    c["iat"] = json!(NOW_S + 3600);
    cases.push(("future", refused(c)));
    // A valid token whose payload was changed afterwards.
    let good = sign(&t.k1, &claims(&t.issuer, "n-1"));
    let parts: Vec<&str> = good.split('.').collect();
    let mut body: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    body["groups"] = json!(["admins", "finance"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(body.to_string()),
        parts[2]
    );
    cases.push(("signature", tampered));
    // `alg: none`, and a MAC keyed with something public.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(claims(&t.issuer, "n-1").to_string())
    );
    cases.push(("", none));
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let mac = jsonwebtoken::encode(
        &hs,
        &claims(&t.issuer, "n-1"),
        &EncodingKey::from_secret(b"provider-secret"),
    )
    .unwrap();
    cases.push(("does not advertise", mac));
    // Signed by a key the provider never published.
    cases.push((
        "does not publish",
        sign(&key("stranger"), &claims(&t.issuer, "n-1")),
    ));
    for (why, token) in cases {
        let e =
            t.p.validate_id_token(&token, nonce.as_deref())
                .await
                .unwrap_err();
        assert!(matches!(e, OidcError::IdToken(_)), "{why}: {e}");
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
    // The same claims, properly signed, pass: the refusals above are about what changed.
    assert!(t.p.validate_id_token(&good, nonce.as_deref()).await.is_ok());
}

#[tokio::test]
async fn an_unknown_kid_after_rotation_refetches_the_keys_once() {
    let t = setup().await;
    let first = sign(&t.k1, &claims(&t.issuer, "n"));
    t.p.validate_id_token(&first, None).await.unwrap();
    // The provider rotates: k2 published, and tokens signed with it arrive.
    let k2 = key("k2");
    t.published.lock().unwrap().push(k2.jwk.clone());
    t.clock.advance(std::time::Duration::from_secs(31));
    let rotated = sign(&k2, &claims(&t.issuer, "n"));
    let who = t.p.validate_id_token(&rotated, None).await.unwrap();
    assert_eq!(who.subject, "person-1");
    // A genuinely unknown key stays refused, and does not refetch on every token.
    let stranger = sign(&key("k9"), &claims(&t.issuer, "n"));
    assert!(t.p.validate_id_token(&stranger, None).await.is_err());
}

#[tokio::test]
async fn domains_and_groups_decide_who_may_sign_in() {
    let t = setup().await;
    let who = |email: &str, verified: bool| Identity {
        subject: "s".into(),
        email: Some(email.into()),
        email_verified: verified,
        name: None,
        groups: vec!["engineering".into()],
        auth_time: None,
        acr: None,
        amr: vec![],
    };
    assert!(t.p.admits(&who("ada@example.com", true)).is_ok());
    assert!(t.p.admits(&who("ada@EXAMPLE.com", true)).is_ok());
    assert!(t.p.admits(&who("ada@evil.example", true)).is_err());
    // An address the provider did not verify proves nothing about the domain.
    assert!(t.p.admits(&who("ada@example.com", false)).is_err());
    let mut config = t.p.config.clone();
    config.allowed_groups = vec!["finance".into()];
    let strict = Provider::new(
        config,
        HttpClient::new().unwrap(),
        Arc::new(t.clock.clone()),
        String::new(),
    )
    .unwrap();
    assert!(
        strict
            .admits(&who("ada@example.com", true))
            .unwrap_err()
            .contains("group")
    );
}

#[tokio::test]
async fn the_authorization_url_carries_pkce_nonce_and_extra_parameters() {
    let t = setup().await;
    let url = t.p.authorization_url("st", "no", "ch", true).await.unwrap();
    let q: std::collections::HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "doorman");
    assert_eq!(q["redirect_uri"], "http://127.0.0.1:8421/sign-in/callback");
    assert_eq!(q["scope"], "openid email");
    assert_eq!((q["state"].as_str(), q["nonce"].as_str()), ("st", "no"));
    assert_eq!(
        (
            q["code_challenge"].as_str(),
            q["code_challenge_method"].as_str()
        ),
        ("ch", "S256")
    );
    assert_eq!(
        (q["prompt"].as_str(), q["max_age"].as_str()),
        ("login", "0")
    );
    assert_eq!(q["access_type"], "offline");
    let plain =
        t.p.authorization_url("st", "no", "ch", false)
            .await
            .unwrap();
    assert!(
        !plain.contains("prompt=") && !plain.contains("max_age="),
        "{plain}"
    );
}

/// An address the provider did not verify does not count, unless the provider is trusted for
/// email; nothing else about the person changes.
#[tokio::test]
async fn only_a_verified_or_trusted_email_is_kept() {
    let mut t = setup().await;
    let mut c = claims(&t.issuer, "n-1");
    c["email_verified"] = serde_json::json!(false);
    let token = sign(&t.k1, &c);
    let who = t.p.validate_id_token(&token, None).await.unwrap();
    assert_eq!(who.email.as_deref(), Some("ada@example.com"));
    // Complete already (email, name, groups present): UserInfo is not asked.
    let kept = t.p.complete_identity(who.clone(), None).await.unwrap();
    assert_eq!(kept.email, None, "unverified");
    assert_eq!(kept.groups, who.groups);
    t.p.config.trust_email = true;
    let kept = t.p.complete_identity(who, None).await.unwrap();
    assert_eq!(
        kept.email.as_deref(),
        Some("ada@example.com"),
        "trusted for email"
    );
}

const DOORMAN: &str = "http://127.0.0.1:8421";
const MCP: &str = "http://127.0.0.1:8421/mcp";

fn id_jag_claims(issuer: &str) -> Value {
    json!({
        "iss": issuer, "sub": "person-1", "aud": DOORMAN, "client_id": "agent", "jti": "j-1",
        "exp": NOW_S + 300, "iat": NOW_S, "resource": MCP, "scope": "mcp",
        "email": "ada@example.com", "groups": ["engineering"],
    })
}

fn sign_typed(k: &Key, typ: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(k.kid.clone());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&k.pkcs8)).unwrap()
}

#[tokio::test]
async fn an_id_jag_for_doorman_gives_the_person_and_every_other_is_refused() {
    let t = setup().await;
    let good = sign_typed(&t.k1, Some(ID_JAG_TYP), &id_jag_claims(&t.issuer));
    let jag = t.p.validate_id_jag(&good, DOORMAN, MCP).await.unwrap();
    assert_eq!(
        (
            jag.jti.as_str(),
            jag.client_id.as_str(),
            jag.scope.as_deref()
        ),
        ("j-1", "agent", Some("mcp"))
    );
    assert_eq!(jag.identity.subject, "person-1");
    assert_eq!(jag.identity.groups, ["engineering"]);

    let with = |change: Value| {
        let mut c = id_jag_claims(&t.issuer);
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let cases = [
        (
            sign_typed(&t.k1, None, &id_jag_claims(&t.issuer)),
            "oauth-id-jag+jwt",
        ),
        (
            sign_typed(&t.k1, Some("JWT"), &id_jag_claims(&t.issuer)),
            "oauth-id-jag+jwt",
        ),
        // An ID token of the same provider is no ID-JAG.
        (sign(&t.k1, &claims(&t.issuer, "n")), "oauth-id-jag+jwt"),
        (
            sign_typed(
                &t.k1,
                Some(ID_JAG_TYP),
                &with(json!({"aud": "http://elsewhere"})),
            ),
            "aud",
        ),
        (
            sign_typed(
                &t.k1,
                Some(ID_JAG_TYP),
                &with(json!({"aud": [DOORMAN, "http://elsewhere"]})),
            ),
            "aud",
        ),
        (
            sign_typed(
                &t.k1,
                Some(ID_JAG_TYP),
                &with(json!({"iss": "http://127.0.0.1:1"})),
            ),
            "another provider",
        ),
        (
            sign_typed(&t.k1, Some(ID_JAG_TYP), &with(json!({"exp": NOW_S - 120}))),
            "expired",
        ),
        (
            sign_typed(&t.k1, Some(ID_JAG_TYP), &with(json!({"iat": NOW_S + 600}))),
            "future",
        ),
        (
            sign_typed(
                &t.k1,
                Some(ID_JAG_TYP),
                &with(json!({"resource": "http://127.0.0.1:1/mcp"})),
            ),
            "resource",
        ),
        (
            sign_typed(&t.k1, Some(ID_JAG_TYP), &with(json!({"cnf": {"jkt": "x"}}))),
            "cnf",
        ),
        (
            sign_typed(&t.k1, Some(ID_JAG_TYP), &with(json!({"jti": null}))),
            "jti",
        ),
        (
            sign_typed(&t.k1, Some(ID_JAG_TYP), &with(json!({"client_id": null}))),
            "client_id",
        ),
        (
            sign_typed(
                &key("stranger"),
                Some(ID_JAG_TYP),
                &id_jag_claims(&t.issuer),
            ),
            "key",
        ),
    ];
    for (token, words) in cases {
        let e = t.p.validate_id_jag(&token, DOORMAN, MCP).await.unwrap_err();
        assert!(e.to_string().contains(words), "{words}: {e}");
    }
    // An ID-JAG is no ID token either.
    let e = t.p.validate_id_token(&good, None).await.unwrap_err();
    assert!(e.to_string().contains("typ"), "{e}");
    // A list of resources naming Doorman's is fine; so is an `aud` of exactly Doorman.
    let listed = with(json!({"resource": ["http://127.0.0.1:1/x", MCP], "aud": [DOORMAN]}));
    assert!(
        t.p.validate_id_jag(&sign_typed(&t.k1, Some(ID_JAG_TYP), &listed), DOORMAN, MCP)
            .await
            .is_ok()
    );
}
