//! Fetching small JSON documents from URLs that clients hand Doorman (Client ID Metadata
//! Documents, `jwks_uri`s), guarded against server-side request forgery.
//!
//! A client chooses these URLs, so every fetch is a request Doorman makes on an attacker's
//! behalf. The guard (draft-ietf-oauth-client-id-metadata-document-02 §8.6, RFC 6890):
//! - `https` only; plain `http` only as a development allowance, and then only to loopback;
//! - no userinfo in the URL;
//! - every address a host resolves to is vetted, and the connection goes to exactly those
//!   vetted addresses: the resolver handed to hyper-util's `HttpConnector` is the one that
//!   looks the name up and refuses, so there is no second, unvetted lookup (DNS rebinding).
//!   IP-literal hosts never reach a resolver, so they are vetted here before sending;
//! - redirects are followed by hand, each hop checked by the same rules;
//! - one deadline for the whole fetch, and the body is limited while it is read.
//!
//! Errors are worded for a client developer reading an OAuth `error_description`; they never
//! carry a response body.

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::{TokioExecutor, TokioTimer},
};
use url::{Host, Url};

/// Cache lifetimes taken from `Cache-Control` are capped at this.
pub const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// What a fetch may do.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Development only: allow `http://` to hosts that resolve only to loopback addresses.
    pub allow_http_loopback: bool,
    /// The largest body read; a longer one is an error.
    pub max_bytes: usize,
    /// The deadline for the whole fetch, redirects included.
    pub timeout: Duration,
    /// How many redirects `get_json` follows.
    pub max_redirects: usize,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_http_loopback: false,
            // draft-ietf-oauth-client-id-metadata-document-02 §8.7: read at most 5 kilobytes.
            max_bytes: 5 * 1024,
            timeout: Duration::from_secs(5),
            max_redirects: 3,
        }
    }
}

/// A fetched JSON document.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: serde_json::Value,
    /// The URL the document came from, after redirects.
    pub final_url: Url,
    /// How long the document may be cached (`Cache-Control`, RFC 9111 §5.2.2): `Some(ZERO)` for
    /// `no-store`/`no-cache`, capped at [`MAX_CACHE_LIFETIME`], `None` when the server said
    /// nothing.
    pub max_age: Option<Duration>,
}

/// Why a fetch failed, in words fit for an OAuth `error_description`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{url} is not an https URL")]
    NotHttps { url: Url },
    #[error("{url} must not contain a user name or password")]
    UserInfo { url: Url },
    #[error("{url} has no host")]
    NoHost { url: Url },
    #[error("{url} resolves to {} address ({addr})", with_article(kind))]
    ForbiddenAddress {
        url: Url,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error(
        "{url} resolves to {addr}, which is not a loopback address; plain http is allowed only to loopback"
    )]
    PlainHttpNotLoopback { url: Url, addr: IpAddr },
    #[error("the host of {url} could not be resolved")]
    Unresolvable { url: Url },
    #[error("could not connect to {url} (connection or TLS handshake failed)")]
    Connect { url: Url },
    #[error("the request to {url} failed")]
    Request { url: Url },
    #[error("timed out after {}", human_duration(*after))]
    TimedOut { after: Duration },
    #[error("{url} answered with a redirect; the document must be served at that URL itself")]
    Redirected { url: Url },
    #[error("{url} redirected more than {max} times")]
    TooManyRedirects { url: Url, max: usize },
    #[error("{url} answered with a redirect without a usable Location")]
    BadRedirect { url: Url },
    #[error("{url} answered with HTTP status {status}")]
    Status { url: Url, status: u16 },
    #[error("{url} is served as {content_type}, not as JSON")]
    NotJson { url: Url, content_type: String },
    #[error("document is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the connection to {url} broke while reading the document")]
    Read { url: Url },
    #[error("{url} is not valid JSON")]
    InvalidJson { url: Url },
}

