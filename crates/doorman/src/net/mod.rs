//! Outbound HTTP, in one place: the pooled client for upstreams and resources' authorization
//! servers ([`http`]), the SSRF-guarded fetcher for URLs that come from outside the operator's
//! config ([`guarded`]), and reading `WWW-Authenticate` challenges. Also the one inbound
//! addressing question: who the client of a request is behind trusted proxies
//! ([`client_address`]).

pub mod client_address;
pub mod guarded;
pub mod http;

pub use client_address::{ClientAddress, TrustedProxies};
pub use http::{HttpClient, HttpError, read_body};

/// One parameter of the `Bearer` challenge in a `WWW-Authenticate` value (RFC 6750 §3,
/// parsed per RFC 9110 §11.6.1); `None` when absent or unparsable.
pub fn auth_param(challenge: &str, name: &str) -> Option<String> {
    http_auth::parser::ChallengeParser::new(challenge)
        .filter_map(Result::ok)
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))?
        .params
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_unescaped())
}
