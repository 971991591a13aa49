//! The edge: what every request to `/mcp` passes before the gateway sees it.
//!
//! MCP 2025-11-25 basic/transports, "Security Warning", and 2026-07-28 streamable-http,
//! "Security & Endpoint": servers MUST validate `Origin` (403 when invalid) against DNS
//! rebinding; Doorman also checks `Host`, since a rebinding page reaches a loopback port under
//! its own host name.

use std::collections::HashSet;

use axum::{
    extract::Request,
    http::{StatusCode, header},
    response::Response,
};

use crate::{
    config::Config,
    gateway::{
        jsonrpc::{RpcError, code},
        transport::{closing, error_reply},
    },
};

/// The hosts and origins Doorman answers to.
pub struct EdgePolicy {
    hosts: HashSet<String>,
    origins: HashSet<String>,
}

impl EdgePolicy {
    pub fn from_config(config: &Config) -> Self {
        let mut hosts: HashSet<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(String::from)
            .collect();
        if let Some(h) = config.public_url().host_str() {
            hosts.insert(h.to_ascii_lowercase());
        }
        hosts.extend(
            config
                .server
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase()),
        );
        let origins = config
            .server
            .allowed_origins
            .iter()
            .filter_map(|o| url::Url::parse(o).ok())
            .map(|u| u.origin().ascii_serialization())
            .collect();
        Self { hosts, origins }
    }

    /// The host part of a `Host` header value (port removed, IPv6 brackets kept).
    fn host_of(authority: &str) -> String {
        let a = authority.trim().to_ascii_lowercase();
        if a.starts_with('[') {
            return a.split_inclusive(']').next().unwrap_or("").to_owned();
        }
        a.rsplit_once(':').map_or(a.clone(), |(h, _)| h.to_owned())
    }

    pub fn host_allowed(&self, host_header: &str) -> bool {
        self.hosts.contains(&Self::host_of(host_header))
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        let Ok(url) = url::Url::parse(origin) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let serialized = url.origin().ascii_serialization();
        self.origins.contains(&serialized)
            || url
                .host_str()
                .is_some_and(|h| self.hosts.contains(&h.to_ascii_lowercase()))
    }
}

/// The edge check of a `/mcp` request (`server.rs::Mcp::admit`): the 403 for other hosts or
/// from other origins, if any.
pub fn refusal(policy: &EdgePolicy, req: &Request) -> Option<Response> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    // The request's body is left unread: the connection closes after the refusal.
    let forbidden = |why: &str| {
        closing(error_reply(
            StatusCode::FORBIDDEN,
            None,
            &RpcError::new(code::BAD_REQUEST, format!("Forbidden: {why}")),
        ))
    };
    match host {
        Some(h) if policy.host_allowed(&h) => {}
        Some(h) => {
            tracing::warn!(host = %h, "refused a request for a host that is not allowed");
            return Some(forbidden(
                "this Host is not allowed (see server.allowed_hosts)",
            ));
        }
        None => return Some(forbidden("the request has no Host")),
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !policy.origin_allowed(origin) {
            tracing::warn!(origin = %origin, "refused a request from an origin that is not allowed");
            return Some(forbidden(
                "this Origin is not allowed (see server.allowed_origins)",
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> EdgePolicy {
        EdgePolicy::from_config(&Config::from_toml(extra).unwrap())
    }

    #[test]
    fn loopback_is_allowed_by_default_and_nothing_else() {
        let p = policy("");
        for ok in [
            "localhost:8421",
            "127.0.0.1:8421",
            "127.0.0.1",
            "[::1]:8421",
            "LOCALHOST",
        ] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8421",
            "127.0.0.1.nip.io:8421",
            "[::2]:1",
            "",
        ] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
        assert!(p.origin_allowed("http://localhost:3000"));
        assert!(!p.origin_allowed("http://evil.example.com"));
        assert!(!p.origin_allowed("null"));
        assert!(!p.origin_allowed("file:///"));
    }

    #[test]
    fn configured_hosts_and_origins_are_added() {
        let p = policy(
            "[server]\npublic_url = \"https://mcp.example.com\"\nallowed_hosts = [\"gw.internal\"]\nallowed_origins = [\"https://app.example.com\"]\n",
        );
        assert!(p.host_allowed("mcp.example.com"));
        assert!(p.host_allowed("gw.internal:443"));
        assert!(p.origin_allowed("https://app.example.com"));
        assert!(
            !p.origin_allowed("http://app.example.com"),
            "scheme is part of the origin"
        );
        assert!(p.origin_allowed("https://mcp.example.com"));
    }
}
