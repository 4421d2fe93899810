//! Finding an account's homeserver, as Tchap clients do, and confirming that a token is the
//! account's.
//!
//! Tchap is a federation of homeservers (one per ministry, `agent.externe…` for everyone
//! else): an analyst knows an account, not a URL. [`Connector::resolve_account`] turns an
//! [`Account`] into the homeserver to read from:
//!
//! 1. An e-mail address is first looked up on the operator's identity server
//!    ([`crate::ConnectorConfig::identity_server`]),
//!    `GET /_matrix/identity/api/v1/info?medium=email&address=…`, which answers the server name
//!    the address belongs to (`{"hs": "agent.finances.tchap.gouv.fr"}`); a user id carries its
//!    server name.
//! 2. Server discovery (Client-Server API §"Server Discovery", well-known URI):
//!    `GET https://{server name}/.well-known/matrix/client` gives `m.homeserver.base_url`,
//!    which is checked by `GET {base_url}/_matrix/client/versions`. The server name is used as
//!    written, its port included, as matrix-js-sdk and matrix-rust-sdk do (the specification
//!    speaks of the host name alone).
//! 3. When the server has no `.well-known` file (HTTP 404) the connector tries Tchap's
//!    convention, `https://matrix.{server name}`, checked the same way. Any other failure (an
//!    error status, a redirect, malformed JSON, no `base_url`, a base URL that does not serve
//!    `/versions`) ends the resolution with `DISCOVERY_FAILED`.
//!
//! Every fetch goes through the connector's outbound policy: no redirect is followed, every
//! address is checked (IP literals before connecting, names as they resolve), bodies are read
//! up to [`MAX_DISCOVERY_BYTES`], requests are held to the request timeout. The `.well-known`
//! file is fetched over plain `http` only when the server name is an IP address on the
//! operator's exception list (`allow_private_addresses`), over `https` otherwise. With an
//! allow-list of homeservers, the `.well-known` file is fetched only from a server name on
//! the list; for another, only Tchap's convention is tried. The homeserver found must itself
//! pass the policy, allow-list included ([`Connector::check_homeserver`]).
//!
//! Errors name a user id's server name (the caller's input; for an e-mail address, "the
//! address's server") and say what failed in our own words: never a text, a server name or a
//! URL the servers answered.
//!
//! [`Connector::confirm_account`] then asks the homeserver whose token it is
//! (`GET /account/whoami`): the account given, or, for an e-mail address, the account Tchap
//! derives from it on the server the identity server named; otherwise `ACCOUNT_MISMATCH`.
//! Tchap derives an account's localpart from its e-mail address ([`tchap_localpart`]): the
//! address with its `@` replaced by `-`, lowercased, less the characters a localpart may not
//! hold (`jean.dupont@finances.gouv.fr` → `@jean.dupont-finances.gouv.fr:…`), the rule of
//! Tchap's Matrix Authentication Service (its `email_to_mxid_localpart`). An account Tchap
//! registered under another localpart (a conflict resolved by a suffix) is not confirmed by
//! its address: give its user id. User ids are compared without regard to ASCII case, since
//! Synapse lowercases localparts as it registers them, so `@Jean.Dupont:…` is `@jean.dupont:…`.

mod account;

use http::header::ACCEPT;
use ruma::{OwnedServerName, ServerName};
use serde::Deserialize;
use url::{Host, Url};

pub use account::{Account, MAX_EMAIL_LEN, Owner, tchap_localpart};

use argus_domain::HomeserverUrl;

use crate::{
    Connector, ConnectorConfig, Error, Result, Session,
    api::whoami,
    policy::Transport,
    transport::{map_reqwest, read_bounded},
};

/// The largest answer of a discovery fetch (`.well-known`, `/versions`, identity lookup).
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// An account resolved to its homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The homeserver to read from (what is recorded and locked for the room).
    pub homeserver: HomeserverUrl,
    /// Who the token must belong to ([`Connector::confirm_account`]).
    pub owner: Owner,
}

/// What a discovery fetch got.
enum Answer {
    /// HTTP 404.
    Missing,
    /// HTTP 2xx, and the body.
    Body(Vec<u8>),
}

#[derive(Deserialize)]
struct Versions {
    versions: Vec<String>,
}

#[derive(Deserialize)]
struct IdentityInfo {
    #[serde(default)]
    hs: Option<String>,
}

