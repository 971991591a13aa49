//! Tests of `fetch.rs`.

use std::{convert::Infallible, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use super::testing::{loopback_fetcher, serve};
use super::*;

fn json_response(body: String, cache_control: Option<&'static str>) -> Response {
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Some(cc) = cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    response
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn document_server() -> SocketAddr {
    let router = Router::new()
        .route(
            "/doc.json",
            get(|| async {
                json_response(json!({"hello": "world"}).to_string(), Some("max-age=120"))
            }),
        )
        .route(
            "/plain.json",
            get(|| async { json_response("{\"a\":1}".into(), None) }),
        )
        .route("/hop", get(|| async { redirect("/doc.json") }))
        .route(
            "/to-metadata",
            get(|| async { redirect("http://169.254.169.254/latest") }),
        )
        .route("/loop", get(|| async { redirect("/loop") }))
        .route(
            "/big",
            get(|| async { json_response(format!("\"{}\"", "x".repeat(10_000)), None) }),
        )
        .route(
            "/big-chunked",
            get(|| async {
                let chunks = (0..20).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b' '; 1000])));
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(futures_util::stream::iter(chunks)),
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                json_response("{}".into(), None)
            }),
        )
        .route(
            "/html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<p>secret</p>") }),
        )
        .route(
            "/vendor",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/jwk-set+json; charset=utf-8",
                    )],
                    "{\"keys\":[]}",
                )
            }),
        )
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "secret body") }),
        );
    serve(router).await
}

fn url(addr: SocketAddr, path: &str) -> Url {
    Url::parse(&format!("http://{addr}{path}")).unwrap()
}

#[tokio::test]
async fn fetches_json_from_loopback_under_the_allowance() {
    let addr = document_server().await;
    let fetched = loopback_fetcher(5120)
        .get_json(&url(addr, "/doc.json"))
        .await
        .unwrap();
    assert_eq!(fetched.body, json!({"hello": "world"}));
    assert_eq!(fetched.final_url, url(addr, "/doc.json"));
    assert_eq!(fetched.max_age, Some(Duration::from_secs(120)));

    let plain = loopback_fetcher(5120)
        .get_json(&url(addr, "/plain.json"))
        .await
        .unwrap();
    assert_eq!(plain.max_age, None);

    let vendor = loopback_fetcher(5120)
        .get_json(&url(addr, "/vendor"))
        .await
        .unwrap();
    assert_eq!(vendor.body, json!({"keys": []}));
}

#[tokio::test]
async fn localhost_by_name_goes_through_the_vetting_resolver() {
    let addr = document_server().await;
    let by_name = Url::parse(&format!("http://localhost:{}/doc.json", addr.port())).unwrap();
    let fetched = loopback_fetcher(5120).get_json(&by_name).await.unwrap();
    assert_eq!(fetched.body, json!({"hello": "world"}));
}

