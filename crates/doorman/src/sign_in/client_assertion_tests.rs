//! Tests of `client_assertion.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use axum::{Router, extract::State, routing::get};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::net::guarded::{
    FetchPolicy,
    testing::{loopback_fetcher, serve},
};

const CLIENT: &str = "https://client.example.com/client.json";
const TOKEN_ENDPOINT: &str = "https://doorman.example/oauth/token";
const ISSUER: &str = "https://doorman.example";
const AUDIENCES: &[&str] = &[TOKEN_ENDPOINT, ISSUER];
const START_MS: i64 = 1_800_000_000_000;

struct TestKey {
    kid: String,
    encoding: EncodingKey,
    public_point: Vec<u8>,
    jwk: Value,
}

fn es256_key(kid: &str) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    // The uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = pair.public_key().as_ref().to_vec();
    let jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
    });
    TestKey {
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public_point: point,
        jwk,
    }
}

fn claims(now_ms: i64, jti: &str) -> Value {
    let now = now_ms / 1000;
    json!({
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": TOKEN_ENDPOINT,
        "iat": now,
        "exp": now + 120,
        "jti": jti,
    })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn doc_with_inline(keys: &[&TestKey]) -> ClientMetadataDocument {
    let body = json!({
        "client_id": CLIENT,
        "redirect_uris": ["https://client.example.com/cb"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()},
    });
    ClientMetadataDocument::parse(CLIENT, body).unwrap()
}

fn doc_with_uri(uri: &str) -> ClientMetadataDocument {
    let body = json!({
        "client_id": CLIENT,
        "redirect_uris": ["https://client.example.com/cb"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": uri,
    });
    ClientMetadataDocument::parse(CLIENT, body).unwrap()
}

fn verifier(clock: &ManualClock) -> AssertionVerifier {
    AssertionVerifier::new(loopback_fetcher(64 * 1024), Arc::new(clock.clone()))
}

async fn check(
    verifier: &AssertionVerifier,
    doc: &ClientMetadataDocument,
    assertion: &str,
) -> Result<(), AssertionError> {
    verifier.verify(doc, JWT_BEARER, assertion, AUDIENCES).await
}

#[tokio::test]
async fn valid_assertion_accepted_once() {
    let clock = ManualClock::new(START_MS);
    let v = verifier(&clock);
    let key = es256_key("k1");
    let doc = doc_with_inline(&[&key]);
    let assertion = sign(&key, &claims(START_MS, "jti-1"));
    check(&v, &doc, &assertion).await.unwrap();

    let e = check(&v, &doc, &assertion).await.unwrap_err();
    assert!(matches!(e, AssertionError::Replayed), "{e}");

    // Once the assertion could no longer be accepted, its jti is forgotten.
    clock.advance(Duration::from_secs(600));
    let later = sign(&key, &claims(clock.now_ms(), "jti-2"));
    check(&v, &doc, &later).await.unwrap();
    let used = v.used.lock().unwrap();
    assert_eq!(used.seen.len(), 1, "jti-1 was pruned");
}

/// Several nodes share the store: an assertion accepted by one is a replay on the other, on
/// both engines; a jti past its time may be used again.
#[tokio::test]
async fn a_replay_is_refused_across_nodes() {
    for (store, _guard) in crate::store::testing::engines().await {
        let engine = store.engine();
        let clock = ManualClock::new(START_MS);
        let (a, b) = (
            verifier(&clock).with_store(store.clone()),
            verifier(&clock).with_store(store.clone()),
        );
        let key = es256_key("k1");
        let doc = doc_with_inline(&[&key]);
        let assertion = sign(&key, &claims(START_MS, "jti-shared"));
        // Both nodes at once: exactly one accepts.
        let (ra, rb) = tokio::join!(check(&a, &doc, &assertion), check(&b, &doc, &assertion));
        assert_eq!(
            [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(),
            1,
            "{engine}: {ra:?} {rb:?}"
        );
        let e = check(&a, &doc, &assertion).await.unwrap_err();
        assert!(matches!(e, AssertionError::Replayed), "{engine}: {e}");
        // Ten minutes on, the same jti in a new assertion is a new assertion.
        clock.advance(Duration::from_secs(600));
        let again = sign(&key, &claims(clock.now_ms(), "jti-shared"));
        check(&b, &doc, &again).await.unwrap();
    }
}

#[tokio::test]
async fn aud_may_be_an_array_naming_the_issuer() {
    let clock = ManualClock::new(START_MS);
    let key = es256_key("k1");
    let mut c = claims(START_MS, "a");
    c["aud"] = json!(["https://elsewhere.example", ISSUER]);
    check(
        &verifier(&clock),
        &doc_with_inline(&[&key]),
        &sign(&key, &c),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn claim_rules() {
    let clock = ManualClock::new(START_MS);
    let key = es256_key("k1");
    let doc = doc_with_inline(&[&key]);
    let now = START_MS / 1000;
    /// What the case is, how it changes valid claims, and the refusal expected.
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Value)>,
        fn(&AssertionError) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "wrong aud",
            Box::new(|c| c["aud"] = json!("https://other.example/token")),
            |e| matches!(e, AssertionError::Audience { .. }),
        ),
        (
            "no aud",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            |e| matches!(e, AssertionError::Audience { .. }),
        ),
        (
            "expired",
            Box::new(move |c| c["exp"] = json!(now - 120)),
            |e| matches!(e, AssertionError::Expired),
        ),
        (
            "exp too far ahead",
            Box::new(move |c| c["exp"] = json!(now + 3600)),
            |e| matches!(e, AssertionError::TooLong),
        ),
        (
            "no exp",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            |e| matches!(e, AssertionError::MissingExp),
        ),
        (
            "nbf in the future",
            Box::new(move |c| c["nbf"] = json!(now + 300)),
            |e| matches!(e, AssertionError::NotYetValid),
        ),
        (
            "iat in the future",
            Box::new(move |c| c["iat"] = json!(now + 300)),
            |e| matches!(e, AssertionError::IssuedInFuture),
        ),
        (
            "iss differs from sub",
            Box::new(|c| c["iss"] = json!("https://attacker.example/client.json")),
            |e| matches!(e, AssertionError::IssuerSubject),
        ),
        (
            "sub is another client",
            Box::new(|c| c["sub"] = json!("someone-else")),
            |e| matches!(e, AssertionError::IssuerSubject),
        ),
        (
            "no jti",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            |e| matches!(e, AssertionError::MissingJti),
        ),
    ];
    let v = verifier(&clock);
    for (name, mutate, expected) in cases {
        let mut c = claims(START_MS, name);
        mutate(&mut c);
        let e = check(&v, &doc, &sign(&key, &c)).await.unwrap_err();
        assert!(expected(&e), "{name}: {e}");
    }
    // Within the 60 s skew, nbf/iat slightly ahead and exp slightly past are accepted.
    let mut c = claims(START_MS, "skew");
    c["nbf"] = json!(now + 30);
    c["iat"] = json!(now + 30);
    c["exp"] = json!(now - 30);
    check(&v, &doc, &sign(&key, &c)).await.unwrap();
}

#[tokio::test]
async fn assertion_type_and_registration() {
    let clock = ManualClock::new(START_MS);
    let v = verifier(&clock);
    let key = es256_key("k1");
    let doc = doc_with_inline(&[&key]);
    let assertion = sign(&key, &claims(START_MS, "t"));
    let e = v
        .verify(
            &doc,
            "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            &assertion,
            AUDIENCES,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, AssertionError::WrongType), "{e}");

    let mut public = doc.clone();
    public.token_endpoint_auth_method = "none".into();
    let e = check(&v, &public, &assertion).await.unwrap_err();
    assert!(matches!(e, AssertionError::NotRegistered), "{e}");
}

#[tokio::test]
async fn alg_none_and_hmac_refused() {
    let clock = ManualClock::new(START_MS);
    let v = verifier(&clock);
    let key = es256_key("k1");
    let doc = doc_with_inline(&[&key]);
    let payload = URL_SAFE_NO_PAD.encode(claims(START_MS, "n").to_string());

    // {"alg":"none"}, unsigned.
    let unsigned = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    let e = check(&v, &doc, &unsigned).await.unwrap_err();
    assert!(
        matches!(e, AssertionError::AlgorithmNotAllowed("none")),
        "{e}"
    );
    assert!(!e.to_string().contains(&payload));

    // HS256 keyed with the public key: the classic key-confusion forgery.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(START_MS, "h"),
        &EncodingKey::from_secret(&key.public_point),
    )
    .unwrap();
    let e = check(&v, &doc, &forged).await.unwrap_err();
    assert!(
        matches!(e, AssertionError::AlgorithmNotAllowed("HS256")),
        "{e}"
    );

    for bad in ["", "a.b", "a.b.c.d.e", "!!!.e30.x"] {
        let e = check(&v, &doc, bad).await.unwrap_err();
        assert!(matches!(e, AssertionError::Malformed), "{bad}: {e}");
    }
    let crit = format!(
        "{}.{payload}.sig",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","crit":["exp"]}"#)
    );
    let e = check(&v, &doc, &crit).await.unwrap_err();
    assert!(matches!(e, AssertionError::CriticalHeader), "{e}");
}