/// Checks the operator's identity server at start-up: an `http(s)` URL without user
/// information, query or fragment.
pub(crate) fn check_identity_server(config: &ConnectorConfig) -> Result<()> {
    let Some(text) = &config.identity_server else { return Ok(()) };
    let refuse = || {
        Err(Error::InvalidInput(
            "identity_server must be an http or https URL without user information, query or fragment".into(),
        ))
    };
    let Ok(url) = Url::parse(text.trim()) else { return refuse() };
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.host().is_none()
        || url.cannot_be_a_base()
    {
        return refuse();
    }
    Ok(())
}

/// `base` with `segments` appended to its path.
fn join(mut url: Url, segments: &[&str]) -> Result<Url> {
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| Error::InvalidInput("the URL cannot have a path".into()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

impl Connector {
    /// Resolves `account` to its homeserver: an e-mail address through the identity server
    /// ([`Connector::lookup_email`]), then server discovery of the server name
    /// ([`Connector::discover_homeserver`]).
    pub async fn resolve_account(&self, account: &Account) -> Result<Resolved> {
        let server = self.server_of(account).await?;
        self.resolve_on(account, &server).await
    }

    /// The server name of `account`: a user id's own, an e-mail address's as the identity
    /// server answers ([`Connector::lookup_email`]). The first step of
    /// [`Connector::resolve_account`].
    pub async fn server_of(&self, account: &Account) -> Result<OwnedServerName> {
        match account {
            Account::User(user) => Ok(user.server_name().to_owned()),
            Account::Email(address) => self.lookup_email(address).await,
        }
    }

    /// The second step of [`Connector::resolve_account`]: server discovery of `server`, the
    /// server name [`Connector::server_of`] gave for `account`, and the account the token must
    /// be.
    pub async fn resolve_on(&self, account: &Account, server: &ServerName) -> Result<Resolved> {
        // The errors name a user id's server name (the caller's input), never one the identity
        // server answered.
        let (owner, label) = match account {
            Account::User(user) => (Owner::User(user.clone()), server.to_string()),
            Account::Email(address) => {
                let user =
                    ruma::UserId::parse(format!("@{}:{server}", tchap_localpart(address))).map_err(|_| {
                        Error::InvalidInput("account: no Tchap user id derives from this address".into())
                    })?;
                (Owner::User(user), "the address's server".to_owned())
            }
        };
        let homeserver = self.discover(server, &label).await?;
        tracing::info!(server = %server, homeserver = %homeserver, "account resolved to its homeserver");
        Ok(Resolved { homeserver, owner })
    }

    /// The server name the operator's identity server gives for an e-mail address:
    /// [`Error::IdentityServerUnset`] without one, `DISCOVERY_FAILED` when it knows none
    /// (HTTP 404, no `hs`) or answers something else.
    pub async fn lookup_email(&self, address: &str) -> Result<OwnedServerName> {
        let Some(base) = &self.config().identity_server else {
            return Err(Error::IdentityServerUnset);
        };
        let base = Url::parse(base.trim()).map_err(|_| Error::IdentityServerUnset)?;
        let mut url = join(base, &["_matrix", "identity", "api", "v1", "info"])?;
        url.query_pairs_mut().append_pair("medium", "email").append_pair("address", address);
        let transport = self.http().policy.check_reachable(&url)?;
        let unknown = || Error::discovery("the identity server knows no homeserver for this address");
        let body = match self.get(url, transport, "the identity server").await? {
            Answer::Missing => return Err(unknown()),
            Answer::Body(body) => body,
        };
        let info: IdentityInfo = serde_json::from_slice(&body)
            .map_err(|_| Error::discovery("the identity server's answer is not the JSON expected"))?;
        let hs = info.hs.filter(|hs| !hs.trim().is_empty()).ok_or_else(unknown)?;
        OwnedServerName::try_from(hs.trim())
            .map_err(|_| Error::discovery("the identity server answered a malformed server name"))
    }

    /// The homeserver of `server` by server discovery (see the module's documentation).
    pub async fn discover_homeserver(&self, server: &ServerName) -> Result<HomeserverUrl> {
        self.discover(server, server.as_str()).await
    }

    /// Server discovery of `server`, its errors naming it `label`.
    async fn discover(&self, server: &ServerName, label: &str) -> Result<HomeserverUrl> {
        let policy = &self.http().policy;
        let well_known = well_known_url(server, |ip| policy.is_exempt(ip))?;
        let listed = policy.allows_any() || policy.is_listed(&well_known);
        if listed {
            let transport = policy.check_reachable(&well_known)?;
            match self.get(well_known, transport, &format!("the .well-known file of {label}")).await? {
                Answer::Body(body) => {
                    let homeserver = base_url_of(&body)
                        .map_err(|why| Error::discovery(format!("the .well-known file of {label} {why}")))?;
                    self.check_homeserver(&homeserver)?;
                    self.check_client_api(&homeserver, label).await?;
                    return Ok(homeserver);
                }
                Answer::Missing => {}
            }
        }
        // No `.well-known` file (or none to be fetched under the allow-list): Tchap's
        // convention, when the server name is a name.
        let Some(conventional) = conventional_homeserver(server) else {
            return Err(Error::discovery(format!("{label} has no .well-known file")));
        };
        self.check_homeserver(&conventional)?;
        self.check_client_api(&conventional, label).await.map_err(|e| match e {
            e @ Error::OutboundPolicy(_) => e,
            _ => Error::discovery(format!(
                "{label} has no .well-known file, and its conventional homeserver (https://matrix.…) \
                 does not serve the client API"
            )),
        })?;
        Ok(conventional)
    }

    /// Checks that `homeserver` serves the Client-Server API (`GET /_matrix/client/versions`
    /// answers a list of versions).
    async fn check_client_api(&self, homeserver: &HomeserverUrl, label: &str) -> Result<()> {
        let transport = self.http().policy.check_url(&homeserver.url())?;
        let url = join(homeserver.url(), &["_matrix", "client", "versions"])?;
        let what = format!("the homeserver of {label}");
        let failed = |why: &str| Err(Error::discovery(format!("{what} {why}")));
        match self.get(url, transport, &what).await? {
            Answer::Missing => failed("does not serve the client API (no /versions)"),
            Answer::Body(body) => match serde_json::from_slice::<Versions>(&body) {
                Ok(v) if !v.versions.is_empty() => Ok(()),
                _ => failed("answered /versions with something else than a list of versions"),
            },
        }
    }

    /// Confirms that the session's token belongs to `owner` (`GET /account/whoami`), before
    /// anything is stored: [`Error::AccountMismatch`] otherwise (user ids compared without
    /// regard to ASCII case). Works with any session (its
    /// token source renews as on every call).
    pub async fn confirm_account(&self, session: &Session, owner: &Owner) -> Result<()> {
        let client = self.http();
        let target = client.target(session, client.config.request_timeout)?;
        let user = whoami::fetch(client, &target).await?;
        // Without regard to ASCII case: Synapse lowercases localparts, server names are
        // case-insensitive.
        let confirmed = match owner {
            Owner::User(expected) => expected.as_str().eq_ignore_ascii_case(user.as_str()),
        };
        if confirmed {
            Ok(())
        } else {
            tracing::warn!(homeserver = %session.homeserver(), "the access token belongs to another account");
            Err(Error::AccountMismatch)
        }
    }

    /// One discovery fetch: no retry, no redirect, a small body.
    async fn get(&self, url: Url, transport: Transport, what: &str) -> Result<Answer> {
        let client = self.http().client(transport);
        let limit = MAX_DISCOVERY_BYTES.min(self.config().max_response_bytes);
        let response =
            client.get(url).header(ACCEPT, "application/json").send().await.map_err(
                |e| match map_reqwest(e) {
                    e @ Error::OutboundPolicy(_) => e,
                    _ => Error::discovery(format!("{what} could not be reached")),
                },
            )?;
        let status = response.status();
        if status.is_redirection() {
            return Err(Error::discovery(format!(
                "{what} answered with a redirect (HTTP {}), which is not followed",
                status.as_u16()
            )));
        }
        if status == http::StatusCode::NOT_FOUND {
            return Ok(Answer::Missing);
        }
        if !status.is_success() {
            return Err(Error::discovery(format!("{what} answered HTTP {}", status.as_u16())));
        }
        let body = read_bounded(response, limit).await.map_err(|e| match e {
            Error::ResponseTooLarge { limit } => {
                Error::discovery(format!("{what} answered more than {limit} bytes"))
            }
            _ => Error::discovery(format!("{what} answered an interrupted body")),
        })?;
        Ok(Answer::Body(body))
    }
}

/// `https://{server}/.well-known/matrix/client`, over plain `http` when the server name is an
/// IP address `exempt` says may be reached so.
fn well_known_url(server: &ServerName, exempt: impl Fn(std::net::IpAddr) -> bool) -> Result<Url> {
    let mut url = Url::parse(&format!("https://{server}/.well-known/matrix/client"))
        .map_err(|_| Error::discovery("the server name cannot be discovered"))?;
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
        _ => None,
    };
    if ip.is_some_and(exempt) {
        // https -> http between special schemes always succeeds.
        let _ = url.set_scheme("http");
    }
    Ok(url)
}

/// Tchap's convention, `https://matrix.{server}`, for a server name that is a name.
fn conventional_homeserver(server: &ServerName) -> Option<HomeserverUrl> {
    if server.is_ip_literal() {
        return None;
    }
    format!("https://matrix.{server}").parse().ok()
}

/// The homeserver a `.well-known` file names, or what is wrong with it (our own words).
fn base_url_of(body: &[u8]) -> std::result::Result<HomeserverUrl, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "is not JSON")?;
    let base_url = value
        .get("m.homeserver")
        .and_then(|h| h.get("base_url"))
        .and_then(serde_json::Value::as_str)
        .ok_or("names no homeserver (m.homeserver.base_url)")?;
    let base_url = base_url.trim().trim_end_matches('/');
    base_url.parse().map_err(|_| "names a base URL that is not a valid homeserver URL")
}

