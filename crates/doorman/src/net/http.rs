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
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
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