#[tokio::test]
async fn signature_from_another_key_refused() {
    let clock = ManualClock::new(START_MS);
    let registered = es256_key("k1");
    let attacker = es256_key("k1");
    let doc = doc_with_inline(&[&registered]);
    let e = check(
        &verifier(&clock),
        &doc,
        &sign(&attacker, &claims(START_MS, "x")),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AssertionError::BadSignature), "{e}");
}

#[tokio::test]
async fn key_selection_rules() {
    let clock = ManualClock::new(START_MS);
    let v = verifier(&clock);
    let k1 = es256_key("k1");
    let k2 = es256_key("k2");

    // No kid: fine with one fitting key, ambiguous with two.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = None;
    let no_kid = jsonwebtoken::encode(&header, &claims(START_MS, "nk"), &k1.encoding).unwrap();
    check(&v, &doc_with_inline(&[&k1]), &no_kid).await.unwrap();
    let no_kid = jsonwebtoken::encode(&header, &claims(START_MS, "nk2"), &k1.encoding).unwrap();
    let e = check(&v, &doc_with_inline(&[&k1, &k2]), &no_kid)
        .await
        .unwrap_err();
    assert!(matches!(e, AssertionError::AmbiguousKey), "{e}");

    // The named key declares another alg.
    let mut es384 = es256_key("k1");
    es384.jwk["alg"] = json!("ES384");
    let e = check(
        &v,
        &doc_with_inline(&[&es384]),
        &sign(&k1, &claims(START_MS, "m")),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AssertionError::KeyMismatch), "{e}");

    // An inline set is not refetched: an unknown kid is just unknown.
    let e = check(
        &v,
        &doc_with_inline(&[&k2]),
        &sign(&k1, &claims(START_MS, "u")),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AssertionError::UnknownKey), "{e}");
}