fn with_article(kind: &str) -> String {
    // "an unspecified", "an IETF", but "a unique-local" (said with a consonant).
    let vowel_sound = kind.starts_with(['a', 'e', 'i', 'o', 'u', 'I']) && !kind.starts_with("uni");
    format!("{} {kind}", if vowel_sound { "an" } else { "a" })
}

fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What an address is, as far as the SSRF guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Reachable on the public internet: fetches may go there.
    Public,
    /// `127.0.0.0/8` or `::1`: only under the development allowance.
    Loopback,
    /// A special-use address (RFC 6890 and its updates), never fetched; names the kind.
    Special(&'static str),
}

/// Classifies an address. draft-ietf-oauth-client-id-metadata-document-02 §8.6: an
/// authorization server MUST NOT fetch from special-use addresses as defined in RFC 6890.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::{Loopback, Public, Special};
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_unspecified() => Special("unspecified"), // RFC 1122 §3.2.1.3
        (0, _, _) => Special("this-network"),               // 0.0.0.0/8, RFC 1122 §3.2.1.3
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => Special("private"), // RFC 1918
        (100, 64..=127, _) => Special("shared (CGNAT)"),    // RFC 6598
        (127, _, _) => Loopback,                            // RFC 1122 §3.2.1.3
        (169, 254, _) => Special("link-local"),             // RFC 3927
        (192, 0, 0) => Special("IETF protocol"),            // RFC 6890 §2.2.2
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Special("documentation"), // RFC 5737
        (192, 88, 99) => Special("6to4 relay"),             // RFC 7526
        (198, 18..=19, _) => Special("benchmarking"),       // RFC 2544
        (224..=239, _, _) => Special("multicast"),          // RFC 5771
        _ if ip.is_broadcast() => Special("broadcast"),     // RFC 919
        (240..=255, _, _) => Special("reserved"),           // RFC 1112 §4
        _ => Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::{Loopback, Public, Special};
    let s = ip.segments();
    if ip.is_unspecified() {
        return Special("unspecified"); // RFC 4291 §2.5.2
    }
    if ip.is_loopback() {
        return Loopback; // RFC 4291 §2.5.3
    }
    // ::ffff:0:0/96, RFC 4291 §2.5.5.2: an IPv4 address in disguise, judged as that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return embedded(v4);
    }
    // ::/96, RFC 4291 §2.5.5.1: IPv4-compatible addresses are deprecated and never public.
    if s[..6] == [0; 6] {
        return Special("IPv4-compatible");
    }
    let tail_v4 = Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32);
    match s[0] {
        // 64:ff9b::/96, RFC 6052: NAT64 reaches the embedded IPv4 address.
        0x0064 if s[1] == 0xff9b && s[2..6] == [0; 4] => embedded(tail_v4),
        0x0064 if s[1] == 0xff9b && s[2] == 0x0001 => Special("NAT64 local-use"), // RFC 8215
        0x0100 if s[1..4] == [0; 3] => Special("discard-only"),                   // RFC 6666
        0x2001 if s[1] == 0x0db8 => Special("documentation"),                     // RFC 3849
        // 2001::/23, RFC 2928 (Teredo, benchmarking, ORCHID…), RFC 6890 §2.2.3.
        0x2001 if s[1] < 0x0200 => Special("IETF protocol"),
        // 2002::/16, RFC 3056: 6to4 reaches the IPv4 address in bits 16..48.
        0x2002 => embedded(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32)),
        0x3fff if s[1] < 0x1000 => Special("documentation"), // 3fff::/20, RFC 9637
        x if x & 0xfe00 == 0xfc00 => Special("unique-local"), // fc00::/7, RFC 4193
        x if x & 0xffc0 == 0xfe80 => Special("link-local"),  // fe80::/10, RFC 4291 §2.5.6
        x if x & 0xffc0 == 0xfec0 => Special("site-local"),  // fec0::/10, RFC 3879
        x if x & 0xff00 == 0xff00 => Special("multicast"),   // ff00::/8, RFC 4291 §2.7
        x if x & 0xe000 == 0x2000 => Public,                 // 2000::/3 global unicast
        _ => Special("reserved"), // unallocated (RFC 4291 §2.4), 5f00::/16 SRv6 (RFC 9602)
    }
}

