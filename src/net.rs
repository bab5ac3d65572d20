//! Addresses: the canonical form of a client address, the key that limits and lockouts count
//! an address under, and the guard every outbound request (webhooks, and later client
//! metadata documents) goes through so that it never reaches a loopback, private or other
//! special-purpose address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// An address as limits and logs see it: an IPv4-mapped IPv6 address is the IPv4 address it
/// maps, so one client cannot count twice.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses one address as a client or a proxy writes it: bare, `a.b.c.d:port`, `[v6]` or
/// `[v6]:port`.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(canonical_ip(addr.ip()));
    }
    let bracketed = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'))?;
    bracketed.parse::<Ipv6Addr>().ok().map(|v6| canonical_ip(IpAddr::V6(v6)))
}

/// The key limits and lockouts count an address under: an IPv4 address itself, an IPv6
/// address by its /64, since one subscriber usually holds a whole /64 and could otherwise
/// rotate through it.
pub fn address_key(ip: &str) -> String {
    match parse_ip(ip) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(v4) => v4.to_string(),
        None => ip.to_owned(),
    }
}

/// Whether a URL's host is a loopback address (`127.0.0.0/8`, `::1`).
pub fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Whether a URL's host is this machine: a loopback address or the name `localhost`.
pub fn is_local_host(url: &url::Url) -> bool {
    is_loopback_host(url) || url.host_str() == Some("localhost")
}

/// Whether an address is an ordinary public unicast address: none of RFC 6890's
/// special-purpose ranges (and their later additions) that an outbound request must not
/// reach without the development switch.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(a == 0 // "this network"
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGN)
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224) // multicast, reserved (240/4) and broadcast
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    if v6.is_unspecified() || v6.is_loopback() {
        return false;
    }
    // Embedded IPv4 (IPv4-compatible ::/96, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4
    // 2002::/16) reaches the IPv4 address it embeds: judge that one.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0; 6] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return false;
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    !((s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || s[..5] == [0, 0, 0, 0, 0] // ::ffff:0:0/96 handled by canonical_ip; ::/80 rest
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments 2001::/23 (Teredo, ORCHID…)
        || (s[0] == 0x2001 && s[1] == 0xdb8)) // documentation
}

/// Resolves host names for an HTTP client and hands it only public addresses, so the
/// address checked is the address connected to: a name that resolves to a public address
/// when a URL is registered and to a private one when it is used (DNS rebinding) is refused
/// at connection time. IP literals never reach a resolver: [`check_url`] judges them.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
                return Err(format!("{host} resolves to a non-public address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Why an outbound URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("the url is not valid")]
    Invalid,
    #[error("only http and https urls are allowed")]
    Scheme,
    #[error("the url has no host")]
    NoHost,
    #[error("the url's host does not resolve")]
    Unresolved,
    #[error("the url resolves to a loopback, private or other special-purpose address")]
    NotPublic,
}

/// An outbound URL's form: it parses, is http(s) and has a host.
pub fn outbound_url(url: &str) -> Result<reqwest::Url, UrlError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| UrlError::Invalid)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    parsed.host().ok_or(UrlError::NoHost)?;
    Ok(parsed)
}

/// Checks an outbound URL before it is stored: http(s), a host, and (unless
/// `allow_private`) a public IP literal or a name that resolves only to public addresses.
/// The connection is guarded again by [`PublicOnly`], since names can change what they
/// resolve to.
pub async fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, UrlError> {
    let parsed = outbound_url(url)?;
    let host = parsed.host().ok_or(UrlError::NoHost)?;
    if allow_private {
        return Ok(parsed);
    }
    let public = match host {
        url::Host::Ipv4(v4) => is_public(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => is_public(IpAddr::V6(v6)),
        url::Host::Domain(name) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
                .await
                .map_err(|_| UrlError::Unresolved)?
                .collect();
            !addrs.is_empty() && addrs.iter().all(|a| is_public(a.ip()))
        }
    };
    if public { Ok(parsed) } else { Err(UrlError::NotPublic) }
}

/// An HTTP client for outbound requests to URLs that outsiders choose: no redirects (one
/// could lead anywhere), no proxy from the environment, and, unless `allow_private`, a
/// resolver that connects only to public addresses. `ca_file` adds trusted roots (PEM).
pub fn outbound_client(
    timeout: Duration,
    user_agent: &str,
    allow_private: bool,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(user_agent);
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("outbound CA file {}: {e}", path.display()))?;
        for root in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(root);
        }
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().expect("ip"))
    }

    #[test]
    fn special_purpose_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.1",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "64:ff9b::808:808",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:a00:1::",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
    }

    #[test]
    fn ordinary_addresses_are_public() {
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2002:808:808::", "::ffff:8.8.8.8"] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn addresses_are_canonical_and_ipv6_counts_by_its_64() {
        assert_eq!(parse_ip("::ffff:1.2.3.4"), parse_ip("1.2.3.4"));
        assert_eq!(parse_ip("1.2.3.4:5678"), parse_ip("1.2.3.4"));
        assert_eq!(parse_ip("[2001:db8::1]:443"), parse_ip("2001:db8::1"));
        assert_eq!(parse_ip("[2001:db8::1]"), parse_ip("2001:db8::1"));
        assert_eq!(parse_ip("garbage"), None);
        assert_eq!(address_key("2001:db8:1:2:3:4:5:6"), address_key("2001:db8:1:2:ffff::1"));
        assert_ne!(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:3::1"));
        assert_eq!(address_key("::ffff:1.2.3.4"), "1.2.3.4");
    }

    #[tokio::test]
    async fn urls_to_private_hosts_are_refused_before_storing() {
        assert_eq!(check_url("ftp://example.com/", false).await.err(), Some(UrlError::Scheme));
        assert_eq!(check_url("http://127.0.0.1/", false).await.err(), Some(UrlError::NotPublic));
        assert_eq!(check_url("http://[::1]/", false).await.err(), Some(UrlError::NotPublic));
        assert_eq!(check_url("http://localhost/", false).await.err(), Some(UrlError::NotPublic));
        assert!(check_url("http://127.0.0.1/", true).await.is_ok());
    }

    /// The connection itself is guarded: a name that resolves to loopback is refused when the
    /// client connects, whatever was checked before, and nothing reaches the listener.
    #[tokio::test]
    async fn guarded_client_never_connects_to_a_private_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(1500), listener.accept()).await.is_ok()
        });
        let client = outbound_client(Duration::from_secs(1), "test", false, None).expect("client");
        let sent = client.get(format!("http://localhost:{port}/")).send().await;
        assert!(sent.is_err(), "the guarded client must refuse a loopback address");
        assert!(!accepted.await.expect("join"), "no connection may reach the listener");
    }
}