#[test]
fn keys_fit_only_their_algorithm() {
    let jwk = |v: Value| serde_json::from_value::<Jwk>(v).unwrap();
    let ec = |crv: &str| json!({"kty": "EC", "crv": crv, "x": "AA", "y": "AA"});
    assert!(key_fits(&jwk(ec("P-256")), Algorithm::ES256));
    assert!(!key_fits(&jwk(ec("P-384")), Algorithm::ES256));
    assert!(key_fits(&jwk(ec("P-384")), Algorithm::ES384));
    assert!(!key_fits(&jwk(ec("P-256")), Algorithm::RS256));
    let mut enc = ec("P-256");
    enc["use"] = json!("enc");
    assert!(!key_fits(&jwk(enc), Algorithm::ES256));
    let mut ops = ec("P-256");
    ops["key_ops"] = json!(["encrypt"]);
    assert!(!key_fits(&jwk(ops), Algorithm::ES256));
    let rsa = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
    assert!(key_fits(&jwk(rsa.clone()), Algorithm::PS256));
    assert!(!key_fits(&jwk(rsa), Algorithm::EdDSA));
    let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"});
    assert!(key_fits(&jwk(okp), Algorithm::EdDSA));
    let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
    for alg in [
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        assert!(!key_fits(&jwk(oct.clone()), alg));
    }
    // A short RSA modulus is refused.
    let short = JwkSet {
        keys: vec![jwk(
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB", "kid": "r"}),
        )],
    };
    let header = AssertionHeader {
        alg: Algorithm::RS256,
        kid: Some("r".into()),
    };
    assert!(matches!(
        select_key(&short, &header),
        Err(AssertionError::WeakKey)
    ));
}