/// An IPv4 address reached through an IPv6 form: the same verdict, except that loopback in
/// disguise never qualifies for the development allowance.
fn embedded(v4: Ipv4Addr) -> AddressClass {
    match classify_v4(v4) {
        AddressClass::Loopback => AddressClass::Special("loopback"),
        other => other,
    }
}

/// Which addresses a connection may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressRule {
    /// https: public addresses only.
    PublicOnly,
    /// The plain-http development allowance: every address must be loopback.
    LoopbackOnly,
}

/// A refused address, found by the resolver or by the literal check.
#[derive(Debug)]
enum Refusal {
    Unresolvable,
    Special { addr: IpAddr, kind: &'static str },
    NotLoopback { addr: IpAddr },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unresolvable => f.write_str("the name could not be resolved"),
            Refusal::Special { addr, kind } => write!(f, "{addr} is {}", with_article(kind)),
            Refusal::NotLoopback { addr } => write!(f, "{addr} is not loopback"),
        }
    }
}

impl StdError for Refusal {}

impl Refusal {
    fn to_fetch_error(&self, url: &Url) -> FetchError {
        let url = url.clone();
        match *self {
            Refusal::Unresolvable => FetchError::Unresolvable { url },
            Refusal::Special { addr, kind } => FetchError::ForbiddenAddress { url, addr, kind },
            Refusal::NotLoopback { addr } => FetchError::PlainHttpNotLoopback { url, addr },
        }
    }
}

/// Refuses the whole set when ANY address breaks the rule: a name with one private address
/// among public ones could still be steered to the private one.
fn vet(rule: AddressRule, addrs: impl IntoIterator<Item = IpAddr>) -> Result<(), Refusal> {
    for addr in addrs {
        match (classify(addr), rule) {
            (AddressClass::Special(kind), _) => return Err(Refusal::Special { addr, kind }),
            (AddressClass::Loopback, AddressRule::PublicOnly) => {
                return Err(Refusal::Special {
                    addr,
                    kind: "loopback",
                });
            }
            (AddressClass::Public, AddressRule::LoopbackOnly) => {
                return Err(Refusal::NotLoopback { addr });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The resolver given to `HttpConnector`: looks the name up once, vets every address, and
/// hands the connector exactly the vetted ones, so what was checked is what is dialled.
#[derive(Clone)]
struct VettingResolver {
    rule: AddressRule,
}

type ResolveFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, Refusal>> + Send>>;

impl tower_service::Service<Name> for VettingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Refusal;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let rule = self.rule;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| Refusal::Unresolvable)?
                .collect();
            if addrs.is_empty() {
                return Err(Refusal::Unresolvable);
            }
            vet(rule, addrs.iter().map(SocketAddr::ip))?;
            Ok(addrs.into_iter())
        })
    }
}

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<VettingResolver>>, Full<Bytes>>;
type PlainClient = Client<HttpConnector<VettingResolver>, Full<Bytes>>;

/// Fetches small JSON documents from client-supplied URLs through the SSRF guard.
#[derive(Clone)]
pub struct GuardedFetcher {
    policy: FetchPolicy,
    https: HttpsClient,
    /// Present only under the development allowance.
    plain_loopback: Option<PlainClient>,
}

