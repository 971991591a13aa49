//! Who sent a request: the TCP peer, or, when the peer is one of `server.trusted_proxies`, the
//! address the proxies say they received it from. Rate limits, the audit trail and log lines use
//! this address.
//!
//! The proxies' statements are read from the one header they set (`server.forwarded_header`:
//! `X-Forwarded-For`, or RFC 7239 §5.2 `for` in `Forwarded`; never both, since a proxy passes a
//! client's own copy of the other through untouched), from the nearest hop outwards: each
//! trusted hop vouches for the one before it, and the first hop that is not a trusted proxy is
//! the client. A client can put anything at the far end, so nothing beyond that first untrusted
//! hop is read, and a hop that is not an address (`unknown`, an obfuscated name, garbage) ends
//! the walk at the last address known. Doorman builds its own URLs from `server.public_url`, so
//! it has no use for `X-Forwarded-Proto`.

use std::net::IpAddr;

use forwarded_header_value::ForwardedHeaderValue;
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::config::ForwardedHeader;

/// At most this many hops are read, nearest first: a request can carry any number.
const MAX_HOPS: usize = 32;

/// The peers whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { nets, header }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// The client of one request, as far as Doorman can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    pub ip: IpAddr,
}

/// One hop a proxy reported: its address, `None` when it is not an address.
type Hop = Option<IpAddr>;

tokio::task_local! {
    /// The client of the request being served: set by the listener around each request, and
    /// around an answer's work that goes on while its event stream is sent.
    static CURRENT: ClientAddress;
}

impl ClientAddress {
    /// The client of the request this task is serving, if it is serving one.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `work` as serving this client's request.
    pub fn scope<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, work)
    }

    /// `work`, still serving the current request's client wherever it is polled (an answer's
    /// body is polled outside the request's handler).
    pub fn keep<F: Future>(work: F) -> impl Future<Output = F::Output> {
        let current = Self::current();
        async move {
            match current {
                Some(c) => c.scope(work).await,
                None => work.await,
            }
        }
    }

    /// The client of a request that `peer` sent with `headers`.
    pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> Self {
        let mut client = Self {
            ip: canonical(peer),
        };
        if !trusted.contains(client.ip) {
            return client;
        }
        let hops = match trusted.header {
            ForwardedHeader::XForwardedFor => x_forwarded_for_hops(headers),
            ForwardedHeader::Forwarded => forwarded_hops(headers),
        };
        for hop in hops.iter().rev().take(MAX_HOPS) {
            let Some(ip) = hop else { break };
            client = Self { ip: canonical(*ip) };
            if !trusted.contains(client.ip) {
                break;
            }
        }
        client
    }
}

/// `::ffff:10.0.0.1` is `10.0.0.1` (a dual-stack listener reports IPv4 peers so).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The comma-separated elements of every line of a header, in order; a line that is not
/// visible ASCII is one element that is not an address.
fn elements<'a>(headers: &'a HeaderMap, name: &'static str) -> Vec<Option<&'a str>> {
    headers
        .get_all(HeaderName::from_static(name))
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').map(|e| Some(e.trim())).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// RFC 7239 §4: the `Forwarded` elements. An element is parsed on its own, so one that does not
/// parse (or a quoted value with a comma in it, split apart here) is a hop that is not an
/// address, never a shifted reading of the others.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    elements(headers, "forwarded")
        .into_iter()
        .map(|e| match e.map(ForwardedHeaderValue::from_forwarded) {
            Some(Ok(v)) if v.len() == 1 => v.proximate().forwarded_for_ip(),
            _ => None,
        })
        .collect()
}