#[cfg(test)]
mod tests {
    use ruma::server_name;

    use super::*;

    #[test]
    fn the_well_known_is_plain_http_only_for_exempt_addresses() {
        let loopback = |ip: std::net::IpAddr| ip.is_loopback();
        let url = |s: &ServerName| well_known_url(s, loopback).unwrap().to_string();
        assert_eq!(
            url(server_name!("agent.finances.tchap.gouv.fr")),
            "https://agent.finances.tchap.gouv.fr/.well-known/matrix/client"
        );
        assert_eq!(url(server_name!("127.0.0.1:8008")), "http://127.0.0.1:8008/.well-known/matrix/client");
        assert_eq!(url(server_name!("[::1]:8448")), "http://[::1]:8448/.well-known/matrix/client");
        assert_eq!(url(server_name!("10.0.0.1")), "https://10.0.0.1/.well-known/matrix/client");
        assert_eq!(url(server_name!("localhost:8008")), "https://localhost:8008/.well-known/matrix/client");
    }

    #[test]
    fn the_convention_is_matrix_dot_server_name_for_names_only() {
        let conventional = |s: &ServerName| conventional_homeserver(s).map(|h| h.as_str().to_owned());
        assert_eq!(
            conventional(server_name!("agent.interieur.tchap.gouv.fr")).as_deref(),
            Some("https://matrix.agent.interieur.tchap.gouv.fr")
        );
        assert_eq!(conventional(server_name!("127.0.0.1:8008")), None);
        assert_eq!(conventional(server_name!("[::1]")), None);
    }