impl GuardedFetcher {
    pub fn new(policy: FetchPolicy) -> anyhow::Result<Self> {
        let connector = |rule| {
            let mut http = HttpConnector::new_with_resolver(VettingResolver { rule });
            http.set_connect_timeout(Some(policy.timeout));
            http.set_nodelay(true);
            http
        };
        let mut https_inner = connector(AddressRule::PublicOnly);
        https_inner.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()?
            .https_only()
            .enable_all_versions()
            .wrap_connector(https_inner);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new());
        let https = builder.build(https);
        let plain_loopback = policy
            .allow_http_loopback
            .then(|| builder.build(connector(AddressRule::LoopbackOnly)));
        Ok(Self {
            policy,
            https,
            plain_loopback,
        })
    }

    /// The policy this fetcher applies.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Fetches a JSON document, following up to `max_redirects` redirects.
    pub async fn get_json(&self, url: &Url) -> Result<Fetched, FetchError> {
        self.fetch(url, true).await
    }

    /// Fetches a JSON document that must be served at `url` itself: a redirect is an error
    /// (draft-ietf-oauth-client-id-metadata-document-02 §5: the authorization server MUST NOT
    /// automatically follow redirects when fetching a Client ID Metadata Document).
    pub async fn get_json_without_redirects(&self, url: &Url) -> Result<Fetched, FetchError> {
        self.fetch(url, false).await
    }

    async fn fetch(&self, url: &Url, follow_redirects: bool) -> Result<Fetched, FetchError> {
        let after = self.policy.timeout;
        tokio::time::timeout(after, self.fetch_within_deadline(url, follow_redirects))
            .await
            .unwrap_or(Err(FetchError::TimedOut { after }))
    }

    async fn fetch_within_deadline(
        &self,
        start: &Url,
        follow_redirects: bool,
    ) -> Result<Fetched, FetchError> {
        let mut url = start.clone();
        let mut redirects = 0;
        loop {
            let response = self.send(&url).await?;
            let status = response.status();
            if is_redirect(status) {
                if !follow_redirects {
                    return Err(FetchError::Redirected { url });
                }
                if redirects == self.policy.max_redirects {
                    return Err(FetchError::TooManyRedirects {
                        url: start.clone(),
                        max: self.policy.max_redirects,
                    });
                }
                // Every hop is a new client-controlled URL: `send` checks it from scratch.
                let mut next = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| url.join(location).ok())
                    .ok_or_else(|| FetchError::BadRedirect { url: url.clone() })?;
                next.set_fragment(None);
                redirects += 1;
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    url,
                    status: status.as_u16(),
                });
            }
            return self.read_document(url, response).await;
        }
    }

    /// Checks a URL against the rules and sends a GET to it.
    async fn send(&self, url: &Url) -> Result<Response<Incoming>, FetchError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "application/json".parse().expect("a header"),
        );
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    /// Sends one request to a URL that came from outside the operator's config (a discovered
    /// authorization server's registration, token or revocation endpoint) under the same
    /// rules as every fetch: https only (loopback http under the development allowance), no
    /// userinfo, public addresses only, checked after DNS resolution. A redirect is returned
    /// as it is, never followed: the caller treats it as a failure. The caller bounds the time
    /// and the body it reads.
    pub async fn request(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, FetchError> {
        // draft-ietf-oauth-client-id-metadata-document-02 §8.6: only known schemes are fetched.
        let plain = match url.scheme() {
            "https" => false,
            "http" if self.plain_loopback.is_some() => true,
            _ => return Err(FetchError::NotHttps { url: url.clone() }),
        };
        // draft-ietf-oauth-client-id-metadata-document-02 §3: no userinfo; and a request to a
        // URL with credentials in it is never one Doorman should make on a client's behalf.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::UserInfo { url: url.clone() });
        }
        let rule = if plain {
            AddressRule::LoopbackOnly
        } else {
            AddressRule::PublicOnly
        };
        // The connector skips the resolver for IP literals, so they are vetted here.
        let literal = match url.host() {
            None => return Err(FetchError::NoHost { url: url.clone() }),
            Some(Host::Domain(_)) => None,
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        };
        if let Some(ip) = literal {
            vet(rule, [ip]).map_err(|refusal| refusal.to_fetch_error(url))?;
        }

        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|_| FetchError::Request { url: url.clone() })?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(
                header::USER_AGENT,
                concat!("Doorman/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|_| FetchError::Request { url: url.clone() })?;
        request.headers_mut().extend(headers);
        let result = match (&self.plain_loopback, plain) {
            (Some(client), true) => client.request(request).await,
            _ => self.https.request(request).await,
        };
        result.map_err(|e| {
            if let Some(refusal) = find_refusal(&e) {
                return refusal.to_fetch_error(url);
            }
            if e.is_connect() {
                FetchError::Connect { url: url.clone() }
            } else {
                FetchError::Request { url: url.clone() }
            }
        })
    }

    async fn read_document(
        &self,
        url: Url,
        response: Response<Incoming>,
    ) -> Result<Fetched, FetchError> {
        let max = self.policy.max_bytes;
        let headers = response.headers();
        // draft-ietf-oauth-client-id-metadata-document-02 §4: application/json or a more
        // specific application/<AS-defined>+json.
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(media_type);
        match content_type.as_deref() {
            Some(ct) if is_json_media_type(ct) => {}
            other => {
                return Err(FetchError::NotJson {
                    url,
                    content_type: describe_media_type(other),
                });
            }
        }
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|len| len > max as u64) {
            return Err(FetchError::TooLarge { max });
        }
        let max_age = cache_lifetime(headers);

        // draft-ietf-oauth-client-id-metadata-document-02 §8.7: stop reading at the limit
        // rather than buffering whatever the server sends.
        let body = match Limited::new(response.into_body(), max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(FetchError::TooLarge { max });
            }
            Err(_) => return Err(FetchError::Read { url }),
        };
        let body = serde_json::from_slice(&body)
            .map_err(|_| FetchError::InvalidJson { url: url.clone() })?;
        Ok(Fetched {
            body,
            final_url: url,
            max_age,
        })
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Walks an error's sources for the resolver's refusal.
fn find_refusal<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Refusal> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        current = e.source();
    }
    None
}

