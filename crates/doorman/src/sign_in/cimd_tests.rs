//! Tests of `cimd.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, Uri, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::net::guarded::testing::{loopback_fetcher, serve};

fn doc(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Example MCP Client",
        "client_uri": "https://app.example.com",
        "logo_uri": "javascript:alert(1)",
        "redirect_uris": ["https://app.example.com/callback", "http://127.0.0.1:3000/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "some_extension": {"ignored": true}
    })
}

const ID: &str = "https://app.example.com/oauth/client-metadata.json";

#[test]
fn client_id_rules() {
    let accepted = [
        "https://example.com/client.json",
        "https://app.example.com/oauth/client-metadata.json",
        "https://example.com:8443/c",
        "https://example.com/c?v=1",
        "https://example.com/c/",
        "https://example.com/a..b/c.json",
        "http://127.0.0.1:3000/client.json",
        "http://localhost:3000/client.json",
        "http://[::1]:3000/c",
    ];
    for id in accepted {
        assert!(is_metadata_client_id(id), "{id} should be accepted");
    }
    let refused = [
        "",
        "client-123",
        "6f1c2d3e",
        "https://example.com",
        "https://example.com/",
        "https://example.com?x=1",
        "https://example.com/c#frag",
        "https://example.com/c#",
        "https://user@example.com/c",
        "https://user:pw@example.com/c",
        "https://@example.com/c",
        "https://example.com/a/../c",
        "https://example.com/./c",
        "https://example.com/a/.",
        "https://example.com/a/%2e%2E/c",
        "https://example.com/a/%2E/c",
        "http://example.com/c",
        "http://10.0.0.1/c",
        "ftp://example.com/c",
        "HTTPS://example.com/c",
        "https://exa mple.com/c",
        "https://example.com/c\n",
        "https://example.com/c\\d",
        "https://example.com/c\"",
        "https:///c",
    ];
    for id in refused {
        assert!(!is_metadata_client_id(id), "{id:?} should be refused");
    }
}

#[test]
fn valid_document_parsed() {
    let parsed = ClientMetadataDocument::parse(ID, doc(ID)).unwrap();
    assert_eq!(parsed.client_id, ID);
    assert_eq!(parsed.client_name.as_deref(), Some("Example MCP Client"));
    assert_eq!(
        parsed.client_uri.unwrap().as_str(),
        "https://app.example.com/"
    );
    assert_eq!(parsed.logo_uri, None, "javascript: is dropped");
    assert_eq!(parsed.redirect_uris.len(), 2);
    assert_eq!(parsed.token_endpoint_auth_method, "none");
    assert_eq!(parsed.grant_types, ["authorization_code", "refresh_token"]);

    let mut minimal = json!({"client_id": ID, "redirect_uris": ["https://a.example/cb"]});
    let parsed = ClientMetadataDocument::parse(ID, minimal.take()).unwrap();
    assert_eq!(parsed.token_endpoint_auth_method, "none");
    assert_eq!(parsed.grant_types, ["authorization_code"]);
    assert_eq!(parsed.response_types, ["code"]);
}

fn refused(mutate: impl FnOnce(&mut Value)) -> CimdError {
    let mut body = doc(ID);
    mutate(&mut body);
    ClientMetadataDocument::parse(ID, body).unwrap_err()
}