#[derive(Clone)]
struct JwksServer {
    keys: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks(State(server): State<JwksServer>) -> axum::Json<Value> {
    server.hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(server.keys.lock().unwrap().clone())
}

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_uri_at_most_every_30_seconds() {
    let clock = ManualClock::new(START_MS);
    let v = verifier(&clock);
    let old = es256_key("old");
    let new = es256_key("new");
    let server = JwksServer {
        keys: Arc::new(Mutex::new(json!({"keys": [old.jwk.clone()]}))),
        hits: Arc::default(),
    };
    let addr = serve(
        Router::new()
            .route("/jwks.json", get(jwks))
            .with_state(server.clone()),
    )
    .await;
    let doc = doc_with_uri(&format!("http://{addr}/jwks.json"));

    check(&v, &doc, &sign(&old, &claims(START_MS, "1")))
        .await
        .unwrap();
    check(&v, &doc, &sign(&old, &claims(START_MS, "2")))
        .await
        .unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "the set is cached");

    // The client rotates; the set was fetched just now, so no refetch yet.
    *server.keys.lock().unwrap() = json!({"keys": [new.jwk.clone()]});
    let e = check(&v, &doc, &sign(&new, &claims(clock.now_ms(), "3")))
        .await
        .unwrap_err();
    assert!(matches!(e, AssertionError::UnknownKey), "{e}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    clock.advance(Duration::from_secs(31));
    check(&v, &doc, &sign(&new, &claims(clock.now_ms(), "4")))
        .await
        .unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    check(&v, &doc, &sign(&new, &claims(clock.now_ms(), "5")))
        .await
        .unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    // The cached set expires after 10 minutes (no Cache-Control).
    clock.advance(Duration::from_secs(601));
    check(&v, &doc, &sign(&new, &claims(clock.now_ms(), "6")))
        .await
        .unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn jwks_uri_on_a_private_address_refused() {
    let clock = ManualClock::new(START_MS);
    let v = AssertionVerifier::new(
        GuardedFetcher::new(FetchPolicy {
            max_bytes: 64 * 1024,
            ..FetchPolicy::default()
        })
        .unwrap(),
        Arc::new(clock.clone()),
    );
    let key = es256_key("k1");
    let doc = doc_with_uri("https://10.0.0.7/jwks.json");
    let e = check(&v, &doc, &sign(&key, &claims(START_MS, "p")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AssertionError::KeyFetch(f) if matches!(**f, FetchError::ForbiddenAddress { .. })),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "the client's jwks_uri could not be fetched: https://10.0.0.7/jwks.json resolves to a private address (10.0.0.7)"
    );
}
