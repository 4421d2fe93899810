//! Outbound policy against server-side request forgery.
//!
//! A homeserver URL chosen by a caller must not make the connector reach internal services.
//! The policy refuses non-http(s) schemes and user information, hosts outside the operator's
//! allow-list, and every address in the ranges Synapse blocks by default (`ip_range_blacklist`),
//! IPv6 addresses embedding such an IPv4 address included (mapped, compatible, SIIT, NAT64, 6to4,
//! Teredo), both for IP literals (checked before connecting) and for every address a host name resolves
//! to (checked inside the DNS resolver, so a rebinding answer cannot slip through). Addresses on
//! the operator's exception list are allowed, and only they may be reached over plain `http`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use argus_domain::normalise_host;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::{ConnectorConfig, Error, Result};

/// IPv4 ranges refused by default: Synapse's `ip_range_blacklist` plus the reserved 240/4.
const BLOCKED_V4: &[Ipv4Net] = &[
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 ranges refused by default (the embedded-IPv4 forms are checked separately).
const BLOCKED_V6: &[Ipv6Net] = &[
    Ipv6Net::new_assert(Ipv6Addr::new(0x0064, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
    Ipv6Net::new_assert(Ipv6Addr::new(0x0100, 0, 0, 0, 0, 0, 0, 0), 64),
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0), 32),
    Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    Ipv6Net::new_assert(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// The IPv4 addresses an IPv6 address stands for, when it embeds some: IPv4-mapped
/// (`::ffff:0:0/96`), SIIT (`::ffff:0:0:0/96`), IPv4-compatible (`::/96`, which also covers `::`
/// and `::1`) and NAT64 (`64:ff9b::/96`) in their last 32 bits, 6to4 (`2002::/16`) in bits 16 to
/// 47, and Teredo (`2001::/32`) its server in bits 32 to 63, its client in the last 32 bits
/// inverted, and, to be safe, those last 32 bits as written.
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = u128::from(ip);
    // The 32 bits that end `shift` bits above the lowest.
    let v4_at = |shift: u32| Ipv4Addr::from(u32::try_from((bits >> shift) & 0xffff_ffff).unwrap_or(0));
    let last = v4_at(0);
    match bits >> 32 {
        0 | 0xffff | 0xffff_0000 => return vec![last],
        _ => {}
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return vec![last];
    }
    if s[0] == 0x2002 {
        return vec![v4_at(80)];
    }
    if s[..2] == [0x2001, 0] {
        return vec![v4_at(64), !last, last];
    }
    Vec::new()
}

/// Whether an address is in one of the ranges refused by default: an IPv6 address also when an
/// IPv4 address it embeds is.
pub(crate) fn is_blocked(ip: IpAddr) -> bool {
    let v4_blocked = |v4: &Ipv4Addr| BLOCKED_V4.iter().any(|net| net.contains(v4));
    match ip {
        IpAddr::V4(v4) => v4_blocked(&v4),
        IpAddr::V6(v6) => {
            embedded_v4(v6).iter().any(v4_blocked) || BLOCKED_V6.iter().any(|net| net.contains(&v6))
        }
    }
}

/// A host the resolver refused; reqwest carries it as the source of its connect error. Its
/// message names the host as the caller gave it, never the address it resolved to (which the
/// log keeps): an error must not map the internal network for the caller.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to an address the outbound policy refuses")]
pub(crate) struct AddressRefused {
    pub(crate) host: String,
}

/// What the URL check decided about a homeserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// TLS; any permitted address.
    Https,
    /// Plain http; only exempt addresses.
    PlainHttp,
}

/// The outbound policy of one connector.
#[derive(Debug)]
pub(crate) struct OutboundPolicy {
    allowed_hosts: Vec<String>,
    exempt: Vec<IpNet>,
}

impl OutboundPolicy {
    /// Builds the policy from the configuration, refusing unparsable exceptions.
    pub(crate) fn new(config: &ConnectorConfig) -> Result<Self> {
        let exempt = config
            .allow_private_addresses
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                    Error::InvalidInput(format!(
                        "allow_private_addresses: {s:?} is not an IP address or CIDR range"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let allowed_hosts = config
            .allowed_homeservers
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .map(allowed_entry)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { allowed_hosts, exempt })
    }

    /// Whether `ip` is on the operator's exception list (reachable over plain `http`).
    pub(crate) fn is_exempt(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.exempt.iter().any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }

    /// Checks one address a connection would go to.
    pub(crate) fn check_address(
        &self,
        ip: IpAddr,
        transport: Transport,
    ) -> std::result::Result<(), &'static str> {
        if self.is_exempt(ip) {
            return Ok(());
        }
        if transport == Transport::PlainHttp {
            return Err("plain http is only allowed to addresses on the exception list");
        }
        if is_blocked(ip) {
            return Err("the address is in a private or reserved range");
        }
        Ok(())
    }

    /// Checks a homeserver URL on its own, before any connection: scheme, user information,
    /// allow-list and IP literals.
    pub(crate) fn check_url(&self, url: &Url) -> Result<Transport> {
        self.check(url, true)
    }

    /// Whether the operator left the allow-list empty (any host whose addresses are public).
    pub(crate) fn allows_any(&self) -> bool {
        self.allowed_hosts.is_empty()
    }

    /// Whether the host (or `host:port`) of `url` is on the operator's allow-list (an empty
    /// list lists nothing).
    pub(crate) fn is_listed(&self, url: &Url) -> bool {
        let Some(host) = url.host() else { return false };
        let name = normalise_host(&host.to_string());
        let with_port = url.port_or_known_default().map(|p| format!("{name}:{p}"));
        self.allowed_hosts.iter().any(|a| *a == name || Some(a) == with_port.as_ref())
    }

    /// Checks a URL the connector is about to reach, the allow-list aside (the server
    /// discovery's own fetches, the operator's identity server): scheme, user information and
    /// IP literals.
    pub(crate) fn check_reachable(&self, url: &Url) -> Result<Transport> {
        self.check(url, false)
    }

    fn check(&self, url: &Url, listed: bool) -> Result<Transport> {
        let transport = match url.scheme() {
            "https" => Transport::Https,
            "http" => Transport::PlainHttp,
            _ => return Err(Error::policy("only http and https homeservers are allowed")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::policy("user information in the homeserver URL is not allowed"));
        }
        let Some(host) = url.host() else {
            return Err(Error::policy("the homeserver URL has no host"));
        };
        if listed && !self.allowed_hosts.is_empty() && !self.is_listed(url) {
            return Err(Error::policy("the homeserver is not on the operator's allow-list"));
        }
        let literal = match host {
            Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            Host::Domain(_) => None,
        };
        match literal {
            Some(ip) => self
                .check_address(ip, transport)
                .map_err(|reason| Error::policy(format!("{ip}: {reason}")))?,
            // A name over plain http needs exempt addresses; with no exception, none can be.
            None if transport == Transport::PlainHttp && self.exempt.is_empty() => {
                return Err(Error::policy("plain http is only allowed to addresses on the exception list"));
            }
            None => {}
        }
        Ok(transport)
    }
}

/// One allow-list entry as the operator wrote it: `host`, `host:port`, or a homeserver URL
/// (`https://host[:port][/]`, as the homeserver URLs of ingestions are written), reduced to
/// `host` or `host:port`. Anything else (a path, a query, user information, another scheme)
/// is refused at start-up rather than silently never matching.
fn allowed_entry(entry: &str) -> Result<String> {
    // The entry itself is not echoed: one with user information may hold a password.
    let refuse = |why: &str| {
        Err(Error::InvalidInput(format!(
            "allowed_homeservers: an entry {why}; write host, host:port or https://host[:port]"
        )))
    };
    if !entry.contains("://") {
        if entry.contains(['/', '?', '#', '@', ' ']) {
            return refuse("is not a host name");
        }
        return Ok(normalise_host(entry));
    }
    let Ok(url) = Url::parse(entry) else { return refuse("is not a URL") };
    if !matches!(url.scheme(), "http" | "https") {
        return refuse("is not an http or https URL");
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return refuse("has user information, a query or a fragment");
    }
    if !matches!(url.path(), "" | "/") {
        return refuse("has a path");
    }
    let Some(host) = url.host_str() else { return refuse("has no host") };
    let host = normalise_host(host);
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// The DNS resolver of the connector's HTTP clients: resolves with the system resolver, then
/// refuses the whole host if any of its addresses is refused by the policy.
#[derive(Debug, Clone)]
pub(crate) struct PolicyResolver {
    pub(crate) policy: Arc<OutboundPolicy>,
    pub(crate) transport: Transport,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let transport = self.transport;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                if let Err(reason) = policy.check_address(addr.ip(), transport) {
                    tracing::warn!(host = %host, addr = %addr.ip(), reason, "outbound policy refused a resolved address");
                    return Err(Box::new(AddressRefused { host }) as Box<_>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(exempt: &[&str], allowed: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(&ConnectorConfig {
            allow_private_addresses: exempt.iter().map(|s| (*s).to_owned()).collect(),
            allowed_homeservers: allowed.iter().map(|s| (*s).to_owned()).collect(),
            ..ConnectorConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn allow_list_entries_may_be_written_as_urls_and_odd_ones_are_refused() {
        let p = policy(
            &[],
            &["https://matrix.agent.tchap.gouv.fr", "hs.interieur.gouv.fr:8448", "https://Tchap.Test:8443/"],
        );
        let ok = |u: &str| p.check_url(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://matrix.agent.tchap.gouv.fr"));
        assert!(ok("https://matrix.agent.tchap.gouv.fr/"));
        assert!(ok("https://hs.interieur.gouv.fr:8448"));
        assert!(!ok("https://hs.interieur.gouv.fr"));
        assert!(ok("https://tchap.test:8443"));
        assert!(!ok("https://tchap.test"));
        assert!(!ok("https://evil.example"));
        for bad in ["https://x.fr/_matrix", "https://u:p@x.fr", "ftp://x.fr", "https://x.fr?a=1", "x.fr/path"]
        {
            let err = OutboundPolicy::new(&ConnectorConfig {
                allowed_homeservers: vec![bad.to_owned()],
                ..ConnectorConfig::default()
            })
            .unwrap_err();
            assert_eq!(err.code(), "INVALID_INPUT", "{bad}");
            assert!(err.to_string().contains("allowed_homeservers"), "{err}");
            assert!(!err.to_string().contains("u:p@"), "{err}");
        }
    }

    #[test]
    fn blocklist_covers_synapse_defaults() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "192.0.0.8",
            "169.254.169.254",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.1.1.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "2001:db8::1",
            "ff02::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            // SIIT (`::ffff:0:0:0/96`).
            "::ffff:0:127.0.0.1",
            "::ffff:0:10.0.0.1",
            // NAT64 (`64:ff9b::/96`).
            "64:ff9b::127.0.0.1",
            "64:ff9b::c0a8:101",
            // Teredo: the server (8.8.8.8 is public) or the client (inverted) or the last 32 bits
            // as written, any of them refused refuses the address.
            "2001::7f00:1",
            "2001:0:a00:1::a247:27dd",
            "2001:0:808:808::80ff:fffe",
            "2001:0:808:808::7f00:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_blocked(ip), "{ip} not blocked");
        }
        for ip in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2a01:4f8::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
            "::ffff:0:8.8.8.8",
            // Teredo with a public server (8.8.8.8) and a public client (93.184.216.34, written
            // inverted as 162.71.39.221).
            "2001:0:808:808::a247:27dd",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_blocked(ip), "{ip} blocked");
        }
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        let p = policy(&[], &[]);
        for bad in [
            "http://127.0.0.1:8008",
            "https://127.0.0.1",
            "https://10.0.0.1",
            "https://169.254.169.254/latest",
            "https://[::ffff:127.0.0.1]",
            "https://[::ffff:0:127.0.0.1]",
            "https://[2001::7f00:1]",
            "https://[2002:a00:1::]",
            "https://[64:ff9b::a9fe:a9fe]",
            "https://[::1]",
            "https://0.0.0.0",
            "https://2130706433",
            "https://0x7f.1",
            "ftp://example.org",
            "https://user:pw@example.org",
            "http://example.org",
        ] {
            let url = Url::parse(bad).unwrap();
            let err = p.check_url(&url).unwrap_err();
            assert_eq!(err.code(), "OUTBOUND_POLICY", "{bad}");
        }
        assert_eq!(p.check_url(&Url::parse("https://matrix.org").unwrap()).unwrap(), Transport::Https);
        assert_eq!(p.check_url(&Url::parse("https://8.8.8.8").unwrap()).unwrap(), Transport::Https);
    }

    #[test]
    fn exceptions_allow_private_addresses_and_plain_http() {
        let p = policy(&["127.0.0.1", "10.1.0.0/16"], &[]);
        let t = p.check_url(&Url::parse("http://127.0.0.1:8008").unwrap()).unwrap();
        assert_eq!(t, Transport::PlainHttp);
        assert!(p.check_url(&Url::parse("https://10.1.2.3").unwrap()).is_ok());
        assert!(p.check_url(&Url::parse("https://10.2.0.1").unwrap()).is_err());
        assert!(p.check_url(&Url::parse("https://[::ffff:127.0.0.1]").unwrap()).is_ok());
        assert!(p.check_address("8.8.8.8".parse().unwrap(), Transport::PlainHttp).is_err());
        assert!(
            OutboundPolicy::new(&ConnectorConfig {
                allow_private_addresses: vec!["not-an-ip".into()],
                ..ConnectorConfig::default()
            })
            .is_err()
        );
    }

    #[test]
    fn allow_list_restricts_hosts() {
        let p = policy(&[], &["Matrix.Agent.Tchap.Gouv.Fr", "other.example:8448"]);
        assert!(p.check_url(&Url::parse("https://matrix.agent.tchap.gouv.fr").unwrap()).is_ok());
        assert!(p.check_url(&Url::parse("https://matrix.agent.tchap.gouv.fr./").unwrap()).is_ok());
        assert!(p.check_url(&Url::parse("https://other.example:8448").unwrap()).is_ok());
        assert!(p.check_url(&Url::parse("https://other.example").unwrap()).is_err());
        assert!(p.check_url(&Url::parse("https://evil.example").unwrap()).is_err());
    }
}