#[test]
fn invalid_documents_refused() {
    let e = refused(|d| d["client_id"] = json!("https://app.example.com/other.json"));
    assert!(matches!(e, CimdError::ClientIdMismatch), "{e}");
    // Exact string comparison: an equivalent spelling is still a different client id.
    let e = refused(|d| {
        d["client_id"] = json!("https://app.example.com:443/oauth/client-metadata.json")
    });
    assert!(matches!(e, CimdError::ClientIdMismatch), "{e}");
    let e = refused(|d| {
        d.as_object_mut().unwrap().remove("client_id");
    });
    assert!(matches!(e, CimdError::MissingClientId), "{e}");

    let e = refused(|d| {
        d.as_object_mut().unwrap().remove("redirect_uris");
    });
    assert!(matches!(e, CimdError::NoRedirectUris), "{e}");
    let e = refused(|d| d["redirect_uris"] = json!([]));
    assert!(matches!(e, CimdError::NoRedirectUris), "{e}");
    let e = refused(|d| d["redirect_uris"] = json!(["https://a.example/cb", "/relative"]));
    assert_eq!(e.to_string(), "redirect_uris[1] is not an absolute URL");
    let e = refused(|d| d["redirect_uris"] = json!(["https://a.example/cb#x"]));
    assert_eq!(e.to_string(), "redirect_uris[0] has a fragment");
    let e = refused(|d| d["redirect_uris"] = json!(["javascript:alert(1)"]));
    assert!(matches!(e, CimdError::BadRedirectUri { .. }), "{e}");
    let e = refused(|d| d["redirect_uris"] = json!(["http://evil.example/cb"]));
    assert!(matches!(e, CimdError::BadRedirectUri { .. }), "{e}");
    let e = refused(|d| d["redirect_uris"] = json!("https://a.example/cb"));
    assert_eq!(
        e.to_string(),
        "the client metadata document is invalid: redirect_uris has the wrong type"
    );

    let e = refused(|d| d["token_endpoint_auth_method"] = json!("client_secret_basic"));
    assert!(
        matches!(e, CimdError::SharedSecretMethod("client_secret_basic")),
        "{e}"
    );
    let e = refused(|d| d["token_endpoint_auth_method"] = json!("client_secret_jwt"));
    assert!(matches!(e, CimdError::SharedSecretMethod(_)), "{e}");
    let e = refused(|d| d["token_endpoint_auth_method"] = json!("tls_client_auth"));
    assert!(matches!(e, CimdError::UnsupportedAuthMethod), "{e}");
    let e = refused(|d| d["client_secret"] = json!("s3cret"));
    assert!(matches!(e, CimdError::SharedSecret), "{e}");

    let e = refused(|d| d["token_endpoint_auth_method"] = json!("private_key_jwt"));
    assert!(matches!(e, CimdError::MissingKeys), "{e}");
    let e = refused(|d| {
        d["token_endpoint_auth_method"] = json!("private_key_jwt");
        d["jwks_uri"] = json!("https://app.example.com/jwks.json");
        d["jwks"] = json!({"keys": []});
    });
    assert!(matches!(e, CimdError::BothKeySources), "{e}");
    let e = refused(|d| d["jwks_uri"] = json!("file:///etc/keys"));
    assert!(matches!(e, CimdError::InvalidJwksUri), "{e}");
    let e = refused(|d| {
        d["jwks"] =
            json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}]});
    });
    assert!(matches!(e, CimdError::PrivateKeyMaterial), "{e}");
    let e = refused(|d| d["jwks"] = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
    assert!(matches!(e, CimdError::PrivateKeyMaterial), "{e}");
    let e = refused(|d| d["jwks"] = json!({"no_keys": true}));
    assert!(matches!(e, CimdError::InvalidJwks), "{e}");

    assert!(matches!(
        ClientMetadataDocument::parse(ID, json!(["not", "an", "object"])),
        Err(CimdError::NotAnObject)
    ));
}

#[test]
fn private_key_jwt_with_keys_accepted() {
    let mut body = doc(ID);
    body["token_endpoint_auth_method"] = json!("private_key_jwt");
    body["jwks_uri"] = json!("https://app.example.com/jwks.json");
    let parsed = ClientMetadataDocument::parse(ID, body).unwrap();
    assert_eq!(parsed.token_endpoint_auth_method, "private_key_jwt");
    assert!(parsed.jwks_uri.is_some());
}

/// A document server whose responses tests can shape; it counts the requests it serves.
#[derive(Clone, Default)]
struct Server {
    hits: Arc<AtomicUsize>,
    cache_control: Arc<Mutex<Option<&'static str>>>,
    mismatch: Arc<std::sync::atomic::AtomicBool>,
    delay_ms: Arc<AtomicUsize>,
}