#[tokio::test]
async fn plain_http_refused_without_the_allowance() {
    let addr = document_server().await;
    let fetcher = GuardedFetcher::new(FetchPolicy::default()).unwrap();
    let err = fetcher.get_json(&url(addr, "/doc.json")).await.unwrap_err();
    assert!(matches!(err, FetchError::NotHttps { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("http://{addr}/doc.json is not an https URL")
    );
}

#[tokio::test]
async fn special_address_literals_refused_before_connecting() {
    let fetcher = GuardedFetcher::new(FetchPolicy::default()).unwrap();
    let cases = [
        ("https://10.0.0.1/x", "a private address (10.0.0.1)"),
        (
            "https://[::ffff:127.0.0.1]/x",
            "a loopback address (::ffff:127.0.0.1)",
        ),
        (
            "https://169.254.169.254/",
            "a link-local address (169.254.169.254)",
        ),
        ("https://127.0.0.1/x", "a loopback address (127.0.0.1)"),
        ("https://[fd00::1]/x", "a unique-local address (fd00::1)"),
        ("https://0.0.0.0/x", "an unspecified address (0.0.0.0)"),
    ];
    for (input, expected) in cases {
        let err = fetcher
            .get_json(&Url::parse(input).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::ForbiddenAddress { .. }),
            "{input}: {err}"
        );
        assert!(err.to_string().ends_with(expected), "{input}: {err}");
    }
    // Under the allowance a mapped loopback is still refused, and https never gets it.
    let err = loopback_fetcher(5120)
        .get_json(&Url::parse("http://[::ffff:127.0.0.1]:9/x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::ForbiddenAddress { .. }), "{err}");
    let err = loopback_fetcher(5120)
        .get_json(&Url::parse("https://127.0.0.1:9/x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::ForbiddenAddress { .. }), "{err}");
}

#[tokio::test]
async fn localhost_refused_without_the_allowance() {
    let fetcher = GuardedFetcher::new(FetchPolicy::default()).unwrap();
    let err = fetcher
        .get_json(&Url::parse("https://localhost/x").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::ForbiddenAddress {
                kind: "loopback",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("https://localhost/x resolves to a loopback address")
    );
}

#[tokio::test]
async fn scheme_and_userinfo_rules() {
    let fetcher = GuardedFetcher::new(FetchPolicy::default()).unwrap();
    for (input, expect_userinfo) in [
        ("ftp://example.com/x", false),
        ("file:///etc/passwd", false),
        ("https://user:pw@example.com/x", true),
        ("https://user@example.com/x", true),
    ] {
        let err = fetcher
            .get_json(&Url::parse(input).unwrap())
            .await
            .unwrap_err();
        if expect_userinfo {
            assert!(matches!(err, FetchError::UserInfo { .. }), "{input}: {err}");
        } else {
            assert!(matches!(err, FetchError::NotHttps { .. }), "{input}: {err}");
        }
    }
}

#[tokio::test]
async fn redirects_are_followed_and_each_hop_checked() {
    let addr = document_server().await;
    let fetcher = loopback_fetcher(5120);
    let fetched = fetcher.get_json(&url(addr, "/hop")).await.unwrap();
    assert_eq!(fetched.final_url, url(addr, "/doc.json"));

    let err = fetcher
        .get_json(&url(addr, "/to-metadata"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "http://169.254.169.254/latest resolves to a link-local address (169.254.169.254)"
    );

    let err = fetcher.get_json(&url(addr, "/loop")).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooManyRedirects { max: 3, .. }),
        "{err}"
    );

    let err = fetcher
        .get_json_without_redirects(&url(addr, "/hop"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Redirected { .. }), "{err}");
}

#[tokio::test]
async fn oversized_bodies_refused_while_reading() {
    let addr = document_server().await;
    let fetcher = loopback_fetcher(5120);
    for path in ["/big", "/big-chunked"] {
        let err = fetcher.get_json(&url(addr, path)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "document is larger than 5120 bytes",
            "{path}"
        );
    }
}

#[tokio::test]
async fn slow_server_times_out() {
    let addr = document_server().await;
    let fetcher = GuardedFetcher::new(FetchPolicy {
        allow_http_loopback: true,
        timeout: Duration::from_millis(300),
        ..FetchPolicy::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = fetcher.get_json(&url(addr, "/slow")).await.unwrap_err();
    assert_eq!(err.to_string(), "timed out after 300ms");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn wrong_content_type_and_status_refused_without_echoing_the_body() {
    let addr = document_server().await;
    let fetcher = loopback_fetcher(5120);
    let err = fetcher.get_json(&url(addr, "/html")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("http://{addr}/html is served as text/html, not as JSON")
    );
    let err = fetcher.get_json(&url(addr, "/missing")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("http://{addr}/missing answered with HTTP status 404")
    );
    assert!(!err.to_string().contains("secret"));
}

#[test]
fn cache_control_parsing() {
    let cases: &[(&[&str], Option<u64>)] = &[
        (&[], None),
        (&["public"], None),
        (&["max-age=300"], Some(300)),
        (&["public, max-age=60, must-revalidate"], Some(60)),
        (&["MAX-AGE=\"90\""], Some(90)),
        (&["max-age=999999999"], Some(86_400)),
        (&["max-age=99999999999999999999999"], Some(86_400)),
        (&["max-age=abc"], Some(0)),
        (&["max-age=600", "max-age=30"], Some(30)),
        (&["no-store"], Some(0)),
        (&["max-age=600, no-cache"], Some(0)),
        (&["max-age=600", "no-store"], Some(0)),
    ];
    for (values, expected) in cases {
        let mut headers = HeaderMap::new();
        for v in *values {
            headers.append(header::CACHE_CONTROL, HeaderValue::from_static(v));
        }
        assert_eq!(
            cache_lifetime(&headers),
            expected.map(Duration::from_secs),
            "{values:?}"
        );
    }
}

#[test]
fn media_types() {
    for ok in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/jwk-set+json",
    ] {
        assert!(is_json_media_type(&media_type(ok)), "{ok}");
    }
    for bad in ["text/html", "text/json", "application/jsonp", "+json", ""] {
        assert!(!is_json_media_type(&media_type(bad)), "{bad}");
    }
}

#[test]
fn address_classifier() {
    use AddressClass::{Loopback, Public, Special};
    let cases: &[(&str, AddressClass)] = &[
        ("8.8.8.8", Public),
        ("93.184.216.34", Public),
        ("1.1.1.1", Public),
        ("127.0.0.1", Loopback),
        ("127.255.0.9", Loopback),
        ("::1", Loopback),
        ("0.0.0.0", Special("unspecified")),
        ("0.1.2.3", Special("this-network")),
        ("10.0.0.5", Special("private")),
        ("172.16.0.1", Special("private")),
        ("172.31.255.255", Special("private")),
        ("172.32.0.1", Public),
        ("192.168.1.1", Special("private")),
        ("100.64.0.1", Special("shared (CGNAT)")),
        ("100.127.255.255", Special("shared (CGNAT)")),
        ("100.128.0.1", Public),
        ("169.254.169.254", Special("link-local")),
        ("192.0.0.8", Special("IETF protocol")),
        ("192.0.2.1", Special("documentation")),
        ("198.51.100.7", Special("documentation")),
        ("203.0.113.9", Special("documentation")),
        ("198.18.0.1", Special("benchmarking")),
        ("224.0.0.1", Special("multicast")),
        ("239.255.255.250", Special("multicast")),
        ("240.0.0.1", Special("reserved")),
        ("255.255.255.255", Special("broadcast")),
        ("::", Special("unspecified")),
        ("::ffff:127.0.0.1", Special("loopback")),
        ("::ffff:10.1.2.3", Special("private")),
        ("::ffff:169.254.169.254", Special("link-local")),
        ("::ffff:8.8.8.8", Public),
        ("::127.0.0.1", Special("IPv4-compatible")),
        ("::8.8.8.8", Special("IPv4-compatible")),
        ("64:ff9b::10.0.0.1", Special("private")),
        ("64:ff9b::8.8.8.8", Public),
        ("64:ff9b:1::1", Special("NAT64 local-use")),
        ("100::1", Special("discard-only")),
        ("2001:db8::1", Special("documentation")),
        ("2001::1", Special("IETF protocol")),
        ("2002:a00:1::", Special("private")),
        ("2002:808:808::", Public),
        ("3fff::1", Special("documentation")),
        ("fc00::1", Special("unique-local")),
        ("fd12:3456::1", Special("unique-local")),
        ("fe80::1", Special("link-local")),
        ("febf::1", Special("link-local")),
        ("fec0::1", Special("site-local")),
        ("ff02::1", Special("multicast")),
        ("5f00::1", Special("reserved")),
        ("4000::1", Special("reserved")),
        ("2606:4700:4700::1111", Public),
        ("2a00:1450:4001::1", Public),
    ];
    for (text, expected) in cases {
        let ip: IpAddr = text.parse().unwrap();
        assert_eq!(classify(ip), *expected, "{text}");
    }
}

#[test]
fn any_bad_address_refuses_the_set() {
    let public: IpAddr = "8.8.8.8".parse().unwrap();
    let private: IpAddr = "10.0.0.1".parse().unwrap();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(vet(AddressRule::PublicOnly, [public]).is_ok());
    assert!(vet(AddressRule::PublicOnly, [public, private]).is_err());
    assert!(vet(AddressRule::PublicOnly, [public, loopback]).is_err());
    assert!(vet(AddressRule::LoopbackOnly, [loopback]).is_ok());
    assert!(vet(AddressRule::LoopbackOnly, [loopback, public]).is_err());
    assert!(vet(AddressRule::LoopbackOnly, [loopback, private]).is_err());
}