/// The media type without parameters, lower-cased (RFC 9110 §8.3.1).
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media_type(media_type: &str) -> bool {
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// A server-chosen media type, shown only when it is short and plain.
fn describe_media_type(media_type: Option<&str>) -> String {
    match media_type {
        None | Some("") => "no content type".into(),
        Some(mt)
            if mt.len() <= 64
                && mt
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/+-._".contains(&b)) =>
        {
            mt.into()
        }
        Some(_) => "an unrecognised content type".into(),
    }
}

/// How long a response may be kept, from `Cache-Control` (RFC 9111 §5.2.2).
///
/// `no-store` (§5.2.2.5) and `no-cache` (§5.2.2.4: reuse needs revalidation, which Doorman does
/// not do) give zero; `max-age` (§5.2.2.1) gives its value, capped; an unparsable `max-age` is
/// stale (§4.2.1). `None` when the response says nothing about caching.
fn cache_lifetime(headers: &HeaderMap) -> Option<Duration> {
    let mut lifetime: Option<u64> = None;
    let mut forbidden = false;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            forbidden = true;
            continue;
        };
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                forbidden = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                let seconds = match argument {
                    // RFC 9111 §1.2.2: delta-seconds too large to hold saturate.
                    Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => {
                        a.parse::<u64>().unwrap_or(u64::MAX)
                    }
                    _ => 0,
                };
                // Conflicting directives: the more cautious one wins.
                lifetime = Some(lifetime.map_or(seconds, |l| l.min(seconds)));
            }
        }
    }
    if forbidden {
        return Some(Duration::ZERO);
    }
    lifetime.map(|s| Duration::from_secs(s).min(MAX_CACHE_LIFETIME))
}

/// Helpers for tests in `sign_in` that need a document server on loopback.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;

    use super::{FetchPolicy, GuardedFetcher};

    /// Serves `router` on `127.0.0.1:0` for the rest of the test.
    pub async fn serve(router: axum::Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        });
        addr
    }

    /// A fetcher with the development allowance, so tests can use loopback servers.
    pub fn loopback_fetcher(max_bytes: usize) -> GuardedFetcher {
        GuardedFetcher::new(FetchPolicy {
            allow_http_loopback: true,
            max_bytes,
            ..FetchPolicy::default()
        })
        .expect("fetcher")
    }
}

#[cfg(test)]
#[path = "guarded_tests.rs"]
mod tests;