/// `X-Forwarded-For: client, proxy1, proxy2`: addresses, some proxies adding a port.
fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Hop> {
    elements(headers, "x-forwarded-for")
        .into_iter()
        .map(|e| {
            e.and_then(|e| {
                e.parse::<IpAddr>()
                    .ok()
                    .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter().map(|n| n.parse().unwrap()).collect(),
            ForwardedHeader::XForwardedFor,
        )
    }

    fn rfc7239(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter().map(|n| n.parse().unwrap()).collect(),
            ForwardedHeader::Forwarded,
        )
    }

    fn resolve(peer: &str, headers: &[(&str, &str)], trusted: &TrustedProxies) -> String {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        ClientAddress::resolve(peer.parse().unwrap(), &h, trusted)
            .ip
            .to_string()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let lb = proxies(&["10.0.0.0/8", "192.0.2.7/32"]);
        let none = proxies(&[]);
        let xff = [("x-forwarded-for", "203.0.113.9")];
        // Without trusted proxies, or from a peer that is not one, the header is ignored.
        assert_eq!(resolve("198.51.100.1", &xff, &none), "198.51.100.1");
        assert_eq!(resolve("198.51.100.1", &xff, &lb), "198.51.100.1");
        // From the load balancer it is believed.
        assert_eq!(resolve("10.1.2.3", &xff, &lb), "203.0.113.9");
        assert_eq!(resolve("192.0.2.7", &xff, &lb), "203.0.113.9");
        // A dual-stack listener's mapped IPv4 peer is the IPv4 address.
        assert_eq!(resolve("::ffff:10.1.2.3", &xff, &lb), "203.0.113.9");
        // A trusted peer that forwards nothing is the client itself.
        assert_eq!(resolve("10.1.2.3", &[], &lb), "10.1.2.3");
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_nearest() {
        let lb = proxies(&["10.0.0.0/8"]);
        // The client wrote a fake address at the far end; nginx appended the real one.
        let spoofed = [("x-forwarded-for", "1.1.1.1, 203.0.113.9")];
        assert_eq!(resolve("10.0.0.1", &spoofed, &lb), "203.0.113.9");
        // Two proxies of ours: both are skipped.
        let chain = [("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")];
        assert_eq!(resolve("10.0.0.1", &chain, &lb), "203.0.113.9");
        // Several header lines are one list, in order.
        let lines = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
        ];
        assert_eq!(resolve("10.0.0.1", &lines, &lb), "203.0.113.9");
        // Garbage nearer than any address: the walk ends at the last address known.
        let garbage = [("x-forwarded-for", "203.0.113.9, not-an-ip, 10.0.0.2")];
        assert_eq!(resolve("10.0.0.1", &garbage, &lb), "10.0.0.2");
        // Garbage beyond the client is never read.
        let far = [("x-forwarded-for", "<script>, 203.0.113.9")];
        assert_eq!(resolve("10.0.0.1", &far, &lb), "203.0.113.9");
        // Ports and IPv6.
        let ports = [("x-forwarded-for", "[2001:db8::1]:4711, 203.0.113.9:5555")];
        assert_eq!(resolve("10.0.0.1", &ports, &lb), "203.0.113.9");
        let v6 = [("x-forwarded-for", "2001:db8::1")];
        assert_eq!(resolve("10.0.0.1", &v6, &lb), "2001:db8::1");
    }

    #[test]
    fn only_the_header_the_proxies_set_is_read() {
        // nginx sets X-Forwarded-For and passes a client's own `Forwarded` through untouched:
        // that copy must not name the client.
        let xff = proxies(&["10.0.0.0/8"]);
        let forged = [
            ("forwarded", "for=192.0.2.99"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(resolve("10.0.0.1", &forged, &xff), "203.0.113.9");
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=192.0.2.99")], &xff),
            "10.0.0.1"
        );
        // And the other way round, for proxies that set `Forwarded`.
        let fwd = rfc7239(&["10.0.0.0/8"]);
        let forged = [
            ("x-forwarded-for", "192.0.2.99"),
            ("forwarded", "for=203.0.113.9"),
        ];
        assert_eq!(resolve("10.0.0.1", &forged, &fwd), "203.0.113.9");
    }

    #[test]
    fn forwarded_is_read_per_element() {
        let lb = rfc7239(&["10.0.0.0/8"]);
        // RFC 7239 §4 examples.
        let one = [("forwarded", "for=192.0.2.60;proto=https;by=10.0.0.1")];
        assert_eq!(resolve("10.0.0.1", &one, &lb), "192.0.2.60");
        let v6 = [("forwarded", "for=\"[2001:db8:cafe::17]:4711\"")];
        assert_eq!(resolve("10.0.0.1", &v6, &lb), "2001:db8:cafe::17");
        let chain = [("forwarded", "for=1.1.1.1, for=192.0.2.43, for=10.0.0.9")];
        assert_eq!(resolve("10.0.0.1", &chain, &lb), "192.0.2.43");
        // `unknown`, an obfuscated node or an element that does not parse ends the walk.
        for odd in ["for=unknown", "for=_hidden", "for=\"bad", "nonsense"] {
            let h = [("forwarded", odd)];
            assert_eq!(resolve("10.0.0.1", &h, &lb), "10.0.0.1", "{odd}");
        }
        let after = [("forwarded", "for=192.0.2.43, for=unknown")];
        assert_eq!(resolve("10.0.0.1", &after, &lb), "10.0.0.1");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever a peer sends: an untrusted peer is its own client, and a trusted peer's
            /// client is itself or an address written in the header, never anything else.
            #[test]
            fn the_client_is_the_peer_or_an_address_it_was_told(
                value in "[0-9a-f:., \\[\\]_=;\"a-z]{0,60}",
                rfc in any::<bool>(),
                trusted_peer in any::<bool>(),
            ) {
                let lb = if rfc { rfc7239(&["10.0.0.0/8"]) } else { proxies(&["10.0.0.0/8"]) };
                let peer = if trusted_peer { "10.0.0.1" } else { "198.51.100.1" };
                let name = if rfc { "forwarded" } else { "x-forwarded-for" };
                let ip = resolve(peer, &[(name, value.as_str())], &lb);
                if trusted_peer {
                    // Every address spelled somewhere in the header (maximal runs of address
                    // characters, and each run's sub-runs, parsed).
                    let runs: Vec<&str> = value
                        .split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
                        .collect();
                    let want: IpAddr = ip.parse().unwrap();
                    let spelled = runs.iter().any(|r| {
                        (0..r.len()).any(|a| {
                            (a + 1..=r.len()).any(|b| {
                                r.get(a..b)
                                    .and_then(|t| t.parse::<IpAddr>().ok())
                                    .is_some_and(|t| canonical(t) == want)
                            })
                        })
                    });
                    prop_assert!(ip == peer || spelled, "{} from {:?}", ip, value);
                } else {
                    prop_assert_eq!(ip, peer);
                }
            }
        }
    }

    #[test]
    fn a_long_chain_of_trusted_hops_is_read_only_so_far() {
        let lb = proxies(&["10.0.0.0/8"]);
        let mut hops: Vec<String> = vec!["203.0.113.9".into()];
        hops.extend((0..100).map(|i| format!("10.0.0.{}", i % 250)));
        let h = hops.join(", ");
        let ip = resolve("10.0.0.1", &[("x-forwarded-for", &h)], &lb);
        assert!(ip.starts_with("10.0.0."), "{ip}");
    }
}