    #[test]
    fn well_known_files_are_read_strictly() {
        let ok = base_url_of(br#"{"m.homeserver": {"base_url": "https://matrix.tchap.gouv.fr/"}}"#);
        assert_eq!(ok.map(|h| h.as_str().to_owned()), Ok("https://matrix.tchap.gouv.fr".to_owned()));
        for (body, why) in [
            (&b"<html>"[..], "is not JSON"),
            (br#"{"m.homeserver": {}}"#, "names no homeserver (m.homeserver.base_url)"),
            (br#"{"m.homeserver": {"base_url": 3}}"#, "names no homeserver (m.homeserver.base_url)"),
            (
                br#"{"m.homeserver": {"base_url": "ftp://x"}}"#,
                "names a base URL that is not a valid homeserver URL",
            ),
        ] {
            assert_eq!(base_url_of(body), Err(why));
        }
    }

    #[test]
    fn identity_servers_are_checked_at_start() {
        let check = |s: &str| {
            check_identity_server(&ConnectorConfig { identity_server: Some(s.into()), ..Default::default() })
                .is_ok()
        };
        assert!(check("https://matrix.agent.tchap.gouv.fr"));
        assert!(check("http://127.0.0.1:9000/"));
        for bad in ["ftp://x.fr", "https://u:p@x.fr", "https://x.fr?a=1", "not a url", "mailto:a@b.fr"] {
            assert!(!check(bad), "{bad}");
        }
    }
}