async fn document(State(server): State<Server>, uri: Uri, headers: HeaderMap) -> impl IntoResponse {
    server.hits.fetch_add(1, Ordering::SeqCst);
    let delay = server.delay_ms.load(Ordering::SeqCst) as u64;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // The document names the URL it was requested at, query included.
    let id = if server.mismatch.load(Ordering::SeqCst) {
        format!("http://{host}/someone-else.json")
    } else {
        format!("http://{host}{uri}")
    };
    let mut response = axum::Json(doc(&id)).into_response();
    if let Some(cc) = *server.cache_control.lock().unwrap() {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    response
}

async fn start(server: &Server) -> String {
    let router = Router::new()
        .route("/client.json", get(document))
        .route(
            "/moved.json",
            get(|| async { axum::response::Redirect::temporary("/client.json") }),
        )
        .with_state(server.clone());
    let addr = serve(router).await;
    format!("http://{addr}/client.json")
}

fn cache(clock: &ManualClock) -> ClientMetadataCache {
    ClientMetadataCache::new(
        loopback_fetcher(5120),
        Arc::new(clock.clone()),
        Duration::from_secs(300),
    )
}

#[tokio::test]
async fn resolved_once_then_served_from_cache_until_expiry() {
    let server = Server::default();
    let id = start(&server).await;
    let clock = ManualClock::new(1_000_000);
    let cache = cache(&clock);

    let first = cache.resolve(&id).await.unwrap();
    assert_eq!(first.client_id, id);
    let second = cache.resolve(&id).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    clock.advance(Duration::from_secs(299));
    cache.resolve(&id).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(2));
    cache.resolve(&id).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn max_age_and_no_store_honoured() {
    let server = Server::default();
    let id = start(&server).await;
    let clock = ManualClock::new(0);
    let cache = cache(&clock);

    *server.cache_control.lock().unwrap() = Some("max-age=60");
    cache.resolve(&id).await.unwrap();
    clock.advance(Duration::from_secs(59));
    cache.resolve(&id).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(2));

    *server.cache_control.lock().unwrap() = Some("no-store");
    cache.resolve(&id).await.unwrap();
    cache.resolve(&id).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn invalid_documents_and_redirects_are_not_cached() {
    let server = Server::default();
    let id = start(&server).await;
    let clock = ManualClock::new(0);
    let cache = cache(&clock);

    server.mismatch.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let e = cache.resolve(&id).await.unwrap_err();
        assert!(matches!(e, CimdError::ClientIdMismatch), "{e}");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    let moved = id.replace("client.json", "moved.json");
    let e = cache.resolve(&moved).await.unwrap_err();
    assert!(
        matches!(&e, CimdError::Fetch(f) if matches!(**f, FetchError::Redirected { .. })),
        "{e}"
    );
}

#[tokio::test]
async fn concurrent_resolutions_share_one_fetch() {
    let server = Server::default();
    server.delay_ms.store(200, Ordering::SeqCst);
    let id = start(&server).await;
    let clock = ManualClock::new(0);
    let cache = Arc::new(cache(&clock));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let cache = cache.clone();
            let id = id.clone();
            tokio::spawn(async move { cache.resolve(&id).await.map(|d| d.client_id.clone()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), id);
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn oldest_entries_evicted_at_capacity() {
    let server = Server::default();
    let id = start(&server).await;
    let clock = ManualClock::new(0);
    let cache = cache(&clock).with_max_entries(2);
    let [a, b, c] = ["a", "b", "c"].map(|q| format!("{id}?{q}"));
    for id in [&a, &b, &c] {
        assert_eq!(cache.resolve(id).await.unwrap().client_id, *id);
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    cache.resolve(&b).await.unwrap();
    cache.resolve(&c).await.unwrap();
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        3,
        "b and c are still cached"
    );
    cache.resolve(&a).await.unwrap();
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        4,
        "a, the oldest, was evicted"
    );
    let state = cache.state.lock().unwrap();
    assert_eq!(state.entries.len(), 2);
    assert_eq!(state.order.len(), 2);
    assert!(!state.entries.contains_key(&b), "then b was the oldest");
}

#[tokio::test]
async fn not_a_metadata_url() {
    let clock = ManualClock::new(0);
    let e = cache(&clock).resolve("my-client").await.unwrap_err();
    assert!(matches!(e, CimdError::NotMetadataUrl(_)), "{e}");
}
