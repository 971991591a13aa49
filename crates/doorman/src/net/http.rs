//! The HTTP client Doorman uses towards upstreams and resources' authorization servers: hyper's pooled client with rustls.
//!
//! Directly on hyper rather than a convenience client because every tool call pays for it: no
//! per-response URL re-parse, no retry or redirect layers. Redirects are never followed (an
//! upstream URL is configured, never taken from a client, so a request and its headers go exactly
//! where the operator said).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

/// A credential that travels in the query string (an API key an upstream takes as `?key=…`):
/// handed to [`HttpClient::send`] as this header, whose value is one form-urlencoded
/// `name=value` pair, and moved by `send` into the request's URI. It never leaves Doorman as a
/// header, and the URI it makes is never logged.
pub const QUERY_CREDENTIAL: http::HeaderName =
    http::HeaderName::from_static("x-doorman-query-credential");

/// `uri` with `pair` (form-urlencoded `name=value`) added to its query.
fn with_query(uri: &Uri, pair: &str) -> Result<Uri, HttpError> {
    let mut parts = uri.clone().into_parts();
    let path = parts
        .path_and_query
        .as_ref()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let joined = if path.contains('?') {
        format!("{path}&{pair}")
    } else {
        format!("{path}?{pair}")
    };
    parts.path_and_query =
        Some(joined.parse().map_err(|_| {
            HttpError::InvalidResponse("the query credential is not URI-safe".into())
        })?);
    Uri::from_parts(parts)
        .map_err(|_| HttpError::InvalidResponse("the query credential is not URI-safe".into()))
}

/// Why a request got no usable answer. The texts complete a sentence that names the peer
/// ("{peer} is unreachable: …").
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("is unreachable: {0}")]
    Unreachable(String),
    #[error("sent an invalid response: {0}")]
    InvalidResponse(String),
}

/// A cheaply clonable, pooled HTTP/1.1 and HTTP/2 client.
#[derive(Clone)]
pub struct HttpClient(Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>);

impl HttpClient {
    pub fn new() -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Self(client))
    }

    /// Sends one request; the answer's body is read by the caller.
    pub async fn send(
        &self,
        method: Method,
        uri: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, HttpError> {
        let mut headers = headers;
        let uri = match headers.remove(&QUERY_CREDENTIAL) {
            Some(pair) => with_query(
                uri,
                pair.to_str().map_err(|_| {
                    HttpError::InvalidResponse("the query credential is not URI-safe".into())
                })?,
            )?,
            None => uri.clone(),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        self.0.request(req).await.map_err(|e| {
            let what = if e.is_connect() {
                "connection refused or failed"
            } else {
                "the request failed"
            };
            HttpError::Unreachable(what.into())
        })
    }
}

/// Reads a whole body, refusing one larger than `limit`.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, HttpError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(HttpError::InvalidResponse("the body is too large".into()))
        }
        Err(_) => Err(HttpError::Unreachable(
            "the connection broke while reading".into(),
        )),
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn a_query_credential_joins_the_query_and_leaves_the_rest_alone() {
        let base: Uri = "http://127.0.0.1:9/mcp".parse().unwrap();
        assert_eq!(
            with_query(&base, "api_key=a%2Bb").unwrap().to_string(),
            "http://127.0.0.1:9/mcp?api_key=a%2Bb"
        );
        let with: Uri = "https://x.example/v1/mcp?team=7".parse().unwrap();
        assert_eq!(
            with_query(&with, "key=k").unwrap().to_string(),
            "https://x.example/v1/mcp?team=7&key=k"
        );
    }
}
