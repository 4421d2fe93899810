//! Validated identifiers: organisations, actors, Matrix rooms, events and users, homeservers.
//!
//! Every constructor checks the form, so a value of one of these types can be put into a URL
//! path, a database key or a log field without further checks.

use std::{fmt, str::FromStr};

use crate::{Error, Result};

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $check:path) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $check(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                $check(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// An organisation (tenant): 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    ///
    /// ```
    /// use argus_domain::OrgId;
    /// assert!("dgsi".parse::<OrgId>().is_ok());
    /// assert!("police-nationale.fr".parse::<OrgId>().is_ok());
    /// assert!("".parse::<OrgId>().is_err());
    /// assert!("a b".parse::<OrgId>().is_err());
    /// ```
    OrgId,
    check_org
);

string_newtype!(
    /// The subject (`sub`) of a caller: 1 to 255 bytes without control characters.
    ///
    /// ```
    /// use argus_domain::ActorId;
    /// assert!("alice@interieur.gouv.fr".parse::<ActorId>().is_ok());
    /// assert!("bad\nactor".parse::<ActorId>().is_err());
    /// ```
    ActorId,
    check_actor
);

string_newtype!(
    /// A Matrix room id: `!opaque:server`, or `!opaque` for room versions 12 and later.
    ///
    /// At most 255 bytes; the opaque part and the server name may not contain `/`, `?`, `#`,
    /// `%`, `\`, whitespace, control characters or `..`, so the id is safe in a URL path.
    ///
    /// ```
    /// use argus_domain::RoomId;
    /// assert!("!abcDEF:agent.tchap.gouv.fr".parse::<RoomId>().is_ok());
    /// assert!("!abc:localhost:8448".parse::<RoomId>().is_ok());
    /// // Room version 12: no server part.
    /// assert!("!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM".parse::<RoomId>().is_ok());
    /// assert!("!a/b:example.org".parse::<RoomId>().is_err());
    /// assert!("#alias:example.org".parse::<RoomId>().is_err());
    /// assert!("!..:example.org".parse::<RoomId>().is_err());
    /// ```
    RoomId,
    check_room
);

string_newtype!(
    /// A Matrix event id: `$` followed by 1 to 254 printable, non-space bytes.
    ///
    /// ```
    /// use argus_domain::EventId;
    /// assert!("$acR1l0raoZnm60CBwAVgqbZqoO_mYU81xysh1u7XcJk".parse::<EventId>().is_ok());
    /// assert!("$".parse::<EventId>().is_err());
    /// ```
    EventId,
    check_event
);

string_newtype!(
    /// A Matrix user id: `@localpart:server`, at most 255 bytes.
    ///
    /// ```
    /// use argus_domain::UserId;
    /// assert!("@jean.dupont-interieur.gouv.fr:agent.tchap.gouv.fr".parse::<UserId>().is_ok());
    /// assert!("jean".parse::<UserId>().is_err());
    /// ```
    UserId,
    check_user
);

fn check_org(s: &str) -> Result<()> {
    const KIND: &str = "organisation id";
    if s.is_empty() || s.len() > 64 {
        return Err(Error::invalid(KIND, "must be 1 to 64 characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(Error::invalid(KIND, "only letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

fn check_actor(s: &str) -> Result<()> {
    const KIND: &str = "actor";
    if s.is_empty() || s.len() > 255 {
        return Err(Error::invalid(KIND, "must be 1 to 255 bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(KIND, "control characters are not allowed"));
    }
    Ok(())
}

/// A byte that may appear in the opaque part of a room id or an event id.
fn is_safe_opaque_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%' | b'\\' | b':')
}

/// Checks a Matrix server name: a DNS name, IPv4 address or bracketed IPv6 address, with an
/// optional port.
fn check_server_name(s: &str, kind: &'static str) -> Result<()> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(Error::invalid(kind, "unterminated IPv6 server name"));
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')) {
            return Err(Error::invalid(kind, "invalid IPv6 server name"));
        }
        match after {
            "" => ("v6", None),
            p => match p.strip_prefix(':') {
                Some(port) => ("v6", Some(port)),
                None => return Err(Error::invalid(kind, "invalid server name")),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || host.len() > 230
        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        || host.contains("..")
    {
        return Err(Error::invalid(kind, "invalid server name"));
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Error::invalid(kind, "invalid port in server name"));
    }
    Ok(())
}

fn check_room(s: &str) -> Result<()> {
    const KIND: &str = "room id";
    let Some(rest) = s.strip_prefix('!') else {
        return Err(Error::invalid(KIND, "must start with '!'"));
    };
    if s.len() > 255 {
        return Err(Error::invalid(KIND, "longer than 255 bytes"));
    }
    let (opaque, server) = match rest.split_once(':') {
        Some((o, srv)) => (o, Some(srv)),
        None => (rest, None),
    };
    if opaque.is_empty() {
        return Err(Error::invalid(KIND, "empty opaque part"));
    }
    if !opaque.bytes().all(is_safe_opaque_byte) || opaque.contains("..") {
        return Err(Error::invalid(KIND, "forbidden character in opaque part"));
    }
    if let Some(server) = server {
        check_server_name(server, KIND)?;
    }
    Ok(())
}

fn check_event(s: &str) -> Result<()> {
    const KIND: &str = "event id";
    let Some(rest) = s.strip_prefix('$') else {
        return Err(Error::invalid(KIND, "must start with '$'"));
    };
    if rest.is_empty() || s.len() > 255 {
        return Err(Error::invalid(KIND, "must be 2 to 255 bytes"));
    }
    if !rest.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(KIND, "only printable ASCII without spaces is allowed"));
    }
    Ok(())
}

fn check_user(s: &str) -> Result<()> {
    const KIND: &str = "user id";
    let Some(rest) = s.strip_prefix('@') else {
        return Err(Error::invalid(KIND, "must start with '@'"));
    };
    if s.len() > 255 {
        return Err(Error::invalid(KIND, "longer than 255 bytes"));
    }
    let Some((local, server)) = rest.split_once(':') else {
        return Err(Error::invalid(KIND, "missing ':server' part"));
    };
    // Historical user ids allow any printable ASCII but ':' in the localpart.
    if local.is_empty() || !local.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(Error::invalid(KIND, "invalid localpart"));
    }
    check_server_name(server, KIND)
}

/// The base URL of a Matrix homeserver, normalised without a trailing slash.
///
/// Only `http` and `https`, a host, no user information, no query and no fragment; at most
/// 2,048 bytes. Whether the host may be reached is the connector's outbound policy, not this
/// type's: it only guarantees the shape.
///
/// ```
/// use argus_domain::HomeserverUrl;
/// let hs: HomeserverUrl = "https://matrix.agent.tchap.gouv.fr/".parse()?;
/// assert_eq!(hs.as_str(), "https://matrix.agent.tchap.gouv.fr");
/// assert!("ftp://example.org".parse::<HomeserverUrl>().is_err());
/// assert!("https://user:pw@example.org".parse::<HomeserverUrl>().is_err());
/// # Ok::<(), argus_domain::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HomeserverUrl(String);

/// A host name as servers are told apart: lower case, without a trailing dot (`Matrix.Gouv.fr.`
/// and `matrix.gouv.fr` are one host).
///
/// ```
/// assert_eq!(argus_domain::normalise_host("Matrix.Tchap.gouv.fr."), "matrix.tchap.gouv.fr");
/// ```
pub fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl HomeserverUrl {
    /// The normalised URL as a string (no trailing slash).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL, parsed.
    pub fn url(&self) -> url::Url {
        // The string was produced by `url::Url` in the constructor, so it parses again.
        url::Url::parse(&self.0).unwrap_or_else(|_| unreachable!("validated homeserver URL"))
    }

    /// The server this URL names, as the connector tells servers apart:
    /// `scheme://host:port`, the host in lower case without a trailing dot, the port the
    /// scheme's default when none is written; a path is not part of it.
    ///
    /// ```
    /// use argus_domain::HomeserverUrl;
    /// let hs = |s: &str| s.parse::<HomeserverUrl>().map(|h| h.server());
    /// assert_eq!(hs("https://Matrix.Tchap.gouv.fr./_matrix/")?, "https://matrix.tchap.gouv.fr:443");
    /// assert_eq!(hs("http://127.0.0.1:8008")?, "http://127.0.0.1:8008");
    /// assert_ne!(hs("http://hs.gouv.fr")?, hs("https://hs.gouv.fr")?);
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    pub fn server(&self) -> String {
        let url = self.url();
        let host = normalise_host(url.host_str().unwrap_or_default());
        let port = url.port_or_known_default().unwrap_or_default();
        format!("{}://{host}:{port}", url.scheme())
    }

    /// Whether two URLs name the same server ([`HomeserverUrl::server`]).
    pub fn same_server(&self, other: &Self) -> bool {
        self == other || self.server() == other.server()
    }
}

impl FromStr for HomeserverUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        const KIND: &str = "homeserver URL";
        if s.len() > 2048 {
            return Err(Error::invalid(KIND, "longer than 2048 bytes"));
        }
        let url = url::Url::parse(s.trim()).map_err(|_| Error::invalid(KIND, "not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid(KIND, "scheme must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(KIND, "user information is not allowed"));
        }
        if url.host().is_none() {
            return Err(Error::invalid(KIND, "missing host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::invalid(KIND, "query and fragment are not allowed"));
        }
        let normalised = url.as_str().trim_end_matches('/').to_owned();
        Ok(Self(normalised))
    }
}

impl TryFrom<String> for HomeserverUrl {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<HomeserverUrl> for String {
    fn from(v: HomeserverUrl) -> String {
        v.0
    }
}

impl fmt::Display for HomeserverUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_with_dangerous_characters_are_rejected() {
        for bad in [
            "!a/b:x.org",
            "!a?b:x.org",
            "!a#b:x.org",
            "!a\0b:x.org",
            "!..:x.org",
            "!a b:x.org",
            "!a%2F:x.org",
            "!:x.org",
            "!",
            "",
            "abc:x.org",
            "!a:",
            "!a:x/y",
            "!a:x.org:99999x",
            "!a:[::1",
            "!a:x..org",
        ] {
            assert!(bad.parse::<RoomId>().is_err(), "{bad:?} accepted");
        }
        let long = format!("!{}:x.org", "a".repeat(300));
        assert!(long.parse::<RoomId>().is_err());
    }

    #[test]
    fn room_ids_of_every_version_are_accepted() {
        for good in [
            "!OGEhHVWSdvArJzumhm:matrix.org",
            "!a:[::1]:8448",
            "!a:127.0.0.1:8008",
            "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
        ] {
            assert!(good.parse::<RoomId>().is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn homeserver_urls() {
        let decimal: HomeserverUrl = "http://2130706433".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decimal.url().host_str(), Some("127.0.0.1"));
        for bad in
            ["file:///etc/passwd", "gopher://x", "https://", "https://x?a=1", "https://x#f", "not a url"]
        {
            assert!(bad.parse::<HomeserverUrl>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<OrgId>("\"a b\"").is_err());
        assert!(serde_json::from_str::<OrgId>("\"ab\"").is_ok());
    }
}
